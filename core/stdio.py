"""Give a windowed (console-less) program real ``sys.stdout`` / ``sys.stderr`` before anything heavy.

A PyInstaller build made with ``console=False`` (the Windows ``SegFormerStudio.exe``), or any program
started without standard handles (``pythonw.exe``; ``prog >&- 2>&-`` on Linux), starts with
``sys.stdout`` and ``sys.stderr`` set to ``None``. Libraries then crash on their first write or
``isatty()`` call: tqdm bars (transformers' ``save_pretrained``), Lightning's ``rank_zero`` prints and
warnings, ``logging.StreamHandler``, ``faulthandler``, ``print``. So :func:`ensure_std_streams`
must run in ``main.py`` *before* torch, transformers or Lightning are imported: it points the missing
streams at ``logs/console-YYYYMMDD.log`` in the user data folder (see :mod:`core.paths`), enables
``faulthandler`` into it, and never raises: if the log folder cannot be written it falls back to the
temporary folder, then to ``os.devnull``.

On Windows, when the program was started from a console with a subcommand or ``--self-test``
(``SegFormerStudio.exe --self-test`` in cmd / PowerShell), it first tries to attach to the parent's
console so the lines are visible there; they still have no exit-code wait (use
``start /wait`` or ``Start-Process -Wait``) — see the README.

This module imports only the standard library (and ``core.paths`` → ``platformdirs``) so that it is
cheap to call first.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

LOG_PREFIX = "console"
_opened: list[io.TextIOBase] = []  # keep the replacement streams alive for the whole process


def _missing(stream) -> bool:
    """True when ``stream`` is ``None`` or has no usable file descriptor behind it."""
    if stream is None:
        return True
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False  # a custom stream object (pytest's capture, an IDE): leave it alone
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def _home_from_argv(argv: list[str]) -> str | None:
    """The ``--home DIR`` / ``--home=DIR`` option, read before argparse runs (it moves the logs)."""
    for i, arg in enumerate(argv):
        if arg == "--home" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--home="):
            return arg.split("=", 1)[1]
    return None


def log_folder(argv: list[str] | None = None) -> Path:
    """The folder for the console log: ``<user data>/logs`` (honours ``--home`` and
    ``SEGFORMER_STUDIO_HOME``)."""
    home = _home_from_argv(sys.argv[1:] if argv is None else argv)
    if home:
        folder = Path(home).expanduser() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    from core.paths import logs_dir

    return logs_dir()


def _open_log(argv: list[str] | None) -> io.TextIOBase:
    name = f"{LOG_PREFIX}-{time.strftime('%Y%m%d')}.log"
    candidates = []
    try:
        candidates.append(log_folder(argv) / name)
    except Exception:  # noqa: BLE001 - an unwritable data folder must not stop the program
        pass
    candidates.append(Path(tempfile.gettempdir()) / f"SegFormerStudio-{name}")
    for path in candidates:
        try:
            # Line-buffered so each line reaches the disk even if the process dies; utf-8 with
            # backslashreplace so no character in a path or message can raise while logging.
            stream = open(path, "a", encoding="utf-8", errors="backslashreplace", buffering=1)
        except OSError:
            continue
        stream.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} "
                     f"{' '.join(sys.argv)}\n")
        return stream
    return open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - kept open on purpose


def _attach_parent_console() -> bool:
    """Windows only: attach to the console of the process that started us, if there is one, and
    reopen the standard streams on it. Returns True when stdout and stderr now work."""
    if sys.platform != "win32":
        return False
    try:
        import ctypes

        if not ctypes.windll.kernel32.AttachConsole(-1):  # ATTACH_PARENT_PROCESS
            return False
        out = open("CONOUT$", "w", encoding="utf-8", errors="backslashreplace", buffering=1)
    except Exception:  # noqa: BLE001 - no console: fall back to the log file
        return False
    _opened.append(out)
    if _missing(sys.stdout):
        sys.stdout = out
    if _missing(sys.stderr):
        sys.stderr = out
    return True


def ensure_std_streams(argv: list[str] | None = None) -> Path | None:
    """Replace a missing ``sys.stdout`` / ``sys.stderr`` (windowed build) with a log file.

    Call first in ``main``, before torch / transformers / Lightning are imported. Does nothing when
    both streams work (a console build, a terminal, pytest). Returns the log file's path when one
    was opened, else ``None``. Never raises.
    """
    try:
        need_out, need_err = _missing(sys.stdout), _missing(sys.stderr)
        if not (need_out or need_err):
            return None
        args = sys.argv[1:] if argv is None else argv
        # A console user who typed a command wants to see its output; the GUI (no arguments) does not
        # need a console window, so it never attaches.
        if args and _attach_parent_console():
            return None
        stream = _open_log(args)
        _opened.append(stream)
        if need_out:
            sys.stdout = stream
        if need_err:
            sys.stderr = stream
        # sys.__stdout__/__stderr__ are what some libraries fall back to (and what
        # faulthandler's default is); point them at the log as well.
        if sys.__stdout__ is None or need_out:
            sys.__stdout__ = sys.stdout
        if sys.__stderr__ is None or need_err:
            sys.__stderr__ = sys.stderr
        try:
            import faulthandler

            faulthandler.enable(stream)  # a hard crash (segfault in a DLL) leaves a trace in the log
        except (OSError, ValueError, AttributeError):
            pass
        name = getattr(stream, "name", None)
        return Path(name) if isinstance(name, str) and name != os.devnull else None
    except Exception:  # noqa: BLE001 - last resort: a stream that swallows everything
        if sys.stdout is None:
            sys.stdout = io.StringIO()
        if sys.stderr is None:
            sys.stderr = io.StringIO()
        return None
