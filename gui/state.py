"""The window's shared state: the open dataset and the current training settings.

Pages never reach into each other; they read this object and listen to its signals (the Data page sets
the dataset, the Train page sets the settings, both read the other's).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from core.config import StudioConfig
from core.data.scan import DatasetIndex


class StudioState(QObject):
    dataset_changed = Signal()
    config_changed = Signal()

    def __init__(self, config: StudioConfig | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.dataset_dir: Path | None = None
        self.index: DatasetIndex | None = None
        self.config = config or StudioConfig()

    def set_dataset(self, folder: Path, index: DatasetIndex) -> None:
        self.dataset_dir, self.index = Path(folder), index
        self.dataset_changed.emit()

    def set_config(self, config: StudioConfig) -> None:
        self.config = config.copy()
        self.config_changed.emit()
