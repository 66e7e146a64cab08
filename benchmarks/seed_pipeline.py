"""The seed's reference pipeline: what the original notebook did per step, kept as the baseline.

Per sample, on the training thread (DataLoader ``num_workers = 0``, batch 6): read the 16-bit
PNG, decode the three RLE masks, min-max normalise the slice, copy it to three float32 channels,
resize to the training size, run albumentations (flip, shift-scale-rotate, brightness/contrast,
coarse dropout) on the 3-channel float image, and make tensors. Training: fp16 autocast with a
``GradScaler`` on a GPU (fp32 on the CPU), gradient accumulation 2, and the loss read back with
``.item()`` every step.

The baseline is conservative: PNG and RLE decoding use the engine's vectorised ``read_png16`` and
``rle_decode`` (the notebook decoded RLE with a Python loop over runs), so any ratio against it is a
lower bound.
"""

from __future__ import annotations

import warnings

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from core.data.scan import SliceRecord, load_masks, read_png16

SEED_BATCH_SIZE = 6
SEED_ACCUMULATE = 2


def seed_transforms() -> A.Compose:
    """The seed's augmentation, with the same strengths as ``core.data.augment``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ShiftScaleRotate is deprecated in albumentations 2
        return A.Compose([
            A.HorizontalFlip(p=0.5),
            A.ShiftScaleRotate(shift_limit=0.0625, scale_limit=0.1, rotate_limit=15,
                               border_mode=cv2.BORDER_CONSTANT, p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.2, p=0.5),
            A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.04, 0.08),
                            hole_width_range=(0.04, 0.08), p=0.5),
        ])


class SeedSlices(Dataset):
    """The seed's dataset: everything per sample, every time. Items are ``(image, mask)``, float32
    tensors of shape ``(3, S, S)``. Each stage is its own method so that a benchmark can time it."""

    def __init__(self, records: list[SliceRecord], image_size: int, augment: bool = True):
        self.records = records
        self.image_size = image_size
        self.transforms = seed_transforms() if augment else None

    def __len__(self) -> int:
        return len(self.records)

    def read(self, record: SliceRecord) -> tuple[np.ndarray, np.ndarray]:
        """The 16-bit slice and its three decoded masks, ``(H, W)`` and ``(H, W, 3)`` uint8."""
        return read_png16(record.path), load_masks(record).transpose(1, 2, 0).view(np.uint8)

    def preprocess(self, image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Min-max normalise, three float channels, resize to ``S × S``."""
        image = image.astype(np.float32)
        low, high = float(image.min()), float(image.max())
        image = (image - low) / max(high - low, 1e-6)
        image = np.repeat(image[..., None], 3, axis=2)
        size = (self.image_size, self.image_size)
        return (cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
                cv2.resize(np.ascontiguousarray(masks), size, interpolation=cv2.INTER_NEAREST))

    def augment(self, image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.transforms is None:
            return image, masks
        out = self.transforms(image=image, mask=masks)
        return out["image"], out["mask"]

    @staticmethod
    def to_tensors(image: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(masks.transpose(2, 0, 1))).float())

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, masks = self.read(self.records[i])
        image, masks = self.preprocess(image, masks)
        image, masks = self.augment(image, masks)
        return self.to_tensors(image, masks)


def seed_loader(records: list[SliceRecord], image_size: int, batch_size: int = SEED_BATCH_SIZE,
                seed: int = 0) -> DataLoader:
    """The seed's loader: shuffled, ``num_workers = 0``, pinned memory when a GPU is there."""
    return DataLoader(SeedSlices(records, image_size), batch_size=batch_size, shuffle=True,
                      drop_last=len(records) > batch_size, num_workers=0,
                      pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(seed))


def seed_prepare(device: torch.device):
    """The seed's host-to-device step: a plain (blocking) ``.to(device)`` of image and mask."""
    def prepare(batch):
        images, masks = batch
        return {"pixel_values": images.to(device), "mask": masks.to(device)}
    return prepare


def seed_precision(device: torch.device) -> tuple[str, bool]:
    """The seed's precision and whether it uses a ``GradScaler``: fp16 + scaler on a GPU, else
    fp32."""
    return ("16-mixed", True) if device.type == "cuda" else ("32", False)
