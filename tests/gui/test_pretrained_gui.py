"""The pretrained-weights setting: the checkpoints found on this machine by name, None, a typed
folder; Download… fetches one in the background and selects it. No network: the Hub is faked or
switched off, as in tests/test_pretrained.py."""

from __future__ import annotations

from PySide6.QtCore import Qt

from core.config import StudioConfig
from gui.widgets.config_form import ConfigForm, PretrainedBinding
from tests.test_pretrained import (COMMIT, FakeHub, _dead_endpoint, b0_weights,  # noqa: F401
                                   hf_cache, home, no_hub)


def _choose(qtbot, combo, text: str) -> None:
    """Open the list and click the item, as a user does."""
    combo.showPopup()
    view = combo.view()
    qtbot.waitUntil(view.isVisible)
    index = combo.findText(text)
    assert index >= 0, [combo.itemText(i) for i in range(combo.count())]
    rect = view.visualRect(view.model().index(index, 0))
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: not view.isVisible())


def _form(qtbot) -> tuple[ConfigForm, PretrainedBinding]:
    form = ConfigForm(StudioConfig())
    qtbot.addWidget(form)
    form.show()
    return form, form.bindings["model.pretrained"]


def test_the_form_offers_found_checkpoints_and_choosing_one_sets_the_folder(qtbot, hf_cache, home,
                                                                          tmp_path):
    form, binding = _form(qtbot)
    combo = binding.editor
    assert [combo.itemText(i) for i in range(combo.count())] == [
        PretrainedBinding.NONE_LABEL, "nvidia/mit-b0 (b0)"]
    assert combo.currentText() == PretrainedBinding.NONE_LABEL
    _choose(qtbot, combo, "nvidia/mit-b0 (b0)")
    snapshot = hf_cache / "models--nvidia--mit-b0" / "snapshots" / COMMIT
    assert form.config().model.pretrained == str(snapshot) and form.is_valid()
    assert str(snapshot) in combo.itemData(combo.currentIndex(), Qt.ToolTipRole)

    _choose(qtbot, combo, PretrainedBinding.NONE_LABEL)
    assert form.config().model.pretrained == ""
    combo.lineEdit().clear()
    qtbot.keyClicks(combo.lineEdit(), str(tmp_path / "elsewhere"))  # a typed folder still works
    assert form.config().model.pretrained == str(tmp_path / "elsewhere")
    assert "does not exist" in binding.message.text()
    binding.show_value(str(snapshot))  # a config naming a found folder shows its name
    assert combo.currentText() == "nvidia/mit-b0 (b0)"


def test_download_fetches_in_the_background_and_selects_the_new_checkpoint(
        qtbot, monkeypatch, home, b0_weights, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "no cache"))
    FakeHub({"config.json": b0_weights / "config.json",
             "model.safetensors": b0_weights / "model.safetensors"}, chunk=1 << 20,
            pause=0.01).install(monkeypatch)
    form, binding = _form(qtbot)
    form.bindings["model.variant"].editor.setCurrentText("b1")
    qtbot.mouseClick(binding.download, Qt.LeftButton)
    dialog = binding.download_dialog
    assert dialog.repo.text() == "nvidia/mit-b1"  # the variant the settings name
    dialog.repo.setText("nvidia/mit-b0")
    with qtbot.waitSignal(dialog.accepted, timeout=10_000):
        qtbot.mouseClick(dialog.download_button, Qt.LeftButton)
        assert not dialog.download_button.isEnabled() and dialog.bar.isVisible()
    assert binding.download_dialog is None  # closed (and deleted)
    target = home / "pretrained" / "nvidia--mit-b0"
    assert form.config().model.pretrained == str(target)
    assert binding.editor.currentText() == "nvidia/mit-b0 (b0)"
    assert "model.variant is b1" in binding.message.text()  # the validation says what to change


def test_a_failed_download_keeps_the_dialog_open_with_the_manual_steps(qtbot, no_hub, home):
    form, binding = _form(qtbot)
    binding.open_download_dialog()
    dialog = binding.download_dialog
    qtbot.mouseClick(dialog.download_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.download_button.isEnabled(), timeout=10_000)
    assert dialog.isVisible() and "cannot download nvidia/mit-b0" in dialog.status.text()
    assert "to get it by hand" in dialog.status.text()
    assert form.config().model.pretrained == ""
    dialog.reject()


def test_cancel_stops_the_download_and_closes_the_dialog(qtbot, monkeypatch, home, b0_weights):
    hub = FakeHub({"config.json": b0_weights / "config.json",
                   "model.safetensors": b0_weights / "model.safetensors"}, chunk=1 << 14,
                  pause=0.02).install(monkeypatch)
    form, binding = _form(qtbot)
    binding.open_download_dialog()
    dialog = binding.download_dialog
    qtbot.mouseClick(dialog.download_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: "model.safetensors" in dialog.status.text(), timeout=10_000)
    with qtbot.waitSignal(dialog.rejected, timeout=15_000):
        qtbot.mouseClick(dialog.buttons.button(dialog.buttons.StandardButton.Cancel),
                         Qt.LeftButton)
        assert dialog.isVisible() and dialog.status.text() == "Cancelling …"
    assert hub.stopped and not any((home / "pretrained").iterdir())
    assert form.config().model.pretrained == ""
