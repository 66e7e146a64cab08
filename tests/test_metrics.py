"""Dice, Hausdorff and the competition score on hand-built cases with known values."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import directed_hausdorff

from core import metrics
from core.metrics import (ScoreAccumulator, competition_score, dice_per_slice, hausdorff_3d,
                          score_case_day)

SQRT3 = math.sqrt(3.0)


def box(shape, z, y, x):
    """A bool volume of ``shape`` with the half-open box ``z × y × x`` (pairs of indices) set."""
    volume = np.zeros(shape, bool)
    volume[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = True
    return volume


def stack(shape, **organs):
    """A ``(D, 3, H, W)`` case-day stack from per-organ ``(D, H, W)`` volumes (others empty)."""
    out = np.zeros((shape[0], 3) + shape[1:], bool)
    for k, organ in enumerate(("large_bowel", "small_bowel", "stomach")):
        if organ in organs:
            out[:, k] = organs[organ]
    return out


def naive_hausdorff(a, b):
    """The public graders' way: point clouds scaled by the shape, scipy's directed_hausdorff."""
    scale = np.array(a.shape, dtype=np.float64)
    pa, pb = np.argwhere(a) / scale, np.argwhere(b) / scale
    return max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0]) / SQRT3


def test_dice_of_shifted_squares_and_skipped_pairs():
    truth = np.zeros((3, 20, 30), bool)
    pred = np.zeros_like(truth)
    truth[0, 5:15, 5:15] = True
    pred[0, 5:15, 7:17] = True          # 10×10 squares shifted by 2: overlap 80 of 100 + 100
    truth[1, 0:4, 0:5] = True           # 20 truth pixels, prediction empty: Dice 0
    dice = dice_per_slice(pred, truth)  # slice 2: both empty, skipped
    assert dice.shape == (3,)
    assert dice[0] == pytest.approx(0.8)
    assert dice[1] == 0.0
    assert math.isnan(dice[2])


@pytest.mark.parametrize("shift", [(0, 0, 3), (0, 2, 0), (1, 0, 0), (1, 2, 3), (-1, 0, -2)])
def test_hausdorff_of_shifted_boxes(shift):
    shape = (4, 20, 40)                 # D, H, W: normalised steps 1/4, 1/20, 1/40
    truth = box(shape, (1, 3), (5, 10), (10, 20))
    pred = np.roll(truth, shift, axis=(0, 1, 2))
    # The farthest voxel is a corner of the box, `shift` away from the other box's corner.
    expected = math.hypot(shift[0] / 4, shift[1] / 20, shift[2] / 40) / SQRT3
    assert hausdorff_3d(pred, truth) == pytest.approx(expected, rel=1e-12)
    assert hausdorff_3d(truth, pred) == pytest.approx(expected, rel=1e-12)


def test_hausdorff_identical_empty_and_worst_cases():
    shape = (5, 16, 16)
    truth = box(shape, (1, 3), (4, 8), (4, 8))
    empty = np.zeros(shape, bool)
    assert hausdorff_3d(truth, truth) == 0.0
    assert math.isnan(hausdorff_3d(empty, empty))        # both empty: skipped
    assert hausdorff_3d(empty, truth) == 1.0              # one side empty
    assert hausdorff_3d(truth, empty) == 1.0
    one = box(shape, (2, 3), (5, 6), (5, 6))
    ten = box(shape, (2, 3), (5, 6), (1, 11))             # 10× the truth: still a distance
    eleven = box(shape, (2, 3), (5, 6), (0, 11))          # more than 10×: the worst, 1
    assert hausdorff_3d(ten, one) == pytest.approx(5 / 16 / SQRT3)
    assert hausdorff_3d(eleven, one) == 1.0
    assert hausdorff_3d(one, eleven) == pytest.approx(5 / 16 / SQRT3)  # the rule is one-sided


def test_hausdorff_counts_voxels_deep_inside_the_prediction():
    # The prediction fills a box whose truth is only the box's shell: the farthest predicted voxel is
    # the centre, 3 steps from the shell, though every predicted surface voxel touches the truth.
    shape = (9, 9, 9)
    filled = box(shape, (1, 8), (1, 8), (1, 8))
    shell = filled & ~box(shape, (2, 7), (2, 7), (2, 7))
    assert hausdorff_3d(filled, shell) == pytest.approx(3 / 9 / SQRT3, rel=1e-12)


@pytest.mark.parametrize("seed_queries", [1, 256])
def test_hausdorff_matches_scipy_on_random_volumes(monkeypatch, seed_queries):
    # With one exact seed query the cheap upper bounds do all the pruning: a bound that is not one
    # would drop the farthest voxel here.
    monkeypatch.setattr(metrics, "_SEED_QUERIES", seed_queries)
    rng = np.random.default_rng(7)
    checked = 0
    while checked < 60:
        shape = tuple(int(n) for n in rng.integers(1, 14, size=3))
        pred = rng.random(shape) < rng.uniform(0.01, 0.6)
        truth = rng.random(shape) < rng.uniform(0.01, 0.6)
        if not pred.any() or not truth.any() or pred.sum() > 10 * truth.sum():
            continue
        assert hausdorff_3d(pred, truth) == pytest.approx(naive_hausdorff(pred, truth), abs=1e-12)
        checked += 1


def test_hausdorff_matches_scipy_on_smooth_blobs_of_a_non_square_scan():
    # Large enough that the fast path prunes most voxels before the exact search.
    depth, height, width = 40, 72, 62
    z, y, x = np.ogrid[:depth, :height, :width]
    truth = ((z - 20) / 12) ** 2 + ((y - 36) / 20) ** 2 + ((x - 30) / 15) ** 2 < 1
    pred = ((z - 21) / 13) ** 2 + ((y - 35 - 2 * np.sin(z / 5)) / 21) ** 2 + ((x - 31) / 14) ** 2 < 1
    pred[5:7, 10:14, 50:55] = True      # a small false blob far from the organ
    assert hausdorff_3d(pred, truth) == pytest.approx(naive_hausdorff(pred, truth), abs=1e-12)


def test_perfect_prediction_scores_one():
    shape = (6, 24, 32)
    truth = stack(shape, large_bowel=box(shape, (1, 5), (2, 9), (3, 20)),
                  stomach=box(shape, (0, 3), (10, 20), (10, 30)))
    scores = ScoreAccumulator()
    scores.add_case_day("case1_day0", truth.copy(), truth)
    result = scores.result()
    assert (result.dice, result.hausdorff, result.score) == (1.0, 0.0, 1.0)
    assert result.slices == 6
    assert result.dice_per_organ == {"large_bowel": 1.0, "small_bowel": 1.0, "stomach": 1.0}


def test_mean_dice_pools_pairs_and_the_score_uses_the_union_hausdorff():
    # Case-day A (square): one slice where the large bowel is a 10×10 square shifted by 2 (Dice 0.8).
    shape_a = (1, 20, 20)
    truth_a = stack(shape_a, large_bowel=box(shape_a, (0, 1), (5, 15), (5, 15)))
    pred_a = stack(shape_a, large_bowel=box(shape_a, (0, 1), (5, 15), (7, 17)))
    # Case-day B (non-square, 31 wide × 36 high): three slices of a perfect stomach (Dice 1 each).
    shape_b = (3, 36, 31)
    truth_b = stack(shape_b, stomach=box(shape_b, (0, 3), (4, 9), (20, 30)))
    scores = ScoreAccumulator()
    scores.add_case_day("case1_day0", pred_a, truth_a)
    day_b = scores.add_case_day("case2_day0", truth_b.copy(), truth_b)
    result = scores.result()

    hd_a = (2 / 20) / SQRT3                          # the square's 2-pixel shift, x normalised by 20
    assert result.dice == pytest.approx((0.8 + 1 + 1 + 1) / 4)    # pooled, not (0.8 + 1) / 2
    assert result.hausdorff == pytest.approx((hd_a + 0.0) / 2)
    assert result.score == pytest.approx(0.4 * 0.95 + 0.6 * (1 - hd_a / 2))
    assert result.dice_per_organ == pytest.approx(
        {"large_bowel": 0.8, "small_bowel": 1.0, "stomach": 1.0})
    assert result.hausdorff_per_organ == pytest.approx(
        {"large_bowel": hd_a, "small_bowel": 0.0, "stomach": 0.0})
    assert result.slices == 4
    assert list(result.case_days) == ["case1_day0", "case2_day0"]
    assert result.case_days["case2_day0"] is day_b
    per_slice = result.case_days["case1_day0"].dice_per_slice
    assert per_slice.shape == (1, 3)
    assert per_slice[0, 0] == pytest.approx(0.8) and np.isnan(per_slice[0, 1:]).all()
    assert result.to_dict() == {
        "dice": result.dice, "hausdorff": result.hausdorff, "score": result.score,
        "dice_per_organ": result.dice_per_organ, "hausdorff_per_organ": result.hausdorff_per_organ,
        "slices": 4}


def test_the_right_pixels_under_the_wrong_organ():
    # Predicting the large bowel's pixels as stomach: every organ is wrong (Dice 0, Hausdorff 1 per
    # organ) but the union of the organs is perfect, and the score's Hausdorff is the union's.
    shape = (4, 16, 16)
    organ = box(shape, (1, 3), (3, 9), (3, 9))
    scored = score_case_day("case1_day0", stack(shape, stomach=organ),
                            stack(shape, large_bowel=organ))
    assert scored.dice == 0.0
    assert scored.hausdorff == 0.0
    assert scored.hausdorff_per_organ.tolist()[0] == 1.0 and scored.hausdorff_per_organ[2] == 1.0
    assert math.isnan(scored.hausdorff_per_organ[1])
    assert scored.score == pytest.approx(0.6)


def test_nothing_to_score_is_perfect_agreement():
    empty = np.zeros((3, 3, 8, 8), bool)
    scores = ScoreAccumulator()
    day = scores.add_case_day("case1_day0", empty, empty)
    assert np.isnan(day.dice_per_slice).all() and math.isnan(day.hausdorff)
    assert (day.dice, day.score) == (1.0, 1.0)
    result = scores.result()
    assert (result.dice, result.hausdorff, result.score, result.slices) == (1.0, 0.0, 1.0, 3)


def test_bad_input_is_rejected():
    scores = ScoreAccumulator()
    good = np.zeros((2, 3, 8, 8), bool)
    scores.add_case_day("case1_day0", good, good)
    with pytest.raises(ValueError, match="already scored"):
        scores.add_case_day("case1_day0", good, good)
    with pytest.raises(ValueError, match="case1_day1: expected"):
        scores.add_case_day("case1_day1", good, np.zeros((2, 3, 8, 9), bool))
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        hausdorff_3d(good, good)


def test_competition_score_weights():
    assert competition_score(1.0, 0.0) == 1.0
    assert competition_score(0.5, 0.25) == pytest.approx(0.4 * 0.5 + 0.6 * 0.75)
