"""Corrections: masks kept apart from the dataset (train.csv format), read by scan, train and
evaluate; the dataset folder is never written; a training run keeps its own copy."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from core import paths
from core.data import ORGANS
from core.data.cache import build_cache, cache_key
from core.data.corrections import (Corrections, dataset_folder_name, export_corrected_train_csv)
from core.data.rle import rle_decode, rle_encode
from core.data.scan import load_masks, scan_dataset
from core.errors import DatasetError
from core.runs import RunFolder
from main import main


def _fingerprint(folder) -> str:
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def _erase(index, organ: str, count: int, path) -> tuple[Corrections, list[str]]:
    """Corrections that erase ``organ`` on the first ``count`` slices that have it."""
    corrections = Corrections(path)
    erased = []
    for record in index.slices:
        if record.rles and record.rles[organ] and len(erased) < count:
            corrections.set_slice(record.id, {**record.rles, organ: ""})
            erased.append(record.id)
    return corrections, erased


def test_a_correction_round_trips_and_the_file_is_train_csv(tmp_path, small_demo):
    index = scan_dataset(small_demo)
    record = next(r for r in index.slices if r.rles["stomach"])
    mask = np.zeros(record.shape, bool)
    mask[10:14, 20:23] = True  # a 4×3 block: the brush's pixels, exactly
    corrections = Corrections(tmp_path / "c" / "corrections.csv")
    corrections.set_slice(record.id, {"stomach": rle_encode(mask)})
    rows = corrections.rows()
    assert set(rows) == {record.id} and rows[record.id]["large_bowel"] == ""
    assert np.array_equal(rle_decode(rows[record.id]["stomach"], record.shape), mask)
    lines = corrections.path.read_text().splitlines()
    assert lines[0] == "id,class,segmentation" and len(lines) == 4
    assert [line.split(",")[1] for line in lines[1:]] == list(ORGANS)
    corrections.set_reviewed(record.id)
    assert corrections.reviewed() == {record.id}
    corrections.remove_slice(record.id)
    assert corrections.rows() == {} and corrections.reviewed() == {record.id}
    corrections.set_reviewed(record.id, False)
    assert corrections.reviewed() == set()


def test_each_dataset_has_its_own_folder_in_the_user_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGFORMER_STUDIO_HOME", str(tmp_path / "home"))
    a, b = Corrections.for_dataset(tmp_path / "data"), Corrections.for_dataset(tmp_path / "other" / "data")
    assert a.path.parent != b.path.parent
    assert a.path.is_relative_to(tmp_path / "home" / "corrections")
    assert dataset_folder_name(tmp_path / "data").startswith("data-")


def test_scan_reads_corrections_and_leaves_the_dataset_alone(tmp_path, small_demo):
    before = _fingerprint(small_demo)
    plain = scan_dataset(small_demo)
    corrections, erased = _erase(plain, "stomach", 3, tmp_path / "corrections.csv")
    corrections.set_slice("case99_day1_slice_0001", {})  # an id the dataset does not have
    index = scan_dataset(small_demo, corrections=corrections.path)
    assert index.report.corrected == 3 and index.report.to_dict()["corrected"] == 3
    assert any("case99_day1_slice_0001" in p.where and "correction ignored" in p.message
               for p in index.report.problems)
    by_id, plain_by_id = index.by_id(), plain.by_id()
    for sid in erased:
        assert by_id[sid].rles["stomach"] == "" and plain_by_id[sid].rles["stomach"]
        assert by_id[sid].rles["small_bowel"] == plain_by_id[sid].rles["small_bowel"]
    untouched = [r.id for r in plain.slices if r.id not in erased]
    assert all(by_id[s].rles == plain_by_id[s].rles for s in untouched)
    assert index.report.slices_with["stomach"] == plain.report.slices_with["stomach"] - 3
    # A changed correction is a new cache (keyed by every slice's masks), with the erased masks.
    assert cache_key(index, 64) != cache_key(plain, 64)
    cache = build_cache(index, 64, tmp_path / "cache")
    rows = [index.slices.index(by_id[s]) for s in erased]
    assert not cache.unpack_masks(rows)[:, ORGANS.index("stomach")].any()
    assert _fingerprint(small_demo) == before


def test_a_damaged_corrections_file_names_the_file_and_row(tmp_path, small_demo):
    path = tmp_path / "corrections.csv"
    path.write_text("id,class,segmentation\ncase1_day1_slice_0001,liver,1 2\n")
    with pytest.raises(DatasetError, match=r"corrections\.csv.*row 2.*liver"):
        scan_dataset(small_demo, corrections=path)
    record = scan_dataset(small_demo).slices[0]
    path.write_text(f"id,class,segmentation\n{record.id},stomach,1 999999999\n")
    with pytest.raises(DatasetError, match=f"{record.id}.*fix or delete the file"):
        scan_dataset(small_demo, corrections=path)


def test_the_corrected_train_csv_gives_the_same_masks(tmp_path, demo_copy):
    plain = scan_dataset(demo_copy)
    corrections, erased = _erase(plain, "large_bowel", 2, tmp_path / "corrections.csv")
    index = scan_dataset(demo_copy, corrections=corrections.path)
    out = export_corrected_train_csv(index, tmp_path / "train.csv")
    (demo_copy / "train.csv").write_bytes(out.read_bytes())  # used elsewhere: as the labels
    again = scan_dataset(demo_copy).by_id()
    for record in index.slices:
        assert np.array_equal(load_masks(again[record.id]), load_masks(record)), record.id


def test_train_with_corrections_trains_on_the_erased_masks(tmp_path, small_demo, capsys):
    """The CLI round trip: one organ erased on several slices, seen by scan and by the training."""
    plain = scan_dataset(small_demo)
    corrections, erased = _erase(plain, "small_bowel", 4, tmp_path / "mine.csv")
    assert main(["scan", str(small_demo), "--corrections", str(corrections.path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["corrected"] == 4
    assert report["slices_with"]["small_bowel"] == plain.report.slices_with["small_bowel"] - 4
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(small_demo), "--run-dir", str(run_dir), "--corrections",
                 str(corrections.path), "--set", "train.epochs=1", "--set", "data.image_size=64",
                 "--set", "data.num_folds=2", "--set", "train.tune_postprocess=false"]) == 0
    run = RunFolder(run_dir)
    assert run.info().corrections == str(corrections.path.resolve())
    assert run.info().corrected_slices == 4
    assert run.corrections_path.read_bytes() == corrections.path.read_bytes()
    # The cache the run trained with is the corrected one: a later edit of the original file does
    # not change what a resume of this run reads (its own copy).
    corrections.remove_slice(erased[0])
    index = scan_dataset(small_demo, corrections=run.corrections_path)
    assert index.report.corrected == 4
    assert (paths.cache_dir() / cache_key(index, 64)).is_dir()  # what training built and read
    cache = build_cache(index, 64, tmp_path / "cache")
    rows = [i for i, r in enumerate(index.slices) if r.id in erased]
    assert not cache.unpack_masks(rows)[:, ORGANS.index("small_bowel")].any()
    assert main(["train", "--resume", "--run-dir", str(run_dir), "--corrections", "x.csv"]) == 2
    assert "drop --config, --folds, --corrections and --from-run" in capsys.readouterr().err
