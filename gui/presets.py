"""Named starting points for the Train page, stored as YAML in resources/presets/."""

from __future__ import annotations

from core.config import StudioConfig, load_config
from gui.resources import presets_dir

PRESETS = {
    "Quick (CPU)": "quick_cpu.yaml",
    "8 GB GPU": "gpu_8gb.yaml",
    "Large GPU": "large_gpu.yaml",
}


def load_preset(name: str) -> StudioConfig:
    """The preset's settings on top of the defaults (``ConfigError`` for a broken file)."""
    return load_config(presets_dir() / PRESETS[name])


def default_preset() -> str:
    """What a first start gets: the 8 GB GPU preset where there is a GPU, else the CPU one."""
    import torch  # the engine; the window asks only once it has loaded it in the background

    return "8 GB GPU" if torch.cuda.is_available() else "Quick (CPU)"
