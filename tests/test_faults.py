"""Faults at named moments, in real processes (issue: runs you can trust).

The training process is killed with SIGKILL inside checkpoint and model writes and between the
validation row and the checkpoint (``core.faults`` points, chosen with an environment variable —
never with sleeps), a second process is pointed at a run folder in use, Ctrl+C is pressed twice, and
run artefacts are damaged on purpose. After each, the run either resumes to the same end or stops
with one ``error:`` line — and nothing the user had is lost.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.checkpoints import load_checkpoint
from core.runs import RunFolder, RunLock
from tests.conftest import REPO

TINY = ["--set", "data.image_size=64", "--set", "data.num_folds=2", "--set", "train.batch_size=4",
        "--set", "train.epochs=2", "--set", "train.log_every_n_steps=1", "--set",
        "train.accumulate_grad_batches=2", "--set", "train.device=cpu",
        "--set", "train.tune_postprocess=false"]


def cli(*args, home: Path, fault: str = "", release: Path | None = None, **kwargs):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    env.pop("SEGFORMER_STUDIO_FAULT", None)
    if fault:
        env["SEGFORMER_STUDIO_FAULT"] = fault
    if release is not None:
        env["SEGFORMER_STUDIO_FAULT_RELEASE"] = str(release)
    return subprocess.run([sys.executable, "main.py", "--home", str(home), *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=600, **kwargs)


def in_process(capsys, *args, home: Path):
    """``main.main`` in this process (no interpreter start-up): ``(exit code, stdout, stderr)``."""
    from main import main

    capsys.readouterr()
    code = main(["--home", str(home), *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def train_rows(run: Path) -> list[dict]:
    return list(csv.DictReader(open(run / "metrics.csv", encoding="utf-8")))


def weights(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]


# -- kill -9 at every moment that writes something, then resume to the end ------------------------
def test_killed_at_each_moment_the_run_resumes_to_the_same_end_and_predicts(small_demo, tmp_path,
                                                                            capsys):
    home = tmp_path / "home"
    whole, run = tmp_path / "uninterrupted", tmp_path / "killed run"
    # In subprocesses like the killed ones: the same thread count, so the same float sums.
    done = cli("train", "--data", small_demo, "--run-dir", whole, *TINY, home=home)
    assert done.returncode == 0, done.stderr

    first = cli("train", "--data", small_demo, "--run-dir", run, *TINY, home=home,
                fault="kill:startup")
    assert first.returncode == -signal.SIGKILL
    assert RunFolder(run).status() == "interrupted" and RunFolder(run).resumable()
    assert not (run / "checkpoints" / "last.ckpt").exists()  # it resumes from the start
    moments = [
        "kill:step#8",             # mid-epoch 1, after epoch 0's checkpoint (step 6)
        "kill:validation-row#1",   # epoch 1's validation row written, its checkpoint not
        "kill:checkpoint-partial#1",  # a checkpoint fully in *.partial, not renamed yet
        "kill:model-export#1",     # the trained model half exported to model/
    ]
    for fault in moments:
        killed = cli("train", "--run-dir", run, "--resume", home=home, fault=fault)
        assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr[-2000:])
        folder = RunFolder(run)
        assert folder.status() == "interrupted", fault
        steps = [int(r["step"]) for r in train_rows(run) if r["train_loss"]]
        assert steps == sorted(steps)  # appended in order; a resume trims what it repeats
        assert not (run / "model").exists() or folder.model_complete(), fault
    finished = cli("train", "--run-dir", run, "--resume", home=home)
    assert finished.returncode == 0, finished.stderr
    assert "Taking over the run folder" in finished.stderr  # the dead process's lock
    assert RunFolder(run).info().status == "finished" and RunFolder(run).model_complete()
    assert not list(run.rglob("*.partial")) and not list(run.glob(".model.*"))

    a, b = weights(whole), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same model as the run never killed
    key = ("epoch", "step", "train_loss", "val_score")
    assert [tuple(r[k] for k in key) for r in train_rows(run)] == \
        [tuple(r[k] for k in key) for r in train_rows(whole)]  # every step once

    out = tmp_path / "submission.csv"
    code, _, err = in_process(capsys, "predict", "--checkpoint", run / "model", "--data",
                              small_demo, "--out", out, home=home)
    assert code == 0, err
    assert len(out.read_text().splitlines()) == 1 + 3 * 72


# -- one writer per run folder ---------------------------------------------------------------------
def test_a_second_process_is_refused_and_a_stale_lock_is_taken_over(small_demo, tmp_path, capsys,
                                                                     caplog):
    home, run = tmp_path / "home", tmp_path / "busy run"
    lock = RunLock(run)
    run.mkdir()
    with lock:  # this test process "trains" in the folder
        second = cli("train", "--data", small_demo, "--run-dir", run, *TINY, home=home)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith(f"error: run folder '{run}' is in use by process {os.getpid()} ")
    assert not (run / "metrics.csv").exists()  # it wrote nothing

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename,
                                              "started": "2026-01-01T00:00:00+00:00"}))
    with caplog.at_level("WARNING"):
        code, _, err = in_process(capsys, "train", "--data", small_demo, "--run-dir", run, *TINY,
                                  "--set", "train.epochs=1", home=home)
    assert code == 0, err
    assert f"Taking over the run folder {run} from process {dead.pid}" in caplog.text
    assert not (run / "run.lock").exists()


# -- Ctrl+C twice ----------------------------------------------------------------------------------
def test_ctrl_c_twice_keeps_the_last_checkpoint_and_exits_130(small_demo, tmp_path):
    home, run = tmp_path / "home", tmp_path / "aborted run"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1",
               SEGFORMER_STUDIO_FAULT="hold:step#16",  # batch 16, mid-epoch 1; last.ckpt: step 6
               SEGFORMER_STUDIO_FAULT_RELEASE=str(tmp_path / "never"))
    with open(tmp_path / "stdout.txt", "w") as stdout:  # a file: a full pipe cannot block it
        process = subprocess.Popen([sys.executable, "main.py", "--home", str(home), "train",
                                    "--data", str(small_demo), "--run-dir", str(run), *TINY],
                                   cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True,
                                   env=env)
        _wait_for_line(process.stderr, "fault: holding at step")
        process.send_signal(signal.SIGINT)
        _wait_for_line(process.stderr, "stopping after this step")
        process.send_signal(signal.SIGINT)
        err = process.stderr.read()
        process.wait(timeout=300)
    out = (tmp_path / "stdout.txt").read_text()
    assert process.returncode == 130, err[-3000:]
    assert f"aborted: aborted; kept {run / 'checkpoints' / 'last.ckpt'} (step 6)" in out
    info = RunFolder(run).info()
    assert info.status == "stopped" and RunFolder(run).resumable()
    assert "Traceback" not in err


def _wait_for_line(stream, text: str) -> str:
    for line in stream:
        if text in line:
            return line
    raise AssertionError(f"the process ended before printing {text!r}")


# -- damaged run artefacts -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stopped_run(small_demo, tmp_path_factory):
    """A run stopped after its first epoch (a checkpoint, a best checkpoint and model/), copied
    fresh into each test that damages it."""
    root = tmp_path_factory.mktemp("damaged")
    run = root / "run"
    done = cli("train", "--data", small_demo, "--run-dir", run, *TINY, "--set", "train.epochs=2",
               home=root / "home", fault="kill:step#16")  # batch 16: after epoch 0
    assert done.returncode == -signal.SIGKILL
    assert (run / "checkpoints" / "last.ckpt").is_file()
    from core.predict import export_model

    folder = RunFolder(run)
    export_model(folder, folder.best_checkpoint(), folder.config())  # as a finished epoch leaves it
    return run, root / "home"


@pytest.fixture
def damaged(stopped_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(stopped_run[0], run)
    (run / "run.lock").unlink(missing_ok=True)
    return run, stopped_run[1]


@pytest.mark.parametrize("what", ["garbage", "truncated"])
def test_a_damaged_last_checkpoint_is_one_error_and_the_run_is_left_alone(damaged, capsys, what):
    run, home = damaged
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(b"not a checkpoint at all" if what == "garbage" else last.read_bytes()[:5000])
    before = (run / "run.json").read_text()
    code, _, err = in_process(capsys, "train", "--run-dir", run, "--resume", home=home)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: '{last}' is not a SegFormer Studio checkpoint (damaged or truncated")
    assert (run / "run.json").read_text() == before  # no status rewritten


def test_a_damaged_best_checkpoint_is_one_error_for_predict(damaged, small_demo, tmp_path, capsys):
    run, home = damaged
    best = RunFolder(run).best_checkpoint()
    best.write_bytes(best.read_bytes()[:3000])
    code, _, err = in_process(capsys, "predict", "--run", run, "--data", small_demo, "--out",
                              tmp_path / "s.csv", home=home)
    assert code == 2
    assert err.strip().startswith(f"error: '{best}' is not a SegFormer Studio checkpoint")


@pytest.mark.parametrize("damage", ["config garbage", "config empty", "weights truncated",
                                    "weights missing", "studio.json missing"])
def test_a_damaged_model_folder_is_exported_again_from_the_best_checkpoint(damaged, small_demo,
                                                                           tmp_path, damage,
                                                                           capsys):
    run, home = damaged
    model = run / "model"
    if damage == "config garbage":
        (model / "config.json").write_bytes(b"\x00\xffgarbage")
    elif damage == "config empty":
        (model / "config.json").write_text("")
    elif damage == "weights truncated":
        data = (model / "model.safetensors").read_bytes()
        (model / "model.safetensors").write_bytes(data[:len(data) // 2])
    elif damage == "weights missing":
        (model / "model.safetensors").unlink()
    else:
        (model / "studio.json").unlink()
    code, _, err = in_process(capsys, "predict", "--checkpoint", model, "--data", small_demo,
                              "--out", tmp_path / "s.csv", home=home)
    assert code == 0, err
    assert "exporting it again from" in err
    assert RunFolder(run).model_complete()


def test_a_model_folder_outside_a_run_that_is_damaged_is_one_error(damaged, small_demo, tmp_path,
                                                                   capsys):
    import shutil

    run, home = damaged
    alone = tmp_path / "shared model"
    shutil.copytree(run / "model", alone)
    (alone / "config.json").write_text("{")
    code, _, err = in_process(capsys, "predict", "--checkpoint", alone, "--data", small_demo,
                              "--out", tmp_path / "s.csv", home=home)
    assert code == 2
    assert err.strip() == (f"error: cannot load the model: '{alone / 'config.json'}' "
                           "cannot be read (JSONDecodeError)")


@pytest.mark.parametrize("damage", ["binary", "cut short", "run.json garbage", "metrics junk"])
def test_damaged_settings_and_records_are_recovered_on_resume(damaged, damage, capsys, caplog):
    run, home = damaged
    config = run / "config.yaml"
    if damage == "binary":
        config.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 20)
    elif damage == "cut short":
        lines = config.read_text().splitlines(keepends=True)
        config.write_text("".join(lines[:12]))  # valid YAML, half the settings
    elif damage == "run.json garbage":
        (run / "run.json").write_bytes(b"{\x00\x01 not json")
    else:
        with open(run / "metrics.csv", "a", encoding="utf-8") as fh:
            fh.write("3,garbage,,\n\x00\x00junk line\n12345")
    with caplog.at_level("WARNING"):
        code, _, err = in_process(capsys, "train", "--run-dir", run, "--resume", home=home)
    assert code == 0, err
    folder = RunFolder(run)
    assert folder.info().status == "finished"
    assert folder.config().train.epochs == 2  # the run's own settings, not the defaults
    if damage in ("binary", "cut short"):
        assert "config.yaml is damaged or incomplete; restored from" in caplog.text
    steps = [int(r["step"]) for r in train_rows(run) if r["train_loss"]]
    assert steps == list(range(1, 13))


def test_a_run_without_checkpoint_and_a_cut_config_refuses_to_resume(small_demo, tmp_path,
                                                                     capsys):
    from core.config import apply_overrides, StudioConfig

    home, run = tmp_path / "home", tmp_path / "early"
    RunFolder(run).create(apply_overrides(StudioConfig(), ["train.epochs=1"]), small_demo)
    lines = (run / "config.yaml").read_text().splitlines(keepends=True)
    (run / "config.yaml").write_text("".join(lines[:12]))  # killed before its first checkpoint
    code, _, err = in_process(capsys, "train", "--run-dir", run, "--resume", home=home)
    assert code == 2
    assert err.strip().startswith(f"error: cannot resume '{run}': config file")
    assert "the settings are incomplete" in err


# -- untrusted files never run code ----------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_a_crafted_checkpoint_is_refused_without_running_it(small_demo, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, evil)  # torch's own pickle format
    code, _, err = in_process(capsys, "predict", "--checkpoint", evil, "--data", small_demo,
                              "--out", tmp_path / "s.csv", home=tmp_path / "home")
    assert code == 2
    assert err.strip().startswith(f"error: '{evil}' is not a SegFormer Studio checkpoint")
    assert "nothing in it was run" in err
    assert not marker.exists()
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(_Payload(marker)))
    code, _, err = in_process(capsys, "predict", "--checkpoint", plain, "--data", small_demo,
                              "--out", tmp_path / "s.csv", home=tmp_path / "home")
    assert code == 2 and "is not a SegFormer Studio checkpoint" in err
    assert not marker.exists()


def test_a_pickled_pretrained_folder_is_refused_without_running_it(small_demo, tmp_path, capsys):
    from core.config import ModelConfig
    from core.model.factory import segformer_config

    marker = tmp_path / "pwned"
    folder = tmp_path / "mit-b0"
    segformer_config(ModelConfig(variant="b0")).save_pretrained(folder)
    torch.save({"weight": _Payload(marker)}, folder / "pytorch_model.bin")
    code, _, err = in_process(capsys, "train", "--data", small_demo, "--run-dir", tmp_path / "run",
                              *TINY, "--set", f"model.pretrained={folder}", home=tmp_path / "home")
    assert code == 2
    assert err.strip().startswith(f"error: model.pretrained: cannot load weights from '{folder}'")
    assert not marker.exists()


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_last_one(small_demo, tmp_path, capsys,
                                                                   monkeypatch):
    """"No space left" in the middle of a checkpoint write (the 3rd write: epoch 1's): one error
    line, the previous last.ckpt intact and loadable, no partial file left, and the run resumes."""
    from core import faults

    home, run = tmp_path / "home", tmp_path / "full disk"
    monkeypatch.setenv("SEGFORMER_STUDIO_FAULT", "enospc:checkpoint-partial#3")
    faults._counts.clear()
    code, _, err = in_process(capsys, "train", "--data", small_demo, "--run-dir", run, *TINY,
                              home=home)
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: could not write checkpoint") and "is intact" in line
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 6
    assert not list(run.rglob("*.partial"))
    assert RunFolder(run).info().status == "failed" and RunFolder(run).resumable()
    monkeypatch.delenv("SEGFORMER_STUDIO_FAULT")
    code, _, err = in_process(capsys, "train", "--run-dir", run, "--resume", home=home)
    assert code == 0, err
    assert RunFolder(run).info().status == "finished"
