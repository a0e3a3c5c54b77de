"""``qos-plan run --backend slurm`` and ``qos-plan validate --backend slurm`` in a real
2-node allocation of the session's cluster, on a tiny workflow of our own trained into
a registry of the test: exact bytes per task (in the record and in the files on each
node's own disk), every task on the node the rule says (its host in the record), the
fan-out between the nodes' tmpfs crossing from one node to the other, the barriers;
and ``deploy/local/profile``: a profile measured by a job through the job paths (the
fan-outs node to node by a second job), its tiers the site's, models trained from it
that sbatch --qos-deadline accepts."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from qos_plugin.model.iodata import stage_volumes
from qos_plugin.model.makespan import MakespanModel
from qos_plugin.model.regions import CartSettings
from qos_plugin.model.synthetic import TierModel, dag_workflow
from qos_plugin.model.tiers import parse_tiers
from qos_plugin.planner.registry import Registry
from qos_plugin.planner.training import build_model, file_fingerprint, fit_table_regions
from qos_plugin.slurm.localcluster import PYTHON
from tests.slurm.conftest import REPO, Cluster

TIERS = parse_tiers("pfs:shared,ram:node-local,ssd:node-local")
SPEED = {"pfs": TierModel(250, 250, 0.5), "ram": TierModel(3000, 3000, 0.3),
         "ssd": TierModel(1500, 1500, 0.4)}
# (stage, level, tasks, {source: MiB read per task}, MiB written per task)
STAGES = [("A", 1, 4, {"initial_data": 1.0}, 0.5),
          ("B", 2, 2, {"A": 1.0}, 0.25),
          ("C", 3, 1, {"B": 0.5}, 0.125)]
# A and B on the nodes' tmpfs: the input copied onto both nodes, A's outputs fanned out
# between them (node to node), B's gathered onto pfs for C.
PLACEMENT = {"A": "ram", "B": "ram", "C": "pfs"}
SCALE = 1 / 64          # whole KiB: 16 KiB per MiB
KIB16 = 16 * 1024
HOSTS = ["node1", "node2"]


@pytest.fixture(scope="module")
def small(cluster: Cluster) -> Path:
    """The tiny workflow trained for 1 and 2 nodes into a registry of this module."""
    wf = dag_workflow("small", STAGES, TIERS, SPEED)
    table = MakespanModel(wf.template, wf.cost_table([1, 2]), TIERS).evaluate([1, 2])
    configs, regions, labels = fit_table_regions(table, CartSettings())
    root = cluster.work / "runner-registry"
    shutil.rmtree(root, ignore_errors=True)
    Registry(root).save(build_model("small", 1, table, configs, regions, labels,
                                    stage_volumes(wf.io_data(), wf.template.stage_names),
                                    {}, "now"))
    return root


def _tier_dirs(cluster: Cluster, name: str) -> dict[str, Path]:
    # pfs: through the qosfs mount (a directory made in the store, as a site makes
    # project directories); ram and ssd: each node's own, at the same path.
    (cluster.local.store_path("pfs") / name).mkdir(exist_ok=True)
    return {t: cluster.local.tier_path(t) / name for t in ("pfs", "ram", "ssd")}


def _in_job(cluster: Cluster, argv: list[str]) -> str:
    """``qos-plan ARGV`` as the batch script of a root job on node1 and node2."""
    script = cluster.script(f"exec {PYTHON} -m qos_plugin.cli.qos_plan "
                            + " ".join(f"'{a}'" for a in argv) + "\n")
    job = cluster.submit("--nodes=2", f"--nodelist={','.join(HOSTS)}", user=None,
                         script=script)
    info = cluster.wait(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"),
                        timeout=180)
    assert info.state == "COMPLETED", cluster.output(job)
    return job


def _files(cluster: Cluster, node: str, d: Path) -> dict[str, int]:
    """Relative path: size of every file under ``d`` as node ``node`` sees it."""
    p = cluster.on_node(node, ["find", str(d), "-type", "f", "-printf", "%P %s\n"])
    assert p.returncode == 0, p
    return {line.split()[0]: int(line.split()[1]) for line in p.stdout.splitlines()}


def test_a_run_with_srun_steps_moves_the_volumes_on_the_nodes_the_rule_says(
        cluster: Cluster, small: Path) -> None:
    dirs = _tier_dirs(cluster, "runner-run")
    out = cluster.work / "runner-run.json"
    out.unlink(missing_ok=True)
    argv = ["run", "small", "--backend", "slurm", "--registry", str(small), "--nodes", "2",
            "--scale", repr(SCALE), "--placement",
            ",".join(f"{s}={t}" for s, t in PLACEMENT.items()), "--out", str(out)]
    for t, d in dirs.items():
        argv += ["--tier-dir", f"{t}={d}"]
    job = _in_job(cluster, argv)
    rec: dict[str, Any] = json.loads(out.read_text())
    assert rec["mode"] == "slurm" and rec["job"] == job and rec["hosts"] == HOSTS

    for name, _level, tasks, reads, write in STAGES:
        st = rec["stages"][name]
        assert [t["task"] for t in st["tasks"]] == list(range(tasks))
        for t in st["tasks"]:
            assert t["read_bytes"] == sum(reads.values()) * KIB16, (name, t)
            assert t["written_bytes"] == write * KIB16, (name, t)
            # Task i on node i % N, whatever its tier.
            assert t["node"] == t["task"] % 2 and t["host"] == HOSTS[t["task"] % 2], t
        assert st["phases"]["execution"]["read_bytes"] == tasks * sum(reads.values()) * KIB16

    # On each node's own tmpfs: the staged input, A's outputs of both nodes (its own
    # written there, the other's fanned out from the other node), B's own only.
    size = {"A": int(0.5 * KIB16), "B": int(0.25 * KIB16)}
    for j, node in enumerate(HOSTS):
        have = _files(cluster, node, dirs["ram"] / "small")
        want = {"initial_data-A/input.dat": 4 * KIB16,      # A's own copy of the input
                **{f"A/t{i}.dat": size["A"] for i in range(4)},
                f"B/t{j}.dat": size["B"]}
        assert have == want, (node, have)
    # The fan-out: each node received the other's two outputs of A.
    out_a = rec["stages"]["A"]["phases"]["stage-out"]
    assert out_a["copies"] == 2 and out_a["written_bytes"] == 4 * size["A"]
    assert rec["stages"]["A"]["phases"]["stage-in"]["copies"] == 2
    # pfs (through qosfs, seen alike from both nodes): the input, B gathered, C's output.
    assert _files(cluster, "node2", dirs["pfs"] / "small") == {
        "initial_data/input.dat": 4 * KIB16, "B/t0.dat": size["B"], "B/t1.dat": size["B"],
        "C/t0.dat": int(0.125 * KIB16)}
    assert rec["stages"]["B"]["phases"]["stage-out"]["copies"] == 2   # one from each node
    # The steps ran in the job: the daemons counted the run's pfs writes under its id.
    written, _read = cluster.job_bytes(job)
    assert written == 4 * KIB16 + 2 * size["B"] + int(0.125 * KIB16), written

    # Barriers: every phase of a level ends before the next begins, and levels in turn.
    spans = [(p["start"], p["end"]) for lv in rec["levels"] for p in lv["phases"].values()
             if p["start"] is not None]
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:],
                                                                      strict=False))
    tasks = {n: rec["stages"][n]["tasks"] for n in PLACEMENT}
    assert max(t["end"] for t in tasks["A"]) <= min(t["start"] for t in tasks["B"])
    assert max(t["end"] for t in tasks["B"]) <= min(t["start"] for t in tasks["C"])


def test_validate_with_the_slurm_backend_writes_its_runs_and_comparison(
        cluster: Cluster, small: Path) -> None:
    # At scale 1 (a few MiB): a model trained from a cost table predicts no other scale.
    dirs = _tier_dirs(cluster, "runner-validate")
    out = cluster.work / "runner-validate"
    shutil.rmtree(out, ignore_errors=True)
    argv = ["validate", "small", "--backend", "slurm", "--registry", str(small), "--nodes", "2",
            "--placements", "2", "--repeat", "1", "--out", str(out), "--json"]
    for t, d in dirs.items():
        argv += ["--tier-dir", f"{t}={d}"]
    job = _in_job(cluster, argv)
    runs = json.loads((out / "runs.json").read_text())
    assert runs["format"] == "qos-runs/1" and runs["backend"] == "slurm"
    assert len(runs["placements"]) == 2 and len(runs["runs"]) == 2
    for rec in runs["runs"]:
        assert rec["mode"] == "slurm" and rec["job"] == job and rec["hosts"] == HOSTS
        assert all(t["host"] == HOSTS[t["task"] % 2] for st in rec["stages"].values()
                   for t in st["tasks"])
    summary = json.loads((out / "validation.json").read_text())
    assert summary["backend"] == "slurm" and summary["nodes"] == 2
    for key in ("concordance", "spearman", "files"):
        assert key in summary, sorted(summary)
    assert (out / "predicted-vs-measured.png").stat().st_size > 0


def test_outside_an_allocation_the_slurm_backend_refuses_in_one_line(
        cluster: Cluster, small: Path, tmp_path: Path) -> None:
    import subprocess

    env = {k: v for k, v in cluster.env.items() if not k.startswith("SLURM_JOB")}
    p = subprocess.run([str(PYTHON), "-m", "qos_plugin.cli.qos_plan", "run", "small",
                        "--backend", "slurm", "--registry", str(small), "--nodes", "2",
                        "--placement", "A=ram,B=ram,C=pfs", "--tier-dir", f"pfs={tmp_path}",
                        "--tier-dir", f"ram={tmp_path}"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p
    assert "not inside a Slurm allocation" in p.stderr
    assert list(tmp_path.iterdir()) == []


def test_profile_through_the_job_paths_trains_models_sbatch_accepts(
        cluster: Cluster, site_edit: Any) -> None:
    import subprocess

    # Trained into a copy of the registry, so the other tests keep the nominal pipeline.
    registry = cluster.work / "profile-registry"
    shutil.rmtree(registry, ignore_errors=True)
    shutil.copytree(cluster.root / "registry", registry)
    site_edit(f'registry = "{cluster.root / "registry"}"', f'registry = "{registry}"')
    p = subprocess.run([str(REPO / "deploy" / "local" / "profile"), "--dir", str(cluster.root)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    print(p.stdout)
    profile = cluster.root / "profile" / "profile.csv"
    with open(profile, newline="") as f:
        rows = list(csv.DictReader(f))
    io = {r["storageType"] for r in rows if r["operation"] in ("read", "write")}
    assert io == {"pfs", "ram", "ssd"}
    moves = {r["storageType"] for r in rows if r["operation"] in ("cp", "scp")}
    assert {"pfs-ram", "ram-pfs", "pfs-ssd", "ssd-pfs", "ram-ram", "ssd-ssd"} <= moves
    assert all(float(r["trMiB"]) > 0 for r in rows)
    # A phase's start, timed with srun steps inside the profile job: one value for all.
    starts = {r["phaseStartSeconds"] for r in rows}
    assert len(starts) == 1 and 0 < float(starts.pop()) < 5, starts
    # The fan-outs measured node to node through srun (a second job on two nodes): the
    # profile's scp rows are that job's, for 1 and 2 copies of a small and a large
    # fan-out of each node-local tier.
    with open(cluster.root / "profile" / "fanout.csv", newline="") as f:
        fanout = list(csv.DictReader(f))
    scp = [r for r in rows if r["operation"] == "scp"]
    assert sorted((r["storageType"], int(r["aggregateFilesizeMB"]), int(r["numTasks"]))
                  for r in scp) == [(t, mib, k) for t in ("ram-ram", "ssd-ssd")
                                    for mib in (16, 128) for k in (1, 2)]
    # (The phase start is the profile job's, one value for the whole file; what a
    # phase on 2, ... nodes takes more, the fan-out job's, on all the cluster's nodes.)
    more = {r["phaseStartMoreSeconds"] for r in rows}
    assert len(more) == 1, more
    more_s = [float(m) for m in more.pop().split(";")]
    assert len(more_s) == len(cluster.local.node_names()) - 1
    assert all(0 <= m < 5 for m in more_s)
    assert {r["phaseStartMoreSeconds"] for r in fanout} == {rows[0]["phaseStartMoreSeconds"]}
    blank = {"phaseStartSeconds": "", "phaseStartMoreSeconds": ""}
    assert [{**r, **blank} for r in scp] == [{**r, **blank} for r in fanout]
    assert "fan-outs by job " in p.stdout
    # Through qosfs: the daemons counted the job's bytes on pfs (64 MiB per write run).
    job = p.stdout.split("measured by job ")[1].split()[0]
    written, read = cluster.job_bytes(job)
    assert written >= 4 * 64 * (1 << 20) and read > 0, (written, read)
    assert "| pfs | shared | qosfs mount (daemons) |" in (cluster.root / "profile"
                                                           / "speeds.md").read_text()

    reg = Registry(registry)
    for name in ("pipeline", "1kgenome"):
        model = reg.load(name)
        assert model.provenance["inputs"]["profile"] == file_fingerprint(profile)
        assert sorted(model.tier_names) == ["pfs", "ram", "ssd"]
        ref = f"{name}@{model.version}"
        job = cluster.submit(f"--qos-workflow={ref}", "--qos-deadline=7-00:00:00")
        info = cluster.wait(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=120)
        assert info.state == "COMPLETED", (ref, info, cluster.output(job))
        # Planned by the user's sbatch (the SPANK helper reads the copy) with this model.
        assert f": {ref} region" in info.comment, info.comment
    assert reg.versions("pipeline") == [1, 2]
