"""Data page: choose a dataset folder (or create the demo), see what is in it, build the cache.

The scan, the demo generator and the cache build run as ``BackgroundTask``s with a progress bar;
the scan and the cache build can be cancelled. A finished scan sets the window's dataset
(``StudioState.set_dataset``), which the Train page uses. The *Labels* field maps the label values
of a NIfTI/DICOM dataset whose label maps are not named to the organs (``scan --labels``).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout,
                               QHeaderView, QLabel, QLineEdit, QProgressBar, QPushButton, QSplitter,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from core import paths
from core.data import ORGANS
from core.data.cache import build_cache
from core.data.demo import generate_demo_dataset
from core.data.scan import DatasetReport, scan_dataset
from core.data.volumes import parse_labels
from core.errors import DatasetError
from core.events import Progress
from gui.state import StudioState
from gui.widgets.banner import Banner
from core.export import ORGAN_COLORS
from gui.widgets.error_dialog import show_error
from gui.widgets.slice_preview import SlicePreviewGrid, render_previews
from gui.workers import BackgroundTask

MAX_PROBLEM_ROWS = 2000
TASK_TITLES = {"scan": "Checking the dataset", "demo": "Creating the demo dataset",
               "cache": "Building the cache"}


def _counts(counts: dict[str, int], rename=lambda k: k) -> str:
    """One ``name: count`` per line."""
    return "\n".join(f"{rename(k)}: {v}" for k, v in counts.items()) or "–"


class DataPage(QWidget):
    train_requested = Signal()
    review_requested = Signal(str, int)
    """(case-day, slice number): a preview was clicked."""

    def __init__(self, state: StudioState, offer_demo: bool = False, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.task: BackgroundTask | None = None
        self.task_kind = ""
        self._after_task = None
        self.previews = []

        self.offer = Banner()
        self.offer.show_message("info", "<b>New here?</b> Create the demo dataset — synthetic "
                                "abdominal MRI in the Kaggle layout (288 slices, a few seconds) — "
                                "and press Start on the Train page to see everything work.")
        self.offer_button = QPushButton("Create demo dataset")
        self.offer_button.clicked.connect(self.create_demo)
        self.offer.actions.addWidget(self.offer_button)
        self.offer.setVisible(offer_demo)

        self.training = False
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("No dataset open: type or paste a folder in the Kaggle "
                                            "layout (train.csv + train/caseN/caseN_dayM/scans/*.png) "
                                            "and press Enter, or choose one")
        self.folder_edit.returnPressed.connect(self._open_typed)
        self.open_button = QPushButton("Open folder…")
        self.open_button.clicked.connect(self.choose_folder)
        self.demo_button = QPushButton("Create demo dataset")
        self.demo_button.setToolTip(f"Write the synthetic demo dataset to {paths.demo_dir()} and "
                                    "open it")
        self.demo_button.clicked.connect(self.create_demo)
        self.rescan_button = QPushButton("Rescan")
        self.rescan_button.clicked.connect(lambda: self.open_dataset(self.state.dataset_dir))
        self.labels_edit = QLineEdit()
        self.labels_edit.setPlaceholderText("stomach=1,small_bowel=2,large_bowel=3")
        self.labels_edit.setToolTip(
            "Only for NIfTI/DICOM label maps whose values are not named: the label value of each "
            "organ, e.g. stomach=5,small_bowel=6,large_bowel=7. Empty: the names in "
            "dataset.json, else the mapping given earlier for this folder, else 1 stomach, "
            "2 small bowel, 3 large bowel. Used on Open and Rescan; Kaggle folders ignore it.")
        self.labels_edit.setMinimumWidth(  # the whole example shows, with the theme's padding
            self.labels_edit.fontMetrics().horizontalAdvance(self.labels_edit.placeholderText()
                                                             + "MMM"))
        self.labels_edit.returnPressed.connect(self._open_typed)
        folder_row = QHBoxLayout()
        folder_row.addWidget(QLabel("Dataset folder"))
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(QLabel("Labels"))
        folder_row.addWidget(self.labels_edit)
        for button in (self.open_button, self.rescan_button, self.demo_button):
            folder_row.addWidget(button)

        self.progress = QProgressBar()
        self.task_label = QLabel()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_task)
        self.progress_row = QWidget()
        row = QHBoxLayout(self.progress_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.task_label)
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        self.progress_row.hide()

        self.summary_box = QGroupBox("Summary")
        self.summary = QFormLayout(self.summary_box)
        self.summary_labels: dict[str, QLabel] = {}
        for key, title in (("cases", "Cases"), ("case_days", "Scan days"), ("slices", "Slices"),
                           ("labels", "Labels"), ("organs", "Slices per organ"),
                           ("sizes", "Image sizes"), ("spacings", "Pixel spacing (mm)"),
                           ("problems", "Problems")):
            label = QLabel("–")
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextSelectableByMouse)
            self.summary.addRow(title, label)
            self.summary_labels[key] = label
        self.train_button = QPushButton("Train on this dataset →")
        self.train_button.setEnabled(False)
        self.train_button.clicked.connect(self.train_requested)
        self.summary.addRow(self.train_button)
        self.export_csv_button = QPushButton("Export corrected train.csv…")
        self.export_csv_button.setToolTip("Write a full train.csv with your corrections applied, "
                                          "for use elsewhere (the dataset is not changed)")
        self.export_csv_button.clicked.connect(self._ask_export_train_csv)
        self.export_status = QLabel("")
        self.export_status.setWordWrap(True)
        self.summary.addRow(self.export_csv_button)
        self.summary.addRow(self.export_status)

        self.cache_box = QGroupBox("Preprocessing cache")
        cache_layout = QVBoxLayout(self.cache_box)
        cache_hint = QLabel("Slices are decoded, normalised and resized once into a memory-mapped "
                            "cache, so training loads them fast (also with 0 workers on Windows). "
                            "Training builds it when needed; build it here ahead of time.")
        cache_hint.setObjectName("hint")
        cache_hint.setWordWrap(True)
        self.cache_button = QPushButton()
        self.cache_button.clicked.connect(self.build_cache)
        self.cache_status = QLabel("")
        self.cache_status.setWordWrap(True)
        cache_layout.addWidget(cache_hint)
        cache_layout.addWidget(self.cache_button)
        cache_layout.addWidget(self.cache_status)

        self.problems_box = QGroupBox("Problems")
        self.problem_table = QTableWidget(0, 3)
        self.problem_table.setHorizontalHeaderLabels(["Severity", "Where", "Problem"])
        self.problem_table.horizontalHeader().setSectionResizeMode(2, QHeaderView.Stretch)
        self.problem_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.Interactive)
        self.problem_table.setColumnWidth(1, 260)
        self.problem_table.verticalHeader().hide()
        self.problem_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.no_problems = QLabel("No problems found: every image header, file name and mask was "
                                  "checked.")
        self.no_problems.setObjectName("hint")
        problems_layout = QVBoxLayout(self.problems_box)
        problems_layout.addWidget(self.no_problems)
        problems_layout.addWidget(self.problem_table)
        self.no_problems.hide()

        self.preview_box = QGroupBox("Preview: true masks")
        preview_layout = QVBoxLayout(self.preview_box)
        self.preview = SlicePreviewGrid(200)
        self.preview.slice_clicked.connect(self.review_requested)
        legend = QLabel(" &nbsp; ".join(
            f"<span style='color:rgb{ORGAN_COLORS[o]}'>■</span> {o.replace('_', ' ')}"
            for o in ORGANS))
        preview_layout.addWidget(self.preview)
        preview_layout.addWidget(legend)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.summary_box)
        left_layout.addWidget(self.cache_box)
        left_layout.addStretch(1)
        right = QWidget()
        self.right_layout = QVBoxLayout(right)
        self.right_layout.setContentsMargins(0, 0, 0, 0)
        self.right_layout.addWidget(self.preview_box)
        self.right_layout.addWidget(self.problems_box, 1)
        self.right_layout.addStretch(0)  # takes the space instead of an empty problem list
        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([380, 900])

        layout = QVBoxLayout(self)
        layout.addWidget(self.offer)
        layout.addLayout(folder_row)
        layout.addWidget(self.progress_row)
        layout.addWidget(splitter, 1)

        state.config_changed.connect(self._update_buttons)
        self._update_buttons()

    # -- actions ----------------------------------------------------------------------------------
    def choose_folder(self) -> None:
        start = str(self.state.dataset_dir or Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open a dataset folder", start)
        if folder:
            self.open_dataset(Path(folder))

    def _open_typed(self) -> None:
        text = self.folder_edit.text().strip().strip('"')
        if text:
            self.open_dataset(Path(text).expanduser())

    def set_training(self, training: bool) -> None:
        """While a run trains, its dataset must not be rewritten: no demo generation then."""
        self.training = training
        self._update_buttons()

    def label_values(self) -> dict[str, int] | None:
        """The *Labels* field as ``{organ: label value}`` (None when empty); ``DatasetError``
        naming the field when it cannot be read."""
        text = self.labels_edit.text().strip()
        if not text:
            return None
        return parse_labels(text, field="Labels")

    def open_dataset(self, folder: Path | str) -> None:
        """Scan ``folder`` in the background (with the *Labels* field's mapping); on success it
        becomes the window's dataset. A *Labels* text that cannot be read is an error dialog
        naming the field, and the open dataset stays."""
        folder = Path(folder)
        try:
            labels = self.label_values()
        except DatasetError as exc:
            show_error(self, "Cannot open the dataset", str(exc))
            self.labels_edit.setFocus()
            self.labels_edit.selectAll()
            return

        def scan(progress, cancel):
            from core.data.corrections import Corrections

            index = scan_dataset(folder, progress, cancel, labels=labels,
                                 corrections=Corrections.for_dataset(folder).path)
            return folder, index, render_previews(index)

        self.folder_edit.setText(str(folder))
        self._run("scan", scan, self._scanned)

    def create_demo(self) -> None:
        target = paths.demo_dir()
        if self.training:
            return
        if target.exists() and any(target.iterdir()) and not self._confirm_replace(target):
            return
        self._run("demo", lambda progress, _cancel: generate_demo_dataset(target, progress=progress),
                  self._demo_created)

    def _confirm_replace(self, target: Path) -> bool:
        """Ask before the generator replaces an existing demo folder (the open dataset, maybe)."""
        from PySide6.QtWidgets import QMessageBox

        is_open = self.state.dataset_dir is not None and \
            Path(self.state.dataset_dir).resolve() == target.resolve()
        answer = QMessageBox.question(
            self, "Replace the demo dataset?",
            f"The demo dataset in {target} will be written again"
            + (" (it is the dataset open now)" if is_open else "")
            + ". Its slices are regenerated; runs and the cache are kept. Continue?",
            QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes

    def _demo_created(self, folder: Path) -> None:
        self._after_task = lambda: self.open_dataset(folder)  # once the demo's thread has ended

    def build_cache(self) -> None:
        index, size = self.state.index, self.state.config.data.image_size
        if index is None:
            return
        cache_root = paths.cache_dir()
        self._run("cache", lambda progress, cancel: build_cache(index, size, cache_root, progress,
                                                                 cancel), self._cache_built)

    def cancel_task(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.cancel_button.setEnabled(False)
            self.task_label.setText(f"{TASK_TITLES[self.task_kind]}: cancelling…")

    def shutdown(self) -> None:
        """Cancel and wait for a running task (the window is closing)."""
        if self.task is not None and self.task.is_running:
            self.task.cancel()
            self.task.wait()

    # -- task plumbing ----------------------------------------------------------------------------
    def _run(self, kind: str, fn, on_success) -> None:
        if self.task is not None and self.task.is_running:
            return
        self.task_kind = kind
        self.task = BackgroundTask(fn, kind, self)
        self.task.progress.connect(self._on_progress)
        self.task.succeeded.connect(on_success)
        self.task.failed.connect(self._on_failed)
        self.task.cancelled.connect(self._on_cancelled)
        self.task.done.connect(self._on_done)
        self.progress.setRange(0, 0)
        self.task_label.setText(f"{TASK_TITLES[kind]}…")
        self.cancel_button.setVisible(kind != "demo")  # the generator replaces its folder whole
        self.cancel_button.setEnabled(True)
        self.progress_row.show()
        self.task.start()
        self._update_buttons()

    def _on_progress(self, event: Progress) -> None:
        self.progress.setRange(0, max(1, event.total))
        self.progress.setValue(event.done)
        self.progress.setFormat(f"%v / %m {event.message}".strip())

    def _on_failed(self, message: str, details: str) -> None:
        if self.task_kind == "scan":  # the open dataset stays; the field and Rescan say so
            self.folder_edit.setText(str(self.state.dataset_dir or ""))
        titles = {"scan": "Cannot open the dataset", "demo": "Cannot create the demo dataset",
                  "cache": "Cannot build the cache"}
        if self.task_kind == "cache":
            self.cache_status.setText(f"Failed: {message}")
        show_error(self, titles[self.task_kind], message, details)

    def _on_cancelled(self) -> None:
        if self.task_kind == "scan":
            self.folder_edit.setText(str(self.state.dataset_dir or ""))
        if self.task_kind == "cache":
            self.cache_status.setText("Cancelled; nothing was kept (an earlier cache is untouched).")

    def _on_done(self) -> None:
        self.progress_row.hide()
        self._update_buttons()
        follow_up, self._after_task = self._after_task, None
        if follow_up is not None:
            follow_up()

    def _is_busy(self) -> bool:
        return self.task is not None and self.task.is_running

    def _update_buttons(self) -> None:
        busy = self._is_busy()
        has_data = self.state.index is not None
        self.open_button.setEnabled(not busy)
        for button in (self.demo_button, self.offer_button):
            button.setEnabled(not busy and not self.training)
            button.setToolTip("A run is training on a dataset: the demo is not rewritten meanwhile"
                              if self.training else f"Write the synthetic demo dataset to "
                              f"{paths.demo_dir()} and open it")
        self.rescan_button.setEnabled(not busy and self.state.dataset_dir is not None)
        self.cache_button.setEnabled(not busy and has_data)
        self.cache_button.setText(f"Build cache at {self.state.config.data.image_size} px")
        self.train_button.setEnabled(has_data)
        self.export_csv_button.setVisible(has_data and self.state.index.report.corrected > 0)

    # -- results ----------------------------------------------------------------------------------
    def _scanned(self, result) -> None:
        folder, index, previews = result
        self.offer.hide()
        self.cache_status.clear()
        self.show_report(index.report)
        self.previews = previews
        self.preview.set_previews(previews)
        self.state.set_dataset(folder, index)
        self._update_buttons()

    def _ask_export_train_csv(self) -> None:
        start = Path.home() / "train_corrected.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export corrected train.csv", str(start),
                                              "CSV files (*.csv)")
        if path:
            self.export_train_csv(Path(path))

    def export_train_csv(self, path: Path) -> None:
        from core.data.corrections import export_corrected_train_csv

        index = self.state.index
        try:
            export_corrected_train_csv(index, path)
        except DatasetError as exc:
            show_error(self, "Export failed", str(exc))
            return
        self.export_status.setText(f"Wrote {path}: {len(index.slices)} slices, "
                                   f"{index.report.corrected} of them corrected")

    def _cache_built(self, cache) -> None:
        self.cache_status.setText(f"Ready: {len(cache.ids)} slices at {cache.image_size} px in "
                                  f"{cache.folder}")

    def show_report(self, report: DatasetReport) -> None:
        labels = self.summary_labels
        labels["cases"].setText(str(report.cases))
        labels["case_days"].setText(str(report.case_days))
        labels["slices"].setText(str(report.slices))
        text = ("train.csv (masks for every slice)" if report.has_labels else
                "none: images only (test data; cannot train)")
        if report.corrected:
            text += f"; {report.corrected} slices corrected (your corrections, not the dataset's)"
        labels["labels"].setText(text)
        labels["organs"].setText(_counts(report.slices_with, lambda o: o.replace("_", " ")))
        labels["sizes"].setText(_counts(report.image_sizes, lambda s: s.replace("x", "×")))
        labels["spacings"].setText(_counts(report.pixel_spacings, lambda s: s.replace("x", "×")))
        errors = sum(p.severity == "error" for p in report.problems)
        labels["problems"].setText(f"{errors} errors (slices left out), "
                                   f"{len(report.problems) - errors} warnings"
                                   if report.problems else "none")
        self.problems_box.setTitle(f"Problems ({len(report.problems)})")
        self.no_problems.setVisible(not report.problems)
        self.problem_table.setVisible(bool(report.problems))
        self.right_layout.setStretch(1, 1 if report.problems else 0)
        self.right_layout.setStretch(2, 0 if report.problems else 1)
        shown = report.problems[:MAX_PROBLEM_ROWS]
        self.problem_table.setRowCount(len(shown))
        for row, problem in enumerate(shown):
            for col, text in enumerate((problem.severity, problem.where, problem.message)):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                self.problem_table.setItem(row, col, item)
