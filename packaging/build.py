#!/usr/bin/env python3
"""Build the one-folder program ``dist/SegFormerStudio/`` with PyInstaller.

    python packaging/build.py              build (incremental: PyInstaller reuses build/ when it can)
    python packaging/build.py --clean      build from scratch (drops PyInstaller's cache and build/)
    python packaging/build.py --smoke      build, then run the built program's --self-test
    python packaging/build.py --console    Windows: a console build, for debugging the packaged app

Run it with the project's environment (``.venv``, with torch installed — on Windows the CUDA build —
and PyInstaller from the ``dev`` extras). Started with another Python, it re-runs itself with
``.venv``'s when that exists. At the end it prints the build time and the folder's size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPEC = HERE / "SegFormerStudio.spec"
APP_NAME = "SegFormerStudio"
DIST = ROOT / "dist"
WORK = ROOT / "build"


def venv_python() -> Path:
    venv = Path(os.environ.get("STUDIO_VENV", ROOT / ".venv"))  # as tasks.py
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def ensure_build_environment() -> None:
    """Re-run with .venv's Python when this one lacks torch or PyInstaller."""
    if _has("PyInstaller") and _has("torch"):
        return
    venv = venv_python()
    # Compare environments, not interpreters: a venv's python is a symlink to the one it was made
    # from, so resolved executables are the same file even when the packages differ.
    if venv.exists() and Path(sys.prefix).resolve() != venv.parents[1].resolve():
        print(f"re-running with {venv}", flush=True)
        sys.exit(subprocess.call([str(venv), str(Path(__file__).resolve()), *sys.argv[1:]]))
    missing = [m for m in ("torch", "PyInstaller") if not _has(m)]
    sys.exit(f"error: {', '.join(missing)} not installed in {sys.executable}. Run "
             "'python3 tasks.py test' once (it creates .venv with the dev extras), or "
             "'pip install \"pyinstaller>=6.10\"' into the project's environment")


def folder_size(path: Path) -> int:
    total = 0
    for entry in path.rglob("*"):
        if entry.is_file() and not entry.is_symlink():
            total += entry.stat().st_size
    return total


def executable(dist: Path = DIST) -> Path:
    return dist / APP_NAME / (f"{APP_NAME}.exe" if os.name == "nt" else APP_NAME)


def build(clean: bool = False, console: bool = False) -> int:
    from core.data import ORGANS  # noqa: F401 - fail early and clearly if run outside the repo

    sys.path.insert(0, str(HERE))
    from make_icon import ensure_icon

    ensure_icon()
    if clean:
        shutil.rmtree(WORK, ignore_errors=True)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if console:
        env["SEGFORMER_STUDIO_CONSOLE"] = "1"
    else:
        env.pop("SEGFORMER_STUDIO_CONSOLE", None)
    command = [sys.executable, "-m", "PyInstaller", str(SPEC), "--noconfirm",
               "--distpath", str(DIST), "--workpath", str(WORK), "--log-level", "WARN"]
    if clean:
        command.append("--clean")
    print("building:", " ".join(command), flush=True)
    started = time.perf_counter()
    code = subprocess.call(command, cwd=ROOT, env=env)
    elapsed = time.perf_counter() - started
    if code:
        print(f"error: PyInstaller failed (exit {code}) after {elapsed:.0f} s", file=sys.stderr)
        return code
    folder = DIST / APP_NAME
    size = folder_size(folder)
    files = sum(1 for p in folder.rglob("*") if p.is_file())
    print(f"built {folder} in {elapsed / 60:.1f} min ({elapsed:.0f} s): "
          f"{size / 2**30:.2f} GiB, {files} files; run {executable()}", flush=True)
    return 0


def smoke() -> int:
    """Run the built program's self-test with a bare environment (no Python on PATH)."""
    if os.name != "nt":
        return subprocess.call(["bash", str(HERE / "smoke_test.sh"), str(DIST / APP_NAME)])
    # Windows: the windowed .exe attaches to this console for its output (core/stdio.py); the
    # environment keeps only what Windows itself needs, so no Python is on PATH.
    system_root = os.environ.get("SystemRoot", r"C:\Windows")
    env = {name: os.environ[name] for name in ("SystemRoot", "TEMP", "TMP", "LOCALAPPDATA",
                                               "APPDATA", "USERPROFILE") if name in os.environ}
    env["PATH"] = os.path.join(system_root, "System32")
    exe = executable()
    print(f"self-test of {exe}", flush=True)
    return subprocess.call([str(exe), "--self-test"], env=env, cwd=str(exe.parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build dist/SegFormerStudio/ with PyInstaller.")
    parser.add_argument("--clean", action="store_true", help="rebuild from scratch")
    parser.add_argument("--smoke", action="store_true",
                        help="then run the built program's --self-test")
    parser.add_argument("--console", action="store_true",
                        help="Windows: keep a console window (debug build)")
    args = parser.parse_args(argv)
    ensure_build_environment()
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    code = build(clean=args.clean, console=args.console)
    if code == 0 and args.smoke:
        code = smoke()
    return code


if __name__ == "__main__":
    sys.exit(main())
