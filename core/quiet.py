"""Silence library chatter that has no reader: progress bars and warnings about our own choices.

A windowed (packaged) program has no console, and tqdm bars from ``save_pretrained`` or Lightning's
notes about hooks we override on purpose only clutter the log.
"""

from __future__ import annotations

import warnings


def quiet_libraries() -> None:
    warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer`.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    # Resuming a run stopped mid-epoch draws the epoch's remaining batches from a fresh shuffle;
    # that is intended (see TrainingSession), not a reason to alarm anyone.
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
