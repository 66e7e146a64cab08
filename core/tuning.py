"""A run's validation case-days predicted at their original size: the input of the
post-processing search (``core.postprocess``), used by ``core.cv`` for the out-of-fold step."""

from __future__ import annotations

import numpy as np

from core.events import EventSink, LogMessage, ignore_events
from core.runs import RunFolder


def _cases(records) -> int:
    return records[0].case


def validation_predictions(run: RunFolder, index, cache_root=None,
                           on_event: EventSink = ignore_events, cancel=None):
    """``(case_day, float16 probabilities (D, 3, H, W), truth)`` of ``run``'s validation
    case-days, predicted by its best model at the original size (no post-processing)."""
    from core.data.datamodule import split_for
    from core.data.scan import load_masks
    from core.predict import Predictor, load_model

    config = run.config()
    _train, validation = split_for(index, config)
    groups = index.case_days()
    chosen = [c for c, records in groups.items() if _cases(records) in validation]
    sizes = [c for c in chosen if len({r.shape for r in groups[c]}) > 1]
    if sizes:
        on_event(LogMessage(f"{len(sizes)} validation case-days have slices of several sizes; "
                            "they are left out of the post-processing search", "warning"))
        chosen = [c for c in chosen if c not in sizes]
    on_event(LogMessage(f"fold {config.data.fold}: predicting its {len(chosen)} validation "
                        "case-days at their original size"))
    predictor = Predictor(load_model(run.path, config.train.device), index,
                          cache_root=cache_root, postprocess=None)
    for result in predictor.predict_all(chosen, cancel=cancel):
        probs = np.stack(result.probabilities).astype(np.float16)
        truth = np.stack([load_masks(r) for r in result.records])
        yield result.case_day, probs, truth
