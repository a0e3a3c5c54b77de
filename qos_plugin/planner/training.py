"""Training: makespan table + regions -> a TrainedModel ready for the registry.

This side may use scikit-learn (regions); the query side never imports it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qos_plugin.errors import InputError
from qos_plugin.model.configtable import ConfigTable, from_makespan
from qos_plugin.model.makespan import MakespanTable
from qos_plugin.model.regions import CartSettings, fit_regions
from qos_plugin.model.rules import Region, build_regions, relabel
from qos_plugin.model.template import template_to_dict
from qos_plugin.planner.trained import DIGITS, Phases, Placements, RegionInfo, TrainedModel


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    return {"path": str(p.resolve()), "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            "bytes": p.stat().st_size}


def fit_table_regions(table: MakespanTable, settings: CartSettings,
                      progress: Any = None) -> tuple[ConfigTable, list[Region], np.ndarray]:
    configs = from_makespan(table)
    fit = fit_regions(configs, settings, progress)
    regions = build_regions(configs, fit.labels, fit.leaf_bounds)
    return configs, regions, relabel(fit.labels, regions)


def build_model(name: str, version: int, table: MakespanTable, configs: ConfigTable,
                regions: Sequence[Region], labels: np.ndarray,
                volumes: dict[str, dict[str, float]] | None,
                provenance: dict[str, Any], created: str) -> TrainedModel:
    """The trained model of ``table`` with its regions (rows in table order)."""
    tmpl = table.template
    decl = {s: i for i, s in enumerate(tmpl.stage_names)}
    order = [decl[s] for s in configs.stages]
    L = len(tmpl.levels)
    # Per level the distinct (in, exec, out) triples, and each row's index into them.
    tables: list[list[list[float]]] = []
    index: list[list[int]] = []
    for k in range(L):
        triples = np.stack([table.level_in[:, k], table.level_exec[:, k],
                            table.level_out[:, k]], axis=1)
        distinct, ix = np.unique(triples, axis=0, return_inverse=True)
        tables.append(distinct.tolist())
        index.append(ix.reshape(-1).tolist())
    if len(table.tiers.names) > len(DIGITS):
        raise InputError("tiers", f"{len(table.tiers.names)} tiers",
                         f"a model holds at most {len(DIGITS)}")
    digits = np.array(list(DIGITS))[table.config[:, order]]
    paths, path_idx = np.unique(np.asarray(table.critical_paths(), dtype=object),
                                return_inverse=True)
    infos = {r.id: RegionInfo(r.id, dict(r.rule), r.critical, r.flexible, r.stats.median,
                              r.stats.min, r.stats.max, r.stats.size) for r in regions}
    return TrainedModel(
        name=name, version=version,
        created=created,
        provenance=provenance, workflow=template_to_dict(tmpl),
        tier_names=list(table.tiers.names),
        tier_kinds=[str(t.kind) for t in table.tiers],
        stages=list(configs.stages), levels=list(tmpl.levels),
        stage_levels={s.name: s.level for s in tmpl.stages},
        volumes=volumes,
        nodes=[int(v) for v in table.nodes], total=[float(v) for v in table.total],
        placement=Placements(["".join(row) for row in digits.tolist()]),
        region=[int(v) for v in labels], path=[int(v) for v in path_idx.reshape(-1)],
        phases=Phases(tables, list(index)), paths=[str(p) for p in paths],
        regions=infos)
