"""Small CSV helpers shared by the loaders: required columns, typed columns and
one-line errors that name the file, the line and the value.

Files are read whole under a size bound, as UTF-8; numbers are ASCII decimals
(``float()`` alone would take ``nan``, ``inf``, ``1_000`` and other scripts'
digits) inside the range the caller gives, so no NaN or infinity reaches a model.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from qos_plugin.errors import InputError
from qos_plugin.model.jsonio import MiB, decode_utf8, read_bounded

# The artifact's IOR profile is a few MB; a makespan table of 100,000 placements
# ~25 MB. Parsed cells take ~10x their bytes, so this keeps a load near 3 GB.
MAX_CSV_BYTES = 256 * MiB
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


def parse_number(cell: str) -> float | None:
    """``cell`` as a finite float when it is an ASCII decimal, else None (the
    caller names the problem: see :func:`number_problem`)."""
    if not _DECIMAL.fullmatch(cell):
        return None
    value = float(cell)
    return value if abs(value) < float("inf") else None


def number_problem(cell: str) -> str:
    """Why ``cell`` is not a usable number."""
    if _NON_FINITE.fullmatch(cell) or _DECIMAL.fullmatch(cell):
        return "not a finite number"
    return "not a number"


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

    def where(self, k: int) -> str:
        """``file:line`` of row ``k``, for error messages."""
        return f"{self.source}:{self.lines[k]}"

    def numbers(self, column: str, *, lo: float, hi: float, allow_empty: bool = False,
                hint: str = "fix or remove that row") -> np.ndarray:
        """The column as floats, each finite and within [lo, hi]; with
        ``allow_empty`` an empty cell is NaN (a value not given)."""
        i = self._pos[column]
        out = np.empty(len(self.rows), dtype=float)
        for k, r in enumerate(self.rows):
            cell = r[i].strip()
            if cell == "" and allow_empty:
                out[k] = np.nan
                continue
            value = parse_number(cell)
            if value is None:
                raise InputError(self.where(k), f"column {column!r} has {cell[:40]!r}, "
                                 f"{number_problem(cell)}", hint)
            if not lo <= value <= hi:
                raise InputError(self.where(k), f"column {column!r} has {cell[:40]}, "
                                 f"outside {lo:g} to {hi:g}", hint)
            out[k] = value
        return out

    def integers(self, column: str, *, lo: int, hi: int,
                 hint: str = "counts must be whole numbers") -> np.ndarray:
        """The column as whole numbers within [lo, hi] (``4`` or ``4.0``)."""
        vals = self.numbers(column, lo=lo, hi=hi, hint=hint)
        bad = np.flatnonzero(vals != np.round(vals))
        if bad.size:
            k = int(bad[0])
            raise InputError(self.where(k),
                             f"column {column!r} has {vals[k]!r}, not a whole number", hint)
        return vals.astype(np.int64)


def read_table(path: str | Path, required: Sequence[str], what: str,
               max_bytes: int = MAX_CSV_BYTES) -> Table:
    """Read a CSV with a header; every column in ``required`` must be present.

    Fully blank rows (all cells empty) are skipped: published tables contain them.
    """
    p = Path(path)
    text = decode_utf8(read_bounded(p, what, max_bytes), str(p), what)
    reader = csv.reader(io.StringIO(text, newline=""))
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
    dup = sorted({h for h in header if header.count(h) > 1 and h in required})
    if dup:
        raise InputError(str(p), f"the {what} has column {dup[0]!r} twice",
                         "keep one column of each name")
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
    with p.open("w", newline="", encoding="utf-8") as fh:   # read back as UTF-8
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
