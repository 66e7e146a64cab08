"""A single run tunes its post-processing on its validation case-days when it finishes
(``train.tune_postprocess``): what is recorded, that it is the score it claims, that predict applies
it, and that a Stop while tuning leaves a finished, untuned run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.config import StudioConfig, apply_overrides
from core.data.scan import scan_dataset
from core.events import LogMessage
from core.metrics import ScoreAccumulator
from core.postprocess import PostProcess, apply
from core.predict import tuned_postprocess
from core.runs import RunFolder
from core.session import TrainingSession
from core.tuning import TUNING_DIR, validation_predictions


def test_a_finished_run_records_the_post_processing_tuned_on_its_validation_cases(trained_run,
                                                                                  demo_dataset):
    run_dir, events, result = trained_run
    run = RunFolder(run_dir)
    meta = run.model_meta()
    record = meta["postprocess_tuning"]
    post = PostProcess.from_dict(meta["postprocess"])
    assert record["checkpoint"] == meta["checkpoint"] == run.info().best_checkpoint
    assert record["score_after"] >= record["score_before"]
    assert tuned_postprocess(run_dir) == post
    assert not (run_dir / TUNING_DIR).exists()
    assert any(isinstance(e, LogMessage) and e.message.startswith("post-processing tuned on")
               for e in events)
    # The recorded scores are those of the validation case-days, untuned and tuned.
    predictions = list(validation_predictions(run, scan_dataset(demo_dataset)))
    assert record["case_days"] == len(predictions) > 0
    for chosen, expected in ((PostProcess.default(), record["score_before"]),
                             (post, record["score_after"])):
        scores = ScoreAccumulator()
        for name, probs, truth in predictions:
            scores.add_case_day(name, apply(probs, chosen), truth)
        assert scores.result().score == pytest.approx(expected, abs=1e-9)


def test_a_stop_while_tuning_leaves_the_run_finished_and_untuned(small_demo, tmp_path):
    config = apply_overrides(StudioConfig(), ["data.image_size=64", "data.num_folds=2",
                                              "train.batch_size=8", "train.epochs=1"])
    assert config.train.tune_postprocess  # on by default
    session = None
    messages = []

    def on_event(event):
        if isinstance(event, LogMessage):
            messages.append(event)
            if event.message.startswith("tuning the post-processing"):
                session.request_stop()

    session = TrainingSession(config, small_demo, tmp_path / "run", on_event=on_event)
    result = session.run()
    assert result.status == "finished"
    run = RunFolder(tmp_path / "run")
    assert run.info().status == "finished"
    assert "postprocess" not in run.model_meta() and run.model_meta()["checkpoint"]
    assert tuned_postprocess(run.path) is None
    assert any(m.level == "warning" and "stopped while tuning" in m.message for m in messages)
    assert not (run.path / TUNING_DIR).exists()


def test_tuning_can_be_turned_off(small_demo, tmp_path):
    config = apply_overrides(StudioConfig(), ["data.image_size=64", "data.num_folds=2",
                                              "train.batch_size=8", "train.epochs=1",
                                              "train.tune_postprocess=false"])
    TrainingSession(config, small_demo, tmp_path / "run").run()
    meta = json.loads((tmp_path / "run" / "model" / "studio.json").read_text())
    assert "postprocess" not in meta and "postprocess_tuning" not in meta
    assert np.isfinite(RunFolder(tmp_path / "run").info().best_score)
