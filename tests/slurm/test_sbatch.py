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
# node-local tier, so these jobs go through the burst buffer.
NEEDS_LOCAL = ("--qos-workflow=pipeline", "--qos-deadline=5:00")
WAIT_FOR_GO = """
env | grep '^SLURM_SPANK_QOS_\\|^QOS_DIR_' | sort
for t in ${SLURM_SPANK_QOS_LOCAL//,/ }; do
    v=QOS_DIR_${t^^}; d=${!v}
    echo "LISTING $t $d"; ls -A "$d"
    touch "$d/written-by-job" && echo "WROTE $t"
done
touch "$GO.running"
while [ ! -e "$GO" ]; do sleep 0.2; done
"""


def _env(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines()
                if line.startswith(("SLURM_SPANK_QOS_", "QOS_DIR_")))


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
    for tier in local:
        d = Path(dirs[tier])
        assert env[f"QOS_DIR_{tier.upper()}"] == str(d)      # exported by the burst buffer
        assert d.stat().st_uid == __import__("pwd").getpwnam("qosuser").pw_uid
        assert (d / "written-by-job").exists()
    for tier in env["SLURM_SPANK_QOS_IN_TIERS"].split(","):
        staged = Path(dirs[tier]) / "input-feasible" / "reads.txt"
        assert staged.read_text() == "ACGT" * 1000
    # Shared-tier directories exist too (made by the prolog), the user's own.
    for tier, d in dirs.items():
        assert Path(d).stat().st_uid == __import__("pwd").getpwnam("qosuser").pw_uid, (tier, d)

    # The reservation is on the daemons while the job runs, and qosctl shows it.
    res = cluster.reservations(job)
    wanted = {t: float(b) for t, b in
              (kv.split("=") for kv in env["SLURM_SPANK_QOS_BANDWIDTH"].split(","))}
    assert {t for _, t, _ in res} == set(wanted), res
    site = cluster.site_text()
    for daemon, tier, bps in res:
        # a shared tier's total split over its two daemons; a node-local tier's
        # per-node rate on its one daemon
        serving = 2 if f'[tiers.{tier}]\nkind = "shared"' in site else 1
        assert bps == pytest.approx(wanted[tier] * MiB / serving, rel=1e-3), (daemon, tier)
    shown = cluster.qosctl("reservations")
    assert shown.returncode == 0 and f"job={job}" in shown.stdout, shown

    go.touch()
    cluster.wait(job, DONE)
    assert cluster.job(job).state == "COMPLETED"
    cluster.wait_for(lambda: not cluster.reservations(job), what="the release")
    for tier in local:
        cluster.wait_for(lambda t=tier: not Path(dirs[t]).exists(),
                         what=f"teardown of {dirs[tier]}")


def test_stage_out_copies_node_local_results(cluster: Cluster) -> None:
    out_dir = cluster.work / "results-out"
    script = cluster.script(
        'for t in ${SLURM_SPANK_QOS_OUT_TIERS//,/ }; do v=QOS_DIR_${t^^}; '
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
    assert re.search(r"closest: \d\d:\d\d:\d\d on 1 node \(prep_a=\w+ .*\), "
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


def test_hand_written_qos_burst_buffer_is_refused(cluster: Cluster) -> None:
    forged = "#BB_LUA qos id=q000000000000 dirs=ram=/etc"
    # alone, and next to a placement that needs no burst buffer of its own
    for extra in ((), ("--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd")):
        p = cluster.sbatch("--bb", forged, *extra)
        assert p.returncode != 0, extra
        assert "comes from --qos-* options only" in p.stderr, extra


def test_job_arrays_with_a_placement_are_refused(cluster: Cluster) -> None:
    p = cluster.sbatch("--array=1-2", *NEEDS_LOCAL)
    assert p.returncode != 0
    assert "job arrays cannot use --qos-* options" in p.stderr, p.stderr


def test_root_cannot_use_node_local_tiers(cluster: Cluster) -> None:
    p = cluster.sbatch(*NEEDS_LOCAL, user=None)
    assert p.returncode != 0
    assert "root cannot use burst buffers" in p.stderr and "--qos-exclude-tier=" in p.stderr


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


def test_daemon_down_fail_closed_holds_the_job(cluster: Cluster, site_edit) -> None:
    site_edit('on_unavailable = "open"', 'on_unavailable = "closed"')
    cluster.local.stop_daemon(1)
    try:
        script = cluster.script("echo RAN\n")
        job = cluster.submit("--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd",
                             user=None, script=script)
        cluster.wait_for(lambda: "on_unavailable=closed, failing the prolog"
                         in cluster.qos_log() and f"job {job}:" in cluster.qos_log(),
                         what="the prolog failing")
        cluster.wait(job, ("PENDING",), timeout=30)
        assert not (cluster.work / f"slurm-{job}.out").exists() or \
            "RAN" not in cluster.output(job)
        # daemon 0 answered, daemon 1 did not: what 0 granted is taken back
        log = cluster.qos_log()
        assert re.search(rf"job {job}: reserved .* on {cluster.local.daemon_addresses()[0]}",
                         log), log
        assert not cluster.reservations(job, daemons=[0])
        _cancel(cluster, job)
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
    assert all(Path(dirs[t]).is_dir() for t in local)
    _cancel(cluster, job)
    assert cluster.wait(job, DONE).state == "CANCELLED"
    cluster.wait_for(lambda: not cluster.reservations(job), what="the release")
    for t in local:
        cluster.wait_for(lambda t=t: not Path(dirs[t]).exists(), what=f"teardown of {t}")


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
    assert re.search(r"tier \w+ is out of space: the stage-in needs 2\.0 MiB", reason), reason
    _cancel(cluster, job)


def _reason(cluster: Cluster, job: str) -> str:
    info = cluster.job(job)
    # A failed hook's line lands in SystemComment (and, blanks as '_', in Reason).
    return f"{info.fields.get('SystemComment', '')} {info.reason}"


def _queue(cluster: Cluster) -> str:
    import subprocess

    return subprocess.run(["squeue", "-h", "-o", "%i"], env=cluster.env, capture_output=True,
                          text=True).stdout


def _cancel(cluster: Cluster, job: str) -> None:
    import subprocess

    subprocess.run(["scancel", job], env=cluster.env, check=True)


def test_command_backend_reads_the_real_cluster(cluster: Cluster) -> None:
    nodes = cluster.slurm.nodes()
    assert [n.name for n in nodes] == ["localhost"]
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
    _cancel(cluster, job)
