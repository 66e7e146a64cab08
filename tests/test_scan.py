"""The scan report on the demo dataset and on hand-broken copies of it."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from core.data import ORGANS
from core.data.scan import load_masks, read_png16, scan_dataset
from core.errors import DatasetError
from tests.conftest import REPO


def test_demo_dataset_report(demo_dataset):
    index = scan_dataset(demo_dataset)
    report = index.report
    assert (report.cases, report.case_days, report.slices) == (6, 8, 288)
    assert report.problems == []
    assert set(report.image_sizes) == {"266x266", "360x310", "234x234"}
    assert all(0 < report.slices_with[o] < 288 for o in ORGANS)
    # At least one case has two days; every slice's masks decode at its own size.
    days_per_case = {}
    for r in index.slices:
        days_per_case.setdefault(r.case, set()).add(r.day)
    assert max(len(d) for d in days_per_case.values()) >= 2
    record = next(r for r in index.slices if r.width != r.height)
    assert read_png16(record.path).shape == (record.height, record.width)
    assert read_png16(record.path).dtype == np.uint16
    assert load_masks(record).shape == (3, record.height, record.width)


def test_demo_has_overlapping_bowels_and_empty_slices(demo_dataset):
    index = scan_dataset(demo_dataset)
    overlaps = empty = 0
    for record in index.slices:
        masks = load_masks(record)
        overlaps += bool((masks[0] & masks[1]).any())
        empty += not masks.any()
    assert overlaps > 0 and empty > 0


def test_slices_change_smoothly_along_z(demo_dataset):
    index = scan_dataset(demo_dataset)
    scan = next(iter(index.case_days().values()))
    areas = np.array([load_masks(r).sum() for r in scan], float)
    jumps = np.abs(np.diff(areas))
    assert jumps.max() < 0.5 * areas.max()


def _rewrite_csv(root, edit):
    path = root / "train.csv"
    rows = list(csv.reader(open(path, newline="", encoding="utf-8")))
    rows = edit(rows)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)


def _problems(root):
    return [(p.severity, p.where, p.message) for p in scan_dataset(root).report.problems]


def _first_png(root):
    return sorted((root / "train").rglob("*.png"))[0]


def test_missing_columns_are_fatal(demo_copy):
    _rewrite_csv(demo_copy, lambda rows: [[r[0], r[1]] for r in rows])
    with pytest.raises(DatasetError, match="missing column.*segmentation"):
        scan_dataset(demo_copy)


def test_image_without_csv_rows(demo_copy):
    png = _first_png(demo_copy)
    _rewrite_csv(demo_copy, lambda rows: [r for r in rows if not r[0].endswith("slice_0001")
                                          or "case1_day10" not in r[0]])
    problems = _problems(demo_copy)
    assert any("no rows for case1_day10_slice_0001" in m for _, _, m in problems), problems
    assert png.exists()


def test_id_without_image(demo_copy):
    _first_png(demo_copy).unlink()
    problems = _problems(demo_copy)
    assert any(w == "train.csv case1_day10_slice_0001" and "no image file" in m
               for _, w, m in problems)


def test_truncated_and_unreadable_pngs(demo_copy):
    pngs = sorted((demo_copy / "train").rglob("*.png"))
    data = pngs[0].read_bytes()
    pngs[0].write_bytes(data[: len(data) // 2])
    pngs[1].write_bytes(b"this is not a png")
    index = scan_dataset(demo_copy)
    messages = {p.where: p.message for p in index.report.problems}
    assert "truncated" in messages[str(pngs[0].relative_to(demo_copy))]
    assert "not a PNG" in messages[str(pngs[1].relative_to(demo_copy))]
    assert len(index.slices) == index.report.slices == 72 - 2  # bad slices left out


def test_eight_bit_image_is_a_warning(demo_copy):
    import cv2

    png = _first_png(demo_copy)
    image = read_png16(png)
    png.write_bytes(cv2.imencode(".png", (image >> 8).astype(np.uint8))[1].tobytes())
    problems = _problems(demo_copy)
    assert ("warning", str(png.relative_to(demo_copy))) in [(s, w) for s, w, _ in problems]
    assert any("8-bit" in m for _, _, m in problems)


def test_image_size_disagreeing_with_file_name(demo_copy):
    png = _first_png(demo_copy)
    parts = png.name.split("_")
    parts[2] = str(int(parts[2]) + 2)  # claim a wider image than the file holds
    png.rename(png.with_name("_".join(parts)))
    problems = _problems(demo_copy)
    assert any("but the file name says" in m for _, _, m in problems)


@pytest.mark.parametrize("rle, expected", [
    ("1 2 3", "odd number"),
    ("10 5 12 3", "not increasing"),
    ("70750 10", "runs past the image"),  # 266×266 = 70756 pixels
])
def test_bad_rle_leaves_slice_out(demo_copy, rle, expected):
    def edit(rows):
        rows[1][2] = rle  # first data row: case1_day10_slice_0001 large_bowel
        return rows

    _rewrite_csv(demo_copy, edit)
    index = scan_dataset(demo_copy)
    assert any(expected in p.message for p in index.report.problems)
    assert "case1_day10_slice_0001" not in {r.id for r in index.slices}


def test_malformed_csv_rows_name_the_row(demo_copy):
    def edit(rows):
        rows[4] = ["case1_day10_slice_0002", "liver", ""]
        rows[5] = ["garbage", "stomach", ""]
        return rows

    _rewrite_csv(demo_copy, edit)
    problems = _problems(demo_copy)
    assert ("error", "train.csv row 5") in [(s, w) for s, w, _ in problems]
    assert any("class 'liver'" in m for _, _, m in problems)
    assert any(w == "train.csv row 6" and "caseN_dayM_slice_XXXX" in m for _, w, m in problems)


def test_dataset_without_csv_is_images_only(demo_copy):
    (demo_copy / "train.csv").unlink()
    index = scan_dataset(demo_copy)
    assert not index.has_labels and index.report.slices == 72
    assert all(r.rles is None for r in index.slices)


def test_not_a_dataset_is_fatal(tmp_path):
    with pytest.raises(DatasetError, match="no 'train'"):
        scan_dataset(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "nowhere")


def test_scan_cli_json(small_demo):
    out = subprocess.run([sys.executable, "main.py", "scan", str(small_demo), "--json"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    assert set(data) == {"cases", "case_days", "slices", "slices_with", "image_sizes", "corrected",
                         "problems"}
    assert data["corrected"] == 0  # no --corrections
    assert data["slices"] == 72 and data["cases"] == 4
