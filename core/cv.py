"""Cross-validation: a fold group trains every fold into one folder, scores the out-of-fold
predictions and tunes the post-processing on them.

::

    RUN_DIR/
      group.json       what the group is: folds, dataset, settings (fold 0's), status, name
      run.lock         while a process trains the group
      fold-0/ … fold-K/  one ordinary run folder per fold (``core.runs.RunFolder``), data.fold = K
      oof/<case-day>.npy  float16 (D, 3, H, W) probabilities of each validation case-day, predicted by
                       the fold model that did not see it (the input of the post-processing search)
      cv.json          per fold: best validation score; the out-of-fold score untuned and tuned; the
                       chosen post-processing (applied by predict, Review and exports)

Every case of the dataset is in exactly one fold's validation set (``split_by_case``), so the
out-of-fold score scores each labelled case once, by a model that never trained on it: the honest
estimate of the ensemble's quality on new cases that nnU-Net users expect, and the data the
post-processing is chosen on (choosing it on training cases would overfit it).

Stop and resume work across the group: a stopped fold resumes from its ``last.ckpt``; finished folds
are kept; the out-of-fold step runs once all folds have finished.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading

from pathlib import Path

import numpy as np

from core import paths
from core.atomic import atomic_write_text
from core.config import StudioConfig, ensure_valid
from core.errors import CancelledError, StudioError
from core.events import (EventSink, GroupProgress, LogMessage, TrainingFinished, TrainingStarted,
                         ignore_events)
from core.runs import (CV_FILE, GROUP_FILE, OOF_DIR, FoldGroup, RunFolder, fold_name,  # noqa: F401
                       is_group, now_iso)  # the group format lives in core.runs; re-exported
from core.tuning import validation_predictions

log = logging.getLogger(__name__)



def fold_config(config: StudioConfig, fold: int) -> StudioConfig:
    return dataclasses.replace(config, data=dataclasses.replace(config.data, fold=fold))


def one_device(config: StudioConfig) -> None:
    """A fold group trains on one device: its folds, out-of-fold scoring and tuning run one after
    another in one process, which DDP's re-executed processes would repeat. ``StudioError``
    otherwise, saying how to use several devices instead."""
    from core.devices import resolve_device, world_size

    if world_size(config.train.devices, config.train.num_nodes,
                  resolve_device(config.train.device)) > 1:
        raise StudioError("a fold group (--folds, Train all folds) trains on one device; set "
                          "train.devices=1, or train the folds as separate runs on several devices "
                          "(--set data.fold=K)")


class FoldGroupSession:
    """Trains the folds of a group one after another (each a ``TrainingSession`` in ``fold-K/``),
    then scores the out-of-fold predictions and tunes the post-processing. The interface is the
    training session's (``run``, ``request_stop``, ``run_dir``), so the GUI runs either the same
    way; ``GroupProgress`` says which fold is training."""

    def __init__(self, config: StudioConfig, data_dir: str | Path | None, run_dir: str | Path,
                 on_event: EventSink = ignore_events, cache_root: str | Path | None = None,
                 folds: list[int] | None = None, corrections: str | Path | None = None):
        """``corrections``: a corrections CSV every fold trains with (each keeps a copy) and the
        out-of-fold scores are scored against."""
        if data_dir is None:
            raise StudioError("a new fold group needs a dataset folder (--data DATA_DIR)")
        config = ensure_valid(config)
        one_device(config)
        folds = list(range(config.data.num_folds)) if folds is None else folds
        bad = [k for k in folds if not 0 <= k < config.data.num_folds]
        if bad or not folds:
            raise StudioError(f"--folds: fold {bad[0] if bad else '(none)'} is not one of 0…"
                              f"{config.data.num_folds - 1} (data.num_folds is "
                              f"{config.data.num_folds})")
        self.group = FoldGroup(run_dir)
        self.config, self.data_dir, self.folds = config, Path(data_dir), folds
        self.corrections = corrections
        self._init(on_event, cache_root, resuming=False)

    def _init(self, on_event, cache_root, resuming: bool) -> None:
        self.on_event = on_event
        self.cache_root = Path(cache_root) if cache_root else paths.cache_dir()
        self.resuming = resuming
        self._stop = threading.Event()
        self.current = None  # the TrainingSession of the fold being trained

    @classmethod
    def resume(cls, run_dir: str | Path, on_event: EventSink = ignore_events,
               data_dir: str | Path | None = None,
               cache_root: str | Path | None = None) -> "FoldGroupSession":
        group = FoldGroup(run_dir)
        if not group.is_group():
            raise StudioError(f"'{run_dir}' is not a fold group (no {GROUP_FILE})")
        info = group.info()
        if info.get("status") == "finished" and group.cv() is not None:
            raise StudioError(f"fold group '{group.path}' has finished; there is nothing to resume")
        session = cls.__new__(cls)
        session.group = group
        session.config, session.folds = group.config(), group.folds()
        session.data_dir = Path(data_dir or info.get("data_dir") or "")
        if not str(session.data_dir) or str(session.data_dir) == ".":
            raise StudioError(f"fold group '{group.path}' does not record its dataset; pass --data")
        session.corrections = None  # each fold resumes with its own copy
        session._init(on_event, cache_root, resuming=True)
        return session

    @property
    def run_dir(self) -> Path:
        return self.group.path

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()
        current = self.current
        if current is not None:
            current.request_stop()

    def emit(self, event) -> None:
        try:
            self.on_event(event)
        except Exception:  # noqa: BLE001 - a broken receiver must not kill training
            log.exception("event receiver failed on %r", event)

    def run(self) -> TrainingFinished:
        from core.session import TrainingSession

        lock = self.group.lock()
        if not self.resuming:
            self.group.create(self.config, self.data_dir, self.folds)
        lock.acquire()
        try:
            self.group.update_info(status="running")
            for position, fold in enumerate(self.folds):
                if self.stop_requested:
                    return self._stopped(f"stopped before fold {fold}")
                run = self.group.fold_run(fold)
                if run.is_run() and run.status() == "finished":
                    continue
                self.emit(GroupProgress(fold, position, len(self.folds), str(run.path)))
                self.emit(LogMessage(f"fold {fold} ({position + 1} of {len(self.folds)}) → "
                                     f"{run.path}"))
                if run.is_run():
                    session = TrainingSession.resume(run.path, self._fold_event(fold, run),
                                                     self.data_dir, self.cache_root, tune=False)
                else:  # the group tunes once, on every fold's validation predictions
                    session = TrainingSession(fold_config(self.config, fold), self.data_dir,
                                              run.path, self._fold_event(fold, run), self.cache_root,
                                              tune=False, corrections=self.corrections)
                self.current = session
                if self.stop_requested:
                    session.request_stop()
                result = session.run()
                self.current = None
                if result.status != "finished":
                    return self._stopped(f"fold {fold} {result.status}: {result.reason}", result)
            self.emit(GroupProgress(-1, len(self.folds), len(self.folds), str(self.group.path)))
            cv = score_group(self.group, self.cache_root, self.emit, lambda: self.stop_requested)
            self.group.update_info(status="finished")
            tuned = cv["oof_tuned"]["score"]
            reason = (f"{len(self.folds)} folds finished; out-of-fold score "
                      f"{cv['oof']['score']:.4f}, tuned post-processing {tuned:.4f}")
            event = TrainingFinished("finished", reason, str(self.group.path), tuned, "oof_score")
            self.emit(event)
            return event
        except CancelledError:
            return self._stopped("stopped while scoring the out-of-fold predictions")
        except BaseException as exc:
            try:
                self.group.update_info(status="failed", error=str(exc))
            except StudioError:
                pass
            raise
        finally:
            lock.release()

    def _fold_event(self, fold: int, run: RunFolder):
        def forward(event):
            if isinstance(event, TrainingFinished):  # a fold's end is not the group's
                self.emit(LogMessage(f"fold {fold}: {event.status}, {event.reason}"))
                return
            if isinstance(event, TrainingStarted) and not run.info().name:
                run.update_info(name=f"{self.group.name} · fold {fold}")  # run.json exists now
            self.emit(event)
        return forward

    def _stopped(self, reason: str, result: TrainingFinished | None = None) -> TrainingFinished:
        status = result.status if result is not None and result.status != "finished" else "stopped"
        if status == "failed":
            status = "stopped"
        self.group.update_info(status="stopped" if status != "aborted" else "aborted")
        event = TrainingFinished(status, f"{reason}; resume the group to continue",
                                 str(self.group.path))
        self.emit(event)
        return event


def score_group(group: FoldGroup, cache_root: Path | None = None, on_event: EventSink = ignore_events,
                cancel=None) -> dict:
    """Predict every fold's validation case-days with that fold's best model (the out-of-fold
    predictions, kept in ``oof/``), score them, tune the post-processing on them and write
    ``cv.json``; returns its contents."""
    from core.data.scan import scan_dataset

    info = group.info()
    kept = [r.corrections_path for r in group.fold_runs() if r.corrections_path.is_file()]
    index = scan_dataset(info["data_dir"], corrections=kept[0] if kept else None)
    predictions = list(out_of_fold(group, index, cache_root, on_event, cancel))
    folds = []
    for run in group.fold_runs():
        run_info = run.info()
        folds.append({"fold": run.config().data.fold, "run": run.name,
                      "best_score": run_info.best_score, "monitor": run_info.monitor,
                      "step": run_info.step})
    return _write_cv(group, folds, predictions, group.config().model.mode, on_event, cancel)


def out_of_fold(group: FoldGroup, index, cache_root=None, on_event: EventSink = ignore_events,
                cancel=None):
    """``(case_day, probabilities, truth)`` of every labelled case-day, each predicted by the fold
    model that held its case out; the probabilities are kept in ``oof/`` as float16 (memory-mapped
    back, so a large dataset's predictions need disk, not memory)."""
    if not index.has_labels:
        raise StudioError(f"'{index.root}' has no train.csv; out-of-fold scores need labels")
    group.oof_dir.mkdir(parents=True, exist_ok=True)
    for run in group.fold_runs():
        for case_day, probs, truth in validation_predictions(run, index, cache_root, on_event,
                                                             cancel):
            path = group.oof_dir / f"{case_day}.npy"
            np.save(path, probs)
            yield case_day, np.load(path, mmap_mode="r"), truth


def _write_cv(group: FoldGroup, folds: list[dict], predictions: list, mode: str,
              on_event: EventSink, cancel) -> dict:
    from core.metrics import ScoreAccumulator
    from core.postprocess import PostProcess, apply, search

    def score(post) -> dict:
        scores = ScoreAccumulator()
        for name, probs, truth in predictions:
            scores.add_case_day(name, apply(probs, post, mode), truth)
        return scores.result().to_dict()

    untuned = score(PostProcess.default())
    on_event(LogMessage(f"out-of-fold score {untuned['score']:.4f} on {len(predictions)} "
                        "case-days; tuning the post-processing"))
    found = search(predictions, mode, cancel=cancel)
    tuned = score(found.post)
    cv = {"folds": folds, "case_days": len(predictions), "oof": untuned, "oof_tuned": tuned,
          "postprocess": found.post.to_dict(), "postprocess_text": found.post.describe(),
          "written": now_iso()}
    atomic_write_text(group.cv_path, json.dumps(cv, indent=2))
    on_event(LogMessage(f"post-processing tuned: out-of-fold score {untuned['score']:.4f} → "
                        f"{tuned['score']:.4f}"))
    return cv
