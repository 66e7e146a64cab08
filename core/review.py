"""The Review page's model: a run's predictions of a dataset's case-days, with images, truth and
scores, computed on demand and kept within a memory bound.

Plain Python (no Qt). ``ReviewSession.compute`` runs on a worker thread: it loads the run's best
model on the fastest engine here (``core.engines.load_for_engine``, ``auto``; kept for the
``MAX_MODELS`` runs used last), predicts the case-day, reads its 16-bit images and, when the dataset
has labels, its true masks and scores. Results are kept by (run, dataset, case-day), least recently
used first out once they hold more than ``max_bytes`` (default 1 GiB: about eight 144-slice 360×310
case-days, each ~130 MB of images, predicted and true masks), so switching back to a recent case-day
is instant and memory stays bounded however many are opened.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core.data.scan import DatasetIndex, SliceRecord, load_masks, read_png16
from core.engines import load_for_engine
from core.errors import CancelledError, StudioError
from core.events import Progress
from core.export import WINDOW_PERCENTILES
from core.metrics import CaseDayScore, score_case_day
from core.predict import LoadedModel, Predictor
from core.runs import RunFolder

KAGGLE_SLICE_THICKNESS_MM = 3.0
"""Distance between the slices of the UW-Madison scans (the file names give only the pixel spacing)."""

# Percentiles of a whole case-day from every 4th pixel of every 4th row: the same window to within a
# grey level, 16× fewer values to sort.
_WINDOW_STRIDE = 4


@dataclass(eq=False)
class CaseDayResult:
    case_day: str
    records: list[SliceRecord]
    images: np.ndarray
    """``(D, H, W)`` the slices as read (uint16 for 16-bit PNGs), in slice order."""
    prediction: np.ndarray
    """``(D, 3, H, W)`` bool predicted masks at the original size."""
    truth: np.ndarray | None
    """``(D, 3, H, W)`` bool true masks, or None when the dataset has no labels."""
    score: CaseDayScore | None
    has_prediction: bool = True
    """False for a case-day shown with its true masks only (no run chosen): ``prediction`` is empty."""

    @property
    def depth(self) -> int:
        return len(self.records)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays, in bytes."""
        return sum(a.nbytes for a in (self.images, self.prediction, self.truth) if a is not None)

    @property
    def spacing(self) -> tuple[float, float]:
        """Pixel width and height in mm (from the file names)."""
        return self.records[0].spacing

    @property
    def slice_thickness(self) -> float:
        """Distance between slices in mm: the source's own (NIfTI / DICOM headers) when the records
        carry it, else the Kaggle scans' 3 mm."""
        thickness = getattr(self.records[0], "slice_thickness", None)
        return float(thickness) if thickness else KAGGLE_SLICE_THICKNESS_MM

    def stacked_masks(self) -> np.ndarray:
        """``prediction``, named as ``core.predict.CaseDayPrediction`` names it, so a result exports
        as a volume like one (``core.volume_export.export_volumes``)."""
        return self.prediction

    def slice_position(self, slice_num: int) -> int | None:
        """The index of the slice with this number (from the file name), or None."""
        for index, record in enumerate(self.records):
            if record.slice_num == slice_num:
                return index
        return None

    def auto_window(self) -> tuple[float, float]:
        """The case-day's ``WINDOW_PERCENTILES`` intensities (black, white)."""
        sample = self.images[:, ::_WINDOW_STRIDE, ::_WINDOW_STRIDE]
        low, high = np.percentile(sample, WINDOW_PERCENTILES)
        return float(low), float(max(high, low + 1))

    def worst_slices(self) -> list[tuple[int, float, int]]:
        """``(slice index, lowest organ Dice, that organ's index)`` of every scored slice, worst
        first; slices where every organ is skipped (nothing predicted, nothing true) are left out."""
        if self.score is None:
            return []
        dice = self.score.dice_per_slice
        rows = []
        for index, values in enumerate(dice):
            if np.isnan(values).all():
                continue
            organ = int(np.nanargmin(values))
            rows.append((index, float(values[organ]), organ))
        return sorted(rows, key=lambda row: (row[1], row[0]))


def slice_dice(result: CaseDayResult, index: int) -> list[float]:
    """Dice per organ on one slice (NaN = skipped, or no truth)."""
    if result.score is None:
        return [math.nan] * 3
    return [float(v) for v in result.score.dice_per_slice[index]]


def load_case_day(prediction_masks: np.ndarray, records: list[SliceRecord], case_day: str,
                  has_labels: bool) -> CaseDayResult:
    """Read the images (and the truth, when labelled) that go with predicted masks, and score them."""
    images = np.stack([read_png16(r.path) for r in records])
    truth = score = None
    if has_labels and all(r.rles is not None for r in records):
        truth = np.stack([load_masks(r) for r in records])
        score = score_case_day(case_day, prediction_masks, truth)
    return CaseDayResult(case_day, records, images, prediction_masks, truth, score)


def truth_only(index: DatasetIndex, case_day: str) -> CaseDayResult:
    """A case-day's images and true masks with no prediction (nothing to score)."""
    records = index.case_days().get(case_day)
    if not records:
        from core.errors import StudioError
        raise StudioError(f"case-day '{case_day}' is not in the dataset {index.root}")
    images = np.stack([read_png16(r.path) for r in records])
    truth = None
    if index.has_labels and all(r.rles is not None for r in records):
        truth = np.stack([load_masks(r) for r in records])
    prediction = np.zeros((len(records), 3) + images.shape[1:], bool)
    return CaseDayResult(case_day, records, images, prediction, truth, None, has_prediction=False)


MAX_MODELS = 2
"""Loaded models kept (a B5 holds ~340 MB); the least recently used is released first."""
DEFAULT_MAX_BYTES = 2**30
"""Bytes of case-day results kept by default (1 GiB)."""


class ReviewSession:
    """Models, predictors and results of this session. ``compute`` may run on a worker thread (one
    at a time); ``cached`` is cheap and safe from the GUI thread."""

    def __init__(self, device: str = "auto", max_bytes: int = DEFAULT_MAX_BYTES,
                 engine: str = "auto"):
        """``engine``: ``core.engines.load_for_engine``'s (``auto``: the fastest here)."""
        self.device, self.engine = device, engine
        self.max_bytes = max_bytes
        self._models: OrderedDict[Path, LoadedModel] = OrderedDict()
        self._predictors: dict[Path, tuple[DatasetIndex, Predictor]] = {}
        self._results: OrderedDict[tuple[Path, Path, str], CaseDayResult] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(run_dir: Path, index: DatasetIndex, case_day: str) -> tuple[Path, Path, str]:
        return Path(run_dir), Path(index.root), case_day

    def cached(self, run_dir: Path, index: DatasetIndex, case_day: str) -> CaseDayResult | None:
        with self._lock:
            key = self._key(run_dir, index, case_day)
            found = self._results.get(key)
            if found is not None:
                self._results.move_to_end(key)
            return found

    def _model(self, run_dir: Path) -> LoadedModel:
        if run_dir in self._models:
            self._models.move_to_end(run_dir)
            return self._models[run_dir]
        model = load_for_engine(run_dir, self.device, self.engine)
        self._models[run_dir] = model
        while len(self._models) > MAX_MODELS:
            old, _ = self._models.popitem(last=False)
            self._predictors.pop(old, None)
        return model

    def compute(self, run_dir: Path, index: DatasetIndex, case_day: str,
                progress: Callable[[Progress], None] | None = None,
                cancel: Callable[[], bool] | None = None) -> CaseDayResult:
        found = self.cached(run_dir, index, case_day)
        if found is not None:
            return found
        run_dir = Path(run_dir)
        if progress:
            progress(Progress("model", 0, 0, f"loading the model of {run_dir.name}"))
        model = self._model(run_dir)
        # A predictor belongs to one dataset index (its cache rows): a new index, a new predictor.
        known = self._predictors.get(run_dir)
        if known is None or known[0] is not index:
            known = self._predictors[run_dir] = (index, Predictor(model, index))
        predicted = known[1].predict_case_day(case_day, progress, cancel)
        if cancel is not None and cancel():
            raise CancelledError("review prediction cancelled")
        if progress:
            progress(Progress("read", 0, 0, f"reading {case_day}'s images"))
        result = load_case_day(predicted.stacked_masks(), predicted.records, case_day,
                               index.has_labels)
        with self._lock:
            self._results[self._key(run_dir, index, case_day)] = result
            total = sum(r.nbytes for r in self._results.values())
            while total > self.max_bytes and len(self._results) > 1:
                _, old = self._results.popitem(last=False)
                total -= old.nbytes
        return result


def fold_roles(run: RunFolder, index: DatasetIndex) -> dict[str, str]:
    """``{case-day: "validation" | "training"}`` of ``index`` for the fold ``run`` was trained on
    (the same split by case as training: ``core.data.datamodule.split_for``); empty when the run's
    settings cannot be read, it was trained on another dataset folder, or this one has no labels."""
    from core.data.datamodule import split_for
    from core.errors import ConfigError

    config, trained_on = run.config_or_none(), run.info().data_dir
    if config is None or not index.has_labels or (
            trained_on and Path(trained_on).resolve() != Path(index.root).resolve()):
        return {}
    try:
        _train, validation = split_for(index, config)
    except ConfigError:  # a dataset with fewer cases than the run's folds: no roles to show
        return {}
    return {case_day: "validation" if records[0].case in validation else "training"
            for case_day, records in index.case_days().items()}


def runs_with_models(runs: list[RunFolder]) -> list[RunFolder]:
    """The runs that have a checkpoint to review."""
    return [r for r in runs if r.has_checkpoint()]


@dataclass(frozen=True)
class ReviewSource:
    """A model the Review page can predict with: a run, or a fold group's ensemble."""
    path: Path
    label: str
    is_group: bool = False


def review_sources(root: Path) -> list[ReviewSource]:
    """Fold groups with a trained fold (their ensembles), then every run with a checkpoint
    (the folds too), newest first, each with the label to show."""
    from core.runs import FoldGroup, is_group
    from core.runs import list_runs

    root = Path(root)
    if not root.is_dir():
        return []
    sources = []
    for folder in sorted((f for f in root.iterdir() if is_group(f)), reverse=True):
        group = FoldGroup(folder)
        try:
            trained = sum(r.has_checkpoint() for r in group.fold_runs())
            cv = group.cv()
        except StudioError:
            continue
        if not trained:
            continue
        score = (f" · out-of-fold score {cv['oof_tuned']['score']:.3f}"
                 if cv and isinstance(cv.get("oof_tuned"), dict) else "")
        sources.append(ReviewSource(folder, f"{group.info().get('name') or folder.name} "
                                    f"(ensemble of {trained} folds){score}", True))
    for run in runs_with_models(list_runs(root)):
        info = run.info()
        best = (f" · best {info.monitor.removeprefix('val_')} {info.best_score:.3f}"
                if info.best_score is not None else "")
        sources.append(ReviewSource(run.path, f"{info.name or run.name}{best}"))
    return sources
