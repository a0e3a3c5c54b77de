"""Registry, queries and their errors on a workflow of our own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qos_plugin.cli.qos_plan import main
from qos_plugin.errors import InputError
from qos_plugin.model.costs import save_costs
from qos_plugin.model.template import template_to_dict
from qos_plugin.planner.registry import Registry, default_registry
from qos_plugin.planner.timespec import format_duration, parse_duration
from qos_plugin.planner.trained import pack, unpack
from tests.unit.handmade import TEMPLATE, cost_table

TIERS = "pfs:shared,nvme:node-local,ram:node-local,bb:node-local"


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    d = tmp_path_factory.mktemp("planner")
    (d / "t.json").write_text(json.dumps(template_to_dict(TEMPLATE)))
    save_costs(cost_table(), d / "c.csv")
    for _ in range(2):   # two versions
        assert main(["train", "hand", "--template", str(d / "t.json"), "--costs",
                     str(d / "c.csv"), "--nodes", "2,4", "--tiers", TIERS,
                     "--registry", str(d / "reg")]) == 0
    return d / "reg"


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("text,seconds", [
    ("20", 1200), ("20:30", 1230), ("1:02:03", 3723), ("2-3", 2 * 86400 + 3 * 3600),
    ("1-0:30", 86400 + 1800), ("1-02:03:04", 86400 + 7384)])
def test_slurm_time_syntax(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "abc", "1:99", "0", "-5", "1:2:3:4", "1-2-3", "10m"])
def test_malformed_deadlines_are_refused(text):
    with pytest.raises(InputError, match="--deadline"):
        parse_duration(text)


def test_versions_and_list(reg, capsys):
    r = Registry(reg)
    assert r.versions("hand") == [1, 2]
    assert r.load("hand").version == 2 and r.load("hand@1").version == 1
    assert r.load("hand@v1").version == 1 and r.load("hand@V2").version == 2
    for bad in ("hand@\u0661", "hand@vv1", "hand@v"):
        with pytest.raises(InputError, match="no version"):
            r.load(bad)
    code, out, _ = run(capsys, "list", "--registry", str(reg), "--json")
    assert code == 0
    [item] = json.loads(out)
    assert item["name"] == "hand" and item["versions"] == [1, 2]
    assert item["tiers"] == ["pfs", "nvme", "ram", "bb"]


def test_registry_from_environment_and_config(tmp_path):
    assert str(default_registry({"QOS_PLAN_REGISTRY": "/x/y"})) == "/x/y"
    conf = tmp_path / "c.toml"
    conf.write_text('registry = "/srv/qos/models"\n')
    assert str(default_registry({"QOS_PLAN_CONFIG": str(conf), "HOME": str(tmp_path)})) == \
        "/srv/qos/models"
    assert default_registry({"HOME": str(tmp_path)}) == \
        tmp_path / ".local/share/qos-plugin/models"


def test_answer_matches_brute_force_over_the_model(reg, capsys):
    model = Registry(reg).load("hand")
    for max_nodes in (2, 4):
        code, out, _ = run(capsys, "query", "hand", "--registry", str(reg), "--json",
                           "--max-nodes", str(max_nodes), "--exclude-tier", "bb")
        ans = json.loads(out)
        ok = [r for r in range(len(model)) if model.nodes[r] <= max_nodes
              and model.tier_names.index("bb") not in model.placement[r]]
        best = min(ok, key=lambda r: (model.total[r], model.nodes[r]))
        assert code == 0 and ans["makespan"] == model.total[best]
        assert "bb" not in ans["tiers"].values()


@pytest.mark.parametrize("args,needle", [
    (["--deadline", "1:99"], "--deadline: '1:99' has a field over 59"),
    (["--tiers", "pfs,lustre"], "--tiers: unknown tier 'lustre'; model hand has tiers"),
    (["--exclude-tier", "ssd"], "--exclude-tier: unknown tier 'ssd'"),
    (["--down-tier", ","], "--down-tier: empty tier name"),
    (["--max-nodes", "0"], "--max-nodes: 0 nodes cannot run anything"),
])
def test_bad_query_is_one_line(reg, capsys, args, needle):
    before = sorted(p.name for p in (reg / "hand").iterdir())
    code, out, err = run(capsys, "query", "hand", "--registry", str(reg), *args)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and needle in err
    assert sorted(p.name for p in (reg / "hand").iterdir()) == before


def test_unknown_model_and_version(reg, capsys):
    code, _, err = run(capsys, "query", "nosuch", "--registry", str(reg))
    assert code == 1 and "model 'nosuch': not in registry" in err and "models there: hand" in err
    code, _, err = run(capsys, "query", "hand@7", "--registry", str(reg))
    assert code == 1 and "no version '7'" in err and "versions of hand: 1, 2" in err


def test_corrupt_and_foreign_models(reg, tmp_path, capsys):
    bad = tmp_path / "reg"
    (bad / "broken").mkdir(parents=True)
    (bad / "broken" / "v1.json").write_text('{"format": "qos-model/1", "rows": ')
    code, _, err = run(capsys, "query", "broken", "--registry", str(bad))
    assert code == 1 and "model file is corrupt (JSON error at line 1" in err
    doc = json.loads((reg / "hand" / "v1.json").read_text())
    (bad / "future").mkdir()
    (bad / "future" / "v1.json").write_text(json.dumps(dict(doc, format="qos-model/9")))
    code, _, err = run(capsys, "query", "future", "--registry", str(bad))
    assert code == 1 and "model format 'qos-model/9', this qos-plan reads 'qos-model/1' " \
        "and 'qos-model/2'" in err
    rows = doc["rows"]
    cut = dict(rows, total=pack(list(unpack(rows["total"], rows["count"]))[:-1], "d"))
    wrong_tier = dict(rows, placement=["9" * len(rows["placement"][0])] + rows["placement"][1:])
    no_region = dict(rows, region=pack([99] * rows["count"]))
    for name, damaged, needle in [("cut", cut, "model is incomplete or damaged"),
                                  ("tier", wrong_tier, "rows.placement is not 5 tier digits"),
                                  ("region", no_region, "names a region that does not exist"),
                                  ("text", dict(rows, nodes="2,4"), "incomplete or damaged")]:
        (bad / name).mkdir()
        (bad / name / "v1.json").write_text(json.dumps(dict(doc, rows=damaged)))
        code, _, err = run(capsys, "query", name, "--registry", str(bad))
        assert code == 1 and needle in err, err
    code, out, _ = run(capsys, "list", "--registry", str(bad))
    assert code == 0 and "UNREADABLE" in out


def test_format_1_models_are_still_read(reg, tmp_path, capsys):
    """A model written before the compact format (a JSON list per column, a list per
    row) answers exactly as its compact form does."""
    model = Registry(reg).load("hand")
    doc = model.to_json()
    doc["format"] = "qos-model/1"
    doc["rows"] = {"nodes": list(model.nodes), "total": list(model.total),
                   "placement": [model.placement[r] for r in range(len(model))],
                   "region": list(model.region), "path": list(model.path),
                   "phases": [model.phases[r] for r in range(len(model))]}
    del doc["phases"]
    old = tmp_path / "old"
    (old / "hand").mkdir(parents=True)
    (old / "hand" / "v1.json").write_text(json.dumps(doc))
    for args in ([], ["--objective", "frugal", "--deadline", "1:00"], ["--down-tier", "ram"],
                 ["--max-nodes", "1"]):
        answers = []
        for where in (reg, old):
            code, out, _ = run(capsys, "query", "hand", "--registry", str(where), "--json",
                               *args)
            answers.append((code, {k: v for k, v in json.loads(out).items()
                                   if k != "version"}))
        assert answers[0] == answers[1]


def test_infeasible_names_the_binding_constraint(reg, capsys):
    code, out, _ = run(capsys, "query", "hand", "--registry", str(reg), "--json",
                       "--deadline", "0:01")
    ans = json.loads(out)
    assert code == 3 and ans["feasible"] is False and ans["binding"] == "deadline"
    assert ans["closest"]["miss"] == pytest.approx(ans["closest"]["makespan"] - 1.0)
    code, out, _ = run(capsys, "query", "hand", "--registry", str(reg), "--json",
                       "--max-nodes", "1")
    ans = json.loads(out)
    assert code == 3 and ans["binding"] == "max_nodes" and ans["closest"]["nodes"] == 2


def test_bad_training_changes_nothing(reg, tmp_path, capsys):
    code, _, err = run(capsys, "train", "bad name", "--template", "x", "--costs", "y",
                       "--nodes", "2", "--registry", str(reg))
    assert code == 1 and "'bad name' is not a valid name" in err
    code, _, err = run(capsys, "train", "hand", "--template", "x", "--nodes", "2",
                       "--registry", str(reg))
    assert code == 1 and "no costs given" in err
    assert Registry(reg).versions("hand") == [1, 2]


def test_query_imports_no_numpy_sklearn_or_pandas(reg):
    code = ("import sys; from qos_plugin.cli.qos_plan import main; "
            f"rc = main(['query', 'hand', '--registry', {str(reg)!r}, '--json']); "
            "heavy = [m for m in ('numpy', 'sklearn', 'pandas', 'matplotlib') "
            "if m in sys.modules]; print(heavy); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
