"""Parse the command line, run one subcommand, and turn failures into exit codes.

Exit codes: 0 success; 2 bad input or configuration (one ``error: ...`` line on stderr, no traceback);
1 internal error (the traceback goes to a log file whose path is printed).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
import traceback
from pathlib import Path

from core.errors import StudioError

COMMANDS = {
    "demo": ("core.cli.demo", "write the synthetic demo dataset in the Kaggle layout"),
    "scan": ("core.cli.scan", "check a dataset folder and print its report"),
    "train": ("core.cli.train", "train a SegFormer model into a run folder"),
    "predict": ("core.cli.predict", "predict masks with a trained model; write submission.csv"),
    "evaluate": ("core.cli.evaluate", "score a submission.csv against the dataset's train.csv"),
    "estimate": ("core.cli.estimate", "estimate peak GPU training memory for a config"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other input error
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="main.py", description="SegFormer Studio: train and review SegFormer "
                     "models on GI-tract MRI. Without a command, the app opens.")
    parser.add_argument("--home", metavar="DIR", help="folder for the demo data, cache, runs and logs "
                        "(default: the user data folder; or $SEGFORMER_STUDIO_HOME)")
    parser.add_argument("--self-test", action="store_true", help="run the built-in self-test "
                        "without a window and exit 0 if every stage works")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module_name)
        module.add_arguments(cmd)
    return parser


def log_file() -> Path:
    from core.paths import logs_dir

    return logs_dir() / f"studio-{time.strftime('%Y%m%d')}.log"


def setup_logging(verbose: bool = False) -> Path:
    """Log to the day's file in the user data folder, and INFO lines to stderr when there is one."""
    path = log_file()
    root = logging.getLogger()
    if not any(getattr(h, "_studio", False) for h in root.handlers):
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._studio = True
        root.addHandler(handler)
        if sys.stderr is not None:
            console = logging.StreamHandler(sys.stderr)
            console.setLevel(logging.INFO if verbose else logging.WARNING)
            console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
            console._studio = True
            root.addHandler(console)
        root.setLevel(logging.INFO)
    return path


def run_cli(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.home:
        from core.paths import set_studio_home

        set_studio_home(args.home)
    if args.self_test:
        from core.selftest import run_self_test

        return run_self_test()
    if not args.command:
        from gui.app import run_app

        return run_app()
    try:
        setup_logging()
        return int(importlib.import_module(args._module).run(args) or 0)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: log, explain, exit 1
        path = log_file()
        logging.getLogger("studio").error("internal error in '%s'\n%s", args.command,
                                          traceback.format_exc())
        print(f"internal error: {type(exc).__name__}: {exc} (details in {path})", file=sys.stderr)
        return 1
