"""ONNX export of a trained run, checked with onnxruntime against the PyTorch model; predict with it."""

import json
import shutil

import numpy as np
import onnx
import pytest

import main
from core.data.scan import scan_dataset
from core.engines import (METADATA_KEY, ONNX_FILE, available_engines, fastest_engine,
                          load_for_engine, read_metadata, verify_onnx)
from core.errors import StudioError
from core.export import read_submission
from core.predict import Predictor, load_model, tuned_postprocess


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main.main(["export-onnx", "--run", str(trained_run[0]), "--out", str(out)]) == 0
    return trained_run[0], out


def test_the_export_has_a_dynamic_batch_and_the_preprocessing(exported):
    run_dir, path = exported
    graph = onnx.load(str(path)).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert graph.input[0].name == "pixel_values" and dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [3, 96, 96]
    meta = read_metadata(path)
    assert meta["image_size"] == 96 and meta["context"] == 2 and meta["mode"] == "multilabel"
    assert meta["organs"] == ["large_bowel", "small_bowel", "stomach"]
    assert len(meta["mean"]) == 3 and meta["intensity"]["per"] == "scan"
    # the run's tuned post-processing travels with the file (trained_run finished, so it is tuned)
    assert meta["postprocess"] == tuned_postprocess(run_dir).to_dict()
    assert load_for_engine(path, "cpu").postprocess == tuned_postprocess(run_dir)
    assert json.loads(next(p.value for p in onnx.load(str(path)).metadata_props
                           if p.key == METADATA_KEY)) == meta


def test_onnxruntime_matches_torch(exported):
    run_dir, path = exported
    for batch in (1, 5):
        assert verify_onnx(run_dir, path, batch=batch, seed=batch) < 1e-4


def test_predict_with_onnxruntime_matches_the_torch_prediction(exported, demo_dataset, tmp_path):
    run_dir, path = exported
    index = scan_dataset(demo_dataset)
    # Plain thresholding: the run's tuned size rules (an organ dropped from a slice under N px)
    # would turn a float-rounding difference at one pixel into a whole slice's difference.
    torch_result = Predictor(load_model(run_dir, "cpu"), index,
                             postprocess=None).predict_case_day("case1_day10")
    onnx_result = Predictor(load_for_engine(path, "cpu"), index,
                            postprocess=None).predict_case_day("case1_day10")
    difference = max(np.abs(a.astype(np.float32) - b.astype(np.float32)).max()
                     for a, b in zip(torch_result.probabilities, onnx_result.probabilities))
    assert difference < 2e-3  # float16 storage of the probabilities
    agree = np.mean([(a == b).mean() for a, b in zip(torch_result.masks, onnx_result.masks)])
    assert agree > 0.9999
    # Through the command line, from the run folder: the run's model.onnx is exported on first use
    # (in a copy of the run, so the shared run stays as training left it).
    run_dir = shutil.copytree(run_dir, tmp_path / "run")
    out = tmp_path / "submission.csv"
    assert main.main(["predict", "--run", str(run_dir), "--data", str(demo_dataset), "--out",
                      str(out), "--ids", "case1_day10", "--engine", "onnxruntime"]) == 0
    assert (run_dir / ONNX_FILE).is_file()
    submission = read_submission(out, {r.id: r.shape for r in index.slices},
                                 [r.id for r in torch_result.records])
    tuned = Predictor(load_for_engine(path, "cpu"), index).predict_case_day("case1_day10")
    for record, masks in zip(tuned.records, tuned.masks):  # with the run's tuned rules
        assert (submission.masks(record.id) == masks).all()


def test_engines_and_bad_onnx_files(tmp_path, capsys):
    assert available_engines() == ["torch", "onnxruntime"]
    assert fastest_engine("cpu").name == "torch"
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(StudioError, match="cannot load ONNX model"):
        load_for_engine(bad, "cpu")
    assert main.main(["predict", "--checkpoint", str(bad), "--data", str(tmp_path), "--out",
                      str(tmp_path / "s.csv")]) == 2
    assert "broken.onnx" in capsys.readouterr().err


def test_the_engine_benchmark_runs(small_demo, tmp_path):
    from benchmarks import inference

    rows = inference.compare_engines(small_demo, tmp_path / "cache", image_size=64, batch_size=4,
                                     repeats=1, engines=["torch eager", "onnxruntime"],
                                     work_dir=tmp_path)
    assert [r["engine"] for r in rows] == ["torch eager", "onnxruntime"]
    assert all(r["s"] > 0 and r["slices"] == 12 for r in rows)
    assert rows[1]["agree"] > 0.999
    assert "ratio vs eager" in inference.compare_report(rows)
