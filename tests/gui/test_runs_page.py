"""Runs page on hand-made run folders: listing, statuses, charts from metrics.csv, delete."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from core import paths
from core.metrics_log import MetricsLogger
from core.runs import RunFolder, config_summary, list_runs
from tests.gui.conftest import tiny_config


def _make_run(name: str, status: str, created: str, checkpoint: bool = True) -> Path:
    """A run folder written through RunFolder and the metrics logger, as a real run writes it."""
    run = RunFolder(paths.runs_dir() / name)
    run.create(tiny_config(), Path("/data"))
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
