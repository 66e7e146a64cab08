"""Review page: a run's predictions on a case-day of the open dataset, over the slices, with scores.

Pick a run (its best checkpoint) and a case-day; prediction runs as a ``BackgroundTask`` with a
progress bar and Cancel, and the result stays in the session's ``ReviewSession``, so going back to a
case-day is instant. The viewer's settings live in a plain ``ViewerState``; the slice view, the display
controls and the scores all bind to it. Exports: the current view as PNG, the case-day's predicted
masks as PNGs, and its ``submission.csv``.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QProgressBar,
                               QPushButton, QScrollArea, QSlider, QSplitter, QVBoxLayout, QWidget)

from core import paths
from core.errors import StudioError
from core.events import Progress
from core.export import write_mask_png, write_submission
from gui.review.panel import DisplayPanel
from core.review import CaseDayResult, ReviewSession, runs_with_models
from core.runs import RunFolder, list_runs
from gui.review.scores import ScoresPanel
from gui.review.slice_view import KEYS, SliceView
from gui.review.viewer_state import ViewerState
from gui.state import StudioState
from gui.widgets.error_dialog import show_error
from gui.workers import BackgroundTask

STEP_TITLES = {"cache": "Preparing the slices", "predict": "Predicting", "model": "Loading the model",
               "read": "Reading the images"}


class ReviewPage(QWidget):
    def __init__(self, state: StudioState, runs_root: Path | None = None,
                 session: ReviewSession | None = None, parent: QWidget | None = None):
        """``state`` is the window's (its dataset is the one reviewed); ``runs_root`` defaults to the
        runs folder of the user data folder."""
        super().__init__(parent)
        self.studio = state
        self.runs_root = runs_root
        self.session = session or ReviewSession()
        self.viewer = ViewerState()
        self.runs: list[RunFolder] = []
        self.result: CaseDayResult | None = None
        self.task: BackgroundTask | None = None
        self._pending: tuple[Path, str] | None = None

        self.run_box = QComboBox()
        self.run_box.setMinimumContentsLength(24)
        self.run_box.setToolTip("A run's best checkpoint (by its validation score)")
        self.case_box = QComboBox()
        self.case_box.setMinimumContentsLength(16)
        self.refresh_button = QPushButton("Refresh runs")
        self.refresh_button.clicked.connect(self.refresh_runs)
        self.show_button = QPushButton("Predict && show")
        self.show_button.setObjectName("primary")
        self.show_button.clicked.connect(self.show_selected)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.task_label = QLabel()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        for widget in (self.progress, self.task_label, self.cancel_button):
            widget.hide()
        self.run_box.activated.connect(lambda _i: self.show_selected(only_cached=True))
        self.case_box.activated.connect(lambda _i: self.show_selected())
        top = QHBoxLayout()
        for text, widget in (("Run", self.run_box), ("Case-day", self.case_box)):
            top.addWidget(QLabel(text))
            top.addWidget(widget)
        for widget in (self.show_button, self.refresh_button, self.progress, self.task_label,
                       self.cancel_button):
            top.addWidget(widget)
        top.addStretch(1)

        self.slice_view = SliceView(self.viewer)
        self.scores = ScoresPanel(self.viewer)
        self.slice_slider = QSlider(Qt.Horizontal)
        self.slice_slider.setRange(0, 0)
        self.slice_slider.valueChanged.connect(self.viewer.set_slice)
        self.slice_label = QLabel("no case-day shown")
        self.hover_label = QLabel(" ")
        self.hover_label.setObjectName("hint")
        self.slice_view.hover_text.connect(self.hover_label.setText)
        keys = QLabel(KEYS)
        keys.setObjectName("hint")
        keys.setWordWrap(True)
        slider_row = QHBoxLayout()
        slider_row.addWidget(self.slice_slider, 1)
        slider_row.addWidget(self.slice_label)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.slice_view, 1)
        left_layout.addLayout(slider_row)
        left_layout.addWidget(self.scores.plot)
        left_layout.addWidget(self.hover_label)
        left_layout.addWidget(keys)

        self.display = DisplayPanel(self.viewer)
        self.export_view_button = QPushButton("Save view as PNG…")
        self.export_view_button.clicked.connect(self._ask_export_view)
        self.export_masks_button = QPushButton("Export masks (PNG)…")
        self.export_masks_button.setToolTip("One 8-bit PNG per slice: bit 0 large bowel, bit 1 small "
                                            "bowel, bit 2 stomach")
        self.export_masks_button.clicked.connect(self._ask_export_masks)
        self.export_csv_button = QPushButton("Export submission.csv…")
        self.export_csv_button.clicked.connect(self._ask_export_submission)
        exports = QVBoxLayout()
        for button in (self.export_view_button, self.export_masks_button, self.export_csv_button):
            exports.addWidget(button)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.addWidget(self.display)
        right_layout.addWidget(self.scores, 1)
        right_layout.addLayout(exports)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(right)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(430)

        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(scroll)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)

        self.viewer.subscribe(self._on_viewer)
        state.dataset_changed.connect(self._on_dataset)
        self.refresh_runs()
        self._on_dataset()

    # -- choosing ----------------------------------------------------------------------------------
    def refresh_runs(self) -> None:
        current = self.selected_run()
        root = self.runs_root or paths.runs_dir()
        self.runs = runs_with_models(list_runs(root)) if root.is_dir() else []
        self.run_box.clear()
        for run in self.runs:
            info = run.info()
            best = (f" · best {info.monitor.removeprefix('val_')} {info.best_score:.3f}"
                    if info.best_score is not None else "")
            self.run_box.addItem(f"{run.name}{best}", str(run.path))
        if current is not None:
            self.select(run_dir=current)
        self._update_buttons()

    def _on_dataset(self) -> None:
        self.case_box.clear()
        index = self.studio.index
        if index is not None:
            for case_day, records in index.case_days().items():
                self.case_box.addItem(f"{case_day} ({len(records)} slices)", case_day)
        self._update_buttons()

    def selected_run(self) -> Path | None:
        data = self.run_box.currentData()
        return Path(data) if data else None

    def selected_case_day(self) -> str | None:
        return self.case_box.currentData()

    def select(self, run_dir: Path | None = None, case_day: str | None = None) -> None:
        """Choose a run and/or a case-day in the boxes (without predicting)."""
        if run_dir is not None:
            i = self.run_box.findData(str(Path(run_dir)))
            if i < 0:
                raise StudioError(f"run '{run_dir}' has no checkpoint, or is not in "
                                  f"{self.runs_root or paths.runs_dir()}")
            self.run_box.setCurrentIndex(i)
        if case_day is not None:
            i = self.case_box.findData(case_day)
            if i < 0:
                raise StudioError(f"case-day '{case_day}' is not in the open dataset")
            self.case_box.setCurrentIndex(i)

    def show_selected(self, only_cached: bool = False) -> None:
        """Show the chosen run's prediction of the chosen case-day: at once when this session has it,
        else (unless ``only_cached``) predict it in the background first."""
        run_dir, case_day, index = self.selected_run(), self.selected_case_day(), self.studio.index
        if run_dir is None or case_day is None or index is None:
            return
        cached = self.session.cached(run_dir, index, case_day)
        if cached is not None:
            self._pending = None
            self.show_result(cached)
        elif not only_cached:
            self._predict(run_dir, case_day)

    def _predict(self, run_dir: Path, case_day: str) -> None:
        if self.task is not None and self.task.is_running:
            self._pending = (run_dir, case_day)  # started when the current one has ended
            self.task.cancel()
            return
        index = self.studio.index
        self.task = BackgroundTask(
            lambda progress, cancel: self.session.compute(run_dir, index, case_day, progress, cancel),
            "review", self)
        self.task.progress.connect(self._on_progress)
        self.task.succeeded.connect(self._on_predicted)
        self.task.failed.connect(lambda message, details: show_error(
            self, "Prediction failed", f"{case_day} with {run_dir.name}: {message}", details))
        self.task.done.connect(self._on_task_done)
        self.progress.setRange(0, 0)
        self.task_label.setText(f"{case_day}…")
        for widget in (self.progress, self.task_label, self.cancel_button):
            widget.show()
        self._update_buttons()
        self.task.start()

    def cancel(self) -> None:
        self._pending = None
        if self.task is not None:
            self.task.cancel()

    def _on_progress(self, event: Progress) -> None:
        title = STEP_TITLES.get(event.task, event.task)
        if event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)
            self.task_label.setText(f"{title}: {event.done}/{event.total}")
        else:
            self.progress.setRange(0, 0)
            self.task_label.setText(f"{title}…")

    def _on_predicted(self, result: CaseDayResult) -> None:
        if self._pending is None and result.case_day == self.selected_case_day():
            self.show_result(result)

    def _on_task_done(self) -> None:
        for widget in (self.progress, self.task_label, self.cancel_button):
            widget.hide()
        self._update_buttons()
        pending, self._pending = self._pending, None
        if pending is not None:
            self._predict(*pending)

    # -- showing -----------------------------------------------------------------------------------
    def show_result(self, result: CaseDayResult) -> None:
        """Put a case-day on screen (window and slice reset; overlay settings kept)."""
        self.result = result
        self.viewer.load(result.depth, result.truth is not None, result.auto_window())
        self.display.set_intensity_range(float(result.images.min()), float(result.images.max()))
        self.slice_view.set_result(result)
        self.scores.set_result(result)
        self.slice_slider.blockSignals(True)
        self.slice_slider.setRange(0, result.depth - 1)
        self.slice_slider.blockSignals(False)
        self._on_viewer("slice")
        self._update_buttons()
        self.slice_view.setFocus()

    def _on_viewer(self, what: str) -> None:
        if what not in ("slice", "data") or self.result is None:
            return
        i = self.viewer.slice_index
        self.slice_slider.blockSignals(True)
        self.slice_slider.setValue(i)
        self.slice_slider.blockSignals(False)
        record = self.result.records[i]
        self.slice_label.setText(f"slice {record.slice_num} ({i + 1}/{self.result.depth})")

    def _update_buttons(self) -> None:
        busy = self.task is not None and self.task.is_running
        ready = self.studio.index is not None and self.run_box.count() > 0
        self.show_button.setEnabled(ready and not busy)
        for button in (self.export_view_button, self.export_masks_button, self.export_csv_button):
            button.setEnabled(self.result is not None)
        if self.studio.index is None:
            self.show_button.setToolTip("Open a dataset on the Data page first")
        elif self.run_box.count() == 0:
            self.show_button.setToolTip("No run with a checkpoint yet: train one on the Train page")
        else:
            self.show_button.setToolTip("Predict the case-day with the run's best model")

    # -- export ------------------------------------------------------------------------------------
    def export_view(self, path: Path) -> Path:
        """The slice view as shown (zoom, overlay) as a PNG."""
        path = Path(path)
        if not self.slice_view.grab().save(str(path), "PNG"):
            raise StudioError(f"cannot write '{path}': check the folder exists and is writable")
        return path

    def export_masks(self, folder: Path) -> list[Path]:
        """One ``<slice id>.png`` per slice of the shown case-day (``core.export.write_mask_png``)."""
        return [write_mask_png(folder, record.id, masks)
                for record, masks in zip(self.result.records, self.result.prediction)]

    def export_submission(self, path: Path) -> int:
        """``submission.csv`` of the shown case-day; returns the number of slices written."""
        return write_submission(path, ((record.id, masks) for record, masks
                                       in zip(self.result.records, self.result.prediction)))

    def _export(self, action, target) -> None:
        try:
            action(target)
        except StudioError as exc:
            show_error(self, "Export failed", str(exc))

    def _ask_export_view(self) -> None:
        record = self.result.records[self.viewer.slice_index]
        path, _ = QFileDialog.getSaveFileName(self, "Save view as PNG", f"{record.id}_view.png",
                                              "PNG images (*.png)")
        if path:
            self._export(self.export_view, Path(path))

    def _ask_export_masks(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the mask PNGs")
        if folder:
            self._export(self.export_masks, Path(folder))

    def _ask_export_submission(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export submission.csv", "submission.csv",
                                              "CSV files (*.csv)")
        if path:
            self._export(self.export_submission, Path(path))

    def shutdown(self) -> None:
        """Stop a running prediction (the window is closing)."""
        self.cancel()
        if self.task is not None and self.task.is_running:
            self.task.wait()
