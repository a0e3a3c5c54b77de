"""The per-edge cost table built from measurements, by the published SPM rules.

**Stage I/O.** A stage's I/O on a tier is priced as a whole: the stage moves
``A`` MiB for an operation (the sum of ``aggregateFilesizeMB`` over its rows for
that operation) while N nodes run ``tpn`` of its tasks each, and the storage
profile gives the aggregate rate of that load at data size ``A`` and the
transfer size of a record; the record's time is ``A / rate``. A cost is the
slowest record of the files it concerns: on an edge, the producer's writes of
the files the consumer reads and the consumer's reads of the files the producer
writes; for a stage reading its inputs where they already are, every record of
the stage (the cautious reading: a stage is charged its slowest I/O). The I/O
table's rows are summed as given: the artifact's table repeats every row once
per node count, so its volumes are three times one run's, and the published
costs were built that way.

**Moves** (copies from the shared tier onto node-local ones, fan-out between
the nodes of one node-local tier, flushes back) copy ``U`` MiB to each node,
``U`` the distinct files of the stage (smallest size each): every file the
stage touches, plus, for the first level, the workflow's initial inputs and,
for the last level, the files of the whole last level on a flush home. Files
are copied in batches of :data:`COPY_BATCH` records; a batch of ``f`` files on
N nodes runs ``ceil(f / N)`` copies per node, priced with the profile's cp
(scp within a node-local tier) runs moving ``U * N`` MiB at that parallelism.
Each parallelism becomes one cost row; the batches sharing it are charged their
slowest, and the data side of the row covers the files of those batches. The
makespan model then takes the cheapest row of a move.

**Phase starts.** A profile with a phase start (``phaseStartSeconds``: a run
starts each phase's processes on its nodes and waits for them all, srun steps in
an allocation; more on more nodes, ``phaseStartMoreSeconds``, see
``StorageProfile.phase_start``) adds it, for the nodes the action's phase starts on,
to every cost that moves anything: a stage's write (its
execution is its reads plus its write, one start), each copy of a stage-in and
each move of a stage-out. A level's phase is the largest of its actions, so it
pays one start, as a run does; a phase with nothing to move pays none. The
artifact's profiles have none, so its costs are unchanged.

A profile measured on one machine only (every run at one node) says nothing
about how tiers scale over nodes: a node-local tier, or a copy between
node-local tiers, then gets its one-node rate on every node (each node has its
own device); a shared tier, or a copy to or from one, the one-node rate for all
nodes together, the cautious reading.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qos_plugin.errors import InputError
from qos_plugin.model.costs import CostRow, CostTable, stage_in_name, stage_out_name
from qos_plugin.model.iodata import IoData, IoRecord
from qos_plugin.model.profile import StorageProfile
from qos_plugin.model.template import Stage, WorkflowTemplate
from qos_plugin.model.tiers import Tier, TierSet, move_name, split_move

MOVE_TRANSFER = 4096.0
COPY_BATCH = 60


def move_operation(src: str, dst: str) -> str:
    """The profile operation of a move between tiers ``src`` and ``dst``: ``scp`` for a
    fan-out within one node-local tier, ``cp`` between two tiers."""
    return "scp" if src == dst else "cp"


class Pricer:
    """Rate lookups of one build, cached (many records share their parameters)."""

    def __init__(self, profile: StorageProfile) -> None:
        self.profile = profile
        self._cache: dict[tuple[str, str, bool, int, int, float, float], float] = {}

    def rate(self, op: str, storage: str, per_node: bool, nodes: int, tpn: int,
             transfer: float, size: float) -> float:
        """Aggregate MiB/s over ``nodes``; ``per_node`` storage (a node-local tier
        or a move) scales by nodes when the profile only knows one node."""
        key = (op, storage, per_node, nodes, tpn, transfer, size)
        if key not in self._cache:
            if per_node and self.profile.measured_nodes(op, storage) == [1]:
                r = self.profile.rate(op, storage, 1, tpn, transfer, size) * nodes
            else:
                r = self.profile.rate(op, storage, nodes, tpn, transfer, size)
            self._cache[key] = r
        return self._cache[key]


@dataclass(frozen=True)
class _Batch:
    """One copy batch: its distinct files, in record order."""

    files: tuple[str, ...]

    def copies(self, nodes: int) -> int:
        return max(1, math.ceil(len(self.files) / nodes))


def _batches(records: Iterable[IoRecord]) -> list[_Batch]:
    seen: dict[tuple[str, str, float], None] = {}
    for r in records:
        seen.setdefault((r.task, r.file, r.size_mb), None)
    keys = list(seen)
    return [_Batch(tuple(dict.fromkeys(f for _, f, _ in keys[i:i + COPY_BATCH])))
            for i in range(0, len(keys), COPY_BATCH)]


class _Builder:
    def __init__(self, template: WorkflowTemplate, io: IoData, profile: StorageProfile,
                 tiers: TierSet, nodes: Sequence[int]) -> None:
        self.template, self.tiers, self.nodes = template, tiers, list(nodes)
        self.pricer = Pricer(profile)
        self.records = {s.name: [r for r in io.records if r.stage == s.name]
                        for s in template.stages}
        self.volume = {(s, op): sum(r.size_mb for r in rs if r.operation == op)
                       for s, rs in self.records.items() for op in ("read", "write")}
        self.file_size: dict[str, float] = {}
        for r in io.records:
            self.file_size[r.file] = min(self.file_size.get(r.file, r.size_mb), r.size_mb)
        levels = [s.level for s in template.stages if self.records[s.name]]
        reading = [s.level for s in template.stages
                   if any(r.operation == "read" for r in self.records[s.name])]
        first, last = min(reading, default=min(levels)), max(levels)
        self.first_level = {s.name for s in template.stages if s.level == first}
        self.last_level = {s.name for s in template.stages if s.level == last}
        # Batches follow the order of the measurements, across the level's stages.
        self.initial = _batches(r for r in io.records
                                if r.stage in self.first_level and r.operation == "read")
        self.final = _batches(r for r in io.records if r.stage in self.last_level)

    def io_seconds(self, stage: Stage, records: Iterable[IoRecord], tier: Tier,
                   nodes: int) -> float:
        """The slowest of ``records`` (of ``stage``) on ``tier`` over ``nodes``."""
        tpn = stage.tasks_per_node(nodes)
        worst = float("nan")
        for op, transfer in sorted({(r.operation, r.transfer_bytes) for r in records}):
            volume = self.volume[(stage.name, op)]
            if volume <= 0:
                continue
            rate = self.pricer.rate(op, tier.name, tier.is_local, nodes, tpn, transfer, volume)
            if rate != rate:                   # NaN: never measured
                # Charging it 0 s would promise deadlines no run meets.
                raise InputError(self.pricer.profile.source,
                                 f"no {op} run on tier {tier.name} (stage {stage.name} "
                                 f"{op}s {volume:,.1f} MiB at N={nodes})",
                                 "measure the tier with 'qos-plan profile', or give a cost "
                                 "table with --costs")
            if rate > 0:
                secs = volume / rate
                worst = secs if worst != worst else max(worst, secs)
        return 0.0 if worst != worst else worst

    def started(self, seconds: float, nodes: int) -> float:
        """``seconds`` of an action on ``nodes`` nodes, with its phase's start when it
        moves anything."""
        return seconds + self.pricer.profile.phase_start(nodes) if seconds > 0 else seconds

    def edge_rows(self, c: Stage) -> list[CostRow]:
        rows = []
        for p in c.stage_predecessors:
            pst = self.template[p]
            writes = [r for r in self.records[p] if r.operation == "write"]
            reads = [r for r in self.records[c.name] if r.operation == "read"]
            shared = {r.file for r in writes} & {r.file for r in reads}
            p_recs = [r for r in writes if r.file in shared] or writes
            c_recs = [r for r in reads if r.file in shared] or \
                [r for r in reads if r.source == p]
            for tier in self.tiers:
                for n in self.nodes:
                    rows.append(CostRow(
                        p, pst.level, c.name, c.level, tier.name, pst.tasks_per_node(n),
                        tier.name, c.tasks_per_node(n),
                        self.started(self.io_seconds(pst, p_recs, tier, n),
                                     min(n, pst.num_tasks)),
                        self.io_seconds(c, c_recs, tier, n)))
        return rows

    def _move_rows(self, batches: list[_Batch], op: str, move: str,
                   volume_files: set[str]) -> list[tuple[int, float, set[str]]]:
        """(copies per node, seconds, files) per parallelism of ``batches``."""
        per_node_mib = sum(self.file_size.get(f, 0.0) for f in volume_files)
        # A copy scales with nodes only between node-local ends; a shared end bounds it.
        per_node = all(self.tiers[t].is_local for t in split_move(move) or ())
        by_copies: dict[int, tuple[float, set[str]]] = {}
        for b in dict.fromkeys(batches):
            done: set[int] = set()
            for n in self.nodes:
                k = b.copies(n)
                if k in done:          # the smallest node count with this parallelism
                    continue
                done.add(k)
                total = per_node_mib * n
                secs = 0.0
                if total > 0:
                    rate = self.pricer.rate(op, move, per_node, n, k, MOVE_TRANSFER, total)
                    secs = total / rate if rate == rate and rate > 0 else float("nan")
                worst, files = by_copies.get(k, (float("-inf"), set()))
                by_copies[k] = (max(worst, secs), files | set(b.files))
        return [(k, secs, files) for k, (secs, files) in by_copies.items()]

    def stage_in_rows(self, c: Stage) -> list[CostRow]:
        rows: list[CostRow] = []
        own = _batches(self.records[c.name])
        cp = own + (self.initial if c.name in self.first_level else [])
        cp_files = {f for b in cp for f in b.files}
        for tier in self.tiers:
            if not tier.is_local:
                for n in self.nodes:
                    ctpn = c.tasks_per_node(n)
                    rows.append(CostRow(
                        stage_in_name(c.name), c.level - 0.5, c.name, c.level, tier.name, ctpn,
                        tier.name, ctpn, 0.0,
                        self.io_seconds(c, self.records[c.name], tier, n)))
                continue
            for src in self.tiers:
                if src.is_local:
                    continue
                move = move_name(src.name, tier.name)
                for k, secs, files in self._move_rows(cp, "cp", move, cp_files):
                    recs = [r for r in self.records[c.name] if r.file in files]
                    for n in self.nodes:
                        rows.append(CostRow(
                            stage_in_name(c.name), c.level - 0.5, c.name, c.level, move, k,
                            tier.name, c.tasks_per_node(n), self.started(secs, n),
                            self.io_seconds(c, recs, tier, n)))
        return rows

    def stage_out_rows(self, c: Stage) -> list[CostRow]:
        rows: list[CostRow] = []
        own = _batches(self.records[c.name])
        written = _batches(r for r in self.records[c.name] if r.operation == "write")
        flush_last = self.final if c.name in self.last_level else []
        ops_files = {
            "cp": {f for b in own + written + flush_last for f in b.files},
            "scp": {f for b in own + written for f in b.files}}
        for x in self.tiers:
            for y in self.tiers:
                if (x.is_local and y.is_local) != (x.name == y.name):
                    continue
                move = move_name(x.name, y.name)
                op = move_operation(x.name, y.name)
                batches = own + written + (flush_last if x.is_local and not y.is_local else [])
                for k, secs, files in self._move_rows(batches, op, move, ops_files[op]):
                    recs = [r for r in self.records[c.name] if r.file in files]
                    for n in self.nodes:
                        ptpn = c.tasks_per_node(n)
                        rows.append(CostRow(
                            c.name, c.level, stage_out_name(c.name), c.level + 0.5, x.name, ptpn,
                            move, k, self.started(self.io_seconds(c, recs, x, n), n),
                            self.started(secs, n)))
        return rows


def build_cost_table(template: WorkflowTemplate, io: IoData, profile: StorageProfile,
                     tiers: TierSet, nodes: Sequence[int]) -> CostTable:
    missing = [s.name for s in template.stages if not any(r.stage == s.name for r in io.records)]
    if missing:
        raise InputError(io.source, f"no I/O recorded for stage(s) {', '.join(missing)}",
                         "give the measured I/O of every stage of the template")
    b = _Builder(template, io, profile, tiers, nodes)
    rows: list[CostRow] = []
    for c in template.stages:
        rows += b.edge_rows(c)
        rows += b.stage_in_rows(c)
        rows += b.stage_out_rows(c)
    return CostTable.from_rows(rows, source=f"costs of {template.name}")
