"""The fold summary of the Review page: the chosen run's validation case-days with their scores in a
sortable table, worst first; a click opens the case-day.

Only validation case-days are scored (the run never trained on them); a training case-day's score
says how well the model remembers, not how well it works.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QLabel, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from core.data import ORGANS
from core.metrics import CaseDayScore
from gui.review.scores import fmt

COLUMNS = ("Case-day", *(f"Dice {o.replace('_', ' ')}" for o in ORGANS), "Dice", "Hausdorff",
           "Score")


class _Number(QTableWidgetItem):
    """A cell that sorts by its value (NaN, shown as "—", last)."""

    def __init__(self, value: float):
        super().__init__(fmt(value))
        self.value = value
        self.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)

    def __lt__(self, other) -> bool:
        if isinstance(other, _Number):
            mine = math.inf if math.isnan(self.value) else self.value
            theirs = math.inf if math.isnan(other.value) else other.value
            return mine < theirs
        return super().__lt__(other)


class FoldSummary(QWidget):
    open_case_day = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.scores: list[CaseDayScore] = []
        self.title = QLabel("Fold summary: press <i>Score the validation case-days</i>.")
        self.title.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setSortingEnabled(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.setMinimumHeight(140)
        self.table.setToolTip("Validation case-days of the run's fold, worst score first; click a "
                              "header to sort, a row to open the case-day")
        self.table.cellClicked.connect(self._clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.table, 1)

    def clear(self, message: str = "") -> None:
        self.scores = []
        self.table.setRowCount(0)
        self.title.setText(message or "Fold summary: press <i>Score the validation case-days</i>.")

    def set_scores(self, run_name: str, scores: list[CaseDayScore]) -> None:
        self.scores = list(scores)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(scores))
        for row, score in enumerate(sorted(scores, key=lambda s: s.score)):
            name = QTableWidgetItem(score.case_day)
            name.setData(Qt.UserRole, score.case_day)
            self.table.setItem(row, 0, name)
            values = [score.organ_dice(k) for k in range(len(ORGANS))]
            values += [score.dice, score.hausdorff, score.score]
            for column, value in enumerate(values, start=1):
                self.table.setItem(row, column, _Number(float(value)))
        self.table.setSortingEnabled(True)
        self.table.sortItems(len(COLUMNS) - 1, Qt.AscendingOrder)
        if scores:
            mean = float(np.mean([s.score for s in scores]))
            self.title.setText(f"<b>{run_name}</b>: {len(scores)} validation case-days, mean "
                               f"case-day score <b>{mean:.3f}</b> (worst first)")
        else:
            self.title.setText(f"<b>{run_name}</b>: no validation case-day in this dataset.")

    def case_days(self) -> list[str]:
        """The case-days in the table's current order."""
        return [self.table.item(row, 0).data(Qt.UserRole) for row in range(self.table.rowCount())]

    def _clicked(self, row: int, _column: int) -> None:
        self.open_case_day.emit(self.table.item(row, 0).data(Qt.UserRole))
