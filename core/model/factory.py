"""Build SegFormer models from a table of ``SegformerConfig`` values; load local pretrained weights.

Nothing here downloads: ``model.pretrained`` must be a local folder written by ``save_pretrained``
(``config.json`` + weights), e.g. a copy of ``nvidia/mit-b0`` from a Hugging Face cache.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.config import ModelConfig
from core.data import ORGANS
from core.errors import ConfigError
from core.model.variants import VARIANT_TABLE, pretrained_variant_problem

log = logging.getLogger(__name__)

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
                          f"{', '.join(VARIANT_TABLE)}", key="model.variant")
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
    from core.checkpoints import pretrained_folder_problem

    problem = pretrained_folder_problem(folder, need_studio_meta=False)
    if problem:
        raise ConfigError(f"model.pretrained: {problem}; pick the folder written by "
                          "save_pretrained (config.json + model.safetensors)", key="model.pretrained")
    _check_pretrained_variant(folder, model_cfg.variant)
    try:
        # transformers loads weights with torch's weights_only unpickler (or safetensors): a
        # crafted pytorch_model.bin cannot run code; trust_remote_code stays off. use_kernels=False:
        # transformers >= 5.25 otherwise "kernelizes" layers by default, fetching compiled kernels
        # from the Hub (a download nobody asked for; and the packaged app carries no `kernels`).
        model = SegformerForSemanticSegmentation.from_pretrained(
            folder, id2label=config.id2label, label2id=config.label2id,
            ignore_mismatched_sizes=True, local_files_only=True, trust_remote_code=False,
            use_kernels=False)
    except Exception as exc:  # noqa: BLE001 - any failure to load the user's folder is their input
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConfigError(f"model.pretrained: cannot load weights from '{folder}' ({reason}); "
                          "pick a folder written by save_pretrained", key="model.pretrained") from None
    log.info("Loaded pretrained weights from %s", folder)
    return model


def _check_pretrained_variant(folder: Path, variant: str) -> None:
    problem = pretrained_variant_problem(folder, variant)
    if problem:
        raise ConfigError(problem, key="model.pretrained")
