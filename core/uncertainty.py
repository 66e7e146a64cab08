"""*Next to review*: rank case-days and slices by how unsure a model is of them, so a person
corrects the most useful ones first (active learning's uncertainty sampling).

A slice's uncertainty is the mean binary entropy of the model's organ probabilities, in bits, over
its pixels and the three organs: 0 where the model is sure (p near 0 or 1), 1 where it cannot tell
(p = ½). Confident background pulls the mean down alike on every slice of a scan, so within a
case-day the ranking follows the area the model is unsure of. A case-day ranks by the mean over
its slices. The probabilities are the model's own (its ensemble's, for a fold group), before
thresholding and post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core.events import Progress

_EPS = 1e-6


def slice_entropy(probabilities: np.ndarray) -> np.ndarray:
    """``(D, 3, H, W)`` (or ``(3, H, W)``) probabilities → mean binary entropy in bits per slice
    ``(D,)`` (or a 0-d array)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float32), _EPS, 1 - _EPS)
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return h.reshape(*h.shape[:-3], -1).mean(-1)


@dataclass
class CaseDayUncertainty:
    case_day: str
    slice_nums: list[int]
    entropy: np.ndarray
    """Per slice, in slice order (``slice_entropy``)."""

    @property
    def mean(self) -> float:
        return float(self.entropy.mean()) if self.entropy.size else 0.0


@dataclass
class UncertaintyRanking:
    """Case-days most uncertain first, each with its slices' uncertainty."""

    run_dir: Path
    case_days: list[CaseDayUncertainty] = field(default_factory=list)

    def next_slice(self, done: set[tuple[str, int]]) -> tuple[str, int, float] | None:
        """The most uncertain slice not in ``done`` (``(case_day, slice_num)``) in the most
        uncertain case-day that has one: ``(case_day, slice_num, entropy)``, or None when every
        ranked slice is done."""
        for day in self.case_days:
            for i in np.argsort(-day.entropy, kind="stable"):
                if (day.case_day, day.slice_nums[i]) not in done:
                    return day.case_day, day.slice_nums[i], float(day.entropy[i])
        return None


def rank_by_uncertainty(run_dir: str | Path, index, case_days: list[str] | None = None,
                        progress: Callable[[Progress], None] | None = None,
                        cancel: Callable[[], bool] | None = None, cache_root=None,
                        device: str = "auto") -> UncertaintyRanking:
    """Predict ``case_days`` (default: all; a dataset without labels is the usual case, one with
    labels shows where they are doubtful) with the run's best model (or a fold group's ensemble)
    and rank them. Slices already reviewed or corrected are skipped by ``next_slice``, not here."""
    from core.predict import Predictor, load_model

    run_dir = Path(run_dir)
    predictor = Predictor(load_model(run_dir, device), index, cache_root=cache_root,
                          postprocess=None)
    ranked = []
    for result in predictor.predict_all(case_days, progress, cancel):
        entropy = np.array([float(slice_entropy(p)) for p in result.probabilities])
        ranked.append(CaseDayUncertainty(result.case_day, [r.slice_num for r in result.records],
                                         entropy))
    ranked.sort(key=lambda day: -day.mean)
    return UncertaintyRanking(run_dir, ranked)
