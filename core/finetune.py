"""Fine-tune on corrections: a new run that starts from a reviewed run's best weights, and the
comparison of the two models once it has trained.

* ``finetune_config(parent)`` — the parent's settings (same preprocessing, model and fold split, so
  the new model reads the same cache and is validated on the same case-days) with a short schedule:
  a quarter of the parent's epochs (at least 2), a third of its learning rate, a 10 % warm-up.
  ``--set`` overrides may change the schedule; changing what the weights depend on is refused
  (``FIXED``).
* ``TrainingSession(..., init_from=PARENT)`` loads ``parent_weights(PARENT)`` before the first step
  and records ``parent`` in ``run.json``; a resume continues from the run's own checkpoint.
* ``compare_with_parent(run)`` scores both best models on the same truth — the dataset with the
  run's corrections applied — on the run's validation case-days and on the corrected slices alone,
  and writes ``comparison.json`` in the new run. A new model never silently replaces the old one:
  the Runs and Review pages show this side by side.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from core.atomic import atomic_write_text
from core.config import StudioConfig, apply_overrides, get_value
from core.errors import ConfigError, StudioError
from core.events import EventSink, LogMessage, ignore_events
from core.runs import RunFolder, is_group

COMPARISON_FILE = "comparison.json"

FIXED = ("data.image_size", "data.context", "data.num_folds", "data.fold", "data.split_seed",
         "model.variant", "model.mode", "model.num_classes")
"""Settings a fine-tune keeps from its parent: the weights only fit the same model at the same
input, and the comparison needs the same validation case-days."""


def finetune_epochs(parent_epochs: int) -> int:
    """The default schedule: a quarter of the parent's epochs, at least 2."""
    return max(2, math.ceil(parent_epochs / 4))


def parent_run(parent: str | Path) -> RunFolder:
    """The run to start from, or ``StudioError`` saying why it cannot be one."""
    path = Path(parent)
    if is_group(path):
        raise StudioError(f"'{path}' is a fold group (an ensemble); fine-tune one of its folds "
                          f"(e.g. '{path / 'fold-0'}')")
    run = RunFolder(path)
    if not path.is_dir() or not run.is_run():
        raise StudioError(f"'{path}' is not a run folder; pick the run whose model you reviewed")
    if run.best_checkpoint() is None:
        raise StudioError(f"run '{path}' has no best checkpoint yet (it has not validated); "
                          "fine-tune a run that has a model")
    return run


def finetune_config(parent: str | Path, overrides: list[str] | None = None) -> StudioConfig:
    """The parent's settings with the short schedule, then ``overrides``; ``ConfigError`` when an
    override changes one of ``FIXED``."""
    run = parent_run(parent)
    base = run.config()
    # model.pretrained goes: the weights come from the parent, and the folder it named may have
    # moved since (a missing folder would make the settings invalid).
    short = apply_overrides(base, [f"train.epochs={finetune_epochs(base.train.epochs)}",
                                   f"train.lr={base.train.lr / 3:.6g}", "train.pct_start=0.1",
                                   "train.max_steps=-1", "model.pretrained="])
    config = apply_overrides(short, overrides or [])
    for key in FIXED:
        if get_value(config, key) != get_value(base, key):
            raise ConfigError(f"{key}: a fine-tune keeps its parent's {get_value(base, key)!r} (the "
                              "weights fit that model and input, and the comparison needs the same "
                              "validation fold); start a new run to change it", key=key)
    return config


def parent_weights(parent: str | Path) -> dict:
    """The parameters and buffers of the parent's best checkpoint (with EMA on, the average, as
    its validation and ``model/`` used), keyed as ``SegmentationModule.state_dict()``."""
    from core.checkpoints import load_checkpoint

    run = parent_run(parent)
    state = load_checkpoint(run.best_checkpoint()).get("state_dict")
    if not isinstance(state, dict) or not state:
        raise StudioError(f"the best checkpoint of '{run.path}' holds no weights")
    return state


# -- the comparison --------------------------------------------------------------------------------
def _scores(model_dir: Path, index, case_days: list[str], validation: set[str],
            corrected: set[str], cache_root, cancel) -> dict:
    from core.data.scan import load_masks
    from core.metrics import ScoreAccumulator, dice_per_slice
    from core.predict import Predictor, load_model

    predictor = Predictor(load_model(model_dir, "auto"), index, cache_root=cache_root)
    scores = ScoreAccumulator()
    dice_on_corrected = []
    for result in predictor.predict_all(case_days, cancel=cancel):
        truth = np.stack([load_masks(r) for r in result.records])
        pred = result.stacked_masks()
        if result.case_day in validation:
            scores.add_case_day(result.case_day, pred, truth)
        rows = [i for i, r in enumerate(result.records) if r.id in corrected]
        if rows:
            dice_on_corrected.append(dice_per_slice(pred[rows], truth[rows]))
    summary = scores.result().to_dict() if validation else {}
    values = np.concatenate(dice_on_corrected) if dice_on_corrected else np.empty((0, 3))
    kept = values[~np.isnan(values)]
    return {"validation": summary,
            "corrected_dice": float(kept.mean()) if kept.size else (1.0 if values.size else None)}


def compare_with_parent(run: RunFolder, index=None, cache_root=None,
                        on_event: EventSink = ignore_events, cancel=None) -> dict:
    """Score the run's and its parent's best models on the run's truth (its corrections applied):
    its validation case-days (the competition score, Dice, Hausdorff) and its corrected slices
    alone (mean Dice per slice and organ; how many of them are in validation is recorded, since
    a fine-tune trained on the others). Writes ``comparison.json``; returns it."""
    from core.data.datamodule import split_for
    from core.data.scan import read_corrections, scan_dataset

    info = run.info()
    parent = RunFolder(Path(info.parent)) if info.parent else None
    if parent is None or not parent.model_complete():
        raise StudioError(f"run '{run.path}' has no parent run with a model to compare with")
    if index is None:
        index = scan_dataset(info.data_dir, corrections=run.corrections_path
                             if run.corrections_path.is_file() else None)
    corrected = set(read_corrections(run.corrections_path)) if run.corrections_path.is_file() \
        else set()
    _train, validation_cases = split_for(index, run.config())
    groups = index.case_days()
    validation = {c for c, records in groups.items() if records[0].case in validation_cases}
    chosen = [c for c, records in groups.items()
              if c in validation or any(r.id in corrected for r in records)]
    in_validation = sum(1 for c in validation for r in groups[c] if r.id in corrected)
    on_event(LogMessage(f"comparing with the parent run {parent.name}: {len(validation)} "
                        f"validation case-days, {len(corrected)} corrected slices"))
    both = {}
    for name, folder in (("parent", parent), ("run", run)):
        both[name] = _scores(folder.model_dir, index, chosen, validation, corrected, cache_root,
                             cancel)
    record = {"parent": str(parent.path), "parent_name": parent.info().title(parent.name),
              "truth": "the dataset with this run's corrections applied",
              "validation_case_days": len(validation), "corrected_slices": len(corrected),
              "corrected_in_validation": in_validation,
              "parent_scores": both["parent"], "run_scores": both["run"]}
    atomic_write_text(run.path / COMPARISON_FILE, json.dumps(record, indent=2))
    on_event(LogMessage(f"compared with the parent run: {comparison_line(record)}"))
    return record


def read_comparison(run: RunFolder) -> dict | None:
    try:
        data = json.loads((run.path / COMPARISON_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "parent_scores" in data else None


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def comparison_line(record: dict) -> str:
    """``validation score 0.812 → 0.845 · Dice on the 12 corrected slices 0.640 → 0.910``."""
    parent, run = record.get("parent_scores") or {}, record.get("run_scores") or {}
    parts = []
    if (parent.get("validation") or {}).get("score") is not None:
        parts.append(f"validation score {_fmt(parent['validation']['score'])} → "
                     f"{_fmt((run.get('validation') or {}).get('score'))}")
    if record.get("corrected_slices"):
        parts.append(f"Dice on the {record['corrected_slices']} corrected slices "
                     f"{_fmt(parent.get('corrected_dice'))} → {_fmt(run.get('corrected_dice'))}")
    return " · ".join(parts) or "nothing to compare on"


def comparison_rows(record: dict) -> list[tuple[str, str, str]]:
    """``(what, parent, this run)`` rows for a table."""
    parent, run = record.get("parent_scores") or {}, record.get("run_scores") or {}
    pv, rv = parent.get("validation") or {}, run.get("validation") or {}
    n = record.get("validation_case_days", 0)
    rows = [(f"Validation score ({n} case-days)", _fmt(pv.get("score")), _fmt(rv.get("score"))),
            ("Validation Dice", _fmt(pv.get("dice")), _fmt(rv.get("dice"))),
            ("Validation Hausdorff", _fmt(pv.get("hausdorff")), _fmt(rv.get("hausdorff")))]
    if record.get("corrected_slices"):
        rows.append((f"Dice on the {record['corrected_slices']} corrected slices "
                     f"({record.get('corrected_in_validation', 0)} in validation)",
                     _fmt(parent.get("corrected_dice")), _fmt(run.get("corrected_dice"))))
    return rows


def _same(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def related_runs(run_dir: str | Path, candidates: list[Path]) -> tuple[Path | None, list[Path]]:
    """The run ``run_dir`` was fine-tuned from and the runs fine-tuned from it, among
    ``candidates`` (as they are listed there; children in the order given)."""
    if is_group(run_dir):
        return None, []
    recorded = RunFolder(Path(run_dir)).info().parent
    parent = next((c for c in candidates if recorded and _same(c, recorded)), None)
    children = [c for c in candidates if not is_group(c) and not _same(c, run_dir)
                and (p := RunFolder(c).info().parent) and _same(p, run_dir)]
    return parent, children


def lineage_header(run: RunFolder) -> str | None:
    """``Fine-tuned from <parent> on N corrected slices``, or None for a fresh run."""
    info = run.info()
    if not info.parent:
        return None
    parent = RunFolder(Path(info.parent))
    name = parent.info().title(parent.name) if parent.is_run() else f"{parent.name} (deleted)"
    return f"Fine-tuned from {name} on {info.corrected_slices} corrected slices"


def comparison_summary(run: RunFolder) -> str:
    """How a fine-tune compares with its parent (``comparison_line``), or why it does not yet."""
    record = read_comparison(run)
    if record is not None:
        return comparison_line(record)
    return "compared when it finishes" if run.info().status != "finished" else "not compared"


def lineage_text(run: RunFolder) -> str | None:
    """One line on where a fine-tune came from and how it compares, or None for a fresh run."""
    header = lineage_header(run)
    return None if header is None else f"{header}: {comparison_summary(run)}"
