"""Quality of the recipe on the demo data: one fold against the tuned k-fold ensemble.

    python benchmarks/quality.py [--folds 3] [--epochs 8] [--image-size 96] [--test-cases 3]

Same seed, same settings for every row; the only differences are the ones named. A fold group of
``--folds`` folds trains on the demo dataset (6 cases, 8 case-days); fold 0 of it *is* the single-fold
run (same config, same seed, same data), so the single fold costs no extra training. Rows:

* single fold, untuned / tuned (its post-processing searched on its own validation case-days, as a
  finished single run does with ``train.tune_postprocess``);
* k-fold ensemble (the folds' probabilities averaged), untuned / tuned on the out-of-fold
  predictions (``cv.json``), each with and without flip TTA;
* with ``--extras``: fold 0 again with an EMA of the weights (``train.ema``, the decay
  ``ema_warning`` suggests for the run's length) and with early stopping
  (``train.early_stop_patience=2``, twice the epochs), untuned — whether either should become a
  default.

Two scores per row: **validation** (the single fold on its validation cases; the ensemble
out-of-fold, every case scored by the fold that never saw it — the goal compares these) and
**held-out test** (a second demo dataset generated with another seed, never trained or tuned on;
every model is scored on it the same way). Competition score, Dice and 3-D Hausdorff as
``core.metrics`` defines them; CPU minutes of training + tuning for each model.

The goal (issue 14) is printed as three ratios of the tuned ensemble over the single untuned fold.
Two compare the same cases: **out-of-fold** (every case-day scored by a model that never saw it —
for the ensemble that is its member that left it out, the nnU-Net convention — tuned over untuned)
and **held-out test** (the tuned ensemble over the single untuned fold on the unseen cases). The
third, as the issue first put it, is the tuned out-of-fold score over the single fold's validation
score: those are different case-days (the whole dataset against one fold's), so on a dataset this
small it mostly measures which cases fell in fold 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import header, make_demo, markdown_table, quiet, scratch_home  # noqa: E402
from core.config import StudioConfig, apply_overrides  # noqa: E402
from core.cv import FoldGroup, FoldGroupSession  # noqa: E402
from core.data.demo import generate_demo_dataset  # noqa: E402
from core.data.scan import load_masks, scan_dataset  # noqa: E402
from core.metrics import ScoreAccumulator  # noqa: E402
from core.postprocess import PostProcess, apply  # noqa: E402
from core.predict import Predictor, load_group, load_model  # noqa: E402
from core.runs import RunFolder  # noqa: E402
from core.session import TrainingSession  # noqa: E402
from core.tuning import tune_run, validation_predictions  # noqa: E402


def settings(folds: int, epochs: int, image_size: int) -> StudioConfig:
    return apply_overrides(StudioConfig(), [
        f"data.image_size={image_size}", f"data.num_folds={folds}", "train.batch_size=8",
        f"train.epochs={epochs}", "train.lr=1e-3", "train.log_every_n_steps=10",
        "train.device=cpu", "model.variant=b0"])


def score_predictions(predictions, post) -> dict:
    scores = ScoreAccumulator()
    for name, probs, truth in predictions:
        scores.add_case_day(name, apply(probs, post), truth)
    return scores.result().to_dict()


def score_test(model, index, cache_root: Path, post, tta: bool) -> dict:
    """``model`` on every case-day of the held-out ``index``, with ``post`` (None: plain 0.5)."""
    predictor = Predictor(model, index, tta=tta, cache_root=cache_root, postprocess=None)
    predictions = [(result.case_day, np.stack(result.probabilities),
                    np.stack([load_masks(r) for r in result.records]))
                   for result in predictor.predict_all()]
    return score_predictions(predictions, post)


def extra_run(name: str, overrides: list[str], folds: int, epochs: int, image_size: int, data,
              runs: Path, cache: Path, train_index, test_index) -> dict:
    """Fold 0 trained alone with ``overrides`` (untuned), scored as the single-fold rows are."""
    config = apply_overrides(settings(folds, epochs, image_size),
                             ["train.tune_postprocess=false", *overrides])
    started = time.process_time()
    result = TrainingSession(config, data, runs / name, cache_root=cache).run()
    cpu = time.process_time() - started
    run = RunFolder(runs / name)
    validation = score_predictions(list(validation_predictions(run, train_index, cache)), None)
    model = load_model(run.path, "cpu")
    return {"model": name, "tta": False, "validation": validation,
            "test": score_test(model, test_index, cache, None, False), "cpu_minutes": cpu / 60,
            "reason": result.reason}


def measure(folds: int, epochs: int, image_size: int, test_cases: int, cases: int = 6,
            slices_per_scan: int = 36, extras: bool = False) -> dict:
    quiet()
    with scratch_home() as home:
        data, _ = make_demo(home, cases=cases, slices_per_scan=slices_per_scan, seed=0)
        test_dir = generate_demo_dataset(home / "test", cases=test_cases,
                                         slices_per_scan=slices_per_scan, seed=101)
        cache = home / "cache"
        train_index, test_index = scan_dataset(data), scan_dataset(test_dir)
        group_dir = home / "runs" / "group"
        started = time.process_time()
        FoldGroupSession(settings(folds, epochs, image_size), data, group_dir,
                         cache_root=cache).run()
        group_cpu = time.process_time() - started
        group = FoldGroup(group_dir)
        cv = group.cv()
        fold0 = group.fold_run(0)
        tuning_started = time.process_time()
        record = tune_run(fold0, train_index, cache)
        tune_cpu = time.process_time() - tuning_started
        fold0_post = PostProcess.from_dict(fold0.model_meta()["postprocess"])
        fold0_validation = list(validation_predictions(fold0, train_index, cache))
        group_post = PostProcess.from_dict(cv["postprocess"])
        single_cpu = group_cpu / folds  # the folds train alike; fold 0's share of the group
        single, ensemble = load_model(fold0.path, "cpu"), load_group(group_dir, "cpu")
        rows = []
        for name, model, post, validation, cpu in (
                ("single fold, untuned", single, None,
                 score_predictions(fold0_validation, None), single_cpu),
                ("single fold, tuned", single, fold0_post,
                 score_predictions(fold0_validation, fold0_post), single_cpu + tune_cpu),
                (f"{folds}-fold ensemble, untuned", ensemble, None, cv["oof"], group_cpu),
                (f"{folds}-fold ensemble, tuned", ensemble, group_post, cv["oof_tuned"], group_cpu)):
            for tta in (False, True):
                test = score_test(model, test_index, cache, post, tta)
                rows.append({"model": name, "tta": tta, "validation": validation, "test": test,
                             "cpu_minutes": cpu / 60})
        if extras:
            from core.session import ema_warning

            steps = fold0.info().step
            decay = round(max(0.9, 1 - 3 / max(1, steps)), 3)  # what ema_warning suggests
            assert ema_warning(decay, steps) is None or decay == 0.9
            rows.append(extra_run(f"single fold, EMA {decay}", ["train.ema=true",
                                  f"train.ema_decay={decay}"], folds, epochs, image_size, data,
                                  home / "runs", cache, train_index, test_index))
            rows.append(extra_run("single fold, early stop (patience 2, 2× epochs)",
                                  ["train.early_stop_patience=2"], folds, 2 * epochs, image_size,
                                  data, home / "runs", cache, train_index, test_index))
        return {"rows": rows, "fold0_tuning": record, "cv": cv, "folds": folds,
                "validation_case_days": {"single": len(fold0_validation),
                                         "ensemble": cv["case_days"]},
                "test_case_days": len(test_index.case_days())}


def report(result: dict) -> tuple[str, dict[str, float]]:
    """The table and notes, and the goal's ratios (see the module docstring): ``oof``, ``test``
    and ``as_filed``."""
    def f(value, digits=4):
        return "—" if value is None else f"{value:.{digits}f}"

    rows = []
    for row in result["rows"]:
        validation = None if row["tta"] else row["validation"]
        test = row["test"]
        rows.append([row["model"], "flip" if row["tta"] else "—",
                     f(validation and validation["score"]), f(validation and validation["dice"]),
                     f(validation and validation["hausdorff"]), f(test["score"]),
                     f(test["dice"]), f(test["hausdorff"]), f(row["cpu_minutes"], 1)])
    days = result["validation_case_days"]
    table = markdown_table(["model", "TTA", "validation score", "val Dice", "val Hausdorff",
                            "test score", "test Dice", "test Hausdorff", "CPU min"], rows)
    rows_ = result["rows"]
    single, single_test = rows_[0]["validation"]["score"], rows_[0]["test"]["score"]
    untuned_oof = rows_[4]["validation"]["score"]
    tuned, tuned_test = rows_[6]["validation"]["score"], rows_[6]["test"]["score"]
    notes = (f"Validation: the single fold on its {days['single']} validation case-days; the "
             f"ensemble out-of-fold on all {days['ensemble']}. Test: {result['test_case_days']} "
             "held-out case-days (another demo seed). TTA is applied at test time only "
             "(the validation and out-of-fold predictions are without it).")
    for row in result["rows"][8:]:
        notes += f"\n{row['model']}: {row['reason']}."
    def ratio(a, b):
        return a / b if b > 0 else float("inf")

    return table + "\n\n" + notes, {"oof": ratio(tuned, untuned_oof),
                                     "test": ratio(tuned_test, single_test),
                                     "as_filed": ratio(tuned, single)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--test-cases", type=int, default=3)
    parser.add_argument("--extras", action="store_true", help="also fold 0 with EMA and with "
                        "early stopping")
    args = parser.parse_args()
    command = "python " + " ".join(["benchmarks/quality.py", *sys.argv[1:]])
    print(header("Quality: single fold against the tuned k-fold ensemble", command,
                 torch.device("cpu")))
    result = measure(args.folds, args.epochs, args.image_size, args.test_cases,
                     extras=args.extras)
    table, ratios = report(result)
    k, days = result["folds"], result["validation_case_days"]
    print(table)
    print()
    print(f"tuned {k}-fold ensemble / single untuned fold, same cases — out-of-fold on all "
          f"{days['ensemble']} case-days: {ratios['oof']:.4f}×; held-out test "
          f"({result['test_case_days']} case-days): {ratios['test']:.4f}×")
    print(f"tuned out-of-fold ({days['ensemble']} case-days) / single untuned fold validation "
          f"({days['single']} other case-days): {ratios['as_filed']:.4f}×")


if __name__ == "__main__":
    main()
