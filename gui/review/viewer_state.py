"""What the Review viewer shows, as a plain Python object (no Qt), in the napari model/view manner.

Widgets read it, write through its setters and subscribe to its changes; every setter clamps or
checks its value and emits one event naming what changed:

* ``"slice"`` — the current slice index,
* ``"overlay"`` — layer modes, errors mode, organ toggles, opacity, contour thickness,
* ``"window"`` — the intensity window (image units: the raw 16-bit values),
* ``"data"`` — a new case-day (depth, whether it has ground truth),
* ``"cursor"`` — the cross-hair's row and column in the axial slice (the coronal and sagittal planes
  are the ones through it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from gui.review.overlay import COLOR_SETS, LAYER_MODES, OverlayStyle

Listener = Callable[[str], None]


class ViewerState:
    def __init__(self) -> None:
        self.depth = 0
        self.slice_index = 0
        self.has_truth = False
        self.style = OverlayStyle()
        self.window: tuple[float, float] = (0.0, 1.0)
        self.auto_window: tuple[float, float] = (0.0, 1.0)
        self.shape: tuple[int, int] = (1, 1)
        """(height, width) of the case-day's slices."""
        self.cursor: tuple[int, int] = (0, 0)
        """(row, column) of the cross-hair in the axial slice."""
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _emit(self, what: str) -> None:
        for listener in list(self._listeners):
            listener(what)

    # -- data ------------------------------------------------------------------------------------
    def load(self, depth: int, has_truth: bool, auto_window: tuple[float, float],
             slice_index: int | None = None, shape: tuple[int, int] | None = None) -> None:
        """A new case-day of ``depth`` slices of ``shape`` (height, width); the window goes back to
        its automatic default and the cross-hair to the slice's centre."""
        self.depth, self.has_truth = depth, has_truth
        if shape is not None:
            self.shape = (max(1, int(shape[0])), max(1, int(shape[1])))
        self.cursor = (self.shape[0] // 2, self.shape[1] // 2)
        self.auto_window = self.window = (float(auto_window[0]), float(auto_window[1]))
        self.slice_index = min(max(0, depth // 2 if slice_index is None else slice_index),
                               max(0, depth - 1))
        if self.style.errors and not has_truth:
            self.style = replace(self.style, errors=False)
        self._emit("data")

    # -- slices ----------------------------------------------------------------------------------
    def set_slice(self, index: int) -> None:
        index = min(max(0, int(index)), max(0, self.depth - 1))
        if index != self.slice_index:
            self.slice_index = index
            self._emit("slice")

    def step_slice(self, steps: int) -> None:
        self.set_slice(self.slice_index + steps)

    # -- cross-hair --------------------------------------------------------------------------------
    def set_cursor(self, row: int, column: int) -> None:
        """Move the cross-hair to (row, column) of the axial slice (clamped to the slice)."""
        cursor = (min(max(0, int(row)), self.shape[0] - 1),
                  min(max(0, int(column)), self.shape[1] - 1))
        if cursor != self.cursor:
            self.cursor = cursor
            self._emit("cursor")

    # -- overlay ---------------------------------------------------------------------------------
    def _restyle(self, **changes) -> None:
        style = replace(self.style, **changes)
        if style != self.style:
            self.style = style
            self._emit("overlay")

    def set_mode(self, layer: str, mode: str) -> None:
        """``layer`` is ``"prediction"`` or ``"truth"``; ``mode`` one of ``LAYER_MODES``."""
        if layer not in ("prediction", "truth") or mode not in LAYER_MODES:
            raise ValueError(f"unknown layer '{layer}' or mode '{mode}' (modes: {LAYER_MODES})")
        self._restyle(**{layer: mode})

    def cycle_mode(self, layer: str) -> None:
        """fill → contour → hidden → fill (one key per layer)."""
        current = getattr(self.style, layer)
        self.set_mode(layer, LAYER_MODES[(LAYER_MODES.index(current) + 1) % len(LAYER_MODES)])

    def set_errors(self, on: bool) -> None:
        """The errors mode needs ground truth; without it the request is ignored."""
        self._restyle(errors=bool(on) and self.has_truth)

    def toggle_organ(self, k: int) -> None:
        organs = list(self.style.organs)
        organs[k] = not organs[k]
        self._restyle(organs=tuple(organs))

    def set_organ(self, k: int, on: bool) -> None:
        organs = list(self.style.organs)
        organs[k] = bool(on)
        self._restyle(organs=tuple(organs))

    def set_colors(self, layer: str, color_set: str) -> None:
        """The colour set (``COLOR_SETS``) of ``"prediction"`` or ``"truth"``."""
        if layer not in ("prediction", "truth") or color_set not in COLOR_SETS:
            raise ValueError(f"unknown layer '{layer}' or colour set '{color_set}' "
                             f"(sets: {COLOR_SETS})")
        self._restyle(**{f"{layer}_colors": color_set})

    def set_truth_dashed(self, on: bool) -> None:
        self._restyle(truth_dashed=bool(on))

    def set_opacity(self, opacity: float) -> None:
        self._restyle(opacity=min(max(float(opacity), 0.0), 1.0))

    def set_thickness(self, pixels: int) -> None:
        self._restyle(thickness=min(max(int(pixels), 1), 10))

    # -- window ----------------------------------------------------------------------------------
    def set_window(self, low: float, high: float) -> None:
        """Intensities ``low`` → black and ``high`` → white (``high`` is kept above ``low``)."""
        low, high = float(low), float(high)
        high = max(high, low + 1.0)
        if (low, high) != self.window:
            self.window = (low, high)
            self._emit("window")

    def reset_window(self) -> None:
        self.set_window(*self.auto_window)
