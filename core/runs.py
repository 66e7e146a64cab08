"""A run folder, as one object: ``RunFolder`` owns its format and every reader and writer goes through it.

::

    RUN_DIR/
      config.yaml              the full resolved settings, written once when the run is created
      run.json                 status, dataset, best checkpoint and its score, step, times, name, note,
                               parent run, error (rewritten atomically on every change)
      run.lock                 present while a process trains in the folder: its PID, host, start time
      metrics.csv              one row per logged training step and per validation (``METRIC_COLUMNS``)
      checkpoints/last.ckpt    resumable: weights, optimiser, scheduler, loops, sampler position
      checkpoints/best-*.ckpt  the best checkpoint by the monitored validation score
      model/                   the best model in ``save_pretrained`` form + ``studio.json``

Every file a later command reads is written to a temporary name and renamed into place
(``atomic_write_text``, ``write_model``), so a crash or a full disk leaves the previous version, never
half of a new one. ``run.json`` is the one place that says which checkpoint is the best and what its
score is; nothing parses scores out of file names.

Statuses: ``running`` (a process holds the lock; without a live holder it reads as ``interrupted``),
``finished``, ``stopped`` (by the user, resumable), ``aborted`` (Ctrl+C twice, resumable from the last
checkpoint), ``failed`` (with ``error``).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core import faults, paths
from core.atomic import atomic_write_bytes, atomic_write_text
from core.config import StudioConfig, from_dict, load_config, save_config
from core.data import ORGANS
from core.errors import ConfigError, StudioError
from core.events import TrainingStep, ValidationResult

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
INFO_FILE = "run.json"
LOCK_FILE = "run.lock"
METRICS_FILE = "metrics.csv"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
MODEL_DIR = "model"
MODEL_META = "studio.json"
GROUP_FILE = "group.json"
"""Marks a fold group's folder (``FoldGroup``; trained by ``core.cv``)."""
CV_FILE = "cv.json"
OOF_DIR = "oof"

METRIC_COLUMNS = (["epoch", "step", "train_loss", "val_loss", "val_dice"]
                  + [f"val_dice_{o}" for o in ORGANS]
                  + ["val_hausdorff", "val_score", "lr", "images_per_sec", "time"])
"""The columns of ``metrics.csv``, fixed: a training row fills ``train_loss, lr, images_per_sec``, a
validation row the ``val_*`` columns; both have ``epoch, step, time``."""

_INFO_WRITES = threading.Lock()
"""Serialises ``update_info``'s read-change-write in this process: the GUI naming a run while the
training thread records a status must not drop either change."""

RESUMABLE_STATUSES = ("stopped", "running", "interrupted", "aborted", "failed")
"""A run in one of these states continues from ``last.ckpt`` (``running`` without a live process was
interrupted: the app was closed, the machine lost power, the process was killed)."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def os_error_message(exc: OSError) -> str:
    return exc.strerror or str(exc)


# -- run.json ------------------------------------------------------------------------------------
@dataclass
class RunInfo:
    """What ``run.json`` says about a run (missing or damaged fields read as their defaults)."""

    status: str = "unknown"
    data_dir: str = ""
    created: str = ""
    updated: str = ""
    step: int | None = None
    monitor: str = ""
    """The validation metric the best checkpoint is chosen by (``val_score``, ``val_dice``, …)."""
    best_score: float | None = None
    best_checkpoint: str = ""
    """File name of the best checkpoint in ``checkpoints/`` (as ``ModelCheckpoint`` reported it)."""
    best_step: int | None = None
    name: str = ""
    """What a person named the run (empty: it goes by its folder name)."""
    note: str = ""
    """A person's note about the run (what was tried, what came of it)."""
    parent: str = ""
    """The run this one started from (a fine-tune), as a folder path; empty for a fresh run."""
    corrections: str = ""
    """The corrections file the run trains with (copied into the run as corrections.csv)."""
    corrected_slices: int = 0
    """How many slices had corrected masks in that copy."""
    error: str = ""
    damaged: str = ""
    """Why ``run.json`` could not be read (the other fields are then defaults)."""

    @classmethod
    def from_dict(cls, data: dict) -> "RunInfo":
        info = cls()
        for key, value in data.items():
            if key == "best_dice" and "best_score" not in data:  # runs of the first version
                info.best_score = _float(value)
                info.monitor = info.monitor or "val_dice"
            elif key in ("step", "best_step"):
                setattr(info, key, int(value) if isinstance(value, (int, float)) else None)
            elif key == "corrected_slices":
                info.corrected_slices = int(value) if isinstance(value, (int, float)) else 0
            elif key == "best_score":
                info.best_score = _float(value)
            elif key in cls.__dataclass_fields__ and key != "damaged":
                setattr(info, key, "" if value is None else str(value))
        return info

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("damaged")
        return data

    def title(self, folder_name: str) -> str:
        """The name to show: the person's name for the run, else its folder's name."""
        return self.name.strip() or folder_name

    @property
    def created_time(self) -> datetime | None:
        try:
            return datetime.fromisoformat(self.created).astimezone() if self.created else None
        except ValueError:
            return None


def _float(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN → None


# -- the lock ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    started: str
    create_time: float | None = None

    def is_alive(self) -> bool | None:
        """True / False for a process on this host; None when the holder is on another host."""
        if self.host != socket.gethostname():
            return None
        import psutil

        try:
            process = psutil.Process(self.pid)
            if self.create_time is not None and abs(process.create_time() - self.create_time) > 1.0:
                return False  # the PID was reused by another program
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:
            return True  # exists, but we may not look at it: assume it is alive


class RunLock:
    """The lock file of a run folder: one writer at a time. ``acquire()`` takes it (taking over a
    stale lock of a dead process on this host, with a log line) or raises ``StudioError`` naming the
    holder; ``release()`` removes it if it is ours."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_FILE
        self.held = False

    def holder(self) -> LockHolder | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return LockHolder(int(data["pid"]), str(data["host"]), str(data.get("started", "")),
                              data.get("create_time"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return LockHolder(-1, "?", "")  # a damaged lock file: nobody can hold it

    def live_holder(self) -> LockHolder | None:
        """The holder if it is a live process (or on another host, where we cannot tell)."""
        holder = self.holder()
        if holder is None or holder.pid == -1 or holder.is_alive() is False:
            return None
        return holder

    def acquire(self) -> "RunLock":
        import psutil

        me = psutil.Process(os.getpid())
        record = json.dumps({"pid": me.pid, "host": socket.gethostname(), "started": now_iso(),
                             "create_time": me.create_time()})
        for _attempt in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue  # released in the meantime
                if holder.pid == me.pid and holder.host == socket.gethostname():
                    raise StudioError(f"run folder '{self.path.parent}' is already in use by this "
                                      "program (another run in the same folder)") from None
                alive = holder.pid != -1 and holder.is_alive()  # -1: a damaged lock file
                if alive is None:
                    raise StudioError(
                        f"run folder '{self.path.parent}' is in use by process {holder.pid} on "
                        f"{holder.host} (since {holder.started}); if that process is gone, delete "
                        f"'{self.path}' and try again") from None
                if alive:
                    raise StudioError(f"run folder '{self.path.parent}' is in use by process "
                                      f"{holder.pid} (since {holder.started}); wait for it to end "
                                      "or stop it, or choose another folder") from None
                who = "a damaged lock file" if holder.pid == -1 else \
                    f"process {holder.pid}, which is no longer running"
                log.warning("Taking over the run folder %s from %s", self.path.parent, who)
                self.path.unlink(missing_ok=True)
                continue
            except OSError as exc:
                raise StudioError(f"cannot create '{self.path}': {os_error_message(exc)}") from None
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(record)
            self.held = True
            return self
        raise StudioError(f"could not take the lock '{self.path}'; another process keeps taking it")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *_exc) -> None:
        self.release()


# -- the folder ----------------------------------------------------------------------------------
@dataclass
class RunFolder:
    """One run's folder. Cheap to make: nothing is read until asked."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    # paths
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def info_path(self) -> Path:
        return self.path / INFO_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / LAST_CHECKPOINT

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    def lock(self) -> RunLock:
        return RunLock(self.path)

    # what it is
    def is_run(self) -> bool:
        """True for a folder that holds (or held) a run."""
        return self.info_path.is_file() or self.config_path.is_file()

    def has_last_checkpoint(self) -> bool:
        return self.last_checkpoint.is_file()

    # creating
    def create(self, config: StudioConfig, data_dir: Path, **info) -> None:
        """Make the folder for a new run: ``config.yaml`` and ``run.json`` (status ``running``).
        Refuses a folder that already holds a run."""
        if self.has_last_checkpoint() or self.info_path.is_file():
            raise StudioError(f"run folder '{self.path}' already holds a run; resume it (--resume) "
                              "or choose a new folder")
        try:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.config_path)
            self.write_info(RunInfo(status="running", data_dir=str(Path(data_dir).resolve()),
                                    created=now_iso(), **info))
        except OSError as exc:
            raise StudioError(f"cannot write to run folder '{self.path}': "
                              f"{os_error_message(exc)}") from None

    def prepare(self) -> None:
        """Check the folder can be made (a path past the OS limit, a file in the way)."""
        try:
            if self.path.exists() and not self.path.is_dir():
                raise StudioError(f"run folder '{self.path}' is a file; choose a folder")
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudioError(f"cannot create run folder '{self.path}': "
                              f"{os_error_message(exc)}") from None

    # run.json
    def info(self) -> RunInfo:
        """What ``run.json`` says; a missing or damaged file gives defaults with ``damaged`` set."""
        try:
            data = json.loads(self.info_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            return RunInfo(damaged="run.json is missing")
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            return RunInfo(damaged=f"run.json cannot be read ({exc})")
        return RunInfo.from_dict(data)

    def write_info(self, info: RunInfo) -> None:
        info.updated = now_iso()
        atomic_write_text(self.info_path, json.dumps(info.to_dict(), indent=2))

    def update_info(self, **changes) -> RunInfo:
        """Change some fields of ``run.json`` (atomically), keeping the others as the file has them
        now. A damaged file is replaced; a write failure is logged, not raised (the run itself must
        go on)."""
        for key in changes:
            if key not in RunInfo.__dataclass_fields__:
                raise KeyError(key)
        with _INFO_WRITES:
            info = self.info()
            for key, value in changes.items():
                setattr(info, key, value)
            info.damaged = ""
            try:
                self.write_info(info)
            except OSError as exc:
                log.warning("could not update %s: %s", self.info_path, os_error_message(exc))
        return info

    def status(self, info: RunInfo | None = None) -> str:
        """The status, with ``running`` read as ``interrupted`` when no live process holds the lock
        (``info``: what ``info()`` already returned, to spare a second read)."""
        status = (info or self.info()).status
        if status == "running" and self.lock().live_holder() is None:
            return "interrupted"
        return status

    # config.yaml
    def config(self) -> StudioConfig:
        """The run's settings; ``ConfigError`` naming the file when it is unreadable or incomplete."""
        return load_config(self.config_path, complete=True)

    def config_or_none(self) -> StudioConfig | None:
        try:
            return self.config()
        except ConfigError:
            return None

    def restore_config(self, config: StudioConfig) -> None:
        """Rewrite a damaged ``config.yaml`` from a trusted copy (the checkpoint's)."""
        save_config(config, self.config_path)

    # checkpoints
    def best_checkpoint(self) -> Path | None:
        """The best checkpoint as ``run.json`` records it; else ``last.ckpt``; else None."""
        info = self.info()
        if info.best_checkpoint:
            path = self.checkpoint_dir / Path(info.best_checkpoint).name
            if path.is_file():
                return path
        return self.last_checkpoint if self.has_last_checkpoint() else None

    def record_best(self, checkpoint: str | Path | None, score: float | None, monitor: str,
                    step: int | None) -> None:
        self.update_info(best_checkpoint=Path(checkpoint).name if checkpoint else "",
                         best_score=score, monitor=monitor, best_step=step)

    def has_checkpoint(self) -> bool:
        return self.checkpoint_dir.is_dir() and any(self.checkpoint_dir.glob("*.ckpt"))

    # model/
    def model_complete(self) -> bool:
        """``model/`` has a readable config.json, weights and studio.json."""
        from core.checkpoints import pretrained_folder_problem

        return self.model_dir.is_dir() and pretrained_folder_problem(self.model_dir) is None

    def write_model(self, model, meta: dict) -> Path:
        """Export ``model`` (``save_pretrained``) and ``meta`` (``studio.json``) to ``model/``: written
        into a temporary folder, then swapped in, so ``model/`` is always a whole model or absent."""
        partial = self.path / f".{MODEL_DIR}.partial-{os.getpid()}"
        old = self.path / f".{MODEL_DIR}.old-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            model.save_pretrained(partial)
            faults.point("model-export")
            atomic_write_text(partial / MODEL_META, json.dumps(meta, indent=2))
            if self.model_dir.exists():
                os.replace(self.model_dir, old)
            os.replace(partial, self.model_dir)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if old.exists() and not self.model_dir.exists():
                os.replace(old, self.model_dir)
            raise StudioError(f"could not export the model to '{self.model_dir}': "
                              f"{os_error_message(exc)}; the checkpoints are intact") from None
        shutil.rmtree(old, ignore_errors=True)
        return self.model_dir

    @property
    def corrections_path(self) -> Path:
        """The run's own copy of the corrections it trains with (absent: none)."""
        return self.path / "corrections.csv"

    def keep_corrections(self, source: Path) -> None:
        """Copy a corrections file into the run (atomically) and record where it came from."""
        try:
            atomic_write_bytes(self.corrections_path, Path(source).read_bytes())
        except OSError as exc:
            raise StudioError(f"cannot copy the corrections '{source}' into '{self.path}': "
                              f"{os_error_message(exc)}") from None
        self.update_info(corrections=str(Path(source).resolve()))

    def model_meta(self) -> dict:
        """``model/studio.json`` (empty when there is no readable one)."""
        try:
            data = json.loads((self.model_dir / MODEL_META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def update_model_meta(self, **changes) -> None:
        """Add ``changes`` to ``model/studio.json`` (atomically), e.g. the tuned post-processing."""
        if not self.model_dir.is_dir():
            raise StudioError(f"'{self.path}' has no exported model/ to record settings in")
        meta = self.model_meta()
        meta.update(changes)
        try:
            atomic_write_text(self.model_dir / MODEL_META, json.dumps(meta, indent=2))
        except OSError as exc:
            raise StudioError(f"cannot write '{self.model_dir / MODEL_META}': "
                              f"{os_error_message(exc)}") from None

    def clean_partial_files(self) -> None:
        """Remove what a killed process left half-written (``*.partial`` checkpoints, model folders)."""
        for leftover in list(self.path.glob(f".{MODEL_DIR}.partial-*")) + \
                list(self.path.glob(f".{MODEL_DIR}.old-*")):
            if leftover.name.startswith(f".{MODEL_DIR}.old-") and not self.model_dir.exists():
                os.replace(leftover, self.model_dir)  # killed between the two renames
                continue
            shutil.rmtree(leftover, ignore_errors=True)
        if self.checkpoint_dir.is_dir():
            for partial in self.checkpoint_dir.glob("*.partial"):
                partial.unlink(missing_ok=True)

    # metrics.csv
    def metric_rows(self) -> list[dict[str, float]]:
        """Rows of ``metrics.csv`` as numbers (empty cells left out); junk lines are skipped."""
        return read_metric_rows(self.metrics_path)

    def trim_metrics(self, step: int) -> int:
        """Keep the rows logged at or before optimiser step ``step`` (and drop junk lines); returns
        how many rows were dropped. Called before a resumed run continues from that step."""
        if not self.metrics_path.is_file():
            return 0
        rows = self.metric_rows()
        kept = [r for r in rows if r["step"] <= step]
        write_metric_rows(self.metrics_path, kept)
        return len(rows) - len(kept)

    def metric_events(self) -> tuple[list[TrainingStep], list[ValidationResult]]:
        """The logged training steps and validations as the events a live run emits."""
        steps, validations = [], []
        for row in self.metric_rows():
            step, epoch = int(row["step"]), int(row["epoch"])
            if "train_loss" in row:
                steps.append(TrainingStep(step, epoch, 0, row["train_loss"], row.get("lr", 0.0),
                                          row.get("images_per_sec", 0.0), 0.0))
            metrics = {k: v for k, v in row.items() if k.startswith("val_")}
            if metrics:
                validations.append(ValidationResult(epoch, step, metrics))
        return steps, validations

    # deleting
    def delete(self) -> None:
        holder = self.lock().live_holder()
        if holder is not None:
            raise StudioError(f"run '{self.name}' is in use by process {holder.pid}; stop it first")
        try:
            shutil.rmtree(self.path)
        except OSError as exc:
            raise StudioError(f"could not delete '{self.path}': {os_error_message(exc)}") from None

    # summaries
    def resumable(self, status: str | None = None, config: StudioConfig | None = None) -> bool:
        """It can continue: from ``last.ckpt``, or from the start when it was interrupted before its
        first checkpoint (its settings must then be whole). ``status`` and ``config``: what
        ``status()`` and ``config_or_none()`` already returned."""
        if (status or self.status()) not in RESUMABLE_STATUSES:
            return False
        return self.has_last_checkpoint() or (config or self.config_or_none()) is not None


def read_metric_rows(path: Path) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv``: numbers by column, blank cells left out. Lines that are not rows of
    the file's columns with a whole ``epoch`` and ``step`` (junk appended, a line cut by a crash)
    are skipped."""
    rows = []
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            for raw in csv.DictReader(fh):
                if None in raw:  # more cells than columns
                    continue
                row = {}
                for key, text in raw.items():
                    if key not in METRIC_COLUMNS or text in (None, ""):
                        continue
                    try:
                        row[key] = float(text)
                    except ValueError:
                        row = {}
                        break
                if row.get("step") is not None and row.get("epoch") is not None and \
                        row["step"].is_integer() and row["epoch"].is_integer():
                    rows.append(row)
    except (OSError, csv.Error):
        pass
    return rows


def list_runs(root: Path | None = None) -> list[RunFolder]:
    """Every run folder under ``root`` (default: the runs folder), newest first; the folds of a
    fold group (``core.cv``) are runs too, listed as ``GROUP/fold-K``."""
    root = Path(root) if root else paths.runs_dir()
    if not root.is_dir():
        return []
    runs = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir():
            continue
        if RunFolder(folder).is_run():
            runs.append(RunFolder(folder))
        elif (folder / GROUP_FILE).is_file():
            runs.extend(RunFolder(f) for f in sorted(folder.glob("fold-*"))
                        if f.is_dir() and RunFolder(f).is_run())
    floor = datetime.min.replace(tzinfo=timezone.utc)
    infos = {r.path: r.info() for r in runs}
    return sorted(runs, key=lambda r: (infos[r.path].created_time or floor, r.name), reverse=True)


def new_run_dir(config: StudioConfig, root: Path | None = None, suffix: str = "") -> Path:
    """A fresh folder name under the runs folder: ``20250101-120000_b0_160px`` (+ ``suffix``)."""
    root = Path(root) if root else paths.runs_dir()
    stem = (f"{datetime.now():%Y%m%d-%H%M%S}_{config.model.variant}_{config.data.image_size}px"
            f"{suffix}")
    candidate, n = root / stem, 2
    while candidate.exists():
        candidate, n = root / f"{stem}_{n}", n + 1
    return candidate


def config_summary(cfg: StudioConfig | None) -> str:
    """One line a person can read: ``B0 · 64 px · batch 8 · 2 epochs · lr 0.001 · cpu``."""
    if cfg is None:
        return "config.yaml missing or unreadable"
    return (f"{cfg.model.variant.upper()} · {cfg.data.image_size} px · batch "
            f"{cfg.train.batch_size} · {cfg.train.epochs} epochs · lr {cfg.train.lr:g} · "
            f"{cfg.train.device}")


@dataclass(frozen=True)
class SettingRow:
    """One setting across the compared runs: its values in the runs' order (None where a run has no
    such setting, or no readable settings) and whether they differ."""

    key: str
    values: tuple
    differs: bool


def flatten_settings(settings: StudioConfig | Mapping[str, Any] | None,
                     prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level of dotted keys: ``{"model": {"variant": "b0"}}`` →
    ``{"model.variant": "b0"}`` (an already flat mapping comes back as it is; None gives ``{}``)."""
    if settings is None:
        return {}
    if isinstance(settings, StudioConfig):
        settings = settings.to_dict()
    flat = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(flatten_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings_table(settings: Sequence[StudioConfig | Mapping[str, Any] | None]) -> list[SettingRow]:
    """The settings of several runs side by side: one row per dotted key that any run has (in the
    order first seen), its values in the order of ``settings``, and whether they differ."""
    flat = [flatten_settings(s) for s in settings]
    keys = list(dict.fromkeys(key for run in flat for key in run))
    rows = []
    for key in keys:
        values = tuple(run.get(key) for run in flat)
        rows.append(SettingRow(key, values, any(v != values[0] for v in values[1:])))
    return rows


def write_metric_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` with ``rows`` (atomically), e.g. trimmed to a checkpoint on resume."""
    from io import StringIO

    buffer = StringIO()
    writer = csv.DictWriter(buffer, METRIC_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: format_metric_cell(k, v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def format_metric_cell(key: str, value) -> str:
    """How a value is written in ``metrics.csv``: whole epoch and step, time to 0.1 s, else 6 digits."""
    if key in ("epoch", "step"):
        return str(int(value))
    if key == "time":
        return f"{float(value):.1f}"
    return f"{float(value):.6g}"


# -- fold groups (core.cv trains them) -----------------------------------------------------------
def fold_name(fold: int) -> str:
    return f"fold-{fold}"


def is_group(path: str | Path) -> bool:
    return (Path(path) / GROUP_FILE).is_file()


@dataclass
class FoldGroup:
    """A fold group's folder; cheap to make (nothing is read until asked)."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def info_path(self) -> Path:
        return self.path / GROUP_FILE

    @property
    def cv_path(self) -> Path:
        return self.path / CV_FILE

    @property
    def oof_dir(self) -> Path:
        return self.path / OOF_DIR

    def is_group(self) -> bool:
        return self.info_path.is_file()

    def fold_run(self, fold: int) -> RunFolder:
        return RunFolder(self.path / fold_name(fold))

    def info(self) -> dict:
        try:
            data = json.loads(self.info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise StudioError(f"'{self.info_path}' is missing or damaged; this is not a readable "
                              "fold group") from None
        if not isinstance(data, dict) or not isinstance(data.get("folds"), list):
            raise StudioError(f"'{self.info_path}' is damaged (no list of folds)")
        return data

    def write_info(self, info: dict) -> None:
        try:
            atomic_write_text(self.info_path, json.dumps(info, indent=2))
        except OSError as exc:
            raise StudioError(f"cannot write '{self.info_path}': {os_error_message(exc)}") from None

    def update_info(self, **changes) -> dict:
        info = self.info()
        info.update(changes)
        self.write_info(info)
        return info

    def create(self, config: StudioConfig, data_dir: Path, folds: list[int]) -> None:
        if self.info_path.exists() or RunFolder(self.path).is_run():
            raise StudioError(f"'{self.path}' already holds a run or a fold group; resume it "
                              "(--resume) or choose a new folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudioError(f"cannot create '{self.path}': {os_error_message(exc)}") from None
        self.write_info({"kind": "fold-group", "folds": folds,
                         "num_folds": config.data.num_folds, "status": "running",
                         "data_dir": str(Path(data_dir).resolve()), "created": now_iso(),
                         "name": "", "config": config.to_dict()})

    def config(self) -> StudioConfig:
        return from_dict(self.info()["config"])

    def folds(self) -> list[int]:
        return [int(k) for k in self.info()["folds"]]

    def fold_runs(self) -> list[RunFolder]:
        return [self.fold_run(k) for k in self.folds()]

    def cv(self) -> dict | None:
        """``cv.json`` (None before the group has finished)."""
        try:
            data = json.loads(self.cv_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            raise StudioError(f"'{self.cv_path}' is damaged; resume the group to score it "
                              "again (main.py train --resume --run-dir "
                              f"{self.path})") from None
        return data if isinstance(data, dict) else None

    def postprocess(self):
        """The tuned ``PostProcess`` of ``cv.json`` (None when there is none yet)."""
        from core.postprocess import PostProcess

        cv = self.cv()
        if not cv or not cv.get("postprocess"):
            return None
        return PostProcess.from_dict(cv["postprocess"])

    def status(self) -> str:
        status = str(self.info().get("status", "running"))
        if status == "running" and self.lock().live_holder() is None:
            return "interrupted"
        return status

    def lock(self) -> RunLock:
        return RunLock(self.path)
