"""qos-plan end to end on a workflow of our own, and its one-line errors."""

from __future__ import annotations

import json

import pytest

from qos_plugin.cli.qos_plan import main
from qos_plugin.model.costs import save_costs
from qos_plugin.model.template import template_to_dict
from tests.unit.handmade import TEMPLATE, cost_table


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps(template_to_dict(TEMPLATE)))
    save_costs(cost_table(), tmp_path / "c.csv")
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_pipeline_makespan_regions_rank(files, capsys):
    tiers = "pfs:shared,nvme:node-local,ram:node-local,bb:node-local"
    code, out, _ = run(capsys, "makespan", "--template", str(files / "t.json"), "--costs",
                       str(files / "c.csv"), "--nodes", "2,4", "--tiers", tiers, "--out",
                       str(files / "m.csv"))
    assert code == 0 and "evaluated" in out
    header = (files / "m.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["nodes", "total"] and "critical_path" in header
    assert "A_stor" in header and "in_A" in header and "exec_o3" in header
    code, out, _ = run(capsys, "regions", "--makespan", str(files / "m.csv"), "--out-dir",
                       str(files / "r"), "--repeats", "2")
    assert code == 0
    doc = json.loads((files / "r" / "regions.json").read_text())
    assert doc["regions"] and all("rule" in r and "members" in r for r in doc["regions"])
    assert (files / "r" / "regions.png").stat().st_size > 10_000
    code, out, _ = run(capsys, "rank", "--makespan", str(files / "m.csv"), "--regions",
                       str(files / "r" / "config_regions.csv"), "--nodes", "2", "--json",
                       "--tiers", tiers)
    assert code == 0
    pc = json.loads(out)
    assert set(pc) == {"FSF", "LTL", "Hybrid", "QoSFlow"}
    assert all(0.0 <= v <= 1.0 for v in pc.values())


@pytest.mark.parametrize("argv, needle", [
    (["--template", "{d}/missing.json"], "cannot read the template"),
    (["--template", "{d}/bad.json"], "not valid JSON"),
    (["--tiers", "pfs:shared,nvme:fast"], "unknown tier kind 'fast'"),
    (["--tiers", "pfs:node-local"], "no shared tier"),
    (["--tiers", "pfs:shared,tape:node-local"], "never appear in the cost table"),
    (["--costs", "{d}/short.csv"], "lacks column(s)"),
])
def test_bad_input_is_one_line(files, capsys, argv, needle):
    (files / "bad.json").write_text("{not json")
    (files / "short.csv").write_text("producer,consumer\nA,C\n")
    args = {"--template": str(files / "t.json"), "--costs": str(files / "c.csv"),
            "--nodes": "2", "--out": str(files / "m.csv"),
            "--tiers": "pfs:shared,nvme:node-local,ram:node-local,bb:node-local"}
    for k, v in zip(argv[::2], argv[1::2], strict=True):
        args[k] = v.format(d=files)
    flat = [x for kv in args.items() for x in kv]
    code, out, err = run(capsys, "makespan", *flat)
    assert code == 1
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (files / "m.csv").exists()


def test_rank_rejects_unlabelled_regions_and_unknown_node_counts(files, capsys):
    run(capsys, "makespan", "--template", str(files / "t.json"), "--costs",
        str(files / "c.csv"), "--nodes", "2", "--out", str(files / "m.csv"), "--tiers",
        "pfs:shared,nvme:node-local,ram:node-local,bb:node-local")
    (files / "cr.csv").write_text((files / "m.csv").read_text())
    code, _, err = run(capsys, "rank", "--makespan", str(files / "m.csv"), "--regions",
                       str(files / "cr.csv"), "--nodes", "2")
    assert code == 1 and "no 'region' column" in err
    lines = (files / "m.csv").read_text().splitlines()
    labelled = [lines[0] + ",region"] + [ln + ",0" for ln in lines[1:]]
    (files / "cr.csv").write_text("\n".join(labelled) + "\n")
    code, _, err = run(capsys, "rank", "--makespan", str(files / "m.csv"), "--regions",
                       str(files / "cr.csv"), "--nodes", "7")
    assert code == 1 and "no configuration at N=7" in err and "use one of: 2" in err
