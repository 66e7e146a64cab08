"""Background tasks and the event throttle."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from core.errors import DatasetError
from core.events import Progress
from gui.workers import BackgroundTask, EventThrottle


def test_throttle_delivers_everything_in_order_at_most_ten_times_a_second(qtbot):
    throttle = EventThrottle(100)
    batches = []
    throttle.delivered.connect(batches.append)

    def produce():
        for i in range(3000):
            throttle.push(i)
            if i % 100 == 0:
                time.sleep(0.01)

    started = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    qtbot.waitUntil(lambda: sum(len(b) for b in batches) == 3000, timeout=20_000)
    elapsed = time.perf_counter() - started
    producer.join()
    assert [e for b in batches for e in b] == list(range(3000))
    assert len(batches) <= elapsed / 0.1 + 2
    assert len(batches) < 100  # coalesced: far fewer deliveries than events


def test_throttle_does_not_hold_back_the_last_events(qtbot):
    throttle = EventThrottle(100)
    batches = []
    throttle.delivered.connect(batches.append)
    throttle.push("only")
    qtbot.waitUntil(lambda: batches == [["only"]], timeout=2_000)


def test_background_task_reports_progress_and_result(qtbot):
    seen_threads = []

    def work(progress, cancel):
        seen_threads.append(threading.current_thread())
        for i in range(5):
            progress(Progress("demo", i + 1, 5))
        return "result"

    task = BackgroundTask(work)
    progress = []
    task.progress.connect(progress.append)
    with qtbot.waitSignal(task.done, timeout=10_000):
        with qtbot.waitSignal(task.succeeded, timeout=10_000) as result:
            task.start()
    assert result.args == ["result"]
    assert seen_threads[0] is not threading.main_thread()
    assert progress[-1].done == 5  # the last progress always comes through
    assert not task.is_running


def test_background_task_failure_and_cancel(qtbot):
    def broken(progress, cancel):
        raise DatasetError("train.csv row 3: bad")

    task = BackgroundTask(broken)
    with qtbot.waitSignal(task.failed, timeout=10_000) as failed:
        task.start()
    assert failed.args[0] == "train.csv row 3: bad" and "Traceback" in failed.args[1]
    task.wait()

    release = threading.Event()

    def slow(progress, cancel):
        release.wait(5)
        if cancel():
            from core.errors import CancelledError

            raise CancelledError("cancelled")
        return "done"

    task = BackgroundTask(slow)
    with qtbot.waitSignal(task.cancelled, timeout=10_000):
        task.start()
        task.cancel()
        release.set()
    task.wait()


def test_a_user_error_in_a_task_logs_one_quiet_line_and_a_bug_its_traceback(qtbot, caplog):
    """A non-dataset folder is an ordinary error: no "WARNING … Traceback" on the terminal (the
    console shows WARNING and above); an unexpected exception keeps its traceback for the log."""
    def user_error(progress, cancel):
        raise DatasetError("/tmp/photos is not a dataset: no train.csv")

    def bug(progress, cancel):
        raise ZeroDivisionError("division by zero")

    caplog.set_level(logging.DEBUG, logger="gui.workers")
    for fn in (user_error, bug):
        task = BackgroundTask(fn)
        with qtbot.waitSignal(task.failed, timeout=10_000):
            task.start()
        task.wait()
    quiet, loud = [r for r in caplog.records if r.name == "gui.workers"]
    assert quiet.levelno < logging.WARNING and quiet.exc_info is None
    assert "not a dataset" in quiet.getMessage()
    assert loud.levelno == logging.WARNING and loud.exc_info is not None


@pytest.mark.parametrize("kind", ["unexpected"])
def test_unexpected_errors_are_described(kind):
    from gui.workers import describe_error

    try:
        raise ValueError("boom")
    except ValueError as exc:
        message, details = describe_error(exc)
    assert message == "ValueError: boom" and "Traceback" in details


def test_signals_do_not_exhaust_reference_counts():
    """PySide6 6.12 on Python 3.11 drops a reference to True on each emit() (and to None on each
    void call); without gui.refcount_fix the interpreter aborts after a few thousand."""
    import subprocess
    import sys

    code = ("import gui\n"
            "from PySide6.QtCore import QObject, Signal\n"
            "class Source(QObject):\n"
            "    changed = Signal()\n"
            "source = Source()\n"
            "for _ in range(200_000):\n"
            "    source.changed.emit()\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
