"""Where the bundled resources (icon, theme, presets) are, in a checkout and in a PyInstaller build."""

from __future__ import annotations

import sys
from pathlib import Path


def resources_dir() -> Path:
    # PyInstaller unpacks data files under sys._MEIPASS; in a checkout they sit beside gui/.
    base = getattr(sys, "_MEIPASS", None)
    return Path(base) / "resources" if base else Path(__file__).resolve().parents[1] / "resources"


def icon_path() -> Path:
    return resources_dir() / "icons" / "app.png"


def theme_path() -> Path:
    return resources_dir() / "theme.qss"


def presets_dir() -> Path:
    return resources_dir() / "presets"
