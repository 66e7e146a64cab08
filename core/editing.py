"""Editing masks on the slice's own pixel grid, with undo and redo per slice (no Qt).

A ``MaskEditor`` holds one case-day's editable truth ``(D, 3, H, W)`` bool. Each operation changes one
organ of one slice and records the slice's previous organ mask on that slice's undo stack (at least
``UNDO_STEPS`` steps; a new edit clears the slice's redo stack). A brush stroke is many dabs and one
undo step: ``begin_stroke`` … ``dab`` … ``end_stroke``.

Pixel ``(row, column)`` is the pixel whose centre is at ``(row + 0.5, column + 0.5)`` in image
coordinates (the convention of every resize in the app); a dab of radius ``r`` at a point sets every
pixel whose centre lies within ``r`` of it — a radius under 0.5 sets just the pixel under the point.

``save_slice`` writes the slice's masks to a ``core.data.corrections.Corrections`` file as RLE.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from scipy import ndimage

from core.data import ORGANS
from core.data.rle import rle_encode

UNDO_STEPS = 100


class MaskEditor:
    def __init__(self, truth: np.ndarray, slice_ids: list[str]):
        truth = np.asarray(truth, dtype=bool)
        if truth.ndim != 4 or truth.shape[1] != len(ORGANS) or len(slice_ids) != truth.shape[0]:
            raise ValueError(f"expected (D, {len(ORGANS)}, H, W) masks and D slice ids, got "
                             f"{truth.shape} and {len(slice_ids)} ids")
        self.masks = truth.copy()
        self.slice_ids = list(slice_ids)
        self._undo: dict[int, deque] = {}
        self._redo: dict[int, list] = {}
        self._stroke: tuple[int, int, np.ndarray] | None = None
        self.edited: set[int] = set()
        """Slices changed in this editor (saved or not)."""

    # -- history ---------------------------------------------------------------------------------
    def _push_undo(self, i: int, k: int, before: np.ndarray) -> None:
        self._undo.setdefault(i, deque(maxlen=UNDO_STEPS)).append((k, before))

    def can_undo(self, i: int) -> bool:
        return bool(self._undo.get(i))

    def can_redo(self, i: int) -> bool:
        return bool(self._redo.get(i))

    def undo(self, i: int) -> bool:
        """Undo the last edit of slice ``i``; False when there is none."""
        if not self.can_undo(i):
            return False
        k, previous = self._undo[i].pop()
        self._redo.setdefault(i, []).append((k, self.masks[i, k].copy()))
        self.masks[i, k] = previous
        self.edited.add(i)
        return True

    def redo(self, i: int) -> bool:
        if not self.can_redo(i):
            return False
        k, following = self._redo[i].pop()
        self._push_undo(i, k, self.masks[i, k].copy())
        self.masks[i, k] = following
        self.edited.add(i)
        return True

    # -- operations ------------------------------------------------------------------------------
    def begin_stroke(self, i: int, k: int) -> None:
        self._stroke = (i, k, self.masks[i, k].copy())

    def dab(self, i: int, k: int, y: float, x: float, radius: float, value: bool) -> None:
        """Set (``value`` True: brush) or clear (eraser) the pixels of organ ``k`` on slice ``i``
        whose centres lie within ``radius`` of the point ``(y, x)`` (image coordinates)."""
        if self._stroke is None or self._stroke[:2] != (i, k):
            self.begin_stroke(i, k)
        height, width = self.masks.shape[2:]
        if radius < 0.5:  # the pixel under the point
            row, col = int(np.floor(y)), int(np.floor(x))
            if 0 <= row < height and 0 <= col < width:
                self.masks[i, k, row, col] = value
            return
        rows = np.arange(max(0, int(np.floor(y - radius))), min(height, int(np.ceil(y + radius)) + 1))
        cols = np.arange(max(0, int(np.floor(x - radius))), min(width, int(np.ceil(x + radius)) + 1))
        if not rows.size or not cols.size:
            return
        inside = ((rows[:, None] + 0.5 - y) ** 2 + (cols[None, :] + 0.5 - x) ** 2) <= radius ** 2
        block = self.masks[i, k, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        block[inside] = value

    def end_stroke(self) -> bool:
        """Close the stroke as one undo step; False (and nothing recorded) if it changed nothing."""
        if self._stroke is None:
            return False
        i, k, before = self._stroke
        self._stroke = None
        if np.array_equal(before, self.masks[i, k]):
            return False
        self._push_undo(i, k, before)
        self._redo.pop(i, None)
        self.edited.add(i)
        return True

    def fill(self, i: int, k: int) -> bool:
        """Fill what organ ``k``'s outlines enclose on slice ``i`` (holes of the mask)."""
        filled = ndimage.binary_fill_holes(self.masks[i, k])
        return self._set(i, k, filled)

    def take(self, i: int, k: int, mask: np.ndarray) -> bool:
        """Organ ``k`` of slice ``i`` becomes ``mask`` (e.g. the prediction, taken as truth)."""
        return self._set(i, k, np.asarray(mask, dtype=bool))

    def _set(self, i: int, k: int, mask: np.ndarray) -> bool:
        if np.array_equal(mask, self.masks[i, k]):
            return False
        self._push_undo(i, k, self.masks[i, k].copy())
        self._redo.pop(i, None)
        self.masks[i, k] = mask
        self.edited.add(i)
        return True

    # -- saving ----------------------------------------------------------------------------------
    def rles(self, i: int) -> dict[str, str]:
        return {organ: rle_encode(self.masks[i, k]) for k, organ in enumerate(ORGANS)}

    def save_slice(self, corrections, i: int) -> None:
        """Write slice ``i``'s masks to ``corrections`` (atomically; the dataset is not touched)."""
        corrections.set_slice(self.slice_ids[i], self.rles(i))
