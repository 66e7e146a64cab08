"""The CPU augmentation (OpenCV on uint8) and the module's batch hook that uses it on the CPU."""

import numpy as np
import pytest
import torch

from core.config import StudioConfig, apply_overrides
from core.data.augment import AugmentParams, augment_uint8, normalise
from core.model.lightning_module import batch_seed


def random_batch(seed: int, b: int, s: int, mask_fraction: float = 0.3):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (b, 3, s, s), dtype=np.uint8)
    masks = (rng.random((b, 3, s, s)) < mask_fraction).astype(np.uint8)
    return images, masks


def test_uint8_augment_keeps_shapes_and_dtypes_and_masks_binary():
    images, masks = random_batch(0, 3, 64)
    out_images, out_masks = augment_uint8(images, masks, np.random.default_rng(0))
    assert out_images.shape == images.shape and out_masks.shape == masks.shape
    assert out_images.dtype == np.uint8 and out_masks.dtype == np.uint8
    assert set(np.unique(out_masks).tolist()) <= {0, 1}
    assert not np.array_equal(out_images, images)  # it did something…
    assert np.array_equal(images, random_batch(0, 3, 64)[0])  # …to new arrays, not the input


def test_uint8_augment_is_reproducible_from_the_generator():
    images, masks = random_batch(1, 2, 32)
    first = augment_uint8(images, masks, np.random.default_rng(7))
    second = augment_uint8(images, masks, np.random.default_rng(7))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_uint8_augment_without_warp_keeps_or_mirrors_the_slice_and_the_mask_follows():
    """No rotation, scale, shift or dropout: each slice is itself or its mirror, with brightness
    and contrast as one monotonic lookup table, and its masks flipped the same way."""
    images, masks = random_batch(2, 8, 32, mask_fraction=0.5)
    out_images, out_masks = augment_uint8(images, masks, np.random.default_rng(3), AugmentParams(
        max_rotate_deg=0, max_scale=0, max_shift=0, dropout_holes=0))
    flips = []
    for k in range(len(images)):
        mirrored = masks[k, :, :, ::-1]
        assert np.array_equal(out_masks[k], masks[k]) or np.array_equal(out_masks[k], mirrored)
        flipped = not np.array_equal(out_masks[k], masks[k])
        flips.append(flipped)
        source = images[k, :, :, ::-1] if flipped else images[k]
        table = np.zeros(256, dtype=np.int32)
        table[source] = out_images[k]
        assert np.array_equal(table[source], out_images[k])  # a function of the source pixel…
        present = np.unique(source)
        assert np.all(np.diff(table[present]) >= 0)  # …that keeps their order
    assert any(flips) and not all(flips)  # both cases were seen (seeded)


def test_uint8_augment_dropout_blackens_square_holes_in_every_channel_but_not_the_masks():
    _, masks = random_batch(4, 6, 64)
    images = np.full_like(masks, 255)  # stays > 0 under any brightness/contrast: zeros are holes
    out_images, out_masks = augment_uint8(images, masks, np.random.default_rng(5), AugmentParams(
        max_rotate_deg=0, max_scale=0, max_shift=0))
    holes = out_images == 0
    assert holes.any() and not holes.all()
    assert np.array_equal(holes, np.repeat(holes[:, :1], 3, axis=1))  # all channels alike
    for k in range(len(masks)):
        assert (np.array_equal(out_masks[k], masks[k])
                or np.array_equal(out_masks[k], masks[k, :, :, ::-1]))


@pytest.fixture(scope="module")
def module():
    from core.model.lightning_module import SegmentationModule

    config = apply_overrides(StudioConfig(), ["train.device=cpu"])  # the size is the batch's
    torch.manual_seed(0)
    return SegmentationModule(config.to_dict(), load_pretrained=False)


def attach_training_trainer(module, training: bool) -> None:
    """A minimal Trainer, so that the hook sees the training (or validation) stage as it does
    inside ``Trainer.fit``."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.training = training
    module.trainer = trainer


def test_module_hook_on_cpu_in_training_augments_with_augment_uint8_and_normalises(module):
    images, masks = random_batch(6, 2, 32)
    attach_training_trainer(module, training=True)
    # The draws of batch number 0 of a run with the default seed: a function of the two alone.
    rng = np.random.default_rng(batch_seed(module.config.train.seed, 0))
    batch = {"image": torch.from_numpy(images), "mask": torch.from_numpy(masks),
             "row": torch.arange(2)}
    out = module.on_after_batch_transfer(batch, 0)
    pixel_values, out_masks = out["pixel_values"], out["mask"]
    assert pixel_values.dtype == torch.float32 and pixel_values.shape == (2, 3, 32, 32)
    assert out_masks.dtype == torch.float32 and out_masks.shape == (2, 3, 32, 32)
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    expected_images, expected_masks = augment_uint8(images, masks, rng)
    expected = normalise(torch.from_numpy(expected_images).float() / 255.0, module.pixel_mean,
                         module.pixel_std)
    assert torch.allclose(pixel_values, expected, atol=1e-5)
    assert torch.equal(out_masks, torch.from_numpy(expected_masks).float())


def test_module_hook_outside_training_only_normalises(module):
    images, masks = random_batch(8, 2, 32)
    attach_training_trainer(module, training=False)
    out = module.on_after_batch_transfer(
        {"image": torch.from_numpy(images), "mask": torch.from_numpy(masks),
         "row": torch.arange(2)}, 0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = (torch.from_numpy(images).float() / 255.0 - mean) / std
    assert torch.allclose(out["pixel_values"], expected, atol=1e-5)
    assert torch.equal(out["mask"], torch.from_numpy(masks).float())
