"""A coloured one-line notice: finished, stopped, failed, or an offer (the demo dataset)."""

from __future__ import annotations

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QWidget

KINDS = ("info", "success", "warning", "error")


class Banner(QFrame):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("banner")
        self.kind = ""
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        self.label = QLabel()
        self.label.setWordWrap(True)
        layout.addWidget(self.label, 1)
        self.actions = layout  # pages add their buttons after the text
        self.hide()

    def show_message(self, kind: str, text: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"banner kind must be one of {KINDS}")
        self.kind = kind
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.label.setText(text)
        self.show()

    def text(self) -> str:
        return self.label.text()
