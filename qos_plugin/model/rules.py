"""A rule per region: which stages are critical, which are flexible.

For each stage (and the node count) a region's rule says

* a single tier: every configuration of the region has it: the stage is
  *critical* (fixed);
* ``*``: the region holds every value the rest of its rule allows: the stage is
  *flexible*, its placement does not matter inside the region;
* a set ``a,b``: only these values occur.

A ``*`` is kept only when it does not make the rule read the same as a later
(slower) region's; otherwise the explicit set is written, so no two rules look
alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qos_plugin.model.configtable import ConfigTable

FLEXIBLE = "*"
NODES = "nodes"


@dataclass(frozen=True)
class RegionStats:
    size: int
    mean: float
    median: float
    std: float
    cv: float
    q25: float
    q75: float
    min: float
    max: float

    @classmethod
    def of(cls, x: np.ndarray) -> RegionStats:
        mean = float(np.mean(x))
        std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
        return cls(int(x.size), mean, float(np.median(x)), std,
                   std / mean if mean else float("nan"), float(np.quantile(x, 0.25)),
                   float(np.quantile(x, 0.75)), float(np.min(x)), float(np.max(x)))


@dataclass
class Region:
    id: int
    stats: RegionStats
    rule: dict[str, str]                 # stage or "nodes" -> tier, "*" or "a,b"
    rows: np.ndarray                     # row indices in the table
    bounds: list[str] = field(default_factory=list)

    @property
    def critical(self) -> list[str]:
        return [k for k, v in self.rule.items() if k != NODES and v != FLEXIBLE and "," not in v]

    @property
    def flexible(self) -> list[str]:
        return [k for k, v in self.rule.items() if k != NODES and v == FLEXIBLE]

    def rule_text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.rule.items())

    def to_json(self, table: ConfigTable) -> dict[str, Any]:
        members = [{"nodes": int(table.nodes[i]), "total": float(table.total[i]),
                    "tiers": {s: str(table.placement[i, j]) for j, s in enumerate(table.stages)}}
                   for i in self.rows]
        return {"id": self.id, "size": self.stats.size, "stats": vars(self.stats),
                "rule": self.rule, "critical": self.critical, "flexible": self.flexible,
                "bounds": self.bounds, "members": members}


def _columns(table: ConfigTable) -> tuple[list[str], np.ndarray]:
    cols = list(table.stages) + [NODES]
    values = np.concatenate([table.placement.astype(str),
                             table.nodes.astype(str)[:, None]], axis=1)
    return cols, values


def build_regions(table: ConfigTable, labels: np.ndarray,
                  bounds: dict[int, list[str]] | None = None) -> list[Region]:
    """Regions (ordered by median makespan) with statistics and rules."""
    cols, values = _columns(table)
    ids = np.unique(labels)
    medians = {int(r): float(np.median(table.total[labels == r])) for r in ids}
    order = sorted((int(r) for r in ids), key=lambda r: (medians[r], r))
    present = {r: [set(map(str, values[labels == r, c])) for c in range(len(cols))]
               for r in order}

    regions = []
    for pos, r in enumerate(order):
        rows = np.flatnonzero(labels == r)
        mine = present[r]
        fixed = [c for c in range(len(cols)) if len(mine[c]) == 1]
        cond = np.ones(len(table), dtype=bool)
        for c in fixed:
            cond &= values[:, c] == next(iter(mine[c]))
        domain = [set(map(str, values[cond, c])) for c in range(len(cols))]
        wild = {c for c in range(len(cols))
                if len(mine[c]) > 1 and len(domain[c]) > 1 and mine[c] == domain[c]}
        later = order[pos + 1:]

        def clashes(wildcards: set[int], later: list[int] = later, mine: Any = mine) -> int:
            def sig(reg_sets: list[set[str]]) -> tuple[Any, ...]:
                return tuple(tuple(sorted(reg_sets[c])) for c in range(len(cols))
                             if c not in wildcards)
            me = sig(mine)
            return sum(sig(present[o]) == me for o in later)

        count = clashes(wild)
        while count > 0 and wild:
            drop, best = None, count
            for c in sorted(wild):
                cc = clashes(wild - {c})
                if cc < best or (cc == best and drop is not None
                                 and len(mine[c]) < len(mine[drop])):
                    drop, best = c, cc
            if drop is None:
                break
            wild.discard(drop)
            count = best

        rule = {}
        for c, name in enumerate(cols):
            if len(mine[c]) == 1:
                rule[name] = next(iter(mine[c]))
            elif c in wild:
                rule[name] = FLEXIBLE
            else:
                key = (lambda v: int(v)) if name == NODES else (lambda v: v)
                rule[name] = ",".join(sorted(mine[c], key=key))
        regions.append(Region(pos, RegionStats.of(table.total[rows]), rule, rows,
                              (bounds or {}).get(r, [])))
    return regions


def relabel(labels: np.ndarray, regions: list[Region]) -> np.ndarray:
    """Labels renumbered to the regions' ids (0 = lowest median makespan)."""
    out = np.empty_like(labels)
    for reg in regions:
        out[reg.rows] = reg.id
    return out
