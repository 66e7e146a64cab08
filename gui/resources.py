"""The app's bundled files: icon, theme and presets (``core.resources`` finds the folder)."""

from __future__ import annotations

from pathlib import Path

from core.resources import resources_dir

__all__ = ["icon_path", "presets_dir", "resources_dir", "theme_path"]


def icon_path() -> Path:
    return resources_dir() / "icons" / "app.png"


def theme_path() -> Path:
    return resources_dir() / "theme.qss"


def presets_dir() -> Path:
    return resources_dir() / "presets"
