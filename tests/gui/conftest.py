"""GUI test fixtures: the themed QApplication, a main window with its own settings file, and a tiny
CPU training config (64 px, batch 8, 3 folds) so a run takes seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import StudioConfig, apply_overrides


@pytest.fixture(scope="session", autouse=True)
def themed_app(qapp):
    from gui.app import configure_application

    configure_application(qapp)
    return qapp


def tiny_config(*overrides: str) -> StudioConfig:
    return apply_overrides(StudioConfig(), [
        "data.image_size=64", "data.num_folds=3", "model.variant=b0", "train.batch_size=8",
        "train.epochs=2", "train.log_every_n_steps=2", "train.device=cpu", "train.precision=32",
        "train.tune_postprocess=false", *overrides])


@pytest.fixture
def settings_path(tmp_path) -> Path:
    return tmp_path / "settings.ini"


@pytest.fixture
def make_window(qtbot, settings_path):
    """Build main windows on a given settings file; each is closed (runs stopped) at the end."""
    from gui.main_window import MainWindow
    from gui.settings import StudioSettings

    windows = []

    def make(path: Path | None = None):
        window = MainWindow(StudioSettings(path or settings_path))
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        return window

    yield make
    for window in windows:
        if window.runner.is_active:
            window.runner.stop()
            window.runner.wait()
        window.data_page.shutdown()


@pytest.fixture
def window(make_window):
    return make_window()


def open_dataset(qtbot, window, folder: Path, timeout: int = 60_000) -> None:
    """Scan ``folder`` from the Data page and wait until it is the window's dataset."""
    window.data_page.open_dataset(folder)
    qtbot.waitUntil(lambda: window.state.index is not None and
                    Path(window.state.dataset_dir) == Path(folder), timeout=timeout)
    qtbot.waitUntil(lambda: not window.data_page.task.is_running, timeout=timeout)
