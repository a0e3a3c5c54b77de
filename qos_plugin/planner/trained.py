"""A trained model: everything a query needs, as one versioned JSON document.

Format ``qos-model/1``::

    {"format": "qos-model/1", "name": ..., "version": 3, "created": ISO-8601,
     "provenance": {...inputs with sha256, settings, qos-plan version...},
     "workflow": {...template...},
     "tiers": [{"name": "beegfs", "kind": "shared"}, ...],   # node-local fastest first
     "stages": [...],                                          # column order of placements
     "volumes": {stage: {"read_mib", "write_mib", "in_files_mib", "out_files_mib"}} | null,
     "rows": {"nodes": [...], "total": [...], "placement": [[tier index per stage]],
              "region": [...], "path": [index into "paths"],
              "phases": [[in_o1, exec_o1, out_o1, in_o2, ...]]},
     "paths": [...critical path strings...],
     "regions": [{"id", "rule", "critical", "flexible", "median", "min", "max", "size"}]}

Loading and querying use only the standard library: ``qos-plan query`` runs at
every sbatch, and importing numpy alone takes longer than its whole budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qos_plugin.errors import InputError

MODEL_FORMAT = "qos-model/1"
RETRAIN = "retrain it with 'qos-plan train'"


@dataclass(frozen=True)
class RegionInfo:
    id: int
    rule: dict[str, str]
    critical: list[str]
    flexible: list[str]
    median: float
    min: float
    max: float
    size: int


@dataclass
class TrainedModel:
    name: str
    version: int
    created: str
    provenance: dict[str, Any]
    workflow: dict[str, Any]
    tier_names: list[str]
    tier_kinds: list[str]              # "shared" or "node-local"
    stages: list[str]
    levels: list[float]                # one per phase triple in ``phases``
    stage_levels: dict[str, float]
    volumes: dict[str, dict[str, float]] | None
    nodes: list[int]                   # (R,)
    total: list[float]                 # (R,)
    placement: list[list[int]]         # (R, S) tier index per stage
    region: list[int]                  # (R,) region id
    path: list[int]                    # (R,) index into paths
    phases: list[list[float]]          # (R, 3L): in, exec, out per level
    paths: list[str]
    regions: dict[int, RegionInfo]

    @property
    def local_tiers(self) -> list[str]:
        return [n for n, k in zip(self.tier_names, self.tier_kinds, strict=True)
                if k == "node-local"]

    @property
    def node_counts(self) -> list[int]:
        return sorted({int(n) for n in self.nodes})

    def __len__(self) -> int:
        return len(self.total)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT, "name": self.name, "version": self.version,
            "created": self.created, "provenance": self.provenance, "workflow": self.workflow,
            "tiers": [{"name": n, "kind": k} for n, k in
                      zip(self.tier_names, self.tier_kinds, strict=True)],
            "stages": self.stages, "levels": self.levels, "stage_levels": self.stage_levels,
            "volumes": self.volumes,
            "rows": {"nodes": self.nodes, "total": self.total, "placement": self.placement,
                     "region": self.region, "path": self.path, "phases": self.phases},
            "paths": self.paths,
            "regions": [vars(r) for r in self.regions.values()],
        }


def model_from_json(doc: Any, source: str) -> TrainedModel:
    """A TrainedModel from a parsed document; InputError when it is not one."""
    if not isinstance(doc, dict) or "format" not in doc:
        raise InputError(source, "is not a qos-plan model (no 'format')", RETRAIN)
    if doc["format"] != MODEL_FORMAT:
        raise InputError(source, f"model format {doc['format']!r}, this qos-plan reads "
                         f"{MODEL_FORMAT!r}", RETRAIN + " or use a matching qos-plan")
    try:
        rows = doc["rows"]
        m = TrainedModel(
            name=str(doc["name"]), version=int(doc["version"]), created=str(doc["created"]),
            provenance=dict(doc["provenance"]), workflow=dict(doc["workflow"]),
            tier_names=[str(t["name"]) for t in doc["tiers"]],
            tier_kinds=[str(t["kind"]) for t in doc["tiers"]],
            stages=[str(s) for s in doc["stages"]],
            levels=[float(v) for v in doc["levels"]],
            stage_levels={str(k): float(v) for k, v in doc["stage_levels"].items()},
            volumes=doc["volumes"],
            nodes=[int(v) for v in rows["nodes"]],
            total=[float(v) for v in rows["total"]],
            placement=[[int(v) for v in p] for p in rows["placement"]],
            region=[int(v) for v in rows["region"]],
            path=[int(v) for v in rows["path"]],
            phases=[[float(v) for v in p] for p in rows["phases"]],
            paths=[str(p) for p in doc["paths"]],
            regions={int(r["id"]): RegionInfo(
                int(r["id"]), dict(r["rule"]), list(r["critical"]), list(r["flexible"]),
                float(r["median"]), float(r["min"]), float(r["max"]), int(r["size"]))
                for r in doc["regions"]})
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(source, f"model is incomplete or damaged ({type(e).__name__}: {e})",
                         RETRAIN) from None
    _check(m, source)
    return m


def _check(m: TrainedModel, source: str) -> None:
    R, S, T, L = len(m.total), len(m.stages), len(m.tier_names), len(m.levels)
    problems = []
    if R == 0:
        problems.append("no rows")
    for name, col in (("nodes", m.nodes), ("region", m.region), ("path", m.path),
                      ("placement", m.placement), ("phases", m.phases)):
        if len(col) != R:
            problems.append(f"rows.{name} has {len(col)} values, not {R}")
    if any(len(p) != S or min(p, default=0) < 0 or max(p, default=0) >= T
           for p in m.placement):
        problems.append(f"rows.placement is not {S} tier indices below {T} per row")
    if any(len(p) != 3 * L for p in m.phases):
        problems.append(f"rows.phases is not {3 * L} values per row")
    if any(not 0 <= p < len(m.paths) for p in m.path):
        problems.append("rows.path points past the path list")
    if not set(m.region) <= set(m.regions):
        problems.append("rows.region names a region that does not exist")
    if set(m.tier_kinds) - {"shared", "node-local"}:
        problems.append(f"tier kinds {sorted(set(m.tier_kinds))}")
    if problems:
        raise InputError(source, "model is inconsistent: " + "; ".join(problems), RETRAIN)


def read_model(path: str | Path) -> TrainedModel:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InputError(str(p), f"cannot read model ({e.strerror})", RETRAIN) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(str(p), f"model file is corrupt (JSON error at line {e.lineno}, "
                         f"column {e.colno})", RETRAIN) from None
    return model_from_json(doc, str(p))
