"""Predictions out of the app, and submissions back in.

* ``submission.csv`` in the Kaggle format: columns ``id,class,predicted``, three rows per slice (organs
  in ``ORGANS`` order), masks as RLE (``core.data.rle``), an empty field for an empty mask.
* Mask PNGs: one 8-bit PNG per slice at its original size, named ``<slice id>.png``; bit 0 is the
  large bowel, bit 1 the small bowel, bit 2 the stomach, so overlapping organs keep every pixel.
* Overlay PNGs: the slice windowed to 8 bits with the organs blended in ``ORGAN_COLORS``, named
  ``<slice id>_overlay.png``.

Files are written from encoded bytes (``cv2.imencode`` + ``Path.write_bytes``) because ``cv2.imwrite``
fails on non-ASCII paths on Windows. Write failures become ``StudioError`` naming the file.
"""

from __future__ import annotations

import contextlib
import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import cv2
import numpy as np

from core.data import ORGANS
from core.data.organ_bits import pack_organ_bits, unpack_organ_bits
from core.data.csvfile import column_positions, csv_rows
from core.data.rle import RLEError, check_rle, rle_decode, rle_encode
from core.errors import StudioError

SUBMISSION_COLUMNS = ("id", "class", "predicted")

ORGAN_COLORS = {
    "large_bowel": (230, 159, 0),    # orange
    "small_bowel": (86, 180, 233),   # sky blue
    "stomach": (0, 158, 115),        # bluish green
}
"""RGB colour of each organ: the Okabe–Ito palette, which stays distinct with colour-blindness."""

WINDOW_PERCENTILES = (1.0, 99.5)
"""Intensity percentiles of a slice that map to black and white in overlays."""



def write_submission(path: str | Path, rows: Iterable[tuple[str, np.ndarray]]) -> int:
    """Write ``submission.csv`` from ``(slice id, masks)`` pairs and return the number of slices.

    ``masks`` is ``(3, height, width)`` (nonzero = inside) in ``ORGANS`` order. ``rows`` may be a
    generator, so predictions stream to disk. The file appears only when complete: it is written to
    ``<path>.partial`` and renamed over ``path`` at the end, so a full disk or a cancelled run never
    leaves a truncated file that looks finished.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    slices = 0
    try:
        with open(partial, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(SUBMISSION_COLUMNS)
            for slice_id, masks in rows:
                if np.ndim(masks) != 3 or len(masks) != len(ORGANS):
                    raise ValueError(f"{slice_id}: expected masks of shape (3, height, width), "
                                     f"got {np.shape(masks)}")
                writer.writerows((slice_id, organ, rle_encode(mask))
                                 for organ, mask in zip(ORGANS, masks))
                slices += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except OSError as exc:
        if exc.filename not in (None, str(partial), str(path)):
            raise  # another file's problem, raised while producing the rows
        raise StudioError(f"cannot write '{path}': {exc.strerror or exc}; check that the folder "
                          "exists, is writable and has free space, and that no other program has "
                          "the file open") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    return slices


@dataclass(frozen=True)
class Submission:
    """A checked ``submission.csv``: every RLE is well formed and fits its slice's image."""

    path: Path
    rles: dict[str, tuple[str, ...]]
    """Slice id → RLE per organ in ``ORGANS`` order (``''`` = empty), in the file's order."""
    shapes: Mapping[str, tuple[int, int]]
    """Slice id → ``(height, width)`` in pixels."""

    def masks(self, slice_id: str) -> np.ndarray:
        """The slice's masks as ``bool`` of shape ``(3, height, width)`` in ``ORGANS`` order."""
        shape = self.shapes[slice_id]
        return np.stack([rle_decode(rle, shape) for rle in self.rles[slice_id]])


def read_submission(path: str | Path, shapes: Mapping[str, tuple[int, int]],
                    required: Iterable[str] | None = None) -> Submission:
    """Read and check a Kaggle ``submission.csv`` against the slices it may name.

    ``shapes`` maps every known slice id to its ``(height, width)`` in pixels; ``required`` lists the
    ids that must have their three rows (default: all of ``shapes``). Raises ``StudioError`` for a
    missing column, an unknown id or class, a duplicate row, a malformed RLE or one that runs past
    the image (naming the row: the header is row 1, as in a spreadsheet), and for required slices
    without rows. RLEs are checked for form and extent here and decoded later, by ``masks``.
    """
    path = Path(path)
    name = path.name
    required = list(shapes if required is None else required)
    found: dict[str, dict[str, str]] = {}
    first_row: dict[tuple[str, str], int] = {}
    lines = csv_rows(path, StudioError)
    column = column_positions(name, next(lines, (1, None))[1], SUBMISSION_COLUMNS, StudioError)
    for line_no, row in lines:
        if not any(cell.strip() for cell in row):
            continue
        where = f"{name} row {line_no}"
        if len(row) != len(column):
            raise StudioError(f"{where}: expected {len(column)} values "
                              f"({','.join(SUBMISSION_COLUMNS)}), found {len(row)}")
        slice_id, organ, rle = (row[column[c]].strip() for c in SUBMISSION_COLUMNS)
        if slice_id not in shapes:
            raise StudioError(f"{where}: id '{slice_id[:80]}' is not a slice of the dataset")
        if organ not in ORGANS:
            raise StudioError(f"{where}: unknown class '{organ[:80]}'; expected one of "
                              f"{', '.join(ORGANS)}")
        if (slice_id, organ) in first_row:
            raise StudioError(f"{where}: second row for {slice_id} {organ} (the first is "
                              f"row {first_row[slice_id, organ]}); keep one")
        first_row[slice_id, organ] = line_no
        try:
            check_rle(rle, shapes[slice_id])
        except RLEError as exc:
            raise StudioError(f"{where}: bad RLE in 'predicted': {exc}") from None
        found.setdefault(slice_id, {})[organ] = rle
    _check_complete(name, found, required)
    rles = {sid: tuple(organs.get(o, "") for o in ORGANS) for sid, organs in found.items()}
    return Submission(path, rles, shapes)


def _check_complete(name: str, found: Mapping[str, Mapping[str, str]], required: list[str]):
    absent = [sid for sid in required if sid not in found]
    if absent:
        more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
        raise StudioError(f"{name}: no rows for {absent[0]}{more}; every slice scored needs three "
                          f"rows ({', '.join(ORGANS)}), with an empty 'predicted' for no mask")
    for sid in required:
        gaps = [o for o in ORGANS if o not in found[sid]]
        if gaps:
            raise StudioError(f"{name}: no {' or '.join(gaps)} row for {sid}; every slice needs "
                              f"three rows ({', '.join(ORGANS)})")


def write_mask_png(folder: str | Path, slice_id: str, masks: np.ndarray) -> Path:
    """Write ``<folder>/<slice id>.png`` (8-bit organ bits, original size) and return its path."""
    return _write_png(Path(folder) / f"{slice_id}.png", pack_organ_bits(masks))


def read_mask_png(path: str | Path) -> np.ndarray:
    """Read a mask PNG written by ``write_mask_png`` back as ``(3, H, W)`` bool masks."""
    path = Path(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise StudioError(f"cannot read mask '{path}': {exc.strerror or exc}") from None
    bits = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if bits is None or bits.ndim != 2 or bits.dtype != np.uint8:
        raise StudioError(f"'{path}' is not an 8-bit single-channel mask PNG")
    return unpack_organ_bits(bits).astype(bool)


def window_image(image: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES):
    """Map a slice's ``percentiles`` intensity range to 0–255: ``(H, W)`` any dtype → uint8."""
    image = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(image, percentiles)
    scale = 255.0 / max(float(high - low), 1e-6)
    return np.clip(np.rint((image - low) * scale), 0, 255).astype(np.uint8)


def overlay_image(image: np.ndarray, masks: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The windowed slice with each organ blended in its ``ORGAN_COLORS`` colour, outlined solid.

    ``image`` is ``(H, W)`` (e.g. the 16-bit slice), ``masks`` ``(3, H, W)``; ``alpha`` (0–1) is the
    fill opacity. Returns ``(H, W, 3)`` uint8 RGB.
    """
    grey = window_image(image)
    if np.shape(masks)[1:] != grey.shape:
        raise ValueError(f"masks {np.shape(masks)} do not match the image {grey.shape}")
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    for organ, mask in zip(ORGANS, masks):
        inside = np.asarray(mask) != 0
        colour = np.array(ORGAN_COLORS[organ], np.float32)
        rgb[inside] = (1.0 - alpha) * rgb[inside] + alpha * colour
        outline = inside & ~cv2.erode(inside.astype(np.uint8), kernel).astype(bool)
        rgb[outline] = colour
    return np.rint(rgb).astype(np.uint8)


def write_overlay_png(folder: str | Path, slice_id: str, image: np.ndarray, masks: np.ndarray,
                      alpha: float = 0.4) -> Path:
    """Write ``<folder>/<slice id>_overlay.png`` (see ``overlay_image``) and return its path."""
    rgb = overlay_image(image, masks, alpha)
    return _write_png(Path(folder) / f"{slice_id}_overlay.png", np.ascontiguousarray(rgb[..., ::-1]))


def _write_png(path: Path, pixels: np.ndarray) -> Path:
    """Encode ``pixels`` (grey, or BGR as OpenCV expects) as PNG and write it, creating the folder."""
    ok, data = cv2.imencode(".png", pixels)
    if not ok:
        raise StudioError(f"could not encode '{path.name}' as PNG")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.tobytes())
    except OSError as exc:
        raise StudioError(f"cannot write '{path}': {exc.strerror or exc}; check that the folder is "
                          "writable and has free space") from None
    return path
