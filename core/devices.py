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
