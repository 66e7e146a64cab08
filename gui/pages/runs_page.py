"""Runs page: every run in the runs folder with its settings, best score, status and date; open one to
redraw its charts from metrics.csv, resume a stopped one, or delete one (after confirmation).

Every fact about a run comes from ``core.runs.RunFolder``; this page only draws them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QUrl, Qt, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QMessageBox,
                               QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from core import paths
from core.config import StudioConfig
from core.errors import StudioError
from core.runs import RunFolder, RunInfo, config_summary, list_runs
from gui.training_runner import TrainingRunner
from gui.widgets.charts import TrainingCharts
from gui.widgets.error_dialog import show_error

COLUMNS = ("Run", "Status", "Best score", "Settings", "Step", "Created")


@dataclass
class RunRow:
    """What the table shows of one run, read once per refresh."""

    folder: RunFolder
    info: RunInfo
    status: str
    config: StudioConfig | None
    resumable: bool

    @classmethod
    def read(cls, folder: RunFolder) -> "RunRow":
        info, config = folder.info(), folder.config_or_none()
        status = folder.status(info)
        return cls(folder, info, status, config, folder.resumable(status, config))

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def best(self) -> str:
        info = self.info
        if info.best_score is None:
            return "–"
        return f"{info.best_score:.3f} ({info.monitor.removeprefix('val_')})"


class RunsPage(QWidget):
    resume_requested = Signal(Path)

    def __init__(self, runner: TrainingRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.runner = runner
        self.runs: list[RunRow] = []
        self.open_run: RunRow | None = None

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.Stretch)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _item: self.open_selected())

        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Redraw the run's charts from its metrics.csv")
        self.open_button.clicked.connect(self.open_selected)
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(self._resume_selected)
        self.folder_button = QPushButton("Show folder")
        self.folder_button.clicked.connect(self._show_folder)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setObjectName("danger")
        self.delete_button.clicked.connect(self.delete_selected)
        buttons = QHBoxLayout()
        for button in (self.refresh_button, self.open_button, self.resume_button,
                       self.folder_button, self.delete_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.folder_label = QLabel(f"Runs folder: {paths.runs_dir()}")
        self.folder_label.setObjectName("hint")
        buttons.addWidget(self.folder_label)

        self.details = QLabel("Select a run and press Open to see its charts.")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.charts = TrainingCharts()
        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addWidget(self.details)
        lower_layout.addWidget(self.charts, 1)
        splitter = QSplitter(Qt.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(lower)
        splitter.setSizes([260, 600])

        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(splitter, 1)
        runner.state_changed.connect(lambda _state: self._update_buttons())
        runner.ended.connect(self.refresh)
        self.refresh()

    def selected(self) -> RunRow | None:
        rows = self.table.selectionModel().selectedRows()
        return self.runs[rows[0].row()] if rows else None

    def _is_live(self, run: RunRow) -> bool:
        return self.runner.is_active and self.runner.run_dir is not None and \
            Path(self.runner.run_dir).resolve() == run.path.resolve()

    def refresh(self) -> None:
        selected = self.selected()
        self.runs = [RunRow.read(folder) for folder in list_runs()]
        self.table.setRowCount(len(self.runs))
        for row, run in enumerate(self.runs):
            created = run.info.created_time
            values = (run.folder.name, run.status, run.best, config_summary(run.config),
                      "" if run.info.step is None else str(run.info.step),
                      f"{created:%Y-%m-%d %H:%M}" if created else "–")
            for col, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setToolTip(run.info.error or run.info.damaged or str(run.path))
                self.table.setItem(row, col, item)
        if selected is not None:
            for row, run in enumerate(self.runs):
                if run.path == selected.path:
                    self.table.selectRow(row)
        self._update_buttons()

    def select_run(self, folder: Path) -> None:
        for row, run in enumerate(self.runs):
            if run.path.resolve() == Path(folder).resolve():
                self.table.selectRow(row)
                return

    def open_selected(self) -> None:
        run = self.selected()
        if run is None:
            return
        self.open_run = run
        steps, validations = run.folder.metric_events()
        self.charts.clear_data()
        self.charts.add_steps(steps)
        self.charts.add_validations(validations)
        if steps:
            self.charts.set_extent(steps[-1].step, max((v.epoch + 1 for v in validations),
                                                       default=1))
        self.charts.redraw()
        lines = [f"<b>{run.folder.name}</b> — {run.status}"
                 + (f", best {run.best}" if run.info.best_score is not None else ""),
                 config_summary(run.config), f"Data: {run.info.data_dir or '?'}",
                 f"{len(steps)} logged steps, {len(validations)} validations"]
        if run.info.error:
            lines.append(f"<span style='color:#b22'>Error: {run.info.error}</span>")
        self.details.setText("<br>".join(lines))

    def _resume_selected(self) -> None:
        run = self.selected()
        if run is not None and run.resumable:
            self.resume_requested.emit(run.path)

    def _show_folder(self) -> None:
        run = self.selected()
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(run.path if run else paths.runs_dir())))

    def delete_selected(self) -> None:
        run = self.selected()
        if run is None or self._is_live(run):
            return
        answer = QMessageBox.question(
            self, "Delete run", f"Delete the run '{run.folder.name}' with its checkpoints and "
            f"model?\n\n{run.path}\n\nThis cannot be undone.", QMessageBox.Yes | QMessageBox.No,
            QMessageBox.No)
        if answer != QMessageBox.Yes:
            return
        try:
            run.folder.delete()
        except StudioError as exc:
            show_error(self, "Cannot delete the run", str(exc))
        if self.open_run is not None and self.open_run.path == run.path:
            self.open_run = None
            self.charts.clear_data()
            self.details.setText("Select a run and press Open to see its charts.")
        self.refresh()

    def _update_buttons(self) -> None:
        run = self.selected()
        live = run is not None and self._is_live(run)
        self.open_button.setEnabled(run is not None)
        self.delete_button.setEnabled(run is not None and not live)
        self.delete_button.setToolTip("A run cannot be deleted while it trains" if live else "")
        can_resume = run is not None and run.resumable and not self.runner.is_active
        self.resume_button.setEnabled(can_resume)
        self.resume_button.setToolTip("Continue this run from its last checkpoint" if can_resume
                                      else "Only a stopped run with a checkpoint can be resumed, "
                                      "and only while no other run trains")
        self.folder_button.setEnabled(True)
