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
