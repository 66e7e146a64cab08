"""Per-step loading: the seed's per-sample path against the engine's cache + batch augmentation.

    python benchmarks/loader.py [--batches 30] [--image-size 288] [--batch-size 6] [--device cpu]

Both produce what a training step consumes: a batch of 6 augmented, normalised float images
``(6, 3, 288, 288)`` and float 0/1 masks on the training device. The seed reads the 16-bit PNG,
decodes three RLE masks, min-max normalises, resizes and runs albumentations on 3-channel float per
sample (DataLoader, workers 0). Ours gathers the batch from the memory-mapped uint8 cache (2.5D
context 2) with one fancy index, then runs the engine's ``on_after_batch_transfer``: on the CPU
that is ``core.data.augment.augment_uint8`` (OpenCV warps and a lookup table on uint8, slice by
slice) and one normalisation to float; on a GPU (``--device cuda``, or ``benchmarks/gpu.py``) it is
the transfer plus the batched torch ``augment`` on the device, and only the gather stays on the
loading thread. One candidate that is not in the engine is timed beside it: A, the torch
augmentation in fewer passes (a drop-in for the GPU path's ``augment`` + normalisation, using the
module's ``pixel_mean``/``pixel_std`` buffers). The pipelines take turns batch by batch; figures
are medians. The last line is ``ratio=<seed ms per slice / ours ms per slice>`` for the engine's
full path.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.common import (attach_trainer, bench_config, build_module, endless,  # noqa: E402
                               header, load_dataset, make_demo, markdown_table, median,
                               ours_prepare, quiet, scratch_home, set_threads, sync)
from benchmarks.seed_pipeline import SeedSlices, seed_loader, seed_prepare  # noqa: E402


def fused_augment(images: torch.Tensor, masks: torch.Tensor, mean: torch.Tensor,
                  std: torch.Tensor, generator: torch.Generator | None = None,
                  max_rotate_deg: float = 15.0, max_scale: float = 0.1, max_shift: float = 0.0625,
                  dropout_holes: int = 4,
                  dropout_size: float = 0.08) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate replacement (not in the engine) for the GPU path of ``on_after_batch_transfer``
    (``augment`` + ``pixel_values``): the same transforms with fewer passes over the batch. The
    flip is folded into the affine matrix, the three mask channels are packed into one for the
    nearest-neighbour warp, brightness/contrast and normalisation are each one multiply-add, and the
    dropout holes are one small batched matrix product instead of a ``(B, holes, S, S)`` tensor.

    ``images`` uint8 ``(B, 3, S, S)``, ``masks`` uint8 0/1 ``(B, 3, S, S)``, on the device;
    ``mean``, ``std``: ``(1, 3, 1, 1)`` on the same device (``SegmentationModule.pixel_mean`` and
    ``pixel_std``). Returns normalised float images and float 0/1 masks."""
    b, _, s, _ = images.shape
    device = images.device
    r = torch.rand(b, 8, device=device, generator=generator) * 2 - 1
    flip = torch.where(r[:, 0] < 0, -1.0, 1.0)
    angle = r[:, 1] * math.radians(max_rotate_deg)
    scale = 1 + r[:, 2] * max_scale
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    shift = r[:, 3:5] * max_shift * 2  # affine_grid works in [-1, 1]
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1) * flip[:, None],
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [b, 1, s, s], align_corners=False)
    x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros",
                      align_corners=False)
    packed = (masks[:, 0] | (masks[:, 1] << 1) | (masks[:, 2] << 2))[:, None].float()
    packed = F.grid_sample(packed, grid, mode="nearest", padding_mode="zeros",
                           align_corners=False).to(torch.uint8)
    bits = torch.arange(masks.shape[1], device=device, dtype=torch.uint8).view(1, -1, 1, 1)
    out_masks = ((packed >> bits) & 1).float()
    contrast = (1 + r[:, 5] * 0.2).view(-1, 1, 1, 1)
    brightness = (r[:, 6] * 0.1).view(-1, 1, 1, 1)
    x = x.mul_(contrast / 255.0).add_(0.5 - 0.5 * contrast + brightness).clamp_(0, 1)
    if dropout_holes:
        size = max(1, int(s * dropout_size))
        corners = (torch.rand(b, dropout_holes, 2, device=device, generator=generator)
                   * (s - size)).long()
        coords = torch.arange(s, device=device).view(1, 1, s)
        in_y = ((coords >= corners[..., :1]) & (coords < corners[..., :1] + size)).float()
        in_x = ((coords >= corners[..., 1:]) & (coords < corners[..., 1:] + size)).float()
        holes = torch.bmm(in_y.transpose(1, 2), in_x) > 0  # (B, S, S)
        x = x.masked_fill_((holes & (r[:, 7] < 0).view(-1, 1, 1))[:, None], 0.0)
    return x.mul_(1 / std).sub_(mean / std), out_masks


def seed_stage_times(records, image_size: int, samples: int) -> dict[str, float]:
    """Mean ms per slice of each stage of the seed's ``__getitem__`` (means, so that they add up:
    random augmentations make some samples much slower than the median)."""
    dataset = SeedSlices(records, image_size)
    stages = {"read PNG + decode 3 RLE masks": [], "min-max, 3 float channels, resize": [],
              "albumentations (float, 3 channels)": [], "to tensors": []}
    names = list(stages)
    for i in range(samples):
        t0 = time.perf_counter()
        image, masks = dataset.read(records[i % len(records)])
        t1 = time.perf_counter()
        image, masks = dataset.preprocess(image, masks)
        t2 = time.perf_counter()
        image, masks = dataset.augment(image, masks)
        t3 = time.perf_counter()
        dataset.to_tensors(image, masks)
        t4 = time.perf_counter()
        for name, seconds in zip(names, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[name].append(seconds)
    return {name: 1e3 * statistics.fmean(times) for name, times in stages.items()}


def measure_loaders(data_dir: Path, cache_root: Path, image_size: int = 288, batch_size: int = 6,
                    batches: int = 30, warmup: int = 2, context: int = 2,
                    device: torch.device = torch.device("cpu"), candidates: bool = True) -> dict:
    """Time the pipelines batch by batch in turns; returns median seconds per batch by row name and
    the seed's per-stage breakdown. Each pipeline ends with a batch of normalised float images and
    float masks on ``device`` (synchronised, so device work is counted)."""
    quiet()
    cfg = bench_config(image_size, batch_size, context=context)
    index, cache, data = load_dataset(data_dir, cfg, cache_root)
    records = [index.slices[r] for r in data.train_set.rows]
    module = build_module(cfg, device)
    attach_trainer(module, device)
    prepare_ours, prepare_seed = ours_prepare(module, device), seed_prepare(device)

    def seed_batch():
        return prepare_seed(next(seed_batches))

    def fused_batch():
        raw = module.transfer_batch_to_device(next(fused_batches), device, 0)
        return fused_augment(raw["image"], raw["mask"], module.pixel_mean, module.pixel_std)

    seed_batches = endless(lambda: seed_loader(records, image_size, batch_size))
    ours_batches = endless(data.train_dataloader)
    fused_batches = endless(data.train_dataloader)
    times: dict[str, list[float]] = {"seed": [], "ours_full": [], "ours_gather": [],
                                     "ours_transfer_augment": []}
    extra = {"fused": fused_batch} if candidates else {}
    times.update({name: [] for name in extra})
    for i in range(warmup + batches):
        t0 = time.perf_counter()
        seed_batch()
        sync(device)
        t1 = time.perf_counter()
        raw = next(ours_batches)
        t2 = time.perf_counter()
        prepare_ours(raw)
        sync(device)
        t3 = time.perf_counter()
        if i >= warmup:
            times["seed"].append(t1 - t0)
            times["ours_full"].append(t3 - t1)
            times["ours_gather"].append(t2 - t1)
            times["ours_transfer_augment"].append(t3 - t2)
        for name, make in extra.items():
            t = time.perf_counter()
            make()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    stage_ms = seed_stage_times(records, image_size, samples=max(12, batches))
    return {"per_batch_s": {k: median(v) for k, v in times.items() if v},
            "seed_mean_batch_s": statistics.fmean(times["seed"]),
            "seed_stages_ms": stage_ms, "batch_size": batch_size, "image_size": image_size,
            "train_slices": len(records), "device": device}


def report(result: dict) -> tuple[str, float]:
    """The tables (Markdown) and the ratio seed / ours (the engine's full path on the device)."""
    b = result["batch_size"]
    per = result["per_batch_s"]
    device = result["device"].type
    seed = per["seed"]
    ours_full = per["ours_full"]
    augment_name = "augment_uint8" if device == "cpu" else "augment"
    if device == "cpu":
        ours_what = "cache gather + OpenCV uint8 augment (augment_uint8) + normalise on the CPU"
    else:
        ours_what = (f"cache gather + transfer + torch augment + normalise on {device} "
                     "(on_after_batch_transfer)")
    spec = [
        ("seed: PNG + RLE + min-max + resize + albumentations (float32, 3 ch) per sample", seed),
        (f"**ours: {ours_what}**", ours_full),
        ("ours, loading thread only: cache gather (all that stays there when the device is "
         "a GPU)", per["ours_gather"]),
        (f"ours, transfer + on_after_batch_transfer ({augment_name} + normalise) alone on "
         f"{device}", per["ours_transfer_augment"]),
    ]
    if "fused" in per:
        spec.append((f"candidate A (not in core; for the GPU path): gather + fused torch "
                     f"augment + normalise on {device}", per["fused"]))
    rows = [[name, 1e3 * s, 1e3 * s / b, b / s, seed / s] for name, s in spec]
    table = markdown_table([f"pipeline (batch {b}, {result['image_size']} px)", "ms/batch",
                            "ms/slice", "slices/s", "× seed"], rows)
    stages = result["seed_stages_ms"]
    stage_rows = [[name, ms] for name, ms in stages.items()]
    stage_rows.append(["DataLoader and collate (the rest of the mean batch time)",
                       max(0.0, 1e3 * result["seed_mean_batch_s"] / b - sum(stages.values()))])
    breakdown = markdown_table(["seed stage", "ms/slice"], stage_rows)
    return (table + "\n\nWhere the seed's time goes (mean per slice, stages timed apart):\n\n"
            + breakdown), seed / ours_full


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=30, help="timed batches per pipeline")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=288)
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--cases", type=int, default=4, help="demo cases (4: 216 slices)")
    parser.add_argument("--slices-per-scan", type=int, default=36)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and OpenCV CPU threads (0: their defaults); see "
                        "common.set_threads")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = torch.device(args.device)
    print(header("Loader: seed's per-sample path vs ours (cache + batch augmentation)",
                 "python benchmarks/loader.py "
                 + " ".join(argv if argv is not None else sys.argv[1:]),
                 device))
    with scratch_home() as home:
        data_dir, gen_s = make_demo(home, args.cases, args.slices_per_scan)
        result = measure_loaders(data_dir, home / "cache", args.image_size, args.batch_size,
                                 args.batches, args.warmup, device=device)
    table, ratio = report(result)
    print(f"Demo data: {args.cases} cases, {args.slices_per_scan} slices per scan (generated in "
          f"{gen_s:.1f} s); {result['train_slices']} training slices; {args.batches} timed batches "
          f"per pipeline after {args.warmup} warm-up, taking turns; medians.\n")
    print(table)
    print()
    print(f"ratio={ratio:.1f}")
    return ratio


if __name__ == "__main__":
    main()
