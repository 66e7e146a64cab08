"""Settings forms generated from the config dataclasses, one small binding per field.

Each ``FieldBinding`` ties one dotted key of ``StudioConfig`` to one editor and returns a (label,
widget) row; label, tooltip, range and choices come from the field's metadata in ``core.config``, and
the widget shows the field's validation message right under the editor. ``ConfigForm`` lays the rows out
in the groups Data, Model, Training and Hardware and keeps a ``StudioConfig`` in step with them.
"""

from __future__ import annotations

import dataclasses
import os

from PySide6.QtCore import QObject, QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QSizePolicy, QVBoxLayout,
                               QWidget)

from core.config import (SECTIONS, StudioConfig, fields_of, get_value, pinned_value, set_value,
                         validate)
from core.devices import compile_problem, gpu_available, resolve_placement
from core.errors import ConfigError
from core.pretrained import find_pretrained, pretrained_dir
from gui.widgets.guarded import GuardedComboBox, GuardedSpinBox
from gui.widgets.pretrained_dialog import PretrainedDownloadDialog

GROUPS = ("Data", "Model", "Training", "Hardware")
HARDWARE_KEYS = ("train.device", "train.devices", "train.num_nodes", "train.precision",
                 "train.num_workers", "train.channels_last", "train.compile")


def group_of(key: str) -> str:
    if key in HARDWARE_KEYS:
        return "Hardware"
    return {"data": "Data", "model": "Model", "train": "Training"}[key.partition(".")[0]]


def _short(key: str, message: str) -> str:
    """Messages from core start with the key; next to the field that is redundant."""
    return message[len(key) + 1:].strip() if message.startswith(key + ":") else message


class FieldBinding(QObject):
    """Binds one config key to one editor. Subclasses make the editor and convert its value."""

    edited = Signal(str)

    def __init__(self, key: str, field: dataclasses.Field):
        super().__init__()
        self.key = key
        self.meta = field.metadata
        self.locked = False
        self.label = QLabel(self.meta["label"])
        self.editor = self._make_editor()
        self.editor.setObjectName(key)
        # The message's line is kept whether shown or not: a message appearing must not move the
        # fields below it (the next click would land on the wrong one). One line; all of it in the
        # tooltip.
        self.message = QLabel()
        self.message.setObjectName("fieldMessage")
        self.message.setWordWrap(False)
        self.message.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        policy = self.message.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.message.setSizePolicy(policy)
        self.message.hide()
        self.widget = QWidget()
        column = QVBoxLayout(self.widget)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addWidget(self._editor_row())
        column.addWidget(self.message)
        self.set_tooltip(self._help_text())

    # -- what subclasses provide ---------------------------------------------------------------
    def _make_editor(self) -> QWidget:
        raise NotImplementedError

    def value(self):
        """The editor's value, raw (``core.config.coerce_value`` turns it into the field's type)."""
        raise NotImplementedError

    def _show(self, value) -> None:
        raise NotImplementedError

    def _editor_row(self) -> QWidget:
        return self.editor

    # -- shared ---------------------------------------------------------------------------------
    def _help_text(self) -> str:
        text = self.meta["help"]
        if "min" in self.meta and "max" in self.meta:
            text += f"\nRange: {self.meta['min']:g} to {self.meta['max']:g}"
            if "step" in self.meta:
                text += f", in steps of {self.meta['step']}"
        return f"{text}\nSetting: {self.key}"

    def row(self) -> tuple[QLabel, QWidget]:
        return self.label, self.widget

    def show_value(self, value) -> None:
        with QSignalBlocker(self.editor):
            self._show(value)

    def set_tooltip(self, text: str) -> None:
        self.label.setToolTip(text)
        self.editor.setToolTip(text)

    def set_problem(self, message: str | None) -> None:
        self.message.setText(_short(self.key, message) if message else "")
        self.message.setToolTip(_short(self.key, message) if message else "")
        self.message.setVisible(bool(message))
        self.editor.setProperty("invalid", bool(message))
        self.editor.style().unpolish(self.editor)
        self.editor.style().polish(self.editor)

    def set_enabled(self, enabled: bool) -> None:
        self.editor.setEnabled(enabled and not self.locked)

    def lock(self, value, reason: str) -> None:
        """Pin the field to ``value`` and explain why in its tooltip (e.g. workers on Windows)."""
        self.show_value(value)
        self.locked = True
        self.locked_value = value
        self.editor.setEnabled(False)
        self.set_tooltip(reason)

    def _changed(self, *_args) -> None:
        self.edited.emit(self.key)


class IntBinding(FieldBinding):
    def _make_editor(self) -> QWidget:
        box = GuardedSpinBox()
        box.setRange(int(self.meta.get("min", -2**31)), int(self.meta.get("max", 2**31 - 1)))
        box.setSingleStep(int(self.meta.get("step", 1)))
        box.setKeyboardTracking(False)  # validate the typed number, not each keystroke
        box.valueChanged.connect(self._changed)
        return box

    def value(self):
        return self.editor.value()

    def _show(self, value) -> None:
        self.editor.setValue(int(value))


class FloatBinding(FieldBinding):
    """A text box, not a spin box: learning rates read best as 3e-4 and span many decades."""

    def _make_editor(self) -> QWidget:
        edit = QLineEdit()
        edit.textEdited.connect(self._changed)
        return edit

    def value(self):
        return self.editor.text().strip()

    def _show(self, value) -> None:
        self.editor.setText(f"{float(value):g}")


class ChoiceBinding(FieldBinding):
    def _make_editor(self) -> QWidget:
        combo = GuardedComboBox()
        combo.addItems([str(c) for c in self.meta["choices"]])
        combo.currentIndexChanged.connect(self._changed)
        return combo

    def value(self):
        return self.editor.currentText()

    def _show(self, value) -> None:
        self.editor.setCurrentText(str(value))


class BoolBinding(FieldBinding):
    def _make_editor(self) -> QWidget:
        box = QCheckBox()
        box.toggled.connect(self._changed)
        return box

    def value(self):
        return self.editor.isChecked()

    def _show(self, value) -> None:
        self.editor.setChecked(bool(value))


class TextBinding(FieldBinding):
    def _make_editor(self) -> QWidget:
        edit = QLineEdit()
        edit.textEdited.connect(self._changed)
        return edit

    def value(self):
        return self.editor.text().strip()

    def _show(self, value) -> None:
        self.editor.setText(str(value))


class PretrainedCombo(GuardedComboBox):
    """An editable combo that asks for fresh items each time its list opens (a checkpoint
    downloaded on the command line meanwhile shows up)."""

    def __init__(self, refresh, parent=None):
        super().__init__(parent)
        self._refresh = refresh

    def showPopup(self) -> None:  # noqa: N802 - Qt's name
        self._refresh()
        super().showPopup()


class PretrainedBinding(FieldBinding):
    """The pretrained weights: the checkpoints found on this machine by name ("nvidia/mit-b2
    (b2)", ``core.pretrained.find_pretrained``), "None", or any folder typed or browsed; a
    Download… button fetches one (``PretrainedDownloadDialog``) and selects it."""

    NONE_LABEL = "None (random initialisation)"

    def __init__(self, key: str, field: dataclasses.Field):
        # The variant the Download… dialog proposes; ConfigForm points it at its config.
        self.config_variant = lambda: "b0"
        self.download_dialog = None
        super().__init__(key, field)

    def _make_editor(self) -> QWidget:
        combo = PretrainedCombo(self._refresh)
        combo.setEditable(True)
        combo.setInsertPolicy(QComboBox.NoInsert)
        combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(20)
        combo.lineEdit().setPlaceholderText("a folder with config.json and the weights")
        self._fill(combo)
        combo.activated.connect(self._changed)  # the user chose an item (not a refill)
        combo.lineEdit().textEdited.connect(self._changed)
        return combo

    def _fill(self, combo: QComboBox) -> None:
        combo.clear()
        combo.addItem(self.NONE_LABEL, "")
        for checkpoint in find_pretrained():
            combo.addItem(checkpoint.label, str(checkpoint.folder))
            combo.setItemData(combo.count() - 1, f"{checkpoint.folder}\n({checkpoint.source})",
                              Qt.ToolTipRole)

    def _refresh(self) -> None:
        value = self.value()
        with QSignalBlocker(self.editor):
            self._fill(self.editor)
            self._show(value)

    def value(self):
        text = self.editor.currentText().strip()
        index = self.editor.findText(text, Qt.MatchExactly)
        return self.editor.itemData(index) if index >= 0 else text

    def _show(self, value) -> None:
        value = str(value)
        index = 0 if not value else next((i for i in range(1, self.editor.count())
                                          if _same_folder(self.editor.itemData(i), value)), -1)
        if index >= 0:
            self.editor.setCurrentIndex(index)
        else:  # a folder typed or browsed that is no found checkpoint: show its path
            self.editor.setEditText(value)

    def _editor_row(self) -> QWidget:
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.editor, 1)
        self.browse = QPushButton("Browse…")
        self.browse.setToolTip("Pick a folder with config.json and model.safetensors")
        self.browse.clicked.connect(self._browse)
        layout.addWidget(self.browse)
        self.download = QPushButton("Download…")
        self.download.setToolTip("Download a pretrained encoder from the Hugging Face Hub")
        self.download.clicked.connect(self.open_download_dialog)
        layout.addWidget(self.download)
        return row

    def _browse(self) -> None:
        start = self.value() or str(pretrained_dir())
        folder = QFileDialog.getExistingDirectory(self.widget, self.meta["label"], start)
        if folder:
            self._show(folder)
            self._changed()

    def open_download_dialog(self) -> None:
        dialog = PretrainedDownloadDialog(f"nvidia/mit-{self.config_variant()}", self.widget)
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._downloaded(dialog.checkpoint))
        dialog.finished.connect(lambda _result: setattr(self, "download_dialog", None))
        self.download_dialog = dialog
        dialog.open()

    def _downloaded(self, checkpoint) -> None:
        self._refresh()
        self.show_value(str(checkpoint.folder))
        self._changed()

    def set_enabled(self, enabled: bool) -> None:
        super().set_enabled(enabled)
        self.browse.setEnabled(enabled)
        self.download.setEnabled(enabled)


def _same_folder(a: str, b: str) -> bool:
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def binding_for(key: str, field: dataclasses.Field) -> FieldBinding:
    kind = type(field.default)
    if "choices" in field.metadata:
        return ChoiceBinding(key, field)
    if kind is bool:
        return BoolBinding(key, field)
    if kind is int:
        return IntBinding(key, field)
    if kind is float:
        return FloatBinding(key, field)
    if key == "model.pretrained":
        return PretrainedBinding(key, field)
    return TextBinding(key, field)


def environment_problems(cfg: StudioConfig) -> dict[str, str]:
    """Settings this machine cannot run (a GPU chosen without CUDA), keyed by setting."""
    try:
        resolve_placement(cfg.train.device, cfg.train.precision)
    except ConfigError as exc:
        return {exc.key if exc.key in HARDWARE_KEYS else "train.device": str(exc)}
    return {}


class ConfigForm(QWidget):
    """All settings in four groups. ``config()`` is the current (possibly invalid) config;
    ``problems()`` maps keys to messages; ``validity_changed`` fires when that turns empty or not."""

    config_changed = Signal(object)
    validity_changed = Signal(bool)

    def __init__(self, config: StudioConfig | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self._config = (config or StudioConfig()).copy()
        self._input_errors: dict[str, str] = {}
        self._problems: dict[str, str] = {}
        self.bindings: dict[str, FieldBinding] = {}
        self.groups: dict[str, QGroupBox] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        forms = {}
        for name in GROUPS:
            box = QGroupBox(name)
            forms[name] = QFormLayout(box)
            forms[name].setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
            self.groups[name] = box
            layout.addWidget(box)
        for section in SECTIONS:
            for field in fields_of(section):
                key = f"{section}.{field.name}"
                binding = binding_for(key, field)
                binding.edited.connect(self._on_edited)
                forms[group_of(key)].addRow(*binding.row())
                self.bindings[key] = binding
        for key, binding in self.bindings.items():
            pin = pinned_value(key)  # e.g. workers on Windows: one rule, in core.config
            if pin is not None:
                binding.lock(*pin)
        self.bindings["model.pretrained"].config_variant = lambda: self._config.model.variant
        no_compiler = compile_problem("cpu")
        if no_compiler and not gpu_available():  # on a GPU machine the device decides
            self.bindings["train.compile"].lock(False, no_compiler)
        self.set_config(self._config)

    def config(self) -> StudioConfig:
        return self._config.copy()

    def set_config(self, config: StudioConfig) -> None:
        cfg = config.copy()
        for key, binding in self.bindings.items():
            if binding.locked:
                set_value(cfg, key, binding.locked_value)
        self._config = cfg
        self._input_errors.clear()
        for key, binding in self.bindings.items():
            binding.show_value(get_value(cfg, key))
        self._revalidate()
        self.config_changed.emit(self.config())

    def problems(self) -> dict[str, str]:
        return dict(self._problems)

    def is_valid(self) -> bool:
        return not self._problems

    def set_editable(self, editable: bool) -> None:
        for binding in self.bindings.values():
            binding.set_enabled(editable)

    def _on_edited(self, key: str) -> None:
        try:
            set_value(self._config, key, self.bindings[key].value())
            self._input_errors.pop(key, None)
        except ConfigError as exc:
            self._input_errors[key] = str(exc)
        self._revalidate()
        self.config_changed.emit(self.config())

    def _revalidate(self) -> None:
        was_valid = not self._problems
        problems = validate(self._config)
        problems.update(self._input_errors)  # the value typed last, not the one still in the config
        if not problems:
            problems = environment_problems(self._config)
        self._problems = problems
        for key, binding in self.bindings.items():
            binding.set_problem(problems.get(key))
        if was_valid != (not problems):
            self.validity_changed.emit(not problems)
