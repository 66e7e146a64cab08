"""The self-test's window stage: build the main window once off screen, show it, close it.

Importing this module registers the stage with ``core.selftest`` (``main.py`` does, before it runs the
self-test), so the engine's self-test never imports the GUI itself.
"""

from __future__ import annotations

import os
import sys
import time

from core import selftest


def stage_gui(_ctx) -> str:
    # Offscreen before PySide6 is imported: no window ever appears, and no display is needed.
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from gui.app import QApplication, configure_application
    from gui.resources import icon_path, resources_dir, theme_path

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "SegFormerStudio"])

    # The bundled resources (sys._MEIPASS/resources in the packaged program) must be there.
    missing = [str(p) for p in (icon_path(), theme_path()) if not p.is_file()]
    if missing:
        raise RuntimeError(f"resources missing from {resources_dir()}: {', '.join(missing)}")
    configure_application(app)
    from gui.main_window import MainWindow  # after the QApplication, as gui.app does

    window = MainWindow()
    window.show()
    deadline = time.perf_counter() + 1.0
    while time.perf_counter() < deadline:  # let queued work (timers, first paint) run
        app.processEvents()
        time.sleep(0.02)
    if not window.isVisible():
        raise RuntimeError("the main window did not become visible")
    title = window.windowTitle()
    t0 = time.perf_counter()
    window.close()  # closeEvent waits for the window's background work (e.g. the memory estimate)
    app.processEvents()
    closing = time.perf_counter() - t0
    window.deleteLater()
    app.processEvents()
    return (f"{type(window).__name__} '{title}' shown and closed in {closing:.1f} s "
            f"({app.platformName()})")


selftest.register_stage("gui", stage_gui)
