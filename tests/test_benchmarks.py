"""Smoke tests of the benchmark scripts: each one's core function runs on a tiny input.

Only that they run and report; never how fast (timings belong in benchmarks/RESULTS.md).
"""

import cv2
import numpy as np
import pytest
import torch

from benchmarks import cache_build, ddp_cpu, gpu, inference, loader, quality, train_cpu
from benchmarks.common import ThreadPrefetcher
from core.data.augment import MEAN, STD


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny workloads run best on one thread; put the libraries' settings back afterwards."""
    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(torch_threads)
    cv2.setNumThreads(cv2_threads)


def test_loader_pipelines_run(small_demo, tmp_path):
    result = loader.measure_loaders(small_demo, tmp_path / "cache", image_size=64, batch_size=2,
                                    batches=1, warmup=0)
    table, ratio = loader.report(result)
    assert ratio > 0
    assert "seed" in table and "augment_uint8" in table and "candidate A" in table
    assert "candidate B" not in table
    assert set(result["per_batch_s"]) == {"seed", "ours_full", "ours_gather",
                                          "ours_transfer_augment", "fused"}
    assert set(result["seed_stages_ms"]) >= {"read PNG + decode 3 RLE masks", "to tensors"}


def test_candidate_a_fused_augment_keeps_shapes_masks_binary_and_uses_given_constants():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (3, 3, 64, 64), dtype=np.uint8))
    masks = torch.from_numpy((rng.random((3, 3, 64, 64)) < 0.3).astype(np.uint8))
    mean, std = torch.tensor(MEAN).view(1, -1, 1, 1), torch.tensor(STD).view(1, -1, 1, 1)
    out_images, out_masks = loader.fused_augment(images, masks, mean, std,
                                                 generator=torch.Generator().manual_seed(0))
    assert out_images.dtype == torch.float32 and out_masks.dtype == torch.float32
    assert out_images.shape == images.shape and out_masks.shape == masks.shape
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    low, high = (0 - mean) / std, (1 - mean) / std  # normalised [0, 1], per channel
    assert (out_images >= low - 1e-5).all() and (out_images <= high + 1e-5).all()


def test_training_loops_run(small_demo, tmp_path):
    results = train_cpu.measure_training(small_demo, tmp_path / "cache", image_size=64,
                                         batch_size=2, warmup=1, steps=2, prefetch=True,
                                         lightning=True)
    assert [r.steps for r in results] == [2, 2, 2, 2]
    assert all(r.images_per_s > 0 for r in results)
    table, ratio = train_cpu.report(results)
    assert ratio > 0 and "Trainer.fit" in table


def test_cache_build_runs(small_demo, tmp_path):
    result = cache_build.measure_cache_build(small_demo, tmp_path, image_size=64,
                                             thread_counts=(1, 2), repeats=1)
    table, ratio = cache_build.report(result)
    assert result["slices"] > 0 and ratio > 0 and "reuse" in table


def test_inference_runs(small_demo, tmp_path):
    result = inference.measure_inference(small_demo, tmp_path / "cache", image_size=64,
                                         batch_size=4, repeats=1)
    assert result["slices"] == 12 and result["case_day_s"] > 0
    assert "B0 64 px" in inference.report(result)


def test_gpu_script_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "gpu.md"
    # The budget counts from the module's import (a real run's process start): in the suite that
    # is collection time, minutes earlier on a busy machine, so give the dry run all the time.
    gpu.main(["--dry-run", "--variants", "b0", "--precisions", "32", "--no-compile",
              "--budget", "1e9", "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    for title in ("### 1. Loader", "### 2. Training", "### 3. Throughput", "### 4. Memory",
                  "### 5. Inference", "### 6. Cache build"):
        assert title in text
    assert "failed" not in text
    outside_memory = text.split("### 4.")[0] + text.split("### 5.")[1]
    assert "error:" not in outside_memory and "skipped" not in outside_memory
    assert text.rstrip().splitlines()[-1].startswith("ratio=")


def test_thread_prefetcher_yields_in_order_raises_and_stops():
    assert list(ThreadPrefetcher(range(5))) == [0, 1, 2, 3, 4]

    def broken():
        yield 1
        raise ValueError("bad batch")

    prefetcher = ThreadPrefetcher(broken())
    assert next(prefetcher) == 1
    with pytest.raises(ValueError, match="bad batch"):
        next(prefetcher)

    def endless():
        while True:
            yield 0

    prefetcher = ThreadPrefetcher(endless())
    next(prefetcher)
    prefetcher.close()
    assert not prefetcher._thread.is_alive()


def test_quality_table_has_every_row():
    result = quality.measure(folds=2, epochs=1, image_size=64, test_cases=1, cases=4,
                             slices_per_scan=8, extras=True)
    table, ratios = quality.report(result)
    models = [row["model"] for row in result["rows"]]
    assert models[8].startswith("single fold, EMA 0.9") and "early stop" in models[9]
    assert models[:8] == [m for m in ("single fold, untuned", "single fold, tuned",
                                  "2-fold ensemble, untuned", "2-fold ensemble, tuned")
                      for _ in (0, 1)]
    assert [row["tta"] for row in result["rows"]] == [False, True] * 4 + [False, False]
    # tuning is never worse where it was chosen (rows: untuned, untuned + TTA, tuned, tuned + TTA…)
    validation = [row["validation"]["score"] for row in result["rows"]]
    assert validation[2] >= validation[0] and validation[6] >= validation[4]
    assert ratios["as_filed"] == pytest.approx(validation[6] / validation[0])
    assert ratios["oof"] == pytest.approx(validation[6] / validation[4]) and ratios["oof"] >= 1.0
    test = [row["test"]["score"] for row in result["rows"]]
    assert ratios["test"] == pytest.approx(test[6] / test[0])
    assert "held-out" in table and "flip" in table


def test_ddp_cpu_runs_one_and_two_processes():
    results = ddp_cpu.measure(image_size=64, epochs=2, batch_size=4, cases=4, slices_per_scan=8,
                              num_folds=2)
    table, ratio = ddp_cpu.report(results)
    assert [r["devices"] for r in results] == [1, 2] and ratio > 0
    assert results[1]["steps"] == results[0]["steps"] // 2  # twice the slices per step
    assert "images/s" in table
