"""Post-processing rules on phantoms, and the search on out-of-fold-like predictions."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import CancelledError, StudioError
from core.metrics import ScoreAccumulator
from core.postprocess import GRID, PostProcess, apply, search


def _disk(shape, centre, radius):
    y, x = np.ogrid[:shape[0], :shape[1]]
    return (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius ** 2


def test_the_default_is_plain_thresholding_and_argmax():
    rng = np.random.default_rng(0)
    probs = rng.random((4, 3, 20, 24)).astype(np.float16)
    assert np.array_equal(apply(probs, PostProcess.default()), probs >= 0.5)
    small = (probs / 3).astype(np.float32)
    full = np.concatenate([1 - small.sum(1, keepdims=True), small], 1).argmax(1)
    expected = np.stack([full == k + 1 for k in range(3)], 1)
    assert np.array_equal(apply(small, None, "multiclass"), expected)


def test_size_rules_remove_exactly_the_small_parts():
    masks = np.zeros((3, 3, 40, 40), np.float32)
    masks[1, 0, 2:4, 2:5] = 1           # 6 px blob on slice 1
    masks[1, 0, 20:26, 20:25] = 1       # 30 px blob on the same slice
    masks[0, 1, 5:7, 5:7] = masks[1, 1, 5:7, 5:7] = 1   # 8-voxel 3-D blob over two slices
    masks[0:3, 1, 20:30, 20:30] = 1     # 300-voxel 3-D blob
    masks[2, 2, 0:3, 0:3] = 1           # a 9 px stomach slice
    masks[1, 2, 10:20, 10:20] = 1       # a 100 px stomach slice
    post = PostProcess.default().replace_rule(0, min_size_2d=10).replace_rule(
        1, min_size_3d=20).replace_rule(2, min_slice_area=10)
    out = apply(masks, post)
    expected = masks.astype(bool)
    expected[1, 0, 2:4, 2:5] = False
    expected[0:2, 1, 5:7, 5:7] = False
    expected[2, 2] = False
    assert np.array_equal(out, expected)


def test_round_trip_and_damaged_settings_name_the_key():
    post = PostProcess.default().replace_rule(2, threshold=0.35, min_size_2d=25)
    assert PostProcess.from_dict(post.to_dict()) == post
    for bad, key in (({"stomach": {"threshold": 1.5}}, "postprocess.stomach.threshold"),
                     ({"stomach": {"min_size_2d": -1}}, "postprocess.stomach.min_size_2d"),
                     ({"liver": {}}, "postprocess.liver"),
                     ("nonsense", "postprocess")):
        with pytest.raises(StudioError, match=key.replace(".", r"\.")):
            PostProcess.from_dict(bad)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    data = []
    for n in range(3):
        truth = np.zeros((6, 3, 48, 48), bool)
        probs = np.zeros(truth.shape, np.float32)
        for z in range(1, 5):
            truth[z, 2] = _disk((48, 48), (24 + n, 20), 8)
            truth[z, 0] = _disk((48, 48), (12, 30), 5)
        probs[:, 2][truth[:, 2]] = 0.42      # an under-confident stomach: 0.5 misses it
        probs[:, 0][truth[:, 0]] = 0.9
        for _ in range(4):                   # confident 2x2 noise blobs of large bowel
            z, y, x = rng.integers(0, 6), rng.integers(36, 46), rng.integers(2, 12)
            probs[z, 0, y:y + 2, x:x + 2] = 0.95
        data.append((f"case{n}_day1", probs.astype(np.float16), truth))
    return data


def _score(data, post):
    acc = ScoreAccumulator()
    for name, probs, truth in data:
        acc.add_case_day(name, apply(probs, post), truth)
    return acc.result().score


def test_search_finds_a_lower_threshold_and_removes_blobs():
    data = _data()
    found = search(data)
    assert found.score_before == pytest.approx(_score(data, PostProcess.default()))
    assert found.score_after > found.score_before
    assert found.post.rules[2].threshold < 0.42
    large = found.post.rules[0]
    assert large.min_size_2d > 4 or large.min_size_3d > 4 or large.min_slice_area > 4
    assert _score(data, found.post) == pytest.approx(found.score_after)


def test_search_keeps_the_default_when_it_is_best_and_can_be_cancelled():
    truth = np.zeros((4, 3, 32, 32), bool)
    truth[1:3, 1] = _disk((32, 32), (16, 16), 6)
    data = [("case1_day1", truth.astype(np.float16), truth)]
    found = search(data)
    assert found.post.is_default() and found.score_after == found.score_before
    with pytest.raises(CancelledError):
        search(data, cancel=lambda: True)


def test_score_terms_give_the_accumulators_score():
    """The search's fast scoring (Dice and the union's Hausdorff only) is the competition score."""
    from core.metrics import score_of_terms, score_terms

    rng = np.random.default_rng(3)
    data = _data(1) + [("case9_day1", rng.random((5, 3, 40, 44)) > 0.7,
                        rng.random((5, 3, 40, 44)) > 0.8),
                       ("case8_day1", np.zeros((3, 3, 16, 16), bool), np.zeros((3, 3, 16, 16), bool))]
    acc = ScoreAccumulator()
    terms = []
    for name, probs, truth in data:
        pred = apply(probs, None)
        acc.add_case_day(name, pred, truth)
        terms.append(score_terms(pred, truth))
    assert score_of_terms(terms) == pytest.approx(acc.result().score, abs=1e-12)
    assert score_of_terms([]) == ScoreAccumulator().result().score


def test_the_search_tries_every_value_once_and_reports_progress():
    seen = []
    found = search(_data(), progress=lambda done, total: seen.append((done, total)))
    total = 1 + 3 * sum(len(values) - 1 for values in GRID.values())
    assert found.evaluated == total and seen[-1] == (total, total)
    assert [done for done, _ in seen] == list(range(1, total + 1))
