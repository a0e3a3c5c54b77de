"""Workflows of our own: a template plus a cost table from a simple bandwidth model.

Used by the bundled example, the tests and the benchmarks, so that the planner is
exercised on DAGs and tier names unlike the published 1kgenome case. The model
is deliberately plain: a task reading or writing ``mb`` MiB on tier t with ``k``
tasks per node takes ``mb / (bandwidth_t / k ** contention_t)`` seconds; a move
from tier a to b runs at ``move_rate`` MiB/s per copying task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from qos_plugin.model.costs import CostRow, CostTable, stage_in_name, stage_out_name
from qos_plugin.model.iodata import IoData, IoRecord
from qos_plugin.model.template import INITIAL_DATA, Stage, WorkflowTemplate
from qos_plugin.model.tiers import TierSet, move_name

COPY_TASKS = (1, 2, 4, 8, 16)
MiB = 1 << 20


@dataclass(frozen=True)
class TierModel:
    read_mibps: float
    write_mibps: float
    contention: float = 0.5  # per-task rate falls as tasks_per_node ** contention


@dataclass(frozen=True)
class StageIO:
    """MiB per task: read from each predecessor (or initial data), written."""

    reads: Mapping[str, float]
    write: float


@dataclass
class SyntheticWorkflow:
    template: WorkflowTemplate
    io: dict[str, StageIO]
    tiers: TierSet
    tier_models: dict[str, TierModel]
    move_mibps: float = 800.0
    move_speed: dict[tuple[str, str], float] = field(default_factory=dict)

    def _rate(self, tier: str, op: str, tpn: int) -> float:
        m = self.tier_models[tier]
        base = m.read_mibps if op == "read" else m.write_mibps
        return float(base / max(1, tpn) ** m.contention)

    def _move_rate(self, src: str, dst: str, tpn: int) -> float:
        speed = self.move_speed.get((src, dst), self.move_mibps)
        return float(speed * min(tpn, 8) ** 0.5 / max(1, tpn) ** 0.2)

    def io_data(self) -> IoData:
        """The I/O primitives a run would record: every task reads its share from
        each predecessor's files (or the input) and writes one file."""
        recs: list[IoRecord] = []
        t = self.template
        for c in t.stages:
            io = self.io[c.name]
            for k in range(c.num_tasks):
                task = f"{c.name}-{k}"
                for p, mib in io.reads.items():
                    src = p if p in t.stage_names else "initial_data"
                    n = t[p].num_tasks if src != "initial_data" else c.num_tasks
                    name = f"{p}_out.{k % n}" if src != "initial_data" else f"input.{k}"
                    recs.append(IoRecord(c.name, task, name, "read", float(MiB), mib, src))
                recs.append(IoRecord(c.name, task, f"{c.name}_out.{k}", "write", float(MiB),
                                     io.write, ""))
        return IoData(recs, source=f"synthetic {t.name}")

    def cost_table(self, nodes: Sequence[int]) -> CostTable:
        rows: list[CostRow] = []
        t = self.template
        tpns = {s.name: sorted({s.tasks_per_node(n) for n in nodes}) for s in t.stages}
        for c in t.stages:
            io = self.io[c.name]
            # Direct edges, measured on one tier at both ends.
            for p in c.stage_predecessors:
                pst = t[p]
                for tier in self.tiers.names:
                    for pt in tpns[p]:
                        for ct in tpns[c.name]:
                            rows.append(CostRow(
                                p, pst.level, c.name, c.level, tier, pt, tier, ct,
                                self.io[p].write / self._rate(tier, "write", pt),
                                io.reads.get(p, 0.0) / self._rate(tier, "read", ct)))
            # Stage-in: read of initial data in place, or after a copy.
            initial = sum(v for k, v in io.reads.items() if k not in c.stage_predecessors)
            total_in = sum(io.reads.values())
            for tier in self.tiers:
                for ct in tpns[c.name]:
                    rows.append(CostRow(stage_in_name(c.name), c.level - 0.5, c.name, c.level,
                                        tier.name, 0, tier.name, ct, 0.0,
                                        (initial or total_in) / self._rate(tier.name, "read",
                                                                           ct)))
                for src in self.tiers:
                    if src.is_local or not tier.is_local:
                        continue
                    for k in COPY_TASKS:
                        for ct in tpns[c.name]:
                            rows.append(CostRow(
                                stage_in_name(c.name), c.level - 0.5, c.name, c.level,
                                move_name(src.name, tier.name), k, tier.name, ct,
                                total_in * c.num_tasks / k / self._move_rate(src.name,
                                                                             tier.name, k),
                                (initial or total_in) / self._rate(tier.name, "read", ct)))
            # Stage-out: moves of this stage's outputs, and its final write.
            for x in self.tiers:
                for pt in tpns[c.name]:
                    w = io.write / self._rate(x.name, "write", pt)
                    rows.append(CostRow(c.name, c.level, stage_out_name(c.name),
                                        c.level + 0.5, x.name, pt, x.name, 0, w, 0.0))
                    for y in self.tiers:
                        # Fan-out inside one node-local tier, or a copy across kinds
                        # or between two shared tiers; never local to other local.
                        if (x.is_local and y.is_local) != (x.name == y.name):
                            continue
                        for k in COPY_TASKS:
                            mv = io.write * c.num_tasks / k / self._move_rate(x.name, y.name, k)
                            rows.append(CostRow(c.name, c.level, stage_out_name(c.name),
                                                c.level + 0.5, x.name, pt,
                                                move_name(x.name, y.name), k, w, mv))
        return CostTable.from_rows(rows, source=f"synthetic {t.name}")


def chain_workflow(n_stages: int, tiers: TierSet, tier_models: dict[str, TierModel],
                   width: int = 2, tasks: int = 16, name: str = "synthetic") -> SyntheticWorkflow:
    """``n_stages`` stages in levels of ``width``; each stage reads every stage of
    the previous level, the first level reads initial data."""
    stages: list[Stage] = []
    io: dict[str, StageIO] = {}
    for i in range(n_stages):
        level = 1 + i // width
        prev = [f"s{j:02d}" for j in range(n_stages) if 1 + j // width == level - 1]
        preds = {p: (f"{p}_out.*",) for p in prev} or {"initial_data": ("input.*",)}
        nt = max(1, tasks // (1 + i % 3))
        stages.append(Stage(f"s{i:02d}", float(level), nt, nt, preds, (f"s{i:02d}_out.*",)))
        io[f"s{i:02d}"] = StageIO({p: 40.0 + 7 * i for p in preds}, 25.0 + 5 * (i % 4))
    return SyntheticWorkflow(WorkflowTemplate(name, tuple(stages)), io, tiers, tier_models)


def dag_workflow(name: str, stages: Sequence[tuple[str, int, int, Mapping[str, float], float]],
                 tiers: TierSet, tier_models: dict[str, TierModel]) -> SyntheticWorkflow:
    """A workflow from ``(stage, level, tasks, {predecessor: MiB read per task}, MiB
    written per task)``; ``initial_data`` as a predecessor reads the input."""
    built: list[Stage] = []
    io: dict[str, StageIO] = {}
    for stage, level, tasks, reads, write in stages:
        preds = {p: ("input.*",) if p == INITIAL_DATA else (f"{p}_out.*",) for p in reads}
        built.append(Stage(stage, float(level), tasks, tasks, preds, (f"{stage}_out.*",)))
        io[stage] = StageIO(dict(reads), write)
    return SyntheticWorkflow(WorkflowTemplate(name, tuple(built)), io, tiers, tier_models)


def fan_workflow(branches: int, tiers: TierSet, tier_models: dict[str, TierModel],
                 name: str = "fan") -> SyntheticWorkflow:
    """Fan-out/fan-in: a split stage reads the input, ``branches`` parallel stages
    each read part of its output (larger parts for later branches), a merge stage
    reads them all."""
    spec: list[tuple[str, int, int, Mapping[str, float], float]] = [
        ("split", 1, 4, {INITIAL_DATA: 2000.0}, 400.0)]
    for b in range(branches):
        spec.append((f"b{b}", 2, 8 * (1 + b % 2), {"split": 300.0 + 150 * b},
                     100.0 + 80 * (b % 3)))
    spec.append(("merge", 3, 2, {f"b{b}": 200.0 for b in range(branches)}, 50.0))
    return dag_workflow(name, spec, tiers, tier_models)
