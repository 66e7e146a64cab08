"""The Review page's *Edit truth* panel: brush and eraser on the axial slice, one organ at a time.

The widget holds controls only; the masks and their history are a ``core.editing.MaskEditor``, the
file a ``core.data.corrections.Corrections`` (the open dataset's, in the user data folder). Every
finished stroke (and every fill, take, undo, redo) is saved at once, atomically: closing the window
or a crash loses nothing.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QPushButton, QRadioButton, QSpinBox)

from core.data import ORGANS

MAX_BRUSH = 40


class EditPanel(QGroupBox):
    """Controls of editing; ``changed`` asks the page to apply an action by name."""

    action = Signal(str)

    def __init__(self, parent=None):
        super().__init__("Edit truth", parent)
        self.edit_box = QCheckBox("Edit (D)")
        self.edit_box.setToolTip("Paint the true masks of the shown slice: left-drag with the brush "
                                 "or the eraser. Saved as you go to your corrections file; the "
                                 "dataset is never written.")
        self.organ_box = QComboBox()
        for organ in ORGANS:
            self.organ_box.addItem(organ.replace("_", " "), organ)
        self.organ_box.setToolTip("The organ being edited (1/2/3 while editing)")
        self.brush = QRadioButton("Brush (B)")
        self.eraser = QRadioButton("Eraser (X)")
        self.brush.setChecked(True)
        self.tools = QButtonGroup(self)
        self.tools.addButton(self.brush)
        self.tools.addButton(self.eraser)
        self.size_box = QSpinBox()
        self.size_box.setRange(0, MAX_BRUSH)
        self.size_box.setValue(4)
        self.size_box.setSuffix(" px radius")
        self.size_box.setToolTip("Brush size ([ and ]); 0 paints single pixels")
        self.buttons = {}
        for name, text, tip in (
                ("fill", "Fill outlines", "Fill what the organ's outlines enclose on this slice"),
                ("take_slice", "Prediction → truth", "This organ's prediction on this slice "
                 "becomes its truth"),
                ("undo", "Undo", "Ctrl+Z (per slice)"), ("redo", "Redo", "Ctrl+Shift+Z"),
                ("reviewed", "Reviewed (V)", "Mark the slice as looked at and accepted "
                 "(again: unmark)")):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda _checked=False, name=name: self.action.emit(name))
            self.buttons[name] = button
        self.status = QLabel("")
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        tools = QHBoxLayout()
        tools.addWidget(self.brush)
        tools.addWidget(self.eraser)
        row1, row2 = QHBoxLayout(), QHBoxLayout()
        for name in ("fill", "take_slice", "reviewed"):
            row1.addWidget(self.buttons[name])
        for name in ("undo", "redo"):
            row2.addWidget(self.buttons[name])
        layout = QFormLayout(self)
        layout.addRow(self.edit_box, self.organ_box)
        layout.addRow(tools)
        layout.addRow("Size", self.size_box)
        layout.addRow(row1)
        layout.addRow(row2)
        layout.addRow(self.status)
        self.edit_box.toggled.connect(lambda _on: self._enable())
        self._enable()

    @property
    def editing(self) -> bool:
        return self.edit_box.isChecked() and self.edit_box.isEnabled()

    @property
    def organ(self) -> int:
        return self.organ_box.currentIndex()

    @property
    def erasing(self) -> bool:
        return self.eraser.isChecked()

    @property
    def radius(self) -> float:
        return float(self.size_box.value())

    def _enable(self) -> None:
        on = self.edit_box.isChecked()
        for widget in (self.organ_box, self.brush, self.eraser, self.size_box,
                       *(b for name, b in self.buttons.items() if name != "reviewed")):
            widget.setEnabled(on)  # Reviewed (V) works while looking, too: the page enables it
