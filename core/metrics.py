"""Segmentation scores of the UW-Madison GI Tract task: Dice, Hausdorff and the competition score.

Definitions (the CLI, the Review page and training validation all use these):

* **Dice** is 2-D, per (slice, organ): ``2 |P ∩ T| / (|P| + |T|)`` over the slice's pixels. A pair
  where prediction and truth are both empty is *skipped* (it is neither 1 nor 0). The mean Dice is the
  plain mean over every non-skipped (slice, organ) pair of the whole set; the mean Dice of an organ is
  the mean over that organ's non-skipped slices.
* **Hausdorff** is 3-D, per case-day, on the stack of its slices in slice order. Voxel coordinates
  ``(z, y, x)`` are divided by the volume's shape ``(depth, height, width)`` and the symmetric
  Hausdorff distance between the two voxel sets is divided by √3, so 0 means identical and the value
  stays below 1. It is 1 when exactly one side is empty or when the prediction has more than 10 times
  the truth's voxels; a volume where both sides are empty is skipped. The mean Hausdorff is the mean
  over the non-skipped case-days (for an organ: the case-days where that organ is not skipped).
* The **score** uses the Hausdorff of the per-slice union of the three organs (as the public Kaggle
  graders do): ``score = 0.4 × mean Dice + 0.6 × (1 − mean Hausdorff)``. The per-organ Hausdorff
  values (each organ's own volume) are reported beside it and do not enter the score.

When nothing is left to score (everything skipped, i.e. prediction and truth agree that nothing is
there) the mean Dice is 1 and the mean Hausdorff is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from core.data import ORGANS

DICE_WEIGHT = 0.4
HAUSDORFF_WEIGHT = 0.6
OVERSEGMENTATION_FACTOR = 10
"""A prediction with more than this many times the truth's voxels gets the worst Hausdorff, 1."""

# Voxels with the largest upper bounds that are measured exactly first; the best of them is the bar
# that every other voxel's bound must beat to be measured at all.
_SEED_QUERIES = 256


def dice_per_slice(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of each 2-D mask pair: ``(..., H, W)`` bool arrays → ``(...)`` float64, NaN where skipped.

    For ``(D, 3, H, W)`` case-day stacks the result is ``(D, 3)``: one value per slice and organ, NaN
    where prediction and truth are both empty.
    """
    if np.shape(pred) != np.shape(truth) or np.ndim(pred) < 2:
        raise ValueError(f"expected masks of one shape (..., H, W), got {np.shape(pred)} and "
                         f"{np.shape(truth)}")
    return _dice(*_pixel_counts(np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)))


def hausdorff_3d(pred: np.ndarray, truth: np.ndarray) -> float:
    """Normalised symmetric Hausdorff distance of two ``(D, H, W)`` bool volumes, in [0, 1].

    Coordinates are scaled by ``1 / (D, H, W)`` and the distance by ``1 / √3``. Returns 1.0 when
    exactly one volume is empty or ``pred`` has more than 10× the voxels of ``truth``, and NaN when
    both are empty (the volume is skipped).
    """
    if np.shape(pred) != np.shape(truth) or np.ndim(pred) != 3:
        raise ValueError(f"expected two (D, H, W) volumes of one shape, got {np.shape(pred)} and "
                         f"{np.shape(truth)}")
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    return _hausdorff(pred, truth, np.count_nonzero(pred, axis=(1, 2)),
                      np.count_nonzero(truth, axis=(1, 2)))


@dataclass(frozen=True, eq=False)
class CaseDayScore:
    """Scores of one case-day (one scan), as the Review page shows them."""

    case_day: str
    dice_per_slice: np.ndarray
    """``(D, 3)`` float64 Dice per slice (slice order) and organ (``ORGANS`` order); NaN = skipped."""
    hausdorff: float
    """Hausdorff of the union of the organs in [0, 1]; NaN when both unions are empty (skipped)."""
    hausdorff_per_organ: np.ndarray
    """``(3,)`` float64 Hausdorff of each organ's own volume; NaN where skipped."""

    @property
    def dice(self) -> float:
        """Mean Dice over this case-day's non-skipped (slice, organ) pairs (1.0 when there are none)."""
        scored = self.dice_per_slice[~np.isnan(self.dice_per_slice)]
        return float(scored.mean()) if scored.size else 1.0

    def organ_dice(self, k: int) -> float:
        """Mean Dice of organ ``k`` over the slices that score it (NaN when every slice skips it)."""
        values = self.dice_per_slice[:, k]
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else math.nan

    @property
    def score(self) -> float:
        """``0.4 × dice + 0.6 × (1 − hausdorff)`` of this case-day alone (a skipped Hausdorff is 0)."""
        hausdorff = 0.0 if math.isnan(self.hausdorff) else self.hausdorff
        return competition_score(self.dice, hausdorff)


@dataclass(frozen=True, eq=False)
class ScoreResult:
    """Scores of a whole set of case-days; see the module docstring for the definitions."""

    dice: float
    hausdorff: float
    score: float
    dice_per_organ: dict[str, float]
    hausdorff_per_organ: dict[str, float]
    slices: int
    case_days: dict[str, CaseDayScore]
    """Per case-day detail (per-slice Dice for a viewer), in the order they were added."""

    def to_dict(self) -> dict:
        """The summary as plain JSON-ready values (no per-slice detail)."""
        return {
            "dice": self.dice,
            "hausdorff": self.hausdorff,
            "score": self.score,
            "dice_per_organ": dict(self.dice_per_organ),
            "hausdorff_per_organ": dict(self.hausdorff_per_organ),
            "slices": self.slices,
        }


def competition_score(dice: float, hausdorff: float) -> float:
    """``0.4 × dice + 0.6 × (1 − hausdorff)``, both arguments in [0, 1]."""
    return DICE_WEIGHT * dice + HAUSDORFF_WEIGHT * (1.0 - hausdorff)


def score_case_day(case_day: str, pred: np.ndarray, truth: np.ndarray) -> CaseDayScore:
    """Score one case-day from ``(D, 3, H, W)`` bool stacks (slices in order, organs in ``ORGANS``)."""
    shape = np.shape(pred)
    if shape != np.shape(truth) or len(shape) != 4 or shape[1] != len(ORGANS):
        raise ValueError(f"{case_day}: expected prediction and truth of one shape (D, 3, H, W), "
                         f"got {np.shape(pred)} and {np.shape(truth)}")
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    n_pred, n_truth, n_both = _pixel_counts(pred, truth)
    per_organ = np.array([
        _hausdorff(pred[:, k], truth[:, k], n_pred[:, k], n_truth[:, k])
        for k in range(len(ORGANS))
    ])
    union = _union_hausdorff(pred, truth, n_pred, n_truth)
    return CaseDayScore(case_day, _dice(n_pred, n_truth, n_both), union, per_organ)


def score_terms(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, float]:
    """What one case-day adds to the competition score: its ``(D, 3)`` Dice per slice and the
    Hausdorff of the organs' union, from ``(D, 3, H, W)`` bool stacks. ``score_case_day`` without
    the per-organ Hausdorff values (which do not enter the score): a quarter of the distance work,
    for searches that score many candidates."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    n_pred, n_truth, n_both = _pixel_counts(pred, truth)
    return _dice(n_pred, n_truth, n_both), _union_hausdorff(pred, truth, n_pred, n_truth)


def score_of_terms(terms) -> float:
    """The competition score of case-days given as ``score_terms`` pairs (as
    ``ScoreAccumulator.result().score``)."""
    terms = list(terms)
    dice = np.concatenate([d for d, _ in terms]) if terms else np.empty((0, len(ORGANS)))
    hausdorff = np.array([h for _, h in terms], dtype=np.float64)
    return competition_score(_mean_or(dice, 1.0), _mean_or(hausdorff, 0.0))


class ScoreAccumulator:
    """Scores case-days one at a time, so that a whole validation fold never sits in memory::

        scores = ScoreAccumulator()
        for case_day, (pred, truth) in stacks:        # (D, 3, H, W) bool each, slices in order
            scores.add_case_day(case_day, pred, truth)
        print(scores.result().score)
    """

    def __init__(self) -> None:
        self._case_days: dict[str, CaseDayScore] = {}

    def add_case_day(self, case_day: str, pred: np.ndarray, truth: np.ndarray) -> CaseDayScore:
        """Score one case-day (see ``score_case_day``), keep it, and return its scores."""
        if case_day in self._case_days:
            raise ValueError(f"{case_day} was already scored")
        scored = score_case_day(case_day, pred, truth)
        self._case_days[case_day] = scored
        return scored

    def add_score(self, scored: CaseDayScore) -> None:
        """Keep a case-day scored elsewhere (another DDP process)."""
        if scored.case_day in self._case_days:
            raise ValueError(f"{scored.case_day} was already scored")
        self._case_days[scored.case_day] = scored

    @property
    def case_day_scores(self) -> list[CaseDayScore]:
        return list(self._case_days.values())

    def result(self) -> ScoreResult:
        """Aggregate everything added so far (see the module docstring for the definitions)."""
        days = list(self._case_days.values())
        if days:
            dice = np.concatenate([d.dice_per_slice for d in days])
            per_organ_hd = np.stack([d.hausdorff_per_organ for d in days])
            union_hd = np.array([d.hausdorff for d in days])
        else:
            dice = np.empty((0, len(ORGANS)))
            per_organ_hd = np.empty((0, len(ORGANS)))
            union_hd = np.empty(0)
        mean_dice = _mean_or(dice, 1.0)
        mean_hd = _mean_or(union_hd, 0.0)
        return ScoreResult(
            dice=mean_dice,
            hausdorff=mean_hd,
            score=competition_score(mean_dice, mean_hd),
            dice_per_organ={o: _mean_or(dice[:, k], 1.0) for k, o in enumerate(ORGANS)},
            hausdorff_per_organ={o: _mean_or(per_organ_hd[:, k], 0.0) for k, o in enumerate(ORGANS)},
            slices=len(dice),
            case_days=dict(self._case_days),
        )


def _mean_or(values: np.ndarray, default: float) -> float:
    """Mean of the non-NaN values, or ``default`` when every value is NaN (all skipped)."""
    scored = values[~np.isnan(values)]
    return float(scored.mean()) if scored.size else default


def _pixel_counts(pred: np.ndarray, truth: np.ndarray):
    """Pixels of ``pred``, ``truth`` and both, per 2-D mask: three ``(...)`` int64 arrays."""
    lead, pixels = pred.shape[:-2], pred.shape[-2] * pred.shape[-1]
    # Bit-packed, the masks are 8× smaller: the AND and the counts run over bytes, not bools.
    packed_pred = np.packbits(pred.reshape(-1, pixels), axis=1)
    packed_truth = np.packbits(truth.reshape(-1, pixels), axis=1)
    return tuple(np.bitwise_count(packed).sum(axis=1, dtype=np.int64).reshape(lead)
                 for packed in (packed_pred, packed_truth, packed_pred & packed_truth))


def _dice(n_pred: np.ndarray, n_truth: np.ndarray, n_both: np.ndarray) -> np.ndarray:
    total = n_pred + n_truth
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * n_both / total, np.nan)


def _trivial_hausdorff(n_pred: int, n_truth: int) -> float | None:
    """The Hausdorff value fixed by the voxel counts alone (skipped, or the worst), else None."""
    if n_pred == 0 and n_truth == 0:
        return math.nan
    if n_pred == 0 or n_truth == 0 or n_pred > OVERSEGMENTATION_FACTOR * n_truth:
        return 1.0
    return None


def _hausdorff(pred: np.ndarray, truth: np.ndarray, pred_per_slice: np.ndarray,
               truth_per_slice: np.ndarray) -> float:
    """``hausdorff_3d`` of two ``(D, H, W)`` volumes whose voxel counts per z slice are known."""
    fixed = _trivial_hausdorff(int(pred_per_slice.sum()), int(truth_per_slice.sum()))
    if fixed is not None:
        return fixed
    box = _bounding_box(pred, truth, pred_per_slice + truth_per_slice)
    return _cropped_hausdorff(pred[box], truth[box], pred.shape)


def _union_hausdorff(pred: np.ndarray, truth: np.ndarray, n_pred: np.ndarray,
                     n_truth: np.ndarray) -> float:
    """Hausdorff of the per-slice union of the organs of two ``(D, 3, H, W)`` stacks.

    ``n_pred`` and ``n_truth`` are the ``(D, 3)`` pixel counts of the stacks.
    """
    box = _bounding_box(pred, truth, n_pred.sum(axis=1) + n_truth.sum(axis=1))
    if box is None:
        return math.nan
    zs, ys, xs = box
    union_pred = pred[zs, :, ys, xs].any(axis=1)
    union_truth = truth[zs, :, ys, xs].any(axis=1)
    fixed = _trivial_hausdorff(int(np.count_nonzero(union_pred)), int(np.count_nonzero(union_truth)))
    if fixed is not None:
        return fixed
    return _cropped_hausdorff(union_pred, union_truth, (pred.shape[0],) + pred.shape[2:])


def _cropped_hausdorff(pred: np.ndarray, truth: np.ndarray, shape: tuple[int, ...]) -> float:
    """Hausdorff of two non-empty volumes cropped to a box that holds every voxel of both.

    ``shape`` is the uncropped ``(D, H, W)``, which sets the normalisation.
    """
    scale = 1.0 / np.asarray(shape, dtype=np.float64)
    distance = max(_directed_hausdorff(pred, truth, scale), _directed_hausdorff(truth, pred, scale))
    return min(1.0, distance / math.sqrt(3.0))


def _bounding_box(pred: np.ndarray, truth: np.ndarray, per_slice: np.ndarray):
    """Slices ``(z, y, x)`` of the smallest box holding every voxel of both; None when both are empty.

    Works on ``(D, H, W)`` volumes and on ``(D, 3, H, W)`` stacks (then the box holds all organs).
    ``per_slice`` is the number of voxels of both in each z slice.
    """
    z = np.flatnonzero(per_slice)
    if not z.size:
        return None
    zs = slice(int(z[0]), int(z[-1]) + 1)
    footprint = pred[zs].any(axis=0) | truth[zs].any(axis=0)
    if footprint.ndim == 3:  # (3, H, W) of a stack: any organ
        footprint = footprint.any(axis=0)
    y = np.flatnonzero(footprint.any(axis=1))
    x = np.flatnonzero(footprint.any(axis=0))
    return zs, slice(int(y[0]), int(y[-1]) + 1), slice(int(x[0]), int(x[-1]) + 1)


def _directed_hausdorff(source: np.ndarray, target: np.ndarray, scale: np.ndarray) -> float:
    """Largest distance from a ``source`` voxel to its nearest ``target`` voxel, in scaled units.

    Exact, on volumes cropped to a box that holds all of ``target``. Every source voxel counts (the
    farthest one can lie inside ``source``, e.g. in a hole of ``target``), but only ``target``'s
    surface voxels are searched: the nearest target voxel of an outside point is always on the
    surface. A cheap upper bound per voxel (the nearest target voxel along its own row, column or
    z line) rules out most voxels once a few exact distances are known; only the rest go to the
    k-d tree.
    """
    outside = np.flatnonzero(source & ~target)
    if not outside.size:
        return 0.0
    shape = target.shape
    points = np.stack(np.unravel_index(outside, shape), axis=1)
    surface = np.stack(np.unravel_index(np.flatnonzero(_surface(target)), shape), axis=1)
    upper = np.full(len(points), np.inf)
    for axis in range(3):
        upper = np.minimum(upper, _distance_along_axis(points, surface, axis, shape) * scale[axis])
    # Built for a few hundred queries: a quick build beats a tree that is fast to query.
    tree = cKDTree(surface * scale, balanced_tree=False, compact_nodes=False)
    seeds = (np.argpartition(upper, -_SEED_QUERIES)[-_SEED_QUERIES:]
             if upper.size > _SEED_QUERIES else slice(None))
    best = float(tree.query(points[seeds] * scale)[0].max())
    open_ = upper > best
    if open_.any():
        best = max(best, float(tree.query(points[open_] * scale)[0].max()))
    return best


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one of their 6 neighbours outside it (or outside the array)."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for step in (slice(None, -2), slice(2, None)):
            index = [slice(1, -1)] * 3
            index[axis] = step
            inner &= padded[tuple(index)]
    return mask & ~inner


def _distance_along_axis(points: np.ndarray, surface: np.ndarray, axis: int,
                         shape: tuple[int, ...]) -> np.ndarray:
    """Voxel steps from each point to the nearest surface voxel on its line along ``axis``; inf if none.

    ``points`` lie outside the mask and ``surface`` holds its surface voxels, both ``(n, 3)`` indices;
    walking from an outside point along a line, the first mask voxel met is a surface voxel.
    """
    keys = np.sort(_line_keys(surface, axis, shape))
    query = _line_keys(points, axis, shape)
    pos = np.searchsorted(keys, query)
    line = query // shape[axis]
    before = keys[np.maximum(pos - 1, 0)]
    after = keys[np.minimum(pos, len(keys) - 1)]
    distance = np.full(len(points), np.inf)
    ok = (pos > 0) & (before // shape[axis] == line)
    distance[ok] = query[ok] - before[ok]
    ok = (pos < len(keys)) & (after // shape[axis] == line)
    distance[ok] = np.minimum(distance[ok], after[ok] - query[ok])
    return distance


def _line_keys(points: np.ndarray, axis: int, shape: tuple[int, ...]) -> np.ndarray:
    """Integer keys that sort ``(n, 3)`` voxel indices by line along ``axis``, then along the line.

    ``key // shape[axis]`` identifies the line and ``key % shape[axis]`` is the position on it.
    """
    a, b = [k for k in range(3) if k != axis]
    return (points[:, a] * shape[b] + points[:, b]) * shape[axis] + points[:, axis]
