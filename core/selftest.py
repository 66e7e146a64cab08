"""``main.py --self-test``: prove in a minute that this installation (source or packaged) works.

Without opening a window (Qt's offscreen platform) and without touching the user's data (a temporary
``SEGFORMER_STUDIO_HOME``), it runs the whole product once on a tiny demo dataset:

==========  ==================================================================================
demo        ``core.data.demo.generate_demo_dataset``: 3 cases, 8 slices per scan
train       ``core.session.TrainingSession``: B0, 64 px, a few steps on the CPU; the run must
            finish and export its best model to ``model/``
predict     ``core.predict``: load the run's ``model/`` folder (``from_pretrained``) and predict
            the validation case-days at their original size
evaluate    ``core.metrics``: score those predictions against the ground truth
gui         registered by ``gui.selftest`` (``main.py`` imports it): build the main window once,
            show it, process events, close it
==========  ==================================================================================

It prints ``self-test: <stage> ok (<seconds> s)`` per stage and a final line, and returns 0 only if
every stage worked. A failed stage prints its error (and the traceback on stderr); stages that
needed its result are reported as skipped, independent ones still run, and the result is 1.

The packaged program runs exactly this code, so CI runs it on the built folder to catch what
PyInstaller missed (hidden imports, data files, Qt plugins) — see ``packaging/``.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

PREFIX = "self-test:"
STAGES = ("demo", "train", "predict", "evaluate")
"""The engine's stages; ``register_stage`` adds others (``gui.selftest`` adds ``gui``)."""
NEEDS = {"train": "demo", "predict": "train", "evaluate": "predict"}

# Settings of the tiny training run: 2 training cases (16–24 slices) at batch 4 make one short epoch,
# so validation runs and the best model is exported, in a few seconds on one CPU core.
TRAIN_OVERRIDES = ["data.image_size=64", "data.num_folds=3", "train.epochs=1", "train.max_steps=6",
                   "train.batch_size=4", "train.log_every_n_steps=2", "train.device=cpu",
                   "train.num_workers=0"]


def _say(line: str, stream=None) -> None:
    print(f"{PREFIX} {line}", file=stream or sys.stdout, flush=True)


class _Context:
    def __init__(self, root: Path):
        self.root = root
        self.data_dir = root / "demo"
        self.run_dir = root / "home" / "runs" / "self-test"
        self.cache_root = root / "home" / "cache"
        self.predictions: list = []
        self.index = None


# -- stages ------------------------------------------------------------------------------------
def stage_demo(ctx: _Context) -> str:
    from core.data.demo import generate_demo_dataset

    generate_demo_dataset(ctx.data_dir, cases=3, slices_per_scan=8)
    images = list((ctx.data_dir / "train").rglob("*.png"))
    if not images or not (ctx.data_dir / "train.csv").is_file():
        raise RuntimeError(f"the demo dataset in '{ctx.data_dir}' has no images or no train.csv")
    return f"{len(images)} slices"


def stage_train(ctx: _Context) -> str:
    from core.config import StudioConfig, apply_overrides
    from core.events import TrainingStep
    from core.session import TrainingSession

    steps = []
    config = apply_overrides(StudioConfig(), TRAIN_OVERRIDES)
    session = TrainingSession(config, ctx.data_dir, ctx.run_dir, cache_root=ctx.cache_root,
                              on_event=lambda e: steps.append(e) if isinstance(e, TrainingStep)
                              else None)
    result = session.run()
    if result.status != "finished":
        raise RuntimeError(f"training ended '{result.status}': {result.reason}")
    if not steps or not all(math.isfinite(s.loss) for s in steps):
        raise RuntimeError(f"training reported no finite losses ({[s.loss for s in steps]})")
    for needed in ("model/config.json", "model/studio.json", "checkpoints/last.ckpt"):
        if not (ctx.run_dir / needed).is_file():
            raise RuntimeError(f"the run folder has no {needed}")
    return (f"{len(steps)} steps, loss {steps[-1].loss:.3f}, best {result.monitor} "
            f"{result.best_score or 0:.3f}")


def stage_predict(ctx: _Context) -> str:
    import numpy as np

    from core.data.scan import scan_dataset
    from core.predict import Predictor, load_model

    model = load_model(ctx.run_dir / "model", device="cpu")  # the save_pretrained folder
    ctx.index = scan_dataset(ctx.data_dir)
    predictor = Predictor(model, ctx.index, batch_size=8, cache_root=ctx.cache_root)
    # The validation case-days are the ones the model did not see; any case-days will do otherwise.
    val_cases = set(_validation_cases(ctx))
    groups = ctx.index.case_days()
    chosen = [c for c, records in groups.items() if records[0].case in val_cases] or list(groups)[:1]
    ctx.predictions = list(predictor.predict_all(chosen))
    slices = 0
    for pred in ctx.predictions:
        height, width = pred.records[0].shape
        masks = pred.stacked_masks()
        if masks.shape != (len(pred.records), 3, height, width) or masks.dtype != bool:
            raise RuntimeError(f"{pred.case_day}: masks of shape {masks.shape} "
                               f"({masks.dtype}), expected ({len(pred.records)}, 3, {height}, "
                               f"{width}) bool")
        if not np.isfinite(np.stack(pred.probabilities).astype(np.float32)).all():
            raise RuntimeError(f"{pred.case_day}: non-finite probabilities")
        slices += len(pred.records)
    return f"{len(ctx.predictions)} case-days, {slices} slices"


def _validation_cases(ctx: _Context) -> list[int]:
    from core.data.datamodule import split_for
    from core.runs import RunFolder

    return sorted(split_for(ctx.index, RunFolder(ctx.run_dir).config())[1])


def stage_evaluate(ctx: _Context) -> str:
    import numpy as np

    from core.data.scan import load_masks
    from core.metrics import ScoreAccumulator

    scores = ScoreAccumulator()
    for pred in ctx.predictions:
        truth = np.stack([load_masks(r) for r in pred.records])
        scores.add_case_day(pred.case_day, pred.stacked_masks(), truth)
    result = scores.result()
    values = {"dice": result.dice, "hausdorff": result.hausdorff, "score": result.score}
    bad = {k: v for k, v in values.items() if not (math.isfinite(v) and 0.0 <= v <= 1.0)}
    if bad or result.slices == 0:
        raise RuntimeError(f"scores out of range: {values}, {result.slices} slices")
    return f"dice {result.dice:.3f}, hausdorff {result.hausdorff:.3f}, score {result.score:.3f}"


STAGE_FUNCTIONS: dict[str, Callable[[_Context], str]] = {
    "demo": stage_demo, "train": stage_train, "predict": stage_predict,
    "evaluate": stage_evaluate,
}


def register_stage(name: str, function: Callable[[_Context], str], needs: str | None = None) -> None:
    """Add a stage from a layer above the engine (the window's, from ``gui.selftest``): it runs after
    the engine's stages. The engine never imports those layers itself."""
    global STAGES
    STAGE_FUNCTIONS[name] = function
    if needs:
        NEEDS[name] = needs
    if name not in STAGES:
        STAGES = STAGES + (name,)


# -- driver ------------------------------------------------------------------------------------
def _header() -> str:
    from core import __version__

    frozen = "packaged" if getattr(sys, "frozen", False) else "source"
    return (f"SegFormer Studio {__version__} ({frozen}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.machine()}")


def run_self_test(stages: tuple[str, ...] | None = None) -> int:
    """Run the stages; print one line each and a final line. Returns the exit code (0 = all ok)."""
    stages = STAGES if stages is None else stages
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="segformer-studio-selftest-"))
    saved_env = {k: os.environ.get(k) for k in ("SEGFORMER_STUDIO_HOME", "QT_QPA_PLATFORM")}
    # Everything (cache, runs, logs) goes to the temporary folder, never the user's data folder.
    os.environ["SEGFORMER_STUDIO_HOME"] = str(root / "home")
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    ctx = _Context(root)
    failed: list[str] = []
    skipped: list[str] = []
    try:
        _say(_header())
        for name in stages:
            needed = NEEDS.get(name)
            if needed and (needed in failed or needed in skipped):
                skipped.append(name)
                _say(f"{name} skipped (needs {needed})")
                continue
            t0 = time.perf_counter()
            try:
                detail = STAGE_FUNCTIONS[name](ctx)
            except BaseException as exc:  # noqa: BLE001 - report every failure, even SystemExit
                if isinstance(exc, KeyboardInterrupt):
                    raise
                failed.append(name)
                _say(f"{name} FAILED ({time.perf_counter() - t0:.1f} s): "
                     f"{type(exc).__name__}: {exc}")
                traceback.print_exc(file=sys.stderr)
                sys.stderr.flush()
                continue
            _say(f"{name} ok ({time.perf_counter() - t0:.1f} s) - {detail}")
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        ctx.predictions, ctx.index = [], None
        gc.collect()  # release the cache's memory maps, or Windows cannot delete their files
        shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - started
    if failed or skipped:
        _say(f"FAILED in {total:.1f} s: {', '.join(failed)} failed"
             + (f", {', '.join(skipped)} skipped" if skipped else ""))
        return 1
    _say(f"passed: {len(stages)} stages in {total:.1f} s")
    return 0
