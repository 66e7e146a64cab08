"""NIfTI / DICOM datasets in, NIfTI / 3D Slicer segmentations out, on files written in the test."""

import shutil

import nibabel as nib
import nrrd
import numpy as np
import pytest
import slicerio

import main
from core.data import ORGANS
from core.data.demo import generate_demo_dataset
from core.data.demo_volumes import (DICOM_INTERCEPT, ORIGIN, label_volume, write_demo_dicom,
                                    write_demo_nifti, write_dicom_series)
from core.data.scan import load_masks, read_png16, scan_dataset
from core.data.volumes import DEFAULT_LABELS, parse_labels
from core.errors import DatasetError
from core.predict import Predictor, load_model
from core.runs import RunFolder
from core.volume_export import (LABEL_VALUES, ORGAN_NAMES, export_volumes, label_map,
                                write_nifti, write_seg_nrrd)
from core.export import ORGAN_COLORS


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A small Kaggle demo and the same scans as NIfTI (MSD, flat) and DICOM."""
    root = tmp_path_factory.mktemp("volumes")
    kaggle = generate_demo_dataset(root / "kaggle", cases=2, slices_per_scan=8, seed=1)
    return {"kaggle": kaggle, "msd": write_demo_nifti(kaggle, root / "msd", "msd"),
            "flat": write_demo_nifti(kaggle, root / "flat", "flat"),
            "dicom": write_demo_dicom(kaggle, root / "dicom")}


def _volume(records):
    return np.stack([read_png16(r.path) for r in records]), np.stack([load_masks(r)
                                                                         for r in records])


def _expected_masks(masks):
    """The Kaggle masks as a label map holds them (one organ a voxel, OVERLAP_PRIORITY)."""
    labels = label_volume(masks.transpose(1, 0, 2, 3), DEFAULT_LABELS)
    return np.stack([labels == DEFAULT_LABELS[o] for o in ORGANS], axis=1)


@pytest.mark.parametrize("layout", ["msd", "flat", "dicom"])
def test_volume_datasets_read_as_the_scans_they_hold(sources, layout):
    kaggle = scan_dataset(sources["kaggle"])
    index = scan_dataset(sources[layout])
    assert index.root == sources[layout] and index.has_labels
    assert index.report.case_days == 3 and index.report.slices == 24
    assert [p for p in index.report.problems if p.severity == "error"] == []
    for (case_day, records), kaggle_records in zip(index.case_days().items(),
                                                    kaggle.case_days().values()):
        images, masks = _volume(records)
        truth_images, truth_masks = _volume(kaggle_records)
        # Same voxels in the same display orientation and slice order (the NIfTI files are stored
        # RAS+, the DICOM files shuffled and with a rescale intercept), same organs (by name).
        assert (images == truth_images).all(), case_day
        assert (masks == _expected_masks(truth_masks)).all(), case_day
        geometry = index.volumes[case_day]
        assert geometry.spacing == pytest.approx((*kaggle_records[0].spacing, 3.0), abs=1e-5)
        assert geometry.affine[:3, 3] == pytest.approx(ORIGIN)
    names = [g.name for g in index.volumes.values()]
    assert names == {"msd": ["GIDEMO_001", "GIDEMO_002", "GIDEMO_003"],
                     "flat": ["case1_day10", "case1_day23", "case8_day10"],
                     "dicom": ["case1_s10", "case1_s23", "case8_s10"]}[layout]
    if layout == "dicom":  # one case per patient, a day per series
        assert list(index.case_days()) == ["case1_day0", "case1_day1", "case2_day0"]


def test_labels_map_by_the_mapping_given(sources, tmp_path, capsys):
    flat = shutil.copytree(sources["flat"], tmp_path / "flat")
    default = scan_dataset(flat).report
    assert "read as stomach=1" in default.problems[0].message
    assert main.main(["scan", str(flat), "--labels", "stomach=3,small_bowel=2,large_bowel=1",
                      "--json"]) == 0
    swapped = scan_dataset(flat).report  # the mapping given is remembered for the folder
    assert swapped.slices_with["stomach"] == default.slices_with["large_bowel"]
    assert swapped.slices_with["large_bowel"] == default.slices_with["stomach"]
    assert parse_labels("colon=4, stomach=1") == {"large_bowel": 4, "stomach": 1}
    for bad in ("liver=1", "stomach=x", "stomach=1,small_bowel=1"):
        with pytest.raises(DatasetError, match="labels"):
            parse_labels(bad)
    assert main.main(["scan", str(flat), "--labels", "liver=2"]) == 2
    assert "error: --labels 'liver=2'" in capsys.readouterr().err


def test_bad_volumes_are_reported_and_left_out(tmp_path):
    root, labels = tmp_path / "bad", tmp_path / "bad" / "labels"
    labels.mkdir(parents=True)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    image = np.random.default_rng(0).integers(0, 1000, (32, 32, 6)).astype(np.int16)
    label = np.zeros((32, 32, 6), np.uint8)
    label[10:20, 10:20, 2:4] = 1
    for name in ("good", "nolabel", "shape", "spacing"):
        nib.save(nib.Nifti1Image(image, affine), str(root / f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 6, 2), np.int16), affine), str(root / "4d.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((32, 0, 6), np.int16), affine), str(root / "empty.nii"))
    (root / "broken.nii.gz").write_bytes(b"not a volume")
    for name in ("good", "4d", "empty", "broken", "orphan"):
        nib.save(nib.Nifti1Image(label, affine), str(labels / f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(label[:, :20], affine), str(labels / "shape.nii.gz"))
    nib.save(nib.Nifti1Image(label, np.diag([1.0, 1.0, 3.0, 1.0])), str(labels / "spacing.nii.gz"))
    index = scan_dataset(root)
    assert [g.name for g in index.volumes.values()] == ["good"]
    problems = {p.where: p.message for p in index.report.problems if p.severity == "error"}
    assert "4-D image" in problems["4d.nii.gz"]
    assert "empty volume" in problems["empty.nii"]
    assert "unreadable NIfTI" in problems["broken.nii.gz"]
    assert "no label volume for nolabel" in problems["nolabel.nii.gz"]
    assert "label is 32×20×6 voxels but its image is 32×32×6" in problems["labels/shape.nii.gz"]
    assert "label spacing 1×1×3 mm differs" in problems["labels/spacing.nii.gz"]
    assert "label has no image" in problems["labels/orphan.nii.gz"]
    records = index.case_days()["case1_day0"]
    assert sum(load_masks(r)[2].sum() for r in records) == 200  # stomach = 1


def test_compressed_dicom_names_the_series_and_the_plugin(sources, tmp_path):
    dicom = shutil.copytree(sources["dicom"], tmp_path / "dicom")
    shutil.rmtree(dicom / "labels")
    write_dicom_series(dicom / "jpeg2000", np.zeros((16, 16, 3), np.uint16), np.eye(4),
                       patient="case9", series_number=5,
                       transfer_syntax="1.2.840.10008.1.2.4.90")
    index = scan_dataset(dicom)
    assert index.report.case_days == 3 and not index.has_labels
    (problem,) = [p for p in index.report.problems if p.severity == "error"]
    assert problem.where == "jpeg2000" and "series 1.2." in problem.message
    assert "JPEG 2000" in problem.message and "pip install pylibjpeg pylibjpeg-openjpeg" in \
        problem.message


@pytest.fixture(scope="module")
def msd_predictions(trained_run, sources):
    index = scan_dataset(sources["msd"])
    predictor = Predictor(load_model(trained_run[0], "cpu"), index)
    return index, list(predictor.predict_all(list(index.case_days())[:2]))


def test_nifti_export_overlays_the_source_scan(msd_predictions, sources, tmp_path):
    index, predictions = msd_predictions
    written = export_volumes(predictions, index, nifti_dir=tmp_path, per_organ=True)
    assert len(written) == 2 * 4
    for prediction in predictions:
        geometry = index.volumes[prediction.case_day]
        source = nib.load(str(sources["msd"] / "imagesTr" / f"{geometry.name}_0000.nii.gz"))
        labels = nib.load(str(tmp_path / f"{geometry.name}.nii.gz"))
        # The source's own grid: same shape, same affine, so it overlays voxel for voxel.
        assert labels.shape == source.shape and np.allclose(labels.affine, source.affine)
        assert nib.aff2axcodes(labels.affine) == ("R", "A", "S")
        assert labels.header.get_zooms() == pytest.approx(source.header.get_zooms())
        # The source is stored RAS+, the app shows rows to posterior and columns to the left:
        # the source grid is the app's (x, y, z) = (column, row, slice) flipped in x and y.
        masks = prediction.stacked_masks()  # (z, organ, y, x)
        expected = masks.transpose(1, 3, 2, 0)[:, ::-1, ::-1, :]
        data = np.asarray(labels.dataobj)
        assert data.dtype == np.uint8 and (data == label_map(expected)).all()
        for i, organ in enumerate(ORGANS):
            organ_file = nib.load(str(tmp_path / f"{geometry.name}_{organ}.nii.gz"))
            assert np.allclose(organ_file.affine, source.affine)
            assert (np.asarray(organ_file.dataobj) == expected[i]).all()


def test_label_map_overlap_rule():
    organs = np.zeros((3, 2, 2, 1), bool)
    organs[0, 0, :] = True      # large bowel
    organs[1, :, 0] = True      # small bowel, overlapping the large bowel at (0, 0)
    organs[2, 1, 1] = True      # stomach
    labels = label_map(organs)[..., 0]
    assert labels.tolist() == [[2, 3], [2, 1]]
    assert LABEL_VALUES == {"stomach": 1, "small_bowel": 2, "large_bowel": 3}


def test_seg_nrrd_has_named_coloured_overlapping_segments(msd_predictions, sources, tmp_path):
    index, predictions = msd_predictions
    prediction = predictions[0]
    geometry = index.volumes[prediction.case_day]
    path = write_seg_nrrd(prediction, tmp_path, geometry)
    assert path.name == f"{geometry.name}.seg.nrrd"
    segmentation = slicerio.read_segmentation(str(path))
    segments = {s["id"]: s for s in segmentation["segments"]}
    assert [segments[o]["name"] for o in ORGANS] == [ORGAN_NAMES[o] for o in ORGANS]
    for organ in ORGANS:
        assert segments[organ]["color"] == pytest.approx([c / 255 for c in ORGAN_COLORS[organ]])
    assert segments["stomach"]["terminology"]["type"][1] == "69695003"
    source = nib.load(str(sources["msd"] / "imagesTr" / f"{geometry.name}_0000.nii.gz"))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ source.affine
    assert np.allclose(segmentation["ijkToLPS"], lps)
    data, header = nrrd.read(str(path))
    assert header["space"] == "left-posterior-superior" and data.shape == (3, *source.shape)
    expected = prediction.stacked_masks().transpose(1, 3, 2, 0)[:, ::-1, ::-1, :]
    for organ in ORGANS:  # each organ whole, overlaps kept
        mask = slicerio.extract_segments(segmentation, [(ORGAN_NAMES[organ], 1)])["voxels"]
        assert (mask == expected[ORGANS.index(organ)]).all()


def test_predict_writes_volumes_in_kaggle_and_dicom_geometry(trained_run, sources, tmp_path):
    nifti, seg = tmp_path / "nifti", tmp_path / "seg"
    assert main.main(["predict", "--run", str(trained_run[0]), "--data", str(sources["dicom"]),
                      "--out", str(tmp_path / "s.csv"), "--ids", "case1_day0", "--nifti-dir",
                      str(nifti), "--seg-nrrd-dir", str(seg), "--device", "cpu"]) == 0
    labels = nib.load(str(nifti / "case1_s10.nii.gz"))
    assert labels.shape == (266, 266, 8) and (seg / "case1_s10.seg.nrrd").is_file()
    # The DICOM series: columns to the left, rows to posterior, slices up from ORIGIN.
    assert np.allclose(labels.affine, [[-1.5, 0, 0, ORIGIN[0]], [0, -1.5, 0, ORIGIN[1]],
                                       [0, 0, 3, ORIGIN[2]], [0, 0, 0, 1]])
    # Kaggle input: the file name's pixel spacing and 3 mm slices.
    kaggle = scan_dataset(sources["kaggle"])
    prediction = Predictor(load_model(trained_run[0], "cpu"), kaggle).predict_case_day(
        "case1_day23")
    (path,) = write_nifti(prediction, tmp_path / "kaggle")
    volume = nib.load(str(path))
    assert path.name == "case1_day23.nii.gz" and volume.shape == (360, 310, 8)
    assert np.allclose(volume.affine, np.diag([-1.5, -1.5, 3.0, 1.0]))
    data = np.asarray(volume.dataobj)
    assert (data == label_map(prediction.stacked_masks().transpose(1, 3, 2, 0))).all()
    assert DICOM_INTERCEPT < 0  # the series were stored with a rescale the scan undid


def test_training_runs_on_a_nifti_dataset(sources, tmp_path):
    run_dir = tmp_path / "nifti run"
    assert main.main(["train", "--data", str(sources["msd"]), "--run-dir", str(run_dir),
                      "--set", "data.image_size=64", "--set", "data.num_folds=3", "--set",
                      "train.epochs=1", "--set", "train.batch_size=4"]) == 0
    rows = [r for r in RunFolder(run_dir).metric_rows() if "val_score" in r]
    assert rows and 0.0 <= rows[-1]["val_score"] <= 1.0


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_the_demo_command_writes_volume_formats(tmp_path, fmt):
    out = tmp_path / fmt
    assert main.main(["demo", str(out), "--format", fmt, "--cases", "1", "--slices", "4"]) == 0
    index = scan_dataset(out)
    assert index.report.case_days == 2 and index.report.slices == 8 and index.has_labels
    assert main.main(["demo", str(out), "--format", fmt]) == 2  # not empty: refused
