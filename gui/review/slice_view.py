"""The slice viewer: the 16-bit slice in a pyqtgraph ``ImageItem`` with the RGBA mask layer above it.

Arrays are ``(row, column)`` (``axisOrder='row-major'``) and the y axis is inverted, so row 0 is at
the top as in the PNG. Both items are laid on a rectangle of the slice's size in mm (pixel spacing from
the file name) in a view with a locked 1:1 aspect: a 360×310 slice of 1.5 × 1.5 mm pixels shows as
540 × 465 mm, the right way round. The wheel scrolls slices (Ctrl+wheel zooms, dragging pans); keys
are listed in ``KEYS``.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QKeyEvent, QWheelEvent

from core.data import ORGANS
from gui.review.overlay import compose_overlay
from core.review import CaseDayResult
from gui.review.viewer_state import ViewerState

KEYS = ("←/→ or ↑/↓: previous/next slice · PgUp/PgDn: 10 slices · Home/End: first/last · "
        "wheel: slices · Ctrl+wheel: zoom · drag: pan · 1/2/3: organs · P/T: prediction/truth "
        "fill → contour → hidden · E: errors · A: automatic contrast · R: reset zoom")

_STEPS = {Qt.Key_Left: -1, Qt.Key_Up: -1, Qt.Key_Right: 1, Qt.Key_Down: 1,
          Qt.Key_PageUp: -10, Qt.Key_PageDown: 10}


class SliceView(pg.GraphicsLayoutWidget):
    hover_text = Signal(str)
    """What is under the cursor: slice, pixel, value, masks there."""

    def __init__(self, state: ViewerState, parent=None):
        super().__init__(parent)
        self.state = state
        self.result: CaseDayResult | None = None
        self.setBackground("#111")
        self.ci.setContentsMargins(0, 0, 0, 0)
        self.view = self.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item.setZValue(10)
        self.view.addItem(self.image_item)
        self.view.addItem(self.overlay_item)
        self.overlay_rgba: np.ndarray | None = None
        self.setFocusPolicy(Qt.StrongFocus)
        self.scene().sigMouseMoved.connect(self._hover)
        state.subscribe(self._on_state)

    # -- drawing ---------------------------------------------------------------------------------
    def set_result(self, result: CaseDayResult | None) -> None:
        """Show a case-day (the state must be loaded with its depth first, or right after)."""
        self.result = result
        if result is None:
            self.image_item.clear()
            self.overlay_item.clear()
            self.overlay_rgba = None
            return
        height, width = result.images.shape[1:]
        pw, ph = result.spacing
        self._redraw_image()
        self._redraw_overlay()
        rect = QRectF(0, 0, width * pw, height * ph)
        self.image_item.setRect(rect)
        self.overlay_item.setRect(rect)
        self.view.autoRange(padding=0.01)

    def _on_state(self, what: str) -> None:
        if self.result is None or self.state.depth != self.result.depth:
            return
        if what in ("slice", "data"):
            self._redraw_image()
            self._redraw_overlay()
        elif what == "window":
            self.image_item.setLevels(self.state.window)
        elif what == "overlay":
            self._redraw_overlay()

    def _redraw_image(self) -> None:
        self.image_item.setImage(self.result.images[self.state.slice_index], autoLevels=False,
                                 levels=self.state.window)

    def _redraw_overlay(self) -> None:
        i = self.state.slice_index
        truth = None if self.result.truth is None else self.result.truth[i]
        self.overlay_rgba = compose_overlay(self.result.prediction[i], truth, self.state.style)
        self.overlay_item.setImage(self.overlay_rgba, autoLevels=False, levels=(0, 255))

    def reset_zoom(self) -> None:
        self.view.autoRange(padding=0.01)

    # -- input -----------------------------------------------------------------------------------
    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() & Qt.ControlModifier:
            super().wheelEvent(event)  # the view box zooms about the cursor
            return
        delta = event.angleDelta().y() or event.angleDelta().x()
        if delta:
            self.state.step_slice(-1 if delta > 0 else 1)
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key, text = event.key(), event.text().lower()
        if key in _STEPS:
            self.state.step_slice(_STEPS[key])
        elif key == Qt.Key_Home:
            self.state.set_slice(0)
        elif key == Qt.Key_End:
            self.state.set_slice(self.state.depth - 1)
        elif text in ("1", "2", "3"):
            self.state.toggle_organ(int(text) - 1)
        elif text == "p":
            self.state.cycle_mode("prediction")
        elif text == "t":
            self.state.cycle_mode("truth")
        elif text == "e":
            self.state.set_errors(not self.state.style.errors)
        elif text == "a":
            self.state.reset_window()
        elif text == "r":
            self.reset_zoom()
        else:
            super().keyPressEvent(event)
            return
        event.accept()

    def _hover(self, scene_pos) -> None:
        if self.result is None:
            return
        point = self.image_item.mapFromScene(scene_pos)
        column, row = int(np.floor(point.x())), int(np.floor(point.y()))
        i = self.state.slice_index
        record = self.result.records[i]
        text = f"slice {record.slice_num} ({i + 1}/{self.result.depth})"
        height, width = self.result.images.shape[1:]
        if 0 <= row < height and 0 <= column < width:
            text += (f" · x {column}, y {row} · value {int(self.result.images[i, row, column])}")
            predicted = [o.replace("_", " ") for k, o in enumerate(ORGANS)
                         if self.result.prediction[i, k, row, column]]
            text += f" · predicted: {', '.join(predicted) or '—'}"
            if self.result.truth is not None:
                true = [o.replace("_", " ") for k, o in enumerate(ORGANS)
                        if self.result.truth[i, k, row, column]]
                text += f" · true: {', '.join(true) or '—'}"
        self.hover_text.emit(text)
