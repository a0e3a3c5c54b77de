"""Per-edge cost tables: the model's input.

One row per (producer, consumer, producer tier, producer tasks per node, consumer
tier, consumer tasks per node) with the estimated producer-side (write) and
consumer-side (read) times. Virtual producers ``stage_in-S`` and consumers
``stage_out-S`` carry data movement; a compound tier ``a-b`` is a move from a to b.
The CSV schema is the QoSFlow artifact's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qos_plugin.errors import InputError
from qos_plugin.model.csvio import read_table, write_csv
from qos_plugin.model.limits import MAX_LEVEL, MAX_SECONDS, MAX_TASKS

COLUMNS = (
    "producer", "producerStageOrder", "consumer", "consumerStageOrder",
    "producerStorageType", "producerTasksPerNode", "consumerStorageType",
    "consumerTasksPerNode", "SPM", "estT_prod", "estT_cons",
)

STAGE_IN_PREFIX = "stage_in-"
STAGE_OUT_PREFIX = "stage_out-"


def stage_in_name(stage: str) -> str:
    return f"{STAGE_IN_PREFIX}{stage}"


def stage_out_name(stage: str) -> str:
    return f"{STAGE_OUT_PREFIX}{stage}"


@dataclass(frozen=True)
class CostRow:
    """One row, for building tables in code."""

    producer: str
    producer_level: float
    consumer: str
    consumer_level: float
    producer_tier: str
    producer_tpn: int
    consumer_tier: str
    consumer_tpn: int
    est_prod: float
    est_cons: float

    @property
    def spm(self) -> float:
        return self.est_prod + self.est_cons


@dataclass
class CostTable:
    """Columns of a cost table, kept in file order (ties are broken by it)."""

    producer: np.ndarray
    producer_level: np.ndarray
    consumer: np.ndarray
    consumer_level: np.ndarray
    producer_tier: np.ndarray
    producer_tpn: np.ndarray
    consumer_tier: np.ndarray
    consumer_tpn: np.ndarray
    spm: np.ndarray
    est_prod: np.ndarray
    est_cons: np.ndarray
    source: str = "cost table"
    _by_edge: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, (p, c) in enumerate(zip(self.producer, self.consumer, strict=True)):
            groups[(str(p), str(c))].append(i)
        self._by_edge = {k: np.asarray(v, dtype=np.int64) for k, v in groups.items()}

    def __len__(self) -> int:
        return int(self.producer.shape[0])

    @classmethod
    def from_rows(cls, rows: Sequence[CostRow], source: str = "cost table") -> CostTable:
        if not rows:
            raise InputError(source, "no cost rows", "the workflow needs at least one edge")
        # Built tables (from a profile) get the bounds a loaded one gets: NaN is a
        # time not measured, anything else must be a time a CSV could hold.
        for r in rows:
            for side, v in (("estT_prod", r.est_prod), ("estT_cons", r.est_cons)):
                if v == v and not 0.0 <= v <= MAX_SECONDS:
                    raise InputError(source, f"{side} of {r.producer}->{r.consumer} on "
                                     f"{r.producer_tier}/{r.consumer_tier} is {v:g} s",
                                     f"times must be 0 to {MAX_SECONDS:g} s; check the "
                                     "profile's rates")

        def col(attr: str, dtype: type | str) -> np.ndarray:
            return np.asarray([getattr(r, attr) for r in rows], dtype=dtype)

        return cls(
            producer=col("producer", object), producer_level=col("producer_level", float),
            consumer=col("consumer", object), consumer_level=col("consumer_level", float),
            producer_tier=col("producer_tier", object), producer_tpn=col("producer_tpn", np.int64),
            consumer_tier=col("consumer_tier", object), consumer_tpn=col("consumer_tpn", np.int64),
            spm=col("spm", float), est_prod=col("est_prod", float),
            est_cons=col("est_cons", float), source=source)

    def storage_types(self) -> set[str]:
        return {str(x) for x in self.producer_tier} | {str(x) for x in self.consumer_tier}

    def row_key(self, i: int) -> tuple[str, str, str, int, str, int]:
        """(producer, consumer, producer tier, its tpn, consumer tier, its tpn) of row i."""
        return (str(self.producer[i]), str(self.consumer[i]), str(self.producer_tier[i]),
                int(self.producer_tpn[i]), str(self.consumer_tier[i]),
                int(self.consumer_tpn[i]))

    def edge_rows(self, producer: str, consumer: str) -> np.ndarray:
        return self._by_edge.get((producer, consumer), np.empty(0, dtype=np.int64))

    def select(self, producer: str, consumer: str, *, src: str | None = None,
               dst: str | None = None, dst_prefix: str | None = None) -> np.ndarray:
        """Row indices of an edge, optionally narrowed by tiers, in file order."""
        idx = self.edge_rows(producer, consumer)
        if idx.size == 0:
            return idx
        keep = np.ones(idx.size, dtype=bool)
        if src is not None:
            keep &= self.producer_tier[idx] == src
        if dst is not None:
            keep &= self.consumer_tier[idx] == dst
        if dst_prefix is not None:
            keep &= np.fromiter((str(t).startswith(dst_prefix) for t in self.consumer_tier[idx]),
                                dtype=bool, count=idx.size)
        return idx[keep]

    def _side(self, side: str) -> np.ndarray:
        return self.est_prod if side == "prod" else self.est_cons

    def _tpn(self, side: str) -> np.ndarray:
        return self.producer_tpn if side == "prod" else self.consumer_tpn

    def min_cost(self, idx: np.ndarray, side: str, tpn: int,
                 prefer: Sequence[str] = ("cons",)) -> float:
        """Smallest ``side`` cost among ``idx``, preferring rows whose tasks per
        node on the first side in ``prefer`` equals ``tpn`` (then the next side),
        else any row. NaN when there is no row."""
        if idx.size == 0:
            return float("nan")
        chosen = idx
        for pside in prefer:
            sel = idx[self._tpn(pside)[idx] == tpn]
            if sel.size:
                chosen = sel
                break
        vals = self._side(side)[chosen]
        vals = vals[~np.isnan(vals)]
        return float(vals.min()) if vals.size else float("nan")

    def cheapest(self, idx: np.ndarray, side: str) -> tuple[float, int | None]:
        """Cheapest ``side`` cost among ``idx`` over every tasks-per-node value,
        with that row's tasks per node on the same side; the first row wins ties."""
        if idx.size == 0:
            return float("nan"), None
        vals = self._side(side)[idx]
        ok = ~np.isnan(vals)
        if not ok.any():
            return float("nan"), None
        masked = np.where(ok, vals, np.inf)
        k = int(np.argmin(masked))
        return float(vals[k]), int(self._tpn(side)[idx[k]])


def load_costs(path: str | Path) -> CostTable:
    """Load a cost table CSV in the artifact's schema.

    Times are seconds in [0, MAX_SECONDS]; an empty time cell is a time not
    given, which the makespan model treats as a missing row. Stage orders are
    finite and tasks per node whole numbers; NaN and infinity are refused.
    """
    t = read_table(path, COLUMNS, "cost table")

    def level(column: str) -> np.ndarray:
        return t.numbers(column, lo=-MAX_LEVEL - 1, hi=MAX_LEVEL + 1,
                         hint="stage orders are the template's levels (x.5 on stage-in "
                              "and stage-out rows)")

    def tpn(column: str) -> np.ndarray:
        return t.integers(column, lo=0, hi=MAX_TASKS,
                          hint="tasks per node and copies are whole numbers")

    def seconds(column: str) -> np.ndarray:
        return t.numbers(column, lo=0.0, hi=MAX_SECONDS, allow_empty=True,
                         hint=f"costs are times in seconds, 0 to {MAX_SECONDS:g}: fix the "
                              "row, or leave the cell empty for a time not measured")

    return CostTable(
        producer=np.asarray(t.text("producer"), dtype=object),
        producer_level=level("producerStageOrder"),
        consumer=np.asarray(t.text("consumer"), dtype=object),
        consumer_level=level("consumerStageOrder"),
        producer_tier=np.asarray(t.text("producerStorageType"), dtype=object),
        producer_tpn=tpn("producerTasksPerNode"),
        consumer_tier=np.asarray(t.text("consumerStorageType"), dtype=object),
        consumer_tpn=tpn("consumerTasksPerNode"),
        spm=seconds("SPM"), est_prod=seconds("estT_prod"), est_cons=seconds("estT_cons"),
        source=t.source,
    )


def save_costs(table: CostTable, path: str | Path) -> None:
    def lvl(x: float) -> str:
        return repr(float(x))

    rows = (
        (table.producer[i], lvl(table.producer_level[i]), table.consumer[i],
         lvl(table.consumer_level[i]), table.producer_tier[i], int(table.producer_tpn[i]),
         table.consumer_tier[i], int(table.consumer_tpn[i]), repr(float(table.spm[i])),
         repr(float(table.est_prod[i])), repr(float(table.est_cons[i])))
        for i in range(len(table)))
    write_csv(path, COLUMNS, rows)
