"""WfFormat instances as the only input: the I/O primitives read from the instance's
own files, checked against sums this file computes from the JSON itself; WfFormat
1.5, 1.6 and the embedded per-task layout of the same workflow giving the same
template and volumes; costs, training and a local run with no I/O CSV; malformed
instances refused in one line with nothing written.

Instances are made here: by hand, and by WfCommons' recipes (the writer of WfFormat
1.6) at small sizes with a fixed seed, in a tmp directory.
"""

from __future__ import annotations

import copy
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qos_plugin.cli.qos_plan import main
from qos_plugin.errors import InputError
from qos_plugin.model.iodata import IoData, IoRecord, stage_volumes, write_io_csv
from qos_plugin.model.template import INITIAL_DATA, template_to_dict
from qos_plugin.model.wfformat import (
    DEFAULT_TRANSFER_BYTES,
    io_data_from_wfformat,
    load_any_io_data,
    template_from_wfformat,
)
from qos_plugin.planner.registry import Registry

MIB = 1 << 20
# (recipe, tasks): the fewest tasks each recipe's base graphs allow, about.
RECIPES = [("BlastRecipe", 60), ("EpigenomicsRecipe", 60), ("GenomeRecipe", 60),
           ("MontageRecipe", 60), ("SrasearchRecipe", 60), ("CyclesRecipe", 80),
           ("SeismologyRecipe", 110)]
# One measured point per (operation, storage): pfs shared, ram node-local.
PROFILE = """operation,transferSize,aggregateFilesizeMB,numNodes,tasksPerNode,trMiB,storageType
read,1048576,100,1,1,800,pfs
write,1048576,100,1,1,500,pfs
read,1048576,100,1,1,5000,ram
write,1048576,100,1,1,3000,ram
cp,4096,100,1,1,400,pfs-ram
cp,4096,100,1,1,300,ram-pfs
scp,4096,100,1,1,1000,ram-ram
"""


def recipe_instance(recipe: str, tasks: int, path: Path, seed: int = 7) -> dict[str, Any]:
    """A WfFormat 1.6 instance written by WfCommons from one of its recipes."""
    from wfcommons import WorkflowGenerator
    from wfcommons.wfchef import recipes

    random.seed(seed)
    np.random.seed(seed)
    wf = WorkflowGenerator(getattr(recipes, recipe).from_num_tasks(num_tasks=tasks)) \
        .build_workflow()
    wf.write_json(path)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def hand_instance() -> dict[str, Any]:
    """A 1.6 instance of our own: split -> 3 x work (one reads a shared reference) ->
    merge, files of distinct sizes, one initial input read by two stages."""
    def task(tid: str, parents: list[str], ins: list[str], outs: list[str]) -> dict[str, Any]:
        return {"name": tid.split("_")[0], "id": tid, "parents": parents, "children": [],
                "inputFiles": ins, "outputFiles": outs}
    tasks = [task("split_00000001", [], ["raw"], ["p1", "p2", "p3"])]
    tasks += [task(f"work_0000000{i + 1}", ["split_00000001"], [f"p{i}", "ref"], [f"o{i}"])
              for i in (1, 2, 3)]
    tasks.append(task("merge_00000005", [f"work_0000000{i + 1}" for i in (1, 2, 3)],
                      ["o1", "o2", "o3", "raw"], ["final"]))
    sizes = {"raw": 3 * MIB, "p1": 512 * 1024, "p2": 640 * 1024, "p3": 768 * 1024,
             "ref": 2 * MIB, "o1": 100_000, "o2": 200_000, "o3": 300_000, "final": 4096}
    return {"name": "hand", "schemaVersion": "1.6", "workflow": {
        "specification": {"tasks": tasks,
                          "files": [{"id": f, "sizeInBytes": n} for f, n in sizes.items()]},
        "execution": {"makespanInSeconds": 10.0, "executedAt": "20260101T000000+0000",
                      "tasks": [{"id": t["id"], "runtimeInSeconds": 1.0} for t in tasks]}}}


def as_15(data: dict[str, Any]) -> dict[str, Any]:
    """The same workflow as WfCommons 1.5 wrote it: the same specification layout,
    schemaVersion 1.5, no metrics."""
    out = copy.deepcopy(data)
    out["schemaVersion"] = "1.5"
    out["workflow"]["specification"].pop("metrics", None)
    out["workflow"].get("execution", {}).pop("metrics", None)
    return out


def as_embedded(data: dict[str, Any]) -> dict[str, Any]:
    """The same workflow in the earlier layout: each task lists its files with link
    and sizeInBytes under workflow.tasks."""
    spec = data["workflow"]["specification"]
    size = {f["id"]: f["sizeInBytes"] for f in spec["files"]}
    tasks = [{"name": t["name"], "id": t["id"], "parents": t["parents"],
              "files": [{"link": "input", "id": f, "sizeInBytes": size[f]}
                        for f in t["inputFiles"]]
              + [{"link": "output", "id": f, "sizeInBytes": size[f]} for f in t["outputFiles"]]}
             for t in spec["tasks"]]
    return {"name": data["name"], "schemaVersion": "1.4", "workflow": {"tasks": tasks}}


def expected_volumes(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task type (WfCommons writes it as the task's name): bytes read and written,
    file references, distinct input files' bytes by source; from the JSON alone."""
    spec = data["workflow"]["specification"]
    size = {f["id"]: f["sizeInBytes"] for f in spec["files"]}
    writer = {f: t["name"] for t in spec["tasks"] for f in t["outputFiles"]}
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "read": 0, "write": 0, "reads": 0, "writes": 0, "tasks": 0, "in": set(),
        "by_source": defaultdict(set)})
    for t in spec["tasks"]:
        v = out[t["name"]]
        v["tasks"] += 1
        v["read"] += sum(size[f] for f in t["inputFiles"])
        v["write"] += sum(size[f] for f in t["outputFiles"])
        v["reads"] += len(t["inputFiles"])
        v["writes"] += len(t["outputFiles"])
        v["in"].update(t["inputFiles"])
        for f in t["inputFiles"]:
            v["by_source"][writer.get(f, INITIAL_DATA)].add(f)
    return out


def check_volumes(data: dict[str, Any], io: IoData) -> None:
    spec = data["workflow"]["specification"]
    size = {f["id"]: f["sizeInBytes"] for f in spec["files"]}
    want = expected_volumes(data)
    got = stage_volumes(io, list(want))
    for stage, w in want.items():
        g = got[stage]
        assert g["read_mib"] * MIB == pytest.approx(w["read"], rel=1e-12, abs=1e-6), stage
        assert g["write_mib"] * MIB == pytest.approx(w["write"], rel=1e-12, abs=1e-6), stage
        assert g["in_files_mib"] * MIB == pytest.approx(sum(size[f] for f in w["in"]),
                                                        rel=1e-12, abs=1e-6)
        assert set(g["in_from_mib"]) == set(w["by_source"])
        for src, files in w["by_source"].items():
            assert g["in_from_mib"][src] * MIB == pytest.approx(sum(size[f] for f in files),
                                                                rel=1e-12, abs=1e-6)
        assert len(io.stage_records(stage, "read")) == w["reads"]
        assert len(io.stage_records(stage, "write")) == w["writes"]


@pytest.mark.parametrize("recipe, tasks", RECIPES)
def test_recipe_instances_give_their_files_as_io(tmp_path, recipe, tasks):
    data = recipe_instance(recipe, tasks, tmp_path / "wf.json")
    assert data["schemaVersion"] == "1.6"
    io = load_any_io_data(tmp_path / "wf.json")
    check_volumes(data, io)
    assert {r.transfer_bytes for r in io.records} == {DEFAULT_TRANSFER_BYTES}
    template = template_from_wfformat(data)
    want = expected_volumes(data)
    assert {s.name: s.num_tasks for s in template.stages} == {s: w["tasks"]
                                                               for s, w in want.items()}
    # Every stage a read names as its source is one of its predecessors.
    for s in template.stages:
        sources = {r.source for r in io.stage_records(s.name, "read")} - {s.name}
        assert sources <= set(s.predecessors), s.name


def test_a_hand_made_instance_by_hand():
    io = io_data_from_wfformat(hand_instance(), "hand", transfer_bytes=65536)
    v = stage_volumes(io, ["split", "work", "merge"])
    assert v["split"]["read_mib"] == 3 and v["split"]["write_mib"] == 1.875
    # work: its three parts and the reference three times; distinct files once.
    assert v["work"]["read_mib"] * MIB == 1_966_080 + 3 * 2 * MIB
    assert v["work"]["in_files_mib"] * MIB == 1_966_080 + 2 * MIB
    assert v["work"]["in_from_mib"]["initial_data"] == 2.0
    assert v["merge"]["in_from_mib"] == {"work": 600_000 / MIB, "initial_data": 3.0}
    assert v["merge"]["read_transfer_bytes"] == 65536 == v["merge"]["write_transfer_bytes"]
    check_volumes(hand_instance(), io)


@pytest.mark.parametrize("source", ["hand", "EpigenomicsRecipe", "MontageRecipe"])
def test_15_16_and_the_embedded_layout_agree(tmp_path, source):
    data = hand_instance() if source == "hand" else \
        recipe_instance(source, 60, tmp_path / "wf.json")
    forms = [data, as_15(data), as_embedded(data)]
    templates = [template_to_dict(template_from_wfformat(d)) for d in forms]
    assert templates[0] == templates[1] == templates[2]
    names = list(templates[0])
    volumes = [stage_volumes(io_data_from_wfformat(d), names) for d in forms]
    assert volumes[0] == volumes[1] == volumes[2]


def test_the_main_transfer_size_is_the_one_moving_most_bytes():
    recs = [IoRecord("s", "t1", "a", "read", 4096.0, 10.0, INITIAL_DATA),
            IoRecord("s", "t1", "b", "read", 65536.0, 6.0, INITIAL_DATA),
            IoRecord("s", "t2", "c", "read", 65536.0, 6.0, INITIAL_DATA),
            IoRecord("s", "t1", "o", "write", 512.0, 1.0, ""),
            IoRecord("s", "t2", "p", "write", 8192.0, 1.0, "")]
    v = stage_volumes(IoData(recs, "x"), ["s"])["s"]
    assert v["read_transfer_bytes"] == 65536.0     # 12 MiB against 10
    assert v["write_transfer_bytes"] == 512.0      # a tie: the smaller
    assert "write_transfer_bytes" not in stage_volumes(IoData(recs[:3], "x"), ["s"])["s"]


# --- the command line: costs, train and run with the instance alone -----------------------

@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "profile.csv").write_text(PROFILE)
    return d


def test_costs_from_an_instance_equal_costs_from_its_rows_as_a_csv(tmp_path, inputs, capsys):
    data = recipe_instance("EpigenomicsRecipe", 60, inputs / "wf.json")
    common = ["--template", str(inputs / "wf.json"), "--profile", str(inputs / "profile.csv"),
              "--nodes", "1,2"]
    assert main(["costs", *common, "--out", str(tmp_path / "implied.csv")]) == 0
    assert main(["costs", *common, "--io-data", str(inputs / "wf.json"), "--transfer-size",
                 "1MiB", "--out", str(tmp_path / "given.csv")]) == 0
    write_io_csv(io_data_from_wfformat(data), tmp_path / "rows.csv")
    assert main(["costs", *common, "--io-data", str(tmp_path / "rows.csv"),
                 "--out", str(tmp_path / "from_csv.csv")]) == 0
    texts = [(tmp_path / f).read_text() for f in ("implied.csv", "given.csv", "from_csv.csv")]
    assert texts[0] == texts[1] == texts[2]
    capsys.readouterr()


SPY_DIR = "QOS_TEST_TRANSFER_SPY"


def spy_task(reads: list[str], read_bytes: int, out: str, write_bytes: int, transfer: int,
             write_transfer: int, read_from: int = 0) -> tuple[int, int, float, float]:
    """runner._task, noting the transfer sizes it was given (in a worker process)."""
    import os

    from qos_plugin.planner import runner

    with open(Path(os.environ[SPY_DIR]) / f"{os.getpid()}.txt", "a") as f:
        f.write(f"{out} {transfer} {write_transfer}\n")
    return runner.TASK(reads, read_bytes, out, write_bytes, transfer, write_transfer,
                       read_from)


@pytest.mark.parametrize("transfer, expect", [(None, MIB), ("64KiB", 65536)])
def test_an_instance_trained_and_run_with_no_csv(tmp_path, inputs, capsys, monkeypatch,
                                                 transfer, expect):
    from qos_plugin.planner import runner

    # Workers are forked from this process, so they run the spy too.
    spy = tmp_path / "spy"
    spy.mkdir()
    monkeypatch.setenv(SPY_DIR, str(spy))
    monkeypatch.setattr(runner, "TASK", runner._task, raising=False)
    monkeypatch.setattr(runner, "_task", spy_task)
    data = recipe_instance("EpigenomicsRecipe", 60, inputs / "wf.json")
    registry = tmp_path / "registry"
    argv = ["train", "epi", "--template", str(inputs / "wf.json"), "--profile",
            str(inputs / "profile.csv"), "--nodes", "1,2", "--registry", str(registry)]
    if transfer:
        argv += ["--transfer-size", transfer]
    assert main(argv) == 0
    assert sorted(p.name for p in inputs.iterdir()) == ["profile.csv", "wf.json"]
    model = Registry(registry).load("epi")
    placement = {s: ("ram" if i % 2 else "pfs") for i, s in enumerate(model.stages)}
    scale = 1 / 256
    run = ["run", "epi", "--registry", str(registry), "--nodes", "2", "--scale", str(scale),
           "--placement", ",".join(f"{s}={t}" for s, t in placement.items()),
           "--tier-dir", f"pfs={tmp_path / 'pfs'}", "--tier-dir", f"ram={tmp_path / 'ram'}",
           "--out", str(tmp_path / "run.json")]
    assert main(run) == 0
    capsys.readouterr()
    rec = json.loads((tmp_path / "run.json").read_text())
    want = expected_volumes(data)
    assert set(rec["stages"]) == set(want)
    for stage, w in want.items():
        st = rec["stages"][stage]
        assert len(st["tasks"]) == w["tasks"]
        # The run gives every task of a stage the stage's mean, in whole bytes.
        per_read = round(w["read"] * scale / w["tasks"])
        per_write = round(w["write"] * scale / w["tasks"])
        for t in st["tasks"]:
            assert t["read_bytes"] == per_read, stage
            assert t["written_bytes"] == per_write, stage
            assert Path(t["path"]).stat().st_size == per_write
        assert abs(sum(t["read_bytes"] for t in st["tasks"]) - w["read"] * scale) <= w["tasks"]
        assert st["transfer_bytes"] == {"read": expect, "write": expect}
    used = {line.split(" ", 1)[1] for p in spy.iterdir() for line in p.read_text().splitlines()
            if "/initial_data/" not in line}
    assert used == {f"{expect} {expect}"}


# --- bad instances: one line, nothing written -----------------------------------------------

def _broken(edit: str) -> dict[str, Any]:
    data = hand_instance()
    spec = data["workflow"]["specification"]
    files = {f["id"]: f for f in spec["files"]}
    tasks = {t["id"]: t for t in spec["tasks"]}
    if edit == "missing size":
        del files["ref"]["sizeInBytes"]
    elif edit == "negative size":
        files["p2"]["sizeInBytes"] = -5
    elif edit == "size as text":
        files["p2"]["sizeInBytes"] = "5"
    elif edit == "unknown input":
        tasks["merge_00000005"]["inputFiles"].append("ghost")
    elif edit == "unknown output":
        tasks["work_00000002"]["outputFiles"].append("ghost")
    elif edit == "file twice":
        spec["files"].append({"id": "raw", "sizeInBytes": 1})
    elif edit == "cycle":
        tasks["split_00000001"]["parents"] = ["merge_00000005"]
    elif edit == "no files":
        del spec["files"]
    elif edit == "bad entry":
        spec["files"].append(["x"])
    return data


@pytest.mark.parametrize("edit, says", [
    ("missing size", "file 'ref' (read by task 'work_00000002') has no sizeInBytes"),
    ("negative size", "file 'p2' has sizeInBytes=-5; give a number of bytes from 0 to"),
    ("size as text", "file 'p2' has sizeInBytes=5"),
    ("unknown input", "task 'merge_00000005' reads unknown file 'ghost'"),
    ("unknown output", "task 'work_00000002' writes unknown file 'ghost'"),
    ("file twice", "file id 'raw' is listed twice"),
    ("cycle", "tasks form a cycle"),
    ("no files", "the instance lists no files"),
    ("bad entry", "file without an id"),
])
def test_malformed_instances_are_one_line(tmp_path, inputs, capsys, edit, says):
    (inputs / "wf.json").write_text(json.dumps(_broken(edit)))
    out = tmp_path / "costs.csv"
    assert main(["costs", "--template", str(inputs / "wf.json"), "--profile",
                 str(inputs / "profile.csv"), "--nodes", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qos-plan costs: error: ") and err.count("\n") == 1
    assert says in err, err
    assert not out.exists()


def test_nan_and_huge_sizes_are_refused(tmp_path):
    text = json.dumps(hand_instance()).replace('"sizeInBytes": 4096', '"sizeInBytes": NaN')
    (tmp_path / "nan.json").write_text(text)
    with pytest.raises(InputError, match="NaN that is not a finite number"):
        load_any_io_data(tmp_path / "nan.json")
    data = hand_instance()
    data["workflow"]["specification"]["files"][0]["sizeInBytes"] = float("nan")
    with pytest.raises(InputError, match="sizeInBytes=nan"):
        io_data_from_wfformat(data)
    data["workflow"]["specification"]["files"][0]["sizeInBytes"] = 2.0 ** 70
    with pytest.raises(InputError, match="sizeInBytes=1.18"):
        io_data_from_wfformat(data)


def test_too_many_tasks_are_refused(monkeypatch):
    import qos_plugin.model.wfformat as wfformat

    monkeypatch.setattr(wfformat, "MAX_TASKS", 4)
    with pytest.raises(InputError, match="the instance has 5 tasks; at most 4 are read"):
        io_data_from_wfformat(hand_instance())


def test_embedded_layout_errors_are_one_line():
    data = as_embedded(hand_instance())
    data["workflow"]["tasks"][0]["files"][0]["link"] = "both"
    with pytest.raises(InputError, match="has a file entry"):
        io_data_from_wfformat(data)
    data = as_embedded(hand_instance())
    del data["workflow"]["tasks"][1]["files"][0]["sizeInBytes"]
    with pytest.raises(InputError, match="file 'p1' .read by task 'work_00000002'. has no "):
        io_data_from_wfformat(data)


@pytest.mark.parametrize("argv, says", [
    (["--transfer-size", "0"], "--transfer-size: '0' is less than 1 bytes"),
    (["--transfer-size", "2PiB"], "--transfer-size: '2PiB' is not a size"),
    (["--transfer-size", "4096", "--io-data", "rows.csv"],
     "rows.csv is a workflow-data CSV, which gives transferSize per row"),
    (["--template", "qosflow.json"], "JSON but not a WfFormat instance"),
])
def test_bad_io_options_are_one_line(tmp_path, inputs, capsys, monkeypatch, argv, says):
    monkeypatch.chdir(inputs)
    (inputs / "wf.json").write_text(json.dumps(hand_instance()))
    write_io_csv(io_data_from_wfformat(hand_instance()), inputs / "rows.csv")
    (inputs / "qosflow.json").write_text(json.dumps(template_to_dict(
        template_from_wfformat(hand_instance()))))
    base = {"--template": "wf.json", "--profile": "profile.csv", "--nodes": "1",
            "--out": str(tmp_path / "c.csv")}
    for k, v in zip(argv[::2], argv[1::2], strict=True):
        base[k] = v
    assert main(["costs", *[x for kv in base.items() for x in kv]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qos-plan costs: error: ") and err.count("\n") == 1
    assert says in err, err
    assert not (tmp_path / "c.csv").exists()


def test_a_model_with_a_damaged_transfer_size_is_refused(tmp_path, inputs, capsys):
    (inputs / "wf.json").write_text(json.dumps(hand_instance()))
    reg = tmp_path / "reg"
    assert main(["train", "hand", "--template", str(inputs / "wf.json"), "--profile",
                 str(inputs / "profile.csv"), "--nodes", "1,2", "--registry", str(reg)]) == 0
    path = next((reg / "hand").glob("v1.json"))
    doc = json.loads(path.read_text())
    assert doc["volumes"]["work"]["read_transfer_bytes"] == MIB
    doc["volumes"]["work"]["read_transfer_bytes"] = 0
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="read_transfer_bytes is 0"):
        Registry(reg).load("hand")
    capsys.readouterr()


def test_an_instance_model_is_validated_with_its_transfer_size(tmp_path, inputs, capsys):
    recipe_instance("MontageRecipe", 60, inputs / "wf.json")
    reg = tmp_path / "reg"
    assert main(["train", "m", "--template", str(inputs / "wf.json"), "--profile",
                 str(inputs / "profile.csv"), "--nodes", "1,2", "--registry", str(reg),
                 "--transfer-size", "256KiB"]) == 0
    model = Registry(reg).load("m")
    assert model.provenance["transfer_size"] == 262144
    # validate reads the instance again (no CSV), with the transfer size it was trained on.
    assert main(["validate", "m", "--registry", str(reg), "--nodes", "2", "--placements", "2",
                 "--scale", "0.002", "--tier-dir", f"pfs={tmp_path / 'pfs'}", "--tier-dir",
                 f"ram={tmp_path / 'ram'}", "--out", str(tmp_path / "val")]) == 0
    runs = json.loads((tmp_path / "val/runs.json").read_text())
    assert runs and capsys.readouterr().err.count("error") == 0
    (inputs / "wf.json").write_text((inputs / "wf.json").read_text() + " ")
    assert main(["validate", "m", "--registry", str(reg), "--nodes", "2", "--scale", "0.002",
                 "--tier-dir", f"pfs={tmp_path / 'pfs'}", "--tier-dir",
                 f"ram={tmp_path / 'ram'}", "--out", str(tmp_path / "val2")]) == 1
    assert "changed since training" in capsys.readouterr().err
