"""``qos-plan run`` in local mode on a small workflow of our own, trained into a tmp
registry: exact bytes per task (scaled), files on the right tier directories (one
per node on the node-local tier), the copies where the movement rules put them,
levels one after the other, and bad input refused in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qos_plugin.cli.qos_plan import main
from qos_plugin.model.iodata import stage_volumes
from qos_plugin.model.makespan import MakespanModel
from qos_plugin.model.regions import CartSettings
from qos_plugin.model.synthetic import TierModel, dag_workflow
from qos_plugin.model.tiers import parse_tiers
from qos_plugin.planner.registry import Registry
from qos_plugin.planner.training import build_model, fit_table_regions

TIERS = parse_tiers("pfs:shared,nfs:shared,ram:node-local")
SPEED = {"pfs": TierModel(1000, 800, 0.5), "nfs": TierModel(300, 200, 0.5),
         "ram": TierModel(6000, 4000, 0.3)}
# (stage, level, tasks, {source: MiB read per task}, MiB written per task)
STAGES = [("A", 1, 3, {"initial_data": 4.0}, 2.0),
          ("B", 1, 2, {"initial_data": 1.0}, 1.0),
          ("C", 2, 2, {"A": 2.0, "B": 1.0}, 0.5),
          ("D", 3, 1, {"C": 1.0}, 0.25)]
NODES = [1, 2]
SCALE = 1 / 64          # MiB volumes above become whole KiB: exact bytes expected
# Every kind of move: a stage-in copy onto ram (A from the input, C from B on pfs),
# a fan-out between ram's nodes (A -> C), shared -> node-local (B -> C), node-local
# -> another shared tier (C -> D).
PLACEMENT = {"A": "ram", "B": "pfs", "C": "ram", "D": "nfs"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    wf = dag_workflow("small", STAGES, TIERS, SPEED)
    table = MakespanModel(wf.template, wf.cost_table(NODES), TIERS).evaluate(NODES)
    volumes = stage_volumes(wf.io_data(), wf.template.stage_names)
    configs, regions, labels = fit_table_regions(table, CartSettings())
    root = tmp_path_factory.mktemp("registry")
    Registry(root).save(build_model("small", 1, table, configs, regions, labels, volumes,
                                    {}, "now"))
    return root


def _args(registry, tmp_path, placement=PLACEMENT, nodes="2", scale=str(SCALE),
          dirs=("pfs", "nfs", "ram")):
    out = ["run", "small", "--registry", str(registry), "--nodes", nodes, "--scale", scale,
           "--placement", ",".join(f"{s}={t}" for s, t in placement.items()),
           "--out", str(tmp_path / "run.json")]
    for t in dirs:
        out += ["--tier-dir", f"{t}={tmp_path / t}"]
    return out


def test_a_run_moves_exactly_the_scaled_volumes_where_the_placement_says(registry, tmp_path,
                                                                         capsys):
    assert main(_args(registry, tmp_path)) == 0
    rec = json.loads((tmp_path / "run.json").read_text())
    table = capsys.readouterr().out
    assert "total" in table and "stage-in" in table
    kib = 1024
    for name, _level, tasks, reads, write in STAGES:
        st = rec["stages"][name]
        assert len(st["tasks"]) == tasks
        for t in st["tasks"]:
            # MiB * 1/64 = 16 KiB per MiB, exactly.
            assert t["read_bytes"] == sum(reads.values()) * 16 * kib
            assert t["written_bytes"] == write * 16 * kib
            tier = PLACEMENT[name]
            where = tmp_path / tier / (f"node{t['task'] % 2}" if tier == "ram" else "")
            assert Path(t["path"]) == where / "small" / name / f"t{t['task']}.dat"
            assert Path(t["path"]).stat().st_size == write * 16 * kib
        ex = st["phases"]["execution"]
        assert ex["read_bytes"] == tasks * sum(reads.values()) * 16 * kib

    ram = tmp_path / "ram"
    # A's outputs: each on its task's node, then the fan-out gives both nodes all three.
    for j in (0, 1):
        assert sorted(p.name for p in (ram / f"node{j}/small/A").iterdir()) == \
            ["t0.dat", "t1.dat", "t2.dat"]
        # stage-in copies onto every node: the input (A) and B's outputs from pfs (C);
        # B's stage-out put each of its files on its task's node only.
        # The input is the largest distinct input of a stage reading it, A's 3 x 4 MiB;
        # A's copy (a directory of A's own) carries what A reads of it: all of it.
        assert (ram / f"node{j}/small/initial_data-A/input.dat").stat().st_size == \
            12 * 16 * kib
        assert sorted(p.name for p in (ram / f"node{j}/small/B").iterdir()) == \
            ["t0.dat", "t1.dat"]
    # C (ram) gathered onto nfs for D; D on nfs, a shared tier: no flush to pfs.
    assert sorted(p.name for p in (tmp_path / "nfs/small/C").iterdir()) == ["t0.dat", "t1.dat"]
    assert not (tmp_path / "pfs/small/D").exists()
    assert not (tmp_path / "pfs/small/C").exists()
    phases = rec["stages"]
    assert phases["A"]["phases"]["stage-in"]["copies"] == 2       # one per node
    assert phases["A"]["phases"]["stage-out"]["copies"] == 2      # fan-out, one per node
    assert phases["B"]["phases"]["stage-in"]["copies"] == 0       # B runs on pfs itself
    # C's stage-in carries what the model charges it: B's outputs onto each of 2 nodes.
    from qos_plugin.model.movement import copied_from

    model = Registry(registry).load("small")
    assert phases["C"]["phases"]["stage-in"]["read_bytes"] == \
        2 * copied_from(model.volumes, "C", "B") * 16 * kib
    assert phases["D"]["phases"]["stage-out"]["copies"] == 0

    # Barriers: every phase of a level ends before the next begins, and levels in turn.
    spans = [(p["start"], p["end"]) for lv in rec["levels"] for p in lv["phases"].values()
             if p["start"] is not None]
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))
    tasks = {n: rec["stages"][n]["tasks"] for n in PLACEMENT}
    assert max(t["end"] for t in tasks["A"] + tasks["B"]) <= min(t["start"] for t in tasks["C"])
    assert max(t["end"] for t in tasks["C"]) <= min(t["start"] for t in tasks["D"])


def test_a_second_run_starts_afresh(registry, tmp_path):
    assert main(_args(registry, tmp_path)) == 0
    stale = tmp_path / "ram/node0/small/A/t9.dat"
    stale.write_bytes(b"x" * 4096)
    assert main(_args(registry, tmp_path)) == 0
    assert not stale.exists()


@pytest.mark.parametrize("change, says", [
    ({"placement": {**PLACEMENT, "Z": "pfs"}}, "unknown stage 'Z'"),
    ({"placement": {**PLACEMENT, "A": "ssd"}}, "unknown tier 'ssd'"),
    ({"placement": {"A": "ram", "B": "pfs", "C": "ram"}}, "no tier for stage 'D'"),
    ({"nodes": "3"}, "has no placement"),
    ({"dirs": ("pfs", "ram")}, "no directory for tier 'nfs'"),
    ({"dirs": ("nfs", "ram")}, "no directory for tier 'pfs'"),
    ({"scale": "0"}, "--scale"),
    ({"scale": "1.5"}, "--scale"),
    ({"scale": "nan"}, "--scale"),
    ({"scale": "x"}, "--scale"),
])
def test_bad_input_is_one_line_and_writes_nothing(registry, tmp_path, capsys, change, says):
    assert main(_args(registry, tmp_path, **change)) == 1
    err = capsys.readouterr().err
    assert err.startswith("qos-plan run: error: ") and says in err
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_cannot_write_fails_in_one_line(registry, tmp_path, capsys):
    args = _args(registry, tmp_path)
    (tmp_path / "pfs").write_text("a file, not a directory")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("qos-plan run: error: the run failed: ") and err.count("\n") == 1
    assert not (tmp_path / "run.json").exists()
