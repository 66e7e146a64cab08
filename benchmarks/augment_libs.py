"""Augmentation: the engine's hand-written code against albumentations and kornia (issue 13).

    OMP_NUM_THREADS=1 python benchmarks/augment_libs.py [--repeats 30] [--threads 1]

Same seeded random batches (uint8 images ``(B, 3, S, S)``, uint8 0/1 masks ``(B, 3, S, S)``; batch
8 and 16, S = 128 and 256) go through two pairs, which take turns batch by batch (figures are
medians over the repeats, in ms per slice):

* (a) the CPU path: ``core.data.augment.augment_uint8`` (OpenCV on uint8, one slice at a time)
  against an albumentations ``Compose`` (HorizontalFlip p=0.5, Affine with the same ranges, bilinear
  image / nearest mask, constant-0 border, RandomBrightnessContrast, CoarseDropout 4 holes of 8 %,
  p=0.5, image only) called per sample on uint8 HWC arrays with the three organ masks as one HWC
  ``mask``. The library row includes the CHW → HWC → CHW copies that the engine's layout would need;
  a second row has them done outside the timing.
* (b) the device path: ``core.data.augment.augment`` (batched torch) against a
  ``kornia.augmentation.AugmentationSequential`` on the same float tensors. Both run on the CPU here
  as a stand-in for the GPU (kornia, like ours, is a handful of batched tensor ops; the ratio on a
  GPU may differ).

The transforms are equivalent in kind and range, not bit for bit: albumentations and kornia scale
contrast around 0 (``alpha·x``), ours around 0.5; kornia has no multi-hole dropout, so it gets four
``RandomErasing`` of 8 % × 8 % with p=0.5 each (two holes expected, as ours), in a second
``AugmentationSequential`` on the image alone (in the joint one it erases the masks too). Then a
geometric check: fixed warps (identity, a pure 90° rotation, 10° with scale 1.05, a ×1.3 zoom) of
a small asymmetric test image and its mask through each of the four, reporting where the image's
intensity centroid and the mask's centroid land against where the warp should put them (in
pixels). ``ratio=`` lines are ours / library per pair and size: above 1 means the library is
faster.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import header, markdown_table, median, set_threads  # noqa: E402
from core.data import augment as engine  # noqa: E402

CONFIGS = ((8, 128), (16, 128), (8, 256), (16, 256))  # (batch, size)
# The engine's ranges (its AugmentParams defaults where the module has them).
_P = getattr(engine, "DEFAULT_AUGMENT", None)
ROTATE = getattr(_P, "max_rotate_deg", 15.0)
SCALE = getattr(_P, "max_scale", 0.1)
SHIFT = getattr(_P, "max_shift", 0.0625)
CONTRAST = getattr(_P, "max_contrast", 0.2)
BRIGHTNESS = getattr(_P, "max_brightness", 0.1)
HOLES = getattr(_P, "dropout_holes", 4)
HOLE = getattr(_P, "dropout_size", 0.08)
DROPOUT_P = getattr(_P, "dropout_p", 0.5)
FLIP_P = getattr(_P, "flip_p", 0.5)


def _engine_args(overrides: dict) -> tuple:
    """Positional ``params`` for the engine's functions (``AugmentParams``), or nothing if the
    module still takes the ranges as keyword arguments."""
    if hasattr(engine, "AugmentParams"):
        return (engine.AugmentParams(**overrides),), {}
    return (), overrides


def augment_uint8(images, masks, rng, **overrides):
    args, kwargs = _engine_args(overrides)
    return engine.augment_uint8(images, masks, rng, *args, **kwargs)


def augment(images, masks, generator=None, **overrides):
    args, kwargs = _engine_args(overrides)
    return engine.augment(images, masks, generator, *args, **kwargs)


# -- the library pipelines ------------------------------------------------------------------------
def albumentations_compose(seed: int = 0):
    import albumentations as A

    return A.Compose([
        A.HorizontalFlip(p=FLIP_P),
        A.Affine(rotate=(-ROTATE, ROTATE), scale=(1 - SCALE, 1 + SCALE),
                 translate_percent=(-SHIFT, SHIFT), interpolation=cv2.INTER_LINEAR,
                 mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT, fill=0,
                 fill_mask=0, p=1.0),
        A.RandomBrightnessContrast(brightness_limit=BRIGHTNESS, contrast_limit=CONTRAST, p=1.0),
        A.CoarseDropout(num_holes_range=(HOLES, HOLES), hole_height_range=(HOLE, HOLE),
                        hole_width_range=(HOLE, HOLE), fill=0, fill_mask=None, p=DROPOUT_P),
    ], seed=seed)


def albumentations_batch(compose, images: np.ndarray, masks: np.ndarray):
    """Per sample on HWC uint8, from and back to the engine's ``(B, 3, S, S)`` layout."""
    out_images, out_masks = np.empty_like(images), np.empty_like(masks)
    for k in range(len(images)):
        result = compose(image=np.ascontiguousarray(images[k].transpose(1, 2, 0)),
                         mask=np.ascontiguousarray(masks[k].transpose(1, 2, 0)))
        out_images[k] = result["image"].transpose(2, 0, 1)
        out_masks[k] = result["mask"].transpose(2, 0, 1)
    return out_images, out_masks


def albumentations_hwc(compose, images_hwc: list, masks_hwc: list):
    """Per sample on HWC arrays prepared beforehand (no layout copies timed)."""
    return [compose(image=i, mask=m) for i, m in zip(images_hwc, masks_hwc)]


def kornia_sequential(erasing_p: float = DROPOUT_P):
    """Geometry and intensity on image and masks together, then dropout on the image alone:
    inside an ``AugmentationSequential`` with a ``mask`` key, kornia's ``RandomErasing`` erases
    the masks too (measured), unlike ours and albumentations' ``CoarseDropout(fill_mask=None)``."""
    import kornia.augmentation as K

    area = HOLE * HOLE
    joint = K.AugmentationSequential(
        K.RandomHorizontalFlip(p=FLIP_P),
        K.RandomAffine(degrees=ROTATE, translate=(SHIFT, SHIFT), scale=(1 - SCALE, 1 + SCALE),
                       resample="bilinear", padding_mode="zeros", align_corners=False, p=1.0),
        K.RandomBrightness(brightness=(1 - BRIGHTNESS, 1 + BRIGHTNESS), p=1.0),
        K.RandomContrast(contrast=(1 - CONTRAST, 1 + CONTRAST), p=1.0),
        data_keys=["input", "mask"])  # masks: nearest by default (extra_args)
    dropout = K.AugmentationSequential(
        *[K.RandomErasing(scale=(area, area), ratio=(1.0, 1.0), value=0.0, p=erasing_p)
          for _ in range(HOLES)], data_keys=["input"])

    def run(images: torch.Tensor, masks: torch.Tensor):
        images, masks = joint(images, masks)
        return dropout(images), masks

    return run


# -- timing ---------------------------------------------------------------------------------------
def make_batches(batch: int, size: int, count: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        images = rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8)
        masks = (rng.random((batch, 3, size, size)) < 0.2).astype(np.uint8)
        out.append((images, masks))
    return out


def time_pair(calls: dict, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each entry, taking turns (the order flips every round)."""
    names = list(calls)
    times = {n: [] for n in names}
    for i in range(warmup + repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            calls[name](i)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {n: median(v) for n, v in times.items()}


def measure(batch: int, size: int, repeats: int, warmup: int, seed: int) -> dict[str, float]:
    batches = make_batches(batch, size, 4, seed)
    hwc = [([np.ascontiguousarray(i.transpose(1, 2, 0)) for i in im],
            [np.ascontiguousarray(m.transpose(1, 2, 0)) for m in ms]) for im, ms in batches]
    floats = [(torch.from_numpy(im).float() / 255, torch.from_numpy(ms).float())
              for im, ms in batches]
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    compose, sequential = albumentations_compose(seed), kornia_sequential()

    def pick(items, i):
        return items[i % len(items)]

    cpu = time_pair({
        "ours augment_uint8": lambda i: augment_uint8(*pick(batches, i), rng),
        "albumentations": lambda i: albumentations_batch(compose, *pick(batches, i)),
        "albumentations, HWC": lambda i: albumentations_hwc(compose, *pick(hwc, i)),
    }, repeats, warmup)
    with torch.inference_mode():
        tensor = time_pair({
            "ours augment": lambda i: augment(*pick(floats, i), generator=generator),
            "kornia": lambda i: sequential(*pick(floats, i)),
        }, repeats, warmup)
    return {**cpu, **tensor}


# -- geometric convention -------------------------------------------------------------------------
class ScriptedRng:
    """Stands in for ``np.random.Generator`` in ``augment_uint8``: a fixed rotation and scale, no
    shift, no flip, brightness/contrast unchanged (dropout is switched off by the caller)."""

    def __init__(self, angle: float, scale: float):
        self.values = [angle, scale - 1.0, np.zeros(2), 0.0, 0.0]

    def uniform(self, low=0.0, high=1.0, size=None):
        return self.values.pop(0)

    def random(self):
        return 0.9


def warp_ours_uint8(image, mask, angle, scale):
    out = augment_uint8(image[None], mask[None], ScriptedRng(angle, scale), dropout_holes=0)
    return out[0][0, 0].astype(np.float64), out[1][0, 0]


def warp_ours_torch(image, mask, angle, scale):
    # augment draws: flip, angle, scale, shift, contrast, brightness; r = 1 gives the maximum.
    script = [0.9, 1.0, 1.0, 0.5, 0.5, 0.5]
    real = torch.rand

    def fake(*shape, device=None, generator=None):
        return torch.full(shape, script.pop(0), device=device)

    with mock.patch.object(torch, "rand", fake):
        img, msk = augment(torch.from_numpy(image[None]).float() / 255,
                           torch.from_numpy(mask[None]).float(), max_rotate_deg=angle,
                           max_scale=scale - 1.0, dropout_holes=0)
    assert torch.rand is real
    return img[0, 0].numpy().astype(np.float64) * 255, msk[0, 0].numpy().round().astype(np.uint8)


def warp_albumentations(image, mask, angle, scale):
    import albumentations as A

    affine = A.Affine(rotate=(angle, angle), scale=(scale, scale), translate_percent=(0.0, 0.0),
                      interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                      border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0)
    out = affine(image=image.transpose(1, 2, 0).copy(), mask=mask.transpose(1, 2, 0).copy())
    return out["image"][..., 0].astype(np.float64), out["mask"][..., 0]


def warp_kornia(image, mask, angle, scale):
    import kornia.augmentation as K

    seq = K.AugmentationSequential(
        K.RandomAffine(degrees=(angle, angle), scale=(scale, scale), resample="bilinear",
                       padding_mode="zeros", align_corners=False, p=1.0),
        data_keys=["input", "mask"])
    img, msk = seq(torch.from_numpy(image[None]).float() / 255,
                   torch.from_numpy(mask[None]).float())
    return img[0, 0].numpy().astype(np.float64) * 255, msk[0, 0].numpy().round().astype(np.uint8)


def test_pair(size: int = 32):
    """An L-shaped block (uniform intensity 200) off the centre and its mask, in all 3 channels."""
    shape = np.zeros((size, size), dtype=bool)
    shape[6:14, 8:12] = True
    shape[11:14, 12:20] = True
    image = np.repeat((shape * 200).astype(np.uint8)[None], 3, axis=0)
    mask = np.repeat(shape.astype(np.uint8)[None], 3, axis=0)
    return image, mask


def centroid(weights: np.ndarray) -> np.ndarray:
    ys, xs = np.indices(weights.shape)
    total = weights.sum()
    return np.array([(ys * weights).sum() / total, (xs * weights).sum() / total])


def expected_centroid(point: np.ndarray, size: int, angle: float, scale: float) -> np.ndarray:
    """Where a rotation by ``angle`` (OpenCV's sense: counter-clockwise on screen) and ``scale``
    about the image centre ``(S - 1) / 2`` moves a ``(y, x)`` point."""
    c = (size - 1) / 2
    matrix = cv2.getRotationMatrix2D((c, c), angle, scale)
    x, y = matrix @ np.array([point[1], point[0], 1.0])
    return np.array([y, x])


def alignment_rows(size: int = 32):
    image, mask = test_pair(size)
    start = centroid(mask[0].astype(np.float64))
    warps = (("identity (0°, ×1)", 0.0, 1.0), ("rotation 90°", 90.0, 1.0),
             ("10°, ×1.05", 10.0, 1.05), ("zoom ×1.3", 0.0, 1.3))
    libraries = (("ours augment_uint8 (OpenCV)", warp_ours_uint8),
                 ("albumentations Affine", warp_albumentations),
                 ("ours augment (torch)", warp_ours_torch),
                 ("kornia RandomAffine", warp_kornia))
    rows = []
    for warp, angle, scale in warps:
        for name, fn in libraries:
            img, msk = fn(image, mask, angle, scale)
            ci, cm = centroid(img), centroid(msk.astype(np.float64))
            plus, minus = (expected_centroid(start, size, a, scale) for a in (angle, -angle))
            sense = "same" if np.abs(ci - plus).max() <= np.abs(ci - minus).max() else "opposite"
            expect = plus if sense == "same" else minus
            rows.append([warp, name, sense if angle else "-", _yx(ci - expect), _yx(cm - expect),
                         _yx(cm - ci), float(np.hypot(*(cm - ci))),
                         f"{int(msk.sum())}/{int(mask[0].sum())}"])
    return rows


def _yx(v) -> str:
    return f"({v[0]:+.2f}, {v[1]:+.2f})"


# -- report ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed batches per pipeline")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and OpenCV CPU threads (0: their defaults)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    import albumentations
    import kornia

    print(header("Augmentation: ours vs albumentations (CPU, uint8) and kornia (torch)",
                 "python benchmarks/augment_libs.py "
                 + " ".join(argv if argv is not None else sys.argv[1:]), torch.device("cpu")))
    print(f"- albumentations {albumentations.__version__}, kornia {kornia.__version__}, OpenCV "
          f"{cv2.__version__} ({cv2.getNumThreads()} threads)\n")
    rows, ratios = [], []
    for batch, size in CONFIGS:
        result = measure(batch, size, args.repeats, args.warmup, args.seed)
        per = {k: 1e3 * v / batch for k, v in result.items()}
        rows.append([batch, size, per["ours augment_uint8"], per["albumentations"],
                     per["albumentations, HWC"], per["ours augment"], per["kornia"]])
        ratios.append((batch, size, per["ours augment_uint8"] / per["albumentations"],
                       per["ours augment"] / per["kornia"]))
    print(f"{args.repeats} timed batches per pipeline after {args.warmup} warm-up, taking turns; "
          "medians; ms per slice. Kornia and ours (torch) run on float32 CPU tensors as a "
          "stand-in for the device path.\n")
    print(markdown_table(["batch", "S", "ours augment_uint8", "albumentations (+CHW↔HWC)",
                          "albumentations (HWC given)", "ours augment (torch)",
                          "kornia (torch)"], rows))
    print("\nGeometric convention: fixed warps of a 32×32 L-shaped block and its mask; offsets "
          "(dy, dx) in pixels from where the warp should put the centroid (rotation about "
          "(S − 1) / 2); 'sense': rotation direction against OpenCV's for a positive angle.\n")
    print(markdown_table(["warp", "implementation", "sense", "image − expected",
                          "mask − expected", "mask − image", "|mask − image| px",
                          "mask pixels"], alignment_rows()))
    print()
    for batch, size, cpu_ratio, tensor_ratio in ratios:
        print(f"ratio={cpu_ratio:.2f}  (ours augment_uint8 / albumentations, batch {batch}, "
              f"S {size})")
    for batch, size, cpu_ratio, tensor_ratio in ratios:
        print(f"ratio={tensor_ratio:.2f}  (ours augment / kornia, CPU stand-in, batch {batch}, "
              f"S {size})")


if __name__ == "__main__":
    main()
