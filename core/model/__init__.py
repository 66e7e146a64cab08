"""SegFormer factory (MiT-B0…B5 as data) and the LightningModule that trains it."""

from core.model.factory import VARIANT_TABLE, build_segformer, output_channels

__all__ = ["VARIANT_TABLE", "build_segformer", "output_channels"]
