"""A figure-ready picture of one Review slice: the windowed image with its mask layer at a chosen
scale (no black borders, no zoom or pan of the screen), and under it a caption with the case-day, the
slice, the scores and a legend of the colours.

The pixels are the image's own, enlarged by an integer ``scale`` with nearest-neighbour sampling
(and stretched along one axis to the true aspect when the pixel spacing is not square), so a mask
pixel stays exactly on its image pixel.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen

from core.data import ORGANS
from core.review import CaseDayResult, slice_dice
from gui.review.overlay import (FALSE_NEGATIVE_COLOR, FALSE_POSITIVE_COLOR, OverlayStyle,
                                compose_overlay, layer_color)
from gui.review.scores import fmt

SCALES = (1, 2, 3, 4, 6, 8)


def blend(image: np.ndarray, window: tuple[float, float], overlay: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8: the image through the window (low → black, high → white) with the RGBA
    mask layer composited over it."""
    low, high = window
    grey = np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2)
    alpha = overlay[..., 3:4].astype(np.float32) / 255
    out = rgb * (1 - alpha) + overlay[..., :3].astype(np.float32) * alpha
    return np.rint(out).astype(np.uint8)


def enlarge(rgb: np.ndarray, scale: int, spacing: tuple[float, float]) -> np.ndarray:
    """Nearest-neighbour enlargement by ``scale``, with rows stretched to the true aspect."""
    height, width = rgb.shape[:2]
    pw, ph = spacing
    out_w = width * scale
    out_h = max(1, round(height * scale * ph / pw))
    return cv2.resize(rgb, (out_w, out_h), interpolation=cv2.INTER_NEAREST)


def caption_lines(result: CaseDayResult, index: int, run_name: str) -> list[str]:
    record = result.records[index]
    lines = [f"{result.case_day} · slice {record.slice_num} ({index + 1}/{result.depth})"
             + (f" · run {run_name}" if run_name else "")]
    if result.score is not None:
        score = result.score
        per_slice = slice_dice(result, index)
        lines.append(f"case-day: Dice {fmt(score.dice)} · Hausdorff {fmt(score.hausdorff)} · "
                     f"score {fmt(score.score)}")
        lines.append("this slice: Dice " + ", ".join(
            f"{o.replace('_', ' ')} {fmt(v)}" for o, v in zip(ORGANS, per_slice)))
    else:
        lines.append("no ground truth: prediction only")
    return lines


def legend_entries(style: OverlayStyle, has_truth: bool) -> list[tuple[tuple[int, int, int], str,
                                                                        bool]]:
    """(colour, text, dashed) of each legend swatch."""
    if style.errors and has_truth:
        return [(FALSE_POSITIVE_COLOR, "false positive", False),
                (FALSE_NEGATIVE_COLOR, "missed", False),
                *((layer_color(o, "organ"), f"{o.replace('_', ' ')} outline", False)
                  for k, o in enumerate(ORGANS) if style.organs[k])]
    entries = []
    for k, organ in enumerate(ORGANS):
        if not style.organs[k]:
            continue
        name = organ.replace("_", " ")
        if style.prediction != "hidden":
            entries.append((layer_color(organ, style.prediction_colors), f"{name} predicted", False))
        if has_truth and style.truth != "hidden":
            entries.append((layer_color(organ, style.truth_colors), f"{name} true",
                            style.truth_dashed and style.truth == "contour"))
    return entries


def render_figure(result: CaseDayResult, index: int, style: OverlayStyle,
                  window: tuple[float, float], scale: int = 2, run_name: str = "") -> QImage:
    """The figure of slice ``index`` as a ``QImage`` (RGB, white caption below the image)."""
    truth = None if result.truth is None else result.truth[index]
    overlay = compose_overlay(result.prediction[index], truth, style)
    picture = np.ascontiguousarray(enlarge(blend(result.images[index], window, overlay), scale,
                                           result.spacing))
    height, width = picture.shape[:2]
    font = QFont()
    font.setPixelSize(max(11, min(28, width // 40)))
    line = round(font.pixelSize() * 1.5)
    lines = caption_lines(result, index, run_name)
    entries = legend_entries(style, truth is not None)
    per_row = max(1, width // (font.pixelSize() * 14))
    legend_rows = math.ceil(len(entries) / per_row)
    margin = font.pixelSize() // 2
    caption = margin * 2 + line * (len(lines) + legend_rows)
    out = QImage(width, height + caption, QImage.Format_RGB888)
    out.fill(QColor("white"))
    image = QImage(picture.data, width, height, 3 * width, QImage.Format_RGB888)
    painter = QPainter(out)
    try:
        painter.drawImage(0, 0, image)
        painter.setFont(font)
        painter.setPen(QColor("#222"))
        y = height + margin
        for text in lines:
            painter.drawText(QRect(margin, y, width - 2 * margin, line), Qt.AlignVCenter, text)
            y += line
        cell = width // per_row
        box = font.pixelSize()
        for n, (color, text, dashed) in enumerate(entries):
            x, row_y = margin + (n % per_row) * cell, y + (n // per_row) * line
            top = row_y + (line - box) // 2
            if dashed:
                painter.setPen(QPen(QColor(*color), max(2, box // 6), Qt.DashLine))
                painter.drawRect(x + 1, top + 1, box - 2, box - 2)
            else:
                painter.fillRect(x, top, box, box, QColor(*color))
            painter.setPen(QColor("#222"))
            painter.drawText(QRect(x + box + margin // 2, row_y, cell - box - margin, line),
                             Qt.AlignVCenter, text)
    finally:
        painter.end()
    return out
