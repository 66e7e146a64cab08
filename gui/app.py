"""Start the desktop app: ``run_app()`` builds the QApplication, theme and main window and runs it."""

from __future__ import annotations

import logging
import sys
import traceback

import pyqtgraph as pg
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


def run_app(argv: list[str] | None = None) -> int:
    from core.logfiles import setup_logging

    setup_logging()
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv[:1])
    configure_application(app)
    from gui.main_window import MainWindow  # after the QApplication: pages build widgets on import

    window = MainWindow()
    _install_excepthook(window)
    window.show()
    return app.exec()
