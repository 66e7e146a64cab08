"""Training throughput on the CPU: the seed's final setup against ours, same model and image size.

    python benchmarks/train_cpu.py [--steps 6] [--warmup 2] [--no-prefetch] [--lightning]

Both train B0 at 288 px, batch 6, gradient accumulation 2, fp32, with AdamW and the engine's loss.
The seed feeds it from its per-sample loader (PNG + RLE + albumentations, workers 0) and reads the
loss back every step; ours from the engine's ``SliceDataModule`` loader, with the engine's
``on_after_batch_transfer`` (augmentation and normalisation on the device) — optionally behind a
background prefetch thread. Every iteration is timed in three parts: waiting in
``next(loader)``, the transfer + ``on_after_batch_transfer``, and the step. The pipelines take
turns iteration by iteration. ``--lightning`` adds the product's own ``Trainer.fit`` on the same
settings.

On a CPU the step's arithmetic dwarfs loading, so the ratio is near 1; the figure that matters is
on a GPU (``benchmarks/gpu.py``). The last line is ``ratio=<ours images/s / seed images/s>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import (LoopResult, bench_config, close_runners, header,  # noqa: E402
                               lightning_throughput, load_dataset, make_demo, markdown_table,
                               ours_runner, paired_speedup, quiet, run_loops,
                               scratch_home, seed_runner, set_threads)
from benchmarks.seed_pipeline import SEED_ACCUMULATE, SEED_BATCH_SIZE  # noqa: E402


def measure_training(data_dir: Path, cache_root: Path, image_size: int = 288,
                     batch_size: int = SEED_BATCH_SIZE, accumulate: int = SEED_ACCUMULATE,
                     warmup: int = 2, steps: int = 6, variant: str = "b0", prefetch: bool = True,
                     lightning: bool = False) -> list[LoopResult]:
    """Seed, ours (and ours with a prefetch thread, and ``Trainer.fit``) on the CPU, in turns."""
    quiet()
    device = torch.device("cpu")
    cfg = bench_config(image_size, batch_size, variant=variant, accumulate=accumulate,
                       precision="32", device="cpu")
    _, _, data = load_dataset(data_dir, cfg, cache_root)
    runners = [seed_runner("seed: per-sample loader, loss read every step", data, cfg, device),
               ours_runner("ours: cache + on_after_batch_transfer", data, cfg, device, "32")]
    if prefetch:
        runners.append(ours_runner("ours + prefetch thread", data, cfg, device, "32",
                                   prefetch=True))
    try:
        results = run_loops(runners, warmup, steps, device, interleave=True)
    finally:
        close_runners(runners)
    if lightning:
        results.append(lightning_throughput(data, cfg, device, "32", warmup, steps))
    return results


def report(results: list[LoopResult]) -> tuple[str, float]:
    """The table and the ratio ours / seed (median over rounds of the paired iteration times)."""
    seed, ours = results[0], results[1]
    rows = []
    for r in results:
        speedup = paired_speedup(seed, r) if r.step_times else r.images_per_s / seed.images_per_s
        rows.append([r.name, r.steps, r.images_per_s, r.ms_per_step, 100 * r.data_fraction,
                     100 * r.prep_fraction if r.prep_s else None, speedup])
    table = markdown_table(["pipeline", "steps", "images/s", "ms/step", "data-wait %",
                            "transfer + augment %", "× seed"], rows)
    return table, paired_speedup(seed, ours)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed iterations per pipeline")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=288)
    parser.add_argument("--batch-size", type=int, default=SEED_BATCH_SIZE)
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--no-prefetch", dest="prefetch", action="store_false",
                        help="leave out ours with a prefetch thread")
    parser.add_argument("--lightning", action="store_true", help="add ours through Trainer.fit")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and OpenCV CPU threads (0: their defaults); see "
                        "common.set_threads")
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--slices-per-scan", type=int, default=36)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = torch.device("cpu")
    print(header("Training throughput on the CPU: seed's setup vs ours (B0)",
                 "python benchmarks/train_cpu.py " + " ".join(argv if argv is not None
                                                              else sys.argv[1:]), device))
    with scratch_home() as home:
        data_dir, gen_s = make_demo(home, args.cases, args.slices_per_scan)
        results = measure_training(data_dir, home / "cache", args.image_size, args.batch_size,
                                   SEED_ACCUMULATE, args.warmup, args.steps, args.variant,
                                   args.prefetch, args.lightning)
    table, ratio = report(results)
    print(f"B0 at {args.image_size} px, batch {args.batch_size}, accumulation {SEED_ACCUMULATE}, "
          f"fp32, AdamW; {args.warmup} warm-up + {args.steps} timed iterations per pipeline, "
          f"taking turns. Demo data: {args.cases} cases × {args.slices_per_scan} slices "
          f"(generated in {gen_s:.1f} s). data-wait %: time blocked in next(loader) / wall time; "
          "transfer + augment %: Lightning's transfer hook + on_after_batch_transfer (for "
          "Trainer.fit, data-wait is all the time between batches). × seed: median over rounds "
          "of the seed's iteration time / this pipeline's in the same round (Trainer.fit runs "
          "alone: ratio of images/s).\n")
    print(table)
    print()
    print(f"ratio={ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
