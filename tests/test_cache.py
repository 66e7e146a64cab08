"""The preprocessing cache: contents, reuse, rebuild when stale or damaged, cancel, bad files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.data.cache import build_cache, neighbour_rows, resize_masks
from core.data.scan import load_masks, read_png16, scan_dataset
from core.errors import CancelledError

REPO = Path(__file__).resolve().parents[1]


def test_cache_holds_resized_images_and_packed_masks(small_demo, tmp_path):
    index = scan_dataset(small_demo)
    cache = build_cache(index, 64, tmp_path)
    assert cache.images.shape == cache.masks.shape == (72, 64, 64)
    assert cache.images.dtype == np.uint8 and cache.valid.all()
    row = next(i for i, r in enumerate(index.slices) if load_masks(r).any())
    record = index.slices[row]
    truth = load_masks(record)
    unpacked = cache.unpack_masks([row])[0]
    assert np.array_equal(unpacked, resize_masks(truth, 64))
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
    assert [p for p in tmp_path.iterdir() if p.suffix != ".lock"] == []


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


def test_flipped_bytes_and_a_bad_index_are_found_and_rebuilt(small_demo, tmp_path, caplog):
    index = scan_dataset(small_demo)
    cache = build_cache(index, 64, tmp_path)
    images, masks, folder = np.array(cache.images), np.array(cache.masks), cache.folder
    del cache
    for name, offset in (("images.u8", 5000), ("masks.u8", 64 * 64 * 30 + 2000)):
        with open(folder / name, "r+b") as fh:  # same size, different bytes: a bad disk sector
            fh.seek(offset)
            byte = fh.read(1)
            fh.seek(offset)
            fh.write(bytes([byte[0] ^ 0xFF]))
        os.utime(folder / name)  # as a write by another program would
        with caplog.at_level("WARNING"):
            rebuilt = build_cache(index, 64, tmp_path)
        assert f"{name} does not match its checksum" in caplog.text
        assert np.array_equal(rebuilt.images, images) and np.array_equal(rebuilt.masks, masks)
        del rebuilt
    meta = json.loads((folder / "meta.json").read_text())
    meta["invalid"] = [10_000]
    (folder / "meta.json").write_text(json.dumps(meta))
    rebuilt = build_cache(index, 64, tmp_path)  # no IndexError: rebuilt
    assert rebuilt.valid.all() and json.loads((folder / "meta.json").read_text())["invalid"] == []


def test_a_second_process_waits_for_the_build_then_reuses_the_cache(small_demo, tmp_path):
    from filelock import FileLock

    from core.data.cache import _build, cache_key

    index = scan_dataset(small_demo)
    key = cache_key(index, 64)
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from core.data.cache import build_cache;"
              "from core.data.scan import scan_dataset; events = [];"
              "build_cache(scan_dataset(sys.argv[2]), 64, sys.argv[3], events.append);"
              "print(events[-1].message)")
    with FileLock(str(tmp_path / f"{key}.lock")):  # this process is building (as build_cache does)
        other = subprocess.Popen([sys.executable, "-c", script, str(REPO), str(small_demo),
                                  str(tmp_path)], stdout=subprocess.PIPE, text=True)
        _build(index, 64, tmp_path, key, None, None, None)
    built = build_cache(index, 64, tmp_path)
    stamp = (built.folder / "images.u8").stat().st_mtime_ns
    out, _ = other.communicate(timeout=120)
    assert other.returncode == 0 and out.strip() == "reused"  # it waited, then took ours
    assert (built.folder / "images.u8").stat().st_mtime_ns == stamp


def test_neighbours_follow_slice_numbers_across_gaps(demo_copy):
    index = scan_dataset(demo_copy)
    first = list(index.case_days().values())[0]
    gone = first[4]  # slice number 5 of the first scan disappears
    gone.path.unlink()
    index = scan_dataset(demo_copy)
    records = list(index.case_days().values())[0]
    row = {r.slice_num: i for i, r in enumerate(index.slices) if r.case_day == records[0].case_day}
    table = neighbour_rows(index, context=1)
    assert table[row[6]].tolist() == [row[6], row[6], row[7]]  # 5 is missing: not slice 4
    assert table[row[4]].tolist() == [row[3], row[4], row[4]]
    table = neighbour_rows(index, context=2)
    assert table[row[6]].tolist() == [row[4], row[6], row[8]]  # slice 4 is two below 6
    assert table[row[7]].tolist() == [row[6], row[7], row[9]]  # 5 is missing: 6, not 4
    valid = np.ones(len(index.slices), bool)
    valid[row[8]] = False  # a slice that failed to decode is nobody's neighbour
    table = neighbour_rows(index, context=1, valid=valid)
    assert table[row[7]].tolist() == [row[6], row[7], row[7]]
    assert table[row[9]].tolist() == [row[9], row[9], row[10]]
