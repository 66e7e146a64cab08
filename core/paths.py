"""Where user data lives: demo dataset, preprocessing cache, runs, logs.

The default is the platform's user data folder (``platformdirs``: ``%LOCALAPPDATA%\\SegFormerStudio``
on Windows, ``~/.local/share/SegFormerStudio`` on Linux). The environment variable
``SEGFORMER_STUDIO_HOME`` or the ``--home`` option moves all of it.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "SegFormerStudio"
HOME_ENV = "SEGFORMER_STUDIO_HOME"


def studio_home() -> Path:
    override = os.environ.get(HOME_ENV)
    home = Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    home.mkdir(parents=True, exist_ok=True)
    return home


def set_studio_home(path: str | Path) -> None:
    os.environ[HOME_ENV] = str(Path(path).expanduser().resolve())


def _sub(name: str) -> Path:
    path = studio_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    return _sub("cache")


def runs_dir() -> Path:
    return _sub("runs")


def logs_dir() -> Path:
    return _sub("logs")


def demo_dir() -> Path:
    return studio_home() / "demo"
