"""Runtime hook: runs inside the frozen program before main.py, i.e. before any other import.

In the windowed Windows build ``sys.stdout`` and ``sys.stderr`` are ``None``; the first library that
prints, warns or draws a tqdm bar (transformers, Lightning) would crash. ``core.stdio`` points them at
``logs/console-YYYYMMDD.log`` in the user data folder (or the parent console for command-line use).
Doing it here, not only in main.py, guarantees it happens before torch / transformers / Lightning
are imported, whatever main.py does first. It is idempotent: a later call finds working streams.
"""

try:
    from core.stdio import ensure_std_streams

    ensure_std_streams()
except Exception:  # noqa: BLE001 - never stop the program from starting over its log file
    pass
