"""Progress of a training run: the current epoch, the whole run with its ETA, and what it is doing."""

from __future__ import annotations

from PySide6.QtWidgets import QFormLayout, QLabel, QProgressBar, QWidget

from core.events import Progress, TrainingStarted, TrainingStep
from gui.format import human_duration

PREPARING = {"scan": "Checking the dataset", "cache": "Building the cache"}


class RunProgress(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QFormLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.status = QLabel("Idle")
        self.epoch_bar = QProgressBar()
        self.run_bar = QProgressBar()
        for bar in (self.epoch_bar, self.run_bar):
            bar.setTextVisible(True)
        layout.addRow("Status", self.status)
        layout.addRow("Epoch", self.epoch_bar)
        layout.addRow("Run", self.run_bar)
        self.started: TrainingStarted | None = None
        self.reset()

    def reset(self) -> None:
        self.started = None
        for bar in (self.epoch_bar, self.run_bar):
            bar.setRange(0, 1)
            bar.setValue(0)
            bar.setFormat("–")

    def show_status(self, text: str) -> None:
        self.status.setText(text)

    def on_ended(self, text: str) -> None:
        """The run has ended (done, stopped, failed): no ETA any more, the bars keep where it got."""
        self.status.setText(text)
        if self.started is not None:
            self.run_bar.setFormat(f"step %v / %m — {text.lower()}")
        self.started = None

    def on_preparing(self, event: Progress) -> None:
        """Before the first step: the scan and cache build report through the run bar."""
        if self.started is not None:
            return
        self.run_bar.setRange(0, max(1, event.total))
        self.run_bar.setValue(event.done)
        self.run_bar.setFormat(f"{PREPARING.get(event.task, event.task)}: %v / %m")
        self.status.setText(f"{PREPARING.get(event.task, event.task)}…")

    def on_started(self, event: TrainingStarted) -> None:
        self.started = event
        self.epoch_bar.setRange(0, event.steps_per_epoch)
        self.epoch_bar.setValue(0)
        self.epoch_bar.setFormat(f"epoch 1 / {event.epochs}")
        self.run_bar.setRange(0, max(1, event.total_steps))
        self.run_bar.setValue(event.start_step)
        self.run_bar.setFormat("step %v / %m")
        self.status.setText(f"Training on {event.device.upper()}, precision {event.precision}")

    def on_step(self, step: TrainingStep) -> None:
        if self.started is None:
            return
        per_epoch = self.started.steps_per_epoch
        in_epoch = step.step - step.epoch * per_epoch
        self.epoch_bar.setValue(max(0, min(per_epoch, in_epoch)))
        self.epoch_bar.setFormat(f"epoch {step.epoch + 1} / {self.started.epochs}: step %v / %m")
        self.run_bar.setValue(min(step.step, self.run_bar.maximum()))
        self.run_bar.setFormat(f"step %v / %m — {step.images_per_sec:.1f} images/s — "
                               f"ETA {human_duration(step.eta_seconds)}")
