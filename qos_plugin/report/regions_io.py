"""Region results on disk: regions.json, config_regions.csv, regions.png."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from qos_plugin.model.configtable import ConfigTable
from qos_plugin.model.csvio import write_csv
from qos_plugin.model.regions import CartSettings, RegionFit
from qos_plugin.model.rules import Region

REGIONS_FORMAT = "qos-regions/1"


def regions_document(table: ConfigTable, fit: RegionFit, regions: list[Region],
                     settings: CartSettings) -> dict[str, Any]:
    return {
        "format": REGIONS_FORMAT,
        "stages": list(table.stages),
        "nodes": sorted({int(n) for n in table.nodes}),
        "select": fit.select,
        "alpha": fit.alpha,
        "settings": asdict(settings),
        "growth": [asdict(s) for s in fit.growth],
        "cross_validation": [vars(s) for s in fit.cv.scores] if fit.cv is not None else [],
        "regions": [r.to_json(table) for r in regions],
    }


def write_region_outputs(out_dir: str | Path, table: ConfigTable, fit: RegionFit,
                         regions: list[Region], labels: np.ndarray,
                         settings: CartSettings) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = regions_document(table, fit, regions, settings)
    paths = {"json": out / "regions.json", "csv": out / "config_regions.csv",
             "png": out / "regions.png"}
    paths["json"].write_text(json.dumps(_clean(doc), indent=1, allow_nan=False))
    header = ["nodes", "total", "region"] + [f"{s}_stor" for s in table.stages]
    rows = ([int(table.nodes[i]), repr(float(table.total[i])), int(labels[i])]
            + [str(v) for v in table.placement[i]] for i in range(len(table)))
    write_csv(paths["csv"], header, rows)
    from qos_plugin.report.plot import plot_regions

    plot_regions(table, regions, paths["png"])
    return paths


def _clean(x: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN written as null."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and x != x:
        return None
    return x
