"""Runs page: every run in the runs folder with its name, settings, best score, status and date.

Select a run to see its details and its charts from metrics.csv, name it and note what it tried;
select two or more to compare their curves and settings; resume a stopped run, export a trained one
as ONNX, or delete one (after confirmation). What is shown is read again on every refresh (the page
shown, a run ended), so a run that finished meanwhile never shows as it was.

Every fact about a run comes from ``core.runs.RunFolder``; this page only draws them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from html import escape
from pathlib import Path

from PySide6.QtCore import QItemSelection, QItemSelectionModel, QUrl, Qt, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QMessageBox, QPushButton, QSplitter, QStackedWidget,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from core import paths
from core.config import StudioConfig
from core.errors import StudioError
from core.runs import RunFolder, RunInfo, config_summary, list_runs
from core.tuning import tuning_summary
from gui.settings import StudioSettings
from gui.training_runner import TrainingRunner
from gui.widgets.charts import TrainingCharts
from gui.widgets.error_dialog import show_error
from gui.widgets.run_compare import ComparedRun, RunCompare
from gui.workers import BackgroundTask

COLUMNS = ("Run", "Status", "Best score", "Settings", "Step", "Created")
NOTHING_SELECTED = ("Select a run to see its details and charts; select two or more (Ctrl+click or "
                    "Shift+click) to compare them.")


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
    def title(self) -> str:
        return self.info.title(self.folder.name)

    @property
    def best(self) -> str:
        info = self.info
        if info.best_score is None:
            return "–"
        return f"{info.best_score:.3f} ({info.monitor.removeprefix('val_')})"

    @property
    def step(self) -> str:
        return "" if self.info.step is None else str(self.info.step)

    @cached_property
    def model_complete(self) -> bool:
        """Read when the run is selected, not for every row of every refresh."""
        return self.folder.model_complete()


def finetune_lines(folder: RunFolder) -> list[str]:
    """HTML lines for a fine-tune: where it came from, and both runs' scores side by side on the
    same (corrected) truth."""
    from core.finetune import comparison_rows, lineage_header, read_comparison

    header = lineage_header(folder)
    if header is None:
        return []
    lines = [escape(header)]
    record = read_comparison(folder)
    if record is not None:
        parent = escape(record.get("parent_name") or Path(record.get("parent", "")).name)
        cells = "".join(f"<tr><td>{escape(what)}</td><td align='right'>{a}</td>"
                        f"<td align='right'><b>{b}</b></td></tr>"
                        for what, a, b in comparison_rows(record))
        lines.append(f"<table cellspacing='0' cellpadding='3'><tr><th align='left'>On the "
                     f"corrected truth</th><th>{parent}</th><th>this run</th></tr>{cells}</table>")
    return lines


class RunsPage(QWidget):
    resume_requested = Signal(Path)

    def __init__(self, runner: TrainingRunner, settings: StudioSettings | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.runner = runner
        self.settings = settings or StudioSettings()
        self.runs: list[RunRow] = []
        self.open_run: RunRow | None = None
        """The run the detail panel shows (None: nothing, or a comparison)."""
        self.export_task: BackgroundTask | None = None
        self._logged = (0, 0)  # the shown run's logged steps and validations
        self._filling = False

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.Stretch)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.table.itemDoubleClicked.connect(lambda _item: self.open_selected())

        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Read the selected runs' charts and details again from their "
                                    "files")
        self.open_button.clicked.connect(self.open_selected)
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(self._resume_selected)
        self.export_button = QPushButton("Export ONNX…")
        self.export_button.clicked.connect(self._ask_export_onnx)
        self.folder_button = QPushButton("Show folder")
        self.folder_button.clicked.connect(self._show_folder)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setObjectName("danger")
        self.delete_button.clicked.connect(self.delete_selected)
        buttons = QHBoxLayout()
        for button in (self.refresh_button, self.open_button, self.resume_button,
                       self.export_button, self.folder_button, self.delete_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.folder_label = QLabel(f"Runs folder: {paths.runs_dir()}")
        self.folder_label.setObjectName("hint")
        buttons.addWidget(self.folder_label)
        self.export_status = QLabel()
        self.export_status.setObjectName("hint")
        self.export_status.setWordWrap(True)
        self.export_status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.export_status.hide()

        self.details = QLabel(NOTHING_SELECTED)
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("a name for this run (empty: its folder name)")
        self.note_edit = QLineEdit()
        self.note_edit.setPlaceholderText("a note: what this run tried, what came of it")
        for edit in (self.name_edit, self.note_edit):
            edit.setClearButtonEnabled(True)
            edit.editingFinished.connect(self._save_label)
        labels = QHBoxLayout()
        labels.addWidget(QLabel("Name"))
        labels.addWidget(self.name_edit, 1)
        labels.addWidget(QLabel("Note"))
        labels.addWidget(self.note_edit, 3)
        self.charts = TrainingCharts()
        single = QWidget()
        single_layout = QVBoxLayout(single)
        single_layout.setContentsMargins(0, 0, 0, 0)
        single_layout.addWidget(self.details)
        single_layout.addLayout(labels)
        single_layout.addWidget(self.charts, 1)
        self.compare = RunCompare()
        self.lower = QStackedWidget()
        self.lower.addWidget(single)
        self.lower.addWidget(self.compare)
        self.single_view = single
        splitter = QSplitter(Qt.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.lower)
        splitter.setSizes([260, 600])

        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.export_status)
        layout.addWidget(splitter, 1)
        runner.state_changed.connect(lambda _state: self._update_buttons())
        runner.ended.connect(self.refresh)
        self.refresh()

    # -- the selection ----------------------------------------------------------------------------
    def selected_runs(self) -> list[RunRow]:
        """The selected runs, in the table's order."""
        rows = sorted(index.row() for index in self.table.selectionModel().selectedRows())
        return [self.runs[row] for row in rows if row < len(self.runs)]

    def selected(self) -> RunRow | None:
        """The selected run when exactly one is selected (the actions on one run)."""
        runs = self.selected_runs()
        return runs[0] if len(runs) == 1 else None

    def select_runs(self, folders: list[Path]) -> None:
        wanted = {Path(folder).resolve() for folder in folders}
        self._select_rows([row for row, run in enumerate(self.runs)
                           if run.path.resolve() in wanted])

    def select_run(self, folder: Path) -> None:
        self.select_runs([folder])

    def _select_rows(self, rows: list[int]) -> None:
        model = self.table.model()
        selection = QItemSelection()
        for row in rows:
            selection.select(model.index(row, 0), model.index(row, len(COLUMNS) - 1))
        self.table.selectionModel().select(selection, QItemSelectionModel.ClearAndSelect)
        if rows:
            self.table.selectionModel().setCurrentIndex(model.index(rows[0], 0),
                                                        QItemSelectionModel.NoUpdate)

    def _on_selection(self) -> None:
        if not self._filling:
            self._update_buttons()
            self.show_selection()

    def _is_live(self, run: RunRow) -> bool:
        training = self.runner.training_dir
        return training is not None and Path(training).resolve() == run.path.resolve()

    # -- reading ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read every run again, keep the selection, and show it as the files say now."""
        self._save_label()
        selected = {run.path for run in self.selected_runs()}
        self.runs = [RunRow.read(folder) for folder in list_runs()]
        self._filling = True  # one redraw below, not one per changed row
        try:
            self.table.setRowCount(len(self.runs))
            for row, run in enumerate(self.runs):
                created = run.info.created_time
                values = (run.title, run.status, run.best, config_summary(run.config), run.step,
                          f"{created:%Y-%m-%d %H:%M}" if created else "–")
                for col, text in enumerate(values):
                    item = QTableWidgetItem(text)
                    item.setToolTip(run.info.error or run.info.damaged or str(run.path))
                    self.table.setItem(row, col, item)
                self._set_title_tooltip(row, run)
            self._select_rows([row for row, run in enumerate(self.runs) if run.path in selected])
        finally:
            self._filling = False
        self._update_buttons()
        self.show_selection()

    def _set_title_tooltip(self, row: int, run: RunRow) -> None:
        lines = [run.info.error or run.info.damaged, run.folder.name if run.info.name else "",
                 str(run.path), run.info.note]
        self.table.item(row, 0).setToolTip("\n".join(line for line in lines if line))

    def open_selected(self) -> None:
        """Read the selected runs again and show them (double-click, Open)."""
        self.refresh()

    def show_selection(self) -> None:
        """One run selected: its details and charts; several: their comparison."""
        self._save_label()
        runs = self.selected_runs()
        if len(runs) > 1:
            self._show_comparison(runs)
        elif runs:
            self._show_run(runs[0])
        else:
            self._show_nothing()

    def _show_run(self, run: RunRow) -> None:
        self.open_run = run
        steps, validations = run.folder.metric_events()
        self.charts.clear_data()
        self.charts.add_steps(steps)
        self.charts.add_validations(validations)
        if steps:
            self.charts.set_extent(steps[-1].step, max((v.epoch + 1 for v in validations),
                                                       default=1))
        self.charts.redraw()
        self._logged = (len(steps), len(validations))
        self._show_details(run)
        self.name_edit.setText(run.info.name)
        self.note_edit.setText(run.info.note)
        for edit in (self.name_edit, self.note_edit):
            edit.setEnabled(not run.info.damaged)
            edit.setToolTip("run.json cannot be read, so nothing can be saved in it"
                            if run.info.damaged else "Saved in the run's run.json")
        self.lower.setCurrentWidget(self.single_view)

    def _show_details(self, run: RunRow) -> None:
        steps, validations = self._logged
        heading = f"<b>{escape(run.title)}</b>"
        if run.info.name:
            heading += f" ({escape(run.folder.name)})"
        lines = [heading + f" — {run.status}"
                 + (f", best {run.best}" if run.info.best_score is not None else ""),
                 config_summary(run.config), f"Data: {escape(run.info.data_dir or '?')}",
                 f"{steps} logged steps, {validations} validations"]
        tuned = tuning_summary(run.folder.model_meta())
        if tuned:
            lines.append(escape(tuned))
        lines += finetune_lines(run.folder)
        if run.info.error:
            lines.append(f"<span style='color:#b22'>Error: {escape(run.info.error)}</span>")
        if run.info.damaged:
            lines.append(f"<span style='color:#b22'>{escape(run.info.damaged)}</span>")
        self.details.setText("<br>".join(lines))

    def _show_comparison(self, runs: list[RunRow]) -> None:
        self.open_run = None
        compared = []
        for run in runs:
            steps, validations = run.folder.metric_events()
            facts = {"status": run.status, "best score": run.best, "step": run.step or "–",
                     "dataset": run.info.data_dir or "?"}
            if run.info.parent:
                facts["fine-tuned from"] = Path(run.info.parent).name
            compared.append(ComparedRun(run.title, str(run.path), facts, run.config, steps,
                                        validations))
        self.compare.show_runs(compared)
        self.lower.setCurrentWidget(self.compare)

    def _show_nothing(self) -> None:
        self.open_run = None
        self.charts.clear_data()
        self.details.setText(NOTHING_SELECTED)
        for edit in (self.name_edit, self.note_edit):
            edit.clear()
            edit.setEnabled(False)
        self.lower.setCurrentWidget(self.single_view)

    # -- name and note ----------------------------------------------------------------------------
    def _save_label(self) -> None:
        """Write the name and note of the shown run to its run.json, if they changed.
        ``update_info`` re-reads the file and changes only these two fields, so a training run's
        own updates (status, step, best) before or after are kept."""
        run = self.open_run
        if run is None or not self.name_edit.isEnabled():
            return
        name, note = self.name_edit.text().strip(), self.note_edit.text().strip()
        if (name, note) == (run.info.name, run.info.note) or not run.folder.info_path.is_file():
            return
        if run.folder.info().damaged:  # update_info would replace it with defaults
            show_error(self, "Cannot save the name", f"'{run.folder.info_path}' cannot be read "
                       "any more; the name and note were not saved")
            return
        run.info = run.folder.update_info(name=name, note=note)
        written = run.folder.info()
        if (written.name, written.note) != (name, note):
            show_error(self, "Cannot save the name", f"could not write '{run.folder.info_path}'; "
                       "check that the folder is writable and has free space")
            return
        for row, shown in enumerate(self.runs):
            if shown.path == run.path:
                shown.info = run.info
                self.table.item(row, 0).setText(run.title)
                self._set_title_tooltip(row, run)
        self._show_details(run)

    # -- actions ----------------------------------------------------------------------------------
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
            self, "Delete run", f"Delete the run '{run.title}' with its checkpoints and "
            f"model?\n\n{run.path}\n\nThis cannot be undone.", QMessageBox.Yes | QMessageBox.No,
            QMessageBox.No)
        if answer != QMessageBox.Yes:
            return
        self._save_label()
        self.open_run = None  # its folder is going: nothing to save into any more
        try:
            run.folder.delete()
        except StudioError as exc:
            show_error(self, "Cannot delete the run", str(exc))
        self.refresh()

    def _ask_export_onnx(self) -> None:
        run = self.selected()
        if run is None or not run.model_complete:
            return
        start = self.settings.export_dir / f"{run.folder.name}.onnx"
        path, _ = QFileDialog.getSaveFileName(self, "Export the model as ONNX", str(start),
                                              "ONNX models (*.onnx)")
        if path:
            self.export_onnx(run, Path(path))

    def export_onnx(self, run: RunRow, out: Path) -> None:
        """Export ``run``'s model to ``out`` and check it with onnxruntime, in the background (a B0
        takes seconds; larger variants longer)."""
        source = run.folder.model_dir

        def work(_progress, _cancel) -> tuple[Path, float | None]:
            from core.engines import available_engines, export_onnx, verify_onnx

            written = export_onnx(source, out)
            checked = "onnxruntime" in available_engines()
            return written, verify_onnx(source, written) if checked else None

        self.export_task = BackgroundTask(work, "onnx-export", self)
        self.export_task.succeeded.connect(self._on_exported)
        self.export_task.failed.connect(lambda message, details: self._on_export_failed(
            run, message, details))
        self.export_task.done.connect(self._update_buttons)
        self.export_status.setText(f"Exporting '{run.title}' to {out} …")
        self.export_status.show()
        self.export_task.start()
        self._update_buttons()

    def _on_exported(self, result: tuple[Path, float | None]) -> None:
        path, difference = result
        self.settings.export_dir = path.parent
        check = ("not checked: onnxruntime is not installed" if difference is None else
                 f"onnxruntime matches PyTorch to {difference:.1e} in probability")
        self.export_status.setText(f"Exported the model to {path} ({check}).")

    def _on_export_failed(self, run: RunRow, message: str, details: str) -> None:
        self.export_status.setText(f"The ONNX export of '{run.title}' failed.")
        show_error(self, "ONNX export failed", f"{run.title}: {message}", details)

    def shutdown(self) -> None:
        """Save a name or note still being typed and let a running export finish (the window is
        closing; an export cannot be stopped half-way, and a B0 takes seconds)."""
        self._save_label()
        if self.export_task is not None and self.export_task.is_running:
            self.export_task.wait(120_000)

    def _update_buttons(self) -> None:
        run = self.selected()
        live = run is not None and self._is_live(run)
        self.open_button.setEnabled(bool(self.selected_runs()))
        self.delete_button.setEnabled(run is not None and not live)
        self.delete_button.setToolTip("A run cannot be deleted while it trains" if live else "")
        can_resume = run is not None and run.resumable and not self.runner.is_active
        self.resume_button.setEnabled(can_resume)
        self.resume_button.setToolTip("Continue this run from its last checkpoint" if can_resume
                                      else "Only a stopped run with a checkpoint can be resumed, "
                                      "and only while no other run trains")
        exporting = self.export_task is not None and self.export_task.is_running
        can_export = run is not None and run.model_complete and not exporting
        self.export_button.setEnabled(can_export)
        self.export_button.setToolTip(
            "An export is running" if exporting else
            "Write the run's model as an ONNX file (for onnxruntime and other engines)"
            if can_export else "Select one run with a trained model (its model/ folder)")
        self.folder_button.setEnabled(True)
