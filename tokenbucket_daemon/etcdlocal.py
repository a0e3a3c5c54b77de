"""Start real etcd members on this machine for a daemon group (tests, deploy/local).

``EtcdCluster(base, members=1).start()`` makes, under ``base``:

    pki/     a CA of its own and certificates: each member's (server and peer), ``root``
             (the operator: sets up users and roles) and ``tokenbucketd`` (the daemons)
    m<i>/    each member's data directory          run/  pid files      log/  logs

Every member listens on loopback ports, clients and peers both over TLS with client
certificates required (``--client-cert-auth``), and etcd's authentication on: a client's
etcd user is its certificate's common name. The user ``tokenbucketd`` has one role,
read-write on the policy prefix and nothing else, so only a holder of the daemons' key
(root-only files) can change policies, and it cannot touch anything outside the prefix
(why both, not one: see docs/replication.md). Members are stopped by pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tokenbucket_daemon.local import free_ports

ETCD = "etcd"
ETCDCTL = "etcdctl"
PREFIX = "/qos/v1/"            # the policy keys live under it (server/etcdstore.py)
DAEMON_USER = "tokenbucketd"


class EtcdError(RuntimeError):
    """An etcd member could not be started, set up or stopped."""


@dataclass(frozen=True)
class Identity:
    """The files a client shows etcd: the CA to trust, its certificate and key."""

    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    p = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise EtcdError(f"openssl {args[0]} failed: {p.stderr.strip()}")


def issue(pki: Path, stem: str, cn: str, server: bool) -> None:
    """A key and a certificate signed by the CA in ``pki`` (keys mode 0600)."""
    key, csr, crt = pki / f"{stem}.key", pki / f"{stem}.csr", pki / f"{stem}.pem"
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
    ext = pki / f"{stem}.ext"
    # A member is a server to clients and both ends of peer connections.
    usage = "serverAuth,clientAuth" if server else "clientAuth"
    ext.write_text(f"extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
                   + ("subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server else ""))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.pem"), "-CAkey",
             str(pki / "ca.key"), "-CAcreateserial", "-days", "3650", "-out", str(crt),
             "-extfile", str(ext))
    key.chmod(0o600)
    csr.unlink()
    ext.unlink()


class EtcdCluster:
    """``members`` etcd members on loopback under ``base``; ports picked at the first
    start and kept (in ``base/cluster.json``), so a restarted member rejoins."""

    def __init__(self, base: Path, members: int = 1) -> None:
        self.base = base.absolute()
        self.n = members
        self.pki, self.run, self.logs = self.base / "pki", self.base / "run", self.base / "log"
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        info = self.base / "cluster.json"
        ports: list[int]
        if info.exists():      # started before: the same members on the same ports
            ports = json.loads(info.read_text())["ports"]
            self.n = len(ports) // 2
        else:
            ports = free_ports(2 * members)
        self.client_ports = ports[:members]
        self.peer_ports = ports[members:]

    @property
    def endpoints(self) -> list[str]:
        """``host:port`` of every member's client URL."""
        return [f"127.0.0.1:{p}" for p in self.client_ports]

    def identity(self, user: str = DAEMON_USER) -> Identity:
        """The CA, certificate and key of etcd user ``user`` (``root`` or the daemons')."""
        return Identity(self.pki / "ca.pem", self.pki / f"{user}.pem", self.pki / f"{user}.key")

    def daemon_config(self, keepalive: float = 1.0) -> str:
        """The ``[etcd]`` table of a daemon of this cluster's group (TOML)."""
        ident = self.identity()
        eps = ", ".join(f'"{e}"' for e in self.endpoints)
        return (f'[etcd]\nendpoints = [{eps}]\nca = "{ident.ca}"\ncert = "{ident.cert}"\n'
                f'key = "{ident.key}"\nprefix = "{PREFIX}"\nserver_name = "localhost"\n'
                f'keepalive = {keepalive}\n')

    # ---------------------------------------------------------------- setting up

    def _make_pki(self) -> None:
        if (self.pki / "ca.pem").exists():
            return
        self.pki.mkdir(parents=True, exist_ok=True)
        self.pki.chmod(0o700)
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", str(self.pki / "ca.key"), "-out",
                 str(self.pki / "ca.pem"), "-days", "3650", "-subj", "/CN=qos etcd CA")
        for i in range(self.n):
            issue(self.pki, f"member{i}", f"member{i}", server=True)
        for user in ("root", DAEMON_USER):
            issue(self.pki, user, user, server=False)

    def _args(self, i: int) -> list[str]:
        cluster = ",".join(f"m{j}=https://127.0.0.1:{p}" for j, p in enumerate(self.peer_ports))
        me = self.pki / f"member{i}"
        ca = str(self.pki / "ca.pem")
        return [ETCD, "--name", f"m{i}", "--data-dir", str(self.base / f"m{i}"),
                "--listen-client-urls", f"https://127.0.0.1:{self.client_ports[i]}",
                "--advertise-client-urls", f"https://127.0.0.1:{self.client_ports[i]}",
                "--listen-peer-urls", f"https://127.0.0.1:{self.peer_ports[i]}",
                "--initial-advertise-peer-urls", f"https://127.0.0.1:{self.peer_ports[i]}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"qos-{self.base.name}",
                "--cert-file", f"{me}.pem", "--key-file", f"{me}.key",
                "--client-cert-auth", "--trusted-ca-file", ca,
                "--peer-cert-file", f"{me}.pem", "--peer-key-file", f"{me}.key",
                "--peer-client-cert-auth", "--peer-trusted-ca-file", ca,
                # Daemons ping every second to notice a member that stopped answering
                # (SIGSTOP, a partition); etcd's default would refuse pings under 5 s.
                "--grpc-keepalive-min-time", "500ms",
                # Loopback: elections in a fraction of a second after a member stops.
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--logger", "zap", "--log-outputs", str(self.logs / f"m{i}.log")]

    def etcdctl(self, *args: str, user: str = "root", check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        """Run etcdctl against every member as ``user``."""
        ident = self.identity(user)
        p = subprocess.run([ETCDCTL, "--endpoints", ",".join(f"https://{e}" for e in
                                                             self.endpoints),
                            "--cacert", str(ident.ca), "--cert", str(ident.cert),
                            "--key", str(ident.key), "--dial-timeout", "2s",
                            "--command-timeout", "5s", *args],
                           capture_output=True, text=True, env={**os.environ,
                                                                "ETCDCTL_API": "3"})
        if check and p.returncode != 0:
            raise EtcdError(f"etcdctl {' '.join(args)}: {p.stderr.strip() or p.stdout}")
        return p

    def _set_up_auth(self) -> None:
        """Users and roles, once: ``root`` (needed before auth can be enabled) and the
        daemons' user with read-write on the policy prefix only."""
        done = self.base / "auth.done"
        if done.exists():
            return
        for args in (("user", "add", "root", "--no-password"),
                     ("user", "grant-role", "root", "root"),
                     ("role", "add", DAEMON_USER),
                     ("role", "grant-permission", DAEMON_USER, "readwrite", PREFIX,
                      "--prefix=true"),
                     ("user", "add", DAEMON_USER, "--no-password"),
                     ("user", "grant-role", DAEMON_USER, DAEMON_USER),
                     ("auth", "enable")):
            self.etcdctl(*args)
        done.write_text("users root and tokenbucketd; auth enabled\n")

    # ---------------------------------------------------------------- running

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        """Start every member, wait until all are healthy, set up auth (first time)."""
        for d in (self.base, self.run, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o700)        # the data and the keys: root's only
        (self.base / "cluster.json").write_text(json.dumps(
            {"ports": self.client_ports + self.peer_ports}))
        self._make_pki()
        for i in range(self.n):
            self.start_member(i, wait=False)
        self.wait_healthy(timeout)
        self._set_up_auth()
        return self

    def start_member(self, i: int, wait: bool = True) -> int:
        """Start member ``i`` (again, with its data); returns its pid."""
        with open(self.logs / f"m{i}.out", "ab") as out:
            proc = subprocess.Popen(self._args(i), stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[i] = proc
        (self.run / f"etcd-{i}.pid").write_text(str(proc.pid))
        if wait:
            self.wait_healthy()
        return proc.pid

    def healthy(self) -> bool:
        """Whether the members that run answer a quorum read."""
        live = [self.endpoints[i] for i in range(self.n) if self._alive(i)]
        if not live:
            return False
        ident = self.identity("root")
        p = subprocess.run([ETCDCTL, "--endpoints", ",".join(f"https://{e}" for e in live),
                            "--cacert", str(ident.ca), "--cert", str(ident.cert),
                            "--key", str(ident.key), "--dial-timeout", "1s",
                            "--command-timeout", "2s", "endpoint", "health"],
                           capture_output=True, text=True, env={**os.environ,
                                                                "ETCDCTL_API": "3"})
        return p.returncode == 0

    def wait_healthy(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = [i for i, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise EtcdError(f"etcd member m{dead[0]} exited "
                                f"(see {self.logs / f'm{dead[0]}.log'})")
            if self.healthy():
                return
            time.sleep(0.1)
        raise EtcdError(f"etcd not healthy after {timeout:.0f} s (see {self.logs})")

    def pid(self, i: int) -> int | None:
        f = self.run / f"etcd-{i}.pid"
        try:
            return int(f.read_text())
        except (OSError, ValueError):
            return None

    def _alive(self, i: int) -> bool:
        pid = self.pid(i)
        if pid is None:
            return False
        proc = self.procs.get(i)
        if proc is not None and proc.pid == pid:
            return proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def signal_member(self, i: int, sig: int) -> None:
        """Send ``sig`` to member ``i`` (SIGSTOP/SIGCONT: a member that hangs)."""
        pid = self.pid(i)
        if pid is not None and self._alive(i):
            os.kill(pid, sig)

    def stop_member(self, i: int, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop member ``i`` and wait until it is gone."""
        pid = self.pid(i)
        if pid is None or not self._alive(i):
            (self.run / f"etcd-{i}.pid").unlink(missing_ok=True)
            return
        os.kill(pid, signal.SIGCONT)      # a stopped process would not see SIGTERM
        os.kill(pid, sig)
        end = time.monotonic() + timeout
        while self._alive(i) and time.monotonic() < end:
            proc = self.procs.get(i)
            if proc is not None:
                try:
                    proc.wait(0.05)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.05)
        if self._alive(i):
            os.kill(pid, signal.SIGKILL)
        (self.run / f"etcd-{i}.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop every member (this object's or, after a restart of the caller, the ones
        the pid files name)."""
        for i in range(self.n):
            self.stop_member(i)
