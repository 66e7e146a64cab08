"""Peak GPU memory of training a config, from cached terms, in well under a millisecond.

The estimate is the tensors the step holds at its peak (measured on the CPU as the GPU will hold
them, see :mod:`core.memory.trace`), plus two calibrated GPU terms the CPU cannot see:

* ``GPU_WORKSPACE_FRACTION`` of the step's own bytes (activations and temporaries) for cuDNN and
  cuBLAS workspaces and what the kernels keep beyond their outputs. Calibrated against
  mmsegmentation's published SegFormer training memory (``torch.cuda.max_memory_allocated``) with
  the same recipe traced here; see ``benchmarks/memory.py`` and ``benchmarks/RESULTS.md``.
* ``CUDA_CONTEXT_BYTES`` for the CUDA context (kernels, cuBLAS/cuDNN handles) that every process
  using the GPU pays once.

Free memory is read with ``torch.cuda.mem_get_info`` in this process, after its own CUDA context
exists; so a config fits when everything but the context fits in the free memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from core import devices
from core.config import MAX_BATCH_SIZE, StudioConfig
from core.errors import ConfigError

PARTS = ("weights", "gradients", "optimizer_state", "activations", "workspace", "cuda_context")

GPU_WORKSPACE_FRACTION = 0.20
CUDA_CONTEXT_BYTES = 300 * 2**20
REFERENCE_GPU_BYTES = 8 * 2**30
"""The design's reference GPU (8 GB), used for "largest batch" when this machine has no GPU."""


GIB = 2**30


@dataclass(frozen=True)
class DeviceMemory:
    """The GPU the estimate is compared with. Bytes; ``free_bytes`` as this process sees it."""
    name: str
    total_bytes: int
    free_bytes: int
    bf16: bool


def detect_device() -> DeviceMemory | None:
    """The first CUDA GPU's memory now (``torch.cuda.mem_get_info``), or ``None`` without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return DeviceMemory(torch.cuda.get_device_name(), total, free, torch.cuda.is_bf16_supported())


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak GPU memory of one training step of a config, in bytes.

    ``parts`` (in ``PARTS`` order) add up to ``total_bytes``. ``activation_bytes_per_image`` is what
    the forward pass saves for backward per image (the batch's own share included). ``fits`` is
    ``None`` without a GPU. ``notes`` say what was assumed.
    """
    total_bytes: int
    parts: dict[str, int]
    params: int
    batch_size: int
    image_size: int
    accumulate_grad_batches: int
    precision: str
    activation_bytes_per_image: int
    device_name: str | None = None
    device_total_bytes: int | None = None
    device_free_bytes: int | None = None
    fits: bool | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def budget_bytes(self) -> int | None:
        """What this process may use on the GPU: its free memory plus its own CUDA context."""
        if self.device_free_bytes is None:
            return None
        return self.device_free_bytes + self.parts["cuda_context"]

    def to_json(self) -> dict:
        return {"total_bytes": self.total_bytes, "parts": dict(self.parts), "params": self.params,
                "device_total_bytes": self.device_total_bytes,
                "device_free_bytes": self.device_free_bytes, "fits": self.fits,
                "device_name": self.device_name, "batch_size": self.batch_size,
                "image_size": self.image_size,
                "accumulate_grad_batches": self.accumulate_grad_batches,
                "precision": self.precision,
                "activation_bytes_per_image": self.activation_bytes_per_image,
                "notes": list(self.notes)}


def resolve_precision(precision: str, device: DeviceMemory | None) -> tuple[str, str | None]:
    """``train.precision`` as training on the GPU ``device`` will run it (``core.devices``' rule),
    and a note when it had to be assumed because this machine has no GPU."""
    if precision == "auto" and device is None:
        return "bf16-mixed", ("no GPU here: precision 'auto' is estimated as bf16-mixed, what it "
                              "becomes on a current NVIDIA GPU (16-mixed needs the same memory)")
    return devices.resolve_precision(precision, "gpu", device.bf16 if device else True), None


_DETECT = object()


def estimate_peak_memory(cfg: StudioConfig, device=_DETECT) -> MemoryEstimate:
    """Estimate the peak GPU memory of training ``cfg`` (AdamW, the app's loss), in bytes.

    ``device``: a :class:`DeviceMemory` to compare with, ``None`` for none, or by default the GPU
    of this machine. Fast when the config's terms are cached (the six variants with 3 classes
    always are); otherwise they are measured first on the CPU (seconds to a minute, once).
    """
    if device is _DETECT:
        device = detect_device()
    return _EstimateInputs.of(cfg, device).estimate(cfg.train.batch_size)


def largest_fitting_batch(cfg: StudioConfig, budget_bytes: int | None = None, device=_DETECT) -> int:
    """The largest ``train.batch_size`` (up to the setting's maximum) whose estimate fits.

    ``budget_bytes``: the memory to fit in, CUDA context included; by default what this process may
    use on its GPU (:attr:`MemoryEstimate.budget_bytes`) or, without a GPU, an 8 GB reference GPU.
    Returns 0 when not even one image fits.
    """
    if device is _DETECT:
        device = detect_device()
    inputs = _EstimateInputs.of(cfg, device)
    if budget_bytes is None:
        budget_bytes = (device.free_bytes + CUDA_CONTEXT_BYTES if device is not None
                        else REFERENCE_GPU_BYTES)
    low, high = 0, MAX_BATCH_SIZE + 1  # the estimate grows with the batch: bisect
    while high - low > 1:
        middle = (low + high) // 2
        if inputs.estimate(middle).total_bytes <= budget_bytes:
            low = middle
        else:
            high = middle
    return low


def needs_measuring(cfg: StudioConfig, device=_DETECT) -> bool:
    """Whether estimating ``cfg`` must first measure its terms (seconds to a minute, on the CPU):
    a form should then estimate on a worker thread and say so."""
    from core.memory.terms import TermsKey, architecture_of, cached_terms, precision_family

    if device is _DETECT:
        device = detect_device()
    precision, _ = resolve_precision(cfg.train.precision, device)
    key = TermsKey(architecture_of(cfg.model), cfg.model.mode, cfg.model.num_classes,
                   precision_family(precision))
    return cached_terms(key) is None


@dataclass(frozen=True)
class _EstimateInputs:
    terms: object
    image_size: int
    accumulate: int
    precision: str
    device: DeviceMemory | None
    notes: tuple[str, ...]
    ema: bool = False

    @classmethod
    def of(cls, cfg: StudioConfig, device: DeviceMemory | None) -> "_EstimateInputs":
        from core.memory.terms import terms_for

        if cfg.data.image_size % 32:
            raise ConfigError(f"data.image_size: {cfg.data.image_size} is not a multiple of 32 "
                              f"(SegFormer downsamples by 32); the memory cannot be estimated")
        precision, note = resolve_precision(cfg.train.precision, device)
        notes = [note] if note else []
        terms, key = terms_for(cfg.model, precision)
        if key.architecture != cfg.model.variant:
            notes.append(f"model.pretrained holds a {key.architecture} model, not "
                         f"{cfg.model.variant}; the estimate is for the pretrained one")
        if cfg.train.device == "cpu":
            notes.append("train.device is cpu: this is the memory the same training would need "
                         "on a GPU")
        if cfg.train.ema:
            notes.append("train.ema keeps a second copy of the weights (the average) on the GPU")
        return cls(terms, cfg.data.image_size, cfg.train.accumulate_grad_batches, precision,
                   device, tuple(notes), cfg.train.ema)

    def estimate(self, batch: int) -> MemoryEstimate:
        terms = self.terms
        pixels = self.image_size ** 2
        kinds = terms.peak(batch, pixels, accumulating=self.accumulate > 1)
        step_bytes = kinds["saved"] + kinds["forward"] + kinds["backward"]
        parts = {
            "weights": terms.weight_bytes * (2 if self.ema else 1),  # EMA: the average too
            "gradients": kinds["grad"],
            "optimizer_state": terms.optimizer_state_bytes,
            "activations": kinds["saved"],
            "workspace": kinds["forward"] + kinds["backward"] + GPU_WORKSPACE_FRACTION * step_bytes,
            "cuda_context": CUDA_CONTEXT_BYTES,
        }
        parts = {name: int(round(parts[name])) for name in PARTS}
        total = sum(parts.values())
        estimate = MemoryEstimate(
            total_bytes=total, parts=parts, params=terms.params, batch_size=batch,
            image_size=self.image_size, accumulate_grad_batches=self.accumulate,
            precision=self.precision,
            activation_bytes_per_image=int(round(terms.saved_per_image(pixels))),
            notes=self.notes)
        if self.device is None:
            return estimate
        return replace(estimate, device_name=self.device.name,
                       device_total_bytes=self.device.total_bytes,
                       device_free_bytes=self.device.free_bytes,
                       fits=total <= self.device.free_bytes + CUDA_CONTEXT_BYTES)


def spill_warning(estimate: MemoryEstimate) -> str | None:
    """A warning to show before training when the estimate exceeds the GPU's free memory."""
    if estimate.fits is not False:
        return None
    return (f"The estimated peak of {estimate.total_bytes / GIB:.1f} GB exceeds the "
            f"{estimate.budget_bytes / GIB:.1f} GB this program can use on {estimate.device_name}. "
            f"{SPILL_EXPLANATION} Lower train.batch_size or data.image_size, or choose a smaller "
            f"model.variant or bf16-mixed precision.")


SPILL_EXPLANATION = ("On Windows, NVIDIA drivers since 536.40 then move GPU memory into system RAM "
                     "instead of stopping with an out-of-memory error, and training becomes many "
                     "times slower without saying why.")
