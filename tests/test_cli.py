"""main.py's exit codes: 0 success, 2 one-line error for bad input, 1 internal error with a log."""

import subprocess
import sys

import pytest

from main import main
from tests.conftest import REPO


def _run(*args, **kw):
    return subprocess.run([sys.executable, "main.py", *args], cwd=REPO, capture_output=True,
                          text=True, **kw)


def test_demo_then_train_from_the_readme(tmp_path):
    data, run_dir = tmp_path / "my data", tmp_path / "ränn"
    done = _run("demo", str(data), "--cases", "3", "--slices", "8")
    assert done.returncode == 0, done.stderr
    assert "demo dataset written" in done.stdout
    trained = _run("train", "--data", str(data), "--run-dir", str(run_dir), "--set",
                   "train.epochs=1", "--set", "data.image_size=64", "--set", "data.num_folds=3")
    assert trained.returncode == 0, trained.stderr
    assert "epoch 0 validation" in trained.stdout and "finished" in trained.stdout
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("args, message", [
    (["scan", "/nonexistent/data"], "error: dataset folder '/nonexistent/data' does not exist"),
    (["train", "--data", ".", "--run-dir", "/tmp/x", "--set", "model.variant=b9"],
     "error: model.variant: 'b9' is not allowed"),
    (["train", "--data", ".", "--run-dir", "/tmp/x", "--set", "nonsense"],
     "error: --set 'nonsense': expected KEY=VALUE"),
    (["train", "--run-dir", "/tmp/x", "--resume"], "error: '/tmp/x' is not a run folder"),
    (["frobnicate"], "error: argument COMMAND: invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's errors exit, with our one-line message
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), err
    assert "Traceback" not in err


def test_internal_error_exits_1_with_log_path(monkeypatch, capsys, small_demo):
    import core.data.scan

    def broken(*_a, **_k):
        raise RuntimeError("boom")

    monkeypatch.setattr(core.data.scan, "scan_dataset", broken)
    code = main(["scan", str(small_demo)])
    err = capsys.readouterr().err
    assert code == 1
    assert "internal error: RuntimeError: boom (details in " in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1  # the log has it
    log_path = err.split("details in ")[1].rstrip(")\n")
    assert "Traceback" in open(log_path, encoding="utf-8").read()
