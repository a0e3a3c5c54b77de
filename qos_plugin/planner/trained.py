"""A trained model: everything a query needs, as one versioned JSON document.

Format ``qos-model/2``::

    {"format": "qos-model/2", "name": ..., "version": 3, "created": ISO-8601,
     "provenance": {...inputs with sha256, settings, qos-plan version...},
     "workflow": {...template...},
     "tiers": [{"name": "beegfs", "kind": "shared"}, ...],   # node-local fastest first
     "stages": [...],                                          # column order of placements
     "levels": [...], "stage_levels": {stage: level},
     "volumes": {stage: {"read_mib", "write_mib", "in_files_mib", "out_files_mib"}} | null,
     "rows": {"count": R,
              "nodes": COLUMN, "total": COLUMN, "region": COLUMN, "path": COLUMN,
              "placement": ["0212", ...],        # tier index per stage, one digit each
              "phases": [COLUMN per level]},      # index into that level's triples
     "phases": [[[in, exec, out], ...] per level],    # the distinct triples of each level
     "paths": [...critical path strings...],
     "regions": [{"id", "rule", "critical", "flexible", "median", "min", "max", "size"}]}

A COLUMN is ``{"array": "d", "base64": ...}``: the values as a Python ``array`` of
that type code (``d`` float64, ``B``/``H``/``I``/``Q`` unsigned 1/2/4/8-byte integers),
little-endian, base64-encoded; a makespan is stored to the last bit. Rows are in
ascending (makespan, nodes) order. A placement is a string of tier digits
(``0-9a-z``), and a row's phase times are an index into the few (in, exec, out)
triples its level takes. A model of 100,000 placements is a few MB and loads in
milliseconds: parsing that many JSON numbers alone took longer than the query.
Format ``qos-model/1`` (a JSON list per column, a list per row) is still read.

Loading and querying use only the standard library: ``qos-plan query`` runs at
every sbatch, and importing numpy alone takes longer than its whole budget.
"""

from __future__ import annotations

import base64
import json
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from qos_plugin.errors import InputError

MODEL_FORMAT = "qos-model/2"
READABLE = ("qos-model/1", MODEL_FORMAT)
RETRAIN = "retrain it with 'qos-plan train'"
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_SIZES = {"d": 8, "B": 1, "H": 2, "I": 4, "Q": 8}


def pack(values: Sequence[float] | Sequence[int], code: str | None = None) -> dict[str, str]:
    """A COLUMN: ``values`` as a little-endian array, base64-encoded. Integers (never
    negative here) get the narrowest unsigned type that holds them unless ``code``
    is given."""
    if code is None:
        hi = max(values, default=0)
        code = next(c for c in "BHIQ" if hi < 1 << (8 * _SIZES[c]))
    a = array(code, values)
    if sys.byteorder == "big":
        a.byteswap()
    return {"array": code, "base64": base64.b64encode(a.tobytes()).decode("ascii")}


def unpack(col: Any, count: int) -> array[Any]:
    """The values of a COLUMN (TypeError/ValueError when it is not one of ``count``)."""
    code = col["array"]
    if code not in _SIZES or array(code).itemsize != _SIZES[code]:
        raise ValueError(f"unsupported column type {code!r}")
    a = array(code, base64.b64decode(col["base64"], validate=True))
    if sys.byteorder == "big":
        a.byteswap()
    if len(a) != count:
        raise ValueError(f"a column has {len(a)} values, not {count}")
    return a


class Placements(Sequence[list[int]]):
    """Tier index per stage of every row, kept as one digit string per row."""

    def __init__(self, codes: list[str]) -> None:
        self.codes = codes

    @classmethod
    def of(cls, rows: Sequence[Sequence[int]]) -> Placements:
        return cls(["".join(DIGITS[t] for t in p) for p in rows])

    def __len__(self) -> int:
        return len(self.codes)

    @overload
    def __getitem__(self, row: int) -> list[int]: ...
    @overload
    def __getitem__(self, row: slice) -> list[list[int]]: ...

    def __getitem__(self, row: int | slice) -> list[int] | list[list[int]]:
        if isinstance(row, slice):
            return [[DIGITS.index(c) for c in code] for code in self.codes[row]]
        return [DIGITS.index(c) for c in self.codes[row]]


class Phases(Sequence[list[float]]):
    """(in, exec, out) of every level of every row: per level the distinct
    triples and, per row, the index of its triple."""

    def __init__(self, tables: list[list[list[float]]], triple: list[Sequence[int]]) -> None:
        self.tables = tables
        self.triple = triple

    @classmethod
    def of(cls, rows: Sequence[Sequence[float]], levels: int) -> Phases:
        """The compact form of explicit per-row lists (format 1)."""
        seen: list[dict[tuple[float, ...], int]] = [{} for _ in range(levels)]
        triple = [[seen[k].setdefault(tuple(row[3 * k:3 * k + 3]), len(seen[k]))
                   for row in rows] for k in range(levels)]
        return cls([[list(t) for t in s] for s in seen], list(triple))

    def __len__(self) -> int:
        return len(self.triple[0]) if self.triple else 0

    def _row(self, row: int) -> list[float]:
        out: list[float] = []
        for table, triple in zip(self.tables, self.triple, strict=True):
            out += table[triple[row]]
        return out

    @overload
    def __getitem__(self, row: int) -> list[float]: ...
    @overload
    def __getitem__(self, row: slice) -> list[list[float]]: ...

    def __getitem__(self, row: int | slice) -> list[float] | list[list[float]]:
        if isinstance(row, slice):
            return [self._row(r) for r in range(len(self))[row]]
        return self._row(row)


@dataclass(frozen=True)
class RegionInfo:
    id: int
    rule: dict[str, str]
    critical: list[str]
    flexible: list[str]
    median: float
    min: float
    max: float
    size: int


@dataclass
class TrainedModel:
    name: str
    version: int
    created: str
    provenance: dict[str, Any]
    workflow: dict[str, Any]
    tier_names: list[str]
    tier_kinds: list[str]              # "shared" or "node-local"
    stages: list[str]
    levels: list[float]                # one per phase triple in ``phases``
    stage_levels: dict[str, float]
    volumes: dict[str, dict[str, float]] | None
    nodes: Sequence[int]               # (R,)
    total: Sequence[float]             # (R,)
    placement: Placements              # (R, S) tier index per stage
    region: Sequence[int]              # (R,) region id
    path: Sequence[int]                # (R,) index into paths
    phases: Phases                     # (R, 3L): in, exec, out per level
    paths: list[str]
    regions: dict[int, RegionInfo]
    # Per-process memo of derived columns (the queries' sort keys).
    memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def local_tiers(self) -> list[str]:
        return [n for n, k in zip(self.tier_names, self.tier_kinds, strict=True)
                if k == "node-local"]

    @property
    def node_counts(self) -> list[int]:
        return sorted({int(n) for n in self.nodes})

    def __len__(self) -> int:
        return len(self.total)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT, "name": self.name, "version": self.version,
            "created": self.created, "provenance": self.provenance, "workflow": self.workflow,
            "tiers": [{"name": n, "kind": k} for n, k in
                      zip(self.tier_names, self.tier_kinds, strict=True)],
            "stages": self.stages, "levels": self.levels, "stage_levels": self.stage_levels,
            "volumes": self.volumes,
            "rows": {"count": len(self), "nodes": pack(self.nodes), "total": pack(self.total, "d"),
                     "region": pack(self.region), "path": pack(self.path),
                     "placement": self.placement.codes,
                     "phases": [pack(ix) for ix in self.phases.triple]},
            "phases": self.phases.tables,
            "paths": self.paths,
            "regions": [vars(r) for r in self.regions.values()],
        }


def _rows_v1(rows: dict[str, Any], levels: int) -> dict[str, Any]:
    return {"nodes": [int(v) for v in rows["nodes"]],
            "total": [float(v) for v in rows["total"]],
            "region": [int(v) for v in rows["region"]],
            "path": [int(v) for v in rows["path"]],
            "placement": Placements.of([[int(v) for v in p] for p in rows["placement"]]),
            "phases": Phases.of([[float(v) for v in p] for p in rows["phases"]], levels)}


def _rows_v2(rows: dict[str, Any], tables: Any) -> dict[str, Any]:
    n = int(rows["count"])
    codes = rows["placement"]
    if not isinstance(codes, list) or set(map(type, codes)) - {str}:
        raise TypeError("rows.placement is not a list of strings")
    if len(codes) != n:
        raise ValueError(f"rows.placement has {len(codes)} values, not {n}")
    out: dict[str, Any] = {k: unpack(rows[k], n) for k in ("nodes", "total", "region", "path")}
    if out["total"].typecode != "d":
        raise ValueError("rows.total is not float64")
    out["placement"] = Placements(codes)
    out["phases"] = Phases([[[float(v) for v in t] for t in level] for level in tables],
                           [unpack(c, n) for c in rows["phases"]])
    return out


def model_from_json(doc: Any, source: str) -> TrainedModel:
    """A TrainedModel from a parsed document; InputError when it is not one."""
    if not isinstance(doc, dict) or "format" not in doc:
        raise InputError(source, "is not a qos-plan model (no 'format')", RETRAIN)
    if doc["format"] not in READABLE:
        raise InputError(source, f"model format {doc['format']!r}, this qos-plan reads "
                         f"{' and '.join(map(repr, READABLE))}",
                         RETRAIN + " or use a matching qos-plan")
    try:
        levels = [float(v) for v in doc["levels"]]
        rows = (_rows_v1(doc["rows"], len(levels)) if doc["format"] == "qos-model/1"
                else _rows_v2(doc["rows"], doc["phases"]))
        m = TrainedModel(
            name=str(doc["name"]), version=int(doc["version"]), created=str(doc["created"]),
            provenance=dict(doc["provenance"]), workflow=dict(doc["workflow"]),
            tier_names=[str(t["name"]) for t in doc["tiers"]],
            tier_kinds=[str(t["kind"]) for t in doc["tiers"]],
            stages=[str(s) for s in doc["stages"]], levels=levels,
            stage_levels={str(k): float(v) for k, v in doc["stage_levels"].items()},
            volumes=doc["volumes"], paths=[str(p) for p in doc["paths"]],
            regions={int(r["id"]): RegionInfo(
                int(r["id"]), dict(r["rule"]), list(r["critical"]), list(r["flexible"]),
                float(r["median"]), float(r["min"]), float(r["max"]), int(r["size"]))
                for r in doc["regions"]},
            **rows)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(source, f"model is incomplete or damaged ({type(e).__name__}: {e})",
                         RETRAIN) from None
    _check(m, source)
    return m


def _check(m: TrainedModel, source: str) -> None:
    R, S, T, L = len(m.total), len(m.stages), len(m.tier_names), len(m.levels)
    problems = []
    if R == 0:
        problems.append("no rows")
    for name, col in (("nodes", m.nodes), ("region", m.region), ("path", m.path),
                      ("placement", m.placement), ("phases", m.phases)):
        if len(col) != R:
            problems.append(f"rows.{name} has {len(col)} values, not {R}")
    codes = m.placement.codes
    if set(map(len, codes)) - {S} or set("".join(codes)) - set(DIGITS[:T]):
        problems.append(f"rows.placement is not {S} tier digits below {DIGITS[T - 1]!r} "
                        "per row")
    tables = m.phases.tables
    if (len(tables) != L or len(m.phases.triple) != L
            or any(len(t) != 3 for level in tables for t in level)
            or any((min(ix, default=0) < 0 if _signed(ix) else False)
                   or max(ix, default=0) >= len(table)
                   for table, ix in zip(tables, m.phases.triple, strict=False))):
        problems.append(f"phases are not {L} tables of (in, exec, out) that every row's "
                        "index points into")
    if R and not ((not _signed(m.path) or 0 <= min(m.path)) and max(m.path) < len(m.paths)):
        problems.append("rows.path points past the path list")
    if not set(m.region) <= set(m.regions):
        problems.append("rows.region names a region that does not exist")
    if R and min(m.nodes) < 1:
        problems.append("rows.nodes are not all positive")
    if set(m.tier_kinds) - {"shared", "node-local"}:
        problems.append(f"tier kinds {sorted(set(m.tier_kinds))}")
    if problems:
        raise InputError(source, "model is inconsistent: " + "; ".join(problems), RETRAIN)


def _signed(col: Sequence[int]) -> bool:
    """Whether a column may hold negative values (a JSON list may; an unsigned array not)."""
    return not (isinstance(col, array) and col.typecode in "BHIQ")


def read_model(path: str | Path) -> TrainedModel:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InputError(str(p), f"cannot read model ({e.strerror})", RETRAIN) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(str(p), f"model file is corrupt (JSON error at line {e.lineno}, "
                         f"column {e.colno})", RETRAIN) from None
    return model_from_json(doc, str(p))
