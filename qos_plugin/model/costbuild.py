"""The per-edge cost table built from measurements.

For every edge of the template and every tier, the producer's writes and the
consumer's reads of the measured run are priced with the storage profile at the
load the placement puts on the tier: N nodes each running ``tpn`` tasks of the
stage. A task's rate is the profile's aggregate rate at that load divided by the
number of tasks sharing it, and a file-level cost is ``MiB / rate``; an edge's
cost is the largest over the files of one task. Moves between tiers (copies onto
node-local tiers, fan-out between nodes, flushes to the shared tier) are priced
with the cp/scp runs of the profile, for every copy parallelism it measured.
"""

from __future__ import annotations

from collections.abc import Sequence

from qos_plugin.errors import InputError
from qos_plugin.model.costs import CostRow, CostTable, stage_in_name, stage_out_name
from qos_plugin.model.iodata import IoData, IoRecord, task_mib
from qos_plugin.model.profile import StorageProfile
from qos_plugin.model.template import INITIAL_DATA, Stage, WorkflowTemplate
from qos_plugin.model.tiers import TierSet, move_name


def _task_seconds(profile: StorageProfile, records: list[IoRecord], op: str, tier: str,
                  nodes: int, tpn: int) -> float:
    """Largest per-task time over the records (per-file costs of one task)."""
    worst = 0.0
    for r in records:
        rate = profile.rate(op, tier, nodes, tpn, r.transfer_bytes, r.size_mb)
        if rate != rate or rate <= 0:   # NaN or no measurement
            continue
        worst = max(worst, r.size_mb / (rate / (nodes * tpn)))
    return worst


def _move_seconds(profile: StorageProfile, op: str, move: str, mb: float, copies: int,
                  transfer: float) -> float:
    rate = profile.rate(op, move, 1, copies, transfer, mb)
    return mb / rate if rate == rate and rate > 0 else float("nan")


def _per_task_mb(records: list[IoRecord]) -> float:
    """MiB moved by the largest task."""
    return max(task_mib(records).values(), default=0.0)


def build_cost_table(template: WorkflowTemplate, io: IoData, profile: StorageProfile,
                     tiers: TierSet, nodes: Sequence[int]) -> CostTable:
    missing = [s.name for s in template.stages if not io.stage_records(s.name, "read")
               and not io.stage_records(s.name, "write")]
    if missing:
        raise InputError(io.source, f"no I/O recorded for stage(s) {', '.join(missing)}",
                         "give the measured I/O of every stage of the template")
    rows: list[CostRow] = []
    for c in template.stages:
        reads = io.stage_records(c.name, "read")
        writes = io.stage_records(c.name, "write")
        for p in c.stage_predecessors:
            pst = template[p]
            p_writes = io.stage_records(p, "write")
            c_reads = [r for r in reads if r.source == p]
            for tier in tiers.names:
                for n in nodes:
                    ptpn, ctpn = pst.tasks_per_node(n), c.tasks_per_node(n)
                    rows.append(CostRow(
                        p, pst.level, c.name, c.level, tier, ptpn, tier, ctpn,
                        _task_seconds(profile, p_writes, "write", tier, n, ptpn),
                        _task_seconds(profile, c_reads, "read", tier, n, ctpn)))
        rows += _stage_in_rows(c, reads, profile, tiers, nodes)
        rows += _stage_out_rows(c, writes, profile, tiers, nodes)
    return CostTable.from_rows(rows, source=f"costs of {template.name}")


def _stage_in_rows(c: Stage, reads: list[IoRecord], profile: StorageProfile, tiers: TierSet,
                   nodes: Sequence[int]) -> list[CostRow]:
    initial = [r for r in reads if r.source == INITIAL_DATA] or reads
    rows = []
    total_mb = _per_task_mb(reads) * c.num_tasks
    transfer = max((r.transfer_bytes for r in reads), default=4096.0)
    for tier in tiers:
        for n in nodes:
            ctpn = c.tasks_per_node(n)
            local_read = _task_seconds(profile, initial, "read", tier.name, n, ctpn)
            if not tier.is_local:
                rows.append(CostRow(stage_in_name(c.name), c.level - 0.5, c.name, c.level,
                                    tier.name, ctpn, tier.name, ctpn, 0.0, local_read))
                continue
            for src in tiers:
                if src.is_local:
                    continue
                move = move_name(src.name, tier.name)
                for k in profile.tasks_per_node("cp", move):
                    rows.append(CostRow(stage_in_name(c.name), c.level - 0.5, c.name, c.level,
                                        move, k, tier.name, ctpn,
                                        _move_seconds(profile, "cp", move, total_mb, k,
                                                      transfer), local_read))
    return rows


def _stage_out_rows(c: Stage, writes: list[IoRecord], profile: StorageProfile,
                    tiers: TierSet, nodes: Sequence[int]) -> list[CostRow]:
    rows = []
    total_mb = _per_task_mb(writes) * c.num_tasks
    transfer = max((r.transfer_bytes for r in writes), default=4096.0)
    for x in tiers:
        for y in tiers:
            if (x.is_local and y.is_local) != (x.name == y.name):
                continue
            move = move_name(x.name, y.name)
            op = "scp" if x.name == y.name else "cp"
            for n in nodes:
                ptpn = c.tasks_per_node(n)
                write = _task_seconds(profile, writes, "write", x.name, n, ptpn)
                for k in profile.tasks_per_node(op, move) or [1]:
                    rows.append(CostRow(c.name, c.level, stage_out_name(c.name), c.level + 0.5,
                                        x.name, ptpn, move, k, write,
                                        _move_seconds(profile, op, move, total_mb, k, transfer)))
    return rows
