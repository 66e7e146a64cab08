"""Errors a person can act on.

``StudioError`` and its subclasses carry a message written for the user (it names the file, row or
setting and what to do). The CLI prints it as one ``error: ...`` line with exit code 2; the GUI shows it
in a dialog. Anything else that escapes is an internal error (exit code 1, traceback in the log file).
"""

from __future__ import annotations


class StudioError(Exception):
    """A problem with the user's input, data or environment, explained in the message."""


class ConfigError(StudioError):
    """A configuration key or value is unknown or out of range. ``key`` is the dotted setting it is
    about (``train.batch_size``), when there is one, so a form can show it next to that field."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class DatasetError(StudioError):
    """The dataset cannot be used (fatal scan problem, unreadable file, bad CSV)."""


class CancelledError(StudioError):
    """A long operation was cancelled by the user."""

