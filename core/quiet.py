"""Silence library chatter that has no reader: progress bars and warnings about our own choices.

A windowed (packaged) program has no console, and tqdm bars from ``save_pretrained`` or Lightning's
notes about hooks we override on purpose only clutter the log.
"""

from __future__ import annotations

import logging
import warnings

LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")


def quiet_libraries() -> None:
    warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer`.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    # Lightning warns that a run resumed mid-epoch cannot continue its epoch's batch order; ours does
    # (core.data.datamodule.EpochShuffle, positioned from the checkpoint), which Lightning cannot see.
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before.*")
    # DDP: SegFormer's depthwise convolutions get gradients in another memory layout than DDP's
    # buckets; the reducer copies them (correct; a copy of a few MB per step).
    warnings.filterwarnings("ignore", message=r".*Grad strides do not match bucket view strides.*")
    # Lightning prints its notes (devices found, tips) to stderr through a handler of its own; send
    # them to our log instead, where the console shows warnings only.
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
