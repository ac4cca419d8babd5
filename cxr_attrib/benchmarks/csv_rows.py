"""Rows of the CSV annotation files the benchmark loaders read."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from ..errors import DataError
from ..safeio import read_text

__all__ = ["read_csv"]


def read_csv(path: Path, columns: tuple[str, ...], what: str) -> Iterator[tuple[int, dict[str, str]]]:
    """The rows of a UTF-8 CSV with a header (a byte-order mark allowed), as (line, {column: cell}).

    Header names are compared without surrounding spaces (SIIM-ACR's header has
    ``" EncodedPixels"``); blank rows are skipped; other columns are ignored.

    Raises:
        DataError: the file cannot be read, or the header lacks a column (names the file).
    """
    try:
        handle = io.StringIO(read_text(path, what=what, encoding="utf-8-sig", errors="replace"), newline="")
    except (OSError, DataError) as error:
        raise DataError(f"cannot read {what} {path}: {error}") from error
    with handle:
        reader = csv.reader(handle)
        header = {name.strip(): position for position, name in enumerate(next(reader, []))}
        missing = [name for name in columns if name not in header]
        if missing:
            raise DataError(
                f"{path}: the header lacks column {missing[0]!r}; {what} needs {', '.join(columns)}; "
                f"got {sorted(header)}."
            )
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            cells = {name: (row[header[name]].strip() if header[name] < len(row) else "") for name in columns}
            yield reader.line_num, cells
