"""The published QoSFlow 1kgenome results, reproduced from the artifact's inputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from qos_plugin.model.configtable import from_makespan, load_config_table
from qos_plugin.model.costs import load_costs
from qos_plugin.model.makespan import MakespanModel, infer_tiers
from qos_plugin.model.ranking import rank_policies
from qos_plugin.model.regions import PUBLISHED, CartSettings, fit_regions
from qos_plugin.model.rules import build_regions, relabel
from qos_plugin.model.template import load_template

pytestmark = pytest.mark.artifact


@pytest.fixture(scope="module")
def inputs(artifact):
    d = artifact / "1kgenome"
    template = load_template(d / "1kg_script_order.json")
    costs = load_costs(d / "1kg_filtered_spm_results.csv")
    return template, costs


@pytest.fixture(scope="module")
def shipped(artifact):
    with open(artifact / "1kgenome/workflow_makespan_stageorder.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def ours(inputs):
    template, costs = inputs
    tiers = infer_tiers(template, costs, [2, 5, 10])
    return MakespanModel(template, costs, tiers).evaluate([2, 5, 10])


def test_tiers_read_from_the_cost_table(inputs):
    template, costs = inputs
    tiers = infer_tiers(template, costs, [2, 5, 10])
    assert tiers.names == ["beegfs", "tmpfs", "ssd"]
    assert tiers.home.name == "beegfs" and tiers.local_names == ["tmpfs", "ssd"]


def test_same_rows_totals_and_critical_paths(ours, shipped, inputs):
    template, _ = inputs
    ordered = [s.name for s in template.ordered()]
    assert len(ours) == len(shipped) == 261
    paths = ours.critical_paths()
    pos = {n: i for i, n in enumerate(template.stage_names)}
    worst = 0.0
    for i, ref in enumerate(shipped):   # same order, row by row
        assert int(ref["nodes"]) == ours.nodes[i]
        assert [ref[f"{s}_stor"] for s in ordered] == \
            [ours.tiers.names[ours.config[i, pos[s]]] for s in ordered]
        worst = max(worst, abs(float(ref["total"]) - ours.total[i]))
        assert paths[i] == ref["critical_path"], f"row {i}"
    assert worst <= 1e-6


def test_level_and_stage_columns(ours, shipped, inputs):
    template, _ = inputs
    table = from_makespan(ours)
    names = table.staging_names
    for i, ref in enumerate(shipped):
        for j, col in enumerate(names):
            cell = ref[col]
            got = table.staging[i, j]
            if cell == "-":
                assert np.isnan(got), (i, col)
            else:
                assert got == pytest.approx(float(cell), abs=1e-6), (i, col)


def _shipped_labels(artifact, table):
    with open(artifact / "1kgenome/sens_out/regret_per_config.csv", newline="") as fh:
        ref = {(int(r["nodes"]),) + tuple(r[f"{s}_stor"] for s in table.stages): int(r["region"])
               for r in csv.DictReader(fh)}
    return np.array([ref[(int(table.nodes[i]),) + tuple(map(str, table.placement[i]))]
                     for i in range(len(table))])


@pytest.fixture(scope="module")
def regions(artifact):
    """The published selection (``--select constrained``)."""
    table = load_config_table(artifact / "1kgenome/workflow_makespan_stageorder.csv")
    fit = fit_regions(table, CartSettings(select=PUBLISHED))
    regs = build_regions(table, fit.labels, fit.leaf_bounds)
    return table, regs, relabel(fit.labels, regs)


def test_regions_match_the_published_partition(regions, artifact):
    table, regs, labels = regions
    assert len(regs) == 18
    ari = adjusted_rand_score(_shipped_labels(artifact, table), labels)
    assert ari >= 0.9
    medians = [r.stats.median for r in regs]
    assert medians == sorted(medians)


def test_fastest_region_rule(regions):
    _, regs, _ = regions
    best = regs[0]
    assert best.rule["individuals"] == "beegfs" and "individuals" in best.critical
    assert best.rule["frequency"] == "*" and "frequency" in best.flexible


def test_published_concordance_at_ten_nodes(regions, artifact):
    table, _, labels = regions
    pc = rank_policies(table, labels, ["tmpfs", "ssd"], nodes=10)
    with open(artifact / "1kgenome/sens_out/1kgenome_policy_pc_scale10.csv", newline="") as fh:
        published = {r["policy"]: float(r["PC"]) for r in csv.DictReader(fh) if r["PC"]}
    for policy in ("FSF", "LTL", "Hybrid"):
        assert pc[policy] == pytest.approx(published[policy], abs=0.002)
    assert pc["QoSFlow"] >= 0.95
