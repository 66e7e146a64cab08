"""``main.py --self-test``: the same code the packaged program runs in CI (see packaging/)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core import selftest

REPO = Path(__file__).resolve().parents[1]


def test_self_test_from_source_passes(tmp_path):
    env = dict(os.environ, SEGFORMER_STUDIO_HOME=str(tmp_path / "user home"),
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("QT_QPA_PLATFORM", None)  # the self-test must choose offscreen itself
    proc = subprocess.run([sys.executable, "main.py", "--self-test"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    for stage in selftest.STAGES:
        assert re.search(rf"^self-test: {stage} ok \(\d+\.\d s\)", out, re.MULTILINE), out
    assert out.strip().splitlines()[-1].startswith("self-test: passed: 5 stages")
    # It never touches the user's data folder: everything went to a temporary one.
    assert not (tmp_path / "user home" / "runs").exists()
    assert not (tmp_path / "user home" / "cache").exists()


def test_a_failing_stage_fails_the_run_and_skips_what_needs_it(monkeypatch, capsys):
    def broken(_ctx):
        raise RuntimeError("disk on fire")

    before = os.environ.get("SEGFORMER_STUDIO_HOME")
    monkeypatch.setitem(selftest.STAGE_FUNCTIONS, "demo", broken)
    monkeypatch.setitem(selftest.STAGE_FUNCTIONS, "gui", lambda _ctx: "fine")
    code = selftest.run_self_test(("demo", "train", "gui"))
    out, err = capsys.readouterr()
    assert code == 1
    assert re.search(r"^self-test: demo FAILED \(\d+\.\d s\): RuntimeError: disk on fire$", out,
                     re.MULTILINE), out
    assert "self-test: train skipped (needs demo)" in out
    assert re.search(r"^self-test: gui ok ", out, re.MULTILINE)  # independent stages still run
    assert out.strip().splitlines()[-1].startswith("self-test: FAILED")
    assert "disk on fire" in err  # the traceback
    assert os.environ.get("SEGFORMER_STUDIO_HOME") == before  # restored


@pytest.mark.skipif(sys.platform == "win32", reason="closes fds 1 and 2 with a POSIX shell")
def test_missing_std_streams_go_to_a_log_file(tmp_path):
    """What a windowed build sees: sys.stdout / sys.stderr are None until core.stdio fixes them."""
    home = tmp_path / "home"
    code = ("import sys, warnings\n"
            "assert sys.stdout is None and sys.stderr is None\n"
            "from core.stdio import ensure_std_streams\n"
            "path = ensure_std_streams([])\n"
            "print('hello from', path)\n"
            "warnings.warn('a library warning')\n"
            "sys.stderr.write('to stderr\\n')\n"
            "assert sys.stdout.isatty() is False\n")
    env = dict(os.environ, SEGFORMER_STUDIO_HOME=str(home))
    proc = subprocess.run(f'"{sys.executable}" -c "$CODE" >&- 2>&-', shell=True, cwd=REPO,
                          env=dict(env, CODE=code), timeout=60)
    assert proc.returncode == 0
    logs = list((home / "logs").glob("console-*.log"))
    assert len(logs) == 1
    text = logs[0].read_text(encoding="utf-8")
    assert "hello from" in text and "a library warning" in text and "to stderr" in text


def test_std_streams_left_alone_when_they_work():
    from core.stdio import ensure_std_streams

    out, err = sys.stdout, sys.stderr
    assert ensure_std_streams([]) is None
    assert sys.stdout is out and sys.stderr is err


def test_home_option_moves_the_console_log(tmp_path):
    from core.stdio import log_folder

    assert log_folder(["--home", str(tmp_path / "a")]) == tmp_path / "a" / "logs"
    assert log_folder([f"--home={tmp_path / 'b'}", "train"]) == tmp_path / "b" / "logs"
