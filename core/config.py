"""Settings for data, model and training as dataclasses: load, save, override, validate.

Every field carries metadata (``label``, ``help``, and ``choices`` or ``min``/``max``) so that forms in
the GUI are generated from this module instead of being hand-wired, and so that every error names the
dotted key and what is allowed: ``train.batch_size: 0 is below the minimum 1``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.atomic import atomic_write_text
from core.errors import ConfigError
from core.model.variants import VARIANTS, pretrained_variant_problem

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "32", "16-mixed", "bf16-mixed")


WINDOWS_WORKERS_REASON = (
    "Fixed at 0 on Windows: DataLoader worker processes deadlock there (and trip over pickling). "
    "Loading stays fast without them: slices are read from the preprocessed, memory-mapped cache.")
MONITORS = ("val_score", "val_dice", "val_loss")


def _setting(default, label: str, help: str, *, choices=None, min=None, max=None, step=None,
             pinned=None):
    """A config field with its form metadata. ``pinned`` maps a ``sys.platform`` to
    ``(value, reason)``: on that platform the setting always has that value (the one place such a
    platform rule lives; the form shows it locked with the reason)."""
    meta = {"label": label, "help": help}
    if pinned is not None:
        meta["pinned"] = dict(pinned)
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
    split_seed: int = _setting(
        0, "Split seed", "Seed of the shuffle that assigns cases to folds. Kept apart from the "
        "training seed, so a new training seed validates on the same cases.", min=0, max=2**31 - 1)
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
        "save_pretrained); the list offers those found in the Hugging Face cache and pretrained/. "
        "Empty: random initialisation. Nothing is downloaded unless you ask (Download…).")
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
        "0 is fast; on Windows it is always 0 (worker processes deadlock there).", min=0, max=32,
        pinned={"win32": (0, WINDOWS_WORKERS_REASON)})
    seed: int = _setting(42, "Seed", "Random seed for initialisation, batch order and "
                         "augmentation (the fold split has its own seed, data.split_seed).",
                         min=0, max=2**31 - 1)
    monitor: str = _setting(
        "val_score", "Keep the best by", "The validation metric that chooses the checkpoint to keep: "
        "val_score (0.4·Dice + 0.6·(1 − 3-D Hausdorff), the competition score), val_dice, or "
        "val_loss (lowest).", choices=MONITORS)
    early_stop_patience: int = _setting(
        0, "Early stopping patience", "End the run when the metric in \"Keep the best by\" has not "
        "improved for this many validations in a row (one per epoch); the best checkpoint is kept "
        "as always. 0: off, the run trains all its epochs.", min=0, max=1000)
    ema: bool = _setting(
        False, "EMA of the weights", "Keep an exponential moving average of the weights, updated "
        "after every optimiser step: validation, the best checkpoint and the exported model use "
        "the average, training continues on the raw weights. Costs one more copy of the weights in "
        "memory; pays off on runs much longer than 1/(1 − EMA decay) steps.")
    ema_decay: float = _setting(
        0.999, "EMA decay", "Share of the average kept at each optimiser step: the average spans "
        "about 1/(1 − decay) steps (0.999: the last ~1,000). Used when EMA of the weights is on.",
        min=0.9, max=0.99999)
    tune_postprocess: bool = _setting(
        True, "Tune post-processing", "When the run finishes, predict its validation case-days at "
        "their original size and choose, per organ, the probability threshold and the removal of "
        "small blobs and near-empty slices that give the best competition score there (never worse "
        "than plain 0.5); predict, Review and exports apply it. Seconds on the demo, minutes on a "
        "full fold. A fold group tunes once, on its out-of-fold predictions.")
    device: str = _setting("auto", "Device", "auto: the GPU when there is one, else the CPU.",
                           choices=("auto", "cpu", "gpu"))
    devices: str = _setting(
        "1", "Devices", "How many devices train together, each in its own process with its own "
        "batches (Lightning's DDP): a number, auto (every visible GPU) or GPU numbers such as 0,1; "
        "on the CPU, that many processes. The effective batch is devices × machines × batch size "
        "× accumulation; the memory estimate is per device.")
    num_nodes: int = _setting(1, "Machines", "Machines training together (a cluster: start the "
                              "command on each with SLURM or torchrun, see the README).",
                              min=1, max=1024)
    channels_last: bool = _setting(False, "channels_last", "Channels-last memory format for weights "
                                   "and inputs, in training and prediction (measure before turning "
                                   "on: it helps convolutions on recent GPUs).")
    compile: bool = _setting(False, "torch.compile", "Compile the model (slow first steps; "
                             "measure before turning on).")
    checkpoint_minutes: float = _setting(
        10.0, "Checkpoint every (min)", "Also write the resumable checkpoint this often between "
        "validations, so a crash or a power cut loses minutes, not an epoch (0: only after each "
        "validation).", min=0.0, max=1440.0)
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
MAX_BATCH_SIZE: int = next(f.metadata["max"] for f in dataclasses.fields(TrainConfig)
                           if f.name == "batch_size")
"""The largest ``train.batch_size`` the settings allow (the memory search stops there)."""


def fields_of(section: str) -> list[dataclasses.Field]:
    return list(dataclasses.fields(SECTIONS[section]))


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s in SECTIONS for f in fields_of(s)]


def _field(key: str) -> dataclasses.Field:
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise ConfigError(f"unknown setting '{key}': keys look like section.name with section one of "
                          f"{', '.join(SECTIONS)}", key=key)
    for f in fields_of(section):
        if f.name == name:
            return f
    names = ", ".join(f.name for f in fields_of(section))
    raise ConfigError(f"unknown setting '{key}': {section} has {names}", key=key)


def field_metadata(key: str) -> dict:
    return dict(_field(key).metadata)


def coerce_value(key: str, value: Any) -> Any:
    """Convert ``value`` (from YAML, the command line or a widget) to the type of ``key``."""
    f = _field(key)
    kind = type(f.default)
    original = value
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
            if isinstance(value, str) and any(c in value.lower() for c in "e."):
                value = float(value)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError  # also NaN and ±inf
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise ConfigError(f"{key}: {value!r} is not a finite number", key=key)
            return number
        return "" if value is None else str(value)
    except (TypeError, ValueError, OverflowError):
        what = {int: "whole number", float: "number", bool: "true/false value"}.get(kind, "text")
        raise ConfigError(f"{key}: {original!r} is not a {what}", key=key) from None


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


def pinned_value(key: str, platform: str | None = None) -> tuple[Any, str] | None:
    """``(value, reason)`` when ``key`` is fixed on this platform (e.g. workers on Windows)."""
    return _field(key).metadata.get("pinned", {}).get(platform or sys.platform)


def apply_pinned(cfg: StudioConfig, platform: str | None = None) -> list[str]:
    """Set every setting this platform fixes to its value; returns one note per change."""
    notes = []
    for key in all_keys():
        pin = pinned_value(key, platform)
        if pin is not None and get_value(cfg, key) != pin[0]:
            notes.append(f"{key} set to {pin[0]!r}: {pin[1]}")
            section, _, name = key.partition(".")
            setattr(getattr(cfg, section), name, pin[0])
    return notes


def get_value(cfg: StudioConfig, key: str) -> Any:
    section, _, name = key.partition(".")
    _field(key)
    return getattr(getattr(cfg, section), name)


def set_value(cfg: StudioConfig, key: str, value: Any) -> None:
    """Coerce, check and set one dotted key; raises ``ConfigError`` naming the key."""
    coerced = coerce_value(key, value)
    problem = check_value(key, coerced)
    if problem:
        raise ConfigError(problem, key=key)
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
    from core.devices import parse_devices

    try:
        parse_devices(cfg.train.devices)
    except ConfigError as exc:
        problems["train.devices"] = str(exc)
    if cfg.train.compile:
        from core.devices import compile_problem, resolve_device

        try:
            problem = compile_problem(resolve_device(cfg.train.device))
        except ConfigError:
            problem = None  # the device itself is the problem, reported with train.device
        if problem:
            problems["train.compile"] = problem
    if cfg.model.pretrained and not Path(cfg.model.pretrained).is_dir():
        problems["model.pretrained"] = (f"model.pretrained: folder '{cfg.model.pretrained}' does not "
                                        f"exist; pick a folder with config.json and the weights")
    elif cfg.model.pretrained and (Path(cfg.model.pretrained) / "config.json").is_file():
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
    """``cfg`` with this platform's fixed settings applied (logged), or ``ConfigError`` naming the
    first problem's key."""
    for note in apply_pinned(cfg):
        log.info("%s", note)
    problems = validate(cfg)
    if problems:
        raise ConfigError("; ".join(problems.values()), key=next(iter(problems)))
    return cfg


MIGRATIONS = {
    # Settings added after the first version, and what a config written before them meant.
    "data.split_seed": lambda data: data.get("train", {}).get("seed", 42),
    "train.monitor": lambda data: "val_dice",
    "train.checkpoint_minutes": lambda data: 10.0,
    "train.early_stop_patience": lambda data: 0,
    "train.ema": lambda data: False,
    "train.ema_decay": lambda data: 0.999,
    "train.tune_postprocess": lambda data: False,  # runs from before it were not tuned
    "train.devices": lambda data: "1",
    "train.num_nodes": lambda data: 1,
}
"""How a config without a newer key is read: runs of earlier versions keep the behaviour they were
trained with (their validation fold was drawn with ``train.seed``; their best model was chosen by
Dice; they trained every epoch, without an average of the weights)."""


def from_dict(data: dict[str, Any] | None, base: StudioConfig | None = None,
              complete: bool = False) -> StudioConfig:
    """Build a config from nested ``{section: {name: value}}``; unknown keys are errors. With
    ``complete``, every setting must be present (a run's own config.yaml: a file cut short must not
    silently fall back to defaults), except those ``MIGRATIONS`` fill in for older runs."""
    cfg = base.copy() if base is not None else StudioConfig()
    if not data:
        if complete:
            raise ConfigError("the settings are empty")
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
    absent = _absent_keys(data)
    older = _is_older_config(absent)
    if older:
        for key in absent:
            set_value(cfg, key, MIGRATIONS[key](data))
    if complete:
        missing = [] if older else absent
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise ConfigError(f"the settings are incomplete (no {', '.join(missing[:3])}{more})",
                              key=missing[0])
    return cfg


def _absent_keys(data: dict) -> list[str]:
    return [key for key in all_keys()
            if key.partition(".")[2] not in (data.get(key.partition(".")[0]) or {})]


def _is_older_config(absent: list[str]) -> bool:
    """A full config of an earlier version: every setting there but some of ``MIGRATIONS`` (a
    user's partial config lacks others, and takes the defaults)."""
    return bool(absent) and set(absent) <= set(MIGRATIONS) and len(absent) < len(all_keys())


def apply_overrides(cfg: StudioConfig, overrides: list[str]) -> StudioConfig:
    """Apply ``KEY=VALUE`` strings (``--set`` on the command line) to a copy of ``cfg``."""
    cfg = cfg.copy()
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set '{item}': expected KEY=VALUE, e.g. train.batch_size=8")
        set_value(cfg, key.strip(), value.strip())
    return cfg


def load_config(path: str | Path, base: StudioConfig | None = None,
                complete: bool = False) -> StudioConfig:
    """Read a YAML config; every problem is one ``ConfigError`` naming the file (and the line and
    column of a YAML syntax error)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (is it a YAML file?)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file '{path}': {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}: "
                          f"{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: "
                          f"{str(exc).splitlines()[0]}") from None
    try:
        return from_dict(data, base, complete=complete)
    except ConfigError as exc:
        raise ConfigError(f"config file '{path}': {exc}", key=exc.key) from None


def save_config(cfg: StudioConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML through a temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
