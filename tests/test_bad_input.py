"""Bad input of every kind ends in one ``error:`` line and exit code 2 (or a reported problem), never a
traceback, a hang or silently wrong data — through ``main.main`` as the command line runs it."""

from __future__ import annotations

import csv
import os
import struct
import zlib

import pytest

from core.data.scan import scan_dataset
from main import main


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("WARNING:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("content, expected", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, "not UTF-8 text"),
    ("id,class,segmentation\ncase1_day1_slice_0001,stomach,1 2\ncase1_day1_slice_0002,"
     "estómago,1 2\n".encode("latin-1"), "not UTF-8 text"),
    (b"id,class,segmentation\ncase1_day1_slice_0001,stomach,1\x002\n", "contains NUL bytes"),
])
def test_a_train_csv_that_is_not_utf8_text_is_one_error(demo_copy, capsys, content, expected):
    (demo_copy / "train.csv").write_bytes(content)
    assert main(["scan", str(demo_copy)]) == 2
    line = one_error_line(capsys)
    assert "train.csv" in line and expected in line


@pytest.mark.parametrize("content, expected", [
    (bytes(range(256)) * 8, "not UTF-8 text"),
    ("id,class,predicted\ncase1_day1_slice_0001,stomach,1 2 ñ\n".encode("latin-1"),
     "not UTF-8 text"),
    (b"id,class,predicted\ncase1_day1_slice_0001,stomach,\x00\n", "contains NUL bytes"),
])
def test_a_submission_that_is_not_utf8_text_is_one_error(small_demo, tmp_path, capsys, content,
                                                         expected):
    path = tmp_path / "submission.csv"
    path.write_bytes(content)
    assert main(["evaluate", "--data", str(small_demo), "--submission", str(path)]) == 2
    line = one_error_line(capsys)
    assert "submission.csv" in line and expected in line


def _rewrite_rle(data_dir, slice_id: str, organ: str, rle: str) -> None:
    rows = list(csv.reader(open(data_dir / "train.csv", newline="")))
    for row in rows:
        if row[0] == slice_id and row[1] == organ:
            row[2] = rle
    with open(data_dir / "train.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


@pytest.mark.parametrize("rle, expected", [
    ("1 99999999999999999999999999", "too large for a pixel position"),
    ("9223372036854775807 9223372036854775807", "too large for a pixel position"),
    ("1099511627000 100", "runs past the image"),
])
def test_absurd_rle_numbers_are_reported_problems(demo_copy, capsys, rle, expected):
    sid = scan_dataset(demo_copy).slices[3].id
    _rewrite_rle(demo_copy, sid, "stomach", rle)
    assert main(["scan", str(demo_copy)]) == 0
    out = capsys.readouterr().out
    assert expected in out and sid in out
    assert sid not in {r.id for r in scan_dataset(demo_copy).slices}  # left out, not trained on


def test_a_png_header_claiming_a_huge_image_is_never_decoded(demo_copy, capsys):
    record = scan_dataset(demo_copy).slices[0]
    huge = record.path.with_name(f"slice_{record.slice_num:04d}_100000_100000_1.50_1.50.png")
    data = record.path.read_bytes()
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 100000, 100000, 16, 0, 0, 0, 0)
    data = data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]
    record.path.unlink()
    huge.write_bytes(data)
    assert main(["scan", str(demo_copy)]) == 0
    assert "larger than any MRI slice" in capsys.readouterr().out
    from core.data.scan import read_png16
    from core.errors import DatasetError

    with pytest.raises(DatasetError, match="claims 100000×100000 pixels"):
        read_png16(huge)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX feature")
def test_a_pipe_named_like_a_slice_does_not_hang_the_scan(demo_copy, capsys):
    folder = scan_dataset(demo_copy).slices[0].path.parent
    os.mkfifo(folder / "slice_0099_266_266_1.50_1.50.png")
    os.mkfifo(demo_copy / "not a csv.csv")
    assert main(["scan", str(demo_copy)]) == 0  # returns: the pipe was never opened
    assert "not a regular file; skipped" in capsys.readouterr().out


def test_home_that_is_a_file_and_a_run_path_past_the_os_limit(small_demo, tmp_path, capsys):
    a_file = tmp_path / "home.txt"
    a_file.write_text("")
    assert main(["--home", str(a_file), "scan", str(small_demo)]) == 2
    assert "is a file; give a folder" in one_error_line(capsys)
    too_long = tmp_path / ("x" * 300) / "run"
    assert main(["--home", str(tmp_path / "h"), "train", "--data", str(small_demo), "--run-dir",
                 str(too_long), "--set", "train.epochs=1"]) == 2
    assert "cannot create run folder" in one_error_line(capsys)


@pytest.mark.parametrize("setting, expected", [
    ("data.image_size=1e400", "data.image_size: '1e400' is not a whole number"),
    ("train.pct_start=nan", "train.pct_start: 'nan' is not a finite number"),
    ("train.lr=inf", "train.lr: 'inf' is not a finite number"),
])
def test_absurd_settings_are_one_error_naming_the_key(small_demo, tmp_path, capsys, setting,
                                                      expected):
    assert main(["train", "--data", str(small_demo), "--run-dir", str(tmp_path / "run"), "--set",
                 setting]) == 2
    assert one_error_line(capsys) == f"error: {expected}"
    assert not (tmp_path / "run").exists()


def test_a_yaml_error_is_one_line_with_file_line_and_column(small_demo, tmp_path, capsys):
    config = tmp_path / "my settings.yaml"
    config.write_text("train:\n  epochs: 3\n  lr: [0.1\n")
    assert main(["train", "--data", str(small_demo), "--run-dir", str(tmp_path / "run"),
                 "--config", str(config)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: config file '{config}' is not valid YAML at line 4, column 1")


def test_a_dataset_without_a_single_mask_is_refused(demo_copy, tmp_path, capsys):
    rows = list(csv.reader(open(demo_copy / "train.csv", newline="")))
    with open(demo_copy / "train.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0]] + [[r[0], r[1], ""] for r in rows[1:]])
    assert main(["--home", str(tmp_path / "h"), "train", "--data", str(demo_copy), "--run-dir",
                 str(tmp_path / "run"), "--set", "train.epochs=1"]) == 2
    assert one_error_line(capsys) == (f"error: no slice in '{demo_copy}' has a mask; nothing to "
                                      "learn (train.csv has only empty segmentations)")
