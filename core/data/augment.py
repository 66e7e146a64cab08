"""Batch augmentation and normalisation on the training device, after the batch is transferred.

Images arrive as uint8 ``(B, 3, S, S)`` straight from the memory-mapped cache, masks as uint8 0/1
``(B, C, S, S)``. Everything here is a handful of batched tensor operations, so it costs little on a
GPU and never touches 3-channel float arrays on the CPU loading thread.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ImageNet statistics: MiT encoders were pretrained with them, and grey MR slices in [0, 1] sit
# comfortably inside their range.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] ``(B, 3, S, S)`` → normalised with ImageNet mean and std."""
    mean = x.new_tensor(MEAN).view(1, -1, 1, 1)
    std = x.new_tensor(STD).view(1, -1, 1, 1)
    return (x - mean) / std


def augment(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None = None,
            max_rotate_deg: float = 15.0, max_scale: float = 0.1, max_shift: float = 0.0625,
            dropout_holes: int = 4, dropout_size: float = 0.08) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips, affine warp, brightness/contrast and coarse dropout for a batch.

    ``images``: float in [0, 1] ``(B, 3, S, S)``; ``masks``: float 0/1 ``(B, C, S, S)``.
    Masks follow the same flips and warp (nearest), and are untouched by intensity changes and
    dropout. Returns new tensors.
    """
    b, _, s, _ = images.shape
    device = images.device

    def rand(*shape):
        return torch.rand(*shape, device=device, generator=generator)

    flip = rand(b) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    masks = torch.where(flip.view(-1, 1, 1, 1), masks.flip(-1), masks)

    angle = (rand(b) * 2 - 1) * math.radians(max_rotate_deg)
    scale = 1 + (rand(b) * 2 - 1) * max_scale
    shift = (rand(b, 2) * 2 - 1) * max_shift * 2  # affine_grid works in [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    contrast = 1 + (rand(b, 1, 1, 1) * 2 - 1) * 0.2
    brightness = (rand(b, 1, 1, 1) * 2 - 1) * 0.1
    images = ((images - 0.5) * contrast + 0.5 + brightness).clamp_(0, 1)

    if dropout_holes:
        size = max(1, int(s * dropout_size))
        ys = (rand(b, dropout_holes) * (s - size)).long()
        xs = (rand(b, dropout_holes) * (s - size)).long()
        coords = torch.arange(s, device=device)
        in_y = (coords.view(1, 1, s) >= ys[..., None]) & (coords.view(1, 1, s) < ys[..., None] + size)
        in_x = (coords.view(1, 1, s) >= xs[..., None]) & (coords.view(1, 1, s) < xs[..., None] + size)
        holes = (in_y[..., :, None] & in_x[..., None, :]).any(1)  # (B, S, S)
        use = (rand(b) < 0.5).view(-1, 1, 1)
        images = images.masked_fill((holes & use)[:, None], 0.0)
    return images, masks
