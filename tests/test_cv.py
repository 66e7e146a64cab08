"""Fold groups: every fold trained into one folder, stopped and resumed across folds, scored
out-of-fold, the post-processing tuned on those predictions, and the ensemble predicting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.config import StudioConfig, apply_overrides
from core.cv import FoldGroup, FoldGroupSession, is_group
from core.errors import StudioError
from core.events import GroupProgress
from main import main

SETTINGS = ["data.image_size=64", "data.num_folds=3", "train.batch_size=8", "train.epochs=2",
            "train.lr=1e-3", "train.log_every_n_steps=2"]


@pytest.fixture(scope="module")
def group(small_demo, tmp_path_factory):
    """A 3-fold group on the small demo, stopped by the user as fold 1 starts, then resumed from the
    command line to the end: ``(group, events of the first part, mtime of fold 0's best)``."""
    run_dir = tmp_path_factory.mktemp("groups") / "cv group"
    events = []
    session = None

    def on_event(event):
        events.append(event)
        if isinstance(event, GroupProgress) and event.fold == 1:
            session.request_stop()

    session = FoldGroupSession(apply_overrides(StudioConfig(), SETTINGS), small_demo, run_dir,
                               on_event)
    first = session.run()
    assert first.status == "stopped", first
    folder = FoldGroup(run_dir)
    fold0_best = folder.fold_run(0).best_checkpoint()
    before = (first, fold0_best, fold0_best.stat().st_mtime_ns)
    assert main(["train", "--resume", "--run-dir", str(run_dir)]) == 0
    return folder, events, before


def test_a_group_stops_between_folds_and_resumes_to_the_end(group):
    folder, events, (first, fold0_best, mtime) = group
    assert "resume the group" in first.reason
    assert [e.fold for e in events if isinstance(e, GroupProgress)] == [0, 1]
    assert folder.info()["status"] == "finished"
    # fold 0 had finished: the resume kept it as it was and trained folds 1 and 2
    assert fold0_best.stat().st_mtime_ns == mtime
    for k in range(3):
        run = folder.fold_run(k)
        assert run.status() == "finished", k
        assert run.config().data.fold == k
        assert run.info().name == f"{folder.name} · fold {k}"
        assert "postprocess" not in run.model_meta()  # the group tunes once, out-of-fold
        steps = [int(r["step"]) for r in run.metric_rows() if "train_loss" in r]
        assert steps == sorted(set(steps)), "a fold's metrics.csv logs each step once"


def test_cv_json_has_per_fold_and_out_of_fold_scores(group, small_demo):
    from core.data.datamodule import split_for
    from core.data.scan import scan_dataset

    folder = group[0]
    cv = json.loads(folder.cv_path.read_text())
    assert [f["fold"] for f in cv["folds"]] == [0, 1, 2]
    for entry in cv["folds"]:
        assert entry["best_score"] == folder.fold_run(entry["fold"]).info().best_score
    # every labelled case-day is scored once, by the fold that held its case out
    index = scan_dataset(small_demo)
    held_out = {}
    for k in range(3):
        _train, validation = split_for(index, folder.fold_run(k).config())
        for case in validation:
            assert case not in held_out
            held_out[case] = k
    assert cv["case_days"] == len(index.case_days())
    assert sorted(p.stem for p in folder.oof_dir.glob("*.npy")) == sorted(index.case_days())
    for key in ("oof", "oof_tuned"):
        assert 0.0 <= cv[key]["score"] <= 1.0
    # the search includes the untuned setting: tuning can only help on these predictions
    assert cv["oof_tuned"]["score"] >= cv["oof"]["score"]


def test_the_out_of_fold_score_is_the_scores_of_the_stored_predictions(group, small_demo):
    from core.data.scan import load_masks, scan_dataset
    from core.metrics import ScoreAccumulator
    from core.postprocess import PostProcess, apply

    folder = group[0]
    cv = folder.cv()
    index = scan_dataset(small_demo)
    scores, tuned = ScoreAccumulator(), ScoreAccumulator()
    post = PostProcess.from_dict(cv["postprocess"])
    for case_day, records in index.case_days().items():
        probs = np.load(folder.oof_dir / f"{case_day}.npy")
        truth = np.stack([load_masks(r) for r in records])
        scores.add_case_day(case_day, apply(probs, PostProcess.default()), truth)
        tuned.add_case_day(case_day, apply(probs, post), truth)
    assert scores.result().score == pytest.approx(cv["oof"]["score"], abs=1e-9)
    assert tuned.result().score == pytest.approx(cv["oof_tuned"]["score"], abs=1e-9)


def test_the_ensemble_averages_the_folds_probabilities(group, small_demo):
    from core.data.scan import scan_dataset
    from core.predict import Predictor, load_model

    folder = group[0]
    index = scan_dataset(small_demo)
    case_day = next(iter(index.case_days()))
    ensemble = load_model(folder.path, "cpu")
    assert len(ensemble.modules) == 3
    assert ensemble.postprocess == folder.postprocess()
    mean = np.mean([np.stack(Predictor(load_model(folder.fold_run(k).path, "cpu"), index,
                                       postprocess=None).predict_case_day(case_day).probabilities)
                    .astype(np.float32) for k in range(3)], axis=0)
    result = Predictor(ensemble, index).predict_case_day(case_day)
    probs = np.stack(result.probabilities).astype(np.float32)
    assert np.abs(probs - mean).max() < 2e-3  # float16 storage
    from core.postprocess import apply

    assert np.array_equal(np.stack(result.masks), apply(np.stack(result.probabilities),
                                                        folder.postprocess()))


def test_predict_applies_the_tuned_post_processing_unless_told_not_to(group, small_demo,
                                                                      tmp_path):
    from core.data.scan import scan_dataset
    from core.export import read_submission
    from core.postprocess import PostProcess, apply
    from core.predict import Predictor, load_model

    folder = group[0]
    index = scan_dataset(small_demo)
    case_day = next(iter(index.case_days()))
    tuned, plain = tmp_path / "tuned.csv", tmp_path / "plain.csv"
    args = ["predict", "--run", str(folder.path), "--data", str(small_demo), "--ids", case_day,
            "--device", "cpu"]
    assert main([*args, "--out", str(tuned)]) == 0
    assert main([*args, "--out", str(plain), "--no-postprocess"]) == 0
    records = index.case_days()[case_day]
    shapes = {r.id: r.shape for r in records}
    ids = [r.id for r in records]
    probs = np.stack(Predictor(load_model(folder.path, "cpu"), index).predict_case_day(
        case_day).probabilities)
    for path, post in ((tuned, folder.postprocess()), (plain, PostProcess.default())):
        written = read_submission(path, shapes, ids)
        expected = apply(probs, post)
        got = np.stack([written.masks(i) for i in ids])
        assert np.array_equal(got, expected), path.name


def test_a_finished_group_cannot_be_resumed_and_a_bad_fold_list_is_refused(group, small_demo,
                                                                           tmp_path, capsys):
    folder = group[0]
    with pytest.raises(StudioError, match="has finished"):
        FoldGroupSession.resume(folder.path)
    assert main(["train", "--data", str(small_demo), "--run-dir", str(tmp_path / "g"),
                 "--folds", "0,5", "--set", "data.num_folds=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --folds") and "0…2" in err
    assert not (tmp_path / "g").exists()


def test_fold_runs_are_listed_with_the_group(group):
    from core.review import review_sources
    from core.runs import list_runs

    folder = group[0]
    listed = [r.path for r in list_runs(folder.path.parent)]
    assert [folder.fold_run(k).path for k in range(3)] == sorted(
        p for p in listed if p.parent == folder.path)
    sources = review_sources(folder.path.parent)
    assert sources[0].path == folder.path and sources[0].is_group
    assert "ensemble of 3 folds" in sources[0].label
    assert is_group(folder.path) and not is_group(folder.fold_run(0).path)

