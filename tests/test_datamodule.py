"""Fold split by case, the cached dataset's batches, device augmentation, the Windows worker lock."""

import numpy as np
import pytest
import torch

from core.config import StudioConfig, apply_overrides
from core.data.augment import AugmentParams, augment
from core.data.cache import build_cache
from core.data.datamodule import EpochShuffle, SliceDataModule, split_by_case
from core.data.scan import scan_dataset
from core.errors import ConfigError


@pytest.mark.parametrize("num_folds", [2, 3, 5])
def test_folds_split_by_case_and_cover_every_case_once(num_folds):
    cases = [c for c in range(10) for _ in range(7)]
    val_seen = []
    for fold in range(num_folds):
        train, val = split_by_case(cases, num_folds, fold, seed=1)
        assert not train & val and train | val == set(range(10))
        val_seen += sorted(val)
    assert sorted(val_seen) == list(range(10))


def test_more_folds_than_cases_is_explained():
    with pytest.raises(ConfigError, match="num_folds.*at least 6 cases.*has 4"):
        split_by_case([1, 2, 3, 4], 6, 0, seed=0)


def _module(small_demo, tmp_path, **overrides):
    cfg = apply_overrides(StudioConfig(), [f"{k}={v}" for k, v in {
        "data.image_size": 64, "data.num_folds": 4, "train.batch_size": 5, **overrides}.items()])
    index = scan_dataset(small_demo)
    return index, SliceDataModule(index, build_cache(index, 64, tmp_path), cfg)


def test_no_case_in_both_training_and_validation(small_demo, tmp_path):
    index, dm = _module(small_demo, tmp_path)
    train_cases = {index.slices[r].case for r in dm.train_set.rows}
    val_cases = {index.slices[r].case for r in dm.val_set.rows}
    assert train_cases and val_cases and not train_cases & val_cases
    assert len(dm.train_set) + len(dm.val_set) == 72


def test_batches_are_uint8_2_5d_neighbours(small_demo, tmp_path):
    index, dm = _module(small_demo, tmp_path, **{"data.context": 1})
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (5, 3, 64, 64) and batch["image"].dtype == torch.uint8
    assert batch["mask"].shape == (5, 3, 64, 64) and set(batch["mask"].unique().tolist()) <= {0, 1}
    cache = dm.cache
    for image, row in zip(batch["image"], batch["row"].tolist()):
        scan = [i for i, r in enumerate(index.slices) if r.case_day == index.slices[row].case_day]
        below, above = max(row - 1, scan[0]), min(row + 1, scan[-1])
        assert np.array_equal(image.numpy(), cache.images[[below, row, above]])
        assert np.array_equal(batch["mask"][batch["row"].tolist().index(row)].numpy(),
                              cache.unpack_masks([row])[0])


def test_batch_order_is_a_function_of_seed_and_epoch_and_resumes_mid_epoch():
    sampler = EpochShuffle(20, seed=3)
    sampler.set_epoch(4)
    whole = list(sampler)
    assert sorted(whole) == list(range(20))
    again = EpochShuffle(20, seed=3)
    again.set_epoch(4)
    assert list(again) == whole  # nothing else (global RNG, earlier epochs) changes the order
    again.set_epoch(5)
    assert list(again) != whole
    resumed = EpochShuffle(20, seed=3)
    resumed.resume_at(4, 8)
    resumed.set_epoch(4)
    assert list(resumed) == whole[8:] and len(resumed) == 20  # the rest of the epoch, once
    assert list(resumed) == whole


def test_augmentation_moves_images_and_masks_together():
    torch.manual_seed(0)
    images = torch.zeros(16, 3, 32, 32)
    images[:, :, 4:12, 20:28] = 1.0  # a bright square…
    masks = (images[:, :1] > 0.5).float().repeat(1, 3, 1, 1)  # …and its mask
    out_images, out_masks = augment(images, masks, params=AugmentParams(dropout_holes=0))
    assert out_images.shape == images.shape and out_masks.shape == masks.shape
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    changed = (out_masks != masks).flatten(1).any(1)
    assert changed.any()  # some samples were flipped or warped
    for img, msk in zip(out_images, out_masks):  # mask still marks the bright pixels
        inside = msk[0] > 0.5
        if inside.sum() > 10:
            assert img[0][inside].mean() > img[0][~inside].mean() + 0.3
