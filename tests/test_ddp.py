"""Two processes on the CPU through Lightning's DDP (gloo), as on a workstation with two GPUs: one
metrics.csv with each step once, validation metrics equal to one process scoring the same weights
on the same fold, Stop mid-epoch (Ctrl+C reaches every process) and resume on 2 processes, then on 1.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.runs import RunFolder
from tests.conftest import REPO

DDP = ["--set", "data.image_size=64", "--set", "data.num_folds=2", "--set", "train.batch_size=4",
       "--set", "train.epochs=2", "--set", "train.log_every_n_steps=1", "--set",
       "train.device=cpu", "--set", "train.precision=32", "--set", "train.tune_postprocess=false",
       "--set", "train.devices=2", "--set", "train.checkpoint_minutes=0"]
VALIDATION = ("val_dice", "val_hausdorff", "val_score", "val_dice_large_bowel",
              "val_dice_small_bowel", "val_dice_stomach")


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", **extra)
    if "SEGFORMER_STUDIO_FAULT" not in extra:
        env.pop("SEGFORMER_STUDIO_FAULT", None)
    return env


def _train(*args, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", "--home", str(home), "train", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, env=_env(), timeout=600)


def _stopped_at_hold(args, home: Path, hold: str, tmp_path: Path) -> tuple[int, str]:
    """Run ``train`` until every process reaches ``hold`` (``step#N``), press Ctrl+C (SIGINT to
    the process group, as a terminal does), let them go on: ``(exit code, stdout)``."""
    release = tmp_path / f"release-{hold}"
    with open(tmp_path / "stdout.txt", "w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "main.py", "--home", str(home), "train", *map(str, args)], cwd=REPO,
            stdout=stdout, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env=_env(SEGFORMER_STUDIO_FAULT=f"hold:{hold}",
                     SEGFORMER_STUDIO_FAULT_RELEASE=str(release)))
        for line in process.stderr:
            if "fault: holding at step" in line:
                break
        os.killpg(process.pid, signal.SIGINT)
        release.touch()
        err = process.stderr.read()
        process.wait(timeout=300)
    assert "Traceback" not in err, err[-3000:]
    return process.returncode, (tmp_path / "stdout.txt").read_text()


def _rows(run: Path) -> list[dict]:
    return list(csv.DictReader(open(run / "metrics.csv", encoding="utf-8")))


def _validations(run: Path) -> dict[int, dict]:
    return {int(r["step"]): r for r in _rows(run) if r.get("val_score")}


def _each_step_once(run: Path, steps: int) -> None:
    trained = [int(r["step"]) for r in _rows(run) if r.get("train_loss")]
    assert trained == list(range(1, steps + 1))


@pytest.fixture(scope="module")
def uninterrupted(small_demo, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    run = root / "two processes"
    done = _train("--data", small_demo, "--run-dir", run, *DDP, home=root / "home")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder:") == 1  # the worker process reports nothing
    assert "finished: finished 2 epochs, 12 steps" in done.stdout
    return run


def test_two_processes_log_each_step_once_and_score_as_one(uninterrupted, small_demo, tmp_path):
    import pytorch_lightning as pl

    from core.checkpoints import load_checkpoint
    from core.config import from_dict
    from core.data.cache import build_cache
    from core.data.datamodule import SliceDataModule
    from core.data.scan import scan_dataset
    from core.model.lightning_module import SegmentationModule

    run = RunFolder(uninterrupted)
    _each_step_once(run.path, 12)
    assert run.info().status == "finished" and run.model_complete()
    # One process scores the final weights on the same fold: the metrics the two logged.
    checkpoint = load_checkpoint(run.last_checkpoint)
    config = from_dict(checkpoint["studio_config"])
    config.train.devices = "1"
    module = SegmentationModule(config.to_dict(), load_pretrained=False)
    module.load_state_dict(checkpoint["state_dict"])
    index = scan_dataset(small_demo)
    data = SliceDataModule(index, build_cache(index, 64, tmp_path / "cache"), config)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    [alone] = trainer.validate(module, datamodule=data, verbose=False)
    logged = _validations(run.path)[12]
    for key in VALIDATION:
        assert float(logged[key]) == pytest.approx(alone[key], abs=1e-6), key


def test_stop_and_resume_on_two_processes_then_on_one(uninterrupted, small_demo, tmp_path):
    home, run = tmp_path / "home", tmp_path / "stopped run"
    code, out = _stopped_at_hold(["--data", small_demo, "--run-dir", run, *DDP], home, "step#3",
                                 tmp_path)
    assert code == 0 and "stopped: stopped at step 3" in out, out
    assert RunFolder(run).info().status == "stopped"

    # On 2 processes again, past the end of epoch 0, stopped at step 8 (the 5th batch of these).
    code, out = _stopped_at_hold(["--resume", "--run-dir", run], home, "step#5", tmp_path)
    assert code == 0 and "stopped: stopped at step 8" in out, out
    first, again = _validations(uninterrupted)[6], _validations(run)[6]
    for key in VALIDATION:  # the resumed processes trained what the uninterrupted ones did
        assert float(again[key]) == pytest.approx(float(first[key]), abs=1e-6), key

    # On 1 process: twice the accumulation keeps each optimiser step's samples and the schedule.
    done = _train("--resume", "--run-dir", run, "--set", "train.devices=1", home=home)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "finished: finished 2 epochs, 12 steps" in done.stdout
    config = RunFolder(run).config()
    assert (config.train.devices, config.train.accumulate_grad_batches) == ("1", 2)
    _each_step_once(run, 12)
    final, reference = _validations(run)[12], _validations(uninterrupted)[12]
    assert float(final["val_score"]) == pytest.approx(float(reference["val_score"]), abs=0.05)

    more = _train("--resume", "--run-dir", run, "--set", "train.devices=3", home=home)
    assert more.returncode == 2 and "has finished" in more.stderr


def test_a_resume_on_more_devices_or_other_settings_is_refused(uninterrupted, small_demo,
                                                               tmp_path):
    import shutil

    home, run = tmp_path / "home", tmp_path / "copy"
    shutil.copytree(uninterrupted, run)
    RunFolder(run).update_info(status="stopped")
    grow = _train("--resume", "--run-dir", run, "--set", "train.devices=4", home=home)
    assert grow.returncode == 2
    assert "trained on 2 process(es) and cannot go on with 4" in grow.stderr
    other = _train("--resume", "--run-dir", run, "--set", "train.lr=0.1", home=home)
    assert other.returncode == 2 and "'train.lr=0.1' may not" in other.stderr


# -- the parts, without processes -------------------------------------------------------------------
def test_the_batch_order_over_a_run_is_the_same_on_any_number_of_processes():
    """What makes a resume on fewer devices continue the same run: per optimiser step, 2 processes
    read together what 1 process with twice the accumulation reads."""
    import numpy as np

    from core.data.datamodule import EpochShuffle

    def reads(world: int, group: int = 1) -> list[list[int]]:
        samplers = [EpochShuffle(50, seed=7) for _ in range(world)]
        for rank, sampler in enumerate(samplers):
            sampler.distribute(world, rank, 4, group)
            sampler.set_epoch(3)
        return [list(s) for s in samplers]

    two = reads(2)
    one = reads(1, group=2)[0]
    assert [len(r) for r in two] == [24, 24] and len(one) == 48  # 50 → 6 global batches of 8
    together = np.stack([np.array(r).reshape(-1, 4) for r in two], 1).reshape(-1).tolist()
    assert together == one
    assert sorted(one) == sorted(set(one))  # no slice twice in an epoch
    assert reads(1)[0] == EpochShuffle(50, seed=7).order(3).tolist()  # one process: as before


def test_validation_is_split_by_whole_case_days_and_balanced():
    import numpy as np

    from core.data.datamodule import validation_rows
    from core.errors import ConfigError

    codes = np.array([0] * 10 + [1] * 4 + [2] * 6 + [3] * 5)
    rows = np.arange(len(codes))
    shares = [validation_rows(rows, codes, 2, rank) for rank in range(2)]
    assert sorted(np.concatenate(shares).tolist()) == rows.tolist()
    for share in shares:  # whole case-days, in row order
        assert share.tolist() == sorted(share.tolist())
        for c in set(codes[share].tolist()):
            assert (codes[share] == c).sum() == (codes == c).sum()
    assert sorted(len(s) for s in shares) == [11, 14]  # 10+4 and 6+5: the best split of 25
    assert validation_rows(rows, codes, 1, 0) is rows
    with pytest.raises(ConfigError, match="4 case-days, fewer than the 5 processes"):
        validation_rows(rows, codes, 5, 0)


def test_devices_settings_and_ranks():
    from core.devices import ddp_backend, device_count, is_rank_zero, parse_devices
    from core.errors import ConfigError

    assert parse_devices("auto") == "auto" and parse_devices("2") == 2
    assert parse_devices("0, 1") == [0, 1]
    for bad in ("0", "-1", "two", "1,1"):
        with pytest.raises(ConfigError, match="train.devices"):
            parse_devices(bad)
    assert device_count("auto", "cpu") == 1 and device_count("3", "cpu") == 3
    assert device_count("auto", "gpu", gpus=4) == 4
    with pytest.raises(ConfigError, match="asks for 2 GPUs but 1"):
        device_count("0,1", "gpu", gpus=1)
    assert ddp_backend("gpu", "linux") == "nccl" and ddp_backend("gpu", "win32") == "gloo"
    assert ddp_backend("cpu", "linux") == "gloo"
    assert is_rank_zero({}) and is_rank_zero({"LOCAL_RANK": "0", "NODE_RANK": "0"})
    assert not is_rank_zero({"LOCAL_RANK": "1"}) and not is_rank_zero({"RANK": "3"})
    assert not is_rank_zero({"SLURM_PROCID": "1"})
    from core.devices import effective_batch_note

    note = effective_batch_note("2", 2, 8, 2, 4e-4, "cpu")
    assert "4 processes × batch 8 × accumulation 2 = 64 slices" in note
    assert "2.0× the learning rate" in note and "0.0008 instead of 0.0004" in note
    assert effective_batch_note("1", 1, 8, 1, 3e-4, "cpu") == \
        "Effective batch: batch 8 = 8 slices per optimiser step."


def test_the_packaged_program_reads_the_command_lightning_reexecutes():
    from main import reexecuted_argv

    exe = "/opt/SegFormerStudio/SegFormerStudio"
    args = [exe, exe, "train", "--run-dir", "r"]  # [sys.executable, abspath(argv[0]), *args]
    assert reexecuted_argv(args, exe, frozen=True) == [exe, "train", "--run-dir", "r"]
    assert reexecuted_argv([exe, "train"], exe, frozen=True) == [exe, "train"]
    source = ["main.py", "train"]
    assert reexecuted_argv(source, "/usr/bin/python3", frozen=False) == source


def test_a_fold_group_on_several_devices_is_refused(small_demo, tmp_path):
    done = _train("--data", small_demo, "--run-dir", tmp_path / "group", "--folds", "all", *DDP,
                  home=tmp_path / "home")
    assert done.returncode == 2
    assert "a fold group (--folds, Train all folds) trains on one device" in done.stderr
    assert not (tmp_path / "group").exists()
