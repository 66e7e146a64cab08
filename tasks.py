#!/usr/bin/env python3
"""The two set-up commands: ``python3 tasks.py app`` and ``python3 tasks.py test``.

Each creates the virtual environment ``.venv`` and installs the dependencies from pyproject.toml when
they are missing or changed, then launches the app on the demo dataset or runs the whole test suite.
Torch comes first, in the build that fits the machine: the CPU build where there is no NVIDIA GPU
(``torch==2.13.0``), the CUDA build where there is one (see README for Windows).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("STUDIO_VENV", ROOT / ".venv"))
CPU_TORCH = "torch==2.13.0"
# The CUDA build of torch on Windows comes from PyTorch's own index (PyPI's Windows wheels are CPU).
WINDOWS_CUDA_INDEX = "https://download.pytorch.org/whl/cu126"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def has_nvidia_gpu() -> bool:
    if os.environ.get("STUDIO_FORCE_CPU_TORCH"):
        return False
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pip(*args: str) -> None:
    subprocess.check_call([str(venv_python()), "-m", "pip", "install",
                           "--disable-pip-version-check", *args])


def ensure_environment(dev: bool) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    if dev:
        requirements += project["optional-dependencies"]["dev"]
    gpu = has_nvidia_gpu()
    wanted = hashlib.sha1(repr((requirements, gpu, sys.version_info[:2])).encode()).hexdigest()
    stamp = VENV / ".setup-stamp"
    if stamp.exists() and stamp.read_text() == wanted and venv_python().exists():
        return
    if not venv_python().exists():
        print(f"creating the virtual environment in {VENV}", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    if not gpu:
        print("no NVIDIA GPU found: installing the CPU build of torch", flush=True)
        pip(CPU_TORCH)
    elif sys.platform == "win32":
        print("NVIDIA GPU found: installing the CUDA build of torch", flush=True)
        pip("torch", "--index-url", WINDOWS_CUDA_INDEX)
    print("installing the dependencies", flush=True)
    pip(*requirements)
    stamp.write_text(wanted)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "app"
    if command not in ("app", "test"):
        print("usage: python3 tasks.py app | test [pytest arguments]", file=sys.stderr)
        return 2
    ensure_environment(dev=command == "test")
    python = str(venv_python())
    if command == "app":
        return subprocess.call([python, str(ROOT / "main.py"), *argv[1:]], cwd=ROOT)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.call([python, "-m", "pytest", *(argv[1:] or ["tests"])], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
