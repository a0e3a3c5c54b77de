"""The real process table behind :class:`qosfs.jobid.ProcTable`."""

from __future__ import annotations

import pwd

from qosfs.jobid import groups_from_status


class Procfs:
    def __init__(self, root: str = "/proc") -> None:
        self.root = root

    def _read(self, pid: int, name: str) -> bytes | None:
        try:
            with open(f"{self.root}/{pid}/{name}", "rb") as f:
                return f.read()
        except OSError:
            return None

    def start_time(self, pid: int) -> str | None:
        raw = self._read(pid, "stat")
        if raw is None:
            return None
        # Field 22 (starttime); the command name in parentheses may hold spaces.
        fields = raw[raw.rfind(b")") + 2:].split()
        return fields[19].decode() if len(fields) > 19 else None

    def cgroup(self, pid: int) -> str | None:
        raw = self._read(pid, "cgroup")
        return raw.decode("utf-8", "replace") if raw is not None else None

    def environ(self, pid: int) -> bytes | None:
        return self._read(pid, "environ")

    def groups(self, pid: int) -> tuple[int, ...] | None:
        raw = self._read(pid, "status")
        return groups_from_status(raw.decode("ascii", "replace")) if raw is not None else None

    def user_name(self, uid: int) -> str:
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)
