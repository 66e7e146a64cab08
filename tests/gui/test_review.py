"""Review page: the overlay maths (no display), the viewer state, the slice view on synthetic
case-days, and the whole page on the demo data with the demo-trained model (``trained_run``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from core.data import ORGANS
from core.export import ORGAN_COLORS, read_mask_png
from gui.review.overlay import (FALSE_NEGATIVE_COLOR, FALSE_POSITIVE_COLOR, OverlayStyle, boundary,
                                compose_overlay, dashes, layer_color, organ_color)
from gui.review.viewer_state import ViewerState

H, W = 310, 360  # the demo's non-square size: 360 wide, 310 high


def square_masks(height=H, width=W, top=40, left=200, size=30, organ=0) -> np.ndarray:
    """(3, H, W) masks with one organ's square at rows top.., columns left.. (off-centre on purpose)."""
    masks = np.zeros((3, height, width), bool)
    masks[organ, top:top + size, left:left + size] = True
    return masks


# -- overlay (pure numpy) ------------------------------------------------------------------------
def test_fill_colours_the_mask_and_nothing_else():
    pred = square_masks()
    rgba = compose_overlay(pred, None, OverlayStyle(prediction="fill", opacity=0.5))
    assert rgba.shape == (H, W, 4) and rgba.dtype == np.uint8
    assert tuple(rgba[55, 215, :3]) == ORGAN_COLORS["large_bowel"]
    assert rgba[55, 215, 3] == round(0.5 * 255)
    assert not rgba[~pred[0]].any()  # nothing outside the mask
    assert rgba[40, 200, 3] == 255  # the fill's opaque outline


def test_contour_draws_only_the_boundary_with_its_thickness():
    pred = square_masks()
    thin = compose_overlay(pred, None, OverlayStyle(prediction="contour", thickness=1))
    assert tuple(thin[40, 210, :3]) == ORGAN_COLORS["large_bowel"] and thin[40, 210, 3] == 255
    assert thin[55, 215, 3] == 0 and thin[41, 210, 3] == 0  # inside, and the 2nd row: empty
    assert not thin[~pred[0]].any()
    thick = compose_overlay(pred, None, OverlayStyle(prediction="contour", thickness=3))
    assert thick[42, 210, 3] == 255 and thick[43, 210, 3] == 0
    assert np.count_nonzero(thin[..., 3]) == 4 * 29
    assert np.count_nonzero(boundary(pred[0], 3)) == 30 * 30 - 24 * 24


def test_hidden_layers_and_organ_toggles_remove_colour():
    pred = square_masks(organ=2)
    assert not compose_overlay(pred, None, OverlayStyle(prediction="hidden")).any()
    off = compose_overlay(pred, None, OverlayStyle(organs=(True, True, False)))
    assert not off.any()
    on = compose_overlay(pred, None, OverlayStyle(organs=(False, False, True)))
    assert tuple(on[55, 215, :3]) == ORGAN_COLORS["stomach"]


def test_truth_is_drawn_in_a_paler_tint_under_the_prediction():
    truth = square_masks(left=100)
    rgba = compose_overlay(np.zeros_like(truth), truth, OverlayStyle(truth="contour"))
    assert tuple(rgba[40, 111, :3]) == organ_color("large_bowel", truth=True)
    assert organ_color("large_bowel", truth=True) != ORGAN_COLORS["large_bowel"]


def test_truth_contour_is_dashed_and_layers_take_their_own_colour_sets():
    truth = square_masks(left=100)
    pred = square_masks(left=200)
    style = OverlayStyle(prediction="contour", truth="contour", truth_colors="yellow")
    rgba = compose_overlay(pred, truth, style)
    top_truth = rgba[40, 100:130, 3] > 0
    # Dashes of DASH pixels on the slice's own grid: the same pattern whatever the crop.
    assert np.array_equal(top_truth, dashes((1, 30), (40, 100))[0])
    assert 0 < top_truth.sum() < 30
    assert (rgba[40, 200:230, 3] == 255).all()  # the prediction's contour is solid
    assert tuple(rgba[40, 111, :3]) == layer_color("large_bowel", "yellow") == (240, 228, 66)
    assert tuple(rgba[40, 210, :3]) == ORGAN_COLORS["large_bowel"]
    solid = compose_overlay(pred, truth, OverlayStyle(truth="contour", truth_dashed=False))
    assert (solid[40, 100:130, 3] == 255).all()


def test_overlapping_organs_both_stay_visible():
    pred = square_masks(organ=0) | square_masks(left=215, organ=1)
    rgba = compose_overlay(pred, None, OverlayStyle(prediction="fill"))
    overlap = tuple(rgba[55, 222, :3])
    assert overlap not in (ORGAN_COLORS["large_bowel"], ORGAN_COLORS["small_bowel"])
    # Each organ's outline runs through the other's fill.
    assert tuple(rgba[55, 215, :3]) == ORGAN_COLORS["small_bowel"]
    assert tuple(rgba[55, 229, :3]) == ORGAN_COLORS["large_bowel"]


def test_errors_mode_colours_false_positives_and_negatives():
    pred = square_masks(left=200)
    truth = square_masks(left=210)
    rgba = compose_overlay(pred, truth, OverlayStyle(errors=True))
    assert tuple(rgba[55, 202, :3]) == FALSE_POSITIVE_COLOR
    assert tuple(rgba[55, 235, :3]) == FALSE_NEGATIVE_COLOR
    assert rgba[55, 220, 3] == 0  # agreed: left unfilled, the image shows through
    assert not rgba[~(pred[0] | truth[0])].any()
    # Which organ is wrong: the organ's outline around its errors, in the organ's colour.
    assert tuple(rgba[55, 200, :3]) == tuple(rgba[40, 220, :3]) == ORGAN_COLORS["large_bowel"]
    small = compose_overlay(square_masks(organ=1), square_masks(left=210, organ=1),
                            OverlayStyle(errors=True))
    assert tuple(small[55, 200, :3]) == ORGAN_COLORS["small_bowel"]
    # Without truth the errors mode shows the prediction.
    fallback = compose_overlay(pred, None, OverlayStyle(errors=True))
    assert tuple(fallback[55, 215, :3]) == ORGAN_COLORS["large_bowel"]


# -- viewer state (plain Python) -----------------------------------------------------------------
def test_viewer_state_clamps_cycles_and_reports():
    state, events = ViewerState(), []
    state.subscribe(events.append)
    state.load(10, has_truth=False, auto_window=(100, 900))
    assert state.slice_index == 5 and state.window == (100, 900) and events == ["data"]
    state.step_slice(100)
    assert state.slice_index == 9
    state.step_slice(100)  # no change, no event
    state.set_slice(-3)
    assert state.slice_index == 0 and events == ["data", "slice", "slice"]
    state.set_errors(True)
    assert not state.style.errors  # no truth
    state.cycle_mode("prediction")
    assert state.style.prediction == "contour"
    state.toggle_organ(1)
    assert state.style.organs == (True, False, True)
    state.set_window(500, 400)
    assert state.window == (500, 501)
    state.reset_window()
    assert state.window == (100, 900)
    with pytest.raises(ValueError):
        state.set_mode("truth", "dotted")


# -- slice view on a synthetic case-day ----------------------------------------------------------
def synthetic_result(depth=5, spacing=(1.0, 2.0), with_truth=True):
    from core.data.scan import SliceRecord
    from core.metrics import score_case_day
    from core.review import CaseDayResult

    # Slice numbers as in file names, not positions: 5, 7, 9, … (a case-day need not start at 1).
    records = [SliceRecord(f"case1_day2_slice_{2 * i + 5:04d}", 1, 2, 2 * i + 5, Path(f"s{i}.png"),
                           W, H, spacing) for i in range(depth)]
    images = np.arange(depth * H * W, dtype=np.uint16).reshape(depth, H, W) % 4000
    pred = np.stack([square_masks() for _ in range(depth)])
    pred[1] = False  # one slice with nothing predicted
    truth = np.stack([square_masks(left=205) for _ in range(depth)]) if with_truth else None
    score = score_case_day("case1_day2", pred, truth) if with_truth else None
    return CaseDayResult("case1_day2", records, images, pred, truth, score)


@pytest.fixture
def page(qtbot, tmp_path):
    from core.config import StudioConfig
    from gui.pages.review_page import ReviewPage
    from gui.state import StudioState

    page = ReviewPage(StudioState(StudioConfig()), runs_root=tmp_path / "no runs")
    qtbot.addWidget(page)
    page.resize(1200, 800)
    page.show()
    yield page
    page.shutdown()


def test_non_square_slice_is_upright_with_its_true_aspect(page):
    result = synthetic_result(spacing=(1.0, 2.0))
    page.show_result(result)
    view = page.slice_view
    assert view.image_item.image.shape == (H, W)  # rows × columns, not transposed
    assert view.image_item.axisOrder == "row-major" and view.view.yInverted()
    assert view.overlay_rgba.shape == (H, W, 4)
    # The mask's pixels (rows 40.., columns 200..) are where the overlay is coloured.
    assert tuple(view.overlay_rgba[55, 215, :3]) == ORGAN_COLORS["large_bowel"]
    assert view.overlay_rgba[100, 55, 3] == 0
    # Pixel (row, column) maps into the view at (column × pw, row × ph): mm, the true aspect.
    corner = view.image_item.mapToView(view.image_item.boundingRect().bottomRight())
    assert (corner.x(), corner.y()) == pytest.approx((W * 1.0, H * 2.0))
    point = view.overlay_item.mapToView(view.overlay_item.boundingRect().topLeft())
    assert (point.x(), point.y()) == pytest.approx((0, 0))
    # Row 0 is at the top of the screen: its scene y is above the last row's.
    top = view.image_item.mapToScene(view.image_item.boundingRect().topLeft()).y()
    bottom = view.image_item.mapToScene(view.image_item.boundingRect().bottomLeft()).y()
    assert top < bottom
    assert page.scores.summary.text().count("Dice") == 1 and page.display.errors_box.isEnabled()


def test_the_overlay_draws_a_mask_pixel_on_the_screen_pixels_of_its_image_pixel(page, qtbot):
    """Rendered, not computed: one bright image pixel and one mask pixel at the same (row, column)
    light up the same screen pixels, at an off-centre position of a non-square slice."""
    from core.data.scan import SliceRecord
    from core.review import CaseDayResult

    row, col = 37, 251
    images = np.zeros((1, H, W), np.uint16)
    images[0, row, col] = 1000
    pred = np.zeros((1, 3, H, W), bool)
    pred[0, 2, row, col] = True
    record = SliceRecord("case1_day2_slice_0001", 1, 2, 1, Path("s.png"), W, H, (1.5, 1.5))
    page.show_result(CaseDayResult("case1_day2", [record], images, pred, None, None))
    view = page.slice_view
    page.viewer.set_window(0, 1000)
    view.view.setRange(xRange=(200 * 1.5, 300 * 1.5), yRange=(0, 80 * 1.5), padding=0)
    qtbot.wait(50)

    def lit(overlay: bool) -> np.ndarray:
        view.overlay_item.setVisible(overlay)
        view.image_item.setVisible(not overlay)
        image = view.grab().toImage()
        pixels = np.array([[image.pixelColor(x, y).getRgb()[:3] for x in range(image.width())]
                           for y in range(image.height())], np.int32)
        return np.argwhere(pixels.sum(-1) > 150)  # the background is #111

    from_image, from_mask = lit(False), lit(True)
    view.overlay_item.setVisible(True)
    view.image_item.setVisible(True)
    assert len(from_image) > 4 and len(from_mask) > 4  # zoomed in: each pixel covers many
    assert np.abs(from_image.mean(0) - from_mask.mean(0)).max() < 0.5
    assert (from_image.min(0) == from_mask.min(0)).all() and (from_image.max(0) == from_mask.max(0)).all()


def test_keys_wheel_and_slider_move_through_slices(page, qtbot):
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    page.show_result(synthetic_result(depth=30))
    state, view = page.viewer, page.slice_view
    assert state.slice_index == 15
    qtbot.keyClick(view, Qt.Key_Right)
    qtbot.keyClick(view, Qt.Key_Down)
    assert state.slice_index == 17
    qtbot.keyClick(view, Qt.Key_PageUp)
    assert state.slice_index == 7 and page.slice_slider.value() == 7
    qtbot.keyClick(view, Qt.Key_End)
    assert state.slice_index == 29
    qtbot.keyClick(view, Qt.Key_Home)
    assert "slice 5 (1/30)" == page.slice_label.text()

    centre = QPointF(view.viewport().rect().center())
    def wheel(delta, modifiers=Qt.NoModifier):
        event = QWheelEvent(centre, view.viewport().mapToGlobal(centre), QPoint(),
                            QPoint(0, delta), Qt.NoButton, modifiers, Qt.NoScrollPhase, False)
        QApplication.sendEvent(view.viewport(), event)
    wheel(-120)
    wheel(-120)
    assert state.slice_index == 2
    wheel(120)
    assert state.slice_index == 1
    before = view.view.viewRange()
    wheel(120, Qt.ControlModifier)  # zooms instead
    assert state.slice_index == 1 and view.view.viewRange() != before

    page.slice_slider.setValue(12)
    assert state.slice_index == 12
    assert np.array_equal(view.image_item.image, page.result.images[12])


def test_organ_keys_and_mode_keys_change_the_overlay(page, qtbot):
    from PySide6.QtCore import Qt

    page.show_result(synthetic_result())
    view = page.slice_view
    assert view.overlay_rgba[55, 215, 3] > 0
    qtbot.keyClick(view, Qt.Key_1)
    assert not view.overlay_rgba.any() or view.overlay_rgba[55, 215, 3] == 0
    assert not page.display.organ_boxes[0].isChecked()
    qtbot.keyClick(view, Qt.Key_1)
    qtbot.keyClick(view, Qt.Key_P)  # prediction → contour
    assert page.display.mode_boxes["prediction"].currentText() == "Contour"
    assert view.overlay_rgba[55, 215, 3] == 0 and view.overlay_rgba[40, 215, 3] == 255
    qtbot.keyClick(view, Qt.Key_E)
    assert page.viewer.style.errors and page.display.errors_box.isChecked()
    assert tuple(view.overlay_rgba[55, 201, :3]) == FALSE_POSITIVE_COLOR
    page.display.opacity_slider.setValue(80)
    assert page.viewer.style.opacity == pytest.approx(0.8)
    page.display.high_slider.setValue(500)
    assert page.viewer.window[1] == pytest.approx(3999 * 0.5, abs=5)
    assert view.image_item.levels[1] == pytest.approx(page.viewer.window[1])


def test_scores_worst_slices_and_jump(page):
    result = synthetic_result(depth=6)
    page.show_result(result)
    worst = page.scores.worst
    assert worst.count() == 6
    first = worst.item(0)
    assert first.data(0x0100) == 1  # the slice with nothing predicted: Dice 0
    page.scores.worst.setCurrentRow(0)
    assert page.viewer.slice_index == 1
    assert page.scores.table.item(0, 1).text() == "0.000"
    page.viewer.set_slice(3)
    expected = result.score.dice_per_slice[3, 0]
    assert page.scores.table.item(0, 1).text() == f"{expected:.3f}"
    assert page.scores.table.item(1, 1).text() == "—"  # skipped organ
    # One slice number everywhere: the file name's (slice 11 is the 4th slice here).
    assert page.scores.cursor.value() == 11 == result.records[3].slice_num
    assert page.slice_label.text() == "slice 11 (4/6)"
    assert "slice    7" in first.text()
    x, y = page.scores.curves[0].getData()
    assert list(x) == [5, 7, 9, 11, 13, 15]


def test_clicking_the_dice_plot_opens_the_slice_with_that_number(page, qtbot):
    from PySide6.QtCore import QPointF
    from PySide6.QtTest import QTest

    page.show_result(synthetic_result(depth=6))
    plot = page.scores.plot
    qtbot.waitUntil(lambda: plot.isVisible())
    view_box = plot.getPlotItem().vb
    scene = view_box.mapViewToScene(QPointF(13, 0.5))
    QTest.mouseClick(plot.viewport(), Qt.LeftButton, pos=plot.mapFromScene(scene))
    assert page.viewer.slice_index == 4  # slice 13, not position 13 or 14


def test_before_any_prediction_nothing_claims_there_is_no_ground_truth(page):
    assert "No ground truth" not in page.scores.summary.text()
    assert "Predict" in page.scores.summary.text()
    axis = page.scores.plot.getAxis("bottom")
    assert axis.labelText == "slice" and not axis.autoSIPrefix
    low, high = page.scores.plot.getPlotItem().vb.viewRange()[0]
    assert low > 0 and high < 10


def test_without_truth_only_predictions_are_shown(page):
    page.show_result(synthetic_result(with_truth=False))
    assert not page.display.errors_box.isEnabled()
    page.viewer.set_errors(True)
    assert not page.viewer.style.errors
    assert "No ground truth" in page.scores.summary.text()
    assert page.scores.worst.count() == 0
    assert tuple(page.slice_view.overlay_rgba[55, 215, :3]) == ORGAN_COLORS["large_bowel"]


def test_exports_write_the_files(page, tmp_path):
    from core.export import read_submission

    result = synthetic_result(depth=4)
    page.show_result(result)
    view_png = page.export_view(tmp_path / "view.png")
    assert view_png.stat().st_size > 1000
    written = page.export_masks(tmp_path / "masks")
    assert [p.name for p in written] == [f"{r.id}.png" for r in result.records]
    assert np.array_equal(read_mask_png(written[0]), result.prediction[0])
    assert page.export_submission(tmp_path / "submission.csv") == 4
    shapes = {r.id: r.shape for r in result.records}
    submission = read_submission(tmp_path / "submission.csv", shapes)
    assert len(submission.rles) == 4


# -- the whole page with the demo-trained model --------------------------------------------------
def open_page(qtbot, folder: Path, run_dir: Path):
    from core.config import StudioConfig
    from core.data.scan import scan_dataset
    from gui.pages.review_page import ReviewPage
    from gui.state import StudioState

    state = StudioState(StudioConfig())
    page = ReviewPage(state, runs_root=run_dir.parent)
    qtbot.addWidget(page)
    page.resize(1200, 800)
    page.show()
    state.set_dataset(folder, scan_dataset(folder))
    return page


def predict(qtbot, page, run_dir: Path, case_day: str):
    page.select(run_dir, case_day)
    page.show_selected()
    qtbot.waitUntil(lambda: page.result is not None and page.result.case_day == case_day and
                    not page.task.is_running, timeout=240_000)
    return page.result


def test_demo_run_on_a_non_square_case_day(qtbot, demo_dataset, trained_run):
    run_dir = trained_run[0]
    page = open_page(qtbot, demo_dataset, run_dir)
    try:
        assert page.run_box.count() == 1 and page.case_box.count() == 8
        result = predict(qtbot, page, run_dir, "case1_day23")
        assert result.images.shape[1:] == (310, 360) and result.truth is not None
        assert page.slice_view.image_item.image.shape == (310, 360)
        # Go to the slice where the model predicts the most, and compare the layer with its masks.
        i = int(result.prediction.sum(axis=(1, 2, 3)).argmax())
        page.viewer.set_slice(i)
        page.viewer.set_mode("truth", "hidden")
        rgba = page.slice_view.overlay_rgba
        predicted = result.prediction[i]
        assert predicted.any()
        assert not rgba[~predicted.any(0)].any()  # no colour outside the prediction
        k = int(predicted.sum(axis=(1, 2)).argmax())
        only_k = predicted[k] & ~np.delete(predicted, k, 0).any(0)
        inner = only_k & ~boundary(predicted[k], 1)
        assert inner.any()
        rows, cols = np.nonzero(inner)
        assert tuple(rgba[rows[0], cols[0], :3]) == ORGAN_COLORS[ORGANS[k]]
        score = result.score
        assert page.scores.summary.text().count(f"{score.score:.3f}") == 1
        assert page.scores.worst.count() > 0
        # Switching away and back is instant: the session keeps the result.
        other = predict(qtbot, page, run_dir, "case8_day10")
        assert other.images.shape[1:] == (234, 234)
        page.select(case_day="case1_day23")
        page.show_selected()
        assert page.result is result
    finally:
        page.shutdown()


def test_dataset_without_ground_truth_shows_predictions_only(qtbot, small_demo, trained_run,
                                                             tmp_path):
    run_dir = trained_run[0]
    folder = tmp_path / "unlabelled"
    shutil.copytree(small_demo, folder)
    (folder / "train.csv").unlink()
    page = open_page(qtbot, folder, run_dir)
    try:
        case_day = page.case_box.itemData(0)
        result = predict(qtbot, page, run_dir, case_day)
        assert result.truth is None and result.score is None
        assert not page.display.errors_box.isEnabled()
        assert "No ground truth" in page.scores.summary.text()
        assert page.export_submission(tmp_path / "submission.csv") == result.depth
    finally:
        page.shutdown()


def test_the_review_session_predicts_with_the_fastest_engine(trained_run, demo_dataset, tmp_path,
                                                            monkeypatch):
    """Where ``fastest_engine`` says onnxruntime, Review runs the run's (exported) model.onnx."""
    from core import engines
    from core.data.scan import scan_dataset
    from core.review import ReviewSession

    run_dir = shutil.copytree(trained_run[0], tmp_path / "run",  # model.onnx is written in it
                              ignore=shutil.ignore_patterns("last.ckpt", "model"))
    monkeypatch.setattr(engines, "fastest_engine",
                        lambda device="auto": engines.EngineChoice("onnxruntime", "a test"))
    index = scan_dataset(demo_dataset)  # cached at the run's 96 px already (small_demo is not)
    case_day = next(iter(index.case_days()))
    session = ReviewSession(device="cpu")
    result = session.compute(run_dir, index, case_day)
    assert (run_dir / engines.ONNX_FILE).is_file()
    assert isinstance(session._models[run_dir].module, engines.OnnxModule)
    assert result.prediction.shape == (result.depth, 3, *result.images.shape[1:])


# -- page-wide keys, the readout, three planes, figure ------------------------------------------
def test_keys_work_after_clicking_a_side_control(page, qtbot):
    from PySide6.QtTest import QTest

    page.show_result(synthetic_result(depth=6))
    page.window().activateWindow()
    qtbot.waitUntil(lambda: page.window().isActiveWindow())
    page.scores.worst.setFocus()  # the worst-slices list, then a combo box: keys still page-wide
    start = page.viewer.slice_index
    QTest.keyClick(page.scores.worst, Qt.Key_End)
    assert page.viewer.slice_index == 5 != start
    page.display.mode_boxes["prediction"].setFocus()
    QTest.keyClick(page.display.mode_boxes["prediction"], Qt.Key_Home)
    assert page.viewer.slice_index == 0
    QTest.keyClick(page.display.mode_boxes["prediction"], Qt.Key_2)
    assert page.viewer.style.organs == (True, False, True)


def test_the_cursor_readout_follows_wheel_and_keys(page, qtbot):
    from PySide6.QtCore import QPointF

    page.show_result(synthetic_result(depth=6))
    view = page.slice_view
    center = view.image_item.mapToScene(QPointF(210.5, 50.5))
    view.scene().sigMouseMoved.emit(center)
    assert page.hover_label.text().startswith("slice 11 (4/6)")  # the middle slice, numbered 11
    page.viewer.step_slice(1)  # what a key or the wheel does
    assert page.hover_label.text().startswith("slice 13 (5/6)")
    assert "x 210, y 50" in page.hover_label.text()


def test_three_planes_reformat_at_the_true_spacing_with_a_linked_cross_hair(page, qtbot):
    result = synthetic_result(depth=6, spacing=(1.5, 1.5))
    page.layout_box.setCurrentIndex(1)
    page.show_result(result)
    coronal, sagittal = page.coronal_view, page.sagittal_view
    qtbot.waitUntil(lambda: coronal.isVisible() and coronal.image_item.image is not None)
    row, column = page.viewer.cursor
    assert (row, column) == (H // 2, W // 2)
    # Coronal: row `row` of every slice; sagittal: column `column`; 3 mm between slices.
    assert np.array_equal(coronal.image_item.image, result.images[:, row, :])
    assert np.array_equal(sagittal.image_item.image, result.images[:, :, column])
    rect = coronal.image_item.mapRectToParent(coronal.image_item.boundingRect())
    assert (rect.width(), rect.height()) == pytest.approx((W * 1.5, 6 * 3.0))
    # The masks in a reformat are the masks of that row.
    page.viewer.set_cursor(55, column)
    expected = compose_overlay(np.ascontiguousarray(result.prediction[:, :, 55, :].transpose(1, 0, 2)),
                               np.ascontiguousarray(result.truth[:, :, 55, :].transpose(1, 0, 2)),
                               page.viewer.style)
    assert np.array_equal(coronal.overlay_rgba, expected) and expected[..., 3].any()
    # Clicking in the coronal view picks the slice and the column; the other views follow.
    coronal._move_cross(215, 4)
    assert page.viewer.slice_index == 4 and page.viewer.cursor == (55, 215)
    assert np.array_equal(page.slice_view.image_item.image, result.images[4])
    assert page.slice_view.lines["vertical"].value() == pytest.approx(215.5 * 1.5)
    assert sagittal.lines["horizontal"].value() == pytest.approx(4.5 * 3.0)
    # Dragging a cross-hair line moves the plane.
    sagittal.lines["vertical"].setValue(60.2 * 1.5)
    assert page.viewer.cursor == (60, 215)
    assert np.array_equal(coronal.image_item.image, result.images[:, 60, :])
    page.layout_box.setCurrentIndex(0)
    assert not coronal.isVisible()


def test_figure_export_has_the_image_pixels_and_a_caption(page, tmp_path):
    from PySide6.QtGui import QImage

    result = synthetic_result(depth=4, spacing=(1.0, 1.0))
    page.show_result(result)
    page.viewer.set_mode("truth", "hidden")
    path = page.export_view(tmp_path / "figure.png", scale=2)
    image = QImage(str(path))
    assert image.width() == 2 * W and image.height() > 2 * H  # no border; a caption under it
    # A predicted pixel (row 55, column 215) sits on its 2×2 block, in the organ's colour blend.
    colour = image.pixelColor(2 * 215, 2 * 55)
    assert colour.red() > colour.blue()  # large bowel (orange-ish) over a grey pixel
    assert image.pixelColor(5, 2 * H + 5).name() == "#ffffff"  # the caption's white background


def test_a_case_day_opens_with_its_true_masks_when_there_is_no_run(qtbot, small_demo):
    page = open_page(qtbot, small_demo, small_demo / "no-runs" / "x")
    try:
        case_day = page.case_box.itemData(0)
        number = page.studio.index.case_days()[case_day][3].slice_num
        page.open_case_day(case_day, number)
        qtbot.waitUntil(lambda: page.result is not None, timeout=60_000)
        assert not page.result.has_prediction and page.result.truth is not None
        assert page.result.records[page.viewer.slice_index].slice_num == number
        assert "true masks only" in page.scores.summary.text()
    finally:
        page.shutdown()


def test_fold_roles_summary_and_exports_of_several_case_days(qtbot, demo_dataset, trained_run,
                                                              tmp_path):
    from core.data.datamodule import split_for
    from core.runs import RunFolder

    run_dir = trained_run[0]
    page = open_page(qtbot, demo_dataset, run_dir)
    try:
        _train, validation = split_for(page.studio.index, RunFolder(run_dir).config())
        labels = [page.case_box.itemText(i) for i in range(page.case_box.count())]
        for text in labels:
            case = int(text.split("_")[0].removeprefix("case"))
            assert text.endswith("· validation" if case in validation else "· training")
        expected = page.validation_case_days()
        assert expected and len(expected) < len(labels)
        page.score_fold()
        qtbot.waitUntil(lambda: len(page.fold.scores) == len(expected), timeout=240_000)
        qtbot.waitUntil(lambda: not page.task.is_running)
        shown = page.fold.case_days()
        assert sorted(shown) == sorted(expected)
        scores = {s.case_day: s.score for s in page.fold.scores}
        assert [scores[c] for c in shown] == sorted(scores.values())  # worst first
        page.fold.table.cellClicked.emit(0, 0)
        qtbot.waitUntil(lambda: page.result is not None and page.result.case_day == shown[0])
        # Masks of every validation case-day, with a message naming what was written.
        page.scope_box.setCurrentIndex(page.scope_box.findData("validation"))
        files = page.export_masks(tmp_path / "masks", page.export_case_days("validation"))
        slices = sum(len(page.studio.index.case_days()[c]) for c in expected)
        assert len(files) == slices
        page._report_export(f"Wrote {len(files)} mask PNGs", files)
        assert page.settings.export_dir == tmp_path / "masks"
        assert f"Wrote {slices} mask PNGs" in page.export_status.text()
    finally:
        page.shutdown()


def test_review_lists_a_new_run_when_shown(qtbot, demo_dataset, trained_run, tmp_path):
    run_dir = trained_run[0]
    root = tmp_path / "runs"
    root.mkdir()
    page = open_page(qtbot, demo_dataset, root / "x")
    page.runs_root = root
    page.refresh_runs()
    assert page.run_box.count() == 0
    shutil.copytree(run_dir, root / run_dir.name)  # a run finished meanwhile
    page.hide()
    page.show()  # coming back to the page
    assert page.run_box.count() == 1
    page.shutdown()
