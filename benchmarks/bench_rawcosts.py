"""Costs from raw inputs against the shipped 1kgenome totals: concordance and error.

Run: PYTHONPATH=. python benchmarks/bench_rawcosts.py
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np

from qos_plugin.model.costbuild import build_cost_table
from qos_plugin.model.costs import load_costs
from qos_plugin.model.iodata import load_io_data
from qos_plugin.model.makespan import MakespanModel
from qos_plugin.model.profile import load_profile
from qos_plugin.model.ranking import concordance
from qos_plugin.model.template import load_template

A = Path(__file__).resolve().parents[2] / "shared" / "qosflow-artifact"


def main() -> int:
    t0 = time.perf_counter()
    tmpl = load_template(A / "1kgenome/1kg_script_order.json")
    prof = load_profile(A / "storage-profile/updated_master_ior_df.csv")
    tiers = prof.infer_tiers()
    costs = build_cost_table(tmpl, load_io_data(A / "1kgenome/1kg_workflow_data.csv"), prof,
                             tiers, [2, 5, 10])
    table = MakespanModel(tmpl, costs, tiers).evaluate([2, 5, 10])
    elapsed = time.perf_counter() - t0
    with open(A / "1kgenome/workflow_makespan_stageorder.csv", newline="") as fh:
        ref = list(csv.DictReader(fh))
    names = tmpl.stage_names
    ours = table.totals_by_placement()
    y_ref = np.array([float(r["total"]) for r in ref])
    y = np.array([ours[(int(r["nodes"]),) + tuple(r[f"{s}_stor"] for s in names)] for r in ref])
    pc = concordance(np.argsort(y, kind="stable"), y_ref)
    rel = np.abs(y - y_ref) / y_ref
    shipped = load_costs(A / "1kgenome/1kg_filtered_spm_results.csv")
    published = {shipped.row_key(i): (shipped.est_prod[i], shipped.est_cons[i])
                 for i in range(len(shipped))}
    same = sum(1 for i in range(len(costs))
               if np.allclose((costs.est_prod[i], costs.est_cons[i]),
                              published.get(costs.row_key(i), (np.nan, np.nan)),
                              rtol=1e-9, atol=1e-12))
    print(f"{'cost rows':>9s} {'= published':>11s} {'makespans':>9s} {'concordance':>11s} "
          f"{'median rel err':>14s} {'max rel err':>11s} {'seconds':>7s}")
    print(f"{len(costs):9d} {same:11d} {len(ref):9d} {pc:11.4f} {np.median(rel):14.2e} "
          f"{rel.max():11.2e} {elapsed:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
