"""Start the desktop app: ``run_app()`` builds the QApplication, theme and main window and runs it."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from gui.resources import icon_path, theme_path

log = logging.getLogger(__name__)


def configure_application(app: QApplication) -> None:
    """Style, theme, icon and chart colours; shared by the app, tests and screenshot scripts."""
    app.setApplicationName("SegFormer Studio")
    app.setOrganizationName("SegFormerStudio")
    app.setStyle("Fusion")
    app.setWindowIcon(QIcon(str(icon_path())))
    try:
        app.setStyleSheet(theme_path().read_text(encoding="utf-8"))
    except OSError:
        log.warning("theme file %s is missing; using the plain style", theme_path())
    import pyqtgraph as pg

    pg.setConfigOptions(antialias=True, background="w", foreground="#333")


def _install_excepthook(window) -> None:
    """An unexpected error in a slot shows a dialog and is logged; the app keeps running."""
    from gui.widgets.error_dialog import show_error

    def hook(kind, value, tb):
        details = "".join(traceback.format_exception(kind, value, tb))
        log.error("unexpected error\n%s", details)
        show_error(window, "Unexpected error", f"{kind.__name__}: {value}\n\nThe app keeps running; "
                   "the details below are also in the log file.", details)

    sys.excepthook = hook


def run_app(argv: list[str] | None = None, lazy: bool = True) -> int:
    """The app's event loop. ``lazy``: paint the window first, load the engine in the background
    (``MainWindow``); ``False`` builds every page before the first paint (the startup baseline)."""
    from core.logfiles import setup_logging

    setup_logging()
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv[:1])
    configure_application(app)
    from gui.main_window import MainWindow  # after the QApplication: pages build widgets on import

    window = MainWindow(lazy=lazy)
    _install_excepthook(window)
    probe = os.environ.get(STARTUP_PROBE_ENV)
    if probe:
        StartupProbe(window, Path(probe))
    window.show()
    return app.exec()


STARTUP_PROBE_ENV = "SEGFORMER_STUDIO_STARTUP_PROBE"


class StartupProbe(QObject):
    """For ``benchmarks/startup.py``: append ``painted TIME TORCH`` when the window first paints
    (TIME: ``time.time()``, TORCH: whether torch was imported by then) and ``engine TIME GAP`` when
    the engine pages are built (GAP: the longest the event loop was blocked meanwhile, in seconds —
    how usable the window was while the engine loaded), then close the window. Set by
    ``SEGFORMER_STUDIO_STARTUP_PROBE=FILE``."""

    def __init__(self, window, path: Path):
        super().__init__(window)
        self.window, self.path, self.painted = window, path, False
        self.last_tick, self.longest_gap = time.perf_counter(), 0.0
        self.ticker = QTimer(self)
        self.ticker.timeout.connect(self._tick)
        self.ticker.start(20)
        window.tabs.tabBar().installEventFilter(self)
        window.engine_ready.connect(self._engine_ready)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.painted:
            self.longest_gap = max(self.longest_gap, now - self.last_tick)
        self.last_tick = now

    def _write(self, line: str) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.Paint and not self.painted:
            self.painted = True
            self._write(f"painted {time.time():.3f} {int('torch' in sys.modules)}")
            if self.window.engine_loaded:  # built at once (not lazy): ready when painted
                self._engine_ready()
        return False

    def _engine_ready(self) -> None:
        self._write(f"engine {time.time():.3f} {self.longest_gap:.3f}")
        QTimer.singleShot(0, self.window.close)
