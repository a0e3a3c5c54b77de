"""Acting as a data-plane caller: the calling thread's file system identity, on Linux.

Linux keeps credentials per thread. The file system uid and gid (fsuid, fsgid) and the
supplementary groups decide every permission check of open, create, lookup, chmod...
and who owns what a call creates. ``setfsuid`` and ``setfsgid`` change only the calling
thread; so does the raw ``setgroups`` system call, but glibc's wrapper (and Python's
``os.setgroups``) change every thread of the process, as POSIX wants, which would hand
one request's groups to every request running at the same moment. So all three are made
with ``syscall(2)`` here.

When the fsuid goes from 0 to another uid the kernel also drops the file system
capabilities (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID, CAP_CHOWN...)
from the thread's effective set, and gives them back when it returns to 0: that is what
makes the checks real for a daemon that runs as root (tests/integration/test_identity.py
checks it on this kernel).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from tokenbucket_daemon.caller import Caller
from tokenbucket_daemon.errors import PermissionDenied

__all__ = ["FsIdentity", "thread_identity"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# (setgroups, setfsuid, setfsgid) per machine, from the kernel's system call tables (the
# 32-bit-id versions). A machine not listed cannot act as callers; a wrong number would be
# caught by the self-test below, which checks the thread's credentials in /proc.
_SYSCALLS: dict[str, tuple[int, int, int]] = {
    "x86_64": (116, 122, 123),
    "aarch64": (159, 151, 152),     # the generic table (include/uapi/asm-generic/unistd.h)
    "riscv64": (159, 151, 152),
}
# The identity the self-test switches to: nobody, in no group of the daemon's.
_PROBE = Caller(65534, 65534, (65534,))


def thread_identity() -> tuple[int, int, tuple[int, ...]]:
    """The calling thread's (fsuid, fsgid, groups), read from /proc/thread-self/status."""
    fsuid = fsgid = -1
    groups: tuple[int, ...] = ()
    # Binary: a text file would look its codec up, which imports a module, and the
    # caller may not be allowed to read the interpreter's library.
    with open("/proc/thread-self/status", "rb") as f:
        for line in f:
            key, _, value = line.partition(b":")
            if key == b"Uid":
                fsuid = int(value.split()[3])
            elif key == b"Gid":
                fsgid = int(value.split()[3])
            elif key == b"Groups":
                groups = tuple(int(g) for g in value.split())
    return fsuid, fsgid, groups


class FsIdentity:
    """Runs calls as a :class:`Caller` on whatever thread calls :meth:`run`.

    The daemon's own identity is taken when this is made; every switch is undone before
    :meth:`run` returns, so a thread never carries one request's identity into another.
    """

    def __init__(self) -> None:
        self.uid, self.gid = os.geteuid(), os.getegid()
        self.groups = tuple(os.getgroups())
        self._own_groups = frozenset(self.groups)
        self._nr = _SYSCALLS.get(platform.machine())
        self._syscall: Any = None
        if self._nr is None:
            self.unavailable = f"no system call numbers for {platform.machine()}"
        else:
            # PyDLL keeps the GIL across the call: these system calls never block, and a
            # daemon whose gRPC threads wait for the GIL would otherwise hand it around ten
            # times per switch (measured: that tripled the switch's cost in the daemon).
            libc = ctypes.PyDLL(None, use_errno=True)
            self._syscall = libc.syscall
            self._syscall.restype = ctypes.c_long
            self._own = (ctypes.c_uint * max(1, len(self.groups)))(*self.groups)
            self.unavailable = self._self_test()
        if self.unavailable:
            log.warning("requests that carry a caller are refused unless the caller is the "
                        "daemon's own user: %s", self.unavailable)

    def _self_test(self) -> str:
        """Switch a throwaway thread to nobody and back, and read what the kernel says;
        "" when that worked, else why the daemon cannot act as its callers."""
        result: list[str] = []

        def probe() -> None:
            try:
                self._enter(_PROBE)
            except PermissionDenied as e:
                result.append(e.what)
                return
            seen = thread_identity()
            self._leave()
            back = thread_identity()
            if seen != (_PROBE.uid, _PROBE.gid, _PROBE.groups):
                result.append(f"switching did not take: the kernel shows {seen}")
            elif back != (self.uid, self.gid, self.groups):
                result.append(f"switching back did not take: the kernel shows {back}")
            else:
                result.append("")
        t = threading.Thread(target=probe, name="fsid-self-test")
        t.start()
        t.join()
        return result[0] if result else "the self-test thread died"

    def is_self(self, caller: Caller) -> bool:
        """The caller is the daemon's own identity: nothing to switch."""
        return (caller.uid == self.uid and caller.gid == self.gid
                and frozenset(caller.groups) == self._own_groups)

    def run(self, caller: Caller | None, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` as ``caller`` (None: as the daemon itself), on this thread."""
        if caller is None or self.is_self(caller):
            return fn(*args)
        if self.unavailable:
            raise PermissionDenied(f"the daemon cannot act as uid {caller.uid}",
                                   self.unavailable,
                                   "run tokenbucketd as root, or call as its own user")
        self._enter(caller)
        try:
            return fn(*args)
        finally:
            self._leave()

    def _set_groups(self, groups: ctypes.Array[ctypes.c_uint], n: int) -> int:
        assert self._nr is not None
        return int(self._syscall(self._nr[0], n, groups))

    def _enter(self, c: Caller) -> None:
        assert self._nr is not None
        _, setfsuid, setfsgid = self._nr
        # Groups and gid first: once the fsuid is not 0 any more, nothing else may change.
        groups = (ctypes.c_uint * max(1, len(c.groups)))(*c.groups)
        if self._set_groups(groups, len(c.groups)) != 0:
            err = ctypes.get_errno()    # nothing changed: nothing to undo
            raise PermissionDenied(f"the daemon cannot take the caller's groups "
                                   f"({os.strerror(err)})", f"uid {c.uid}",
                                   "run tokenbucketd as root")
        # setfsuid/setfsgid never fail loudly: they return the previous id either way, so
        # a second call with the same id tells whether the first one took.
        self._syscall(setfsgid, c.gid)
        ok = self._syscall(setfsgid, c.gid) == c.gid
        if ok:
            self._syscall(setfsuid, c.uid)
            ok = self._syscall(setfsuid, c.uid) == c.uid
        if not ok:
            self._leave()
            raise PermissionDenied("the daemon cannot take the caller's ids "
                                   "(it lacks CAP_SETUID/CAP_SETGID)",
                                   f"uid {c.uid} gid {c.gid}", "run tokenbucketd as root")

    def _leave(self) -> None:
        assert self._nr is not None
        _, setfsuid, setfsgid = self._nr
        # The fsuid first: back at 0 the thread has CAP_SETGID for the rest again.
        self._syscall(setfsuid, self.uid)
        self._syscall(setfsgid, self.gid)
        restored = (self._set_groups(self._own, len(self.groups)) == 0
                    and self._syscall(setfsuid, self.uid) == self.uid
                    and self._syscall(setfsgid, self.gid) == self.gid)
        if not restored:
            # This thread would serve the next request, anyone's, as the last caller.
            # That cannot be allowed to happen quietly; it cannot happen while the
            # daemon keeps CAP_SETUID and CAP_SETGID, which it had when this began.
            log.critical("a thread could not return to the daemon's identity; stopping")
            os._exit(70)
