"""Inference: seconds per case-day (144 slices) with B0 at 288 px, through the engine's Predictor.

    python benchmarks/inference.py [--repeats 2] [--batch-size 16] [--tta] [--device cpu|cuda]

Times ``core.predict.Predictor.predict_case_day`` on a demo case-day of 144 slices with a randomly
initialised model (the weights do not change the arithmetic): cache gather, normalisation, the
forward pass (autocast on a GPU), resizing the probabilities back to the slice's original size and
thresholding. The forward pass is also timed on its own (synchronised), so the table shows what the
rest costs. The cache is built first and timed apart (a one-off per dataset and image size).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import (bench_config, build_module, header, make_demo,  # noqa: E402
                               markdown_table, median, quiet, scratch_home, set_threads, sync)
from core.data.scan import scan_dataset  # noqa: E402
from core.devices import Placement, resolve_precision  # noqa: E402
from core.predict import LoadedModel, Predictor  # noqa: E402


class TimedPredictor(Predictor):
    """The engine's Predictor, with the forward pass (``_logits``) timed and synchronised."""

    forward_s = 0.0

    def _logits(self, module, x):
        sync(x.device)
        start = time.perf_counter()
        logits = super()._logits(module, x)
        sync(x.device)
        self.forward_s += time.perf_counter() - start
        return logits


def measure_inference(data_dir: Path, cache_root: Path, image_size: int = 288,
                      batch_size: int = 16, repeats: int = 2, variant: str = "b0",
                      device: torch.device = torch.device("cpu"), tta: bool = False) -> dict:
    """Seconds per case-day (median of ``repeats``) for the longest case-day of ``data_dir``."""
    quiet()
    index = scan_dataset(data_dir)
    cfg = bench_config(image_size, batch_size, variant=variant)
    module = build_module(cfg, device).eval()
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    bf16 = accelerator == "gpu" and torch.cuda.is_bf16_supported()
    placement = Placement(accelerator, resolve_precision("auto", accelerator, bf16))
    model = LoadedModel(module, cfg, placement, Path(f"random {variant.upper()}"))
    case_day, records = max(index.case_days().items(), key=lambda item: len(item[1]))
    results = {}
    # On the CPU the forward timing's synchronisation costs nothing, so one run gives both figures;
    # on a GPU it would stop the host running ahead, so the headline run is left untimed inside.
    for timed in ((True,) if device.type == "cpu" else (False, True)):
        predictor = (TimedPredictor if timed else Predictor)(model, index, tta=tta,
                                                              batch_size=batch_size,
                                                              cache_root=cache_root)
        start = time.perf_counter()
        predictor.prepare()
        results.setdefault("cache_s", time.perf_counter() - start)
        with torch.inference_mode():  # warm-up: one batch through the model
            x = torch.zeros(min(batch_size, len(records)), 3, image_size, image_size, device=device)
            predictor._logits(module, x)
        predictor.forward_s = 0.0
        seconds = []
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            prediction = predictor.predict_case_day(case_day)
            sync(device)
            seconds.append(time.perf_counter() - start)
        results["timed_s"] = median(seconds)
        results.setdefault("case_day_s", results["timed_s"])
        if timed:
            results["forward_s"] = predictor.forward_s / repeats
    height, width = records[0].shape
    results.update(case_day=case_day, slices=len(records), original=f"{width}×{height}",
                   masks_shape=tuple(prediction.stacked_masks().shape), batch_size=batch_size,
                   image_size=image_size, variant=variant, device=device, tta=tta)
    return results


def report(r: dict) -> str:
    forward_share = r["forward_s"] / r["timed_s"]
    rows = [[f"{r['variant'].upper()} {r['image_size']} px, batch {r['batch_size']}"
             + (", flip TTA" if r["tta"] else ""), r["device"].type, r["slices"],
             r["case_day_s"], r["slices"] / r["case_day_s"], r["forward_s"],
             100 * forward_share, r["cache_s"]]]
    return markdown_table(["model", "device", "slices", "s / case-day", "slices/s",
                           "forward s", "forward %", "cache build s (once)"], rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="the Predictor's default: 16")
    parser.add_argument("--image-size", type=int, default=288)
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--tta", action="store_true", help="add horizontal-flip TTA")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and OpenCV CPU threads (0: their defaults); see "
                        "common.set_threads")
    parser.add_argument("--slices-per-scan", type=int, default=144)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = torch.device(args.device)
    print(header("Inference: seconds per case-day", "python benchmarks/inference.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), device))
    with scratch_home() as home:
        data_dir, gen_s = make_demo(home, 1, args.slices_per_scan)
        result = measure_inference(data_dir, home / "cache", args.image_size, args.batch_size,
                                   args.repeats, args.variant, device, args.tta)
    print(f"Case-day {result['case_day']}: {result['slices']} slices of {result['original']} px "
          f"(demo data generated in {gen_s:.1f} s); randomly initialised model; median of "
          f"{args.repeats} runs after a warm-up batch. Masks come back at the original size "
          f"{result['masks_shape']}. forward: the model alone (on a GPU timed in a second, "
          "synchronised run).\n")
    print(report(result))
    return result


if __name__ == "__main__":
    main()
