"""Storage profiles: measured bandwidth by operation, tier and load (IOR schema).

Each row is one IOR-style run: ``operation`` (read, write, cp, scp), the tier (or a
move ``a-b``), transfer size, data size, nodes, tasks per node and the measured
aggregate rate ``trMiB`` (MiB/s). :meth:`StorageProfile.rate` estimates the rate at
an unmeasured point, in one of two ways (the profile's optional ``estimator``
column; one value for the whole file):

* ``qosflow`` (the default, QoSFlow's published estimator, which the artifact's
  costs were built with): it narrows the runs one dimension at a time (nodes, tasks
  per node, transfer size, data size) to the measured values bracketing the target,
  interpolates (or extrapolates) linearly along each dimension the mean of the runs
  left at its two values, and takes the median of the positive one-dimensional
  estimates. On a dense grid that is smooth; on a sparse one the means mix runs of
  other transfer sizes and loads (a write at 1 MiB measured at 103 MiB/s is
  estimated at 64 beside 4 KiB runs at 21);
* ``grid`` (what ``qos-plan profile`` writes): exact on a measured point, linear
  between the two measured values around the target one dimension at a time
  (nodes first: each is interpolated among the runs under the values already
  chosen), and the nearest measured value outside the measured range: a rate is
  not extrapolated beyond the loads that were run.

A ``files`` row (``qos-plan profile`` measures them) is a tier's cost per file: its tasks
each created small files and opened them again, one ``FILE_BYTES`` transfer per file
operation (a create, or an open), so its ``trMiB`` at that transfer size is its file
operations a second (``carried.py`` prices a stage's files with it).

A profile may also say how long a phase takes to start where it is measured: the
optional ``phaseStartSeconds`` column (one value for the whole file; 0 when absent,
as in the artifact's profiles). A run starts every phase of every level as processes
on its nodes (srun steps in a Slurm allocation: 0.1-0.2 s each here) and waits for all
of them before the next; the cost build charges that start to every action that moves
anything (``costbuild.py``). An srun step waits for every node it starts on, so a
phase on more nodes starts later: the optional ``phaseStartMoreSeconds`` (one value for
the file: ``;``-separated seconds) is what a phase on 2, 3, ... nodes takes more than on
one, as measured in an allocation of that many (``phase_start``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qos_plugin.errors import InputError
from qos_plugin.model.csvio import Table, read_table
from qos_plugin.model.limits import (
    MAX_MIB,
    MAX_NODES,
    MAX_RATE_MIBPS,
    MAX_TASKS,
    MAX_TRANSFER_BYTES,
)
from qos_plugin.model.tiers import Tier, TierKind, TierSet, split_move

REQUIRED = ("operation", "transferSize", "aggregateFilesizeMB", "numNodes", "tasksPerNode",
            "trMiB", "storageType")
ESTIMATORS = ("qosflow", "grid")
# A phase that takes longer than this to start is a broken launcher, not a cost.
MAX_PHASE_START_S = 60.0
# Node counts a profile's phaseStartMoreSeconds may give starts for (2 up to this).
MAX_START_NODES = 4096
DIMENSIONS = ("nodes", "tpn", "transfer", "size")
# Bytes of each file operation of a ``files`` row: its rate in MiB/s over this is its
# file operations a second.
FILE_BYTES = 4096


@dataclass
class StorageProfile:
    source: str
    # (operation, storage type) -> (rows, 4) of (nodes, tpn, transfer, size), rates
    runs: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]
    estimator: str = "qosflow"              # one of ESTIMATORS
    phase_start_s: float = 0.0              # seconds to start a phase's processes
    # what a phase on 2, 3, ... nodes takes more (an srun step waits for every node)
    phase_start_more_s: tuple[float, ...] = ()
    _grids: dict[tuple[str, str], _Grid | None] = field(default_factory=dict, repr=False)

    def phase_start(self, nodes: int) -> float:
        """Seconds to start a phase's processes on ``nodes`` nodes and see them end:
        the start on one, plus what the profile measured on that many; beyond the
        nodes measured, growing as it did from the last but one to the last."""
        more = self.phase_start_more_s
        k = nodes - 2
        if k < 0 or not more:
            return self.phase_start_s
        if k < len(more):
            return self.phase_start_s + more[k]
        step = max(0.0, more[-1] - (more[-2] if len(more) > 1 else 0.0))
        return self.phase_start_s + more[-1] + (k - len(more) + 1) * step

    def storage_types(self) -> set[str]:
        return {st for _, st in self.runs}

    def infer_tiers(self) -> TierSet:
        """Node-local tiers are those with fan-out runs (``x-x``); the others shared."""
        types = self.storage_types()
        plain = sorted(t for t in types if split_move(t) is None)
        local = [t for t in plain if f"{t}-{t}" in types]
        # A tier no move reaches cannot take part in a placement with staging.
        in_moves = {end for m in types if (mv := split_move(m)) for end in mv}
        shared = [t for t in plain if t not in local and t in in_moves]
        if len(shared) != 1:
            raise InputError(self.source, f"cannot tell the home shared tier (candidates: "
                             f"{', '.join(shared) or 'none'})",
                             "declare tiers with --tiers NAME:shared,NAME:node-local,...")
        speed = {t: -float(np.median(self.runs[("read", t)][1])) if ("read", t) in self.runs
                 else 0.0 for t in local}
        local.sort(key=lambda t: (speed[t], t))
        return TierSet(tuple([Tier(shared[0], TierKind.SHARED)]
                             + [Tier(t, TierKind.NODE_LOCAL) for t in local]))

    def tasks_per_node(self, operation: str, storage_type: str) -> list[int]:
        pts = self.runs.get((operation, storage_type))
        return [] if pts is None else sorted({int(v) for v in pts[0][:, 1] if v >= 1})

    def measured_nodes(self, operation: str, storage_type: str) -> list[int]:
        """Node counts the profile has runs at for (operation, storage type)."""
        grid = self._grid(operation, storage_type)
        return [] if grid is None else sorted(int(v) for v in grid.next_values[()])

    def rate(self, operation: str, storage_type: str, nodes: float, tpn: float,
             transfer: float, size: float) -> float:
        """Aggregate MiB/s of ``nodes`` x ``tpn`` tasks; NaN when never measured."""
        grid = self._grid(operation, storage_type)
        if grid is None:
            return float("nan")
        target = (float(nodes), float(tpn), float(transfer), float(size))
        if self.estimator == "grid":
            return grid.between(target)
        # Narrow one dimension at a time: among the runs left, keep the measured
        # values bracketing the target.
        prefixes: list[tuple[float, ...]] = [()]
        for d in range(4):
            seen = sorted({v for p in prefixes for v in grid.next_values[p]})
            chosen = _bracket(seen, target[d])
            prefixes = [p + (float(v),) for p in prefixes for v in chosen
                        if p + (float(v),) in grid.next_values or d == 3]
            prefixes = [p for p in prefixes if d < 3 or p in grid.sums]
        # One estimate per dimension: the mean rate of the runs left at its lower
        # and at its upper value, joined by a line through the target.
        estimates = []
        for d in range(4):
            sums: dict[float, list[float]] = defaultdict(lambda: [0.0, 0.0])
            for p in prefixes:
                acc = sums[p[d]]
                acc[0] += grid.sums[p]
                acc[1] += grid.counts[p]
            pts_d = sorted((v, a[0] / a[1]) for v, a in sums.items())
            estimates.append(_line(pts_d, target[d]))
        pos = [e for e in estimates if e > 0]
        return float(np.median(pos)) if pos else max(estimates)

    def _grid(self, operation: str, storage_type: str) -> _Grid | None:
        key = (operation, storage_type)
        if key not in self._grids:
            pts = self.runs.get(key)
            self._grids[key] = None if pts is None else _Grid.of(*pts)
        return self._grids[key]


@dataclass
class _Grid:
    """The measured points of one (operation, storage type), indexed for narrowing."""

    sums: dict[tuple[float, ...], float]               # summed rate per measured point
    counts: dict[tuple[float, ...], int]               # runs per measured point
    next_values: dict[tuple[float, ...], set[float]]   # values of the next dimension

    @classmethod
    def of(cls, x: np.ndarray, rates: np.ndarray) -> _Grid:
        cell: dict[tuple[float, ...], list[float]] = defaultdict(list)
        for row, r in zip(x.tolist(), rates.tolist(), strict=True):
            cell[tuple(row)].append(r)
        nxt: dict[tuple[float, ...], set[float]] = defaultdict(set)
        for k in cell:
            for d in range(4):
                nxt[k[:d]].add(k[d])
        return cls({k: float(sum(v)) for k, v in cell.items()},
                   {k: len(v) for k, v in cell.items()}, dict(nxt))

    def between(self, target: tuple[float, ...], prefix: tuple[float, ...] = ()) -> float:
        """The ``grid`` estimate at ``target`` among the runs under ``prefix``."""
        d = len(prefix)
        if d == len(target):
            return self.sums[prefix] / self.counts[prefix]
        values = sorted(self.next_values[prefix])
        t = target[d]
        if t <= values[0] or t >= values[-1]:       # measured there, or outside: nearest
            return self.between(target, prefix + (values[0] if t <= values[0]
                                                  else values[-1],))
        lo = max(v for v in values if v < t)
        hi = min(v for v in values if v >= t)
        y1 = self.between(target, prefix + (hi,))
        if hi == t:
            return y1
        y0 = self.between(target, prefix + (lo,))
        return y0 + (y1 - y0) * (t - lo) / (hi - lo)


def _bracket(values: list[float], t: float) -> list[float]:
    """Two measured values around ``t``, so every dimension keeps a slope: the
    largest below ``t`` and the smallest at or above it, or the two nearest on
    one side when ``t`` is outside the measured range (a hit on an end value
    counts as outside)."""
    if len(values) < 2:
        return values
    if t <= values[0]:
        return values[:2]
    if t >= values[-1]:
        return values[-2:]
    return [max(v for v in values if v < t), min(v for v in values if v >= t)]


def _line(points: list[tuple[float, float]], t: float) -> float:
    """Linear inter-/extrapolation through the end points; an extrapolation that
    goes negative falls back to the smaller positive end value."""
    if len(points) == 1:
        return points[0][1]
    (x0, y0), (x1, y1) = points[0], points[-1]
    if x1 == x0:
        return (y0 + y1) / 2
    y = y0 + (y1 - y0) * (t - x0) / (x1 - x0)
    if y <= 0:
        ends = [v for v in (y0, y1) if v > 0]
        return min(ends) if ends else y
    return y


def load_profile(path: str | Path) -> StorageProfile:
    t = read_table(path, REQUIRED, "storage profile")
    ops = [o.lower() for o in t.text("operation")]
    types = t.text("storageType")
    # Published profiles have runs at 0 tasks per node (never used: see
    # tasks_per_node) and runs at 0 MiB/s (dropped below): both stay readable.
    cols = np.stack([
        t.numbers("numNodes", lo=1, hi=MAX_NODES, hint="nodes of the run: 1 or more"),
        t.numbers("tasksPerNode", lo=0, hi=MAX_TASKS, hint="tasks per node: 0 or more"),
        t.numbers("transferSize", lo=1e-9, hi=MAX_TRANSFER_BYTES,
                  hint="bytes per operation: a positive number"),
        t.numbers("aggregateFilesizeMB", lo=0.0, hi=MAX_MIB, hint="MiB moved: 0 or more")],
        axis=1)
    rate = t.numbers("trMiB", lo=0.0, hi=MAX_RATE_MIBPS,
                     hint="the measured rate in MiB/s: 0 or more")
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for k, (o, s) in enumerate(zip(ops, types, strict=True)):
        if rate[k] > 0:
            groups[(o, s)].append(k)
    return StorageProfile(t.source, {key: (cols[idx], rate[idx]) for key, idx in groups.items()},
                          _estimator(t), _phase_start(t), _phase_start_more(t))


def _estimator(t: Table) -> str:
    """The profile's ``estimator`` column (absent: ``qosflow``), one value for all rows."""
    if not t.has("estimator") or not len(t):
        return "qosflow"
    seen = sorted({v.strip() or "qosflow" for v in t.text("estimator")})
    if len(seen) > 1 or seen[0] not in ESTIMATORS:
        raise InputError(t.source, f"estimator {', '.join(seen)[:60]!r} is not one of "
                         f"{', '.join(ESTIMATORS)} for the whole file",
                         "give one estimator in every row, or no estimator column")
    return seen[0]


def _phase_start(t: Table) -> float:
    """The profile's ``phaseStartSeconds`` column (absent: 0), one value for all rows."""
    if not t.has("phaseStartSeconds") or not len(t):
        return 0.0
    values = set(t.numbers("phaseStartSeconds", lo=0.0, hi=MAX_PHASE_START_S,
                           hint="seconds to start a phase: 0 to 60").tolist())
    if len(values) > 1:
        shown = ", ".join(f"{v:g}" for v in sorted(values)[:4])
        raise InputError(t.source, f"phaseStartSeconds differs between rows ({shown})",
                         "give one value in every row, or no phaseStartSeconds column")
    return float(values.pop())


def format_start_more(more: Sequence[float]) -> str:
    """``more`` (what a phase on 2, 3, ... nodes takes more than on one) as the
    profile's ``phaseStartMoreSeconds`` cell, which ``load_profile`` reads back."""
    return ";".join(repr(float(m)) for m in more)


def _phase_start_more(t: Table) -> tuple[float, ...]:
    """The profile's ``phaseStartMoreSeconds`` column (absent or empty: none), one
    value for all rows: ``;``-separated seconds, each 0 to 60."""
    col = "phaseStartMoreSeconds"
    if not t.has(col) or not len(t):
        return ()
    seen = sorted({v.strip() for v in t.text(col)})
    if len(seen) > 1:
        raise InputError(t.source, f"{col} differs between rows ({', '.join(seen[:3])[:80]})",
                         f"give one value in every row, or no {col} column")
    if not seen[0]:
        return ()
    cells = seen[0].split(";", MAX_START_NODES)
    try:
        more = tuple(float(c) for c in cells) if len(cells) < MAX_START_NODES else ()
    except ValueError:
        more = ()
    if not more or not all(0.0 <= m <= MAX_PHASE_START_S for m in more):
        raise InputError(t.source, f"{col} {seen[0][:60]!r} is not seconds 0 to 60 "
                         "separated by ';'",
                         "give what a phase on 2, 3, ... nodes takes more than on one, "
                         "e.g. 0.02;0.2")
    return more
