"""Synthetic abdominal-MRI-like demo dataset in the exact Kaggle UW-Madison GI Tract layout.

It exists so that a newcomer without the Kaggle download sees the whole product work in minutes:
16-bit PNG slices with a smooth intensity bias and noise, a body outline, a spine, and three organs
whose shape and position change smoothly along z (stomach high, small bowel low, large bowel framing
the abdomen). The bowels overlap now and then (both masks keep the pixel, as in the real labels), and
the first and last slices of each scan show no organ. Case-days come in more than one image size,
one of them non-square (360 wide × 310 high), like the real data.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from core.data import ORGANS
from core.data.rle import rle_encode
from core.data.scan import slice_id
from core.errors import DatasetError
from core.events import Progress

MARKER = "demo.json"
# (width, height, pixel spacing mm) cycled over the case-days; 360×310 is non-square like the real data.
IMAGE_SIZES = ((266, 266, 1.50), (360, 310, 1.50), (234, 234, 1.63))


def _bump(t: float, start: float, end: float) -> float:
    """0 outside [start, end], rising smoothly to 1 in the middle: organ size along z."""
    if not start < t < end:
        return 0.0
    x = (t - start) / (end - start)
    return math.sin(math.pi * x) ** 0.6


def _ellipse(u, v, cu, cv, ru, rv, angle=0.0):
    c, s = math.cos(angle), math.sin(angle)
    du, dv = u - cu, v - cv
    return ((c * du + s * dv) / ru) ** 2 + ((-s * du + c * dv) / rv) ** 2 <= 1.0


class _Anatomy:
    """Per-case random anatomy; ``draw(t)`` returns image intensities and masks at height t ∈ [0, 1]."""

    def __init__(self, rng: np.random.Generator):
        self.shift = rng.uniform(-0.06, 0.06, size=2)
        self.scale = rng.uniform(0.9, 1.1)
        self.stomach_range = (rng.uniform(0.0, 0.1), rng.uniform(0.5, 0.65))
        self.small_range = (rng.uniform(0.3, 0.4), rng.uniform(0.95, 1.05))
        self.large_range = (rng.uniform(0.1, 0.2), rng.uniform(0.85, 1.0))
        self.loops = [(rng.uniform(-0.35, 0.35), rng.uniform(-0.05, 0.4), rng.uniform(0.08, 0.13),
                       rng.uniform(0, 2 * math.pi)) for _ in range(int(rng.integers(5, 9)))]
        self.colon_phase = rng.uniform(0, 2 * math.pi)

    def masks(self, u, v, t):
        su, sv = u - self.shift[0], v - self.shift[1]
        g = self.scale
        size = _bump(t, *self.stomach_range)
        stomach = (_ellipse(su, sv, 0.32 + 0.05 * math.sin(4 * t), -0.28 + 0.1 * t,
                            0.30 * size * g, 0.20 * size * g, 0.4 + 0.5 * t)
                   if size > 0.15 else np.zeros(u.shape, bool))
        small = np.zeros(u.shape, bool)
        size = _bump(t, *self.small_range)
        if size > 0.2:
            for cu, cv, r, phase in self.loops:
                small |= _ellipse(su, sv, cu + 0.08 * math.sin(5 * t + phase),
                                  cv + 0.06 * math.cos(4 * t + phase), r * size * g, r * size * g * 0.8)
        large = np.zeros(u.shape, bool)
        size = _bump(t, *self.large_range)
        if size > 0.2:
            # The colon as a chain of blobs along an arc framing the abdomen; the arc opens and
            # closes along z (transverse colon only in the upper part).
            span = math.pi * (0.55 + 0.35 * math.sin(math.pi * t + self.colon_phase) ** 2)
            for a in np.linspace(-span, span, 11):
                ang = -math.pi / 2 + a
                large |= _ellipse(su, sv, 0.58 * math.cos(ang), 0.42 * math.sin(ang) + 0.12,
                                  0.12 * size * g, 0.10 * size * g)
        # Colon blobs never cover the stomach (in the real labels the organs that overlap are the
        # bowels), so the stomach's bright fluid always belongs to the stomach alone.
        return large & ~stomach, small, stomach


def _render(anatomy: _Anatomy, t: float, width: int, height: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (x - width / 2) / (0.42 * width)
    v = (y - height / 2) / (0.40 * height)
    large, small, stomach = anatomy.masks(u, v, t)
    body = _ellipse(u, v, 0, 0, 1.0, 0.95)
    fat = body & ~_ellipse(u, v, 0, 0, 0.9, 0.84)
    spine = _ellipse(u, v, 0, 0.72, 0.13, 0.13)
    image = np.full((height, width), 60.0, np.float32)
    image[body] = 520.0
    image[fat] = 1500.0
    image[spine] = 250.0
    texture = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 2.0)
    image[large] = 300.0 + 120.0 * texture[large]
    image[small] = 980.0 + 160.0 * texture[small]
    image[stomach] = 1750.0
    image = cv2.GaussianBlur(image, (0, 0), 1.0)
    bias = 1.0 + 0.25 * (0.6 * u + 0.4 * v) / 1.5
    image = image * bias + rng.normal(0, 35.0, image.shape)
    image = np.clip(image, 0, 65535).astype(np.uint16)
    return image, np.stack([large, small, stomach])


def _case_days(cases: int) -> list[tuple[int, int]]:
    """Case numbers and days: every third case has a second day (case 1 always has two)."""
    out = []
    for i in range(cases):
        case = 1 + i * 7  # sparse numbers, like the real data (case2, case7, case9, ...)
        days = (0, 13) if i % 3 == 0 else (0,)
        out.extend((case, 10 + d) for d in days)
    return out


def generate_demo_dataset(out_dir: str | Path, cases: int = 6, slices_per_scan: int = 36,
                          seed: int = 0, progress: Callable[[Progress], None] | None = None) -> Path:
    """Write the demo dataset into ``out_dir`` and return it.

    ``out_dir`` must be empty, absent, or an earlier demo dataset (which is replaced). The default
    (6 cases, 8 case-days, 288 slices) takes a few seconds.
    """
    if cases < 1 or slices_per_scan < 3:
        raise DatasetError("the demo needs at least 1 case and 3 slices per scan")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise DatasetError(f"'{out}' is not empty and is not a demo dataset; choose an empty folder")
    (out / MARKER).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    plan = _case_days(cases)
    anatomies: dict[int, _Anatomy] = {}
    total, done = len(plan) * slices_per_scan, 0
    rows = []
    for n, (case, day) in enumerate(plan):
        anatomy = anatomies.setdefault(case, _Anatomy(rng))
        width, height, spacing = IMAGE_SIZES[n % len(IMAGE_SIZES)]
        scans = out / "train" / f"case{case}" / f"case{case}_day{day}" / "scans"
        scans.mkdir(parents=True, exist_ok=True)
        for old in scans.glob("*.png"):
            old.unlink()
        for k in range(slices_per_scan):
            num = k + 1
            image, masks = _render(anatomy, k / (slices_per_scan - 1), width, height, rng)
            name = f"slice_{num:04d}_{width}_{height}_{spacing:.2f}_{spacing:.2f}.png"
            ok, data = cv2.imencode(".png", image)
            if not ok:
                raise DatasetError(f"could not encode demo image {name}")
            (scans / name).write_bytes(data.tobytes())
            sid = slice_id(case, day, num)
            rows.extend((sid, organ, rle_encode(masks[i])) for i, organ in enumerate(ORGANS))
            done += 1
            if progress is not None:
                progress(Progress("demo", done, total, f"case{case}_day{day}"))
    with open(out / "train.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "class", "segmentation"])
        writer.writerows(rows)
    (out / MARKER).write_text(json.dumps({"cases": cases, "slices_per_scan": slices_per_scan,
                                          "seed": seed}), encoding="utf-8")
    return out
