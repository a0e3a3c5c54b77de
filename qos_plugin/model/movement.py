"""Which data a placement moves, where and when: the one statement of the movement
rules, read by the makespan (what each move costs in time) and by the job contract
(what each move carries in bytes).

Per stage s of a configuration (tier t_s):

* **stage-in**, when t_s is node-local: one copy per shared tier x the stage needs
  data from (the initial data, which lives on the home tier, or a predecessor's
  outputs on x), onto every node of the job;
* **execution**: the stage reads and writes on t_s;
* **stage-out**: one move per tier y that a consumer at a later level uses (and, at
  the last level, the home tier for node-local outputs: the final flush), where a
  move applies: between a shared and a node-local tier, between two shared tiers,
  or a fan-out between the nodes of one node-local tier (on more than one node:
  one node has no other to fan out to).

Functions here take the configurations as one index array per stage (tier index
of every configuration) and return boolean masks over them; no loops over
configurations in Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qos_plugin.model.template import INITIAL_DATA, WorkflowTemplate
from qos_plugin.model.tiers import TierSet

# MiB each stage reads and writes and what its copies carry (see iodata.stage_volumes).
Volumes = Mapping[str, Mapping[str, object]]
PHASES = ("stage-in", "execution", "stage-out")
# Per shared tier, the sources a stage-in copy brings from it and where it does.
Copies = list[tuple[int, list[tuple[str, np.ndarray]]]]


def move_applies(tiers: TierSet, x: int, y: int) -> bool:
    """Whether outputs on tier ``x`` are moved for a consumer on tier ``y``."""
    tx, ty = tiers.tiers[x], tiers.tiers[y]
    if tx.is_local and ty.is_local:
        return x == y            # fan-out between nodes of one node-local tier
    return x != y                # shared <-> local, or between two shared tiers


def stage_in_copies(template: WorkflowTemplate, tiers: TierSet, s: int,
                    columns: Sequence[np.ndarray]) -> Copies:
    """The stage-in copies of stage ``s``: per shared tier x, each source it brings
    (``initial_data`` or a predecessor) with the configurations where that source's
    data is copied from x onto the stage's node-local tier."""
    stage = template.stages[s]
    pos = {name: i for i, name in enumerate(template.stage_names)}
    is_local = np.array([t.is_local for t in tiers], dtype=bool)
    local_s = is_local[columns[s]]
    home = tiers.index(tiers.home.name)
    out = []
    for x, tier in enumerate(tiers):
        if tier.is_local:
            continue
        sources = []
        if stage.reads_initial_data and x == home:
            sources.append((INITIAL_DATA, local_s))
        for p in stage.stage_predecessors:
            sources.append((p, local_s & (columns[pos[p]] == x)))
        if sources:
            out.append((x, sources))
    return out


def stage_out_moves(template: WorkflowTemplate, tiers: TierSet, s: int,
                    columns: Sequence[np.ndarray], one_node: bool = False) -> list[np.ndarray]:
    """Per tier y, the configurations where stage ``s``'s outputs move to y. On
    ``one_node`` there is no other node to fan out to: a fan-out does not apply."""
    stage = template.stages[s]
    pos = {name: i for i, name in enumerate(template.stage_names)}
    T = len(tiers)
    t_s = columns[s]
    is_local = np.array([t.is_local for t in tiers], dtype=bool)
    applies = np.array([[move_applies(tiers, x, y) for y in range(T)] for x in range(T)])
    home = tiers.index(tiers.home.name)
    succ = [pos[d.name] for d in template.successors(stage.name)]
    out = []
    for y in range(T):
        target = np.zeros(t_s.shape[0], dtype=bool)
        for d in succ:
            target |= columns[d] == y
        if stage.level == template.levels[-1] and y == home:
            target |= is_local[t_s]      # final flush of node-local outputs
        fan_out = is_local[y] & (t_s == y)
        out.append(target & applies[t_s, y] & ~(one_node & fan_out))
    return out


class LevelMib:
    """MiB each configuration moves on each tier in each phase of each level, as
    ``fixed + nodes * per_node`` (copies go to every node; execution and flushes
    do not depend on the node count). Arrays are (V, L, 3, T), phases in PHASES
    order. ``fan_fixed + nodes * fan_per_node`` (V, L) are the MiB of all the
    level's fan-outs together (in its stage-out, on every node-local tier)."""

    def __init__(self, fixed: np.ndarray, per_node: np.ndarray,
                 fan_fixed: np.ndarray | None = None,
                 fan_per_node: np.ndarray | None = None) -> None:
        self.fixed = fixed
        self.per_node = per_node
        V, L = fixed.shape[:2]
        self.fan_fixed = np.zeros((V, L)) if fan_fixed is None else fan_fixed
        self.fan_per_node = np.zeros((V, L)) if fan_per_node is None else fan_per_node

    def at(self, level: int, configs: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """(R, 3, T) MiB of ``level`` for rows given by configuration index and nodes."""
        out: np.ndarray = (self.fixed[configs, level]
                           + nodes[:, None, None] * self.per_node[configs, level])
        return out


def task_files(template: WorkflowTemplate, stage: str) -> int:
    """Files one task of ``stage`` creates or opens in its execution, as a run lays them
    out (``planner/runner.py``): its one output, and each file of its inputs, the
    initial data's one and one a task of each predecessor. All of a predecessor's: its
    outputs reach a reader on a shared tier, through a stage-in copy, or through a
    fan-out (on one node a node-local predecessor's tasks all ran there)."""
    st = next(s for s in template.stages if s.name == stage)
    by_name = {s.name: s for s in template.stages}
    return 1 + sum(1 if p == INITIAL_DATA else by_name[p].num_tasks for p in st.predecessors)


def volume_of(volumes: Volumes, stage: str, key: str, fallback: str = "") -> float:
    """A stage's volume ``key`` (``fallback``'s when it has none; else 0)."""
    v = volumes[stage]
    return float(str(v.get(key, v.get(fallback, 0.0)) if fallback else v.get(key, 0.0)))


def copied_from(volumes: Volumes, stage: str, source: str) -> float:
    """MiB of ``source``'s files a stage-in copy brings to one node.

    A predecessor's: all its output files, whole (``out_files_mib``). The template
    names a predecessor's outputs as the stage's inputs, a copy moves whole files
    however little of one a task reads, and a run copies them all (planner/runner.py):
    priced at the bytes the tasks read, a stage reading a part of each file was charged
    a third of the copy it waited for (the loop example's summary, 3.9 s against 9.9).
    The initial data's: the distinct files read from it when the I/O data names them,
    else all of the stage's distinct input files (an overestimate, never an
    underestimate); a run lays out the initial data as those parts."""
    if source != INITIAL_DATA and source in volumes:
        return volume_of(volumes, source, "out_files_mib", "write_mib")
    per_source = volumes[stage].get("in_from_mib")
    if isinstance(per_source, Mapping) and source in per_source:
        return float(per_source[source])
    return volume_of(volumes, stage, "in_files_mib", "read_mib")


@dataclass(frozen=True)
class StageMoves:
    """What one stage's moves carry in every configuration, from the rules above.

    ``copy_in[x]``: MiB a stage-in copy brings from shared tier x onto each node (0
    where the configuration copies nothing from x); ``move_out[y]``: MiB of the
    stage's outputs moved to tier y, and ``fan_out[y]`` where that move is a fan-out
    (each node then receives the outputs the other nodes wrote, ``(N - 1) / N`` of
    them: ``nodes`` times ``move_out`` less one ``move_out`` in all)."""

    copy_in: dict[int, np.ndarray]
    move_out: dict[int, np.ndarray]
    fan_out: dict[int, np.ndarray]
    # The masks they come from: per shared tier x, where a copy from x is needed;
    # per tier y, where the outputs move to y (stage_in_copies, stage_out_moves).
    copy_needed: dict[int, np.ndarray]
    move_target: list[np.ndarray]

    def copied(self, x: int, nodes: int) -> np.ndarray:
        """MiB the copy from ``x`` moves on ``nodes`` nodes in all (onto each node)."""
        return nodes * self.copy_in[x]

    def moved(self, y: int, nodes: int) -> np.ndarray:
        """MiB the move to ``y`` carries on ``nodes`` nodes in all: the outputs once,
        or (N - 1) times them on a fan-out (each node gets the others')."""
        return np.where(self.fan_out[y], (nodes - 1) * self.move_out[y], self.move_out[y])


def stage_moves(template: WorkflowTemplate, tiers: TierSet, s: int,
                columns: Sequence[np.ndarray], volumes: Volumes, one_node: bool = False
                ) -> StageMoves:
    """The bytes of stage ``s``'s stage-in copies and stage-out moves (see StageMoves)."""
    name, t_s = template.stages[s].name, columns[s]
    copy_in, needed = {}, {}
    for x, sources in stage_in_copies(template, tiers, s, columns):
        copy_in[x] = sum((np.where(mask, copied_from(volumes, name, source), 0.0)
                          for source, mask in sources), np.zeros(t_s.shape[0]))
        needed[x] = np.logical_or.reduce([m for _, m in sources])
    out_mib = volume_of(volumes, name, "out_files_mib", "write_mib")
    move_out, fan_out = {}, {}
    targets = stage_out_moves(template, tiers, s, columns, one_node)
    for y, mask in enumerate(targets):
        move_out[y] = np.where(mask, out_mib, 0.0)
        fan_out[y] = t_s == y
    return StageMoves(copy_in, move_out, fan_out, needed, targets)


def level_mib(template: WorkflowTemplate, tiers: TierSet, columns: Sequence[np.ndarray],
              volumes: Volumes) -> LevelMib:
    """MiB moved per (configuration, level, phase, tier), from the rules above.

    Every move is charged on both of its tiers (a fan-out once, on its own tier);
    execution charges the stage's reads and writes on its tier.
    """
    V, L, T = columns[0].shape[0], len(template.levels), len(tiers)
    fixed = np.zeros((V, L, 3, T))
    per_node = np.zeros((V, L, 3, T))
    fan_fixed, fan_per_node = np.zeros((V, L)), np.zeros((V, L))
    level_of = {lv: k for k, lv in enumerate(template.levels)}
    rows = np.arange(V)
    for s, stage in enumerate(template.stages):
        k, t_s = level_of[stage.level], columns[s]
        name = stage.name
        fixed[rows, k, 1, t_s] += (volume_of(volumes, name, "read_mib")
                                   + volume_of(volumes, name, "write_mib"))
        moves = stage_moves(template, tiers, s, columns, volumes)
        # The bytes of a move are linear in N (StageMoves.copied, .moved): their value
        # at N = 0 is the fixed part, the step from 0 to 1 the part per node.
        for x in moves.copy_in:
            at0, at1 = moves.copied(x, 0), moves.copied(x, 1)
            for t, where in ((x, slice(None)), (t_s, rows)):
                fixed[where, k, 0, t] += at0
                per_node[where, k, 0, t] += at1 - at0
        for y in moves.move_out:
            at0, at1 = moves.moved(y, 0), moves.moved(y, 1)
            fixed[:, k, 2, y] += at0
            per_node[:, k, 2, y] += at1 - at0
            # Charged on the source tier too, but a fan-out once, on its own tier.
            own = ~moves.fan_out[y]
            fixed[rows, k, 2, t_s] += np.where(own, at0, 0.0)
            per_node[rows, k, 2, t_s] += np.where(own, at1 - at0, 0.0)
            fan_fixed[:, k] += np.where(own, 0.0, at0)
            fan_per_node[:, k] += np.where(own, 0.0, at1 - at0)
    return LevelMib(fixed, per_node, fan_fixed, fan_per_node)
