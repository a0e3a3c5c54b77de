"""Which job a calling process belongs to: its Slurm cgroup, else its environment, else its user.

Pure: the process table is read through a :class:`ProcTable` and time is passed in, so the
rules and the cache are tested with plain data. ``qosfs.procfs`` reads the real /proc.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

# Slurm's cgroup paths, v1 ".../slurm/uid_1000/job_777/step_0/task_0" and v2
# ".../slurmstepd.scope/job_777/step_batch/user/task_0", name the job as a whole component.
_CGROUP_JOB = re.compile(r"/job_(\d+)(?=/|$)")
# The prefix of a job tag that stands for "no job, this user": per-user default classes.
USER_CLASS_PREFIX = "user:"


@dataclass(frozen=True)
class Identity:
    """The tag qosfs puts on a file handle's requests, and where it was found."""

    job: str
    user: str = ""
    account: str = ""
    source: str = ""       # "cgroup", "environ" or "user"


def job_from_cgroup(text: str) -> str | None:
    """The Slurm job id in a /proc/<pid>/cgroup file, or None when the process is in none."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        m = _CGROUP_JOB.search(path)
        if m:
            return m.group(1)
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
    def user_name(self, uid: int) -> str: ...


@dataclass
class _Entry:
    start: str | None
    expires: float
    identity: Identity


class JobResolver:
    """Identity of a pid, cached per pid.

    An entry is reused only while the pid still has the same start time (a recycled pid is
    another process) and for at most ``ttl`` seconds (a process can be moved into a job's
    cgroup after it started, as pam_slurm_adopt does).
    """

    def __init__(self, proc: ProcTable, ttl: float = 5.0, capacity: int = 4096) -> None:
        self.proc, self.ttl, self.capacity = proc, ttl, capacity
        self._cache: OrderedDict[int, _Entry] = OrderedDict()
        self.lookups = 0       # resolutions that read the process's files (not cache hits)

    def resolve(self, pid: int, uid: int, now: float) -> Identity:
        start = self.proc.start_time(pid) if pid > 0 else None
        entry = self._cache.get(pid)
        if entry is not None and entry.start == start and entry.expires > now \
                and start is not None:
            self._cache.move_to_end(pid)
            return entry.identity
        identity = self._identify(pid, uid)
        if start is not None:
            self._cache[pid] = _Entry(start, now + self.ttl, identity)
            self._cache.move_to_end(pid)
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return identity

    def _identify(self, pid: int, uid: int) -> Identity:
        self.lookups += 1
        user = self.proc.user_name(uid)
        raw = self.proc.environ(pid) if pid > 0 else None
        env = parse_environ(raw) if raw else {}
        account = env.get("SLURM_JOB_ACCOUNT", "")
        text = self.proc.cgroup(pid) if pid > 0 else None
        job = job_from_cgroup(text) if text else None
        if job is not None:
            # The environment's account is only trusted for the job it was set for.
            same = job_from_environ(env) == job
            return Identity(job, user, account if same else "", "cgroup")
        job = job_from_environ(env)
        if job is not None:
            return Identity(job, user, account, "environ")
        return Identity(USER_CLASS_PREFIX + user, user, "", "user")
