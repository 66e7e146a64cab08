"""Hausdorff: the engine's hand-written directed Hausdorff against scipy's distance transform.

    python benchmarks/hausdorff_impl.py [--case-days 8] [--repeats 3] [--seed 0]

``core.metrics.hausdorff_3d`` (see its module docstring: voxel coordinates divided by the volume's
shape ``(D, H, W)``, the symmetric distance divided by √3; 1 when exactly one side is empty or the
prediction has more than 10× the truth's voxels; NaN when both are empty) finds each directed
distance with a k-d tree over the target's surface voxels, after cheap per-line upper bounds have
ruled out most source voxels. The alternative here, ``edt_hausdorff_3d``, is the textbook one:
crop both volumes to the box that holds all their voxels, run
``scipy.ndimage.distance_transform_edt(~target, sampling=1 / shape)`` (distance from every voxel of
the box to the nearest target voxel, in the metric's anisotropic units) and take its maximum over
the source voxels, both ways. Every target voxel is inside the box, so this is exact too.

Exactness: both on synthetic case-days like ``benchmarks/metrics.py``'s (blobby organs, predictions
with small errors) at D×H×W 144×266×266 and 80×310×360 (the union and each organ, plus every
cross-organ pair, which gives large distances and points inside the other volume), on small random
sparse volumes, and on edge cases (identical, disjoint, one voxel, touching the border, a hole, the
empty and oversegmentation rules). Speed: per case-day, the four volumes the engine scores (the
union and three organs), both implementations back to back in turns, median of ``--repeats``; also
the distance kernel alone on the same cropped volumes (``core.metrics._cropped_hausdorff`` against
the EDT one). ``ratio=`` lines are ours / EDT: above 1 means the library version is faster
(issue 13: libraries before hand-written code, by measurement).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402  (only for the machine header)

from benchmarks.common import header, markdown_table, median  # noqa: E402
from benchmarks.metrics import draw_blob  # noqa: E402
from core.data import ORGANS  # noqa: E402
from core.metrics import (OVERSEGMENTATION_FACTOR, _bounding_box,  # noqa: E402
                          _cropped_hausdorff, hausdorff_3d)

SHAPES = ((144, 266, 266), (80, 310, 360))  # (depth, height, width)


# -- the distance-transform version ---------------------------------------------------------------
def edt_directed(source: np.ndarray, target: np.ndarray, scale: np.ndarray) -> float:
    """Largest distance from a ``source`` voxel to the nearest ``target`` voxel, in scaled units;
    both volumes cropped to a box holding every voxel of ``target``."""
    distance = distance_transform_edt(~target, sampling=scale)  # 0 on target voxels
    return float(distance[source].max())


def edt_cropped_hausdorff(pred: np.ndarray, truth: np.ndarray, shape: tuple[int, ...]) -> float:
    """Drop-in for ``core.metrics._cropped_hausdorff``: non-empty volumes, cropped; ``shape`` is the
    uncropped ``(D, H, W)``."""
    scale = 1.0 / np.asarray(shape, dtype=np.float64)
    distance = max(edt_directed(pred, truth, scale), edt_directed(truth, pred, scale))
    return min(1.0, distance / math.sqrt(3.0))


def edt_hausdorff_3d(pred: np.ndarray, truth: np.ndarray) -> float:
    """``hausdorff_3d`` from the module docstring's definition alone, with the distance
    transform."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    n_pred, n_truth = np.count_nonzero(pred), np.count_nonzero(truth)
    if n_pred == 0 and n_truth == 0:
        return math.nan
    if n_pred == 0 or n_truth == 0 or n_pred > OVERSEGMENTATION_FACTOR * n_truth:
        return 1.0
    either = pred | truth
    box = tuple(slice(int(idx[0]), int(idx[-1]) + 1) for idx in
                (np.flatnonzero(either.any(axis=(1, 2))), np.flatnonzero(either.any(axis=(0, 2))),
                 np.flatnonzero(either.any(axis=(0, 1)))))
    return edt_cropped_hausdorff(pred[box], truth[box], pred.shape)


# -- data -----------------------------------------------------------------------------------------
def synthetic_case_day(rng: np.random.Generator, depth: int, height: int, width: int):
    """Truth and prediction ``(depth, 3, height, width)`` bool: ``benchmarks/metrics.py``'s organs
    (colon as two tubes, small-bowel loops, stomach) with z positions and lengths scaled to
    ``depth``, predictions with small errors and now and then a false blob."""
    z = depth / 144
    blobs = []
    colon_z = rng.uniform(65, 80) * z
    for side in (0.28, 0.72):
        blobs.append((0, (colon_z, height * rng.uniform(0.5, 0.6), width * side),
                      (rng.uniform(30, 38) * z, height * 0.07, width * 0.06), rng.uniform(0, 6)))
    for _ in range(3):
        blobs.append((1, (rng.uniform(85, 100) * z, height * rng.uniform(0.5, 0.65),
                          width * rng.uniform(0.38, 0.62)),
                      (rng.uniform(18, 24) * z, height * 0.08, width * 0.08), rng.uniform(0, 6)))
    blobs.append((2, (rng.uniform(40, 50) * z, height * 0.35, width * 0.62),
                  (rng.uniform(20, 26) * z, height * 0.09, width * 0.1), rng.uniform(0, 6)))
    truth = np.zeros((depth, len(ORGANS), height, width), dtype=bool)
    pred = np.zeros_like(truth)
    for organ, centre, radii, phase in blobs:
        draw_blob(truth[:, organ], centre, radii, phase)
        draw_blob(pred[:, organ], centre, radii, phase + rng.normal(0, 0.05),
                  grow=rng.normal(0, 1.0), shift=tuple(rng.normal(0, 1.0, 2)),
                  z_extra=rng.integers(-2, 3))
    if rng.random() < 0.3:
        draw_blob(pred[:, rng.integers(0, 3)], (rng.uniform(0.2, 0.75) * depth,
                                                height * rng.uniform(0.3, 0.7),
                                                width * rng.uniform(0.3, 0.7)), (2.5, 6, 6), 0.0)
    return pred, truth


def case_day_volumes(pred: np.ndarray, truth: np.ndarray):
    """The four (pred, truth) volume pairs the engine scores: the union, then each organ."""
    return [(pred.any(axis=1), truth.any(axis=1))] + [(pred[:, k], truth[:, k])
                                                      for k in range(pred.shape[1])]


def ball(shape, centre, radius) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius ** 2


def edge_cases():
    """``(name, pred, truth)`` volumes that probe the rules and the corners of the geometry."""
    shape = (40, 60, 50)
    empty = np.zeros(shape, dtype=bool)
    blob = ball(shape, (20, 30, 25), 8)
    cases = [("identical blobs", blob, blob.copy()),
             ("disjoint blobs", ball(shape, (10, 15, 12), 5), ball(shape, (30, 45, 38), 6))]
    one_a, one_b = empty.copy(), empty.copy()
    one_a[3, 4, 5] = True
    one_b[30, 50, 7] = True
    cases += [("one voxel, same place", one_a, one_a.copy()),
              ("one voxel each, apart", one_a, one_b)]
    small = ball(shape, (20, 30, 25), 1)  # 7 voxels: 1 voxel is not oversegmentation
    cases += [("one voxel vs small blob", one_a, small)]
    corner_a, corner_b = empty.copy(), empty.copy()
    corner_a[0, 0, 0] = True
    corner_b[-1, -1, -1] = True
    cases += [("opposite corners", corner_a, corner_b)]
    border = ball(shape, (20, 30, 25), 40) & ~ball(shape, (20, 30, 25), 3)  # fills to every face
    cases += [("touching every face, tiny hole", border, ball(shape, (20, 30, 25), 40)),
              ("blob touching a face vs inner blob", ball(shape, (0, 30, 25), 12), blob)]
    shell = ball(shape, (20, 30, 25), 12) & ~ball(shape, (20, 30, 25), 9)
    cases += [("filled ball vs its shell (hole)", ball(shape, (20, 30, 25), 12), shell)]
    flat = (1, 64, 64)
    slab_a, slab_b = np.zeros(flat, dtype=bool), np.zeros(flat, dtype=bool)
    slab_a[0, 5:20, 5:20] = True
    slab_b[0, 30:60, 40:63] = True
    cases += [("single-slice volume", slab_a, slab_b)]
    cases += [("both empty (skipped: NaN)", empty, empty.copy()),
              ("prediction empty (1)", empty, blob), ("truth empty (1)", blob, empty.copy())]
    big = ball(shape, (20, 30, 25), 4)
    n = int(big.sum())
    ten, eleven = empty.copy(), empty.copy()
    ten.flat[:10 * n] = True
    eleven.flat[:10 * n + 1] = True
    cases += [("prediction exactly 10× truth", ten, big),
              ("prediction 10× + 1 voxel (1)", eleven, big)]
    return cases


def random_sparse(rng: np.random.Generator, count: int):
    """Small volumes of scattered voxels (many interior points, holes and far outliers)."""
    out = []
    for _ in range(count):
        shape = tuple(int(v) for v in rng.integers(2, 40, 3))
        pred = rng.random(shape) < rng.uniform(0.005, 0.4)
        truth = rng.random(shape) < rng.uniform(0.005, 0.4)
        out.append((pred, truth))
    return out


# -- run ------------------------------------------------------------------------------------------
def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def diff(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    return abs(a - b)


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case-days", type=int, default=8, help="synthetic case-days per shape")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each per case-day")
    parser.add_argument("--sparse", type=int, default=300, help="small random sparse pairs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print(header("Hausdorff: ours (k-d tree + line bounds) vs scipy distance_transform_edt",
                 "python benchmarks/hausdorff_impl.py "
                 + " ".join(argv if argv is not None else sys.argv[1:]), torch.device("cpu")))

    worst: dict[str, float] = {}
    counts: dict[str, int] = {}

    def check(group: str, pred, truth) -> None:
        d = diff(hausdorff_3d(pred, truth), edt_hausdorff_3d(pred, truth))
        worst[group] = max(worst.get(group, 0.0), d)
        counts[group] = counts.get(group, 0) + 1

    speed_rows, ratios = [], []
    for depth, height, width in SHAPES:
        full, kernel, voxels = {"ours": [], "edt": []}, {"ours": [], "edt": []}, []
        for n in range(args.case_days):
            pred, truth = synthetic_case_day(rng, depth, height, width)
            volumes = case_day_volumes(pred, truth)
            for p, t in volumes:
                check(f"synthetic {depth}×{height}×{width}, union + organs", p, t)
            for i in range(len(ORGANS)):
                for j in range(len(ORGANS)):
                    if i != j:
                        check(f"synthetic {depth}×{height}×{width}, cross-organ pairs",
                              pred[:, i], truth[:, j])
            crops = []
            for p, t in volumes:
                box = _bounding_box(p, t, p.sum(axis=(1, 2)) + t.sum(axis=(1, 2)))
                crops.append((p[box], t[box], p.shape))
            voxels.append(sum(p.size for p, _, _ in crops) / len(crops))
            runs = {"full ours": [], "full edt": [], "kernel ours": [], "kernel edt": []}
            for r in range(args.repeats):
                order = ("ours", "edt") if (n + r) % 2 == 0 else ("edt", "ours")
                for who in order:
                    fn = hausdorff_3d if who == "ours" else edt_hausdorff_3d
                    runs[f"full {who}"].append(sum(timed(fn, p, t)[0] for p, t in volumes))
                for who in order:
                    fn = _cropped_hausdorff if who == "ours" else edt_cropped_hausdorff
                    runs[f"kernel {who}"].append(sum(timed(fn, *c)[0] for c in crops))
            for who in ("ours", "edt"):
                full[who].append(median(runs[f"full {who}"]))
                kernel[who].append(median(runs[f"kernel {who}"]))
        size = f"{depth}×{height}×{width}"
        for what, table in (("hausdorff_3d, 4 volumes", full), ("distance kernel only", kernel)):
            ours_ms, edt_ms = 1e3 * median(table["ours"]), 1e3 * median(table["edt"])
            speed_rows.append([size, what, args.case_days, ours_ms, edt_ms, ours_ms / edt_ms])
            ratios.append((size, what, ours_ms / edt_ms))
        speed_rows[-1].append(None)
        speed_rows[-2].append(median(voxels) / 1e6)

    for pred, truth in random_sparse(rng, args.sparse):
        check("small random sparse volumes", pred, truth)
    edge_rows = []
    for name, pred, truth in edge_cases():
        ours, edt = hausdorff_3d(pred, truth), edt_hausdorff_3d(pred, truth)
        check("edge cases", pred, truth)
        d = diff(ours, edt)
        edge_rows.append([name, f"{ours:.12f}", f"{edt:.12f}", "exactly" if same(ours, edt) else
                          f"to {d:.1e}" if d <= 1e-12 else f"NO ({d:.1e})"])

    print(f"{args.case_days} synthetic case-days per shape (D×H×W); per case-day the union and "
          f"the three organs; each implementation {args.repeats}× per case-day, in turns; medians "
          "over the case-days. The kernel rows time the distance part alone on volumes already "
          "cropped to their box (core.metrics._cropped_hausdorff vs the EDT drop-in).\n")
    print(markdown_table(["D×H×W", "what", "case-days", "ours ms/case-day", "EDT ms/case-day",
                          "ours / EDT", "box per volume (Mvoxels)"], speed_rows))
    print("\nExactness (largest |ours − EDT| over each group; NaN = NaN counts as equal):\n")
    print(markdown_table(["pairs", "count", "max |difference|"],
                         [[g, counts[g], f"{worst[g]:.1e}"] for g in worst]))
    print("\nEdge cases:\n")
    print(markdown_table(["case", "ours", "EDT", "equal"], edge_rows))
    largest = max(worst.values())
    print(f"\nlargest difference over all {sum(counts.values())} pairs: {largest:.2e}")
    print()
    for size, what, ratio in ratios:
        print(f"ratio={ratio:.2f}  (ours / EDT, {what}, {size})")
    return 0 if largest <= 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
