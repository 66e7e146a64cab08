"""Review page: a run's predictions on a case-day of the open dataset, in three planes, with scores.

Pick a run (its best checkpoint) and a case-day; prediction runs as a ``BackgroundTask`` with a
progress bar and Cancel, and the result stays in the session's ``ReviewSession``, so going back to a
case-day is instant. Each case-day is marked *validation* or *training* for the chosen run's fold, and
*Score the validation case-days* fills the fold summary (worst first, click to open). The viewer's
settings live in a plain ``ViewerState``; the three planes, the display controls and the scores all
bind to it, and the keys are page-wide shortcuts. The run list follows the runs folder by itself
(refreshed when the page is shown and when a run reports). Exports: a figure of the current slice
(legend, case-day, slice, scores) at a chosen scale, and predicted masks (PNG per slice, NIfTI or
3D Slicer ``.seg.nrrd`` per case-day, in the source scan's geometry) or a ``submission.csv`` for the
shown case-day, the run's validation case-days or all of them.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QProgressBar, QPushButton, QScrollArea, QSlider,
                               QSplitter, QVBoxLayout, QWidget)

from core import paths, volume_export
from core.errors import StudioError
from core.events import Progress
from core.export import write_mask_png, write_submission
from core.review import CaseDayResult, ReviewSession, fold_roles, review_sources, truth_only
from core.runs import RunFolder, is_group
from gui.review.figure import SCALES, render_figure
from gui.review.fold_summary import FoldSummary
from gui.review.panel import DisplayPanel
from gui.review.scores import ScoresPanel
from gui.review.edit_panel import EditPanel
from gui.review.loop_panel import LoopPanel
from gui.review.slice_view import KEYS, PlaneView, SliceView, review_shortcuts
from gui.review.viewer_state import ViewerState
from gui.settings import StudioSettings
from gui.state import StudioState
from gui.widgets.error_dialog import show_error
from gui.workers import BackgroundTask

STEP_TITLES = {"cache": "Preparing the slices", "predict": "Predicting", "model": "Loading the model",
               "read": "Reading the images", "case-days": "Case-days"}
LAYOUTS = ("One plane (axial)", "Three planes")
SCOPES = {"shown": "The shown case-day", "validation": "The run's validation case-days",
          "all": "Every case-day"}
TRUTH_ONLY = "(no run: true masks only)"
VOLUME_FORMATS = {"nifti": ("NIfTI", "NIfTI label maps"),
                  "seg.nrrd": ("3D Slicer", "3D Slicer segmentations")}
"""Volume export formats: (short name, what the files are)."""


class ReviewPage(QWidget):
    finetune_requested = Signal(Path)
    """*Fine-tune on corrections*: the window starts a fine-tune of this run on the Train page."""

    def __init__(self, state: StudioState, runs_root: Path | None = None,
                 session: ReviewSession | None = None, settings: StudioSettings | None = None,
                 parent: QWidget | None = None):
        """``state`` is the window's (its dataset is the one reviewed); ``runs_root`` defaults to the
        runs folder of the user data folder."""
        super().__init__(parent)
        self.studio = state
        self.runs_root = runs_root
        self.session = session or ReviewSession()
        self.settings = settings or StudioSettings()
        self.viewer = ViewerState()
        self.runs: list = []  # core.review.ReviewSource
        self.roles: dict[str, str] = {}
        self.result: CaseDayResult | None = None
        self.task: BackgroundTask | None = None
        self._pending: tuple | None = None
        self._pending_slice: tuple[str, int] | None = None
        self.last_export: list[Path] = []

        self.run_box = QComboBox()
        self.run_box.setMinimumContentsLength(24)
        self.run_box.setToolTip("A run's best checkpoint (by its validation score)")
        self.case_box = QComboBox()
        self.case_box.setMinimumContentsLength(24)
        self.case_box.setToolTip("validation: the run never trained on it (its score means "
                                 "something); training: the run learned from it")
        self.refresh_button = QPushButton("Refresh runs")
        self.refresh_button.setToolTip("The list follows the runs folder by itself; this re-reads "
                                       "it now")
        self.refresh_button.clicked.connect(self.refresh_runs)
        self.show_button = QPushButton("Predict && show")
        self.show_button.setObjectName("primary")
        self.show_button.clicked.connect(self.show_selected)
        self.layout_box = QComboBox()
        self.layout_box.addItems(LAYOUTS)
        self.layout_box.setToolTip("Axial slice alone, or with its coronal and sagittal reformats (L)")
        self.layout_box.currentIndexChanged.connect(self._apply_layout)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.task_label = QLabel()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        for widget in (self.progress, self.task_label, self.cancel_button):
            widget.hide()
        self.run_box.currentIndexChanged.connect(lambda _i: self._on_run_changed())
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
        top.addWidget(QLabel("View"))
        top.addWidget(self.layout_box)

        self.slice_view = SliceView(self.viewer)
        self.coronal_view = PlaneView(self.viewer, "coronal")
        self.sagittal_view = PlaneView(self.viewer, "sagittal")
        self.views = (self.slice_view, self.coronal_view, self.sagittal_view)
        self.scores = ScoresPanel(self.viewer)
        self.slice_slider = QSlider(Qt.Horizontal)
        self.slice_slider.setRange(0, 0)
        self.slice_slider.valueChanged.connect(self.viewer.set_slice)
        self.slice_label = QLabel("no case-day shown")
        self.hover_label = QLabel(" ")
        self.hover_label.setObjectName("hint")
        for view in self.views:
            view.hover_text.connect(self.hover_label.setText)
        keys = QLabel(KEYS)
        keys.setObjectName("hint")
        keys.setWordWrap(True)
        slider_row = QHBoxLayout()
        slider_row.addWidget(self.slice_slider, 1)
        slider_row.addWidget(self.slice_label)
        self.reformats = QSplitter(Qt.Vertical)
        self.reformats.addWidget(self.coronal_view)
        self.reformats.addWidget(self.sagittal_view)
        self.planes = QSplitter(Qt.Horizontal)
        self.planes.addWidget(self.slice_view)
        self.planes.addWidget(self.reformats)
        self.planes.setStretchFactor(0, 3)
        self.planes.setStretchFactor(1, 2)
        self.reformats.hide()
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.planes, 1)
        left_layout.addLayout(slider_row)
        left_layout.addWidget(self.scores.plot)
        left_layout.addWidget(self.hover_label)
        left_layout.addWidget(keys)

        self.display = DisplayPanel(self.viewer)
        self.edit = EditPanel()
        self.edit.edit_box.toggled.connect(self._set_editing)
        self.edit.size_box.valueChanged.connect(lambda _v: self._set_editing(self.edit.editing))
        self.edit.action.connect(self.edit_action)
        self.editor = None  # core.editing.MaskEditor of the shown case-day, made when editing starts
        self.corrections = None  # core.data.corrections.Corrections of the open dataset
        self._last_paint: tuple[float, float] | None = None
        self.loop = LoopPanel()
        self.loop.rank_button.clicked.connect(lambda: self.rank_uncertainty())
        self.loop.next_button.clicked.connect(self.next_to_review)
        self.loop.finetune_button.clicked.connect(self._ask_finetune)
        self.ranking = None  # core.uncertainty.UncertaintyRanking of the chosen run
        self._compared: Path | None = None  # the other run of a fine-tune pair (C)
        self.lineage = QLabel("")
        self.lineage.setObjectName("hint")
        self.lineage.setWordWrap(True)
        self.switch_button = QPushButton("")
        self.switch_button.setToolTip("Show the same case-day and slice with the other model (C)")
        self.switch_button.clicked.connect(self.switch_compared)
        self.lineage.hide()
        self.switch_button.hide()
        self.fold = FoldSummary()
        self.fold.open_case_day.connect(lambda case_day: self.open_case_day(case_day))
        self.score_fold_button = QPushButton("Score the validation case-days")
        self.score_fold_button.setToolTip("Predict every validation case-day of the run's fold and "
                                          "list their scores, worst first")
        self.score_fold_button.clicked.connect(self.score_fold)
        fold_box = QGroupBox("Fold summary")
        fold_layout = QVBoxLayout(fold_box)
        fold_layout.addWidget(self.score_fold_button)
        fold_layout.addWidget(self.fold, 1)

        self.scope_box = QComboBox()
        for key, title in SCOPES.items():
            self.scope_box.addItem(title, key)
        self.scale_box = QComboBox()
        for scale in SCALES:
            self.scale_box.addItem(f"{scale}× the image's pixels", scale)
        self.scale_box.setCurrentIndex(1)
        self.export_view_button = QPushButton("Save figure (PNG)…")
        self.export_view_button.setToolTip("The current slice with its masks at the chosen scale, "
                                           "with the case-day, slice, scores and a legend")
        self.export_view_button.clicked.connect(self._ask_export_view)
        self.export_masks_button = QPushButton("Export masks (PNG)…")
        self.export_masks_button.setToolTip("One 8-bit PNG per slice: bit 0 large bowel, bit 1 small "
                                            "bowel, bit 2 stomach")
        self.export_masks_button.clicked.connect(self._ask_export_masks)
        self.export_csv_button = QPushButton("Export submission.csv…")
        self.export_csv_button.clicked.connect(self._ask_export_submission)
        self.export_nifti_button = QPushButton("Export NIfTI (.nii.gz)…")
        self.export_nifti_button.setToolTip(
            "One uint8 label map per case-day (1 stomach, 2 small bowel, 3 large bowel; where "
            "organs overlap, the first of these) in the scan's own voxel grid and affine (NIfTI/"
            "DICOM input), or the file names' pixel spacing and 3 mm slices (Kaggle PNGs)")
        self.export_nifti_button.clicked.connect(lambda: self._ask_export_volumes("nifti"))
        self.per_organ_box = QCheckBox("and one file per organ")
        self.per_organ_box.setToolTip("Also <case-day>_<organ>.nii.gz: one binary volume per "
                                      "organ, where overlaps are kept")
        self.export_seg_button = QPushButton("Export 3D Slicer (.seg.nrrd)…")
        self.export_seg_button.setToolTip("One 3D Slicer segmentation per case-day: the three "
                                          "organs as named, coloured segments, overlaps kept")
        self.export_seg_button.clicked.connect(lambda: self._ask_export_volumes("seg.nrrd"))
        self.export_status = QLabel("")
        self.export_status.setObjectName("hint")
        self.export_status.setWordWrap(True)
        self.export_status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        export_box = QGroupBox("Export")
        exports = QFormLayout(export_box)
        exports.addRow("Figure scale", self.scale_box)
        exports.addRow(self.export_view_button)
        exports.addRow("Masks of", self.scope_box)
        exports.addRow(self.export_masks_button)
        exports.addRow(self.export_csv_button)
        nifti_row = QHBoxLayout()
        nifti_row.addWidget(self.export_nifti_button)
        nifti_row.addWidget(self.per_organ_box, 1)
        exports.addRow(nifti_row)
        exports.addRow(self.export_seg_button)
        exports.addRow(self.export_status)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.addWidget(self.display)
        right_layout.addWidget(self.edit)
        right_layout.addWidget(self.loop)
        right_layout.addWidget(self.scores, 1)
        right_layout.addWidget(fold_box, 1)
        right_layout.addWidget(export_box)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(right)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        # As wide as the panels need beside the vertical scroll bar: narrower clips their right edge.
        scroll.setMinimumWidth(right.minimumSizeHint().width() + 2 * scroll.frameWidth()
                               + scroll.verticalScrollBar().sizeHint().width())

        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(scroll)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        lineage_row = QHBoxLayout()
        lineage_row.addWidget(self.lineage, 1)
        lineage_row.addWidget(self.switch_button)
        layout.addLayout(lineage_row)
        layout.addWidget(splitter, 1)

        self.shortcuts = review_shortcuts(self, self.viewer, {
            "1": lambda: self._organ_key(0), "2": lambda: self._organ_key(1),
            "3": lambda: self._organ_key(2),
            "D": self.edit.edit_box.toggle, "B": lambda: self.edit.brush.setChecked(True),
            "X": lambda: self.edit.eraser.setChecked(True),
            "[": lambda: self.edit.size_box.stepBy(-1), "]": lambda: self.edit.size_box.stepBy(1),
            "Ctrl+Z": lambda: self.edit_action("undo"),
            "Ctrl+Shift+Z": lambda: self.edit_action("redo"),
            "V": lambda: self.edit_action("reviewed"),
            "N": self.next_to_review, "C": self.switch_compared,
            "R": self.reset_zoom,
            "L": lambda: self.layout_box.setCurrentIndex(1 - self.layout_box.currentIndex())})
        self.viewer.subscribe(self._on_viewer)
        state.dataset_changed.connect(self._on_dataset)
        self.refresh_runs()
        self._on_dataset()

    # -- choosing ----------------------------------------------------------------------------------
    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh_runs()  # runs started, finished or deleted meanwhile

    def refresh_runs(self) -> None:
        """Re-read the runs folder: new runs appear, labels show each run's current best."""
        current = self.selected_run()
        root = self.runs_root or paths.runs_dir()
        self.runs = review_sources(root)
        self.run_box.blockSignals(True)
        self.run_box.clear()
        for source in self.runs:
            self.run_box.addItem(source.label, str(source.path))
            tip = str(source.path) + ("\nThe folds' probabilities are averaged, with the "
                                      "post-processing tuned out-of-fold. Every labelled case was "
                                      "seen in training by all folds but one: score the folds, "
                                      "or read cv.json, for honest scores." if source.is_group else "")
            self.run_box.setItemData(self.run_box.count() - 1, tip, Qt.ToolTipRole)
        if current is not None:
            i = self.run_box.findData(str(current))
            if i >= 0:
                self.run_box.setCurrentIndex(i)
        self.run_box.blockSignals(False)
        self._on_run_changed()

    def _on_run_changed(self) -> None:
        run, index = self.selected_run(), self.studio.index
        self.roles = fold_roles(RunFolder(run), index) if run is not None and index else {}
        self._case_texts()
        if self.fold.scores and (run is None or self.fold.property("run") != str(run)):
            self.fold.clear()
        if self.ranking is not None and (run is None or self.ranking.run_dir != run):
            self.ranking = None
        self._show_lineage()
        self._loop_status()
        self._update_buttons()

    def _case_texts(self) -> None:
        """Each case-day with its slice count, its role for the chosen run's fold, and how many of
        its slices are corrected or reviewed."""
        index = self.studio.index
        groups = index.case_days() if index is not None else {}
        corrected, reviewed = self._done_ids()
        for i in range(self.case_box.count()):
            case_day = self.case_box.itemData(i)
            role = self.roles.get(case_day)
            ids = {r.id for r in groups.get(case_day, [])}
            marks = [f"{n} {what}" for n, what in ((len(ids & corrected), "edited"),
                                                   (len(ids & reviewed), "reviewed")) if n]
            self.case_box.setItemText(i, f"{case_day} ({len(ids)} slices)"
                                      + (f" · {role}" if role else "")
                                      + (f" · {', '.join(marks)}" if marks else ""))

    def _done_ids(self) -> tuple[set[str], set[str]]:
        """The open dataset's corrected and reviewed slice ids."""
        if self.corrections is None:
            return set(), set()
        try:
            return set(self.corrections.rows()), set(self.corrections.reviewed())
        except StudioError:
            return set(), set()

    def _on_dataset(self) -> None:
        from core.data.corrections import Corrections

        self.case_box.clear()
        self.ranking = None
        self.corrections = (Corrections.for_dataset(self.studio.dataset_dir)
                            if self.studio.dataset_dir is not None else None)
        index = self.studio.index
        if index is not None:
            for case_day in index.case_days():
                self.case_box.addItem(case_day, case_day)
        self._on_run_changed()

    def selected_run(self) -> Path | None:
        data = self.run_box.currentData()
        return Path(data) if data else None

    def selected_case_day(self) -> str | None:
        return self.case_box.currentData()

    def validation_case_days(self) -> list[str]:
        return [cd for cd, role in self.roles.items() if role == "validation"]

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

    def open_run(self, run_dir: Path) -> None:
        """Review a run: choose it and show its first validation case-day (after training:
        *Review this run →*)."""
        self.refresh_runs()
        self.select(run_dir=run_dir)
        first = (self.validation_case_days() or [self.case_box.itemData(0)])[0]
        if first is not None:
            self.open_case_day(first)

    def open_case_day(self, case_day: str, slice_num: int | None = None) -> None:
        """Show ``case_day`` (at the slice numbered ``slice_num``): predicted by the chosen run, or
        with its true masks only when there is no run yet."""
        self.select(case_day=case_day)
        self._pending_slice = (case_day, slice_num) if slice_num is not None else None
        if self.selected_run() is None:
            self._start(lambda progress, cancel: truth_only(self.studio.index, case_day),
                        f"{case_day}…", self._on_predicted)
        else:
            self.show_selected()

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
        index = self.studio.index
        self._start(lambda progress, cancel: self.session.compute(run_dir, index, case_day,
                                                                  progress, cancel),
                    f"{case_day}…", self._on_predicted,
                    failed_title=f"{case_day} with {run_dir.name}")

    def _start(self, fn, label: str, on_success, failed_title: str = "") -> None:
        """Run ``fn(progress, cancel)`` in the background (one task at a time: a new request cancels
        the running one and starts when it has ended)."""
        if self.task is not None and self.task.is_running:
            self._pending = (fn, label, on_success, failed_title)
            self.task.cancel()
            return
        self.task = BackgroundTask(fn, "review", self)
        self.task.progress.connect(self._on_progress)
        self.task.succeeded.connect(on_success)
        self.task.failed.connect(lambda message, details: show_error(
            self, "Review failed", f"{failed_title}: {message}" if failed_title else message,
            details))
        self.task.done.connect(self._on_task_done)
        self.progress.setRange(0, 0)
        self.task_label.setText(label)
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
            self._start(*pending)

    # -- fold summary ------------------------------------------------------------------------------
    def score_fold(self) -> None:
        """Predict and score every validation case-day of the chosen run (in the background)."""
        run_dir, index = self.selected_run(), self.studio.index
        case_days = self.validation_case_days()
        if run_dir is None or index is None or not case_days:
            return

        def work(progress, cancel):
            scores = []
            for n, case_day in enumerate(case_days):
                progress(Progress("case-days", n, len(case_days), case_day))
                result = self.session.compute(run_dir, index, case_day, None, cancel)
                if result.score is not None:
                    scores.append(result.score)
            return run_dir, scores

        self._start(work, "Scoring the fold…", self._fold_scored,
                    failed_title=f"scoring {run_dir.name}")

    def _fold_scored(self, found) -> None:
        run_dir, scores = found
        self.fold.setProperty("run", str(run_dir))
        self.fold.set_scores(RunFolder(run_dir).info().name or run_dir.name, scores)

    # -- showing -----------------------------------------------------------------------------------
    def show_result(self, result: CaseDayResult) -> None:
        """Put a case-day on screen (window and slice reset; overlay settings kept)."""
        self.result = result
        at = None
        if self._pending_slice is not None and self._pending_slice[0] == result.case_day:
            at = result.slice_position(self._pending_slice[1])
        self._pending_slice = None
        self.viewer.load(result.depth, result.truth is not None, result.auto_window(), at,
                         result.images.shape[1:])
        self.display.set_intensity_range(float(result.images.min()), float(result.images.max()))
        for view in self.views:
            view.set_result(result)
        self.scores.set_result(result)
        if not result.has_prediction:
            self.scores.summary.setText(f"<b>{result.case_day}</b>: true masks only — choose a run "
                                        "to see its prediction.")
        self.slice_slider.blockSignals(True)
        self.slice_slider.setRange(0, result.depth - 1)
        self.slice_slider.blockSignals(False)
        self._on_viewer("slice")
        self._update_buttons()
        self.editor = None
        self._set_editing(self.edit.editing)
        self.slice_view.setFocus()

    # -- editing the truth -------------------------------------------------------------------------
    def _organ_key(self, k: int) -> None:
        """1/2/3: the organ to edit while editing, else show/hide that organ."""
        if self.edit.editing:
            self.edit.organ_box.setCurrentIndex(k)
            self.viewer.set_organ(k, True)
        else:
            self.viewer.toggle_organ(k)

    def _set_editing(self, on: bool) -> None:
        on = bool(on) and self.result is not None and self.studio.dataset_dir is not None
        if on and self.editor is None:
            self._start_editor()
        self.slice_view.set_painter(self._paint if on else None,
                                    self.edit.radius if on else None)
        self._edit_status()

    def _start_editor(self) -> None:
        """Edit the shown case-day's truth (the prediction, where the dataset has no labels)."""
        from core.data.corrections import Corrections
        from core.editing import MaskEditor

        result = self.result
        start = result.truth if result.truth is not None else result.prediction
        self.editor = MaskEditor(start, [r.id for r in result.records])
        result.truth = self.editor.masks  # the views and scores show the edited masks
        self.viewer.has_truth = True
        self.corrections = Corrections.for_dataset(self.studio.dataset_dir)

    def _paint(self, phase: str, y: float, x: float) -> None:
        editor, i, k = self.editor, self.viewer.slice_index, self.edit.organ
        if editor is None:
            return
        value = not self.edit.erasing
        if phase == "start":
            editor.begin_stroke(i, k)
            self._last_paint = None
        points = [(y, x)]
        if self._last_paint is not None:  # a fast drag: dabs along the way, no gaps
            (y0, x0), step = self._last_paint, max(self.edit.radius / 2, 0.5)
            count = int(max(abs(y - y0), abs(x - x0)) / step)
            points = [(y0 + (y - y0) * t / (count + 1), x0 + (x - x0) * t / (count + 1))
                      for t in range(1, count + 1)] + points
        for py, px in points:
            editor.dab(i, k, py, px, self.edit.radius, value)
        self._last_paint = (y, x)
        if phase == "finish":
            self._last_paint = None
            if editor.end_stroke():
                self._edited(i)
                return
        self.slice_view._redraw()

    def edit_action(self, name: str) -> None:
        """fill, take_slice, undo, redo (while editing) or reviewed (any time), on the shown
        slice."""
        if name == "reviewed":
            if self.result is None or self.corrections is None:
                return
            sid = self.result.records[self.viewer.slice_index].id
            self.corrections.set_reviewed(sid, sid not in self.corrections.reviewed())
            self._edit_status()
            self._case_texts()
            self._loop_status()
            return
        if not self.edit.editing or self.editor is None:
            return
        editor, i, k = self.editor, self.viewer.slice_index, self.edit.organ
        changed = {"fill": lambda: editor.fill(i, k),
                   "take_slice": lambda: editor.take(i, k, self.result.prediction[i, k]),
                   "undo": lambda: editor.undo(i), "redo": lambda: editor.redo(i)}[name]()
        if changed:
            self._edited(i)

    def _edited(self, i: int) -> None:
        """Slice ``i`` changed: save it (atomically), rescore, redraw."""
        from core.metrics import score_case_day

        editor, result = self.editor, self.result
        editor.save_slice(self.corrections, i)
        record = result.records[i]
        record.rles = editor.rles(i)  # the open dataset's index reads as the file now says
        if result.has_prediction:
            result.score = score_case_day(result.case_day, result.prediction, result.truth)
        self.scores.set_result(result)
        for view in self.views:
            if view._drawn_at is not None:
                view._redraw()
        self._edit_status()
        self._case_texts()
        self._update_buttons()

    def _edit_status(self) -> None:
        if self.result is None or self.corrections is None:
            self.edit.status.setText("")
            return
        if self.editor is None:
            sid = self.result.records[self.viewer.slice_index].id
            here = " This slice: reviewed." if sid in self.corrections.reviewed() else ""
            self.edit.status.setText("Tick Edit to correct the true masks of the shown case-day; "
                                     f"V marks the slice reviewed.{here}")
            return
        ids = set(self.editor.slice_ids)
        corrected = len(ids & set(self.corrections.rows()))
        reviewed = len(ids & self.corrections.reviewed())
        sid = self.editor.slice_ids[self.viewer.slice_index]
        here = " · this slice: reviewed" if sid in self.corrections.reviewed() else ""
        self.edit.status.setText(f"{self.result.case_day}: {corrected} slices corrected, "
                                 f"{reviewed} reviewed{here}. Saved in {self.corrections.path}")

    def _apply_layout(self, index: int) -> None:
        self.reformats.setVisible(index == 1)

    def reset_zoom(self) -> None:
        for view in self.views:
            view.reset_zoom()

    def _on_viewer(self, what: str) -> None:
        if what not in ("slice", "data") or self.result is None:
            return
        i = self.viewer.slice_index
        self.slice_slider.blockSignals(True)
        self.slice_slider.setValue(i)
        self.slice_slider.blockSignals(False)
        record = self.result.records[i]
        self.slice_label.setText(f"slice {record.slice_num} ({i + 1}/{self.result.depth})")
        self._edit_status()

    # -- the review loop: what next, fine-tune, compare --------------------------------------------
    def rank_uncertainty(self, then_next: bool = False) -> None:
        """Predict every case-day with the chosen run and rank its slices by uncertainty (in the
        background); ``then_next``: open the first slice to review once ranked."""
        from core.uncertainty import rank_by_uncertainty

        run_dir, index = self.selected_run(), self.studio.index
        if run_dir is None or index is None:
            return

        def ranked(ranking) -> None:
            self.ranking = ranking
            self._loop_status()
            if then_next:
                self.next_to_review()

        self._start(lambda progress, cancel: rank_by_uncertainty(run_dir, index, None, progress,
                                                                 cancel),
                    "Ranking by uncertainty…", ranked, failed_title=f"ranking {run_dir.name}")

    def done_slices(self) -> set[tuple[str, int]]:
        """``(case_day, slice_num)`` of the open dataset's reviewed or corrected slices."""
        corrected, reviewed = self._done_ids()
        done = corrected | reviewed
        index = self.studio.index
        return {(r.case_day, r.slice_num) for r in index.slices if r.id in done} if index else set()

    def next_to_review(self) -> None:
        """N: open the most uncertain slice not yet reviewed or corrected (ranking first)."""
        if self.selected_run() is None or self.studio.index is None:
            return
        if self.ranking is None:
            self.rank_uncertainty(then_next=True)
            return
        found = self.ranking.next_slice(self.done_slices())
        if found is None:
            self.loop.status.setText("Every slice is reviewed or corrected: nothing left to "
                                     "review with this run.")
            return
        case_day, slice_num, entropy = found
        self.open_case_day(case_day, slice_num)
        self._loop_status(f"Now: {case_day} slice {slice_num} (uncertainty {entropy:.4f}). ")

    def _loop_status(self, prefix: str = "") -> None:
        index = self.studio.index
        if index is None:
            self.loop.status.setText("")
            return
        corrected, reviewed = self._done_ids()
        ids = {r.id for r in index.slices}
        done = len(ids & (corrected | reviewed))
        text = f"{len(ids & corrected)} slices corrected, {len(ids & reviewed)} reviewed"
        if self.ranking is not None:
            top = ", ".join(f"{d.case_day} {d.mean:.4f}" for d in self.ranking.case_days[:3])
            text += (f"; {len(ids) - done} of {len(ids)} slices left to review. Most uncertain "
                     f"case-days: {top}")
        self.loop.status.setText(prefix + text + ".")

    def _ask_finetune(self) -> None:
        run = self.selected_run()
        if run is not None:
            self.finetune_requested.emit(run)

    def compared_run(self) -> Path | None:
        """The run C switches to: the chosen run's parent, else its newest fine-tune (found by
        ``_show_lineage`` whenever the chosen run or the run list changes)."""
        return self._compared

    def switch_compared(self) -> None:
        """C: the same case-day and slice, predicted by the other run of a fine-tune pair."""
        target = self.compared_run()
        if target is None:
            return
        if self.result is not None:
            self._pending_slice = (self.result.case_day,
                                   self.result.records[self.viewer.slice_index].slice_num)
        self.select(run_dir=target)
        if self.result is not None:
            self.show_selected()

    def _show_lineage(self) -> None:
        """Above the views: where the chosen fine-tune came from and how the two compare (or, for
        a run that was fine-tuned, how its newest fine-tune compares), with the switch (C)."""
        from core.finetune import comparison_summary, lineage_text, related_runs

        run = self.selected_run()
        text, label, self._compared = None, "", None
        if run is not None:
            parent, children = related_runs(run, [source.path for source in self.runs])
            if parent is not None or not children:
                text, label = lineage_text(RunFolder(run)), "Show the parent run (C)"
                self._compared = parent
            else:
                child = RunFolder(children[0])
                text = (f"{child.info().title(child.name)} was fine-tuned from this run: "
                        f"{comparison_summary(child)}")
                label, self._compared = "Show the fine-tuned run (C)", children[0]
        self.lineage.setText(text or "")
        self.lineage.setVisible(bool(text))
        self.switch_button.setText(label)
        self.switch_button.setVisible(self._compared is not None)

    def _update_buttons(self) -> None:
        busy = self.task is not None and self.task.is_running
        ready = self.studio.index is not None and self.run_box.count() > 0
        self.show_button.setEnabled(ready and not busy)
        self.export_view_button.setEnabled(self.result is not None)
        for button in (self.export_masks_button, self.export_csv_button, self.export_nifti_button,
                       self.per_organ_box, self.export_seg_button):
            button.setEnabled(self.selected_run() is not None and self.studio.index is not None
                              and not busy)
        self.score_fold_button.setEnabled(bool(self.validation_case_days()) and not busy)
        run = self.selected_run()
        single = run is not None and not is_group(run)
        has_corrections = bool(self._done_ids()[0])
        self.loop.rank_button.setEnabled(run is not None and self.studio.index is not None
                                         and not busy)
        self.loop.next_button.setEnabled(run is not None and self.studio.index is not None
                                         and not busy)
        self.loop.finetune_button.setEnabled(single and has_corrections and not busy)
        self.edit.buttons["reviewed"].setEnabled(self.result is not None
                                                 and self.corrections is not None)
        self.loop.finetune_button.setToolTip(
            self.loop.finetune_button.toolTip().split("\n\n")[0] + (
                "" if single and has_corrections else
                "\n\nChoose one run (not a fold group's ensemble) and correct at least one "
                "slice first."))
        self.score_fold_button.setToolTip(
            "Predict every validation case-day of the run's fold and list their scores"
            if self.validation_case_days() else "The chosen run has no validation case-day in "
            "this dataset (another dataset, or no labels)")
        if self.studio.index is None:
            self.show_button.setToolTip("Open a dataset on the Data page first")
        elif self.run_box.count() == 0:
            self.show_button.setToolTip("No run with a checkpoint yet: train one on the Train page")
        else:
            self.show_button.setToolTip("Predict the case-day with the run's best model")

    # -- export ------------------------------------------------------------------------------------
    def export_view(self, path: Path, scale: int | None = None) -> Path:
        """The current slice as a figure PNG (``render_figure``: legend, case-day, slice, scores)."""
        path = Path(path)
        run = self.selected_run() if self.result.has_prediction else None
        image = render_figure(self.result, self.viewer.slice_index, self.viewer.style,
                              self.viewer.window, scale or self.scale_box.currentData(),
                              run.name if run else "")
        if not image.save(str(path), "PNG"):
            raise StudioError(f"cannot write '{path}': check the folder exists and is writable")
        return path

    def export_case_days(self, scope: str) -> list[str]:
        """The case-days an export of ``scope`` ("shown", "validation", "all") covers."""
        if scope == "shown":
            shown = self.result.case_day if self.result is not None else self.selected_case_day()
            return [shown] if shown else []
        if scope == "validation":
            return self.validation_case_days()
        return [self.case_box.itemData(i) for i in range(self.case_box.count())]

    def _results(self, case_days: list[str], progress=None, cancel=None):
        """The chosen run's prediction of each case-day, one at a time (from the session's cache
        when it has them)."""
        run_dir, index = self.selected_run(), self.studio.index
        for n, case_day in enumerate(case_days):
            if progress is not None:
                progress(Progress("case-days", n, len(case_days), case_day))
            yield self.session.compute(run_dir, index, case_day, None, cancel)

    def export_masks(self, folder: Path, case_days: list[str] | None = None, progress=None,
                     cancel=None) -> list[Path]:
        """One ``<slice id>.png`` per slice (``core.export.write_mask_png``) of the shown case-day,
        or of ``case_days``."""
        results = [self.result] if case_days is None else self._results(case_days, progress, cancel)
        return [write_mask_png(folder, record.id, masks)
                for result in results for record, masks in zip(result.records, result.prediction)]

    def export_submission(self, path: Path, case_days: list[str] | None = None, progress=None,
                          cancel=None) -> int:
        """``submission.csv`` of the shown case-day, or of ``case_days``; returns the number of
        slices written."""
        results = [self.result] if case_days is None else self._results(case_days, progress, cancel)
        return write_submission(path, ((record.id, masks) for result in results
                                       for record, masks in zip(result.records, result.prediction)))

    def export_volumes(self, folder: Path, kind: str, case_days: list[str] | None = None,
                       per_organ: bool = False, progress=None, cancel=None) -> list[Path]:
        """One volume per case-day (of the shown one, or of ``case_days``) in ``folder``: ``kind``
        ``nifti`` (``<name>.nii.gz``; ``per_organ``: also ``<name>_<organ>.nii.gz``) or
        ``seg.nrrd`` (``<name>.seg.nrrd``), in the source scan's geometry
        (``core.volume_export.export_volumes``). Returns the paths written."""
        if kind not in VOLUME_FORMATS:
            raise StudioError(f"volume format '{kind}': choose one of {', '.join(VOLUME_FORMATS)}")
        results = [self.result] if case_days is None else self._results(case_days, progress, cancel)
        return volume_export.export_volumes(
            results, self.studio.index, nifti_dir=folder if kind == "nifti" else None,
            seg_nrrd_dir=folder if kind == "seg.nrrd" else None, per_organ=per_organ)

    def _report_export(self, text: str, files: list[Path]) -> None:
        self.last_export = files
        self.export_status.setText(text)
        if files:
            self.settings.export_dir = files[0].parent

    def _ask_export_view(self) -> None:
        record = self.result.records[self.viewer.slice_index]
        start = self.settings.export_dir / f"{record.id}_figure.png"
        path, _ = QFileDialog.getSaveFileName(self, "Save figure as PNG", str(start),
                                              "PNG images (*.png)")
        if not path:
            return
        try:
            written = self.export_view(Path(path))
        except StudioError as exc:
            show_error(self, "Export failed", str(exc))
            return
        self._report_export(f"Saved the figure: {written}", [written])

    def _ask_export_masks(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the mask PNGs",
                                                  str(self.settings.export_dir))
        if folder:
            case_days = self.export_case_days(self.scope_box.currentData())
            self._start(lambda progress, cancel: self.export_masks(Path(folder), case_days,
                                                                   progress, cancel),
                        "Exporting masks…", lambda files: self._report_export(
                            f"Wrote {len(files)} mask PNGs of {len(case_days)} case-day(s) to "
                            f"{folder} ({files[0].name} …)" if files else "Nothing to write.",
                            files), failed_title="Export failed")

    def _ask_export_submission(self) -> None:
        start = self.settings.export_dir / "submission.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export submission.csv", str(start),
                                              "CSV files (*.csv)")
        if path:
            case_days = self.export_case_days(self.scope_box.currentData())
            self._start(lambda progress, cancel: self.export_submission(Path(path), case_days,
                                                                        progress, cancel),
                        "Exporting submission.csv…", lambda rows: self._report_export(
                            f"Wrote {path}: {rows} slices of {len(case_days)} case-day(s)",
                            [Path(path)]), failed_title="Export failed")

    def _ask_export_volumes(self, kind: str) -> None:
        name, what = VOLUME_FORMATS[kind]
        folder = QFileDialog.getExistingDirectory(self, f"Folder for the {what}",
                                                  str(self.settings.export_dir))
        if not folder:
            return
        case_days = self.export_case_days(self.scope_box.currentData())
        per_organ = kind == "nifti" and self.per_organ_box.isChecked()

        def written(files: list[Path]) -> None:
            names = ", ".join(p.name for p in files[:4]) + (" …" if len(files) > 4 else "")
            self._report_export(f"Wrote {len(files)} {name} file(s) of {len(case_days)} "
                                f"case-day(s) to {folder}: {names}" if files else
                                "Nothing to write.", files)

        self._start(lambda progress, cancel: self.export_volumes(
            Path(folder), kind, case_days, per_organ, progress, cancel),
            f"Exporting {name}…", written, failed_title="Export failed")

    def shutdown(self) -> None:
        """Stop a running prediction (the window is closing)."""
        self.cancel()
        if self.task is not None and self.task.is_running:
            self.task.wait()
