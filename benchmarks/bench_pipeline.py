"""The whole pipeline as a user runs it, each step timed.

By default the 1kgenome pipeline from raw inputs: qos-plan costs, makespan,
regions and rank (target: < 30 s in all on 2 cores). With ``--workflow NAME`` a
workflow of benchmarks/regions/workflows.py from its template and cost table:
qos-plan makespan, regions, rank, train and a cold query, and the training time
before issue 20 (benchmarks/regions/before.json) beside it.

Prints a table and writes benchmarks/out/pipeline[-NAME].json. Run:
    PYTHONPATH=. .venv/bin/python benchmarks/bench_pipeline.py [--workflow chain8x4]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qos_plugin.cli.qos_plan import main as qos_plan

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = ROOT.parent / "shared" / "qosflow-artifact"


def run_steps(steps: list[tuple[str, list[str]]]) -> tuple[list[tuple[str, float]], str] | None:
    results = []
    out = io.StringIO()
    for name, argv in steps:
        out = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            rc = qos_plan(argv)
        sec = time.perf_counter() - t0
        if rc not in (0, 3):
            print(f"step {name} failed ({rc}): {out.getvalue()}", file=sys.stderr)
            return None
        results.append((name, sec))
    return results, out.getvalue()


def genome() -> int:
    kg = ARTIFACT / "1kgenome"
    if not kg.is_dir():
        print(f"artifact not found at {ARTIFACT}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        steps = [
            ("costs", ["costs", "--template", str(kg / "1kg_script_order.json"),
                       "--io-data", str(kg / "1kg_workflow_data.csv"),
                       "--profile", str(ARTIFACT / "storage-profile/updated_master_ior_df.csv"),
                       "--nodes", "2,5,10", "--out", str(d / "costs.csv")]),
            ("makespan", ["makespan", "--template", str(kg / "1kg_script_order.json"),
                          "--costs", str(d / "costs.csv"), "--nodes", "2,5,10",
                          "--out", str(d / "makespan.csv")]),
            ("regions", ["regions", "--makespan", str(d / "makespan.csv"),
                         "--out-dir", str(d / "regions")]),
            ("rank", ["rank", "--makespan", str(d / "makespan.csv"),
                      "--regions", str(d / "regions" / "config_regions.csv"),
                      "--nodes", "10", "--json"]),
        ]
        done = run_steps(steps)
        if done is None:
            return 1
        results, last = done
        ranks = json.loads(last)
        rows = sum(1 for _ in open(d / "makespan.csv")) - 1
    total = report(results, rows)
    print("concordance at N=10: " + ", ".join(f"{k} {v:.4f}" for k, v in ranks.items()))
    write("pipeline.json", dict(steps=dict(results), total_s=total, rows=rows,
                                concordance_n10=ranks))
    return 0


def synthetic(name: str) -> int:
    sys.path.insert(0, str(ROOT / "benchmarks" / "regions"))
    from workflows import BY_NAME

    from qos_plugin.model.costs import save_costs
    from qos_plugin.model.template import template_to_dict
    from qos_plugin.model.tiers import format_tiers

    case = BY_NAME[name]
    wf = case.build()
    nodes = ",".join(map(str, case.nodes))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "t.json").write_text(json.dumps(template_to_dict(wf.template)))
        save_costs(wf.cost_table(list(case.nodes)), d / "costs.csv")
        common = ["--template", str(d / "t.json"), "--costs", str(d / "costs.csv"),
                  "--nodes", nodes, "--tiers", format_tiers(case.tiers)]
        steps = [
            ("makespan", ["makespan", *common, "--out", str(d / "makespan.csv")]),
            ("regions", ["regions", "--makespan", str(d / "makespan.csv"),
                         "--out-dir", str(d / "regions")]),
            ("rank", ["rank", "--makespan", str(d / "makespan.csv"),
                      "--regions", str(d / "regions" / "config_regions.csv"),
                      "--nodes", str(case.nodes[-1]), "--json",
                      "--tiers", format_tiers(case.tiers)]),
            ("train", ["train", name, *common, "--registry", str(d / "reg")]),
            ("query", ["query", name, "--registry", str(d / "reg"), "--json",
                       "--objective", "frugal", "--max-nodes", str(case.nodes[1])]),
        ]
        done = run_steps(steps)
        if done is None:
            return 1
        results, _ = done
        rows = sum(1 for _ in open(d / "makespan.csv")) - 1
        regions = json.loads((d / "regions" / "regions.json").read_text())["regions"]
    total = report(results, rows)
    before: dict[str, Any] = json.loads(
        (ROOT / "benchmarks" / "regions" / "before.json").read_text()).get(name, {})
    train = dict(results)["train"]
    if before:
        how = "estimated from a partial run" if before.get("estimated") else "measured"
        print(f"train {train:.1f} s with {len(regions)} regions; before issue 20 (commit "
              f"{before['commit']}): regions alone {before['train_s']:,.0f} s ({how})"
              + (f", {before['regions']} regions" if "regions" in before else ""))
    write(f"pipeline-{name}.json", dict(steps=dict(results), total_s=total, rows=rows,
                                        regions=len(regions), before=before))
    return 0


def report(results: list[tuple[str, float]], rows: int) -> float:
    total = sum(s for _, s in results)
    print(f"{'step':10s} {'seconds':>8s}")
    for name, sec in results:
        print(f"{name:10s} {sec:8.2f}")
    print(f"{'total':10s} {total:8.2f}   ({rows} placements, {rows / total:,.0f} per second "
          f"end to end)")
    return total


def write(file: str, doc: dict[str, Any]) -> None:
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / file).write_text(json.dumps(doc, indent=1))


def main() -> int:
    p = argparse.ArgumentParser(description="time the qos-plan pipeline")
    p.add_argument("--workflow", help="a workflow of benchmarks/regions/workflows.py "
                                      "(default: 1kgenome from the artifact's raw inputs)")
    a = p.parse_args()
    return synthetic(a.workflow) if a.workflow else genome()


if __name__ == "__main__":
    sys.exit(main())
