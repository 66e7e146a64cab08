"""The window: title, icon, pages; the first-start offer; later starts reopen dataset and settings."""

from __future__ import annotations

from pathlib import Path

from gui.presets import default_preset, load_preset
from tests.gui.conftest import open_dataset


def test_window_opens_with_its_pages(window):
    assert window.windowTitle() == "SegFormer Studio"
    assert not window.windowIcon().isNull()
    assert [window.tabs.tabText(i) for i in range(window.tabs.count())] == \
        ["Data", "Train", "Review", "Runs"]


def test_first_start_offers_the_demo_and_a_preset(window):
    assert window.first_start
    assert not window.data_page.offer.isHidden()
    assert window.train_page.preset == default_preset()
    assert window.state.config.to_dict() == load_preset(default_preset()).to_dict()
    assert not window.train_page.start_button.isEnabled()  # no dataset yet
    assert "Data page" in window.train_page.start_button.toolTip()


def test_later_start_reopens_the_last_dataset_and_settings(qtbot, make_window, small_demo):
    first = make_window()
    open_dataset(qtbot, first, small_demo)
    first.train_page.form.bindings["train.batch_size"].editor.setValue(6)
    assert first.train_page.preset == "Custom"
    first.close()

    second = make_window()
    assert not second.first_start
    assert second.data_page.offer.isHidden()
    qtbot.waitUntil(lambda: second.state.index is not None, timeout=60_000)
    assert Path(second.state.dataset_dir) == Path(small_demo)
    assert second.state.config.train.batch_size == 6
    assert second.train_page.form.bindings["train.batch_size"].editor.value() == 6
    assert second.train_page.preset == "Custom"


def test_the_window_paints_before_the_engine_and_builds_its_pages_when_it_has_loaded(
        qtbot, settings_path, small_demo, monkeypatch):
    import threading

    import gui.main_window
    from gui.main_window import MainWindow
    from gui.pages.review_page import ReviewPage
    from gui.pages.runs_page import RunsPage
    from gui.pages.train_page import TrainPage
    from gui.settings import StudioSettings

    # Torch is already imported in this process: hold the background load until the test says so.
    release = threading.Event()
    real_import = gui.main_window._import_engine
    monkeypatch.setattr(gui.main_window, "_import_engine",
                        lambda progress, cancel: (release.wait(60), real_import(progress, cancel)))
    window = MainWindow(StudioSettings(settings_path), lazy=True)
    qtbot.addWidget(window)
    window.show()
    # At once: the Data page is there and usable, the engine pages say they are loading.
    assert window.tabs.widget(0) is window.data_page and window.data_page.demo_button.isEnabled()
    assert not window.engine_loaded and window.train_page is None
    assert all("Loading" in window.tabs.widget(i).text() for i in (1, 2, 3))
    # A dataset opens meanwhile, and a preview clicked then opens Review once it exists.
    open_dataset(qtbot, window, small_demo)
    record = window.state.index.slices[0]
    window.data_page.review_requested.emit(record.case_day, record.slice_num)
    assert window.tabs.currentIndex() == 2 and not window.engine_loaded
    with qtbot.waitSignal(window.engine_ready, timeout=120_000):
        release.set()
    assert [type(window.tabs.widget(i)) for i in range(4)][1:] == [TrainPage, ReviewPage,
                                                                    RunsPage]
    assert [window.tabs.tabText(i) for i in range(4)] == ["Data", "Train", "Review", "Runs"]
    assert window.tabs.currentWidget() is window.review_page
    assert window.review_page.selected_case_day() == record.case_day
    assert window.train_page.preset == default_preset()  # the first start's preset, chosen late
    window.close()


def test_the_app_paints_its_window_before_importing_torch(tmp_path):
    """The real entry point in a new process: the probe records the first paint with torch not yet
    imported, then the engine pages (``benchmarks/startup.py`` times the same probe)."""
    import os
    import subprocess
    import sys

    probe = tmp_path / "probe.txt"
    env = dict(os.environ, SEGFORMER_STUDIO_HOME=str(tmp_path / "home"),
               SEGFORMER_STUDIO_STARTUP_PROBE=str(probe), QT_QPA_PLATFORM="offscreen")
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "main.py"], cwd=root, env=env, check=True, timeout=600,
                   capture_output=True)
    lines = probe.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["painted", "engine"]
    assert lines[0].split()[2] == "0"  # torch was not imported before the first paint
    assert float(lines[1].split()[1]) >= float(lines[0].split()[1])
