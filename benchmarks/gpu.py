"""Everything that needs a GPU, in one command that finishes in under 8 minutes.

    python benchmarks/gpu.py [--out benchmarks/gpu_results.md] [--quick] [--budget 420]
    python benchmarks/gpu.py --dry-run      # the same code on the CPU with tiny sizes, to test it

Sections, each row in its own ``try`` (an error is written into the table and the run moves on):

1. Loader on the GPU: the seed's per-sample path against ours (cache gather + transfer +
   augmentation on the GPU, synchronised), and candidate A (a fused torch augmentation, not in
   the engine).
2. Training, the seed's setup against ours: B0, 288 px, batch 6, accumulation 2. Seed:
   per-sample loader, fp16 autocast with ``GradScaler``, loss read every step. Ours: cached
   loader, pinned memory and non-blocking copies, augmentation on the GPU, bf16 (fp16 where bf16
   is missing), loss read every 10 steps; also with a prefetch thread, with the loss read every
   step, without pinned memory, and through ``Trainer.fit``. Images/s and data-wait
   (time blocked in ``next(loader)`` / wall time).
3. Throughput of ours, B0 and B2 at 288 px, batch 16: fp32 / 16-mixed / bf16-mixed ×
   channels_last, with cuDNN benchmark and TF32 on (the session's defaults); then cuDNN benchmark
   off and TF32 off against their base rows.
4. The memory estimator (``core.memory.estimate_peak_memory``, if present) against the peaks of
   section 3.
5. Inference: seconds per 144-slice case-day, B0 at 288 px. 6. Cache build on this machine's CPUs.
7. ``torch.compile`` against eager (last: compiling is slow, and the budget may cut it).

A global time budget (``--budget`` seconds from the start, default 420) skips the remaining rows
when it runs short, and a watchdog writes what is done and exits if a row hangs 30 s past it.
The table is written to ``--out`` after every row. The last line is
``ratio=<ours images/s / seed images/s>`` of section 2.
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()  # the budget counts from here, imports included

import argparse
import gc
import os
import shutil
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import (REPO, LoopResult, bench_config, close_runners, header,  # noqa: E402
                               lightning_throughput, make_demo, markdown_table, ours_runner,
                               quiet, run_loops, scratch_home, seed_runner, set_threads)
from benchmarks.seed_pipeline import SEED_ACCUMULATE, SEED_BATCH_SIZE, seed_precision  # noqa: E402

MB = 1e6
WATCHDOG_GRACE_S = 30
PRECISIONS = ("32", "16-mixed", "bf16-mixed")


@dataclass
class Settings:
    device: torch.device
    image_size: int = 288
    batch_size: int = 16  # for the throughput matrix; section 2 uses the seed's 6
    seed_batch_size: int = SEED_BATCH_SIZE
    warmup: int = 5
    steps: int = 30
    loader_batches: int = 30
    variants: tuple[str, ...] = ("b0", "b2")
    precisions: tuple[str, ...] = PRECISIONS
    toggle_variants: tuple[str, ...] = ("b0", "b2")
    compile_variants: tuple[str, ...] = ("b0", "b2")
    compile_backend: str = "inductor"
    compile_need_s: float = 100.0
    demo_cases: int = 2
    demo_slices: int = 144
    inference_repeats: int = 2


def settings_for(args) -> Settings:
    if args.dry_run:
        s = Settings(torch.device("cpu"), image_size=64, batch_size=2, seed_batch_size=2,
                     warmup=1, steps=1, loader_batches=2, compile_backend="eager",
                     compile_need_s=5.0, demo_cases=2, demo_slices=8, inference_repeats=1)
    else:
        s = Settings(torch.device("cuda"), batch_size=args.batch_size)
    if args.quick:
        s.warmup, s.steps = min(s.warmup, 3), min(s.steps, 10)
        s.loader_batches, s.inference_repeats = min(s.loader_batches, 10), 1
        s.toggle_variants = s.compile_variants = ("b0",)
    if args.variants:
        s.variants = tuple(v.strip().lower() for v in args.variants.split(","))
        s.toggle_variants = tuple(v for v in s.toggle_variants if v in s.variants)
        s.compile_variants = tuple(v for v in s.compile_variants if v in s.variants)
    if args.precisions:
        s.precisions = tuple(p.strip() for p in args.precisions.split(","))
    if args.compile_backend:
        s.compile_backend = args.compile_backend
    if args.no_compile:
        s.compile_variants = ()
    return s


# -- the report -----------------------------------------------------------------------------------
@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    body: str = ""  # a ready-made table in place of the rows

    def render(self) -> str:
        columns = self.columns + (["note"] if any("note" in r for r in self.rows) else [])
        body = markdown_table(columns, [[r.get(c) for c in columns] for r in self.rows]) \
            if self.rows else (self.body or "(no rows)")
        notes = [*self.notes, ""] if self.notes else []
        return "\n".join([f"### {self.title}", "", *notes, body, ""])


class Report:
    """Sections of rows; rendered to Markdown and written to ``out`` after every row."""

    def __init__(self, out: Path, head: str, budget_s: float):
        self.out, self.head = out, head
        self.start = PROCESS_START
        self.deadline = self.start + budget_s
        self.sections: list[Section] = []
        self.footer: list[str] = []
        self.ratio: float | None = None
        self.scratch: Path | None = None  # removed by the watchdog, which skips normal clean-up
        self.lock = threading.Lock()

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def section(self, title: str, columns: list[str], *notes: str) -> Section:
        section = Section(title, ["config"] + columns, notes=list(notes))
        self.sections.append(section)
        return section

    def render(self, extra: list[str] = ()) -> str:
        elapsed = time.perf_counter() - self.start
        parts = [self.head] + [s.render() for s in self.sections]
        parts += [f"Total time: {elapsed:.0f} s.", *extra, *self.footer]
        if self.ratio is not None:
            parts.append(f"\nratio={self.ratio:.2f}")
        return "\n".join(parts) + "\n"

    def write(self, extra: list[str] = ()) -> str:
        with self.lock:
            text = self.render(extra)
            try:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                self.out.write_text(text, encoding="utf-8")
            except OSError as exc:
                print(f"could not write {self.out}: {exc}", file=sys.stderr)
            return text

    def attempt(self, section: Section, label: str, run: Callable[[], dict],
                need_s: float = 0.0) -> dict | None:
        """Run one row: its values, or an error / skip note in its place; then write the file."""
        left = self.remaining()
        if left < need_s:
            section.rows.append({"config": label, "note": f"skipped: {max(left, 0):.0f} s left "
                                 f"of the time budget, the row needs about {need_s:.0f} s"})
            self.write()
            return None
        values = None
        try:
            values = run()
            section.rows.append({"config": label, **values})
        except Exception as exc:  # noqa: BLE001 - one failed configuration must not stop the run
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            section.rows.append({"config": label,
                                 "note": f"error: {type(exc).__name__}: {message[:160]}"})
            traceback.print_exc(file=sys.stderr)
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            print(f"[{time.perf_counter() - self.start:5.0f} s] {section.title}: {label}",
                  file=sys.stderr, flush=True)
            self.write()
        return values


def start_watchdog(report: Report, grace_s: float) -> threading.Timer:
    """If a row hangs past the budget, write what is done, print it and exit."""
    def fire():
        text = report.write([f"Stopped by the watchdog {grace_s:.0f} s after the time budget ran "
                             "out; the row in progress is missing."])
        print(text, flush=True)
        if report.scratch is not None:
            shutil.rmtree(report.scratch, ignore_errors=True)
        os._exit(3)

    timer = threading.Timer(max(1.0, report.remaining() + grace_s), fire)
    timer.daemon = True
    timer.start()
    return timer


# -- rows -----------------------------------------------------------------------------------------
class Lab:
    """The data, cache and settings shared by all rows."""

    def __init__(self, s: Settings, data_dir: Path, cache_root: Path):
        from core.data.cache import build_cache
        from core.data.scan import scan_dataset

        self.s, self.data_dir, self.cache_root = s, data_dir, cache_root
        self.index = scan_dataset(data_dir)
        self.cache = build_cache(self.index, s.image_size, cache_root)

    def data(self, cfg):
        from core.data.datamodule import SliceDataModule

        return SliceDataModule(self.index, self.cache, cfg)

    def config(self, variant: str, batch_size: int, precision: str, channels_last: bool = False,
               accumulate: int = 1):
        return bench_config(self.s.image_size, batch_size, variant=variant, accumulate=accumulate,
                            precision=precision, channels_last=channels_last,
                            device="gpu" if self.s.device.type == "cuda" else "cpu")


def loop_values(r: LoopResult) -> dict:
    return {"images/s": r.images_per_s, "ms/step": r.ms_per_step,
            "data-wait %": 100 * r.data_fraction,
            "transfer+aug %": 100 * r.prep_fraction if r.prep_s else None,
            "steps": r.steps, "warm-up s": r.warmup_s or None,
            "peak alloc MB": r.peak_allocated / MB if r.peak_allocated else None}


def run_runner(make: Callable, lab: Lab, deadline: float) -> LoopResult:
    runner = make()
    try:
        return run_loops([runner], lab.s.warmup, lab.s.steps, lab.s.device, interleave=False,
                         deadline=deadline)[0]
    finally:
        close_runners([runner])


def default_precision(device: torch.device) -> str:
    if device.type == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed"


class Switch:
    """Set cuDNN benchmark / TF32 for one row and put the previous values back afterwards."""

    def __init__(self, benchmark: bool = True, tf32: bool = True):
        self.benchmark, self.tf32 = benchmark, tf32

    def __enter__(self):
        self.saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
                      torch.get_float32_matmul_precision())
        torch.backends.cudnn.benchmark = self.benchmark
        torch.backends.cudnn.allow_tf32 = self.tf32
        torch.set_float32_matmul_precision("high" if self.tf32 else "highest")

    def __exit__(self, *exc):
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, matmul = self.saved
        torch.set_float32_matmul_precision(matmul)


def section_loader(report: Report, lab: Lab) -> None:
    from benchmarks import loader

    section = report.section(
        "1. Loader: seed's per-sample path vs ours, on the training device", [],
        f"Batch {lab.s.seed_batch_size}, {lab.s.image_size} px, {lab.s.loader_batches} batches per "
        "pipeline taking turns, medians; every pipeline ends with augmented, normalised float "
        "tensors on the device (synchronised, so GPU work is counted).")

    def run():
        result = loader.measure_loaders(lab.data_dir, lab.cache_root, lab.s.image_size,
                                        lab.s.seed_batch_size, lab.s.loader_batches, warmup=2,
                                        device=lab.s.device)
        table, ratio = loader.report(result)
        section.body = f"{table}\n\nLoader ratio (seed / ours, full path): {ratio:.1f}×"
        return {}

    if report.attempt(section, "loader", run, need_s=20) is not None:
        section.rows.clear()
        report.write()


def section_training(report: Report, lab: Lab) -> float | None:
    s = lab.s
    precision = default_precision(s.device)
    section = report.section(
        f"2. Training: the seed's setup vs ours (B0, batch {s.seed_batch_size}, accumulation "
        f"{SEED_ACCUMULATE})",
        ["images/s", "ms/step", "data-wait %", "transfer+aug %", "steps", "warm-up s",
         "peak alloc MB", "× seed"],
        f"{s.image_size} px; {s.warmup} warm-up + {s.steps} timed iterations each, run one after "
        "another (the host runs ahead of the GPU; wall time to a final synchronisation). "
        "data-wait %: time blocked in next(loader) / wall time. cuDNN benchmark and TF32 on for "
        f"both. Ours uses {precision} without a GradScaler" + (" (fp16 needs one)" if precision ==
                                                               "16-mixed" else "") + ".")
    cfg = lab.config("b0", s.seed_batch_size, precision, accumulate=SEED_ACCUMULATE)
    seed_precision_name, scaler = seed_precision(s.device)
    results: dict[str, dict] = {}
    rows = [
        (f"seed: per-sample loader, {seed_precision_name}" + (" + GradScaler" if scaler else "")
         + ", loss read every step", "seed",
         lambda: seed_runner("seed", lab.data(cfg), cfg, s.device)),
        (f"ours: cache + GPU augmentation, {precision}", "ours",
         lambda: ours_runner("ours", lab.data(cfg), cfg, s.device, precision)),
        ("ours + prefetch thread", "ours_prefetch",
         lambda: ours_runner("ours+prefetch", lab.data(cfg), cfg, s.device, precision,
                             prefetch=True)),
        ("ours, but the loss read every step (a sync per step)", "ours_sync",
         lambda: ours_runner("ours+sync", lab.data(cfg), cfg, s.device, precision,
                             sync_loss_every=1)),
        ("ours, but without pinned memory", "ours_unpinned",
         lambda: ours_runner("ours-unpinned", lab.data(cfg), cfg, s.device, precision,
                             pin_memory=False)),
    ]
    for label, key, make in rows:
        def run(make=make, key=key):
            with Switch():
                values = loop_values(run_runner(make, lab, report.deadline))
            results[key] = values
            return values
        report.attempt(section, label, run, need_s=15)

    def fit():
        with Switch():
            r = lightning_throughput(lab.data(cfg), cfg, s.device, precision, s.warmup, s.steps)
        values = loop_values(r)
        values["data-wait %"] = 100 * r.data_fraction
        results["fit"] = values
        return values
    report.attempt(section, f"ours: the product's Trainer.fit, {precision} (data-wait = all time "
                   "between batches)", fit, need_s=25)
    seed = results.get("seed", {}).get("images/s")
    for row in section.rows:
        if seed and row.get("images/s"):
            row["× seed"] = row["images/s"] / seed
    report.write()
    ours = results.get("ours", {}).get("images/s")
    return ours / seed if ours and seed else None


def throughput_row(report: Report, section: Section, lab: Lab, measured: dict, label: str,
                   key: tuple, variant: str, precision: str, channels_last: bool = False,
                   benchmark: bool = True, tf32: bool = True, compile_backend: str | None = None,
                   compile_mode: str | None = None, need_s: float = 12.0,
                   base: tuple | None = None) -> None:
    """One row of ours' throughput at the matrix batch size; ``× base``: against
    ``measured[base]``."""
    s = lab.s
    cfg = lab.config(variant, s.batch_size, precision, channels_last)

    def run():
        with Switch(benchmark, tf32):
            r = run_runner(lambda: ours_runner(label, lab.data(cfg), cfg, s.device, precision,
                                               compile_backend=compile_backend,
                                               compile_mode=compile_mode),
                           lab, report.deadline)
        values = loop_values(r)
        values["_result"] = r
        if base in measured and measured[base].get("images/s"):
            values["× base"] = values["images/s"] / measured[base]["images/s"]
        return values

    values = report.attempt(section, label, run, need_s)
    if values is not None:
        measured[key] = values
        section.rows[-1].pop("_result", None)


THROUGHPUT_COLUMNS = ["images/s", "ms/step", "data-wait %", "transfer+aug %", "steps", "warm-up s",
                      "peak alloc MB", "× base"]


def section_matrix(report: Report, lab: Lab) -> dict:
    s = lab.s
    section = report.section(
        f"3. Throughput of ours at {s.image_size} px, batch {s.batch_size}", THROUGHPUT_COLUMNS,
        "Base rows: cuDNN benchmark on, TF32 on (matmul precision 'high'), eager; a later row "
        "changes one thing against its base row (× base). Loss read every 10 steps; GradScaler "
        "only with 16-mixed. peak alloc: torch.cuda.max_memory_allocated after warm-up.")
    measured: dict[tuple, dict] = {}
    for variant in s.variants:
        for precision in s.precisions:
            for cl in (False, True):
                throughput_row(report, section, lab, measured,
                               f"{variant.upper()} {precision}" + (" channels_last" if cl else ""),
                               (variant, precision, cl), variant, precision, cl,
                               base=(variant, precision, False) if cl else None)
    fast = default_precision(s.device)
    for variant in s.toggle_variants:
        throughput_row(report, section, lab, measured, f"{variant.upper()} {fast}, cuDNN "
                       "benchmark off", (variant, "no-benchmark"), variant, fast,
                       benchmark=False, base=(variant, fast, False))
        if "32" in s.precisions:
            throughput_row(report, section, lab, measured, f"{variant.upper()} 32, TF32 off",
                           (variant, "no-tf32"), variant, "32", tf32=False,
                           base=(variant, "32", False))
    return measured


def section_compile(report: Report, lab: Lab, measured: dict) -> None:
    s = lab.s
    if not s.compile_variants:
        return
    section = report.section(
        f"7. torch.compile ({s.compile_backend}) at {s.image_size} px, batch {s.batch_size}",
        THROUGHPUT_COLUMNS, "Last, because compiling takes long: warm-up s includes compiling. "
        "× base: against the same variant and precision in eager mode (section 3).")
    fast = default_precision(s.device)
    for variant in s.compile_variants:
        throughput_row(report, section, lab, measured, f"{variant.upper()} {fast}, compiled",
                       (variant, "compile"), variant, fast, compile_backend=s.compile_backend,
                       need_s=s.compile_need_s, base=(variant, fast, False))
    if "b0" in s.compile_variants and s.device.type == "cuda" and s.compile_backend == "inductor":
        # CUDA graphs remove the per-kernel launch cost that bounds a model as small as B0.
        throughput_row(report, section, lab, measured, f"B0 {fast}, compiled, mode "
                       "reduce-overhead (CUDA graphs)", ("b0", "compile-cudagraphs"), "b0", fast,
                       compile_backend="inductor", compile_mode="reduce-overhead",
                       need_s=s.compile_need_s, base=("b0", fast, False))


def section_memory(report: Report, lab: Lab, measured: dict) -> None:
    s = lab.s
    section = report.section(
        "4. Memory estimator vs measured peaks (section 3 rows, channels_last off)",
        ["estimate MB", "estimate w/o context MB", "measured alloc MB",
         "measured alloc incl. warm-up MB", "device MB (reserved + context)",
         "error vs alloc %", "error vs device %"],
        "estimate: MemoryEstimate.total_bytes (CUDA context included); w/o context: less its "
        "cuda_context part. measured alloc: torch.cuda.max_memory_allocated in the timed steps "
        "(incl. warm-up: with cuDNN benchmark trials); device: max_memory_reserved + the CUDA "
        "context and libraries (GPU memory in use before the first row, less torch's reserve). "
        "error vs alloc: w/o context against measured alloc; error vs device: estimate against "
        "device.")
    try:
        from core.memory import estimate_peak_memory
    except Exception as exc:  # noqa: BLE001 - the module is written by another engineer
        section.rows.append({"config": "all", "note": f"n/a: core.memory.estimate_peak_memory is "
                             f"not available ({type(exc).__name__}: {exc})"})
        report.write()
        return
    for variant in s.variants:
        for precision in s.precisions:
            values = measured.get((variant, precision, False))
            if not values:
                continue

            def run(values=values, variant=variant, precision=precision):
                cfg = lab.config(variant, s.batch_size, precision)
                estimate = estimate_peak_memory(cfg)
                total = estimate.total_bytes
                tensors = total - (getattr(estimate, "parts", None) or {}).get("cuda_context", 0)
                r: LoopResult = values["_result"]
                out = {"estimate MB": total / MB, "estimate w/o context MB": tensors / MB}
                if r.peak_allocated:
                    device_bytes = (r.peak_reserved or 0) + lab.context_bytes
                    out.update({"measured alloc MB": r.peak_allocated / MB,
                                "measured alloc incl. warm-up MB":
                                    max(r.peak_allocated, r.peak_warmup_allocated or 0) / MB,
                                "device MB (reserved + context)": device_bytes / MB,
                                "error vs alloc %": 100 * (tensors / r.peak_allocated - 1),
                                "error vs device %": 100 * (total / device_bytes - 1)})
                return out
            report.attempt(section, f"{variant.upper()} {precision}, batch {s.batch_size}", run)


def section_inference(report: Report, lab: Lab) -> None:
    from benchmarks import inference

    s = lab.s
    section = report.section("5. Inference: one case-day through the engine's Predictor",
                             ["slices", "s / case-day", "slices/s", "forward s", "forward %"],
                             "Randomly initialised model; autocast as in core.predict (bf16 where "
                             "supported); probabilities resized to the original size and "
                             "thresholded; median of repeats after a warm-up batch.")
    for variant in ("b0",):
        def run(variant=variant):
            r = inference.measure_inference(lab.data_dir, lab.cache_root, s.image_size, 16,
                                            s.inference_repeats, variant, s.device)
            return {"slices": r["slices"], "s / case-day": r["case_day_s"],
                    "slices/s": r["slices"] / r["case_day_s"], "forward s": r["forward_s"],
                    "forward %": 100 * r["forward_s"] / r["timed_s"]}
        report.attempt(section, f"{variant.upper()} {s.image_size} px, batch 16", run, need_s=10)


def section_cache(report: Report, lab: Lab) -> None:
    from benchmarks import cache_build

    section = report.section("6. Cache build on this machine's CPUs",
                             ["seconds", "slices/s", "PNG MB/s read", "cache MB/s written"])
    threads = sorted({1, min(8, os.cpu_count() or 1)})
    for t in threads:
        def run(t=t):
            r = cache_build.measure_cache_build(lab.data_dir, lab.cache_root / f"build-{t}",
                                                lab.s.image_size, (t,), repeats=1)
            seconds = r["seconds"][t]
            return {"seconds": seconds, "slices/s": r["slices"] / seconds,
                    "PNG MB/s read": r["png_bytes"] / seconds / MB,
                    "cache MB/s written": r["cache_bytes"] / seconds / MB}
        report.attempt(section, f"{t} thread{'s' if t > 1 else ''}", run, need_s=10)


# -- main -----------------------------------------------------------------------------------------
def guarded(report: Report, section: Callable, *args):
    """Run one section; if something outside its rows fails, note it and go on to the next."""
    try:
        return section(report, *args)
    except Exception:  # noqa: BLE001 - the other sections still run
        report.footer.append(f"Section {section.__name__} failed outside its rows:\n\n```\n"
                             + traceback.format_exc() + "```")
        traceback.print_exc(file=sys.stderr)
        report.write()
        return None


def context_bytes(device: torch.device) -> int:
    """GPU memory in use that torch's allocator does not hold: the CUDA context and libraries."""
    if device.type != "cuda":
        return 0
    torch.zeros(1, device=device)
    free, total = torch.cuda.mem_get_info(device)
    return max(0, total - free - torch.cuda.memory_reserved(device))


def main(argv: list[str] | None = None) -> float | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "gpu_results.md")
    parser.add_argument("--quick", action="store_true",
                        help="fewer steps; the toggles and torch.compile on B0 only")
    parser.add_argument("--dry-run", action="store_true",
                        help="run the same code on the CPU with tiny sizes")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds after which remaining rows are skipped (default 7 min)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch of the matrix rows")
    parser.add_argument("--variants", default=None, help="comma-separated, default b0,b2")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated, default " + ",".join(PRECISIONS))
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend (default inductor; eager in --dry-run)")
    args = parser.parse_args(argv)
    s = settings_for(args)
    if s.device.type == "cuda" and not torch.cuda.is_available():
        print("No CUDA GPU is available (torch %s). Use --dry-run to test this script on the CPU."
              % torch.__version__)
        return None
    quiet()
    if args.dry_run:
        set_threads(1)
    command = "python benchmarks/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
    title = "GPU benchmarks" + (" — DRY RUN on the CPU, tiny sizes (not a measurement)"
                                if args.dry_run else "")
    head = header(title, command, s.device)
    if s.device.type == "cuda":
        head += (f"- cuDNN {torch.backends.cudnn.version()}, bf16 supported: "
                 f"{torch.cuda.is_bf16_supported()}\n")
    report = Report(args.out, head, args.budget)
    watchdog = start_watchdog(report, WATCHDOG_GRACE_S)
    ratio = None
    try:
        with scratch_home() as home:
            report.scratch = home
            data_dir, gen_s = make_demo(home, s.demo_cases, s.demo_slices)
            lab = Lab(s, data_dir, home / "cache")
            lab.context_bytes = context_bytes(s.device)
            report.head += (f"- data: demo, {s.demo_cases} cases × {s.demo_slices} slices per "
                            f"scan ({len(lab.index.slices)} slices, generated in {gen_s:.0f} s); "
                            f"CUDA context and libraries: {lab.context_bytes / MB:.0f} MB\n")
            report.write()
            guarded(report, section_loader, lab)
            report.ratio = ratio = guarded(report, section_training, lab)
            measured = guarded(report, section_matrix, lab) or {}
            guarded(report, section_memory, lab, measured)
            guarded(report, section_inference, lab)
            guarded(report, section_cache, lab)
            guarded(report, section_compile, lab, measured)
    except Exception:  # noqa: BLE001 - setup failed: say so in the file
        report.footer.append("Setup failed:\n\n```\n" + traceback.format_exc() + "```")
    finally:
        watchdog.cancel()
    print(report.write())
    return ratio


if __name__ == "__main__":
    main()
