"""Fine-tune on corrections: a new run from a reviewed run's best weights, its parent recorded, and
both models scored side by side on the same (corrected) truth."""

from __future__ import annotations

import json

import pytest
import torch

from core.checkpoints import load_checkpoint
from core.config import StudioConfig, apply_overrides
from core.data.corrections import Corrections
from core.data.scan import scan_dataset
from core.errors import ConfigError, StudioError
from core.finetune import (comparison_line, comparison_rows, finetune_config, finetune_epochs,
                           read_comparison)
from core.model.lightning_module import SegmentationModule
from core.review import fold_roles
from core.runs import RunFolder
from core.session import TrainingSession
from main import main

PARENT = ["data.image_size=64", "data.num_folds=2", "train.epochs=4", "train.batch_size=8",
          "train.lr=1e-3", "train.tune_postprocess=false"]


@pytest.fixture(scope="module")
def parent(small_demo, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("parent") / "parent run"
    TrainingSession(apply_overrides(StudioConfig(), PARENT), small_demo, run_dir).run()
    return RunFolder(run_dir)


@pytest.fixture(scope="module")
def erased(small_demo, parent, tmp_path_factory):
    """Corrections erasing the stomach on 3 validation and 3 training slices."""
    index = scan_dataset(small_demo)
    roles = fold_roles(parent, index)
    corrections = Corrections(tmp_path_factory.mktemp("corrections") / "corrections.csv")
    chosen = {"validation": [], "training": []}
    for record in index.slices:
        role = roles[record.case_day]
        if record.rles and record.rles["stomach"] and len(chosen[role]) < 3:
            corrections.set_slice(record.id, {**record.rles, "stomach": ""})
            chosen[role].append(record.id)
    assert all(len(ids) == 3 for ids in chosen.values())
    return corrections.path


def test_the_short_schedule_keeps_what_the_weights_depend_on(parent):
    config = finetune_config(parent.path)
    base = parent.config()
    assert config.train.epochs == finetune_epochs(4) == 2
    assert config.train.lr == pytest.approx(base.train.lr / 3, rel=1e-5)
    assert (config.data.image_size, config.data.fold, config.model.variant) == \
        (base.data.image_size, base.data.fold, base.model.variant)
    assert finetune_config(parent.path, ["train.epochs=5"]).train.epochs == 5
    with pytest.raises(ConfigError, match="data.image_size"):
        finetune_config(parent.path, ["data.image_size=96"])
    with pytest.raises(StudioError, match="not a run folder"):
        finetune_config(parent.path / "nothing here")


def test_a_parent_whose_pretrained_folder_moved_can_be_fine_tuned(parent, tmp_path):
    import shutil

    from core.config import ensure_valid, save_config

    moved = tmp_path / "parent copy"
    shutil.copytree(parent.path, moved)
    save_config(apply_overrides(parent.config(), [f"model.pretrained={tmp_path / 'gone'}"]),
                moved / "config.yaml")
    config = finetune_config(moved)
    assert config.model.pretrained == ""
    ensure_valid(config)  # the parent's own settings would not pass: the folder is gone


def test_a_fine_tune_starts_from_the_parents_best_weights_and_is_compared(
        parent, erased, small_demo, tmp_path, monkeypatch):
    first = {}
    original = SegmentationModule.training_step

    def watch(self, batch, batch_idx):  # the weights the first optimiser step starts from
        if not first:
            first.update({k: v.detach().clone() for k, v in self.named_parameters()})
        return original(self, batch, batch_idx)

    monkeypatch.setattr(SegmentationModule, "training_step", watch)
    config = finetune_config(parent.path, ["train.epochs=1"])
    run_dir = tmp_path / "fine-tune"
    events = []
    result = TrainingSession(config, small_demo, run_dir, on_event=events.append,
                             corrections=erased, init_from=parent.path).run()
    assert result.status == "finished"
    saved = load_checkpoint(parent.best_checkpoint())["state_dict"]
    assert first and all(torch.equal(value, saved[key]) for key, value in first.items())

    run = RunFolder(run_dir)
    info = run.info()
    assert info.parent == str(parent.path.resolve())
    assert info.corrected_slices == 6
    record = read_comparison(run)
    assert record is not None and json.loads((run_dir / "comparison.json").read_text())
    index = scan_dataset(small_demo)
    roles = fold_roles(run, index)
    assert record["validation_case_days"] == sum(r == "validation" for r in roles.values())
    assert (record["corrected_slices"], record["corrected_in_validation"]) == (6, 3)
    for side in ("parent_scores", "run_scores"):
        assert 0.0 <= record[side]["validation"]["score"] <= 1.0
        assert 0.0 <= record[side]["corrected_dice"] <= 1.0
    assert "validation score" in comparison_line(record) and "→" in comparison_line(record)
    assert [row[0] for row in comparison_rows(record)][-1].startswith("Dice on the 6 corrected")
    assert any("compared with the parent run" in getattr(e, "message", "") for e in events)


def test_train_from_run_on_the_command_line(parent, erased, small_demo, tmp_path, capsys):
    run_dir = tmp_path / "cli fine-tune"
    assert main(["train", "--from-run", str(parent.path), "--corrections", str(erased),
                 "--run-dir", str(run_dir), "--set", "train.epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "starting from the best weights of" in out
    assert "compared with the parent run: validation score" in out
    assert RunFolder(run_dir).info().parent == str(parent.path.resolve())
    assert main(["train", "--from-run", str(parent.path), "--run-dir", str(tmp_path / "x"),
                 "--set", "data.context=5"]) == 2
    assert "data.context" in capsys.readouterr().err
