"""``metrics.csv`` as a Lightning ``Logger``: what the module logs with ``self.log`` lands here.

Fixed columns (``core.runs.METRIC_COLUMNS``); one row per ``log_metrics`` call — a training row every
``log_every_n_steps`` optimiser steps, a validation row per validation. ``step`` is the number of
optimiser steps done when the row was logged (``trainer.global_step``; Lightning passes the 0-based
index of the step, hence ``+ 1``). Rows are appended and flushed one at a time, across resumes: a
resumed run first trims the file to the rows its checkpoint had seen (``RunFolder.trim_metrics``), so
every step is
in the file once. Only rank zero writes. Each row is also handed to ``on_row``, so the live charts
show exactly what the file holds.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Callable

from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities import rank_zero_only

from core.runs import METRIC_COLUMNS, format_metric_cell

RowSink = Callable[[dict], None]


class MetricsLogger(Logger):
    def __init__(self, path: Path, on_row: RowSink | None = None):
        super().__init__()
        self.path = Path(path)
        self.on_row = on_row

    @property
    def name(self) -> str:
        return "metrics"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """The settings are in the run's config.yaml; nothing to add here."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {"epoch": int(metrics.get("epoch", 0)), "step": 0 if step is None else step + 1}
        row.update({k: float(v) for k, v in metrics.items() if k in METRIC_COLUMNS
                    and k not in ("epoch", "step")})
        row["time"] = time.time()
        self._append(row)
        if self.on_row is not None:
            self.on_row(row)

    def _append(self, row: dict) -> None:
        new = not self.path.is_file() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, METRIC_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({k: format_metric_cell(k, v) for k, v in row.items()})
            fh.flush()
            os.fsync(fh.fileno())
