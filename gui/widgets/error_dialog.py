"""Errors for people: a readable message, with the technical details one click away.

The dialog is window-modal but opened with ``open()``, not ``exec()``: nothing waits on it, so a
failure in a background task never stalls the event loop, and the window stays usable behind it.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget


def show_error(parent: QWidget | None, title: str, message: str, details: str = "") -> QMessageBox:
    box = QMessageBox(QMessageBox.Critical, title, message, QMessageBox.Ok, parent)
    box.setObjectName("errorDialog")
    box.setTextInteractionFlags(Qt.TextSelectableByMouse)
    if details:
        box.setDetailedText(details)  # adds the "Show Details…" button
    box.setAttribute(Qt.WA_DeleteOnClose)
    box.open()
    return box
