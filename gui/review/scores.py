"""The Review page's numbers: Dice per organ (slice and case-day), Hausdorff and score, the worst
slices (click to jump) and Dice along the slices (click to jump). Slices are named by the number in
their file name everywhere (the plot's axis, the list, the slider's label)."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QLabel, QListWidget,
                               QListWidgetItem, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from core.data import ORGANS
from gui.review.overlay import organ_color
from gui.review.panel import swatch
from core.review import CaseDayResult, slice_dice
from gui.review.viewer_state import ViewerState

COLUMNS = ("Organ", "Dice slice", "Dice case-day", "Hausdorff")
NO_TRUTH = "No ground truth in this dataset: predictions only, nothing to score."
NOTHING_SHOWN = "Choose a run and a case-day, then press Predict & show."


def fmt(value: float) -> str:
    """A score with 3 decimals, or "—" for a skipped one (NaN)."""
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


class ScoresPanel(QWidget):
    """Summary, table and worst slices; ``plot`` (Dice along the slice index) is left for the page
    to place, under the slice slider it follows."""

    def __init__(self, state: ViewerState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.result: CaseDayResult | None = None

        self.summary = QLabel(NOTHING_SHOWN)
        self.summary.setWordWrap(True)
        self.table = QTableWidget(len(ORGANS), len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.NoSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeToContents)
        for k, organ in enumerate(ORGANS):
            item = QTableWidgetItem(swatch(organ_color(organ)), organ.replace("_", " "))
            self.table.setItem(k, 0, item)
            for column in range(1, len(COLUMNS)):
                self.table.setItem(k, column, QTableWidgetItem("—"))
        self.table.setFixedHeight(self.table.verticalHeader().length() +
                                  self.table.horizontalHeader().height() + 4)

        self.worst = QListWidget()
        self.worst.setMinimumHeight(120)
        self.worst.setToolTip("Slices by their lowest organ Dice; click one to show it")
        self.worst.itemClicked.connect(lambda item: self.state.set_slice(item.data(Qt.UserRole)))
        self.worst.currentItemChanged.connect(
            lambda item, _old: item is not None and self.state.set_slice(item.data(Qt.UserRole)))

        self.plot = pg.PlotWidget()
        self.plot.setBackground(None)
        self.plot.setFixedHeight(150)
        self.plot.setLabel("bottom", "slice")
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setXRange(1, 2, padding=0.02)
        self.plot.setLabel("left", "Dice")
        self.plot.setYRange(0, 1.05)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.getPlotItem().setMenuEnabled(False)
        self.curves = [self.plot.plot([], [], pen=pg.mkPen(organ_color(o), width=2),
                                      symbol="o", symbolSize=4, symbolBrush=organ_color(o),
                                      symbolPen=None, connect="finite")
                       for o in ORGANS]
        self.cursor = pg.InfiniteLine(angle=90, pen=pg.mkPen("#888", style=Qt.DashLine))
        self.plot.addItem(self.cursor)
        self.plot.scene().sigMouseClicked.connect(self._plot_clicked)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary)
        layout.addWidget(self.table)
        layout.addWidget(QLabel("Worst slices (lowest organ Dice first)"))
        layout.addWidget(self.worst, 1)
        state.subscribe(self._on_state)

    def set_result(self, result: CaseDayResult | None) -> None:
        self.result = result
        self.worst.blockSignals(True)
        self.worst.clear()
        score = None if result is None else result.score
        if score is None:
            self.summary.setText(NO_TRUTH if result is not None else NOTHING_SHOWN)
            for curve in self.curves:
                curve.setData([], [])
        else:
            self.summary.setText(
                f"<b>{result.case_day}</b> · Dice <b>{fmt(score.dice)}</b> · Hausdorff "
                f"<b>{fmt(score.hausdorff)}</b> · score <b>{fmt(score.score)}</b>")
            for index, dice, organ in result.worst_slices():
                record = result.records[index]
                item = QListWidgetItem(swatch(organ_color(ORGANS[organ])),
                                       f"slice {record.slice_num:4d} · Dice {dice:.3f} "
                                       f"({ORGANS[organ].replace('_', ' ')})")
                item.setData(Qt.UserRole, index)
                self.worst.addItem(item)
            x = np.array([r.slice_num for r in result.records], dtype=float)
            for k, curve in enumerate(self.curves):
                values = score.dice_per_slice[:, k]
                scored = ~np.isnan(values)  # an organ skipped on every slice has no line
                curve.setData(x if scored.any() else [], values if scored.any() else [])
            self.plot.setXRange(x[0], max(x[-1], x[0] + 1), padding=0.02)
        self.worst.blockSignals(False)
        self._update_numbers()

    def _on_state(self, what: str) -> None:
        if what in ("slice", "data"):
            self._update_numbers()

    def _update_numbers(self) -> None:
        result = self.result
        if result is None or self.state.depth != result.depth:
            return
        i = self.state.slice_index
        self.cursor.setValue(result.records[i].slice_num)
        per_slice = slice_dice(result, i)
        for k in range(len(ORGANS)):
            if result.score is None:
                values = ("—", "—", "—")
            else:
                values = (fmt(per_slice[k]), fmt(result.score.organ_dice(k)),
                          fmt(float(result.score.hausdorff_per_organ[k])))
            for column, text in enumerate(values, start=1):
                self.table.item(k, column).setText(text)

    def _plot_clicked(self, event) -> None:
        if self.result is None:
            return
        point = self.plot.getPlotItem().vb.mapSceneToView(event.scenePos())
        numbers = np.array([r.slice_num for r in self.result.records])
        self.state.set_slice(int(np.abs(numbers - point.x()).argmin()))  # the nearest slice
