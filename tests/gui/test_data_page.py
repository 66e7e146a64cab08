"""Data page: create and scan the demo; summary, problems and previews; errors; cache build/cancel."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from core import paths
from core.data import ORGANS
from core.data.cache import cache_key
from tests.gui.conftest import open_dataset


def _error_dialog(widget) -> QMessageBox | None:
    return widget.findChild(QMessageBox, "errorDialog")


def test_demo_dataset_is_created_and_scanned_from_the_data_page(qtbot, window):
    page = window.data_page
    assert not page.offer.isHidden()
    page.offer_button.click()
    assert not page.progress_row.isHidden() and not page.demo_button.isEnabled()
    qtbot.waitUntil(lambda: window.state.index is not None, timeout=120_000)
    qtbot.waitUntil(lambda: not page.task.is_running, timeout=10_000)
    assert Path(window.state.dataset_dir) == paths.demo_dir()
    assert page.offer.isHidden() and page.progress_row.isHidden()
    labels = page.summary_labels
    assert labels["slices"].text() == "288"
    assert labels["cases"].text() == "6" and labels["case_days"].text() == "8"
    assert "large bowel: " in labels["organs"].text() and "stomach" in labels["organs"].text()
    assert "266×266" in labels["sizes"].text() and "360×310" in labels["sizes"].text()
    assert labels["problems"].text() == "none" and page.problem_table.rowCount() == 0
    assert not page.no_problems.isHidden() and page.problem_table.isHidden()
    assert len(page.preview.tiles) == 8  # one slice of each scan
    assert all(p.rgb.ndim == 3 for p in page.previews)
    assert any((p.rgb[..., 0] > p.rgb[..., 1] + 40).any() for p in page.previews)  # red mask tint
    assert window.train_page.start_button.isEnabled()  # a newcomer can press Start at once
    assert page.train_button.isEnabled()
    page.train_button.click()
    assert window.tabs.currentWidget() is window.train_page


def test_problems_are_listed(qtbot, window, demo_copy):
    broken = next((demo_copy / "train").rglob("*.png"))
    broken.write_bytes(broken.read_bytes()[:100])  # truncated
    open_dataset(qtbot, window, demo_copy)
    table = window.data_page.problem_table
    assert table.rowCount() == 1
    assert table.item(0, 0).text() == "error" and broken.name in table.item(0, 1).text()
    assert "1 errors" in window.data_page.summary_labels["problems"].text()


def test_a_bad_folder_shows_a_readable_error_and_the_page_stays_usable(qtbot, window, tmp_path):
    page = window.data_page
    (tmp_path / "empty").mkdir()
    page.open_dataset(tmp_path / "empty")
    qtbot.waitUntil(lambda: _error_dialog(page) is not None, timeout=30_000)
    dialog = _error_dialog(page)
    assert "has no 'train'" in dialog.text() and "Kaggle layout" in dialog.text()
    assert "Traceback" in dialog.detailedText()
    dialog.close()
    qtbot.waitUntil(lambda: page.open_button.isEnabled(), timeout=10_000)
    assert window.state.index is None
    assert page.folder_edit.text() == ""  # not the bad path: nothing is open


def test_a_failed_open_keeps_the_open_dataset_and_its_path(qtbot, window, small_demo, tmp_path):
    page = window.data_page
    open_dataset(qtbot, window, small_demo)
    index = window.state.index
    (tmp_path / "not a dataset").mkdir()
    page.folder_edit.setText(str(tmp_path / "not a dataset"))  # typed or pasted, then Enter
    page.folder_edit.returnPressed.emit()
    qtbot.waitUntil(lambda: _error_dialog(page) is not None, timeout=30_000)
    _error_dialog(page).close()
    qtbot.waitUntil(lambda: not page.task.is_running, timeout=10_000)
    assert page.folder_edit.text() == str(small_demo) and window.state.index is index
    page.rescan_button.click()  # rescans the dataset that is open, not the failed path
    qtbot.waitUntil(lambda: window.state.index is not index, timeout=60_000)
    assert window.state.dataset_dir == small_demo


def test_a_typed_path_opens_and_a_preview_opens_its_slice_in_review(qtbot, window, small_demo):
    page = window.data_page
    page.folder_edit.setText(f"  {small_demo}  ")
    page.folder_edit.returnPressed.emit()
    qtbot.waitUntil(lambda: window.state.index is not None, timeout=60_000)
    qtbot.waitUntil(lambda: not page.task.is_running, timeout=10_000)
    tile = page.preview.tiles[0]
    record = page.previews[0].record
    qtbot.mouseClick(tile, Qt.LeftButton)
    review = window.review_page
    assert window.tabs.currentWidget() is review
    qtbot.waitUntil(lambda: review.result is not None, timeout=60_000)
    assert review.result.case_day == record.case_day
    assert review.result.records[review.viewer.slice_index].slice_num == record.slice_num


def test_cache_build_can_be_cancelled_and_then_built(qtbot, window, small_demo):
    page = window.data_page
    open_dataset(qtbot, window, small_demo)
    config = window.state.config.copy()
    config.data.image_size = 96  # a size no other test caches
    window.train_page.form.set_config(config)
    assert page.cache_button.text() == "Build cache at 96 px"
    folder = paths.cache_dir() / cache_key(window.state.index, 96)

    page.cache_button.click()
    page.cancel_task()
    qtbot.waitUntil(lambda: not page.task.is_running, timeout=60_000)
    assert "Cancelled" in page.cache_status.text()
    assert not folder.exists()

    page.cache_button.click()
    qtbot.waitUntil(lambda: "Ready" in page.cache_status.text(), timeout=60_000)
    assert (folder / "meta.json").is_file()
    qtbot.waitUntil(lambda: page.cache_button.isEnabled(), timeout=10_000)


def test_the_labels_field_maps_unnamed_label_values_and_a_bad_one_keeps_the_dataset(
        qtbot, small_demo, tmp_path):
    """A flat NIfTI folder (no dataset.json) whose label maps use 5/6/7: the typed mapping gives
    each organ its voxels; a mapping that cannot be read names the field and changes nothing."""
    import nibabel as nib
    import numpy as np

    from core.config import StudioConfig
    from core.data.demo_volumes import write_demo_nifti
    from core.data.scan import load_masks
    from core.predict import CaseDayPrediction
    from core.volume_export import organ_volumes
    from gui.pages.data_page import DataPage
    from gui.state import StudioState

    folder = write_demo_nifti(small_demo, tmp_path / "flat nifti", layout="flat")
    values = {"stomach": 5, "small_bowel": 6, "large_bowel": 7}
    for path in (folder / "labels").glob("*.nii.gz"):
        image = nib.load(str(path))
        data = np.asarray(image.dataobj)
        relabelled = np.zeros_like(data)
        for old, new in ((1, 5), (2, 6), (3, 7)):
            relabelled[data == old] = new
        nib.save(nib.Nifti1Image(relabelled, image.affine, image.header), str(path))

    state = StudioState(StudioConfig())
    page = DataPage(state)
    qtbot.addWidget(page)
    page.labels_edit.setText("stomach=5, small_bowel=6, large_bowel=7")
    page.open_dataset(folder)
    qtbot.waitUntil(lambda: state.index is not None and not page.task.is_running, timeout=60_000)
    index = state.index
    assert index.has_labels and all(index.report.slices_with.get(o, 0) > 0 for o in values)
    assert not any("ignored" in p.message for p in index.report.problems)
    # Voxel for voxel: each organ's masks are the label map's voxels of its value.
    for case_day, records in list(index.case_days().items())[:2]:
        masks = [load_masks(r) for r in records]
        geometry = index.volumes[case_day]
        organs = organ_volumes(CaseDayPrediction(case_day, records, masks, []), geometry)
        labels = np.asarray(nib.load(str(folder / "labels" / f"{geometry.name}.nii.gz")).dataobj)
        for i, organ in enumerate(ORGANS):
            assert (organs[i] == (labels == values[organ])).all(), (case_day, organ)

    page.labels_edit.setText("stomach=x")
    page.rescan_button.click()
    dialog = _error_dialog(page)
    assert dialog is not None and "Labels 'stomach=x'" in dialog.text()
    assert "stomach=1,small_bowel=2,large_bowel=3" in dialog.text()
    dialog.close()
    assert state.index is index and not page.task.is_running
    assert page.folder_edit.text() == str(folder)
