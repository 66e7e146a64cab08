"""Where a model runs and in which precision — one answer for training, prediction, the memory
estimate and Measure.

``train.device`` is ``auto`` (the GPU when CUDA has one), ``cpu`` or ``gpu``; ``train.precision`` is
``auto``, ``32``, ``16-mixed`` or ``bf16-mixed``. ``auto`` precision means bf16-mixed on a GPU that
supports it (no GradScaler, whose per-step sync stalls the loader), 16-mixed on older GPUs and 32 on
the CPU. bf16-mixed also runs on the CPU (autocast to bfloat16); 16-mixed needs a GPU.

torch is imported inside the functions, so a form can import this module cheaply.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from dataclasses import dataclass

from core.errors import ConfigError

ACCELERATORS = ("cpu", "gpu")


@dataclass(frozen=True)
class Placement:
    """A resolved device and precision, as Lightning names them (``accelerator``, ``precision``)."""

    accelerator: str
    precision: str

    @property
    def device(self):
        """The ``torch.device``."""
        import torch

        return torch.device("cuda" if self.accelerator == "gpu" else "cpu")

    def autocast(self):
        """The autocast context that training in this precision runs the forward pass in."""
        import torch

        if self.precision == "32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision.startswith("bf16") else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)


def resolve_precision(setting: str, accelerator: str, bf16_supported: bool) -> str:
    """``train.precision`` as it runs on ``accelerator`` (``cpu`` or ``gpu``)."""
    if setting == "auto":
        if accelerator == "gpu":
            return "bf16-mixed" if bf16_supported else "16-mixed"
        return "32"
    if accelerator == "cpu" and setting == "16-mixed":
        raise ConfigError("train.precision: 16-mixed needs a GPU; use 32 or bf16-mixed on the CPU",
                          key="train.precision")
    return setting


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(setting: str, has_cuda: bool | None = None) -> str:
    """``train.device`` (``auto``, ``cpu``, ``gpu``) as an accelerator of this machine."""
    import torch

    has_cuda = torch.cuda.is_available() if has_cuda is None else has_cuda
    if setting == "gpu" and not has_cuda:
        raise ConfigError("train.device: 'gpu' was chosen but no CUDA GPU is available (is the CUDA "
                          "build of PyTorch installed?); choose auto or cpu", key="train.device")
    return "gpu" if setting == "gpu" or (setting == "auto" and has_cuda) else "cpu"


def resolve_placement(device: str, precision: str) -> Placement:
    """Device and precision on this machine; ``ConfigError`` naming the setting it cannot honour."""
    import torch

    accelerator = resolve_device(device)
    bf16 = accelerator == "gpu" and torch.cuda.is_bf16_supported()
    return Placement(accelerator, resolve_precision(precision, accelerator, bf16))


def compile_problem(accelerator: str = "cpu") -> str | None:
    """Why ``torch.compile`` cannot run here, or None. Its inductor backend turns the model into C++
    on the CPU (it needs a C++ compiler) and into Triton kernels on a GPU."""
    if accelerator == "gpu":
        import importlib.util

        if importlib.util.find_spec("triton") is None:
            return ("train.compile: torch.compile on a GPU needs Triton, which this PyTorch "
                    "build does not have; leave it off")
        return None
    names = ["cl"] if sys.platform == "win32" else [os.environ.get("CXX", ""), "g++", "c++",
                                                      "clang++"]
    if not any(shutil.which(name) for name in names if name):
        compiler = "MSVC's cl.exe (Visual Studio Build Tools)" if sys.platform == "win32" else \
            "g++ or clang++"
        return (f"train.compile: torch.compile on the CPU needs a C++ compiler ({compiler}) and "
                "none was found; leave it off")
    return None


# -- several devices (Lightning's DDP) ---------------------------------------------------------------
def parse_devices(setting: str) -> str | int | list[int]:
    """``train.devices``: ``auto``, a count (``2``) or GPU numbers (``0,1``); ``ConfigError``
    otherwise."""
    text = str(setting).strip().lower()
    if text == "auto":
        return "auto"
    try:
        if "," in text:
            ids = [int(part) for part in text.split(",") if part.strip()]
            if ids and all(i >= 0 for i in ids) and len(set(ids)) == len(ids):
                return ids
        elif int(text) >= 1:
            return int(text)
    except ValueError:
        pass
    raise ConfigError(f"train.devices: {setting!r} is not a device count (1, 2, …), 'auto' or GPU "
                      "numbers such as 0,1", key="train.devices")


def device_count(setting: str, accelerator: str, gpus: int | None = None) -> int:
    """How many processes ``train.devices`` means on this machine for ``accelerator``: ``auto`` is
    every visible GPU (one process on the CPU)."""
    devices = parse_devices(setting)
    if devices == "auto":
        if accelerator != "gpu":
            return 1
        import torch

        return max(1, torch.cuda.device_count() if gpus is None else gpus)
    count = len(devices) if isinstance(devices, list) else devices
    if accelerator == "gpu":
        import torch

        visible = torch.cuda.device_count() if gpus is None else gpus
        wanted = max(devices) + 1 if isinstance(devices, list) else count
        if wanted > visible:
            raise ConfigError(f"train.devices: {setting} asks for {wanted} GPUs but {visible} "
                              "are visible (CUDA_VISIBLE_DEVICES?); choose fewer or auto",
                              key="train.devices")
    return count


def world_size(setting: str, num_nodes: int, accelerator: str) -> int:
    """Processes that train together: devices per machine × machines."""
    return device_count(setting, accelerator) * max(1, int(num_nodes))


def ddp_backend(accelerator: str, platform: str = sys.platform) -> str:
    """NCCL between CUDA GPUs on Linux; gloo on the CPU and on Windows (no NCCL there)."""
    return "nccl" if accelerator == "gpu" and platform.startswith("linux") else "gloo"


RANK_VARIABLES = ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK")


def is_rank_zero(environ=None) -> bool:
    """False in every process but the one that owns the run: the processes Lightning's DDP
    launcher re-executes (``LOCAL_RANK``/``NODE_RANK``), torchrun's (``RANK``) and srun's
    (``SLURM_PROCID``) other ranks. Only rank zero writes the run folder and reports events."""
    environ = os.environ if environ is None else environ
    return all(environ.get(name, "0").strip() in ("", "0") for name in RANK_VARIABLES)


def effective_batch_note(devices: str, num_nodes: int, batch_size: int, accumulate: int,
                         lr: float, accelerator: str) -> str:
    """One line for the form: the slices per optimiser step and what it means for the learning
    rate (the memory estimate stays per device)."""
    try:
        processes = world_size(devices, num_nodes, accelerator)
    except ConfigError:
        processes = 1
    per_step = processes * batch_size * accumulate
    parts = [f"{processes} process{'es' if processes > 1 else ''}"] if processes > 1 else []
    parts += [f"batch {batch_size}"] + ([f"accumulation {accumulate}"] if accumulate > 1 else [])
    text = f"Effective batch: {' × '.join(parts)} = {per_step} slices per optimiser step."
    if processes > 1:
        text += (f" With {processes}× the slices per step of one device, AdamW usually wants about "
                 f"{processes ** 0.5:.1f}× the learning rate (√{processes}: "
                 f"{lr * processes ** 0.5:.2g} instead of {lr:.2g}); the memory estimate is per "
                 "device.")
    return text
