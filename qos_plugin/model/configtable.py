"""The configuration table: one row per (configuration, N) with its makespan.

This is what regions and ranking work on. It is built from an evaluated
:class:`~qos_plugin.model.makespan.MakespanTable` or read back from the makespan
CSV (the artifact's layout: nodes, total, in_oK/exec_oK/out_oK, critical_path,
``<stage>_stor`` and per stage in_S, read_S, write_S, out_S with ``-`` for not
applicable).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qos_plugin.errors import InputError
from qos_plugin.model.csvio import number_problem, parse_number, read_table, write_csv
from qos_plugin.model.limits import MAX_NODES, MAX_SECONDS
from qos_plugin.model.makespan import MakespanTable, level_columns
from qos_plugin.model.tiers import Tier, TierKind, TierSet

STOR_SUFFIX = "_stor"
NOT_APPLICABLE = "-"


@dataclass
class ConfigTable:
    """Row-aligned columns. ``stages`` are in report order (level, then name)."""

    stages: list[str]
    nodes: np.ndarray                 # (R,) int
    total: np.ndarray                 # (R,) float
    placement: np.ndarray             # (R, S) object: tier name per stage
    staging_names: list[str]          # in_*/out_* columns (levels and stages)
    staging: np.ndarray               # (R, K) float, NaN where not applicable
    stage_exec: np.ndarray            # (R, S) read+write per stage, NaN if unknown
    critical_path: list[str]
    region: np.ndarray | None = None  # (R,) int, when labelled

    def __len__(self) -> int:
        return int(self.total.shape[0])

    def tier_values(self) -> list[str]:
        return sorted({str(v) for v in self.placement.ravel()})

    def take(self, rows: np.ndarray) -> ConfigTable:
        return ConfigTable(
            stages=list(self.stages), nodes=self.nodes[rows], total=self.total[rows],
            placement=self.placement[rows], staging_names=list(self.staging_names),
            staging=self.staging[rows], stage_exec=self.stage_exec[rows],
            critical_path=[self.critical_path[i] for i in np.arange(len(self))[rows]],
            region=None if self.region is None else self.region[rows])


def from_makespan(table: MakespanTable) -> ConfigTable:
    order = table.template.ordered()
    pos = {n: i for i, n in enumerate(table.template.stage_names)}
    idx = [pos[s.name] for s in order]
    labels_in = [c for c in level_columns(table.template) if c.startswith("in_")]
    labels_out = [c for c in level_columns(table.template) if c.startswith("out_")]
    names = labels_in + labels_out + [f"in_{s.name}" for s in order] + \
        [f"out_{s.name}" for s in order]
    staging = np.concatenate([table.level_in, table.level_out, table.stage_in[:, idx],
                              table.stage_out[:, idx]], axis=1)
    exe = np.nan_to_num(table.stage_read[:, idx]) + table.stage_write[:, idx]
    placement = np.stack([table.tier_names(i) for i in idx], axis=1)
    return ConfigTable(stages=[s.name for s in order], nodes=table.nodes.copy(),
                       total=table.total.copy(), placement=placement,
                       staging_names=names, staging=staging, stage_exec=exe,
                       critical_path=table.critical_paths())


def _fmt_stage(v: float) -> str:
    return NOT_APPLICABLE if np.isnan(v) else f"{v:.6f}"


def write_makespan_csv(table: MakespanTable, path: str | Path) -> None:
    """Write the makespan table in the artifact's column layout."""
    order = table.template.ordered()
    pos = {n: i for i, n in enumerate(table.template.stage_names)}
    header = ["nodes", "total"] + level_columns(table.template) + ["critical_path"]
    header += [f"{s.name}{STOR_SUFFIX}" for s in order]
    for s in order:
        header += [f"in_{s.name}", f"read_{s.name}", f"write_{s.name}", f"out_{s.name}"]
    paths = table.critical_paths()
    names = np.asarray(table.tiers.names, dtype=object)

    def rows() -> Iterator[list[object]]:
        for r in range(len(table)):
            row: list[object] = [int(table.nodes[r]), repr(float(table.total[r]))]
            for arr in (table.level_in, table.level_exec, table.level_out):
                row += [repr(float(v)) for v in arr[r]]
            row.append(paths[r])
            row += [names[table.config[r, pos[s.name]]] for s in order]
            for s in order:
                i = pos[s.name]
                row += [_fmt_stage(table.stage_in[r, i]), _fmt_stage(table.stage_read[r, i]),
                        _fmt_stage(table.stage_write[r, i]), _fmt_stage(table.stage_out[r, i])]
            yield row

    write_csv(path, header, rows())


def _parse_cells(values: list[str], source: str, column: str, lines: list[int]) -> np.ndarray:
    out = np.empty(len(values))
    for k, v in enumerate(values):
        if v in ("", NOT_APPLICABLE):
            out[k] = np.nan
            continue
        value = parse_number(v)
        if value is None or not 0.0 <= value <= MAX_SECONDS:
            problem = number_problem(v) if value is None else f"outside 0 to {MAX_SECONDS:g}"
            raise InputError(f"{source}:{lines[k]}", f"column {column!r} has {v[:40]!r}, "
                             f"{problem}", f"give a time in seconds or {NOT_APPLICABLE!r}")
        out[k] = value
    return out


def load_config_table(path: str | Path) -> ConfigTable:
    """Read a makespan CSV or a ``config_regions.csv`` (then with its regions)."""
    t = read_table(path, ("nodes", "total"), "makespan table")
    stor = [h for h in t.header if h.endswith(STOR_SUFFIX)]
    if not stor:
        raise InputError(t.source, "no <stage>_stor column",
                         "give the makespan table written by 'qos-plan makespan'")
    stages = [h[: -len(STOR_SUFFIX)] for h in stor]
    nodes = t.integers("nodes", lo=1, hi=MAX_NODES, hint="node counts must be positive")
    total = t.numbers("total", lo=0.0, hi=MAX_SECONDS, hint="makespans are seconds")
    placement = np.stack([np.asarray(t.text(h), dtype=object) for h in stor], axis=1)
    staging_names = sorted(h for h in t.header if h.startswith(("in_", "out_")))
    staging = (np.stack([_parse_cells(t.text(h), t.source, h, t.lines) for h in staging_names],
                        axis=1) if staging_names else np.zeros((len(t), 0)))
    exe = np.full((len(t), len(stages)), np.nan)
    for j, s in enumerate(stages):
        if t.has(f"read_{s}") and t.has(f"write_{s}"):
            r = _parse_cells(t.text(f"read_{s}"), t.source, f"read_{s}", t.lines)
            w = _parse_cells(t.text(f"write_{s}"), t.source, f"write_{s}", t.lines)
            exe[:, j] = np.nan_to_num(r) + np.nan_to_num(w)
    cp = t.text("critical_path") if t.has("critical_path") else [""] * len(t)
    region = (t.integers("region", lo=0, hi=2**31, hint="region ids are whole numbers")
              if t.has("region") else None)
    return ConfigTable(stages=stages, nodes=nodes, total=total, placement=placement,
                       staging_names=staging_names, staging=staging, stage_exec=exe,
                       critical_path=cp, region=region)


def infer_table_tiers(table: ConfigTable) -> TierSet:
    """Tier kinds and speed order as the table itself shows them.

    A tier is node-local when a stage placed on it ever has a stage-in or
    stage-out term (moves only touch node-local tiers); node-local tiers are
    ordered fastest first by the mean read+write time of the stages placed on
    them. Declare tiers explicitly where a table cannot show this.
    """
    names = table.tier_values()
    local = set()
    pos = {n: i for i, n in enumerate(table.staging_names)}
    for j, s in enumerate(table.stages):
        cols = [pos[c] for c in (f"in_{s}",) if c in pos]
        if not cols:
            continue
        staged = ~np.isnan(table.staging[:, cols]).all(axis=1) & \
            (np.nan_to_num(table.staging[:, cols]) > 0).any(axis=1)
        local |= {str(v) for v in table.placement[staged, j]}
    speed = {n: _mean_stage_exec(table, n) for n in names}
    shared = [n for n in names if n not in local]
    if not shared:
        raise InputError("tiers", "every tier in the table looks node-local",
                         "declare the tiers with --tiers NAME:KIND,...")
    ordered_local = sorted(local, key=lambda n: (speed[n], n))
    return TierSet(tuple([Tier(n, TierKind.SHARED) for n in shared]
                         + [Tier(n, TierKind.NODE_LOCAL) for n in ordered_local]))


def _mean_stage_exec(table: ConfigTable, tier: str) -> float:
    """Sum over stages of the stage's mean exec time when placed on ``tier``."""
    total = 0.0
    for j in range(len(table.stages)):
        on = table.placement[:, j] == tier
        vals = table.stage_exec[on, j]
        vals = vals[~np.isnan(vals)]
        total += float(vals.mean()) if vals.size else 0.0
    return total
