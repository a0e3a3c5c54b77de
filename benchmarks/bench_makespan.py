"""Makespan evaluation speed: the artifact's 261 rows and a 12-stage synthetic space.

Prints a table and writes benchmarks/out/makespan.json. Run:
    .venv/bin/python benchmarks/bench_makespan.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from qos_plugin.model.costs import load_costs
from qos_plugin.model.makespan import MakespanModel, infer_tiers
from qos_plugin.model.synthetic import TierModel, chain_workflow
from qos_plugin.model.template import load_template
from qos_plugin.model.tiers import parse_tiers

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = ROOT.parent / "shared" / "qosflow-artifact" / "1kgenome"


def timed(fn, repeat: int):  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> int:
    results = []
    if ARTIFACT.is_dir():
        template = load_template(ARTIFACT / "1kg_script_order.json")
        costs = load_costs(ARTIFACT / "1kg_filtered_spm_results.csv")
        tiers = infer_tiers(template, costs, [2, 5, 10])
        model = MakespanModel(template, costs, tiers)
        sec, table = timed(lambda: model.evaluate([2, 5, 10]), 20)
        sec_cp, _ = timed(lambda: (model.evaluate([2, 5, 10]).critical_paths()), 20)
        results.append(("1kgenome (artifact costs)", len(table), sec, sec_cp))
    else:
        print(f"artifact not found at {ARTIFACT}; skipping the 1kgenome row", file=sys.stderr)
    tiers = parse_tiers("pfs:shared,archive:shared,nvme:node-local")
    wf = chain_workflow(12, tiers, {"pfs": TierModel(900, 600, 0.6),
                                    "archive": TierModel(300, 200, 0.5),
                                    "nvme": TierModel(2500, 1500, 0.4)})
    costs = wf.cost_table([2, 4, 8])
    model = MakespanModel(wf.template, costs, tiers)
    sec, table = timed(lambda: model.evaluate([2, 4, 8]), 3)
    sec_cp, _ = timed(lambda: model.evaluate([2, 4, 8]).critical_paths(), 1)
    results.append(("synthetic 12 stages x 3 tiers x 3 N", len(table), sec, sec_cp))

    print(f"{'case':40s} {'rows':>10s} {'evaluate (s)':>13s} {'+paths (s)':>11s} "
          f"{'configs/s':>12s}")
    for name, rows, s, s_cp in results:
        print(f"{name:40s} {rows:10d} {s:13.4f} {s_cp:11.4f} {rows / s:12,.0f}")
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "makespan.json").write_text(json.dumps(
        [dict(case=n, rows=r, evaluate_s=s, with_paths_s=c, configs_per_s=r / s)
         for n, r, s, c in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
