"""A real multi-node Slurm cluster on this machine, with our plugins, the storage
daemons and qosfs: what ``deploy/local/up`` and ``deploy/local/down`` run, and what the
Slurm tests and benchmarks use.

The head is this host: munged, slurmctld and the shared tier's daemons (on loopback
ports), and a qosfs mount of the shared tier (the controller's hooks copy through it, as
on a login node). Each compute node ``node1..nodeN`` is a host of its own made from
Linux namespaces (``qos_plugin.slurm.nodes``): its own hostname, mounts and cgroups, its
own slurmd on a port of its own, its own qosfs mount of the shared tier, and its own
node-local tiers (a tmpfs for ``ram``, a directory of its own for ``ssd``) at the same
paths as on every other node. Jobs run in cgroups (``proctrack/cgroup``), so qosfs reads
a process's job from the kernel.

Everything lives under one directory (default ``/tmp/qos-local``)::

    etc/     slurm.conf, cgroup.conf, plugstack.conf, job_submit.lua, site.toml,
             munge.key, admin.token, one TOML per daemon, cluster.json
    bin/     qos-slurm-plan (the SPANK helper: system Python, standard library),
             qos-slurm, qos-prolog, qos-epilog, qos-node-prolog, qos-node-epilog (root)
    lib/     the installed qos_plugin package and qos_spank.so (readable by users)
    run/     pid files, the munge socket          log/   every daemon's log
    qos/     what jobs see: pfs (the qosfs mount), ram and ssd (each node's own)
    stores/  the shared tier's store behind the daemons (root only, mode 0700)
    nodes/   each node's disk tier (root only from the host)
    registry/  the trained example workflow ("pipeline")

Slurm 22.05 from Debian runs as root without systemd; SLURM_CONF points at etc/.
Started in order munged, tokenbucketd x D, nodes (namespace, qosfs, slurmd), the head's
qosfs, slurmctld; ready when sinfo says every node is idle. Stopped in reverse; removing
a node kills every process in its cgroup, which drops its namespaces and mounts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qos_plugin.errors import QosPluginError
from qos_plugin.slurm.nodes import (
    Node,
    NodeError,
    NodeSpec,
    pin_cpus,
    pin_processes,
    unpin_cpus,
)
from qos_plugin.slurm.site import parse_rate
from tokenbucket_daemon.etcdlocal import EtcdCluster
from tokenbucket_daemon.local import free_ports
from tokenbucket_daemon.pki import Authority, Issued
from tokenbucket_daemon.tls import Tls, env_of

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIR = Path("/tmp/qos-local")
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "libslurm-dev", "gcc",
            "libc6-dev", "etcd-server", "etcd-client")
# The example workflow's tiers: (name, kind, nominal read/write MiB/s, contention).
TIERS = (("pfs", "shared", 100.0, 80.0, 0.5), ("ram", "node-local", 2000.0, 1500.0, 0.3),
         ("ssd", "node-local", 500.0, 300.0, 0.4))
PYTHON = REPO / ".venv" / "bin" / "python"
RAM_SIZE = "4g"      # each node's memory tier: a tmpfs, holding only what jobs write there
NODE_MEMORY_MB = 2048
# The emulated shared device's reservations ask this much more than a contract's rate:
# beside a neighbour flooding it, a job's copy through qosfs got 85-93% of its
# reservation (benchmarks/loop, docs/loop.md), its client short of requests in flight.
RESERVE_MARGIN = 1.2
SLURMD_TIMEOUT = 5


class ClusterError(RuntimeError):
    """The local cluster could not be started or stopped."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids(run: Path) -> dict[str, int]:
    out = {}
    for f in sorted(run.glob("*.pid")):
        try:
            out[f.stem] = int(f.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def missing_packages() -> list[str]:
    need = {"slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client",
            "munged": "munge", "gcc": "gcc", "etcd": "etcd-server",
            "etcdctl": "etcd-client"}
    out = [pkg for cmd, pkg in need.items() if shutil.which(cmd) is None]
    if not Path("/usr/include/slurm/spank.h").exists():
        out.append("libslurm-dev")
    return out


class LocalCluster:
    def __init__(self, root: Path = DEFAULT_DIR, daemons: int = 2,
                 on_unavailable: str = "open", nodes: int = 2,
                 enforce_local: bool = False, shared_bandwidth: float = 0.0) -> None:
        self.root = root.absolute()      # not resolved: a planted link must be seen
        # > 0: the shared tier is a device of this many bytes/s in all, as a parallel
        # file system's servers are: the site admits reservations against it, and each
        # of its daemons schedules and emulates its part (its store is a local directory
        # far faster than that, where the clients' CPU, which no daemon schedules, would
        # be the limit instead).
        self.shared_bandwidth = shared_bandwidth
        self.n_daemons = daemons
        self.n_nodes = nodes
        # The disk tier ssd through a daemon of each node (and its qosfs), not directly.
        self.enforce_local = enforce_local
        self.on_unavailable = on_unavailable
        self.etc, self.bin, self.lib = self.root / "etc", self.root / "bin", self.root / "lib"
        self.run, self.logs = self.root / "run", self.root / "log"
        self.slurm_conf = self.etc / "slurm.conf"
        self.site_conf = self.etc / "site.toml"
        self.plugstack = self.etc / "plugstack.conf"
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:10]
        self.cgroup_prefix = f"qoslocal-{digest}"       # the same name in up and down

    # ------------------------------------------------------------------ paths

    def env(self) -> dict[str, str]:
        """What a shell needs to use this cluster."""
        env = {"SLURM_CONF": str(self.slurm_conf), "QOS_SITE_CONFIG": str(self.site_conf),
               "QOS_TOKEN_FILE": str(self.etc / "admin.token")}
        if (self.etc / "cluster.json").exists():
            env["QOS_DAEMON"] = self.daemon_addresses()[0]      # qosctl's default
        # The administrator's certificate (qosctl, the controller's hooks): root only.
        admin = self.identity("admin")
        env |= env_of(admin.ca, admin.cert, admin.key)
        return env

    @property
    def pki(self) -> Path:
        return self.etc / "pki"

    def identity(self, stem: str) -> Issued:
        """The files of identity ``stem`` (``admin``, ``agent-node1``, ``daemon-d0``...)."""
        return Issued(self.pki / "ca.pem", self.pki / f"{stem}.pem", self.pki / f"{stem}.key")

    def admin_tls(self) -> Tls:
        i = self.identity("admin")
        return Tls.from_files(i.ca, i.cert, i.key)

    def _make_pki(self, names: list[str], n_daemons: int) -> None:
        """A CA and every identity of the cluster: a certificate per daemon (role daemon,
        for the addresses it is reached at), per node agent (qosfs of each node and of
        the head: role agent) and for the administrator (role admin). Keys are root's
        alone, so a user on a node can call no service."""
        ca = Authority(self.pki)
        self.pki.chmod(0o755)
        hosts = ("127.0.0.1", "localhost")
        for i in range(n_daemons):
            ca.issue(("daemon",), f"d{i}", hosts, stem=f"daemon-d{i}")
        for n in names:
            ca.issue(("agent",), n, stem=f"agent-{n}")
            if self.enforce_local:
                ca.issue(("daemon",), n, hosts, stem=f"daemon-{n}")
        ca.issue(("agent",), "head", stem="agent-head")
        ca.issue(("admin",), "admin", stem="admin")

    def _tls_toml(self, stem: str, addr: str) -> str:
        i = self.identity(stem)
        return (f'[tls]\nca = "{i.ca}"\ncert = "{i.cert}"\nkey = "{i.key}"\n'
                f'session_listen = "{self.session_addresses()[addr]}"\n')

    def session_addresses(self) -> dict[str, str]:
        """Each daemon's session port (by its TLS address)."""
        return dict(self._info().get("sessions", {}))

    def tier_path(self, name: str) -> Path:
        """Where jobs see tier ``name`` (the same path on every node)."""
        return self.root / "qos" / name

    def store_path(self, name: str) -> Path:
        """Where the daemons keep an enforced tier (root only)."""
        return self.root / "stores" / name

    def node_names(self) -> list[str]:
        return list(self._info()["nodes"])

    def pin_cpus(self, cpus: dict[str, str]) -> None:
        """Confine each named node (and what it starts later) to its CPUs (``{"node3":
        "0"}``); a node given ``""`` gets every CPU back (``nodes.pin_cpus``)."""
        known = self.node_names()
        for name, which in cpus.items():
            if name not in known:
                raise ClusterError(f"no node {name!r} in this cluster ({', '.join(known)})")
            cg = f"{self.cgroup_prefix}-{name}"
            try:
                if which:
                    n = pin_cpus(cg, which)
                    log.info("node %s: %d processes on CPUs %s", name, n, which)
                else:
                    unpin_cpus(cg)
            except NodeError as e:
                raise ClusterError(str(e)) from None

    def pin_daemon_cpus(self, cpus: str) -> None:
        """Confine the shared tier's daemons to ``cpus`` (``""``: every CPU again)."""
        cg = f"{self.cgroup_prefix}-daemons"
        pids = [p for k, p in _pids(self.run).items() if k.startswith("tokenbucketd-")]
        try:
            if cpus:
                pin_processes(cg, cpus, pids)
            else:
                unpin_cpus(cg)
        except NodeError as e:
            raise ClusterError(str(e)) from None

    def daemon_addresses(self) -> list[str]:
        return list(self._info()["daemons"])

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = json.loads((self.etc / "cluster.json").read_text())
        return info

    def node_daemons(self) -> dict[str, str]:
        """Each node's own daemon (``--enforce-local``), else none."""
        return dict(self._info().get("node_daemons", {}))

    def node(self, name: str) -> Node:
        if name not in self.node_names():
            raise ClusterError(f"no node {name!r}; the nodes are {self.node_names()}")
        disk = self.root / "nodes" / name / "ssd"
        # Enforced: the node's disk is the store behind its daemon, root only, at the same
        # path on every node; jobs see it through qosfs. Direct: jobs see the disk itself.
        where = self.store_path("ssd") if self.node_daemons() else self.tier_path("ssd")
        return Node(NodeSpec(name, f"{self.cgroup_prefix}-{name}",
                             tmpfs=[(self.tier_path("ram"), RAM_SIZE)], binds=[(disk, where)]),
                    self.run, self.logs)

    def running(self) -> dict[str, int]:
        return {k: v for k, v in _pids(self.run).items() if _alive(v)}

    # ------------------------------------------------------------------ up

    def up(self, user: str | None = None, timeout: float = 90.0) -> float:
        t0 = time.perf_counter()
        if os.geteuid() != 0:
            raise ClusterError("deploy/local must run as root (it starts slurmctld, slurmd "
                               "and munged, and makes the nodes' namespaces); run it with sudo")
        if self.run.is_dir() and self.running():
            raise ClusterError(f"a local cluster is already running in {self.root} "
                               f"({', '.join(self.running())}); stop it with deploy/local/down "
                               f"--dir {self.root}")
        missing = missing_packages()
        if missing:
            raise ClusterError(f"missing packages {' '.join(missing)}; install them with "
                               f"apt-get install -y {' '.join(PACKAGES)}")
        self._check_root_dir()
        if user:
            ensure_user(user)
        for d in (self.etc, self.bin, self.lib, self.run, self.logs, self.root / "state",
                  self.root / "state" / "slurmctld", self.root / "registry",
                  self.root / "model", self.root / "stores", self.root / "nodes"):
            d.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)        # users read the site config, helper and library
        self.run.chmod(0o755)         # munge's socket directory must be 0755
        # The stores and the nodes' disks are reachable by root only from the host: a
        # user's process writes the shared tier through qosfs or not at all.
        (self.root / "stores").chmod(0o700)
        (self.root / "nodes").chmod(0o700)
        for name, *_ in TIERS:
            p = self.tier_path(name)
            p.mkdir(parents=True, exist_ok=True)
            p.chmod(0o755)
        for name, kind, *_ in TIERS:
            if kind == "shared":
                self.store_path(name).mkdir(exist_ok=True)
                self.store_path(name).chmod(0o755)
        names = [f"node{i + 1}" for i in range(self.n_nodes)]
        for n in names:
            d = self.root / "nodes" / n / "ssd"
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
            (self.root / "spool" / n).mkdir(parents=True, exist_ok=True)

        n_local = self.n_nodes if self.enforce_local else 0
        n_d = self.n_daemons + n_local
        ports = free_ports(1 + self.n_nodes + 2 * n_d)
        ctld_port, node_ports = ports[0], ports[1:1 + self.n_nodes]
        addrs = [f"127.0.0.1:{p}" for p in ports[1 + self.n_nodes:1 + self.n_nodes
                                                 + self.n_daemons]]
        local = {n: f"127.0.0.1:{p}" for n, p in
                 zip(names, ports[1 + self.n_nodes + self.n_daemons:1 + self.n_nodes + n_d],
                     strict=False)}
        # Each daemon's session port: node agents' data calls, sealed (docs/auth.md).
        sessions = {a: f"127.0.0.1:{p}" for a, p in
                    zip([*addrs, *local.values()], ports[1 + self.n_nodes + n_d:],
                        strict=True)}
        if self.enforce_local:
            self.store_path("ssd").mkdir(exist_ok=True)
        (self.etc / "cluster.json").write_text(json.dumps(
            {"daemons": addrs, "slurmctld_port": ctld_port, "node_daemons": local,
             "sessions": sessions, "nodes": dict(zip(names, node_ports, strict=True))}))

        self._make_pki(names, self.n_daemons)
        self._start_munge()
        self._write_token()
        self._start_daemons(addrs)
        self._install_lib()
        self._write_site(addrs, local)
        self._train_example()
        self._write_slurm(ctld_port, dict(zip(names, node_ports, strict=True)))
        for wait in [self._start_node(n, addrs) for n in names]:
            wait()
        self._mount_head(addrs)
        self._start_slurm(timeout - (time.perf_counter() - t0))
        took = time.perf_counter() - t0
        (self.root / "env").write_text("".join(f"export {k}={v}\n" for k, v in self.env().items()))
        log.info("local cluster ready in %.1f s", took)
        return took

    def _check_root_dir(self) -> None:
        """Root runs what is under the directory (prolog, hooks): in /tmp anyone could
        have made it first, so it must be root's and writable by root only."""
        try:
            st = os.lstat(self.root)
        except FileNotFoundError:
            self.root.mkdir(parents=True, mode=0o755)
            return
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 \
                or st.st_mode & 0o022:
            raise ClusterError(f"{self.root} exists and is not a directory only root can "
                               "write; remove it or choose another --dir")

    def _start_munge(self) -> None:
        key = self.etc / "munge.key"
        if not key.exists():
            subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True)
        key.chmod(0o400)
        sock = self.run / "munge.socket.2"
        subprocess.run(["munged", f"--socket={sock}", f"--key-file={key}",
                        f"--pid-file={self.run / 'munged.pid'}",
                        f"--log-file={self.logs / 'munged.log'}",
                        f"--seed-file={self.root / 'state' / 'munge.seed'}", "--force"],
                       check=True, capture_output=True)
        _wait(lambda: subprocess.run(["munge", "-S", str(sock), "-n"], capture_output=True)
              .returncode == 0, 10, "munged did not answer")

    def _write_token(self) -> str:
        tok = self.etc / "admin.token"
        if not tok.exists():
            tok.write_text(secrets.token_hex(24))
        tok.chmod(0o600)
        return tok.read_text().strip()

    def _start_daemons(self, addrs: list[str]) -> None:
        """The shared tier's daemons, all serving its one store (a parallel file
        system's servers, files striped over them by qosfs). They share their policies
        through a local etcd member (tokenbucket_daemon/etcdlocal.py, under etcd/)."""
        etcd = EtcdCluster(self.root / "etcd").start()
        for i, addr in enumerate(addrs):
            tiers = {n: self.store_path(n) for n, k, *_ in TIERS if k == "shared"}
            peers = ", ".join(f'"{a}"' for a in addrs if a != addr)
            state = self.root / "state" / f"tokenbucketd-{i}"
            state.mkdir(parents=True, exist_ok=True)
            conf = self.etc / f"tokenbucketd-{i}.toml"
            conf.write_text(
                f'daemon_id = "d{i}"\nlisten = "{addr}"\nstate_dir = "{state}"\n'
                f'admin_token_file = "{self.etc / "admin.token"}"\npeers = [{peers}]\n'
                + self._tls_toml(f"daemon-d{i}", addr)
                + "[tiers]\n" + "".join(f'{n} = "{p}"\n' for n, p in tiers.items())
                + etcd.daemon_config() + self._device_toml(tiers, len(addrs)))
            self.start_daemon(i, wait=False)
        for i in range(len(addrs)):
            self.wait_daemon(i)

    def start_daemon(self, i: int, wait: bool = True) -> int:
        """Start daemon ``i`` from its config (again, after stop_daemon)."""
        conf = self.etc / f"tokenbucketd-{i}.toml"
        with open(self.logs / f"tokenbucketd-{i}.log", "ab") as logf:
            proc = subprocess.Popen([str(PYTHON), "-m", "tokenbucket_daemon.server.app",
                                     "--config", str(conf)], stdout=logf, stderr=logf,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=str(self.root))
        (self.run / f"tokenbucketd-{i}.pid").write_text(str(proc.pid))
        if wait:
            self.wait_daemon(i)
        return proc.pid

    def wait_daemon(self, i: int, timeout: float = 20.0) -> None:
        addr = self.daemon_addresses()[i]
        host, port = addr.rsplit(":", 1)
        _wait(lambda: _port_open(host, int(port)), timeout,
              f"tokenbucketd-{i} did not listen on {addr} (see {self.logs})")

    def stop_daemon(self, i: int) -> None:
        """Stop daemon ``i`` (SIGTERM) and wait until it is gone."""
        pid = _pids(self.run).get(f"tokenbucketd-{i}")
        if pid is None or not _alive(pid):
            return
        os.kill(pid, signal.SIGTERM)
        _wait(lambda: _gone(pid), 15, f"tokenbucketd-{i} did not stop")
        (self.run / f"tokenbucketd-{i}.pid").unlink(missing_ok=True)

    def _node_daemon(self, node: Node, addr: str) -> None:
        """The daemon of ``node``'s enforced node-local tiers, inside the node (it must
        see the node's own store)."""
        state = self.root / "state" / f"tokenbucketd-{node.name}"
        state.mkdir(parents=True, exist_ok=True)
        conf = self.etc / f"tokenbucketd-{node.name}.toml"
        conf.write_text(f'daemon_id = "{node.name}"\nlisten = "{addr}"\n'
                        f'state_dir = "{state}"\n'
                        f'admin_token_file = "{self.etc / "admin.token"}"\n'
                        + self._tls_toml(f"daemon-{node.name}", addr)
                        + f'[tiers]\nssd = "{self.store_path("ssd")}"\n')
        p = node.spawn([str(PYTHON), "-m", "tokenbucket_daemon.server.app", "--config",
                        str(conf)], f"tokenbucketd-{node.name}.log")
        del p          # it lives in the node's cgroup: removing the node stops it
        host, port = addr.rsplit(":", 1)
        _wait(lambda: _port_open(host, int(port)), 20,
              f"the daemon of {node.name} did not listen on {addr} (see {self.logs})")

    def _qosfs_argv(self, tier: str, addrs: list[str], log_name: str,
                    agent: str) -> list[str]:
        i = self.identity(f"agent-{agent}")
        return [str(PYTHON), "-m", "qosfs.cli", "mount", tier, str(self.tier_path(tier)),
                "--daemons", ",".join(addrs), "--foreground",
                "--ca", str(i.ca), "--cert", str(i.cert), "--key", str(i.key),
                "--log", str(self.logs / log_name)]

    def _start_node(self, name: str, addrs: list[str]) -> Callable[[], None]:
        """Make node ``name`` and start its programs; returns a wait for its mounts."""
        node = self.node(name)
        node.create()
        mounts = {n: addrs for n, k, *_ in TIERS if k == "shared"}
        own = self.node_daemons().get(name)
        if own:
            self._node_daemon(node, own)
            mounts["ssd"] = [own]
        for tier, via in mounts.items():
            node.spawn(self._qosfs_argv(tier, via, f"qosfs-{tier}-{name}.log", name),
                       f"qosfs-{tier}-{name}.out")

        def mounted() -> bool:
            return all(node.run(["mountpoint", "-q", str(self.tier_path(t))]).returncode == 0
                       for t in mounts)

        def wait() -> None:
            _wait(mounted, 30, f"qosfs did not mount on {name} (see {self.logs})")
            self.start_slurmd(name)
        return wait

    def start_slurmd(self, name: str) -> int:
        """slurmd of node ``name``, inside the node (again, after it was killed)."""
        env = {**os.environ, **self.env()}
        p = self.node(name).spawn(["slurmd", "-D", "-N", name], f"slurmd-{name}.out", env=env)
        (self.run / f"slurmd-proc-{name}.pid").write_text(str(p.pid))
        return p.pid

    def slurmd_pid(self, name: str) -> int | None:
        """The pid of node ``name``'s slurmd (the one it wrote), if it runs."""
        pid = _pids(self.run).get(f"slurmd-{name}")
        return pid if pid is not None and _alive(pid) else None

    def _mount_head(self, addrs: list[str]) -> None:
        """The head's own view of the shared tiers (made after the nodes, so that their
        namespaces do not inherit it)."""
        for tier in [n for n, k, *_ in TIERS if k == "shared"]:
            with open(self.logs / f"qosfs-{tier}-head.out", "ab") as logf:
                p = subprocess.Popen(self._qosfs_argv(tier, addrs, f"qosfs-{tier}-head.log",
                                                      "head"),
                                     stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                     start_new_session=True)
            (self.run / f"qosfs-{tier}-head.pid").write_text(str(p.pid))
            _wait(lambda t=tier: os.path.ismount(self.tier_path(t)), 30,
                  f"qosfs did not mount {tier} on the head (see {self.logs})")

    def _install_lib(self) -> None:
        """The package where users can read it, and the entry points Slurm runs."""
        dst = self.lib / "qos_plugin"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(REPO / "qos_plugin", dst,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        subprocess.run([str(REPO / "deploy" / "slurm" / "build"), str(self.lib)], check=True,
                       capture_output=True)
        # Users cannot write bytecode there: compile it now, or every sbatch compiles
        # the planner again (~70 ms).
        subprocess.run(["/usr/bin/python3", "-m", "compileall", "-q", str(dst)], check=True,
                       capture_output=True)
        for p in [self.lib, *self.lib.rglob("*")]:
            p.chmod(0o755 if p.is_dir() or p.suffix == ".so" else 0o644)
        plan = self.bin / "qos-slurm-plan"
        plan.write_text(
            "#!/usr/bin/python3 -I\n"
            "# The SPANK plugin's planner helper: runs as the submitting user.\n"
            f"import sys\nsys.path.insert(0, {str(self.lib)!r})\n"
            "from qos_plugin.slurm.cli import main\nsys.exit(main())\n")
        env = " ".join(f"{k}={v}" for k, v in self.env().items())
        for name, args in (("qos-slurm", '"$@"'), ("qos-prolog", "prolog"),
                           ("qos-epilog", "epilog"), ("qos-node-prolog", "node-prolog"),
                           ("qos-node-epilog", "node-epilog")):
            (self.bin / name).write_text(
                f"#!/bin/sh\nexport {env} PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
                f"exec {PYTHON} -I -m qos_plugin.slurm.cli --site {self.site_conf} {args}\n")
        for f in self.bin.iterdir():
            f.chmod(0o755)

    def _device_toml(self, tiers: dict[str, Path], daemons: int) -> str:
        """A shared daemon's part of ``--shared-bandwidth`` (files are striped evenly)."""
        if self.shared_bandwidth <= 0:
            return ""
        part = self.shared_bandwidth / daemons
        lines = "".join(f"{n} = {part:.0f}\n" for n in tiers)
        return f"[tier_bandwidth]\n{lines}[emulated_device]\n{lines}"

    def _write_site(self, addrs: list[str], local: dict[str, str]) -> None:
        lines = [f'registry = "{self.root / "registry"}"',
                 f'on_unavailable = "{self.on_unavailable}"', f"max_nodes = {self.n_nodes}",
                 f'admin_token_file = "{self.etc / "admin.token"}"',
                 f'state_dir = "{self.root / "state" / "qos"}"', ""]
        for name, kind, *_ in TIERS:
            lines += [f"[tiers.{name}]", f'kind = "{kind}"']
            if kind == "shared":
                lines += ['enforce = "daemons"', f'path = "{self.store_path(name)}"',
                          f'mount = "{self.tier_path(name)}"',
                          "daemons = [" + ", ".join(f'"{a}"' for a in addrs) + "]"]
                if self.shared_bandwidth > 0:
                    lines += [f'bandwidth = "{self.shared_bandwidth:.0f}B/s"',
                              f"reserve_margin = {RESERVE_MARGIN}"]
                lines.append("")
            elif name == "ssd" and local:
                lines += ['enforce = "daemons"', f'path = "{self.store_path(name)}"',
                          f'mount = "{self.tier_path(name)}"', ""]
            else:
                lines += ['enforce = "direct"', f'path = "{self.tier_path(name)}"', ""]
        for node, addr in local.items():
            lines += [f"[nodes.{node}]", f'daemon = "{addr}"', ""]
        self.site_conf.write_text("\n".join(lines))
        self.site_conf.chmod(0o644)

    def _train_example(self) -> None:
        reg = self.root / "registry"
        if (reg / "pipeline").is_dir():
            return
        from qos_plugin.cli.qos_plan import main as qos_plan
        from qos_plugin.examples.pipeline import pipeline, write_pipeline
        from qos_plugin.model.synthetic import TierModel

        wf = pipeline([(n, k) for n, k, *_ in TIERS],
                      {n: TierModel(r, w, c) for n, _, r, w, c in TIERS}, scale=10.0)
        wf.move_mibps = 200.0
        counts = list(range(1, self.n_nodes + 1))
        files = write_pipeline(wf, self.root / "model", counts)
        rc = qos_plan(["train", "pipeline", "--template", str(files["template"]),
                       "--costs", str(files["costs"]), "--io-data", str(files["io"]),
                       "--nodes", ",".join(map(str, counts)), "--registry", str(reg)])
        if rc:
            raise ClusterError("training the example workflow failed")
        for p in [reg, *reg.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)

    def _write_slurm(self, ctld_port: int, node_ports: dict[str, int]) -> None:
        cpus = os.cpu_count() or 1
        r = self.root
        nodes = "".join(f"NodeName={n} NodeAddr=127.0.0.1 NodeHostname={n} Port={p} "
                        f"CPUs={cpus} RealMemory={NODE_MEMORY_MB} State=UNKNOWN\n"
                        for n, p in node_ports.items())
        conf = f"""# generated by deploy/local/up
ClusterName=qoslocal
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.run / 'munge.socket.2'}
StateSaveLocation={r / 'state' / 'slurmctld'}
SlurmdSpoolDir={r / 'spool' / '%n'}
SlurmctldPidFile={self.run / 'slurmctld.pid'}
SlurmdPidFile={self.run / 'slurmd-%n.pid'}
SlurmctldLogFile={self.logs / 'slurmctld.log'}
SlurmdLogFile={self.logs / 'slurmd-%n.log'}
# Jobs in cgroups: qosfs reads a process's job from /proc/<pid>/cgroup.
ProctrackType=proctrack/cgroup
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Every node is this machine: its resources are what this file says.
SlurmdParameters=config_overrides
ReturnToService=2
# A node whose slurmd is gone is declared down (and its jobs failed) within seconds.
SlurmdTimeout={SLURMD_TIMEOUT}
# ... and such a job ends failed instead of being requeued: its placement, directories
# and reservations were made for one start.
JobRequeue=0
MpiDefault=none
MailProg=/bin/true
PlugStackConfig={self.plugstack}
JobSubmitPlugins=lua
# Node-local tiers are prepared on each of the job's nodes at allocation, before the
# batch script starts anywhere, and cleaned up there when it ends.
PrologFlags=Alloc
Prolog={self.bin / 'qos-node-prolog'}
Epilog={self.bin / 'qos-node-epilog'}
PrologSlurmctld={self.bin / 'qos-prolog'}
EpilogSlurmctld={self.bin / 'qos-epilog'}
{nodes}PartitionName=debug Nodes={','.join(node_ports)} Default=YES MaxTime=INFINITE State=UP
"""
        self.slurm_conf.write_text(conf)
        (self.etc / "cgroup.conf").write_text(
            "# generated by deploy/local/up: each node mounts its own freezer hierarchy\n"
            "CgroupPlugin=cgroup/v1\nCgroupAutomount=no\nCgroupMountpoint=/sys/fs/cgroup\n"
            "ConstrainCores=no\nConstrainRAMSpace=no\nConstrainDevices=no\n")
        self.write_plugstack()
        shutil.copy(REPO / "deploy" / "slurm" / "job_submit.lua", self.etc / "job_submit.lua")
        for f in self.etc.iterdir():
            if f.suffix in (".conf", ".lua", ".toml"):
                f.chmod(0o644)

    def write_plugstack(self, helper: str | None = None, on_unavailable: str | None = None,
                        timeout: int = 10) -> None:
        """(Re)write plugstack.conf; sbatch reads it at every call."""
        self.plugstack.write_text(
            f"required {self.lib / 'qos_spank.so'} "
            f"helper={helper or self.bin / 'qos-slurm-plan'} site={self.site_conf} "
            f"on_unavailable={on_unavailable or self.on_unavailable} timeout={timeout}\n")
        self.plugstack.chmod(0o644)

    def _start_slurm(self, budget: float) -> None:
        env = {**os.environ, **self.env()}
        p = subprocess.run(["slurmctld"], env=env, capture_output=True, text=True)
        if p.returncode:
            raise ClusterError(f"slurmctld did not start: {p.stderr.strip()} "
                               f"(see {self.logs / 'slurmctld.log'})")
        self.wait_idle(max(10.0, budget))

    def wait_idle(self, timeout: float = 60.0, nodes: list[str] | None = None) -> None:
        """Until every node (or those named) is idle."""
        env = {**os.environ, **self.env()}
        want = set(nodes or self.node_names())

        def idle() -> bool:
            p = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], env=env,
                               capture_output=True, text=True)
            states = dict(line.split() for line in p.stdout.splitlines() if line.strip())
            return p.returncode == 0 and all(states.get(n) == "idle" for n in want)
        _wait(idle, timeout, f"nodes {sorted(want)} did not become idle (see {self.logs})")

    # ------------------------------------------------------------------ down

    def down(self, purge: bool = False) -> list[str]:
        stopped = []
        pids = _pids(self.run)

        def stop(names: list[str]) -> None:
            live = [n for n in names if n in pids and _alive(pids[n])]
            for n in live:
                os.kill(pids[n], signal.SIGTERM)
            deadline = time.monotonic() + 15
            for n in live:
                while not _gone(pids[n]) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _alive(pids[n]):
                    os.kill(pids[n], signal.SIGKILL)
                stopped.append(n)
            for n in names:
                (self.run / f"{n}.pid").unlink(missing_ok=True)

        stop(["slurmctld"])
        nodes = [f.name[len("node-"):-len(".pid")] for f in self.run.glob("node-*.pid")] \
            if self.run.is_dir() else []
        for name in nodes:
            Node(NodeSpec(name, f"{self.cgroup_prefix}-{name}"), self.run, self.logs).remove()
            unpin_cpus(f"{self.cgroup_prefix}-{name}")
            stopped.append(name)
        for name in nodes:
            for f in self.run.glob(f"slurmd*-{name}.pid"):
                f.unlink(missing_ok=True)
        stop(sorted(k for k in pids if k.startswith("qosfs-")))
        for name, kind, *_ in TIERS:
            if kind == "shared" and os.path.ismount(self.tier_path(name)):
                subprocess.run(["umount", "-l", str(self.tier_path(name))], capture_output=True)
        stop(sorted(k for k in pids if k.startswith("tokenbucketd")))
        unpin_cpus(f"{self.cgroup_prefix}-daemons")
        if (self.root / "etcd" / "cluster.json").exists():
            EtcdCluster(self.root / "etcd").stop()
            stopped.append("etcd")
        stop(["munged"])
        if purge:
            shutil.rmtree(self.root, ignore_errors=True)
        return stopped


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _gone(pid: int) -> bool:
    _reap(pid)
    return not _alive(pid)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise ClusterError(what)


def ensure_user(name: str) -> int:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True,
                       capture_output=True)
        return pwd.getpwnam(name).pw_uid


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="deploy/local", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster")
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    up.add_argument("--nodes", type=int, default=2, help="compute nodes (default 2)")
    up.add_argument("--daemons", type=int, default=2,
                    help="tokenbucketd daemons of the shared tier (default 2)")
    up.add_argument("--user", default="qosuser",
                    help="a non-root user to submit jobs as, created if missing (default "
                    "qosuser; '' for none)")
    up.add_argument("--enforce-local", action="store_true",
                    help="serve the node-local disk tier ssd through a daemon on each node "
                    "(and qosfs) instead of directly")
    up.add_argument("--on-unavailable", choices=("open", "closed"), default="open",
                    help="planner or daemon unreachable: run jobs anyway (open, default) or "
                    "refuse them (closed)")
    up.add_argument("--shared-bandwidth", default="", metavar="RATE",
                    help="make the shared tier a device of RATE (e.g. 200MB/s) in all: its "
                    "daemons emulate and schedule their parts of it and the site admits "
                    "reservations against it (default: the store's own speed, no "
                    "admission)")
    down = sub.add_parser("down", help="stop everything the cluster started, by PID")
    down.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    down.add_argument("--purge", action="store_true", help="also delete the directory")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if a.command == "up":
            if a.daemons < 1:
                raise ClusterError(f"--daemons {a.daemons}: give 1 or more")
            if not 1 <= a.nodes <= 16:
                raise ClusterError(f"--nodes {a.nodes}: give 1 to 16")
            bw = 0.0
            if a.shared_bandwidth:
                try:
                    bw = parse_rate(a.shared_bandwidth, "--shared-bandwidth")
                except QosPluginError as e:
                    raise ClusterError(str(e)) from None
            c = LocalCluster(a.dir, a.daemons, a.on_unavailable, a.nodes, a.enforce_local,
                             bw)
            try:
                took = c.up(a.user or None)
            except BaseException:
                c.down()
                raise
            print(f"local cluster ready in {took:.1f} s: {a.dir}\n"
                  f"  source {c.root / 'env'}   # SLURM_CONF, QOS_SITE_CONFIG, qosctl's daemon\n"
                  f"  nodes: {' '.join(c.node_names())}; daemons: "
                  f"{' '.join(c.daemon_addresses())}\n"
                  f"  try: sbatch --qos-workflow=pipeline --qos-deadline=5:00 job.sh\n"
                  f"  stop: deploy/local/down --dir {a.dir}")
        else:
            stopped = LocalCluster(a.dir).down(a.purge)
            print(f"stopped {', '.join(stopped) or 'nothing (not running)'}")
    except (ClusterError, subprocess.CalledProcessError) as e:
        print(f"deploy/local {a.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
