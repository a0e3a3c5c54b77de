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
the QoSFlow artifact's, which this module reproduces bit for bit.

All costs are looked up once per (stage, tier, N) and gathered with numpy over the
configurations; nothing here loops over configurations in Python.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qos_plugin.errors import InputError, ModelError
from qos_plugin.model.costs import CostTable, stage_in_name, stage_out_name
from qos_plugin.model.template import Stage, WorkflowTemplate, level_label
from qos_plugin.model.tiers import Tier, TierKind, TierSet, move_name

log = logging.getLogger(__name__)

# Two costs closer than this are a tie for "which action won the barrier".
TIE_TOLERANCE = 1e-12
# Refuse to enumerate more configurations than this per node count.
MAX_CONFIGS = 20_000_000


def _nz(x: float) -> float:
    return 0.0 if np.isnan(x) else float(x)


def enumerate_configs(template: WorkflowTemplate, tiers: TierSet) -> np.ndarray:
    """Valid tier assignments as an (V, S) array of tier indices.

    Stages in declaration order, the last stage varying fastest. A configuration
    is invalid when a stage and one of its predecessors sit on two different
    node-local tiers: there is no way to move data between them.
    """
    n_stages, n_tiers = len(template.stages), len(tiers)
    total = n_tiers ** n_stages
    if total > MAX_CONFIGS:
        raise ModelError(f"{n_tiers} tiers over {n_stages} stages make {total} configurations "
                         f"per node count, more than {MAX_CONFIGS}; restrict the tiers")
    dtype = np.int8 if n_tiers < 127 else np.int16
    flat = np.arange(total, dtype=np.int64)
    cfg = np.empty((total, n_stages), dtype=dtype)
    for s in range(n_stages):
        cfg[:, s] = (flat // n_tiers ** (n_stages - 1 - s)) % n_tiers
    is_local = np.array([t.is_local for t in tiers], dtype=bool)
    pos = {name: i for i, name in enumerate(template.stage_names)}
    valid = np.ones(total, dtype=bool)
    for c, stage in enumerate(template.stages):
        for p_name in stage.stage_predecessors:
            p = pos[p_name]
            a, b = cfg[:, p], cfg[:, c]
            valid &= ~((a != b) & is_local[a] & is_local[b])
    out: np.ndarray = cfg[valid]
    return out


@dataclass
class MakespanTable:
    """Makespan and its breakdown for every (configuration, N).

    Arrays are row-aligned; per-stage arrays are in the template's declaration
    order and hold NaN where the artifact writes ``-`` (not applicable).
    """

    template: WorkflowTemplate
    tiers: TierSet
    nodes: np.ndarray            # (R,)
    config: np.ndarray           # (R, S) tier index per stage
    total: np.ndarray            # (R,)
    level_in: np.ndarray         # (R, L)
    level_exec: np.ndarray       # (R, L)
    level_out: np.ndarray        # (R, L)
    stage_in: np.ndarray         # (R, S)
    stage_read: np.ndarray       # (R, S)
    stage_write: np.ndarray      # (R, S)
    stage_out: np.ndarray        # (R, S)
    # Critical path, encoded per level: winning stage index (-1: none) and the
    # tasks per node shown in its token.
    cp_in_stage: np.ndarray      # (R, L)
    cp_in_tpn: np.ndarray
    cp_exec_stage: np.ndarray
    cp_exec_read: np.ndarray     # bool: read token present
    cp_exec_write: np.ndarray    # bool: write token present
    cp_out_stage: np.ndarray
    cp_out_tpn: np.ndarray
    _paths: list[str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.total.shape[0])

    @property
    def levels(self) -> list[float]:
        return self.template.levels

    def tier_names(self, stage_index: int) -> np.ndarray:
        names = np.asarray(self.tiers.names, dtype=object)
        picked: np.ndarray = names[self.config[:, stage_index]]
        return picked

    def critical_paths(self) -> list[str]:
        """Critical path strings, built once per distinct encoded path."""
        if self._paths is None:
            self._paths = _render_paths(self)
        return self._paths

    def take(self, rows: np.ndarray) -> MakespanTable:
        """A new table with only ``rows`` (indices or mask), in that order."""
        kw: dict[str, Any] = {}
        for name in ROW_FIELDS:
            kw[name] = getattr(self, name)[rows]
        return MakespanTable(self.template, self.tiers, **kw)


# The row-aligned arrays of a MakespanTable (everything but template and tiers).
ROW_FIELDS = ("nodes", "config", "total", "level_in", "level_exec", "level_out", "stage_in",
              "stage_read", "stage_write", "stage_out", "cp_in_stage", "cp_in_tpn",
              "cp_exec_stage", "cp_exec_read", "cp_exec_write", "cp_out_stage", "cp_out_tpn")


def _render_paths(t: MakespanTable) -> list[str]:
    stages = t.template.stage_names
    n_levels = len(t.levels)
    code = np.concatenate([
        t.nodes[:, None].astype(np.int64),
        t.cp_in_stage.astype(np.int64), t.cp_in_tpn.astype(np.int64),
        t.cp_exec_stage.astype(np.int64), t.cp_exec_read.astype(np.int64),
        t.cp_exec_write.astype(np.int64),
        t.cp_out_stage.astype(np.int64), t.cp_out_tpn.astype(np.int64)], axis=1)
    uniq, inverse = np.unique(code, axis=0, return_inverse=True)
    rendered: list[str] = []
    L = n_levels
    for row in uniq:
        n = int(row[0])
        in_s, in_t = row[1:1 + L], row[1 + L:1 + 2 * L]
        ex_s, ex_r, ex_w = row[1 + 2 * L:1 + 3 * L], row[1 + 3 * L:1 + 4 * L], \
            row[1 + 4 * L:1 + 5 * L]
        out_s, out_t = row[1 + 5 * L:1 + 6 * L], row[1 + 6 * L:1 + 7 * L]
        tokens: list[str] = []
        for k in range(L):
            if in_s[k] >= 0:
                tokens.append(f"stage_in_{stages[in_s[k]]}({_tpn_text(int(in_t[k]))})")
            if ex_s[k] >= 0:
                st = t.template.stages[int(ex_s[k])]
                tpn = st.tasks_per_node(n)
                if ex_r[k]:
                    tokens.append(f"read_{st.name}({tpn})")
                if ex_w[k]:
                    tokens.append(f"write_{st.name}({tpn})")
            if out_s[k] >= 0:
                tokens.append(f"stage_out_{stages[out_s[k]]}({_tpn_text(int(out_t[k]))})")
        rendered.append("->".join(tokens))
    return [rendered[i] for i in inverse.reshape(-1)]


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
    """

    def __init__(self, template: WorkflowTemplate, costs: CostTable, tiers: TierSet) -> None:
        self.template = template
        self.costs = costs
        self.tiers = tiers
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

    def _note_missing(self, what: str) -> None:
        self.missing.append(what)
        log.debug("no cost row for %s; charged as 0 s", what)

    def _move_applies(self, x: int, y: int) -> bool:
        tx, ty = self.tiers.tiers[x], self.tiers.tiers[y]
        if tx.is_local and ty.is_local:
            return x == y            # fan-out between nodes of one node-local tier
        return x != y                # shared <-> local, or between two shared tiers

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
                    if self._move_applies(x, y):
                        idx = self.costs.select(stage.name, stage_out_name(stage.name),
                                                src=tx.name, dst=move_name(tx.name, ty.name))
                        out_cost[s, x, y], tpn = self.costs.cheapest(idx, "cons")
                        out_tpn[s, x, y] = -1 if tpn is None else tpn
        return _Moves(in_cost, in_tpn, out_cost, out_tpn)

    def _read_cost(self, stage: Stage, tier: str, tpn: int) -> float:
        if stage.only_initial_data:
            home = self.tiers.home.name
            src, dst = (move_name(home, tier), tier) if self.tiers[tier].is_local \
                else (tier, tier)
            idx = self.costs.select(stage_in_name(stage.name), stage.name, src=src, dst=dst)
            val = self.costs.min_cost(idx, "cons", tpn, prefer=("cons",))
            if np.isnan(val):
                self._note_missing(f"initial read of {stage.name} on {tier}")
            return _nz(val)
        total = 0.0  # summed in predecessor order, as the artifact does
        for p in stage.stage_predecessors:
            idx = self.costs.select(p, stage.name, dst=tier)
            val = self.costs.min_cost(idx, "cons", tpn, prefer=("cons",))
            if np.isnan(val):
                self._note_missing(f"read of {p}->{stage.name} on {tier}")
            total += _nz(val)
        return total

    def _write_cost(self, stage: Stage, tier: str, tpn: int) -> float:
        succs = self.template.successors(stage.name)
        if succs:
            vals = []
            for d in succs:
                idx = self.costs.select(stage.name, d.name, src=tier)
                val = self.costs.min_cost(idx, "prod", tpn, prefer=("prod",))
                if np.isnan(val):
                    self._note_missing(f"write of {stage.name}->{d.name} on {tier}")
                vals.append(_nz(val))
            return max(vals)
        home = self.tiers.home.name
        if self.tiers[tier].is_local:
            idx = self.costs.select(stage.name, stage_out_name(stage.name), src=tier,
                                    dst=move_name(tier, home))
        else:
            idx = self.costs.select(stage.name, stage_out_name(stage.name), src=tier,
                                    dst_prefix=move_name(tier, ""))
        val = self.costs.min_cost(idx, "prod", tpn, prefer=("prod", "cons"))
        if np.isnan(val):
            self._note_missing(f"final write of {stage.name} on {tier}")
        return _nz(val)

    def exec_costs(self, nodes: int) -> tuple[np.ndarray, np.ndarray]:
        """(read, write) cost per (stage, tier) at ``nodes`` nodes."""
        S, T = len(self.template.stages), len(self.tiers)
        read = np.zeros((S, T))
        write = np.zeros((S, T))
        for s, stage in enumerate(self.template.stages):
            tpn = stage.tasks_per_node(nodes)
            for t, tier in enumerate(self.tiers.names):
                read[s, t] = self._read_cost(stage, tier, tpn)
                write[s, t] = self._write_cost(stage, tier, tpn)
        return read, write

    # -- evaluation ----------------------------------------------------------
    def evaluate(self, nodes: Sequence[int], configs: np.ndarray | None = None) -> MakespanTable:
        """Makespan of every valid configuration at every node count.

        Rows are sorted by (total, nodes), ties kept in enumeration order (node
        counts in the given order, then configurations).
        """
        if not nodes:
            raise InputError("--nodes", "no node count given", "give e.g. --nodes 2,5,10")
        bad = [n for n in nodes if int(n) < 1]
        if bad:
            raise InputError("--nodes", f"node count {bad[0]} is not positive",
                             "give node counts of 1 or more")
        cfg = enumerate_configs(self.template, self.tiers) if configs is None else configs
        moves = self._movement(cfg)
        parts = []
        for n in nodes:
            parts.append(self._evaluate_at(int(n), cfg, moves))
        table = _concat(self.template, self.tiers, parts)
        order = np.lexsort((table.nodes, table.total))
        return table.take(order)

    def _movement(self, cfg: np.ndarray) -> dict[str, np.ndarray]:
        """Stage-in and stage-out terms of every configuration (N-independent)."""
        tmpl, tiers, mv = self.template, self.tiers, self._moves
        V, S = cfg.shape
        T = len(tiers)
        is_local = np.array([t.is_local for t in tiers], dtype=bool)
        shared = [i for i, t in enumerate(tiers) if not t.is_local]
        home = tiers.index(tiers.home.name)
        pos = {name: i for i, name in enumerate(tmpl.stage_names)}
        # Sorted tier names give the artifact's order of stage-out actions.
        by_name = sorted(range(T), key=lambda i: tiers.names[i])
        last_level = tmpl.levels[-1]
        rows = np.arange(V)

        in_val = np.full((V, S), np.nan)
        in_tpn = np.full((V, S), -1, dtype=np.int64)
        out_val = np.full((V, S), np.nan)
        out_act_cost = np.zeros((V, S, T))
        out_act_tpn = np.full((V, S, T), -1, dtype=np.int64)
        out_act_rank = np.zeros((V, S, T), dtype=np.int64)

        for s, stage in enumerate(tmpl.stages):
            t_s = cfg[:, s].astype(np.int64)
            local_s = is_local[t_s]
            # Stage-in: one copy per shared source tier the stage needs data from.
            best = np.zeros(V)
            best_tpn = np.full(V, -1, dtype=np.int64)
            any_act = np.zeros(V, dtype=bool)
            for x in shared:
                need = np.zeros(V, dtype=bool)
                if stage.reads_initial_data and x == home:
                    need |= True
                for p_name in stage.stage_predecessors:
                    need |= cfg[:, pos[p_name]] == x
                need &= local_s
                if not need.any():
                    continue
                c = mv.in_cost[s, x, t_s]
                c = np.where(np.isnan(c), 0.0, c)
                act = need & (c > 0)
                better = act & (c > best)
                best_tpn = np.where(better, mv.in_tpn[s, x, t_s], best_tpn)
                best = np.where(better, c, best)
                any_act |= act
            in_val[:, s] = np.where(any_act, best, np.nan)
            in_tpn[:, s] = best_tpn

            # Stage-out: one move per tier used by a consumer at a later level.
            succ = [pos[d.name] for d in tmpl.successors(stage.name)]
            for y in range(T):
                target = np.zeros(V, dtype=bool)
                for d in succ:
                    target |= cfg[:, d] == y
                if stage.level == last_level and y == home:
                    target |= local_s       # final flush of node-local outputs
                c = mv.out_cost[s, t_s, y]
                c = np.where(np.isnan(c), 0.0, c)
                act = target & (c > 0)
                out_act_cost[:, s, y] = np.where(act, c, 0.0)
                out_act_tpn[:, s, y] = mv.out_tpn[s, t_s, y]
                # Copies in tier-name order, the fan-out (y == own tier) last.
                out_act_rank[:, s, y] = np.where(t_s == y, T, by_name.index(y))
            has_out = (out_act_cost[:, s, :] > 0).any(axis=1)
            out_val[:, s] = np.where(has_out, out_act_cost[:, s, :].max(axis=1), np.nan)

        levels = tmpl.levels
        L = len(levels)
        level_in = np.zeros((V, L))
        level_out = np.zeros((V, L))
        cp_in_stage = np.full((V, L), -1, dtype=np.int64)
        cp_in_tpn = np.full((V, L), -1, dtype=np.int64)
        cp_out_stage = np.full((V, L), -1, dtype=np.int64)
        cp_out_tpn = np.full((V, L), -1, dtype=np.int64)
        for k, level in enumerate(levels):
            members = [pos[st.name] for st in tmpl.stages_at(level)]
            iv = in_val[:, members]
            level_in[:, k] = np.nan_to_num(iv, nan=0.0).max(axis=1)
            win = _first_winner(iv, level_in[:, k])
            has = level_in[:, k] > 0
            cp_in_stage[:, k] = np.where(has, np.asarray(members)[win], -1)
            cp_in_tpn[:, k] = np.where(has, in_tpn[rows, np.asarray(members)[win]], -1)

            ov = out_val[:, members]
            level_out[:, k] = np.nan_to_num(ov, nan=0.0).max(axis=1)
            win = _first_winner(ov, level_out[:, k])
            has = level_out[:, k] > 0
            w_stage = np.asarray(members)[win]
            cost_w = out_act_cost[rows, w_stage, :]
            tied = (cost_w > 0) & (level_out[:, k][:, None] - cost_w < TIE_TOLERANCE)
            rank = np.where(tied, out_act_rank[rows, w_stage, :], np.iinfo(np.int64).max)
            pick = np.argmin(rank, axis=1)
            cp_out_stage[:, k] = np.where(has, w_stage, -1)
            cp_out_tpn[:, k] = np.where(has, out_act_tpn[rows, w_stage, pick], -1)
        return dict(in_val=in_val, out_val=out_val, level_in=level_in, level_out=level_out,
                    cp_in_stage=cp_in_stage, cp_in_tpn=cp_in_tpn,
                    cp_out_stage=cp_out_stage, cp_out_tpn=cp_out_tpn)

    def _evaluate_at(self, nodes: int, cfg: np.ndarray, mv: dict[str, np.ndarray]
                     ) -> MakespanTable:
        tmpl = self.template
        V, S = cfg.shape
        read_tab, write_tab = self.exec_costs(nodes)
        ci = cfg.astype(np.int64)
        cols = np.arange(S)
        read = read_tab[cols[None, :], ci]
        write = write_tab[cols[None, :], ci]
        exe = read + write
        pos = {name: i for i, name in enumerate(tmpl.stage_names)}
        levels = tmpl.levels
        L = len(levels)
        level_exec = np.zeros((V, L))
        cp_exec_stage = np.full((V, L), -1, dtype=np.int64)
        cp_exec_read = np.zeros((V, L), dtype=bool)
        cp_exec_write = np.zeros((V, L), dtype=bool)
        read_considered = np.array([bool(st.stage_predecessors) or st.only_initial_data
                                    for st in tmpl.stages])
        rows = np.arange(V)
        for k, level in enumerate(levels):
            members = np.asarray([pos[st.name] for st in tmpl.stages_at(level)])
            ev = exe[:, members]
            level_exec[:, k] = np.maximum(ev.max(axis=1), 0.0)
            win = members[_first_winner(ev, level_exec[:, k])]
            has = level_exec[:, k] > 0
            cp_exec_stage[:, k] = np.where(has, win, -1)
            cp_exec_read[:, k] = has & read_considered[win] & (read[rows, win] > 0)
            cp_exec_write[:, k] = has & (write[rows, win] > 0)

        # Summed level by level from 0, in the artifact's order, so totals match
        # it to the last bit and rows sort identically.
        tot_in = np.zeros(V)
        tot_exec = np.zeros(V)
        tot_out = np.zeros(V)
        for k in range(L):
            tot_in = tot_in + mv["level_in"][:, k]
            tot_exec = tot_exec + level_exec[:, k]
            tot_out = tot_out + mv["level_out"][:, k]
        total = (tot_in + tot_exec) + tot_out

        stage_read = np.where(read_considered[None, :], read, np.nan)
        return MakespanTable(
            template=tmpl, tiers=self.tiers, nodes=np.full(V, nodes, dtype=np.int64),
            config=cfg, total=total, level_in=mv["level_in"], level_exec=level_exec,
            level_out=mv["level_out"], stage_in=mv["in_val"], stage_read=stage_read,
            stage_write=write, stage_out=mv["out_val"], cp_in_stage=mv["cp_in_stage"],
            cp_in_tpn=mv["cp_in_tpn"], cp_exec_stage=cp_exec_stage, cp_exec_read=cp_exec_read,
            cp_exec_write=cp_exec_write, cp_out_stage=mv["cp_out_stage"],
            cp_out_tpn=mv["cp_out_tpn"])


def _first_winner(values: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Column of the first value within the tie tolerance of ``best`` (NaN never wins)."""
    close = (best[:, None] - values) < TIE_TOLERANCE
    close &= ~np.isnan(values)
    winner: np.ndarray = np.argmax(close, axis=1)
    return winner


def _concat(template: WorkflowTemplate, tiers: TierSet, parts: list[MakespanTable]
            ) -> MakespanTable:
    kw: dict[str, Any] = {}
    for name in ROW_FIELDS:
        kw[name] = np.concatenate([getattr(p, name) for p in parts])
    return MakespanTable(template, tiers, **kw)


def compute_makespan(template: WorkflowTemplate, costs: CostTable, tiers: TierSet,
                     nodes: Sequence[int]) -> MakespanTable:
    """Convenience wrapper: build the model and evaluate it."""
    return MakespanModel(template, costs, tiers).evaluate(nodes)


def level_columns(template: WorkflowTemplate) -> list[str]:
    labels = [level_label(lv) for lv in template.levels]
    return ([f"in_o{x}" for x in labels] + [f"exec_o{x}" for x in labels]
            + [f"out_o{x}" for x in labels])


def infer_tiers(template: WorkflowTemplate, costs: CostTable,
                nodes: Sequence[int] = (1, 2, 4, 8, 16)) -> TierSet:
    """Tier kinds and order as a cost table shows them.

    A tier with fan-out rows (a move ``x-x`` between nodes of the same tier) is
    node-local; the others are shared. Node-local tiers are ordered fastest first
    by the time every stage would take to read and write on them, summed over the
    node counts ``nodes``. With more than
    one shared tier the home tier cannot be told from the table: declare tiers.
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
    model = MakespanModel(template, costs, provisional)
    speed = np.zeros(len(provisional))
    for n in nodes:
        read, write = model.exec_costs(int(n))
        speed += (read + write).sum(axis=0)
    ordered = sorted(local, key=lambda t: (speed[provisional.index(t)], t))
    return TierSet(tuple([Tier(shared[0], TierKind.SHARED)]
                         + [Tier(t, TierKind.NODE_LOCAL) for t in ordered]))
