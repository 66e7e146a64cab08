"""Preprocessing cache: decode, normalise and resize every slice once, then memory-map it.

Per-step loading with ``num_workers = 0`` (required on Windows) is fast only if the expensive work
(16-bit PNG decode, RLE decode, resize, normalisation) is not repeated every epoch. The cache holds,
for a dataset and an image size:

- ``images.u8``  uint8 ``(N, S, S)``: each slice resized to S×S. Intensities are normalised **per
  scan** (case-day): the 0.5 and 99.5 percentiles of the whole scan map to 0 and 255, so a slice keeps
  its brightness relative to its neighbours (which the 2.5D channels rely on) and an outlier pixel
  cannot wash out a slice.
- ``masks.u8``   uint8 ``(N, S, S)``: bit ``i`` is organ ``ORGANS[i]`` (nearest-neighbour resize).
- ``meta.json``  the key, the slice ids in order, which slices failed to decode, and the file sizes.

The folder name is a hash of the source files (path, size, modification time), the masks, the image
size and the format version, so a changed dataset or setting gets a new cache and an unchanged one is
reused across runs. It is built in a temporary folder and renamed into place only when complete, so an
interrupted or failed build (cancel, full disk) never leaves a cache that looks valid; a cache whose
files do not match ``meta.json`` is treated as damaged and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from core.data import ORGANS
from core.data.organ_bits import pack_organ_bits, unpack_organ_bits
from core.data.scan import DatasetIndex, SliceRecord, load_masks, read_png16
from core.errors import CancelledError, DatasetError, StudioError
from core.events import Progress

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5


@dataclass
class SliceCache:
    """A built cache, memory-mapped read-only. Index ``i`` is ``index.slices[i]``."""

    folder: Path
    image_size: int
    ids: list[str]
    images: np.ndarray  # uint8 (N, S, S)
    masks: np.ndarray  # uint8 (N, S, S), organ bits
    valid: np.ndarray  # bool (N,): False where the PNG could not be decoded

    def unpack_masks(self, rows) -> np.ndarray:
        """Masks of ``rows`` as uint8 0/1 of shape ``(len(rows), 3, S, S)``."""
        return unpack_organ_bits(self.masks[rows])


def cache_key(index: DatasetIndex, image_size: int) -> str:
    digest = hashlib.sha1()
    digest.update(f"v{FORMAT_VERSION} size={image_size} p={LOW_PERCENTILE},{HIGH_PERCENTILE}\n"
                  .encode())
    for record in index.slices:
        stat = record.path.stat()
        digest.update(f"{record.id}|{record.path}|{stat.st_size}|{stat.st_mtime_ns}|".encode())
        digest.update(json.dumps(record.rles, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def _open(folder: Path, image_size: int) -> SliceCache | None:
    """The cache in ``folder`` if it is complete and consistent, else ``None``."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        n = len(meta["ids"])
        expected = n * image_size * image_size
        if meta["version"] != FORMAT_VERSION or meta["image_size"] != image_size:
            return None
        for name in ("images.u8", "masks.u8"):
            if (folder / name).stat().st_size != expected:
                log.warning("Cache %s: %s has the wrong size; rebuilding", folder, name)
                return None
        shape = (n, image_size, image_size)
        images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r", shape=shape)
        masks = np.memmap(folder / "masks.u8", dtype=np.uint8, mode="r", shape=shape)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    valid = np.ones(n, bool)
    valid[meta["invalid"]] = False
    return SliceCache(folder, image_size, meta["ids"], images, masks, valid)


def _normalise_scan(volume: list[np.ndarray]) -> list[np.ndarray]:
    """Map each scan's 0.5–99.5 percentile range to 0–255 (uint8)."""
    sample = np.concatenate([v[::2, ::2].ravel() for v in volume]).astype(np.float32)
    low, high = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
    scale = 255.0 / max(float(high - low), 1e-6)
    return [np.clip((v.astype(np.float32) - low) * scale, 0, 255).astype(np.uint8) for v in volume]


def _pack_masks(record: SliceRecord, size: int) -> np.ndarray:
    if record.rles is None:
        return np.zeros((size, size), np.uint8)
    # Pack first, then one nearest-neighbour resize of the packed bits: bits travel together.
    return cv2.resize(pack_organ_bits(load_masks(record)), (size, size),
                      interpolation=cv2.INTER_NEAREST)


def _check_disk(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed * 1.05 + 50e6:
        raise StudioError(f"not enough free disk space for the cache in '{folder}': it needs "
                          f"{needed / 1e6:.0f} MB, {free / 1e6:.0f} MB are free. Free some space or "
                          "move the data folder (--home / Settings)")


def build_cache(index: DatasetIndex, image_size: int, cache_root: str | Path,
                progress: Callable[[Progress], None] | None = None,
                cancel: Callable[[], bool] | None = None, threads: int | None = None) -> SliceCache:
    """Return the cache for ``index`` at ``image_size``, building it first if needed.

    ``progress`` gets ``Progress("cache", done, total)``; ``cancel()`` returning True aborts with
    ``CancelledError`` and leaves any existing cache untouched. ``threads`` decode case-days in
    parallel (OpenCV releases the GIL); default: the number of CPUs, at most 8.
    """
    cache_root = Path(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    key = cache_key(index, image_size)
    folder = cache_root / key
    existing = _open(folder, image_size)
    if existing is not None:
        if progress is not None:
            progress(Progress("cache", len(existing.ids), len(existing.ids), "reused"))
        return existing
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)

    n = len(index.slices)
    _check_disk(cache_root, 2 * n * image_size * image_size)
    tmp = cache_root / f"{key}.building-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        invalid = _fill(index, image_size, tmp, progress, cancel, threads)
        meta = {"version": FORMAT_VERSION, "image_size": image_size, "key": key,
                "root": str(index.root), "ids": [r.id for r in index.slices],
                "invalid": invalid, "organs": list(ORGANS),
                "normalisation": f"per scan, percentiles {LOW_PERCENTILE}-{HIGH_PERCENTILE}"}
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StudioError(f"could not write the cache in '{cache_root}': {exc.strerror or exc}. "
                          "Check free disk space and permissions") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cache = _open(folder, image_size)
    if cache is None:
        raise StudioError(f"the cache just built in '{folder}' cannot be opened")
    return cache


def _fill(index: DatasetIndex, size: int, folder: Path, progress, cancel, threads) -> list[int]:
    n = len(index.slices)
    shape = (n, size, size)
    images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="w+", shape=shape)
    masks = np.memmap(folder / "masks.u8", dtype=np.uint8, mode="w+", shape=shape)
    position = {r.id: i for i, r in enumerate(index.slices)}
    invalid: list[int] = []
    lock = threading.Lock()
    done = [0]

    def one_scan(records: list[SliceRecord]) -> None:
        volume, rows = [], []
        for record in records:
            if cancel is not None and cancel():
                raise CancelledError("cache build cancelled")
            row = position[record.id]
            try:
                volume.append(read_png16(record.path))
                rows.append(row)
            except DatasetError as exc:
                log.warning("%s; slice left out of training", exc)
                with lock:
                    invalid.append(row)
        for row, image in zip(rows, _normalise_scan(volume) if volume else []):
            record = index.slices[row]
            images[row] = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA
                                     if image.shape[0] > size else cv2.INTER_LINEAR)
            masks[row] = _pack_masks(record, size)
        with lock:
            done[0] += len(records)
            if progress is not None:
                progress(Progress("cache", done[0], n, records[0].case_day))

    groups = list(index.case_days().values())
    workers = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(one_scan, g) for g in groups]:
            future.result()
    images.flush()
    masks.flush()
    del images, masks
    return sorted(invalid)


def neighbour_rows(index: DatasetIndex, context: int) -> np.ndarray:
    """For 2.5D input: ``(N, 3)`` rows of slices i−k, i, i+k within the same scan, edges clamped."""
    table = np.zeros((len(index.slices), 3), np.int64)
    start = 0
    for records in index.case_days().values():
        rows = np.arange(start, start + len(records))
        table[rows, 0] = np.maximum(rows - context, start)
        table[rows, 1] = rows
        table[rows, 2] = np.minimum(rows + context, start + len(records) - 1)
        start += len(records)
    return table
