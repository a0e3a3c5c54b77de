"""Makespan of every storage placement, vectorized over the configuration space.

A configuration is a node count N (shared by all stages) and one tier per stage.
Stages of one level end in a barrier, so

    TOTAL = sum over levels k of (in_k + exec_k + out_k)

with each term the largest of that level's actions:

* ``exec`` of stage C on tier t: read (sum over its stage predecessors of the
  consumer-side cost on t, or the initial-data read when initial data is its only
  input) plus write (largest producer-side cost on t towards a consumer at a later
  level, or the flush to the home tier for a stage without one);
* ``in`` of a stage on a node-local tier that reads initial data or a
  predecessor's output on a shared tier: the copy onto the node-local tier;
* ``out`` of a producer per tier its later consumers use: copy between a shared
  and a node-local tier, or fan-out between nodes of the same node-local tier;
  at the last level node-local outputs are also flushed to the home tier.

Moves take the cheapest row over every tasks-per-node value, so they do not
depend on N; only ``exec`` does. The semantics, tie-breaking and column layout are
the QoSFlow artifact's, which this module reproduces bit for bit. A site model
(built from a ``grid`` profile: ``carried.py``) prices execution and moves by the
bytes they carry instead, and its moves then depend on N (copies go to every node).

All costs are looked up once per (stage, tier, N) and gathered with numpy over the
configurations; nothing here loops over configurations in Python.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from qos_plugin.errors import InputError, ModelError
from qos_plugin.model.capacity import LevelFloor, floor_of, floor_seconds
from qos_plugin.model.carried import COPIES_PER_NODE, CarriedPricing
from qos_plugin.model.costs import CostTable, stage_in_name, stage_out_name
from qos_plugin.model.limits import MAX_NODES
from qos_plugin.model.movement import (
    LevelMib,
    Volumes,
    level_mib,
    move_applies,
    stage_in_copies,
    stage_moves,
    stage_out_moves,
    task_files,
)
from qos_plugin.model.template import Stage, WorkflowTemplate, level_label
from qos_plugin.model.tiers import Tier, TierKind, TierSet, move_name

log = logging.getLogger(__name__)

# Two costs closer than this are a tie for "which action won the barrier".
TIE_TOLERANCE = 1e-12
# Refuse to enumerate more configurations than this per node count.
MAX_CONFIGS = 20_000_000
# Configurations enumerated at once: ~30 MB of temporaries for 15 stages.
ENUM_CHUNK = 1 << 20
# What a cost lookup that finds no row does: "error" refuses the evaluation
# (naming the row), "zero" charges it 0 s as the published model did, which
# makes the prediction optimistic.
MISSING_COST = ("error", "zero")


def _nz(x: float) -> float:
    return 0.0 if np.isnan(x) else float(x)


def enumerate_configs(template: WorkflowTemplate, tiers: TierSet) -> np.ndarray:
    """Valid tier assignments as an (V, S) array of tier indices.

    Stages in declaration order, the last stage varying fastest. A configuration
    is invalid when a stage and one of its predecessors sit on two different
    node-local tiers: there is no way to move data between them. The space is
    walked in chunks of ENUM_CHUNK configurations, so only the valid ones are
    ever held (whole, the space of 20 M took ~15 bytes per configuration more).
    """
    n_stages, n_tiers = len(template.stages), len(tiers)
    total = n_tiers ** n_stages
    if total > MAX_CONFIGS:
        raise ModelError(f"{n_tiers} tiers over {n_stages} stages make {total} configurations "
                         f"per node count, more than {MAX_CONFIGS}; restrict the tiers")
    dtype = np.int8 if n_tiers < 127 else np.int16
    is_local = np.array([t.is_local for t in tiers], dtype=bool)
    pos = {name: i for i, name in enumerate(template.stage_names)}
    edges = [(pos[p_name], c) for c, stage in enumerate(template.stages)
             for p_name in stage.stage_predecessors]
    parts = []
    for start in range(0, total, ENUM_CHUNK):
        flat = np.arange(start, min(total, start + ENUM_CHUNK), dtype=np.int64)
        cfg = np.empty((flat.size, n_stages), dtype=dtype)
        for s in range(n_stages):
            cfg[:, s] = (flat // n_tiers ** (n_stages - 1 - s)) % n_tiers
        valid = np.ones(flat.size, dtype=bool)
        for p, c in edges:
            a, b = cfg[:, p], cfg[:, c]
            valid &= ~((a != b) & is_local[a] & is_local[b])
        parts.append(cfg[valid])
    out: np.ndarray = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return out


def evaluation_bytes(template: WorkflowTemplate, tiers: TierSet, n_configs: int,
                     n_nodes: int, move_groups: int = 1) -> int:
    """Peak bytes an evaluation of ``n_configs`` configurations at ``n_nodes`` node
    counts needs, with the breakdown and critical paths every caller then reads
    (the makespan CSV, training).

    Per configuration the staging terms (``_movement``: values, tasks per node and
    winners per stage and per level); per row (configuration x node count) the
    totals, the sort, the execution breakdown gathered per stage (``_exec_detail``)
    and the critical-path keys per level (``_render_paths``); and one chunk of the
    enumeration (freed before the evaluation starts). The coefficients fit peaks
    measured on flat templates, chains and fans of 7-14 stages on 3-5 tiers at 1
    to 8 node counts; with 10% added, the estimate is 5-40% above every measured
    peak (``benchmarks/security/memory_estimate.py``).
    """
    S, L = len(template.stages), len(template.levels)
    # Twice per configuration when N = 1 is evaluated beside others (its own moves).
    per_config = (16 * S + 30 * L + 30) * move_groups
    per_row = 50 * S + 40 * L + 60
    enumeration = min(len(tiers) ** S, ENUM_CHUNK) * (S + 16) + 2 * n_configs * S
    evaluation = n_configs * per_config + n_configs * n_nodes * per_row
    return int(1.1 * max(enumeration, evaluation))


def check_memory(template: WorkflowTemplate, tiers: TierSet, n_configs: int, n_nodes: int,
                 budget: int | None, move_groups: int = 1) -> None:
    """Refuse an evaluation whose estimated peak exceeds ``budget`` bytes (None:
    no limit), before any of its arrays exist."""
    if budget is None:
        return
    need = evaluation_bytes(template, tiers, n_configs, n_nodes, move_groups)
    if need > budget:
        rows = n_configs * n_nodes
        raise InputError(
            "memory budget",
            f"evaluating {rows:,} placements ({n_configs:,} configurations x {n_nodes} node "
            f"count(s), {len(template.stages)} stages on {len(tiers)} tiers) needs about "
            f"{_gib(need)} GiB, more than the budget of {_gib(budget)} GiB",
            "give fewer node counts (--nodes), fewer tiers (--tiers) or a template with "
            "fewer stages, or raise the budget with --memory-budget SIZE if the machine "
            "has the memory")


def _gib(n: int) -> str:
    return f"{n / (1 << 30):,.1f}"


@dataclass(frozen=True)
class _Space:
    """What all rows of one evaluation share.

    The staging terms depend on the configuration (and, for a site model, on N:
    one move group per node count), the execution terms on the configuration and
    N; rows index into these instead of copying them, so
    a table of millions of rows costs a few arrays of row indices until a
    breakdown column is asked for.
    """

    node_counts: np.ndarray         # (K,)
    configs: np.ndarray             # (V, S) tier index per stage
    read: np.ndarray                # (K, S, T) read cost of stage s on tier t at node count k
    write: np.ndarray               # (K, S, T)
    tpn: np.ndarray                 # (K, S) tasks per node
    read_considered: np.ndarray     # (S,) stages whose read is a column (else "-")
    members: tuple[np.ndarray, ...]  # stage indices of each level
    # Per move group and configuration: staging terms and their winners. Moves priced
    # by the cost table do not depend on N, except that one node has no fan-out: group
    # 1 is N = 1 when an evaluation has both; a site model's have a group per node
    # count (``group`` gives each node count's).
    moves: dict[str, np.ndarray]    # (G, V, ...)
    group: np.ndarray               # (K,) move group of each node count
    # (K, V, L, 3) the shared tiers' floor under each phase (capacity.py), if any.
    floor: np.ndarray | None = None


class MakespanTable:
    """Makespan and its breakdown for every (configuration, N).

    ``nodes``, ``config`` and ``total`` are row-aligned arrays; the breakdown
    (``level_in``, ``level_exec``, ``level_out`` as (R, L); ``stage_in``,
    ``stage_read``, ``stage_write``, ``stage_out`` as (R, S) in declaration order,
    NaN where the artifact writes ``-``) and the critical path are gathered on first
    use. The critical path is encoded per level: winning stage index (-1: none) and
    the tasks per node of its token (``cp_*`` arrays).
    """

    def __init__(self, template: WorkflowTemplate, tiers: TierSet, space: _Space,
                 n_idx: np.ndarray, c_idx: np.ndarray, total: np.ndarray) -> None:
        self.template = template
        self.tiers = tiers
        self._space = space
        self._n_idx = n_idx
        self._c_idx = c_idx
        self.total = total
        self._cache: dict[str, np.ndarray] = {}
        self._paths: list[str] | None = None

    def __len__(self) -> int:
        return int(self.total.shape[0])

    @property
    def levels(self) -> list[float]:
        return self.template.levels

    @property
    def nodes(self) -> np.ndarray:
        return self._cached("nodes", lambda: self._space.node_counts[self._n_idx])

    @property
    def config(self) -> np.ndarray:
        return self._cached("config", lambda: self._space.configs[self._c_idx])

    @property
    def level_in(self) -> np.ndarray:
        return self._staging("level_in")

    @property
    def level_out(self) -> np.ndarray:
        return self._staging("level_out")

    @property
    def stage_in(self) -> np.ndarray:
        return self._staging("stage_in")

    @property
    def stage_out(self) -> np.ndarray:
        return self._staging("stage_out")

    @property
    def cp_in_stage(self) -> np.ndarray:
        return self._staging("cp_in_stage")

    @property
    def cp_in_tpn(self) -> np.ndarray:
        return self._staging("cp_in_tpn")

    @property
    def cp_out_stage(self) -> np.ndarray:
        return self._staging("cp_out_stage")

    @property
    def cp_out_tpn(self) -> np.ndarray:
        return self._staging("cp_out_tpn")

    @property
    def level_exec(self) -> np.ndarray:
        return self._exec("level_exec")

    @property
    def stage_read(self) -> np.ndarray:
        return self._exec("stage_read")

    @property
    def stage_write(self) -> np.ndarray:
        return self._exec("stage_write")

    @property
    def cp_exec_stage(self) -> np.ndarray:
        return self._exec("cp_exec_stage")

    @property
    def cp_exec_read(self) -> np.ndarray:
        return self._exec("cp_exec_read")

    @property
    def cp_exec_write(self) -> np.ndarray:
        return self._exec("cp_exec_write")

    def _staging(self, name: str) -> np.ndarray:
        # N-independent columns: a gather from the per-configuration arrays.
        sp = self._space
        phase = {"level_in": 0, "level_out": 2}.get(name)
        if sp.floor is None or phase is None:
            return self._cached(name, lambda: sp.moves[name][sp.group[self._n_idx],
                                                             self._c_idx])
        floor = sp.floor
        return self._cached(name, lambda: np.maximum(
            sp.moves[name][sp.group[self._n_idx], self._c_idx],
            floor[self._n_idx, self._c_idx, :, phase]))

    def _exec(self, name: str) -> np.ndarray:
        self._exec_detail()
        return self._cache[name]

    def _cached(self, name: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    def _exec_detail(self) -> None:
        if "level_exec" in self._cache:
            return
        sp = self._space
        cfg = self.config.astype(np.intp)
        S = cfg.shape[1]
        read = sp.read[self._n_idx[:, None], np.arange(S)[None, :], cfg]
        write = sp.write[self._n_idx[:, None], np.arange(S)[None, :], cfg]
        level_exec, win, has = _level_winners(read + write, sp.members, floor=0.0)
        if sp.floor is not None:
            level_exec = np.maximum(level_exec, sp.floor[self._n_idx, self._c_idx, :, 1])
        rows = np.arange(len(self))
        self._cache.update(
            level_exec=level_exec,
            stage_read=np.where(sp.read_considered[None, :], read, np.nan),
            stage_write=write,
            cp_exec_stage=np.where(has, win, -1).astype(np.int16),
            cp_exec_read=has & sp.read_considered[win] & (read[rows[:, None], win] > 0),
            cp_exec_write=has & (write[rows[:, None], win] > 0))

    def tier_names(self, stage_index: int) -> np.ndarray:
        names = np.asarray(self.tiers.names, dtype=object)
        picked: np.ndarray = names[self.config[:, stage_index]]
        return picked

    def totals_by_placement(self) -> dict[tuple[object, ...], float]:
        """Total per (nodes, tier of each stage in template order)."""
        tiers = [self.tier_names(j) for j in range(self.config.shape[1])]
        return {(int(self.nodes[i]), *(t[i] for t in tiers)): float(self.total[i])
                for i in range(len(self))}

    def critical_paths(self) -> list[str]:
        """Critical path strings, built once per distinct path."""
        if self._paths is None:
            self._paths = _render_paths(self)
        return self._paths

    def movement_mib(self, volumes: Volumes) -> Iterator[np.ndarray]:
        """Per level, the MiB each row moves on each tier in each phase, as an (R, 3, T)
        array (stage-in, execution, stage-out): the bytes behind ``level_in``,
        ``level_exec`` and ``level_out``, from the same moves (``movement.py``)."""
        configs = self._space.configs
        columns = [np.ascontiguousarray(configs[:, s], dtype=np.intp)
                   for s in range(configs.shape[1])]
        mib: LevelMib = level_mib(self.template, self.tiers, columns, volumes)
        nodes = self.nodes.astype(float)
        for k in range(len(self.template.levels)):
            yield mib.at(k, self._c_idx, nodes)

    def take(self, rows: np.ndarray) -> MakespanTable:
        """A new table with only ``rows`` (indices or mask), in that order."""
        return MakespanTable(self.template, self.tiers, self._space, self._n_idx[rows],
                             self._c_idx[rows], self.total[rows])


def _level_winners(values: np.ndarray, members: Sequence[np.ndarray], floor: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per level: the largest value (at least ``floor``, NaN ignored), the stage that
    reached it first (ties within TIE_TOLERANCE go to the earlier stage) and whether
    the level has a positive value at all."""
    R, L = values.shape[0], len(members)
    best = np.empty((R, L))
    win = np.empty((R, L), dtype=np.intp)
    for k, m in enumerate(members):
        v = values[:, m]
        best[:, k] = np.maximum(np.nan_to_num(v, nan=floor).max(axis=1), floor)
        win[:, k] = m[_first_winner(v, best[:, k])]
    return best, win, best > 0


def _render_paths(t: MakespanTable) -> list[str]:
    """Critical path strings: one string per distinct path, shared by its rows.

    Each level's winning actions are reduced to a small token id; the ids of all
    levels are folded into one integer per row, so finding the distinct paths is a
    few one-dimensional sorts however many rows there are.
    """
    if len(t) == 0:
        return []
    sp = t._space
    stages = t.template.stages
    S, K = len(stages), len(sp.node_counts)
    in_s, in_t = t.cp_in_stage.astype(np.int64) + 1, t.cp_in_tpn.astype(np.int64) + 1
    out_s, out_t = t.cp_out_stage.astype(np.int64) + 1, t.cp_out_tpn.astype(np.int64) + 1
    ex_s = t.cp_exec_stage.astype(np.int64) + 1
    ex_r, ex_w = t.cp_exec_read.astype(np.int64), t.cp_exec_write.astype(np.int64)
    n_idx = t._n_idx.astype(np.int64)
    radix_t = int(max(in_t.max(), out_t.max())) + 1
    radix_s = S + 1
    level_ids: list[np.ndarray] = []
    level_tokens: list[list[str]] = []
    for k in range(len(t.levels)):
        key = in_s[:, k] * radix_t + in_t[:, k]
        key = ((key * radix_s + ex_s[:, k]) * 2 + ex_r[:, k]) * 2 + ex_w[:, k]
        key = (key * radix_s + out_s[:, k]) * radix_t + out_t[:, k]
        key = key * K + n_idx
        uniq, ids = np.unique(key, return_inverse=True)
        level_ids.append(ids.reshape(-1))
        level_tokens.append([_level_token(int(u), stages, sp, radix_s, radix_t) for u in uniq])
    folded = level_ids[0].astype(np.int64)
    for k in range(1, len(level_ids)):
        width = len(level_tokens[k])
        if (int(folded.max()) + 1) * width >= 2 ** 62:
            folded = np.unique(folded, return_inverse=True)[1].reshape(-1).astype(np.int64)
        folded = folded * width + level_ids[k]
    _, first, inverse = np.unique(folded, return_index=True, return_inverse=True)
    rendered = np.empty(len(first), dtype=object)
    for j, r in enumerate(first):
        parts = [level_tokens[k][level_ids[k][r]] for k in range(len(level_ids))]
        rendered[j] = "->".join(p for p in parts if p)
    paths: list[str] = rendered[inverse.reshape(-1)].tolist()
    return paths


def _level_token(key: int, stages: Sequence[Stage], sp: _Space, radix_s: int, radix_t: int
                 ) -> str:
    """The critical-path text of one level from its packed key."""
    K = len(sp.node_counts)
    key, n_idx = divmod(key, K)
    key, out_t = divmod(key, radix_t)
    key, out_s = divmod(key, radix_s)
    key, ex_w = divmod(key, 2)
    key, ex_r = divmod(key, 2)
    key, ex_s = divmod(key, radix_s)
    in_s, in_t = divmod(key, radix_t)
    tokens: list[str] = []
    if in_s:
        tokens.append(f"stage_in_{stages[in_s - 1].name}({_tpn_text(in_t - 1)})")
    if ex_s:
        st = stages[ex_s - 1]
        tpn = int(sp.tpn[n_idx, ex_s - 1])
        if ex_r:
            tokens.append(f"read_{st.name}({tpn})")
        if ex_w:
            tokens.append(f"write_{st.name}({tpn})")
    if out_s:
        tokens.append(f"stage_out_{stages[out_s - 1].name}({_tpn_text(out_t - 1)})")
    return "->".join(tokens)


def _tpn_text(tpn: int) -> str:
    return "NA" if tpn < 0 else str(tpn)


@dataclass
class _Moves:
    """Movement costs, independent of N."""

    # stage_in[s, x, t]: copy of stage s's inputs from shared tier x onto tier t.
    in_cost: np.ndarray
    in_tpn: np.ndarray
    # out[p, x, y]: stage p's outputs moved from tier x to tier y (consumer side).
    out_cost: np.ndarray
    out_tpn: np.ndarray


class MakespanModel:
    """Evaluates a template against a cost table for a tier set.

    Construction does every cost lookup once; :meth:`evaluate` is pure numpy.
    A lookup that finds no row (or only empty cells) is an InputError naming the
    row with ``missing_cost="error"`` (the default); with ``"zero"`` it is
    charged 0 s, as the published model did, and listed in ``missing``.

    With ``carried`` (a site model: ``carried.py``) execution and moves are priced
    by what they carry instead of by the cost table's rows, and each phase is
    floored by the shared tiers' capacities (``capacity.py``).
    """

    def __init__(self, template: WorkflowTemplate, costs: CostTable, tiers: TierSet,
                 missing_cost: str = "error", carried: CarriedPricing | None = None) -> None:
        if missing_cost not in MISSING_COST:
            raise InputError("--missing-cost", f"unknown policy {missing_cost!r}",
                             f"use one of: {', '.join(MISSING_COST)}")
        self.template = template
        self.costs = costs
        self.tiers = tiers
        self.missing_cost = missing_cost
        self.carried = carried
        self.missing: list[str] = []  # lookups that found no row (charged as 0 s)
        self._check_tiers()
        self._moves = self._movement_costs()

    # -- lookups -------------------------------------------------------------
    def _check_tiers(self) -> None:
        known = {t for t in self.costs.storage_types() if "-" not in t}
        unknown = [n for n in self.tiers.names if n not in known]
        if unknown:
            raise InputError(self.costs.source,
                             f"tier(s) {', '.join(unknown)} never appear in the cost table",
                             f"declare tiers among: {', '.join(sorted(known))}")

    def _note_missing(self, what: str, row: dict[str, object], side: str,
                      wanted: str = "") -> None:
        """A lookup found no row: refuse (naming the row it looked for) or, when the
        user asked for it, charge 0 s and remember it."""
        shown = ", ".join(f"{k}={v}" for k, v in row.items())
        text = f"{what}: no row {shown} with a value in {side}" + (f" ({wanted})" if wanted
                                                                    else "")
        if self.missing_cost == "error":
            raise InputError(self.costs.source, f"no cost for {text}",
                             "add the row, or pass --missing-cost zero to charge missing "
                             "rows 0 s (an optimistic prediction)")
        self.missing.append(text)
        log.debug("no cost row for %s; charged as 0 s", text)

    def _movement_costs(self) -> _Moves:
        t_names = self.tiers.names
        S, T = len(self.template.stages), len(t_names)
        in_cost = np.full((S, T, T), np.nan)
        in_tpn = np.full((S, T, T), -1, dtype=np.int64)
        out_cost = np.full((S, T, T), np.nan)
        out_tpn = np.full((S, T, T), -1, dtype=np.int64)
        for s, stage in enumerate(self.template.stages):
            for x, tx in enumerate(self.tiers):
                for y, ty in enumerate(self.tiers):
                    if tx.kind is TierKind.SHARED and ty.is_local:
                        idx = self.costs.select(stage_in_name(stage.name), stage.name,
                                                src=move_name(tx.name, ty.name), dst=ty.name)
                        in_cost[s, x, y], tpn = self.costs.cheapest(idx, "prod")
                        in_tpn[s, x, y] = -1 if tpn is None else tpn
                    if move_applies(self.tiers, x, y):
                        idx = self.costs.select(stage.name, stage_out_name(stage.name),
                                                src=tx.name, dst=move_name(tx.name, ty.name))
                        out_cost[s, x, y], tpn = self.costs.cheapest(idx, "cons")
                        out_tpn[s, x, y] = -1 if tpn is None else tpn
        return _Moves(in_cost, in_tpn, out_cost, out_tpn)

    def _read_cost(self, stage: Stage, tier: str, tpn: int, nodes: int) -> float:
        wanted = f"{stage.name} runs {tpn} tasks per node at N={nodes}"
        if stage.only_initial_data:
            home = self.tiers.home.name
            src, dst = (move_name(home, tier), tier) if self.tiers[tier].is_local \
                else (tier, tier)
            idx = self.costs.select(stage_in_name(stage.name), stage.name, src=src, dst=dst)
            val = self.costs.min_cost(idx, "cons", tpn, prefer=("cons",))
            if np.isnan(val):
                self._note_missing(
                    f"the initial read of {stage.name} on {tier}",
                    {"producer": stage_in_name(stage.name), "consumer": stage.name,
                     "producerStorageType": src, "consumerStorageType": dst}, "estT_cons",
                    wanted)
            return _nz(val)
        total = 0.0  # summed in predecessor order, as the artifact does
        for p in stage.stage_predecessors:
            idx = self.costs.select(p, stage.name, dst=tier)
            val = self.costs.min_cost(idx, "cons", tpn, prefer=("cons",))
            if np.isnan(val):
                self._note_missing(f"the read of {p}->{stage.name} on {tier}",
                                   {"producer": p, "consumer": stage.name,
                                    "consumerStorageType": tier}, "estT_cons", wanted)
            total += _nz(val)
        return total

    def _write_cost(self, stage: Stage, tier: str, tpn: int, nodes: int) -> float:
        wanted = f"{stage.name} runs {tpn} tasks per node at N={nodes}"
        succs = self.template.successors(stage.name)
        if succs:
            vals = []
            for d in succs:
                idx = self.costs.select(stage.name, d.name, src=tier)
                val = self.costs.min_cost(idx, "prod", tpn, prefer=("prod",))
                if np.isnan(val):
                    self._note_missing(f"the write of {stage.name}->{d.name} on {tier}",
                                       {"producer": stage.name, "consumer": d.name,
                                        "producerStorageType": tier}, "estT_prod", wanted)
                vals.append(_nz(val))
            return max(vals)
        home = self.tiers.home.name
        if self.tiers[tier].is_local:
            dst = move_name(tier, home)
            idx = self.costs.select(stage.name, stage_out_name(stage.name), src=tier, dst=dst)
        else:
            dst = move_name(tier, "*")
            idx = self.costs.select(stage.name, stage_out_name(stage.name), src=tier,
                                    dst_prefix=move_name(tier, ""))
        val = self.costs.min_cost(idx, "prod", tpn, prefer=("prod", "cons"))
        if np.isnan(val):
            self._note_missing(f"the final write of {stage.name} on {tier}",
                               {"producer": stage.name, "consumer": stage_out_name(stage.name),
                                "producerStorageType": tier, "consumerStorageType": dst},
                               "estT_prod", wanted)
        return _nz(val)

    def exec_costs(self, nodes: int) -> tuple[np.ndarray, np.ndarray]:
        """(read, write) cost per (stage, tier) at ``nodes`` nodes."""
        S, T = len(self.template.stages), len(self.tiers)
        read = np.zeros((S, T))
        write = np.zeros((S, T))
        for s, stage in enumerate(self.template.stages):
            tpn = stage.tasks_per_node(nodes)
            for t, tier in enumerate(self.tiers.names):
                if self.carried is not None:
                    read[s, t], write[s, t] = self.carried.exec_seconds(
                        stage, self.tiers.tiers[t], nodes,
                        task_files(self.template, stage.name))
                    continue
                read[s, t] = self._read_cost(stage, tier, tpn, nodes)
                write[s, t] = self._write_cost(stage, tier, tpn, nodes)
        return read, write

    # -- evaluation ----------------------------------------------------------
    def evaluate(self, nodes: Sequence[int], configs: np.ndarray | None = None,
                 memory_budget: int | None = None, floor: LevelFloor | None = None
                 ) -> MakespanTable:
        """Makespan of every valid configuration at every node count.

        Rows are sorted by (total, nodes), ties kept in enumeration order (node
        counts in the given order, then configurations). With ``memory_budget``
        (bytes) an evaluation estimated to need more is refused before it starts
        (:func:`evaluation_bytes`). With ``floor`` each phase of each level takes at
        least its shared tiers' bytes over their capacities (``capacity.py``); a site
        model (``carried``) has its profile's floor unless given another.
        """
        if not nodes:
            raise InputError("--nodes", "no node count given", "give e.g. --nodes 2,5,10")
        bad = [n for n in nodes if not 1 <= int(n) <= MAX_NODES]
        if bad:
            raise InputError("--nodes", f"node count {bad[0]} is out of range",
                             f"give node counts from 1 to {MAX_NODES:,}")
        tmpl = self.template
        cfg = enumerate_configs(tmpl, self.tiers) if configs is None else configs
        if floor is None and self.carried is not None:
            floor = floor_of(self.carried.profile, self.tiers, self.carried.volumes)
        # Moves priced by the cost table do not depend on N, except that one node has
        # no fan-out; moves priced by what they carry do (copies go to every node).
        one_node = [int(n) == 1 for n in nodes] if self.carried is None \
            else [int(n) for n in nodes]
        groups = sorted(set(one_node))          # [False], [True], [False, True] or counts
        check_memory(tmpl, self.tiers, int(cfg.shape[0]), len(nodes), memory_budget,
                     len(groups))
        pos = {name: i for i, name in enumerate(tmpl.stage_names)}
        # Tier index of each stage as an index array, shared by every gather below.
        columns = [np.ascontiguousarray(cfg[:, s], dtype=np.intp) for s in range(cfg.shape[1])]
        members = tuple(np.asarray([pos[st.name] for st in tmpl.stages_at(lv)], dtype=np.intp)
                        for lv in tmpl.levels)
        costs = [self.exec_costs(int(n)) for n in nodes]
        space = _Space(
            node_counts=np.asarray([int(n) for n in nodes], dtype=np.int64), configs=cfg,
            read=np.stack([r for r, _ in costs]), write=np.stack([w for _, w in costs]),
            tpn=np.asarray([[st.tasks_per_node(int(n)) for st in tmpl.stages] for n in nodes],
                           dtype=np.int64),
            read_considered=np.array([bool(st.stage_predecessors) or st.only_initial_data
                                      for st in tmpl.stages]),
            members=members, moves=_stack([self._movement(cfg, columns, members, g)
                                           for g in groups]),
            group=np.asarray([groups.index(f) for f in one_node], dtype=np.intp),
            floor=None if floor is None else floor_seconds(tmpl, self.tiers, columns,
                                                           [int(n) for n in nodes], floor))
        V = cfg.shape[0]
        if space.floor is not None:
            return self._floored(space, columns)
        # Summed level by level from 0, in the artifact's order, so totals match
        # it to the last bit and rows sort identically.
        tot_in = np.zeros((len(groups), V))
        tot_out = np.zeros((len(groups), V))
        for k in range(len(members)):
            tot_in = tot_in + space.moves["level_in"][:, :, k]
            tot_out = tot_out + space.moves["level_out"][:, :, k]
        total = np.empty(len(nodes) * V)
        for k in range(len(nodes)):
            g = int(space.group[k])
            tot_exec = np.zeros(V)
            for level in _level_exec(space, k, columns).T:
                tot_exec = tot_exec + level
            total[k * V:(k + 1) * V] = (tot_in[g] + tot_exec) + tot_out[g]
        return self._sorted(space, total)

    def _sorted(self, space: _Space, total: np.ndarray) -> MakespanTable:
        """The table of ``total`` (node count major), rows sorted by (total, nodes)."""
        V = space.configs.shape[0]
        n_all = np.repeat(space.node_counts, V)
        order = np.lexsort((n_all, total))
        return MakespanTable(self.template, self.tiers, space, order // V, order % V,
                             total[order])

    def _floored(self, space: _Space, columns: Sequence[np.ndarray]) -> MakespanTable:
        """The totals when a floor applies: every level's phase at least its floor."""
        assert space.floor is not None
        V = space.configs.shape[0]
        total = np.empty(len(space.node_counts) * V)
        for k in range(len(space.node_counts)):
            g = int(space.group[k])
            fl = space.floor[k]
            phases = (np.maximum(space.moves["level_in"][g], fl[:, :, 0])
                      + np.maximum(_level_exec(space, k, columns), fl[:, :, 1])
                      + np.maximum(space.moves["level_out"][g], fl[:, :, 2]))
            total[k * V:(k + 1) * V] = phases.sum(axis=1)
        return self._sorted(space, total)

    def _check_moves(self, missing: np.ndarray, t_s: np.ndarray,
                     describe: Callable[[int], tuple[str, dict[str, object]]]) -> None:
        """Note every move that some configuration needs (``missing`` rows) and the
        cost table has no row for; ``describe(tier)`` names it from the tier that
        varies (the stage's own for a stage-in, the source for a stage-out)."""
        if not missing.any():
            return
        for t in np.unique(t_s[missing]).tolist():
            what, row = describe(int(t))
            self._note_missing(what, row, "estT_prod" if "stage-in" in what else "estT_cons",
                               "any tasks per node: moves take the cheapest row")

    def _stage_in_row(self, s: int, x: int, y: int) -> tuple[str, dict[str, object]]:
        stage, src, dst = self.template.stages[s].name, self.tiers.names[x], self.tiers.names[y]
        return (f"the stage-in copy of {stage} from {src} onto {dst}",
                {"producer": stage_in_name(stage), "consumer": stage,
                 "producerStorageType": move_name(src, dst), "consumerStorageType": dst})

    def _stage_out_row(self, s: int, x: int, y: int) -> tuple[str, dict[str, object]]:
        stage, src, dst = self.template.stages[s].name, self.tiers.names[x], self.tiers.names[y]
        what = "fan-out" if x == y else "copy"
        return (f"the stage-out {what} of {stage} from {src} to {dst}",
                {"producer": stage, "consumer": stage_out_name(stage),
                 "producerStorageType": src, "consumerStorageType": move_name(src, dst)})

    def _movement(self, cfg: np.ndarray, columns: Sequence[np.ndarray],
                  members: Sequence[np.ndarray], group: bool | int) -> dict[str, np.ndarray]:
        """Stage-in and stage-out terms of every configuration. Priced by the cost
        table (``group``: one node or not) they do not depend on N, but one node has
        no fan-outs (``movement.stage_out_moves``); priced by what they carry
        (``group``: the node count) they do."""
        tmpl, tiers, mv = self.template, self.tiers, self._moves
        nodes = int(group)
        one_node = bool(group) if self.carried is None else nodes == 1
        V, S = cfg.shape
        T = len(tiers)
        # Sorted tier names give the artifact's order of stage-out actions.
        by_name = sorted(range(T), key=lambda i: tiers.names[i])
        rows = np.arange(V)

        in_val = np.full((V, S), np.nan)
        in_tpn = np.full((V, S), -1, dtype=np.int32)
        out_val = np.full((V, S), np.nan)
        # Tasks per node of the stage-out action a critical path would name.
        out_pick = np.full((V, S), -1, dtype=np.int32)

        for s in range(S):
            t_s = columns[s]
            # A site model's bytes of this stage's moves (None: cost-table prices).
            moves = None if self.carried is None else stage_moves(
                tmpl, tiers, s, columns, self.carried.volumes, one_node)
            # Stage-in: one copy per shared source tier the stage needs data from.
            best = np.zeros(V)
            best_tpn = np.full(V, -1, dtype=np.int32)
            any_act = np.zeros(V, dtype=bool)
            for x, sources in stage_in_copies(tmpl, tiers, s, columns):
                need = np.logical_or.reduce([m for _, m in sources])
                if not need.any():
                    continue
                if moves is None:
                    self._check_moves(need & np.isnan(mv.in_cost[s, x][t_s]), t_s,
                                      partial(self._stage_in_row, s, x))
                    c = np.nan_to_num(mv.in_cost[s, x][t_s], nan=0.0)
                    tpn = mv.in_tpn[s, x][t_s]
                else:
                    c = self._carried_move(x, t_s, moves.copied(x, nodes), nodes, True)
                    tpn = np.full(V, COPIES_PER_NODE)
                act = need & (c > 0)
                better = act & (c > best)
                best_tpn = np.where(better, tpn, best_tpn)
                best = np.where(better, c, best)
                any_act |= act
            in_val[:, s] = np.where(any_act, best, np.nan)
            in_tpn[:, s] = best_tpn

            # Stage-out: one move per tier used by a consumer at a later level.
            acts = []
            for y, target in enumerate(stage_out_moves(tmpl, tiers, s, columns, one_node)):
                if moves is None:
                    self._check_moves(target & np.isnan(mv.out_cost[s, :, y][t_s]),
                                      t_s, partial(self._stage_out_row, s, y=y))
                    c = np.nan_to_num(mv.out_cost[s, :, y][t_s], nan=0.0)
                else:
                    c = self._carried_move(y, t_s, moves.moved(y, nodes), nodes, False)
                acts.append(np.where(target & (c > 0), c, 0.0))
            top = np.max(acts, axis=0) if acts else np.zeros(V)
            out_val[:, s] = np.where(top > 0, top, np.nan)
            # Among tied moves the critical path names copies in tier-name order,
            # the fan-out (y == own tier) last.
            best_rank = np.full(V, T + 1)
            for y, c in enumerate(acts):
                rank = np.where(t_s == y, T, by_name.index(y))
                tied = (c > 0) & (top - c < TIE_TOLERANCE) & (rank < best_rank)
                best_rank = np.where(tied, rank, best_rank)
                tpn = mv.out_tpn[s, :, y][t_s] if moves is None else COPIES_PER_NODE
                out_pick[:, s] = np.where(tied, tpn, out_pick[:, s])

        level_in, in_win, in_has = _level_winners(in_val, members, floor=0.0)
        level_out, out_win, out_has = _level_winners(out_val, members, floor=0.0)
        r = rows[:, None]
        return dict(
            stage_in=in_val, stage_out=out_val, level_in=level_in, level_out=level_out,
            cp_in_stage=np.where(in_has, in_win, -1).astype(np.int16),
            cp_in_tpn=np.where(in_has, in_tpn[r, in_win], -1).astype(np.int32),
            cp_out_stage=np.where(out_has, out_win, -1).astype(np.int16),
            cp_out_tpn=np.where(out_has, out_pick[r, out_win], -1).astype(np.int32))

    def _carried_move(self, other: int, t_s: np.ndarray, mib: np.ndarray, nodes: int,
                      into_stage: bool) -> np.ndarray:
        """(V,) seconds of a carried move between the stage's tier ``t_s`` (per
        configuration) and tier ``other``: from ``other`` onto the stage's tier for a
        stage-in (``into_stage``), from the stage's tier to ``other`` for a stage-out."""
        assert self.carried is not None
        out = np.zeros(t_s.shape[0])
        for t in np.unique(t_s[mib > 0]).tolist():
            src, dst = (other, t) if into_stage else (t, other)
            here = t_s == t
            out[here] = self.carried.move_seconds(self.tiers.tiers[src], self.tiers.tiers[dst],
                                                  mib[here], nodes)
        return out


def _level_exec(space: _Space, k: int, columns: Sequence[np.ndarray]) -> np.ndarray:
    """(V, L) execution of every configuration's levels at node count ``k``: the
    slowest of a level's stages (read plus write), at least 0."""
    exe = space.read[k] + space.write[k]
    out = np.empty((space.configs.shape[0], len(space.members)))
    for j, m in enumerate(space.members):
        level = exe[m[0]][columns[m[0]]]
        for s in m[1:]:
            level = np.maximum(level, exe[s][columns[s]])
        out[:, j] = np.maximum(level, 0.0)
    return out


def _stack(groups: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The staging terms of each move group, stacked on a new first axis."""
    return {name: np.stack([g[name] for g in groups]) for name in groups[0]}


def _first_winner(values: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Column of the first value within the tie tolerance of ``best`` (NaN never wins)."""
    close = (best[:, None] - values) < TIE_TOLERANCE
    close &= ~np.isnan(values)
    winner: np.ndarray = np.argmax(close, axis=1)
    return winner


def compute_makespan(template: WorkflowTemplate, costs: CostTable, tiers: TierSet,
                     nodes: Sequence[int], missing_cost: str = "error") -> MakespanTable:
    """Convenience wrapper: build the model and evaluate it."""
    return MakespanModel(template, costs, tiers, missing_cost).evaluate(nodes)


def level_columns(template: WorkflowTemplate) -> list[str]:
    labels = [level_label(lv) for lv in template.levels]
    return ([f"in_o{x}" for x in labels] + [f"exec_o{x}" for x in labels]
            + [f"out_o{x}" for x in labels])


def infer_tiers(template: WorkflowTemplate, costs: CostTable,
                nodes: Sequence[int] = (1, 2, 4, 8, 16), missing_cost: str = "error"
                ) -> TierSet:
    """Tier kinds and order as a cost table shows them.

    A tier with fan-out rows (a move ``x-x`` between nodes of the same tier) is
    node-local; the others are shared. Node-local tiers are ordered fastest first
    by the time every stage would take to read and write on them, summed over the
    node counts ``nodes`` (a lookup without a row follows ``missing_cost``, as in
    :class:`MakespanModel`). With more than one shared tier the home tier cannot
    be told from the table: declare tiers.
    """
    types = costs.storage_types()
    plain = sorted(t for t in types if "-" not in t)
    local = [t for t in plain if move_name(t, t) in types]
    shared = [t for t in plain if t not in local]
    if len(shared) != 1:
        found = ", ".join(shared) if shared else "none"
        raise InputError(costs.source, f"cannot tell the home shared tier (shared tiers: {found})",
                         "declare tiers with --tiers NAME:shared,NAME:node-local,...")
    provisional = TierSet(tuple([Tier(shared[0], TierKind.SHARED)]
                                + [Tier(t, TierKind.NODE_LOCAL) for t in local]))
    model = MakespanModel(template, costs, provisional, missing_cost)
    speed = np.zeros(len(provisional))
    for n in nodes:
        read, write = model.exec_costs(int(n))
        speed += (read + write).sum(axis=0)
    ordered = sorted(local, key=lambda t: (speed[provisional.index(t)], t))
    return TierSet(tuple([Tier(shared[0], TierKind.SHARED)]
                         + [Tier(t, TierKind.NODE_LOCAL) for t in ordered]))
