"""TrainingSession: scan, cache, ``Trainer.fit``, events, stop and resume — one run folder.

The run folder's format belongs to ``core.runs.RunFolder``; this module drives Lightning:

* ``MetricsLogger`` (``core.metrics_log``) receives what the module logs and writes ``metrics.csv``;
  its rows are also the live ``TrainingStep`` / ``ValidationResult`` events.
* ``RunCheckpoint`` (a ``ModelCheckpoint``) keeps the best checkpoint by ``train.monitor``, then
  writes ``last.ckpt`` — in that order, within one callback, so ``last.ckpt`` and ``run.json`` always
  name the best checkpoint of the same validation — and every ``train.checkpoint_minutes`` mid-epoch.
* ``_RunEvents`` turns the remaining hooks into events and honours Stop at the next optimiser step.
* ``RunEarlyStopping`` (an ``EarlyStopping``, ``train.early_stop_patience``) ends a run whose monitored
  score stopped improving; its count is in every checkpoint, so a resumed run stops where an
  uninterrupted one would.
* Lightning's ``WeightAveraging`` with an EMA (``train.ema``) keeps the average of the weights:
  validation, the best checkpoint's ``state_dict`` and ``model/`` hold the average, the raw weights
  go on training (``current_model_state`` in the checkpoint).

The session runs on whatever thread calls ``run()`` (a QThread in the GUI, the main thread in the
CLI); ``request_stop()`` may be called from any thread.

Resume is exact: the batch order is a function of the seed and the epoch (``EpochShuffle``), every
random draw of a step a function of the seed and the batch's number (``batch_seed``), a stop lands only
between optimiser steps (never inside an accumulation window), and the checkpoint records where in
the epoch it was taken; a stopped-and-resumed run ends with the weights of one that never stopped.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint, WeightAveraging
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
from torch.optim.swa_utils import get_ema_avg_fn

from core import faults, paths
from core.checkpoints import AtomicCheckpointIO, checkpoint_config, load_checkpoint
from core.config import StudioConfig, ensure_valid, from_dict
from core.data.cache import build_cache
from core.data.datamodule import SliceDataModule
from core.data.scan import DatasetIndex, scan_dataset
from core.devices import ddp_backend, is_rank_zero, resolve_placement, world_size
from core.errors import CancelledError, ConfigError, StudioError
from core.events import (CheckpointSaved, EventSink, LogMessage, TrainingFailed, TrainingFinished,
                         TrainingStarted, TrainingStep, ValidationResult, ignore_events)
from core.memory import estimate_peak_memory, memory_pressure_warning, spill_warning
from core.metrics_log import MetricsLogger
from core.model.lightning_module import SegmentationModule
from core.predict import export_model
from core.quiet import quiet_libraries
from core.runs import RunFolder

log = logging.getLogger(__name__)

MONITOR_MODES = {"val_score": "max", "val_dice": "max", "val_loss": "min"}


class AbortRequested(BaseException):
    """Raised (by the CLI's second Ctrl+C) to end training now, keeping the last checkpoint.

    A ``BaseException`` so that no ``except Exception`` on the way swallows it, and not a
    ``KeyboardInterrupt``, which Lightning answers with ``sys.exit(1)``."""


class RunCheckpoint(ModelCheckpoint):
    """The best checkpoint by the monitored validation metric, then ``last.ckpt``, then ``run.json``.

    Lightning runs ``ModelCheckpoint`` callbacks after all others; doing the three writes in this one
    callback, in this order, is what keeps them consistent (``last.ckpt`` holds this callback's
    updated best state). ``last.ckpt`` is also written every ``train.checkpoint_minutes`` between
    optimiser steps, so a killed run loses minutes, not an epoch."""

    def __init__(self, session: "TrainingSession"):
        monitor = session.config.train.monitor
        super().__init__(dirpath=session.folder.checkpoint_dir, filename="best-{epoch:02d}-{step:06d}",
                         monitor=monitor, mode=MONITOR_MODES[monitor], save_top_k=1,
                         save_on_train_epoch_end=False, auto_insert_metric_name=False)
        self.session = session
        minutes = session.config.train.checkpoint_minutes
        self.interval = minutes * 60 if minutes > 0 else None
        self.last_saved = time.monotonic()

    @property
    def state_key(self) -> str:
        return "RunCheckpoint"  # stable across settings, unlike ModelCheckpoint's default key

    def write_last(self, trainer: "pl.Trainer") -> None:
        path = self.session.folder.last_checkpoint
        trainer.save_checkpoint(str(path), weights_only=False)  # every process: it ends in a barrier
        self.last_saved = time.monotonic()
        if self.session.rank_zero:
            self.session.folder.update_info(step=trainer.global_step)  # the step last.ckpt holds
        self.session.emit(CheckpointSaved(str(path), trainer.global_step))

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        faults.point("validation-row")
        super().on_validation_end(trainer, pl_module)  # the best checkpoint first
        self.write_last(trainer)
        score = None if self.best_model_score is None else float(self.best_model_score)
        if self.session.rank_zero:
            self.session.folder.record_best(self.best_model_path or None, score, self.monitor,
                                            self._best_step())
        if self.session.agreed_stop(trainer):  # a Stop that came during or just before validation
            trainer.should_stop = True

    def _best_step(self) -> int | None:
        name = Path(self.best_model_path).stem if self.best_model_path else ""
        return int(name.rsplit("-", 1)[-1]) if name.startswith("best-") else None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        """Time-based ``last.ckpt`` between validations (only between optimiser steps, and not on
        an epoch's last batch, whose state is saved after its validation)."""
        if (self.interval is None or trainer.fit_loop._should_accumulate()
                or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch):
            return
        due = time.monotonic() - self.last_saved >= self.interval
        if trainer.world_size > 1:  # every process saves together (save_checkpoint has a barrier)
            due = trainer.strategy.reduce_boolean_decision(due, all=False)
        if due:
            self.write_last(trainer)


class RunEarlyStopping(EarlyStopping):
    """Lightning's ``EarlyStopping`` on ``train.monitor``, checked after each validation (before
    ``RunCheckpoint`` writes ``last.ckpt``, so the checkpoint holds the count that stopped it).

    A run killed after that checkpoint but before ``run.json`` said "finished" resumes with the
    patience already spent: it ends at once instead of training another epoch."""

    def __init__(self, monitor: str, patience: int):
        super().__init__(monitor=monitor, mode=MONITOR_MODES[monitor], patience=patience,
                         check_on_train_epoch_end=False, check_finite=False)

    @property
    def state_key(self) -> str:
        return "RunEarlyStopping"

    @property
    def fired(self) -> bool:
        return self.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED

    def on_train_start(self, trainer, pl_module):
        if self.fired:
            trainer.should_stop = True

    def reason(self) -> str:
        return (f"stopped early after epoch {self.stopped_epoch}: {self.monitor} did not improve "
                f"for {self.wait_count} validations")


def ema_warning(decay: float, steps: int) -> str | None:
    """A warning when a run is too short for its EMA decay: at its end the average would still be
    mostly the weights of its first steps (``decay ** steps`` of it). None when the run is long
    enough (under 5 % left)."""
    share = decay ** steps
    if share < 0.05:
        return None
    suggested = max(0.9, 1 - 3 / max(1, steps))  # the start's share falls to about 5 %
    return (f"EMA decay {decay:g} averages over about {round(1 / (1 - decay)):,} optimiser steps, "
            f"but this run has {steps}: at its end the average still holds {share:.0%} of the "
            f"weights of its first steps. Lower train.ema_decay to about {suggested:.3f}, train "
            "longer, or turn train.ema off")


class _RunEvents(Callback):
    """Hooks → events (start, throughput, memory warnings), Stop at the next optimiser step, and the
    sampler's position in the epoch saved with every checkpoint."""

    def __init__(self, session: "TrainingSession", datamodule: SliceDataModule):
        self.session = session
        self.datamodule = datamodule
        self.window: deque[tuple[float, int]] = deque(maxlen=session.config.train.log_every_n_steps + 1)
        self.warned_memory = False
        self.trainer: pl.Trainer | None = None

    @property
    def state_key(self) -> str:
        return "RunPosition"

    def setup(self, trainer, pl_module, stage):
        self.trainer = trainer

    def state_dict(self) -> dict:
        """Where the training epoch is (saved in every checkpoint): resumed, the sampler continues
        after the batches already trained on."""
        trainer = self.trainer
        return {"epoch": trainer.current_epoch,
                "batches": trainer.fit_loop.epoch_loop.batch_progress.current.processed,
                "world": trainer.world_size, "group": self.datamodule.sampler.group}

    def load_state_dict(self, state: dict) -> None:
        # Saved by more processes (a resume on fewer): the same samples are that many more batches
        # per process in (_rescale_loops scaled the loop's counters alike), and the epochs keep
        # the length they had on the processes the run started on.
        saved = int(state.get("world", 1))
        sampler = self.datamodule.sampler
        sampler.group = max(sampler.world, int(state.get("group", saved)))
        self.datamodule.resume_at(state["epoch"], state["batches"] * saved // self.session.world)

    def on_train_start(self, trainer, pl_module):
        session = self.session
        per_epoch = max(1, trainer.num_training_batches // trainer.accumulate_grad_batches)
        session.total_steps = int(trainer.estimated_stepping_batches)
        session.emit(TrainingStarted(str(session.folder.path), trainer.max_epochs, per_epoch,
                                     session.total_steps, trainer.global_step,
                                     session.placement.accelerator, session.placement.precision))
        self.window.clear()
        train = session.config.train
        warning = ema_warning(train.ema_decay, session.total_steps) if train.ema else None
        if warning and not session.resuming:
            session.emit(LogMessage(warning, "warning"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.window.append((time.perf_counter(), len(batch["mask"])))
        if len(self.window) > 1:
            elapsed = self.window[-1][0] - self.window[0][0]
            images = sum(n for _, n in list(self.window)[1:])
            pl_module.log("images_per_sec",  # all processes together (they step in lockstep)
                          images * trainer.world_size / elapsed if elapsed > 0 else 0.0,
                          on_step=True, on_epoch=False)
        faults.point("step")
        if trainer.fit_loop._should_accumulate() or not self.session.agreed_stop(trainer):
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch's validation runs first; RunCheckpoint stops after it
        self.session.checkpoint.write_last(trainer)
        trainer.should_stop = True
        trainer.limit_val_batches = 0  # no validation pass on the way out: Stop takes seconds

    def on_validation_start(self, trainer, pl_module):
        self.window.clear()  # validation time is not training throughput

    def on_train_epoch_end(self, trainer, pl_module):
        if self.session.placement.accelerator == "gpu" and not self.warned_memory:
            warning = memory_pressure_warning()  # one driver query per epoch
            if warning:
                self.warned_memory = True
                self.session.emit(LogMessage(warning, "warning"))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["studio_config"] = self.session.config.to_dict()
        checkpoint["studio_run"] = {"data_dir": str(self.session.data_dir)}


class TrainingSession:
    """One training run: ``run()`` blocks until it finishes, stops or fails; events go to
    ``on_event`` from the calling thread. ``TrainingSession.resume(run_dir)`` continues a run."""

    def __init__(self, config: StudioConfig, data_dir: str | Path | None, run_dir: str | Path,
                 on_event: EventSink = ignore_events, cache_root: str | Path | None = None,
                 tune: bool = True, corrections: str | Path | None = None,
                 init_from: str | Path | None = None):
        """``corrections``: a corrections CSV (``core.data.corrections``) whose masks replace the
        dataset's; it is copied into the run (``corrections.csv``), so a resume trains on the same
        masks whatever happens to the original. ``init_from``: a run whose best weights this one
        starts from (a fine-tune, ``core.finetune``; ``config`` from ``finetune_config``): recorded
        as the run's ``parent``, and both models are compared when it ends."""
        if data_dir is None:
            raise StudioError("a new run needs a dataset folder (--data DATA_DIR)")
        self._setup(RunFolder(run_dir), ensure_valid(config), Path(data_dir), on_event, cache_root)
        self.init_from = None
        if init_from is not None:
            from core.finetune import parent_run

            self.init_from = parent_run(init_from).path.resolve()
        self.tune = tune
        self.corrections = Path(corrections) if corrections else None
        if self.corrections is not None and not self.corrections.is_file():
            raise StudioError(f"--corrections: '{self.corrections}' does not exist")

    def _setup(self, folder: RunFolder, config: StudioConfig, data_dir: Path, on_event: EventSink,
               cache_root, resume_checkpoint: Path | None = None, resuming: bool = False) -> None:
        self.folder, self.config, self.data_dir, self.on_event = folder, config, data_dir, on_event
        self.resuming, self.resume_checkpoint = resuming, resume_checkpoint
        self.resume_step = 0
        self.cache_root = Path(cache_root) if cache_root else paths.cache_dir()
        self._stop = threading.Event()
        self._writing = False  # True once this session owns the folder: failures are recorded
        self.total_steps = 0
        self.checkpoint: RunCheckpoint | None = None
        self.placement = resolve_placement(config.train.device, config.train.precision)
        self.world = world_size(config.train.devices, config.train.num_nodes,
                                self.placement.accelerator)
        # DDP: the other processes run this same code (Lightning re-executes the command, or
        # torchrun / srun start it); only rank zero writes the run folder and reports events.
        self.rank_zero = is_rank_zero()
        if not self.rank_zero:  # rank zero says it once; the workers only report errors
            logging.getLogger("core").setLevel(logging.ERROR)

    @classmethod
    def resume(cls, run_dir: str | Path, on_event: EventSink = ignore_events,
               data_dir: str | Path | None = None,
               cache_root: str | Path | None = None, tune: bool = True,
               devices: list[str] | None = None) -> "TrainingSession":
        """Continue the run in ``run_dir`` with its own settings, from ``checkpoints/last.ckpt`` (or
        from the start when it was interrupted before its first checkpoint). ``data_dir`` overrides
        the dataset the run recorded (it moved). ``tune``: False leaves the post-processing
        untuned whatever ``train.tune_postprocess`` says (a fold group tunes on all its folds).
        ``devices``: ``train.devices`` / ``train.num_nodes`` overrides (``KEY=VALUE``) to go on
        with fewer processes (``resume_on``)."""
        run = RunFolder(run_dir)
        if not run.path.is_dir() or not run.is_run():
            raise StudioError(f"'{run.path}' is not a run folder (no config.yaml or run.json); "
                              "nothing to resume")
        info = run.info()
        if info.status == "finished":
            raise StudioError(f"run '{run.path}' has finished; there is nothing to resume (start "
                              "a new run, e.g. from its settings)")
        config, checkpoint, step, recorded_data = _settings_to_resume(run)
        if devices:
            config = resume_on(run, config, devices, checkpoint is not None)
        folder = data_dir or info.data_dir or recorded_data
        if not folder:
            raise StudioError(f"run '{run.path}' does not record its dataset (run.json is damaged); "
                              "pass --data DATA_DIR")
        session = cls.__new__(cls)
        session._setup(run, ensure_valid(config), Path(folder), on_event, cache_root, checkpoint,
                       resuming=True)
        session.resume_step = step
        session.tune = tune
        # A fine-tune stopped before its first checkpoint starts again from its parent's weights.
        session.init_from = Path(info.parent) if info.parent and checkpoint is None else None
        session.corrections = None  # a resumed run uses its own copy (RunFolder.corrections_path)
        return session

    # -- public API -------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.folder.path

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Stop after the current optimiser step (after the epoch's validation if it was the epoch's
        last batch) and write a resumable ``checkpoints/last.ckpt``."""
        self._stop.set()

    def agreed_stop(self, trainer) -> bool:
        """Whether to stop here; with several processes, true on all of them when any was asked
        (a Stop from the GUI reaches rank zero only), so every process stops at the same step."""
        stop = self.stop_requested
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
            if stop:
                self._stop.set()
        return stop

    def emit(self, event) -> None:
        if not self.rank_zero:
            return
        try:
            self.on_event(event)
        except Exception:  # noqa: BLE001 - a broken receiver must not kill training
            log.exception("event receiver failed on %r", event)

    def run(self) -> TrainingFinished:
        """Train. Returns the ``TrainingFinished`` event; on failure emits ``TrainingFailed``
        and raises (``StudioError`` for problems the user can fix)."""
        if not self.rank_zero:
            return self._run()  # a DDP worker: rank zero owns the folder, its lock and its record
        lock = self.folder.lock()
        try:
            self.folder.prepare()
            lock.acquire()
            return self._run()
        except CancelledError:
            self.folder.update_info(status="stopped")
            event = TrainingFinished("stopped", "stopped before training started")
            self.emit(event)
            return event
        except AbortRequested:
            event = self._aborted()
            self.emit(event)
            return event
        except BaseException as exc:
            message = _explain(exc, self.config)
            if self._writing:
                self.folder.update_info(status="failed", error=message)
            self.emit(TrainingFailed(message, traceback.format_exc()))
            if isinstance(exc, torch.OutOfMemoryError):
                raise StudioError(message) from None
            raise
        finally:
            lock.release()

    # -- internals --------------------------------------------------------------------------
    def _aborted(self) -> TrainingFinished:
        if self.folder.has_last_checkpoint():
            step = self.folder.info().step  # written with every last.ckpt
            self.folder.update_info(status="stopped")
            kept = (f"aborted; kept {self.folder.last_checkpoint} (step {step}); resume to continue "
                    "from there")
            return TrainingFinished("aborted", kept, str(self.folder.last_checkpoint))
        self.folder.update_info(status="aborted")
        return TrainingFinished("aborted", "aborted before the first checkpoint; resume starts "
                                "the run again from the beginning")

    def _prepare_folder(self) -> None:
        if not self.rank_zero:
            return
        self.folder.clean_partial_files()
        if not self.resuming:
            self.folder.create(self.config, self.data_dir,
                               parent=str(self.init_from) if self.init_from else "")
            self._writing = True
            if self.corrections is not None:
                self.folder.keep_corrections(self.corrections)
            return
        self._writing = True
        step = self.resume_step
        dropped = self.folder.trim_metrics(step)
        if dropped:
            self.emit(LogMessage(f"metrics.csv: {dropped} rows after the checkpoint's step {step} "
                                 "were removed; they are logged again"))
        self.folder.update_info(status="running", error="")
        best = self.folder.best_checkpoint()
        if best is not None and best != self.folder.last_checkpoint and not self.folder.model_complete():
            self.emit(LogMessage("model/ was incomplete; exported again from the best checkpoint",
                                 "warning"))
            export_model(self.folder, best, self.config)

    def _run(self) -> TrainingFinished:
        quiet_libraries()
        self._prepare_folder()
        faults.point("startup")
        index = self._scan()
        self.emit(LogMessage(f"Building the cache at {self.config.data.image_size} px"))
        cache = build_cache(index, self.config.data.image_size, self.cache_root, self.emit,
                            lambda: self.stop_requested)
        data = SliceDataModule(index, cache, self.config)
        if not any(index.slices[r].rles and any(index.slices[r].rles.values())
                   for r in data.train_set.rows):
            self.emit(LogMessage("no slice of the training fold has a mask; the model can only "
                                 "learn that organs are absent", "warning"))
        placement = self.placement
        self.emit(LogMessage(f"{len(data.train_set)} training slices (cases {data.train_cases}), "
                             f"{len(data.val_set)} validation slices (cases {data.val_cases}); "
                             f"{placement.accelerator}, precision {placement.precision}"))
        pl.seed_everything(self.config.train.seed, workers=True, verbose=False)
        if placement.accelerator == "gpu":
            torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and newer
            # Windows drivers spill into system RAM instead of raising out-of-memory: say so now.
            warning = spill_warning(estimate_peak_memory(self.config))
            if warning:
                self.emit(LogMessage(warning, "warning"))
        if self.init_from is not None:
            from core.finetune import parent_weights

            module = SegmentationModule(self.config.to_dict(), load_pretrained=False)
            module.load_state_dict(parent_weights(self.init_from))
            self.emit(LogMessage(f"starting from the best weights of {self.init_from}"))
        else:
            module = SegmentationModule(self.config.to_dict())
        module.apply_memory_format()
        if self.config.train.compile:
            module.model.compile()  # in place: state-dict keys stay those of the plain model
        self.checkpoint = RunCheckpoint(self)
        train = self.config.train
        strategy = "auto"
        if self.world > 1:
            from pytorch_lightning.strategies import DDPStrategy

            strategy = DDPStrategy(process_group_backend=ddp_backend(placement.accelerator))
        # The average first: it must take in a step before _RunEvents or RunCheckpoint save it.
        callbacks: list[Callback] = []
        if train.ema:
            callbacks.append(WeightAveraging(avg_fn=get_ema_avg_fn(decay=train.ema_decay)))
        early = (RunEarlyStopping(train.monitor, train.early_stop_patience)
                 if train.early_stop_patience > 0 else None)
        callbacks += [early] if early else []
        trainer = pl.Trainer(
            accelerator=placement.accelerator, devices=self._devices(), num_nodes=train.num_nodes,
            strategy=strategy, use_distributed_sampler=False, precision=placement.precision,
            max_epochs=train.epochs, max_steps=train.max_steps,
            accumulate_grad_batches=train.accumulate_grad_batches,
            callbacks=[*callbacks, self.checkpoint, _RunEvents(self, data)],
            plugins=[AtomicCheckpointIO(self._rescale_loops)],
            logger=[MetricsLogger(self.folder.metrics_path, self._on_row)],
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
            benchmark=placement.accelerator == "gpu", default_root_dir=str(self.folder.path),
            log_every_n_steps=train.log_every_n_steps)
        trainer.fit(module, datamodule=data, weights_only=True,
                    ckpt_path=str(self.resume_checkpoint) if self.resume_checkpoint else None)

        stopped = self.stop_requested and trainer.global_step < self.total_steps
        if not self.rank_zero:  # rank zero exports, tunes, compares and records
            return TrainingFinished("stopped" if stopped else "finished", "worker process done")
        last = self.folder.last_checkpoint
        if not last.exists():  # no validation ran (a run shorter than one epoch, max_steps)
            self.checkpoint.write_last(trainer)
        best = self.folder.best_checkpoint()
        if best is not None:
            export_model(self.folder, best, self.config)
            self.emit(CheckpointSaved(str(self.folder.model_dir), -1, best=True))
            if not stopped and self.tune and self.config.train.tune_postprocess:
                self._tune(index)
            if not stopped and self.folder.info().parent:
                self._compare(index)
        status = "stopped" if stopped else "finished"
        if stopped:
            reason = f"stopped at step {trainer.global_step}; resume to continue"
        elif early is not None and early.fired:
            reason = early.reason()
        else:
            reason = f"finished {trainer.current_epoch} epochs, {trainer.global_step} steps"
        info = self.folder.update_info(status=status, step=trainer.global_step)
        event = TrainingFinished(status, reason, str(last), info.best_score, info.monitor)
        self.emit(event)
        return event

    def _tune(self, index: DatasetIndex) -> None:
        """``train.tune_postprocess``: the run has trained; a Stop or a problem here leaves the
        model with plain thresholding and the run finished."""
        from core.tuning import tune_run

        try:
            tune_run(self.folder, index, self.cache_root, self.emit, lambda: self.stop_requested)
        except CancelledError:
            self.emit(LogMessage("stopped while tuning the post-processing; the model thresholds "
                                 "at 0.5", "warning"))
        except StudioError as exc:
            self.emit(LogMessage(f"the post-processing was not tuned: {exc}", "warning"))

    def _devices(self):
        from core.devices import parse_devices

        devices = parse_devices(self.config.train.devices)
        return devices if self.placement.accelerator == "gpu" or devices == "auto" else \
            (len(devices) if isinstance(devices, list) else devices)

    def _rescale_loops(self, checkpoint: dict) -> dict:
        """A checkpoint saved by more processes than resume it: the loop counts batches per
        process, so its counters scale by saved/world (the samples done stay the same)."""
        position = (checkpoint.get("callbacks") or {}).get("RunPosition") or {}
        saved, world = int(position.get("world", 1)), self.world
        if saved == world:
            return checkpoint
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
        for part in ("total", "current") if isinstance(progress, dict) else ():
            counts = progress[part]
            done = counts["processed"]  # the batches trained; the others trail it by at most 1
            for key, value in counts.items():  # (a checkpoint taken in on_train_batch_end), which
                counts[key] = done * saved // world - (done - value)  # Lightning reads on restart
        return checkpoint

    def _compare(self, index: DatasetIndex) -> None:
        """A fine-tune has trained: score it and its parent on the same truth (comparison.json).
        A Stop or a problem here leaves the run finished, without the comparison."""
        from core.finetune import compare_with_parent

        try:
            compare_with_parent(self.folder, index, self.cache_root, self.emit,
                                lambda: self.stop_requested)
        except CancelledError:
            self.emit(LogMessage("stopped while comparing with the parent run", "warning"))
        except StudioError as exc:
            self.emit(LogMessage(f"not compared with the parent run: {exc}", "warning"))

    def _scan(self) -> DatasetIndex:
        self.emit(LogMessage(f"Scanning {self.data_dir}"))
        kept = self.folder.corrections_path
        index = scan_dataset(self.data_dir, self.emit, lambda: self.stop_requested,
                             corrections=kept if kept.is_file() else None)
        if kept.is_file() and self.rank_zero:
            self.folder.update_info(corrected_slices=index.report.corrected)
            self.emit(LogMessage(f"{index.report.corrected} slices train on corrected masks "
                                 f"({self.folder.info().corrections or kept})"))
        if not index.has_labels:
            raise StudioError(f"'{self.data_dir}' has no train.csv: training needs labelled data")
        for problem in index.report.problems[:20]:
            self.emit(LogMessage(f"{problem.where}: {problem.message}", problem.severity))
        if not any(r.rles and any(r.rles.values()) for r in index.slices):
            raise StudioError(f"no slice in '{self.data_dir}' has a mask; nothing to learn "
                              "(train.csv has only empty segmentations)")
        return index

    def _on_row(self, row: dict) -> None:
        step, epoch = int(row["step"]), int(row["epoch"])
        if "train_loss" in row:
            rate = row.get("images_per_sec", 0.0)
            per_step = self.config.train.batch_size * self.config.train.accumulate_grad_batches
            eta = max(0, self.total_steps - step) * per_step / rate if rate else 0.0
            self.emit(TrainingStep(step, epoch, 0, row["train_loss"], row.get("lr", 0.0), rate, eta))
        values = {k: v for k, v in row.items() if k.startswith("val_")}
        if values:
            self.emit(ValidationResult(epoch, step, values))


RESUME_SETTINGS = ("train.devices", "train.num_nodes")
"""What a resume may change: where it runs, not what it trains."""


def resume_on(run: RunFolder, config: StudioConfig, overrides: list[str],
              checkpointed: bool) -> StudioConfig:
    """``config`` to resume on other devices. A run goes on with the same samples per optimiser
    step: on fewer processes the gradient accumulation grows by the ratio (8 → 4 devices:
    accumulation × 2), so the schedule, the batch order and the steps are those of the run as it
    started. More processes than it started on, or a count that does not divide it, cannot keep
    that: ``StudioError`` saying so. Saved as the run's ``config.yaml``."""
    from core.config import apply_overrides

    bad = [item for item in overrides if item.split("=", 1)[0].strip() not in RESUME_SETTINGS]
    if bad:
        raise StudioError(f"--resume continues with the run's saved settings; only "
                          f"{' and '.join(RESUME_SETTINGS)} may change ({bad[0]!r} may not): "
                          "start a new run to change them")
    new = ensure_valid(apply_overrides(config, overrides))
    accelerator = resolve_placement(new.train.device, new.train.precision).accelerator
    before = world_size(config.train.devices, config.train.num_nodes, accelerator)
    after = world_size(new.train.devices, new.train.num_nodes, accelerator)
    if after != before and checkpointed:
        if after > before or before % after:
            raise StudioError(
                f"run '{run.path}' trained on {before} process(es) and cannot go on with {after}: "
                f"the samples of each optimiser step must stay the same, so a run resumes on the "
                f"same number of devices or on a divisor of it (1 … {before}); start a new run "
                "to use more devices")
        new.train.accumulate_grad_batches = config.train.accumulate_grad_batches * before // after
        log.info("resuming %s on %d process(es) instead of %d: gradient accumulation %d → %d "
                 "keeps the effective batch", run.path, after, before,
                 config.train.accumulate_grad_batches, new.train.accumulate_grad_batches)
    if is_rank_zero():
        run.restore_config(new)
    return new


def _settings_to_resume(run: RunFolder) -> tuple[StudioConfig, Path | None, int, str]:
    """The settings a run continues with, its checkpoint (None: start again), the checkpoint's
    optimiser step and the dataset it recorded. The checkpoint's own copy of the settings is the trusted one: a damaged
    ``config.yaml`` is restored from it; without a checkpoint ``config.yaml`` must be whole."""
    if not run.has_last_checkpoint():
        try:
            return run.config(), None, 0, ""
        except ConfigError as exc:
            raise StudioError(f"cannot resume '{run.path}': {exc}; the run has no checkpoint to "
                              "take its settings from") from None
    checkpoint = load_checkpoint(run.last_checkpoint)
    config = from_dict(checkpoint_config(checkpoint, run.last_checkpoint))
    recorded = (checkpoint.get("studio_run") or {}).get("data_dir", "")
    on_disk = run.config_or_none()
    if on_disk is None or on_disk.to_dict() != config.to_dict():
        why = "damaged or incomplete" if on_disk is None else "changed since the run started"
        if is_rank_zero():  # a DDP worker reads; rank zero has restored it, or will
            log.warning("%s is %s; restored from %s (a resumed run keeps its settings)",
                        run.config_path, why, run.last_checkpoint)
            run.restore_config(config)
    return config, run.last_checkpoint, int(checkpoint.get("global_step", 0)), recorded


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

