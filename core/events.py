"""Plain progress events emitted by long-running engine work (training, cache building, prediction).

They are small frozen dataclasses; the CLI prints them and the GUI turns them into queued Qt signals.
Receivers are called on the worker's thread, so they must be quick and thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Progress:
    """Generic progress of a named task: ``done`` of ``total`` units (total 0 = unknown)."""
    task: str
    done: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class TrainingStarted:
    run_dir: str
    epochs: int
    steps_per_epoch: int
    total_steps: int
    start_step: int
    device: str
    precision: str


@dataclass(frozen=True)
class TrainingStep:
    step: int
    epoch: int
    batch_in_epoch: int
    loss: float
    lr: float
    images_per_sec: float
    eta_seconds: float


@dataclass(frozen=True)
class ValidationResult:
    epoch: int
    step: int
    metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointSaved:
    path: str
    step: int
    best: bool = False


@dataclass(frozen=True)
class LogMessage:
    message: str
    level: str = "info"


@dataclass(frozen=True)
class GroupProgress:
    """A fold group moved on: fold ``fold`` (the ``position``-th of ``count``) starts training in
    ``run_dir``; ``fold`` −1 once every fold has trained and the out-of-fold scoring starts."""
    fold: int
    position: int
    count: int
    run_dir: str


@dataclass(frozen=True)
class TrainingFinished:
    """The run ended: ``status`` is ``finished``, ``stopped`` (resumable from ``checkpoint``) or
    ``aborted`` (Ctrl+C twice; resumable from the last checkpoint, if there was one).
    ``best_score`` is the best checkpoint's value of ``monitor`` (e.g. ``val_score``)."""
    status: str
    reason: str
    checkpoint: str = ""
    best_score: float | None = None
    monitor: str = ""


@dataclass(frozen=True)
class TrainingFailed:
    message: str
    details: str = ""


EventSink = Callable[[object], None]


def ignore_events(_event: object) -> None:
    """An ``EventSink`` that drops everything."""


# -- events between processes (a multi-device run the GUI starts as a child process) ---------------
def event_types() -> dict[str, type]:
    return {cls.__name__: cls for cls in (Progress, TrainingStarted, TrainingStep,
                                          ValidationResult, CheckpointSaved, LogMessage,
                                          GroupProgress, TrainingFinished, TrainingFailed)}


def to_json(event) -> str:
    """One line of JSON: ``{"event": "TrainingStep", "step": 5, …}``."""
    import dataclasses
    import json

    return json.dumps({"event": type(event).__name__, **dataclasses.asdict(event)},
                      allow_nan=True, separators=(",", ":"))


def from_json(line: str):
    """The event ``to_json`` wrote, or None for a line that is not one (other output)."""
    import json

    try:
        data = json.loads(line)
    except ValueError:
        return None
    kind = event_types().get(data.pop("event", None)) if isinstance(data, dict) else None
    if kind is None:
        return None
    try:
        return kind(**data)
    except TypeError:
        return None
