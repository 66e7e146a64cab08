"""The main window: four pages in tabs, the shared state, settings saved between starts.

Cold start: torch, transformers and Lightning take 8–30 s to import on a small machine, and only the
Train, Review and Runs pages need them. With ``lazy=True`` (the app) the window shows the Data page
and "Loading…" tabs at once, imports the engine on a background thread, and builds the other pages
when it has loaded (``engine_ready``). Tests and scripts build the whole window at once.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QIcon
from PySide6.QtWidgets import QLabel, QMainWindow, QMessageBox, QProgressDialog, QTabWidget

from gui.pages.data_page import DataPage
from gui.presets import load_preset
from gui.resources import icon_path
from gui.settings import StudioSettings
from gui.state import StudioState
from gui.training_runner import TrainingRunner
from gui.workers import BackgroundTask

if TYPE_CHECKING:
    from gui.pages.review_page import ReviewPage
    from gui.pages.runs_page import RunsPage
    from gui.pages.train_page import TrainPage
    from gui.widgets.charts import DeviceCharts

# What the background load imports: the engine modules the other pages use (torch, transformers,
# Lightning, onnxruntime beneath them). No Qt module: widgets are built on the GUI thread only.
ENGINE_MODULES = ("core.session", "core.review", "core.memory", "core.devices", "core.engines")
FALLBACK_PRESET = "Quick (CPU)"  # a first start's provisional settings until torch can see the GPU

TITLE = "SegFormer Studio"


class MainWindow(QMainWindow):
    engine_ready = Signal()
    """The Train, Review and Runs pages exist (at once without ``lazy``)."""

    def __init__(self, settings: StudioSettings | None = None,
                 device_charts: DeviceCharts | None = None, lazy: bool = False):
        super().__init__()
        self.settings = settings or StudioSettings()
        self.setWindowTitle(TITLE)
        self.setWindowIcon(QIcon(str(icon_path())))
        first_start = self.settings.is_first_start
        self.preset = self.settings.preset
        config = self.settings.config
        # First start (or unreadable settings): the preset for this machine, which needs torch to
        # see the GPU; a lazy window starts on the CPU preset and switches once the engine is in.
        self._choose_preset = config is None
        if config is None:
            self.preset = FALLBACK_PRESET
            config = load_preset(self.preset)
        self.state = StudioState(config, self)
        self.runner = TrainingRunner(self)
        self._device_charts = device_charts
        self.train_page: TrainPage | None = None
        self.review_page: ReviewPage | None = None
        self.runs_page: RunsPage | None = None
        self.engine_error = ""
        self._loader: BackgroundTask | None = None
        self._pending_review: tuple[str, int] | None = None
        self._quit_progress: QProgressDialog | None = None
        self._quitting = False

        last_dataset = self.settings.dataset_dir
        reopen = last_dataset is not None and last_dataset.is_dir()
        self.data_page = DataPage(self.state, offer_demo=not reopen)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.data_page, "Data")
        self._placeholders = {}
        for title in ("Train", "Review", "Runs"):
            placeholder = QLabel("Loading the training engine (PyTorch)…")
            placeholder.setObjectName("hint")
            placeholder.setAlignment(Qt.AlignCenter)
            self._placeholders[title] = placeholder
            self.tabs.addTab(placeholder, title)
        self.setCentralWidget(self.tabs)

        self.data_page.train_requested.connect(self._show_train_page)
        self.data_page.review_requested.connect(self._review_slice)
        self.state.dataset_changed.connect(self._on_dataset)
        self.state.config_changed.connect(self._save_config)
        self.runner.state_changed.connect(self._show_state)
        self.runner.state_changed.connect(
            lambda state: self.data_page.set_training(state != "idle"))
        self.tabs.currentChanged.connect(self._on_tab)

        if self.settings.geometry is not None:
            self.restoreGeometry(self.settings.geometry)
        else:
            self.resize(1440, 900)
        self.settings.mark_started()
        self.first_start = first_start
        if reopen:
            self.data_page.open_dataset(last_dataset)
        self._ready_message = ("Ready" if not first_start else
                               "Welcome: create the demo dataset on the Data page to begin")
        if lazy:
            self.statusBar().showMessage("Loading the training engine…")
            self._loader = BackgroundTask(_import_engine, "engine", self)
            self._loader.succeeded.connect(lambda _result: self._build_engine_pages())
            self._loader.failed.connect(self._engine_failed)
            self._loader.start()
        else:
            self._build_engine_pages()

    @property
    def engine_loaded(self) -> bool:
        return self.runs_page is not None

    def _build_engine_pages(self) -> None:
        """The pages that need torch, in place of their "Loading…" tabs (on the GUI thread)."""
        from gui.pages.review_page import ReviewPage
        from gui.pages.runs_page import RunsPage
        from gui.pages.train_page import TrainPage
        from gui.presets import default_preset

        if self._choose_preset:
            chosen = default_preset()
            if chosen != self.preset:
                self.preset = chosen
                self.state.set_config(load_preset(chosen))
        self.train_page = TrainPage(self.state, self.runner, self.preset, self._device_charts)
        self.review_page = ReviewPage(self.state, settings=self.settings)
        self.runs_page = RunsPage(self.runner, settings=self.settings)
        current = self.tabs.currentIndex()
        self.tabs.blockSignals(True)  # the tab shown stays shown while its page is swapped in
        for page, title in ((self.train_page, "Train"), (self.review_page, "Review"),
                            (self.runs_page, "Runs")):
            placeholder = self._placeholders.pop(title)
            index = self.tabs.indexOf(placeholder)
            self.tabs.removeTab(index)
            self.tabs.insertTab(index, page, title)
            placeholder.deleteLater()
        self.tabs.setCurrentIndex(current)
        self.tabs.blockSignals(False)

        self.runs_page.resume_requested.connect(self._resume_from_runs)
        self.train_page.run_started.connect(lambda _run: self.runs_page.refresh())
        # The pages follow runs as they happen: Review lists a run once it has a model, with its
        # current best; the Data page does not rewrite a dataset while a run trains.
        self.runner.events.connect(self._on_run_events)
        self.runner.ended.connect(self.review_page.refresh_runs)
        self.train_page.review_requested.connect(self._review_run)
        self.review_page.finetune_requested.connect(self._finetune)
        self.statusBar().showMessage(self._ready_message)
        self.engine_ready.emit()
        self._on_tab(self.tabs.currentIndex())
        if self._pending_review is not None:
            self._review_slice(*self._pending_review)

    def _engine_failed(self, message: str, details: str) -> None:
        from gui.widgets.error_dialog import show_error

        self.engine_error = message
        for placeholder in self._placeholders.values():
            placeholder.setText(f"The training engine could not be loaded: {message}\n"
                                "Run  python main.py --self-test  to see what is missing.")
        self.statusBar().showMessage("The training engine could not be loaded")
        show_error(self, "Cannot load the training engine", message, details)

    def _show_train_page(self) -> None:
        self.tabs.setCurrentIndex(1)

    def _on_dataset(self) -> None:
        self.settings.dataset_dir = self.state.dataset_dir
        self.statusBar().showMessage(f"Dataset: {self.state.dataset_dir}")

    def _save_config(self) -> None:
        self.settings.config = self.state.config
        if self.train_page is not None:
            self.preset = self.train_page.preset
        self.settings.preset = self.preset

    def _on_tab(self, _index: int) -> None:
        if self.runs_page is not None and self.tabs.currentWidget() is self.runs_page:
            self.runs_page.refresh()

    def _on_run_events(self, events: list) -> None:
        from core.events import CheckpointSaved

        if any(isinstance(e, CheckpointSaved) for e in events):
            self.review_page.refresh_runs()

    def _review_run(self, run_dir: Path) -> None:
        self.tabs.setCurrentWidget(self.review_page)
        self.review_page.open_run(run_dir)

    def _review_slice(self, case_day: str, slice_num: int) -> None:
        if self.review_page is None:  # clicked while the engine loads: opened once it has
            self._pending_review = (case_day, slice_num)
            self.tabs.setCurrentIndex(2)
            return
        self._pending_review = None
        self.tabs.setCurrentWidget(self.review_page)
        self.review_page.open_case_day(case_day, slice_num)

    def _finetune(self, parent: Path) -> None:
        if self.train_page.start_finetune(parent) is not None:
            self.tabs.setCurrentWidget(self.train_page)

    def _resume_from_runs(self, run_dir: Path) -> None:
        self.tabs.setCurrentWidget(self.train_page)
        self.train_page.resume(run_dir)

    def _show_state(self, state: str) -> None:
        run = self.runner.run_dir.name if self.runner.run_dir else ""
        self.statusBar().showMessage({"running": f"Training {run}…",
                                      "stopping": f"Stopping {run}: writing the checkpoint…"}
                                     .get(state, "Ready"))

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.runner.is_active:
            # Never block the GUI thread on the run: hide the window, stop the run, show that the
            # checkpoint is being written, and close for real once the run has ended.
            if not self._quitting:
                answer = QMessageBox.question(
                    self, TITLE, "A training run is in progress. Stop it (a resumable checkpoint "
                    "is written) and quit?", QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
                if answer != QMessageBox.Yes:
                    event.ignore()
                    return
                self._quitting = True
                self.runner.ended.connect(self.close)
                self.runner.stop()
                self._quit_progress = QProgressDialog(
                    "Stopping the training run: writing a resumable checkpoint, then quitting…",
                    "", 0, 0)
                self._quit_progress.setWindowTitle(TITLE)
                self._quit_progress.setCancelButton(None)
                self._quit_progress.setMinimumDuration(0)
                self._quit_progress.show()
                self.hide()
            event.ignore()
            return
        if self._quit_progress is not None:
            self._quit_progress.close()
        if self._loader is not None and self._loader.is_running:
            # An import cannot be interrupted: close once it has ended (a thread must not outlive
            # the window), without blocking the GUI thread meanwhile.
            self._loader.done.connect(self.close)
            self.hide()
            event.ignore()
            return
        self.data_page.shutdown()
        for page in (self.train_page, self.review_page, self.runs_page):
            if page is not None:
                page.shutdown()
        self.settings.geometry = self.saveGeometry()
        self._save_config()
        self.settings.sync()
        super().closeEvent(event)


def _import_engine(_progress, _cancel) -> None:
    """Import the engine's heavy modules (run on a background thread)."""
    for name in ENGINE_MODULES:
        importlib.import_module(name)
