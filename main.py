"""SegFormer Studio: the GUI by default; headless subcommands drive the same engine.

    python main.py                      open the app (on the demo dataset the first time)
    python main.py demo OUT_DIR         write the synthetic demo dataset (Kaggle layout)
    python main.py scan DATA_DIR        check a dataset and print its report
    python main.py train ...            train a model into a run folder
    python main.py predict ...          predict masks, write submission.csv / mask PNGs
    python main.py evaluate ...         score a submission against train.csv
    python main.py estimate ...         GPU memory estimate for a config
"""

from __future__ import annotations

import multiprocessing
import sys


def main(argv: list[str] | None = None) -> int:
    from core.cli.runner import run_cli

    return run_cli(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    # First, before anything else: a frozen Windows build re-executes this file in every child
    # process that multiprocessing starts; freeze_support() makes those children do their job only.
    multiprocessing.freeze_support()
    # Second: a windowed build (and pythonw) starts with sys.stdout/sys.stderr = None; give them a
    # log file before torch, transformers or Lightning are imported.
    from core.stdio import ensure_std_streams

    ensure_std_streams()
    sys.exit(main())
