"""Predict organ masks for whole case-days with a trained model.

A model comes from a run folder (its best checkpoint, else ``last.ckpt``), a checkpoint file, or a
``save_pretrained`` folder with ``studio.json`` (a run's ``model/``). It is moved to the device once.
Slices go through the same preprocessing as in training — the preprocessing cache, built or reused —
and the probabilities are resized back to each slice's original size *before* thresholding, so masks
line up with the original 16-bit images (266×266, 360×310, …).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from core import paths
from core.checkpoints import checkpoint_config, load_checkpoint, pretrained_folder_problem
from core.config import StudioConfig, from_dict
from core.data import ORGANS
from core.data.cache import SliceCache, build_cache, neighbour_rows
from core.data.scan import DatasetIndex, SliceRecord
from core.errors import CancelledError, StudioError
from core.events import Progress
from core.model.lightning_module import SegmentationModule
from core.devices import Placement, resolve_placement
from core.quiet import quiet_libraries
from core.runs import MODEL_DIR, MODEL_META, RunFolder

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    module: SegmentationModule
    config: StudioConfig
    placement: Placement
    source: Path
    postprocess: object | None = None
    """The ``core.postprocess.PostProcess`` tuned for this model (``studio.json`` of a run's
    ``model/``, ``cv.json`` of a fold group); None: plain thresholding."""
    members: list | None = None
    """A fold group's modules, whose probabilities are averaged (``module`` is the first)."""

    @property
    def device(self):
        return self.placement.device

    @property
    def modules(self) -> list:
        return self.members or [self.module]

    @property
    def image_size(self) -> int:
        return self.config.data.image_size


def load_model(source: str | Path, device: str = "auto") -> LoadedModel:
    """Load a model from a run folder (its best checkpoint, as ``run.json`` records it), a ``.ckpt``
    file, or a ``save_pretrained`` folder with ``studio.json`` (a run's ``model/``). Nothing in the
    files is executed (``weights_only`` loading); a damaged file is a ``StudioError`` naming it.
    ``device`` is ``auto``, ``cpu`` or ``gpu``; the precision is the run's, as it runs there."""
    from core.runs import is_group

    quiet_libraries()
    source = Path(source)
    if not source.exists():
        raise StudioError(f"'{source}' does not exist; give a run folder, a .ckpt file or a run's "
                          "model/ folder")
    if is_group(source):
        return load_group(source, device)
    is_model_folder = (source / MODEL_META).is_file() or (
        source.name == MODEL_DIR and RunFolder(source.parent).is_run())
    if source.is_dir() and is_model_folder:
        module, source = _from_model_folder(source)
    else:
        if source.is_dir():
            run = RunFolder(source)
            checkpoint = run.best_checkpoint()
            if checkpoint is None:
                raise StudioError(f"'{source}' has no checkpoints; train a model first (or pick "
                                  "the run's model/ folder)")
        else:
            checkpoint = source
        module = module_from_checkpoint(checkpoint)
        source = checkpoint
    placement = resolve_placement(device, module.config.train.precision)
    module.eval().to(placement.device).apply_memory_format()  # the one device move
    return LoadedModel(module, module.config, placement, source, tuned_postprocess(source))


def tuned_postprocess(source: Path):
    """The post-processing tuned for the run ``source`` belongs to (a run folder, its ``model/``
    or one of its checkpoints): ``studio.json``'s ``postprocess``; None when there is none."""
    from core.postprocess import PostProcess

    source = Path(source)
    for folder in (source, source.parent, source.parent.parent):
        meta = folder / MODEL_DIR / MODEL_META if (folder / MODEL_DIR).is_dir() else folder / MODEL_META
        if meta.is_file():
            try:
                data = json.loads(meta.read_text(encoding="utf-8")).get("postprocess")
            except (OSError, ValueError, AttributeError):
                return None
            return PostProcess.from_dict(data) if data else None
    return None


def load_group(source: Path, device: str = "auto") -> LoadedModel:
    """A fold group's ensemble: every fold's best model, their probabilities averaged, with the
    post-processing tuned on the out-of-fold predictions (``cv.json``)."""
    from core.runs import FoldGroup

    group = FoldGroup(source)
    runs = [r for r in group.fold_runs() if r.best_checkpoint() is not None]
    if not runs:
        raise StudioError(f"fold group '{source}' has no trained fold yet; train it first")
    models = [load_model(r.path, device) for r in runs]
    first = models[0]
    for run, model in zip(runs[1:], models[1:]):
        for key in ("image_size", "context"):
            if getattr(model.config.data, key) != getattr(first.config.data, key):
                raise StudioError(f"{run.path}: data.{key} differs from the other folds; the "
                                  "folds of a group cannot be averaged")
        if model.module.mode != first.module.mode:
            raise StudioError(f"{run.path}: model.mode differs from the other folds")
    return LoadedModel(first.module, first.config, first.placement, source, group.postprocess(),
                       [m.module for m in models])


def module_from_checkpoint(path: Path) -> SegmentationModule:
    """The trained module of a checkpoint (loaded with ``weights_only``)."""
    checkpoint = load_checkpoint(path)
    module = SegmentationModule(checkpoint_config(checkpoint, path), load_pretrained=False)
    state = {k.replace("_orig_mod.", ""): v for k, v in checkpoint["state_dict"].items()}
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise StudioError(f"'{path}' does not fit its own settings ({str(exc).splitlines()[0]})") \
            from None
    return module


def _from_model_folder(folder: Path) -> tuple[SegmentationModule, Path]:
    """A run's exported ``model/`` (or any save_pretrained folder with studio.json). A damaged
    ``model/`` of a run is exported again from the run's best checkpoint, when no process is
    training in the run."""
    from transformers import SegformerForSemanticSegmentation

    problem = pretrained_folder_problem(folder)
    if problem:
        run = RunFolder(folder.parent)
        best = run.best_checkpoint() if run.is_run() else None
        if best is None:
            raise StudioError(f"cannot load the model: {problem}")
        if run.lock().live_holder() is not None:
            return module_from_checkpoint(best), best  # a run in progress: read, do not write
        log.warning("%s; exporting it again from %s", problem, best)
        export_model(run, best, module_from_checkpoint(best).config)
    try:
        meta = json.loads((folder / MODEL_META).read_text(encoding="utf-8"))
        config = from_dict({"data": {"image_size": meta["image_size"], "context": meta["context"]},
                            "model": {"mode": meta["mode"], "variant": meta["variant"]},
                            "train": {"precision": meta.get("precision", "auto"),
                                      "channels_last": meta.get("channels_last", False)}})
        module = SegmentationModule(config.to_dict(), load_pretrained=False)
        module.model = SegformerForSemanticSegmentation.from_pretrained(  # use_kernels: see factory
            folder, local_files_only=True, trust_remote_code=False, use_kernels=False)
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise StudioError(f"cannot load the model in '{folder}' ({type(exc).__name__}: "
                          f"{str(exc)[:200]})") from None
    return module, folder


def export_model(run: RunFolder, checkpoint_path: Path, config: StudioConfig) -> Path:
    """Write a checkpoint's model to ``run``'s ``model/`` (``save_pretrained`` + ``studio.json`` with
    the preprocessing), atomically (``RunFolder.write_model``)."""
    module = module_from_checkpoint(checkpoint_path)
    data = config.data
    return run.write_model(module.model, {
        "mode": config.model.mode, "variant": config.model.variant,
        "image_size": data.image_size, "context": data.context, "organs": list(ORGANS),
        "precision": config.train.precision, "channels_last": config.train.channels_last,
        "checkpoint": checkpoint_path.name})


def to_original_size(maps: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``(B, C, S, S)`` logits or probabilities → ``(B, C, H, W)`` float32 at a slice's own size,
    before thresholding. Bilinear with ``align_corners=False`` maps pixel centres to pixel centres,
    the convention of every resize in the app (``core.data.cache``)."""
    return F.interpolate(maps.float(), size=tuple(shape), mode="bilinear", align_corners=False)


@dataclass
class CaseDayPrediction:
    """A case-day's predictions at each slice's original size, in slice order. A case-day whose
    slices all have one size (every Kaggle scan) stacks into ``(D, 3, H, W)`` arrays (``stack``)."""

    case_day: str
    records: list[SliceRecord]
    masks: list[np.ndarray]
    """bool ``(3, H, W)`` per slice."""
    probabilities: list[np.ndarray]
    """float16 ``(3, H, W)`` per slice; for multiclass, the organs' softmax probabilities."""

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """The distinct ``(height, width)`` of the slices, in order of appearance."""
        return list(dict.fromkeys(r.shape for r in self.records))

    def stacked_masks(self) -> np.ndarray:
        """``(D, 3, H, W)`` bool; ``StudioError`` when the slices differ in size."""
        if len(self.sizes) > 1:
            raise StudioError(f"{self.case_day} has slices of {len(self.sizes)} sizes ("
                              f"{', '.join(f'{w}×{h}' for h, w in self.sizes)}); it cannot be "
                              "shown or scored as one volume")
        return np.stack(self.masks)


DEFAULT_BATCH_SIZES = {"cpu": 4, "cuda": 16}
"""Slices per forward pass by device type. On the CPU batch 4 is the fastest measured (13.7 s per
144-slice case-day at B0 288 px on 2 cores, vs 15.6 s at 16: smaller activations stay in cache;
benchmarks/RESULTS.md 4b); a GPU wants larger batches."""


def default_batch_size(device) -> int:
    """The prediction batch size for ``device`` (a ``torch.device`` or its type name)."""
    kind = getattr(device, "type", str(device))
    return DEFAULT_BATCH_SIZES.get(kind, DEFAULT_BATCH_SIZES["cuda"])


MODEL_POSTPROCESS = object()
"""``Predictor``'s default: the post-processing tuned for the model, if any."""


def with_threshold(post, threshold: float):
    """``post`` with every organ's probability threshold set to ``threshold``."""
    return dataclasses.replace(post, rules=tuple(dataclasses.replace(rule, threshold=threshold)
                                                 for rule in post.rules))


class Predictor:
    """Predicts case-days of one dataset; the cache is built (or reused) on first use.
    ``batch_size``: slices per forward pass, by default ``default_batch_size`` of the model's
    device."""

    def __init__(self, model: LoadedModel, index: DatasetIndex, threshold: float | None = None,
                 tta: bool = False, batch_size: int | None = None,
                 cache_root: str | Path | None = None, postprocess=MODEL_POSTPROCESS):
        """``postprocess``: the model's tuned one (default), None for plain thresholding, or a
        ``PostProcess``. ``threshold`` replaces every organ's threshold of that choice."""
        from core.postprocess import PostProcess

        self.model, self.index = model, index
        self.tta = tta
        chosen = model.postprocess if postprocess is MODEL_POSTPROCESS else postprocess
        chosen = chosen or PostProcess.default()
        self.postprocess = chosen if threshold is None else with_threshold(chosen, threshold)
        self.batch_size = batch_size or default_batch_size(model.device)
        self.cache_root = Path(cache_root) if cache_root else paths.cache_dir()
        self._cache: SliceCache | None = None
        self._neighbours: np.ndarray | None = None
        self._rows = {r.id: i for i, r in enumerate(index.slices)}

    def prepare(self, progress: Callable[[Progress], None] | None = None,
                cancel: Callable[[], bool] | None = None) -> SliceCache:
        if self._cache is None:
            self._cache = build_cache(self.index, self.model.image_size, self.cache_root,
                                      progress, cancel)
            self._neighbours = neighbour_rows(self.index, self.model.config.data.context,
                                              self._cache.valid)
        return self._cache

    @torch.inference_mode()
    def predict_case_day(self, case_day: str, progress: Callable[[Progress], None] | None = None,
                         cancel: Callable[[], bool] | None = None) -> CaseDayPrediction:
        records = self.index.case_days().get(case_day)
        if not records:
            raise StudioError(f"case-day '{case_day}' is not in the dataset")
        cache = self.prepare(progress, cancel)
        rows = np.array([self._rows[r.id] for r in records])
        module, device = self.model.module, self.model.device
        probs: list[np.ndarray | None] = [None] * len(rows)
        done = 0
        for shape in dict.fromkeys(r.shape for r in records):  # each size, upsampled to itself
            positions = [i for i, r in enumerate(records) if r.shape == shape]
            for start in range(0, len(positions), self.batch_size):
                if cancel is not None and cancel():
                    raise CancelledError("prediction cancelled")
                chosen = positions[start:start + self.batch_size]
                images = torch.from_numpy(np.ascontiguousarray(
                    cache.images[self._neighbours[rows[chosen]]]))
                x = module.pixel_values(images.to(device, non_blocking=True))
                p = self._probabilities(x, shape)
                for position, values in zip(chosen, p.cpu().numpy().astype(np.float16)):
                    probs[position] = values
                done += len(chosen)
                if progress is not None:
                    progress(Progress("predict", done, len(rows), case_day))
        return CaseDayPrediction(case_day, records, self._masks(records, probs), probs)

    def _masks(self, records: list[SliceRecord], probs: list[np.ndarray]) -> list[np.ndarray]:
        """Threshold and post-process; the 3-D rules need one volume, so a case-day of mixed
        slice sizes is post-processed slice by slice (its 3-D components are per slice)."""
        from core.postprocess import apply

        mode = self.model.module.mode
        if len({r.shape for r in records}) == 1:
            return list(apply(np.stack(probs), self.postprocess, mode))
        return [apply(p[None], self.postprocess, mode)[0] for p in probs]

    def _probabilities(self, x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Organ probabilities at the slices' own size: a fold group averages its members'."""
        total = None
        for module in self.model.modules:
            logits = to_original_size(self._logits(module, x), shape)
            p = logits.softmax(1)[:, 1:] if module.mode == "multiclass" else logits.sigmoid()
            total = p if total is None else total + p
        return total / len(self.model.modules)

    def _logits(self, module: SegmentationModule, x: torch.Tensor) -> torch.Tensor:
        with self.model.placement.autocast():
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

