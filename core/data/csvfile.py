"""Reading the Kaggle CSV files (``train.csv``, ``submission.csv``, corrections) safely.

One reader for all of them, because the same traps apply to each: the csv module's default field
limit (128 KiB) is below the RLE of a speckled 360×310 mask (up to ~0.8 MB); a file saved by a
spreadsheet in Latin-1, a binary file, or one with NUL bytes must be one clear error naming the file
and the row, not a ``UnicodeDecodeError``; a FIFO or a folder named ``train.csv`` must not hang or
crash the scan.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from core.errors import DatasetError

MAX_FIELD_CHARS = 16 * 1024 * 1024


def csv_rows(path: Path, error=DatasetError) -> Iterator[tuple[int, list[str]]]:
    """``(row number, cells)`` of every row of a UTF-8 CSV file (the header is row 1, as in a
    spreadsheet). Raises ``error`` (a ``StudioError`` class) naming the file and row when the file
    is not readable UTF-8 CSV."""
    path = Path(path)
    if not path.exists():
        raise error(f"cannot read '{path}': no such file")
    if not path.is_file():
        raise error(f"'{path}' is not a regular file (a folder, a pipe or a device?)")
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_CHARS))
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise error(f"cannot read '{path}': {exc.strerror or exc}") from None
    with handle:
        reader = csv.reader(handle)
        row_number = 1
        try:
            for row in reader:
                row_number = reader.line_num
                if any("\x00" in cell for cell in row):
                    raise error(f"'{path.name}' row {row_number}: not valid CSV: it contains NUL "
                                "bytes (a binary file?)")
                yield row_number, row
        except UnicodeDecodeError:
            raise error(f"'{path.name}' row {row_number + 1}: not UTF-8 text (is it a CSV file? "
                        "save it as 'CSV UTF-8')") from None
        except csv.Error as exc:
            reason = "it contains NUL bytes (a binary file?)" if "NUL" in str(exc) else str(exc)
            raise error(f"'{path.name}' row {reader.line_num + 1}: not valid CSV: {reason}") \
                from None


def column_positions(name: str, header: list[str] | None, columns: tuple[str, ...],
                     error=DatasetError) -> dict[str, int]:
    """Where each of ``columns`` is in a CSV file's header row (``name`` is the file's name for the
    message); ``error`` for an empty file or missing columns."""
    expected = ",".join(columns)
    if header is None:
        raise error(f"{name} is empty; expected a header row {expected}")
    header = [cell.strip() for cell in header]
    missing = [c for c in columns if c not in header]
    if missing:
        raise error(f"{name} row 1: missing column(s) {', '.join(missing)}; expected {expected} "
                    f"(found {','.join(header)[:200]})")
    return {c: header.index(c) for c in columns}
