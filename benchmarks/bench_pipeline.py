"""The whole 1kgenome pipeline from raw inputs, as a user runs it: qos-plan costs,
makespan, regions and rank, each step timed. Target: < 30 s in all on 2 cores.

Prints a table and writes benchmarks/out/pipeline.json. Run:
    PYTHONPATH=. .venv/bin/python benchmarks/bench_pipeline.py
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from qos_plugin.cli.qos_plan import main as qos_plan

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = ROOT.parent / "shared" / "qosflow-artifact"


def main() -> int:
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
        results = []
        for name, argv in steps:
            out = io.StringIO()
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                rc = qos_plan(argv)
            sec = time.perf_counter() - t0
            if rc != 0:
                print(f"step {name} failed ({rc}): {out.getvalue()}", file=sys.stderr)
                return 1
            results.append((name, sec))
        ranks = json.loads(out.getvalue())
        rows = sum(1 for _ in open(d / "makespan.csv")) - 1
    total = sum(s for _, s in results)
    print(f"{'step':10s} {'seconds':>8s}")
    for name, sec in results:
        print(f"{name:10s} {sec:8.2f}")
    print(f"{'total':10s} {total:8.2f}   ({rows} placements, {rows / total:,.0f} per second "
          f"end to end)")
    print("concordance at N=10: " + ", ".join(f"{k} {v:.4f}" for k, v in ranks.items()))
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pipeline.json").write_text(json.dumps(
        dict(steps=dict(results), total_s=total, rows=rows, concordance_n10=ranks), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
