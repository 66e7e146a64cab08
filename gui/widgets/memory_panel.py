"""The memory panel: the estimated peak GPU memory for the current settings as a stacked bar against
the device, with "Measure" and "Fit batch size" on a real GPU.

Estimates are computed on a background thread a quarter second after the last change (usually in
well under a millisecond; the first time for an unusual model, its terms are measured once, which
takes up to a minute), and only the newest settings are estimated.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from core.config import StudioConfig
from core.memory import (fit_batch_size, gpu_actions_available, measure_peak_memory,
                         needs_measuring)
from gui.format import human_bytes
from gui.memory_estimate import PanelEstimate, estimate_memory
from gui.workers import BackgroundTask

PART_COLOURS = {
    "weights": "#4c78a8", "gradients": "#72b7b2", "optimizer_state": "#54a24b",
    "activations": "#f58518", "workspace": "#b279a2", "cuda_context": "#9d755d",
}
PART_NAMES = {"optimizer_state": "optimizer state", "cuda_context": "CUDA context"}
GRADIENTS_NOTE = ("Gradients 0 B: at the peak (the end of the forward pass) no gradient exists yet; "
                  "they are allocated during the backward pass as the activations are freed, and "
                  "released after each optimiser step, so they never add to the peak.")


class MemoryBar(QWidget):
    """Stacked parts of the estimate, scaled to the device's total (a red end when it overflows)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.estimate: PanelEstimate | None = None
        self.setMinimumHeight(22)

    def set_estimate(self, estimate: PanelEstimate | None) -> None:
        self.estimate = estimate
        self.update()

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        p.setPen(QColor("#888"))
        p.setBrush(self.palette().base())
        p.drawRect(rect)
        est = self.estimate
        if est is None or est.total <= 0:
            return
        scale = rect.width() / max(est.total, est.device_total)
        x = rect.left()
        p.setPen(Qt.NoPen)
        for name, size in est.parts.items():
            width = size * scale
            p.setBrush(QColor(PART_COLOURS.get(name, "#bab0ac")))
            p.drawRect(QRectF(x, rect.top() + 1, width, rect.height() - 1))
            x += width
        if not est.fits:  # the part beyond the device's memory
            end = rect.left() + est.device_total * scale
            p.setBrush(QColor(220, 50, 47, 110))
            p.drawRect(QRectF(end, rect.top(), rect.right() - end, rect.height()))


class MemoryPanel(QGroupBox):
    batch_size_found = Signal(int, int)  # batch size, gradient accumulation (from "Fit batch size")

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Memory", parent)
        self.estimate: PanelEstimate | None = None
        self.current: StudioConfig | None = None
        self._pending: StudioConfig | None = None
        self._task: BackgroundTask | None = None
        self._gpu_task: BackgroundTask | None = None
        self._training = False
        self._debounce = QTimer(self, singleShot=True, interval=250, timeout=self._start_estimate)

        self.summary = QLabel("Estimating…")
        self.summary.setObjectName("memorySummary")
        self.summary.setWordWrap(True)
        self.bar = MemoryBar()
        self.parts = QLabel()
        self.parts.setWordWrap(True)
        self.parts.setTextFormat(Qt.RichText)
        self.note = QLabel()
        self.note.setObjectName("hint")
        self.note.setWordWrap(True)
        self.measure_button = QPushButton("Measure on GPU")
        self.measure_button.clicked.connect(self.measure)
        self.fit_button = QPushButton("Fit batch size")
        self.fit_button.clicked.connect(self.fit)
        self.gpu_result = QLabel()
        self.gpu_result.setWordWrap(True)
        self.gpu_result.hide()
        buttons = QHBoxLayout()
        buttons.addWidget(self.measure_button)
        buttons.addWidget(self.fit_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        for widget in (self.summary, self.bar, self.parts, self.note):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        layout.addWidget(self.gpu_result)
        self.gpu_available, self.gpu_reason = gpu_actions_available()
        self._update_gpu_buttons()

    # -- the estimate -------------------------------------------------------------------------------
    def set_config(self, config: StudioConfig) -> None:
        self._pending = config.copy()
        self._debounce.start()

    def _start_estimate(self) -> None:
        if self._task is not None and self._task.is_running:
            return  # _on_done starts the next one with the newest settings
        config, self._pending = self._pending, None
        if config is None:
            return
        self.current = config
        try:
            slow = needs_measuring(config)
        except Exception:  # noqa: BLE001 - the estimate itself will say what is wrong
            slow = False
        if slow:
            self.summary.setText("Estimating… this model's memory terms are measured once on the CPU "
                                 "(up to a minute); later estimates are instant.")
        self._task = BackgroundTask(lambda _progress, _cancel: estimate_memory(config),
                                    "memory-estimate", self)
        self._task.succeeded.connect(self.show_estimate)
        self._task.failed.connect(self._show_failure)
        self._task.done.connect(self._on_done)
        self._task.start()

    def _on_done(self) -> None:
        if self._pending is not None:
            self._start_estimate()

    def _hold_height(self) -> None:
        """Never shrink: the form under the panel must not move when an estimate fails (a click
        meant for one field would land on another)."""
        self.setMinimumHeight(max(self.minimumHeight(), self.sizeHint().height()))

    def _show_failure(self, message: str, _details: str) -> None:
        self._hold_height()
        self.estimate = None
        self.bar.set_estimate(None)
        self.summary.setText(f"No estimate: {message}")
        self.parts.clear()
        self.note.clear()

    def show_estimate(self, est: PanelEstimate) -> None:
        self.estimate = est
        self.bar.set_estimate(est)
        verdict = "fits" if est.fits else "does NOT fit"
        self.summary.setText(f"<b>Estimated peak: {human_bytes(est.total)}</b> of "
                             f"{human_bytes(est.device_total)} on {est.device_name} — {verdict} "
                             f"({est.params / 1e6:.1f} M parameters)")
        self.summary.setProperty("fits", est.fits)
        self.parts.setText(" &nbsp; ".join(
            f"<span style='color:{PART_COLOURS.get(name, '#bab0ac')}'>■</span>&nbsp;"
            f"{PART_NAMES.get(name, name).replace(' ', '&nbsp;')}&nbsp;"
            f"{human_bytes(size).replace(' ', '&nbsp;')}" for name, size in est.parts.items()))
        notes = list(est.notes)
        if est.parts.get("gradients", 1) == 0:
            notes.append(GRADIENTS_NOTE)
        self.note.setText("\n".join(notes))
        self.note.setVisible(bool(notes))
        self.parts.setToolTip(GRADIENTS_NOTE if est.parts.get("gradients", 1) == 0 else "")
        self._hold_height()

    # -- measurements on a real GPU -----------------------------------------------------------------
    def set_training(self, training: bool) -> None:
        """The GPU is busy while a run trains: no measurements then."""
        self._training = training
        self._update_gpu_buttons()

    def _update_gpu_buttons(self) -> None:
        busy = self._training or (self._gpu_task is not None and self._gpu_task.is_running)
        for button in (self.measure_button, self.fit_button):
            button.setEnabled(self.gpu_available and not busy)
        self.measure_button.setToolTip(
            ("Run two real training steps with these settings and read the peak memory. "
             if self.gpu_available else "") + self.gpu_reason)
        self.fit_button.setToolTip(
            ("Find the largest batch size whose real training steps fit in 90% of the free GPU "
             "memory. " if self.gpu_available else "") + self.gpu_reason)

    def measure(self) -> None:
        self._run_gpu_task("Measuring…", lambda _p, _c, cfg=self.current: measure_peak_memory(cfg),
                           self._measured)

    def fit(self) -> None:
        self._run_gpu_task("Trying batch sizes…", lambda _p, _c, cfg=self.current:
                           fit_batch_size(cfg), self._fitted)

    def _run_gpu_task(self, message: str, fn, on_success) -> None:
        if self.current is None or (self._gpu_task is not None and self._gpu_task.is_running):
            return
        self.gpu_result.setText(message)
        self.gpu_result.show()
        self._gpu_task = BackgroundTask(fn, "gpu-memory", self)
        self._gpu_task.succeeded.connect(on_success)
        self._gpu_task.failed.connect(lambda message, _details: self.gpu_result.setText(
            f"Failed: {message}"))
        self._gpu_task.done.connect(self._update_gpu_buttons)
        self._gpu_task.start()
        self._update_gpu_buttons()

    def _measured(self, measured) -> None:
        text = (f"Measured on {measured.device_name}: {human_bytes(measured.max_reserved_bytes)} "
                f"reserved ({human_bytes(measured.max_allocated_bytes)} allocated) at batch "
                f"{measured.batch_size}; the estimate said "
                f"{human_bytes(measured.estimate.total_bytes)}.")
        warning = measured.warning()
        self.gpu_result.setText(text + (f"\n{warning}" if warning else ""))

    def _fitted(self, result) -> None:
        if result.batch_size == 0:
            self.gpu_result.setText(f"Not even one image fits on {result.device_name}: lower the "
                                    "image size or choose a smaller variant.")
            return
        self.gpu_result.setText(f"Largest batch that fits on {result.device_name}: "
                                f"{result.batch_size} (set in the form).")
        self.batch_size_found.emit(result.batch_size, result.accumulate_grad_batches)

    def wait(self) -> None:
        """Block until running estimates and measurements end (the window is closing)."""
        self._debounce.stop()
        for task in (self._task, self._gpu_task):
            if task is not None:
                task.wait()
