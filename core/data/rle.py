"""Run-length encoding as used by the Kaggle UW-Madison GI Tract ``train.csv``.

A mask is flattened in row-major (C) order over its ``(height, width)`` shape; the encoding is a
space-separated list of ``start length`` pairs with 1-indexed starts. An empty string (or NaN in
pandas terms) is an empty mask.
"""

from __future__ import annotations

import numpy as np


class RLEError(ValueError):
    """An RLE string cannot be decoded onto the given shape; the message says why."""


MAX_VALUE = 2**40
"""No image has this many pixels; larger numbers are malformed (and would overflow int64 sums)."""


def parse_rle(rle: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Return 0-indexed ``starts`` and ``lengths`` (int64) of an RLE string, validated for form.

    Raises ``RLEError`` when the string has an odd number of numbers, a non-integer, a start below 1,
    a length below 1, or runs that are not strictly increasing and disjoint.
    """
    if rle is None:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    text = str(rle).strip()
    if not text or text.lower() == "nan":
        return np.empty(0, np.int64), np.empty(0, np.int64)
    parts = text.split()
    if len(parts) % 2:
        raise RLEError(f"odd number of values ({len(parts)}): expected 'start length' pairs")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        bad = next(p for p in parts if not p.lstrip("-").isdigit())
        raise RLEError(f"'{bad[:40]}' is not a whole number") from None
    too_large = next((n for n in numbers if n > MAX_VALUE), None)
    if too_large is not None:
        raise RLEError(f"{str(too_large)[:30]}{'…' if len(str(too_large)) > 30 else ''} is too "
                       "large for a pixel position or run length")
    values = np.array(numbers, dtype=np.int64)
    starts, lengths = values[0::2] - 1, values[1::2]
    if (starts < 0).any():
        raise RLEError(f"start {int(starts.min()) + 1} is below 1 (starts are 1-indexed)")
    if (lengths < 1).any():
        raise RLEError(f"run length {int(lengths.min())} is below 1")
    if len(starts) > 1:
        ends = starts + lengths
        overlap = np.nonzero(starts[1:] < ends[:-1])[0]
        if overlap.size:
            i = int(overlap[0]) + 1
            raise RLEError(
                f"runs are not increasing: run {i + 1} starts at {int(starts[i]) + 1}, "
                f"before the previous run ends at {int(ends[i - 1])}"
            )
    return starts, lengths


def overrun_problem(starts: np.ndarray, lengths: np.ndarray, shape: tuple[int, int]) -> str | None:
    """Why runs go past an image of ``shape = (height, width)``, or None (the one wording of it)."""
    height, width = shape
    if starts.size and starts[-1] + lengths[-1] > height * width:
        return (f"segmentation runs past the image (run ends at pixel "
                f"{int(starts[-1] + lengths[-1])} > {width}×{height} = {height * width})")
    return None


def check_rle(rle: str | None, shape: tuple[int, int]) -> None:
    """Raise ``RLEError`` when ``rle`` is malformed or does not fit ``shape``; decodes nothing."""
    problem = overrun_problem(*parse_rle(rle), shape)
    if problem:
        raise RLEError(problem)


def rle_decode(rle: str | None, shape: tuple[int, int]) -> np.ndarray:
    """Decode ``rle`` to a ``bool`` mask of ``shape = (height, width)``.

    Raises ``RLEError`` for malformed strings and for runs that go past the image.
    """
    height, width = shape
    size = height * width
    starts, lengths = parse_rle(rle)
    problem = overrun_problem(starts, lengths, shape)
    if problem:
        raise RLEError(problem)
    mask = np.zeros(size, dtype=bool)
    if starts.size:
        # Indices of the set pixels only (runs are disjoint and increasing): cost ∝ mask area.
        total = int(lengths.sum())
        offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        mask[np.repeat(starts, lengths) + offsets] = True
    return mask.reshape(height, width)


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (any dtype; nonzero = inside) as a 1-indexed row-major RLE string."""
    flat = np.asarray(mask).reshape(-1) != 0
    if not flat.any():
        return ""
    padded = np.concatenate(([False], flat, [False]))
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = changes[0::2], changes[1::2]
    pairs = np.empty(starts.size * 2, dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = ends - starts
    return " ".join(map(str, pairs.tolist()))
