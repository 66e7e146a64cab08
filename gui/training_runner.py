"""Runs a ``TrainingSession`` on a ``QThread`` and hands its events to the window, throttled.

The worker object is moved to the thread and calls ``session.run()`` there; the session's events (and
warnings the engine logs meanwhile, such as "random initialisation") go into an ``EventThrottle`` that
delivers them on the GUI thread ≤10×/s. Stop calls ``session.request_stop()`` (thread-safe); the state
stays "stopping" until the thread has ended, i.e. until the checkpoint is written.

A run on several devices (``train.devices``, Lightning's DDP) cannot live on a QThread: Lightning's
launcher re-executes the program's command for every further process. The runner then starts
``train --events json`` as a child process (``ChildRun``; the packaged program starts itself), reads
its events back as JSON lines and sends ``stop`` on its stdin for Stop; the page, charts and log
behave as for a one-device run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QProcess, Qt, QThread, Signal, Slot

from core.config import StudioConfig
from core.events import LogMessage
from core.runs import RunFolder, new_run_dir
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
        self.child: ChildRun | None = None
        self.always_child = False
        """Run one-device runs as a child process too (``benchmarks/gui_latency.py --process``
        compares the two; the thread measured better, RESULTS §8)."""

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
            from core.cv import one_device

            one_device(config)  # StudioError: the page shows it
        if self.always_child or several_processes(config):
            suffix = f"_{config.data.num_folds}folds" if all_folds else ""
            run_dir = run_dir or new_run_dir(config, suffix=suffix)
            args = ["--data", str(data_dir), "--run-dir", str(run_dir)]
            args += ["--folds", "all"] if all_folds else []
            args += ["--corrections", str(corrections)] if corrections else []
            if init_from is not None:
                args += ["--from-run", str(init_from)]
            self._launch_child(args, config if init_from is None else None, run_dir)
            return run_dir
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
        if is_group(run_dir):  # a fold group trains on one device (core.cv.one_device)
            self._launch(FoldGroupSession.resume(run_dir, on_event=self._throttle.push))
            return run_dir
        config = RunFolder(run_dir).config_or_none()
        if config is not None and several_processes(config):  # the child reads the checkpoint
            self._launch_child(["--resume", "--run-dir", str(run_dir)], None, run_dir)
            return run_dir
        self._launch(TrainingSession.resume(run_dir, on_event=self._throttle.push))
        return run_dir

    @property
    def training_dir(self) -> Path | None:
        """The run folder being trained now (a fold group's current fold)."""
        current = getattr(self.session, "current", None)
        if current is not None:
            return Path(current.run_dir)
        return self.run_dir if self.is_active else None

    def stop(self) -> None:
        if self.state == RUNNING and self.child is not None:
            self.child.stop()
            self._set_state(STOPPING)
        elif self.state == RUNNING and self.session is not None:
            self.session.request_stop()
            self._set_state(STOPPING)

    def wait(self, timeout_ms: int = 120_000) -> bool:
        """Block until the run's thread (or child process) has ended (the window closes)."""
        if self.child is not None:
            return self.child.wait(timeout_ms)
        return wait_for_thread(self._thread, timeout_ms)

    def _launch_child(self, args: list[str], config: StudioConfig | None, run_dir: Path) -> None:
        if self.is_active:
            raise RuntimeError("a training run is already in progress")
        self.session, self.run_dir = None, Path(run_dir)
        self.child = ChildRun(args, config, self._throttle.push, self)
        self.child.ended.connect(self._on_child_ended)
        self._set_state(RUNNING)
        self.child.start()

    @Slot()
    def _on_child_ended(self) -> None:
        self._throttle.flush()
        self.child = None
        self._set_state(IDLE)
        self.ended.emit()

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


def several_processes(config: StudioConfig) -> bool:
    """Whether ``config`` trains on more than one process (DDP): a child process then."""
    from core.devices import resolve_device, world_size
    from core.errors import ConfigError

    try:
        return world_size(config.train.devices, config.train.num_nodes,
                          resolve_device(config.train.device)) > 1
    except ConfigError:
        return False  # reported when the session checks the settings


def program_command() -> list[str]:
    """How to start this program's command line: the packaged program itself, or this Python
    with main.py."""
    import sys

    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, str(Path(__file__).resolve().parents[1] / "main.py")]


class ChildRun(QObject):
    """``main.py train --events json …`` as a child process: its JSON-line events go to ``push``,
    its other output to the log pane; ``stop()`` writes ``stop`` on its stdin (every platform;
    Lightning's other processes stop at the same step), ``ended`` fires when it has exited."""

    ended = Signal()

    def __init__(self, args: list[str], config: StudioConfig | None, push, parent=None):
        super().__init__(parent)
        import tempfile

        from core import paths
        from core.config import save_config

        self.push = push
        self.config_file = None
        if config is not None:  # the form's settings, as a file the command reads
            handle, name = tempfile.mkstemp(suffix=".yaml", prefix="run-settings-",
                                            dir=paths.studio_home())
            os.close(handle)
            save_config(config, name)
            self.config_file = Path(name)
            args = [*args, "--config", name]
        command = program_command()
        self.process = QProcess(self)
        self.process.setProgram(command[0])
        self.process.setArguments([*command[1:], "--home", str(paths.studio_home()), "train",
                                   "--events", "json", *args])
        self.process.readyReadStandardOutput.connect(self._read_stdout)
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self._out = self._err = b""
        self._tail: list[str] = []
        self._finished_seen = False

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        if self.process.state() == QProcess.Running:
            self.process.write(b"stop\n")

    def wait(self, timeout_ms: int) -> bool:
        return self.process.state() == QProcess.NotRunning or \
            self.process.waitForFinished(timeout_ms)

    def _lines(self, buffer: bytes, data: bytes) -> tuple[list[str], bytes]:
        *lines, rest = (buffer + data).split(b"\n")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines], rest

    def _read_stdout(self) -> None:
        from core.events import TrainingFailed, TrainingFinished, from_json

        lines, self._out = self._lines(self._out, bytes(self.process.readAllStandardOutput()))
        for line in lines:
            event = from_json(line)
            if event is not None:
                self._finished_seen |= isinstance(event, (TrainingFinished, TrainingFailed))
                self.push(event)

    def _read_stderr(self) -> None:
        lines, self._err = self._lines(self._err, bytes(self.process.readAllStandardError()))
        for line in lines:
            self._tail = (self._tail + [line])[-40:]
            if line.startswith(("WARNING:", "warning:", "error:")):
                self.push(LogMessage(line.split(":", 1)[1].strip(), "warning"))

    def _finished(self, code: int, _status) -> None:
        from core.events import TrainingFailed

        self._read_stdout()
        self._read_stderr()
        if not self._finished_seen:  # it died without saying why (killed, crashed on start)
            error = next((line for line in reversed(self._tail) if line.startswith("error:")), "")
            self.push(TrainingFailed(error.removeprefix("error:").strip()
                                     or f"the training process ended with exit code {code}",
                                     "\n".join(self._tail)))
        if self.config_file is not None:
            self.config_file.unlink(missing_ok=True)
        self.ended.emit()

    def _error(self, error) -> None:
        if error == QProcess.FailedToStart:
            from core.events import TrainingFailed

            self.push(TrainingFailed(f"could not start {self.process.program()}: "
                                     f"{self.process.errorString()}"))
            self._finished_seen = True
            self.ended.emit()
