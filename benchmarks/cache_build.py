"""Building the preprocessing cache: slices/s and MB/s, on one thread and in parallel.

    python benchmarks/cache_build.py [--build-threads 1,2,4] [--repeats 2] [--image-size 288]

Times ``core.data.cache.build_cache`` (16-bit PNG decode, per-scan percentile normalisation, resize,
RLE decode and mask packing, written to memory-mapped files) on a demo dataset, with each thread
count in turn and a fresh cache folder every time, and the reuse of a built cache. The build
parallelises over case-days with threads (OpenCV and numpy release the GIL). The PNGs were just
written, so they are in the OS file cache: these figures are decode-bound, not disk-bound.
The last line is ``ratio=<best parallel slices/s / single-thread slices/s>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import header, make_demo, markdown_table, median, scratch_home  # noqa: E402
from core.data.cache import build_cache  # noqa: E402
from core.data.scan import scan_dataset  # noqa: E402


def measure_cache_build(data_dir: Path, work_root: Path, image_size: int = 288,
                        thread_counts: tuple[int, ...] = (1, 2, 4), repeats: int = 2) -> dict:
    """Median build seconds per thread count (thread counts take turns), scan and reuse seconds."""
    start = time.perf_counter()
    index = scan_dataset(data_dir)
    scan_s = time.perf_counter() - start
    seconds: dict[int, list[float]] = {t: [] for t in thread_counts}
    for repeat in range(repeats):
        for threads in thread_counts:
            root = work_root / f"build-{threads}-{repeat}"
            start = time.perf_counter()
            build_cache(index, image_size, root, threads=threads)
            seconds[threads].append(time.perf_counter() - start)
            if repeat < repeats - 1 or threads != thread_counts[-1]:
                shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    build_cache(index, image_size, work_root / f"build-{thread_counts[-1]}-{repeats - 1}")
    reuse_s = time.perf_counter() - start
    return {"slices": len(index.slices), "case_days": len(index.case_days()),
            "png_bytes": sum(r.path.stat().st_size for r in index.slices),
            "cache_bytes": 2 * len(index.slices) * image_size * image_size,
            "seconds": {t: median(v) for t, v in seconds.items()}, "scan_s": scan_s,
            "reuse_s": reuse_s, "image_size": image_size}


def report(result: dict) -> tuple[str, float]:
    n, secs = result["slices"], result["seconds"]
    single = secs.get(1, next(iter(secs.values())))
    rows = [[f"{t} thread{'s' if t > 1 else ''}" + (" (engine default)" if t == min(
                8, os.cpu_count() or 1) else ""), s, n / s, result["png_bytes"] / s / 1e6,
             result["cache_bytes"] / s / 1e6, single / s] for t, s in secs.items()]
    rows.append(["reuse a built cache (open + check)", result["reuse_s"], None, None, None, None])
    rows.append(["scan (CSV, file names, PNG headers; before any build)", result["scan_s"],
                 n / result["scan_s"], None, None, None])
    table = markdown_table(["build", "seconds", "slices/s", "PNG MB/s read", "cache MB/s written",
                            "× 1 thread"], rows)
    parallel = [s for t, s in secs.items() if t > 1]
    return table, (single / min(parallel)) if parallel else 1.0


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-threads", default="1,2,4",
                        help="comma-separated thread counts to compare")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=288)
    parser.add_argument("--cases", type=int, default=6, help="demo cases (6: 8 case-days)")
    parser.add_argument("--slices-per-scan", type=int, default=48)
    args = parser.parse_args(argv)
    threads = tuple(int(t) for t in args.build_threads.split(","))
    print(header("Cache build", "python benchmarks/cache_build.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), torch.device("cpu")))
    with scratch_home() as home:
        data_dir, gen_s = make_demo(home, args.cases, args.slices_per_scan)
        result = measure_cache_build(data_dir, home / "cache", args.image_size, threads,
                                     args.repeats)
    table, ratio = report(result)
    print(f"{result['slices']} slices in {result['case_days']} case-days ({args.cases} demo "
          f"cases × {args.slices_per_scan} slices per scan, generated in {gen_s:.1f} s): "
          f"{result['png_bytes'] / 1e6:.1f} MB of 16-bit PNG → "
          f"{result['cache_bytes'] / 1e6:.1f} MB of cache at {args.image_size} px. Median of "
          f"{args.repeats} builds per thread count, taking turns; PNGs in the OS file cache.\n")
    print(table)
    print()
    print(f"ratio={ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
