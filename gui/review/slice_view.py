"""The Review viewers: the axial slice and its coronal and sagittal reformats, each a pyqtgraph
``ImageItem`` with the RGBA mask layer above it and a cross-hair linking the three.

Arrays are ``(row, column)`` (``axisOrder='row-major'``) and the y axis is inverted, so row 0 is at
the top as in the PNG. Every item is laid on a rectangle of its plane's size in mm in a view with a
locked 1:1 aspect: a 360×310 slice of 1.5 × 1.5 mm pixels shows as 540 × 465 mm, the right way round,
and a coronal reformat of 144 slices 3 mm apart is 432 mm high. The reformats put slice 1 at the top.

* axial — slice ``i`` of the case-day, ``(H, W)``;
* coronal — row ``r`` of every slice, ``(D, W)`` (the cross-hair's row);
* sagittal — column ``c`` of every slice, ``(D, H)`` (the cross-hair's column).

Clicking in a view moves the cross-hair there (and, in a reformat, the slice); its lines can be
dragged. The wheel scrolls slices in the axial view and moves the plane in a reformat (Ctrl+wheel
zooms, dragging the background pans). Keys work anywhere on the Review page: ``review_shortcuts``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut, QWheelEvent
from PySide6.QtWidgets import QGraphicsEllipseItem, QWidget

from core.data import ORGANS
from core.review import CaseDayResult
from gui.review.overlay import compose_overlay
from gui.review.viewer_state import ViewerState

KEYS = ("←/→ or ↑/↓: previous/next slice · PgUp/PgDn: 10 slices · Home/End: first/last · "
        "wheel: slices · Ctrl+wheel: zoom · drag: pan · click: move the cross-hair · 1/2/3: organs · "
        "P/T: prediction/truth fill → contour → hidden · E: errors · A: automatic contrast · "
        "R: reset zoom · L: one plane / three planes · D: edit the truth (then 1/2/3: organ, B/X: "
        "brush/eraser, [ ]: size, drag: paint, Ctrl+Z / Ctrl+Shift+Z: undo/redo) · V: reviewed · "
        "N: next to review · C: a fine-tune ⇄ its parent")

PLANES = ("axial", "coronal", "sagittal")
CROSSHAIR_PEN = pg.mkPen((255, 215, 0, 170), width=1, style=Qt.DashLine)


def review_shortcuts(page: QWidget, state: ViewerState,
                     extra: dict[str, Callable[[], None]]) -> list[QShortcut]:
    """The Review page's keys as shortcuts of ``page`` and its children, so they work whichever
    control was clicked last. ``extra`` adds page actions by key (``"R"``: reset zoom, …)."""
    actions: dict[str, Callable[[], None]] = {
        "Left": lambda: state.step_slice(-1), "Up": lambda: state.step_slice(-1),
        "Right": lambda: state.step_slice(1), "Down": lambda: state.step_slice(1),
        "PgUp": lambda: state.step_slice(-10), "PgDown": lambda: state.step_slice(10),
        "Home": lambda: state.set_slice(0), "End": lambda: state.set_slice(state.depth - 1),
        "1": lambda: state.toggle_organ(0), "2": lambda: state.toggle_organ(1),
        "3": lambda: state.toggle_organ(2),
        "P": lambda: state.cycle_mode("prediction"), "T": lambda: state.cycle_mode("truth"),
        "E": lambda: state.set_errors(not state.style.errors), "A": state.reset_window,
        **extra,
    }
    shortcuts = []
    for key, action in actions.items():
        shortcut = QShortcut(QKeySequence(key), page)
        shortcut.setContext(Qt.WidgetWithChildrenShortcut)
        shortcut.setAutoRepeat(True)
        shortcut.activated.connect(action)
        shortcuts.append(shortcut)
    return shortcuts


class PaintItem(pg.ImageItem):
    """The mask layer of the axial view; while editing (``painter`` set) a left click or drag on it
    calls ``painter(phase, y, x)`` with ``phase`` "start", "move" or "finish" and the point in the
    slice's pixel coordinates (pixel (r, c) spans [r, r+1) × [c, c+1)), instead of panning."""

    def __init__(self):
        super().__init__(axisOrder="row-major")
        self.painter: Callable[[str, float, float], None] | None = None

    def _point(self, event):
        """The event's point when painting takes it (accepted), else None (ignored: pan, zoom)."""
        if self.painter is None or event.button() != Qt.LeftButton:
            event.ignore()
            return None
        event.accept()
        return event.pos()

    def mouseDragEvent(self, event) -> None:
        point = self._point(event)
        if point is not None:
            phase = "start" if event.isStart() else "finish" if event.isFinish() else "move"
            self.painter(phase, point.y(), point.x())

    def mouseClickEvent(self, event) -> None:
        point = self._point(event)
        if point is not None:
            self.painter("start", point.y(), point.x())
            self.painter("finish", point.y(), point.x())


class PlaneView(pg.GraphicsLayoutWidget):
    """One plane of the shown case-day with its mask layer and the cross-hair."""

    hover_text = Signal(str)
    """What is under the cursor: slice, pixel, value, masks there."""

    def __init__(self, state: ViewerState, plane: str = "axial", parent=None):
        super().__init__(parent)
        if plane not in PLANES:
            raise ValueError(f"unknown plane '{plane}' (planes: {PLANES})")
        self.state = state
        self.plane = plane
        self.result: CaseDayResult | None = None
        self.setBackground("#111")
        self.ci.setContentsMargins(0, 0, 0, 0)
        self.view = self.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        # The axial mask layer can be painted on (Review's Edit truth); the reformats' cannot.
        self.overlay_item = PaintItem() if plane == "axial" else pg.ImageItem(axisOrder="row-major")
        self.overlay_item.setZValue(10)
        self.view.addItem(self.image_item)
        self.view.addItem(self.overlay_item)
        self.lines = {"vertical": pg.InfiniteLine(angle=90, movable=True, pen=CROSSHAIR_PEN),
                      "horizontal": pg.InfiniteLine(angle=0, movable=True, pen=CROSSHAIR_PEN)}
        for name, line in self.lines.items():
            line.setZValue(20)
            line.setHoverPen(pg.mkPen((255, 215, 0), width=2))
            line.sigPositionChanged.connect(lambda _line, name=name: self._line_dragged(name))
            self.view.addItem(line)
        self.overlay_rgba: np.ndarray | None = None
        self.pixel_size = (1.0, 1.0)
        self._drawn_at: int | None = None  # the row / column a reformat was drawn at
        self._placing_lines = False
        self._last_scene_pos: QPointF | None = None
        self.setFocusPolicy(Qt.StrongFocus)
        self.scene().sigMouseMoved.connect(self._hover)
        self.scene().sigMouseClicked.connect(self._clicked)
        state.subscribe(self._on_state)

    # -- geometry ------------------------------------------------------------------------------
    def _through(self) -> int:
        """Index into the stack this plane is cut at: the slice, the cursor's row or its column."""
        if self.plane == "axial":
            return self.state.slice_index
        return self.state.cursor[0 if self.plane == "coronal" else 1]

    def plane_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(image, prediction ``(3, rows, cols)``, truth or None) of this plane as drawn."""
        result, k = self.result, self._through()
        truth = result.truth
        if self.plane == "axial":
            return result.images[k], result.prediction[k], None if truth is None else truth[k]
        if self.plane == "coronal":
            image, pred = result.images[:, k, :], result.prediction[:, :, k, :]
            true = None if truth is None else truth[:, :, k, :]
        else:
            image, pred = result.images[:, :, k], result.prediction[:, :, :, k]
            true = None if truth is None else truth[:, :, :, k]
        return (image, np.ascontiguousarray(pred.transpose(1, 0, 2)),
                None if true is None else np.ascontiguousarray(true.transpose(1, 0, 2)))

    def _cross(self) -> tuple[int, int]:
        """(column, row) in this plane's image of the cross-hair."""
        i, (row, column) = self.state.slice_index, self.state.cursor
        return {"axial": (column, row), "coronal": (column, i), "sagittal": (row, i)}[self.plane]

    def _move_cross(self, column: int, row: int) -> None:
        """Put the cross-hair on (column, row) of this plane's image."""
        state = self.state
        if self.plane == "axial":
            state.set_cursor(row, column)
            return
        state.set_slice(row)
        if self.plane == "coronal":
            state.set_cursor(state.cursor[0], column)
        else:
            state.set_cursor(column, state.cursor[1])

    # -- drawing ---------------------------------------------------------------------------------
    def set_result(self, result: CaseDayResult | None) -> None:
        """Show a case-day (the state must be loaded with its depth first, or right after)."""
        self.result = result
        self._drawn_at = None
        if result is None:
            self.image_item.clear()
            self.overlay_item.clear()
            self.overlay_rgba = None
            return
        pw, ph = result.spacing
        self.pixel_size = {"axial": (pw, ph), "coronal": (pw, result.slice_thickness),
                           "sagittal": (ph, result.slice_thickness)}[self.plane]
        self._redraw()
        if self._drawn_at is None:
            return  # a hidden reformat: drawn when shown
        rows, cols = self.image_item.image.shape
        rect = QRectF(0, 0, cols * self.pixel_size[0], rows * self.pixel_size[1])
        self.image_item.setRect(rect)
        self.overlay_item.setRect(rect)
        self._place_lines()
        self.view.autoRange(padding=0.01)

    def _showing(self) -> bool:
        return self.result is not None and self.state.depth == self.result.depth

    def _on_state(self, what: str) -> None:
        if not self._showing():
            return
        if what == "window":
            self.image_item.setLevels(self.state.window)
            return
        if self._drawn_at is None:
            return  # hidden; drawn when shown
        if what == "overlay" or what == "data" or self._drawn_at != self._through():
            self._redraw()
        if what in ("slice", "cursor", "data"):
            self._place_lines()
            if self._last_scene_pos is not None:
                self._hover(self._last_scene_pos)  # the readout follows the keys and the wheel

    def _redraw(self) -> None:
        if not self.isVisible() and self.plane != "axial":
            self._drawn_at = None  # drawn when shown
            return
        image, pred, truth = self.plane_arrays()
        self.image_item.setImage(image, autoLevels=False, levels=self.state.window)
        self.overlay_rgba = compose_overlay(pred, truth, self.state.style)
        self.overlay_item.setImage(self.overlay_rgba, autoLevels=False, levels=(0, 255))
        self._drawn_at = self._through()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._showing() and self._drawn_at is None:
            self.set_result(self.result)

    def _place_lines(self) -> None:
        column, row = self._cross()
        self._placing_lines = True
        try:
            self.lines["vertical"].setValue((column + 0.5) * self.pixel_size[0])
            self.lines["horizontal"].setValue((row + 0.5) * self.pixel_size[1])
        finally:
            self._placing_lines = False

    def _line_dragged(self, name: str) -> None:
        if self._placing_lines or not self._showing():
            return
        column, row = self._cross()
        if name == "vertical":
            column = int(np.floor(self.lines[name].value() / self.pixel_size[0]))
        else:
            row = int(np.floor(self.lines[name].value() / self.pixel_size[1]))
        self._move_cross(column, row)

    def reset_zoom(self) -> None:
        self.view.autoRange(padding=0.01)

    # -- input -----------------------------------------------------------------------------------
    def image_pixel(self, scene_pos) -> tuple[int, int]:
        """(column, row) of this plane's image under a scene position."""
        point = self.image_item.mapFromScene(scene_pos)
        return int(np.floor(point.x())), int(np.floor(point.y()))

    def _clicked(self, event) -> None:
        if not self._showing() or event.button() != Qt.LeftButton:
            return
        if getattr(self.overlay_item, "painter", None) is not None:
            return  # editing: a click paints (PaintItem), it does not move the cross-hair
        column, row = self.image_pixel(event.scenePos())
        rows, cols = self.image_item.image.shape
        if 0 <= row < rows and 0 <= column < cols:
            self._move_cross(column, row)

    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() & Qt.ControlModifier:
            super().wheelEvent(event)  # the view box zooms about the cursor
            return
        delta = event.angleDelta().y() or event.angleDelta().x()
        if delta and self._showing():
            step = -1 if delta > 0 else 1
            if self.plane == "axial":
                self.state.step_slice(step)
            elif self.plane == "coronal":
                self.state.set_cursor(self.state.cursor[0] + step, self.state.cursor[1])
            else:
                self.state.set_cursor(self.state.cursor[0], self.state.cursor[1] + step)
        event.accept()

    def _hover(self, scene_pos) -> None:
        if not self._showing():
            return
        self._last_scene_pos = scene_pos
        column, row = self.image_pixel(scene_pos)
        rows, cols = self.image_item.image.shape
        inside = 0 <= row < rows and 0 <= column < cols
        if self.plane == "axial":
            i, y, x = self.state.slice_index, row, column
        else:  # a reformat's rows are the slices
            i = row if inside else self.state.slice_index
            y, x = (self.state.cursor[0], column) if self.plane == "coronal" else \
                (column, self.state.cursor[1])
        result = self.result
        record = result.records[i]
        text = ("" if self.plane == "axial" else f"{self.plane}: ") + \
            f"slice {record.slice_num} ({i + 1}/{result.depth})"
        if inside:
            text += f" · x {x}, y {y} · value {int(result.images[i, y, x])}"
            predicted = [o.replace("_", " ") for k, o in enumerate(ORGANS)
                         if result.prediction[i, k, y, x]]
            text += f" · predicted: {', '.join(predicted) or '—'}"
            if result.truth is not None:
                true = [o.replace("_", " ") for k, o in enumerate(ORGANS) if result.truth[i, k, y, x]]
                text += f" · true: {', '.join(true) or '—'}"
        self.hover_text.emit(text)


class SliceView(PlaneView):
    """The axial slice view (the main viewer of the Review page), which can be painted on."""

    def __init__(self, state: ViewerState, parent=None):
        super().__init__(state, "axial", parent)
        self.brush_circle = QGraphicsEllipseItem()
        self.brush_circle.setPen(pg.mkPen((255, 255, 255, 220), width=0))
        self.brush_circle.setZValue(30)
        self.view.addItem(self.brush_circle)
        self.brush_circle.hide()
        self.brush_radius: float | None = None

    def set_painter(self, paint, radius: float | None) -> None:
        """Editing on (``paint`` a callable, ``radius`` the brush) or off (None): drags paint
        instead of panning, and a circle of the brush's size follows the cursor."""
        self.overlay_item.painter = paint
        self.brush_radius = radius if paint is not None else None
        self.view.setMouseEnabled(paint is None, paint is None)
        if self.brush_radius is None:
            self.brush_circle.hide()

    def _hover(self, scene_pos) -> None:
        super()._hover(scene_pos)
        if self.brush_radius is None or not self._showing():
            return
        point = self.overlay_item.mapFromScene(scene_pos)  # slice pixels
        r, (pw, ph) = max(self.brush_radius, 0.5), self.pixel_size
        self.brush_circle.setRect((point.x() - r) * pw, (point.y() - r) * ph, 2 * r * pw, 2 * r * ph)
        self.brush_circle.show()
