"""The preprocessing cache: contents, reuse, rebuild when stale or damaged, cancel, bad files."""

import os

import cv2
import numpy as np
import pytest

from core.data.cache import build_cache, neighbour_rows
from core.data.scan import load_masks, read_png16, scan_dataset
from core.errors import CancelledError


def test_cache_holds_resized_images_and_packed_masks(small_demo, tmp_path):
    index = scan_dataset(small_demo)
    cache = build_cache(index, 64, tmp_path)
    assert cache.images.shape == cache.masks.shape == (72, 64, 64)
    assert cache.images.dtype == np.uint8 and cache.valid.all()
    row = next(i for i, r in enumerate(index.slices) if load_masks(r).any())
    record = index.slices[row]
    truth = load_masks(record)
    unpacked = cache.unpack_masks([row])[0]
    for organ in range(3):
        resized = cv2.resize(truth[organ].view(np.uint8), (64, 64),
                             interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(unpacked[organ], resized)
    # Per-scan normalisation spans the uint8 range over the scan.
    scan_rows = [i for i, r in enumerate(index.slices) if r.case_day == record.case_day]
    values = np.asarray(cache.images[scan_rows])
    assert np.percentile(values, 99.5) >= 235 and np.percentile(values, 0.5) <= 20


def test_cache_is_reused_and_rebuilt_when_stale(demo_copy, tmp_path):
    index = scan_dataset(demo_copy)
    first = build_cache(index, 64, tmp_path)
    again = build_cache(scan_dataset(demo_copy), 64, tmp_path)
    assert again.folder == first.folder
    assert os.path.getmtime(again.folder / "images.u8") == os.path.getmtime(first.folder / "images.u8")
    other_size = build_cache(index, 96, tmp_path)
    assert other_size.folder != first.folder

    png = index.slices[0].path
    image = read_png16(png)
    png.write_bytes(cv2.imencode(".png", image // 2)[1].tobytes())  # an edited source file
    stale = build_cache(scan_dataset(demo_copy), 64, tmp_path)
    assert stale.folder != first.folder


def test_damaged_cache_is_rebuilt(small_demo, tmp_path):
    index = scan_dataset(small_demo)
    cache = build_cache(index, 64, tmp_path)
    expected = np.array(cache.images)
    folder = cache.folder
    del cache
    with open(folder / "images.u8", "r+b") as fh:
        fh.truncate(1000)
    rebuilt = build_cache(index, 64, tmp_path)
    assert rebuilt.folder == folder
    assert np.array_equal(np.asarray(rebuilt.images), expected)


def test_cancel_leaves_no_cache_behind(small_demo, tmp_path):
    index = scan_dataset(small_demo)
    with pytest.raises(CancelledError):
        build_cache(index, 64, tmp_path, cancel=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_progress_is_reported(small_demo, tmp_path):
    events = []
    build_cache(scan_dataset(small_demo), 64, tmp_path, progress=events.append, threads=1)
    assert events[-1].done == events[-1].total == 72
    assert [e.done for e in events] == sorted(e.done for e in events)


def test_undecodable_png_is_marked_invalid(demo_copy, tmp_path):
    index = scan_dataset(demo_copy)
    png = index.slices[5].path
    data = bytearray(png.read_bytes())
    data[60:400] = b"\0" * 340  # keep the header and end marker, wreck the pixel data
    png.write_bytes(bytes(data))
    cache = build_cache(scan_dataset(demo_copy), 64, tmp_path)
    assert not cache.valid[5] and cache.valid.sum() == 71


def test_neighbours_for_2_5d_clamp_at_scan_edges(small_demo):
    index = scan_dataset(small_demo)
    table = neighbour_rows(index, context=2)
    scans = list(index.case_days().values())
    start = len(scans[0])  # the second scan starts here
    assert table[0].tolist() == [0, 0, 2]
    assert table[1].tolist() == [0, 1, 3]
    assert table[5].tolist() == [3, 5, 7]
    assert table[start - 1].tolist() == [start - 3, start - 1, start - 1]
    assert table[start].tolist() == [start, start, start + 2]  # never reaches into another scan
    assert (neighbour_rows(index, 0) == np.arange(len(index.slices))[:, None]).all()
