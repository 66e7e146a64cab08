"""What the app remembers between starts: the last dataset, the last settings, the window layout.

Stored in an INI file in the studio's data folder (not the platform registry), so ``--home`` and
``SEGFORMER_STUDIO_HOME`` move it along with the runs and the cache, and tests stay isolated.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from PySide6.QtCore import QByteArray, QSettings, QStandardPaths

from core import paths
from core.config import StudioConfig, from_dict
from core.errors import ConfigError

log = logging.getLogger(__name__)


class StudioSettings:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else paths.studio_home() / "settings.ini"
        self._q = QSettings(str(self.path), QSettings.IniFormat)

    @property
    def dataset_dir(self) -> Path | None:
        value = self._q.value("data/dataset_dir", "")
        return Path(value) if value else None

    @dataset_dir.setter
    def dataset_dir(self, folder: Path | None) -> None:
        self._q.setValue("data/dataset_dir", str(folder) if folder else "")

    @property
    def is_first_start(self) -> bool:
        return not self._q.value("app/started_before", False, type=bool)

    def mark_started(self) -> None:
        self._q.setValue("app/started_before", True)

    @property
    def config(self) -> StudioConfig | None:
        """The last settings of the Train page, or ``None`` if none (or unreadable) were saved."""
        text = self._q.value("train/config", "")
        if not text:
            return None
        try:
            return from_dict(yaml.safe_load(text))
        except (ConfigError, yaml.YAMLError) as exc:
            log.warning("ignoring the saved settings: %s", exc)
            return None

    @config.setter
    def config(self, cfg: StudioConfig) -> None:
        self._q.setValue("train/config", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    @property
    def preset(self) -> str:
        return self._q.value("train/preset", "")

    @preset.setter
    def preset(self, name: str) -> None:
        self._q.setValue("train/preset", name)

    @property
    def geometry(self) -> QByteArray | None:
        value = self._q.value("window/geometry")
        return value if isinstance(value, QByteArray) else None

    @geometry.setter
    def geometry(self, value: QByteArray) -> None:
        self._q.setValue("window/geometry", value)

    @property
    def export_dir(self) -> Path:
        """Where the next export dialog opens: the folder of the last export, else the user's
        Documents folder (never the app's own folder)."""
        value = self._q.value("export/last_dir", "")
        if value and Path(value).is_dir():
            return Path(value)
        documents = QStandardPaths.writableLocation(QStandardPaths.DocumentsLocation)
        return Path(documents) if documents and Path(documents).is_dir() else Path.home()

    @export_dir.setter
    def export_dir(self, folder: Path) -> None:
        self._q.setValue("export/last_dir", str(folder))

    def sync(self) -> None:
        self._q.sync()
