"""One small interface to Slurm, two backends: pyslurm when it imports and was built
for the installed Slurm, otherwise Slurm's own commands (``sinfo --json``,
``scontrol -o show job``; Slurm 22.05 has no JSON for scontrol and its ``squeue
--json`` ignores ``-j``)."""

from __future__ import annotations

import json
import logging
import pwd
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any, Protocol

from qos_plugin.errors import QosPluginError

log = logging.getLogger(__name__)


class SlurmError(QosPluginError):
    """A Slurm command failed or answered something unreadable."""


@dataclass(frozen=True)
class NodeInfo:
    name: str
    state: str
    cpus: int
    partitions: tuple[str, ...]


@dataclass(frozen=True)
class JobInfo:
    id: str
    name: str
    user: str
    uid: int
    state: str
    reason: str
    nodes: int
    time_limit: str
    comment: str
    burst_buffer: str
    fields: dict[str, str] = field(default_factory=dict)


class SlurmClient(Protocol):
    backend: str

    def nodes(self) -> list[NodeInfo]: ...

    def job(self, job_id: str) -> JobInfo | None: ...


# scontrol -o prints Key=Value pairs separated by blanks; values may hold blanks
# (Comment, BurstBuffer, Command), so a field starts only where a CamelCase key does.
_FIELD = re.compile(r"(?:^|\s)([A-Z][A-Za-z]*(?:[:/][A-Za-z]+)*)=")
_USER = re.compile(r"(.*)\((\d+)\)")


def parse_scontrol_line(line: str) -> dict[str, str]:
    marks = list(_FIELD.finditer(line))
    out: dict[str, str] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(line)
        out[m.group(1)] = line[m.end():end].strip()
    return out


def job_from_fields(f: dict[str, str]) -> JobInfo:
    user = _USER.fullmatch(f.get("UserId", ""))
    state = f.get("JobState", "")
    return JobInfo(id=f.get("JobId", ""), name=f.get("JobName", ""),
                   user=user.group(1) if user else f.get("UserId", ""),
                   uid=int(user.group(2)) if user else -1, state=state,
                   reason=f.get("Reason", ""), nodes=int(f.get("NumNodes", "0").split("-")[0]
                                                        or 0),
                   time_limit=f.get("TimeLimit", ""),
                   comment="" if f.get("Comment") == "(null)" else f.get("Comment", ""),
                   burst_buffer="" if f.get("BurstBuffer") == "(null)"
                   else f.get("BurstBuffer", ""), fields=f)


class CommandBackend:
    backend = "commands"

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    def _run(self, argv: list[str]) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SlurmError(f"{argv[0]}: cannot run ({e}); is Slurm installed and "
                             "SLURM_CONF set?") from None
        if p.returncode:
            raise SlurmError(f"{' '.join(argv)}: {p.stderr.strip() or 'exit ' + str(p.returncode)}")
        return p.stdout

    def nodes(self) -> list[NodeInfo]:
        try:
            doc = json.loads(self._run(["sinfo", "--json"]))
        except json.JSONDecodeError as e:
            raise SlurmError(f"sinfo --json: unreadable output ({e})") from None
        out = []
        for n in doc.get("nodes", []):
            state = n.get("state", "")
            out.append(NodeInfo(n.get("name", ""), state.lower() if isinstance(state, str)
                                else ",".join(state).lower(), int(n.get("cpus", 0)),
                                tuple(n.get("partitions", []))))
        return out

    def job(self, job_id: str) -> JobInfo | None:
        if not str(job_id).isdigit():
            raise SlurmError(f"job id {job_id!r} is not a number")
        try:
            out = self._run(["scontrol", "-o", "show", "job", str(job_id)]).strip()
        except SlurmError as e:
            if "Invalid job id" in str(e):
                return None
            raise
        return job_from_fields(parse_scontrol_line(out.splitlines()[0])) if out else None


class PySlurmBackend:
    """pyslurm's 22.05 API (``pyslurm.job``, ``pyslurm.node``)."""

    backend = "pyslurm"

    def __init__(self, module: Any) -> None:
        self._m = module

    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo(name, str(n.get("state", "")).lower(), int(n.get("cpus", 0)),
                         tuple(n.get("partitions", []) or ()))
                for name, n in self._m.node().get().items()]

    def job(self, job_id: str) -> JobInfo | None:
        try:
            found = self._m.job().find_id(str(job_id))
        except ValueError:
            return None
        if not found:
            return None
        j = found[0]
        uid = int(j.get("user_id", -1))
        try:                          # pyslurm gives the uid only; the hooks need the name
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        return JobInfo(id=str(j.get("job_id")), name=str(j.get("name", "")),
                       user=user, uid=uid,
                       state=str(j.get("job_state", "")), reason=str(j.get("state_reason", "")),
                       nodes=int(j.get("num_nodes", 0)), time_limit=str(j.get("time_limit", "")),
                       comment=str(j.get("comment") or ""),
                       burst_buffer=str(j.get("burst_buffer") or ""),
                       fields={k: str(v) for k, v in j.items()})


def installed_slurm_version() -> str | None:
    try:
        p = subprocess.run(["sinfo", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(\d+)\.(\d+)", p.stdout)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def pyslurm_matches(module_version: str, slurm_version: str | None) -> bool:
    """pyslurm's version starts with the Slurm release it was built for (22.5.x
    for 22.05): major and minor must agree."""
    m = re.match(r"(\d+)\.(\d+)", module_version)
    s = re.match(r"(\d+)\.(\d+)", slurm_version or "")
    return bool(m and s and int(m.group(1)) == int(s.group(1))
                and int(m.group(2)) == int(s.group(2)))


def slurm_client(prefer: str = "auto") -> SlurmClient:
    """pyslurm when it imports and matches the installed Slurm (or ``prefer`` says
    so), else the command backend."""
    if prefer in ("auto", "pyslurm"):
        try:
            import pyslurm

            version = getattr(pyslurm, "__version__", "")
            if pyslurm_matches(version, installed_slurm_version()):
                return PySlurmBackend(pyslurm)
            log.info("pyslurm %s does not match Slurm %s; using the commands", version,
                     installed_slurm_version())
        except ImportError:
            if prefer == "pyslurm":
                raise SlurmError("pyslurm is not installed; use the command backend") from None
    return CommandBackend()
