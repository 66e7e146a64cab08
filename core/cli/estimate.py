"""``main.py estimate``: peak GPU training memory of a config, its parts, and the largest batch.

GB here are 2³⁰ bytes, as nvidia-smi and Windows' Task Manager count them.
"""

from __future__ import annotations

import sys

GIB = 2**30
LABELS = {"weights": "weights", "gradients": "gradients", "optimizer_state": "optimizer state",
          "activations": "activations", "workspace": "workspace", "cuda_context": "CUDA context"}


def add_arguments(parser) -> None:
    parser.add_argument("--config", metavar="FILE.yaml", help="settings file (sections data, model, "
                        "train); default: the built-in defaults")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set model.num_classes=150 (repeatable)")
    parser.add_argument("--budget-gb", type=float, metavar="GB", help="find the largest batch "
                        "that fits in this much GPU memory (default: this GPU's free memory, or an "
                        "8 GB GPU when there is none)")
    parser.add_argument("--measure", action="store_true", help="also run two real training steps "
                        "on the GPU and print their peak memory")
    parser.add_argument("--fit", action="store_true", help="also find the largest batch whose real "
                        "steps stay under 90%% of the free GPU memory")
    parser.add_argument("--json", action="store_true", help="print JSON: total_bytes, parts, "
                        "params, device_total_bytes, device_free_bytes, fits, ...")


def run(args) -> int:
    import json

    from core.config import StudioConfig, apply_overrides, ensure_valid, load_config
    from core.errors import StudioError
    from core.memory import (detect_device, estimate_peak_memory, fit_batch_size,
                             largest_fitting_batch, measure_peak_memory, spill_warning)
    from core.memory.estimate import REFERENCE_GPU_BYTES

    cfg = load_config(args.config) if args.config else StudioConfig()
    cfg = ensure_valid(apply_overrides(cfg, args.set))
    if args.budget_gb is not None and args.budget_gb <= 0:
        raise StudioError(f"--budget-gb: {args.budget_gb} must be above 0, e.g. 8 for an 8 GB GPU")
    device = detect_device()
    estimate = estimate_peak_memory(cfg, device=device)
    if args.budget_gb is not None:
        budget_bytes, where = int(args.budget_gb * GIB), f"{args.budget_gb:g} GB"
    elif device is not None:
        budget_bytes, where = estimate.budget_bytes, f"this GPU's {estimate.budget_bytes / GIB:.1f} GB"
    else:
        budget_bytes, where = REFERENCE_GPU_BYTES, "an 8 GB GPU (there is none here)"
    largest = largest_fitting_batch(cfg, budget_bytes, device=device)
    measured = measure_peak_memory(cfg) if args.measure else None
    fitted = fit_batch_size(cfg) if args.fit else None

    if args.json:
        data = estimate.to_json()
        data["largest_fitting_batch"] = largest
        data["largest_fitting_batch_budget_bytes"] = budget_bytes
        if measured:
            data["measured"] = {k: v for k, v in measured.to_json().items() if k != "estimate"}
        if fitted:
            data["fit"] = fitted.to_json()
        print(json.dumps(data, indent=2))
    else:
        _print_estimate(estimate)
        print(f"largest batch that fits {where}: {largest or 'none (not even one image)'}")
        if measured:
            print(f"measured on {measured.device_name}: {measured.max_allocated_bytes / GIB:.2f} GB "
                  f"allocated, {measured.max_reserved_bytes / GIB:.2f} GB reserved (estimate "
                  f"{(estimate.total_bytes - estimate.parts['cuda_context']) / GIB:.2f} GB "
                  f"without the CUDA context)")
        if fitted:
            print(f"largest batch measured under {fitted.budget_bytes / GIB:.1f} GB: "
                  f"{fitted.batch_size} (gradient accumulation {fitted.accumulate_grad_batches})")
    for warning in (spill_warning(estimate), measured and measured.warning()):
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def _print_estimate(estimate) -> None:
    print(f"peak GPU memory of one training step: {estimate.total_bytes / GIB:.2f} GB "
          f"(batch {estimate.batch_size} × {estimate.image_size}² px, gradient accumulation "
          f"{estimate.accumulate_grad_batches}, precision {estimate.precision}, AdamW)")
    for name, nbytes in estimate.parts.items():
        print(f"  {LABELS[name]:<16} {nbytes / 2**20:10.1f} MB")
    print(f"  {'parameters':<16} {estimate.params:10,d}")
    print(f"  {'saved per image':<16} {estimate.activation_bytes_per_image / 2**20:10.1f} MB")
    if estimate.device_name is not None:
        verdict = "fits" if estimate.fits else "does NOT fit"
        print(f"GPU {estimate.device_name}: {estimate.device_total_bytes / GIB:.1f} GB, "
              f"{estimate.device_free_bytes / GIB:.1f} GB free: {verdict}")
    for note in estimate.notes:
        print(f"note: {note}")
