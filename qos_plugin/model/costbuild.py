"""The per-edge cost table built from measurements.

A stage's I/O on a tier is priced as a whole: the stage moves ``A`` MiB (the sum
of ``aggregateFilesizeMB`` over its rows for that operation) while N nodes run
``tpn`` of its tasks each, and the storage profile gives the aggregate rate of
that load, looked up at data size ``A`` and the transfer size of each record;
the time is ``A / rate``, the largest over the stage's records (the published
SPM step's reading). The I/O table's rows are summed as given: the artifact's
table repeats every row once per node count, so its volumes are three times one
run's, and the published costs were built that way.

Moves (copies onto node-local tiers, flushes back, fan-out between the nodes of
one node-local tier) move ``U`` MiB per node, ``U`` the distinct files the stage
reads from the shared tier (stage-in) or writes (stage-out), so ``U * N`` in all,
with ``ceil(files / N)`` concurrent copies per node, priced with the profile's
cp/scp runs at that size and parallelism.

A profile measured on one machine only (every run at one node) says nothing
about how tiers scale over nodes: a node-local tier then gets its one-node rate
on every node (each node has its own device), a shared tier the one-node rate for
all nodes together, the cautious reading.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from qos_plugin.errors import InputError
from qos_plugin.model.costs import CostRow, CostTable, stage_in_name, stage_out_name
from qos_plugin.model.iodata import IoData, IoRecord
from qos_plugin.model.profile import StorageProfile
from qos_plugin.model.template import INITIAL_DATA, Stage, WorkflowTemplate
from qos_plugin.model.tiers import Tier, TierSet, move_name

MOVE_TRANSFER = 4096.0


class _Pricer:
    """Rate lookups of one build, cached (many records share their parameters)."""

    def __init__(self, profile: StorageProfile) -> None:
        self.profile = profile
        self._cache: dict[tuple[str, str, int, int, float, float], float] = {}

    def rate(self, op: str, storage: str, nodes: int, tpn: int, transfer: float,
             size: float) -> float:
        key = (op, storage, nodes, tpn, transfer, size)
        if key not in self._cache:
            self._cache[key] = self.profile.rate(op, storage, nodes, tpn, transfer, size)
        return self._cache[key]

    def stage_seconds(self, records: list[IoRecord], op: str, tier: Tier, nodes: int,
                      tpn: int, volume: float) -> float:
        """Time to move ``volume`` MiB: the slowest over the records' transfer sizes."""
        if volume <= 0 or not records:
            return 0.0
        scale = 1.0
        if tier.is_local and self.profile.measured_nodes(op, tier.name) == [1]:
            scale, nodes = float(nodes), 1
        worst = 0.0
        for transfer in sorted({r.transfer_bytes for r in records}):
            rate = self.rate(op, tier.name, nodes, tpn, transfer, volume) * scale
            if rate == rate and rate > 0:      # NaN: never measured
                worst = max(worst, volume / rate)
        return worst

    def move_seconds(self, op: str, move: str, per_node_mib: float, files: int,
                     nodes: int) -> tuple[int, float]:
        """(copies per node, seconds) to move ``per_node_mib`` to each of ``nodes``."""
        copies = max(1, math.ceil(files / nodes))
        total = per_node_mib * nodes
        if total <= 0:
            return copies, 0.0
        if self.profile.measured_nodes(op, move) == [1]:
            rate = self.rate(op, move, 1, copies, MOVE_TRANSFER, total) * nodes
        else:
            rate = self.rate(op, move, nodes, copies, MOVE_TRANSFER, total)
        return copies, (total / rate if rate == rate and rate > 0 else float("nan"))


def _volume(records: list[IoRecord]) -> float:
    return sum(r.size_mb for r in records)


def _distinct_files(records: list[IoRecord]) -> tuple[int, float]:
    """(number of files, MiB) of the distinct files in ``records`` (smallest size each)."""
    size: dict[str, float] = {}
    for r in records:
        size[r.file] = min(size.get(r.file, r.size_mb), r.size_mb)
    return len(size), sum(size.values())


def build_cost_table(template: WorkflowTemplate, io: IoData, profile: StorageProfile,
                     tiers: TierSet, nodes: Sequence[int]) -> CostTable:
    missing = [s.name for s in template.stages if not io.stage_records(s.name, "read")
               and not io.stage_records(s.name, "write")]
    if missing:
        raise InputError(io.source, f"no I/O recorded for stage(s) {', '.join(missing)}",
                         "give the measured I/O of every stage of the template")
    pricer = _Pricer(profile)
    rows: list[CostRow] = []
    for c in template.stages:
        reads = io.stage_records(c.name, "read")
        writes = io.stage_records(c.name, "write")
        read_volume = _volume(reads)
        for p in c.stage_predecessors:
            pst = template[p]
            p_writes = io.stage_records(p, "write")
            p_volume = _volume(p_writes)
            c_reads = [r for r in reads if r.source == p]
            for tier in tiers:
                for n in nodes:
                    ptpn, ctpn = pst.tasks_per_node(n), c.tasks_per_node(n)
                    rows.append(CostRow(
                        p, pst.level, c.name, c.level, tier.name, ptpn, tier.name, ctpn,
                        pricer.stage_seconds(p_writes, "write", tier, n, ptpn, p_volume),
                        pricer.stage_seconds(c_reads, "read", tier, n, ctpn, read_volume)))
        rows += _stage_in_rows(c, reads, pricer, tiers, nodes)
        rows += _stage_out_rows(c, writes, pricer, tiers, nodes)
    return CostTable.from_rows(rows, source=f"costs of {template.name}")


def _stage_in_rows(c: Stage, reads: list[IoRecord], pricer: _Pricer, tiers: TierSet,
                   nodes: Sequence[int]) -> list[CostRow]:
    initial = [r for r in reads if r.source == INITIAL_DATA] or reads
    files, per_node = _distinct_files(initial)
    volume = _volume(reads)
    rows = []
    for tier in tiers:
        for n in nodes:
            ctpn = c.tasks_per_node(n)
            local_read = pricer.stage_seconds(initial, "read", tier, n, ctpn, volume)
            if not tier.is_local:
                rows.append(CostRow(stage_in_name(c.name), c.level - 0.5, c.name, c.level,
                                    tier.name, ctpn, tier.name, ctpn, 0.0, local_read))
                continue
            for src in tiers:
                if src.is_local:
                    continue
                move = move_name(src.name, tier.name)
                k, secs = pricer.move_seconds("cp", move, per_node, files, n)
                rows.append(CostRow(stage_in_name(c.name), c.level - 0.5, c.name, c.level,
                                    move, k, tier.name, ctpn, secs, local_read))
    return rows


def _stage_out_rows(c: Stage, writes: list[IoRecord], pricer: _Pricer, tiers: TierSet,
                    nodes: Sequence[int]) -> list[CostRow]:
    files, per_node = _distinct_files(writes)
    volume = _volume(writes)
    rows = []
    for x in tiers:
        for y in tiers:
            if (x.is_local and y.is_local) != (x.name == y.name):
                continue
            move = move_name(x.name, y.name)
            op = "scp" if x.name == y.name else "cp"
            for n in nodes:
                ptpn = c.tasks_per_node(n)
                write = pricer.stage_seconds(writes, "write", x, n, ptpn, volume)
                k, secs = pricer.move_seconds(op, move, per_node, files, n)
                rows.append(CostRow(c.name, c.level, stage_out_name(c.name), c.level + 0.5,
                                    x.name, ptpn, move, k, write, secs))
    return rows
