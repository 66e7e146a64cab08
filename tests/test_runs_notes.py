"""A run's name and note in run.json, and the settings of several runs side by side (no display)."""

from __future__ import annotations

import json
from pathlib import Path

from core.config import apply_overrides, StudioConfig
from core.runs import RunFolder, flatten_settings, settings_table


def test_a_name_and_note_survive_the_training_sessions_later_updates(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.create(StudioConfig(), Path("/data"))
    run.update_info(name="lower lr", note="lr 1e-4 to see whether the loss stops jumping")
    # What core.session writes while the run goes on and when it ends
    run.update_info(step=40)
    run.record_best("best-01-000040.ckpt", 0.61, "val_score", 40)
    run.update_info(status="finished", step=80)
    info = run.info()
    assert (info.status, info.step, info.best_score) == ("finished", 80, 0.61)
    assert info.name == "lower lr" and info.note.startswith("lr 1e-4")
    assert info.title("run") == "lower lr"


def test_a_run_json_without_name_and_note_still_loads(tmp_path):
    run = RunFolder(tmp_path / "old run")
    run.path.mkdir()
    run.info_path.write_text(json.dumps({"status": "finished", "best_dice": 0.7, "step": 12}))
    info = run.info()
    assert (info.status, info.best_score, info.step) == ("finished", 0.7, 12)
    assert info.name == "" and info.note == "" and not info.damaged
    assert info.title("old run") == "old run"


def test_settings_table_marks_the_settings_that_differ():
    base = StudioConfig()
    other = apply_overrides(StudioConfig(), ["train.lr=0.001", "model.variant=b2"])
    assert flatten_settings(base)["model.variant"] == "b0"
    assert flatten_settings({"status": "finished"}) == {"status": "finished"}
    rows = {row.key: row for row in settings_table([base, other, None])}
    assert rows["train.lr"].values == (3e-4, 1e-3, None) and rows["train.lr"].differs
    rows = {row.key: row for row in settings_table([{"status": "stopped", **flatten_settings(base)},
                                                    {"status": "stopped",
                                                     **flatten_settings(other)}])}
    assert list(rows)[:2] == ["status", "data.image_size"]  # first-seen order
    assert {key for key, row in rows.items() if row.differs} == {"train.lr", "model.variant"}
    assert rows["model.variant"].values == ("b0", "b2")
