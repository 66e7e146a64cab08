"""Scan a dataset folder in the Kaggle UW-Madison GI Tract layout and report what is in it.

Layout::

    DATA_DIR/train.csv                                   id,class,segmentation (optional)
    DATA_DIR/train/case123/case123_day20/scans/slice_0001_266_266_1.50_1.50.png

The file name gives slice number, width, height (pixels) and pixel spacing (mm). ``train.csv`` has three
rows per slice id (one per organ) with RLE masks. A folder without ``train.csv`` is test data: images
only. Fatal problems raise ``DatasetError``; other problems are listed in the report and the affected
slices are left out.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from core.data import ORGANS
from core.data.csvfile import column_positions, csv_rows
from core.data.rle import RLEError, overrun_problem, parse_rle, rle_decode
from core.errors import CancelledError, DatasetError
from core.events import Progress

SLICE_FILE = re.compile(r"^slice_(\d+)_(\d+)_(\d+)_(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)\.png$", re.I)
CASE_DAY_DIR = re.compile(r"^case(\d+)_day(\d+)$", re.I)
SLICE_ID = re.compile(r"^case(\d+)_day(\d+)_slice_(\d+)$")
CSV_COLUMNS = ("id", "class", "segmentation")
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
MAX_SIDE = 4096
"""Largest slice width or height accepted (pixels); a header claiming more is not decoded."""


@dataclass
class SliceRecord:
    """One slice: where its image is, its size and spacing, and its masks as RLE (if labelled)."""

    id: str
    case: int
    day: int
    slice_num: int
    path: Path
    width: int
    height: int
    spacing: tuple[float, float]
    rles: dict[str, str] | None = None

    @property
    def case_day(self) -> str:
        return f"case{self.case}_day{self.day}"

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels, the shape of the image array and of each mask."""
        return self.height, self.width


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" (slice left out) or "warning" (slice kept)
    where: str
    message: str


@dataclass
class DatasetReport:
    root: str
    cases: int = 0
    case_days: int = 0
    slices: int = 0
    has_labels: bool = False
    slices_with: dict[str, int] = field(default_factory=dict)
    image_sizes: dict[str, int] = field(default_factory=dict)
    pixel_spacings: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    corrected: int = 0
    """Slices whose masks come from a corrections file instead of train.csv."""

    def to_dict(self) -> dict:
        return {
            "cases": self.cases, "case_days": self.case_days, "slices": self.slices,
            "corrected": self.corrected,
            "has_labels": self.has_labels, "slices_with": dict(self.slices_with),
            "image_sizes": dict(self.image_sizes), "pixel_spacings": dict(self.pixel_spacings),
            "problems": [{"severity": p.severity, "where": p.where, "message": p.message}
                         for p in self.problems],
        }


@dataclass
class DatasetIndex:
    root: Path
    slices: list[SliceRecord]
    has_labels: bool
    report: DatasetReport
    volumes: dict = field(default_factory=dict)
    """NIfTI/DICOM input: case-day → ``core.data.volumes.VolumeGeometry`` of its source volume."""

    def case_days(self) -> dict[str, list[SliceRecord]]:
        """Slices grouped by case-day, each group in slice order (the z order of the scan)."""
        groups: dict[str, list[SliceRecord]] = {}
        for record in self.slices:
            groups.setdefault(record.case_day, []).append(record)
        return groups

    def by_id(self) -> dict[str, SliceRecord]:
        return {r.id: r for r in self.slices}


def slice_id(case: int, day: int, slice_num: int) -> str:
    return f"case{case}_day{day}_slice_{slice_num:04d}"


def read_png16(path: Path) -> np.ndarray:
    """Read a grey PNG as a 2-D array (uint16 for 16-bit files, uint8 for 8-bit ones).

    Reads bytes first so that paths with non-ASCII characters work on Windows too.
    Raises ``DatasetError`` naming the file when it is missing or cannot be decoded.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"cannot read image '{path}': {exc.strerror or exc}") from None
    if data.size >= 24 and data[:8].tobytes() == b"\x89PNG\r\n\x1a\n":
        width, height = struct.unpack(">II", data[16:24].tobytes())
        if max(width, height) > MAX_SIDE:
            raise DatasetError(f"image '{path}' claims {width}×{height} pixels (at most {MAX_SIDE} "
                               "a side); not decoded")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise DatasetError(f"image '{path}' is not a readable PNG (truncated or corrupt?)")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image


def load_masks(record: SliceRecord) -> np.ndarray:
    """The slice's masks as ``bool`` of shape ``(3, height, width)`` in ``ORGANS`` order."""
    masks = np.zeros((len(ORGANS), record.height, record.width), dtype=bool)
    for i, organ in enumerate(ORGANS):
        rle = (record.rles or {}).get(organ, "")
        if rle:
            masks[i] = rle_decode(rle, record.shape)
    return masks


def _png_header(path: Path) -> tuple[int, int, int]:
    """Width, height and bit depth from the PNG header, without decoding the pixels."""
    with open(path, "rb") as fh:
        head = fh.read(33)
        fh.seek(max(0, fh.seek(0, 2) - 12))
        tail = fh.read(12)
    if len(head) < 33 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width, height, depth = struct.unpack(">IIB", head[16:25])
    if zlib.crc32(head[12:29]) != struct.unpack(">I", head[29:33])[0]:
        raise ValueError("PNG header is corrupt")
    if tail != _PNG_END:
        raise ValueError("file is truncated: it does not end with the PNG end marker")
    return width, height, depth


def _read_csv(path: Path, problems: list[Problem]) -> dict[str, dict[str, str]]:
    """Rows of train.csv as ``{slice id: {organ: rle}}``; bad rows become problems."""
    rows: dict[str, dict[str, str]] = defaultdict(dict)
    lines = csv_rows(path)
    header = next(lines, (1, None))[1]
    col = column_positions(path.name, header, CSV_COLUMNS)
    for line_no, row in lines:
        where = f"{path.name} row {line_no}"
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < len(header) - (1 if col["segmentation"] == len(header) - 1 else 0):
            problems.append(Problem("error", where, f"expected {len(header)} columns, "
                                    f"found {len(row)}"))
            continue
        sid = row[col["id"]].strip()
        organ = row[col["class"]].strip()
        rle = row[col["segmentation"]].strip() if col["segmentation"] < len(row) else ""
        if not SLICE_ID.match(sid):
            problems.append(Problem("error", where, f"id '{sid[:80]}' is not of the form "
                                    "caseN_dayM_slice_XXXX"))
            continue
        if organ not in ORGANS:
            problems.append(Problem("error", where, f"class '{organ[:80]}' is not one of "
                                    f"{', '.join(ORGANS)}"))
            continue
        if organ in rows[sid]:
            problems.append(Problem("warning", where, f"second row for {sid} / {organ}; "
                                    "the first is used"))
            continue
        try:
            parse_rle(rle)
        except RLEError as exc:
            problems.append(Problem("error", where, f"segmentation for {sid} / {organ}: {exc}"))
            rows[sid]["__bad__"] = "1"
            continue
        rows[sid][organ] = "" if rle.lower() == "nan" else rle
    return rows


def read_corrections(path: Path) -> dict[str, dict[str, str]]:
    """A corrections file (``core.data.corrections``, the train.csv format) as ``{slice id: {organ:
    rle}}`` with every organ (a missing row: absent); none when the file does not exist. A damaged
    file is a ``DatasetError`` naming the file and row: never skipped in silence, or the masks a
    model trains on would change without a word."""
    if not path.is_file():
        return {}
    problems: list[Problem] = []
    rows = _read_csv(path, problems)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DatasetError(f"corrections file '{path}': {errors[0].where}: {errors[0].message}; "
                           "fix or delete the file")
    return {sid: {organ: row.get(organ, "") for organ in ORGANS} for sid, row in rows.items()}


def _find_images(root: Path, problems: list[Problem]) -> list[tuple[int, int, int, Path, tuple]]:
    images_root = root / "train" if (root / "train").is_dir() else root / "test"
    if not images_root.is_dir():
        raise DatasetError(f"'{root}' has no 'train' (or 'test') folder; expected the Kaggle layout "
                           "train/caseN/caseN_dayM/scans/slice_XXXX_W_H_PW_PH.png")
    found = []
    for scans in sorted(images_root.glob("*/*/scans")):
        day_match = CASE_DAY_DIR.match(scans.parent.name)
        if not day_match:
            problems.append(Problem("warning", str(scans.parent.relative_to(root)),
                                    "folder name is not caseN_dayM; skipped"))
            continue
        case, day = int(day_match.group(1)), int(day_match.group(2))
        for png in sorted(scans.iterdir()):
            if png.suffix.lower() != ".png":
                continue
            if not png.is_file():  # a folder, a pipe or a device named like a slice: never opened
                problems.append(Problem("warning", str(png.relative_to(root)), "not a regular "
                                        "file; skipped"))
                continue
            m = SLICE_FILE.match(png.name)
            if not m:
                problems.append(Problem("warning", str(png.relative_to(root)), "file name is not "
                                        "slice_XXXX_W_H_PW_PH.png; skipped"))
                continue
            num, width, height = int(m.group(1)), int(m.group(2)), int(m.group(3))
            found.append((case, day, num, png, (width, height, float(m.group(4)),
                                                float(m.group(5)))))
    found.sort(key=lambda item: item[:3])
    return found


def scan_dataset(root: str | Path, progress: Callable[[Progress], None] | None = None,
                 cancel: Callable[[], bool] | None = None,
                 labels: dict[str, int] | None = None,
                 corrections: str | Path | None = None) -> DatasetIndex:
    """Index a dataset folder, check every file header and RLE, and build its report.

    ``corrections``: a corrections CSV (``core.data.corrections``, the ``train.csv`` format) whose
    rows replace the dataset's for their slice ids; the report counts them (``corrected``).

    A NIfTI (nnU-Net/MSD or flat) or DICOM folder is converted to this layout first
    (``core.data.volumes``; ``labels``: organ → label value, else dataset.json's names).

    ``progress`` receives ``Progress("scan", done, total)``; ``cancel()`` returning True stops the
    scan with ``CancelledError``. Image pixels are not decoded here (the cache build decodes them and
    reports unreadable files); headers are read to check size and bit depth.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder '{root}' does not exist")
    from core.data.volumes import convert_dataset, detect_layout

    layout = detect_layout(root)
    if layout not in (None, "kaggle"):
        converted, volumes, found = convert_dataset(root, layout, labels, progress, cancel)
        index = scan_dataset(converted, progress, cancel, corrections=corrections)
        index.root, index.report.root, index.volumes = root, str(root), volumes
        index.report.problems[:0] = [Problem(*p) for p in found]
        return index
    problems: list[Problem] = []
    csv_path = root / "train.csv"
    has_labels = csv_path.is_file()
    labels = _read_csv(csv_path, problems) if has_labels else {}
    corrected: dict[str, dict[str, str]] = {}
    if corrections is not None:
        corrected = read_corrections(Path(corrections))
    used_corrections = 0
    found = _find_images(root, problems)
    if not found:
        raise DatasetError(f"no slice images found under '{root}'; expected "
                           "train/caseN/caseN_dayM/scans/slice_XXXX_W_H_PW_PH.png")

    slices: list[SliceRecord] = []
    seen_ids = set()
    for i, (case, day, num, png, (width, height, pw, ph)) in enumerate(found):
        if cancel is not None and cancel():
            raise CancelledError("dataset scan cancelled")
        if progress is not None and (i % 200 == 0 or i == len(found) - 1):
            progress(Progress("scan", i + 1, len(found), "checking images"))
        where = str(png.relative_to(root))
        sid = slice_id(case, day, num)
        seen_ids.add(sid)
        try:
            real_w, real_h, depth = _png_header(png)
        except (OSError, ValueError) as exc:
            problems.append(Problem("error", where, f"unreadable PNG ({exc}); slice left out"))
            continue
        if (real_w, real_h) != (width, height):
            problems.append(Problem("error", where, f"image is {real_w}×{real_h} but the file name "
                                    f"says {width}×{height}; slice left out"))
            continue
        if max(width, height) > MAX_SIDE:
            problems.append(Problem("error", where, f"image is {width}×{height} pixels, larger than "
                                    f"any MRI slice ({MAX_SIDE} px a side at most); slice left out"))
            continue
        if depth == 8:
            problems.append(Problem("warning", where, "8-bit image (expected 16-bit); intensities "
                                    "are used as they are"))
        elif depth != 16:
            problems.append(Problem("error", where, f"{depth}-bit image; expected 16-bit grey; "
                                    "slice left out"))
            continue
        rles = None
        if sid in corrected:
            rles = corrected[sid]
            overrun = _rle_overrun(rles, width, height)
            if overrun:
                overrun = overrun.removesuffix("; slice left out")
                raise DatasetError(f"corrections file '{corrections}': {sid}: {overrun}; fix or "
                                   "delete the file")
            used_corrections += 1
        elif has_labels:
            if sid not in labels:
                problems.append(Problem("error", where, f"no rows for {sid} in train.csv; "
                                        "slice left out"))
                continue
            row = labels[sid]
            if "__bad__" in row:
                continue  # the CSV problem is already reported
            absent = [o for o in ORGANS if o not in row]
            if absent:
                problems.append(Problem("warning", f"train.csv {sid}", f"no row for "
                                        f"{', '.join(absent)}; treated as empty"))
            rles = {organ: row.get(organ, "") for organ in ORGANS}
            overrun = _rle_overrun(rles, width, height)
            if overrun:
                problems.append(Problem("error", f"train.csv {sid}", overrun))
                continue
        slices.append(SliceRecord(sid, case, day, num, png, width, height, (pw, ph), rles))

    for sid in sorted(set(labels) - seen_ids):
        problems.append(Problem("error", f"train.csv {sid}", "id has no image file; rows ignored"))
    for sid in sorted(set(corrected) - seen_ids):
        problems.append(Problem("warning", f"{Path(corrections).name} {sid}", "id has no image "
                                "file in this dataset; correction ignored"))
    sizes: dict[str, set] = defaultdict(set)
    for record in slices:
        sizes[record.case_day].add((record.width, record.height))
    for case_day, found_sizes in sizes.items():
        if len(found_sizes) > 1:
            listed = ", ".join(f"{w}×{h}" for w, h in sorted(found_sizes))
            problems.append(Problem("warning", case_day, f"slices of {len(found_sizes)} sizes "
                                    f"({listed}); each is predicted at its own size, and the "
                                    "case-day is not scored as one volume"))
    if not slices:
        first = problems[0].message if problems else "no usable slices"
        raise DatasetError(f"no usable slices in '{root}' ({len(problems)} problems; first: {first})")
    report = _report(root, slices, has_labels, problems)
    report.corrected = used_corrections
    return DatasetIndex(root, slices, has_labels, report)


def _rle_overrun(rles: dict[str, str], width: int, height: int) -> str | None:
    for organ, rle in rles.items():
        problem = overrun_problem(*parse_rle(rle), (height, width))
        if problem:
            return f"{organ} {problem}; slice left out"
    return None


def _report(root: Path, slices: list[SliceRecord], has_labels: bool,
            problems: list[Problem]) -> DatasetReport:
    with_organ = Counter()
    for record in slices:
        for organ, rle in (record.rles or {}).items():
            if rle:
                with_organ[organ] += 1
    return DatasetReport(
        root=str(root),
        cases=len({r.case for r in slices}),
        case_days=len({r.case_day for r in slices}),
        slices=len(slices),
        has_labels=has_labels,
        slices_with={o: with_organ[o] for o in ORGANS} if has_labels else {},
        image_sizes=dict(Counter(f"{r.width}x{r.height}" for r in slices)),
        pixel_spacings=dict(Counter(f"{r.spacing[0]:.2f}x{r.spacing[1]:.2f}" for r in slices)),
        problems=problems,
    )
