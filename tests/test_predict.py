"""predict → submission.csv → evaluate on a model trained on the demo data, through the CLI too."""

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.data.scan import load_masks, scan_dataset
from core.errors import StudioError
from core.events import Progress
from core.export import read_mask_png
from core.predict import Predictor, default_batch_size, load_model
from core.runs import RunFolder
from tests.conftest import REPO


@pytest.fixture(scope="module")
def predictions(trained_run, demo_dataset):
    run_dir = trained_run[0]
    index = scan_dataset(demo_dataset)
    predictor = Predictor(load_model(run_dir, "cpu"), index)
    non_square = next(r.case_day for r in index.slices if r.width != r.height)
    events = []
    return index, list(predictor.predict_all(["case1_day10", non_square], events.append)), events


def test_the_best_checkpoint_is_the_one_run_json_names(trained_run):
    run = RunFolder(trained_run[0])
    info = run.info()
    assert info.monitor == "val_score" and info.best_checkpoint.startswith("best-")
    assert run.best_checkpoint() == run.checkpoint_dir / info.best_checkpoint
    assert load_model(run.path, "cpu").source == run.best_checkpoint()
    # The best is the best: no validation of the run scored higher than the one recorded.
    scores = [r["val_score"] for r in run.metric_rows() if "val_score" in r]
    assert info.best_score == pytest.approx(max(scores), abs=1e-5)


def test_masks_come_back_at_the_original_size_and_match(predictions):
    index, results, events = predictions
    for result in results:
        truth = np.stack([load_masks(r) for r in result.records])
        masks = result.stacked_masks()
        assert masks.shape == truth.shape and masks.dtype == bool
        dice = 2 * (masks & truth).sum() / (masks.sum() + truth.sum())
        assert dice > 0.6, (result.case_day, dice)
    assert events[-1] == Progress("predict", 72, 72, results[-1].case_day)


def test_non_square_slices_keep_their_orientation(predictions):
    _, results, _ = predictions
    result = next(r for r in results if r.records[0].width != r.records[0].height)
    height, width = result.records[0].shape
    assert (height, width) == (310, 360)
    stomach_pred = result.stacked_masks()[:, 2].sum(0)
    stomach_truth = np.stack([load_masks(r)[2] for r in result.records]).sum(0)
    ys, xs = np.nonzero(stomach_pred)
    ty, tx = np.nonzero(stomach_truth)
    # The demo's stomach sits in the top-right quadrant; the prediction must sit there too.
    assert ys.mean() < height / 2 and xs.mean() > width / 2
    assert abs(ys.mean() - ty.mean()) < 10 and abs(xs.mean() - tx.mean()) < 10


def test_flip_tta_gives_masks_as_good(trained_run, demo_dataset):
    index = scan_dataset(demo_dataset)
    model = load_model(trained_run[0] / "model", "cpu")  # the save_pretrained form
    plain = Predictor(model, index).predict_case_day("case1_day10")
    flipped = Predictor(model, index, tta=True).predict_case_day("case1_day10")
    truth = np.stack([load_masks(r) for r in plain.records])

    def dice(m):
        return 2 * (m & truth).sum() / (m.sum() + truth.sum())

    assert not np.array_equal(np.stack(plain.probabilities), np.stack(flipped.probabilities))
    assert dice(flipped.stacked_masks()) > dice(plain.stacked_masks()) - 0.03


def test_cancel_and_unknown_case_day(trained_run, demo_dataset):
    predictor = Predictor(load_model(trained_run[0], "cpu"), scan_dataset(demo_dataset))
    with pytest.raises(StudioError, match="case99_day1"):
        list(predictor.predict_all(["case99_day1"]))
    with pytest.raises(StudioError, match="cancelled"):
        predictor.predict_case_day("case1_day10", cancel=lambda: True)


def test_predict_then_evaluate_through_the_cli(trained_run, demo_dataset, tmp_path):
    out, masks_dir = tmp_path / "sub mission.csv", tmp_path / "masks"
    done = subprocess.run(
        [sys.executable, "main.py", "predict", "--run", str(trained_run[0]), "--data",
         str(demo_dataset), "--out", str(out), "--masks-dir", str(masks_dir), "--overlays",
         "--ids", "case1_day10"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "id,class,predicted" and len(lines) == 1 + 36 * 3
    assert [line.split(",")[1] for line in lines[1:4]] == ["large_bowel", "small_bowel", "stomach"]
    assert len(list(masks_dir.glob("*_overlay.png"))) == 36
    mask = read_mask_png(masks_dir / "case1_day10_slice_0018.png")
    assert mask.shape == (3, 266, 266)

    scored = subprocess.run(
        [sys.executable, "main.py", "evaluate", "--data", str(demo_dataset), "--submission",
         str(out), "--ids", "case1_day10", "--json"], cwd=REPO, capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr
    result = json.loads(scored.stdout)
    assert result["slices"] == 36 and result["dice"] > 0.6 and 0 <= result["hausdorff"] < 0.5


def test_predict_cli_errors_are_one_line(tmp_path, small_demo):
    done = subprocess.run([sys.executable, "main.py", "predict", "--run", str(tmp_path), "--data",
                           str(small_demo), "--out", str(tmp_path / "s.csv")], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: '{tmp_path}' has no checkpoints; train a model first (or pick the run's model/ "
        "folder)"]


def test_a_case_day_with_slices_of_two_sizes_is_predicted_at_each_size(trained_run, demo_copy,
                                                                       tmp_path, capsys):
    import csv
    import shutil

    from main import main

    index = scan_dataset(demo_copy)
    groups = index.case_days()
    square = next(c for c, rs in groups.items() if rs[0].width == rs[0].height)
    other = next(r for r in index.slices if r.shape != groups[square][0].shape)
    last = groups[square][-1]
    number = last.slice_num + 1
    moved = last.path.with_name(f"slice_{number:04d}_{other.width}_{other.height}_1.50_1.50.png")
    shutil.copy(other.path, moved)
    new_id = f"case{last.case}_day{last.day}_slice_{number:04d}"
    with open(demo_copy / "train.csv", "a", newline="") as fh:
        csv.writer(fh).writerows([new_id, organ, other.rles[organ]] for organ in other.rles)
    masks_dir = tmp_path / "masks"
    code = main(["predict", "--run", str(trained_run[0]), "--data", str(demo_copy), "--out",
                 str(tmp_path / "s.csv"), "--masks-dir", str(masks_dir), "--ids", square])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"warning: {square} has slices of 2 sizes" in captured.err
    assert read_mask_png(masks_dir / f"{new_id}.png").shape == (3, other.height, other.width)
    assert read_mask_png(masks_dir / f"{last.id}.png").shape == (3, last.height, last.width)
    assert any(p.where == square and "2 sizes" in p.message
               for p in scan_dataset(demo_copy).report.problems)  # the scan report says so too


def test_the_batch_size_follows_the_device_unless_given():
    """CPU batch 4 (measured fastest on 2 cores, benchmarks/RESULTS.md 4b), 16 on a GPU."""
    index = SimpleNamespace(slices=[])

    def on(device):
        return SimpleNamespace(device=torch.device(device), postprocess=None)

    assert Predictor(on("cpu"), index).batch_size == 4 == default_batch_size("cpu")
    assert Predictor(on("cuda"), index).batch_size == 16 == default_batch_size(torch.device("cuda"))
    assert Predictor(on("cpu"), index, batch_size=9).batch_size == 9
