"""SegFormer Studio engine: data, model, training, inference, metrics and export.

Nothing in this package imports Qt; the GUI in ``gui/`` adapts it.
"""

__version__ = "0.1.0"
