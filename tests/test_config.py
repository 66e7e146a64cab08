import sys

import pytest

from core.config import (MIGRATIONS, StudioConfig, all_keys, apply_overrides, ensure_valid,
                         from_dict, load_config, pinned_value, save_config, validate)
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
    ("train.batch_size=two", "train.batch_size: 'two' is not a whole number"),
    ("data.image_size=1e400", "data.image_size: '1e400' is not a whole number"),
    ("train.epochs=2.5", "train.epochs: '2.5' is not a whole number"),
    ("train.pct_start=nan", "train.pct_start: 'nan' is not a finite number"),
    ("train.lr=inf", "train.lr: 'inf' is not a finite number"),
    ("train.weight_decay=-inf", "train.weight_decay: '-inf' is not a finite number"),
    ("train.lr=1e400", "train.lr: '1e400' is not a finite number"),
    ("train.colour=red", "unknown setting 'train.colour'"),
    ("batch_size=4", "unknown setting 'batch_size'"),
    ("train.batch_size", "expected KEY=VALUE"),
])
def test_bad_values_name_the_key(item, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as error:
        apply_overrides(StudioConfig(), [item])
    if "=" in item and item.count(".") >= 1 and "unknown" not in message:
        assert error.value.key == item.partition("=")[0]  # the form shows it next to that field


def test_non_finite_values_from_a_file_are_refused_too(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  pct_start: .nan\n  lr: .inf\n")
    with pytest.raises(ConfigError, match=r"c.yaml': train.pct_start: nan is not a finite number"):
        load_config(tmp_path / "c.yaml")


def test_cross_field_checks():
    cfg = apply_overrides(StudioConfig(), ["data.image_size=100", "data.num_folds=3",
                                           "data.fold=3"])
    problems = validate(cfg)
    assert "multiple of 32" in problems["data.image_size"]
    assert "must be below data.num_folds" in problems["data.fold"]


def test_windows_pins_workers_to_zero_in_one_place(monkeypatch, caplog):
    cfg = apply_overrides(StudioConfig(), ["train.num_workers=2"])
    monkeypatch.setattr(sys, "platform", "linux")
    assert pinned_value("train.num_workers") is None
    assert ensure_valid(cfg.copy()).train.num_workers == 2
    monkeypatch.setattr(sys, "platform", "win32")
    value, reason = pinned_value("train.num_workers")
    assert value == 0 and "deadlock" in reason
    with caplog.at_level("INFO"):
        assert ensure_valid(cfg).train.num_workers == 0  # what the DataLoader then gets
    assert "train.num_workers set to 0" in caplog.text


def test_yaml_round_trip_and_errors(tmp_path):
    cfg = apply_overrides(StudioConfig(), ["train.epochs=7", "model.mode=multiclass"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "bad.yaml")
    message = str(error.value)
    assert "bad.yaml' is not valid YAML at line 3, column 1:" in message
    assert "\n" not in message  # one line, not PyYAML's four
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage\x81")
    with pytest.raises(ConfigError, match="binary.yaml' is not UTF-8 text"):
        load_config(tmp_path / "binary.yaml")
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


def test_a_run_config_cut_short_is_refused_not_filled_with_defaults(tmp_path):
    path = tmp_path / "config.yaml"
    save_config(apply_overrides(StudioConfig(), ["train.epochs=7"]), path)
    assert load_config(path, complete=True).train.epochs == 7
    lines = path.read_text().splitlines(keepends=True)
    cut = "".join(lines[:lines.index("train:\n") + 3])  # valid YAML, cut at a line end
    path.write_text(cut)
    assert load_config(path).train.epochs == 10  # a user's partial config takes defaults…
    with pytest.raises(ConfigError, match="config.yaml': the settings are incomplete"):
        load_config(path, complete=True)  # …a run's own may not


def test_configs_of_the_first_version_keep_their_meaning():
    """A run of the first version drew its validation fold with train.seed and kept the best
    checkpoint by Dice: read back, its config says so."""
    old = StudioConfig().to_dict()
    old["train"]["seed"] = 7
    for key in MIGRATIONS:
        section, _, name = key.partition(".")
        del old[section][name]
    cfg = from_dict(old, complete=True)
    assert cfg.data.split_seed == 7 and cfg.train.monitor == "val_dice"
    assert from_dict({"train": {"seed": 7}}).data.split_seed == StudioConfig().data.split_seed
