"""Corrected masks, kept apart from the user's dataset: a CSV in the ``train.csv`` format.

::

    <user data folder>/corrections/<dataset name>-<hash of its path>/
      corrections.csv    id,class,segmentation — three rows per corrected slice; they replace the
                         dataset's rows for those ids (an empty segmentation: the organ is absent)
      reviewed.json      {"reviewed": [slice ids a person has looked at and accepted]}

The dataset folder is never written. Every write replaces the file atomically (a crash leaves the
old file or the new one, never half of one). ``scan_dataset(root, corrections=FILE)`` reads a file,
the GUI the open dataset's own file (``Corrections.for_dataset``); the cache key hashes every slice's
masks, so a changed correction gives a new cache (a full rebuild: measured in benchmarks/RESULTS.md
§3, seconds for the demo, a few minutes for the whole Kaggle set at 288 px).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from core import paths
from core.atomic import atomic_write_text
from core.data import ORGANS
from core.errors import DatasetError

CORRECTIONS_FILE = "corrections.csv"
REVIEWED_FILE = "reviewed.json"


def corrections_root() -> Path:
    return paths.studio_home() / "corrections"


def dataset_folder_name(root: str | Path) -> str:
    """``<name>-<10 hex digits of the resolved path>``: one folder per dataset, readable."""
    resolved = str(Path(root).expanduser().resolve())
    return f"{Path(resolved).name or 'dataset'}-{hashlib.sha1(resolved.encode()).hexdigest()[:10]}"


class Corrections:
    """The corrections of one dataset (or any corrections CSV given on the command line)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._read: dict[Path, tuple] = {}  # file → (its stat when read, what it held)

    def _cached(self, path: Path, read):
        """``read(path)``, parsed again only when the file changed (the Review page asks for the
        counts at every slice change)."""
        try:
            stat = path.stat()
            version = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            version = None
        cached = self._read.get(path)
        if cached is None or cached[0] != version or version is None:
            cached = self._read[path] = (version, read(path))
        return cached[1]

    @classmethod
    def for_dataset(cls, root: str | Path) -> "Corrections":
        return cls(corrections_root() / dataset_folder_name(root) / CORRECTIONS_FILE)

    @property
    def reviewed_path(self) -> Path:
        return self.path.with_name(REVIEWED_FILE)

    # -- reading ---------------------------------------------------------------------------------
    def rows(self) -> dict[str, dict[str, str]]:
        """``{slice id: {organ: rle}}``; every organ present (a missing row reads as absent). A
        damaged file is a ``DatasetError`` naming the file and row (never silently ignored: the
        masks a model trains on would change without a word)."""
        from core.data.scan import read_corrections

        return {sid: dict(row) for sid, row in self._cached(self.path, read_corrections).items()}

    def reviewed(self) -> set[str]:
        return set(self._cached(self.reviewed_path, _read_reviewed))

    # -- writing ---------------------------------------------------------------------------------
    def set_slice(self, slice_id: str, rles: dict[str, str]) -> None:
        """Record the corrected masks of one slice (RLE per organ; missing organs: absent)."""
        rows = self.rows()
        rows[slice_id] = {organ: rles.get(organ, "") or "" for organ in ORGANS}
        self._write(rows)

    def remove_slice(self, slice_id: str) -> None:
        """Forget a slice's correction: the dataset's own rows apply again."""
        rows = self.rows()
        if rows.pop(slice_id, None) is not None:
            self._write(rows)

    def set_reviewed(self, slice_id: str, reviewed: bool = True) -> None:
        ids = self.reviewed()
        ids.add(slice_id) if reviewed else ids.discard(slice_id)
        self.reviewed_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.reviewed_path, json.dumps({"reviewed": sorted(ids)}, indent=1))

    def _write(self, rows: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, train_csv_text(rows))


def _read_reviewed(path: Path) -> frozenset[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return frozenset(str(s) for s in data.get("reviewed", []))
    except FileNotFoundError:
        return frozenset()
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise DatasetError(f"reviewed-slices file '{path}' is damaged ({exc}); fix or delete "
                           "it") from None


def train_csv_text(rows: dict[str, dict[str, str]]) -> str:
    """``id,class,segmentation`` text, three rows per slice id (sorted), organs in ``ORGANS``
    order, as Kaggle's ``train.csv`` (an absent organ has an empty segmentation)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "class", "segmentation"])
    for sid in sorted(rows):
        for organ in ORGANS:
            writer.writerow([sid, organ, rows[sid].get(organ, "")])
    return out.getvalue()


def export_corrected_train_csv(index, out: str | Path) -> Path:
    """A full ``train.csv`` of ``index`` (a scan with its corrections applied) for use elsewhere."""
    if not index.has_labels:
        raise DatasetError(f"'{index.root}' has no labels to export")
    rows = {r.id: dict(r.rles or {}) for r in index.slices}
    out = Path(out)
    try:
        atomic_write_text(out, train_csv_text(rows))
    except OSError as exc:
        raise DatasetError(f"cannot write '{out}': {exc.strerror or exc}") from None
    return out
