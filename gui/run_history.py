"""Read the run folders under the runs folder: status, settings and metrics, for the Runs page.

Plain Python (no Qt). Metrics come back as the same ``TrainingStep`` / ``ValidationResult`` events a
live run emits, so the charts draw a finished run and a live one the same way.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core import paths
from core.config import StudioConfig, load_config
from core.errors import StudioError
from core.events import TrainingStep, ValidationResult
from core.session import TrainingSession

RESUMABLE = ("stopped", "running")  # "running" without a live session: the app was closed or killed


@dataclass
class RunSummary:
    folder: Path
    status: str
    best_dice: float | None
    created: datetime | None
    step: int | None
    data_dir: str
    config: StudioConfig | None
    error: str = ""

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def has_checkpoint(self) -> bool:
        return (self.folder / "checkpoints" / "last.ckpt").is_file()

    @property
    def resumable(self) -> bool:
        return self.status in RESUMABLE and self.has_checkpoint and self.config is not None


def _time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text).astimezone() if text else None
    except ValueError:
        return None


def read_run(folder: Path) -> RunSummary:
    info = TrainingSession.read_run_info(folder)
    try:
        config = load_config(folder / "config.yaml")
    except StudioError:
        config = None
    best = info.get("best_dice")
    return RunSummary(folder, info.get("status", "unknown"),
                      float(best) if isinstance(best, (int, float)) else None,
                      _time(info.get("created")), info.get("step"), info.get("data_dir", ""),
                      config, info.get("error", ""))


def list_runs(root: Path | None = None) -> list[RunSummary]:
    """Every folder with a run.json or config.yaml under ``root``, newest first."""
    root = root or paths.runs_dir()
    runs = [read_run(f) for f in root.iterdir()
            if f.is_dir() and ((f / "run.json").is_file() or (f / "config.yaml").is_file())]
    # datetime.min.astimezone() underflows east of UTC ("year 0 is out of range"): a fixed UTC floor.
    floor = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(runs, key=lambda r: (r.created or floor, r.name), reverse=True)


def config_summary(cfg: StudioConfig | None) -> str:
    if cfg is None:
        return "config.yaml missing or unreadable"
    return (f"{cfg.model.variant.upper()} · {cfg.data.image_size} px · batch "
            f"{cfg.train.batch_size} · {cfg.train.epochs} epochs · lr {cfg.train.lr:g} · "
            f"{cfg.train.device}")


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def read_metrics(folder: Path) -> tuple[list[TrainingStep], list[ValidationResult]]:
    """Training steps and validations from ``metrics.csv`` (empty lists if there is none)."""
    steps, validations = [], []
    try:
        with open(folder / "metrics.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return steps, validations
    for row in rows:
        step, epoch = _number(row.get("step")), _number(row.get("epoch"))
        if step is None or epoch is None:
            continue
        loss = _number(row.get("train_loss"))
        if loss is not None:
            steps.append(TrainingStep(int(step), int(epoch), 0, loss, _number(row.get("lr")) or 0.0,
                                      _number(row.get("images_per_sec")) or 0.0, 0.0))
        metrics = {k: _number(v) for k, v in row.items() if k.startswith("val_")}
        metrics = {k: v for k, v in metrics.items() if v is not None}
        if metrics:
            validations.append(ValidationResult(int(epoch), int(step), metrics))
    return steps, validations
