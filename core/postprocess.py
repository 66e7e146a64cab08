"""Post-processing of predicted probabilities, and its search on out-of-fold predictions.

Per organ (``OrganRule``): a probability threshold (multilabel), removal of connected components
smaller than N pixels in each slice (2-D, 8-connected) and smaller than N voxels in the case-day
volume (3-D, 26-connected), and an empty-slice rule (an organ whose area left on a slice is under
N px is dropped from that slice). The top UW-Madison solutions all did some of this (threshold
0.3–0.4, blobs under 25–50 px removed); which helps depends on the model, so ``search`` chooses it
on predictions of cases the model did not train on, by the competition score itself
(``core.metrics``), starting from — and so never worse than — plain thresholding at 0.5.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from scipy import ndimage

from core.data import ORGANS
from core.errors import CancelledError, StudioError

_STRUCTURE_2D = np.ones((3, 3), bool)
_STRUCTURE_3D = np.ones((3, 3, 3), bool)

GRID = {"threshold": (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6),
        "min_size_2d": (0, 10, 25, 50, 100),
        "min_size_3d": (0, 50, 200, 1000),
        "min_slice_area": (0, 10, 25, 50, 100)}
"""The values ``search`` tries for each parameter of each organ."""


@dataclass(frozen=True)
class OrganRule:
    threshold: float = 0.5
    min_size_2d: int = 0
    min_size_3d: int = 0
    min_slice_area: int = 0

    def describe(self, mode: str = "multilabel") -> str:
        parts = [f"threshold {self.threshold:.2f}"] if mode == "multilabel" else []
        if self.min_size_2d:
            parts.append(f"drop 2-D blobs < {self.min_size_2d} px")
        if self.min_size_3d:
            parts.append(f"drop 3-D blobs < {self.min_size_3d} voxels")
        if self.min_slice_area:
            parts.append(f"empty slices < {self.min_slice_area} px")
        return ", ".join(parts) or "argmax"


@dataclass(frozen=True)
class PostProcess:
    rules: tuple = field(default_factory=lambda: tuple(OrganRule() for _ in ORGANS))
    """One ``OrganRule`` per organ, in ``ORGANS`` order."""

    @classmethod
    def default(cls) -> "PostProcess":
        return cls()

    def is_default(self) -> bool:
        return all(rule == OrganRule() for rule in self.rules)

    def to_dict(self) -> dict:
        return {organ: dataclasses.asdict(rule) for organ, rule in zip(ORGANS, self.rules)}

    @classmethod
    def from_dict(cls, data) -> "PostProcess":
        """From ``to_dict``'s form, checked (it is read from files that may be damaged)."""
        if not isinstance(data, dict):
            raise StudioError("postprocess: expected a mapping of organ → rule")
        unknown = set(data) - set(ORGANS)
        if unknown:
            raise StudioError(f"postprocess.{sorted(unknown)[0]}: not an organ (organs: "
                              f"{', '.join(ORGANS)})")
        rules = []
        for organ in ORGANS:
            values = data.get(organ, {})
            if not isinstance(values, dict):
                raise StudioError(f"postprocess.{organ}: expected a mapping of settings")
            kwargs = {}
            for key, value in values.items():
                where = f"postprocess.{organ}.{key}"
                if key == "threshold":
                    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                            not 0.0 < value < 1.0:
                        raise StudioError(f"{where}: {value!r} must be a number between 0 and 1")
                    kwargs[key] = float(value)
                elif key in ("min_size_2d", "min_size_3d", "min_slice_area"):
                    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                        raise StudioError(f"{where}: {value!r} must be a whole number ≥ 0")
                    kwargs[key] = value
                else:
                    raise StudioError(f"{where}: unknown setting (threshold, min_size_2d, "
                                      "min_size_3d, min_slice_area)")
            rules.append(OrganRule(**kwargs))
        return cls(tuple(rules))

    def describe(self, mode: str = "multilabel") -> str:
        return "\n".join(f"{organ.replace('_', ' ')}: {rule.describe(mode)}"
                         for organ, rule in zip(ORGANS, self.rules))

    def replace_rule(self, k: int, **changes) -> "PostProcess":
        rules = list(self.rules)
        rules[k] = dataclasses.replace(rules[k], **changes)
        return PostProcess(tuple(rules))


def threshold(probs: np.ndarray, post: PostProcess, mode: str = "multilabel") -> np.ndarray:
    """Bool ``(D, 3, H, W)`` masks before the size rules: per-organ threshold (``>=``), or for
    multiclass the argmax over background (1 − sum) and the organs."""
    probs = np.asarray(probs)
    if mode == "multiclass":
        full = np.concatenate([1 - probs.astype(np.float32).sum(1, keepdims=True),
                               probs.astype(np.float32)], 1)
        labels = full.argmax(1)
        return np.stack([labels == k + 1 for k in range(probs.shape[1])], 1)
    limits = np.array([r.threshold for r in post.rules], dtype=np.float32).reshape(1, -1, 1, 1)
    return probs >= limits.astype(probs.dtype)


def apply_masks(masks: np.ndarray, post: PostProcess) -> np.ndarray:
    """The size rules on bool ``(D, 3, H, W)`` masks of one case-day (a new array)."""
    masks = np.array(masks, dtype=bool, copy=True)
    for k, rule in enumerate(post.rules):
        masks[:, k] = _clean(masks[:, k], rule)
    return masks


def _clean(organ: np.ndarray, rule: OrganRule) -> np.ndarray:
    """One organ's ``(D, H, W)`` bool masks under ``rule``'s size rules (in place, returned)."""
    if rule.min_size_2d:
        for z in np.flatnonzero(organ.any((1, 2))):
            organ[z] = _drop_small(organ[z], rule.min_size_2d, _STRUCTURE_2D)
    if rule.min_size_3d and organ.any():
        organ[:] = _drop_small(organ, rule.min_size_3d, _STRUCTURE_3D)
    if rule.min_slice_area:
        organ[organ.sum((1, 2)) < rule.min_slice_area] = False
    return organ


def apply(probs: np.ndarray, post: PostProcess | None, mode: str = "multilabel") -> np.ndarray:
    """Bool ``(D, 3, H, W)`` masks of one case-day's probabilities (slices in order). The default
    ``PostProcess`` is plain thresholding at 0.5 (multiclass: argmax)."""
    post = post or PostProcess.default()
    masks = threshold(probs, post, mode)
    return masks if all(r.min_size_2d == r.min_size_3d == r.min_slice_area == 0
                        for r in post.rules) else apply_masks(masks, post)


def _mapped(path, array: np.ndarray) -> np.ndarray:
    mapped = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=array.shape)
    mapped[:] = array
    return mapped


def _drop_small(mask: np.ndarray, min_size: int, structure: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask, structure)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


@dataclass
class SearchResult:
    post: PostProcess
    score_before: float
    score_after: float
    evaluated: int
    trail: list = field(default_factory=list)
    """``(organ, parameter, value, score)`` of each accepted change, in order."""


def search(case_days: Iterable, mode: str = "multilabel", grid: dict | None = None,
           progress: Callable[[int, int], None] | None = None,
           cancel: Callable[[], bool] | None = None, passes: int = 1,
           workdir=None) -> SearchResult:
    """The per-organ post-processing that maximises the competition score over ``case_days``
    (``(name, probabilities (D, 3, H, W), truth bool (D, 3, H, W))``, out-of-fold): coordinate
    ascent from the default, organ by organ and parameter by parameter over ``grid``; a value is
    kept only if it raises the score, so the result is never worse than the default and ties keep
    the simpler setting.

    An organ's masks depend only on its own probabilities and rule, so a candidate recomputes one
    organ of each case-day (the others are kept from the best so far) and scores with
    ``core.metrics.score_terms`` (Dice and the union's Hausdorff — the score's two terms — without
    the per-organ Hausdorff values). With ``workdir`` (a folder), the best setting's masks it keeps
    are memory-mapped files there, not memory (a whole dataset's out-of-fold masks)."""
    from core.metrics import score_of_terms, score_terms

    data = [(name, probs, np.asarray(truth, dtype=bool)) for name, probs, truth in case_days]
    grid = grid or GRID
    params = [p for p in GRID if p in grid and not (mode == "multiclass" and p == "threshold")]
    total = 1 + passes * len(ORGANS) * sum(len(grid[p]) - 1 for p in params)
    evaluated = 0
    best = PostProcess.default()
    masks = [apply(probs, best, mode) if workdir is None else  # the best setting's, kept
             _mapped(Path(workdir) / f"{n}-best.npy", apply(probs, best, mode))
             for n, (_, probs, _) in enumerate(data)]

    def organ_mask(probs, k: int, rule: OrganRule) -> np.ndarray:
        if mode == "multiclass":  # the argmax needs every organ; the rule is this organ's
            organ = threshold(probs, best, mode)[:, k]
        else:
            organ = np.asarray(probs[:, k]) >= np.asarray(rule.threshold, dtype=probs.dtype)
        return _clean(organ, rule)

    def check_cancel() -> None:
        if cancel is not None and cancel():
            raise CancelledError("post-processing search cancelled")

    def counted() -> None:
        nonlocal evaluated
        evaluated += 1
        if progress is not None:
            progress(min(evaluated, total), total)

    def score(k: int, rule: OrganRule) -> tuple[float, list, list]:
        """The score with organ ``k`` under ``rule``, each case-day's new organ mask (None: as
        under the best setting, whose terms it keeps) and the terms."""
        check_cancel()
        candidate_terms, changed = [], []
        for (_, probs, truth), current, kept_terms in zip(data, masks, terms):
            new = organ_mask(probs, k, rule)
            if np.array_equal(new, current[:, k]):
                candidate_terms.append(kept_terms)
                changed.append(None)
                continue
            kept = current[:, k].copy()
            current[:, k] = new
            candidate_terms.append(score_terms(current, truth))
            current[:, k] = kept
            changed.append(new)
        counted()
        return score_of_terms(candidate_terms), changed, candidate_terms

    check_cancel()
    terms = [score_terms(current, truth) for (_, _, truth), current in zip(data, masks)]
    counted()  # the default, scored
    before = best_score = score_of_terms(terms)
    trail = []
    for _ in range(passes):
        for k, organ in enumerate(ORGANS):
            for param in params:
                current = getattr(best.rules[k], param)
                for value in grid[param]:
                    if value == current:
                        continue
                    candidate = best.replace_rule(k, **{param: value})
                    value_score, changed, candidate_terms = score(k, candidate.rules[k])
                    if value_score > best_score + 1e-12:
                        best, best_score = candidate, value_score
                        for mask, new in zip(masks, changed):
                            if new is not None:
                                mask[:, k] = new
                        terms[:] = candidate_terms
                        trail.append((organ, param, value, value_score))
                current = getattr(best.rules[k], param)
    return SearchResult(best, before, best_score, evaluated, trail)
