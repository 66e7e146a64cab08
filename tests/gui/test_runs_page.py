"""Runs page on hand-made run folders: listing, statuses, charts from metrics.csv, the detail panel
following the selection, names and notes, comparing runs, ONNX export, delete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtWidgets import QFileDialog, QMessageBox

from core import paths
from core.errors import StudioError
from core.metrics_log import MetricsLogger
from core.runs import RunFolder, config_summary, list_runs
from tests.gui.conftest import tiny_config


def _make_run(name: str, status: str, created: str, checkpoint: bool = True,
              overrides: tuple[str, ...] = ()) -> Path:
    """A run folder written through RunFolder and the metrics logger, as a real run writes it."""
    run = RunFolder(paths.runs_dir() / name)
    run.create(tiny_config(*overrides), Path("/data"))
    run.update_info(status=status, created=created, step=6, best_score=0.5, monitor="val_score",
                    best_checkpoint="best-01-000006.ckpt" if checkpoint else "")
    if checkpoint:
        run.last_checkpoint.write_bytes(b"ckpt")
    logger = MetricsLogger(run.metrics_path)
    for step in range(6):  # Lightning passes the 0-based step index
        logger.log_metrics({"epoch": step // 3, "train_loss": 1 / (step + 1), "lr": 1e-3,
                            "images_per_sec": 20}, step)
        if step % 3 == 2:
            logger.log_metrics({"epoch": step // 3, "val_loss": 0.4, "val_dice": 0.5,
                                "val_dice_large_bowel": 0.4, "val_dice_small_bowel": 0.5,
                                "val_dice_stomach": 0.6, "val_hausdorff": 0.3,
                                "val_score": 0.5}, step)
    return run.path


def test_run_folders_read_back_status_settings_and_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGFORMER_STUDIO_HOME", str(tmp_path))
    older = _make_run("older", "finished", "2025-01-01T10:00:00+00:00")
    newer = _make_run("newer", "stopped", "2025-02-01T10:00:00+00:00")
    runs = list_runs()
    assert [r.path for r in runs] == [newer, older]
    assert runs[0].resumable() and not runs[1].resumable()  # finished runs are complete
    assert config_summary(runs[0].config()).startswith("B0 · 64 px · batch 8")
    steps, validations = runs[0].metric_events()
    assert [s.step for s in steps] == [1, 2, 3, 4, 5, 6]
    assert [v.epoch for v in validations] == [0, 1]
    assert validations[0].metrics["val_dice_stomach"] == 0.6


def test_runs_page_lists_opens_and_deletes(qtbot, monkeypatch, tmp_path):
    from gui.pages.runs_page import RunsPage
    from gui.training_runner import TrainingRunner

    monkeypatch.setenv("SEGFORMER_STUDIO_HOME", str(tmp_path))
    stopped = _make_run("stopped run", "stopped", "2025-02-01T10:00:00+00:00")
    killed = _make_run("killed run", "running", "2025-01-01T10:00:00+00:00")
    page = RunsPage(TrainingRunner())
    qtbot.addWidget(page)
    assert page.table.rowCount() == 2
    statuses = {page.table.item(r, 0).text(): page.table.item(r, 1).text() for r in range(2)}
    assert statuses == {"stopped run": "stopped", "killed run": "interrupted"}

    page.select_run(stopped)
    assert page.table.item(page.table.currentRow(), 2).text() == "0.500 (score)"
    assert page.resume_button.isEnabled() and page.delete_button.isEnabled()
    page.open_button.click()
    assert len(page.charts.train_loss.x) == 6 and len(page.charts.mean_dice.x) == 2
    assert page.charts.score.y == [0.5, 0.5] and page.charts.hausdorff.y == [0.3, 0.3]
    assert "stopped run" in page.details.text()

    requested = []
    page.resume_requested.connect(requested.append)
    page.resume_button.click()
    assert requested == [stopped]

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.No)
    page.delete_button.click()
    assert stopped.exists()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    page.delete_button.click()
    assert not stopped.exists()
    assert page.table.rowCount() == 1 and page.runs[0].path == killed
    assert page.charts.train_loss.x == []  # the deleted run's charts are gone too


@pytest.fixture
def page(qtbot, monkeypatch, tmp_path):
    from gui.pages.runs_page import RunsPage
    from gui.settings import StudioSettings
    from gui.training_runner import TrainingRunner

    monkeypatch.setenv("SEGFORMER_STUDIO_HOME", str(tmp_path))
    _make_run("run a", "stopped", "2025-02-01T10:00:00+00:00")
    _make_run("run b", "finished", "2025-01-01T10:00:00+00:00", overrides=("train.lr=0.001",))
    page = RunsPage(TrainingRunner(), StudioSettings(tmp_path / "settings.ini"))
    qtbot.addWidget(page)
    yield page
    page.shutdown()


def test_the_details_follow_the_selection_and_a_refresh(page):
    run_a, run_b = (paths.runs_dir() / name for name in ("run a", "run b"))
    page.select_run(run_a)
    assert "run a</b> — stopped" in page.details.text() and len(page.charts.train_loss.x) == 6
    # The run goes on and finishes while the page shows it
    RunFolder(run_a).update_info(status="finished", step=9)
    MetricsLogger(RunFolder(run_a).metrics_path).log_metrics(
        {"epoch": 2, "train_loss": 0.1, "lr": 1e-3, "images_per_sec": 20}, 8)
    page.refresh()
    assert "run a</b> — finished" in page.details.text()
    assert "7 logged steps" in page.details.text() and len(page.charts.train_loss.x) == 7
    page.select_run(run_b)
    assert "run b</b> — finished" in page.details.text() and page.open_run.path == run_b


def test_a_name_and_note_are_saved_in_run_json_and_kept_by_later_updates(page):
    run_a = paths.runs_dir() / "run a"
    page.select_run(run_a)
    page.name_edit.setText("baseline")
    page.note_edit.setText("lr 3e-4, no tricks")
    page.note_edit.editingFinished.emit()
    info = json.loads((run_a / "run.json").read_text())
    assert (info["name"], info["note"]) == ("baseline", "lr 3e-4, no tricks")
    row = next(r for r in range(page.table.rowCount()) if page.runs[r].path == run_a)
    assert page.table.item(row, 0).text() == "baseline"
    assert "run a" in page.table.item(row, 0).toolTip() and "baseline" in page.details.text()
    RunFolder(run_a).update_info(status="finished")  # as the training session does at its end
    page.refresh()
    assert page.runs[row].info.note == "lr 3e-4, no tricks" and page.runs[row].status == "finished"
    assert page.note_edit.text() == "lr 3e-4, no tricks"


def test_two_selected_runs_are_compared(page):
    page.select_runs([paths.runs_dir() / "run a", paths.runs_dir() / "run b"])
    compare = page.compare
    assert page.lower.currentWidget() is compare and page.open_run is None
    for plot in (compare.charts.loss_plot, compare.charts.score_plot, compare.charts.dice_plot):
        assert len(compare.charts.curves[plot]) == 2
    table = compare.table
    assert [table.horizontalHeaderItem(c).text() for c in range(2)] == ["run a", "run b"]
    keys = [table.verticalHeaderItem(r).text() for r in range(table.rowCount())]
    lr, variant, status = keys.index("train.lr"), keys.index("model.variant"), keys.index("status")
    assert [table.item(lr, c).text() for c in range(2)] == ["0.0003", "0.001"]
    assert table.item(lr, 0).font().bold() and not table.item(variant, 0).font().bold()
    assert table.item(status, 1).text() == "finished"
    compare.only_differences.setChecked(True)
    assert not table.isRowHidden(lr) and table.isRowHidden(variant)
    assert not page.resume_button.isEnabled() and not page.delete_button.isEnabled()
    page.select_run(paths.runs_dir() / "run b")  # back to one run: its own charts
    assert page.lower.currentWidget() is page.single_view and "run b" in page.details.text()


def test_epoch_axes_show_whole_epochs_only(page):
    page.select_run(paths.runs_dir() / "run a")
    page.charts.set_extent(6, 3)
    for axis in (page.charts.dice_plot.getAxis("bottom"),
                 page.compare.charts.score_plot.getAxis("bottom")):
        ticks = [v for _spacing, values in axis.tickValues(0.5, 3.5, 400) for v in values]
        assert ticks and all(float(v).is_integer() for v in ticks), ticks
        assert axis.tickStrings([1.0, 2.0], 1, 0.5) == ["1", "2"]


def test_onnx_export_needs_a_model_and_reports_its_result(page, qtbot, monkeypatch, tmp_path):
    import core.engines

    run_a = paths.runs_dir() / "run a"
    page.select_run(run_a)
    assert not page.export_button.isEnabled()  # no model/ yet
    monkeypatch.setattr(RunFolder, "model_complete", lambda self: self.name == "run a")
    page.refresh()
    assert page.export_button.isEnabled()
    out = tmp_path / "exports" / "a.onnx"
    asked = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *a: asked.append(a[2]) or (str(out), ""))

    def failing_export(source, path):
        raise StudioError(f"cannot write '{path}': disk full")

    monkeypatch.setattr(core.engines, "export_onnx", failing_export)
    page.export_button.click()
    assert asked[0].endswith("run a.onnx") and not page.export_button.isEnabled()
    qtbot.waitUntil(lambda: page.findChild(QMessageBox, "errorDialog") is not None)
    dialog = page.findChild(QMessageBox, "errorDialog")
    assert "disk full" in dialog.text() and "run a" in dialog.text()
    dialog.close()
    qtbot.waitUntil(page.export_button.isEnabled)

    def export(source, path):
        assert Path(source) == run_a / "model"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"onnx")
        return path

    monkeypatch.setattr(core.engines, "export_onnx", export)
    monkeypatch.setattr(core.engines, "verify_onnx", lambda source, path: 2e-7)
    monkeypatch.setattr(core.engines, "available_engines", lambda: ["torch", "onnxruntime"])
    page.export_button.click()
    qtbot.waitUntil(page.export_button.isEnabled)
    assert str(out) in page.export_status.text() and "2.0e-07" in page.export_status.text()
    assert page.settings.export_dir == out.parent


def test_the_details_say_how_the_post_processing_was_tuned(page):
    run_b = paths.runs_dir() / "run b"
    page.select_run(run_b)
    assert "Post-processing tuned" not in page.details.text()  # no model/ yet: not tuned
    (run_b / "model").mkdir()
    (run_b / "model" / "studio.json").write_text(json.dumps({
        "checkpoint": "best-01-000004.ckpt", "postprocess_text": "stomach: threshold 0.40\nsmall",
        "postprocess_tuning": {"case_days": 3, "score_before": 0.61, "score_after": 0.6543}}))
    page.refresh()
    assert ("Post-processing tuned on 3 validation case-days: score 0.6100 → 0.6543 "
            "(stomach: threshold 0.40; small)") in page.details.text()
