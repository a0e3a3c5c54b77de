"""Who a calling process is: its credentials, and the job its I/O is charged to.

The job comes from the kernel only: the Slurm job cgroup the process is in, else the class
of its user (``user:<name>``), never a job the process names. ``SLURM_JOB_ID`` in the
process's environment is read only when the site turns it on (``trust_environ``, qosfs
``--trust-environ``), which is unsafe: any process can set its own environment and charge
its I/O to any job. The environment's account is trusted only together with the job the
cgroup gave, and only when the environment names that same job.

The credentials are the FUSE request's uid and gid (the kernel's fsuid/fsgid of the caller)
and the process's supplementary groups from /proc/<pid>/status; the daemons act with them.

Pure: the process table is read through a :class:`ProcTable` and time is passed in, so the
rules and the cache are tested with plain data. ``qosfs.procfs`` reads the real /proc.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from tokenbucket_daemon.caller import Caller

# Slurm's cgroup paths, v1 ".../slurm/uid_1000/job_777/step_0/task_0" and v2
# ".../slurmstepd.scope/job_777/step_batch/user/task_0", name the job as a whole component.
_CGROUP_JOB = re.compile(r"/job_(\d+)(?=/|$)")
# The prefix of a job tag that stands for "no job, this user": per-user default classes.
USER_CLASS_PREFIX = "user:"


@dataclass(frozen=True)
class Identity:
    """The tag qosfs puts on a request, where its job was found, and the caller's
    credentials (None: the daemon acts as itself, for qosfs's own calls)."""

    job: str
    user: str = ""
    account: str = ""
    source: str = ""       # "cgroup", "environ" or "user"
    caller: Caller | None = None


def job_from_cgroup(text: str) -> str | None:
    """The Slurm job id in a /proc/<pid>/cgroup file, or None when the process is in none."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        m = _CGROUP_JOB.search(path)
        if m:
            return m.group(1)
    return None


def groups_from_status(text: str) -> tuple[int, ...] | None:
    """The supplementary groups in a /proc/<pid>/status file (None without a Groups line)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "Groups":
            try:
                return tuple(int(g) for g in value.split())
            except ValueError:
                return None
    return None


def parse_environ(raw: bytes) -> dict[str, str]:
    """/proc/<pid>/environ (NUL-separated NAME=value) as a dict; undecodable bytes replaced."""
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name:
            env[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def job_from_environ(env: dict[str, str]) -> str | None:
    job = env.get("SLURM_JOB_ID", "").strip()
    return job if job.isdigit() else None


class ProcTable(Protocol):
    """Read access to the process table; each method returns None when the process is gone
    or the file cannot be read."""

    def start_time(self, pid: int) -> str | None: ...
    def cgroup(self, pid: int) -> str | None: ...
    def environ(self, pid: int) -> bytes | None: ...
    def groups(self, pid: int) -> tuple[int, ...] | None: ...
    def user_name(self, uid: int) -> str: ...


@dataclass
class _Entry:
    start: str | None
    ids: tuple[int, int]       # the (uid, gid) the entry was made for
    expires: float
    identity: Identity


class JobResolver:
    """Identity of a pid, cached per pid.

    An entry is reused only while the pid still has the same start time (a recycled pid is
    another process), the request the same uid and gid (a setuid program keeps its pid),
    and for at most ``ttl`` seconds (a process can be moved into a job's cgroup after it
    started, as pam_slurm_adopt does, or change its groups).
    ``trust_environ`` lets ``SLURM_JOB_ID`` in a process's environment name its job when
    no job cgroup does: unsafe, any process can set it (see the module's docstring).
    """

    def __init__(self, proc: ProcTable, ttl: float = 5.0, capacity: int = 4096,
                 trust_environ: bool = False) -> None:
        self.proc, self.ttl, self.capacity = proc, ttl, capacity
        self.trust_environ = trust_environ
        self._cache: OrderedDict[int, _Entry] = OrderedDict()
        self.lookups = 0       # resolutions that read the process's files (not cache hits)

    def resolve(self, pid: int, uid: int, gid: int, now: float) -> Identity:
        """Who the process ``pid`` is, for a request the kernel made as ``uid``/``gid``."""
        start = self.proc.start_time(pid) if pid > 0 else None
        entry = self._cache.get(pid)
        if entry is not None and entry.start == start and entry.expires > now \
                and start is not None and entry.ids == (uid, gid):
            self._cache.move_to_end(pid)
            return entry.identity
        identity = self._identify(pid, uid, gid)
        if start is not None:
            self._cache[pid] = _Entry(start, (uid, gid), now + self.ttl, identity)
            self._cache.move_to_end(pid)
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return identity

    def _identify(self, pid: int, uid: int, gid: int) -> Identity:
        self.lookups += 1
        user = self.proc.user_name(uid)
        # A request the kernel makes for no process (pid 0), or one whose groups cannot be
        # read any more, goes with no supplementary groups: the kernel has checked the
        # request against the real ones already (default_permissions).
        groups = self.proc.groups(pid) if pid > 0 else None
        caller = Caller(uid, gid, groups or ())
        text = self.proc.cgroup(pid) if pid > 0 else None
        job = job_from_cgroup(text) if text else None
        env: dict[str, str] = {}
        if pid > 0 and (job is not None or self.trust_environ):
            raw = self.proc.environ(pid)
            env = parse_environ(raw) if raw else {}
        if job is not None:
            # The environment's account is only trusted for the job it was set for.
            same = job_from_environ(env) == job
            return Identity(job, user, env.get("SLURM_JOB_ACCOUNT", "") if same else "",
                            "cgroup", caller)
        if self.trust_environ:
            job = job_from_environ(env)
            if job is not None:
                return Identity(job, user, env.get("SLURM_JOB_ACCOUNT", ""), "environ",
                                caller)
        return Identity(USER_CLASS_PREFIX + user, user, "", "user", caller)
