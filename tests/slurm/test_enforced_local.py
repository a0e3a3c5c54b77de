"""A node-local tier enforced through a daemon on each node (deploy/local/up
--enforce-local): the job's bytes go through its own node's daemon, and the tier's
reservation goes to the daemons of the job's nodes only."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slurm.conftest import DONE, REPO, USER, Cluster
from tokenbucket_daemon.client import AdminClient
from tokenbucket_daemon.tls import Tls

MiB = 1 << 20


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[Cluster]:
    root = Path(f"/tmp/qos-test-local-{os.getpid()}")
    p = subprocess.run([str(REPO / "deploy" / "local" / "up"), "--dir", str(root), "--nodes",
                        "2", "--daemons", "1", "--enforce-local", "--user", USER],
                       capture_output=True, text=True, timeout=600)
    if p.returncode:
        # up stops what it started; its directory goes too, as after a passing run.
        subprocess.run([str(REPO / "deploy" / "local" / "down"), "--dir", str(root), "--purge"],
                       capture_output=True, text=True, timeout=120)
        pytest.fail(f"deploy/local/up failed:\n{p.stdout}\n{p.stderr}")
    try:
        yield Cluster(root)
    finally:
        subprocess.run([str(REPO / "deploy" / "local" / "down"), "--dir", str(root), "--purge"],
                       capture_output=True, text=True, timeout=120)


def _class_bytes(addr: str, token: str, job: str, tls: Tls) -> int:
    c = AdminClient(addr, token, tls=tls)
    try:
        return sum(k.bytes_written for k in c.stats(job=job).classes
                   if k.tag == job and k.tier == "ssd")
    finally:
        c.close()


def _reserved(addr: str, token: str, job: str, tls: Tls) -> list[str]:
    c = AdminClient(addr, token, tls=tls)
    try:
        return [p.tier for p in c.list_policies()
                if p.selector.value == job and p.reservation_bps > 0]
    finally:
        c.close()


def test_node_local_tier_through_the_nodes_own_daemon(local_cluster: Cluster) -> None:
    c = local_cluster
    tls = c.local.admin_tls()
    own = c.local.node_daemons()
    assert set(own) == {"node1", "node2"}
    go = c.work / f"go-local-{time.monotonic_ns()}"
    script = c.script(
        f'touch {go}.running; while [ ! -e {go} ]; do sleep 0.1; done\n'
        'dd if=/dev/zero of="$SLURM_SPANK_QOS_DIR_SSD/data" bs=1M count=9 status=none\n'
        'stat -c "OWNER %U" "$SLURM_SPANK_QOS_DIR_SSD/data"; hostname\n')
    job = c.submit("--qos-workflow=pipeline", "--qos-objective=fastest", "--qos-max-nodes=1",
                   "--qos-exclude-tier=ram", script=script)
    c.wait(job, ("RUNNING",), timeout=60)
    c.wait_for(lambda: Path(f"{go}.running").exists(), timeout=60, what="the job script")
    node = c.job(job).fields["NodeList"]
    other = ({"node1", "node2"} - {node}).pop()
    # The ssd reservation is on the job's node's daemon, not the other node's.
    assert "ssd" in _reserved(own[node], c.token, job, tls)
    assert "ssd" not in _reserved(own[other], c.token, job, tls)
    go.touch()
    info = c.wait(job, DONE, timeout=120)
    out = c.output(job)
    assert info.state == "COMPLETED", out
    assert f"OWNER {USER}" in out and re.search(rf"^{node}$", out, re.M), out
    assert _class_bytes(own[node], c.token, job, tls) == 9 * MiB
    assert _class_bytes(own[other], c.token, job, tls) == 0
    c.wait_for(lambda: not _reserved(own[node], c.token, job, tls), what="the release")
    # The store behind the node's daemon is root's: a user on the node cannot reach it.
    p = c.on_node(node, ["touch", str(c.local.store_path("ssd") / "planted")], user=USER)
    assert p.returncode != 0 and "Permission denied" in p.stderr, p
