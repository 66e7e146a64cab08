"""End to end on the real engine: train B0 on the demo data on CPU, stop, resume, the run folder."""

import csv
import json
import threading

import pytest
import torch

from core.config import StudioConfig, apply_overrides, load_config
from core.events import (CheckpointSaved, TrainingFailed, TrainingFinished, TrainingStarted,
                         TrainingStep, ValidationResult)
from core.errors import StudioError
from core.session import TrainingSession


def _config(*overrides):
    return apply_overrides(StudioConfig(), ["data.image_size=64", "data.num_folds=3",
                                            "train.batch_size=8", "train.log_every_n_steps=2",
                                            *overrides])


def test_training_learns_on_the_demo_data(trained_run):
    run_dir, events, result = trained_run
    assert result.status == "finished"
    validations = [e for e in events if isinstance(e, ValidationResult)]
    assert len(validations) == 8
    assert validations[-1].metrics["val_dice"] >= 0.6, validations[-1].metrics
    assert result.best_dice >= 0.6
    losses = [e.loss for e in events if isinstance(e, TrainingStep)]
    assert len(losses) >= 150
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:20]) / 20  # the loss falls


def test_run_folder_layout(trained_run):
    run_dir, events, _ = trained_run
    assert load_config(run_dir / "config.yaml").train.epochs == 8
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["best_dice"] >= 0.6
    rows = list(csv.DictReader(open(run_dir / "metrics.csv", encoding="utf-8")))
    for column in ["epoch", "step", "train_loss", "val_loss", "val_dice", "val_dice_large_bowel",
                   "val_dice_small_bowel", "val_dice_stomach", "lr"]:
        assert column in rows[0]
    assert sum(1 for r in rows if r["val_dice"]) == 8
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("best-*.ckpt"))) == 1
    from transformers import SegformerForSemanticSegmentation

    model = SegformerForSemanticSegmentation.from_pretrained(run_dir / "model")
    assert model.config.num_labels == 3
    assert json.loads((run_dir / "model" / "studio.json").read_text())["image_size"] == 96
    started = next(e for e in events if isinstance(e, TrainingStarted))
    assert started.device == "cpu" and started.precision == "32"


def test_stop_writes_a_checkpoint_and_resume_continues(small_demo, tmp_path):
    run_dir = tmp_path / "stopped run"
    events = []
    session = None

    def on_event(event):
        events.append(event)
        if isinstance(event, TrainingStep) and event.step >= 3:
            session.request_stop()

    session = TrainingSession(_config("train.epochs=3", "train.batch_size=4"), small_demo, run_dir,
                              on_event=on_event)
    result = session.run()
    assert result.status == "stopped"
    stopped_at = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                            weights_only=False)["global_step"]
    per_epoch = next(e for e in events if isinstance(e, TrainingStarted)).steps_per_epoch
    assert 3 <= stopped_at < per_epoch  # stopped in the middle of the first epoch
    assert not any(isinstance(e, ValidationResult) for e in events)  # Stop skips validation
    assert json.loads((run_dir / "run.json").read_text())["status"] == "stopped"
    assert any(isinstance(e, CheckpointSaved) for e in events)

    resumed_events = []
    resumed = TrainingSession(StudioConfig(), None, run_dir, on_event=resumed_events.append,
                              resume=True)
    assert resumed.config.train.epochs == 3  # the run's own settings
    result = resumed.run()
    assert result.status == "finished"
    start = next(e for e in resumed_events if isinstance(e, TrainingStarted))
    assert start.start_step == stopped_at
    steps = [e.step for e in resumed_events if isinstance(e, TrainingStep)]
    assert steps and min(steps) >= stopped_at
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)
    # Nothing lost or repeated: the interrupted epoch finishes, then the remaining ones.
    assert final["global_step"] == start.total_steps == 3 * per_epoch and final["epoch"] == 2
    assert len([e for e in resumed_events if isinstance(e, ValidationResult)]) == 3
    assert "lr_schedulers" in final and "optimizer_states" in final


def test_new_run_refuses_a_used_folder(small_demo, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(StudioError, match="already holds a run"):
        TrainingSession(_config(), small_demo, run_dir).run()


def test_failure_is_reported_as_an_event(small_demo, tmp_path):
    events = []
    session = TrainingSession(_config(), tmp_path / "no such data", tmp_path / "run",
                              on_event=events.append)
    with pytest.raises(StudioError, match="does not exist"):
        session.run()
    failed = [e for e in events if isinstance(e, TrainingFailed)]
    assert failed and "does not exist" in failed[0].message
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"


def test_stop_from_another_thread_while_caching(small_demo, tmp_path):
    session = TrainingSession(_config(), small_demo, tmp_path / "run")
    threading.Timer(0.0, session.request_stop).start()
    session._stop.wait(5)
    result = session.run()
    assert isinstance(result, TrainingFinished) and result.status == "stopped"
