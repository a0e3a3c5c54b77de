"""Query latency: warm (in process) and cold (a fresh `qos-plan query` process, as
the SPANK plugin runs it at every sbatch). Targets: < 5 ms warm, < 300 ms cold.

Trains the 1kgenome model from the artifact's shipped costs into a temporary
registry, then times the four talk queries. Prints a table and writes
benchmarks/out/query.json. Run:
    PYTHONPATH=. .venv/bin/python benchmarks/bench_query.py
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qos_plugin.cli.qos_plan import main as qos_plan
from qos_plugin.planner.query import Constraints, answer
from qos_plugin.planner.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
KG = ROOT.parent / "shared" / "qosflow-artifact" / "1kgenome"

QUERIES = [
    ("best with <= 5 nodes", ["--max-nodes", "5"], Constraints(max_nodes=5)),
    ("only beegfs,ssd", ["--tiers", "beegfs,ssd"], Constraints(tiers=frozenset({"beegfs", "ssd"}))),
    ("deadline 2:00 without ssd", ["--deadline", "2:00", "--exclude-tier", "ssd"],
     Constraints(deadline=120.0, exclude=frozenset({"ssd"}))),
    ("tmpfs down", ["--down-tier", "tmpfs"], Constraints(down=frozenset({"tmpfs"}))),
]


def main() -> int:
    tmp = Path(tempfile.mkdtemp())
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = qos_plan(["train", "1kgenome", "--template", str(KG / "1kg_script_order.json"),
                           "--costs", str(KG / "1kg_filtered_spm_results.csv"),
                           "--io-data", str(KG / "1kg_workflow_data.csv"),
                           "--nodes", "2,5,10", "--registry", str(tmp)])
        if rc != 0:
            print("training failed", file=sys.stderr)
            return 1
        model = Registry(tmp).load("1kgenome")
        exe = shutil.which("qos-plan") or str(Path(sys.executable).parent / "qos-plan")
        results = []
        for name, argv, c in QUERIES:
            warm = []
            for _ in range(200):
                t0 = time.perf_counter()
                answer(model, c)
                warm.append(time.perf_counter() - t0)
            cold = []
            for _ in range(10):
                t0 = time.perf_counter()
                subprocess.run([exe, "query", "1kgenome", "--registry", str(tmp), "--json",
                                *argv], capture_output=True, check=False)
                cold.append(time.perf_counter() - t0)
            results.append((name, statistics.median(warm) * 1e3, max(warm) * 1e3,
                            statistics.median(cold) * 1e3, max(cold) * 1e3))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'query (1kgenome, 261 placements)':32s} {'warm ms':>8s} {'max':>7s} "
          f"{'cold ms':>8s} {'max':>7s}")
    for name, w, wmax, c, cmax in results:
        print(f"{name:32s} {w:8.3f} {wmax:7.3f} {c:8.1f} {cmax:7.1f}")
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "query.json").write_text(json.dumps(
        [dict(query=n, warm_ms=w, warm_max_ms=wm, cold_ms=c, cold_max_ms=cm)
         for n, w, wm, c, cm in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
