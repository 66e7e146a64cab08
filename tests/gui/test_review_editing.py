"""Editing the truth on the Review page with the mouse and the keys: brush and eraser strokes land
on the slice's own pixels (checked in the saved RLE, pixel by pixel), undo/redo, reviewed slices,
autosave, and editing a case-day that has no labels."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest

from core.data.corrections import Corrections
from core.data.rle import rle_decode
from tests.gui.test_review import H, W, page, synthetic_result  # noqa: F401 - the page fixture

STOMACH = 2


def _screen(view, y: float, x: float):
    """The viewport point showing image point (y, x) (pixel (r, c) spans [r, r+1) × [c, c+1))."""
    return view.mapFromScene(view.overlay_item.mapToScene(QPointF(x, y)))


def _zoom(view, y: float, x: float, half: int = 20) -> None:
    """Zoom in about (y, x), so that one image pixel spans many screen pixels."""
    pw, ph = view.pixel_size
    view.view.setRange(xRange=((x - half) * pw, (x + half) * pw),
                       yRange=((y - half) * ph, (y + half) * ph), padding=0)


def _drag(viewport, points) -> None:
    """A left-button drag through ``points`` (viewport positions), as a hand makes it: press, moves
    with the button held, release. (QTest's mouseMove does not say that the button is held.)"""
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    def send(kind, point, button, buttons):
        local = QPointF(point)
        event = QMouseEvent(kind, local, QPointF(viewport.mapToGlobal(point)), button, buttons,
                            Qt.NoModifier)
        QApplication.sendEvent(viewport, event)

    send(QEvent.MouseButtonPress, points[0], Qt.LeftButton, Qt.LeftButton)
    for point in points[1:]:
        send(QEvent.MouseMove, point, Qt.NoButton, Qt.LeftButton)
        QApplication.processEvents()
    send(QEvent.MouseButtonRelease, points[-1], Qt.LeftButton, Qt.NoButton)


def _stored(corrections: Corrections, sid: str, organ: str = "stomach") -> np.ndarray:
    return rle_decode(corrections.rows()[sid][organ], (H, W))


@pytest.fixture
def editing(page, qtbot, tmp_path):  # noqa: F811 - the imported fixture
    page.studio.dataset_dir = tmp_path / "data"
    result = synthetic_result(depth=3, spacing=(1.0, 1.0))
    page.show_result(result)
    page.activateWindow()
    qtbot.waitUntil(lambda: page.isActiveWindow() and page.slice_view.hasFocus())
    QTest.keyClick(page.slice_view, Qt.Key_D)  # D: edit
    assert page.edit.editing
    QTest.keyClick(page.slice_view, Qt.Key_3)  # 3: the stomach
    assert page.edit.organ == STOMACH and page.editor is not None
    corrections = Corrections.for_dataset(page.studio.dataset_dir)
    yield page, result, corrections
    corrections.path.unlink(missing_ok=True)
    corrections.reviewed_path.unlink(missing_ok=True)


def test_a_click_paints_the_pixel_under_it_and_a_brush_its_disk(editing, qtbot):
    page, result, corrections = editing
    view, sid = page.slice_view, result.records[1].id
    page.viewer.set_slice(1)
    before = result.truth[1, STOMACH].copy()
    page.edit.size_box.setValue(0)
    _zoom(view, 100, 50)
    qtbot.wait(20)
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=_screen(view, 100.5, 50.5))
    expected = before.copy()
    expected[100, 50] = True  # exactly that pixel: no half-pixel offset
    assert np.array_equal(_stored(corrections, sid), expected)
    for k, organ in enumerate(("large_bowel", "small_bowel")):
        assert np.array_equal(_stored(corrections, sid, organ), result.truth[1, k])
    QTest.keyClick(view, Qt.Key_BracketRight)  # ] : a bigger brush
    assert page.edit.size_box.value() == 1
    page.edit.size_box.setValue(2)
    page.edit.size_box.stepBy(1)  # 2 → 3; then radius 2.5 is not reachable: use 3
    _zoom(view, 120, 80)
    qtbot.wait(20)
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=_screen(view, 120.5, 80.5))
    rows, cols = np.ogrid[:H, :W]
    d2 = (rows - 120) ** 2 + (cols - 80) ** 2
    stored = _stored(corrections, sid)
    # Every pixel centre inside radius 3 is painted, none outside; those exactly at 3 depend on
    # where in its screen pixel the click fell (a few hundredths of an image pixel).
    assert stored[d2 < 9].all()
    assert np.array_equal(stored[d2 > 9], expected[d2 > 9])
    assert 21 <= (stored & ~expected).sum() <= 29
    assert page.viewer.slice_index == 1  # painting does not move the slice or the cross-hair


def test_an_eraser_drag_removes_a_line_and_undo_redo_restore_it(editing, qtbot):
    page, result, corrections = editing
    view, sid = page.slice_view, result.records[0].id
    page.viewer.set_slice(0)
    # The truth square is rows 40..69, columns 205..234 (synthetic_result); erase row 55's middle.
    truth = result.truth[0, STOMACH] | result.truth[0, 0]
    result.truth[0, STOMACH] = truth  # a stomach square to erase from
    page.editor.masks[0, STOMACH] = truth
    QTest.keyClick(view, Qt.Key_X)
    assert page.edit.erasing
    page.edit.size_box.setValue(1)
    _zoom(view, 55, 220, half=25)
    qtbot.wait(20)
    _drag(view.viewport(), [_screen(view, 55.5, float(x)) for x in np.linspace(210.5, 230.5, 12)])
    stored = _stored(corrections, sid)
    assert not stored[55, 211:230].any()  # the line along the drag is gone
    assert stored[53, 205:235].all() and stored[57, 205:235].all()  # 2 rows away: untouched
    assert np.array_equal(stored, page.editor.masks[0, STOMACH])
    erased = stored.copy()
    QTest.keyClick(view, Qt.Key_Z, Qt.ControlModifier)
    assert np.array_equal(_stored(corrections, sid), truth)
    QTest.keyClick(view, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert np.array_equal(_stored(corrections, sid), erased)
    # the scores follow the edited truth
    assert page.scores.summary.text().count("Dice") == 1


def test_reviewed_slices_and_autosave_survive_closing_the_page(editing, qtbot):
    page, result, corrections = editing
    page.viewer.set_slice(2)
    QTest.keyClick(page.slice_view, Qt.Key_V)
    assert corrections.reviewed() == {result.records[2].id}
    assert "1 reviewed" in page.edit.status.text() and "this slice: reviewed" in page.edit.status.text()
    QTest.keyClick(page.slice_view, Qt.Key_1)  # the large bowel
    page.edit_action("take_slice")  # its prediction on this slice becomes its truth
    assert np.array_equal(page.editor.masks[2, 0], result.prediction[2, 0])
    page.close()
    again = Corrections(corrections.path)  # as a new session reads it
    sid = result.records[2].id
    assert again.reviewed() == {sid}
    assert np.array_equal(rle_decode(again.rows()[sid]["large_bowel"], (H, W)),
                          result.prediction[2, 0])


def test_a_case_day_without_labels_starts_from_the_prediction(page, qtbot, tmp_path):  # noqa: F811
    page.studio.dataset_dir = tmp_path / "unlabelled"
    result = synthetic_result(depth=2, spacing=(1.0, 1.0), with_truth=False)
    page.show_result(result)
    page.edit.edit_box.setChecked(True)
    assert result.truth is not None and np.array_equal(result.truth, result.prediction)
    page.edit.organ_box.setCurrentIndex(0)
    page.edit.size_box.setValue(0)
    page.edit_action("fill")  # nothing to fill in a solid square: not saved
    corrections = Corrections.for_dataset(page.studio.dataset_dir)
    assert corrections.rows() == {}
    _zoom(page.slice_view, 10, 10)
    qtbot.wait(20)
    qtbot.mouseClick(page.slice_view.viewport(), Qt.LeftButton,
                     pos=_screen(page.slice_view, 10.5, 10.5))
    stored = rle_decode(corrections.rows()[result.records[page.viewer.slice_index].id]
                        ["large_bowel"], (H, W))
    assert stored[10, 10] and stored.sum() == result.prediction[page.viewer.slice_index, 0].sum() + 1
    corrections.path.unlink()
