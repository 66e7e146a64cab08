"""Spin boxes and combo boxes that take the mouse wheel only when they have the keyboard focus.

In a scrolled form a plain spin box under the pointer swallows the wheel meant for the page and
changes its value (Epochs 20 → 22, a preset flipping to Custom without the user noticing). These
take focus by click or Tab only, and pass the wheel on to the scroll area until then.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QSpinBox


class _WheelWhenFocused:
    def _guard(self) -> None:
        self.setFocusPolicy(Qt.StrongFocus)  # the wheel alone does not give the focus

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt's name
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()  # the parent (the scroll area) scrolls instead


class GuardedSpinBox(_WheelWhenFocused, QSpinBox):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._guard()


class GuardedDoubleSpinBox(_WheelWhenFocused, QDoubleSpinBox):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._guard()


class GuardedComboBox(_WheelWhenFocused, QComboBox):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._guard()
