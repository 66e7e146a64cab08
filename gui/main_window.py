"""The main window: four pages in tabs, the shared state, settings saved between starts."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QCloseEvent, QIcon
from PySide6.QtWidgets import QMainWindow, QMessageBox, QTabWidget

from gui.pages.data_page import DataPage
from gui.pages.review_page import ReviewPage
from gui.pages.runs_page import RunsPage
from gui.pages.train_page import TrainPage
from gui.presets import default_preset, load_preset
from gui.resources import icon_path
from gui.settings import StudioSettings
from gui.state import StudioState
from gui.training_runner import TrainingRunner
from gui.widgets.charts import DeviceCharts

TITLE = "SegFormer Studio"


class MainWindow(QMainWindow):
    def __init__(self, settings: StudioSettings | None = None,
                 device_charts: DeviceCharts | None = None):
        super().__init__()
        self.settings = settings or StudioSettings()
        self.setWindowTitle(TITLE)
        self.setWindowIcon(QIcon(str(icon_path())))
        first_start = self.settings.is_first_start
        preset = self.settings.preset
        config = self.settings.config
        if config is None:  # first start (or unreadable settings): the preset for this machine
            preset = default_preset()
            config = load_preset(preset)
        self.state = StudioState(config, self)
        self.runner = TrainingRunner(self)

        last_dataset = self.settings.dataset_dir
        reopen = last_dataset is not None and last_dataset.is_dir()
        self.data_page = DataPage(self.state, offer_demo=not reopen)
        self.train_page = TrainPage(self.state, self.runner, preset, device_charts)
        self.review_page = ReviewPage(self.state, settings=self.settings)
        self.runs_page = RunsPage(self.runner)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        for page, title in ((self.data_page, "Data"), (self.train_page, "Train"),
                            (self.review_page, "Review"), (self.runs_page, "Runs")):
            self.tabs.addTab(page, title)
        self.setCentralWidget(self.tabs)

        self.data_page.train_requested.connect(lambda: self.tabs.setCurrentWidget(self.train_page))
        self.runs_page.resume_requested.connect(self._resume_from_runs)
        self.train_page.run_started.connect(lambda _run: self.runs_page.refresh())
        self.tabs.currentChanged.connect(self._on_tab)
        self.state.dataset_changed.connect(self._on_dataset)
        self.state.config_changed.connect(self._save_config)
        self.runner.state_changed.connect(self._show_state)
        # The pages follow runs as they happen: Review lists a run once it has a model, with its
        # current best; the Data page does not rewrite a dataset while a run trains.
        self.runner.events.connect(self._on_run_events)
        self.runner.ended.connect(self.review_page.refresh_runs)
        self.runner.state_changed.connect(
            lambda state: self.data_page.set_training(state != "idle"))
        self.train_page.review_requested.connect(self._review_run)
        self.data_page.review_requested.connect(self._review_slice)

        if self.settings.geometry is not None:
            self.restoreGeometry(self.settings.geometry)
        else:
            self.resize(1440, 900)
        self.settings.mark_started()
        self.first_start = first_start
        if reopen:
            self.data_page.open_dataset(last_dataset)
        self.statusBar().showMessage("Ready" if not first_start else
                                     "Welcome: create the demo dataset on the Data page to begin")

    def _on_dataset(self) -> None:
        self.settings.dataset_dir = self.state.dataset_dir
        self.statusBar().showMessage(f"Dataset: {self.state.dataset_dir}")

    def _save_config(self) -> None:
        self.settings.config = self.state.config
        self.settings.preset = self.train_page.preset

    def _on_tab(self, _index: int) -> None:
        if self.tabs.currentWidget() is self.runs_page:
            self.runs_page.refresh()

    def _on_run_events(self, events: list) -> None:
        from core.events import CheckpointSaved

        if any(isinstance(e, CheckpointSaved) for e in events):
            self.review_page.refresh_runs()

    def _review_run(self, run_dir: Path) -> None:
        self.tabs.setCurrentWidget(self.review_page)
        self.review_page.open_run(run_dir)

    def _review_slice(self, case_day: str, slice_num: int) -> None:
        self.tabs.setCurrentWidget(self.review_page)
        self.review_page.open_case_day(case_day, slice_num)

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
            answer = QMessageBox.question(
                self, TITLE, "A training run is in progress. Stop it (a resumable checkpoint is "
                "written) and quit?", QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
            if answer != QMessageBox.Yes:
                event.ignore()
                return
            self.runner.stop()
            self.runner.wait()
        self.data_page.shutdown()
        self.train_page.shutdown()
        self.review_page.shutdown()
        self.settings.geometry = self.saveGeometry()
        self._save_config()
        self.settings.sync()
        super().closeEvent(event)

