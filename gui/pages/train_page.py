"""Train page: settings form with presets and the memory estimate; Start / Stop / Resume; live charts,
progress, a log and a banner with how the run ended.

Training runs in ``TrainingRunner`` (a QThread); this page only draws the events it delivers.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton,
                               QScrollArea, QSplitter, QVBoxLayout, QWidget)

from core.config import StudioConfig
from core.data import ORGANS
from core.errors import StudioError
from core.runs import RunFolder, new_run_dir
from core.events import (CheckpointSaved, GroupProgress, LogMessage, Progress, TrainingFailed,
                         TrainingFinished, TrainingStarted, TrainingStep, ValidationResult)
from gui.presets import PRESETS, load_preset
from gui.state import StudioState
from gui.training_runner import IDLE, RUNNING, STOPPING, TrainingRunner
from gui.widgets.banner import Banner
from gui.widgets.charts import DeviceCharts, TrainingCharts
from gui.widgets.config_form import ConfigForm
from gui.widgets.error_dialog import show_error
from gui.widgets.guarded import GuardedComboBox
from gui.widgets.memory_panel import MemoryPanel
from gui.widgets.run_progress import RunProgress

CUSTOM = "Custom"


def describe_validation(result: ValidationResult) -> str:
    m = result.metrics
    organs = ", ".join(f"{o.replace('_', ' ')} {m[f'val_dice_{o}']:.3f}" for o in ORGANS
                       if f"val_dice_{o}" in m)
    return (f"epoch {result.epoch + 1}: validation loss {m.get('val_loss', float('nan')):.4f}, "
            f"Dice {m.get('val_dice', float('nan')):.3f} ({organs}), Hausdorff "
            f"{m.get('val_hausdorff', float('nan')):.3f}, score {m.get('val_score', float('nan')):.3f}")


class TrainPage(QWidget):
    run_started = Signal(Path)
    review_requested = Signal(Path)
    """*Review this run →* after a run ended with a model."""

    def __init__(self, state: StudioState, runner: TrainingRunner, preset: str = "",
                 device_charts: DeviceCharts | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self.resumable_run: Path | None = None
        self.last_result: TrainingFinished | TrainingFailed | None = None

        self.preset_combo = GuardedComboBox()
        self.preset_combo.addItems([*PRESETS, CUSTOM])
        self.preset_combo.setCurrentText(preset if preset in PRESETS else CUSTOM)
        self.preset_combo.setToolTip("Starting points: pick one, then adjust any setting below")
        self.preset_combo.activated.connect(lambda _i: self.apply_preset(
            self.preset_combo.currentText()))
        self.form = ConfigForm(state.config)
        self.form.config_changed.connect(self._on_config_changed)
        self.form.validity_changed.connect(lambda _valid: self._update_buttons())
        self.memory = MemoryPanel()
        self.memory.set_config(state.config)
        self.memory.batch_size_found.connect(self._use_batch_size)
        self.batch_note = QLabel()
        self.batch_note.setObjectName("hint")
        self.batch_note.setWordWrap(True)
        self._show_batch_note(state.config)

        preset_row = QHBoxLayout()
        preset_row.addWidget(QLabel("Preset"))
        preset_row.addWidget(self.preset_combo, 1)
        form_scroll = QScrollArea()
        form_scroll.setWidgetResizable(True)
        form_scroll.setWidget(self.form)
        form_scroll.setFrameShape(QScrollArea.NoFrame)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 4, 0)
        left_layout.addLayout(preset_row)
        left_layout.addWidget(self.memory)
        left_layout.addWidget(self.batch_note)
        left_layout.addWidget(form_scroll, 1)

        self.start_button = QPushButton("Start")
        self.start_button.setObjectName("primary")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(lambda: self.resume(self.resumable_run))
        self.all_folds_box = QCheckBox("Train all folds")
        self.all_folds_box.setToolTip(
            "Cross-validation: train every fold of 'Folds' one after another into one folder, "
            "score each case with the model that did not see it (out-of-fold), tune the "
            "post-processing on those predictions, and predict with the folds' ensemble")
        self.all_folds_box.toggled.connect(lambda _on: self._update_buttons())
        self.group_label = QLabel()
        self.group_label.setObjectName("groupProgress")
        self.group_label.hide()
        self.dataset_label = QLabel()
        self.dataset_label.setObjectName("hint")
        self.why_label = QLabel()
        self.why_label.setObjectName("whyNot")
        self.why_label.setWordWrap(True)
        self.why_label.setStyleSheet("color: #b22;")
        controls = QHBoxLayout()
        for button in (self.start_button, self.stop_button, self.resume_button):
            controls.addWidget(button)
        controls.addWidget(self.all_folds_box)
        controls.addWidget(self.why_label, 2)
        controls.addWidget(self.dataset_label, 1)

        self.banner = Banner()
        self.review_button = QPushButton("Review this run →")
        self.review_button.setToolTip("Open the Review page on this run's first validation case-day")
        self.review_button.clicked.connect(self._review_last_run)
        self.banner.actions.addWidget(self.review_button)
        self.progress = RunProgress()
        self.charts = TrainingCharts()
        self.device_charts = device_charts or DeviceCharts()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setPlaceholderText("The run's messages appear here.")
        charts_split = QSplitter(Qt.Vertical)
        charts_split.addWidget(self.charts)
        charts_split.addWidget(self.device_charts)
        charts_split.addWidget(self.log)
        charts_split.setStretchFactor(0, 5)
        charts_split.setStretchFactor(1, 2)
        charts_split.setStretchFactor(2, 1)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(4, 0, 0, 0)
        right_layout.addLayout(controls)
        right_layout.addWidget(self.banner)
        right_layout.addWidget(self.group_label)
        right_layout.addWidget(self.progress)
        right_layout.addWidget(charts_split, 1)

        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([440, 1000])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

        runner.events.connect(self._on_events)
        runner.state_changed.connect(self._on_state)
        runner.ended.connect(self._on_ended)
        state.dataset_changed.connect(self._update_buttons)
        self._update_buttons()

    # -- settings ---------------------------------------------------------------------------------
    def apply_preset(self, name: str) -> None:
        if name not in PRESETS:
            return
        try:
            config = load_preset(name)
        except StudioError as exc:
            show_error(self, "Cannot load the preset", str(exc))
            return
        self.preset_combo.setCurrentText(name)
        self.form.set_config(config)

    def _on_config_changed(self, config: StudioConfig) -> None:
        name = self.preset_combo.currentText()
        if name in PRESETS and load_preset(name).to_dict() != config.to_dict():
            self.preset_combo.setCurrentText(CUSTOM)
        self.state.set_config(config)
        self.memory.set_config(config)
        self._show_batch_note(config)
        self._update_buttons()

    def _show_batch_note(self, config: StudioConfig) -> None:
        from core.devices import effective_batch_note, resolve_device
        from core.errors import ConfigError

        train = config.train
        try:
            accelerator = resolve_device(train.device)
        except ConfigError:
            accelerator = "cpu"
        self.batch_note.setText(effective_batch_note(train.devices, train.num_nodes,
                                                     train.batch_size,
                                                     train.accumulate_grad_batches, train.lr,
                                                     accelerator))

    def _use_batch_size(self, batch_size: int, accumulate: int) -> None:
        config = self.form.config()
        config.train.batch_size, config.train.accumulate_grad_batches = batch_size, accumulate
        self.form.set_config(config)

    @property
    def preset(self) -> str:
        return self.preset_combo.currentText()

    # -- run control ------------------------------------------------------------------------------
    def why_not_startable(self) -> str:
        """Empty when Start can be pressed, else the reason (shown as Start's tooltip)."""
        if self.runner.is_active:
            return "A run is in progress"
        reasons = []
        if self.state.index is None:
            reasons.append("Open a dataset on the Data page first (or create the demo dataset).")
        elif not self.state.index.has_labels:
            reasons.append("This dataset has no train.csv: training needs masks.")
        problems = self.form.problems()
        if problems:
            reasons.append("Fix the settings marked in red first:\n" + "\n".join(problems.values()))
        return "\n".join(reasons)

    def start(self) -> None:
        if self.why_not_startable():
            return
        config = self.form.config()
        all_folds = self.all_folds_box.isChecked()
        try:
            run_dir = self.runner.start(config, self.state.dataset_dir, all_folds=all_folds)
        except StudioError as exc:
            show_error(self, "Cannot start training", str(exc))
            return
        self._begin(run_dir, f"New {'fold group' if all_folds else 'run'} in {run_dir}")
        self.charts.clear_data()
        self.run_started.emit(run_dir)

    def start_finetune(self, parent: Path) -> Path | None:
        """*Fine-tune on corrections* (Review): a new run from ``parent``'s best weights with its
        settings and a short schedule, on the open dataset with its corrections."""
        from core.finetune import finetune_config

        if self.runner.is_active:
            show_error(self, "Cannot start the fine-tune", "A run is training; stop it or let it "
                       "finish first.")
            return None
        if self.state.dataset_dir is None:
            show_error(self, "Cannot start the fine-tune", "Open the dataset you corrected on the "
                       "Data page first.")
            return None
        try:
            config = finetune_config(parent)
            run_dir = self.runner.start(config, self.state.dataset_dir,
                                        new_run_dir(config, suffix="_finetune"), init_from=parent)
        except StudioError as exc:
            show_error(self, "Cannot start the fine-tune", str(exc))
            return None
        self._begin(run_dir, f"Fine-tuning {Path(parent).name} on your corrections "
                    f"({config.train.epochs} epochs) in {run_dir}")
        self.charts.clear_data()
        self.run_started.emit(run_dir)
        return run_dir

    def resume(self, run_dir: Path | None) -> None:
        if run_dir is None or self.runner.is_active:
            return
        try:
            run_dir = self.runner.resume(run_dir)
        except StudioError as exc:
            show_error(self, "Cannot resume the run", str(exc))
            return
        self._begin(run_dir, f"Resuming {run_dir}")
        self.charts.clear_data()
        self._show_history(RunFolder(run_dir))
        self.run_started.emit(run_dir)

    def _show_history(self, run: RunFolder) -> None:
        """The curves of ``run`` so far (a resumed run; a fold group's fold), then live points."""
        steps, validations = run.metric_events()
        self.charts.add_steps(steps)
        self.charts.add_validations(validations)

    def stop(self) -> None:
        self.runner.stop()

    def _begin(self, run_dir: Path, message: str) -> None:
        self.last_result = None
        self.resumable_run = None
        self.banner.hide()
        self.group_label.hide()
        self.progress.reset()
        self.log.clear()
        self.append_log(message)

    # -- events -----------------------------------------------------------------------------------
    def append_log(self, message: str, level: str = "info") -> None:
        prefix = "" if level == "info" else f"{level}: "
        self.log.appendPlainText(f"{datetime.now():%H:%M:%S}  {prefix}{message}")

    def _on_events(self, events: list) -> None:
        steps = [e for e in events if isinstance(e, TrainingStep)]
        if steps:
            self.charts.add_steps(steps)
            self.progress.on_step(steps[-1])
        validations = [e for e in events if isinstance(e, ValidationResult)]
        if validations:
            self.charts.add_validations(validations)
        for event in events:
            if isinstance(event, Progress):
                self.progress.on_preparing(event)
            elif isinstance(event, GroupProgress):
                self._on_group_progress(event)
            elif isinstance(event, TrainingStarted):
                self.progress.on_started(event)
                self.charts.set_extent(event.total_steps, event.epochs)
                self.append_log(f"Training: {event.epochs} epochs × {event.steps_per_epoch} steps on "
                                f"{event.device}, precision {event.precision}"
                                + (f", from step {event.start_step}" if event.start_step else ""))
            elif isinstance(event, ValidationResult):
                self.append_log(describe_validation(event))
            elif isinstance(event, LogMessage):
                self.append_log(event.message, event.level)
            elif isinstance(event, CheckpointSaved):
                self.append_log(f"Saved {'best model' if event.best else 'checkpoint'}: {event.path}")
            elif isinstance(event, TrainingFinished):
                self._show_finished(event)
            elif isinstance(event, TrainingFailed):
                self.last_result = event
                self.review_button.hide()
                self.banner.show_message("error", f"<b>Failed:</b> {event.message}")
                self.append_log(event.message, "error")
                show_error(self, "Training failed", event.message, event.details)

    def _on_group_progress(self, event: GroupProgress) -> None:
        """A fold group moved on: the charts show the fold now training (its curves so far)."""
        self.group_label.show()
        if event.fold < 0:
            self.group_label.setText(f"<b>Fold group:</b> all {event.count} folds trained; scoring "
                                     "the out-of-fold predictions and tuning the post-processing…")
            return
        self.group_label.setText(f"<b>Fold group:</b> fold {event.fold} — {event.position + 1} of "
                                 f"{event.count}")
        self.charts.clear_data()
        self.progress.reset()
        self._show_history(RunFolder(event.run_dir))

    def _review_last_run(self) -> None:
        if self.runner.run_dir is not None:
            self.review_requested.emit(Path(self.runner.run_dir))

    def _show_finished(self, event: TrainingFinished) -> None:
        self.last_result = event
        self.review_button.setVisible(event.best_score is not None)
        best = (f" Best {event.monitor.removeprefix('val_')} {event.best_score:.3f}."
                if event.best_score is not None else "")
        kind, title = ("warning", "Stopped") if event.status == "stopped" else ("success", "Done")
        self.banner.show_message(kind, f"<b>{title}:</b> the run {event.reason}.{best}")
        self.append_log(f"{event.status}: {event.reason}")

    def _on_state(self, state: str) -> None:
        self.form.set_editable(state == IDLE)
        self.preset_combo.setEnabled(state == IDLE)
        self.memory.set_training(state != IDLE)
        if state == RUNNING:
            self.progress.show_status("Starting…")
        elif state == STOPPING:
            self.progress.show_status("Stopping… writing the checkpoint")
        self._update_buttons()

    def _on_ended(self) -> None:
        from core.cv import is_group

        result = self.last_result
        run_dir = self.runner.run_dir
        if isinstance(result, TrainingFinished) and result.status == "stopped" and (
                is_group(run_dir) or RunFolder(run_dir).has_last_checkpoint()):
            self.resumable_run = run_dir
        status = {TrainingFinished: lambda r: r.status.capitalize(),
                  TrainingFailed: lambda r: "Failed"}
        self.progress.on_ended(status[type(result)](result) if result else "Idle")
        self._update_buttons()

    def _update_buttons(self) -> None:
        state = self.runner.state
        reason = self.why_not_startable()
        self.start_button.setEnabled(not reason)
        self.start_button.setToolTip(reason or "Train a new run with these settings")
        # Why Start is off, next to it (not only at the bottom of the scrolled form).
        shown = "" if self.runner.is_active else reason.replace("\n", " ")
        self.why_label.setText(shown)
        self.why_label.setToolTip(reason)
        self.stop_button.setEnabled(state == RUNNING)
        self.stop_button.setText("Stopping…" if state == STOPPING else "Stop")
        self.resume_button.setEnabled(state == IDLE and self.resumable_run is not None)
        self.all_folds_box.setEnabled(state == IDLE)
        folds = self.form.config().data.num_folds if self.all_folds_box.isChecked() else 0
        if folds and not reason:
            self.start_button.setToolTip(f"Train all {folds} folds with these settings, then "
                                         "score and tune them out-of-fold")
        self.resume_button.setToolTip(f"Continue {self.resumable_run}" if self.resumable_run else
                                      "Resume continues a stopped run (also from the Runs page)")
        index = self.state.index
        self.dataset_label.setText(f"Dataset: {self.state.dataset_dir} ({index.report.slices} "
                                   "slices)" if index is not None else "No dataset open")

    def shutdown(self) -> None:
        self.memory.wait()
        self.device_charts.stop()
