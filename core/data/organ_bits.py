"""Organ masks packed as bits of one uint8 per pixel: bit ``k`` is ``ORGANS[k]``.

Used by the preprocessing cache and by exported mask PNGs, so that overlapping organs survive in a
single 8-bit image (bit 0 = large bowel, 1 = small bowel, 2 = stomach).
"""

from __future__ import annotations

import numpy as np

from core.data import ORGANS


def pack_organ_bits(masks: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` masks (nonzero = inside) → ``(H, W)`` uint8 with bit ``k`` = ``ORGANS[k]``."""
    if np.ndim(masks) != 3 or len(masks) != len(ORGANS):
        raise ValueError(f"expected masks of shape (3, height, width), got {np.shape(masks)}")
    bits = np.zeros(np.shape(masks)[1:], dtype=np.uint8)
    for k, mask in enumerate(masks):
        bits |= (np.asarray(mask) != 0).astype(np.uint8) << k
    return bits


def unpack_organ_bits(bits: np.ndarray) -> np.ndarray:
    """``(..., H, W)`` organ bits → ``(..., 3, H, W)`` uint8 0/1 masks in ``ORGANS`` order."""
    bits = np.asarray(bits, dtype=np.uint8)
    shifts = np.arange(len(ORGANS), dtype=np.uint8).reshape(-1, 1, 1)
    return (bits[..., None, :, :] >> shifts) & 1
