"""Fold split by case, the cached slice dataset, and the LightningDataModule.

Batches are fetched with one fancy-index into the memory-mapped cache (``__getitems__``), so loading
a batch on the training thread costs well under a millisecond per slice; augmentation and
normalisation run on the device afterwards (see ``core.data.augment`` and the LightningModule's
``on_after_batch_transfer``).

The training order is a pure function of ``train.seed`` and the epoch (``EpochShuffle``), and a
resumed run continues an interrupted epoch at the batch where it stopped, so a run that was stopped
and resumed sees exactly the batches of one that never stopped.
"""

from __future__ import annotations


import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from core.config import StudioConfig
from core.data.cache import SliceCache, neighbour_rows
from core.data.scan import DatasetIndex
from core.errors import ConfigError



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


def split_for(index: DatasetIndex, config: StudioConfig) -> tuple[set, set]:
    """``(train_cases, val_cases)`` of ``config``'s fold on ``index`` (what training used)."""
    return split_by_case([r.case for r in index.slices], config.data.num_folds, config.data.fold,
                         config.data.split_seed)


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


class EpochShuffle(Sampler[int]):
    """Shuffles ``n`` positions with a permutation drawn from ``(seed, epoch)`` alone (Lightning calls
    ``set_epoch`` at each epoch's start), and can start an epoch ``skip`` positions in, once, for a run
    resumed mid-epoch. ``len`` stays ``n``: the loop counts the skipped batches as done.

    With ``world`` processes (DDP, ``distribute``), the permutation is cut into consecutive global
    batches of ``world × batch_size`` positions and process ``rank`` takes the ``rank``-th
    ``batch_size`` of each (the incomplete tail is dropped, so every process steps alike). The
    order of the positions over the run is the same for any ``world``: one process with ``world``
    times the gradient accumulation reads, step for step, what ``world`` processes read together,
    which is what makes a resume on another number of devices continue the same run."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, positions to skip)
        self.world, self.rank, self.batch_size, self.group = 1, 0, 1, 1

    def distribute(self, world: int, rank: int, batch_size: int, group: int = 1) -> None:
        """Process ``rank`` of ``world``; ``group``: the processes the run started on, when it
        resumes on fewer (the epoch keeps their length)."""
        group = max(int(world), int(group))
        if group > 1 and self.n < group * batch_size:
            raise ConfigError(f"the training fold has {self.n} slices: too few for {group} "
                              f"processes × batch size {batch_size}; lower train.devices or "
                              "train.batch_size", key="train.devices")
        self.world, self.rank, self.batch_size = int(world), int(rank), int(batch_size)
        self.group = group

    def _positions(self, epoch: int) -> np.ndarray:
        order = self.order(epoch)
        if self.group == 1:
            return order
        step = self.group * self.batch_size
        kept = order[:self.n // step * step]
        return kept.reshape(-1, self.world, self.batch_size)[:, self.rank].reshape(-1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, positions: int) -> None:
        self._resume = (int(epoch), int(positions))

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self):
        skip = 0
        if self._resume is not None:
            epoch, positions = self._resume
            self._resume = None
            if epoch == self.epoch:
                skip = positions
        return iter(self._positions(self.epoch)[skip:].tolist())

    def __len__(self) -> int:
        if self.group == 1:
            return self.n
        step = self.group * self.batch_size
        return self.n // step * step // self.world


def validation_rows(rows: np.ndarray, codes: np.ndarray, world: int, rank: int) -> np.ndarray:
    """Process ``rank``'s share of the validation ``rows``: whole case-days (the 3-D Hausdorff is
    per case-day), the largest first to the process with the fewest slices so far; in row order.
    ``ConfigError`` when there are fewer validation case-days than processes."""
    if world == 1:
        return rows
    days, sizes = np.unique(codes[rows], return_counts=True)
    if len(days) < world:
        raise ConfigError(f"the validation fold has {len(days)} case-days, fewer than the {world} "
                          "processes (each scores whole case-days); lower train.devices",
                          key="train.devices")
    load, owner = [0] * world, {}
    for day, size in sorted(zip(days.tolist(), sizes.tolist()), key=lambda d: (-d[1], d[0])):
        target = min(range(world), key=lambda r: (load[r], r))
        owner[day] = target
        load[target] += size
    return rows[np.array([owner[c] == rank for c in codes[rows].tolist()], dtype=bool)]


class SliceDataModule(pl.LightningDataModule):
    """Training and validation loaders over a built cache, split by case."""

    def __init__(self, index: DatasetIndex, cache: SliceCache, config: StudioConfig):
        super().__init__()
        self.index, self.cache, self.config = index, cache, config
        neighbours = neighbour_rows(index, config.data.context, cache.valid)
        cases = np.array([r.case for r in index.slices])
        train_cases, val_cases = split_for(index, config)
        usable = cache.valid
        train_rows = np.flatnonzero(np.isin(cases, list(train_cases)) & usable)
        val_rows = np.flatnonzero(np.isin(cases, list(val_cases)) & usable)
        if not len(train_rows) or not len(val_rows):
            raise ConfigError("the fold split left no usable slices for training or validation; "
                              "check data.num_folds and data.fold", key="data.fold")
        self.train_cases, self.val_cases = sorted(train_cases), sorted(val_cases)
        self.train_set = CachedSlices(cache, neighbours, train_rows)
        self.val_set = CachedSlices(cache, neighbours, val_rows)
        names = sorted({r.case_day for r in index.slices})
        code = {name: i for i, name in enumerate(names)}
        self.case_day_names = names
        self.case_day_codes = np.array([code[r.case_day] for r in index.slices], np.int64)
        """Row → number of its case-day in ``case_day_names`` (validation scores whole case-days)."""
        self.sampler = EpochShuffle(len(train_rows), config.train.seed)

    @property
    def batch_size(self) -> int:
        return self.config.train.batch_size

    def setup(self, stage: str) -> None:
        """Inside ``fit``, once the processes know their rank: each takes its share of every
        training batch and its whole validation case-days (``validation_rows``)."""
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        self.sampler.distribute(world, rank, self.batch_size)
        self.val_share = CachedSlices(self.val_set.cache, self.val_set.neighbours,
                                      validation_rows(self.val_set.rows, self.case_day_codes,
                                                      world, rank))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=self.sampler,
                          drop_last=len(self.train_set) > self.batch_size, **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        shown = getattr(self, "val_share", None)
        shown = self.val_set if shown is None else shown
        return DataLoader(shown, batch_size=self.batch_size, shuffle=False,
                          **self._loader_options())

    def _loader_options(self) -> dict:
        workers = self.config.train.num_workers  # 0 on Windows: a pinned setting (core.config)
        return {"num_workers": workers, "collate_fn": _keep_batch,
                "pin_memory": torch.cuda.is_available(), "persistent_workers": workers > 0}

    def resume_at(self, epoch: int, batches: int) -> None:
        """Start the training epoch ``epoch`` after its first ``batches`` batches (a resumed run)."""
        self.sampler.resume_at(epoch, batches * self.batch_size)
