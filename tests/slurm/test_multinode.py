"""The product on a multi-node cluster: jobs on nodes of their own, node-local tiers on the
job's nodes, shared-tier I/O through qosfs and the daemons, identities from the kernel."""

from __future__ import annotations

import os
import pwd
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qos_plugin.slurm.localcluster import ClusterError
from tests.slurm.conftest import DONE, OTHER, USER, Cluster

MiB = 1 << 20
# A placement on the shared tier only, on as many nodes as allowed.
SHARED_ONLY = ("--qos-workflow=pipeline", "--qos-exclude-tier=ram,ssd")
# On node-local memory, two nodes: each node has its own directory. The pipeline is
# fastest on one node (its fan-out between levels costs more than a second node saves),
# so these jobs run a one-level workflow whose tasks gain from a second node.
LOCAL_TWO = ("--qos-workflow=scatter", "--qos-objective=fastest", "--qos-max-nodes=2",
             "--qos-exclude-tier=pfs,ssd")


@pytest.fixture(scope="module", autouse=True)
def scatter(cluster: Cluster) -> None:
    """Train the one-level workflow into the cluster's registry, as an administrator would."""
    from qos_plugin.cli.qos_plan import main as qos_plan
    from qos_plugin.examples.pipeline import write_pipeline
    from qos_plugin.model.synthetic import TierModel, dag_workflow
    from qos_plugin.model.template import INITIAL_DATA
    from qos_plugin.model.tiers import Tier, TierKind, TierSet
    from qos_plugin.slurm.localcluster import TIERS

    reg = cluster.root / "registry"
    if (reg / "scatter").is_dir():
        return
    tiers = TierSet(tuple(Tier(n, TierKind(k)) for n, k, *_ in TIERS))
    # Two stages, so that CART has enough placements (9 a node count) to split.
    wf = dag_workflow("scatter", [(s, 1, 16, {INITIAL_DATA: 20.0}, 400.0) for s in "ab"],
                      tiers, {n: TierModel(r, w, c) for n, _, r, w, c in TIERS})
    files = write_pipeline(wf, cluster.work / "scatter-model", [1, 2])
    assert qos_plan(["train", "scatter", "--template", str(files["template"]),
                     "--costs", str(files["costs"]), "--io-data", str(files["io"]),
                     "--nodes", "1,2", "--registry", str(reg)]) == 0
    for p in [reg / "scatter", *(reg / "scatter").rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def _go(cluster: Cluster, name: str) -> Path:
    return cluster.work / f"go-{name}-{time.monotonic_ns()}"


def _wait_started(cluster: Cluster, go: Path) -> None:
    cluster.wait_for(lambda: Path(f"{go}.running").exists(), timeout=60, what="the job script")


def test_two_node_job_has_private_node_local_directories_and_stage_out_collects_both(
        cluster: Cluster) -> None:
    data = cluster.work / "mn-input"
    data.mkdir()
    (data / "seed.txt").write_text("seed\n")
    for p in (data, data / "seed.txt"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    out = cluster.work / "mn-results"
    script = cluster.script(
        'srun -N2 --ntasks-per-node=1 bash -c \''
        'd=$SLURM_SPANK_QOS_DIR_RAM; h=$(hostname); '
        'echo "HOST $h $(cat $d/mn-input/seed.txt)"; '
        'echo "from $h" > $d/out-$h.txt; sleep 2; '
        'echo "SEES $h $(ls $d | tr "\\n" " ")"\'\n')
    job = cluster.submit(*LOCAL_TWO, f"--qos-stage-in={data}", f"--qos-stage-out={out}",
                         script=script)
    info = cluster.wait(job, DONE, timeout=120)
    text = cluster.output(job)
    assert info.state == "COMPLETED", (info, text)
    hosts = re.findall(r"^HOST (\S+) seed$", text, re.M)
    assert sorted(hosts) == ["node1", "node2"], text
    # Each node sees its own output and the staged input, never the other node's file.
    for h in hosts:
        seen = re.search(rf"^SEES {h} (.*)$", text, re.M)
        assert seen is not None, text
        names = seen.group(1).split()
        assert f"out-{h}.txt" in names and "mn-input" in names, text
        assert not [n for n in names if n.startswith("out-") and n != f"out-{h}.txt"], text
    # The stage-out gathered both nodes' outputs, and kept the destination's mode.
    cluster.wait_for(lambda: (out / "out-node1.txt").exists()
                     and (out / "out-node2.txt").exists(), what="the stage-out of both")
    assert (out / "out-node2.txt").read_text() == "from node2\n"
    assert out.stat().st_mode & 0o777 != 0o700
    assert out.stat().st_uid == pwd.getpwnam(USER).pw_uid
    # The directories are gone on both nodes, and were never on the head.
    ram = cluster.local.tier_path("ram") / USER
    for node in ("node1", "node2"):
        cluster.wait_for(lambda n=node: cluster.on_node(n, ["ls", "-A", str(ram)])
                         .stdout.strip() == "", what=f"the epilog on {node}")
    assert not (cluster.local.tier_path("ram") / USER).exists()


def test_shared_tier_writes_are_counted_under_the_job_exactly(cluster: Cluster) -> None:
    n_mib = 37
    script = cluster.script(
        f'dd if=/dev/zero of="$SLURM_SPANK_QOS_DIR_PFS/data" bs=1M count={n_mib} '
        'status=none && echo WROTE\n'
        'stat -c "OWNER %U %a" "$SLURM_SPANK_QOS_DIR_PFS/data"\n')
    job = cluster.submit(*SHARED_ONLY, script=script)
    info = cluster.wait(job, DONE, timeout=120)
    text = cluster.output(job)
    assert info.state == "COMPLETED" and "WROTE" in text, text
    assert f"OWNER {USER} " in text, text
    written, _ = cluster.job_bytes(job)
    assert written == n_mib * MiB


def test_group_limit_holds_dd_on_two_nodes_together(cluster: Cluster) -> None:
    limit = 30e6
    go = _go(cluster, "group")
    script = cluster.script(
        f'touch {go}.running; while [ ! -e {go} ]; do sleep 0.1; done\n'
        'srun -N2 --ntasks-per-node=1 bash -c \'dd if=/dev/zero '
        'of="$SLURM_SPANK_QOS_DIR_PFS/f-$(hostname)" bs=1M count=400 status=none\'\n')
    job = cluster.submit(*SHARED_ONLY, "--qos-objective=fastest", "--qos-max-nodes=2",
                         script=script)
    cluster.wait(job, ("RUNNING",), timeout=60)
    _wait_started(cluster, go)
    assert cluster.job(job).nodes == 2
    # The example's nominal reservation is far above the limit: the admin drops it.
    p = cluster.qosctl("policy", "set", f"job={job}", "--tier", "pfs", "--limit",
                       f"{limit:.0f}", "--scope", "group", "--drop-reservation")
    assert p.returncode == 0, p.stderr
    cluster.wait_for(lambda: all(any(q.selector.value == job for q in c)
                                 for c in _policies(cluster)), what="the policy everywhere")
    go.touch()
    time.sleep(3)          # both nodes under way, the split settled
    w0, t0 = cluster.job_bytes(job)[0], time.monotonic()
    time.sleep(12)
    w1, t1 = cluster.job_bytes(job)[0], time.monotonic()
    rate = (w1 - w0) / (t1 - t0)
    print(f"group limit {limit / 1e6} MB/s, two nodes together {rate / 1e6:.2f} MB/s")
    assert abs(rate - limit) / limit < 0.05, f"{rate / 1e6:.2f} MB/s against {limit / 1e6}"
    subprocess_cancel(cluster, job)


def test_store_is_root_only_and_the_mount_keeps_owners_and_modes(cluster: Cluster) -> None:
    store = cluster.local.store_path("pfs")
    mount = cluster.local.tier_path("pfs")
    # Directly into the store: refused, whatever the path.
    p = cluster.on_node("node1", ["touch", str(store / "planted")], user=USER)
    assert p.returncode != 0 and "Permission denied" in p.stderr, p
    # Through the mount, in directories the users own (as a site makes home dirs; not
    # <store>/<user>, which is root's: job directories are made under it).
    for u in (USER, OTHER):
        d = store / f"home-{u}"
        d.mkdir(exist_ok=True)
        pw = pwd.getpwnam(u)
        os.chown(d, pw.pw_uid, pw.pw_gid)
        d.chmod(0o755)
    secret = mount / f"home-{OTHER}" / "secret"
    p = cluster.on_node("node2", ["sh", "-c", f"umask 077; echo hidden > {secret}"], user=OTHER)
    assert p.returncode == 0, p
    p = cluster.on_node("node1", ["cat", str(secret)], user=USER)
    assert p.returncode != 0 and "Permission denied" in p.stderr, p
    p = cluster.on_node("node1", ["rm", "-f", str(secret)], user=USER)
    assert p.returncode != 0, p
    mine = mount / f"home-{USER}" / "mine"
    p = cluster.on_node("node1", ["sh", "-c", f"echo x > {mine} && stat -c '%U %G %a' {mine}"],
                        user=USER)
    assert p.returncode == 0, p
    pw = pwd.getpwnam(USER)
    import grp
    assert p.stdout.split() == [USER, grp.getgrgid(pw.pw_gid).gr_name, "644"], p
    st = (store / f"home-{USER}" / "mine").stat()
    assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid)
    # No setuid bit through the data path.
    p = cluster.on_node("node1", ["chmod", "4755", str(mine)], user=USER)
    assert not (store / f"home-{USER}" / "mine").stat().st_mode & 0o6000


def test_forged_job_id_outside_a_job_is_charged_to_the_user(cluster: Cluster) -> None:
    go = _go(cluster, "forged")
    script = cluster.script('echo "DIR $SLURM_SPANK_QOS_DIR_PFS"\n'
                            f'touch {go}.running; while [ ! -e {go} ]; do sleep 0.1; done\n')
    job = cluster.submit(*SHARED_ONLY, "--qos-keep", script=script)
    cluster.wait(job, ("RUNNING",), timeout=60)
    _wait_started(cluster, go)
    m = re.search(r"^DIR (\S+)$", cluster.output(job), re.M)
    assert m, cluster.output(job)
    target = f"{m.group(1)}/forged"
    before = cluster.job_bytes(job)[0]
    p = cluster.on_node("node1", ["env", f"SLURM_JOB_ID={job}", "dd", "if=/dev/zero",
                                  f"of={target}", "bs=1M", "count=5", "status=none"],
                        user=USER)
    assert p.returncode == 0, p
    assert cluster.job_bytes(job)[0] == before
    assert cluster.class_bytes().get(f"user:{USER}", 0) >= 5 * MiB
    go.touch()
    cluster.wait(job, DONE)


def test_killed_slurmd_fails_the_job_and_the_other_node_cleans_up(cluster: Cluster) -> None:
    go = _go(cluster, "nodefail")
    script = cluster.script(
        f'srun -N2 --ntasks-per-node=1 bash -c \'touch $SLURM_SPANK_QOS_DIR_RAM/here; '
        f'touch {go}.running-$(hostname); sleep 300\'\n')
    job = cluster.submit(*LOCAL_TWO, script=script)
    cluster.wait(job, ("RUNNING",), timeout=60)
    cluster.wait_for(lambda: all(Path(f"{go}.running-{n}").exists() for n in ("node1",
                                                                               "node2")),
                     timeout=60, what="both tasks")
    assert cluster.reservations(job), "the job holds reservations on the shared tier"
    ram = cluster.local.tier_path("ram") / USER
    assert cluster.on_node("node1", ["ls", "-A", str(ram)]).stdout.strip()
    pid = cluster.local.slurmd_pid("node2")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    try:
        info = cluster.wait(job, DONE, timeout=120)
        assert info.state in ("NODE_FAIL", "FAILED"), info
        cluster.wait_for(lambda: not cluster.reservations(job), what="the release")
        cluster.wait_for(lambda: cluster.on_node("node1", ["ls", "-A", str(ram)])
                         .stdout.strip() == "", what="the directory removed on node1")
    finally:
        cluster.local.start_slurmd("node2")
        cluster.local.wait_idle(120)


@pytest.fixture
def pfs_bandwidth(cluster: Cluster) -> Iterator[Callable[[float], None]]:
    """Tell the shared tier's daemons its bandwidth (``[tier_bandwidth]``, each its part,
    files being striped over them), for one test: they restart with it and, afterwards,
    without it. Only then does a reservation promise a floor (docs/daemon.md): without
    it the surplus waits in the device's queue in arrival order, and on a 2-core machine
    that queue is the daemons' and qosfs's CPU, which a flood of six streams fills."""
    local = cluster.local
    confs = [local.etc / f"tokenbucketd-{i}.toml" for i in range(len(local.daemon_addresses()))]
    originals = [c.read_text() for c in confs]
    assert not any("[tier_bandwidth]" in t for t in originals), "the cluster has one already"

    def restart(texts: list[str]) -> None:
        for i, (conf, text) in enumerate(zip(confs, texts, strict=True)):
            local.stop_daemon(i)
            conf.write_text(text)
            local.start_daemon(i)

    def set_bandwidth(bps: float) -> None:
        restart([t + f"[tier_bandwidth]\npfs = {bps / len(confs):.0f}\n" for t in originals])
    try:
        yield set_bandwidth
    finally:
        restart(originals)


def test_reserved_jobs_hold_their_floor_beside_an_unreserved_flood(
        cluster: Cluster, pfs_bandwidth: Callable[[float], None]) -> None:
    # Well below what this machine's daemons and mounts carry (43-106 MB/s with the
    # flood below, no cap), so that the cap, not the CPU, is what the jobs contend for.
    tier = 30e6
    floor = 10e6
    pfs_bandwidth(tier)
    caps = [t.bandwidth_bps for c in _stats(cluster) for t in c.tiers if t.tier == "pfs"]
    assert caps == [tier / 2, tier / 2], caps
    go = _go(cluster, "floor")
    writer = (f'touch {go}.running-$SLURM_JOB_ID; while [ ! -e {go} ]; do sleep 0.1; done\n'
              'for i in $(seq {streams}); do dd if=/dev/zero of="$SLURM_SPANK_QOS_DIR_PFS/f$i" '
              'bs=1M count=2000 status=none & done; wait\n')
    reserved = [cluster.submit(*SHARED_ONLY, script=cluster.script(writer.format(streams=1)))
                for _ in range(2)]
    flood = cluster.submit(*SHARED_ONLY, script=cluster.script(writer.format(streams=6)))
    jobs = [*reserved, flood]
    for j in jobs:
        cluster.wait(j, ("RUNNING",), timeout=60)
        cluster.wait_for(lambda j=j: Path(f"{go}.running-{j}").exists(), timeout=60,
                         what=f"job {j}")
    # The administrator's reservations, per daemon (files are striped over both), in
    # place of the example model's nominal ones; the flood keeps none.
    for j in reserved:
        p = cluster.qosctl("reserve", j, f"{floor / 2:.0f}", "--tier", "pfs")
        assert p.returncode == 0, p.stderr
    # The flood keeps no reservation and gets twenty times the others' weight: without
    # their floors, the two would share a twenty-second of what the tier gives.
    p = cluster.qosctl("policy", "set", f"job={flood}", "--tier", "pfs", "--weight", "20",
                       "--drop-reservation")
    assert p.returncode == 0, p.stderr
    cluster.wait_for(lambda: not cluster.reservations(flood), what="the flood's policy")
    flood_policy = [q for c in _policies(cluster) for q in c if q.selector.value == flood]
    assert not any(q.reservation_bps for q in flood_policy)
    cluster.wait_for(lambda: all(sum(1 for q in c if q.selector.value in reserved
                                     and q.reservation_bps == floor / 2) == 2
                                 for c in _policies(cluster)), what="the reservations")
    go.touch()
    time.sleep(3)
    before = {j: cluster.job_bytes(j)[0] for j in jobs}
    t0 = time.monotonic()
    time.sleep(10)
    rates = {j: (cluster.job_bytes(j)[0] - before[j]) / (time.monotonic() - t0) for j in jobs}
    shown = {k: round(v / 1e6, 1) for k, v in rates.items()}
    print("rates MB/s", shown)
    # The writers' page caches hold hundreds of MB that their last close must write at the
    # capped rate before Slurm sees them gone: let them go at the machine's own (the
    # fixture's restart turns enforcement on again).
    for i in range(len(cluster.local.daemon_addresses())):
        p = cluster.qosctl("enforcement", "off", daemon=i)
        assert p.returncode == 0, p.stderr
    for j in jobs:
        subprocess_cancel(cluster, j)
    for j in reserved:
        assert rates[j] >= 0.95 * floor, shown
    # What the floors leave goes to the flood, and the daemons hand the tier no more than
    # its bandwidth (plus a bucket's depth, 1 MiB each, over the 10 s).
    assert rates[flood] >= 0.5 * (tier - 2 * floor), shown
    assert sum(rates.values()) <= 1.05 * tier, shown


def _stats(cluster: Cluster) -> list:
    return cluster.each_daemon(lambda c: c.stats())


def _policies(cluster: Cluster) -> list[list]:
    return cluster.each_daemon(lambda c: c.list_policies())


def subprocess_cancel(cluster: Cluster, job: str) -> None:
    import subprocess

    subprocess.run(["scancel", job], env=cluster.env, check=False)
    cluster.wait(job, DONE, timeout=60)


@pytest.fixture(autouse=True)
def _idle(cluster: Cluster) -> None:
    """Each test starts on an idle cluster (a test may leave jobs ending)."""
    cluster.local.wait_idle(120)


def test_a_user_on_a_compute_node_can_call_no_service(cluster: Cluster) -> None:
    """The daemons serve only certificates of the cluster's CA, whose keys are root's: a
    user's process on a node has none, and one it makes itself is refused too."""
    pki = cluster.root / "etc" / "pki"
    for key in sorted(pki.glob("*.key")):
        p = cluster.on_node("node1", ["cat", str(key)], user=USER)
        assert p.returncode != 0 and "Permission denied" in p.stderr, key
    own = f"/tmp/mine-{time.monotonic_ns()}"
    p = cluster.on_node("node1", ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                                  "ec_paramgen_curve:P-256", "-nodes", "-subj",
                                  "/CN=agent,admin,daemon:me", "-days", "1", "-keyout",
                                  f"{own}.key", "-out", f"{own}.pem"], user=USER)
    assert p.returncode == 0, p.stderr
    for addr in cluster.local.daemon_addresses():
        for extra in ([], ["-cert", f"{own}.pem", "-key", f"{own}.key"]):
            p = cluster.on_node("node1", [
                "sh", "-c", f"sleep 1 | openssl s_client -connect {addr} -alpn h2 -quiet "
                f"-CAfile {pki / 'ca.pem'} {' '.join(extra)}"], user=USER, timeout=30)
            # The handshake ends without a session: no gRPC call of any service can follow.
            assert p.returncode != 0, (addr, extra, p.stdout, p.stderr)
    # The session ports speak plaintext HTTP/2 to anyone, but without a seal of a session
    # an agent's certificate opened, every call of every service is UNAUTHENTICATED.
    sessions = cluster.local.session_addresses()
    assert sorted(sessions) == sorted(cluster.local.daemon_addresses())
    made_up = f"{'ab' * 16}.1.{'cd' * 16}"
    for addr in sessions.values():
        for method in ("DataPlane/Stat", "DataPlane/OpenSession", "AdminService/SetPolicy",
                       "PeerService/ExchangeDemand", "PeerService/SetFractions"):
            for seal in ("", f"-H 'qos-seal: {made_up}'"):
                p = cluster.on_node("node1", [
                    "sh", "-c", "printf '\\0\\0\\0\\0\\0' | curl -s -v --http2-prior-knowledge "
                    f"-H 'content-type: application/grpc' -H 'te: trailers' {seal} "
                    f"--data-binary @- http://{addr}/qos.v1.{method}"], user=USER, timeout=30)
                status = [ln for ln in p.stderr.splitlines() if "grpc-status:" in ln]
                want = ("16" if not seal or method.startswith("DataPlane/Stat") else "7")
                assert status and status[0].split()[-1] in {"16", "7"}, (addr, method, p.stderr)
                assert status[0].split()[-1] == want, (addr, method, seal, status)
    os.unlink(f"{own}.key")
    os.unlink(f"{own}.pem")


def test_a_pinned_node_and_the_jobs_it_starts_run_on_its_cpus_only(cluster: Cluster) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.fail("pinning a node needs a machine of 2 CPUs or more")
    script = cluster.script("srun -N1 -w node2 grep Cpus_allowed_list /proc/self/status\n")
    try:
        cluster.local.pin_cpus({"node2": "1"})
        job = cluster.submit("-w", "node2", script=script)
        info = cluster.wait(job, DONE, timeout=60)
        text = cluster.output(job)
        assert info.state == "COMPLETED", (info, text)
        # Started after the pin, by the node's slurmd: confined with it.
        assert re.search(r"^Cpus_allowed_list:\s+1$", text, re.M), text
    finally:
        cluster.local.pin_cpus({"node2": ""})
    job = cluster.submit("-w", "node2", script=script)
    cluster.wait(job, DONE, timeout=60)
    everything = f"0-{max(os.sched_getaffinity(0))}"
    assert re.search(rf"^Cpus_allowed_list:\s+{everything}$", cluster.output(job), re.M)
    with pytest.raises(ClusterError, match="no node 'node9'"):
        cluster.local.pin_cpus({"node9": "0"})
