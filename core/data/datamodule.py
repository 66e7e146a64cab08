"""Fold split by case, the cached slice dataset, and the LightningDataModule.

Batches are fetched with one fancy-index into the memory-mapped cache (``__getitems__``), so loading
a batch on the training thread costs well under a millisecond per slice; augmentation and
normalisation run on the device afterwards (see ``core.data.augment`` and the LightningModule's
``on_after_batch_transfer``).
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from core.config import StudioConfig
from core.data.cache import SliceCache, neighbour_rows
from core.data.scan import DatasetIndex
from core.errors import ConfigError

log = logging.getLogger(__name__)


def split_by_case(cases: list[int], num_folds: int, fold: int, seed: int) -> tuple[set, set]:
    """Return ``(train_cases, val_cases)``: cases shuffled with ``seed``, fold ``k`` = every
    ``num_folds``-th case from position ``k``. No case is in both sets."""
    unique = sorted(set(cases))
    if num_folds > len(unique):
        raise ConfigError(f"data.num_folds: {num_folds} folds need at least {num_folds} cases; the "
                          f"dataset has {len(unique)}. Lower data.num_folds")
    if not 0 <= fold < num_folds:
        raise ConfigError(f"data.fold: {fold} must be between 0 and {num_folds - 1}")
    order = np.random.default_rng(seed).permutation(len(unique))
    val = {unique[i] for i in order[fold::num_folds]}
    return set(unique) - val, val


class CachedSlices(Dataset):
    """Slices ``rows`` of a cache as uint8 tensors: ``image (3, S, S)`` (2.5D), ``mask (3, S, S)``."""

    def __init__(self, cache: SliceCache, neighbours: np.ndarray, rows: np.ndarray):
        self.cache = cache
        self.neighbours = neighbours
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        images = self.cache.images[self.neighbours[rows]]  # (B, 3, S, S): slices i-k, i, i+k
        masks = self.cache.unpack_masks(rows)
        return {"image": torch.from_numpy(np.ascontiguousarray(images)),
                "mask": torch.from_numpy(np.ascontiguousarray(masks)),
                "row": torch.from_numpy(rows)}

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([position]).items()}


def _keep_batch(batch):
    return batch


def effective_workers(requested: int) -> int:
    if sys.platform == "win32" and requested:
        log.info("num_workers forced to 0 on Windows: DataLoader worker processes deadlock there, "
                 "and loading from the cache is fast on the training thread")
        return 0
    return requested


class SliceDataModule(pl.LightningDataModule):
    """Training and validation loaders over a built cache, split by case."""

    def __init__(self, index: DatasetIndex, cache: SliceCache, config: StudioConfig):
        super().__init__()
        self.index, self.cache, self.config = index, cache, config
        neighbours = neighbour_rows(index, config.data.context)
        cases = np.array([r.case for r in index.slices])
        train_cases, val_cases = split_by_case(cases.tolist(), config.data.num_folds,
                                               config.data.fold, config.train.seed)
        usable = cache.valid
        train_rows = np.flatnonzero(np.isin(cases, list(train_cases)) & usable)
        val_rows = np.flatnonzero(np.isin(cases, list(val_cases)) & usable)
        if not len(train_rows) or not len(val_rows):
            raise ConfigError("the fold split left no usable slices for training or validation; "
                              "check data.num_folds and data.fold")
        self.train_cases, self.val_cases = sorted(train_cases), sorted(val_cases)
        self.train_set = CachedSlices(cache, neighbours, train_rows)
        self.val_set = CachedSlices(cache, neighbours, val_rows)
        self.workers = effective_workers(config.train.num_workers)

    def _loader(self, dataset: CachedSlices, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.config.train.batch_size, shuffle=shuffle,
                          drop_last=shuffle and len(dataset) > self.config.train.batch_size,
                          num_workers=self.workers, collate_fn=_keep_batch,
                          pin_memory=torch.cuda.is_available(),
                          persistent_workers=self.workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
