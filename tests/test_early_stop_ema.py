"""Early stopping (``train.early_stop_patience``) and the EMA of the weights (``train.ema``) on the
real engine: how a run ends, what the best checkpoint and ``model/`` hold, exact resume, settings."""

import csv
import dataclasses
import json

import pytest
import torch

from core.checkpoints import load_checkpoint
from core.config import (MIGRATIONS, StudioConfig, apply_overrides, ensure_valid, field_metadata,
                         from_dict, load_config, save_config, set_value, validate)
from core.errors import ConfigError
from core.events import TrainingStarted, TrainingStep, ValidationResult
from core.metrics import ScoreAccumulator
from core.model.lightning_module import SegmentationModule
from core.session import TrainingSession
from tests.test_training import EXACT

NEW_KEYS = ("train.early_stop_patience", "train.ema", "train.ema_decay")


def _config(*overrides):
    # 48 training slices at batch 8: 6 optimiser steps an epoch.
    return apply_overrides(StudioConfig(), ["data.image_size=64", "data.num_folds=2",
                                            "train.batch_size=8", "train.log_every_n_steps=1",
                                            "train.tune_postprocess=false", *overrides])


def _rows(run_dir):
    return list(csv.DictReader(open(run_dir / "metrics.csv", encoding="utf-8")))


@pytest.fixture
def scripted_scores(monkeypatch):
    """``val_score`` of epoch ``e`` becomes ``scores[e]`` (the rest of validation is real), so
    when early stopping fires does not hang on what a tiny model happens to learn."""
    scores = []
    real_end, real_result = SegmentationModule.on_validation_epoch_end, ScoreAccumulator.result

    def on_validation_epoch_end(self):
        score = scores[self.current_epoch]
        with monkeypatch.context() as patch:
            patch.setattr(ScoreAccumulator, "result",
                          lambda acc: dataclasses.replace(real_result(acc), score=score))
            real_end(self)

    monkeypatch.setattr(SegmentationModule, "on_validation_epoch_end", on_validation_epoch_end)
    return scores


# Best after epoch 0; epochs 1 and 2 do not improve on it: patience 2 ends the run after epoch 2.
FALLING = [0.5, 0.4, 0.45, 0.9, 0.95]


def test_early_stopping_ends_the_run_finished_with_the_reason(scripted_scores, small_demo,
                                                             tmp_path):
    scripted_scores += FALLING
    run = tmp_path / "early"
    events = []
    result = TrainingSession(_config("train.epochs=5", "train.early_stop_patience=2"), small_demo,
                             run, on_event=events.append).run()
    assert result.status == "finished"
    assert result.reason == "stopped early after epoch 2: val_score did not improve for 2 validations"
    assert [e.epoch for e in events if isinstance(e, ValidationResult)] == [0, 1, 2]
    per_epoch = next(e for e in events if isinstance(e, TrainingStarted)).steps_per_epoch
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 3 * per_epoch  # the validation that stopped it is in last.ckpt
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["best_score"] == pytest.approx(0.5)
    assert info["best_checkpoint"].startswith("best-00-")  # the best, not the last epoch's
    assert last["callbacks"]["RunCheckpoint"]["best_model_path"].endswith(info["best_checkpoint"])
    state = last["callbacks"]["RunEarlyStopping"]
    assert state["wait_count"] == 2 and float(state["best_score"]) == pytest.approx(0.5)
    studio = json.loads((run / "model" / "studio.json").read_text())
    assert studio["checkpoint"] == info["best_checkpoint"]

    # Killed after that last.ckpt but before run.json said "finished": resuming ends at once,
    # the same way, instead of training another epoch.
    info["status"] = "running"
    (run / "run.json").write_text(json.dumps(info))
    resumed_events = []
    again = TrainingSession.resume(run, on_event=resumed_events.append).run()
    assert again.status == "finished" and again.reason == result.reason
    assert not any(isinstance(e, TrainingStep) for e in resumed_events)
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 3 * per_epoch


def test_patience_0_never_stops_early(scripted_scores, small_demo, tmp_path):
    scripted_scores += FALLING
    run = tmp_path / "all epochs"
    result = TrainingSession(_config("train.epochs=3"), small_demo, run).run()
    assert result.status == "finished" and result.reason.startswith("finished 3 epochs")
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert "RunEarlyStopping" not in last["callbacks"]
    assert sum(1 for r in _rows(run) if r["val_score"]) == 3


def test_a_stop_and_resume_keeps_the_early_stopping_count(scripted_scores, small_demo, tmp_path):
    """Stopped in epoch 2 (after one validation without improvement), the resumed run stops after
    epoch 2, as the uninterrupted one does: the count and the best score come back from last.ckpt
    (restarted from zero, epoch 2's 0.45 would be a new best and the run would go on)."""
    scripted_scores += FALLING
    run = tmp_path / "stopped"
    session = None

    def on_event(event):
        if isinstance(event, TrainingStep) and event.step >= 14:  # epoch 2 is steps 13-18
            session.request_stop()

    session = TrainingSession(_config("train.epochs=5", "train.early_stop_patience=2"), small_demo,
                              run, on_event=on_event)
    assert session.run().status == "stopped"
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["callbacks"]["RunEarlyStopping"]
    assert state["wait_count"] == 1 and float(state["best_score"]) == pytest.approx(0.5)
    result = TrainingSession.resume(run).run()
    assert result.status == "finished"
    assert result.reason == "stopped early after epoch 2: val_score did not improve for 2 validations"
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 18


# -- EMA ---------------------------------------------------------------------------------------------
CLASSIFIER = "model.decode_head.classifier.weight"


def test_ema_validates_with_and_exports_the_averaged_weights(monkeypatch, small_demo, tmp_path):
    seen = {}  # epoch → the classifier weights validation ran with, and its loss sums
    real_step = SegmentationModule.validation_step

    def validation_step(self, batch, batch_idx):
        weights, total, count = seen.setdefault(
            self.current_epoch, [self.model.decode_head.classifier.weight.detach().clone(), 0.0, 0])
        with torch.no_grad():
            loss = self.loss(self(batch["pixel_values"]), batch["mask"])
        seen[self.current_epoch][1:] = [total + float(loss) * len(batch["mask"]),
                                        count + len(batch["mask"])]
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(SegmentationModule, "validation_step", validation_step)
    run = tmp_path / "ema"
    result = TrainingSession(_config("train.epochs=2", "train.ema=true", "train.ema_decay=0.9"),
                             small_demo, run).run()
    assert result.status == "finished"
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    ema, raw = last["state_dict"][CLASSIFIER], last["current_model_state"][CLASSIFIER]
    assert not torch.equal(ema, raw)  # two sets of weights: the average lags behind
    assert torch.equal(seen[1][0], ema)  # the last validation ran on the average
    # val_loss is the loss of those weights (the sum is not swapped away with the buffers).
    logged = {int(r["epoch"]): float(r["val_loss"]) for r in _rows(run) if r["val_loss"]}
    for epoch, (_, total, count) in seen.items():
        assert logged[epoch] == pytest.approx(total / count, rel=1e-5)

    info = json.loads((run / "run.json").read_text())
    best = load_checkpoint(run / "checkpoints" / info["best_checkpoint"])
    epoch = int(info["best_checkpoint"].split("-")[1])
    assert torch.equal(best["state_dict"][CLASSIFIER], seen[epoch][0])
    from transformers import SegformerForSemanticSegmentation

    exported = SegformerForSemanticSegmentation.from_pretrained(run / "model").state_dict()
    for key, value in best["state_dict"].items():
        assert torch.equal(exported[key.removeprefix("model.")], value), key
    assert not torch.equal(exported[CLASSIFIER.removeprefix("model.")],
                           best["current_model_state"][CLASSIFIER])


def test_a_short_run_warns_that_the_average_is_still_the_start():
    from core.session import ema_warning

    assert ema_warning(0.999, 10_000) is None
    warning = ema_warning(0.999, 36)
    assert "about 1,000 optimiser steps" in warning and "this run has 36" in warning
    assert "96%" in warning and "about 0.917" in warning


def _train(data, run_dir, overrides, stop_at: list[int]):
    """Train ``EXACT`` + ``overrides``; stop when a logged step reaches each of ``stop_at`` and
    resume, until done. Returns last.ckpt and the metrics rows."""
    stops = list(stop_at)
    session = None

    def on_event(event):
        if isinstance(event, TrainingStep) and stops and event.step >= stops[0]:
            session.request_stop()

    session = TrainingSession(apply_overrides(StudioConfig(), EXACT + overrides), data, run_dir,
                              on_event=on_event)
    result = session.run()
    while result.status == "stopped":
        stops.pop(0)
        session = TrainingSession.resume(run_dir, on_event=on_event)
        result = session.run()
    assert result.status == "finished" and not stops
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt"), _rows(run_dir)


def test_a_stopped_and_resumed_ema_run_ends_with_the_same_weights(small_demo, tmp_path):
    """As tests/test_training.py's exact resume (stops mid-epoch, inside an accumulation window and
    on an epoch's last step), with EMA: the average and the raw weights both match bit for bit."""
    ema = ["train.ema=true", "train.ema_decay=0.9"]
    whole, rows = _train(small_demo, tmp_path / "whole", ema, [])
    resumed, resumed_rows = _train(small_demo, tmp_path / "resumed", ema, [2, 5, 10])
    assert whole["callbacks"]["WeightAveraging"] == resumed["callbacks"]["WeightAveraging"]
    assert torch.equal(whole["averaging_state"]["n_averaged"], torch.tensor(18))
    assert torch.equal(resumed["averaging_state"]["n_averaged"], torch.tensor(18))
    for part in ("state_dict", "current_model_state"):
        assert set(whole[part]) == set(resumed[part])
        assert all(torch.equal(whole[part][k], resumed[part][k]) for k in whole[part]), part
    assert not torch.equal(whole["state_dict"][CLASSIFIER], whole["current_model_state"][CLASSIFIER])
    key = ("epoch", "step", "train_loss", "val_loss", "val_score")
    assert [tuple(r[k] for k in key) for r in resumed_rows] == [tuple(r[k] for k in key) for r in rows]


def test_a_run_from_before_these_settings_resumes(small_demo, tmp_path):
    """A run whose config.yaml and checkpoint predate the three settings: read as off, resumed."""
    run = tmp_path / "older"
    session = None

    def on_event(event):
        if isinstance(event, TrainingStep) and event.step >= 2:
            session.request_stop()

    session = TrainingSession(_config("train.epochs=1"), small_demo, run, on_event=on_event)
    assert session.run().status == "stopped"
    path = run / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(path)
    for settings in (checkpoint["studio_config"], checkpoint["hyper_parameters"]["config"]):
        for key in NEW_KEYS:
            del settings["train"][key.partition(".")[2]]
    torch.save(checkpoint, path)
    older = checkpoint["studio_config"]
    (run / "config.yaml").write_text(json.dumps(older))  # JSON is YAML
    config = load_config(run / "config.yaml", complete=True)
    assert (config.train.early_stop_patience, config.train.ema) == (0, False)
    result = TrainingSession.resume(run).run()
    assert result.status == "finished" and result.reason.startswith("finished 1 epochs")


# -- settings ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, message", [
    ("train.early_stop_patience", -1, "train.early_stop_patience: -1 is below the minimum 0"),
    ("train.early_stop_patience", 1.5, "train.early_stop_patience: 1.5 is not a whole number"),
    ("train.ema_decay", 0.5, "train.ema_decay: 0.5 is below the minimum 0.9"),
    ("train.ema_decay", 1.0, "train.ema_decay: 1.0 is above the maximum 0.99999"),
    ("train.ema", "maybe", "train.ema: 'maybe' is not a true/false value"),
])
def test_settings_out_of_range_name_the_key(key, value, message):
    with pytest.raises(ConfigError) as raised:
        set_value(StudioConfig(), key, value)
    assert str(raised.value) == message and raised.value.key == key
    cfg = StudioConfig()
    section, _, name = key.partition(".")
    setattr(getattr(cfg, section), name, value)  # as a form or a hand-edited file could
    assert validate(cfg) == {key: message}
    with pytest.raises(ConfigError, match=key):
        ensure_valid(cfg)


def test_the_settings_are_off_by_default_and_described_for_the_form():
    train = StudioConfig().train
    assert (train.early_stop_patience, train.ema, train.ema_decay) == (0, False, 0.999)
    for key in NEW_KEYS:
        meta = field_metadata(key)
        assert meta["label"] and len(meta["help"]) > 40
    assert (field_metadata("train.ema_decay")["min"], field_metadata("train.ema_decay")["max"]) == \
        (0.9, 0.99999)


def test_a_full_config_of_the_previous_version_is_complete(tmp_path):
    """A run's own config.yaml written before these settings is read with them off, not refused
    as cut short; a user's partial config still takes the defaults."""
    path = tmp_path / "config.yaml"
    save_config(apply_overrides(StudioConfig(), ["train.epochs=7"]), path)
    data = load_config(path).to_dict()
    for key in NEW_KEYS:
        del data["train"][key.partition(".")[2]]
    cfg = from_dict(data, complete=True)
    assert cfg.train.epochs == 7 and not cfg.train.ema and cfg.train.early_stop_patience == 0
    assert all(key in MIGRATIONS for key in NEW_KEYS)
    del data["train"]["epochs"]  # one of the others missing as well: cut short
    with pytest.raises(ConfigError, match="the settings are incomplete"):
        from_dict(data, complete=True)
