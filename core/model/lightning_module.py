"""The LightningModule that trains a SegFormer on cached GI-tract slices.

It owns the model, so Lightning moves it to the device once (nothing here moves sub-modules by hand),
and it turns uint8 batches into normalised, augmented float tensors on the device after transfer.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
import pytorch_lightning as pl

from core.config import StudioConfig, from_dict
from core.data import ORGANS
from core.data.augment import MEAN, STD, augment, augment_uint8, normalise
from core.model.factory import build_segformer


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 − soft Dice per channel over the batch, averaged over channels. Shapes ``(B, C, H, W)``."""
    dims = (0, 2, 3)
    intersection = (probs * target).sum(dims)
    total = probs.sum(dims) + target.sum(dims)
    return 1 - ((2 * intersection + eps) / (total + eps)).mean()


def class_map(masks: torch.Tensor) -> torch.Tensor:
    """Multiclass target from organ masks ``(B, 3, H, W)``: 0 background, i+1 organ i; where organs
    overlap the later organ in ``ORGANS`` order wins (stomach over small bowel over large bowel)."""
    target = torch.zeros(masks.shape[0], *masks.shape[2:], dtype=torch.long, device=masks.device)
    for i in range(masks.shape[1]):
        target = torch.where(masks[:, i] > 0.5, i + 1, target)
    return target


def predict_masks(logits: torch.Tensor, mode: str, threshold: float = 0.5) -> torch.Tensor:
    """Boolean organ masks ``(B, 3, H, W)`` from logits (sigmoid threshold, or softmax argmax)."""
    if mode == "multiclass":
        labels = logits.argmax(1)
        return torch.stack([labels == i + 1 for i in range(logits.shape[1] - 1)], 1)
    return logits.sigmoid() > threshold


def dice_sums(pred: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per organ: the sum of per-slice Dice and the number of slices counted, skipping slices where
    prediction and truth are both empty. ``pred``, ``truth`` bool ``(B, C, H, W)``."""
    pred, truth = pred.flatten(2), truth.flatten(2)
    inter = (pred & truth).sum(-1).float()
    total = pred.sum(-1).float() + truth.sum(-1).float()
    counted = total > 0
    dice = torch.where(counted, 2 * inter / total.clamp_min(1), torch.zeros_like(total))
    return dice.sum(0), counted.sum(0).float()


class SegmentationModule(pl.LightningModule):
    """SegFormer + loss + optimiser + validation Dice. ``config`` is ``StudioConfig.to_dict()``."""

    def __init__(self, config: dict, load_pretrained: bool = True):
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config: StudioConfig = from_dict(config)
        model_cfg = self.config.model
        if not load_pretrained:  # the weights come from a checkpoint; the folder may be gone
            model_cfg = dataclasses.replace(model_cfg, pretrained="")
        self.model = build_segformer(model_cfg, warn_random=load_pretrained)
        self.mode = self.config.model.mode
        self.register_buffer("pixel_mean", torch.tensor(MEAN).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(STD).view(1, -1, 1, 1), persistent=False)
        self._rng = np.random.default_rng(self.config.train.seed)
        self.register_buffer("_dice_sum", torch.zeros(len(ORGANS)), persistent=False)
        self.register_buffer("_dice_count", torch.zeros(len(ORGANS)), persistent=False)
        self.register_buffer("_val_loss", torch.zeros(2), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C, H, W)`` at the input's size (SegFormer predicts at 1/4 resolution)."""
        logits = self.model(pixel_values=pixel_values).logits
        return F.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear",
                             align_corners=False)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float images ``(B, 3, S, S)`` on the model's device → model input."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        pixel_values = normalise(images, self.pixel_mean, self.pixel_std)
        if self.config.train.channels_last and pixel_values.is_cuda:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        return pixel_values

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, masks = batch["image"], batch["mask"]
        if self.trainer is not None and self.trainer.training and self.config.data.augment:
            if images.device.type == "cpu":  # OpenCV on uint8 is the fast path on a CPU
                images, masks = (torch.from_numpy(a) for a in augment_uint8(
                    images.numpy(), masks.numpy(), self._rng))
            else:
                images, masks = augment(images.float().div_(255.0), masks.float())
        return {"pixel_values": self.pixel_values(images), "mask": masks.float()}

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.mode == "multiclass":
            target = class_map(masks)
            probs = logits.softmax(1)[:, 1:]
            return F.cross_entropy(logits, target) + soft_dice_loss(probs, masks)
        return (F.binary_cross_entropy_with_logits(logits, masks)
                + soft_dice_loss(logits.sigmoid(), masks))

    def training_step(self, batch, batch_idx):
        return self.loss(self(batch["pixel_values"]), batch["mask"])

    def on_validation_epoch_start(self):
        self._dice_sum.zero_()
        self._dice_count.zero_()
        self._val_loss.zero_()

    def validation_step(self, batch, batch_idx):
        logits = self(batch["pixel_values"])
        masks = batch["mask"]
        self._val_loss += torch.stack([self.loss(logits, masks).detach() * len(masks),
                                       masks.new_tensor(len(masks))])
        dice, counted = dice_sums(predict_masks(logits, self.mode), masks > 0.5)
        self._dice_sum += dice
        self._dice_count += counted

    def on_validation_epoch_end(self):
        per_organ = self._dice_sum / self._dice_count.clamp_min(1)
        overall = self._dice_sum.sum() / self._dice_count.sum().clamp_min(1)
        metrics = {"val_loss": self._val_loss[0] / self._val_loss[1].clamp_min(1),
                   "val_dice": overall}
        metrics.update({f"val_dice_{organ}": per_organ[i] for i, organ in enumerate(ORGANS)})
        self.log_dict(metrics, on_epoch=True)

    def configure_optimizers(self):
        train = self.config.train
        optimizer = torch.optim.AdamW(self.parameters(), lr=train.lr,
                                      weight_decay=train.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=train.lr, total_steps=total, pct_start=train.pct_start,
            div_factor=25.0, final_div_factor=1e4)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
