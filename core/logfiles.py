"""Where the program's log goes: the day's file in the user data folder (everything, tracebacks
included) and, when there is a terminal, one line per warning or error on stderr — never a traceback
there: a person reads one line and the path of the file that has the details.

Used by the command line and the app alike (``main.py`` calls ``setup_logging`` for both).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path


def log_file() -> Path:
    from core.paths import logs_dir

    return logs_dir() / f"studio-{time.strftime('%Y%m%d')}.log"


class _OneLine(logging.Formatter):
    """``LEVEL: message`` without the traceback or stack (those are in the log file)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().splitlines()
        return f"{record.levelname}: {message[0] if message else ''}"


def setup_logging(verbose: bool = False) -> Path:
    """Log to the day's file, and one-line warnings (INFO with ``verbose``) to stderr. Idempotent;
    returns the file's path."""
    path = log_file()
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_studio", False)]
    files = [h for h in ours if isinstance(h, logging.FileHandler)]
    if files and Path(files[0].baseFilename) != path.resolve():  # the data folder moved (--home)
        for handler in ours:
            root.removeHandler(handler)
            handler.close()
        ours = []
    if not ours:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._studio = True
        root.addHandler(handler)
        if sys.stderr is not None:
            console = logging.StreamHandler(sys.stderr)
            console.setLevel(logging.INFO if verbose else logging.WARNING)
            console.setFormatter(_OneLine())
            console._studio = True
            root.addHandler(console)
        root.setLevel(logging.INFO)
    return path


def log_internal_error(what: str) -> Path:
    """Write the current exception's traceback to the log file only; returns the file's path."""
    import traceback

    path = setup_logging()
    record = logging.LogRecord("studio", logging.ERROR, __file__, 0, "internal error in %s\n%s",
                               (what, traceback.format_exc()), None)
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_studio", False) and isinstance(handler, logging.FileHandler):
            handler.handle(record)
    return path
