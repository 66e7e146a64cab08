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
from core.data.augment import MEAN, STD, augment_batch, normalise
from core.metrics import ScoreAccumulator
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


LOGIT_STRIDE = 4
"""SegFormer's logits come from the first stage's grid: a convolution with kernel 7, stride 4 and
padding 3, whose output ``i`` is centred on input pixel ``4 i``."""


def upsample_logits(logits: torch.Tensor, size) -> torch.Tensor:
    """Logits on the 1/4 grid → the input's ``size``, on that grid's own geometry: logit ``i`` sits
    on input pixel ``4 i`` (not at ``4 i + 1.5``, where an image resize with ``align_corners=False``
    would put it), so the corners align on ``4 n − 3`` pixels and the last three rows and columns,
    past the last logit, repeat it. Measured on the demo (benchmarks/geometry.py): the competition
    score at the original size rose from 0.912 to 0.924 against the image-resize mapping."""
    height, width = (int(v) for v in size)
    n, m = logits.shape[-2:]
    rows, cols = LOGIT_STRIDE * (n - 1) + 1, LOGIT_STRIDE * (m - 1) + 1
    if rows > height or cols > width:  # an input not a multiple of 4: fall back to image resize
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    up = F.interpolate(logits, size=(rows, cols), mode="bilinear", align_corners=True)
    return F.pad(up, (0, width - cols, 0, height - rows), mode="replicate")


def batch_seed(seed: int, batch_index: int) -> int:
    """The seed of every random draw in training batch number ``batch_index`` (counted over the
    whole run): a pure function of the two, so a resumed run draws what an uninterrupted one would."""
    return int(np.random.SeedSequence([seed, batch_index]).generate_state(1)[0])


class _CaseDayScores:
    """Collects validation predictions in row order and scores each case-day (``core.metrics``, the
    same code as ``evaluate``) as soon as its last slice has been seen, so one case-day at a time is
    held in memory."""

    def __init__(self):
        self.scores = ScoreAccumulator()
        self._code: int | None = None
        self._pred: list[np.ndarray] = []
        self._truth: list[np.ndarray] = []

    def add(self, codes: np.ndarray, pred: np.ndarray, truth: np.ndarray, names: list[str]) -> None:
        for start, stop in _runs(codes):
            if codes[start] != self._code:
                self.flush(names)
                self._code = int(codes[start])
            self._pred.append(pred[start:stop])
            self._truth.append(truth[start:stop])

    def flush(self, names: list[str]) -> None:
        if self._code is not None and self._pred:
            self.scores.add_case_day(names[self._code], np.concatenate(self._pred),
                                     np.concatenate(self._truth))
        self._code, self._pred, self._truth = None, [], []


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of the runs of equal values."""
    edges = np.flatnonzero(np.diff(values)) + 1
    bounds = np.concatenate(([0], edges, [len(values)]))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def _gather_validation(scores: ScoreAccumulator, total: torch.Tensor, count: torch.Tensor,
                       world: int):
    """Every process's case-day scores and loss sums, merged (in case-day order) on every process,
    so all log the same validation metrics: those of one process scoring the whole fold."""
    import torch.distributed as dist

    gathered: list = [None] * world
    dist.all_gather_object(gathered, (scores.case_day_scores, float(total), float(count)))
    merged = ScoreAccumulator()
    for scored in sorted((s for part, _, _ in gathered for s in part), key=lambda s: s.case_day):
        merged.add_score(scored)
    return (merged, total.new_tensor(sum(t for _, t, _ in gathered)),
            count.new_tensor(sum(c for _, _, c in gathered)))


class SegmentationModule(pl.LightningModule):
    """SegFormer + loss + optimiser + validation scores. ``config`` is ``StudioConfig.to_dict()``.

    Logged (``self.log``, into the run's ``metrics.csv``): ``train_loss`` and ``lr`` every
    ``log_every_n_steps`` steps; per validation ``val_loss``, ``val_dice`` (and per organ),
    ``val_hausdorff`` and ``val_score`` — the competition score of the validation fold's case-days
    at the training resolution, which chooses the checkpoint to keep (``train.monitor``).
    """

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
        # Not a buffer: weight averaging (train.ema) swaps every buffer with the average's copy
        # around validation, and this sum is made during validation.
        self._val_loss: torch.Tensor | None = None
        self._val_scores: _CaseDayScores | None = None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C, H, W)`` at the input's size (SegFormer predicts at 1/4 resolution)."""
        return upsample_logits(self.model(pixel_values=pixel_values).logits,
                               pixel_values.shape[-2:])

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float images ``(B, 3, S, S)`` on the model's device → model input."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        pixel_values = normalise(images, self.pixel_mean, self.pixel_std)
        if self.config.train.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        return pixel_values

    def apply_memory_format(self) -> "SegmentationModule":
        """Weights in channels-last layout when ``train.channels_last`` is on (on any device)."""
        if self.config.train.channels_last:
            self.to(memory_format=torch.channels_last)
        return self

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, masks = batch["image"], batch["mask"]
        if self.trainer is not None and self.trainer.training:
            # Every random draw of this step (augmentation here, dropout and drop-path in the
            # model) comes from the run's seed and the batch's number in the run.
            # The batch's number over the run counts every process's batches (DDP: process r's
            # i-th is the (i·world + r)-th), so it is the same number on any number of devices.
            trainer = self.trainer
            index = trainer.fit_loop.epoch_loop.batch_progress.total.ready
            seed = batch_seed(self.config.train.seed,
                              index * trainer.world_size + trainer.global_rank)
            torch.manual_seed(seed)
            if self.config.data.augment:
                images, masks = augment_batch(images, masks, seed)
        return {"pixel_values": self.pixel_values(images), "mask": masks.float(),
                "row": batch["row"]}

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.mode == "multiclass":
            target = class_map(masks)
            probs = logits.softmax(1)[:, 1:]
            return F.cross_entropy(logits, target) + soft_dice_loss(probs, masks)
        return (F.binary_cross_entropy_with_logits(logits, masks)
                + soft_dice_loss(logits.sigmoid(), masks))

    def training_step(self, batch, batch_idx):
        loss = self.loss(self(batch["pixel_values"]), batch["mask"])
        self.log("train_loss", loss.detach(), on_step=True, on_epoch=False,
                 sync_dist=self.trainer.world_size > 1)  # DDP: the mean over the processes
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True,
                 on_epoch=False)
        return loss

    def on_validation_epoch_start(self):
        self._val_loss = torch.zeros(2, device=self.device)
        self._val_scores = _CaseDayScores()

    def validation_step(self, batch, batch_idx):
        logits = self(batch["pixel_values"])
        masks = batch["mask"]
        self._val_loss += torch.stack([self.loss(logits, masks).detach() * len(masks),
                                       masks.new_tensor(len(masks))])
        datamodule = self.trainer.datamodule
        codes = datamodule.case_day_codes[batch["row"].cpu().numpy()]
        self._val_scores.add(codes, predict_masks(logits, self.mode).cpu().numpy(),
                             (masks > 0.5).cpu().numpy(), datamodule.case_day_names)

    def on_validation_epoch_end(self):
        self._val_scores.flush(self.trainer.datamodule.case_day_names)
        scores = self._val_scores.scores
        self._val_scores = None
        total, count = self._val_loss
        self._val_loss = None
        if self.trainer.world_size > 1:  # DDP: every process scored whole case-days of its own
            scores, total, count = _gather_validation(scores, total, count,
                                                      self.trainer.world_size)
        result = scores.result()
        metrics = {"val_loss": total / count.clamp_min(1),
                   "val_dice": result.dice, "val_hausdorff": result.hausdorff,
                   "val_score": result.score}
        metrics.update({f"val_dice_{organ}": result.dice_per_organ[organ] for organ in ORGANS})
        # Identical on every process (gathered above); sync_dist averages equal values, exactly.
        self.log_dict(metrics, on_epoch=True, sync_dist=self.trainer.world_size > 1)

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
