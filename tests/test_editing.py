"""Mask editing on the slice's pixel grid: brush and eraser pixels exactly, undo/redo per slice,
fill, take the prediction, and the saved corrections read back pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest

from core.data.corrections import Corrections
from core.data.rle import rle_decode
from core.editing import UNDO_STEPS, MaskEditor


def _editor(depth=3, height=20, width=30):
    ids = [f"case1_day1_slice_{n:04d}" for n in range(1, depth + 1)]
    return MaskEditor(np.zeros((depth, 3, height, width), bool), ids)


def test_a_dab_sets_the_pixels_whose_centres_are_within_the_radius():
    editor = _editor()
    editor.dab(1, 2, 10.5, 7.5, 1.0, True)  # centred on pixel (10, 7): it and its 4 neighbours
    expected = np.zeros((20, 30), bool)
    expected[10, 6:9] = expected[9:12, 7] = True
    assert np.array_equal(editor.masks[1, 2], expected)
    assert not editor.masks[[0, 2]].any() and not editor.masks[1, :2].any()
    editor.dab(1, 0, 3.9, 0.2, 0.0, True)  # radius 0: the pixel under the point, no offset
    assert np.argwhere(editor.masks[1, 0]).tolist() == [[3, 0]]
    editor.dab(1, 0, 0.0, 0.0, 5.0, True)  # clipped at the edges, no wrap-around
    assert not editor.masks[1, 0, 10:, :].any() and not editor.masks[1, 0, :, 10:].any()


def test_a_stroke_is_one_undo_step_and_redo_restores_it():
    editor = _editor()
    editor.begin_stroke(0, 1)
    for x in range(5, 15):
        editor.dab(0, 1, 8.5, x + 0.5, 1.5, True)
    assert editor.end_stroke()
    stroke = editor.masks[0, 1].copy()
    editor.begin_stroke(0, 1)
    editor.dab(0, 1, 8.5, 9.5, 1.5, False)  # the eraser
    assert editor.end_stroke()
    assert editor.masks[0, 1].sum() < stroke.sum()
    assert editor.undo(0) and np.array_equal(editor.masks[0, 1], stroke)
    assert editor.undo(0) and not editor.masks[0, 1].any()
    assert not editor.undo(0) and not editor.undo(2)
    assert editor.redo(0) and np.array_equal(editor.masks[0, 1], stroke)
    editor.begin_stroke(0, 1)
    assert not editor.end_stroke()  # nothing changed: no step
    assert editor.can_redo(0)


def test_at_least_fifty_steps_undo_per_slice():
    editor = _editor()
    for step in range(60):
        editor.dab(2, 0, 10.5 + step // 30, step % 30 + 0.5, 0.0, True)
        assert editor.end_stroke()
    assert UNDO_STEPS >= 50
    for _ in range(60):
        assert editor.undo(2)
    assert not editor.masks[2].any()
    for _ in range(60):
        assert editor.redo(2)
    assert editor.masks[2, 0, 10:12].all() and editor.masks[2, 0].sum() == 60


def test_fill_take_and_save_round_trip(tmp_path):
    truth = np.zeros((2, 3, 16, 16), bool)
    truth[0, 0, 3:9, 3:9] = True
    truth[0, 0, 4:8, 4:8] = False  # an outline
    editor = MaskEditor(truth, ["case2_day3_slice_0001", "case2_day3_slice_0002"])
    assert editor.fill(0, 0) and editor.masks[0, 0, 3:9, 3:9].all()
    assert not truth[0, 0, 5, 5]  # the caller's array is not edited
    prediction = np.zeros((16, 16), bool)
    prediction[10:12, 1:4] = True
    assert editor.take(1, 2, prediction) and not editor.take(1, 2, prediction)
    corrections = Corrections(tmp_path / "corrections.csv")
    for i in (0, 1):
        editor.save_slice(corrections, i)
    rows = corrections.rows()
    for i, sid in enumerate(editor.slice_ids):
        for k, organ in enumerate(("large_bowel", "small_bowel", "stomach")):
            assert np.array_equal(rle_decode(rows[sid][organ], (16, 16)), editor.masks[i, k])
    assert editor.edited == {0, 1}


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="expected"):
        MaskEditor(np.zeros((2, 2, 4, 4), bool), ["a", "b"])
