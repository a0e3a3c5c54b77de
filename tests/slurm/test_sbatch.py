"""sbatch --qos-* against the real cluster: plans, placements, staging,
reservations, refusals, and what happens when the planner or a daemon is down."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.slurm.conftest import DONE, Cluster

MiB = 1 << 20

OPTIONS = ("--qos-deadline", "--qos-workflow", "--qos-max-nodes", "--qos-exclude-tier",
           "--qos-objective")
# The pipeline's shared-only placement takes ~11 min: a 5-minute deadline needs a
# node-local tier, so these jobs get directories made by the node prolog.
NEEDS_LOCAL = ("--qos-workflow=pipeline", "--qos-deadline=5:00")
WAIT_FOR_GO = """
env | grep '^SLURM_SPANK_QOS_' | sort
for t in ${SLURM_SPANK_QOS_LOCAL//,/ }; do
    v=SLURM_SPANK_QOS_DIR_${t^^}; d=${!v}
    echo "LISTING $t $d"; ls -A "$d"
    touch "$d/written-by-job" && echo "WROTE $t"
    stat -c "OWNER $t %u %a" "$d"
    f="$d/input-feasible/reads.txt"; [ -f "$f" ] && echo "STAGED $t $(wc -c < "$f")"
done
touch "$GO.running"
while [ ! -e "$GO" ]; do sleep 0.2; done
"""


def _env(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines()
                if line.startswith("SLURM_SPANK_QOS_"))


def test_options_in_sbatch_help(cluster: Cluster) -> None:
    import subprocess

    out = subprocess.run(["sbatch", "--help"], env=cluster.env, capture_output=True,
                         text=True).stdout
    for opt in OPTIONS:
        assert opt in out


def test_feasible_submit_places_stages_and_reserves(cluster: Cluster, tmp_path: Path) -> None:
    data = cluster.work / "input-feasible"
    data.mkdir()
    (data / "reads.txt").write_text("ACGT" * 1000)
    data.chmod(0o755)
    (data / "reads.txt").chmod(0o644)
    go = cluster.work / "go-feasible"
    script = cluster.script(f"GO={go}\n" + WAIT_FOR_GO)
    job = cluster.submit(*NEEDS_LOCAL, f"--qos-stage-in={data}", script=script)

    info = cluster.wait(job, ("RUNNING",))
    cluster.wait_for(lambda: Path(f"{go}.running").exists(), what="the job script")
    # The controller's view: time limit from the deadline, comment names the region.
    assert info.time_limit == "00:05:00"
    assert re.search(r"qos q[0-9a-f]{12}: pipeline@\d+ region \d+ \(.*\), predicted \d+s",
                     info.comment), info.comment
    env = _env(cluster.output(job))
    local = env["SLURM_SPANK_QOS_LOCAL"].split(",")
    assert local and local[0], env
    assert env["SLURM_SPANK_QOS_DEADLINE"] == "300"
    assert float(env["SLURM_SPANK_QOS_MAKESPAN"]) <= 300
    stages = dict(kv.split("=") for kv in env["SLURM_SPANK_QOS_STAGES"].split(","))
    assert set(stages) == {"prep_a", "prep_b", "analyze", "summary"}
    for stage, tier in stages.items():
        assert env[f"SLURM_SPANK_QOS_STAGE_{stage.upper()}"].startswith(f"{tier}:")
    dirs = dict(kv.split("=") for kv in env["SLURM_SPANK_QOS_DIRS"].split(","))
    out = cluster.output(job)
    uid = __import__("pwd").getpwnam("qosuser").pw_uid
    for tier in local:
        assert env[f"SLURM_SPANK_QOS_DIR_{tier.upper()}"] == dirs[tier]
        assert f"WROTE {tier}" in out and f"OWNER {tier} {uid} 700" in out, out
        # On the job's node only: the head has no such directory.
        assert not Path(dirs[tier]).exists()
    for tier in env["SLURM_SPANK_QOS_IN_TIERS"].split(","):
        if tier in local:
            assert f"STAGED {tier} 4000" in out, out
    # Shared-tier directories exist too (made by the prolog in the store), the user's own.
    store = cluster.local.store_path("pfs")
    if "pfs" in dirs:
        assert Path(dirs["pfs"]).parent.parent == cluster.local.tier_path("pfs")
        assert (store / "qosuser" / Path(dirs["pfs"]).name).stat().st_uid == uid

    # The reservation is on the daemons while the job runs, and qosctl shows it: on the
    # tiers enforced through daemons only (the node-local tiers are used directly).
    res = cluster.reservations(job)
    wanted = {t: float(b) for t, b in
              (kv.split("=") for kv in env["SLURM_SPANK_QOS_BANDWIDTH"].split(","))}
    assert {t for _, t, _ in res} == {t for t in wanted if t not in local}, res
    # The environment carries the least the deadline needs (the contract divided by the
    # deadline's slack); with the tier's bandwidth not declared, nothing else is promised
    # there, so the prolog reserves the contract in full.
    from qos_plugin.planner.contract import deadline_stretch

    most = deadline_stretch(float(env["SLURM_SPANK_QOS_MAKESPAN"]), 300.0)
    for daemon, tier, bps in res:
        # a shared tier's total split over its two daemons
        assert bps == pytest.approx(wanted[tier] * most * MiB / 2, rel=1e-2), (daemon, tier)
    shown = cluster.qosctl("reservations")
    assert shown.returncode == 0 and f"job={job}" in shown.stdout, shown

    go.touch()
    cluster.wait(job, DONE)
    assert cluster.job(job).state == "COMPLETED"
    cluster.wait_for(lambda: not cluster.reservations(job), what="the release")
    for tier in local:
        cluster.wait_for(lambda t=tier: cluster.on_node("node1", ["test", "-e", dirs[t]])
                         .returncode != 0, what=f"teardown of {dirs[tier]}")
    # The shared directory is removed after the job (no --qos-keep).
    if "pfs" in dirs:
        cluster.wait_for(lambda: not (store / "qosuser" / Path(dirs["pfs"]).name).exists(),
                         what="removal of the shared directory")


def test_stage_out_copies_node_local_results(cluster: Cluster) -> None:
    out_dir = cluster.work / "results-out"
    script = cluster.script(
        'for t in ${SLURM_SPANK_QOS_OUT_TIERS//,/ }; do v=SLURM_SPANK_QOS_DIR_${t^^}; '
        'echo "result of $SLURM_JOB_ID" > "${!v}/result.txt"; done\n'
        'echo "OUT_TIERS=$SLURM_SPANK_QOS_OUT_TIERS"\n')
    # fastest on node-local tiers only: the last stage writes on a node-local tier
    job = cluster.submit("--qos-workflow=pipeline", "--qos-objective=fastest",
                         "--qos-exclude-tier=pfs", f"--qos-stage-out={out_dir}",
                         script=script)
    cluster.wait(job, DONE)
    assert cluster.job(job).state == "COMPLETED", cluster.job(job)
    out = cluster.output(job)
    assert re.search(r"OUT_TIERS=\w+", out), out
    cluster.wait_for(lambda: (out_dir / "result.txt").exists(), what="the stage-out")
    assert (out_dir / "result.txt").read_text() == f"result of {job}\n"


def test_infeasible_deadline_names_binding_constraint_and_closest(cluster: Cluster) -> None:
    p = cluster.sbatch("--qos-workflow=pipeline", "--qos-deadline=0:10")
    assert p.returncode != 0
    line = next(x for x in p.stderr.splitlines() if "qos:" in x)
    assert "meets --qos-deadline=00:00:10" in line
    assert re.search(r"closest: \d\d:\d\d:\d\d on \d nodes? \(prep_a=\w+ .*\), "
                     r"\d\d:\d\d:\d\d late", line), line
    m = re.search(r"--qos-deadline=(\d\d:\d\d:\d\d) would work", line)
    assert m, line
    # ... and the advice holds.
    ok = cluster.sbatch("--qos-workflow=pipeline", f"--qos-deadline={m.group(1)}",
                        "--hold")
    assert ok.returncode == 0, ok.stderr
    _cancel(cluster, ok.stdout.strip())


def test_excluding_tiers_can_be_binding(cluster: Cluster) -> None:
    p = cluster.sbatch("--qos-workflow=pipeline", "--qos-deadline=1:00",
                       "--qos-exclude-tier=ram,ssd")
    assert p.returncode != 0
    assert "without --qos-exclude-tier:" in p.stderr, p.stderr


def test_malformed_and_unknown_inputs_are_refused(cluster: Cluster) -> None:
    cases = {
        ("--qos-workflow=pipeline", "--qos-deadline=banana"):
            "--qos-deadline: 'banana' is not a duration",
        ("--qos-workflow=nosuch", "--qos-deadline=5:00"):
            "--qos-workflow: 'nosuch': not in registry",
        ("--qos-workflow=pipeline", "--qos-exclude-tier=tape"):
            "--qos-exclude-tier: unknown tier 'tape'",
        ("--qos-workflow=pipeline", "--qos-max-nodes=zero"):
            "--qos-max-nodes: 'zero' is not a node count",
        ("--qos-deadline=5:00",): "--qos-workflow: missing",
        ("--qos-workflow=pipeline", "--qos-objective=cheapest"):
            "--qos-objective: unknown objective 'cheapest'",
    }
    before = _queue(cluster)
    for args, message in cases.items():
        p = cluster.sbatch(*args)
        assert p.returncode != 0, args
        assert message in p.stderr, (args, p.stderr)
    assert _queue(cluster) == before        # nothing was submitted


def test_job_arrays_with_a_placement_are_refused(cluster: Cluster) -> None:
    p = cluster.sbatch("--array=1-2", *NEEDS_LOCAL)
    assert p.returncode != 0
    assert "job arrays cannot use --qos-* options" in p.stderr, p.stderr


def test_root_gets_node_local_tiers_too(cluster: Cluster) -> None:
    # Node-local tiers no longer need a burst buffer, which refused root.
    script = cluster.script('for t in ${SLURM_SPANK_QOS_LOCAL//,/ }; do '
                            'v=SLURM_SPANK_QOS_DIR_${t^^}; test -d "${!v}" && echo "HAS $t"; '
                            'done\n')
    job = cluster.submit(*NEEDS_LOCAL, user=None, script=script)
    assert cluster.wait(job, DONE).state == "COMPLETED"
    assert "HAS " in cluster.output(job), cluster.output(job)


def test_planner_unreachable_fail_open_submits_without_placement(cluster: Cluster,
                                                                 plugstack) -> None:
    plugstack(helper="/nonexistent/qos-slurm-plan", on_unavailable="open")
    script = cluster.script("echo PLACEMENT=${SLURM_SPANK_QOS_ID:-none}\n")
    p = cluster.sbatch(*NEEDS_LOCAL, script=script)
    assert p.returncode == 0, p.stderr
    assert "submitting without a placement" in p.stderr
    job = p.stdout.strip()
    cluster.wait(job, DONE)
    assert "PLACEMENT=none" in cluster.output(job)


def test_planner_unreachable_fail_closed_refuses(cluster: Cluster, plugstack,
                                                 site_edit) -> None:
    plugstack(on_unavailable="closed")
    # The planner runs but its model store is gone.
    site_edit('registry = "', 'registry = "/nonexistent')
    p = cluster.sbatch(*NEEDS_LOCAL)
    assert p.returncode != 0
    assert "planner unavailable" in p.stderr and "on_unavailable=closed" in p.stderr


def test_daemon_down_fail_open_runs_without_its_reservation(cluster: Cluster) -> None:
    cluster.local.stop_daemon(1)
    try:
        job = cluster.submit("--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd",
                             user=None)
        cluster.wait(job, DONE)
        assert cluster.job(job).state == "COMPLETED"
        log = cluster.qos_log()
        assert re.search(rf"job {job}: reserve on \S+ tier pfs failed: UNAVAILABLE", log), log
        assert re.search(rf"job {job}: reserved .* tier pfs", log), log
    finally:
        cluster.local.start_daemon(1)


def test_daemon_down_fail_closed_ends_the_job_with_the_reason(cluster: Cluster,
                                                              site_edit) -> None:
    site_edit('on_unavailable = "open"', 'on_unavailable = "closed"')
    cluster.local.stop_daemon(1)
    try:
        script = cluster.script("echo RAN\n")
        job = cluster.submit("--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd",
                             user=None, script=script)
        assert cluster.wait(job, DONE, timeout=60).state == "CANCELLED"
        assert "on_unavailable=closed" in _reason(cluster, job), _reason(cluster, job)
        assert not (cluster.work / f"slurm-{job}.out").exists() or \
            "RAN" not in cluster.output(job)
        # daemon 0 answered, daemon 1 did not: what 0 granted is taken back
        log = cluster.qos_log()
        assert re.search(rf"job {job}: reserved .* on {cluster.local.daemon_addresses()[0]}",
                         log), log
        assert not cluster.reservations(job, daemons=[0])
    finally:
        cluster.local.start_daemon(1)


def test_cancel_mid_run_releases_and_tears_down(cluster: Cluster) -> None:
    go = cluster.work / "go-never"
    job = cluster.submit(*NEEDS_LOCAL, script=cluster.script(f"GO={go}\n" + WAIT_FOR_GO))
    cluster.wait(job, ("RUNNING",))
    cluster.wait_for(lambda: Path(f"{go}.running").exists(), what="the job script")
    env = _env(cluster.output(job))
    dirs = dict(kv.split("=") for kv in env["SLURM_SPANK_QOS_DIRS"].split(","))
    local = env["SLURM_SPANK_QOS_LOCAL"].split(",")
    assert cluster.reservations(job)
    node = cluster.job(job).fields["NodeList"]

    def on_node(t: str) -> bool:
        return cluster.on_node(node, ["test", "-d", dirs[t]]).returncode == 0
    assert all(on_node(t) for t in local)
    _cancel(cluster, job)
    assert cluster.wait(job, DONE).state == "CANCELLED"
    cluster.wait_for(lambda: not cluster.reservations(job), what="the release")
    for t in local:
        cluster.wait_for(lambda t=t: not on_node(t), what=f"teardown of {t}")


def test_out_of_space_tier_fails_staging_with_a_clear_reason(cluster: Cluster,
                                                            site_edit) -> None:
    data = cluster.work / "input-big"
    data.mkdir()
    (data / "big.bin").write_bytes(b"\0" * (2 << 20))
    data.chmod(0o755)
    (data / "big.bin").chmod(0o644)
    text = cluster.site_text()
    for tier in ("ram", "ssd"):
        block = f'[tiers.{tier}]\nkind = "node-local"\n'
        assert block in text
        site_edit(block, block + 'capacity = "1MiB"\n')
    job = cluster.submit(*NEEDS_LOCAL, f"--qos-stage-in={data}")
    cluster.wait_for(lambda: "out of space" in _reason(cluster, job), timeout=60,
                     what="the staging failure")
    reason = _reason(cluster, job)
    assert re.search(r"tier \w+: out of space on node\d: the stage-in needs 2\.0 MiB",
                     reason), reason
    assert cluster.wait(job, DONE).state == "CANCELLED"
    # A fault of the request, not of the node: no node was drained.
    assert _drained(cluster) == ""


def _reason(cluster: Cluster, job: str) -> str:
    info = cluster.job(job)
    # A hook that ends the job for its request's fault says why in AdminComment.
    return f"{info.fields.get('AdminComment', '')} {info.reason}"


def _drained(cluster: Cluster) -> str:
    import subprocess

    return subprocess.run(["sinfo", "-h", "-N", "-t", "drain,drained,draining,down", "-o",
                           "%N %T"], env=cluster.env, capture_output=True,
                          text=True).stdout.strip()


def _queue(cluster: Cluster) -> str:
    import subprocess

    return subprocess.run(["squeue", "-h", "-o", "%i"], env=cluster.env, capture_output=True,
                          text=True).stdout


def _cancel(cluster: Cluster, job: str) -> None:
    import subprocess

    subprocess.run(["scancel", job], env=cluster.env, check=True)


def test_command_backend_reads_the_real_cluster(cluster: Cluster) -> None:
    nodes = cluster.slurm.nodes()
    assert [n.name for n in nodes] == ["node1", "node2", "node3"]
    assert nodes[0].cpus >= 1 and "debug" in nodes[0].partitions
    job = cluster.submit("--hold", "-J", "held-probe", "--comment", "probe x=1")
    info = cluster.job(job)
    assert (info.id, info.name, info.user, info.state) == (job, "held-probe", "qosuser",
                                                            "PENDING")
    assert info.comment == "probe x=1"
    _cancel(cluster, job)
    assert cluster.slurm.job("999999") is None
    assert shutil.which("scontrol")


def test_failed_job_releases_its_reservation(cluster: Cluster) -> None:
    job = cluster.submit("--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd", user=None,
                         script=cluster.script("exit 3\n"))
    assert cluster.wait(job, DONE).state == "FAILED"
    log = cluster.qos_log()
    assert re.search(rf"job {job}: reserved .* tier pfs", log), log
    cluster.wait_for(lambda: f"job {job}: released" in cluster.qos_log(), what="the release")
    assert not cluster.reservations(job)


def _fake_planner(cluster: Cluster, lines: str) -> str:
    """A planner helper that answers ``lines`` whatever it is asked."""
    path = cluster.work / f"fake-plan-{abs(hash(lines))}"
    path.write_text("#!/bin/sh\ncat <<'END'\n" + lines + "END\n")
    path.chmod(0o755)
    return str(path)


def test_job_submit_refuses_a_malformed_placement(cluster: Cluster, plugstack) -> None:
    plugstack(helper=_fake_planner(cluster, "QOS_ID=q0123456789ab\nQOS_NODES=many\n"
                                            "QOS_MAKESPAN=10\nQOS_DIRS=pfs=/x\n"))
    p = cluster.sbatch("--qos-workflow=pipeline")
    assert p.returncode != 0
    assert "qos: malformed placement (QOS_NODES='many'" in p.stderr, p.stderr


def test_unknown_tier_at_staging_fails_with_a_clear_reason(cluster: Cluster,
                                                           plugstack) -> None:
    # A placement on a tier this cluster does not have (as after the site dropped it).
    d = "/tmp/nvme/qosuser/q0123456789ab"
    plugstack(helper=_fake_planner(cluster, (
        "QOS_ID=q0123456789ab\nQOS_WORKFLOW=pipeline@1\nQOS_NODES=1\nQOS_MAKESPAN=10\n"
        f"QOS_REGION=0\nQOS_STAGES=prep_a=nvme\nQOS_DIRS=nvme={d}\nQOS_LOCAL=nvme\n"
        "QOS_IN_TIERS=nvme\nQOS_OUT_TIERS=\n")))
    job = cluster.submit("--qos-workflow=pipeline")
    cluster.wait_for(lambda: "not configured" in _reason(cluster, job), timeout=60,
                     what="the staging failure")
    assert "tier 'nvme' is not configured on this cluster" in _reason(cluster, job)
    assert cluster.wait(job, DONE).state == "CANCELLED"


def test_srun_outside_an_allocation_gives_its_tasks_the_placement(cluster: Cluster) -> None:
    import subprocess

    argv = ["runuser", "-u", "qosuser", "--", "env", f"SLURM_CONF={cluster.env['SLURM_CONF']}",
            "srun", "--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd",
            "sh", "-c", 'echo "ID=$SLURM_SPANK_QOS_ID STAGES=$SLURM_SPANK_QOS_STAGES"']
    p = subprocess.run(argv, env=cluster.env, capture_output=True, text=True, timeout=120,
                       cwd=cluster.work)
    assert p.returncode == 0, p.stderr
    assert re.search(r"^ID=q[0-9a-f]{12} STAGES=prep_a=pfs,", p.stdout, re.M), p.stdout


def test_a_smaller_placement_than_the_node_count_asked_runs(cluster: Cluster) -> None:
    p = cluster.sbatch("-N", "3", "--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd",
                       script=cluster.script("echo NODES=$SLURM_NNODES\n"))
    assert p.returncode == 0, p.stderr
    assert "the placement uses 1 node(s)" in p.stderr
    job = p.stdout.strip()
    assert cluster.wait(job, DONE).state == "COMPLETED"
    assert "NODES=1" in cluster.output(job)


def test_refusals_at_sbatch_are_one_line(cluster: Cluster) -> None:
    before = _queue(cluster)
    for args, needle in ((("--qos-workflow=pipeline", "--qos-stage-in=/nonexistent/in"),
                          "--qos-stage-in: '/nonexistent/in' does not exist or you cannot "
                          "read it"),
                         (("--qos-workflow=pipeline", "--qos-deadline=0:05"),
                          "meets --qos-deadline=00:00:05")):
        p = cluster.sbatch(*args)
        assert p.returncode != 0
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], p.stderr
    assert _queue(cluster) == before


def test_a_time_limit_below_the_prediction_is_warned_of(cluster: Cluster) -> None:
    p = cluster.sbatch("--time=1", "--hold", "--qos-workflow=pipeline",
                       "--qos-exclude-tier=ram,ssd")
    assert p.returncode == 0, p.stderr
    assert re.search(r"warning: --time=1 min is below the predicted makespan of \d+ s",
                     p.stderr), p.stderr
    _cancel(cluster, p.stdout.strip())


def test_stage_out_from_the_shared_tier_keeps_the_destination_and_removes_the_dir(
        cluster: Cluster) -> None:
    out = cluster.work / "shared-out"
    out.mkdir()
    out.chmod(0o755)
    import os
    import pwd
    pw = pwd.getpwnam("qosuser")
    os.chown(out, pw.pw_uid, pw.pw_gid)
    script = cluster.script('echo done > "$SLURM_SPANK_QOS_DIR_PFS/final.txt"\n'
                            'echo "DIR $SLURM_SPANK_QOS_DIR_PFS"\n')
    job = cluster.submit("--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd",
                         f"--qos-stage-out={out}", script=script)
    assert cluster.wait(job, DONE).state == "COMPLETED", cluster.output(job)
    cluster.wait_for(lambda: (out / "final.txt").exists(), what="the shared stage-out")
    assert (out / "final.txt").read_text() == "done\n"
    assert out.stat().st_mode & 0o777 == 0o755
    m = re.search(r"^DIR (\S+)$", cluster.output(job), re.M)
    assert m
    stored = cluster.local.store_path("pfs") / "qosuser" / Path(m.group(1)).name
    cluster.wait_for(lambda: not stored.exists(), what="the shared directory's removal")


def test_qos_keep_keeps_the_shared_directory(cluster: Cluster) -> None:
    script = cluster.script('echo kept > "$SLURM_SPANK_QOS_DIR_PFS/k.txt"\n'
                            'echo "DIR $SLURM_SPANK_QOS_DIR_PFS"\n')
    job = cluster.submit("--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd",
                         "--qos-keep", script=script)
    assert cluster.wait(job, DONE).state == "COMPLETED", cluster.output(job)
    m = re.search(r"^DIR (\S+)$", cluster.output(job), re.M)
    assert m
    stored = cluster.local.store_path("pfs") / "qosuser" / Path(m.group(1)).name
    cluster.wait_for(lambda: f"job {job}: keeping" in cluster.qos_log(), what="the epilog")
    assert (stored / "k.txt").read_text() == "kept\n"


def test_workflow_versions_are_named_with_or_without_v(cluster: Cluster) -> None:
    for ref in ("pipeline@1", "pipeline@v1"):
        p = cluster.sbatch(f"--qos-workflow={ref}", "--qos-exclude-tier=ram,ssd", "--hold")
        assert p.returncode == 0, (ref, p.stderr)
        _cancel(cluster, p.stdout.strip())


def test_reservations_are_admitted_against_the_tiers_bandwidth(cluster: Cluster,
                                                               site_edit) -> None:
    """A tier that sustains 500 MiB/s (250 on each of its two daemons) holds one
    pipeline job on it (163.9 MiB/s a daemon), not two; a job that needs more than the
    tier gives at all is refused at sbatch."""
    block = '[tiers.pfs]\nkind = "shared"\n'
    site_edit(block, block + 'bandwidth = "500MiB/s"\n')
    go = cluster.work / "go-admission"
    script = cluster.script(f"while [ ! -e {go} ]; do sleep 0.2; done\n")
    first = cluster.submit("--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd",
                           script=script)
    cluster.wait(first, ("RUNNING",))
    cluster.wait_for(lambda: len(cluster.reservations(first)) == 2, what="the reservation")
    from tokenbucket_daemon.client import AdminClient

    c = AdminClient(cluster.local.daemon_addresses()[0], cluster.token,
                    tls=cluster.local.admin_tls())
    (mine,) = [q for q in c.list_policies() if q.selector.value == first]
    c.close()
    # Its limit is the part of the daemon nobody else was promised: all of it.
    assert mine.limit_bps == pytest.approx(250 * MiB)
    second = cluster.submit("--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd")
    assert cluster.wait(second, DONE).state == "CANCELLED"
    assert "tier pfs cannot hold the job's reservation" in _reason(cluster, second)
    go.touch()
    assert cluster.wait(first, DONE).state == "COMPLETED"
    # Once the first has released, the same job fits again.
    cluster.wait_for(lambda: not cluster.reservations(first), what="the release")
    third = cluster.submit("--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd")
    assert cluster.wait(third, DONE).state == "COMPLETED"
    # 300 MiB/s: the placement above (327.8 MiB/s) no longer fits, nor does any other on
    # pfs alone (the planner looks for one: tests/unit/test_slurm_plan.py): refused at
    # sbatch, in one line that says what the tier sustains.
    site_edit('bandwidth = "500MiB/s"', 'bandwidth = "300MiB/s"')
    p = cluster.sbatch("--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd")
    assert p.returncode != 0
    assert "needs no more than its tiers sustain (pfs 300.0 MiB/s)" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_a_site_reserving_the_least_reserves_what_the_deadline_needs(cluster: Cluster,
                                                                     site_edit) -> None:
    """reserve = "least": the prolog reserves the contract divided by the deadline's
    slack (what sbatch put in the environment), not the contract in full."""
    site_edit("registry = ", 'reserve = "least"\nregistry = ')
    go = cluster.work / "go-least"
    script = cluster.script("env | grep '^SLURM_SPANK_QOS_' | sort\n"
                            f"touch {go}.running\nwhile [ ! -e {go} ]; do sleep 0.2; done\n")
    job = cluster.submit("--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd",
                         "--qos-deadline=20:00", script=script)
    cluster.wait(job, ("RUNNING",))
    cluster.wait_for(lambda: Path(f"{go}.running").exists(), what="the job script")
    env = _env(cluster.output(job))
    from qos_plugin.planner.contract import deadline_stretch

    most = deadline_stretch(float(env["SLURM_SPANK_QOS_MAKESPAN"]), 1200.0)
    assert most > 1.2, env          # the deadline leaves slack to give back
    least = {t: float(b) for t, b in
             (kv.split("=") for kv in env["SLURM_SPANK_QOS_BANDWIDTH"].split(","))}
    cluster.wait_for(lambda: len(cluster.reservations(job)) == 2, what="the reservation")
    for daemon, tier, bps in cluster.reservations(job):
        assert tier == "pfs"
        assert bps == pytest.approx(least["pfs"] * MiB / 2, rel=1e-2), daemon
    go.touch()
    assert cluster.wait(job, DONE).state == "COMPLETED"
