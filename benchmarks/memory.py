"""The memory estimate against published and measured GPU training memory, as Markdown tables.

    python benchmarks/memory.py          estimate vs mmsegmentation's published SegFormer memory
    python benchmarks/memory.py --gpu    estimate vs real training steps on this GPU (< 5 minutes)

mmsegmentation's "Mem (GB)" (configs/segformer/README.md; read here as GiB) is the largest
``torch.cuda.max_memory_allocated`` its training logged: fp32, AdamW, 512×512 batch 2 with 150
classes (ADE20K), 1024×1024 batch 1 with 19 classes (Cityscapes). It trains differently from this
app: its attention materialises the attention weights (``nn.MultiheadAttention``), and its loss is
cross-entropy over full-size logits. So each row is also traced with that recipe ("like for like":
the same HF SegFormer with eager attention and cross-entropy) — the gap between that trace and the
published figure is what the GPU adds, the calibration of ``GPU_WORKSPACE_FRACTION``. "app" is the
app's own estimate for the same sizes and classes (SDPA attention, CE + Dice loss), for scale.
Figures exclude the CUDA context, as max_memory_allocated does.

The first run traces the 12 mmseg-like recipes and the app's configs with 150 and 19 classes on the
CPU (minutes); they are kept in the user cache, so later runs take seconds. The last line is
``ratio=<mean estimate / published>`` (or ``/ measured allocated`` with ``--gpu``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import header, markdown_table, quiet  # noqa: E402

GIB = 2**30
MMSEG_ROWS = [
    # variant, crop size, batch per GPU, classes, published Mem (GB)
    ("b0", 512, 2, 150, 2.1), ("b1", 512, 2, 150, 2.6), ("b2", 512, 2, 150, 3.6),
    ("b3", 512, 2, 150, 4.8), ("b4", 512, 2, 150, 6.1), ("b5", 512, 2, 150, 7.2),
    ("b5", 640, 2, 150, 11.5),
    ("b0", 1024, 1, 19, 3.64), ("b1", 1024, 1, 19, 4.49), ("b2", 1024, 1, 19, 7.42),
    ("b3", 1024, 1, 19, 10.86), ("b4", 1024, 1, 19, 15.07), ("b5", 1024, 1, 19, 18.00),
]
GPU_GRID = [(variant, size, batch, precision) for variant in ("b0", "b2") for size in (288, 512)
            for batch in (2, 8) for precision in ("32", "bf16-mixed")]


def mmseg_recipe(variant: str, num_classes: int):
    """HF SegFormer trained as mmsegmentation does: ``(module, make_batch, loss_fn)``."""
    import torch.nn.functional as F

    from core.config import ModelConfig
    from core.model.factory import build_segformer

    class MmsegLikeSegformer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = build_segformer(ModelConfig(variant=variant, num_classes=num_classes),
                                         warn_random=False)
            self.model.set_attn_implementation("eager")  # like nn.MultiheadAttention

        def forward(self, pixel_values):
            logits = self.model(pixel_values=pixel_values).logits
            return F.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear",
                                 align_corners=False)

    def make_batch(batch: int, size: int):
        return (torch.randn(batch, 3, size, size),
                torch.randint(0, num_classes, (batch, size, size)))

    def loss_fn(logits, labels):
        return F.cross_entropy(logits, labels, ignore_index=255)

    return MmsegLikeSegformer(), make_batch, loss_fn


def mmseg_terms(variant: str, num_classes: int):
    """The mmseg-like recipe's terms, traced once (attention weights: memory ∝ pixels²)."""
    from core.memory.terms import TermsKey, cached_terms, measure_terms, remember_terms

    key = TermsKey(f"mmseg-like-{variant}", "cross-entropy", num_classes, "32")
    terms = cached_terms(key)
    if terms is None:
        started = time.perf_counter()
        terms = measure_terms(*mmseg_recipe(variant, num_classes), "32", quadratic=True)
        remember_terms(key, terms)
        print(f"(traced the mmseg-like {variant.upper()} with {num_classes} classes in "
              f"{time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return terms


def step_peak(terms, batch: int, size: int) -> tuple[float, float]:
    """(traced peak, its activation-dependent bytes) of a step without accumulation, in bytes."""
    kinds = terms.peak(batch, size * size, accumulating=False)
    step = kinds["saved"] + kinds["forward"] + kinds["backward"]
    return terms.weight_bytes + terms.optimizer_state_bytes + sum(kinds.values()), step


def without_context(estimate) -> int:
    return estimate.total_bytes - estimate.parts["cuda_context"]


def app_config(variant: str, size: int, batch: int, classes: int = 3, precision: str = "32",
               mode: str = "multilabel"):
    from core.config import StudioConfig, apply_overrides

    return apply_overrides(StudioConfig(), [
        f"model.variant={variant}", f"model.mode={mode}", f"model.num_classes={classes}",
        f"data.image_size={size}", f"train.batch_size={batch}", f"train.precision={precision}"])


def mmseg_table() -> float:
    from core.memory import estimate_peak_memory
    from core.memory.estimate import GPU_WORKSPACE_FRACTION

    rows, ratios = [], []
    for variant, size, batch, classes, published_gb in MMSEG_ROWS:
        terms = mmseg_terms(variant, classes)
        traced, step = step_peak(terms, batch, size)
        estimate = traced + GPU_WORKSPACE_FRACTION * step
        published = published_gb * GIB
        app = without_context(estimate_peak_memory(
            app_config(variant, size, batch, classes, mode="multiclass"), device=None))
        ratios.append(estimate / published)
        rows.append([variant.upper(), f"{size}²", batch, classes, published_gb, traced / GIB,
                     100 * (traced / published - 1), estimate / GIB,
                     100 * (estimate / published - 1), app / GIB])
    print(header("Memory estimate vs mmsegmentation's published SegFormer training memory",
                 "python benchmarks/memory.py", torch.device("cpu")))
    print(markdown_table(
        ["model", "crop", "batch", "classes", "published GB", "traced GB", "traced error %",
         "estimate GB", "estimate error %", "app GB"], rows))
    print(f"\nfp32, AdamW. traced: the mmseg-like recipe (eager attention, cross-entropy) traced on "
          f"the CPU; estimate: traced + GPU workspace ({GPU_WORKSPACE_FRACTION:.2f} × the step's "
          f"own bytes); app: the app's estimate for multiclass with these classes (SDPA "
          f"attention, CE + Dice). GB = 2^30 bytes, CUDA context excluded.")
    mean = sum(ratios) / len(ratios)
    print(f"ratio={mean:.3f}")
    return mean


def gpu_table() -> float:
    from core.memory import detect_device, estimate_peak_memory, measure_peak_memory
    from core.memory.estimate import CUDA_CONTEXT_BYTES, GPU_WORKSPACE_FRACTION

    device = detect_device()
    if device is None:
        raise SystemExit("--gpu needs a CUDA GPU; there is none here")
    used_at_start = device.total_bytes - device.free_bytes
    rows, ratios = [], []
    for variant, size, batch, precision in GPU_GRID:
        cfg = app_config(variant, size, batch, precision=precision)
        started = time.perf_counter()
        measured = measure_peak_memory(cfg)
        estimate = without_context(estimate_peak_memory(cfg, device=device))
        ratios.append(estimate / measured.max_allocated_bytes)
        rows.append([variant.upper(), size, batch, precision, estimate / GIB,
                     measured.max_allocated_bytes / GIB,
                     100 * (estimate / measured.max_allocated_bytes - 1),
                     measured.max_reserved_bytes / GIB,
                     100 * (estimate / measured.max_reserved_bytes - 1),
                     time.perf_counter() - started])
        print(f"{variant} {size} {batch} {precision}: done", file=sys.stderr, flush=True)
    recipe_rows = []
    for variant in ("b0", "b2"):
        traced, step = step_peak(mmseg_terms(variant, 150), 2, 512)
        first, steady = measure_recipe_on_gpu(*mmseg_recipe(variant, 150), batch=2, size=512)
        recipe_rows.append([variant.upper(), traced / GIB, first / GIB, steady / GIB,
                            (steady - traced) / step])
    print(header("Memory estimate vs real training steps on this GPU",
                 "python benchmarks/memory.py --gpu", torch.device("cuda")))
    print(f"GPU memory in use right after CUDA started (the context, and other processes): "
          f"{used_at_start / 2**20:.0f} MB; the estimate assumes {CUDA_CONTEXT_BYTES / 2**20:.0f} MB."
          f"\n")
    print(markdown_table(
        ["model", "size", "batch", "precision", "estimate GB", "allocated GB", "error vs alloc %",
         "reserved GB", "error vs reserved %", "seconds"], rows))
    print(f"\nThe app's module and loss (multilabel, 3 classes), AdamW, cuDNN benchmark and TF32 on; "
          f"a warm-up step, then torch.cuda.max_memory_allocated / max_memory_reserved of the "
          f"next. Estimate without the CUDA context; GPU workspace fraction "
          f"{GPU_WORKSPACE_FRACTION:.2f}.\n")
    print(markdown_table(["mmseg-like", "traced GB", "first step GB", "steady step GB",
                          "workspace fraction matching the steady step"], recipe_rows))
    print("\nfp32, 512², batch 2, 150 classes, eager attention, cross-entropy: the traced count "
          "against max_memory_allocated of the first step (cuDNN benchmark trials included, as "
          "mmsegmentation's logs count it) and of a steady step.")
    mean = sum(ratios) / len(ratios)
    print(f"ratio={mean:.3f}")
    return mean


def measure_recipe_on_gpu(module, make_batch, loss_fn, batch: int, size: int) -> tuple[int, int]:
    """max_memory_allocated (bytes) of a first and of a steady fp32 AdamW step of a recipe."""
    module = module.cuda().train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    torch.backends.cudnn.benchmark = True
    peaks = []
    for _ in range(2):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        optimizer.zero_grad(set_to_none=True)
        pixel_values, target = (t.cuda() for t in make_batch(batch, size))
        loss_fn(module(pixel_values), target).backward()
        optimizer.step()
        del pixel_values, target
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated())
    del module, optimizer
    torch.cuda.empty_cache()
    return peaks[0], peaks[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="compare with real steps on this GPU "
                        "instead of mmsegmentation's table")
    args = parser.parse_args()
    quiet()
    if args.gpu:
        gpu_table()
    else:
        mmseg_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
