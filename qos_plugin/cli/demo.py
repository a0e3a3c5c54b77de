"""``qos-plan demo``: the whole pipeline on a bundled workflow of our own.

An imaging workflow (ingest -> calibrate and mask -> stack -> detect, catalog) on
three tiers: a shared ``lustre``, node-local ``nvme`` and ``ramdisk``. Its costs
come from the synthetic bandwidth model; the pipeline is the one a user runs on
measured inputs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from qos_plugin.model.configtable import from_makespan, write_makespan_csv
from qos_plugin.model.costs import save_costs
from qos_plugin.model.makespan import MakespanModel
from qos_plugin.model.ranking import rank_policies
from qos_plugin.model.regions import CartSettings
from qos_plugin.model.synthetic import StageIO, SyntheticWorkflow, TierModel
from qos_plugin.model.template import template_from_dict, template_to_dict
from qos_plugin.model.tiers import format_tiers, parse_tiers

NODES = [2, 4, 8]


def example_workflow() -> SyntheticWorkflow:
    template = template_from_dict({
        "ingest": {"stage_order": 1, "num_tasks": 32,
                   "predecessors": {"initial_data": {"inputs": [r"raw_\d+\.fits"]}},
                   "outputs": [r"frame_\d+\.fits"]},
        "calibrate": {"stage_order": 2, "num_tasks": 32,
                      "predecessors": {"ingest": {"inputs": [r"frame_\d+\.fits"]}},
                      "outputs": [r"cal_\d+\.fits"]},
        "mask": {"stage_order": 2, "num_tasks": 8,
                 "predecessors": {"ingest": {"inputs": [r"frame_\d+\.fits"]},
                                  "initial_data": {"inputs": [r"badpix\.fits"]}},
                 "outputs": [r"mask_\d+\.fits"]},
        "stack": {"stage_order": 3, "num_tasks": 4,
                  "predecessors": {"calibrate": {"inputs": [r"cal_\d+\.fits"]},
                                   "mask": {"inputs": [r"mask_\d+\.fits"]}},
                  "outputs": [r"stack_\d+\.fits"]},
        "detect": {"stage_order": 4, "num_tasks": 4,
                   "predecessors": {"stack": {"inputs": [r"stack_\d+\.fits"]}},
                   "outputs": [r"sources_\d+\.csv"]},
        "catalog": {"stage_order": 4, "num_tasks": 1,
                    "predecessors": {"stack": {"inputs": [r"stack_\d+\.fits"]}},
                    "outputs": [r"catalog\.parquet"]},
    }, name="imaging")
    io = {
        "ingest": StageIO({"initial_data": 900.0}, 600.0),
        "calibrate": StageIO({"ingest": 600.0}, 600.0),
        "mask": StageIO({"ingest": 300.0, "initial_data": 20.0}, 40.0),
        "stack": StageIO({"calibrate": 2400.0, "mask": 80.0}, 1500.0),
        "detect": StageIO({"stack": 1500.0}, 30.0),
        "catalog": StageIO({"stack": 3000.0}, 200.0),
    }
    tiers = parse_tiers("lustre:shared,ramdisk:node-local,nvme:node-local")
    models = {"lustre": TierModel(900.0, 600.0, 0.7), "ramdisk": TierModel(6000.0, 4000.0, 0.3),
              "nvme": TierModel(2500.0, 1500.0, 0.4)}
    return SyntheticWorkflow(template, io, tiers, models, move_mibps=700.0)


def run_demo(out_dir: Path) -> int:
    from qos_plugin.cli.qos_plan import run_regions

    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    wf = example_workflow()
    (out_dir / "template.json").write_text(json.dumps(template_to_dict(wf.template), indent=1))
    costs = wf.cost_table(NODES)
    save_costs(costs, out_dir / "costs.csv")
    model = MakespanModel(wf.template, costs, wf.tiers)
    table = model.evaluate(NODES)
    write_makespan_csv(table, out_dir / "makespan.csv")
    print(f"workflow {wf.template.name}: {len(wf.template.stages)} stages, tiers "
          f"{format_tiers(wf.tiers)}")
    print(f"makespan of {len(table)} placements (N in {NODES}) -> {out_dir / 'makespan.csv'}")
    configs = from_makespan(table)
    settings = CartSettings()
    fit, regions, labels, paths = run_regions(configs, str(out_dir / "regions"), settings)
    print(f"{len(regions)} regions -> {paths['json']}, {paths['png']}")
    for r in regions[:5]:
        print(f"  region {r.id}: {r.stats.size} placements, median {r.stats.median:.1f} s; "
              f"critical: {', '.join(r.critical) or '-'}; flexible: "
              f"{', '.join(r.flexible) or '-'}")
    best = int(table.total.argmin())
    placement = {s: wf.tiers.names[table.config[best, i]]
                 for i, s in enumerate(wf.template.stage_names)}
    print(f"fastest: {table.total[best]:.1f} s at N={table.nodes[best]} with {placement}")
    print(f"  critical path: {table.critical_paths()[best]}")
    pc = rank_policies(configs, labels, wf.tiers.local_names, nodes=NODES[-1])
    print(f"pairwise concordance at N={NODES[-1]}: " +
          ", ".join(f"{k} {v:.3f}" for k, v in pc.items()))
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0
