"""Settings for data, model and training as dataclasses: load, save, override, validate.

Every field carries metadata (``label``, ``help``, and ``choices`` or ``min``/``max``) so that forms in
the GUI are generated from this module instead of being hand-wired, and so that every error names the
dotted key and what is allowed: ``train.batch_size: 0 is below the minimum 1``.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError

VARIANTS = ("b0", "b1", "b2", "b3", "b4", "b5")
PRECISIONS = ("auto", "32", "16-mixed", "bf16-mixed")


def _setting(default, label: str, help: str, *, choices=None, min=None, max=None, step=None):
    meta = {"label": label, "help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if min is not None:
        meta["min"] = min
    if max is not None:
        meta["max"] = max
    if step is not None:
        meta["step"] = step
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    image_size: int = _setting(
        256, "Image size (px)", "Slices are resized to a square of this many pixels for training. "
        "Must be a multiple of 32.", min=64, max=1024, step=32)
    context: int = _setting(
        2, "2.5D context (slices)", "Channels are the slices i−k, i, i+k of the same scan; 0 repeats "
        "the slice three times.", min=0, max=8)
    num_folds: int = _setting(
        5, "Folds", "The cases are split into this many folds; one is held out for validation. "
        "No case is in both training and validation.", min=2, max=20)
    fold: int = _setting(0, "Validation fold", "Which fold is held out for validation.", min=0, max=19)
    augment: bool = _setting(
        True, "Augment", "Random flips, small affine warps, brightness/contrast and coarse dropout "
        "during training (applied on the training device, after transfer).")


@dataclass
class ModelConfig:
    variant: str = _setting(
        "b0", "Variant", "SegFormer encoder size: MiT-B0 (3.7 M parameters) to MiT-B5 (85 M).",
        choices=VARIANTS)
    mode: str = _setting(
        "multilabel", "Mode", "multilabel: three independent sigmoid outputs (BCE + Dice; organs may "
        "overlap). multiclass: background + 3 softmax (CE + Dice; an overlapping pixel goes to the "
        "later organ in large_bowel, small_bowel, stomach).", choices=("multilabel", "multiclass"))
    pretrained: str = _setting(
        "", "Pretrained weights", "A local folder with config.json and weights (from "
        "save_pretrained). Empty: random initialisation. Nothing is ever downloaded.")
    num_classes: int = _setting(
        3, "Organ classes", "Number of organ classes (3 for the GI tract data). Other values are "
        "for memory estimates only.", min=1, max=1000)


@dataclass
class TrainConfig:
    batch_size: int = _setting(8, "Batch size", "Slices per training step.", min=1, max=512)
    accumulate_grad_batches: int = _setting(
        1, "Gradient accumulation", "Steps whose gradients are summed before the optimiser updates; "
        "effective batch = batch size × this.", min=1, max=128)
    epochs: int = _setting(10, "Epochs", "Passes over the training fold.", min=1, max=10000)
    max_steps: int = _setting(
        -1, "Max steps", "Stop after this many optimiser steps (−1: no limit, the epochs decide).",
        min=-1, max=10_000_000)
    lr: float = _setting(3e-4, "Learning rate", "Peak learning rate of the one-cycle schedule "
                         "(AdamW).", min=1e-7, max=1.0)
    weight_decay: float = _setting(1e-4, "Weight decay", "AdamW weight decay.", min=0.0, max=1.0)
    pct_start: float = _setting(0.3, "Warm-up fraction", "Fraction of the run spent raising the "
                                "learning rate (OneCycleLR pct_start).", min=0.0, max=0.99)
    precision: str = _setting(
        "auto", "Precision", "auto: bf16-mixed on GPUs that support it, else 16-mixed on GPU, "
        "32 on CPU.", choices=PRECISIONS)
    num_workers: int = _setting(
        0, "Loader workers", "DataLoader worker processes. Loading reads a memory-mapped cache, so "
        "0 is fast; on Windows it is always 0 (worker processes deadlock there).", min=0, max=32)
    seed: int = _setting(42, "Seed", "Random seed for splits, initialisation and augmentation.",
                         min=0, max=2**31 - 1)
    device: str = _setting("auto", "Device", "auto: the GPU when there is one, else the CPU.",
                           choices=("auto", "cpu", "gpu"))
    channels_last: bool = _setting(False, "channels_last", "Use channels-last memory format on the "
                                   "GPU (measure before turning on).")
    compile: bool = _setting(False, "torch.compile", "Compile the model (slow first steps; "
                             "measure before turning on).")
    log_every_n_steps: int = _setting(10, "Log every n steps", "How often losses are read back from "
                                      "the device (each read is a synchronisation).", min=1, max=1000)


@dataclass
class StudioConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def copy(self) -> "StudioConfig":
        return from_dict(self.to_dict())


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def fields_of(section: str) -> list[dataclasses.Field]:
    return list(dataclasses.fields(SECTIONS[section]))


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s in SECTIONS for f in fields_of(s)]


def _field(key: str) -> dataclasses.Field:
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise ConfigError(f"unknown setting '{key}': keys look like section.name with section one of "
                          f"{', '.join(SECTIONS)}")
    for f in fields_of(section):
        if f.name == name:
            return f
    names = ", ".join(f.name for f in fields_of(section))
    raise ConfigError(f"unknown setting '{key}': {section} has {names}")


def coerce_value(key: str, value: Any) -> Any:
    """Convert ``value`` (from YAML, the command line or a widget) to the type of ``key``."""
    f = _field(key)
    kind = type(f.default)
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(value, (bool, int)) and value in (0, 1):
                return bool(value)
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return "" if value is None else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {value!r} is not a {kind.__name__}") from None


def check_value(key: str, value: Any) -> str | None:
    """Return a message if ``value`` is not allowed for ``key`` (already coerced), else ``None``."""
    meta = _field(key).metadata
    if "choices" in meta and value not in meta["choices"]:
        return f"{key}: '{value}' is not allowed; choose one of {', '.join(meta['choices'])}"
    if "min" in meta and value < meta["min"]:
        return f"{key}: {value} is below the minimum {meta['min']}"
    if "max" in meta and value > meta["max"]:
        return f"{key}: {value} is above the maximum {meta['max']}"
    return None


def get_value(cfg: StudioConfig, key: str) -> Any:
    section, _, name = key.partition(".")
    _field(key)
    return getattr(getattr(cfg, section), name)


def set_value(cfg: StudioConfig, key: str, value: Any) -> None:
    """Coerce, check and set one dotted key; raises ``ConfigError`` naming the key."""
    coerced = coerce_value(key, value)
    problem = check_value(key, coerced)
    if problem:
        raise ConfigError(problem)
    section, _, name = key.partition(".")
    setattr(getattr(cfg, section), name, coerced)


def cross_field_problems(cfg: StudioConfig) -> dict[str, str]:
    """Problems that involve more than one setting, keyed by the setting to show them next to."""
    problems = {}
    if cfg.data.image_size % 32:
        problems["data.image_size"] = (f"data.image_size: {cfg.data.image_size} is not a multiple "
                                       f"of 32 (SegFormer downsamples by 32)")
    if cfg.data.fold >= cfg.data.num_folds:
        problems["data.fold"] = (f"data.fold: {cfg.data.fold} must be below data.num_folds "
                                 f"({cfg.data.num_folds}); folds are numbered from 0")
    if sys.platform == "win32" and cfg.train.num_workers:
        problems["train.num_workers"] = ("train.num_workers: must be 0 on Windows (DataLoader worker "
                                         "processes deadlock there; loading is fast without them)")
    if cfg.model.pretrained and not Path(cfg.model.pretrained).is_dir():
        problems["model.pretrained"] = (f"model.pretrained: folder '{cfg.model.pretrained}' does not "
                                        f"exist; pick a folder with config.json and the weights")
    elif cfg.model.pretrained and (Path(cfg.model.pretrained) / "config.json").is_file():
        from core.model.factory import pretrained_variant_problem  # the variants live there

        problem = pretrained_variant_problem(Path(cfg.model.pretrained), cfg.model.variant)
        if problem:
            problems["model.pretrained"] = problem
    return problems


def validate(cfg: StudioConfig) -> dict[str, str]:
    """All problems of ``cfg`` keyed by dotted setting; empty when the config is usable."""
    problems = {}
    for key in all_keys():
        value = get_value(cfg, key)
        try:
            problem = check_value(key, coerce_value(key, value))
        except ConfigError as exc:
            problem = str(exc)
        if problem:
            problems[key] = problem
    for key, problem in cross_field_problems(cfg).items():
        problems.setdefault(key, problem)
    return problems


def ensure_valid(cfg: StudioConfig) -> StudioConfig:
    problems = validate(cfg)
    if problems:
        raise ConfigError("; ".join(problems.values()))
    return cfg


def from_dict(data: dict[str, Any] | None, base: StudioConfig | None = None) -> StudioConfig:
    """Build a config from nested ``{section: {name: value}}``; unknown keys are errors."""
    cfg = base.copy() if base is not None else StudioConfig()
    if not data:
        return cfg
    if not isinstance(data, dict):
        raise ConfigError("a config must be a mapping of sections (data, model, train)")
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown section '{section}': use {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"section '{section}' must be a mapping of settings")
        for name, value in values.items():
            set_value(cfg, f"{section}.{name}", value)
    return cfg


def apply_overrides(cfg: StudioConfig, overrides: list[str]) -> StudioConfig:
    """Apply ``KEY=VALUE`` strings (``--set`` on the command line) to a copy of ``cfg``."""
    cfg = cfg.copy()
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set '{item}': expected KEY=VALUE, e.g. train.batch_size=8")
        set_value(cfg, key.strip(), value.strip())
    return cfg


def load_config(path: str | Path, base: StudioConfig | None = None) -> StudioConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file '{path}': {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
    return from_dict(data, base)


def save_config(cfg: StudioConfig, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    tmp.replace(path)
