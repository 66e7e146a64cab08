"""Count, on the CPU, the memory one training step would hold on a CUDA device.

A real forward and backward pass runs on small CPU tensors inside a dispatch mode that sees every
tensor the step creates, rounds it the way PyTorch's CUDA caching allocator does (512-byte blocks),
and follows it until it is freed. Each storage is put in one of four kinds:

* ``saved``    made in the forward pass and saved by autograd for the backward pass (activations);
* ``forward``  made in the forward pass and not saved (the batch, the loss, outputs still referenced);
* ``backward`` made in the backward pass (gradients of activations, temporaries);
* ``grad``     a parameter's gradient.

The peak of the live total, and the mix of kinds at that moment, is what the estimate is built from.
Weights and optimizer state exist before the step and are computed exactly elsewhere.

CPU autocast keeps layer norms, sums, softmaxes and bilinear upsampling in 16-bit, while CUDA
autocast runs them in float32 (``AT_FORALL_FP32`` in ATen's ``autocast_mode.h``), and CPU dropout
keeps a float mask where CUDA keeps a bool one. :class:`CudaOpPolicy` applies the CUDA behaviour
here, so what is counted is what the GPU will hold.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map_only
from torch.utils.weak import WeakIdKeyDictionary

from core.memory.kinds import KINDS

CUDA_BLOCK_BYTES = 512
"""The CUDA caching allocator rounds every allocation up to a multiple of this."""

AUTOCAST_DTYPES = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}

# The functions this model and its loss call that CUDA autocast runs in float32 and CPU autocast
# does not (ATen's AT_FORALL_FP32 list: inputs are cast; AT_FORALL_FP32_SET_OPT_DTYPE: the op is
# asked for a float32 result). tests/test_memory.py checks that no op of those lists sees a 16-bit
# input during a step under this policy.
_CAST_TO_FLOAT32 = {
    F.layer_norm, torch.layer_norm, F.group_norm, F.interpolate, torch.exp, torch.Tensor.exp,
    torch.log, torch.Tensor.log, torch.pow, torch.Tensor.pow, torch.Tensor.__pow__, torch.rsqrt,
    torch.Tensor.rsqrt, F.softplus, F.normalize,
}
_FLOAT32_RESULT = {
    torch.sum, torch.Tensor.sum, F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax,
    torch.log_softmax, torch.Tensor.log_softmax, torch.cumsum, torch.Tensor.cumsum, torch.prod,
    torch.Tensor.prod,
}
_HALF = (torch.float16, torch.bfloat16)


def _to_float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in _HALF else t


class CudaOpPolicy(TorchFunctionMode):
    """Run a CPU step with CUDA autocast's dtype policy and CUDA's dropout mask format."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if torch.is_autocast_enabled("cpu"):
            if func in _CAST_TO_FLOAT32:
                args, kwargs = tree_map_only(torch.Tensor, _to_float32, (args, kwargs))
                with torch.autocast("cpu", enabled=False):
                    return func(*args, **kwargs)
            if func in _FLOAT32_RESULT and kwargs.get("dtype") is None and any(
                    t.dtype in _HALF for t in tree_leaves(args) if isinstance(t, torch.Tensor)):
                return func(*args, **{**kwargs, "dtype": torch.float32})
        if func is F.dropout:
            return _fused_dropout(*args, **kwargs)
        return func(*args, **kwargs)


def _fused_dropout(input, p=0.5, training=True, inplace=False):
    """CUDA's dropout (``native_dropout``: a bool mask is saved); CPU's saves a float mask."""
    if not training or p == 0.0:
        return input
    return torch.native_dropout(input, p, True)[0]


def _block_bytes(nbytes: int) -> int:
    return -(-nbytes // CUDA_BLOCK_BYTES) * CUDA_BLOCK_BYTES


@dataclass
class StepTimeline:
    """The memory of one step, cut into segments at every module call and every finished gradient.

    The cuts fall at the same places for every batch and image size, so each segment's peak can be
    fitted across sizes. ``segments[i]`` holds two dicts of bytes by kind: at the segment's highest
    live total (gradients as made in this step, as without gradient accumulation), and at its
    highest total of everything except gradients (with accumulation the full gradients are alive
    throughout and add to that). ``after_backward``: bytes by kind alive when the backward pass has
    finished and the batch is still referenced, as when the optimizer steps. ``saved_total``: every
    byte saved for backward in the step.
    """
    segments: list[tuple[dict[str, int], dict[str, int]]] = field(default_factory=list)
    after_backward: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    saved_total: int = 0


class _LiveTensors(TorchDispatchMode):
    """Follows every storage made inside it until it is freed, and the peaks of the live bytes."""

    def __init__(self):
        super().__init__()
        self._by_storage = WeakIdKeyDictionary()
        self.live = dict.fromkeys(KINDS, 0)
        self.phase = "forward"
        self.timeline = StepTimeline()
        self._peak = dict(self.live)
        self._peak_without_grads = dict(self.live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        if any([self._add(t, inputs) for t in tree_leaves(out) if isinstance(t, torch.Tensor)]):
            self._update_peaks()
        return out

    def _add(self, t: torch.Tensor, inputs: set[int]) -> bool:
        storage = t.untyped_storage()
        nbytes = _block_bytes(storage.nbytes())
        entry = self._by_storage.get(storage)
        if entry is not None:
            if entry[0] == nbytes:
                return False
            self.live[entry[1]] += nbytes - entry[0]  # resized in place (an out= argument)
            entry[0] = nbytes
            return True
        if storage.data_ptr() in inputs:
            return False  # a view of, or an in-place op on, a tensor made outside (a weight)
        entry = [nbytes, self.phase]
        self._by_storage[storage] = entry
        weakref.finalize(storage, self._free, entry)
        self.live[entry[1]] += nbytes
        return nbytes > 0

    def _free(self, entry: list) -> None:
        self.live[entry[1]] -= entry[0]
        entry[0] = 0

    def mark(self, t: torch.Tensor, kind: str, only_from: str) -> None:
        """Move ``t``'s storage from kind ``only_from`` to ``kind`` (no-op for other storages)."""
        entry = self._by_storage.get(t.untyped_storage())
        if entry is not None and entry[1] == only_from:
            self.live[only_from] -= entry[0]
            self.live[kind] += entry[0]
            if kind == "saved":
                self.timeline.saved_total += entry[0]
            entry[1] = kind

    def _update_peaks(self) -> None:
        total = sum(self.live.values())
        if total > sum(self._peak.values()):
            self._peak = dict(self.live)
        peak = self._peak_without_grads
        if total - self.live["grad"] > sum(peak.values()) - peak["grad"]:
            self._peak_without_grads = dict(self.live)

    def cut(self, *_args) -> None:
        """End the current segment (a hook: module calls and finished gradients call it)."""
        self.timeline.segments.append((self._peak, self._peak_without_grads))
        self._peak = dict(self.live)
        self._peak_without_grads = dict(self.live)


def trace_step(model: torch.nn.Module, make_batch: Callable[[], tuple],
               loss_fn: Callable[..., torch.Tensor], precision: str) -> StepTimeline:
    """Run one forward and backward pass and return the memory it held over time.

    ``make_batch()`` returns ``(pixel_values, target)``; it runs inside the count since the batch is
    on the device during the step. ``loss_fn(model(pixel_values), target)`` is the training loss.
    ``precision`` is ``32``, ``16-mixed`` or ``bf16-mixed``. Gradients must be ``None`` on entry
    (as after ``zero_grad(set_to_none=True)``) and are left in place.
    """
    dtype = AUTOCAST_DTYPES[precision]
    tracker = _LiveTensors()

    def grad_done(param):
        tracker.mark(param.grad, "grad", only_from="backward")
        tracker.cut()

    def pack(t):
        tracker.mark(t, "saved", only_from="forward")
        return t

    hooks = [p.register_post_accumulate_grad_hook(grad_done)
             for p in model.parameters() if p.requires_grad]
    hooks += [register_module_forward_pre_hook(tracker.cut),
              register_module_forward_hook(tracker.cut)]
    try:
        with tracker, CudaOpPolicy():
            pixel_values, target = make_batch()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                    torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = loss_fn(model(pixel_values), target)
            tracker.cut()
            tracker.phase = "backward"
            loss.backward()
            tracker.cut()
            tracker.timeline.after_backward = dict(tracker.live)
            del loss, pixel_values, target
    finally:
        for hook in hooks:
            hook.remove()
    return tracker.timeline


def trace_optimizer_step(optimizer: torch.optim.Optimizer) -> int:
    """Peak bytes of the temporaries one ``optimizer.step()`` makes (its state must exist already)."""
    tracker = _LiveTensors()
    with tracker:
        optimizer.step()
    tracker.cut()
    return sum(tracker.timeline.segments[0][0].values())
