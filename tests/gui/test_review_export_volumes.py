"""Review page: the shown case-day's prediction exported as NIfTI and as a 3D Slicer .seg.nrrd,
through the buttons (folder dialog answered), read back voxel for voxel."""

from __future__ import annotations

import nibabel as nib
import nrrd
import numpy as np

from core.data import ORGANS
from tests.gui.test_review import open_page, predict


def test_nifti_and_seg_nrrd_exports_hold_the_shown_prediction(qtbot, demo_dataset, trained_run,
                                                             tmp_path, monkeypatch):
    from gui.pages import review_page

    run_dir = trained_run[0]
    page = open_page(qtbot, demo_dataset, run_dir)
    folder = {}
    monkeypatch.setattr(review_page.QFileDialog, "getExistingDirectory",
                        lambda *args: str(folder["path"]))
    try:
        result = predict(qtbot, page, run_dir, "case1_day23")  # 360 wide, 310 high
        organs = result.prediction.transpose(1, 3, 2, 0)  # (organ, x, y, z) of the Kaggle grid
        assert organs.any(axis=(1, 2, 3)).all()
        page.scope_box.setCurrentIndex(page.scope_box.findData("shown"))

        def export(button, path):
            folder["path"] = path
            page.export_status.clear()
            button.click()
            qtbot.waitUntil(lambda: page.export_status.text() != "" and not page.task.is_running,
                            timeout=60_000)
            return page.export_status.text()

        page.per_organ_box.setChecked(True)
        message = export(page.export_nifti_button, tmp_path / "nifti")
        names = ["case1_day23.nii.gz"] + [f"case1_day23_{o}.nii.gz" for o in ORGANS]
        assert f"Wrote 4 NIfTI file(s) of 1 case-day(s) to {tmp_path / 'nifti'}" in message
        assert all(name in message for name in names)
        assert page.settings.export_dir == tmp_path / "nifti"
        volume = nib.load(str(tmp_path / "nifti" / "case1_day23.nii.gz"))
        pw, ph = result.spacing
        assert volume.shape == (360, 310, result.depth)
        assert np.allclose(volume.affine, np.diag([-pw, -ph, 3.0, 1.0]))
        expected = np.zeros(volume.shape, np.uint8)  # overlaps: stomach, then small bowel wins
        for organ, value in (("large_bowel", 3), ("small_bowel", 2), ("stomach", 1)):
            expected[organs[ORGANS.index(organ)]] = value
        assert (np.asarray(volume.dataobj) == expected).all()
        for i, organ in enumerate(ORGANS):
            binary = nib.load(str(tmp_path / "nifti" / f"case1_day23_{organ}.nii.gz"))
            assert (np.asarray(binary.dataobj) == organs[i]).all()

        message = export(page.export_seg_button, tmp_path / "slicer")
        assert "Wrote 1 3D Slicer file(s)" in message and "case1_day23.seg.nrrd" in message
        data, header = nrrd.read(str(tmp_path / "slicer" / "case1_day23.seg.nrrd"))
        assert data.shape == (3, 360, 310, result.depth)  # one layer per organ: overlaps kept
        assert (data == organs).all()
        assert header["Segment2_Name"] == "Stomach"
    finally:
        page.shutdown()
