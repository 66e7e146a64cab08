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
import re
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


# Shared libraries of Qt's xcb platform plugin (the Linux desktop) that a bare Debian/Ubuntu lacks,
# and the packages that have them. libxcb-cursor0 is loaded at run time, so ldd does not list it.
QT_XCB_PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0", "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1", "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0", "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0", "libxkbcommon.so.0": "libxkbcommon0",
    "libxcb-randr.so.0": "libxcb-randr0", "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0", "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-sync.so.1": "libxcb-sync1", "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-render.so.0": "libxcb-render0", "libxcb-xinput.so.0": "libxcb-xinput0",
    "libX11-xcb.so.1": "libx11-xcb1", "libxcb.so.1": "libxcb1", "libX11.so.6": "libx11-6",
    "libEGL.so.1": "libegl1", "libGL.so.1": "libgl1", "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1", "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0", "libfreetype.so.6": "libfreetype6",
}
_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package that ships ``soname`` (libfoo.so.1 → libfoo1, libfoo2.so.0 →
    libfoo2-0 by Debian's naming rule, where the table above does not say)."""
    if soname in QT_XCB_PACKAGES:
        return QT_XCB_PACKAGES[soname]
    name, _, version = soname.partition(".so.")
    name = name.lower()
    return f"{name}-{version}" if name[-1:].isdigit() else f"{name}{version}"


def missing_qt_libraries(ldd_output: str, cursor_found: bool) -> list[str]:
    """Missing shared libraries, from ``ldd`` of Qt's xcb plugin (and whether xcb-cursor is there)."""
    missing = list(dict.fromkeys(_NOT_FOUND.findall(ldd_output)))
    if not cursor_found and "libxcb-cursor.so.0" not in missing:
        missing.insert(0, "libxcb-cursor.so.0")
    return missing


def check_qt_desktop_libraries() -> str | None:
    """On a Linux desktop, the one ``apt-get install`` line for what Qt's xcb plugin lacks (or None:
    nothing missing, not Linux, not using xcb, or nothing to check with)."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if not sys.platform.startswith("linux") or (platform and not platform.startswith("xcb")) or \
            (not platform and os.environ.get("WAYLAND_DISPLAY")):
        return None
    plugins = list(VENV.glob("lib/python3*/site-packages/PySide6/Qt/plugins/platforms/libqxcb.so"))
    ldd = shutil.which("ldd")
    if not plugins or not ldd:
        return None
    qt_lib = plugins[0].parents[2] / "lib" / "libQt6XcbQpa.so.6"
    output = ""
    for library in (plugins[0], qt_lib):
        if library.exists():
            output += subprocess.run([ldd, str(library)], capture_output=True, text=True).stdout
    import ctypes.util

    missing = missing_qt_libraries(output, ctypes.util.find_library("xcb-cursor") is not None)
    if not missing:
        return None
    packages = " ".join(dict.fromkeys(debian_package(name) for name in missing))
    return (f"error: the Qt window needs system libraries that are missing ({', '.join(missing)}). "
            f"Install them with:\n  sudo apt-get install {packages}")


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "app"
    if command not in ("app", "test"):
        print("usage: python3 tasks.py app | test [pytest arguments]", file=sys.stderr)
        return 2
    ensure_environment(dev=command == "test")
    python = str(venv_python())
    if command == "app":
        problem = None if argv[1:] else check_qt_desktop_libraries()  # the window, not a command
        if problem:
            print(problem, file=sys.stderr)
            return 2
        return subprocess.call([python, str(ROOT / "main.py"), *argv[1:]], cwd=ROOT)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.call([python, "-m", "pytest", *(argv[1:] or ["tests"])], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
