"""Shared pieces of the benchmark scripts: the machine header, demo data in a throw-away home,
Markdown tables, and the plain training loop that times waiting for data apart from the step.

Timing rules used throughout: a figure is the median over repeats (this machine is shared, so single
timings are noisy), pipelines compared against each other are measured in the same run, and on the
CPU they take turns batch by batch so that other processes' load falls on both alike.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import platform
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from core.config import StudioConfig, apply_overrides  # noqa: E402
from core.paths import HOME_ENV  # noqa: E402

AUTOCAST_DTYPES = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
SHARED_MACHINE_NOTE = ("other processes may share this machine: figures are medians, and compared "
                       "pipelines take turns batch by batch so that the load falls on both alike")


# -- report ---------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


def machine_lines(device: torch.device) -> list[str]:
    """Lines that say where and when a table was measured."""
    lines = [f"- machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs "
             f"({_cpu_model()}), Python {platform.python_version()}",
             f"- torch {torch.__version__} ({torch.get_num_threads()} CPU threads)"]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(f"- device: {props.name}, {props.total_memory / 2**30:.0f} GiB, compute "
                     f"capability {props.major}.{props.minor}, CUDA {torch.version.cuda}")
    else:
        lines.append("- device: cpu")
    lines.append(f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    lines.append(f"- load average (1/5/15 min) at start: {_load_average()}; {SHARED_MACHINE_NOTE}")
    return lines


def header(title: str, command: str, device: torch.device) -> str:
    return "\n".join([f"## {title}", "", f"`{command}`", "", *machine_lines(device), ""])


def markdown_table(columns: list[str], rows: list[list]) -> str:
    """A Markdown table; numbers right-aligned, everything else left-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and all(_is_number(row[i]) or row[i] is None for row in rows)
               for i in range(len(columns))]

    def line(values):
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w)
                                 for v, w, num in zip(values, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(columns), rule] + [line(r) for r in cells])


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


# -- data -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def scratch_home(keep: bool = False) -> Iterator[Path]:
    """A throw-away ``SEGFORMER_STUDIO_HOME``: demo data and caches go there, removed after."""
    old = os.environ.get(HOME_ENV)
    folder = Path(tempfile.mkdtemp(prefix="segformer-bench-"))
    os.environ[HOME_ENV] = str(folder)
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop(HOME_ENV, None)
        else:
            os.environ[HOME_ENV] = old
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def make_demo(home: Path, cases: int, slices_per_scan: int, seed: int = 0) -> tuple[Path, float]:
    """Generate the demo dataset under ``home``; returns its folder and the seconds it took."""
    from core.data.demo import generate_demo_dataset

    start = time.perf_counter()
    folder = generate_demo_dataset(home / "demo", cases=cases, slices_per_scan=slices_per_scan,
                                   seed=seed)
    return folder, time.perf_counter() - start


def bench_config(image_size: int, batch_size: int, variant: str = "b0", context: int = 2,
                 num_folds: int = 2, accumulate: int = 1, precision: str = "auto",
                 channels_last: bool = False, device: str = "auto") -> StudioConfig:
    return apply_overrides(StudioConfig(), [
        f"data.image_size={image_size}", f"data.context={context}", f"data.num_folds={num_folds}",
        f"train.batch_size={batch_size}", f"train.accumulate_grad_batches={accumulate}",
        f"model.variant={variant}", f"train.precision={precision}",
        f"train.channels_last={channels_last}", f"train.device={device}"])


def load_dataset(data_dir: Path, cfg: StudioConfig, cache_root: Path):
    """Scan, build (or reuse) the cache, make the engine's data module: ``(index, cache, data)``."""
    from core.data.cache import build_cache
    from core.data.datamodule import SliceDataModule
    from core.data.scan import scan_dataset

    index = scan_dataset(data_dir)
    cache = build_cache(index, cfg.data.image_size, cache_root)
    return index, cache, SliceDataModule(index, cache, cfg)


# -- timing ---------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def quiet() -> None:
    """Silence the engine's and Lightning's chatter (random-init warnings, GPU-available notes)."""
    import pytorch_lightning  # noqa: F401 - it sets its loggers' levels when imported
    from core.quiet import quiet_libraries

    quiet_libraries()
    for name in ("pytorch_lightning", "lightning_fabric", "lightning", "core.model.factory"):
        logging.getLogger(name).setLevel(logging.ERROR)


def endless(make_iterable: Callable[[], Iterable]) -> Iterator:
    """Batches of successive epochs, without end."""
    while True:
        yield from make_iterable()


class ThreadPrefetcher:
    """Iterates ``source`` in a background thread, ``depth`` items ahead (threads need no
    pickling, so this is safe on Windows). Errors in the thread are raised on ``next``;
    ``close()`` stops it."""

    _END = object()

    def __init__(self, source: Iterable, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(iter(source),), daemon=True,
                                        name="batch-prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterator: Iterator) -> None:
        try:
            for item in iterator:
                if not self._put((item, None)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put((None, exc))
            return
        self._put((self._END, None))

    def __iter__(self):
        return self

    def __next__(self):
        item, error = self._queue.get()
        if error is not None:
            raise error
        if item is self._END:
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- training loop --------------------------------------------------------------------------------
@dataclass
class LoopResult:
    """What one pipeline did in the measured iterations. ``data_s``: blocked in ``next(batches)``;
    ``prep_s``: host-to-device copy and ``on_after_batch_transfer`` (augmentation: OpenCV on uint8
    on the CPU, torch on a GPU)."""

    name: str
    images: int = 0
    steps: int = 0
    wall_s: float = 0.0
    data_s: float = 0.0
    prep_s: float = 0.0
    step_times: list[float] = field(default_factory=list)
    warmup_s: float = 0.0
    peak_allocated: int | None = None  # after warm-up (steady state), bytes
    peak_reserved: int | None = None
    peak_warmup_allocated: int | None = None  # during warm-up (cuDNN benchmark trials, compile)

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def data_fraction(self) -> float:
        return self.data_s / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def prep_fraction(self) -> float:
        return self.prep_s / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def ms_per_step(self) -> float:
        return 1e3 * self.wall_s / self.steps if self.steps else float("nan")


class StepRunner:
    """Trains a ``SegmentationModule`` with a plain loop: Lightning's arithmetic (forward, the
    module's loss, backward, AdamW, accumulation, autocast, optional ``GradScaler``) without its
    bookkeeping, so that waiting for data can be timed apart from the step.

    ``batches`` yields raw batches from a loader; ``prepare`` turns one into
    ``{"pixel_values", "mask"}`` on the device. The loss is read back to the host every
    ``sync_loss_every`` iterations (1 = every step, as the seed did; each read is a sync).
    """

    def __init__(self, name: str, module, batches: Iterator, prepare: Callable,
                 device: torch.device, precision: str = "32", accumulate: int = 1,
                 grad_scaler: bool = False, sync_loss_every: int = 10):
        self.module, self.batches, self.prepare, self.device = module, batches, prepare, device
        self.accumulate, self.sync_loss_every = accumulate, sync_loss_every
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision '{precision}' is not one of {', '.join(AUTOCAST_DTYPES)}")
        self.dtype = AUTOCAST_DTYPES[precision]
        train = module.config.train
        self.optimizer = torch.optim.AdamW(module.parameters(), lr=train.lr,
                                           weight_decay=train.weight_decay)
        self.scaler = torch.amp.GradScaler(device.type) if grad_scaler else None
        self.result = LoopResult(name)
        self._count = 0
        self._pending: list[torch.Tensor] = []
        self.module.train()

    def iteration(self, measure: bool, sync_after: bool = False) -> None:
        start = time.perf_counter()
        raw = next(self.batches)
        fetched = time.perf_counter()
        batch = self.prepare(raw)
        prepared = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            logits = self.module(batch["pixel_values"])
        loss = self.module.loss(logits, batch["mask"]) / self.accumulate
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        self._count += 1
        if self._count % self.accumulate == 0:
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self._pending.append(loss.detach())
        if len(self._pending) >= self.sync_loss_every:
            torch.stack(self._pending).float().cpu()  # one host read for the window
            self._pending.clear()
        if sync_after:
            sync(self.device)
        if measure:
            r = self.result
            r.images += len(batch["mask"])
            r.steps += 1
            r.data_s += fetched - start
            r.prep_s += prepared - fetched
            r.step_times.append(time.perf_counter() - start)


def paired_speedup(baseline: LoopResult, other: LoopResult) -> float:
    """Median over rounds of ``baseline``'s iteration time / ``other``'s in the same round: for
    pipelines that took turns, this cancels load bursts that hit one round."""
    pairs = [b / o for b, o in zip(baseline.step_times, other.step_times) if o > 0]
    return median(pairs) if pairs else float("nan")


def run_loops(runners: list[StepRunner], warmup: int, steps: int, device: torch.device,
              interleave: bool, deadline: float | None = None) -> list[LoopResult]:
    """Warm up and time each runner for ``steps`` iterations.

    ``interleave`` (for the CPU): the runners take turns iteration by iteration, in reverse order
    every other round, and each one's wall time is the sum of its own iterations. Otherwise (for
    a GPU, where the host runs ahead of the device) each runner runs alone and its wall time is
    measured from the first timed iteration to a final synchronisation. Stops early (with fewer
    steps) past ``deadline`` (``time.perf_counter()``).
    """
    def late() -> bool:
        return deadline is not None and time.perf_counter() > deadline

    if interleave:
        for i in range(warmup + steps):
            if i > warmup and late():
                break
            for runner in (runners if i % 2 == 0 else runners[::-1]):  # no one always goes first
                runner.iteration(measure=i >= warmup, sync_after=True)
        for runner in runners:
            runner.result.wall_s = sum(runner.result.step_times)
        return [r.result for r in runners]
    for runner in runners:
        start = time.perf_counter()
        for _ in range(warmup):
            runner.iteration(measure=False)
        sync(device)
        runner.result.warmup_s = time.perf_counter() - start
        if device.type == "cuda":
            runner.result.peak_warmup_allocated = torch.cuda.max_memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for i in range(steps):
            if i and late():
                break
            runner.iteration(measure=True)
        sync(device)
        runner.result.wall_s = time.perf_counter() - start
        if device.type == "cuda":
            runner.result.peak_allocated = torch.cuda.max_memory_allocated(device)
            runner.result.peak_reserved = torch.cuda.max_memory_reserved(device)
    return [r.result for r in runners]


def attach_trainer(module, device: torch.device) -> None:
    """Give ``module`` a Trainer in the training stage, so that the engine's own
    ``on_after_batch_transfer`` runs as it does inside ``Trainer.fit`` (with augmentation)."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.training = True
    module.trainer = trainer


def ours_prepare(module, device: torch.device):
    """The engine's path from a loader batch to a model input: Lightning's transfer hook (pinned
    memory, non-blocking copies on a GPU), then ``on_after_batch_transfer`` (augment, normalise)."""
    def prepare(batch):
        batch = module.transfer_batch_to_device(batch, device, 0)
        return module.on_after_batch_transfer(batch, 0)
    return prepare


def build_module(cfg: StudioConfig, device: torch.device, seed: int = 0):
    """A randomly initialised ``SegmentationModule`` on ``device`` (channels_last if the config
    asks and the device is a GPU, as the training session does)."""
    from core.model.lightning_module import SegmentationModule

    torch.manual_seed(seed)
    module = SegmentationModule(cfg.to_dict(), load_pretrained=False).to(device)
    if cfg.train.channels_last and device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    return module


def ours_runner(name: str, data, cfg: StudioConfig, device: torch.device, precision: str,
                prefetch: bool = False, sync_loss_every: int = 10,
                compile_backend: str | None = None, compile_mode: str | None = None,
                pin_memory: bool = True, seed: int = 0) -> StepRunner:
    """The engine's path: cached loader (``SliceDataModule``), the module's batch augmentation
    (``augment_uint8`` on the CPU, ``augment`` on a GPU), ``precision`` without a ``GradScaler``
    unless it is fp16, losses read back every ``sync_loss_every`` steps.
    ``pin_memory=False`` turns off the loader's pinned memory (on a GPU), to measure what it buys."""
    module = build_module(cfg, device, seed)
    attach_trainer(module, device)
    if compile_backend:
        module.model = torch.compile(module.model, backend=compile_backend, mode=compile_mode)

    def loader():
        engine_loader = data.train_dataloader()
        engine_loader.pin_memory = engine_loader.pin_memory and pin_memory
        return engine_loader

    batches = endless(loader)
    runner = StepRunner(name, module, ThreadPrefetcher(batches) if prefetch else batches,
                        ours_prepare(module, device), device, precision,
                        cfg.train.accumulate_grad_batches, grad_scaler=precision == "16-mixed",
                        sync_loss_every=sync_loss_every)
    runner.prefetcher = runner.batches if prefetch else None
    return runner


def seed_runner(name: str, data, cfg: StudioConfig, device: torch.device,
                seed: int = 0) -> StepRunner:
    """The seed's path on the same training slices and the same model: per-sample PNG + RLE +
    albumentations loader, fp16 + ``GradScaler`` on a GPU (fp32 on the CPU), loss read every
    step."""
    from benchmarks.seed_pipeline import seed_loader, seed_precision, seed_prepare

    records = [data.index.slices[r] for r in data.train_set.rows]
    module = build_module(cfg, device, seed)
    precision, scaler = seed_precision(device)
    batches = endless(lambda: seed_loader(records, cfg.data.image_size, cfg.train.batch_size, seed))
    runner = StepRunner(name, module, batches, seed_prepare(device), device, precision,
                        cfg.train.accumulate_grad_batches, grad_scaler=scaler, sync_loss_every=1)
    runner.prefetcher = None
    return runner


def close_runners(runners: list[StepRunner]) -> None:
    for runner in runners:
        if getattr(runner, "prefetcher", None) is not None:
            runner.prefetcher.close()


def set_threads(threads: int) -> None:
    """``threads`` > 0: that many torch (and OpenCV) CPU threads; 0: the libraries' defaults.

    One is the default for the CPU scripts: with other processes on a 2-CPU machine, torch's
    multi-threaded (OpenMP) ops stall waiting for a descheduled thread — a 0.2 ms uint8 → float
    copy of a mask batch was measured at 14 ms (median) with 2 threads, 0.17 ms with 1."""
    if threads > 0:
        import cv2

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)


def lightning_throughput(data, cfg: StudioConfig, device: torch.device, precision: str,
                         warmup: int, steps: int) -> LoopResult:
    """The product's path end to end: ``Trainer.fit`` on the engine's module and data module for
    ``warmup + steps`` batches. ``data_s`` is the time between one batch's end and the next one's
    start (fetch, transfer, ``on_after_batch_transfer`` and Lightning's own work in between)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback

    accumulate = cfg.train.accumulate_grad_batches
    total = -(-(warmup + steps) // accumulate) * accumulate
    result = LoopResult("ours: Trainer.fit")

    class Timing(Callback):
        start = last_end = None
        seen = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.start is not None:
                result.data_s += time.perf_counter() - self.last_end

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seen += 1
            if self.start is not None:
                result.images += len(batch["mask"])
                result.steps += 1
            elif self.seen >= total - steps:
                sync(device)
                self.start = time.perf_counter()
            self.last_end = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            sync(device)
            result.wall_s = time.perf_counter() - self.start

    module = build_module(cfg, device)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision,
        max_epochs=-1, max_steps=total // accumulate, accumulate_grad_batches=accumulate,
        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[Timing()],
        benchmark=device.type == "cuda", log_every_n_steps=cfg.train.log_every_n_steps)
    trainer.fit(module, datamodule=data)
    if device.type == "cuda":
        result.peak_allocated = torch.cuda.max_memory_allocated(device)
    return result
