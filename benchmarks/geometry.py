"""Where the predicted organs sit, before and after the pixel-centre fixes (issue 12).

    python benchmarks/geometry.py [--size 128] [--epochs 8] [--seed 42]

Trains B0 on the demo data three times with the same seed and settings: (1) as before the fixes —
the cache's masks resized with OpenCV ``INTER_NEAREST`` (half a pixel off the image's grid) and the
logits upsampled like an image (``align_corners=False``); (2) masks resized as float with the
image's filter and thresholded at 0.5; (3) as now: also the logits upsampled on their own grid
(``core.model.lightning_module.upsample_logits``). For each run it reports the best validation
score during training (``val_score``, at the training size, against the cache's own masks), then
predicts the validation case-days at their original size and scores them against ``train.csv``'s
true masks with the ``evaluate`` code, and measures the mean centroid shift of the predicted organs
from the true ones (original pixels; organ masks with Dice > 0.5, as the issue measured).
``ratio=`` is the fixed run's original-size score / the old one's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import header, markdown_table, scratch_home  # noqa: E402


def image_resize_logits(logits, size):
    """The logits' upsampling before the fix: as an image resize, half a pixel grid."""
    import torch.nn.functional as F

    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def old_resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """The cache's mask resize before the fix: nearest-neighbour, half a pixel off."""
    return np.stack([cv2.resize(np.asarray(m, np.uint8), (size, size),
                                interpolation=cv2.INTER_NEAREST) for m in masks]).astype(bool)


def centroid(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([rows.mean(), cols.mean()])


def run(home: Path, data: Path, name: str, overrides: list[str]) -> list:
    from core.config import StudioConfig, apply_overrides
    from core.data.datamodule import split_for
    from core.data.scan import load_masks, scan_dataset
    from core.metrics import ScoreAccumulator
    from core.predict import Predictor, load_model
    from core.session import TrainingSession

    cache_root = home / f"cache-{name}"  # the old masks under the same key: keep them apart
    config = apply_overrides(StudioConfig(), overrides)
    started = time.process_time()
    result = TrainingSession(config, data, home / name, cache_root=cache_root).run()
    minutes = (time.process_time() - started) / 60
    index = scan_dataset(data)
    val_cases = split_for(index, config)[1]
    predictor = Predictor(load_model(home / name, "cpu"), index, cache_root=cache_root)
    scores, shifts = ScoreAccumulator(), []
    for case_day, records in index.case_days().items():
        if records[0].case not in val_cases:
            continue
        pred = predictor.predict_case_day(case_day).stacked_masks()
        truth = np.stack([load_masks(r) for r in records])
        scores.add_case_day(case_day, pred, truth)
        for p, t in zip(pred.reshape(-1, *pred.shape[2:]), truth.reshape(-1, *truth.shape[2:])):
            if p.any() and t.any() and 2 * (p & t).sum() / (p.sum() + t.sum()) > 0.5:
                shifts.append(centroid(p) - centroid(t))
    original = scores.result()
    shift = np.mean(shifts, axis=0)
    return [name, f"{result.best_score:.4f}", f"{original.score:.4f}", f"{original.dice:.4f}",
            f"{original.hausdorff:.4f}", f"{shift[0]:+.2f}", f"{shift[1]:+.2f}", len(shifts),
            f"{minutes:.1f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    from core.data import cache
    from core.data.demo import generate_demo_dataset
    from core.model import lightning_module
    from core.quiet import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(header("Mask geometry before and after the pixel-centre fix", "python benchmarks/"
                 f"geometry.py --size {args.size} --epochs {args.epochs}", torch.device("cpu")))
    overrides = [f"data.image_size={args.size}", "data.num_folds=3", "train.batch_size=8",
                 f"train.epochs={args.epochs}", "train.lr=1e-3", f"train.seed={args.seed}",
                 "train.device=cpu", "train.log_every_n_steps=10"]
    with scratch_home() as home:
        data = generate_demo_dataset(home / "demo")
        fixed_masks, fixed_logits = cache.resize_masks, lightning_module.upsample_logits
        rows = []
        try:
            cache.resize_masks = old_resize_masks
            lightning_module.upsample_logits = image_resize_logits
            rows.append(run(home, data, "1 before: nearest masks, image-resize logits",
                            overrides))
            cache.resize_masks = fixed_masks
            rows.append(run(home, data, "2 float masks, image-resize logits", overrides))
        finally:
            cache.resize_masks, lightning_module.upsample_logits = fixed_masks, fixed_logits
        rows.append(run(home, data, "3 now: float masks, logits on their grid", overrides))
    print(markdown_table(["run", "best val_score (training size)", "score at original size",
                          "Dice", "Hausdorff", "shift rows px", "shift cols px", "masks measured",
                          "CPU min"], rows))
    print(f"ratio={float(rows[-1][2]) / float(rows[0][2]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
