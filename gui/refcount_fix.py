"""Work around a reference-counting bug of PySide6 6.12 on Python 3.11.

PySide6 6.12 returns ``None`` from methods without a result (``update()``, ``setPos()``, …) and
``True`` from ``Signal.emit()`` without taking a reference. That is harmless on Python 3.12 and later,
where these objects are immortal, but on 3.11 each such call lowers their reference count by one, and
the interpreter aborts ("Fatal Python error: none_dealloc") once it reaches zero. Live charts make
thousands of such calls a second (pyqtgraph: ~350 per plot update), so the window died within minutes
of training.

``make_singletons_immortal`` does what Python 3.12 does: it gives ``None``, ``True`` and ``False`` a
reference count no session can exhaust. It must run before the first window is built; importing
``gui`` runs it.
"""

from __future__ import annotations

import ctypes
import sys

EXTRA_REFERENCES = 1 << 40  # ~10¹²: a million lost references a second would take 35 years


def make_singletons_immortal() -> bool:
    """Raise the reference counts of None/True/False on CPython < 3.12; True if it did."""
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12) or \
            hasattr(sys, "gettotalrefcount"):  # a debug build lays out PyObject differently
        return False
    for singleton in (None, True, False):
        # ob_refcnt is the first field of every object in a release build of CPython 3.11.
        ctypes.c_ssize_t.from_address(id(singleton)).value += EXTRA_REFERENCES
    return True
