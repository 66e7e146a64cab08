"""SegFormer: the MiT variants as data (``variants``), the factory (``factory``) and the LightningModule
that trains it (``lightning_module``). Import the submodules; this package imports nothing, so the
settings can use ``core.model.variants`` without loading the model code."""
