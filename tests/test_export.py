"""submission.csv writing and checking, mask PNGs and overlay PNGs."""

import csv

import cv2
import numpy as np
import pytest

from core.data import ORGANS
from core.errors import StudioError
from core.export import (ORGAN_COLORS, pack_organ_bits, read_mask_png, read_submission,
                         unpack_organ_bits, window_image, write_mask_png, write_overlay_png,
                         write_submission)

SHAPES = {"case1_day0_slice_0001": (4, 5), "case1_day0_slice_0002": (4, 5),
          "case2_day3_slice_0001": (6, 3)}


def random_masks(rng, shape, density=0.3):
    return rng.random((3,) + shape) < density


def write_csv(path, rows, header=("id", "class", "predicted")):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def good_rows():
    return [(sid, organ, "") for sid in SHAPES for organ in ORGANS]


def test_submission_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    masks = {sid: random_masks(rng, shape) for sid, shape in SHAPES.items()}
    masks["case1_day0_slice_0002"][:] = False                 # an empty slice: empty fields
    path = tmp_path / "submission.csv"
    assert write_submission(path, ((sid, m) for sid, m in masks.items())) == 3
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id,class,predicted" and len(lines) == 1 + 3 * 3
    assert [line.split(",")[1] for line in lines[1:4]] == list(ORGANS)
    assert lines[4:7] == [f"case1_day0_slice_0002,{organ}," for organ in ORGANS]
    submission = read_submission(path, SHAPES)
    assert list(submission.rles) == list(SHAPES)
    for sid, expected in masks.items():
        np.testing.assert_array_equal(submission.masks(sid), expected)
    assert not list(tmp_path.glob("*.partial"))


def test_a_speckled_mask_longer_than_the_csv_field_limit_round_trips(tmp_path):
    checkerboard = (np.indices((310, 360)).sum(axis=0) % 2).astype(bool)
    masks = np.stack([checkerboard, ~checkerboard, checkerboard])
    path = tmp_path / "submission.csv"
    write_submission(path, [("case1_day0_slice_0001", masks)])
    assert path.stat().st_size > 3 * 131072
    submission = read_submission(path, {"case1_day0_slice_0001": (310, 360)})
    np.testing.assert_array_equal(submission.masks("case1_day0_slice_0001"), masks)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial_file(tmp_path):
    path = write_csv(tmp_path / "submission.csv", good_rows())
    before = path.read_bytes()

    def rows():
        yield "case1_day0_slice_0001", np.zeros((3, 4, 5), bool)
        raise RuntimeError("prediction stopped")

    with pytest.raises(RuntimeError, match="prediction stopped"):
        write_submission(path, rows())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"]


def test_an_unwritable_path_is_a_studio_error_naming_it(tmp_path):
    path = tmp_path / "no such folder" / "submission.csv"
    with pytest.raises(StudioError, match="cannot write '.*no such folder.*submission.csv'"):
        write_submission(path, [("case1_day0_slice_0001", np.zeros((3, 4, 5), bool))])


def edit(rows, index, row):
    rows = list(rows)
    rows[index] = row
    return rows


@pytest.mark.parametrize("rows, message", [
    (good_rows()[:-3], "submission.csv: no rows for case2_day3_slice_0001; every slice"),
    (good_rows()[6:], "submission.csv: no rows for case1_day0_slice_0001 and 1 more"),
    (good_rows()[:-1], "submission.csv: no stomach row for case2_day3_slice_0001"),
    (edit(good_rows(), 4, ("case1_day0_slice_0002", "liver", "")),
     "submission.csv row 6: unknown class 'liver'; expected one of large_bowel, small_bowel, "
     "stomach"),
    (good_rows() + [("case1_day0_slice_0001", "stomach", "")],
     "submission.csv row 11: second row for case1_day0_slice_0001 stomach (the first is row 4)"),
    (edit(good_rows(), 0, ("case1_day0_slice_0001", "large_bowel", "1 2 3")),
     "submission.csv row 2: bad RLE in 'predicted': odd number of values"),
    (edit(good_rows(), 1, ("case1_day0_slice_0001", "small_bowel", "3 x")),
     "submission.csv row 3: bad RLE in 'predicted': 'x' is not a whole number"),
    (edit(good_rows(), 7, ("case2_day3_slice_0001", "small_bowel", "16 4")),
     "submission.csv row 9: bad RLE in 'predicted': segmentation runs past the image (run ends at pixel 19 > 3×6 = 18)"),
    (edit(good_rows(), 2, ("case9_day0_slice_0001", "stomach", "")),
     "submission.csv row 4: id 'case9_day0_slice_0001' is not a slice of the dataset"),
    (edit(good_rows(), 2, ("case1_day0_slice_0001", "stomach")),
     "submission.csv row 4: expected 3 values (id,class,predicted), found 2"),
])
def test_bad_submissions_name_the_row(tmp_path, rows, message):
    path = write_csv(tmp_path / "submission.csv", rows)
    with pytest.raises(StudioError) as error:
        read_submission(path, SHAPES)
    assert str(error.value).startswith(message)


def test_a_run_that_ends_exactly_at_the_last_pixel_is_fine(tmp_path):
    rows = edit(good_rows(), 7, ("case2_day3_slice_0001", "small_bowel", "15 4"))
    submission = read_submission(write_csv(tmp_path / "submission.csv", rows), SHAPES)
    assert submission.masks("case2_day3_slice_0001")[1].sum() == 4


def test_missing_columns_and_empty_files(tmp_path):
    path = write_csv(tmp_path / "submission.csv", good_rows(), header=("id", "class", "rle"))
    with pytest.raises(StudioError, match=r"submission.csv row 1: missing column\(s\) predicted; "
                                          r"expected id,class,predicted \(found id,class,rle\)"):
        read_submission(path, SHAPES)
    path.write_text("", encoding="utf-8")
    with pytest.raises(StudioError, match="submission.csv is empty"):
        read_submission(path, SHAPES)
    with pytest.raises(StudioError, match="cannot read '.*nothing.csv'"):
        read_submission(tmp_path / "nothing.csv", SHAPES)


def test_columns_in_any_order_and_only_the_required_ids(tmp_path):
    rows = [(organ, "", sid) for sid in list(SHAPES)[:2] for organ in ORGANS]
    path = write_csv(tmp_path / "submission.csv", rows, header=("class", "predicted", "id"))
    submission = read_submission(path, SHAPES, required=list(SHAPES)[:2])
    assert list(submission.rles) == list(SHAPES)[:2]


def test_organ_bits():
    masks = np.zeros((3, 1, 5), bool)
    masks[0, 0, [1, 4]] = True
    masks[1, 0, [2, 4]] = True
    masks[2, 0, [3, 4]] = True
    bits = pack_organ_bits(masks)
    assert bits.dtype == np.uint8 and bits.tolist() == [[0, 1, 2, 4, 7]]
    np.testing.assert_array_equal(unpack_organ_bits(bits), masks)


@pytest.mark.parametrize("height, width", [(360, 310), (310, 360)])
def test_mask_png_round_trip_keeps_size_orientation_and_overlaps(tmp_path, height, width):
    masks = np.zeros((3, height, width), bool)
    masks[0, :40, -50:] = True                         # large bowel in the top-right corner
    masks[1, 20:60, -70:-30] = True                    # overlaps it
    masks[2, -30:, :20] = True                         # stomach bottom-left
    folder = tmp_path / "mäsks ø"                      # non-ASCII: cv2.imwrite would fail on Windows
    path = write_mask_png(folder, "case1_day0_slice_0001", masks)
    assert path == folder / "case1_day0_slice_0001.png"
    raw = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)
    assert raw.shape == (height, width) and raw.dtype == np.uint8
    assert raw[0, width - 1] == 1 and raw[30, width - 40] == 3 and raw[height - 1, 0] == 4
    back = read_mask_png(path)
    np.testing.assert_array_equal(back, masks)


def test_read_mask_png_rejects_other_images(tmp_path):
    path = tmp_path / "grey16.png"
    path.write_bytes(cv2.imencode(".png", np.zeros((4, 4), np.uint16))[1].tobytes())
    with pytest.raises(StudioError, match="grey16.png' is not an 8-bit single-channel mask PNG"):
        read_mask_png(path)


def test_window_maps_percentiles_to_black_and_white():
    image = np.arange(1000, dtype=np.uint16).reshape(10, 100) * 50
    low, high = np.percentile(image.astype(np.float32), [1.0, 99.5])
    windowed = window_image(image)
    assert windowed.dtype == np.uint8
    assert windowed[image <= low].max() == 0 and windowed[image >= high].min() == 255
    assert 120 <= windowed.flat[500] <= 135
    assert window_image(np.full((3, 3), 700, np.uint16)).max() == 0   # flat image: no division by 0


def test_overlay_png_blends_organ_colours_and_outlines_them(tmp_path):
    height, width = 36, 31
    image = (np.indices((height, width)).sum(axis=0) * 100).astype(np.uint16)
    masks = np.zeros((3, height, width), bool)
    masks[0, 2:12, 18:29] = True
    masks[2, 20:30, 3:13] = True
    path = write_overlay_png(tmp_path / "overlays", "case1_day0_slice_0001", image, masks, alpha=0.5)
    assert path.name == "case1_day0_slice_0001_overlay.png"
    bgr = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR)
    rgb = bgr[..., ::-1].astype(int)
    grey = window_image(image).astype(int)
    assert rgb.shape == (height, width, 3)
    assert rgb[33, 25].tolist() == [grey[33, 25]] * 3                     # no organ: grey
    assert rgb[2, 18].tolist() == list(ORGAN_COLORS["large_bowel"])         # outline: solid colour
    inside = np.rint(0.5 * grey[25, 8] + 0.5 * np.array(ORGAN_COLORS["stomach"]))
    assert np.abs(rgb[25, 8] - inside).max() <= 1                          # fill: blended
