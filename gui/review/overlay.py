"""Compose the mask layer drawn over a slice: prediction and truth as fill or contour, or errors.

Pure numpy (and OpenCV for the erosion), no Qt: the result is the ``(H, W, 4)`` RGBA array the viewer
puts above the image, so tests can check colours pixel by pixel without a display.

Layers are alpha-composited ("over") in this order: truth fill, prediction fill, truth contour,
prediction contour. Fills use the opacity; contours are opaque. In fill mode each organ also gets its
opaque outline, so where organs overlap the blended fill still shows both outlines. Truth and
prediction stay apart in every mode: each layer has its own colour set (by default the prediction in
the organ colours, the truth in their pale tints), and the truth's contour is dashed.

The errors mode fills false positives and misses in two colours and outlines each organ (predicted or
true) in its own colour, so an error shows which organ it belongs to; agreement is left unfilled so
the image under it stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.data import ORGANS
from core.export import ORGAN_COLORS

LAYER_MODES = ("fill", "contour", "hidden")

FALSE_POSITIVE_COLOR = (213, 94, 0)
"""Vermillion (Okabe–Ito): predicted, not in the truth."""
FALSE_NEGATIVE_COLOR = (0, 114, 178)
"""Blue (Okabe–Ito): in the truth, missed by the prediction."""
TRUTH_TINT = 0.5
"""Truth is drawn in its organ's colour mixed this much with white, so it differs from the prediction."""


COLOR_SETS = ("organ", "pale", "yellow", "white", "cyan")
"""Colour sets of a layer: the organ colours, their pale tints, or one colour for every organ."""
_SINGLE_COLORS = {"yellow": (240, 228, 66), "white": (255, 255, 255), "cyan": (86, 220, 233)}
DASH = 3
"""Length in pixels of the dashes (and gaps) of the truth's contour."""


@dataclass(frozen=True)
class OverlayStyle:
    prediction: str = "fill"
    truth: str = "contour"
    errors: bool = False
    """Colour false positives and false negatives instead of the two layers (needs the truth)."""
    organs: tuple[bool, bool, bool] = (True, True, True)
    opacity: float = 0.45
    """Alpha of fills, 0–1."""
    thickness: int = 1
    """Contour width in image pixels."""
    prediction_colors: str = "organ"
    truth_colors: str = "pale"
    """Colour set (``COLOR_SETS``) of each layer."""
    truth_dashed: bool = True
    """Draw the truth's contour dashed, so it differs from the prediction's even in one colour."""


def organ_color(organ: str, truth: bool = False) -> tuple[int, int, int]:
    """RGB of an organ's prediction, or of its truth (the colour tinted towards white)."""
    color = ORGAN_COLORS[organ]
    if not truth:
        return color
    return tuple(int(round(c + (255 - c) * TRUTH_TINT)) for c in color)


def layer_color(organ: str, color_set: str) -> tuple[int, int, int]:
    """RGB of ``organ`` in a layer drawn with ``color_set`` (one of ``COLOR_SETS``)."""
    if color_set in _SINGLE_COLORS:
        return _SINGLE_COLORS[color_set]
    return organ_color(organ, truth=color_set == "pale")


def dashes(shape: tuple[int, int], origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """``(H, W)`` bool: the pixels a dashed line keeps (diagonal bands ``DASH`` pixels wide, fixed to
    the slice's pixel grid: ``origin`` is the (row, column) of this array's first pixel), so a
    horizontal or vertical contour alternates ``DASH`` pixels drawn, ``DASH`` left out."""
    rows, cols = np.indices(shape)
    return ((rows + cols + origin[0] + origin[1]) // DASH) % 2 == 0


def boundary(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """The inner band of ``mask`` (``(H, W)`` bool) that is ``thickness`` pixels wide."""
    if not mask.any():
        return mask
    size = 2 * max(1, int(thickness)) + 1
    inner = cv2.erode(np.ascontiguousarray(mask).view(np.uint8), np.ones((size, size), np.uint8),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask & ~inner.view(bool)


class _Canvas:
    """Premultiplied RGBA accumulator for the "over" operator, one float32 plane per channel."""

    def __init__(self, height: int, width: int):
        self.planes = np.zeros((4, height, width), np.float32)  # premultiplied R, G, B; alpha

    def paint(self, mask: np.ndarray, color: tuple[int, int, int], alpha: float) -> None:
        if alpha <= 0 or not mask.any():
            return
        coverage = mask * np.float32(alpha)
        keep = 1.0 - coverage
        for channel, value in enumerate((*color, 1.0)):
            plane = self.planes[channel]
            plane *= keep
            plane += coverage * np.float32(value)

    def rgba(self) -> np.ndarray:
        premultiplied, alpha = self.planes[:3], self.planes[3]
        out = np.empty(alpha.shape + (4,), np.uint8)
        with np.errstate(invalid="ignore", divide="ignore"):
            rgb = np.where(alpha > 0, premultiplied / alpha, 0)
        out[..., :3] = np.rint(np.moveaxis(rgb, 0, -1))
        out[..., 3] = np.rint(alpha * 255)
        return out


def compose_overlay(prediction: np.ndarray, truth: np.ndarray | None,
                    style: OverlayStyle) -> np.ndarray:
    """The mask layer of one slice: ``(3, H, W)`` bool masks (``ORGANS`` order) → ``(H, W, 4)`` uint8.

    ``truth`` may be None (a dataset without labels): then only the prediction is drawn and the errors
    mode falls back to it.
    """
    prediction = np.asarray(prediction, dtype=bool)
    truth = None if truth is None else np.asarray(truth, dtype=bool)
    height, width = prediction.shape[1:]
    out = np.zeros((height, width, 4), np.uint8)
    # Organs cover a small part of a slice: compose inside the box that holds every mask pixel. The
    # erosion treats outside the box as outside the masks, which it is.
    footprint = prediction.any(0) if truth is None else prediction.any(0) | truth.any(0)
    rows, cols = np.flatnonzero(footprint.any(1)), np.flatnonzero(footprint.any(0))
    if not rows.size:
        return out
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    crop_truth = None if truth is None else truth[(slice(None),) + box]
    out[box] = _compose(prediction[(slice(None),) + box], crop_truth, style,
                        (int(rows[0]), int(cols[0])))
    return out


def _compose(prediction: np.ndarray, truth: np.ndarray | None, style: OverlayStyle,
             origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    canvas = _Canvas(*prediction.shape[1:])
    shown = [k for k, on in enumerate(style.organs) if on]
    if style.errors and truth is not None:
        for k in shown:
            canvas.paint(prediction[k] & ~truth[k], FALSE_POSITIVE_COLOR, style.opacity)
            canvas.paint(truth[k] & ~prediction[k], FALSE_NEGATIVE_COLOR, style.opacity)
        for k in shown:  # which organ an error belongs to: the organ's outline in its colour
            canvas.paint(boundary(prediction[k] | truth[k], 1), organ_color(ORGANS[k]), 1.0)
        return canvas.rgba()
    layers = [(prediction, style.prediction, False)]
    if truth is not None:
        layers.insert(0, (truth, style.truth, True))
    colors = {False: style.prediction_colors, True: style.truth_colors}
    for masks, mode, is_truth in layers:
        if mode == "fill":
            for k in shown:
                canvas.paint(masks[k], layer_color(ORGANS[k], colors[is_truth]), style.opacity)
    dashed = dashes(prediction.shape[1:], origin) if style.truth_dashed and truth is not None else None
    for masks, mode, is_truth in layers:
        if mode == "hidden":
            continue
        # A fill's outline is one pixel; a contour's is as thick as asked.
        width = style.thickness if mode == "contour" else 1
        for k in shown:
            line = boundary(masks[k], width)
            if is_truth and dashed is not None and mode == "contour":
                line = line & dashed
            canvas.paint(line, layer_color(ORGANS[k], colors[is_truth]), 1.0)
    return canvas.rgba()
