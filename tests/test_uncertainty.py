"""*Next to review*: slices ranked by the model's uncertainty (mean binary entropy)."""

from __future__ import annotations

import numpy as np
import pytest

from core.data.scan import scan_dataset
from core.uncertainty import (CaseDayUncertainty, UncertaintyRanking, rank_by_uncertainty,
                              slice_entropy)


def test_entropy_is_one_bit_where_the_model_cannot_tell_and_zero_where_it_is_sure():
    probs = np.zeros((3, 3, 4, 4), dtype=np.float16)
    probs[1] = 0.5
    probs[2, 0] = 1.0
    probs[2, 1, :2] = 0.5  # half of one organ's pixels unsure: 1/6 of the slice's values
    entropy = slice_entropy(probs)
    assert entropy.shape == (3,)
    assert entropy[0] == pytest.approx(0.0, abs=1e-4)
    assert entropy[1] == pytest.approx(1.0, abs=1e-4)
    assert entropy[2] == pytest.approx(1 / 6, abs=1e-3)
    assert float(slice_entropy(probs[1])) == pytest.approx(1.0, abs=1e-4)


def test_next_slice_takes_the_most_uncertain_case_day_first_and_skips_what_is_done():
    ranking = UncertaintyRanking("run", [
        CaseDayUncertainty("case1_day1", [1, 2, 3], np.array([0.2, 0.5, 0.3])),
        CaseDayUncertainty("case2_day1", [1, 2], np.array([0.1, 0.05]))])
    assert ranking.next_slice(set()) == ("case1_day1", 2, 0.5)
    done = {("case1_day1", 2)}
    assert ranking.next_slice(done)[:2] == ("case1_day1", 3)
    done |= {("case1_day1", 3), ("case1_day1", 1)}
    assert ranking.next_slice(done)[:2] == ("case2_day1", 1)
    done |= {("case2_day1", 1), ("case2_day1", 2)}
    assert ranking.next_slice(done) is None


def test_a_real_model_ranks_every_case_day(trained_run, demo_dataset, tmp_path):
    run_dir, _, _ = trained_run
    index = scan_dataset(demo_dataset)
    ranking = rank_by_uncertainty(run_dir, index, cache_root=tmp_path / "cache")
    groups = index.case_days()
    assert sorted(d.case_day for d in ranking.case_days) == sorted(groups)
    means = [d.mean for d in ranking.case_days]
    assert means == sorted(means, reverse=True)
    top = ranking.case_days[0]
    assert top.slice_nums == [r.slice_num for r in groups[top.case_day]]
    assert ((top.entropy >= 0) & (top.entropy <= 1)).all() and top.entropy.max() > 0
    case_day, slice_num, value = ranking.next_slice(set())
    assert (case_day, value) == (top.case_day, float(top.entropy.max()))


def test_a_dataset_without_labels_is_ranked_too(trained_run, demo_dataset, tmp_path):
    """The usual case: new scans with no train.csv, to be labelled by correcting predictions."""
    import shutil

    unlabelled = tmp_path / "new scans"
    shutil.copytree(demo_dataset, unlabelled, ignore=shutil.ignore_patterns("train.csv"))
    index = scan_dataset(unlabelled)
    assert not index.has_labels
    chosen = list(index.case_days())[:2]
    ranking = rank_by_uncertainty(trained_run[0], index, chosen, cache_root=tmp_path / "cache")
    assert sorted(d.case_day for d in ranking.case_days) == sorted(chosen)
    assert ranking.next_slice(set())[0] == ranking.case_days[0].case_day
