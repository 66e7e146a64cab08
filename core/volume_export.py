"""Case-day predictions as 3-D volumes: NIfTI label maps and 3D Slicer segmentations (.seg.nrrd).

Each case-day becomes one volume at its original resolution, in the geometry of its source
(``core.data.volumes.VolumeGeometry``):

* NIfTI or DICOM input: the source's own voxel grid and affine, so the mask overlays the scan it
  was predicted from, voxel for voxel, in 3D Slicer, ITK-SNAP or nibabel (same shape, same affine);
* Kaggle PNG input: the file names' pixel spacing, 3 mm between slices, slice 1 first; the PNG's rows
  run to the patient's posterior and its columns to the patient's left (an axial slice as a DICOM
  viewer shows it), origin 0. The PNG names carry no position, so this is the best a file can say.

Files (``name`` is the case-day, e.g. ``case123_day20``, or the source case's name):

* ``<name>.nii.gz``: uint8 label map, ``LABEL_VALUES`` (1 stomach, 2 small bowel, 3 large bowel, 0
  background); where organs overlap the voxel takes the organ listed first in ``OVERLAP_PRIORITY``
  (stomach, then small bowel, then large bowel). ``per_organ``: also ``<name>_<organ>.nii.gz``, one
  binary uint8 volume per organ, overlaps kept.
* ``<name>.seg.nrrd``: a 3D Slicer segmentation with the three segments named and coloured as in
  the app (``ORGAN_COLORS``), one layer per organ so overlaps are kept, written with ``slicerio``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from core.data import ORGANS
from core.data.volumes import VolumeGeometry, kaggle_geometry
from core.errors import StudioError
from core.export import ORGAN_COLORS

LABEL_VALUES = {"stomach": 1, "small_bowel": 2, "large_bowel": 3}
"""Integer of each organ in exported label maps (and the default ``--labels`` of NIfTI input)."""
OVERLAP_PRIORITY = ("stomach", "small_bowel", "large_bowel")
"""Where organs overlap, a label map's voxel takes the first of these."""
ORGAN_NAMES = {"large_bowel": "Large bowel", "small_bowel": "Small bowel", "stomach": "Stomach"}
SNOMED = {"large_bowel": ("14742008", "Large intestine"), "small_bowel": ("30315005",
          "Small intestine"), "stomach": ("69695003", "Stomach")}
"""SNOMED CT codes of the organs: Slicer shows them as the segments' terminology."""


def geometry_for(prediction, index=None) -> VolumeGeometry:
    """The geometry a case-day's volume is written in: the source volume's (NIfTI/DICOM input,
    recorded by the dataset scan in ``index.volumes``), else the Kaggle file names'."""
    volumes = getattr(index, "volumes", None) or {}
    if prediction.case_day in volumes:
        return volumes[prediction.case_day]
    return kaggle_geometry(prediction.case_day, prediction.records)


def organ_volumes(prediction, geometry: VolumeGeometry) -> np.ndarray:
    """bool ``(3, *geometry.source_shape)``: each organ's mask in the source's voxel grid."""
    masks = prediction.stacked_masks()  # (D, 3, H, W) = (z, organ, y, x) in the app's grid
    if masks.shape[0] != geometry.shape[2] or masks.shape[2:] != geometry.shape[1::-1]:
        raise StudioError(f"{prediction.case_day}: the prediction is {masks.shape[0]} slices of "
                          f"{masks.shape[3]}×{masks.shape[2]} but its volume is "
                          f"{'×'.join(map(str, geometry.shape))}; scan the dataset again")
    return np.stack([geometry.to_source(masks[:, i].transpose(2, 1, 0)) for i in range(len(ORGANS))])


def label_map(organs: np.ndarray) -> np.ndarray:
    """uint8 label map from bool ``(3, ...)`` organ masks in ``ORGANS`` order (``LABEL_VALUES``,
    overlaps by ``OVERLAP_PRIORITY``)."""
    labels = np.zeros(organs.shape[1:], np.uint8)
    for organ in reversed(OVERLAP_PRIORITY):  # the first of the priority list is written last
        labels[organs[ORGANS.index(organ)]] = LABEL_VALUES[organ]
    return labels


def write_nifti(prediction, folder: str | Path, geometry: VolumeGeometry | None = None,
                per_organ: bool = False) -> list[Path]:
    """Write ``<name>.nii.gz`` (label map) and, with ``per_organ``, ``<name>_<organ>.nii.gz``;
    returns the paths written."""
    import nibabel as nib

    geometry = geometry or kaggle_geometry(prediction.case_day, prediction.records)
    organs = organ_volumes(prediction, geometry)
    folder = Path(folder)
    volumes = [(folder / f"{geometry.name}.nii.gz", label_map(organs))]
    if per_organ:
        volumes += [(folder / f"{geometry.name}_{organ}.nii.gz", organs[i].astype(np.uint8))
                    for i, organ in enumerate(ORGANS)]
    written = []
    for path, data in volumes:
        image = nib.Nifti1Image(data, geometry.source_affine)
        image.set_qform(geometry.source_affine, code=1)
        image.set_sform(geometry.source_affine, code=1)
        image.header.set_xyzt_units("mm")
        image.header.set_intent("label")
        _write(path, lambda p: nib.save(image, str(p)))
        written.append(path)
    return written


def write_seg_nrrd(prediction, folder: str | Path,
                   geometry: VolumeGeometry | None = None) -> Path:
    """Write ``<name>.seg.nrrd``: a 3D Slicer segmentation, one segment (and layer) per organ."""
    import slicerio

    geometry = geometry or kaggle_geometry(prediction.case_day, prediction.records)
    organs = organ_volumes(prediction, geometry)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    segments = []
    for layer, organ in enumerate(ORGANS):
        code, meaning = SNOMED[organ]
        segments.append({
            "id": organ, "name": ORGAN_NAMES[organ], "nameAutoGenerated": False,
            "color": [c / 255 for c in ORGAN_COLORS[organ]], "colorAutoGenerated": False,
            "labelValue": 1, "layer": layer, "extent": _extent(organs[layer]),
            "terminology": {
                "contextName": "Segmentation category and type - 3D Slicer General Anatomy list",
                "category": ["SCT", "123037004", "Anatomical Structure"],
                "type": ["SCT", code, meaning]},
        })
    segmentation = {"voxels": organs.astype(np.uint8), "ijkToLPS": ras_to_lps @ geometry.source_affine,
                    "segments": segments, "containedRepresentationNames": ["Binary labelmap"],
                    "masterRepresentation": "Binary labelmap", "encoding": "gzip"}
    path = Path(folder) / f"{geometry.name}.seg.nrrd"
    _write(path, lambda p: slicerio.write_segmentation(str(p), segmentation))
    return path


def _extent(mask: np.ndarray) -> list[int]:
    """Slicer's segment extent: first and last voxel of each axis that holds the segment."""
    if not mask.any():
        return [0, -1, 0, -1, 0, -1]
    extent = []
    for axis in range(3):
        present = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        extent += [int(present[0]), int(present[-1])]
    return extent


def _write(path: Path, writer) -> None:
    """Write through ``<path>.partial`` (same suffixes, so the writer picks the format) and rename."""
    partial = path.with_name(f".partial-{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(partial)
        partial.replace(path)
    except OSError as exc:
        raise StudioError(f"cannot write '{path}': {exc.strerror or exc}; check that the folder is "
                          "writable and has free space") from None
    finally:
        partial.unlink(missing_ok=True)


def export_volumes(predictions: Iterable, index=None, nifti_dir: str | Path | None = None,
                   seg_nrrd_dir: str | Path | None = None, per_organ: bool = False) -> list[Path]:
    """Write each ``CaseDayPrediction`` of ``predictions`` as NIfTI (``nifti_dir``) and/or .seg.nrrd
    (``seg_nrrd_dir``) in its source's geometry (``index``: the ``DatasetIndex`` it was predicted
    from; without it, the Kaggle geometry). Returns the paths written."""
    written = []
    for prediction in predictions:
        geometry = geometry_for(prediction, index)
        if nifti_dir is not None:
            written += write_nifti(prediction, nifti_dir, geometry, per_organ)
        if seg_nrrd_dir is not None:
            written.append(write_seg_nrrd(prediction, seg_nrrd_dir, geometry))
    return written
