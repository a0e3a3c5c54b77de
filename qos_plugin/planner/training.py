"""Training: makespan table + regions -> a TrainedModel ready for the registry.

This side may use scikit-learn (regions); the query side never imports it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qos_plugin.errors import InputError
from qos_plugin.model.configtable import ConfigTable, from_makespan
from qos_plugin.model.makespan import MakespanTable
from qos_plugin.model.movement import Volumes
from qos_plugin.model.regions import CartSettings, fit_regions
from qos_plugin.model.rules import Region, build_regions, relabel
from qos_plugin.model.template import template_to_dict
from qos_plugin.planner.contract import ContractTables
from qos_plugin.planner.trained import (
    DIGITS,
    SOURCES_KEY,
    TRANSFER_KEYS,
    VOLUME_KEYS,
    Phases,
    Placements,
    RegionInfo,
    TrainedModel,
)


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


def level_tables(table: MakespanTable, volumes: Volumes | None
                 ) -> tuple[Phases, ContractTables]:
    """Per level the distinct (in, exec, out) triples with each row's index into them
    and the job contract of each triple (without I/O volumes: no needs, only what
    stages in and out).

    A contract is, per phase, the MiB the rows move on each tier
    (``MakespanTable.movement_mib``: the moves the makespan is made of), the phase's
    predicted time and the rate between them; triples are then made distinct by
    their contracts too, so that a row's phase index picks both. A phase predicted
    to take 0 s (a move the cost table charged nothing) asks no rate of its tiers:
    its bytes do not bear on the prediction.
    """
    T = len(table.tiers)
    local = [t.is_local for t in table.tiers]
    nodes = table.nodes.astype(float)[:, None]
    movement = table.movement_mib(volumes) if volumes is not None else None
    tables: list[list[list[float]]] = []
    index: list[list[int]] = []
    contracts: list[list[list[list[float]]]] = []
    for k in range(len(table.template.levels)):
        keys = np.stack([table.level_in[:, k], table.level_exec[:, k],
                         table.level_out[:, k]], axis=1)
        if movement is not None:
            mib = next(movement).reshape(len(table), 3 * T)
            keys = np.concatenate([keys, mib, nodes], axis=1)
        distinct, ix = np.unique(keys, axis=0, return_inverse=True)
        tables.append(distinct[:, :3].tolist())
        index.append(ix.reshape(-1).tolist())
        # Without volumes a contract still says what stages in and out, with no rates.
        contracts.append([_needs(key, T, local) if movement is not None else []
                          for key in distinct.tolist()])
    tmpl = table.template
    ends = ([s.name for s in tmpl.stages if s.reads_initial_data],
            [s.name for s in tmpl.stages if s.level == tmpl.levels[-1]])
    return Phases(tables, list(index)), ContractTables(contracts, *ends)


def _needs(key: list[float], T: int, local: list[bool]) -> list[list[float]]:
    """The needs of one distinct key: (in, exec, out), MiB per (phase, tier), nodes."""
    needs: list[list[float]] = []
    for ph in range(3):
        sec = key[ph]
        for t in range(T):
            m = key[3 + ph * T + t]
            if m > 0 and sec > 0:
                need = [ph, t, m, m / sec]
                if local[t]:
                    need.append(m / sec / key[-1])
                needs.append(need)
    return needs


def build_model(name: str, version: int, table: MakespanTable, configs: ConfigTable,
                regions: Sequence[Region], labels: np.ndarray,
                volumes: Volumes | None,
                provenance: dict[str, Any], created: str) -> TrainedModel:
    """The trained model of ``table`` with its regions (rows in table order)."""
    tmpl = table.template
    decl = {s: i for i, s in enumerate(tmpl.stage_names)}
    order = [decl[s] for s in configs.stages]
    phases, contracts = level_tables(table, volumes)
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
        volumes=None if volumes is None else {s: _saved_volumes(v) for s, v in volumes.items()},
        contracts=contracts,
        nodes=[int(v) for v in table.nodes], total=[float(v) for v in table.total],
        placement=Placements(["".join(row) for row in digits.tolist()]),
        region=[int(v) for v in labels], path=[int(v) for v in path_idx.reshape(-1)],
        phases=phases, paths=[str(p) for p in paths],
        regions=infos)


def _saved_volumes(v: Mapping[str, object]) -> dict[str, Any]:
    """What a model keeps of a stage's volumes (``iodata.stage_volumes``): its MiB,
    transfer sizes and the MiB read from each source (a stage-in copies a source's)."""
    out: dict[str, Any] = {k: float(str(v[k])) for k in VOLUME_KEYS + TRANSFER_KEYS if k in v}
    sources = v.get(SOURCES_KEY)
    if isinstance(sources, Mapping):
        out[SOURCES_KEY] = {str(src): float(str(mib)) for src, mib in sources.items()}
    return out
