"""Small CSV helpers shared by the loaders: required columns, typed columns and
one-line errors that name the file, the line and the value."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from qos_plugin.errors import InputError


class Table:
    """Rows of a CSV file as columns of strings, with typed accessors."""

    def __init__(self, source: str, header: list[str], rows: list[list[str]],
                 lines: list[int]) -> None:
        self.source = source
        self.header = header
        self.rows = rows
        self.lines = lines  # file line number of each row, for error messages
        self._pos = {name: i for i, name in enumerate(header)}

    def __len__(self) -> int:
        return len(self.rows)

    def has(self, column: str) -> bool:
        return column in self._pos

    def text(self, column: str) -> list[str]:
        i = self._pos[column]
        return [r[i].strip() for r in self.rows]

    def numbers(self, column: str, *, allow_empty: bool = False) -> np.ndarray:
        i = self._pos[column]
        out = np.empty(len(self.rows), dtype=float)
        for k, r in enumerate(self.rows):
            cell = r[i].strip()
            if cell == "" and allow_empty:
                out[k] = math.nan
                continue
            try:
                out[k] = float(cell)
            except ValueError:
                raise InputError(f"{self.source}:{self.lines[k]}",
                                 f"column {column!r} has {cell!r}, not a number",
                                 "fix or remove that row") from None
        return out

    def integers(self, column: str) -> np.ndarray:
        vals = self.numbers(column)
        bad = np.flatnonzero(vals != np.round(vals))
        if bad.size:
            k = int(bad[0])
            raise InputError(f"{self.source}:{self.lines[k]}",
                             f"column {column!r} has {vals[k]!r}, not a whole number",
                             "tasks per node and counts must be integers")
        return vals.astype(np.int64)


def read_table(path: str | Path, required: Sequence[str], what: str) -> Table:
    """Read a CSV with a header; every column in ``required`` must be present.

    Fully blank rows (all cells empty) are skipped: published tables contain them.
    """
    p = Path(path)
    try:
        fh = p.open(newline="")
    except OSError as e:
        raise InputError(str(p), f"cannot read the {what} ({e.strerror})",
                         "check the path") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise InputError(str(p), f"the {what} is empty", "give a CSV with a header row") \
                from None
        except csv.Error as e:
            raise InputError(str(p), f"not a CSV file ({e})", f"give the {what} as CSV") \
                from None
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(str(p), f"the {what} lacks column(s) {', '.join(missing)}",
                             f"expected columns: {', '.join(required)}")
        rows: list[list[str]] = []
        lines: list[int] = []
        try:
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise InputError(f"{p}:{reader.line_num}",
                                     f"row has {len(row)} cells, the header {len(header)}",
                                     "fix the row's commas or quoting")
                rows.append(row)
                lines.append(reader.line_num)
        except csv.Error as e:
            raise InputError(f"{p}:{reader.line_num}", f"malformed CSV ({e})",
                             "fix the quoting") from None
    if not rows:
        raise InputError(str(p), f"the {what} has a header but no rows", "add data rows")
    return Table(str(p), header, rows, lines)


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
