"""Display controls of the Review page, each bound to one field of the ``ViewerState``.

A control writes through the state's setter and follows the state's events (with its own signals
blocked while it is updated), so keys in the slice view and the controls never disagree.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton,
                               QSlider, QSpinBox, QVBoxLayout, QWidget)

from core.data import ORGANS
from gui.review.overlay import (COLOR_SETS, FALSE_NEGATIVE_COLOR, FALSE_POSITIVE_COLOR,
                                LAYER_MODES, organ_color)

COLOR_SET_TITLES = {"organ": "Organ colours", "pale": "Pale organ colours", "yellow": "Yellow",
                    "white": "White", "cyan": "Cyan"}
from gui.review.viewer_state import ViewerState

# The window sliders move in steps of 1/WINDOW_STEPS of the case-day's intensity range.
WINDOW_STEPS = 1000


def swatch(rgb: tuple[int, int, int], size: int = 12) -> QIcon:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(*rgb))
    return QIcon(pixmap)


def _label(text: str) -> str:
    return text.replace("_", " ").capitalize()


class DisplayPanel(QWidget):
    def __init__(self, state: ViewerState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.intensity_range = (0.0, 1.0)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)

        self.mode_boxes = {}
        self.color_boxes = {}
        for layer, title in (("prediction", "Prediction (P)"), ("truth", "Ground truth (T)")):
            box = QComboBox()
            box.addItems([m.capitalize() for m in LAYER_MODES])
            box.currentIndexChanged.connect(
                lambda i, layer=layer: self.state.set_mode(layer, LAYER_MODES[i]))
            self.mode_boxes[layer] = box
            colors = QComboBox()
            colors.addItems([COLOR_SET_TITLES[c] for c in COLOR_SETS])
            colors.setToolTip(f"Colours of the {layer.replace('truth', 'ground truth')} layer")
            colors.currentIndexChanged.connect(
                lambda i, layer=layer: self.state.set_colors(layer, COLOR_SETS[i]))
            self.color_boxes[layer] = colors
            row = QHBoxLayout()
            row.addWidget(box, 1)
            row.addWidget(colors, 1)
            form.addRow(title, row)
        self.dashed_box = QCheckBox("Dashed ground-truth contour")
        self.dashed_box.setToolTip("Tells the true outline from the predicted one in any colours")
        self.dashed_box.toggled.connect(self.state.set_truth_dashed)
        form.addRow("", self.dashed_box)

        self.errors_box = QCheckBox("Errors (E)")
        self.errors_box.setToolTip("Colour false positives and false negatives (needs ground truth)")
        self.errors_box.toggled.connect(self.state.set_errors)
        errors_legend = QLabel(
            f"<span style='color:rgb{FALSE_POSITIVE_COLOR}'>■</span> false positive &nbsp; "
            f"<span style='color:rgb{FALSE_NEGATIVE_COLOR}'>■</span> missed &nbsp; "
            "· outline: the organ")
        form.addRow("", self.errors_box)
        form.addRow("", errors_legend)

        self.organ_boxes = []
        organs_row = QVBoxLayout()
        organs_row.setSpacing(2)
        for k, organ in enumerate(ORGANS):
            box = QCheckBox(f"{_label(organ)} ({k + 1})")
            box.setIcon(swatch(organ_color(organ)))
            box.setToolTip(f"Prediction in this colour; ground truth in its paler tint "
                           f"(key {k + 1} toggles)")
            box.toggled.connect(lambda on, k=k: self.state.set_organ(k, on))
            self.organ_boxes.append(box)
            organs_row.addWidget(box)
        layers_legend = QLabel("solid: prediction · pale, dashed: ground truth")
        layers_legend.setObjectName("hint")
        organs_row.addWidget(layers_legend)
        form.addRow("Organs", organs_row)

        self.opacity_slider = QSlider(Qt.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.valueChanged.connect(lambda v: self.state.set_opacity(v / 100))
        form.addRow("Fill opacity", self.opacity_slider)

        self.thickness_box = QSpinBox()
        self.thickness_box.setRange(1, 10)
        self.thickness_box.setSuffix(" px")
        self.thickness_box.valueChanged.connect(self.state.set_thickness)
        form.addRow("Contour width", self.thickness_box)

        self.low_slider = QSlider(Qt.Horizontal)
        self.high_slider = QSlider(Qt.Horizontal)
        for slider in (self.low_slider, self.high_slider):
            slider.setRange(0, WINDOW_STEPS)
            slider.valueChanged.connect(self._window_from_sliders)
        self.auto_button = QPushButton("Auto (A)")
        self.auto_button.setToolTip("1–99.5 percentile of the case-day's intensities")
        self.auto_button.clicked.connect(self.state.reset_window)
        self.window_label = QLabel()
        form.addRow("Black level", self.low_slider)
        form.addRow("White level", self.high_slider)
        window_row = QHBoxLayout()
        window_row.addWidget(self.window_label, 1)
        window_row.addWidget(self.auto_button)
        form.addRow("", window_row)

        state.subscribe(self._on_state)
        self._sync()

    def set_intensity_range(self, low: float, high: float) -> None:
        """The intensities the window sliders span (the case-day's minimum and maximum)."""
        self.intensity_range = (float(low), float(max(high, low + 1)))
        self._sync()

    def _to_slider(self, value: float) -> int:
        low, high = self.intensity_range
        return round((value - low) / (high - low) * WINDOW_STEPS)

    def _from_slider(self, step: int) -> float:
        low, high = self.intensity_range
        return low + step / WINDOW_STEPS * (high - low)

    def _window_from_sliders(self) -> None:
        self.state.set_window(self._from_slider(self.low_slider.value()),
                              self._from_slider(self.high_slider.value()))

    def _on_state(self, what: str) -> None:
        if what != "slice":
            self._sync()

    def _sync(self) -> None:
        state, style = self.state, self.state.style
        widgets = [*self.mode_boxes.values(), *self.color_boxes.values(), self.dashed_box,
                   self.errors_box, *self.organ_boxes,
                   self.opacity_slider, self.thickness_box, self.low_slider, self.high_slider]
        for widget in widgets:
            widget.blockSignals(True)
        for layer, box in self.mode_boxes.items():
            box.setCurrentIndex(LAYER_MODES.index(getattr(style, layer)))
        self.mode_boxes["truth"].setEnabled(state.has_truth and not style.errors)
        self.mode_boxes["prediction"].setEnabled(not style.errors)
        for layer, box in self.color_boxes.items():
            box.setCurrentIndex(COLOR_SETS.index(getattr(style, f"{layer}_colors")))
            box.setEnabled(not style.errors and (layer == "prediction" or state.has_truth))
        self.dashed_box.setChecked(style.truth_dashed)
        self.dashed_box.setEnabled(state.has_truth and not style.errors)
        self.errors_box.setEnabled(state.has_truth)
        self.errors_box.setChecked(style.errors)
        for box, on in zip(self.organ_boxes, style.organs):
            box.setChecked(on)
        self.opacity_slider.setValue(round(style.opacity * 100))
        self.thickness_box.setValue(style.thickness)
        self.low_slider.setValue(self._to_slider(state.window[0]))
        self.high_slider.setValue(self._to_slider(state.window[1]))
        self.window_label.setText(f"window {state.window[0]:.0f} – {state.window[1]:.0f}")
        for widget in widgets:
            widget.blockSignals(False)
