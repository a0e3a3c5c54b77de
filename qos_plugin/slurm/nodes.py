"""Compute nodes of the local cluster: each a host of its own made from Linux namespaces.

A node is a long-lived holder process (``sleep infinity``) in

- its own UTS namespace: its own hostname, which is how its slurmd finds its NodeName;
- its own mount namespace (private propagation): a tmpfs of its own for the memory tier,
  a directory of its own bound over the disk tier's path, its own qosfs mounts, and its
  own cgroup v1 ``freezer`` mount;
- its own cgroup namespace rooted at ``freezer:/<prefix>-<node>``, so that its slurmd's
  ``proctrack/cgroup`` makes ``/slurm.../job_N/step_M`` cgroups apart from the other
  nodes', and a process's job can be read from ``/proc/<pid>/cgroup`` by qosfs.

Every program of a node (slurmd, qosfs, its daemon) is started with ``nsenter`` into the
holder's namespaces after moving itself into the node's cgroup, so killing one of them
leaves the node standing. Stopping a node kills every process of its cgroup subtree (the
holder last); the kernel then drops the namespaces and every mount in them. The network
is the host's: all nodes listen on loopback, on ports of their own.

Only the kernel's interfaces are used (``unshare``, ``nsenter``, ``mount``, cgroupfs).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
CGROUP_ROOT = Path("/sys/fs/cgroup")
# proctrack/cgroup needs only the freezer hierarchy.
CONTROLLER = "freezer"


class NodeError(RuntimeError):
    """A node could not be made, entered or removed."""


@dataclass
class NodeSpec:
    name: str
    cgroup: str                      # the node's cgroup, relative to the freezer root
    tmpfs: list[tuple[Path, str]] = field(default_factory=list)   # (where, size)
    binds: list[tuple[Path, Path]] = field(default_factory=list)  # (source, where)


def _cgroup_dir(spec_cgroup: str) -> Path:
    return CGROUP_ROOT / CONTROLLER / spec_cgroup


def _init_script(spec: NodeSpec, pid_file: Path) -> str:
    """What the holder runs inside its new namespaces before it sleeps."""
    lines = ["set -e", f"hostname {spec.name}",
             # Our own freezer view, rooted at the node's cgroup (cgroup namespace).
             f"mount -t tmpfs -o mode=0755,size=1m qos-cgroup {CGROUP_ROOT}",
             f"mkdir -p {CGROUP_ROOT / CONTROLLER}",
             f"mount -t cgroup -o {CONTROLLER} cgroup {CGROUP_ROOT / CONTROLLER}"]
    for where, size in spec.tmpfs:
        lines.append(f"mount -t tmpfs -o mode=0755,size={size} qos-{spec.name} '{where}'")
    for src, where in spec.binds:
        lines.append(f"mount --bind '{src}' '{where}'")
    lines += [f"echo $$ > '{pid_file}'", "exec sleep infinity"]
    return "\n".join(lines) + "\n"


def cgroup_procs(spec_cgroup: str) -> list[int]:
    """Every process in the node's cgroup subtree."""
    out: list[int] = []
    base = _cgroup_dir(spec_cgroup)
    if not base.is_dir():
        return out
    for d, _, _ in os.walk(base):
        try:
            out += [int(x) for x in (Path(d) / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


CPUSET_ROOT = CGROUP_ROOT / "cpuset"


def pin_cpus(spec_cgroup: str, cpus: str) -> int:
    """Confine every process of the node (its cgroup subtree: slurmd, its mounts, its
    jobs) and all they start later to ``cpus`` (a cpuset list: ``1``, ``0-1``): separate
    hosts have CPUs of their own, nodes on one machine share its cores unless pinned.
    A cpuset cgroup of the node's name holds them; the number of processes moved."""
    return pin_processes(spec_cgroup, cpus, cgroup_procs(spec_cgroup))


def pin_processes(name: str, cpus: str, pids: list[int]) -> int:
    """Move ``pids`` (every thread of each) into the cpuset cgroup ``name`` of
    ``cpus``; the number moved."""
    if not (CPUSET_ROOT / "cpuset.cpus").exists():
        raise NodeError(f"no cpuset cgroup hierarchy at {CPUSET_ROOT}")
    d = CPUSET_ROOT / name
    try:
        d.mkdir(exist_ok=True)
        # A new cpuset has no memory nodes: it takes its parent's before any process.
        (d / "cpuset.mems").write_text((CPUSET_ROOT / "cpuset.mems").read_text())
        (d / "cpuset.cpus").write_text(cpus)
    except OSError as e:
        raise NodeError(f"cpuset {cpus!r} for {name}: {e}") from None
    moved = 0
    for pid in pids:
        try:
            (d / "cgroup.procs").write_text(str(pid))
            moved += 1
        except OSError:            # gone meanwhile
            continue
    return moved


def unpin_cpus(name: str) -> None:
    """Give the processes of cpuset ``name`` every CPU again; drop it when it is empty."""
    d = CPUSET_ROOT / name
    if not d.is_dir():
        return
    try:
        (d / "cpuset.cpus").write_text((CPUSET_ROOT / "cpuset.cpus").read_text())
        d.rmdir()
    except OSError:                # still has processes: they keep every CPU
        pass


class Node:
    def __init__(self, spec: NodeSpec, run_dir: Path, log_dir: Path) -> None:
        self.spec = spec
        self.pid_file = run_dir / f"node-{spec.name}.pid"
        self.log_dir = log_dir

    @property
    def name(self) -> str:
        return self.spec.name

    def holder(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def create(self, timeout: float = 10.0) -> int:
        cg = _cgroup_dir(self.spec.cgroup)
        cg.mkdir(parents=True, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)
        script = self.log_dir.parent / "run" / f"node-{self.name}.init"
        script.write_text(_init_script(self.spec, self.pid_file))
        with open(self.log_dir / f"node-{self.name}.log", "ab") as logf:
            # The shell joins the node's cgroup first, so the cgroup namespace that
            # unshare makes is rooted there.
            subprocess.Popen(["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cg / "cgroup.procs"),
                              "unshare", "--uts", "--mount", "--cgroup",
                              "--propagation", "private", "sh", str(script)],
                             stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid = self.holder()
            if pid is not None:
                return pid
            time.sleep(0.02)
        raise NodeError(f"node {self.name} did not come up (see "
                        f"{self.log_dir / f'node-{self.name}.log'})")

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run inside the node: in its cgroup and its namespaces."""
        pid = self.holder()
        if pid is None:
            raise NodeError(f"node {self.name} is not running")
        procs = _cgroup_dir(self.spec.cgroup) / "cgroup.procs"
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs), "nsenter", "-t",
                str(pid), "--uts", "--mount", "--cgroup", "--", *argv]

    def run(self, argv: Sequence[str],
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(argv), capture_output=True, text=True,
                              timeout=timeout)

    def spawn(self, argv: Sequence[str], log_name: str,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.log_dir / log_name, "ab") as logf:
            return subprocess.Popen(self.command(argv), stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=logf, start_new_session=True, env=env)

    def remove(self, timeout: float = 10.0) -> None:
        """Kill every process of the node (the holder last), then its cgroups."""
        holder = self.holder()
        end = time.monotonic() + timeout
        sig = signal.SIGTERM
        while True:
            pids = [p for p in cgroup_procs(self.spec.cgroup) if p != holder]
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
            if time.monotonic() > end - timeout / 2:
                sig = signal.SIGKILL
            if time.monotonic() > end:
                break
        if holder is not None:
            try:
                os.kill(holder, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in cgroup_procs(self.spec.cgroup):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        remove_cgroup(self.spec.cgroup)
        self.pid_file.unlink(missing_ok=True)


def remove_cgroup(spec_cgroup: str, timeout: float = 5.0) -> None:
    """Remove the node's cgroup tree, deepest first (a cgroup with processes is busy)."""
    base = _cgroup_dir(spec_cgroup)
    end = time.monotonic() + timeout
    while base.exists() and time.monotonic() < end:
        dirs = sorted((Path(d) for d, _, _ in os.walk(base)), key=lambda p: -len(p.parts))
        for d in dirs:
            try:
                d.rmdir()
            except OSError:
                pass
        if base.exists():
            time.sleep(0.1)
    if base.exists():
        log.warning("cgroup %s is still busy; remove it by hand", base)
