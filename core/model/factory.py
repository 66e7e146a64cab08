"""Build SegFormer models from a table of ``SegformerConfig`` values; load local pretrained weights.

Nothing here downloads: ``model.pretrained`` must be a local folder written by ``save_pretrained``
(``config.json`` + weights), e.g. a copy of ``nvidia/mit-b0`` from a Hugging Face cache.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from core.config import ModelConfig
from core.data import ORGANS
from core.errors import ConfigError

log = logging.getLogger(__name__)

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


def output_channels(model_cfg: ModelConfig) -> int:
    """Multilabel: one sigmoid channel per organ; multiclass: background + one per organ."""
    return model_cfg.num_classes + (1 if model_cfg.mode == "multiclass" else 0)


def _labels(model_cfg: ModelConfig) -> list[str]:
    organs = list(ORGANS) if model_cfg.num_classes == len(ORGANS) else [
        f"class_{i}" for i in range(model_cfg.num_classes)]
    return (["background"] if model_cfg.mode == "multiclass" else []) + organs


def segformer_config(model_cfg: ModelConfig):
    from transformers import SegformerConfig

    if model_cfg.variant not in VARIANT_TABLE:
        raise ConfigError(f"model.variant: '{model_cfg.variant}' is not one of "
                          f"{', '.join(VARIANT_TABLE)}")
    labels = _labels(model_cfg)
    return SegformerConfig(
        **VARIANT_TABLE[model_cfg.variant],
        num_attention_heads=[1, 2, 5, 8],
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )


def build_segformer(model_cfg: ModelConfig, warn_random: bool = True):
    """Return a ``SegformerForSemanticSegmentation`` for ``model_cfg``.

    With ``model_cfg.pretrained`` set, the encoder (and whatever else matches) is loaded from that
    local folder and the classification head is re-initialised for our labels; otherwise the model is
    randomly initialised and, with ``warn_random``, a warning is logged (not when a checkpoint's
    weights are about to replace them).
    """
    from transformers import SegformerForSemanticSegmentation

    config = segformer_config(model_cfg)
    if not model_cfg.pretrained:
        if warn_random:
            log.warning("No pretrained weights chosen: the %s model starts from random initialisation "
                        "(training takes longer). Pick a local folder in model.pretrained to "
                        "fine-tune.", model_cfg.variant.upper())
        return SegformerForSemanticSegmentation(config)
    folder = Path(model_cfg.pretrained)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"model.pretrained: '{folder}' has no config.json; pick the folder written "
                          f"by save_pretrained (config.json + model.safetensors)")
    _check_pretrained_variant(folder, model_cfg.variant)
    try:
        model = SegformerForSemanticSegmentation.from_pretrained(
            folder, id2label=config.id2label,
            label2id=config.label2id, ignore_mismatched_sizes=True, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.pretrained: cannot load weights from '{folder}': {exc}") from None
    log.info("Loaded pretrained weights from %s", folder)
    return model


def pretrained_variant_problem(folder: Path, variant: str) -> str | None:
    """Why ``folder`` does not hold weights of ``variant`` (a message naming the setting), or None.

    A pretrained folder brings its own encoder shape; it must be the variant the settings name, or
    the memory estimate, run names and presets would describe another model."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"model.pretrained: cannot read '{Path(folder) / 'config.json'}': {exc}"
    shape = (config.get("hidden_sizes"), config.get("depths"))
    found = next((name for name, row in VARIANT_TABLE.items()
                  if shape == (row["hidden_sizes"], row["depths"])), None)
    if found == variant:
        return None
    what = f"MiT-{found.upper()}" if found else f"an encoder with depths {shape[1]}"
    hint = f"set model.variant to {found}" if found else "pick a SegFormer (MiT) folder"
    return f"model.pretrained: '{folder}' holds {what} weights but model.variant is {variant}; {hint}"


def _check_pretrained_variant(folder: Path, variant: str) -> None:
    problem = pretrained_variant_problem(folder, variant)
    if problem:
        raise ConfigError(problem)
