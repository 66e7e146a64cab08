"""Masks where their images are: phantoms through every resampling on the way (issue: right masks).

A phantom's image *is* its mask (a disk or a thin bar at a sub-pixel position, bright on a dark
background), so after any resize or warp the image's intensity centroid and the mask's centroid must
coincide. Measured over many sub-pixel positions at every size the demo uses (266×266, 360×310,
234×234) and training sizes from 64 to 512 px, through the real code: the scan and the cache, both
augmentation paths, predict's resampling back to the original size, and the Review overlay. The mean
offset (the systematic error a model would learn) must stay under 0.15 px; each single shape,
whose edge is quantised to whole pixels, under 0.5 px. OpenCV's ``INTER_NEAREST``, which the cache
used before, is off by +0.5 px in both axes and fails here.
"""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch

from core.data.augment import AugmentParams, augment, augment_uint8
from core.data.cache import build_cache
from core.data.rle import rle_encode
from core.data.scan import load_masks, scan_dataset
from core.predict import to_original_size

SOURCE_SIZES = ((266, 266), (360, 310), (234, 234))  # (width, height), as the file names give them
TRAINING_SIZES = (64, 96, 128, 256, 288, 512)
POSITIONS = 24
RADIUS = 6  # training pixels: the smallest organ cross-section that matters


def centroid(values: np.ndarray) -> np.ndarray:
    """(row, column) intensity centroid of a 2-D array."""
    values = np.asarray(values, np.float64)
    rows, cols = np.mgrid[:values.shape[0], :values.shape[1]]
    total = values.sum()
    return np.array([(rows * values).sum() / total, (cols * values).sum() / total])


def disk(height: int, width: int, cy: float, cx: float, radius: float) -> np.ndarray:
    rows, cols = np.mgrid[:height, :width]
    return (rows - cy) ** 2 + (cols - cx) ** 2 <= radius ** 2


def bar(height: int, width: int, cx: float, half_width: float) -> np.ndarray:
    cols = np.arange(width)[None, :].repeat(height, 0)
    return np.abs(cols - cx) <= half_width


def phantoms(height: int, width: int, size: int, rng) -> list[np.ndarray]:
    """Disks of ``RADIUS`` training pixels and bars 3 training pixels wide, at random sub-pixel
    positions, at the source size."""
    scale = max(height, width) / size
    radius = RADIUS * scale
    shapes = [disk(height, width, rng.uniform(radius + 2, height - radius - 2),
                   rng.uniform(radius + 2, width - radius - 2), radius) for _ in range(POSITIONS)]
    shapes += [bar(height, width, rng.uniform(0.3 * width, 0.7 * width), 1.5 * scale)
               for _ in range(POSITIONS // 4)]
    return shapes


def write_phantom_dataset(root, shapes_by_size) -> None:
    """A Kaggle-layout dataset (16-bit PNGs, train.csv with RLE) whose images are their masks."""
    rows = []
    for case, ((width, height), shapes) in enumerate(shapes_by_size.items(), start=1):
        scans = root / "train" / f"case{case}" / f"case{case}_day1" / "scans"
        scans.mkdir(parents=True)
        for number, shape in enumerate(shapes, start=1):
            image = (1000 + 30000 * shape).astype(np.uint16)
            ok, data = cv2.imencode(".png", image)
            (scans / f"slice_{number:04d}_{width}_{height}_1.50_1.50.png").write_bytes(data.tobytes())
            sid = f"case{case}_day1_slice_{number:04d}"
            rows += [(sid, "large_bowel", rle_encode(shape)), (sid, "small_bowel", ""),
                     (sid, "stomach", "")]
    with open(root / "train.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "class", "segmentation"])
        writer.writerows(rows)


@pytest.fixture(scope="module")
def phantom_dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("phantoms") / "data"
    shapes = {(w, h): [s for size in TRAINING_SIZES for s in phantoms(h, w, size, rng)]
              for w, h in SOURCE_SIZES}
    write_phantom_dataset(root, shapes)
    return scan_dataset(root)


@pytest.mark.parametrize("size", TRAINING_SIZES)
def test_the_cache_keeps_each_mask_on_its_image(phantom_dataset, size, tmp_path):
    cache = build_cache(phantom_dataset, size, tmp_path)
    offsets = []
    for row, record in enumerate(phantom_dataset.slices):
        mask = cache.unpack_masks([row])[0, 0]
        if mask.sum() < 4:  # a bar too thin for this size: nothing to locate
            continue
        offsets.append(centroid(mask) - centroid(cache.images[row]))
    offsets = np.array(offsets)
    assert len(offsets) > len(phantom_dataset.slices) // 2
    assert np.abs(offsets.mean(0)).max() < 0.15, offsets.mean(0)  # no systematic shift
    assert np.abs(offsets).max() < 0.5  # each shape within its pixel quantisation


@pytest.mark.parametrize("width, height", SOURCE_SIZES)
@pytest.mark.parametrize("size", TRAINING_SIZES)
def test_predict_brings_an_oracle_probability_map_back_onto_the_original_pixels(width, height,
                                                                                size):
    """The ideal probability map at the training size (each pixel: the fraction of it inside the
    disk) resampled by predict to the original size and thresholded gives back the disk."""
    rng = np.random.default_rng(size + width)
    offsets, dices = [], []
    for _ in range(POSITIONS):
        radius = RADIUS * max(height, width) / size
        truth = disk(height, width, rng.uniform(radius + 2, height - radius - 2),
                     rng.uniform(radius + 2, width - radius - 2), radius)
        oracle = cv2.resize(truth.astype(np.float32), (size, size),
                            interpolation=cv2.INTER_AREA if max(height, width) > size
                            else cv2.INTER_LINEAR)
        back = to_original_size(torch.from_numpy(oracle)[None, None], (height, width))
        predicted = back[0, 0].numpy() >= 0.5
        scale = np.array([size / height, size / width])  # offsets in training pixels
        offsets.append((centroid(predicted) - centroid(truth)) * scale)
        dices.append(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))
    offsets = np.array(offsets)
    assert np.abs(offsets.mean(0)).max() < 0.15 and np.abs(offsets).max() < 0.15
    assert min(dices) >= 0.98


def _warp_phantom_batch(size: int, count: int, seed: int):
    rng = np.random.default_rng(seed)
    masks = np.stack([disk(size, size, rng.uniform(0.35, 0.65) * size,
                           rng.uniform(0.35, 0.65) * size, RADIUS * 2) for _ in range(count)])
    masks = np.repeat(masks[:, None], 3, axis=1).astype(np.uint8)
    return masks * 255, masks


GEOMETRY_ONLY = AugmentParams(max_contrast=0, max_brightness=0, dropout_holes=0)
IDENTITY = AugmentParams(flip_p=0, max_rotate_deg=0, max_scale=0, max_shift=0, max_contrast=0,
                         max_brightness=0, dropout_holes=0)


@pytest.mark.parametrize("size", (64, 128, 256))
@pytest.mark.parametrize("path", ("cpu", "device"))
def test_augmentation_warps_image_and_mask_together(size, path):
    images, masks = _warp_phantom_batch(size, 24, seed=size)
    for params in (IDENTITY, GEOMETRY_ONLY):
        if path == "cpu":
            out_images, out_masks = augment_uint8(images, masks, np.random.default_rng(1), params)
            out_images = out_images.astype(np.float32)
        else:
            warped_images, warped_masks = augment(
                torch.from_numpy(images).float() / 255, torch.from_numpy(masks).float(),
                torch.Generator().manual_seed(1), params)
            out_images, out_masks = warped_images.numpy(), warped_masks.numpy()
        if params is IDENTITY:
            assert np.array_equal(out_masks, masks)  # the identity is exact
        offsets = np.array([centroid(m[0]) - centroid(i[0]) for i, m in zip(out_images, out_masks)
                            if m[0].sum() > 10])
        assert len(offsets) >= 20
        assert np.abs(offsets.mean(0)).max() < 0.15, (path, offsets.mean(0))
        assert np.abs(offsets).max() < 0.5


def test_mask_and_image_share_the_cache_grid_on_the_real_demo(small_demo, tmp_path):
    """On the demo's own organs (not phantoms): every slice's cached mask has the centroid of the
    same organ cut from the cached image's grid, as resized with the image's filter."""
    index = scan_dataset(small_demo)
    cache = build_cache(index, 96, tmp_path)
    offsets = []
    for row, record in enumerate(index.slices):
        truth = load_masks(record)[2].astype(np.float32)  # stomach: one compact blob
        if truth.sum() < 200:
            continue
        soft = cv2.resize(truth, (96, 96), interpolation=cv2.INTER_AREA)
        offsets.append(centroid(cache.unpack_masks([row])[0, 2]) - centroid(soft))
    offsets = np.array(offsets)
    assert len(offsets) > 5 and np.abs(offsets.mean(0)).max() < 0.15
