"""Time scoring a validation fold the size of UWMGI's (54 case-days × 144 slices = 7,776 slices).

    python benchmarks/metrics.py [--case-days 54] [--baseline-case-days 1]

Builds a synthetic fold: smooth blobby organs that move and change size along z (the large bowel as
two tubes, the small bowel as a cluster of loops, the stomach as one blob) at 266×266 and 360×310
(width × height), about as many slices per organ as the real data; predictions are the truth with
small errors (shifted, thicker or thinner outlines, a slice more or less at the ends, now and then a
small false blob). It times ``core.metrics.ScoreAccumulator`` on the whole fold, then, back to back
on the first case-day(s), ours again and the naive method of the public notebooks: a Python loop over
(slice, organ) for Dice and ``scipy.spatial.distance.directed_hausdorff`` on the voxel point clouds
(both directions; the union and each organ, as ours does). The naive method takes 5-40 s per
case-day, so its fold time is extrapolated. The last line is ``ratio=<naive / ours>`` on the
case-days both score, where the two must agree to 1e-9.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial.distance import directed_hausdorff

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402  (only for the machine header)

from benchmarks.common import header, markdown_table, median  # noqa: E402
from core.data import ORGANS  # noqa: E402
from core.metrics import ScoreAccumulator, score_case_day  # noqa: E402

DEPTH = 144
SIZES = ((266, 266), (310, 360))  # (height, width) in pixels


def draw_blob(volume: np.ndarray, centre, radii, phase: float, grow: float = 0.0,
              shift=(0.0, 0.0), z_extra: float = 0.0) -> None:
    """OR a wobbly ellipsoid into ``volume`` (D, H, W); centre and radii in voxels (z, y, x).

    The outline drifts and wobbles smoothly along z. ``grow`` widens the outline by that many pixels,
    ``shift`` moves it (pixels), ``z_extra`` lengthens it at both ends (slices): prediction errors.
    """
    depth, height, width = volume.shape
    cz, cy, cx = centre
    rz, ry, rx = radii[0] + z_extra, radii[1], radii[2]
    z0, z1 = max(0, math.floor(cz - rz)), min(depth, math.ceil(cz + rz) + 1)
    y0, y1 = max(0, math.floor(cy - 1.4 * ry - 8)), min(height, math.ceil(cy + 1.4 * ry + 9))
    x0, x1 = max(0, math.floor(cx - 1.4 * rx - 8)), min(width, math.ceil(cx + 1.4 * rx + 9))
    if z0 >= z1 or y0 >= y1 or x0 >= x1:
        return
    z = np.arange(z0, z1, dtype=np.float32)[:, None, None]
    y = np.arange(y0, y1, dtype=np.float32)[None, :, None]
    x = np.arange(x0, x1, dtype=np.float32)[None, None, :]
    along = np.sqrt(np.clip(1.0 - ((z - cz) / rz) ** 2, 0.0, None))
    dy = (y - cy - shift[0] - 5.0 * np.sin(z / 9.0 + phase)) / ry
    dx = (x - cx - shift[1] - 5.0 * np.cos(z / 11.0 + phase)) / rx
    wobble = 1.0 + 0.15 * np.sin(4.0 * dx + z / 7.0 + phase) * np.cos(3.0 * dy - z / 13.0 + phase)
    radius = along * wobble + grow / max(ry, rx)
    volume[z0:z1, y0:y1, x0:x1] |= dy * dy + dx * dx < radius * radius


def organ_blobs(rng: np.random.Generator, height: int, width: int):
    """Blobs ``(organ index, centre, radii, phase)`` of one synthetic scan."""
    blobs = []
    colon_z = rng.uniform(65, 80)
    for side in (0.28, 0.72):  # ascending and descending colon
        blobs.append((0, (colon_z, height * rng.uniform(0.5, 0.6), width * side),
                      (rng.uniform(30, 38), height * 0.07, width * 0.06), rng.uniform(0, 6)))
    for _ in range(3):  # small-bowel loops
        blobs.append((1, (rng.uniform(85, 100), height * rng.uniform(0.5, 0.65),
                          width * rng.uniform(0.38, 0.62)),
                      (rng.uniform(18, 24), height * 0.08, width * 0.08), rng.uniform(0, 6)))
    blobs.append((2, (rng.uniform(40, 50), height * 0.35, width * 0.62),
                  (rng.uniform(20, 26), height * 0.09, width * 0.1), rng.uniform(0, 6)))
    return blobs


def synthetic_case_day(rng: np.random.Generator, height: int, width: int):
    """Truth and prediction stacks ``(DEPTH, 3, height, width)`` bool of one synthetic case-day."""
    truth = np.zeros((DEPTH, len(ORGANS), height, width), dtype=bool)
    pred = np.zeros_like(truth)
    for organ, centre, radii, phase in organ_blobs(rng, height, width):
        draw_blob(truth[:, organ], centre, radii, phase)
        draw_blob(pred[:, organ], centre, radii, phase + rng.normal(0, 0.05),
                  grow=rng.normal(0, 1.0), shift=tuple(rng.normal(0, 1.0, 2)),
                  z_extra=rng.integers(-2, 3))
    if rng.random() < 0.3:  # a small false blob somewhere
        draw_blob(pred[:, rng.integers(0, 3)], (rng.uniform(30, 110), height * rng.uniform(0.3, 0.7),
                                                width * rng.uniform(0.3, 0.7)), (2.5, 6, 6), 0.0)
    return pred, truth


def naive_dice(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-slice Dice ``(D, 3)`` in a Python loop over (slice, organ), as public notebooks do."""
    dice = np.full(pred.shape[:2], np.nan)
    for z in range(pred.shape[0]):
        for k in range(pred.shape[1]):
            p, t = pred[z, k], truth[z, k]
            total = p.sum() + t.sum()
            if total:
                dice[z, k] = 2.0 * (p & t).sum() / total
    return dice


def naive_hausdorff(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """Hausdorff of the union, then of each organ, with ``directed_hausdorff`` on point clouds."""
    volumes = [(pred.any(axis=1), truth.any(axis=1))] + [(pred[:, k], truth[:, k])
                                                         for k in range(pred.shape[1])]
    hausdorff = []
    for p, t in volumes:
        shape = np.array(p.shape, dtype=np.float64)
        if not p.any() and not t.any():
            hausdorff.append(math.nan)
        elif not p.any() or not t.any() or p.sum() > 10 * t.sum():
            hausdorff.append(1.0)
        else:
            pp, tp = np.argwhere(p) / shape, np.argwhere(t) / shape
            distance = max(directed_hausdorff(pp, tp)[0], directed_hausdorff(tp, pp)[0])
            hausdorff.append(min(1.0, distance / math.sqrt(3.0)))
    return hausdorff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case-days", type=int, default=54, help="case-days in the fold")
    parser.add_argument("--baseline-case-days", type=int, default=1,
                        help="case-days the naive method scores (5-40 s each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 1 <= args.baseline_case_days <= args.case_days:
        parser.error("--baseline-case-days must be between 1 and --case-days")
    rng = np.random.default_rng(args.seed)
    print(header("Scoring a validation fold (Dice, 3-D Hausdorff, score)",
                 "python benchmarks/metrics.py", torch.device("cpu")))

    accumulator = ScoreAccumulator()
    make_s, fold_times, fold_cpu_s, kept = 0.0, [], 0.0, {}
    for n in range(args.case_days):
        height, width = SIZES[n % len(SIZES)]
        start = time.perf_counter()
        pred, truth = synthetic_case_day(rng, height, width)
        make_s += time.perf_counter() - start
        start, cpu_start = time.perf_counter(), time.process_time()
        accumulator.add_case_day(f"case{n}_day0", pred, truth)
        fold_times.append(time.perf_counter() - start)
        fold_cpu_s += time.process_time() - cpu_start
        if n < args.baseline_case_days:
            kept[f"case{n}_day0"] = (pred, truth)
    result = accumulator.result()

    # On the baseline case-days both methods run back to back, so that load from other processes
    # falls on both alike; ours is the median of three runs.
    ours_s = dice_s = hausdorff_s = worst = 0.0
    for case_day, (pred, truth) in kept.items():
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            ours = score_case_day(case_day, pred, truth)
            runs.append(time.perf_counter() - start)
        ours_s += median(runs)
        start = time.perf_counter()
        dice = naive_dice(pred, truth)
        middle = time.perf_counter()
        hausdorff = naive_hausdorff(pred, truth)
        dice_s, hausdorff_s = dice_s + middle - start, hausdorff_s + time.perf_counter() - middle
        ours_hd = [ours.hausdorff, *ours.hausdorff_per_organ]
        worst = max(worst, float(np.nanmax(np.abs(dice - ours.dice_per_slice))),
                    max(abs(a - b) for a, b in zip(hausdorff, ours_hd) if not math.isnan(a)))
    naive_s = dice_s + hausdorff_s
    days = len(kept)

    print(f"Synthetic fold: {args.case_days} case-days, {result.slices} slices, sizes (W x H) "
          f"{', '.join(f'{w}x{h}' for h, w in SIZES)}, made in {make_s:.1f} s. Its score "
          f"{result.score:.4f} (Dice {result.dice:.4f}, Hausdorff {result.hausdorff:.4f}). Both "
          f"methods run back to back on the first {days} case-day(s) (266x266 first; the naive "
          "method is slower on 360x310).\n")
    print(markdown_table(["method", "case-days", "seconds", "ms per case-day (median)"], [
        ["ScoreAccumulator, whole fold", args.case_days, sum(fold_times),
         1000 * median(fold_times)],
        ["ScoreAccumulator, baseline case-days", days, ours_s, 1000 * ours_s / days],
        ["naive Dice: Python loop over (slice, organ)", days, dice_s, 1000 * dice_s / days],
        ["naive Hausdorff: directed_hausdorff, 4 volumes", days, hausdorff_s,
         1000 * hausdorff_s / days],
        ["naive, extrapolated to the fold", args.case_days, naive_s / days * args.case_days,
         1000 * naive_s / days],
    ]))
    print(f"\nCPU time of this process for scoring the whole fold: {fold_cpu_s:.2f} s (wall "
          f"{sum(fold_times):.2f} s; the difference is other processes' load).")
    print(f"largest difference between the two methods: {worst:.2e}")
    if worst > 1e-9:
        print("error: the fast scores disagree with the naive ones", file=sys.stderr)
        return 1
    print(f"ratio={naive_s / ours_s:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
