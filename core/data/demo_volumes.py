"""The demo dataset also as NIfTI (nnU-Net/MSD layout, or a flat folder) and as DICOM series.

Written from a Kaggle-layout demo (``core.data.demo``) with nibabel and pydicom, so that tests and
newcomers have real files of the field's formats. The voxels are the demo's PNG slices; the labels a
label map (``core.volume_export.LABEL_VALUES`` order by default; where the bowels overlap, the organ
first in ``OVERLAP_PRIORITY`` wins, since a label map holds one label a voxel).

* NIfTI volumes are stored in RAS+ voxel order (``nibabel.as_closest_canonical``, as many tools write
  them), not in the app's display order, with an origin away from 0, so reading them exercises the
  reorientation. The MSD variant's ``dataset.json`` numbers the organs differently from the default
  (large bowel 1, small bowel 2, stomach 3), so labels must be mapped by name.
* DICOM: one MR series per case-day (``PATIENT = caseN``), files named in shuffled order, intensities
  stored with ``RescaleIntercept`` -1000, and ``labels/<series folder>.nii.gz`` label maps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.data import ORGANS
from core.data.scan import load_masks, read_png16, scan_dataset
from core.data.volumes import DEFAULT_LABELS, kaggle_geometry

MSD_LABELS = {"background": 0, "large_bowel": 1, "small_bowel": 2, "stomach": 3}
ORIGIN = np.array([-120.0, 80.0, -40.0])
DICOM_INTERCEPT = -1000.0


def _case_day_volumes(kaggle_dir: Path):
    """``(case_day, image (x, y, z) uint16, organs (3, x, y, z) bool, app affine)`` per case-day."""
    index = scan_dataset(kaggle_dir)
    for case_day, records in index.case_days().items():
        image = np.stack([read_png16(r.path) for r in records]).transpose(2, 1, 0)
        organs = np.stack([load_masks(r) for r in records]).transpose(1, 3, 2, 0)
        affine = kaggle_geometry(case_day, records).affine.copy()
        affine[:3, 3] = ORIGIN
        yield case_day, np.ascontiguousarray(image), organs, affine


def label_volume(organs: np.ndarray, values: dict[str, int]) -> np.ndarray:
    from core.volume_export import OVERLAP_PRIORITY

    labels = np.zeros(organs.shape[1:], np.uint8)
    for organ in reversed(OVERLAP_PRIORITY):
        labels[organs[ORGANS.index(organ)]] = values[organ]
    return labels


def _save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    image = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


def write_demo_nifti(kaggle_dir: str | Path, out_dir: str | Path, layout: str = "msd") -> Path:
    """Write the Kaggle demo at ``kaggle_dir`` as NIfTI: ``layout`` ``msd`` (imagesTr/labelsTr/
    dataset.json) or ``flat`` (``caseN_dayM.nii.gz`` + ``labels/``, default label values)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for n, (case_day, image, organs, affine) in enumerate(_case_day_volumes(Path(kaggle_dir)), 1):
        if layout == "msd":
            _save_nifti(image, affine, out / "imagesTr" / f"GIDEMO_{n:03d}_0000.nii.gz")
            _save_nifti(label_volume(organs, MSD_LABELS), affine,
                        out / "labelsTr" / f"GIDEMO_{n:03d}.nii.gz")
        else:
            _save_nifti(image, affine, out / f"{case_day}.nii.gz")
            _save_nifti(label_volume(organs, DEFAULT_LABELS), affine,
                        out / "labels" / f"{case_day}.nii.gz")
    if layout == "msd":
        (out / "dataset.json").write_text(json.dumps({
            "name": "GI tract demo", "channel_names": {"0": "MRI"}, "labels": MSD_LABELS,
            "numTraining": n, "file_ending": ".nii.gz"}, indent=1), encoding="utf-8")
    return out


def write_demo_dicom(kaggle_dir: str | Path, out_dir: str | Path, labels: bool = True,
                     seed: int = 0) -> Path:
    """Write the Kaggle demo as DICOM MR series (``<out>/<case_day>/IM_*.dcm``), and with
    ``labels`` their label maps as ``<out>/labels/<case_day>.nii.gz`` in the series' geometry."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    for case_day, image, organs, affine in _case_day_volumes(Path(kaggle_dir)):
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        write_dicom_series(out / case_day, image, lps, patient=case_day.split("_")[0],
                           series_number=int(case_day.split("day")[1]), rng=rng)
        if labels:
            _save_nifti(label_volume(organs, DEFAULT_LABELS), affine,
                        out / "labels" / f"{case_day}.nii.gz")
    return out


def write_dicom_series(folder: Path, image: np.ndarray, lps: np.ndarray, patient: str,
                       series_number: int, rng: np.random.Generator | None = None,
                       transfer_syntax: str | None = None) -> list[Path]:
    """One DICOM file per slice of ``image`` (x, y, z) with voxel → LPS ``lps`` (axis-aligned
    in-plane directions). ``transfer_syntax`` other than Explicit VR Little Endian writes the
    pixels encapsulated but not really compressed (a file no decoder can read: for tests)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, UID, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study = generate_uid(entropy_srcs=[patient, "study"])
    series = generate_uid(entropy_srcs=[patient, str(series_number), str(folder.name)])
    width, height, depth = image.shape
    col_mm = float(np.linalg.norm(lps[:3, 0]))
    row_mm = float(np.linalg.norm(lps[:3, 1]))
    row_cos, col_cos = lps[:3, 0] / col_mm, lps[:3, 1] / row_mm
    order = rng.permutation(depth) if rng is not None else np.arange(depth)
    paths = []
    for file_no, z in enumerate(order):
        uid = generate_uid(entropy_srcs=[series, str(z)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = UID(transfer_syntax) if transfer_syntax else ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, uid
        ds.Modality, ds.PatientID, ds.PatientName = "MR", patient, patient
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SeriesNumber, ds.InstanceNumber = series_number, int(file_no) + 1
        ds.SeriesDescription = "GI tract demo"
        ds.ImageOrientationPatient = [float(v) for v in (*row_cos, *col_cos)]
        ds.ImagePositionPatient = [float(v) for v in (lps @ [0, 0, z, 1])[:3]]
        ds.PixelSpacing = [row_mm, col_mm]
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        ds.Rows, ds.Columns = height, width
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = DICOM_INTERCEPT, 1.0
        stored = (image[:, :, z].T.astype(np.int64) - int(DICOM_INTERCEPT)).clip(0, 65535)
        pixels = np.ascontiguousarray(stored.astype("<u2")).tobytes()
        if transfer_syntax and transfer_syntax != ExplicitVRLittleEndian:
            ds.PixelData = encapsulate([pixels])
            ds["PixelData"].VR = "OB"
        else:
            ds.PixelData = pixels
        path = folder / f"IM_{file_no + 1:04d}.dcm"
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths
