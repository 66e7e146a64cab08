"""End to end on the real engine: train B0 on the demo data on CPU, stop, resume (exactly), the run
folder."""

import csv
import json
import threading

import numpy as np
import pytest
import torch

from core.checkpoints import load_checkpoint
from core.config import StudioConfig, apply_overrides, load_config
from core.events import (CheckpointSaved, TrainingFailed, TrainingFinished, TrainingStarted,
                         TrainingStep, ValidationResult)
from core.errors import StudioError
from core.session import TrainingSession


def _config(*overrides):
    return apply_overrides(StudioConfig(), ["data.image_size=64", "data.num_folds=3",
                                            "train.batch_size=8", "train.log_every_n_steps=2",
                                            "train.tune_postprocess=false", *overrides])


def test_training_learns_on_the_demo_data(trained_run):
    run_dir, events, result = trained_run
    assert result.status == "finished"
    validations = [e for e in events if isinstance(e, ValidationResult)]
    assert len(validations) == 8
    assert validations[-1].metrics["val_dice"] >= 0.6, validations[-1].metrics
    assert result.monitor == "val_score" and result.best_score >= 0.6
    assert validations[-1].metrics["val_score"] >= 0.6
    assert 0 <= validations[-1].metrics["val_hausdorff"] < 0.5
    losses = [e.loss for e in events if isinstance(e, TrainingStep)]
    assert len(losses) >= 80  # a row every 2 of ~176 steps
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:20]) / 20  # the loss falls


def test_run_folder_layout(trained_run):
    run_dir, events, _ = trained_run
    assert load_config(run_dir / "config.yaml").train.epochs == 8
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["best_score"] >= 0.6
    assert info["monitor"] == "val_score" and info["best_checkpoint"].startswith("best-")
    rows = list(csv.DictReader(open(run_dir / "metrics.csv", encoding="utf-8")))
    for column in ["epoch", "step", "train_loss", "val_loss", "val_dice", "val_dice_large_bowel",
                   "val_dice_small_bowel", "val_dice_stomach", "val_hausdorff", "val_score", "lr"]:
        assert column in rows[0]
    assert sum(1 for r in rows if r["val_dice"]) == 8
    # last.ckpt and run.json agree on the best checkpoint, which exists (not one top-k deleted).
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["callbacks"]["RunCheckpoint"]
    assert state["best_model_path"].endswith(info["best_checkpoint"])
    assert (run_dir / "checkpoints" / info["best_checkpoint"]).is_file()
    assert float(state["best_model_score"]) == pytest.approx(info["best_score"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("best-*.ckpt"))) == 1
    from transformers import SegformerForSemanticSegmentation

    model = SegformerForSemanticSegmentation.from_pretrained(run_dir / "model")
    assert model.config.num_labels == 3
    assert json.loads((run_dir / "model" / "studio.json").read_text())["image_size"] == 96
    started = next(e for e in events if isinstance(e, TrainingStarted))
    assert started.device == "cpu" and started.precision == "32"
    assert not (run_dir / "run.lock").exists()  # released when the run ended


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
    stopped_at = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    per_epoch = next(e for e in events if isinstance(e, TrainingStarted)).steps_per_epoch
    assert 3 <= stopped_at < per_epoch  # stopped in the middle of the first epoch
    assert not any(isinstance(e, ValidationResult) for e in events)  # Stop skips validation
    assert json.loads((run_dir / "run.json").read_text())["status"] == "stopped"
    assert any(isinstance(e, CheckpointSaved) for e in events)

    resumed_events = []
    resumed = TrainingSession.resume(run_dir, on_event=resumed_events.append)
    assert resumed.config.train.epochs == 3  # the run's own settings
    result = resumed.run()
    assert result.status == "finished"
    start = next(e for e in resumed_events if isinstance(e, TrainingStarted))
    assert start.start_step == stopped_at
    steps = [e.step for e in resumed_events if isinstance(e, TrainingStep)]
    assert steps and min(steps) >= stopped_at
    final = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
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
    assert not (run_dir / "run.json").exists()  # nothing of the refused run was written


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


# -- exact resume ----------------------------------------------------------------------------------
EXACT = ["data.image_size=64", "data.num_folds=2", "train.batch_size=4", "train.epochs=3",
         "train.log_every_n_steps=1", "train.accumulate_grad_batches=2", "data.augment=true",
         "train.tune_postprocess=false"]  # tuning is tested on trained_run and in test_tuning


def _train(data, run_dir, stop_at: list[int]):
    """Train ``EXACT``; stop when a logged step reaches each of ``stop_at`` and resume, until done.
    Returns the final weights, the metrics rows and the steps where the run stopped."""
    stops, stopped = list(stop_at), []
    session = None

    def on_event(event):
        if isinstance(event, TrainingStep) and stops and event.step >= stops[0]:
            session.request_stop()

    session = TrainingSession(apply_overrides(StudioConfig(), EXACT), data, run_dir,
                              on_event=on_event)
    result = session.run()
    while result.status == "stopped":
        stopped.append(load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"])
        stops.pop(0)
        session = TrainingSession.resume(run_dir, on_event=on_event)
        result = session.run()
    assert result.status == "finished"
    weights = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    rows = list(csv.DictReader(open(run_dir / "metrics.csv", encoding="utf-8")))
    return weights, rows, stopped


@pytest.fixture(scope="module")
def uninterrupted(small_demo, tmp_path_factory):
    return _train(small_demo, tmp_path_factory.mktemp("exact") / "whole", [])


def test_a_stopped_and_resumed_run_ends_with_the_same_weights(uninterrupted, small_demo, tmp_path):
    """Stops mid-epoch, in the middle of an accumulation window (step requests land on odd
    batches) and on an epoch's last step — the stop that used to crash OneCycleLR on resume — then
    resumes each time: the final weights are bit for bit those of the run that never stopped, and
    metrics.csv has every step and every validation exactly once, with the same values."""
    weights, rows, _ = uninterrupted
    # 48 training slices at batch 4 and accumulation 2: 6 optimiser steps an epoch. A stop asked
    # for after step 5 lands on step 6, the epoch's last: it waits for that epoch's validation.
    resumed_weights, resumed_rows, stopped = _train(small_demo, tmp_path / "resumed", [2, 5, 10])
    assert stopped == [3, 6, 11]
    assert set(resumed_weights) == set(weights)
    assert all(torch.equal(weights[k], resumed_weights[k]) for k in weights)
    key = ("epoch", "step", "train_loss", "val_loss", "val_dice", "val_hausdorff", "val_score")
    assert [tuple(r[k] for k in key) for r in resumed_rows] == \
        [tuple(r[k] for k in key) for r in rows]
    train_steps = [int(r["step"]) for r in resumed_rows if r["train_loss"]]
    assert train_steps == list(range(1, 19))


def test_resume_without_a_checkpoint_starts_the_run_again(small_demo, tmp_path):
    """A run interrupted before its first checkpoint (killed at start-up) resumes from step 0."""
    run = tmp_path / "early"
    from core.runs import RunFolder

    RunFolder(run).create(_config("train.epochs=1"), small_demo)
    result = TrainingSession.resume(run).run()
    assert result.status == "finished"
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] > 0


def test_a_finished_run_cannot_be_resumed_and_keeps_its_status(small_demo, tmp_path):
    run = tmp_path / "done"
    TrainingSession(_config("train.epochs=1"), small_demo, run).run()
    with pytest.raises(StudioError, match="has finished; there is nothing to resume"):
        TrainingSession.resume(run)
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


# -- every option of the form works ----------------------------------------------------------------
def _predict_one(run_dir, data):
    from core.data.scan import scan_dataset
    from core.predict import Predictor, load_model

    model = load_model(run_dir / "model", "cpu")
    index = scan_dataset(data)
    result = Predictor(model, index).predict_case_day(next(iter(index.case_days())))
    return model, result


def test_torch_compile_trains_exports_and_predicts(small_demo, tmp_path):
    from core.devices import compile_problem

    problem = compile_problem("cpu")
    if problem:
        pytest.skip(f"this machine cannot compile ({problem}); the form disables the option")
    run = tmp_path / "compiled"
    result = TrainingSession(_config("train.epochs=1", "train.batch_size=4", "train.compile=true"),
                             small_demo, run).run()
    assert result.status == "finished" and result.best_score is not None
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    assert state and not any("_orig_mod" in key for key in state)  # the plain model's keys
    _, predicted = _predict_one(run, small_demo)
    assert predicted.stacked_masks().shape[1] == 3


def test_bf16_and_channels_last_on_the_cpu_through_fit_resume_export_and_predict(small_demo,
                                                                                 tmp_path):
    run = tmp_path / "bf16"
    events, session = [], None

    def on_event(event):
        events.append(event)
        if isinstance(event, TrainingStep) and event.step >= 3:
            session.request_stop()

    config = _config("train.epochs=2", "train.batch_size=4", "train.precision=bf16-mixed",
                     "train.channels_last=true")
    session = TrainingSession(config, small_demo, run, on_event=on_event)
    assert session.run().status == "stopped"
    started = next(e for e in events if isinstance(e, TrainingStarted))
    assert (started.device, started.precision) == ("cpu", "bf16-mixed")
    assert TrainingSession.resume(run).run().status == "finished"
    model, predicted = _predict_one(run, small_demo)
    assert model.placement.precision == "bf16-mixed"
    convolution = next(p for p in model.module.parameters() if p.ndim == 4)
    assert convolution.is_contiguous(memory_format=torch.channels_last)
    probabilities = torch.from_numpy(np.stack(predicted.probabilities).astype("float32"))
    assert torch.isfinite(probabilities).all() and 0 <= probabilities.min() <= probabilities.max() <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="16-mixed needs a CUDA GPU")
def test_16_mixed_on_a_gpu(small_demo, tmp_path):
    config = _config("train.epochs=1", "train.precision=16-mixed", "train.device=gpu")
    assert TrainingSession(config, small_demo, tmp_path / "fp16").run().status == "finished"
