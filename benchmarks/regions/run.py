"""Regions on workflows of our own: how many, how separated, how accurate, how fast.

For each workflow of ``workflows.py``: every placement is evaluated, a model is
trained as ``qos-plan train`` does (default selection, ``separated``) and saved
to a temporary registry, and cold queries are timed as the SPANK plugin runs
them (a fresh ``qos-plan query`` process). The published selection (``--select
constrained``) is run too, for comparison, on the workflows below
``--published-up-to`` placements; on larger ones one cross-validation fold is
timed and the whole run estimated from it (said so in the table).

Separation of neighbouring regions (by median): ``gap`` = relative gap between
medians, ``g/thr`` = Hedges' g over the pair's significance threshold; a pair is
separated when gap >= 0.10 and g/thr >= 1. Computed here from the rows, not by the
code that chose the regions. MAE: mean |makespan - its region's median|.

Today's times (``before.json``) were measured with the code of commit 1ea6a74 by
``before.py``. Prints the table and writes results.json and results.md next to
this file. Run:
    PYTHONPATH=. .venv/bin/python benchmarks/regions/run.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qos_plugin.model.configtable import from_makespan
from qos_plugin.model.costs import load_costs
from qos_plugin.model.makespan import MakespanModel, MakespanTable, infer_tiers
from qos_plugin.model.regions import PUBLISHED, CartSettings, design_matrix, fold_jobs
from qos_plugin.model.rules import Region
from qos_plugin.model.separation import Threshold, hedges_g
from qos_plugin.model.template import load_template
from qos_plugin.planner.query import Constraints, answer
from qos_plugin.planner.registry import Registry
from qos_plugin.planner.training import build_model, fit_table_regions

HERE = Path(__file__).resolve().parent
ARTIFACT = HERE.parents[1].parent / "shared" / "qosflow-artifact" / "1kgenome"
sys.path.insert(0, str(HERE))
from workflows import CASES, Case  # noqa: E402

QUERIES = [[], ["--objective", "frugal", "--max-nodes", "4"], ["--deadline", "0:01"]]


def separation_of(y: np.ndarray, regions: list[Region], gap: float = 0.10,
                  threshold: Threshold | None = None) -> dict[str, Any]:
    threshold = threshold or Threshold(0.30, gap)
    pairs = []
    for a, b in zip(regions, regions[1:], strict=False):
        ya, yb = y[a.rows], y[b.rows]
        ma, mb = float(np.median(ya)), float(np.median(yb))
        g = hedges_g(ya, yb)
        ratio = g / threshold.for_pair(ya, yb) if np.isfinite(g) else float("inf")
        pairs.append(((mb - ma) / ma, ratio))
    ok = sum(1 for d, r in pairs if d >= gap and r >= 1.0)
    return {"pairs": len(pairs), "separated": ok,
            "min_gap": min((d for d, _ in pairs), default=None),
            "min_g_over_threshold": min((r for _, r in pairs), default=None)}


def mae_of(y: np.ndarray, regions: list[Region]) -> float:
    pred = np.empty_like(y)
    for r in regions:
        pred[r.rows] = r.stats.median
    return float(np.mean(np.abs(pred - y)))


def workflows() -> list[tuple[str, str, Callable[[], MakespanTable]]]:
    """(name, shape, makespan table) of every workflow: ours, and 1kgenome from the
    artifact's published cost table when it is there."""
    out: list[tuple[str, str, Callable[[], MakespanTable]]] = []
    if ARTIFACT.is_dir():
        def genome() -> MakespanTable:
            template = load_template(ARTIFACT / "1kg_script_order.json")
            costs = load_costs(ARTIFACT / "1kg_filtered_spm_results.csv")
            tiers = infer_tiers(template, costs, [2, 5, 10])
            return MakespanModel(template, costs, tiers).evaluate([2, 5, 10])
        out.append(("1kgenome", "the published 1000 Genomes (artifact cost table), 3 tiers",
                    genome))
    for case in CASES:
        def make(case: Case = case) -> MakespanTable:
            wf = case.build()
            return MakespanModel(wf.template, wf.cost_table(list(case.nodes)),
                                 case.tiers).evaluate(list(case.nodes))
        out.append((case.name, case.shape, make))
    return out


def train(name: str, table: Any, select: str, registry: Path | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    configs, regions, labels = fit_table_regions(table, CartSettings(select=select))
    model = build_model(name, 1, table, configs, regions, labels, None, {}, "now")
    out: dict[str, Any] = {}
    if registry is not None:
        out["model_mb"] = Registry(registry).save(model).stat().st_size / 1e6
    out["train_s"] = time.perf_counter() - t0
    y = configs.total
    out.update(regions=len(regions), mae=mae_of(y, regions),
               mae_rel=mae_of(y, regions) / float(np.median(y)),
               smallest=min(r.stats.size for r in regions),
               max_conditions=max(len(r.bounds) for r in regions),
               max_fixed=max(len(r.critical) for r in regions),
               **separation_of(y, regions))
    if registry is not None:
        warm = []
        for _ in range(20):
            t = time.perf_counter()
            answer(model, Constraints(objective="frugal", max_nodes=4))
            warm.append(time.perf_counter() - t)
        out["warm_query_ms"] = statistics.median(warm) * 1e3
        out["cold_query_ms"] = cold_query(name, registry)
        if len(table) > 50_000:
            # The same model in the format before issue 20 (qos-model/1, still read).
            old = registry / "format1"
            (old / name).mkdir(parents=True)
            (old / name / "v1.json").write_text(json.dumps(format1(model)))
            out["format1_mb"] = (old / name / "v1.json").stat().st_size / 1e6
            out["format1_cold_query_ms"] = cold_query(name, old)
    return out


def alternatives(table: Any) -> dict[str, Any]:
    """Other ways to get separated regions, for the argument in docs/regions.md:
    the best all-separated tree on the weakest-link pruning path, and separated
    growth with other lookaheads. (regions, MAE / median) each."""
    from qos_plugin.model.growth import SeparatedGrowth
    from qos_plugin.model.pruning import PrunedPath
    from qos_plugin.model.regions import _tree

    s = CartSettings()
    configs = from_makespan(table)
    d = design_matrix(configs)
    y = configs.total.astype(float)
    med = float(np.median(y))
    tree = _tree(s, s.seed, 0.0, s.min_samples_leaf).fit(d.X, y)
    out: dict[str, Any] = {}
    grow = SeparatedGrowth(tree, d.X, y, s.threshold, s.gap, 1)
    best: tuple[float, int] | None = None
    path = PrunedPath(tree)
    for alpha in path.alphas:
        nodes = [int(n) for n in np.unique(path.leaves_at(alpha))]
        if len(nodes) > 60 or not grow.all_separated(nodes):
            continue
        err = float(grow.err[nodes].sum())
        if best is None or err < best[0]:
            best = (err, len(nodes))
    if best is not None:
        out["pruning_path"] = {"regions": best[1], "mae_rel": best[0] / y.size / med}
    for k in (1, 2, 3):
        g = SeparatedGrowth(tree, d.X, y, s.threshold, s.gap, k).grow()
        out[f"lookahead_{k}"] = {"regions": len(g.nodes),
                                 "mae_rel": g.steps[-1].mae / med if g.steps else None}
    return out


def format1(model: Any) -> dict[str, Any]:
    doc: dict[str, Any] = model.to_json()
    doc["format"] = "qos-model/1"
    R = range(len(model))
    doc["rows"] = {"nodes": list(model.nodes), "total": list(model.total),
                   "placement": [model.placement[r] for r in R], "region": list(model.region),
                   "path": list(model.path), "phases": [model.phases[r] for r in R]}
    del doc["phases"]
    return doc


def cold_query(name: str, registry: Path) -> float:
    exe = shutil.which("qos-plan") or str(Path(sys.executable).parent / "qos-plan")
    times = []
    for argv in QUERIES:
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([exe, "query", name, "--registry", str(registry), "--json", *argv],
                           capture_output=True, check=False)
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def published_estimate(table: Any) -> dict[str, Any]:
    """The published selection's time from one fold, for workflows too big to wait for."""
    from qos_plugin.model.crossval import evaluate_fold
    from qos_plugin.model.regions import _tree, alpha_grid

    s = CartSettings(select=PUBLISHED)
    d = design_matrix(table)
    y = table.total.astype(float)
    t0 = time.perf_counter()
    alphas = alpha_grid(d.X, y, s)
    grid_s = time.perf_counter() - t0
    job = fold_jobs(y.size, s)[0]
    t0 = time.perf_counter()
    evaluate_fold(d.X, y, job, alphas, lambda seed: _tree(s, seed, 0.0, s.cv_leaf),
                  s.threshold, s.pair_minimum, s.score, s.g_spread)
    fold_s = time.perf_counter() - t0
    # 25 folds on 2 threads (measured 1.9-2x), plus the grid tree and the refit.
    return {"train_s": grid_s * 2 + 25 * fold_s / 2, "estimated": True, "fold_s": fold_s,
            "alphas": int(alphas.size)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help="workflow names (default: all)")
    p.add_argument("--published-up-to", type=int, default=30_000,
                   help="run the published selection fully up to this many placements")
    p.add_argument("--alternatives", action="store_true",
                   help="also the other selections docs/regions.md compares")
    a = p.parse_args()
    before = json.loads((HERE / "before.json").read_text())
    results = []
    tmp = Path(tempfile.mkdtemp())
    try:
        for name, shape, make in workflows():
            if a.only and name not in a.only:
                continue
            t0 = time.perf_counter()
            table = make()
            row: dict[str, Any] = {"workflow": name, "shape": shape,
                                   "placements": len(table),
                                   "stages": len(table.template.stages),
                                   "levels": len(table.template.levels),
                                   "tiers": len(table.tiers.names),
                                   "nodes": sorted({int(n) for n in table.nodes}),
                                   "makespan_s": time.perf_counter() - t0}
            print(f"{name}: {len(table)} placements", file=sys.stderr, flush=True)
            row["separated"] = train(name, table, "separated", tmp)
            if len(table) <= a.published_up_to:
                row["published"] = train(name, table, PUBLISHED, None)
            else:
                row["published"] = published_estimate(from_makespan(table))
            row["before"] = before.get(name)
            if a.alternatives:
                row["alternatives"] = alternatives(table)
            results.append(row)
            print(format_row(row), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.only and (HERE / "results.json").exists():
        # A partial run replaces its workflows' rows and keeps the others.
        fresh = {r["workflow"]: r for r in results}
        kept = json.loads((HERE / "results.json").read_text())
        results = [fresh.pop(r["workflow"], r) for r in kept] + list(fresh.values())
    md = table_md(results)
    print(md)
    (HERE / "results.json").write_text(json.dumps(results, indent=1))
    (HERE / "results.md").write_text(md)
    return 0


def format_row(r: dict[str, Any]) -> str:
    s = r["separated"]
    return (f"  {s['regions']} regions, {s['separated']}/{s['pairs']} separated, "
            f"MAE {s['mae_rel']:.1%}, train {s['train_s']:.1f} s, model {s['model_mb']:.2f} MB, "
            f"cold query {s['cold_query_ms']:.0f} ms; published: "
            f"{r['published'].get('regions', '?')} regions in {r['published']['train_s']:.1f} s")


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def table_md(results: list[dict[str, Any]]) -> str:
    lines = [
        "Default selection (`separated`), as `qos-plan train` runs it:",
        "",
        "| workflow | shape | placements | regions | separated pairs | min gap | "
        "min g/thr | MAE | MAE/median | smallest | max splits | train s | model MB | "
        "cold query ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        s = r["separated"]
        lines.append(
            f"| {r['workflow']} | {r['shape']} | {r['placements']:,} | {s['regions']} | "
            f"{s['separated']}/{s['pairs']} | {_f(s['min_gap'], '.3f')} | "
            f"{_f(s['min_g_over_threshold'], '.2f')} | {s['mae']:.3f} | {s['mae_rel']:.1%} | "
            f"{s['smallest']:,} | {s['max_conditions']} | {s['train_s']:.1f} | "
            f"{s['model_mb']:.2f} | {s['cold_query_ms']:.0f} |")
    for r in results:
        s = r["separated"]
        if "format1_mb" in s:
            lines += ["", f"The {r['workflow']} model ({r['placements']:,} placements) in the "
                      f"format before issue 20 (`qos-model/1`, still read): "
                      f"{s['format1_mb']:.1f} MB, cold query {s['format1_cold_query_ms']:.0f} ms "
                      f"(`qos-model/2`: {s['model_mb']:.1f} MB, {s['cold_query_ms']:.0f} ms)."]
    lines += [
        "",
        "The published selection (`--select constrained`), and region training before this "
        "change (commit 1ea6a74, `before.json`; `~` = estimated from a partial run):",
        "",
        "| workflow | placements | regions | separated pairs | MAE/median | train s | "
        "before: regions | before: train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        p, b = r["published"], r["before"] or {}
        if p.get("estimated"):
            pub = f"| - | - | - | ~{p['train_s']:.0f} (one fold: {p['fold_s']:.1f} s) |"
        else:
            pub = (f"| {p['regions']} | {p['separated']}/{p['pairs']} | {p['mae_rel']:.1%} | "
                   f"{p['train_s']:.1f} |")
        est = "~" if b.get("estimated") else ""
        lines.append(f"| {r['workflow']} | {r['placements']:,} {pub} "
                     f"{b.get('regions', '-')} | {est}{_f(b.get('train_s'), '.0f')} |")
    alt = [r for r in results if "alternatives" in r]
    if alt:
        lines += ["", "Other ways to separated regions (regions, MAE/median): the best "
                  "all-separated tree on the weakest-link pruning path, and separated growth "
                  "with lookahead 1, 2 (the default) and 3:", "",
                  "| workflow | pruning path | lookahead 1 | lookahead 2 | lookahead 3 |",
                  "|---|---:|---:|---:|---:|"]
        for r in alt:
            cells = []
            for k in ("pruning_path", "lookahead_1", "lookahead_2", "lookahead_3"):
                v = r["alternatives"].get(k)
                cells.append("-" if not v else
                             f"{v['regions']}, {_f(v['mae_rel'], '.1%')}")
            lines.append(f"| {r['workflow']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
