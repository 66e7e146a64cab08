"""Scans as volumes: NIfTI and DICOM datasets in, and the geometry every case-day's volume has.

The app speaks the Kaggle layout (PNG slices + RLE ``train.csv``). A NIfTI or DICOM dataset is
converted once into that layout under the cache folder (``<cache>/volumes/<key>/``; the key hashes
the source files, their sizes and times and the label mapping, so a changed dataset converts again)
and ``core.data.scan.scan_dataset`` indexes the converted folder: scan report, cache, training,
prediction and Review work on it unchanged. Each case-day keeps its ``VolumeGeometry`` (in
``DatasetIndex.volumes``), which exports use to write masks in the source's own voxel grid and affine.

Layouts (``detect_layout``):

* ``nifti-msd`` — nnU-Net / Medical Segmentation Decathlon: ``imagesTr/CASE_0000.nii.gz``
  (channel 0000 is used), ``labelsTr/CASE.nii.gz``, ``dataset.json`` naming the labels
  (``"labels": {"background": 0, "stomach": 1, ...}``, or the MSD's ``{"1": "stomach"}``);
  ``imagesTs/`` holds unlabelled scans (used when there is no ``labelsTr/``).
* ``nifti-flat`` — a folder of ``.nii``/``.nii.gz`` volumes, with an optional ``labels/`` (or
  ``labelsTr/``, ``masks/``, ``segmentations/``) folder of label volumes with the same names
  (``CASE.nii.gz``; ``CASE_seg``, ``CASE_label``, ``CASE_mask`` suffixes accepted).
* ``dicom`` — a folder (any depth) of DICOM files; each series (SeriesInstanceUID) is one case-day,
  the series of one PatientID one case. Labels, if any: ``labels/NAME.nii.gz`` aligned to the series
  (NAME is the series' folder name, its SeriesInstanceUID, or the export name ``PATIENT_sSERIES``).

Label values map to organs by name: ``dataset.json``'s names (``stomach``, ``small_bowel``/``small
bowel``/``small_intestine``, ``large_bowel``/``colon``/``large_intestine``), else the mapping given
with ``--labels stomach=1,small_bowel=2,large_bowel=3`` (remembered per folder), else that default.

Orientation (documented for users): every volume is sliced along its acquisition axis (the NIfTI
header's slice dimension, else the third voxel axis; for DICOM, the slice normal) and reoriented to
a canonical display orientation by the nearest axis permutation and flips (no resampling):
axial scans show rows running to the patient's posterior and columns to the patient's left, slices
from inferior to superior (the DICOM/radiological view); coronal scans rows to inferior, columns to
the left, slices anterior to posterior; sagittal scans rows to inferior, columns to posterior, slices
right to left. Spacing comes from the header (voxel sizes; DICOM PixelSpacing and the distance of
the slice positions). Intensities that do not fit 16-bit PNGs exactly are mapped linearly to 0–65535
(the app normalises each scan by its percentiles, so the mapping does not change the model's input).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from core.data import ORGANS
from core.data.rle import rle_encode
from core.errors import CancelledError, DatasetError
from core.events import Progress

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KAGGLE_SLICE_MM = 3.0
"""Slice thickness of the Kaggle scans (the data description's), used for their volumes."""
DEFAULT_LABELS = {"stomach": 1, "small_bowel": 2, "large_bowel": 3}
NIFTI_SUFFIXES = (".nii.gz", ".nii")
LABEL_DIRS = ("labelsTr", "labels", "masks", "segmentations")
LABEL_SUFFIXES = ("", "_seg", "_label", "_labels", "_mask", "-label", "_0000")
ORGAN_ALIASES = {
    "stomach": "stomach", "small_bowel": "small_bowel", "small bowel": "small_bowel",
    "smallbowel": "small_bowel", "small_intestine": "small_bowel", "small intestine": "small_bowel",
    "large_bowel": "large_bowel", "large bowel": "large_bowel", "largebowel": "large_bowel",
    "large_intestine": "large_bowel", "large intestine": "large_bowel", "colon": "large_bowel",
}
DISPLAY_CODES = {2: ("L", "P", "S"), 1: ("L", "I", "P"), 0: ("P", "I", "L")}
"""Axis codes (column, row, slice) of the canonical grid, by the world axis (RAS index) of the
slice normal: axial, coronal, sagittal."""
DECODER_PLUGINS = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg", "1.2.840.10008.1.2.4.51":
    "pylibjpeg pylibjpeg-libjpeg", "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg", "1.2.840.10008.1.2.4.80":
    "pyjpegls", "1.2.840.10008.1.2.4.81": "pyjpegls", "1.2.840.10008.1.2.4.90":
    "pylibjpeg pylibjpeg-openjpeg", "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",
}
"""The pip packages that let pydicom decode a compressed transfer syntax (python-gdcm decodes all)."""


# -- geometry -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VolumeGeometry:
    """Where a case-day's voxels are. The app's grid is ``(x, y, z)`` = (column, row, slice) of its
    PNG slices (slice ``z`` is ``volume[:, :, z].T``); the source grid is the file's own."""

    name: str
    """File name stem of its exports: the case-day, or the source volume's case name."""
    shape: tuple[int, int, int]
    affine: np.ndarray
    """4×4 voxel → RAS (mm) of the app's grid."""
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    to_source_ornt: np.ndarray
    """nibabel orientation transform from the app's grid to the source's."""
    source: str = ""

    def to_source(self, volume: np.ndarray) -> np.ndarray:
        """An app-grid volume ``(x, y, z)`` in the source's voxel grid (axes permuted and flipped)."""
        from nibabel.orientations import apply_orientation

        return np.ascontiguousarray(apply_orientation(volume, self.to_source_ornt))

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "affine": self.affine.tolist(),
                "source_shape": list(self.source_shape),
                "source_affine": self.source_affine.tolist(),
                "to_source_ornt": self.to_source_ornt.tolist(), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> "VolumeGeometry":
        return cls(data["name"], tuple(data["shape"]), np.array(data["affine"], float),
                   tuple(data["source_shape"]), np.array(data["source_affine"], float),
                   np.array(data["to_source_ornt"], float), data.get("source", ""))


def kaggle_geometry(case_day: str, records) -> VolumeGeometry:
    """A Kaggle case-day's volume: the file names' pixel spacing (width, height), 3 mm slices,
    rows to the patient's posterior and columns to the left (RAS affine ``diag(-pw, -ph, 3)``)."""
    first = records[0]
    pw, ph = first.spacing
    affine = np.diag([-float(pw), -float(ph), KAGGLE_SLICE_MM, 1.0])
    shape = (first.width, first.height, len(records))
    identity = np.array([[0, 1], [1, 1], [2, 1]], float)
    return VolumeGeometry(case_day, shape, affine, shape, affine, identity, "kaggle")


def canonical(data: np.ndarray, affine: np.ndarray, slice_axis: int = 2):
    """``(data, affine, to_source_ornt)`` of a volume reoriented to the app's grid: the slice axis
    last, in-plane axes by ``DISPLAY_CODES`` (permutations and flips only, no resampling)."""
    from nibabel.orientations import (apply_orientation, axcodes2ornt, inv_ornt_aff,
                                      io_orientation, ornt_transform)

    source = io_orientation(affine)
    plane = int(source[slice_axis, 0])
    target = axcodes2ornt(DISPLAY_CODES[plane])
    # The slice axis must stay the slice axis even for oblique scans whose nearest world axes tie.
    to_app = ornt_transform(source, target)
    if int(to_app[slice_axis, 0]) != 2:
        raise DatasetError("the slice axis cannot be brought to the slice position")
    app = apply_orientation(data, to_app)
    app_affine = affine @ inv_ornt_aff(to_app, data.shape)
    return np.ascontiguousarray(app), app_affine, ornt_transform(target, source)


# -- the label mapping ----------------------------------------------------------------------------
def parse_labels(text: str, field: str = "--labels") -> dict[str, int]:
    """``stomach=1,small_bowel=2,large_bowel=3`` → ``{organ: value}``; ``DatasetError`` when bad,
    naming ``field`` (the CLI option, or the Data page field)."""
    mapping: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        organ = ORGAN_ALIASES.get(name.strip().lower())
        if organ is None or not value.strip().isdigit() or int(value) == 0:
            raise DatasetError(f"{field} '{part}': write ORGAN=VALUE with ORGAN one of "
                               f"{', '.join(ORGANS)} and VALUE a label value above 0, e.g. "
                               "stomach=1,small_bowel=2,large_bowel=3")
        mapping[organ] = int(value)
    if not mapping:
        raise DatasetError(f"{field} is empty; e.g. stomach=1,small_bowel=2,large_bowel=3")
    if len(set(mapping.values())) != len(mapping):
        raise DatasetError(f"{field} '{text}': two organs share a label value")
    return mapping


def labels_from_dataset_json(path: Path) -> dict[str, int] | None:
    """The organ label values that ``dataset.json`` names (nnU-Net v2 or MSD style), or None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"'{path}' is not readable JSON ({exc}); fix it or give --labels") \
            from None
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict):
        return None
    mapping = {}
    for key, value in labels.items():
        name, number = (value, key) if str(key).isdigit() else (key, value)
        if isinstance(number, list):  # nnU-Net region labels: not organs of ours
            continue
        organ = ORGAN_ALIASES.get(str(name).strip().lower())
        with contextlib.suppress(TypeError, ValueError):
            if organ is not None and int(number) > 0:
                mapping[organ] = int(number)
    return mapping or None


def _remembered(root: Path) -> Path:
    from core import paths

    return paths.cache_dir() / "volumes" / "labels.json"


def remember_labels(root: Path, mapping: dict[str, int]) -> None:
    """Keep a folder's ``--labels`` so that a later scan (training, the Data page) uses it too."""
    path = _remembered(root)
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        known[str(root.resolve())] = mapping
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=1), encoding="utf-8")


def label_mapping(root: Path, given: dict[str, int] | None = None) -> tuple[dict[str, int], str]:
    """The mapping to use and where it came from: ``given`` (remembered), ``dataset.json``, a
    mapping given earlier for this folder, else ``DEFAULT_LABELS``."""
    if given:
        remember_labels(root, given)
        return dict(given), "--labels"
    if (root / "dataset.json").is_file():
        found = labels_from_dataset_json(root / "dataset.json")
        if found:
            return found, "dataset.json"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        known = json.loads(_remembered(root).read_text(encoding="utf-8"))
        if str(root.resolve()) in known:
            return {k: int(v) for k, v in known[str(root.resolve())].items()}, "--labels (earlier)"
    return dict(DEFAULT_LABELS), "default"


# -- layouts --------------------------------------------------------------------------------------
def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


def detect_layout(root: Path) -> str | None:
    """``kaggle``, ``nifti-msd``, ``nifti-flat``, ``dicom`` or None (nothing recognised)."""
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "kaggle"
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
        return "nifti-msd"
    if any(_is_nifti(p) for p in root.iterdir()):
        return "nifti-flat"
    for path in _files(root, limit=200):
        if _looks_dicom(path):
            return "dicom"
    return None


def _files(root: Path, limit: int | None = None):
    count = 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            yield Path(folder) / name
            count += 1
            if limit is not None and count >= limit:
                return


def _looks_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


@dataclass
class _Volume:
    name: str
    source: Path
    data: np.ndarray | None = None  # app grid (x, y, z)
    geometry: VolumeGeometry | None = None
    labels: np.ndarray | None = None  # app grid, int
    patient: str = ""


def volume_key(root: Path, mapping: dict[str, int], files: list[Path]) -> str:
    digest = hashlib.sha1(f"v{FORMAT_VERSION} {root.resolve()} {sorted(mapping.items())}\n"
                          .encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def convert_dataset(root: Path, layout: str, labels: dict[str, int] | None = None,
                    progress: Callable[[Progress], None] | None = None,
                    cancel: Callable[[], bool] | None = None) -> tuple[Path, dict, list]:
    """Convert a NIfTI/DICOM dataset to the Kaggle layout under the cache (or reuse it).
    Returns ``(folder, {case_day: VolumeGeometry}, [problems as (severity, where, message)])``."""
    from core import paths

    mapping, origin = label_mapping(root, labels)
    if layout == "dicom":
        files = [p for p in _files(root) if _looks_dicom(p) or _is_nifti(p)]
    else:
        files = [p for p in _files(root) if _is_nifti(p) or p.name == "dataset.json"]
    out = paths.cache_dir() / "volumes" / volume_key(root, mapping, files)
    meta_path = out / "volumes.json"
    if meta_path.is_file():
        with contextlib.suppress(OSError, ValueError, KeyError):
            return _read_meta(out, meta_path)
    problems: list[tuple[str, str, str]] = []
    if layout == "dicom":
        volumes, labelled = _dicom_volumes(root, problems, cancel)
    else:
        volumes, labelled = _nifti_volumes(root, layout, problems, cancel)
    if labelled and origin == "default":
        problems.insert(0, ("warning", str(root), "no dataset.json names the labels; read as "
                            "stomach=1, small_bowel=2, large_bowel=3 (give --labels to change)"))
    if not volumes:
        first = problems[-1][2] if problems else "no volumes"
        raise DatasetError(f"no usable volumes in '{root}' ({first})")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    geometries = _write_kaggle(tmp, volumes, labelled, mapping, problems, progress, cancel)
    _write_json(tmp / "volumes.json", {
        "version": FORMAT_VERSION, "source": str(root), "layout": layout, "labels": mapping,
        "labels_from": origin, "volumes": {k: g.to_dict() for k, g in geometries.items()},
        "problems": problems})
    try:
        os.replace(tmp, out)
    except OSError:  # another process converted it meanwhile (or a damaged one is in the way)
        if meta_path.is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            return _read_meta(out, meta_path)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out, geometries, problems


def _read_meta(out: Path, meta_path: Path):
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    geometries = {k: VolumeGeometry.from_dict(v) for k, v in meta["volumes"].items()}
    return out, geometries, [tuple(p) for p in meta["problems"]]


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def _case_days(volumes: list[_Volume]) -> list[tuple[int, int]]:
    """Case and day numbers: ``caseN_dayM`` names keep theirs; others are numbered after them, one
    case per patient (DICOM) or per volume, days 0, 1, … in name order."""
    pattern = re.compile(r"^case(\d+)_day(\d+)$", re.I)
    fixed = [pattern.match(v.name) for v in volumes]
    next_case = max([int(m.group(1)) for m in fixed if m] + [0]) + 1
    cases: dict[str, int] = {}
    days: dict[int, int] = {}
    result = []
    for volume, match in zip(volumes, fixed):
        if match:
            result.append((int(match.group(1)), int(match.group(2))))
            continue
        key = volume.patient or volume.name
        if key not in cases:
            cases[key] = next_case
            next_case += 1
        case = cases[key]
        result.append((case, days.get(case, 0)))
        days[case] = days.get(case, 0) + 1
    return result


def _write_kaggle(out: Path, volumes: list[_Volume], labelled: bool, mapping: dict[str, int],
                  problems: list, progress, cancel) -> dict[str, VolumeGeometry]:
    geometries = {}
    rows = []
    total = sum(v.data.shape[2] for v in volumes)
    done = 0
    for volume, (case, day) in zip(volumes, _case_days(volumes)):
        data = volume.data
        width, height, depth = data.shape
        pw, ph, _ = volume.geometry.spacing
        case_day = f"case{case}_day{day}"
        scans = out / "train" / f"case{case}" / case_day / "scans"
        scans.mkdir(parents=True, exist_ok=True)
        for z in range(depth):
            if cancel is not None and cancel():
                raise CancelledError("conversion cancelled")
            name = f"slice_{z + 1:04d}_{width}_{height}_{pw:.2f}_{ph:.2f}.png"
            ok, encoded = cv2.imencode(".png", np.ascontiguousarray(data[:, :, z].T))
            if not ok:
                raise DatasetError(f"could not encode slice {z + 1} of '{volume.source}'")
            (scans / name).write_bytes(encoded.tobytes())
            if labelled:
                plane = volume.labels[:, :, z].T
                sid = f"{case_day}_slice_{z + 1:04d}"
                rows.extend((sid, organ, rle_encode(plane == mapping[organ]) if organ in mapping
                             else "") for organ in ORGANS)
            done += 1
            if progress is not None and (done % 50 == 0 or done == total):
                progress(Progress("convert", done, total, case_day))
        geometries[case_day] = volume.geometry
        if labelled:
            unknown = sorted(set(np.unique(volume.labels).tolist()) - {0} - set(mapping.values()))
            if unknown:
                problems.append(("warning", str(volume.source.name), f"label values "
                                 f"{', '.join(map(str, unknown))} are none of the organs ("
                                 f"{', '.join(f'{k}={v}' for k, v in mapping.items())}); ignored"))
    if labelled:
        with open(out / "train.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "class", "segmentation"])
            writer.writerows(rows)
    return geometries


def _to_uint16(data: np.ndarray, where: str, problems: list) -> np.ndarray:
    data = np.asarray(data, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.all():
        problems.append(("warning", where, f"{int((~finite).sum())} voxels are NaN or infinite; "
                         "set to the lowest intensity"))
        data = np.where(finite, data, np.min(data[finite]) if finite.any() else 0)
    low, high = float(data.min()), float(data.max())
    if low >= 0 and high <= 65535 and np.all(data == np.round(data)):
        return data.astype(np.uint16)
    scale = 65535.0 / (high - low) if high > low else 0.0
    return np.round((data - low) * scale).astype(np.uint16)


def _as_3d(data: np.ndarray) -> np.ndarray:
    """A single-volume 4-D array or a 2-D slice as a 3-D volume (other shapes unchanged)."""
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    return data


def _check_image(data: np.ndarray, where: str, problems: list) -> np.ndarray | None:
    """A 3-D image array, or None with the problem listed (empty, 4-D)."""
    data = _as_3d(data)
    if data.ndim != 3:
        problems.append(("error", where, f"{data.ndim}-D image of shape {data.shape}; give one 3-D "
                         "volume per case (split a time series or channels into files, e.g. "
                         "nnU-Net's CASE_0000, CASE_0001); left out"))
        return None
    if 0 in data.shape:
        problems.append(("error", where, f"empty volume (shape {data.shape}); left out"))
        return None
    if max(data.shape[:2]) > 4096:
        problems.append(("error", where, f"slices of {data.shape[0]}×{data.shape[1]} voxels are "
                         "larger than any MRI slice (4096 a side at most); left out"))
        return None
    return data


def _slice_axis(image) -> int:
    slice_dim = image.header.get_dim_info()[2] if hasattr(image.header, "get_dim_info") else None
    return int(slice_dim) if slice_dim is not None and slice_dim < 3 else 2


def _load_nifti(path: Path, root: Path, problems: list):
    import nibabel as nib

    where = str(path.relative_to(root))
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for damaged files
        problems.append(("error", where, f"unreadable NIfTI ({type(exc).__name__}: "
                         f"{str(exc)[:150]}); left out"))
        return None
    return image, data, where


def _nifti_volumes(root: Path, layout: str, problems: list, cancel) -> tuple[list[_Volume], bool]:
    if layout == "nifti-msd":
        label_dir = root / "labelsTr"
        labelled = label_dir.is_dir() and any(_is_nifti(p) for p in label_dir.iterdir())
        image_dir = root / ("imagesTr" if labelled or not (root / "imagesTs").is_dir()
                            else "imagesTs")
        if labelled and (root / "imagesTs").is_dir():
            n = sum(1 for p in (root / "imagesTs").iterdir() if _is_nifti(p))
            if n:
                problems.append(("warning", "imagesTs", f"{n} unlabelled scans not used with the "
                                 "labelled imagesTr; open the imagesTs folder to predict on them"))
    else:
        image_dir = root
        label_dir = next((root / d for d in LABEL_DIRS if (root / d).is_dir()), None)
        labelled = label_dir is not None and any(_is_nifti(p) for p in label_dir.iterdir())
    images: dict[str, Path] = {}
    for path in sorted(p for p in image_dir.iterdir() if _is_nifti(p)):
        stem = _stem(path)
        if layout == "nifti-msd":
            match = re.match(r"^(.*)_(\d{4})$", stem)
            if not match:
                problems.append(("warning", str(path.relative_to(root)), "name is not "
                                 "CASE_0000.nii.gz (nnU-Net channel suffix); used as CASE"))
            elif match.group(2) != "0000":
                if match.group(2) == "0001":
                    problems.append(("warning", str(path.relative_to(root)), "extra channel; "
                                     "only channel 0000 is used"))
                continue
            else:
                stem = match.group(1)
        images[stem] = path
    label_files: dict[str, Path] = {}
    if labelled:
        for path in sorted(p for p in label_dir.iterdir() if _is_nifti(p)):
            stem = _stem(path)
            case = next((stem[:-len(s)] for s in LABEL_SUFFIXES if s and stem.endswith(s)
                         and stem[:-len(s)] in images), stem)
            label_files[case] = path
        for case in sorted(set(label_files) - set(images)):
            problems.append(("error", str(label_files[case].relative_to(root)), "label has no "
                             f"image (expected {image_dir.name}/{case}"
                             f"{'_0000' if layout == 'nifti-msd' else ''}.nii.gz); ignored"))
    volumes = []
    for case, path in images.items():
        if cancel is not None and cancel():
            raise CancelledError("dataset scan cancelled")
        loaded = _load_nifti(path, root, problems)
        if loaded is None:
            continue
        image, data, where = loaded
        data = _check_image(data, where, problems)
        if data is None:
            continue
        if labelled and case not in label_files:
            problems.append(("error", where, f"no label volume for {case} in {label_dir.name}/; "
                             "left out"))
            continue
        axis = _slice_axis(image)
        app, app_affine, back = canonical(data, image.affine, axis)
        volume = _Volume(case, path, _to_uint16(app, where, problems))
        volume.geometry = VolumeGeometry(case, app.shape, app_affine, data.shape,
                                         np.asarray(image.affine, float), back, str(path))
        if labelled:
            volume.labels = _aligned_labels(label_files[case], root, volume.geometry, problems)
            if volume.labels is None:
                continue
        _check_blank(volume, where, problems)
        volumes.append(volume)
    return volumes, labelled


def _check_blank(volume: _Volume, where: str, problems: list) -> None:
    if volume.data.min() == volume.data.max():
        problems.append(("warning", where, f"every voxel has the same intensity "
                         f"({volume.data.flat[0]}): a blank scan"))


def _aligned_labels(path: Path, root: Path, geometry: VolumeGeometry, problems: list):
    """The label volume in the image's app grid, or None (problem listed) when it does not fit."""
    loaded = _load_nifti(path, root, problems)
    if loaded is None:
        return None
    image, data, where = loaded
    data = _as_3d(data)
    if data.ndim != 3:
        problems.append(("error", where, f"{data.ndim}-D label volume {data.shape}; expected 3-D; "
                         "case left out"))
        return None
    from nibabel.orientations import io_orientation

    plane = int(io_orientation(geometry.affine)[2, 0])  # the world axis the image is sliced along
    axes = [int(a) for a in io_orientation(image.affine)[:, 0]]
    app, affine, _ = canonical(data, image.affine, axes.index(plane) if plane in axes else 2)
    if app.shape != tuple(geometry.shape):
        problems.append(("error", where, f"label is {'×'.join(map(str, data.shape))} voxels but its "
                         f"image is {'×'.join(map(str, geometry.source_shape))}; case left out"))
        return None
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.allclose(spacing, geometry.spacing, rtol=1e-3, atol=1e-3):
        problems.append(("error", where, "label spacing "
                         f"{'×'.join(f'{s:.3g}' for s in spacing)} mm differs from its image's "
                         f"{'×'.join(f'{s:.3g}' for s in geometry.spacing)} mm; case left out"))
        return None
    if not np.allclose(affine, geometry.affine, atol=max(1e-2, 0.05 * min(geometry.spacing))):
        problems.append(("error", where, "label and image do not overlap voxel for voxel (their "
                         "affines differ: another origin or orientation); case left out"))
        return None
    values = np.asarray(data)
    if not np.all(values == np.round(values)):
        problems.append(("warning", where, "label values are not integers; rounded"))
    return np.round(app).astype(np.int64)


# -- DICOM ----------------------------------------------------------------------------------------
def _dicom_volumes(root: Path, problems: list, cancel) -> tuple[list[_Volume], bool]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[str, list] = {}
    for path in _files(root):
        if not _looks_dicom(path):
            continue
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            problems.append(("warning", str(path.relative_to(root)), f"unreadable DICOM "
                             f"({str(exc)[:120]}); skipped"))
            continue
        if "PixelData" not in ds and not hasattr(ds, "Rows"):
            continue
        uid = str(getattr(ds, "SeriesInstanceUID", "") or path.parent)
        series.setdefault(uid, []).append((path, ds))
    label_dir = next((root / d for d in LABEL_DIRS if (root / d).is_dir()), None)
    label_files = {_stem(p): p for p in sorted(label_dir.iterdir())} if label_dir else {}
    label_files = {k: v for k, v in label_files.items() if _is_nifti(v)}
    labelled = bool(label_files)
    volumes = []
    used_labels = set()
    for uid, items in sorted(series.items(), key=lambda kv: str(kv[1][0][0])):
        if cancel is not None and cancel():
            raise CancelledError("dataset scan cancelled")
        volume = _dicom_series(root, uid, items, problems)
        if volume is None:
            continue
        if labelled:
            folder = items[0][0].parent.name
            key = next((k for k in (folder, uid, volume.name) if k in label_files), None)
            where = str(items[0][0].parent.relative_to(root))
            if key is None:
                problems.append(("error", where, f"series {volume.name} has no label volume in "
                                 f"{label_dir.name}/ (name it {folder}.nii.gz); left out"))
                continue
            used_labels.add(key)
            volume.labels = _aligned_labels(label_files[key], root, volume.geometry, problems)
            if volume.labels is None:
                continue
        volumes.append(volume)
    for key in sorted(set(label_files) - used_labels):
        problems.append(("error", str(label_files[key].relative_to(root)), "label matches no DICOM "
                         "series (name it after the series' folder or SeriesInstanceUID); ignored"))
    if not series:
        problems.append(("error", str(root), "no DICOM images found"))
    return volumes, labelled


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "series"


def _dicom_series(root: Path, uid: str, items: list, problems: list) -> _Volume | None:
    first_path, first = items[0]
    where = str(first_path.parent.relative_to(root))
    patient = str(getattr(first, "PatientID", "") or "")
    name = _safe(f"{patient or 'series'}_s{getattr(first, 'SeriesNumber', '') or uid[-8:]}")
    label = f"series {uid} ({where})"
    try:
        orientation = np.array([float(v) for v in first.ImageOrientationPatient])
        row_cos, col_cos = orientation[:3], orientation[3:]
        normal = np.cross(row_cos, col_cos)
        positions = [np.array([float(v) for v in ds.ImagePositionPatient]) for _, ds in items]
        row_mm, col_mm = (float(v) for v in first.PixelSpacing)
    except (AttributeError, TypeError, ValueError, IndexError):
        problems.append(("error", where, f"{label}: no ImageOrientationPatient, "
                         "ImagePositionPatient or PixelSpacing; left out"))
        return None
    distance = np.array([p @ normal for p in positions])
    order = np.argsort(distance, kind="stable")
    distance = distance[order]
    if len(items) > 1 and np.any(np.diff(distance) < 1e-3):
        problems.append(("error", where, f"{label}: two slices at the same position (a series "
                         "with several volumes?); left out"))
        return None
    shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in items}
    if len(shapes) > 1:
        problems.append(("error", where, f"{label}: slices of {len(shapes)} sizes; left out"))
        return None
    step = float(np.median(np.diff(distance))) if len(items) > 1 else float(
        getattr(first, "SpacingBetweenSlices", 0) or getattr(first, "SliceThickness", 1) or 1)
    if len(items) > 2 and np.ptp(np.diff(distance)) > 0.01 * step + 1e-3:
        problems.append(("warning", where, f"{label}: slice spacing varies "
                         f"({np.diff(distance).min():.2f}–{np.diff(distance).max():.2f} mm); "
                         f"the volume uses {step:.2f} mm"))
    planes = []
    import pydicom

    for index in order:
        path, _ = items[index]
        try:
            ds = pydicom.dcmread(str(path))
            pixels = ds.pixel_array.astype(np.float64)
        except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError w/o a decoder
            header = items[index][1]
            syntax = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
            plugin = DECODER_PLUGINS.get(str(syntax), "python-gdcm")
            problems.append(("error", where, f"{label}: pixel data in "
                             f"{getattr(syntax, 'name', syntax)} cannot be decoded here "
                             f"({str(exc).splitlines()[0][:120]}); install the decoder: "
                             f"pip install {plugin}; left out"))
            return None
        if pixels.ndim != 2:
            problems.append(("error", where, f"{label}: a multi-frame or colour image "
                             f"{pixels.shape}; one grey frame per file is supported; left out"))
            return None
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        planes.append(pixels * slope + intercept)
    stack = np.stack(planes)  # (k, row i, column j)
    data = stack.transpose(2, 1, 0)  # (x = column, y = row, z = slice)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_mm  # along a row: the column index grows
    lps[:3, 1] = col_cos * row_mm
    lps[:3, 2] = normal * step
    lps[:3, 3] = positions[order[0]]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    app, app_affine, back = canonical(data, affine, 2)
    volume = _Volume(name, first_path.parent, _to_uint16(app, where, problems), patient=patient)
    volume.geometry = VolumeGeometry(name, app.shape, app_affine, data.shape, affine, back,
                                     f"{where} (DICOM series {uid})")
    _check_blank(volume, where, problems)
    return volume
