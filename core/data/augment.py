"""Batch augmentation and normalisation, after the batch is transferred to the training device.

Images arrive as uint8 ``(B, 3, S, S)`` straight from the memory-mapped cache, masks as uint8 0/1
``(B, 3, S, S)``. On a GPU, ``augment`` is a handful of batched tensor operations. On the CPU,
``augment_uint8`` does the same transforms with OpenCV on uint8 (measured 6× faster than the tensor
path there: one warp per channel with the flip folded in, masks warped once as packed bits,
brightness/contrast as a lookup table). Neither ever builds 3-channel float arrays before the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from core.data.organ_bits import unpack_organ_bits

# ImageNet statistics: MiT encoders were pretrained with them, and grey MR slices in [0, 1] sit
# comfortably inside their range.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugmentParams:
    """The random transforms of training, shared by the CPU and the device path."""

    flip_p: float = 0.5
    """Probability of a horizontal flip."""
    max_rotate_deg: float = 15.0
    max_scale: float = 0.1
    """Scale drawn from 1 ± this."""
    max_shift: float = 0.0625
    """Shift drawn from ± this fraction of the image size, per axis."""
    max_contrast: float = 0.2
    """Contrast factor 1 ± this, around mid-grey."""
    max_brightness: float = 0.1
    """Brightness offset ± this (intensities in [0, 1])."""
    dropout_p: float = 0.5
    dropout_holes: int = 4
    dropout_size: float = 0.08
    """Side of each dropout square as a fraction of the image size."""


DEFAULT_AUGMENT = AugmentParams()


def augment_batch(images: torch.Tensor, masks: torch.Tensor, seed: int,
                  params: AugmentParams = DEFAULT_AUGMENT) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a uint8 batch where it lies — OpenCV on uint8 on the CPU, batched tensor ops on a
    GPU — with every random draw taken from ``seed``. Returns uint8 images on the CPU or float
    images in [0, 1] on a GPU, and masks."""
    if images.device.type == "cpu":
        out = augment_uint8(images.numpy(), masks.numpy(), np.random.default_rng(seed), params)
        return torch.from_numpy(out[0]), torch.from_numpy(out[1])
    generator = torch.Generator(device=images.device).manual_seed(seed)
    return augment(images.float().div_(255.0), masks.float(), generator, params)


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] ``(B, 3, S, S)`` → normalised. ``mean`` and ``std`` are ``(1, 3, 1, 1)``
    tensors already on ``x``'s device (module buffers): building them from Python numbers at every
    step would be a blocking host-to-device copy on a GPU."""
    return (x - mean) / std


def augment_uint8(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator,
                  params: AugmentParams = DEFAULT_AUGMENT) -> tuple[np.ndarray, np.ndarray]:
    """The transforms of ``augment`` per slice with OpenCV on uint8, for training on the CPU.

    ``images`` uint8 ``(B, 3, S, S)``; ``masks`` uint8 0/1 ``(B, 3, S, S)``. Returns new arrays.
    """
    b, channels, s, _ = images.shape
    out_images = np.empty_like(images)
    out_masks = np.empty_like(masks)
    levels = np.arange(256, dtype=np.float32) / 255.0
    p = params
    hole = max(1, int(s * p.dropout_size))
    for k in range(b):
        matrix = cv2.getRotationMatrix2D((s / 2 - 0.5, s / 2 - 0.5),
                                         rng.uniform(-p.max_rotate_deg, p.max_rotate_deg),
                                         1 + rng.uniform(-p.max_scale, p.max_scale))
        matrix[:, 2] += rng.uniform(-p.max_shift, p.max_shift, 2) * s
        if rng.random() < p.flip_p:  # horizontal flip after the warp: x → s − 1 − x
            matrix[0] = -matrix[0]
            matrix[0, 2] += s - 1
        for c in range(channels):
            cv2.warpAffine(images[k, c], matrix, (s, s), dst=out_images[k, c],
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        packed = masks[k, 0] | (masks[k, 1] << 1) | (masks[k, 2] << 2)
        packed = cv2.warpAffine(packed, matrix, (s, s), flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out_masks[k] = unpack_organ_bits(packed)
        contrast = 1 + rng.uniform(-p.max_contrast, p.max_contrast)
        brightness = rng.uniform(-p.max_brightness, p.max_brightness)
        table = np.clip(((levels - 0.5) * contrast + 0.5 + brightness) * 255 + 0.5, 0, 255)
        flat = out_images[k].reshape(channels * s, s)
        cv2.LUT(flat, table.astype(np.uint8), dst=flat)
        if p.dropout_holes and rng.random() < p.dropout_p:
            for y, x in rng.integers(0, s - hole, (p.dropout_holes, 2)):
                out_images[k, :, y:y + hole, x:x + hole] = 0
    return out_images, out_masks


def augment(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None = None,
            params: AugmentParams = DEFAULT_AUGMENT) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips, affine warp, brightness/contrast and coarse dropout for a batch.

    ``images``: float in [0, 1] ``(B, 3, S, S)``; ``masks``: float 0/1 ``(B, C, S, S)``.
    Masks follow the same flips and warp (nearest), and are untouched by intensity changes and
    dropout. Returns new tensors.
    """
    b, _, s, _ = images.shape
    device = images.device
    p = params

    def rand(*shape):
        return torch.rand(*shape, device=device, generator=generator)

    flip = rand(b) < p.flip_p
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    masks = torch.where(flip.view(-1, 1, 1, 1), masks.flip(-1), masks)

    angle = (rand(b) * 2 - 1) * math.radians(p.max_rotate_deg)
    scale = 1 + (rand(b) * 2 - 1) * p.max_scale
    shift = (rand(b, 2) * 2 - 1) * p.max_shift * 2  # affine_grid works in [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    contrast = 1 + (rand(b, 1, 1, 1) * 2 - 1) * p.max_contrast
    brightness = (rand(b, 1, 1, 1) * 2 - 1) * p.max_brightness
    images = ((images - 0.5) * contrast + 0.5 + brightness).clamp_(0, 1)

    if p.dropout_holes:
        size = max(1, int(s * p.dropout_size))
        ys = (rand(b, p.dropout_holes) * (s - size)).long()
        xs = (rand(b, p.dropout_holes) * (s - size)).long()
        coords = torch.arange(s, device=device)
        in_y = (coords.view(1, 1, s) >= ys[..., None]) & (coords.view(1, 1, s) < ys[..., None] + size)
        in_x = (coords.view(1, 1, s) >= xs[..., None]) & (coords.view(1, 1, s) < xs[..., None] + size)
        holes = (in_y[..., :, None] & in_x[..., None, :]).any(1)  # (B, S, S)
        use = (rand(b) < p.dropout_p).view(-1, 1, 1)
        images = images.masked_fill((holes & use)[:, None], 0.0)
    return images, masks
