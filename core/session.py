"""TrainingSession: scan, cache, ``Trainer.fit``, events, stop and resume — one run folder.

A run folder holds::

    config.yaml            the full resolved config
    run.json               data folder, status (running/finished/stopped/failed), best Dice, times
    metrics.csv            one row per logged step and per validation
    checkpoints/last.ckpt  resumable (optimiser, scheduler, epoch and step)
    checkpoints/best-*.ckpt  the best by val_dice
    model/                 the best model in save_pretrained form + studio.json (preprocessing)

The session runs on whatever thread calls ``run()`` (a QThread in the GUI, the main thread in the
CLI); ``request_stop()`` may be called from any thread and takes effect at the next batch.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from core import paths
from core.config import StudioConfig, ensure_valid, load_config, save_config
from core.data import ORGANS
from core.data.cache import build_cache
from core.data.datamodule import SliceDataModule
from core.data.scan import scan_dataset
from core.errors import CancelledError, ConfigError, StudioError
from core.events import (CheckpointSaved, EventSink, LogMessage, TrainingFailed, TrainingFinished,
                         TrainingStarted, TrainingStep, ValidationResult, ignore_events)
from core.memory import estimate_peak_memory, memory_pressure_warning, spill_warning
from core.model.lightning_module import SegmentationModule
from core.quiet import quiet_libraries

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["epoch", "step", "train_loss", "val_loss", "val_dice"] + \
    [f"val_dice_{o}" for o in ORGANS] + ["lr", "images_per_sec", "time"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file and rename, so a full disk or a crash mid-write never
    replaces a good ``last.ckpt`` with a broken one."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        tmp = path.with_name(path.name + ".partial")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StudioError(f"could not write checkpoint '{path}': {exc.strerror or exc}. The "
                              "previous checkpoint is intact; free disk space and resume") from None


def resolve_device_and_precision(config: StudioConfig) -> tuple[str, str]:
    """Lightning accelerator and precision for the config on this machine."""
    device = config.train.device
    has_cuda = torch.cuda.is_available()
    if device == "gpu" and not has_cuda:
        raise ConfigError("train.device: 'gpu' was chosen but no CUDA GPU is available (is the CUDA "
                          "build of PyTorch installed?); choose auto or cpu")
    accelerator = "gpu" if device == "gpu" or (device == "auto" and has_cuda) else "cpu"
    precision = config.train.precision
    if precision == "auto":
        if accelerator == "gpu":
            precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        else:
            precision = "32"
    elif accelerator == "cpu" and precision == "16-mixed":
        raise ConfigError("train.precision: 16-mixed needs a GPU; use 32 or bf16-mixed on the CPU")
    return accelerator, precision


class MetricsCsv:
    """Appends rows to ``metrics.csv`` at the run's root (kept across resumes)."""

    def __init__(self, path: Path):
        self.path = path
        if not path.exists():
            with open(path, "w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerow(METRIC_COLUMNS)

    def write(self, rows: list[dict]) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, METRIC_COLUMNS, extrasaction="ignore")
            writer.writerows(rows)


class _EventCallback(Callback):
    """Turns Lightning hooks into plain events, writes metrics.csv, and honours stop requests.

    Losses are read back from the device every ``log_every_n_steps`` batches in one transfer, not
    every step, so the training loop does not synchronise with the GPU each step.
    """

    def __init__(self, session: "TrainingSession", metrics: MetricsCsv):
        self.session = session
        self.metrics = metrics
        self.pending: list[tuple[int, int, int, torch.Tensor, float]] = []
        self.window_start = time.perf_counter()
        self.window_images = 0
        self.rate = 0.0
        self.warned_memory = False

    def on_train_start(self, trainer, pl_module):
        per_epoch = max(1, trainer.num_training_batches // trainer.accumulate_grad_batches)
        total = int(trainer.estimated_stepping_batches)
        self.session.emit(TrainingStarted(str(self.session.run_dir), trainer.max_epochs, per_epoch,
                                          total, trainer.global_step, self.session.accelerator,
                                          self.session.precision))
        self.window_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.pending.append((trainer.global_step, trainer.current_epoch, batch_idx,
                             loss.detach(), lr))
        self.window_images += len(batch["mask"])
        if len(self.pending) >= self.session.config.train.log_every_n_steps:
            self.flush(trainer)
        if self.session.stop_requested and not trainer.should_stop:
            self.stop_here(trainer)

    def stop_here(self, trainer) -> None:
        """Write the resumable checkpoint at this batch and end ``fit`` without the validation pass
        Lightning would otherwise run on a stop (a Stop click should take effect in seconds)."""
        self.flush(trainer)
        trainer.should_stop = True
        trainer.limit_val_batches = 0
        last = self.session.checkpoint_dir / "last.ckpt"
        trainer.save_checkpoint(str(last))
        self.session.emit(CheckpointSaved(str(last), trainer.global_step))

    def flush(self, trainer) -> None:
        if not self.pending:
            return
        losses = torch.stack([p[3] for p in self.pending]).float().cpu().tolist()  # one sync
        elapsed = time.perf_counter() - self.window_start
        self.rate = self.window_images / elapsed if elapsed > 0 else 0.0
        batches_left = max(0, trainer.estimated_stepping_batches - trainer.global_step) * \
            trainer.accumulate_grad_batches
        batch_size = self.window_images / len(self.pending)
        eta = batches_left * batch_size / self.rate if self.rate else 0.0
        rows = []
        for (step, epoch, batch_idx, _, lr), value in zip(self.pending, losses):
            self.session.emit(TrainingStep(step, epoch, batch_idx, value, lr, self.rate, eta))
            rows.append({"epoch": epoch, "step": step, "train_loss": f"{value:.6g}",
                         "lr": f"{lr:.6g}", "images_per_sec": f"{self.rate:.2f}",
                         "time": f"{time.time():.1f}"})
        self.metrics.write(rows)
        self.pending.clear()
        self.window_start, self.window_images = time.perf_counter(), 0
        if self.session.accelerator == "gpu" and not self.warned_memory:
            warning = memory_pressure_warning()  # one driver query per logged window
            if warning:
                self.warned_memory = True
                self.session.emit(LogMessage(warning, "warning"))

    def on_train_epoch_end(self, trainer, pl_module):
        self.flush(trainer)

    def on_validation_start(self, trainer, pl_module):
        self.flush(trainer)  # before validation, so its time does not count against images/s

    def on_validation_end(self, trainer, pl_module):
        # on_validation_end, not on_validation_epoch_end: callbacks' epoch-end hooks run before the
        # module's, which is where the epoch's metrics are logged.
        self.window_start = time.perf_counter()
        if trainer.sanity_checking:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        self.session.emit(ValidationResult(trainer.current_epoch, trainer.global_step, values))
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step,
               "time": f"{time.time():.1f}"}
        row.update({k: f"{v:.6g}" for k, v in values.items()})
        self.metrics.write([row])
        # Lightning's save_last only writes when a top-k checkpoint was saved; a resumable run needs
        # the latest state after every validation, so last.ckpt is written here.
        last = self.session.checkpoint_dir / "last.ckpt"
        trainer.save_checkpoint(str(last))
        self.session.emit(CheckpointSaved(str(last), trainer.global_step))
        self.session.update_run_info(best_dice=self.session.best_dice(trainer))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["studio_config"] = self.session.config.to_dict()

    def on_train_end(self, trainer, pl_module):
        self.flush(trainer)


class TrainingSession:
    """One training run: ``run()`` blocks until it finishes, stops or fails; events go to
    ``on_event`` from the calling thread."""

    def __init__(self, config: StudioConfig, data_dir: str | Path, run_dir: str | Path,
                 on_event: EventSink = ignore_events, resume: bool = False,
                 cache_root: str | Path | None = None):
        self.run_dir = Path(run_dir)
        self.resume = resume
        if resume:
            config, data_dir = self._load_run(data_dir)
        self.config = ensure_valid(config)
        self.data_dir = Path(data_dir)
        self.on_event = on_event
        self.cache_root = Path(cache_root) if cache_root else paths.cache_dir()
        self._stop = threading.Event()
        self.accelerator, self.precision = resolve_device_and_precision(self.config)
        self.checkpoint_dir = self.run_dir / "checkpoints"

    # -- public API -------------------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Stop at the next batch and write a resumable ``checkpoints/last.ckpt``."""
        self._stop.set()

    def emit(self, event) -> None:
        try:
            self.on_event(event)
        except Exception:  # noqa: BLE001 - a broken receiver must not kill training
            log.exception("event receiver failed on %r", event)

    def run(self) -> TrainingFinished:
        """Train. Returns the ``TrainingFinished`` event; on failure emits ``TrainingFailed``
        and raises (``StudioError`` for problems the user can fix)."""
        try:
            return self._run()
        except CancelledError:
            self.update_run_info(status="stopped")
            event = TrainingFinished("stopped", "stopped before training started")
            self.emit(event)
            return event
        except BaseException as exc:
            message = _explain(exc, self.config)
            self.update_run_info(status="failed", error=message)
            self.emit(TrainingFailed(message, traceback.format_exc()))
            if isinstance(exc, torch.OutOfMemoryError):
                raise StudioError(message) from None
            raise

    # -- internals --------------------------------------------------------------------------
    def _load_run(self, data_dir) -> tuple[StudioConfig, Path]:
        config_path = self.run_dir / "config.yaml"
        if not config_path.is_file() or not (self.run_dir / "checkpoints" / "last.ckpt").is_file():
            raise StudioError(f"'{self.run_dir}' has no config.yaml and checkpoints/last.ckpt to "
                              "resume from")
        info = self.read_run_info(self.run_dir)
        return load_config(config_path), Path(data_dir or info.get("data_dir", ""))

    @staticmethod
    def read_run_info(run_dir: Path) -> dict:
        try:
            return json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def update_run_info(self, **changes) -> None:
        if not self.run_dir.is_dir():
            return
        info = self.read_run_info(self.run_dir)
        info.update(changes, updated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        tmp = self.run_dir / "run.json.tmp"
        try:
            tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
            os.replace(tmp, self.run_dir / "run.json")
        except OSError as exc:
            log.warning("could not update run.json: %s", exc)

    def best_dice(self, trainer) -> float | None:
        for cb in trainer.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.monitor == "val_dice" and \
                    cb.best_model_score is not None:
                return float(cb.best_model_score)
        return None

    def _prepare_run_dir(self) -> None:
        if not self.resume and (self.checkpoint_dir / "last.ckpt").exists():
            raise StudioError(f"run folder '{self.run_dir}' already holds a run; resume it "
                              "(--resume) or choose a new folder")
        try:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            if not self.resume:
                save_config(self.config, self.run_dir / "config.yaml")
                self.update_run_info(
                    data_dir=str(self.data_dir.resolve()), status="running",
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            else:
                self.update_run_info(status="running")
        except OSError as exc:
            raise StudioError(f"cannot write to run folder '{self.run_dir}': "
                              f"{exc.strerror or exc}") from None

    def _run(self) -> TrainingFinished:
        quiet_libraries()
        self._prepare_run_dir()
        self.emit(LogMessage(f"Scanning {self.data_dir}"))
        index = scan_dataset(self.data_dir, self.emit, lambda: self.stop_requested)
        if not index.has_labels:
            raise StudioError(f"'{self.data_dir}' has no train.csv: training needs labelled data")
        for problem in index.report.problems[:20]:
            self.emit(LogMessage(f"{problem.where}: {problem.message}", problem.severity))
        self.emit(LogMessage(f"Building the cache at {self.config.data.image_size} px"))
        cache = build_cache(index, self.config.data.image_size, self.cache_root, self.emit,
                            lambda: self.stop_requested)
        data = SliceDataModule(index, cache, self.config)
        self.emit(LogMessage(f"{len(data.train_set)} training slices (cases {data.train_cases}), "
                             f"{len(data.val_set)} validation slices (cases {data.val_cases}); "
                             f"{self.accelerator}, precision {self.precision}"))
        pl.seed_everything(self.config.train.seed, workers=True, verbose=False)
        if self.accelerator == "gpu":
            torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and newer
            # Windows drivers spill into system RAM instead of raising out-of-memory: say so now.
            warning = spill_warning(estimate_peak_memory(self.config))
            if warning:
                self.emit(LogMessage(warning, "warning"))
        module = SegmentationModule(self.config.to_dict())
        if self.config.train.channels_last and self.accelerator == "gpu":
            module = module.to(memory_format=torch.channels_last)
        if self.config.train.compile:
            module.model = torch.compile(module.model)
        best = ModelCheckpoint(dirpath=self.checkpoint_dir, filename="best-{epoch:02d}-{val_dice:.4f}",
                               monitor="val_dice", mode="max", save_top_k=1,
                               save_on_train_epoch_end=False, auto_insert_metric_name=False)
        events = _EventCallback(self, MetricsCsv(self.run_dir / "metrics.csv"))
        train = self.config.train
        trainer = pl.Trainer(
            accelerator=self.accelerator, devices=1, precision=self.precision,
            max_epochs=train.epochs, max_steps=train.max_steps,
            accumulate_grad_batches=train.accumulate_grad_batches,
            callbacks=[best, events], plugins=[AtomicCheckpointIO()], logger=_optional_logger(self.run_dir),
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
            benchmark=self.accelerator == "gpu", default_root_dir=str(self.run_dir),
            log_every_n_steps=train.log_every_n_steps)
        last = self.checkpoint_dir / "last.ckpt"
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if self.resume else None)

        stopped = self.stop_requested or trainer.interrupted
        if not last.exists():  # stopped before the first batch ended, or no validation ran
            trainer.save_checkpoint(str(last))
            self.emit(CheckpointSaved(str(last), trainer.global_step))
        best_dice = self.best_dice(trainer)
        if best.best_model_path:
            self._export_best(best.best_model_path)
        status = "stopped" if stopped else "finished"
        reason = (f"stopped at step {trainer.global_step}; resume to continue" if stopped else
                  f"finished {trainer.current_epoch} epochs, {trainer.global_step} steps")
        self.update_run_info(status=status, best_dice=best_dice, step=trainer.global_step)
        event = TrainingFinished(status, reason, str(last), best_dice)
        self.emit(event)
        return event

    def _export_best(self, checkpoint_path: str) -> None:
        """Save the best model in ``save_pretrained`` form (+ preprocessing) under ``model/``."""
        module = SegmentationModule.load_from_checkpoint(checkpoint_path, map_location="cpu",
                                                         load_pretrained=False)
        folder = self.run_dir / "model"
        module.model.save_pretrained(folder)
        data = self.config.data
        (folder / "studio.json").write_text(json.dumps({
            "mode": self.config.model.mode, "variant": self.config.model.variant,
            "image_size": data.image_size, "context": data.context, "organs": list(ORGANS),
            "checkpoint": Path(checkpoint_path).name}, indent=2), encoding="utf-8")
        self.emit(CheckpointSaved(str(folder), -1, best=True))


def _optional_logger(run_dir: Path):
    """TensorBoard logs beside metrics.csv where tensorboard is installed; otherwise none."""
    try:
        from pytorch_lightning.loggers import TensorBoardLogger
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return TensorBoardLogger(str(run_dir), name="tensorboard", version="")


def _explain(exc: BaseException, config: StudioConfig) -> str:
    if isinstance(exc, torch.OutOfMemoryError):
        return (f"the GPU ran out of memory at batch size {config.train.batch_size}, image size "
                f"{config.data.image_size}, model {config.model.variant.upper()}. Lower "
                "train.batch_size (keep the effective batch with train.accumulate_grad_batches), the "
                "image size or the model variant; the last checkpoint is intact")
    if isinstance(exc, StudioError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"
