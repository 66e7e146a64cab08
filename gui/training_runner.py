"""Runs a ``TrainingSession`` on a ``QThread`` and hands its events to the window, throttled.

The worker object is moved to the thread and calls ``session.run()`` there; the session's events (and
warnings the engine logs meanwhile, such as "random initialisation") go into an ``EventThrottle`` that
delivers them on the GUI thread ≤10×/s. Stop calls ``session.request_stop()`` (thread-safe); the state
stays "stopping" until the thread has ended, i.e. until the checkpoint is written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from core.config import StudioConfig
from core.events import LogMessage
from core.runs import new_run_dir
from gui.workers import EventThrottle, wait_for_thread

if TYPE_CHECKING:
    from core.session import TrainingSession

log = logging.getLogger(__name__)

IDLE, RUNNING, STOPPING = "idle", "running", "stopping"


def training_threads() -> int:
    """CPU threads for torch while the window shares the process: all cores but one.

    With every core busy in torch's intra-op threads the GUI thread waits for a core (and for the
    GIL held by a descheduled thread); measured on 2 shared cores, leaving one free took the event
    loop's p99 tick gap from ~72 to ~50 ms and made CPU training several times faster, because the
    OpenMP threads stopped fighting the window and each other for the cores.
    """
    return max(1, (os.cpu_count() or 1) - 1)


class _ForwardWarnings(logging.Handler):
    """Engine warnings logged during a run also appear in the window's log pane."""

    def __init__(self, throttle: EventThrottle):
        super().__init__(logging.WARNING)
        self.throttle = throttle

    def emit(self, record: logging.LogRecord) -> None:
        self.throttle.push(LogMessage(record.getMessage(), record.levelname.lower()))


class _TrainingWorker(QObject):
    finished = Signal()

    def __init__(self, session: TrainingSession):
        super().__init__()
        self.session = session

    @Slot()
    def run(self) -> None:
        import torch

        torch.set_num_threads(training_threads())
        try:
            self.session.run()
        except BaseException:  # noqa: BLE001 - the session already emitted TrainingFailed
            log.warning("training run failed", exc_info=True)
        finally:
            self.finished.emit()


class TrainingRunner(QObject):
    """At most one training run at a time. ``events(list)`` carries ``core.events`` objects in order;
    ``state_changed`` goes idle → running → (stopping →) idle; ``ended`` fires once the thread is gone
    and every event has been delivered."""

    events = Signal(list)
    state_changed = Signal(str)
    ended = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.state = IDLE
        self.session: TrainingSession | None = None
        self.run_dir: Path | None = None
        self._thread: QThread | None = None
        self._worker: _TrainingWorker | None = None
        self._throttle = EventThrottle(100, self)
        self._throttle.delivered.connect(self.events)
        self._log_handler = _ForwardWarnings(self._throttle)

    @property
    def is_active(self) -> bool:
        return self.state != IDLE

    def start(self, config: StudioConfig, data_dir: Path, run_dir: Path | None = None,
              all_folds: bool = False, init_from: Path | None = None) -> Path:
        """Start a new run (``all_folds``: a fold group, every fold of ``data.num_folds`` one after
        another; ``init_from``: a fine-tune of that run, ``core.finetune``); returns its folder.
        Raises ``StudioError`` for an unusable config."""
        from core.cv import FoldGroupSession
        from core.data.corrections import Corrections
        from core.session import TrainingSession  # the engine: loaded after the window is painted

        own = Corrections.for_dataset(data_dir).path  # the dataset's corrections, made on Review
        corrections = own if own.is_file() else None
        if all_folds:
            run_dir = run_dir or new_run_dir(config, suffix=f"_{config.data.num_folds}folds")
            session = FoldGroupSession(config, data_dir, run_dir, on_event=self._throttle.push,
                                       corrections=corrections)
        else:
            run_dir = run_dir or new_run_dir(config)
            session = TrainingSession(config, data_dir, run_dir, on_event=self._throttle.push,
                                      corrections=corrections, init_from=init_from)
        self._launch(session)
        return run_dir

    def resume(self, run_dir: Path) -> Path:
        """Continue a stopped run from its ``checkpoints/last.ckpt`` with its own settings; a fold
        of a fold group (or the group) continues the group. Returns the folder that continues."""
        from core.cv import FoldGroupSession, is_group
        from core.session import TrainingSession

        run_dir = Path(run_dir)
        if not is_group(run_dir) and is_group(run_dir.parent):
            run_dir = run_dir.parent
        kind = FoldGroupSession if is_group(run_dir) else TrainingSession
        self._launch(kind.resume(run_dir, on_event=self._throttle.push))
        return run_dir

    @property
    def training_dir(self) -> Path | None:
        """The run folder being trained now (a fold group's current fold)."""
        current = getattr(self.session, "current", None)
        if current is not None:
            return Path(current.run_dir)
        return self.run_dir if self.is_active else None

    def stop(self) -> None:
        if self.state == RUNNING and self.session is not None:
            self.session.request_stop()
            self._set_state(STOPPING)

    def wait(self, timeout_ms: int = 120_000) -> bool:
        """Block until the run's thread has ended (used when the window closes)."""
        return wait_for_thread(self._thread, timeout_ms)

    def _launch(self, session: TrainingSession) -> None:
        if self.is_active:
            raise RuntimeError("a training run is already in progress")
        self.session, self.run_dir = session, session.run_dir
        self._thread = QThread()
        self._thread.setObjectName("training")
        self._worker = _TrainingWorker(session)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.finished.connect(self._thread.quit, Qt.DirectConnection)  # see BackgroundTask
        self._thread.finished.connect(self._on_thread_finished)
        logging.getLogger("core").addHandler(self._log_handler)
        self._set_state(RUNNING)
        self._thread.start()

    @Slot()
    def _on_thread_finished(self) -> None:
        logging.getLogger("core").removeHandler(self._log_handler)
        self._throttle.flush()  # the last events (TrainingFinished / TrainingFailed) go out now
        self._set_state(IDLE)
        self.ended.emit()

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_changed.emit(state)
