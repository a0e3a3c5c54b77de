"""A trained model: everything a query needs, as one versioned JSON document.

Format ``qos-model/2``::

    {"format": "qos-model/2", "name": ..., "version": 3, "created": ISO-8601,
     "provenance": {...inputs with sha256, settings, qos-plan version...},
     "workflow": {...template...},
     "tiers": [{"name": "beegfs", "kind": "shared"}, ...],   # node-local fastest first
     "stages": [...],                                          # column order of placements
     "levels": [...], "stage_levels": {stage: level},
     "volumes": {stage: {"read_mib", "write_mib", "in_files_mib", "out_files_mib",
                         "in_from_mib"?: {source: MiB},
                         "read_transfer_bytes"?, "write_transfer_bytes"?}} | null,
     "rows": {"count": R,
              "nodes": COLUMN, "total": COLUMN, "region": COLUMN, "path": COLUMN,
              "placement": ["0212", ...],        # tier index per stage, one digit each
              "phases": [COLUMN per level]},      # index into that level's triples
     "phases": [[[in, exec, out], ...] per level],    # the distinct triples of each level
     "contracts": {...} | absent,     # job contracts, aligned with "phases" (contract.py)
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
import math
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from qos_plugin.errors import InputError
from qos_plugin.model.jsonio import MiB, decode_utf8, parse_json, read_bounded
from qos_plugin.model.limits import (
    MAX_LEVEL,
    MAX_MIB,
    MAX_NAME,
    MAX_NODES,
    MAX_SECONDS,
    MAX_TRANSFER_BYTES,
    check_name,
)
from qos_plugin.model.template import INITIAL_DATA, template_from_dict
from qos_plugin.planner.contract import Contract, ContractTables, contract_of, contracts_from_json

MODEL_FORMAT = "qos-model/2"
READABLE = ("qos-model/1", MODEL_FORMAT)
RETRAIN = "retrain it with 'qos-plan train'"
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_SIZES = {"d": 8, "B": 1, "H": 2, "I": 4, "Q": 8}
# A model of 114,568 placements is 5.7 MB (~50 bytes a placement); this holds
# ~10 M placements, more than training can fit regions to on one machine.
MAX_MODEL_BYTES = 512 * MiB
MAX_ROWS = 100_000_000
VOLUME_KEYS = ("read_mib", "write_mib", "in_files_mib", "out_files_mib")
# MiB of each source's distinct files a stage reads (optional: older models have none,
# and a stage-in then copies all of the stage's inputs from each source).
SOURCES_KEY = "in_from_mib"
# Bytes per operation a run replays (optional: older models have none).
TRANSFER_KEYS = ("read_transfer_bytes", "write_transfer_bytes")


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
    volumes: dict[str, dict[str, Any]] | None
    nodes: Sequence[int]               # (R,)
    total: Sequence[float]             # (R,)
    placement: Placements              # (R, S) tier index per stage
    region: Sequence[int]              # (R,) region id
    path: Sequence[int]                # (R,) index into paths
    phases: Phases                     # (R, 3L): in, exec, out per level
    paths: list[str]
    regions: dict[int, RegionInfo]
    contracts: ContractTables | None = None
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

    def contract(self, row: int) -> Contract | None:
        """The job contract of ``row``; None for a model trained without I/O volumes."""
        if self.contracts is None:
            return None
        tiers = self.placement[row]
        return contract_of(self.contracts, self.phases.tables, self.phases.triple, row,
                           self.levels, self.tier_names,
                           {s: self.tier_names[tiers[j]] for j, s in enumerate(self.stages)})

    def row_of(self, nodes: int, tiers: dict[str, str]) -> int | None:
        """The row of the placement with ``nodes`` and tier per stage ``tiers``, if any."""
        try:
            code = "".join(DIGITS[self.tier_names.index(tiers[s])] for s in self.stages)
        except (KeyError, ValueError):
            return None
        start = 0
        codes = self.placement.codes
        while True:
            try:
                r = codes.index(code, start)
            except ValueError:
                return None
            if self.nodes[r] == nodes:
                return r
            start = r + 1

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
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
        if self.contracts is not None:
            doc["contracts"] = self.contracts.to_json()
        return doc


def _ints(values: Any, what: str, lo: int, hi: int) -> list[int]:
    """A JSON list of whole numbers within [lo, hi] (format 1 columns)."""
    if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{what} is not a list of whole numbers")
    if values and not (lo <= min(values) and max(values) <= hi):
        raise ValueError(f"{what} has values outside {lo} to {hi}")
    return values


def _times(values: Any, what: str) -> list[float]:
    """A JSON list of times in seconds: finite numbers from 0 to MAX_SECONDS."""
    if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{what} is not a list of numbers")
    out = [float(v) for v in values]
    _check_times(out, what)
    return out


def _check_times(values: Sequence[float], what: str) -> None:
    # One pass in C: a NaN or an infinity makes the sum non-finite, and min/max
    # are then exact (this runs at every query, on every row of the model).
    if values and not (math.isfinite(sum(values)) and min(values) >= 0.0
                       and max(values) <= MAX_SECONDS):
        raise ValueError(f"{what} holds a time that is negative, NaN, infinite or over "
                         f"{MAX_SECONDS:g} s")


def _rows_v1(rows: dict[str, Any], levels: int) -> dict[str, Any]:
    return {"nodes": _ints(rows["nodes"], "rows.nodes", 1, MAX_NODES),
            "total": _times(rows["total"], "rows.total"),
            "region": _ints(rows["region"], "rows.region", 0, 2**31),
            "path": _ints(rows["path"], "rows.path", 0, 2**31),
            "placement": Placements.of([_ints(p, "rows.placement", 0, len(DIGITS) - 1)
                                        for p in rows["placement"]]),
            "phases": Phases.of([_times(p, "rows.phases") for p in rows["phases"]], levels)}


def _rows_v2(rows: dict[str, Any], tables: Any) -> dict[str, Any]:
    n = rows["count"]
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_ROWS:
        raise ValueError(f"rows.count is {str(n)[:20]}")
    codes = rows["placement"]
    if not isinstance(codes, list) or set(map(type, codes)) - {str}:
        raise TypeError("rows.placement is not a list of strings")
    if len(codes) != n:
        raise ValueError(f"rows.placement has {len(codes)} values, not {n}")
    out: dict[str, Any] = {k: unpack(rows[k], n) for k in ("nodes", "total", "region", "path")}
    if out["total"].typecode != "d":
        raise ValueError("rows.total is not float64")
    for k in ("nodes", "region", "path"):
        if out[k].typecode == "d":
            raise ValueError(f"rows.{k} is not a column of whole numbers")
    _check_times(out["total"], "rows.total")
    if not isinstance(tables, list) or not all(isinstance(level, list) for level in tables):
        raise TypeError("phases is not a list of tables")
    out["placement"] = Placements(codes)
    out["phases"] = Phases([[_times(t, "phases") for t in level] for level in tables],
                           [unpack(c, n) for c in rows["phases"]])
    return out


def _text(value: Any, what: str, longest: int = 256) -> str:
    """A printable string: the model's texts end up on the user's terminal, where a
    line break or an escape sequence would forge output."""
    if not isinstance(value, str) or len(value) > longest or not value.isprintable():
        raise TypeError(f"{what} is not a printable string of at most {longest} characters")
    return value


def _names(values: Any, what: str) -> list[str]:
    if not isinstance(values, list) or not values:
        raise TypeError(f"{what} is not a non-empty list")
    for v in values:
        why = check_name(v)
        if why:
            raise ValueError(f"{what}: {str(v)[:40]!r} {why}")
    if len(set(values)) != len(values):
        raise ValueError(f"{what} names one twice")
    return list(values)


def _number(value: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not lo <= value <= hi:                    # refuses NaN too
        raise ValueError(f"{what} is {str(value)[:40]}, not a number from {lo:g} to {hi:g}")
    return float(value)


def _whole(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{what} is {str(value)[:40]}, not a whole number from {lo} to {hi}")
    return value


def _region(r: Any) -> RegionInfo:
    if not isinstance(r, dict):
        raise TypeError("a region is not an object")
    rule = r["rule"]
    if not isinstance(rule, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and (k + v).isprintable()
            for k, v in rule.items()):
        raise TypeError("a region's rule is not an object of printable strings")
    crit, flex = r["critical"], r["flexible"]
    for what, names in (("critical", crit), ("flexible", flex)):
        if not isinstance(names, list) or not all(isinstance(v, str) and v.isprintable()
                                                  for v in names):
            raise TypeError(f"a region's {what} stages are not a list of names")
    return RegionInfo(_whole(r["id"], "a region id", 0, 2**31), dict(rule), list(crit),
                      list(flex), _number(r["median"], "a region median", 0, MAX_SECONDS),
                      _number(r["min"], "a region minimum", 0, MAX_SECONDS),
                      _number(r["max"], "a region maximum", 0, MAX_SECONDS),
                      _whole(r["size"], "a region size", 0, MAX_ROWS))


def _volumes(doc: Any, stages: list[str]) -> dict[str, dict[str, Any]] | None:
    """I/O volumes per stage (MiB) as the bandwidth figures read them, or None."""
    if doc is None:
        return None
    if not isinstance(doc, dict) or set(stages) - set(doc):
        raise TypeError("volumes is not an object with every stage")
    out: dict[str, dict[str, Any]] = {}
    for s in stages:
        v = doc[s]
        if not isinstance(v, dict) or not {"read_mib", "write_mib"} <= set(v):
            raise TypeError(f"volumes of {s!r} lack read_mib or write_mib")
        out[s] = {k: _number(x, f"volumes.{s}.{k}", 0, MAX_MIB) for k, x in v.items()
                  if k in VOLUME_KEYS}
        out[s].update({k: _number(x, f"volumes.{s}.{k}", 1, MAX_TRANSFER_BYTES)
                       for k, x in v.items() if k in TRANSFER_KEYS})
        if SOURCES_KEY in v:
            src = v[SOURCES_KEY]
            known = {INITIAL_DATA, *stages}
            if not isinstance(src, dict) or not set(src) <= known:
                raise TypeError(f"volumes.{s}.{SOURCES_KEY} is not an object of sources "
                                f"(initial_data or the model's stages)")
            out[s][SOURCES_KEY] = {k: _number(x, f"volumes.{s}.{SOURCES_KEY}.{k}", 0, MAX_MIB)
                                   for k, x in src.items()}
    return out


def model_from_json(doc: Any, source: str) -> TrainedModel:
    """A TrainedModel from a parsed document; InputError when it is not one.

    Every field is type-checked and bounded (times finite and non-negative, node
    counts positive, names printable, the workflow a valid template of the
    model's stages): a damaged or tampered model is refused here, in one line,
    rather than answering a query with a prediction no run can meet.
    """
    if not isinstance(doc, dict) or "format" not in doc:
        raise InputError(source, "is not a qos-plan model (no 'format')", RETRAIN)
    if doc["format"] not in READABLE:
        raise InputError(source, f"model format {str(doc['format'])[:40]!r}, this qos-plan "
                         f"reads {' and '.join(map(repr, READABLE))}",
                         RETRAIN + " or use a matching qos-plan")
    try:
        levels = [_number(v, "levels", -MAX_LEVEL, MAX_LEVEL) for v in doc["levels"]]
        rows = (_rows_v1(doc["rows"], len(levels)) if doc["format"] == "qos-model/1"
                else _rows_v2(doc["rows"], doc["phases"]))
        tiers = doc["tiers"]
        if not isinstance(tiers, list) or not all(isinstance(t, dict) for t in tiers):
            raise TypeError("tiers is not a list of objects")
        stages = _names(doc["stages"], "stages")
        stage_levels = doc["stage_levels"]
        if not isinstance(stage_levels, dict):
            raise TypeError("stage_levels is not an object")
        provenance, workflow = doc["provenance"], doc["workflow"]
        if not isinstance(provenance, dict) or not isinstance(workflow, dict):
            raise TypeError("provenance or workflow is not an object")
        paths = doc["paths"]
        if not isinstance(paths, list):
            raise TypeError("paths is not a list of strings")
        paths = [_text(p, "a critical path", 1 << 16) for p in paths]
        regions = [_region(r) for r in doc["regions"]]
        kinds = [_text(t.get("kind"), "a tier kind", 16) for t in tiers]
        contracts = contracts_from_json(doc.get("contracts"), stages, kinds, rows["phases"].tables)
        m = TrainedModel(
            name=_text(doc["name"], "name", 64),
            version=_whole(doc["version"], "version", 1, 10**9),
            created=_text(doc["created"], "created", 64),
            provenance=dict(provenance), workflow=dict(workflow),
            tier_names=_names([t.get("name") for t in tiers], "tier names"),
            tier_kinds=kinds, contracts=contracts,
            stages=stages, levels=levels,
            stage_levels={_text(k, "a stage", MAX_NAME): _number(v, "a stage level",
                                                                  -MAX_LEVEL, MAX_LEVEL)
                          for k, v in stage_levels.items()},
            volumes=_volumes(doc["volumes"], stages), paths=list(paths),
            regions={r.id: r for r in regions},
            **rows)
        if len(m.regions) != len(regions):
            raise ValueError("two regions share an id")
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise InputError(source, f"model is incomplete or damaged ({type(e).__name__}: "
                         f"{str(e)[:160]})", RETRAIN) from None
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
    if T > len(DIGITS):
        problems.append(f"{T} tiers, more than {len(DIGITS)}")
    codes = m.placement.codes
    if set(map(len, codes)) - {S} or set("".join(codes)) - set(DIGITS[:T]):
        problems.append(f"rows.placement is not {S} tier digits below "
                        f"{DIGITS[min(T, len(DIGITS)) - 1]!r} per row")
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
    if R and not (1 <= min(m.nodes) and max(m.nodes) <= MAX_NODES):
        problems.append(f"rows.nodes are not all from 1 to {MAX_NODES:,}")
    if set(m.tier_kinds) - {"shared", "node-local"}:
        problems.append(f"tier kinds {sorted(set(m.tier_kinds))}")
    elif "shared" not in m.tier_kinds:
        problems.append("no shared tier")
    if set(m.stage_levels) != set(m.stages):
        problems.append("stage_levels does not give every stage (and only them) a level")
    elif m.levels != sorted(set(m.stage_levels.values())):
        problems.append("levels are not the stages' distinct levels in order")
    problems += _workflow_problems(m, source)
    if problems:
        raise InputError(source, "model is inconsistent: " + "; ".join(problems), RETRAIN)


def _workflow_problems(m: TrainedModel, source: str) -> list[str]:
    """The stored workflow must be a valid template of the model's stages (the
    bandwidth figures walk its predecessors)."""
    try:
        wf = template_from_dict(m.workflow, f"{source}: workflow", patterns=False)
    except InputError as e:
        return [f"its workflow is not a valid template ({e.detail})"]
    if sorted(wf.stage_names) != sorted(m.stages):
        return ["its workflow's stages are not the model's"]
    if any(wf[s].level != m.stage_levels.get(s) for s in m.stages):
        return ["its workflow's levels are not the model's"]
    return []


def _signed(col: Sequence[int]) -> bool:
    """Whether a column may hold negative values (a JSON list may; an unsigned array not)."""
    return not (isinstance(col, array) and col.typecode in "BHIQ")


def read_model(path: str | Path) -> TrainedModel:
    p = Path(path)
    data = read_bounded(p, "model", MAX_MODEL_BYTES)
    text = decode_utf8(data, str(p), "model")
    doc = parse_json(text, str(p), "model",
                     syntax="model file is corrupt (JSON error at line {line}, column {column})",
                     hint=RETRAIN)
    return model_from_json(doc, str(p))
