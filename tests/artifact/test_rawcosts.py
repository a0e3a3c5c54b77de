"""Costs built from the artifact's raw inputs (template, I/O table, IOR profile)
against the published SPM table and makespans."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from qos_plugin.model.costbuild import build_cost_table
from qos_plugin.model.costs import load_costs
from qos_plugin.model.iodata import load_io_data
from qos_plugin.model.makespan import MakespanModel
from qos_plugin.model.profile import load_profile
from qos_plugin.model.ranking import concordance
from qos_plugin.model.template import load_template

pytestmark = pytest.mark.artifact


@pytest.fixture(scope="module")
def built(artifact):
    template = load_template(artifact / "1kgenome/1kg_script_order.json")
    profile = load_profile(artifact / "storage-profile/updated_master_ior_df.csv")
    tiers = profile.infer_tiers()
    io = load_io_data(artifact / "1kgenome/1kg_workflow_data.csv")
    return template, tiers, build_cost_table(template, io, profile, tiers, [2, 5, 10])


def test_every_built_row_is_a_published_row(built, artifact):
    _, _, ours = built
    shipped = load_costs(artifact / "1kgenome/1kg_filtered_spm_results.csv")
    ref = {shipped.row_key(i): (shipped.est_prod[i], shipped.est_cons[i])
           for i in range(len(shipped))}
    kinds = set()
    for i in range(len(ours)):
        k = ours.row_key(i)
        assert k in ref, f"row {k} is not in the published table"
        assert ours.est_prod[i] == pytest.approx(ref[k][0], rel=1e-9, abs=1e-12), k
        assert ours.est_cons[i] == pytest.approx(ref[k][1], rel=1e-9, abs=1e-12), k
        kinds.add(("move" if "-" in k[2] + k[4] else "plain",
                   "in" if k[0].startswith("stage_in-") else
                   "out" if k[1].startswith("stage_out-") else "edge"))
    # Edges, stage-in reads, stage-in copies and stage-out flushes are all covered.
    assert kinds >= {("plain", "edge"), ("plain", "in"), ("move", "in"), ("move", "out")}


def test_makespans_from_raw_inputs_rank_like_the_published(built, artifact):
    template, tiers, costs = built
    table = MakespanModel(template, costs, tiers).evaluate([2, 5, 10])
    with open(artifact / "1kgenome/workflow_makespan_stageorder.csv", newline="") as fh:
        ref = list(csv.DictReader(fh))
    names = template.stage_names
    ours = table.totals_by_placement()
    y_ref = np.array([float(r["total"]) for r in ref])
    y = np.array([ours[(int(r["nodes"]),) + tuple(r[f"{s}_stor"] for s in names)]
                  for r in ref])
    assert len(ours) == len(ref) == 261
    assert concordance(np.argsort(y, kind="stable"), y_ref) >= 0.95
    assert float(np.median(np.abs(y - y_ref) / y_ref)) <= 0.10
