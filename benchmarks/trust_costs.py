"""What the safety nets cost: the cache check, atomic checkpoint writes, the validation score.

    python benchmarks/trust_costs.py [--case-days 54] [--repeats 3]

1. **Cache check** (``core.data.cache``): the CRC-32 of every block of a cache's two arrays, computed
   when a process first opens it. Timed on a real cache of the demo data and on a 512 MB array
   (the rate, MB/s, gives the time for any cache: the whole Kaggle set at 288 px is 2 × 3.2 GB).
   Baseline: reading the same bytes (what any use of the cache does once anyway).
2. **Checkpoint writes** (``core.checkpoints.AtomicCheckpointIO``): a B0 and a B2 training checkpoint
   (weights + AdamW state) written to ``.partial``, flushed to disk (fsync) and renamed, against
   Lightning's plain ``TorchCheckpointIO`` write of the same checkpoint.
3. **Validation score** (``core.model.lightning_module._CaseDayScores``): Dice, the 3-D Hausdorff
   of each case-day and the competition score of a validation fold the size of UWMGI's (54
   case-days × 144 slices) at a 256 px training size, scored case-day by case-day as validation
   does, against Dice alone (what validation computed before).

Each section prints a table and a ``ratio=`` line (safe / baseline).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import header, markdown_table, median, scratch_home  # noqa: E402
from benchmarks.metrics import synthetic_case_day  # noqa: E402


def cache_check(home: Path, repeats: int) -> None:
    from core.data import cache as cache_module
    from core.data.demo import generate_demo_dataset
    from core.data.scan import scan_dataset

    data = generate_demo_dataset(home / "demo")
    index = scan_dataset(data)
    built = cache_module.build_cache(index, 288, home / "cache")
    arrays = [np.asarray(built.images), np.asarray(built.masks)]
    demo_mb = sum(a.nbytes for a in arrays) / 1e6
    big = np.random.default_rng(0).integers(0, 256, (6472, 288, 288), dtype=np.uint8)  # 537 MB
    rows = []
    for name, data_arrays, mb in (("demo cache, 288 px (288 slices)", arrays, demo_mb),
                                  ("537 MB array (6,472 slices of 288²)", [big], None)):
        mb = mb or sum(a.nbytes for a in data_arrays) / 1e6
        check = median(_timed(lambda: [cache_module._checksums(a) for a in data_arrays])
                       for _ in range(repeats))
        read = median(_timed(lambda: [int(a.sum(dtype=np.uint64)) for a in data_arrays])
                      for _ in range(repeats))
        rows.append([name, f"{mb:.0f}", f"{check * 1e3:.1f}", f"{mb / check:.0f}",
                     f"{read * 1e3:.1f}", f"{check / read:.2f}"])
    rate = float(rows[-1][3])
    kaggle_mb = 2 * 38496 * 288 * 288 / 1e6
    print("### 1. Cache check (CRC-32 per block, once per process)\n")
    print(markdown_table(["data", "MB", "check ms", "MB/s", "read ms (baseline)",
                          "check / read"], rows))
    print(f"\nWhole Kaggle set at 288 px ({kaggle_mb / 1e3:.1f} GB): about "
          f"{kaggle_mb / rate:.1f} s when a process first opens it.")
    print(f"ratio={float(rows[-1][5]):.2f}\n")


def _timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def checkpoint_writes(folder: Path, repeats: int) -> None:
    from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

    from core.checkpoints import AtomicCheckpointIO
    from core.config import ModelConfig
    from core.model.factory import build_segformer

    rows = []
    for variant in ("b0", "b2"):
        model = build_segformer(ModelConfig(variant=variant), warn_random=False)
        optimizer = torch.optim.AdamW(model.parameters())
        model(pixel_values=torch.zeros(1, 3, 64, 64)).logits.sum().backward()
        optimizer.step()  # AdamW state exists, as in a real checkpoint
        checkpoint = {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()],
                      "global_step": 1}
        plain, atomic = [], []
        for _ in range(repeats):
            plain.append(_timed(lambda: TorchCheckpointIO().save_checkpoint(
                checkpoint, folder / "plain.ckpt")))
            atomic.append(_timed(lambda: AtomicCheckpointIO().save_checkpoint(
                checkpoint, folder / "last.ckpt")))
        size = (folder / "last.ckpt").stat().st_size / 1e6
        rows.append([variant.upper(), f"{size:.0f}", f"{median(plain) * 1e3:.0f}",
                     f"{median(atomic) * 1e3:.0f}", f"{median(atomic) / median(plain):.2f}"])
    print("### 2. Checkpoint writes (partial file, fsync, rename)\n")
    print(markdown_table(["model", "MB", "Lightning's write ms (baseline)", "atomic ms",
                          "atomic / baseline"], rows))
    print(f"ratio={float(rows[-1][4]):.2f}\n")


def validation_score(case_days: int, repeats: int) -> None:
    from core.model.lightning_module import _CaseDayScores

    rng = np.random.default_rng(0)
    fold = []
    for _ in range(case_days):
        pred, truth = synthetic_case_day(rng, 256, 256)
        fold.append((pred, truth))
    names = [f"case{i}_day1" for i in range(case_days)]
    batch = 16

    def scored():
        collector = _CaseDayScores()
        for code, (pred, truth) in enumerate(fold):
            for start in range(0, len(pred), batch):
                part = slice(start, start + batch)
                collector.add(np.full(len(pred[part]), code), pred[part], truth[part], names)
        collector.flush(names)
        return collector.scores.result().score

    def dice_only():
        total = counted = 0.0
        for pred, truth in fold:
            inter = np.count_nonzero(pred & truth, axis=(2, 3))
            sums = np.count_nonzero(pred, axis=(2, 3)) + np.count_nonzero(truth, axis=(2, 3))
            keep = sums > 0
            total += (2 * inter[keep] / sums[keep]).sum()
            counted += keep.sum()
        return total / max(counted, 1)

    full = median(_timed(scored) for _ in range(repeats))
    base = median(_timed(dice_only) for _ in range(repeats))
    slices = sum(len(p) for p, _ in fold)
    print("### 3. Validation score per validation (256 px)\n")
    print(markdown_table(["fold", "Dice only s (baseline)", "Dice + Hausdorff + score s",
                          "ms per case-day"],
                         [[f"{case_days} case-days, {slices} slices", f"{base:.2f}", f"{full:.2f}",
                           f"{full / case_days * 1e3:.0f}"]]))
    print(f"ratio={full / base:.1f}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case-days", type=int, default=54)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(header("What the safety nets cost", "python benchmarks/trust_costs.py",
                 torch.device("cpu")))
    with scratch_home() as home:
        cache_check(home, args.repeats)
        with tempfile.TemporaryDirectory(dir=home) as folder:
            checkpoint_writes(Path(folder), args.repeats)
    validation_score(args.case_days, args.repeats)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
