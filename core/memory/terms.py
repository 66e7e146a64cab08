"""Memory terms of a training configuration: measured once on the CPU, fitted, cached on disk.

A training step runs the same ops for every batch size ``B`` and image size, so the bytes alive in
each segment of the step (see :mod:`core.memory.trace`) are linear in ``B`` and in ``B × pixels``.
Three traced steps at small sizes fix each segment's line exactly, and the peak at any size is the
highest of those lines — "constant + batch × per-image" wherever one segment dominates. Segments
that are never the highest for batches 1–1024 and images of 32–2048 px are dropped, which leaves a
handful per configuration. (Attention that materialises its weights adds a term in pixels²; the
app's SDPA attention does not, and ``measure_terms(..., quadratic=True)`` is there for recipes that
do, such as the mmsegmentation comparison in ``benchmarks/memory.py``.)

The terms of the six variants × two modes × two dtype widths are shipped in
``resources/memory_terms.json`` (``python -m core.memory --rebuild-cache``); any other
configuration (another number of classes, a pretrained folder with its own architecture) is measured
on first use and kept in ``memory_terms.json`` in the user cache folder. Both files are keyed by a
schema version and the torch and transformers versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Callable

from core import paths
from core.config import ModelConfig
from core.model.variants import VARIANTS
from core.errors import ConfigError
from core.resources import resources_dir
from core.memory.kinds import KINDS

log = logging.getLogger(__name__)

SCHEMA = 1
"""Bump when the meaning of the stored numbers changes; caches with another schema are ignored."""

FIT_POINTS = ((2, 64), (3, 64), (2, 96))
"""(batch, image size) of the traced steps. Batch 1 is avoided: some reshapes are free views there."""
QUADRATIC_FIT_POINTS = FIT_POINTS + ((2, 128),)
"""For recipes whose attention materialises its weights (memory ∝ pixels² per image)."""

MODES = ("multilabel", "multiclass")
SHIPPED_PRECISIONS = ("32", "bf16-mixed")
SHIPPED_CACHE = resources_dir() / "memory_terms.json"
USER_CACHE_NAME = "memory_terms.json"

ARCHITECTURE_FIELDS = (
    "num_channels", "num_encoder_blocks", "depths", "sr_ratios", "hidden_sizes", "patch_sizes",
    "strides", "num_attention_heads", "mlp_ratios", "hidden_act", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "classifier_dropout_prob", "drop_path_rate",
    "decoder_hidden_size", "reshape_last_stage")
"""The SegformerConfig fields that change what a training step holds in memory."""


_PRUNE_BATCHES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024)
_PRUNE_SIZES = (32, 64, 128, 192, 256, 320, 384, 512, 640, 768, 1024, 1536, 2048)
_GRAD = KINDS.index("grad")


def library_versions() -> dict[str, str]:
    """The torch and transformers versions (major.minor) the terms were measured with."""
    return {name: ".".join(version(name).split("+")[0].split(".")[:2])
            for name in ("torch", "transformers")}


def precision_family(precision: str) -> str:
    """``32``, or ``16`` for both ``16-mixed`` and ``bf16-mixed``: CUDA autocast applies the same
    op policy to both and both dtypes take two bytes, so their terms are the same."""
    return "32" if precision == "32" else "16"


@dataclass(frozen=True)
class TermsKey:
    """What the terms depend on: the architecture, the loss, the classes and the dtype width."""
    architecture: str
    mode: str
    num_classes: int
    precision: str

    def text(self) -> str:
        return f"{self.architecture}/{self.mode}/{self.num_classes}/{self.precision}"


@dataclass(frozen=True)
class MemoryTerms:
    """What a training step of one :class:`TermsKey` holds, in bytes (tensors rounded to 512 B).

    ``weight_bytes`` covers parameters and buffers, ``grad_bytes`` all gradients,
    ``optimizer_state_bytes`` AdamW's two moments. ``segments``: per kept segment, two tables (one
    row per kind in ``KINDS``) of coefficients ``(c0, c1, c2)``, bytes = c0 + B·c1 + B·P·c2 for
    batch B and P pixels per image: first with the gradients the step makes itself, then without
    gradients (under accumulation the full gradients are added). ``saved`` is the same line for all
    bytes saved for backward. Recipes measured with ``quadratic=True`` have a fourth coefficient,
    + B·P²·c3; the app's SDPA attention needs none.
    """
    params: int
    weight_bytes: int
    grad_bytes: int
    optimizer_state_bytes: int
    saved: tuple[float, float, float]
    segments: tuple

    def peak(self, batch: int, pixels: int, accumulating: bool) -> dict[str, float]:
        """Bytes by kind, at the peak, of the tensors a step makes (weights and state excluded)."""
        best, best_total = None, -1.0
        for own, without_grads in self.segments:
            table = without_grads if accumulating else own
            kinds = {k: _line(row, batch, pixels) for k, row in zip(KINDS, table)}
            if accumulating:
                kinds["grad"] = self.grad_bytes
            total = sum(kinds.values())
            if total > best_total:
                best, best_total = kinds, total
        return best

    def saved_per_image(self, pixels: int) -> float:
        """Bytes saved for backward per image of ``pixels`` pixels (the batch's share included)."""
        return _line(self.saved, 1, pixels) - self.saved[0]

    def to_json(self) -> dict:
        return {"params": self.params, "weight_bytes": self.weight_bytes,
                "grad_bytes": self.grad_bytes, "optimizer_state_bytes": self.optimizer_state_bytes,
                "saved": [_significant(c) for c in self.saved],
                "segments": [[[[_significant(c) for c in row] for row in table] for table in segment]
                             for segment in self.segments]}

    @classmethod
    def from_json(cls, data: dict) -> "MemoryTerms":
        return cls(params=data["params"], weight_bytes=data["weight_bytes"],
                   grad_bytes=data["grad_bytes"],
                   optimizer_state_bytes=data["optimizer_state_bytes"], saved=tuple(data["saved"]),
                   segments=tuple(tuple(tuple(tuple(row) for row in table) for table in segment)
                                  for segment in data["segments"]))


# ---------------------------------------------------------------------------------------------
# Measuring


def _significant(value: float) -> float:
    """``value`` to 9 significant digits: exact to a byte for the sizes here, and short in JSON."""
    return float(f"{value:.9g}")


def _basis(batch: int, pixels: int) -> tuple[float, ...]:
    return (1.0, batch, batch * pixels, batch * pixels * pixels)


def _line(coefficients, batch: int, pixels: int) -> float:
    return sum(c * x for c, x in zip(coefficients, _basis(batch, pixels)))


def _block(nbytes: int) -> int:
    return -(-nbytes // 512) * 512


def measure_terms(module, make_batch: Callable, loss_fn: Callable, precision: str,
                  quadratic: bool = False) -> MemoryTerms:
    """Trace small CPU training steps of ``module`` and fit the terms (seconds to a minute).

    ``make_batch(batch, image_size)`` returns ``(pixel_values, target)``; ``loss_fn(logits,
    target)`` is the training loss; ``precision`` is ``32``, ``16-mixed`` or ``bf16-mixed``;
    ``quadratic`` fits a term in pixels² too (one more traced step).
    """
    import numpy as np
    import torch

    from core.memory.trace import trace_optimizer_step, trace_step

    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    param_bytes = sum(_block(p.numel() * p.element_size()) for p in params)
    buffer_bytes = sum(_block(b.numel() * b.element_size()) for b in module.buffers())
    rows, tables, saved = [], [], []
    points = QUADRATIC_FIT_POINTS if quadratic else FIT_POINTS
    for batch, size in points:
        module.zero_grad(set_to_none=True)
        timeline = trace_step(module, lambda: make_batch(batch, size), loss_fn, precision)
        rows.append(_basis(batch, size * size)[:len(points)])
        # After the backward pass the optimizer steps; its temporaries are added below.
        segments = timeline.segments + [(timeline.after_backward, timeline.after_backward)]
        tables.append([[[seg[flavour][k] for k in KINDS] for flavour in (0, 1)] for seg in segments])
        saved.append(timeline.saved_total)
    if len({len(t) for t in tables}) != 1:
        raise RuntimeError(f"the traced steps differ in structure ({[len(t) for t in tables]} "
                           f"segments), so their memory cannot be fitted")
    solve = np.linalg.inv(np.array(rows))
    coef = np.einsum("cp,psfk->sfkc", solve, np.array(tables, dtype=np.float64))

    with torch.no_grad():
        for p in params:
            p.grad = torch.zeros_like(p)
    optimizer = torch.optim.AdamW(params, foreach=True)  # CUDA's default; on the CPU it would loop
    optimizer.step()  # makes the state, so the traced step shows only its temporaries
    coef[-1, :, KINDS.index("backward"), 0] += trace_optimizer_step(optimizer)
    module.zero_grad(set_to_none=True)
    return MemoryTerms(
        params=sum(p.numel() for p in module.parameters()),
        weight_bytes=param_bytes + buffer_bytes, grad_bytes=param_bytes,
        optimizer_state_bytes=2 * param_bytes,
        saved=tuple(float(c) for c in solve @ np.array(saved, dtype=np.float64)),
        segments=tuple(coef[s].tolist() for s in _envelope(coef, param_bytes)))


def _envelope(coef, grad_bytes: int) -> list[int]:
    """Indices of the segments that are the highest somewhere on the pruning grid."""
    import numpy as np

    grid = np.array([_basis(b, s * s)[:coef.shape[-1]] for b in _PRUNE_BATCHES
                     for s in _PRUNE_SIZES])
    by_kind = np.einsum("gc,sfkc->gsfk", grid, coef)
    own = by_kind[:, :, 0, :].sum(-1)
    accumulating = np.delete(by_kind[:, :, 1, :], _GRAD, axis=-1).sum(-1) + grad_bytes
    return sorted({int(s) for s in own.argmax(1)} | {int(s) for s in accumulating.argmax(1)})


def studio_recipe(model_cfg: ModelConfig):
    """The app's own training step for ``model_cfg``: ``(module, make_batch, loss_fn)``.

    The module is the :class:`SegmentationModule` that training uses, so the loss traced here is the
    loss trained with. The batch is what reaches ``training_step``: normalised float images
    ``(B, 3, S, S)`` and float masks ``(B, num_classes, S, S)``.
    """
    import torch

    from core.config import StudioConfig
    from core.model.lightning_module import SegmentationModule

    config = StudioConfig(model=model_cfg).to_dict()
    module = SegmentationModule(config, load_pretrained=bool(model_cfg.pretrained))

    def make_batch(batch: int, size: int):
        masks = (torch.rand(batch, model_cfg.num_classes, size, size) > 0.5).float()
        return torch.randn(batch, 3, size, size), masks

    return module, make_batch, module.loss


# ---------------------------------------------------------------------------------------------
# Which architecture a model config trains


def _reference_architectures() -> dict[str, dict]:
    from core.model.factory import segformer_config

    return {v: _architecture_fields(segformer_config(ModelConfig(variant=v))) for v in VARIANTS}


def _architecture_fields(config) -> dict:
    fields = {name: getattr(config, name) for name in ARCHITECTURE_FIELDS}
    fields["attention"] = config._attn_implementation or "sdpa"
    return json.loads(json.dumps(fields))  # tuples → lists, so that configs compare equal


def architecture_of(model_cfg: ModelConfig) -> str:
    """The architecture ``model_cfg`` trains: a variant name (``b0``…``b5``) or ``custom-<hash>``.

    Without ``model.pretrained`` it is ``model.variant``; with it, the folder's ``config.json``
    decides (its encoder may differ from the variant chosen).
    """
    if not model_cfg.pretrained:
        return model_cfg.variant
    from transformers import SegformerConfig

    try:
        folder_config = SegformerConfig.from_pretrained(model_cfg.pretrained, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.pretrained: cannot read config.json in '{model_cfg.pretrained}' "
                          f"({exc}); pick the folder written by save_pretrained") from None
    fields = _architecture_fields(folder_config)
    for variant, reference in _reference_architectures().items():
        if reference == fields:
            return variant
    return "custom-" + hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# Caches


_lock = threading.Lock()
_loaded: dict[Path, dict] = {}


def _header() -> dict:
    return {"schema": SCHEMA, **library_versions()}


def _read(path: Path) -> dict[str, dict]:
    """The entries of a cache file that fit this schema and these library versions."""
    if path not in _loaded:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            log.warning("Ignoring the memory terms cache %s: %s", path, exc)
            data = {}
        header = {key: data.get(key) for key in _header()}
        if data and header != _header():
            log.info("Memory terms in %s are for %s, not %s; they will be measured again",
                     path, header, _header())
        _loaded[path] = data.get("terms", {}) if header == _header() else {}
    return _loaded[path]


def _write(path: Path, entries: dict[str, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    payload = {**_header(), "fit_points": FIT_POINTS, "terms": dict(sorted(entries.items()))}
    tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    _loaded[path] = dict(entries)


def user_cache_path() -> Path:
    return paths.cache_dir() / USER_CACHE_NAME


def cached_terms(key: TermsKey) -> MemoryTerms | None:
    """The terms for ``key`` from the shipped or the user cache, without measuring (fast)."""
    with _lock:
        for path in (SHIPPED_CACHE, user_cache_path()):
            entry = _read(path).get(key.text())
            if entry is not None:
                return MemoryTerms.from_json(entry)
    return None


def terms_for(model_cfg: ModelConfig, precision: str) -> tuple[MemoryTerms, TermsKey]:
    """The terms for training ``model_cfg`` at ``precision``, measured now if no cache has them.

    Measuring takes from seconds (B0) to about a minute (B5); the result is kept in the user cache.
    """
    architecture = architecture_of(model_cfg)
    key = TermsKey(architecture, model_cfg.mode, model_cfg.num_classes,
                   precision_family(precision))
    terms = cached_terms(key)
    if terms is not None:
        return terms, key
    if architecture in VARIANTS:
        model_cfg = replace(model_cfg, variant=architecture, pretrained="")
    started = time.perf_counter()
    terms = measure_terms(*studio_recipe(model_cfg), _measured_precision(precision))
    log.info("Measured memory terms for %s in %.1f s", key.text(), time.perf_counter() - started)
    remember_terms(key, terms)
    return terms, key


def remember_terms(key: TermsKey, terms: MemoryTerms) -> None:
    """Add ``terms`` to the user cache (written at once, safe against other processes' entries)."""
    with _lock:
        path = user_cache_path()
        _loaded.pop(path, None)  # another process may have added entries meanwhile
        entries = dict(_read(path))
        entries[key.text()] = terms.to_json()
        _write(path, entries)


def _measured_precision(precision: str) -> str:
    return "32" if precision == "32" else "bf16-mixed"


def rebuild_shipped_cache(report: Callable[[str], None] = print) -> Path:
    """Measure the six variants × two modes × two dtype widths (3 classes) into the shipped cache."""
    entries = {}
    for variant in VARIANTS:
        for mode in MODES:
            model_cfg = ModelConfig(variant=variant, mode=mode)
            recipe = studio_recipe(model_cfg)
            for precision in SHIPPED_PRECISIONS:
                key = TermsKey(variant, mode, model_cfg.num_classes, precision_family(precision))
                started = time.perf_counter()
                entries[key.text()] = measure_terms(*recipe, precision).to_json()
                report(f"{key.text()}: {time.perf_counter() - started:.1f} s")
    _write(SHIPPED_CACHE, entries)
    return SHIPPED_CACHE
