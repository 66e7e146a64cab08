"""SegFormer Studio: the app by default; headless subcommands drive the same engine.

    python main.py                      open the app (on the demo dataset the first time)
    python main.py --self-test          check this installation without a window
    python main.py demo OUT_DIR         write the synthetic demo dataset (Kaggle layout)
    python main.py scan DATA_DIR        check a dataset and print its report
    python main.py train ...            train a model into a run folder
    python main.py predict ...          predict masks, write submission.csv / mask PNGs
    python main.py evaluate ...         score a submission against train.csv
    python main.py export-onnx ...      export a trained model as ONNX (onnxruntime engine)
    python main.py estimate ...         GPU memory estimate for a config
    python main.py pretrained list|download REPO   find or fetch pretrained MiT encoders

This file is the one place that knows both layers: it decides between the window (``gui``) and a
command (``core.cli``), so the engine never imports the GUI. ``pip install .`` makes it the
``segformer-studio`` command.
"""

from __future__ import annotations

import multiprocessing
import sys


def main(argv: list[str] | None = None) -> int:
    from core.cli.runner import parse_args, run_command, set_home
    from core.errors import StudioError

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.home:
        try:
            set_home(args.home)
        except StudioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.self_test:
        import gui.selftest  # noqa: F401 - registers the window stage with the self-test
        from core.selftest import run_self_test

        return run_self_test()
    if not args.command:
        from gui.app import run_app

        return run_app()
    return run_command(args)


def reexecuted_argv(argv: list[str], executable: str, frozen: bool) -> list[str]:
    """``argv`` as this program should read it. Lightning's DDP launcher starts each further
    process as ``[sys.executable, abspath(sys.argv[0]), *args]``; in the packaged program both are
    the program itself, so the second copy of its path is dropped."""
    import os

    if frozen and len(argv) > 1 and os.path.normcase(os.path.abspath(argv[1])) == \
            os.path.normcase(os.path.abspath(executable)):
        return [argv[0], *argv[2:]]
    return argv


def entry() -> None:
    """The ``segformer-studio`` console command (``pip install .``)."""
    multiprocessing.freeze_support()
    sys.argv = reexecuted_argv(sys.argv, sys.executable, bool(getattr(sys, "frozen", False)))
    from core.stdio import ensure_std_streams

    ensure_std_streams()
    sys.exit(main())


if __name__ == "__main__":
    # First, before anything else: a frozen Windows build re-executes this file in every child
    # process that multiprocessing starts; freeze_support() makes those children do their job only.
    # Second (in entry): a windowed build (and pythonw) starts with sys.stdout/sys.stderr = None;
    # give them a log file before torch, transformers or Lightning are imported.
    entry()
