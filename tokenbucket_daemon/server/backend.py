"""POSIX storage backend of one tier: synchronous file operations confined to a root.

A tier is a directory on this node (tmpfs, NVMe, ...). Callers name files by
tier-relative paths; the backend never lets such a path reach outside the tier's
root. Confinement is done by walking each path component from a descriptor of
the root with ``O_NOFOLLOW | O_DIRECTORY`` and resolving symlinks ourselves, so a
symlink is only followed when its target stays inside the root, and a component
swapped for a symlink between our check and our use makes the open fail instead
of escaping. Every call is blocking; the gRPC server runs them in a thread pool.

The walk starts from a descriptor of the root opened once, when the backend is made, so
the host path above the root (often reachable by root only) is never looked up again,
and it goes on with ``O_PATH`` descriptors, which need search permission on each
directory but not read permission, as path lookup does. The daemon may run these calls
with a caller's file system identity (:mod:`tokenbucket_daemon.server.fsid`): then the
kernel checks that caller's permissions and new entries belong to the caller.

Every ``OSError`` leaves this module as a :class:`~tokenbucket_daemon.errors.DaemonError`
subclass whose message names the tier-relative path, never the host path; the errno picks
the class from :data:`tokenbucket_daemon.errors.ERRNO_STATUS`, the one table of them.

Inputs are bounded before any system call: a path of at most :data:`PATH_MAX` bytes,
each name at most :data:`NAME_MAX`, at most ``max_depth`` directories deep, symlinks
followed included (ENAMETOOLONG otherwise), so one request holds a bounded number of
descriptors. Only regular files and directories are served: a FIFO, device or socket in
a tier is refused (FAILED_PRECONDITION, ``qos-errno`` EOPNOTSUPP) before it is opened for
reading or writing, since opening a FIFO waits for its other end and would hold an I/O
thread forever.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import logging
import os
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG
from types import TracebackType
from typing import NamedTuple, Self

from tokenbucket_daemon.errors import (
    DaemonError,
    FailedPrecondition,
    InvalidArgument,
    OutOfRange,
    PermissionDenied,
    errno_error,
    is_expected_errno,
)
from tokenbucket_daemon.server.logbound import bounded

__all__ = ["ChunkReader", "DirEntry", "TierBackend", "TierWriter"]

logger = bounded(logging.getLogger(__name__))

# Same limit as Linux's MAXSYMLINKS: deep enough for any sane layout, and it ends
# symlink loops with a clear error instead of spinning.
MAX_SYMLINK_HOPS = 40
# One os.pread call allocates its full length up front, so large reads go in steps
# and a huge requested length costs only what the file actually holds.
READ_STEP = 8 << 20
# A chunk is allocated whole before the read; refuse sizes that could exhaust memory.
MAX_CHUNK_SIZE = 64 << 20
MAX_MODE = 0o7777
# Linux's limits for one path and one name, in bytes: what the kernel would refuse
# anyway, refused before a 3 MB name is copied into every system call and log line.
PATH_MAX = 4096
NAME_MAX = 255
# Directories a path may go down from the tier root, symlinks followed included: each
# level holds a descriptor while the walk goes on.
MAX_DEPTH = 256
# off_t is signed 64-bit: larger offsets do not reach the kernel (Python would raise).
MAX_OFFSET = (1 << 63) - 1
# Never set through the data path: a setuid or setgid program written by a user would
# run as that user's victims, or as root on a node that executes from the tier.
SETID_BITS = 0o6000
# The sticky bit means something on directories only (restricted deletion).
STICKY = 0o1000

# Intermediate components must be real directories; O_NOFOLLOW with O_DIRECTORY makes a
# symlink fail (ENOTDIR with O_PATH, ELOOP otherwise) so we can inspect and resolve it
# ourselves. O_PATH: walking needs search permission only, as path lookup does.
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
# A directory opened to be listed or synced (O_PATH descriptors can do neither).
_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
# Python opens descriptors non-inheritable by default (PEP 446), so no O_CLOEXEC.
_NOFOLLOW = os.O_NOFOLLOW
_SYMLINK_ERRNOS = {errno.ELOOP, errno.EMLINK, errno.ENOTDIR}

_FILE_KINDS = {0o010000: "a FIFO", 0o020000: "a character device", 0o060000: "a block device",
               0o140000: "a socket"}


class DirEntry(NamedTuple):
    """One ``readdir`` row: the entry's lstat, as Stat gives it."""

    name: str
    is_dir: bool
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int


def _stat_dict(st: os.stat_result) -> dict[str, int | bool]:
    return {"size": st.st_size, "mode": st.st_mode, "mtime_ns": st.st_mtime_ns,
            "is_dir": S_ISDIR(st.st_mode), "nlink": st.st_nlink, "uid": st.st_uid,
            "gid": st.st_gid, "atime_ns": st.st_atime_ns, "ctime_ns": st.st_ctime_ns}


def _sync_dir(dir_fd: int) -> None:
    """fsync a directory held by an O_PATH descriptor (which fsync refuses)."""
    fd = os.open(".", _LIST_FLAGS, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dir_for_sync(dir_fd: int) -> int | None:
    """A descriptor of this directory that fsync accepts, or None when the caller may not
    read it (a write-only drop box: its new entries are then as durable as the file
    system makes them by itself)."""
    try:
        return os.open(".", _LIST_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        logger.debug("directory not readable by the caller; its entry is not fsynced")
        return None


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


# utimensat(2)'s markers: "now" (write permission suffices) and "leave as it is".
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


def _timespec(ns: int | None, now: bool) -> _Timespec:
    if now:
        return _Timespec(0, _UTIME_NOW)
    if ns is None:
        return _Timespec(0, _UTIME_OMIT)
    sec, nsec = divmod(ns, 1_000_000_000)
    return _Timespec(sec, nsec)


def _utimens(path: str, atime: _Timespec, mtime: _Timespec) -> None:
    """utimensat(2) with UTIME_NOW/UTIME_OMIT, which os.utime cannot express."""
    times = (_Timespec * 2)(atime, mtime)
    if _libc.utimensat(_AT_FDCWD, os.fsencode(path), times, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _map_oserror(tier: str, op: str, value: object, exc: OSError) -> DaemonError:
    """Turn an OSError into the daemon's error, naming ``value`` (a relative path).

    ``exc.filename`` is deliberately not used: it may hold a host path.
    """
    cls, hint = errno_error(exc.errno)
    reason = os.strerror(exc.errno) if exc.errno else "unknown error"
    if not is_expected_errno(exc.errno):
        # Unexpected errnos are worth an operator's attention; the table's are the
        # caller's business and would only add noise. Bounded: the path is the caller's.
        logger.warning("tier %s: %s %r failed: %s", tier, op, value, reason)
    return cls(f"{op} in tier {tier!r} failed ({reason})", value, hint,
               errno.errorcode.get(exc.errno or 0, ""))


@contextmanager
def _mapped(tier: str, op: str, value: object) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _map_oserror(tier, op, value, exc) from exc


def _check_int(what: str, value: object, *, allow_negative: bool = False) -> int:
    # bool is an int subclass; offset=True is a caller bug, not offset 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{what} must be an integer", value, f"pass {what} as an int")
    if value < 0 and not allow_negative:
        raise InvalidArgument(f"{what} must not be negative", value, f"pass {what} >= 0")
    if abs(value) > MAX_OFFSET:
        raise OutOfRange(f"{what} is beyond a file's largest offset", value,
                              f"pass {what} below 2**63", "EFBIG")
    return value


def _check_end(offset: int, size: int) -> None:
    """Refuse a write whose last byte would be past the largest offset (EFBIG)."""
    if offset + size > MAX_OFFSET:
        raise OutOfRange("write ends beyond a file's largest offset", offset + size,
                              "write below 2**63 bytes", "EFBIG")


def _check_mode(mode: object) -> int:
    mode = _check_int("mode", mode)
    if mode > MAX_MODE:
        raise InvalidArgument("mode has bits beyond 0o7777", oct(mode),
                              "pass permission bits only, e.g. 0o644")
    return mode


def _safe_mode(mode: int, is_dir: bool) -> int:
    """``mode`` without the bits the data path never sets."""
    return mode & ~(SETID_BITS if is_dir else SETID_BITS | STICKY)


def _write_all(fd: int, offset: int, data: bytes | bytearray | memoryview) -> int:
    """pwrite until every byte is on the tier; a short write is not an error in POSIX."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        n = os.pwrite(fd, view[done:], offset + done)
        if n == 0:
            # Would loop forever; a regular file only does this when it cannot grow.
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += n
    return done


def _check_data(data: object) -> bytes | bytearray | memoryview:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArgument("data must be bytes", type(data).__name__,
                              "pass bytes, bytearray or memoryview")
    return data


class _Descriptor:
    """An open descriptor that closes on ``with`` exit or when dropped: an abandoned
    stream (client went away) must not leak descriptors."""

    _closed = True

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed:
            try:
                self.close()
            except DaemonError:
                pass


class TierWriter(_Descriptor):
    """A stream of consecutive writes to one file through one descriptor.

    Not thread-safe: one stream, one writer. Each ``write`` has reached the tier
    (the kernel's page cache, or the device after ``fsync``) when it returns.
    """

    def __init__(self, tier: str, path: str, fd: int, offset: int,
                 dir_fd: int | None) -> None:
        self._tier, self._path, self._fd, self._offset = tier, path, fd, offset
        # Kept only when we created the file: its directory entry must be made
        # durable too, once, on the first fsync.
        self._dir_fd = dir_fd
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    @property
    def offset(self) -> int:
        """Where the next ``write`` lands."""
        return self._offset

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self, op: str) -> None:
        if self._closed:
            raise FailedPrecondition(f"{op} on a closed writer of tier {self._tier!r}",
                                     self._path, "open a new writer")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = self.write_at(self._offset, data)
        self._offset += n
        return n

    def claim(self, size: int) -> int:
        """Reserve the next ``size`` bytes of the stream for ``write_at``; no I/O, so the
        caller can order writes that then run concurrently."""
        self._check_open("write")
        offset = self._offset
        _check_end(offset, size)
        self._offset += size
        return offset

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` at a claimed ``offset``; safe to run from several threads at once
        for disjoint ranges (``pwrite`` takes the offset, not the descriptor's position)."""
        self._check_open("write")
        data = _check_data(data)
        _check_end(offset, len(data))
        with _mapped(self._tier, "write", self._path):
            return _write_all(self._fd, offset, data)

    def fsync(self) -> None:
        self._check_open("fsync")
        with _mapped(self._tier, "fsync", self._path):
            os.fsync(self._fd)
            if self._dir_fd is not None:
                os.fsync(self._dir_fd)
                os.close(self._dir_fd)
                self._dir_fd = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
        with _mapped(self._tier, "close", self._path):
            os.close(self._fd)



class ChunkReader(_Descriptor, Iterator[bytes]):
    """Chunks of one file from ``offset``, through one descriptor, until EOF or ``length``.

    The file is opened when the reader is made, so a missing file fails at the call,
    not at the first ``next``; the descriptor closes at EOF, on ``close`` or when
    the reader is dropped.
    """

    def __init__(self, tier: str, path: str, fd: int, offset: int, length: int,
                 chunk_size: int) -> None:
        self._tier, self._path, self._fd = tier, path, fd
        self._offset, self._remaining, self._chunk = offset, length, chunk_size
        self._closed = False

    def __iter__(self) -> ChunkReader:
        return self

    def __next__(self) -> bytes:
        if self._closed or self._remaining == 0:
            self.close()
            raise StopIteration
        want = self._chunk if self._remaining < 0 else min(self._chunk, self._remaining)
        try:
            with _mapped(self._tier, "read", self._path):
                chunk = os.pread(self._fd, want, self._offset)
        except DaemonError:
            self.close()
            raise
        if not chunk:
            self.close()
            raise StopIteration
        # A short read is not EOF (FUSE, network file systems): only b"" is.
        self._offset += len(chunk)
        if self._remaining > 0:
            self._remaining -= len(chunk)
        return chunk

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)



def filesystem_type(path: Path) -> str:
    """The type of the file system ``path`` is on, from /proc/self/mounts ("" if unknown)."""
    best, kind = "", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                # Mount points escape spaces as \040.
                point = fields[1].replace("\\040", " ")
                inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        return ""
    return kind


class TierBackend:
    """File operations on one tier, every path relative to and confined in ``root``.

    Symlinks inside the tier are followed when their target stays inside the root;
    ``unlink``, ``rmdir``, ``rename`` and ``mkdir`` act on a final symlink itself.
    New files and directories get ``mode`` minus the daemon's umask, as POSIX does.
    """

    def __init__(self, name: str, root: str | Path, max_depth: int = MAX_DEPTH) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgument("tier name must be a non-empty string", name,
                                  "name the tier, e.g. 'nvme'")
        # The resolved root is what absolute symlink targets are compared with.
        real = Path(os.path.realpath(root))
        if not real.is_dir():
            # The configured path is the operator's own, so it may be shown here.
            raise InvalidArgument(f"root of tier {name!r} is not an existing directory",
                                  str(root), "create it or fix the tier's root")
        self._name = name
        self._root = real
        self.max_depth = max_depth
        self._root_parts = [p for p in real.parts if p != "/"]
        # Opened as the daemon, once: callers need no access to the host path above the
        # root. A root replaced while the daemon runs is seen only after a restart.
        try:
            self._root_fd: int | None = os.open(real, _DIR_FLAGS)
        except OSError as exc:
            raise InvalidArgument(f"root of tier {name!r} cannot be opened "
                                  f"({os.strerror(exc.errno or 0)})", str(root),
                                  "check the directory's permissions") from exc

    def close(self) -> None:
        """Close the root's descriptor; the backend is unusable afterwards."""
        fd, self._root_fd = self._root_fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        if getattr(self, "_root_fd", None) is not None:
            self.close()

    @property
    def name(self) -> str:
        return self._name

    @property
    def root(self) -> Path:
        """The tier's root, with symlinks resolved."""
        return self._root

    @property
    def in_memory(self) -> bool:
        """True when the root is on tmpfs or ramfs: its reads and writes are memory
        copies that never wait for a device."""
        return filesystem_type(self._root) in ("tmpfs", "ramfs")

    def __repr__(self) -> str:
        return f"TierBackend(name={self._name!r}, root={str(self._root)!r})"

    # ---- path confinement -------------------------------------------------------

    def _escape(self, path: object) -> PermissionDenied:
        logger.warning("tier %s: refused path escaping the root: %r", self._name, path)
        return PermissionDenied(f"path escapes the root of tier {self._name!r}", path,
                                "use a relative path without '..' that stays inside the tier")

    def _split(self, path: object) -> list[str]:
        if not isinstance(path, str):
            raise InvalidArgument("path must be a string", path,
                                  "pass a tier-relative path as str")
        # A character is at least one byte: a path this long is too long before encoding.
        if len(path) > PATH_MAX or len(os.fsencode(path)) > PATH_MAX:
            raise InvalidArgument(f"path longer than {PATH_MAX} bytes", path,
                                  "shorten the path", "ENAMETOOLONG")
        if "\0" in path:
            raise InvalidArgument("path contains a NUL byte", path, "remove the NUL byte")
        parts = path.split("/")
        # '..' is refused even when it would stay inside: lexical checks cannot see
        # symlinks, and no legitimate caller needs it.
        if path.startswith("/") or ".." in parts:
            raise self._escape(path)
        parts = [p for p in parts if p not in ("", ".")]
        for p in parts:
            if len(p) > NAME_MAX or len(os.fsencode(p)) > NAME_MAX:
                raise InvalidArgument(f"a name in the path is longer than {NAME_MAX} bytes",
                                      p, "shorten the name", "ENAMETOOLONG")
        if len(parts) > self.max_depth:
            raise InvalidArgument(f"path deeper than {self.max_depth} directories",
                                  len(parts), "use a shallower layout", "ENAMETOOLONG")
        return parts

    def _open_root(self) -> int:
        if self._root_fd is None:
            raise FailedPrecondition(f"tier {self._name!r} is closed", None,
                                     "restart the daemon")
        return self._root_fd

    @staticmethod
    def _readlink(dir_fd: int, name: str) -> str | None:
        """The symlink's target, or None when ``name`` is not a symlink (or is gone)."""
        try:
            return os.readlink(name, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                return None
            raise

    def _resolve(self, path: str, follow_last: bool, make_parents: bool,
                 dir_mode: int) -> tuple[list[int], str | None]:
        """Walk ``path`` from the root; return the open directory chain and the last name.

        The last element of the chain is the directory holding the final component;
        the name is None when the path denotes that directory itself (the root, or a
        symlink to a directory). Every descriptor is O_PATH; the first is the root's,
        which the backend keeps, and the caller closes the others (``_close_chain``).
        Raises OSError for the caller to map, or PermissionDenied on an escape.
        """
        queue = deque(self._split(path))
        fds = [self._open_root()]
        hops = 0
        try:
            while queue:
                part = queue.popleft()
                if part == "..":
                    # Only symlink targets get here; step back along the chain we
                    # really walked, never above the root.
                    if len(fds) == 1:
                        raise self._escape(path)
                    os.close(fds.pop())
                    continue
                last = not queue
                if last and not follow_last:
                    return fds, part
                if last:
                    target = self._readlink(fds[-1], part)
                    if target is None:
                        return fds, part
                else:
                    if len(fds) > self.max_depth:
                        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
                    try:
                        fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
                        continue
                    except OSError as exc:
                        if exc.errno == errno.ENOENT and make_parents:
                            try:
                                os.mkdir(part, dir_mode, dir_fd=fds[-1])
                            except FileExistsError:
                                pass  # made concurrently by someone else: use theirs
                            fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
                            continue
                        if exc.errno not in _SYMLINK_ERRNOS:
                            raise
                        target = self._readlink(fds[-1], part)
                        if target is None:
                            raise  # a file where a directory should be
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                parts = [p for p in target.split("/") if p not in ("", ".")]
                if target.startswith("/"):
                    # An absolute target is fine only if it names something under
                    # the root; continue from the root with the rest of it.
                    n = len(self._root_parts)
                    if parts[:n] != self._root_parts:
                        raise self._escape(path)
                    parts = parts[n:]
                    for fd in fds[1:]:
                        os.close(fd)
                    del fds[1:]
                queue.extendleft(reversed(parts))
                # Links may lead deeper than any path given: the bound holds for the walk.
                if len(fds) - 1 + len(queue) > self.max_depth + MAX_SYMLINK_HOPS:
                    raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
            return fds, None
        except BaseException:
            self._close_chain(fds)
            raise

    @staticmethod
    def _close_chain(fds: list[int]) -> None:
        for fd in fds[1:]:        # fds[0] is the root's, kept open
            os.close(fd)

    @contextmanager
    def _at(self, op: str, path: str, *, follow_last: bool = True, make_parents: bool = False,
            dir_mode: int = 0o755) -> Iterator[tuple[int, str | None]]:
        """Resolve ``path`` and yield ``(dir_fd, name)``; maps OSErrors of the whole block."""
        with _mapped(self._name, op, path):
            fds, name = self._resolve(path, follow_last, make_parents, dir_mode)
            try:
                yield fds[-1], name
            finally:
                self._close_chain(fds)

    def _refuse_root(self, op: str, path: str) -> InvalidArgument:
        return InvalidArgument(f"{op} cannot act on the root of tier {self._name!r}", path,
                               "name an entry inside the tier")

    def _open_served(self, dir_fd: int, name: str, flags: int, *, dirs: bool = False) -> int:
        """Open ``name`` with ``flags`` if it is a regular file (or, with ``dirs``, a
        directory), without ever opening anything else: an ``O_PATH`` descriptor of the
        entry is checked first and then reopened through ``/proc/self/fd``, which opens
        that very inode, so nothing swapped in between is opened either. (A FIFO opened
        for reading waits for a writer: four such reads held every I/O thread.)"""
        # The final component was resolved already; O_NOFOLLOW catches a symlink
        # planted there since.
        pfd = os.open(name, os.O_PATH | _NOFOLLOW, dir_fd=dir_fd)
        try:
            mode = os.fstat(pfd).st_mode
            if S_ISLNK(mode):
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
            if S_ISDIR(mode) and not dirs:
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
            if not S_ISREG(mode) and not S_ISDIR(mode):
                kind = _FILE_KINDS.get(mode & 0o170000, "not a regular file")
                raise FailedPrecondition(f"{kind} in tier {self._name!r} is not served",
                                         name, "the daemon serves regular files and "
                                               "directories only", "EOPNOTSUPP")
            # The kernel lets a process reopen its own descriptors whatever its fsuid, and
            # checks the caller's permission for ``flags`` on the inode as open does.
            return os.open(f"/proc/self/fd/{pfd}", flags)
        finally:
            os.close(pfd)

    def _open_file(self, dir_fd: int, name: str | None, flags: int) -> int:
        if name is None:
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        return self._open_served(dir_fd, name, flags)

    def _open_or_create(self, dir_fd: int, name: str | None, mode: int) -> tuple[int, bool]:
        """Open for writing, creating if missing; also say whether we created it."""
        if name is None:
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        while True:
            try:
                return self._open_served(dir_fd, name, os.O_WRONLY), False
            except FileNotFoundError:
                pass
            try:
                return os.open(name, os.O_WRONLY | _NOFOLLOW | os.O_CREAT | os.O_EXCL, mode,
                               dir_fd=dir_fd), True
            except FileExistsError:
                continue  # created concurrently between the two opens: open theirs

    # ---- data -------------------------------------------------------------------

    def pwrite(self, path: str, offset: int, data: bytes | bytearray | memoryview,
               fsync: bool = False) -> int:
        """Write all of ``data`` at ``offset``, creating the file (0o644) if missing."""
        offset = _check_int("offset", offset)
        data = _check_data(data)
        with self._at("pwrite", path) as (dir_fd, name):
            fd, created = self._open_or_create(dir_fd, name, 0o644)
            try:
                n = _write_all(fd, offset, data)
                if fsync:
                    os.fsync(fd)
                    if created:
                        # A new file is durable only once its directory entry is.
                        _sync_dir(dir_fd)
            finally:
                os.close(fd)
        return n

    def open_for_write(self, path: str, offset: int) -> TierWriter:
        """A writer for consecutive chunks from ``offset``; creates the file (0o644)."""
        offset = _check_int("offset", offset)
        with self._at("open_for_write", path) as (dir_fd, name):
            fd, created = self._open_or_create(dir_fd, name, 0o644)
            try:
                parent = _dir_for_sync(dir_fd) if created else None
            except OSError:
                os.close(fd)
                raise
        return TierWriter(self._name, path, fd, offset, parent)

    def pread(self, path: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``; fewer only at EOF."""
        offset = _check_int("offset", offset)
        length = _check_int("length", length)
        out = bytearray()
        with self._at("pread", path) as (dir_fd, name):
            fd = self._open_file(dir_fd, name, os.O_RDONLY)
            try:
                while len(out) < length:
                    chunk = os.pread(fd, min(READ_STEP, length - len(out)),
                                     offset + len(out))
                    if not chunk:
                        break
                    out += chunk
            finally:
                os.close(fd)
        return bytes(out)

    def read_chunks(self, path: str, offset: int, length: int,
                    chunk_size: int) -> Iterator[bytes]:
        """Chunks of at most ``chunk_size`` bytes; ``length < 0`` reads to EOF."""
        offset = _check_int("offset", offset)
        length = _check_int("length", length, allow_negative=True)
        chunk_size = _check_int("chunk_size", chunk_size)
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise InvalidArgument("chunk_size out of range", chunk_size,
                                  f"pass 1..{MAX_CHUNK_SIZE}")
        with self._at("read_chunks", path) as (dir_fd, name):
            fd = self._open_file(dir_fd, name, os.O_RDONLY)
        return ChunkReader(self._name, path, fd, offset, length, chunk_size)

    def truncate(self, path: str, size: int) -> None:
        """Set the file's size; the file must exist."""
        size = _check_int("size", size)
        with self._at("truncate", path) as (dir_fd, name):
            fd = self._open_file(dir_fd, name, os.O_WRONLY)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)

    def fsync(self, path: str) -> None:
        """Flush a file or directory (the root included) to the device."""
        with self._at("fsync", path) as (dir_fd, name):
            if name is None:
                _sync_dir(dir_fd)
                return
            # O_RDONLY works for directories as well as files, and fsync needs no more;
            # a caller may hold a file it can write but not read (mode 0200), and
            # fsync(2) on its descriptor works for it: so then O_WRONLY.
            try:
                fd = self._open_served(dir_fd, name, os.O_RDONLY, dirs=True)
            except PermissionError:
                fd = self._open_served(dir_fd, name, os.O_WRONLY, dirs=True)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # ---- metadata ---------------------------------------------------------------

    def statfs(self) -> dict[str, int]:
        """Capacity of the file system holding the tier (statvfs of the root)."""
        with _mapped(self._name, "statfs", ""):
            v = os.statvfs(self._open_root())
        return {"total_bytes": v.f_blocks * v.f_frsize, "free_bytes": v.f_bavail * v.f_frsize,
                "total_files": v.f_files, "free_files": v.f_favail, "name_max": v.f_namemax}

    def stat(self, path: str) -> dict[str, int | bool]:
        """size, mode, mtime_ns, is_dir, nlink, uid, gid, atime_ns, ctime_ns of a file or
        directory (symlinks inside the tier followed)."""
        with self._at("stat", path) as (dir_fd, name):
            if name is None:
                st = os.stat(dir_fd)
            else:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return _stat_dict(st)

    def create(self, path: str, mode: int = 0o644, exclusive: bool = False) -> bool:
        """Create an empty file, or leave an existing one as is unless ``exclusive``;
        True when this call created it. The setuid, setgid and sticky bits of ``mode``
        are dropped. An existing entry must be a regular file the caller may write."""
        mode = _safe_mode(_check_mode(mode), is_dir=False)
        # An exclusive create must fail on any existing entry, a symlink included,
        # as O_CREAT|O_EXCL does; so the last component is not followed then.
        with self._at("create", path, follow_last=not exclusive) as (dir_fd, name):
            if name is None:
                code = errno.EEXIST if exclusive else errno.EISDIR
                raise OSError(code, os.strerror(code))
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
            try:
                os.close(os.open(name, flags, mode, dir_fd=dir_fd))
                return True
            except FileExistsError:
                if exclusive:
                    raise
            # Opened for writing as before (the caller must be allowed to), but never a
            # FIFO or device: their open could block or act.
            os.close(self._open_served(dir_fd, name, os.O_WRONLY))
            return False

    def unlink(self, path: str) -> None:
        """Remove a file or symlink (never its target)."""
        with self._at("unlink", path, follow_last=False) as (dir_fd, name):
            if name is None:
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
            os.unlink(name, dir_fd=dir_fd)

    def mkdir(self, path: str, mode: int = 0o755, parents: bool = False) -> None:
        """Make a directory; ``parents`` makes missing parents too. An existing one fails.
        The setuid and setgid bits of ``mode`` are dropped (a directory made inside a
        setgid directory still inherits its setgid bit from the kernel, as the site set
        it there)."""
        mode = _safe_mode(_check_mode(mode), is_dir=True)
        with self._at("mkdir", path, follow_last=False, make_parents=parents,
                      dir_mode=mode) as (dir_fd, name):
            if name is None:
                raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
            os.mkdir(name, mode, dir_fd=dir_fd)

    def rmdir(self, path: str) -> None:
        """Remove an empty directory."""
        with self._at("rmdir", path, follow_last=False) as (dir_fd, name):
            if name is None:
                raise self._refuse_root("rmdir", path)
            os.rmdir(name, dir_fd=dir_fd)

    def readdir(self, path: str) -> list[DirEntry]:
        """The entries of a directory, sorted by name (every page of :meth:`readdir_page`).

        Entries are not followed: a symlink shows as itself (not a directory, its
        size the target's length), so listing reveals nothing beyond the tier.
        """
        rows: list[DirEntry] = []
        after = ""
        while True:
            page, after = self.readdir_page(path, after)
            rows += page
            if not after:
                return rows

    def readdir_page(self, path: str, after: str = "", max_entries: int = 4096,
                     max_bytes: int = 1 << 20) -> tuple[list[DirEntry], str]:
        """The entries of a directory whose names sort after ``after`` ("" = from the
        first), at most ``max_entries`` and about ``max_bytes`` of names and attributes,
        sorted by name; and the name to continue after ("" = that was the last page).

        A listing of 30,000 long names is larger than a gRPC message: pages keep each
        reply bounded. The name is the bookmark, so entries made or removed between
        pages neither repeat nor shift the others. Names that are not UTF-8 cannot be
        sent (protobuf strings) nor named back, so they are left out and logged.
        """
        max_entries = max(1, min(_check_int("max_entries", max_entries), 1 << 16))
        if not isinstance(after, str) or len(after) > NAME_MAX:
            raise InvalidArgument("page token is not a name of this directory", after,
                                  "pass the next_page_token of the previous page")
        rows: list[DirEntry] = []
        with self._at("readdir", path) as (dir_fd, name):
            # Listing needs a readable descriptor: read permission, as ls needs.
            fd = os.open("." if name is None else name, _LIST_FLAGS, dir_fd=dir_fd)
            try:
                names = sorted(os.listdir(fd))
                used = 0
                for i in range(bisect.bisect_right(names, after) if after else 0,
                               len(names)):
                    entry = names[i]
                    if rows and (len(rows) >= max_entries or used >= max_bytes):
                        return rows, rows[-1].name
                    try:
                        size = len(entry.encode("utf-8"))
                    except UnicodeEncodeError:
                        logger.warning("tier %s: a name in %r is not UTF-8; not listed",
                                       self._name, path)
                        continue
                    try:
                        st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while we listed
                    rows.append(DirEntry(entry, S_ISDIR(st.st_mode), st.st_size,
                                         st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns))
                    used += size + 48     # the name and the attributes' varints
            finally:
                os.close(fd)
        return rows, ""

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst`` inside the tier, replacing ``dst`` as POSIX rename does."""
        with self._at("rename", src, follow_last=False) as (src_fd, src_name), \
                self._at("rename", dst, follow_last=False) as (dst_fd, dst_name):
            if src_name is None:
                raise self._refuse_root("rename", src)
            if dst_name is None:
                raise self._refuse_root("rename", dst)
            with _mapped(self._name, "rename", (src, dst)):
                os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)

    def setattr(self, path: str, mode: int | None = None, uid: int | None = None,
                gid: int | None = None, atime_ns: int | None = None,
                mtime_ns: int | None = None, atime_now: bool = False,
                mtime_now: bool = False) -> dict[str, int | bool]:
        """chown, then chmod, then utimensat of a file or directory; None leaves a field
        as it is. Returns the attributes after the change, as :meth:`stat` does.

        The kernel decides who may do what, for the file system identity this runs with:
        the owner changes mode and times, root the owner, the owner the group to one of
        its own groups; write permission suffices to set times to now.
        """
        if mode is not None:
            mode = _check_mode(mode)
        for what, value in (("uid", uid), ("gid", gid)):
            if value is not None and not 0 <= _check_int(what, value) < 0xFFFFFFFF:
                raise InvalidArgument(f"{what} out of range", value,
                                      f"pass a {what} below 4294967295")
        for what, ns, now in (("atime", atime_ns, atime_now), ("mtime", mtime_ns, mtime_now)):
            if ns is not None:
                _check_int(f"{what}_ns", ns, allow_negative=True)
                if now:
                    raise InvalidArgument(f"{what} given both as a time and as now", ns,
                                          "pass one of them")
        with self._at("setattr", path) as (dir_fd, name):
            # One O_PATH descriptor of the entry itself, and every change through it:
            # a symlink planted after the walk is refused, never followed out of the tier.
            fd = (os.open(name, os.O_PATH | _NOFOLLOW, dir_fd=dir_fd) if name is not None
                  else os.open(".", os.O_PATH | os.O_DIRECTORY, dir_fd=dir_fd))
            try:
                st = os.stat(fd)
                if S_ISLNK(st.st_mode):
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                # The magic link names exactly this inode; the kernel lets a process
                # follow its own descriptors' links whatever its fsuid.
                proc = f"/proc/self/fd/{fd}"
                if uid is not None or gid is not None:
                    os.chown(proc, -1 if uid is None else uid, -1 if gid is None else gid)
                if mode is not None:
                    os.chmod(proc, _safe_mode(mode, is_dir=S_ISDIR(st.st_mode)))
                if atime_ns is not None or mtime_ns is not None or atime_now or mtime_now:
                    _utimens(proc, _timespec(atime_ns, atime_now),
                             _timespec(mtime_ns, mtime_now))
                return _stat_dict(os.stat(fd))
            finally:
                os.close(fd)
