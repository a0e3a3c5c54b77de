"""Throwaway Unix users for the permission tests: made with useradd when missing, as root.

``qosuser`` (also in group ``qosshare``) and ``qosother``. They are left in place: the
Slurm tests submit as ``qosuser`` too, and making them again costs a useradd each run.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from dataclasses import dataclass

import pytest

from tokenbucket_daemon.caller import Caller

SHARED_GROUP = "qosshare"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]      # supplementary groups, as the kernel gives them at login

    @property
    def caller(self) -> Caller:
        return Caller(self.uid, self.gid, self.groups)


def _run(*cmd: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if r.returncode:
        pytest.fail(f"{' '.join(cmd)} failed: {r.stderr.strip()}")


def _user(name: str) -> User:
    pw = pwd.getpwnam(name)
    groups = tuple(sorted(set(os.getgrouplist(name, pw.pw_gid))))
    return User(name, pw.pw_uid, pw.pw_gid, groups)


def ensure_users() -> tuple[User, User]:
    """(qosuser, qosother), made if missing; qosuser is a member of ``qosshare``."""
    if os.geteuid() != 0:
        pytest.fail("the permission tests create users and act as them: they need root")
    try:
        grp.getgrnam(SHARED_GROUP)
    except KeyError:
        _run("groupadd", SHARED_GROUP)
    for name in ("qosuser", "qosother"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            _run("useradd", "--no-create-home", "--shell", "/bin/bash", name)
    if "qosuser" not in grp.getgrnam(SHARED_GROUP).gr_mem:
        _run("usermod", "-a", "-G", SHARED_GROUP, "qosuser")
    return _user("qosuser"), _user("qosother")


def group_id(name: str) -> int:
    return grp.getgrnam(name).gr_gid
