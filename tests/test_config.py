import sys

import pytest

from core.config import (StudioConfig, all_keys, apply_overrides, load_config, save_config,
                         validate)
from core.errors import ConfigError


def test_issue_keys_exist():
    keys = set(all_keys())
    for key in ["model.variant", "model.mode", "model.pretrained", "data.image_size",
                "data.context", "data.num_folds", "data.fold", "train.batch_size",
                "train.accumulate_grad_batches", "train.epochs", "train.max_steps", "train.lr",
                "train.weight_decay", "train.precision", "train.num_workers", "train.seed",
                "train.device"]:
        assert key in keys


def test_overrides_coerce_types():
    cfg = apply_overrides(StudioConfig(), ["train.lr=1e-3", "data.augment=false",
                                           "model.variant=b2", "train.max_steps=-1"])
    assert cfg.train.lr == 1e-3 and cfg.data.augment is False and cfg.model.variant == "b2"


@pytest.mark.parametrize("item, message", [
    ("model.variant=b9", "model.variant: 'b9' is not allowed; choose one of b0, b1"),
    ("train.batch_size=0", "train.batch_size: 0 is below the minimum 1"),
    ("train.batch_size=two", "train.batch_size: 'two' is not a int"),
    ("train.colour=red", "unknown setting 'train.colour'"),
    ("batch_size=4", "unknown setting 'batch_size'"),
    ("train.batch_size", "expected KEY=VALUE"),
])
def test_bad_values_name_the_key(item, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        apply_overrides(StudioConfig(), [item])


def test_cross_field_checks():
    cfg = apply_overrides(StudioConfig(), ["data.image_size=100", "data.num_folds=3",
                                           "data.fold=3"])
    problems = validate(cfg)
    assert "multiple of 32" in problems["data.image_size"]
    assert "must be below data.num_folds" in problems["data.fold"]


def test_windows_rejects_workers(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    assert "must be 0 on Windows" in validate(apply_overrides(StudioConfig(),
                                                              ["train.num_workers=2"]))[
        "train.num_workers"]


def test_yaml_round_trip_and_errors(tmp_path):
    cfg = apply_overrides(StudioConfig(), ["train.epochs=7", "model.mode=multiclass"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "unknown.yaml").write_text("optimiser:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="unknown section 'optimiser'"):
        load_config(tmp_path / "unknown.yaml")


def test_pretrained_folder_of_another_variant_is_a_field_problem(tmp_path):
    from core.model.factory import segformer_config
    from core.config import ModelConfig

    segformer_config(ModelConfig(variant="b2")).save_pretrained(tmp_path / "mit-b2")
    cfg = apply_overrides(StudioConfig(), [f"model.pretrained={tmp_path / 'mit-b2'}"])
    assert "holds MiT-B2 weights but model.variant is b0" in validate(cfg)["model.pretrained"]
    assert "model.pretrained" not in validate(apply_overrides(cfg, ["model.variant=b2"]))
