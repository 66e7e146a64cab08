"""Predict organ masks for whole case-days with a trained model.

A model comes from a run folder (its best checkpoint, else ``last.ckpt``), a checkpoint file, or a
``save_pretrained`` folder with ``studio.json`` (a run's ``model/``). It is moved to the device once.
Slices go through the same preprocessing as in training — the preprocessing cache, built or reused —
and the probabilities are resized back to each slice's original size *before* thresholding, so masks
line up with the original 16-bit images (266×266, 360×310, …).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from core import paths
from core.config import StudioConfig, from_dict
from core.data.cache import SliceCache, build_cache, neighbour_rows
from core.data.scan import DatasetIndex, SliceRecord
from core.errors import CancelledError, StudioError
from core.events import Progress
from core.model.lightning_module import SegmentationModule, predict_masks
from core.quiet import quiet_libraries

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    module: SegmentationModule
    config: StudioConfig
    device: torch.device
    source: Path

    @property
    def image_size(self) -> int:
        return self.config.data.image_size


def best_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint by the Dice in its name, else ``last.ckpt``."""
    folder = Path(run_dir) / "checkpoints"
    scored = []
    for path in folder.glob("best-*.ckpt"):
        match = re.search(r"-(\d+(?:\.\d+)?)\.ckpt$", path.name)
        scored.append((float(match.group(1)) if match else -1.0, path))
    if scored:
        return max(scored)[1]
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    raise StudioError(f"'{run_dir}' has no checkpoints; train a model first (or pick the run's "
                      "model/ folder)")


def pick_device(device: str = "auto") -> torch.device:
    if device == "gpu" and not torch.cuda.is_available():
        raise StudioError("a GPU was asked for but no CUDA GPU is available; use the CPU")
    return torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")


def load_model(source: str | Path, device: str = "auto") -> LoadedModel:
    """Load a model from a run folder, a ``.ckpt`` file, or a ``save_pretrained`` folder."""
    quiet_libraries()
    source = Path(source)
    target = pick_device(device)
    try:
        if source.is_dir() and (source / "studio.json").is_file():
            module = _from_pretrained_folder(source)
        else:
            checkpoint = best_checkpoint(source) if source.is_dir() else source
            if not checkpoint.is_file():
                raise StudioError(f"checkpoint '{checkpoint}' does not exist")
            module = SegmentationModule.load_from_checkpoint(checkpoint, map_location="cpu",
                                                             load_pretrained=False)
            source = checkpoint
    except (RuntimeError, KeyError, EOFError, ValueError) as exc:
        raise StudioError(f"cannot load a model from '{source}': {exc}") from None
    module.eval().to(target)  # the one device move
    return LoadedModel(module, module.config, target, source)


def _from_pretrained_folder(folder: Path) -> SegmentationModule:
    from transformers import SegformerForSemanticSegmentation

    meta = json.loads((folder / "studio.json").read_text(encoding="utf-8"))
    config = from_dict({"data": {"image_size": meta["image_size"], "context": meta["context"]},
                        "model": {"mode": meta["mode"], "variant": meta["variant"]}})
    module = SegmentationModule(config.to_dict(), load_pretrained=False)
    module.model = SegformerForSemanticSegmentation.from_pretrained(folder, local_files_only=True)
    return module


@dataclass
class CaseDayPrediction:
    case_day: str
    records: list[SliceRecord]
    masks: np.ndarray  # bool (D, 3, H, W) at the original size
    probabilities: np.ndarray  # float16 (D, 3, H, W); for multiclass, softmax of the organs


class Predictor:
    """Predicts case-days of one dataset; the cache is built (or reused) on first use."""

    def __init__(self, model: LoadedModel, index: DatasetIndex, threshold: float = 0.5,
                 tta: bool = False, batch_size: int = 16, cache_root: str | Path | None = None):
        self.model, self.index = model, index
        self.threshold, self.tta, self.batch_size = threshold, tta, batch_size
        self.cache_root = Path(cache_root) if cache_root else paths.cache_dir()
        self._cache: SliceCache | None = None
        self._neighbours: np.ndarray | None = None
        self._rows = {r.id: i for i, r in enumerate(index.slices)}

    def prepare(self, progress: Callable[[Progress], None] | None = None,
                cancel: Callable[[], bool] | None = None) -> SliceCache:
        if self._cache is None:
            self._cache = build_cache(self.index, self.model.image_size, self.cache_root,
                                      progress, cancel)
            self._neighbours = neighbour_rows(self.index, self.model.config.data.context)
        return self._cache

    @torch.inference_mode()
    def predict_case_day(self, case_day: str, progress: Callable[[Progress], None] | None = None,
                         cancel: Callable[[], bool] | None = None) -> CaseDayPrediction:
        records = self.index.case_days().get(case_day)
        if not records:
            raise StudioError(f"case-day '{case_day}' is not in the dataset")
        cache = self.prepare(progress, cancel)
        rows = np.array([self._rows[r.id] for r in records])
        height, width = records[0].shape
        module, device = self.model.module, self.model.device
        probs = np.zeros((len(rows), 3, height, width), np.float16)
        for start in range(0, len(rows), self.batch_size):
            if cancel is not None and cancel():
                raise CancelledError("prediction cancelled")
            batch_rows = rows[start:start + self.batch_size]
            images = torch.from_numpy(np.ascontiguousarray(cache.images[self._neighbours[batch_rows]]))
            x = module.pixel_values(images.to(device, non_blocking=True))
            logits = self._logits(module, x)
            logits = F.interpolate(logits.float(), size=(height, width), mode="bilinear",
                                   align_corners=False)
            p = logits.softmax(1)[:, 1:] if module.mode == "multiclass" else logits.sigmoid()
            probs[start:start + len(batch_rows)] = p.cpu().numpy().astype(np.float16)
            if progress is not None:
                progress(Progress("predict", start + len(batch_rows), len(rows), case_day))
        if module.mode == "multiclass":
            full = np.concatenate([1 - probs.sum(1, keepdims=True, dtype=np.float32), probs], 1)
            masks = predict_masks(torch.from_numpy(full), "multiclass").numpy()
        else:
            masks = probs >= self.threshold
        return CaseDayPrediction(case_day, records, masks, probs)

    def _logits(self, module: SegmentationModule, x: torch.Tensor) -> torch.Tensor:
        with _autocast(x.device):
            logits = module(x)
            if self.tta:  # horizontal flip: average the logits of the flipped image, flipped back
                logits = (logits + module(x.flip(-1)).flip(-1)) / 2
        return logits

    def predict_all(self, case_days: list[str] | None = None,
                    progress: Callable[[Progress], None] | None = None,
                    cancel: Callable[[], bool] | None = None) -> Iterator[CaseDayPrediction]:
        """Predict ``case_days`` (default: all) one after another; progress counts slices."""
        groups = self.index.case_days()
        chosen = case_days or list(groups)
        missing = [c for c in chosen if c not in groups]
        if missing:
            raise StudioError(f"case-day(s) {', '.join(missing)} not in the dataset; it has "
                              f"{', '.join(list(groups)[:5])}{'…' if len(groups) > 5 else ''}")
        self.prepare(progress, cancel)
        total = sum(len(groups[c]) for c in chosen)
        done = 0
        for case_day in chosen:
            def inner(event, base=done):
                if progress is not None:
                    progress(Progress("predict", base + event.done, total, case_day))
            result = self.predict_case_day(case_day, inner, cancel)
            done += len(result.records)
            yield result


def _autocast(device: torch.device):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)
