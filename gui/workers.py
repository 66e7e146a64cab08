"""Run engine work off the GUI thread and bring its events back as queued, throttled signals.

Two pieces:

- ``BackgroundTask`` runs one function ``fn(progress, cancel)`` (a dataset scan, the demo generator, a
  cache build, a memory estimate) in a ``QThread`` with a worker object moved to it, and reports
  ``progress`` / ``succeeded`` / ``failed`` / ``cancelled`` on the GUI thread.
- ``EventThrottle`` collects events pushed from any thread and delivers them on the GUI thread in
  batches, at most once per interval (100 ms: the window repaints at most ~10×/s however fast training
  steps come), in order, with nothing held back once the stream goes quiet.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Callable

from PySide6.QtCore import QObject, QThread, QTimer, Qt, Signal, Slot

from core.errors import CancelledError, StudioError
from core.events import Progress

log = logging.getLogger(__name__)

ProgressSink = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


def wait_for_thread(thread: QThread | None, timeout_ms: int) -> bool:
    """Wait for ``thread`` to end, letting its Python code run meanwhile.

    ``QThread.wait`` in PySide6 6.12 keeps the GIL while it blocks, so a worker still running Python
    can never finish: the window hung for the whole timeout on close, then Qt aborted ("Destroyed
    while thread is still running"). Sleeping in Python releases the GIL between checks.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    while thread is not None and thread.isRunning():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(message for a person, technical details) for an exception."""
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, StudioError):
        return str(exc), details
    return f"{type(exc).__name__}: {exc}", details


class EventThrottle(QObject):
    """Thread-safe event buffer; ``delivered(list)`` fires on the GUI thread at most every
    ``interval_ms``. ``push`` may be called from any thread; ``flush`` only from the GUI thread."""

    delivered = Signal(list)
    _wake = Signal()

    def __init__(self, interval_ms: int = 100, parent: QObject | None = None):
        super().__init__(parent)
        self.interval = interval_ms / 1000
        self._lock = threading.Lock()
        self._events: list = []
        self._scheduled = False
        self._last_flush = 0.0
        self._wake.connect(self._schedule, Qt.QueuedConnection)

    def push(self, event: object) -> None:
        with self._lock:
            self._events.append(event)
            if self._scheduled:
                return
            self._scheduled = True
        self._wake.emit()  # one queued signal per delivery, however many events arrive meanwhile

    @Slot()
    def _schedule(self) -> None:
        wait = self._last_flush + self.interval - time.perf_counter()
        QTimer.singleShot(max(0, int(wait * 1000)), self.flush)

    @Slot()
    def flush(self) -> None:
        with self._lock:
            events, self._events = self._events, []
            self._scheduled = False
        self._last_flush = time.perf_counter()
        if events:
            self.delivered.emit(events)


class _TaskWorker(QObject):
    progress = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, fn: Callable[[ProgressSink, CancelCheck], object], cancel: threading.Event,
                 min_progress_interval: float):
        super().__init__()
        self.fn = fn
        self.cancel_event = cancel
        self.min_interval = min_progress_interval
        self._last_progress = 0.0

    def _progress(self, event: Progress) -> None:
        # Generators report per slice; the bar needs no more than ~20 updates a second.
        now = time.perf_counter()
        if now - self._last_progress >= self.min_interval or event.done >= event.total:
            self._last_progress = now
            self.progress.emit(event)

    @Slot()
    def run(self) -> None:
        try:
            result = self.fn(self._progress, self.cancel_event.is_set)
        except CancelledError:
            self.cancelled.emit()
        except StudioError as exc:
            # An ordinary user error (not a dataset, a bad setting): the page shows it; the log
            # notes it in one line, and the console stays quiet.
            log.info("background task stopped: %s", exc)
            self.failed.emit(*describe_error(exc))
        except BaseException as exc:  # noqa: BLE001 - reported to the user, never lost
            log.warning("background task failed", exc_info=True)
            self.failed.emit(*describe_error(exc))
        else:
            if self.cancel_event.is_set():
                self.cancelled.emit()
            else:
                self.succeeded.emit(result)
        finally:
            self.finished.emit()


class BackgroundTask(QObject):
    """``fn(progress, cancel)`` on its own ``QThread``. Signals arrive on the GUI thread; ``done``
    comes last, after the thread has ended."""

    progress = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    done = Signal()

    def __init__(self, fn: Callable[[ProgressSink, CancelCheck], object], name: str = "task",
                 parent: QObject | None = None, min_progress_interval: float = 0.05):
        super().__init__(parent)
        self.name = name
        self._cancel = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName(name)
        self._worker = _TaskWorker(fn, self._cancel, min_progress_interval)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        # Signal-to-signal connections to an object of the GUI thread are queued across threads.
        self._worker.progress.connect(self.progress)
        self._worker.succeeded.connect(self.succeeded)
        self._worker.failed.connect(self.failed)
        self._worker.cancelled.connect(self.cancelled)
        # Direct: quit from the worker's thread, so wait() on the GUI thread cannot deadlock on a
        # queued quit that only the (blocked) GUI thread would deliver.
        self._worker.finished.connect(self._thread.quit, Qt.DirectConnection)
        self._thread.finished.connect(self._on_thread_finished)
        self._running = False

    def start(self) -> "BackgroundTask":
        self._running = True
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def is_running(self) -> bool:
        return self._running

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Block until the thread ends (used when the window closes)."""
        return wait_for_thread(self._thread, timeout_ms)

    @Slot()
    def _on_thread_finished(self) -> None:
        self._running = False
        self.done.emit()
