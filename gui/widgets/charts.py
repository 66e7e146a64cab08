"""Live charts with pyqtgraph: training curves from session events, device readings once a second.

``TrainingCharts`` takes ``TrainingStep`` and ``ValidationResult`` events — live from a run, or rebuilt
from a run's metrics.csv — and redraws once per batch of events. ``CompareCharts`` overlays the
curves of several runs, one colour per run. ``DeviceCharts`` polls a ``core.monitor.DeviceMonitor``
every second and keeps the last five minutes.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Iterable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QPen
from PySide6.QtWidgets import QWidget

from core.data import ORGANS
from core.events import TrainingStep, ValidationResult
from core.export import ORGAN_COLORS
from core.monitor import DeviceMonitor, DeviceStats

REDRAW_MS = 250  # charts redraw ≤4×/s: a repaint of four antialiased plots costs ~10-20 ms of CPU
SMOOTHING = 0.9  # exponential moving average weight of the smoothed loss (≈ the last 10 steps)
DEVICE_WINDOW_S = 300
GIB = 2**30
RUN_COLOURS = ((0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233),
               (213, 94, 0), (120, 120, 120), (0, 0, 0))
"""One colour per compared run (Okabe–Ito, told apart with colour-blindness too); past eight runs
the colours repeat with dashed, then dotted lines."""
RUN_LINES = (Qt.SolidLine, Qt.DashLine, Qt.DotLine)


def _titled(title: str, entries: list[tuple[str, tuple]]) -> str:
    """A plot title that is also its legend (a legend inside the plot hides the curves)."""
    keys = " &nbsp;".join(f"<span style='color:rgb{colour}'>■</span>&nbsp;{name}"
                          for name, colour in entries)
    return f"{title} &nbsp; <span style='font-size:8pt'>{keys}</span>"


def run_colour(index: int) -> tuple[int, int, int]:
    return RUN_COLOURS[index % len(RUN_COLOURS)]


def run_pen(index: int, width: float = 2) -> QPen:
    style = RUN_LINES[(index // len(RUN_COLOURS)) % len(RUN_LINES)]
    return pg.mkPen(*run_colour(index), width=width, style=style)


class EpochAxis(pg.AxisItem):
    """An axis of whole numbers: epochs. pyqtgraph's own ticks on a short run fall on 1.5, 2.5, …,
    epochs that do not exist."""

    def tickValues(self, minVal, maxVal, size):  # noqa: N802 - pyqtgraph's name
        levels = []
        for spacing, values in super().tickValues(minVal, maxVal, size):
            whole = [float(round(v)) for v in values if abs(v - round(v)) < 1e-6]
            if whole:
                levels.append((max(spacing, 1.0), whole))
        return levels

    def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph's name
        return [str(round(v * scale)) for v in values]


class LossSmoother:
    """Exponential moving average of the loss (weight ``SMOOTHING``), unbiased at the start."""

    def __init__(self):
        self.average, self.count = 0.0, 0

    def add(self, loss: float) -> float:
        """The smoothed loss after ``loss``."""
        self.average = SMOOTHING * self.average + (1 - SMOOTHING) * loss
        self.count += 1
        return self.average / (1 - SMOOTHING ** self.count)


def _plot(layout: pg.GraphicsLayoutWidget, title: str, x_label: str, row: int, col: int):
    # No grid: pyqtgraph redraws grid lines with its axes on every range change, which doubled the
    # cost of a repaint while the x range grows with each step.
    axes = {"bottom": EpochAxis("bottom")} if x_label == "epoch" else None
    plot = layout.addPlot(row=row, col=col, title=title, axisItems=axes)
    plot.setLabel("bottom", x_label)
    plot.setClipToView(True)
    plot.setDownsampling(auto=True, mode="peak")
    plot.getAxis("left").setWidth(48)
    return plot


class _Series:
    """Growing x/y lists bound to one curve; ``redraw`` pushes them to the curve if they changed."""

    def __init__(self, curve: pg.PlotDataItem):
        self.curve, self.x, self.y = curve, [], []
        self.dirty = False

    def add(self, x: float, y: float) -> None:
        self.x.append(x)
        self.y.append(y)
        self.dirty = True

    def clear(self) -> None:
        self.x.clear()
        self.y.clear()
        self.curve.setData([], [])
        self.dirty = False

    def redraw(self) -> None:
        if self.dirty:
            self.curve.setData(np.asarray(self.x, float), np.asarray(self.y, float))
            self.dirty = False


class TrainingCharts(pg.GraphicsLayoutWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setMinimumHeight(320)
        self.loss_plot = _plot(self, "Loss", "step", 0, 0)
        self.dice_plot = _plot(self, "Validation", "epoch", 0, 1)
        self.lr_plot = _plot(self, "Learning rate", "step", 1, 0)
        self.speed_plot = _plot(self, "Images per second", "step", 1, 1)
        self.dice_plot.setYRange(0, 1)
        raw, smooth, val, mean = (150, 170, 215), (40, 80, 190), (240, 130, 20), (30, 30, 30)
        score, hausdorff = (204, 121, 167), (120, 120, 120)
        self.loss_plot.setTitle(_titled("Loss", [("train", raw), ("smoothed", smooth),
                                                 ("validation", val)]))
        self.dice_plot.setTitle(_titled("Validation", [
            *((o.replace("_", " "), ORGAN_COLORS[o]) for o in ORGANS), ("mean Dice", mean),
            ("Hausdorff", hausdorff), ("score", score)]))
        self.train_loss = _Series(self.loss_plot.plot(pen=pg.mkPen(*raw, 140)))
        self.smooth_loss = _Series(self.loss_plot.plot(pen=pg.mkPen(*smooth, width=2)))
        self.val_loss = _Series(self.loss_plot.plot(pen=pg.mkPen(*val, width=2), symbol="o",
                                                    symbolSize=6, symbolBrush=val))
        self.dice = {organ: _Series(self.dice_plot.plot(
            pen=pg.mkPen(*ORGAN_COLORS[organ], width=1.5), symbol="o", symbolSize=5,
            symbolBrush=ORGAN_COLORS[organ])) for organ in ORGANS}
        self.mean_dice = _Series(self.dice_plot.plot(pen=pg.mkPen(*mean, width=2.5), symbol="s",
                                                     symbolSize=6, symbolBrush=mean))
        self.hausdorff = _Series(self.dice_plot.plot(
            pen=pg.mkPen(*hausdorff, width=1.5, style=Qt.DashLine), symbol="t", symbolSize=6,
            symbolBrush=hausdorff))
        self.score = _Series(self.dice_plot.plot(pen=pg.mkPen(*score, width=3), symbol="d",
                                                 symbolSize=8, symbolBrush=score))
        self.lr = _Series(self.lr_plot.plot(pen=pg.mkPen(120, 80, 170, width=2)))
        self.speed = _Series(self.speed_plot.plot(pen=pg.mkPen(20, 140, 140, width=2)))
        self._smoother = LossSmoother()
        self._y_top: dict[pg.PlotItem, float] = {}
        self._redraw_timer = QTimer(self, singleShot=True, interval=REDRAW_MS, timeout=self.redraw)

    @property
    def series(self) -> list[_Series]:
        return [self.train_loss, self.smooth_loss, self.val_loss, *self.dice.values(),
                self.mean_dice, self.hausdorff, self.score, self.lr, self.speed]

    @property
    def step_plots(self) -> tuple[pg.PlotItem, ...]:
        return self.loss_plot, self.lr_plot, self.speed_plot

    def clear_data(self) -> None:
        for series in self.series:
            series.clear()
        self._smoother = LossSmoother()
        self._y_top.clear()
        for plot in (*self.step_plots, self.dice_plot):
            plot.enableAutoRange(x=True)

    def set_extent(self, total_steps: int, epochs: int) -> None:
        """Fix the x axes to the whole run. Besides showing how far the run is, it spares the axes
        a re-layout on every update: a repaint costs less than half as much."""
        for plot in self.step_plots:
            plot.setXRange(0, max(1, total_steps), padding=0.02)
        self.dice_plot.setXRange(0.5, max(1, epochs) + 0.5, padding=0)

    def redraw(self) -> None:
        """Push new points to the curves now (otherwise it happens within ``REDRAW_MS``)."""
        self._redraw_timer.stop()
        for series in self.series:
            series.redraw()
        self._grow_y_ranges()

    def _grow_y_ranges(self) -> None:
        """Y axes from 0 that only grow (by 25% steps): a falling loss keeps its scale, and the
        axes are laid out again only now and then instead of on every update."""
        for plot, series in ((self.loss_plot, (self.train_loss, self.val_loss)),
                             (self.lr_plot, (self.lr,)), (self.speed_plot, (self.speed,))):
            top = max((max(s.y) for s in series if s.y), default=0.0)
            if top > self._y_top.get(plot, 0.0) or top < 0.5 * self._y_top.get(plot, 0.0):
                self._y_top[plot] = top * 1.25 if top > 0 else 1.0
                plot.setYRange(0, self._y_top[plot], padding=0)

    def _schedule_redraw(self) -> None:
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    def add_steps(self, steps: Iterable[TrainingStep]) -> None:
        for step in steps:
            self.train_loss.add(step.step, step.loss)
            self.smooth_loss.add(step.step, self._smoother.add(step.loss))
            self.lr.add(step.step, step.lr)
            if step.images_per_sec > 0:
                self.speed.add(step.step, step.images_per_sec)
        self._schedule_redraw()

    def add_validations(self, results: Iterable[ValidationResult]) -> None:
        for result in results:
            m = result.metrics
            if "val_loss" in m:
                self.val_loss.add(result.step, m["val_loss"])
            for organ in ORGANS:
                if f"val_dice_{organ}" in m:
                    self.dice[organ].add(result.epoch + 1, m[f"val_dice_{organ}"])
            if "val_dice" in m:
                self.mean_dice.add(result.epoch + 1, m["val_dice"])
            if "val_hausdorff" in m:
                self.hausdorff.add(result.epoch + 1, m["val_hausdorff"])
            if "val_score" in m:
                self.score.add(result.epoch + 1, m["val_score"])
        self._schedule_redraw()


class CompareCharts(pg.GraphicsLayoutWidget):
    """The curves of several runs over each other: smoothed training loss by step, validation score
    and mean validation Dice by epoch; run ``i`` is drawn with ``run_pen(i)``."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setMinimumHeight(220)
        self.loss_plot = _plot(self, "Training loss (smoothed)", "step", 0, 0)
        self.score_plot = _plot(self, "Validation score", "epoch", 0, 1)
        self.dice_plot = _plot(self, "Validation Dice (mean)", "epoch", 0, 2)
        for plot in (self.score_plot, self.dice_plot):
            plot.setYRange(0, 1, padding=0.02)
        self.curves: dict[pg.PlotItem, list[pg.PlotDataItem]] = {
            plot: [] for plot in (self.loss_plot, self.score_plot, self.dice_plot)}

    def show_runs(self, runs: list[tuple[list[TrainingStep], list[ValidationResult]]]) -> None:
        """Draw each run's ``(steps, validations)``, in colour order."""
        for plot, curves in self.curves.items():
            for curve in curves:
                plot.removeItem(curve)
            curves.clear()
        for index, (steps, validations) in enumerate(runs):
            smoother = LossSmoother()
            self._add(self.loss_plot, index, [s.step for s in steps],
                      [smoother.add(s.loss) for s in steps], symbol=None)
            for plot, key in ((self.score_plot, "val_score"), (self.dice_plot, "val_dice")):
                points = [(v.epoch + 1, v.metrics[key]) for v in validations if key in v.metrics]
                self._add(plot, index, [x for x, _ in points], [y for _, y in points], symbol="o")
        epochs = max((v.epoch + 1 for _, validations in runs for v in validations), default=1)
        for plot in (self.score_plot, self.dice_plot):
            plot.setXRange(0.5, epochs + 0.5, padding=0)
        self.loss_plot.enableAutoRange()

    def _add(self, plot: pg.PlotItem, index: int, x: list, y: list, symbol: str | None) -> None:
        colour = run_colour(index)
        curve = plot.plot(np.asarray(x, float), np.asarray(y, float), pen=run_pen(index),
                          symbol=symbol, symbolSize=6, symbolBrush=colour, symbolPen=colour)
        self.curves[plot].append(curve)


# What each device curve shows, read from one DeviceStats (memory in GB of 2³⁰ bytes).
DEVICE_COLUMNS = {
    "cpu": lambda s: s.cpu_percent,
    "ram": lambda s: s.ram_used / GIB,
    "ram_total": lambda s: s.ram_total / GIB,
    "gpu_util": lambda s: s.gpu_util,
    "gpu_mem": lambda s: s.gpu_mem_used / GIB,
    "gpu_mem_total": lambda s: s.gpu_mem_total / GIB,
    "gpu_temp": lambda s: s.gpu_temp,
}


class DeviceCharts(pg.GraphicsLayoutWidget):
    """GPU utilisation, memory and temperature (and CPU %) — or CPU % and RAM without a GPU."""

    def __init__(self, monitor: DeviceMonitor | None = None, interval_ms: int = 1000,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.setMinimumHeight(150)
        self.monitor = monitor or DeviceMonitor()
        self.readings: deque[DeviceStats] = deque(maxlen=DEVICE_WINDOW_S * 1000 // interval_ms + 1)
        self.plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.gpu_mode = self.monitor.has_gpu
        if self.gpu_mode:
            self._add("gpu_util", f"{self.monitor.gpu_name or 'GPU'}: utilisation (%)", (0, 100))
            self._add("gpu_mem", "GPU memory (GB): used / total", None, total="gpu_mem_total")
            self._add("gpu_temp", "GPU temperature (°C)", None)
            self._add("cpu", "CPU (%)", (0, 100))
        else:
            self._add("cpu", "CPU (%) — no GPU found", (0, 100))
            self._add("ram", "RAM (GB): used / total", None, total="ram_total")
            self.setToolTip(self.monitor.gpu_reason)
        self.timer = QTimer(self, interval=interval_ms, timeout=self.sample)
        self.timer.start()
        self.sample()

    def _add(self, key: str, title: str, y_range, total: str | None = None) -> None:
        plot = _plot(self, title, "seconds ago", 0, len(self.plots))
        plot.titleLabel.setText(title, size="9pt")
        # Fixed ranges: the curves scroll, the axes stay (re-laying out axes every second cost more
        # than drawing the curves).
        plot.setXRange(-DEVICE_WINDOW_S, 0, padding=0.01)
        if y_range:
            plot.setYRange(*y_range, padding=0.02)
        self.plots[key] = plot
        self.curves[key] = plot.plot(pen=pg.mkPen(40, 120, 200, width=2))
        if total:  # the device's capacity as a dashed line above the used amount
            self.curves[total] = plot.plot(pen=pg.mkPen(150, 150, 150, width=1.5,
                                                        style=Qt.DashLine))

    def sample(self) -> None:
        reading = self.monitor.read()
        if not self.readings:  # memory axes end at the device's capacity
            if reading.gpu_mem_total and "gpu_mem" in self.plots:
                self.plots["gpu_mem"].setYRange(0, reading.gpu_mem_total / GIB, padding=0.02)
            if "ram" in self.plots:
                self.plots["ram"].setYRange(0, reading.ram_total / GIB, padding=0.02)
        self.readings.append(reading)
        self.redraw()

    def redraw(self) -> None:
        now = time.time()
        readings = [s for s in self.readings if s.has_gpu or not self.gpu_mode]
        x = np.array([s.time - now for s in readings], float)
        for key, curve in self.curves.items():
            curve.setData(x, np.array([DEVICE_COLUMNS[key](s) for s in readings], float))

    def stop(self) -> None:
        self.timer.stop()
        self.monitor.close()
