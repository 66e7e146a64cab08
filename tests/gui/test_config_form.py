"""The settings form: generated rows, validation messages next to fields, presets, Windows lock."""

from __future__ import annotations

import sys

import pytest
import torch

from core.config import StudioConfig, all_keys, fields_of
from gui.presets import PRESETS, load_preset
from gui.widgets.config_form import GROUPS, ConfigForm, group_of
from tests.gui.conftest import open_dataset, tiny_config


def test_every_setting_has_a_row_with_its_help_and_range(qtbot):
    form = ConfigForm(StudioConfig())
    qtbot.addWidget(form)
    assert set(form.bindings) == set(all_keys())
    assert list(form.groups) == list(GROUPS)
    assert group_of("train.num_workers") == "Hardware" and group_of("train.lr") == "Training"
    assert group_of("train.devices") == group_of("train.num_nodes") == "Hardware"
    size = form.bindings["data.image_size"]
    assert size.label.text() == "Image size (px)"
    assert "multiple of 32" in size.editor.toolTip() and "Range: 64 to 1024" in size.editor.toolTip()
    assert (size.editor.minimum(), size.editor.maximum(), size.editor.singleStep()) == (64, 1024, 32)
    variant = form.bindings["model.variant"].editor
    assert [variant.itemText(i) for i in range(variant.count())] == \
        list(fields_of("model")[0].metadata["choices"])
    assert form.is_valid()


def test_an_invalid_value_shows_its_message_and_disables_start(qtbot, window, small_demo):
    page = window.train_page
    open_dataset(qtbot, window, small_demo)
    page.form.set_config(tiny_config())
    assert page.start_button.isEnabled()

    size = page.form.bindings["data.image_size"]
    window.tabs.setCurrentWidget(page)
    epochs = page.form.bindings["train.epochs"].widget
    qtbot.waitUntil(lambda: epochs.isVisible())
    before = (epochs.mapTo(page, epochs.rect().topLeft()), page.memory.height())
    size.editor.setValue(100)
    # The message takes space kept for it: no field below moves, the memory panel keeps its size.
    assert (epochs.mapTo(page, epochs.rect().topLeft()), page.memory.height()) == before
    assert not size.message.isHidden()
    assert "not a multiple of 32" in size.message.text()
    assert not page.start_button.isEnabled()
    assert "not a multiple of 32" in page.start_button.toolTip()
    assert "not a multiple of 32" in page.why_label.text() and page.why_label.isVisible()
    size.editor.setValue(96)
    assert size.message.isHidden() and page.start_button.isEnabled()

    lr = page.form.bindings["train.lr"]
    lr.editor.clear()
    qtbot.keyClicks(lr.editor, "fast")
    assert "'fast' is not a number" in lr.message.text() and not page.start_button.isEnabled()
    lr.editor.clear()
    qtbot.keyClicks(lr.editor, "2e-4")
    assert lr.message.isHidden() and page.form.config().train.lr == pytest.approx(2e-4)

    fold = page.form.bindings["data.fold"]
    fold.editor.setValue(5)  # 3 folds: 0, 1, 2
    assert "must be below data.num_folds" in fold.message.text()
    assert not page.start_button.isEnabled()
    fold.editor.setValue(1)
    assert page.start_button.isEnabled()
    assert window.state.config.data.fold == 1  # the form writes through to the shared state


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_fill_the_form(qtbot, window, name):
    page = window.train_page
    page.preset_combo.setCurrentText(name)
    page.apply_preset(name)
    expected = load_preset(name)
    assert page.form.config().to_dict() == expected.to_dict()
    assert page.preset == name
    device = page.form.bindings["train.device"]
    if expected.train.device == "gpu" and not torch.cuda.is_available():
        assert "no CUDA GPU" in device.message.text()  # said before Start, not after
        assert "no CUDA GPU" in page.why_label.text()  # and next to Start
    else:
        assert device.message.isHidden()


def test_quick_cpu_preset_is_small():
    quick = load_preset("Quick (CPU)")
    assert quick.model.variant == "b0" and 128 <= quick.data.image_size <= 192
    assert quick.train.device == "cpu" and quick.train.batch_size == 8
    assert load_preset("8 GB GPU").model.variant == "b2"
    assert load_preset("Large GPU").model.variant in ("b4", "b5")


def test_windows_locks_loader_workers_at_zero(qtbot, monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    config = StudioConfig()
    config.train.num_workers = 4
    form = ConfigForm(config)
    qtbot.addWidget(form)
    workers = form.bindings["train.num_workers"]
    assert not workers.editor.isEnabled()
    assert workers.editor.value() == 0 and form.config().train.num_workers == 0
    assert "deadlock" in workers.editor.toolTip() and "Windows" in workers.editor.toolTip()
    assert form.is_valid()
    form.set_config(config)  # a preset or saved settings cannot unlock it
    assert form.config().train.num_workers == 0 and not workers.editor.isEnabled()
    form.set_editable(True)  # nor can the end of a run
    assert not workers.editor.isEnabled()


def test_the_wheel_scrolls_the_form_instead_of_changing_values(qtbot, window):
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    page = window.train_page
    window.tabs.setCurrentWidget(page)
    preset = page.preset
    epochs = page.form.bindings["train.epochs"].editor
    variant = page.form.bindings["model.variant"].editor
    qtbot.waitUntil(lambda: epochs.isVisible())

    def wheel(widget):
        center = QPointF(widget.rect().center())
        event = QWheelEvent(center, QPointF(widget.mapToGlobal(center.toPoint())), QPoint(0, 0),
                            QPoint(0, -120), Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase, False)
        QApplication.sendEvent(widget, event)

    value, choice = epochs.value(), variant.currentIndex()
    for widget in (epochs, variant, page.preset_combo):
        wheel(widget)
    assert (epochs.value(), variant.currentIndex(), page.preset) == (value, choice, preset)
    epochs.setFocus()  # once focused (clicked or tabbed into) the wheel is the field's
    qtbot.waitUntil(epochs.hasFocus)
    wheel(epochs)
    assert epochs.value() == value - 1
