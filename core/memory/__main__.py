"""``python -m core.memory --rebuild-cache``: measure the shipped memory terms (a few minutes)."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.memory", description=__doc__)
    parser.add_argument("--rebuild-cache", action="store_true", required=True,
                        help="trace every variant, mode and precision on the CPU and write "
                        "resources/memory_terms.json")
    parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from core.memory.terms import rebuild_shipped_cache

    path = rebuild_shipped_cache(report=lambda line: print(line, flush=True))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
