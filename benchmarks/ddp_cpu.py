"""Training throughput on the CPU with 1 and with 2 processes (Lightning's DDP over gloo).

    python benchmarks/ddp_cpu.py [--image-size 128] [--epochs 2] [--batch-size 4] [--threads 1]

Both train B0 on the default demo dataset with the same settings through ``main.py train``, the
product's own command, one after the other; the 2-process run is ``--set train.devices=2``. Each
process gets ``--threads`` torch threads, so the 2-process run uses twice the cores: on a 2-core
machine the gain is bounded by 2× and eaten by the gradient all-reduce and by the duplicated
validation work. Images/s are the median of the run's logged ``images_per_sec`` (all processes
together), past the first epoch's warm-up. The last line is ``ratio=<2 processes / 1 process>``.
This measures the machinery, not multi-GPU scaling (see RESULTS.md for what limits that).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import header, make_demo, markdown_table, scratch_home  # noqa: E402


def train_run(data: Path, run_dir: Path, home: Path, devices: int, image_size: int, epochs: int,
              batch_size: int, threads: int, num_folds: int = 5) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONDONTWRITEBYTECODE="1")
    env.pop("SEGFORMER_STUDIO_FAULT", None)
    args = [sys.executable, str(ROOT / "main.py"), "--home", str(home), "train", "--data",
            str(data), "--run-dir", str(run_dir), "--set", f"data.image_size={image_size}",
            "--set", f"train.epochs={epochs}", "--set", f"data.num_folds={num_folds}", "--set", f"train.batch_size={batch_size}",
            "--set", "train.device=cpu", "--set", "train.precision=32", "--set",
            "train.tune_postprocess=false", "--set", f"train.devices={devices}", "--set",
            "train.log_every_n_steps=1", "--set", "train.checkpoint_minutes=0"]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"train on {devices} process(es) failed:\n{done.stderr[-3000:]}")
    rows = list(csv.DictReader(open(run_dir / "metrics.csv", encoding="utf-8")))
    first_validation = next(int(r["step"]) for r in rows if r.get("val_score"))
    rates = [float(r["images_per_sec"]) for r in rows
             if r.get("images_per_sec") and int(r["step"]) > first_validation]
    score = [float(r["val_score"]) for r in rows if r.get("val_score")][-1]
    return {"devices": devices, "images_per_sec": statistics.median(rates), "wall_s": wall,
            "steps": int(rows[-1]["step"]), "val_score": score}


def measure(image_size: int = 128, epochs: int = 2, batch_size: int = 4, threads: int = 1,
            cases: int = 6, slices_per_scan: int = 36, num_folds: int = 5) -> list[dict]:
    with scratch_home() as home:
        data, _ = make_demo(home, cases, slices_per_scan)
        return [train_run(data, home / f"run-{n}", home, n, image_size, epochs, batch_size,
                          threads, num_folds) for n in (1, 2)]


def report(results: list[dict]) -> tuple[str, float]:
    rows = [[r["devices"], r["images_per_sec"], r["wall_s"], r["steps"], r["val_score"]]
            for r in results]
    table = markdown_table(["processes", "images/s (median, all processes)", "wall s",
                            "optimiser steps", "final val score"], rows)
    one, two = results[0]["images_per_sec"], results[1]["images_per_sec"]
    return table, two / one if one > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    command = "python " + " ".join(["benchmarks/ddp_cpu.py", *sys.argv[1:]])
    print(header("DDP on the CPU: 1 against 2 processes", command, torch.device("cpu")))
    results = measure(args.image_size, args.epochs, args.batch_size, args.threads)
    table, ratio = report(results)
    print(table)
    print()
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
