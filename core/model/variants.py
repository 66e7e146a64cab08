"""The MiT-B0…B5 encoder shapes, as a table of ``SegformerConfig`` values, and the check that a
pretrained folder holds the variant the settings name.

It imports nothing from the rest of the engine, so the settings (``core.config``) and the model
factory can both use it without importing each other.
"""

from __future__ import annotations

import json
from pathlib import Path

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""The weights files of a ``save_pretrained`` folder that the model factory loads, in the order a
download prefers them (here, not in ``core.checkpoints``: discovery must not import torch)."""

_MIT_WIDE = [64, 128, 320, 512]
VARIANT_TABLE: dict[str, dict] = {
    # hidden_sizes, depths and decoder width of the MiT encoders in the SegFormer paper (Table 6).
    "b0": {"hidden_sizes": [32, 64, 160, 256], "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "b1": {"hidden_sizes": _MIT_WIDE, "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "b2": {"hidden_sizes": _MIT_WIDE, "depths": [3, 4, 6, 3], "decoder_hidden_size": 768},
    "b3": {"hidden_sizes": _MIT_WIDE, "depths": [3, 4, 18, 3], "decoder_hidden_size": 768},
    "b4": {"hidden_sizes": _MIT_WIDE, "depths": [3, 8, 27, 3], "decoder_hidden_size": 768},
    "b5": {"hidden_sizes": _MIT_WIDE, "depths": [3, 6, 40, 3], "decoder_hidden_size": 768},
}
VARIANTS = tuple(VARIANT_TABLE)


def variant_of(config: dict) -> str | None:
    """The MiT variant whose encoder shape a ``config.json`` describes, or None."""
    shape = (config.get("hidden_sizes"), config.get("depths"))
    return next((name for name, row in VARIANT_TABLE.items()
                 if shape == (row["hidden_sizes"], row["depths"])), None)


def pretrained_variant_problem(folder: Path, variant: str) -> str | None:
    """Why ``folder`` does not hold weights of ``variant`` (a message naming the setting), or None.

    A pretrained folder brings its own encoder shape; it must be the variant the settings name, or
    the memory estimate, run names and presets would describe another model."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"model.pretrained: cannot read '{Path(folder) / 'config.json'}': {exc}"
    found = variant_of(config)
    if found == variant:
        return None
    what = f"MiT-{found.upper()}" if found else f"an encoder with depths {config.get('depths')}"
    hint = f"set model.variant to {found}" if found else "pick a SegFormer (MiT) folder"
    return f"model.pretrained: '{folder}' holds {what} weights but model.variant is {variant}; {hint}"
