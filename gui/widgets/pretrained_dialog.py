"""The Download… dialog of the pretrained-weights setting: a Hugging Face model id, a progress
bar, Cancel. The download (``core.pretrained.download_pretrained``) runs as a ``BackgroundTask``; the
dialog is accepted with ``checkpoint`` set once the folder is in place, and stays open on a failure
with the message (and the steps to do it by hand) selectable for copying.
"""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit,
                               QProgressBar, QVBoxLayout, QWidget)

from core.pretrained import PretrainedCheckpoint, download_pretrained, pretrained_dir
from gui.workers import BackgroundTask

_PERMILLE = 1000  # the bar's range: byte counts of a B5 (330 MB) would do, a permille always does


class PretrainedDownloadDialog(QDialog):
    def __init__(self, repo_id: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Download pretrained weights")
        self.setObjectName("pretrainedDownloadDialog")
        self.checkpoint: PretrainedCheckpoint | None = None
        self.task: BackgroundTask | None = None
        self._closing = False
        layout = QVBoxLayout(self)
        intro = QLabel("Fetches config.json and the weights of a Hugging Face model into "
                       f"{pretrained_dir()}. nvidia/mit-b0 … nvidia/mit-b5 are the SegFormer "
                       "encoders pretrained on ImageNet.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.repo = QLineEdit(repo_id)
        self.repo.setObjectName("repoId")
        self.repo.setPlaceholderText("ORG/NAME, e.g. nvidia/mit-b0")
        form.addRow("Model id", self.repo)
        layout.addLayout(form)
        self.bar = QProgressBar()
        self.bar.setRange(0, _PERMILLE)
        self.bar.hide()
        layout.addWidget(self.bar)
        self.status = QLabel()
        self.status.setObjectName("downloadStatus")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.status)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Cancel)
        self.download_button = self.buttons.addButton("Download", QDialogButtonBox.AcceptRole)
        self.buttons.accepted.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.resize(520, self.sizeHint().height())
        QCoreApplication.instance().aboutToQuit.connect(self._stop_for_quit)

    def start(self) -> None:
        repo_id = self.repo.text().strip()
        self.task = BackgroundTask(lambda progress, cancel: download_pretrained(
            repo_id, progress, cancel), "pretrained-download", self)
        self.task.progress.connect(self._on_progress)
        self.task.succeeded.connect(self._on_succeeded)
        self.task.failed.connect(self._on_failed)
        self.task.cancelled.connect(lambda: self.status.setText("Download cancelled."))
        self.task.done.connect(self._on_done)
        self.repo.setEnabled(False)
        self.download_button.setEnabled(False)
        self.bar.setRange(0, 0)  # busy until the Hub says how large the files are
        self.bar.show()
        self.status.setText(f"Asking the Hugging Face Hub for {repo_id} …")
        self.task.start()

    def _on_progress(self, event) -> None:
        if event.total and not self._closing:
            self.bar.setRange(0, _PERMILLE)
            self.bar.setValue(event.done * _PERMILLE // event.total)
            self.status.setText(f"{event.message}: {event.done / 1e6:.1f} of "
                                f"{event.total / 1e6:.1f} MB")

    def _on_succeeded(self, checkpoint: PretrainedCheckpoint) -> None:
        self.checkpoint = checkpoint
        self.status.setText(f"{checkpoint.name} ({checkpoint.variant}) is in {checkpoint.folder}.")

    def _on_failed(self, message: str, _details: str) -> None:
        self.status.setText(message)

    def _on_done(self) -> None:
        if self.checkpoint is not None:
            self.accept()
        elif self._closing:
            super().reject()
        else:
            self.bar.hide()
            self.repo.setEnabled(True)
            self.download_button.setEnabled(True)

    def reject(self) -> None:
        """Cancel, Esc or the window's close button: stop a running download first (its partial
        folder is removed), then close."""
        if self.task is not None and self.task.is_running:
            self._closing = True
            self.task.cancel()
            self.status.setText("Cancelling …")
            return
        super().reject()

    def _stop_for_quit(self) -> None:
        """The app quits with a download running: stop it before its thread is destroyed."""
        if self.task is not None and self.task.is_running:
            self.task.cancel()
            self.task.wait(15_000)
