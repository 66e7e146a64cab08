"""``main.py demo OUT_DIR``: write the synthetic demo dataset."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (empty, or an old demo)")
    parser.add_argument("--cases", type=int, default=6, help="number of cases (default 6)")
    parser.add_argument("--slices", type=int, default=36, help="slices per scan (default 36)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args) -> int:
    import time

    from core.data.demo import generate_demo_dataset

    start = time.perf_counter()
    out = generate_demo_dataset(args.out_dir, cases=args.cases, slices_per_scan=args.slices,
                                seed=args.seed)
    print(f"demo dataset written to {out} in {time.perf_counter() - start:.1f} s")
    return 0
