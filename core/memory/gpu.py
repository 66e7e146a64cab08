"""Measure a config's training memory on the GPU, find the largest batch that fits, and warn when
the GPU is about to spill into system RAM.

"Measure" and "Fit batch size" run real training steps — the app's module and loss, AdamW, the
config's precision, cuDNN benchmark and TF32 as training sets them — on a scratch copy of the model
that is discarded afterwards, so no run or model of the user's is touched. ``torch.compile`` is not
applied (it changes the memory; the estimate and the measurement are for eager training).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable

from core.config import MAX_BATCH_SIZE, StudioConfig, ensure_valid
from core.errors import StudioError
from core.memory.estimate import (CUDA_CONTEXT_BYTES, GIB, SPILL_EXPLANATION, DeviceMemory,
                                  MemoryEstimate, detect_device, estimate_peak_memory,
                                  resolve_precision)

LOW_FREE_BYTES = 256 * 2**20
LOW_FREE_FRACTION = 0.03
"""While training, less free GPU memory than the larger of these two means memory is nearly full."""
SKIP_ABOVE_ESTIMATE = 1.5
"""Fit does not run a batch whose estimate is this many times the budget: on Windows it would spill
into system RAM (slowly) instead of failing."""



def gpu_actions_available() -> tuple[bool, str]:
    """Whether "Measure" and "Fit batch size" can run here, and a sentence saying why (a tooltip)."""
    import torch

    if torch.cuda.is_available():
        return True, f"Runs real training steps on {torch.cuda.get_device_name()}."
    if torch.version.cuda is None:
        return False, ("Needs an NVIDIA GPU and the CUDA build of PyTorch; this PyTorch is the CPU "
                       "build. The estimate above still applies.")
    return False, ("Needs an NVIDIA GPU: PyTorch has CUDA support but finds no GPU (is the NVIDIA "
                   "driver installed?). The estimate above still applies.")


def _require_gpu() -> DeviceMemory:
    available, reason = gpu_actions_available()
    if not available:
        raise StudioError(f"measuring memory runs real training steps on a GPU, and there is none "
                          f"here. {reason}")
    return detect_device()


@dataclass(frozen=True)
class MeasuredMemory:
    """Peak memory of real training steps on the GPU, in bytes, next to the estimate.

    ``max_allocated_bytes``: ``torch.cuda.max_memory_allocated`` (tensors); ``max_reserved_bytes``:
    ``torch.cuda.max_memory_reserved`` (what the caching allocator took from the device; what must
    fit). ``free_bytes``: free memory before the model was moved to the GPU.
    """
    batch_size: int
    accumulate_grad_batches: int
    image_size: int
    precision: str
    max_allocated_bytes: int
    max_reserved_bytes: int
    device_name: str
    total_bytes: int
    free_bytes: int
    estimate: MemoryEstimate

    @property
    def fits(self) -> bool:
        return self.max_reserved_bytes <= self.free_bytes

    def warning(self) -> str | None:
        """A warning when the measured peak exceeded the free memory (it spilled or nearly did)."""
        if self.fits:
            return None
        return (f"Training this config took {self.max_reserved_bytes / GIB:.1f} GB on "
                f"{self.device_name}, more than the {self.free_bytes / GIB:.1f} GB that were free. "
                f"{SPILL_EXPLANATION}")

    def to_json(self) -> dict:
        return {"batch_size": self.batch_size,
                "accumulate_grad_batches": self.accumulate_grad_batches,
                "image_size": self.image_size, "precision": self.precision,
                "max_allocated_bytes": self.max_allocated_bytes,
                "max_reserved_bytes": self.max_reserved_bytes, "device_name": self.device_name,
                "device_total_bytes": self.total_bytes, "device_free_bytes": self.free_bytes,
                "fits": self.fits, "estimate": self.estimate.to_json()}


@contextmanager
def _training_settings():
    """cuDNN benchmark and TF32 matmuls as training sets them; restored afterwards."""
    import torch

    benchmark = torch.backends.cudnn.benchmark
    matmul = torch.get_float32_matmul_precision()
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = benchmark
        torch.set_float32_matmul_precision(matmul)


class _ScratchTrainer:
    """The app's module and AdamW on the GPU; runs training steps and reads the peak memory.

    ``device`` is ``cuda`` except in tests, which run the same steps on the CPU.
    """

    def __init__(self, cfg: StudioConfig, precision: str, device: str = "cuda"):
        import torch

        from core.model.lightning_module import SegmentationModule

        self.cfg = cfg
        self.precision = precision
        self.device = device
        module = SegmentationModule(cfg.to_dict(), load_pretrained=bool(cfg.model.pretrained))
        if cfg.train.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module.to(device).train()
        self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=cfg.train.lr,
                                           weight_decay=cfg.train.weight_decay)
        self.scaler = torch.amp.GradScaler(device, enabled=precision == "16-mixed")

    def peak(self, batch: int, accumulate: int) -> tuple[int, int]:
        """(max allocated, max reserved) bytes of a steady training step, after a warm-up step.

        The warm-up makes AdamW's state and lets cuDNN benchmark its algorithms for these shapes;
        benchmarking may borrow up to all free memory for a moment, which says nothing about what
        training needs, so its cached blocks are released before the measured step.
        """
        import torch

        self._step(batch, accumulate)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        self._step(batch, accumulate)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()

    def _step(self, batch: int, accumulate: int) -> None:
        """One optimizer step; with accumulation two micro-batches show its peak (the gradients
        are kept between them). The batch stays referenced until the step ends, as in Lightning."""
        import torch

        size, classes = self.cfg.data.image_size, self.cfg.model.num_classes
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(self.precision)
        memory_format = (torch.channels_last if self.cfg.train.channels_last
                         else torch.contiguous_format)
        self.optimizer.zero_grad(set_to_none=True)
        for _ in range(min(accumulate, 2)):
            pixel_values = torch.randn(batch, 3, size, size, device=self.device).contiguous(
                memory_format=memory_format)
            masks = (torch.rand(batch, classes, size, size, device=self.device) > 0.5).float()
            with torch.autocast(self.device, dtype=dtype or torch.bfloat16,
                                enabled=dtype is not None):
                loss = self.module.loss(self.module(pixel_values), masks)
            self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def release_step(self) -> None:
        """Free what a finished or failed step left behind, keeping weights and optimizer state."""
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()

    def close(self) -> None:
        import torch

        del self.module, self.optimizer
        gc.collect()
        torch.cuda.empty_cache()


def _scratch_trainer(cfg: StudioConfig) -> tuple[_ScratchTrainer, DeviceMemory, str]:
    import torch

    device = _require_gpu()
    ensure_valid(cfg)
    precision, _ = resolve_precision(cfg.train.precision, device)
    try:
        trainer = _ScratchTrainer(cfg, precision)
    except torch.cuda.OutOfMemoryError:
        trainer = None  # raised below, outside the handler, so the partial model can be freed
    if trainer is None:
        gc.collect()
        torch.cuda.empty_cache()
        raise StudioError(f"model.variant: the {cfg.model.variant.upper()} model alone does not fit "
                          f"in the {device.free_bytes / GIB:.1f} GB free on {device.name}; choose "
                          f"a smaller variant or close other programs that use the GPU")
    return trainer, device, precision


def measure_peak_memory(cfg: StudioConfig) -> MeasuredMemory:
    """Run two real training steps of ``cfg`` on the GPU (a warm-up, then the measured one) and
    return the peak memory of the second.

    Raises ``StudioError`` without a CUDA GPU, or when the config does not fit (out of memory).
    """
    import torch

    with _training_settings():
        trainer, device, precision = _scratch_trainer(cfg)
        try:
            allocated, reserved = trainer.peak(cfg.train.batch_size,
                                               cfg.train.accumulate_grad_batches)
        except torch.cuda.OutOfMemoryError:
            allocated = reserved = None  # raised below, once the failed step's memory is freed
        finally:
            trainer.close()
    if allocated is None:
        raise StudioError(
            f"train.batch_size: {cfg.train.batch_size} images of {cfg.data.image_size} px do not "
            f"fit on {device.name} ({device.free_bytes / GIB:.1f} GB free); lower the batch size "
            f"or use 'Fit batch size'")
    return MeasuredMemory(
        batch_size=cfg.train.batch_size, accumulate_grad_batches=cfg.train.accumulate_grad_batches,
        image_size=cfg.data.image_size, precision=precision, max_allocated_bytes=allocated,
        max_reserved_bytes=reserved, device_name=device.name, total_bytes=device.total_bytes,
        free_bytes=device.free_bytes, estimate=estimate_peak_memory(cfg, device=device))


@dataclass(frozen=True)
class FitResult:
    """The largest batch whose measured peak (reserved bytes) stayed within ``budget_bytes``.

    ``batch_size`` is 0 when not even one image fits. ``trials`` maps each batch tried to its peak
    reserved bytes, or to ``None`` when it ran out of memory or its estimate was far over budget.
    """
    batch_size: int
    accumulate_grad_batches: int
    budget_bytes: int
    device_name: str
    trials: dict[int, int | None] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"batch_size": self.batch_size,
                "accumulate_grad_batches": self.accumulate_grad_batches,
                "budget_bytes": self.budget_bytes, "device_name": self.device_name,
                "trials": {str(b): peak for b, peak in self.trials.items()}}


def fit_batch_size(cfg: StudioConfig, budget_fraction: float = 0.9,
                   keep_effective_batch: bool = False,
                   progress: Callable[[str], None] | None = None) -> FitResult:
    """Find the largest batch whose real training steps stay within ``budget_fraction`` of the
    free GPU memory, by doubling and then bisecting.

    With ``keep_effective_batch`` the batches tried divide the effective batch (batch size ×
    gradient accumulation) and the accumulation makes up the rest, so the optimisation is unchanged.
    Out-of-memory errors are caught and count as "does not fit". ``progress`` receives one line per
    trial. Raises ``StudioError`` without a CUDA GPU.
    """
    import torch

    if not 0 < budget_fraction <= 1:
        raise StudioError(f"budget fraction {budget_fraction} must be in (0, 1], e.g. 0.9 for 90% "
                          f"of the free GPU memory")
    effective = cfg.train.batch_size * cfg.train.accumulate_grad_batches
    if keep_effective_batch:
        candidates = [b for b in range(1, min(effective, MAX_BATCH_SIZE) + 1) if effective % b == 0]
    else:
        candidates = list(range(1, MAX_BATCH_SIZE + 1))

    def accumulation(batch: int) -> int:
        return effective // batch if keep_effective_batch else cfg.train.accumulate_grad_batches

    with _training_settings():
        trainer, device, precision = _scratch_trainer(cfg)
        budget = int(budget_fraction * device.free_bytes)
        trials: dict[int, int | None] = {}

        def fits(index: int) -> bool:
            batch = candidates[index]
            trial_cfg = _with_batch(cfg, batch, accumulation(batch))
            estimate = estimate_peak_memory(trial_cfg, device=device)
            if estimate.total_bytes - CUDA_CONTEXT_BYTES > SKIP_ABOVE_ESTIMATE * budget:
                trials[batch] = None
                verdict = "skipped: its estimate is far over the budget"
            else:
                try:
                    trials[batch] = trainer.peak(batch, accumulation(batch))[1]
                    verdict = f"{trials[batch] / GIB:.2f} GB"
                except torch.cuda.OutOfMemoryError:
                    trials[batch] = None
                    verdict = "out of memory"
                finally:
                    trainer.release_step()
            if progress:
                progress(f"batch {batch}: {verdict} (budget {budget / GIB:.2f} GB)")
            return trials[batch] is not None and trials[batch] <= budget

        try:
            best = _largest_true(fits, len(candidates))
        finally:
            trainer.close()
    batch = candidates[best] if best >= 0 else 0
    return FitResult(batch_size=batch, accumulate_grad_batches=accumulation(batch) if batch else
                     cfg.train.accumulate_grad_batches, budget_bytes=budget,
                     device_name=device.name, trials=trials)


def _largest_true(predicate: Callable[[int], bool], count: int) -> int:
    """The largest index in ``range(count)`` where a monotone (true, then false) predicate holds,
    found by doubling then bisecting; -1 when it holds nowhere."""
    if not predicate(0):
        return -1
    good, bad = 0, None
    while bad is None:
        step = min(2 * good + 1, count - 1)
        if step == good:
            return good
        if predicate(step):
            good = step
        else:
            bad = step
    while bad - good > 1:
        middle = (good + bad) // 2
        if predicate(middle):
            good = middle
        else:
            bad = middle
    return good


def _with_batch(cfg: StudioConfig, batch: int, accumulate: int) -> StudioConfig:
    return replace(cfg, train=replace(cfg.train, batch_size=batch,
                                      accumulate_grad_batches=accumulate))


def memory_pressure_warning() -> str | None:
    """A warning while training when the GPU is nearly out of free memory, else ``None``.

    Meant to be called every few logged steps (one cheap driver query). Free memory that low means
    the next allocation may spill into system RAM on Windows rather than fail.
    """
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    if free >= max(LOW_FREE_BYTES, LOW_FREE_FRACTION * total):
        return None
    return (f"GPU memory is nearly full ({free / 2**20:.0f} MB free of {total / GIB:.1f} GB). "
            f"{SPILL_EXPLANATION} If steps slow down, stop and lower train.batch_size or "
            f"data.image_size.")
