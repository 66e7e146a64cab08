"""Several runs side by side: their curves over each other, one colour per run, and their facts and
settings in a table with one column per run, where the rows whose values differ stand out.

Which settings differ is ``core.runs.settings_table``'s answer; this widget only draws it."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QHBoxLayout, QHeaderView, QLabel,
                               QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from core.config import StudioConfig, field_metadata
from core.errors import ConfigError
from core.events import TrainingStep, ValidationResult
from core.runs import SettingRow, flatten_settings, settings_table
from gui.widgets.charts import CompareCharts, run_colour

DIFFERS_BACKGROUND = QColor(255, 236, 179)


@dataclass
class ComparedRun:
    """One run as the comparison shows it."""

    title: str
    folder: str
    facts: dict[str, str]
    """Rows above the settings (status, best score, steps), already in words."""
    config: StudioConfig | None
    steps: list[TrainingStep] = field(default_factory=list)
    validations: list[ValidationResult] = field(default_factory=list)


def format_value(value) -> str:
    """A setting's value in the table: a dash where the run has none, floats without noise."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _setting_help(key: str) -> str:
    try:
        meta = field_metadata(key)
    except ConfigError:  # a fact (status, best score), not a setting
        return ""
    return f"{meta['label']}: {meta['help']}"


def _swatch(colour: tuple[int, int, int]) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(*colour))
    return QIcon(pixmap)


class RunCompare(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.rows: list[SettingRow] = []
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.charts = CompareCharts()
        self.only_differences = QCheckBox("Only differences")
        self.only_differences.setToolTip("Hide the rows where every run has the same value")
        self.only_differences.toggled.connect(self._apply_filter)
        self.summary = QLabel()
        self.summary.setObjectName("hint")
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.NoSelection)
        self.table.setWordWrap(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)

        controls = QHBoxLayout()
        controls.addWidget(self.only_differences)
        controls.addWidget(self.summary, 1)
        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addLayout(controls)
        lower_layout.addWidget(self.table, 1)
        splitter = QSplitter(Qt.Vertical)
        splitter.addWidget(self.charts)
        splitter.addWidget(lower)
        splitter.setSizes([300, 300])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.legend)
        layout.addWidget(splitter, 1)

    def show_runs(self, runs: list[ComparedRun]) -> None:
        self.legend.setText("Comparing " + " &nbsp; ".join(
            f"<span style='color:rgb{run_colour(i)}; font-size:14pt'>■</span>&nbsp;"
            f"<b>{escape(run.title)}</b>" for i, run in enumerate(runs)))
        self.charts.show_runs([(run.steps, run.validations) for run in runs])
        self.rows = settings_table([{**run.facts, **flatten_settings(run.config)}
                                    for run in runs])
        self.table.clear()
        self.table.setColumnCount(len(runs))
        self.table.setRowCount(len(self.rows))
        for col, run in enumerate(runs):
            header = QTableWidgetItem(_swatch(run_colour(col)), run.title)
            header.setToolTip(run.folder)
            self.table.setHorizontalHeaderItem(col, header)
        bold = QFont(self.table.font())
        bold.setBold(True)
        for row, setting in enumerate(self.rows):
            key_item = QTableWidgetItem(setting.key)
            key_item.setToolTip(_setting_help(setting.key))
            if setting.differs:
                key_item.setFont(bold)
            self.table.setVerticalHeaderItem(row, key_item)
            for col, value in enumerate(setting.values):
                item = QTableWidgetItem(format_value(value))
                if setting.differs:
                    item.setFont(bold)
                    item.setBackground(DIFFERS_BACKGROUND)
                self.table.setItem(row, col, item)
        differing = sum(r.differs for r in self.rows)
        self.summary.setText(f"{differing} of {len(self.rows)} rows differ (highlighted)")
        self._apply_filter()

    def _apply_filter(self) -> None:
        hide_same = self.only_differences.isChecked()
        for row, setting in enumerate(self.rows):
            self.table.setRowHidden(row, hide_same and not setting.differs)
