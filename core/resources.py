"""Where the bundled resources (presets, memory terms, icon, theme) are: in a checkout, beside
``core/``; in a PyInstaller build, under ``sys._MEIPASS``; after ``pip install .``, in the installed
package ``segformer_studio_resources`` (pyproject.toml maps the ``resources/`` folder to it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

INSTALLED_PACKAGE = "segformer_studio_resources"


def resources_dir() -> Path:
    base = getattr(sys, "_MEIPASS", None)
    if base:
        return Path(base) / "resources"
    checkout = Path(__file__).resolve().parents[1] / "resources"
    if checkout.is_dir():
        return checkout
    spec = importlib.util.find_spec(INSTALLED_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return checkout
