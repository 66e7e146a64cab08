"""GPU memory of training a config: a computed estimate, and measurements on a real GPU.

``estimate_peak_memory(cfg)`` adds up what a training step holds at its peak — weights, gradients,
AdamW state, activations saved for backward, workspace, CUDA context — from terms measured once per
model configuration on the CPU (shipped for the six variants; measured and cached for others), so a
form can call it on every change. ``measure_peak_memory`` and ``fit_batch_size`` run real training
steps on the GPU; ``gpu_actions_available`` says whether they can run here and why not.

Heavy imports (torch, transformers) happen inside the functions, so importing this is cheap.
"""

from core.memory.estimate import (PARTS, DeviceMemory, MemoryEstimate, detect_device,
                                  estimate_peak_memory, largest_fitting_batch, needs_measuring,
                                  resolve_precision, spill_warning)
from core.memory.gpu import (FitResult, MeasuredMemory, fit_batch_size, gpu_actions_available,
                             measure_peak_memory, memory_pressure_warning)

__all__ = [
    "PARTS", "DeviceMemory", "FitResult", "MeasuredMemory", "MemoryEstimate",
    "detect_device", "estimate_peak_memory", "fit_batch_size", "gpu_actions_available",
    "largest_fitting_batch", "measure_peak_memory", "memory_pressure_warning", "needs_measuring",
    "resolve_precision", "spill_warning",
]
