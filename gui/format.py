"""Numbers for people: bytes and durations.

Bytes in binary units labelled GB/MB, as nvidia-smi and the Windows Task Manager count them: an
"8 GB" GPU shows as 8.00 GB, not 8.59.
"""

from __future__ import annotations

_BYTE_UNITS = ((2**30, "GB", 2), (2**20, "MB", 0), (2**10, "KB", 0))


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for scale, unit, digits in _BYTE_UNITS:
        if abs(n) >= scale:
            return f"{n / scale:.{digits}f} {unit}"
    return f"{n:.0f} B"


def human_duration(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; a dash when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
