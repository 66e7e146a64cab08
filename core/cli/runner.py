"""Parse the command line, run one subcommand, and turn failures into exit codes.

Exit codes: 0 success; 2 bad input or configuration (one ``error: ...`` line on stderr, no traceback);
1 internal error (one line on stderr; the traceback goes to the log file whose path it names); 130
interrupted (Ctrl+C; for ``train``, Ctrl+C twice). ``main.py`` decides between the app and a command;
this module never imports the GUI.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from core.errors import StudioError

COMMANDS = {
    "demo": ("core.cli.demo", "write the synthetic demo dataset in the Kaggle layout"),
    "scan": ("core.cli.scan", "check a dataset folder and print its report"),
    "train": ("core.cli.train", "train a SegFormer model into a run folder"),
    "predict": ("core.cli.predict", "predict masks with a trained model; write submission.csv"),
    "export-onnx": ("core.cli.export_onnx", "export a trained model as ONNX (for onnxruntime)"),
    "evaluate": ("core.cli.evaluate", "score a submission.csv against the dataset's train.csv"),
    "estimate": ("core.cli.estimate", "estimate peak GPU training memory for a config"),
    "pretrained": ("core.cli.pretrained", "list pretrained SegFormer encoders on this machine, "
                   "or download one (nvidia/mit-b0 … b5)"),
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the command line (argparse exits 2 with one ``error:`` line on bad arguments)."""
    return build_parser().parse_args(argv)


def set_home(folder: str) -> None:
    """Move the user data folder (``--home``); ``StudioError`` when it cannot be one."""
    from core.paths import set_studio_home, studio_home

    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise StudioError(f"--home '{folder}' is a file; give a folder for the data, cache and runs")
    set_studio_home(path)
    try:
        studio_home()
    except OSError as exc:
        raise StudioError(f"--home '{folder}' cannot be created: {exc.strerror or exc}") from None


def run_command(args: argparse.Namespace) -> int:
    """Run one subcommand and turn what happens into an exit code (see the module docstring)."""
    from core.logfiles import log_internal_error, setup_logging

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
        path = log_internal_error(f"'{args.command}'")
        print(f"internal error: {type(exc).__name__}: {exc} (details in {path})", file=sys.stderr)
        return 1
