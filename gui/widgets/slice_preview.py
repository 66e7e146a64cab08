"""Thumbnails of a few slices with their true masks overlaid, in the organ colours of the charts.

``pick_preview_slices`` and ``render_overlay`` are plain numpy (they run on the scan's worker thread);
``SlicePreviewGrid`` only turns the finished RGB arrays into pixmaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from core.data import ORGANS
from core.data.scan import DatasetIndex, SliceRecord, load_masks, read_png16
from core.export import overlay_image, window_image

MASK_ALPHA = 0.45


@dataclass
class SlicePreview:
    caption: str
    rgb: np.ndarray  # uint8 (height, width, 3)
    record: SliceRecord | None = None


def pick_preview_slices(index: DatasetIndex, count: int = 8) -> list[SliceRecord]:
    """One slice from each of the first ``count`` scans: the one with the most organs (then the
    middle of the scan), so the preview shows the masks."""
    def organs(record: SliceRecord) -> int:
        return sum(bool(rle) for rle in (record.rles or {}).values())

    picks = []
    for records in list(index.case_days().values())[:count]:
        middle = len(records) // 2
        best = max(range(len(records)), key=lambda i: (organs(records[i]), -abs(i - middle)))
        picks.append(records[best])
    return picks


def render_overlay(image: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """RGB of the windowed slice with the organ masks blended on top (``core.export``'s overlay,
    the same one the exported overlay PNGs use)."""
    if masks is None:
        return np.ascontiguousarray(np.repeat(window_image(image)[..., None], 3, axis=2))
    return overlay_image(image, masks, alpha=MASK_ALPHA)


def render_previews(index: DatasetIndex, count: int = 8) -> list[SlicePreview]:
    previews = []
    for record in pick_preview_slices(index, count):
        masks = load_masks(record) if index.has_labels else None
        organs = [o.replace("_", " ") for o, m in zip(ORGANS, masks)
                  if m.any()] if masks is not None else []
        caption = f"{record.id}  ({record.width}×{record.height})\n" + \
            (", ".join(organs) if organs else "no organ")
        previews.append(SlicePreview(caption, render_overlay(read_png16(record.path), masks),
                                     record))
    return previews


def to_pixmap(rgb: np.ndarray) -> QPixmap:
    height, width, _ = rgb.shape
    image = QImage(rgb.data, width, height, 3 * width, QImage.Format_RGB888)
    return QPixmap.fromImage(image.copy())  # copy: the QImage must not outlive the numpy buffer


class _Tile(QWidget):
    """One preview; a click asks for its slice to be opened in Review."""

    def __init__(self, grid: "SlicePreviewGrid", record: SliceRecord | None):
        super().__init__()
        self.grid, self.record = grid, record
        if record is not None:
            self.setCursor(Qt.PointingHandCursor)
            self.setToolTip(f"{record.id}: click to open this slice on the Review page")

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.button() == Qt.LeftButton and self.record is not None:
            self.grid.slice_clicked.emit(self.record.case_day, self.record.slice_num)
        super().mousePressEvent(event)


class SlicePreviewGrid(QWidget):
    slice_clicked = Signal(str, int)
    """(case-day, slice number) of a clicked preview."""

    def __init__(self, thumb_size: int = 200, columns: int = 4, parent: QWidget | None = None):
        super().__init__(parent)
        self.thumb_size = thumb_size
        self.columns = columns
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.tiles: list[QWidget] = []

    def set_previews(self, previews: list[SlicePreview]) -> None:
        for tile in self.tiles:
            tile.deleteLater()
        self.tiles = []
        for i, preview in enumerate(previews):
            tile = _Tile(self, preview.record)
            column = QVBoxLayout(tile)
            column.setContentsMargins(0, 0, 0, 0)
            picture = QLabel()
            picture.setPixmap(to_pixmap(preview.rgb).scaled(
                self.thumb_size, self.thumb_size, Qt.KeepAspectRatio, Qt.SmoothTransformation))
            picture.setAlignment(Qt.AlignCenter)
            caption = QLabel(preview.caption)
            caption.setAlignment(Qt.AlignCenter)
            caption.setObjectName("hint")
            column.addWidget(picture)
            column.addWidget(caption)
            self.grid.addWidget(tile, *divmod(i, self.columns))
            self.tiles.append(tile)
