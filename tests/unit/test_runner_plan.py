"""The plan both run modes share (``runner.plan_run``): on which node each action runs,
which copies cross between nodes, where a node-local tier's files are in each mode;
and ``taskproc``'s send/receive frames, which carry a fan-out from node to node."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from qos_plugin.model.iodata import stage_volumes
from qos_plugin.model.makespan import MakespanModel
from qos_plugin.model.regions import CartSettings
from qos_plugin.model.synthetic import dag_workflow
from qos_plugin.planner import runner, taskproc
from qos_plugin.planner.registry import Registry
from qos_plugin.planner.slurmrun import SrunLauncher, job_tier_dirs
from qos_plugin.planner.training import build_model, fit_table_regions
from tests.unit.test_runner import PLACEMENT, SPEED, STAGES, TIERS

NODES = [1, 2]


def _registered(root: Path, name: str, stages) -> tuple:
    """The trained model of a workflow of ``stages``, read back from a registry, and
    the stage volumes of its I/O data."""
    wf = dag_workflow(name, stages, TIERS, SPEED)
    table = MakespanModel(wf.template, wf.cost_table(NODES), TIERS).evaluate(NODES)
    configs, regions, labels = fit_table_regions(table, CartSettings())
    vol = stage_volumes(wf.io_data(), wf.template.stage_names)
    Registry(root).save(build_model(name, 1, table, configs, regions, labels, vol, {}, "now"))
    return Registry(root).load(name), vol


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _registered(tmp_path_factory.mktemp("registry"), "small", STAGES)[0]


def _spec(model, base: Path) -> runner.RunSpec:
    return runner.check_run(model, PLACEMENT, 2, 1 / 64, {t: base / t for t in
                                                          ("pfs", "nfs", "ram")})


def _actions(plan: runner.RunPlan, stage: str, phase: str) -> list[runner.Action]:
    return [a for _lv, phases in plan.levels for a in phases[phase] if a.stage == stage]


@pytest.mark.parametrize("node_dirs", [True, False])
def test_each_action_runs_where_its_files_are(model, tmp_path, node_dirs):
    plan = runner.plan_run(_spec(model, tmp_path), node_dirs=node_dirs)
    for name, tasks in plan.tasks.items():
        assert [a.node for a in tasks] == [i % 2 for i in range(len(tasks))], name
    ram = tmp_path / "ram"
    # A on ram: task i writes on node i % 2's ram, under node<j> only in local mode.
    for i, a in enumerate(plan.tasks["A"]):
        where = ram / f"node{i % 2}" if node_dirs else ram
        assert a.payload["out"] == str(where / "small" / "A" / f"t{i}.dat")
    # The fan-out of A between ram's nodes: node j receives the other node's files.
    fan = _actions(plan, "A", "stage-out")
    assert [a.node for a in fan] == [0, 1]
    for a in fan:
        assert a.sources and all(s == 1 - a.node for s in a.sources)
        assert sorted(Path(s).name for s, _ in a.payload["pairs"]) == \
            [f"t{i}.dat" for i in range(3) if i % 2 != a.node]
    # C gathered from ram onto nfs, each copy by the node holding the files.
    gather = _actions(plan, "C", "stage-out")
    assert [a.node for a in gather] == [0, 1]
    assert all(s == a.node for a in gather for s in a.sources)
    # A's stage-in from pfs onto each node: a shared source, seen on every node.
    stage_in = _actions(plan, "A", "stage-in")
    assert [a.node for a in stage_in] == [0, 1] and all(
        s is None for a in stage_in for s in a.sources)
    # C reads A's outputs on its own node: all three after the fan-out.
    for a in plan.tasks["C"]:
        from_a = [r for r in a.payload["reads"] if "/A/" in r]
        assert sorted(Path(r).name for r in from_a) == ["t0.dat", "t1.dat", "t2.dat"]
    # A fresh start on every node holding a node-local directory; the input on node 0.
    assert [a.node for a in plan.prepare] == [0, 1]
    assert plan.prepare[0].payload["init"] and plan.prepare[1].payload["init"] is None


def test_frames_carry_files_exactly(tmp_path):
    src = tmp_path / "a"
    src.mkdir()
    files = {"t0.dat": b"\1" * 5000, "t1.dat": b"", "t2.dat": b"\2" * (3 << 20)}
    for n, data in files.items():
        (src / n).write_bytes(data)
    pairs = [(str(src / n), str(tmp_path / "b" / "A" / n)) for n in files]
    stream = io.BytesIO()
    taskproc.send(pairs, stream)
    stream.seek(0)
    r, w, start, end, host = taskproc.receive(stream)
    assert r == w == sum(len(d) for d in files.values()) and start <= end and host
    for n, data in files.items():
        assert (tmp_path / "b" / "A" / n).read_bytes() == data
    stream = io.BytesIO(stream.getvalue()[:-3])    # the end frame lost
    with pytest.raises(OSError, match="ended before"):
        taskproc.receive(stream)


def test_steps_and_job_directories():
    launcher = SrunLauncher(["node1", "node2"], workers=2, env={})
    argv = launcher.argv(1, "run")
    assert "--overlap" in argv and "--nodelist=node2" in argv and argv[-1] == "run"
    assert launcher.env["PYTHONPATH"]
    assert job_tier_dirs({"SLURM_SPANK_QOS_DIRS": "pfs=/q/pfs/u/1,ram=/q/ram/u/1"}) == {
        "pfs": Path("/q/pfs/u/1"), "ram": Path("/q/ram/u/1")}
    assert job_tier_dirs({}) == {}


def test_each_stage_copies_its_own_part_of_the_input(model, tmp_path):
    # A and B both read the input on ram: each stage-in copy carries what the model
    # charges that stage (movement.copied_from), into a directory of its own, so the
    # job moves A's 12 MiB and B's 2 MiB per node (x 1/64), not the whole input twice.
    from qos_plugin.model.movement import copied_from

    placement = {"A": "ram", "B": "ram", "C": "ram", "D": "nfs"}
    spec = runner.check_run(model, placement, 2, 1 / 64,
                            {t: tmp_path / t for t in ("pfs", "nfs", "ram")})
    plan = runner.plan_run(spec)
    limits, offsets = {}, {}
    for stage in ("A", "B"):
        copies = _actions(plan, stage, "stage-in")
        assert [a.node for a in copies] == [0, 1]
        for a in copies:
            (src, dst, limit, offset), = a.payload["pairs"]
            assert src.endswith("initial_data/input.dat")
            assert f"/initial_data-{stage}/" in dst
            limits[stage], offsets[stage] = limit, offset
    assert model.volumes is not None
    for stage, limit in limits.items():
        assert limit == round(copied_from(model.volumes, stage, "initial_data") * 1024 * 1024 / 64)
    assert limits == {"A": 12 * 16 * 1024, "B": 2 * 16 * 1024}
    # The input is the stages' parts end to end: B's part follows A's, so that the two
    # copies read different bytes of the shared tier, as the model charges both.
    assert offsets == {"A": 0, "B": limits["A"]}
    init = next(a for a in plan.prepare if a.payload["init"])
    assert init.payload["init_bytes"] == limits["A"] + limits["B"]
    # and B's tasks read their copy, not A's
    for a in plan.tasks["B"]:
        assert all("/initial_data-B/" in r for r in a.payload["reads"])
    # a run does it: the copies are that large
    rec = runner.run(spec)
    for j in (0, 1):
        assert (tmp_path / f"ram/node{j}/small/initial_data-B/input.dat").stat().st_size == \
            limits["B"]
    assert rec["stages"]["B"]["phases"]["stage-in"]["written_bytes"] == 2 * limits["B"]


@pytest.mark.parametrize("streams", [1, 4])
@pytest.mark.parametrize("part", [None, (3 * taskproc.CHUNK + 7,), (10,),
                                  (2 * taskproc.CHUNK + 5, taskproc.CHUNK + 3),
                                  (3 * taskproc.CHUNK, 4 * taskproc.CHUNK)])
def test_a_copy_in_ranges_is_the_file_byte_for_byte(tmp_path, streams, part):
    import os

    data = os.urandom(5 * taskproc.CHUNK + 123)
    (tmp_path / "src").write_bytes(data)
    pair = [str(tmp_path / "src"), str(tmp_path / "d" / "dst")]
    r, w, start, end = taskproc.copy([tuple(pair + list(part or ()))], streams=streams)
    if part is None:
        want = data
    else:
        # From the offset on, round the end of the file to its start (the last case).
        offset = part[1] if len(part) > 1 else 0
        want = (data + data)[offset:offset + part[0]]
    assert (tmp_path / "d" / "dst").read_bytes() == want
    assert r == w == len(want) and end >= start


def test_tasks_of_a_stage_read_their_own_parts_of_the_inputs(tmp_path, monkeypatch):
    import os

    files = [tmp_path / "a", tmp_path / "b"]
    for f, n in zip(files, (3000, 5000), strict=True):
        f.write_bytes(os.urandom(n))
    reads = [str(f) for f in files]
    got = []
    for i in range(4):
        r, _w, _s, _e = taskproc.task(reads, 2000, str(tmp_path / f"o{i}"), 0, 700, 700,
                                      read_from=i * 2000)
        got.append(r)
    assert got == [2000] * 4
    # Where each task starts: its own 2000 bytes of the 8000, end to end (task 1 from
    # byte 2000: the last 1000 of a, then b's first 1000), checked by reading with a
    # file that records nothing but where reads begin.
    opened = []
    real_open = open

    def spy(path, *args, **kw):
        f = real_open(path, *args, **kw)
        seek = f.seek
        f.seek = lambda at, *a: (opened.append((os.path.basename(path), at)), seek(at, *a))[1]
        return f

    monkeypatch.setattr("builtins.open", spy)
    taskproc.task(reads, 2000, str(tmp_path / "x"), 0, 700, 700, read_from=2000)
    taskproc.task(reads, 2000, str(tmp_path / "y"), 0, 700, 700, read_from=7000)
    monkeypatch.undo()
    assert opened == [("a", 2000), ("b", 0), ("b", 4000), ("a", 0)]


MIXED = [("P", 1, 2, {"initial_data": 4.0}, 4.0),
         ("C", 2, 2, {"P": 4.0, "initial_data": 2.0}, 1.0)]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A stage (C) that reads a predecessor's outputs and part of the initial data."""
    return _registered(tmp_path_factory.mktemp("registry"), "mixed", MIXED)


def test_a_stage_copies_only_its_part_of_the_initial_data(mixed, tmp_path):
    model, vol = mixed
    # The model keeps what each source gives each stage, and the run copies that: C's
    # part of the initial data, not all its inputs (P's outputs are copied by P's own
    # source), which the I/O data says (not the model's stored volumes, read back here).
    assert model.volumes["C"]["in_from_mib"] == vol["C"]["in_from_mib"]
    part = {s: round(vol[s]["in_from_mib"]["initial_data"] * (1 << 20) / 64) for s in "PC"}
    assert vol["C"]["in_files_mib"] > vol["C"]["in_from_mib"]["initial_data"]
    spec = runner.check_run(model, {"P": "pfs", "C": "ram"}, 2, 1 / 64,
                            {t: tmp_path / t for t in ("pfs", "nfs", "ram")})
    plan = runner.plan_run(spec)
    init = [a for a in _actions(plan, "C", "stage-in")
            if "/initial_data-C/" in a.payload["pairs"][0][1]]
    assert [a.payload["pairs"][0][2:] for a in init] == [[part["C"], part["P"]]] * 2
    assert next(a for a in plan.prepare if a.payload["init"]).payload["init_bytes"] == \
        part["P"] + part["C"]


def test_tasks_reading_the_initial_data_in_place_read_their_stage_s_part(mixed, tmp_path):
    model, vol = mixed
    spec = runner.check_run(model, {"P": "pfs", "C": "pfs"}, 2, 1 / 64,
                            {t: tmp_path / t for t in ("pfs", "nfs", "ram")})
    plan = runner.plan_run(spec)
    part = {s: round(vol[s]["in_from_mib"]["initial_data"] * (1 << 20) / 64) for s in "PC"}
    for name, base in (("P", 0), ("C", part["P"])):
        tasks = plan.tasks[name]
        # The initial data first among the reads, whatever the template's order, and
        # only the stage's own span of it.
        for a in tasks:
            first = a.payload["reads"][0]
            assert first[0].endswith("initial_data/input.dat")
            assert first[1:] == [base, part[name]]
        # The k-th task on each of the 2 nodes starts at k times its volume.
        rb = tasks[0].payload["read_bytes"]
        assert [a.payload["read_from"] for a in tasks] == [i // 2 * rb
                                                           for i in range(len(tasks))]


def test_a_task_reads_only_the_span_it_is_given(tmp_path, monkeypatch):
    import os

    data = os.urandom(10_000)
    (tmp_path / "init").write_bytes(data)
    (tmp_path / "pred").write_bytes(b"p" * 500)
    reads = [[str(tmp_path / "init"), 6000, 3000], str(tmp_path / "pred")]
    seen = bytearray()
    real_open = open

    def spy(path, *args, **kw):
        f = real_open(path, *args, **kw)
        if "rb" in args:
            read = f.read
            f.read = lambda n: (lambda b: (seen.extend(b), b)[1])(read(n))
        return f

    monkeypatch.setattr("builtins.open", spy)
    # From byte 2500 of the 3500 the reads lay end to end: the span's last 500, the
    # predecessor's 500, then round to the span's start.
    r, _w, _s, _e = taskproc.task(reads, 1600, str(tmp_path / "o"), 0, 300, 300,
                                  read_from=2500)
    monkeypatch.undo()
    assert r == 1600
    assert bytes(seen) == data[8500:9000] + b"p" * 500 + data[6000:6600]


@pytest.mark.parametrize("sources, says", [
    ({"elsewhere": 1.0}, "not an object of sources"),
    ({"P": -1.0}, "in_from_mib.P"),
    ([1.0], "not an object of sources")])
def test_a_tampered_source_split_is_refused_in_one_line(mixed, sources, says):
    import json

    from qos_plugin.errors import InputError
    from qos_plugin.planner.trained import model_from_json

    model, _ = mixed
    doc = json.loads(json.dumps(model.to_json()))
    assert model_from_json(doc, "m.json").volumes["C"]["in_from_mib"] == \
        model.volumes["C"]["in_from_mib"]
    doc["volumes"]["C"]["in_from_mib"] = sources
    with pytest.raises(InputError, match=says) as e:
        model_from_json(doc, "m.json")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("placement, nodes", [({"P": "pfs", "C": "pfs"}, 1),
                                              ({"P": "ram", "C": "ram"}, 2),
                                              ({"P": "pfs", "C": "ram"}, 2)])
def test_the_model_counts_the_files_a_run_s_tasks_open(mixed, tmp_path, placement, nodes):
    """movement.task_files, what the per-file cost is charged for, is what a task of
    the run creates (its output) and finds among its inputs (where they are, after
    copies and fan-outs)."""
    from qos_plugin.model.movement import task_files
    from qos_plugin.model.template import template_from_dict

    model, _ = mixed
    tmpl = template_from_dict(model.workflow, name=model.name, patterns=False)
    spec = runner.check_run(model, placement, nodes, 1 / 64,
                            {t: tmp_path / t for t in ("pfs", "nfs", "ram")})
    plan = runner.plan_run(spec)
    for name in ("P", "C"):
        assert {1 + len(a.payload["reads"]) for a in plan.tasks[name]} == \
            {task_files(tmpl, name)}, (name, placement, nodes)
    assert task_files(tmpl, "P") == 2 and task_files(tmpl, "C") == 1 + 1 + 2


def test_a_task_whose_inputs_are_shorter_than_their_sizes_fails_instead_of_spinning(
        tmp_path, monkeypatch):
    (tmp_path / "in").write_bytes(b"x" * 100)
    # A size the file does not have (a stale attribute of a shared tier's client).
    monkeypatch.setattr(taskproc.os.path, "getsize", lambda p: 10_000)
    with pytest.raises(RuntimeError, match="shorter than their sizes"):
        taskproc.task([[str(tmp_path / "in"), 5000, 1000]], 500, str(tmp_path / "o"), 0,
                      64, 64)


def test_a_run_starts_with_earlier_writes_flushed(tmp_path, monkeypatch):
    # prepare flushes the node before a run, never for the profile's timed no-op.
    synced = []
    monkeypatch.setattr(taskproc.os, "sync", lambda: synced.append(1))
    taskproc.prepare([], None, 0, 1 << 20)
    assert synced == []
    old = tmp_path / "old"
    old.mkdir()
    taskproc.prepare([str(old)], None, 0, 1 << 20)
    assert synced == [1] and not old.exists()
    taskproc.prepare([], str(tmp_path / "input.dat"), 4096, 4096)
    assert synced == [1, 1] and (tmp_path / "input.dat").stat().st_size == 4096
