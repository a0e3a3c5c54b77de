"""A real multi-node Slurm (a head and three compute nodes made from namespaces) with
our plugins, two daemons for the shared tier and qosfs on every node, started once for
the session by deploy/local/up (which installs the Debian packages when missing) and
stopped by deploy/local/down. Needs root; never skipped."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from qos_plugin.slurm.localcluster import LocalCluster
from qos_plugin.slurm.slurmapi import CommandBackend, JobInfo
from tokenbucket_daemon.client import AdminClient

REPO = Path(__file__).resolve().parents[2]
USER = "qosuser"
OTHER = "qosother"
NODES = 3
T = TypeVar("T")
DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


class Cluster:
    def __init__(self, root: Path) -> None:
        self.local = LocalCluster(root)
        self.root = root
        self.work = root / "work"
        self.work.mkdir(mode=0o1777, exist_ok=True)
        self.work.chmod(0o1777)
        self.env = {**os.environ, **self.local.env()}
        self.slurm = CommandBackend()
        self.token = (root / "etc" / "admin.token").read_text().strip()
        self._n = 0

    def script(self, body: str) -> Path:
        self._n += 1
        p = self.work / f"job{self._n}.sh"
        p.write_text("#!/bin/bash\n" + body)
        p.chmod(0o755)
        return p

    def sbatch(self, *args: str, user: str | None = USER,
               script: Path | None = None) -> subprocess.CompletedProcess[str]:
        script = script or self.script("true\n")
        argv = ["sbatch", "--parsable", "-o", str(self.work / "slurm-%j.out"), *args,
                str(script)]
        if user:
            argv = ["runuser", "-u", user, "--", "env", f"SLURM_CONF={self.env['SLURM_CONF']}",
                    *argv]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True,
                               cwd=self.work, timeout=60)

    def submit(self, *args: str, **kw: object) -> str:
        p = self.sbatch(*args, **kw)  # type: ignore[arg-type]
        assert p.returncode == 0, p.stderr
        return p.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> JobInfo:
        os.environ["SLURM_CONF"] = self.env["SLURM_CONF"]
        info = self.slurm.job(job_id)
        assert info is not None, f"job {job_id} unknown to Slurm"
        return info

    def wait(self, job_id: str, states: tuple[str, ...], timeout: float = 90) -> JobInfo:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            info = self.job(job_id)
            if info.state in states:
                return info
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} is {info.state} ({info.reason}), not in {states} "
                             f"after {timeout} s")

    def wait_for(self, cond: object, timeout: float = 30, what: str = "") -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():  # type: ignore[operator]
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    def output(self, job_id: str) -> str:
        p = self.work / f"slurm-{job_id}.out"
        return p.read_text() if p.exists() else f"(no output file {p})"

    def each_daemon(self, ask: Callable[[AdminClient], T],
                    daemons: list[int] | None = None) -> list[T]:
        """``ask(client)`` of every shared-tier daemon (or those), in order."""
        addrs = self.local.daemon_addresses()
        out = []
        for addr in [addrs[i] for i in daemons] if daemons is not None else addrs:
            c = AdminClient(addr, self.token, tls=self.local.admin_tls())
            try:
                out.append(ask(c))
            finally:
                c.close()
        return out

    def reservations(self, job_id: str,
                     daemons: list[int] | None = None) -> list[tuple[str, str, float]]:
        """(daemon, tier, reservation bytes/s) of the job on every daemon (or those)."""
        addrs = self.local.daemon_addresses()
        chosen = [addrs[i] for i in daemons] if daemons is not None else addrs
        found = self.each_daemon(lambda c: c.list_policies(), daemons)
        return [(addr, p.tier, p.reservation_bps) for addr, ps in zip(chosen, found, strict=True)
                for p in ps if p.selector.value == job_id and p.reservation_bps > 0]

    def qosctl(self, *args: str, daemon: int = 0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(REPO / ".venv" / "bin" / "qosctl"), "--daemon",
                               self.local.daemon_addresses()[daemon], "--token-file",
                               str(self.root / "etc" / "admin.token"), *args],
                              capture_output=True, text=True, timeout=30, env=self.env)

    def on_node(self, node: str, argv: list[str], user: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``argv`` inside compute node ``node`` (its mounts and hostname), outside any
        job, as ``user`` (root when None)."""
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        return self.local.node(node).run(argv, timeout=timeout)

    def job_bytes(self, job_id: str, tier: str = "pfs") -> tuple[int, int]:
        """(bytes written, bytes read) of the job's class on every daemon, summed."""
        w = r = 0
        for stats in self.each_daemon(lambda c: c.stats(job=job_id)):
            for k in stats.classes:
                if k.tag == job_id and k.tier == tier:
                    w, r = w + k.bytes_written, r + k.bytes_read
        return w, r

    def class_bytes(self) -> dict[str, int]:
        """Bytes written per class tag on the shared tier, summed over the daemons."""
        out: dict[str, int] = {}
        for stats in self.each_daemon(lambda c: c.stats()):
            for k in stats.classes:
                if k.tier == "pfs":
                    out[k.tag] = out.get(k.tag, 0) + k.bytes_written
        return out

    def site_text(self) -> str:
        return self.local.site_conf.read_text()

    def qos_log(self) -> str:
        p = self.root / "state" / "qos" / "qos-slurm.log"
        return p.read_text() if p.exists() else ""


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.fail("tests/slurm start a real Slurm with deploy/local/up and need root")
    root = Path(f"/tmp/qos-test-{os.getpid()}")
    t0 = time.perf_counter()
    p = subprocess.run([str(REPO / "deploy" / "local" / "up"), "--dir", str(root),
                        "--nodes", str(NODES), "--daemons", "2", "--user", USER],
                       capture_output=True, text=True, timeout=600)
    if p.returncode:
        # up stops what it started; its directory goes too, as after a passing run.
        subprocess.run([str(REPO / "deploy" / "local" / "down"), "--dir", str(root), "--purge"],
                       capture_output=True, text=True, timeout=120)
        pytest.fail(f"deploy/local/up failed:\n{p.stdout}\n{p.stderr}")
    print(f"deploy/local/up: {time.perf_counter() - t0:.1f} s")
    from qos_plugin.slurm.localcluster import ensure_user
    ensure_user(OTHER)
    try:
        yield Cluster(root)
    finally:
        subprocess.run([str(REPO / "deploy" / "local" / "down"), "--dir", str(root), "--purge"],
                       capture_output=True, text=True, timeout=120)


@pytest.fixture
def site_edit(cluster: Cluster) -> Iterator[object]:
    """Change site.toml for one test; restored afterwards (the hooks read it per call)."""
    original = cluster.site_text()

    def edit(old: str, new: str) -> None:
        text = cluster.site_text()
        assert old in text, f"{old!r} not in site.toml"
        cluster.local.site_conf.write_text(text.replace(old, new, 1))
    yield edit
    cluster.local.site_conf.write_text(original)


@pytest.fixture
def plugstack(cluster: Cluster) -> Iterator[object]:
    """Rewrite plugstack.conf for one test; restored afterwards."""
    yield cluster.local.write_plugstack
    cluster.local.write_plugstack()


def info_json(path: Path) -> dict[str, object]:
    return json.loads(path.read_text())
