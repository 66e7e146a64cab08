"""Inference: seconds per case-day (144 slices) with B0 at 288 px, through the engine's Predictor.

    python benchmarks/inference.py [--repeats 2] [--batch-size 16] [--tta] [--device cpu|cuda]
    python benchmarks/inference.py --compare [--threads 2]   # the CPU engines, in one run

Times ``core.predict.Predictor.predict_case_day`` on a demo case-day of 144 slices with a randomly
initialised model (the weights do not change the arithmetic): cache gather, normalisation, the
forward pass (autocast on a GPU), resizing the probabilities back to the slice's original size and
thresholding. The forward pass is also timed on its own (synchronised), so the table shows what the
rest costs. The cache is built first and timed apart (a one-off per dataset and image size).

``--compare`` times the same case-day through the same Predictor with each CPU engine, the engines
taking turns repeat by repeat (so the machine's load falls on all alike): torch eager (float32),
torch channels_last, torch bf16 autocast (only where the CPU has native bf16: AVX512-BF16 or AMX),
torch.compile (inductor; its compile time is reported apart) and onnxruntime on the exported graph
(``core.engines``; export time apart; its idle threads sleep, and ``onnxruntime spinning`` is
onnxruntime's default of spinning threads). The ratio is each engine's time over torch eager's.
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


class _Wrapped(torch.nn.Module):
    """A module whose forward is ``forward`` (e.g. a compiled one), with the module's preprocessing."""

    def __init__(self, module, forward):
        super().__init__()
        self.inner, self._forward, self.mode = module, forward, module.mode

    def pixel_values(self, images):
        return self.inner.pixel_values(images)

    def forward(self, x):
        return self._forward(x)


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compare_engines(data_dir: Path, cache_root: Path, image_size: int = 288,
                    batch_size: int = 16, repeats: int = 2, engines=None,
                    work_dir: Path | None = None) -> list[dict]:
    """Seconds per case-day of each CPU engine on the longest case-day of ``data_dir`` (median of
    ``repeats``, engines taking turns). Rows: ``engine``, ``s`` (or ``skipped``), ``setup_s``."""
    import tempfile

    from core.devices import compile_problem
    from core.engines import OnnxModule, _add_metadata, _torch_export, metadata

    quiet()
    engines = list(engines or ("torch eager", "torch channels_last", "torch bf16",
                               "torch.compile", "onnxruntime"))
    index = scan_dataset(data_dir)
    cfg = bench_config(image_size, batch_size)
    module = build_module(cfg, torch.device("cpu")).eval()
    case_day = max(index.case_days().items(), key=lambda item: len(item[1]))[0]
    fp32 = Placement("cpu", "32")
    rows, models = [], {}
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="onnx-"))
    for engine in engines:
        start = time.perf_counter()
        if engine == "torch eager":
            model = LoadedModel(module, cfg, fp32, Path("eager"))
        elif engine == "torch channels_last":
            cl_cfg = bench_config(image_size, batch_size, channels_last=True)
            cl = build_module(cl_cfg, torch.device("cpu")).eval()
            cl.load_state_dict(module.state_dict())
            model = LoadedModel(cl.to(memory_format=torch.channels_last), cl_cfg, fp32, Path("cl"))
        elif engine == "torch bf16":
            if not cpu_has_bf16():
                rows.append({"engine": engine, "skipped": "no native bf16 (AVX512-BF16/AMX) in "
                             "this CPU: emulated bf16 is slower than float32"})
                continue
            model = LoadedModel(module, cfg, Placement("cpu", "bf16-mixed"), Path("bf16"))
        elif engine == "torch.compile":
            problem = compile_problem("cpu")
            if problem:
                rows.append({"engine": engine, "skipped": problem})
                continue
            compiled = torch.compile(module)
            model = LoadedModel(_Wrapped(module, compiled), cfg, fp32, Path("compiled"))
            with torch.inference_mode():  # compiling happens on the first batch(es)
                for n in {batch_size, len(index.case_days()[case_day]) % batch_size or batch_size}:
                    compiled(torch.zeros(n, 3, image_size, image_size))
        elif engine in ("onnxruntime", "onnxruntime spinning"):
            path = work_dir / "model.onnx"
            if not path.is_file():
                _torch_export(module, torch.zeros(2, 3, image_size, image_size), path)
                _add_metadata(path, metadata(cfg, module.mode, "benchmark"))
            model = LoadedModel(OnnxModule(path, spinning=engine.endswith("spinning")), cfg,
                                fp32, path)
        else:
            raise ValueError(f"unknown engine {engine}")
        predictor = Predictor(model, index, batch_size=batch_size, cache_root=cache_root)
        predictor.prepare()
        with torch.inference_mode():  # warm-up batch
            predictor._logits(model.module, torch.zeros(min(batch_size, 4), 3, image_size,
                                                         image_size))
        models[engine] = predictor
        rows.append({"engine": engine, "setup_s": time.perf_counter() - start, "times": []})
    for _ in range(repeats):
        for row in rows:
            if "times" in row:
                start = time.perf_counter()
                result = models[row["engine"]].predict_case_day(case_day)
                row["times"].append(time.perf_counter() - start)
                row.setdefault("masks", result.stacked_masks())
    reference = next((r for r in rows if r["engine"] == "torch eager"), None)
    for row in rows:
        if "times" in row:
            row["s"] = median(row.pop("times"))
            row["slices"] = len(index.case_days()[case_day])
            if reference is not None:
                row["agree"] = float((row["masks"] == reference["masks"]).mean())
    for row in rows:
        row.pop("masks", None)
    return rows


def compare_report(rows: list[dict]) -> str:
    base = next((r["s"] for r in rows if r["engine"] == "torch eager" and "s" in r), None)
    table = []
    for r in rows:
        if "s" not in r:
            table.append([r["engine"], "skipped", "", "", "", r["skipped"]])
            continue
        table.append([r["engine"], r["s"], r["slices"] / r["s"],
                      f"{r['s'] / base:.2f}" if base else "", r["setup_s"],
                      f"masks agree with eager {100 * r.get('agree', 1):.3f} %"])
    return markdown_table(["engine", "s / case-day", "slices/s", "ratio vs eager",
                           "setup s (once)", "note"], table)


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
    parser.add_argument("--compare", action="store_true", help="compare the CPU engines")
    parser.add_argument("--engines", help="with --compare: comma-separated subset")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = torch.device(args.device)
    print(header("Inference: seconds per case-day", "python benchmarks/inference.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), device))
    if args.compare:
        with scratch_home() as home:
            data_dir, _ = make_demo(home, 1, args.slices_per_scan)
            rows = compare_engines(data_dir, home / "cache", args.image_size, args.batch_size,
                                   args.repeats, args.engines.split(",") if args.engines else None,
                                   home)
        print(f"One case-day of {args.slices_per_scan} slices, B0 {args.image_size} px, batch "
              f"{args.batch_size}, {torch.get_num_threads()} threads; median of {args.repeats} "
              "runs, engines taking turns; randomly initialised model.\n")
        print(compare_report(rows))
        return {"rows": rows}
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
