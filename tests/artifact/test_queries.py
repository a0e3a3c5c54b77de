"""The four queries of the QoSFlow talk on the 1kgenome model, against brute force
over the artifact's makespan table (read here with the csv module only)."""

from __future__ import annotations

import csv
import json

import pytest

from qos_plugin.cli.qos_plan import main

pytestmark = pytest.mark.artifact
STAGES = ["individuals", "individuals_merge", "sifting", "frequency", "mutation_overlap"]


@pytest.fixture(scope="module")
def registry(artifact, tmp_path_factory):
    reg = tmp_path_factory.mktemp("registry")
    d = artifact / "1kgenome"
    code = main(["train", "1kgenome", "--template", str(d / "1kg_script_order.json"),
                 "--costs", str(d / "1kg_filtered_spm_results.csv"),
                 "--io-data", str(d / "1kg_workflow_data.csv"), "--nodes", "2,5,10",
                 "--registry", str(reg)])
    assert code == 0
    return reg


@pytest.fixture(scope="module")
def rows(artifact):
    with open(artifact / "1kgenome" / "workflow_makespan_stageorder.csv", newline="") as fh:
        return [{"nodes": int(r["nodes"]), "total": float(r["total"]),
                 "tiers": {s: r[f"{s}_stor"] for s in STAGES}} for r in csv.DictReader(fh)]


def query(capsys, registry, *args):
    code = main(["query", "1kgenome", "--registry", str(registry), "--json", *args])
    out = capsys.readouterr()
    assert out.err == ""
    return code, json.loads(out.out)


def fastest(rows, keep):
    return min((r for r in rows if keep(r)), key=lambda r: (r["total"], r["nodes"]))


def assert_is(ans, row):
    assert ans["feasible"] is True
    assert ans["makespan"] == pytest.approx(row["total"], abs=1e-6)
    assert ans["nodes"] == row["nodes"]
    assert ans["tiers"] == row["tiers"]


@pytest.mark.parametrize("n", [2, 5, 10])
def test_best_with_at_most_n_nodes(capsys, registry, rows, n):
    code, ans = query(capsys, registry, "--max-nodes", str(n))
    assert code == 0
    assert_is(ans, fastest(rows, lambda r: r["nodes"] <= n))
    assert ans["critical_path"] and ans["rule"] and ans["bandwidth"]


def test_best_using_only_two_tiers(capsys, registry, rows):
    code, ans = query(capsys, registry, "--tiers", "ssd,tmpfs", "--max-nodes", "5")
    assert code == 0
    assert_is(ans, fastest(rows, lambda r: r["nodes"] <= 5
                           and set(r["tiers"].values()) <= {"ssd", "tmpfs"}))


def test_deadline_without_a_tier_met_and_missed(capsys, registry, rows):
    no_ssd = [r for r in rows if "ssd" not in r["tiers"].values()]
    best = fastest(no_ssd, lambda r: True)
    # Met: a deadline above the best time without ssd.
    code, ans = query(capsys, registry, "--exclude-tier", "ssd",
                      "--deadline", str(int(best["total"] // 60) + 1))
    assert code == 0
    assert_is(ans, best)
    assert ans["margin"] > 0
    # Missed: a deadline below it; the closest is the best time without ssd.
    deadline = int(best["total"]) - 10
    code, ans = query(capsys, registry, "--exclude-tier", "ssd",
                      "--deadline", f"{deadline // 60}:{deadline % 60:02d}")
    assert code == 3 and ans["feasible"] is False
    assert ans["binding"] == "deadline"
    assert ans["closest"]["makespan"] == pytest.approx(best["total"], abs=1e-6)
    assert ans["closest"]["miss"] == pytest.approx(best["total"] - deadline, abs=1e-6)
    assert "ssd" not in ans["closest"]["tiers"].values()


def test_tier_down_gives_the_best_alternative(capsys, registry, rows):
    code, ans = query(capsys, registry, "--down-tier", "tmpfs", "--max-nodes", "5")
    assert code == 0
    assert_is(ans, fastest(rows, lambda r: r["nodes"] <= 5
                           and "tmpfs" not in r["tiers"].values()))


def test_frugal_uses_fewest_nodes_then_least_fast_local_tier(capsys, registry, rows):
    deadline = 30 * 60
    code, ans = query(capsys, registry, "--deadline", "30:00", "--objective", "frugal")
    ok = [r for r in rows if r["total"] <= deadline]
    best = min(ok, key=lambda r: (r["nodes"],
                                  list(r["tiers"].values()).count("tmpfs"),
                                  list(r["tiers"].values()).count("ssd"), r["total"]))
    assert code == 0
    assert_is(ans, best)


def test_text_answer_explains_the_choice(capsys, registry):
    code = main(["query", "1kgenome", "--registry", str(registry), "--max-nodes", "5"])
    out = capsys.readouterr().out
    assert code == 0
    for needle in ("feasible", "critical (fixed in this region)", "flexible",
                   "critical path", "runner-up", "bandwidth"):
        assert needle in out
