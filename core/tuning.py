"""A run's validation case-days predicted at their original size — the input of the
post-processing search (``core.postprocess``), used by ``core.cv`` for the out-of-fold step — and
``tune_run``, which tunes a single run on them at the end of its training."""

from __future__ import annotations

import shutil
import time

import numpy as np

from core.errors import StudioError
from core.events import EventSink, LogMessage, ignore_events
from core.runs import RunFolder

TUNING_DIR = ".tuning"
"""Inside a run folder while it is tuned: the memory-mapped predictions (removed afterwards)."""


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


def tune_run(run: RunFolder, index=None, cache_root=None, on_event: EventSink = ignore_events,
             cancel=None) -> dict | None:
    """Choose the post-processing of a single run on its validation case-days (its best model's
    predictions, at the original size) and record it in ``model/studio.json`` (``postprocess``,
    applied by predict, Review and exports, and ``postprocess_tuning``: the checkpoint it was
    tuned for, the case-days, the score before and after). Returns that record; None when the run
    has no validation case-day to tune on. The predictions are memory-mapped from the run folder's
    ``.tuning/`` (a full fold does not fit in memory as float16) and removed afterwards.
    ``CancelledError`` when ``cancel()`` turns true; the model is then left untuned."""
    from core.data.scan import scan_dataset
    from core.postprocess import search

    config = run.config()
    meta = run.model_meta()
    if not meta:
        raise StudioError(f"'{run.path}' has no exported model/ to tune")
    if index is None:
        index = scan_dataset(run.info().data_dir)
    started = time.perf_counter()
    work = run.path / TUNING_DIR
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        predictions = []
        for n, (case_day, probs, truth) in enumerate(
                validation_predictions(run, index, cache_root, on_event, cancel)):
            for kind, array in (("probs", probs), ("truth", truth)):
                np.save(work / f"{n}-{kind}.npy", array)
            predictions.append((case_day, np.load(work / f"{n}-probs.npy", mmap_mode="r"),
                                np.load(work / f"{n}-truth.npy", mmap_mode="r")))
        if not predictions:
            on_event(LogMessage("the post-processing is not tuned: no validation case-day has "
                                "slices of one size", "warning"))
            return None
        on_event(LogMessage(f"tuning the post-processing on {len(predictions)} validation "
                            "case-days"))
        found = search(predictions, config.model.mode, cancel=cancel, workdir=work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = {"checkpoint": meta.get("checkpoint"), "case_days": len(predictions),
              "score_before": found.score_before, "score_after": found.score_after,
              "evaluated": found.evaluated, "seconds": round(time.perf_counter() - started, 1)}
    run.update_model_meta(postprocess=found.post.to_dict(),
                          postprocess_text=found.post.describe(config.model.mode),
                          postprocess_tuning=record)
    on_event(LogMessage(f"post-processing tuned on {len(predictions)} validation case-days: "
                        f"score {found.score_before:.4f} → {found.score_after:.4f} "
                        f"({found.post.describe(config.model.mode).replace(chr(10), '; ')})"))
    return record


def tuning_summary(meta: dict) -> str | None:
    """One line on a run's tuned post-processing, from ``model/studio.json`` (None: not tuned)."""
    record, text = meta.get("postprocess_tuning"), meta.get("postprocess_text")
    if not isinstance(record, dict) or not text:
        return None
    try:
        return (f"Post-processing tuned on {record['case_days']} validation case-days: score "
                f"{record['score_before']:.4f} → {record['score_after']:.4f} "
                f"({str(text).replace(chr(10), '; ')})")
    except (KeyError, TypeError, ValueError):
        return None
