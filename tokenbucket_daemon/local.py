"""Start real tokenbucketd processes on this machine (tests, benchmarks, deploy/local)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenbucket_daemon.client import AdminClient
from tokenbucket_daemon.pki import Authority
from tokenbucket_daemon.tls import env_of

if TYPE_CHECKING:
    from tokenbucket_daemon.etcdlocal import EtcdCluster

MiB = 1 << 20


_PKI: list[Authority] = []


def local_pki() -> Authority:
    """This process's CA for the daemons it starts, made once. Its clients (in-process and
    the programs it starts) get a certificate with roles agent and admin through
    ``QOS_TLS_*``, so tests and benchmarks call every service as a node agent and an
    administrator would; tests of the roles issue narrower ones."""
    if not _PKI:
        where = Path(tempfile.mkdtemp(prefix="qos-pki-"))
        atexit.register(shutil.rmtree, where, True)
        ca = Authority(where)
        client = ca.issue(("agent", "admin"), "tests")
        os.environ.update(env_of(client.ca, client.cert, client.key))
        _PKI.append(ca)
    return _PKI[0]


class LocalDaemon:
    """One daemon with its own config, state and tier directories under ``base``, its
    own certificate (role daemon) from :func:`local_pki`; ``tls=False`` starts it
    plaintext (``insecure = true``); ``sessions=False`` gives it no session port, so
    every data call pays for TLS. ``tier_bandwidth`` and ``emulated_device`` map tier
    names to rates (bytes/s, or strings such as "100MB/s") for the config's tables of
    those names."""

    def __init__(self, base: Path, name: str, tiers: dict[str, Path] | None = None,
                 peers: list[str] | None = None, port: int = 0, token: str = "local-admin",
                 qos: bool = True, max_request: int = 4 * MiB,
                 cpus: set[int] | None = None, metrics_port: int = 0,
                 tls: bool = True, etcd: EtcdCluster | None = None,
                 sessions: bool = True,
                 tier_bandwidth: dict[str, float | str] | None = None,
                 emulated_device: dict[str, float | str] | None = None) -> None:
        self.base, self.name, self.token = base, name, token
        self.cpus = cpus     # pin the daemon to these CPUs (benchmarks); None = any
        base.mkdir(parents=True, exist_ok=True)
        if tiers is None:
            tiers = {"ram": base / "ram", "disk": base / "disk"}
        for d in tiers.values():
            d.mkdir(parents=True, exist_ok=True)
        tok = base / "token"
        tok.write_text(token)
        tok.chmod(0o600)
        peer_list = ", ".join(f'"{p}"' for p in peers or [])
        tier_lines = "".join(f'{n} = "{p}"\n' for n, p in tiers.items())
        if tls:
            ident = local_pki().issue(("daemon",), name, ("127.0.0.1", "localhost"),
                                     stem=f"daemon-{name}-{os.getpid()}-{id(self)}")
            tls_lines = (f'[tls]\nca = "{ident.ca}"\ncert = "{ident.cert}"\n'
                         f'key = "{ident.key}"\n'
                         # Agents' data calls sealed on a port of their own (docs/auth.md).
                         + ('session_listen = "127.0.0.1:0"\n' if sessions else ""))
        else:
            tls_lines = ""
        (base / "d.toml").write_text(
            f'daemon_id = "{name}"\nlisten = "127.0.0.1:{port}"\nstate_dir = "state"\n'
            f'admin_token_file = "token"\npeers = [{peer_list}]\n'
            f'qos = {"true" if qos else "false"}\nmetrics_port = {metrics_port}\n'
            + ("" if tls else "insecure = true\n")
            + f'{tls_lines}[tiers]\n{tier_lines}[scheduler]\nmax_request = {max_request}\n'
            # The group's policies in this etcd (tokenbucket_daemon/etcdlocal.py).
            + (etcd.daemon_config() if etcd else "")
            + _rate_table("tier_bandwidth", tier_bandwidth)
            + _rate_table("emulated_device", emulated_device))
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.banner = ""     # the daemon's "listening on ..." line
        self.warnings: list[str] = []    # what it warned of while starting

    def start(self) -> LocalDaemon:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tokenbucket_daemon.server.app", "--config",
             str(self.base / "d.toml")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        if self.cpus:
            # After the fork, not in it (no preexec_fn): forking a process that runs gRPC
            # threads and then running Python in the child can abort it.
            os.sched_setaffinity(self.proc.pid, self.cpus)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        # Warnings the daemon logs while it starts (e.g. peers without [etcd]) come first.
        while line and "listening on" not in line and "WARNING" in line:
            self.warnings.append(line.strip())
            line = self.proc.stdout.readline()
        if "listening on" not in line:
            rest = self.proc.communicate(timeout=10)[0]
            raise RuntimeError(f"tokenbucketd {self.name} did not start: {line}{rest}")
        self.banner = line.strip()
        self.address = line.split("listening on ")[1].split()[0]
        return self

    @property
    def pid(self) -> int:
        """The process id (after ``start``)."""
        if self.proc is None:
            raise RuntimeError("not started")
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM) -> str:
        if self.proc is None or self.proc.poll() is not None:
            return ""
        self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=20)
        return out

    def admin(self, token: str | None = "") -> AdminClient:
        return AdminClient(self.address, self.token if token == "" else token)


def _rate_table(name: str, rates: dict[str, float | str] | None) -> str:
    if not rates:
        return ""
    return f"[{name}]\n" + "".join(
        f'{t} = "{r}"\n' if isinstance(r, str) else f"{t} = {float(r)!r}\n"
        for t, r in rates.items())


def cpu_seconds(pid: int) -> float:
    """CPU time a process used so far (benchmarks), threads that have ended included,
    to the nanosecond: the kernel's CPU clock of another process (clock id from its
    pid, as glibc's clock_getcpuclockid builds it). /proc/PID/stat counts in 10 ms
    ticks, too coarse for the sub-second slices of the overhead experiment."""
    return time.clock_gettime((~pid << 3) | 2)


def free_ports(n: int) -> list[int]:
    """``n`` loopback ports free right now (peers must know each other's addresses
    before they start, so ephemeral port 0 will not do)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_group(base: Path, n: int, tiers: Callable[[int], dict[str, Path]] | None = None,
                **kw: Any) -> list[LocalDaemon]:
    """``n`` daemons ``g0``..``g{n-1}``, each listing the others as peers."""
    addrs = [f"127.0.0.1:{p}" for p in free_ports(n)]
    group: list[LocalDaemon] = []
    try:
        for i in range(n):
            group.append(LocalDaemon(
                base / f"g{i}", f"g{i}", tiers=tiers(i) if tiers else None,
                peers=[a for a in addrs if a != addrs[i]],
                port=int(addrs[i].rsplit(":", 1)[1]), **kw).start())
    except BaseException:
        for d in group:
            d.stop(signal.SIGKILL)
        raise
    return group
