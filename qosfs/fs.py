"""The pyfuse3 file system: kernel requests in, tagged daemon calls out.

Inodes are kept as paths relative to the tier root (the daemons know files by path). A
file handle carries the identity of the process that opened or created it: pyfuse3's read
and write handlers do not get the caller's pid, so attribution happens at open and create.

Every request goes out with its caller's credentials (the FUSE request's uid and gid, the
process's groups), and the daemons act as the caller: the stores keep real owners and
modes, which qosfs shows, and the kernel checks permissions twice, here against the
attributes qosfs reports (``default_permissions``) and on the daemon against the store.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar, cast

import pyfuse3

from qosfs.errors import RemoteError
from qosfs.jobid import Identity, JobResolver
from qosfs.layout import Layout, Piece, assemble
from qosfs.remote import TierClient
from qosfs.writebehind import WriteBehind
from tokenbucket_daemon.proto import qos_pb2 as pb

log = logging.getLogger(__name__)
T = TypeVar("T")
ROOT = pyfuse3.ROOT_INODE
# Names qosfs itself creates for a moment while it probes which daemons share a store.
PROBE_PREFIX = ".qosfs-probe-"
# pyfuse3 hands setattr a time of "now" (utimensat's UTIME_NOW, as touch sends) as the
# clock's value; both times equal and this close to our clock are taken as "now" again, so
# the daemon applies the kernel's rule for it (write permission suffices), not the
# owner-only rule for explicit times. The kernel has already checked explicit times.
_NOW_WINDOW_NS = 1_000_000_000


@dataclass
class Handle:
    inode: int                    # not a path: a rename must carry open handles along
    who: Identity
    writes: WriteBehind | None = None


@dataclass
class DirHandle:
    inode: int
    who: Identity                 # readdir gets no request context: the opener lists
    entries: list[pb.DirEntry] | None = None


@dataclass
class Options:
    stripe_size: int = 1 << 20
    attr_timeout: float = 1.0
    # The kernel's writeback cache merges small writes but paces every writer on the
    # mount alike (one flusher, one dirty limit per mount): off, so each job keeps its rate.
    writeback_cache: bool = False
    write_window: int = 8 << 20   # bytes in flight per handle (0: write through)
    merge: int = 1 << 20          # contiguous small writes merged up to this size


def _fuse(e: RemoteError) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(e.errno)


def _raise_first(results: Iterable[object]) -> None:
    """Re-raise the first exception ``gather(..., return_exceptions=True)`` gave back."""
    for r in results:
        if isinstance(r, BaseException):
            raise r


def _is_probe(path: str) -> bool:
    return path.rpartition("/")[2].startswith(PROBE_PREFIX)


class QosFS(pyfuse3.Operations):
    supports_dot_lookup = True

    def __init__(self, client: TierClient, groups: list[list[int]], resolver: JobResolver,
                 options: Options | None = None) -> None:
        super().__init__()
        self.client, self.resolver = client, resolver
        self.options = options or Options()
        self.enable_writeback_cache = self.options.writeback_cache
        self.layout = Layout(len(client.addresses), self.options.stripe_size)
        # One daemon per distinct store: the namespace lives on each, the first decides.
        self.reps = [g[0] for g in groups]
        # Daemons that see the authoritative store: a file missing there is missing.
        self._primary_store = frozenset(groups[0])
        self._path = {ROOT: ""}
        self._ino = {"": ROOT}
        self._lookups: dict[int, int] = {}
        self._next_ino = ROOT + 1
        self._handles: dict[int, Handle | DirHandle] = {}
        self._next_fh = 1

    # -- inode table -------------------------------------------------------------------
    def _path_of(self, inode: int) -> str:
        try:
            return self._path[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def _child(self, parent: int, name: bytes) -> str:
        base = self._path_of(parent)
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            # The daemons' paths are UTF-8 strings; refuse instead of failing mid-request.
            raise pyfuse3.FUSEError(errno.EILSEQ) from None
        if text == ".":
            return base
        if text == "..":
            return base.rpartition("/")[0]
        return f"{base}/{text}" if base else text

    def _inode(self, path: str, count: bool) -> int:
        ino = self._ino.get(path)
        if ino is None:
            ino, self._next_ino = self._next_ino, self._next_ino + 1
            self._ino[path], self._path[ino] = ino, path
        if count:
            self._lookups[ino] = self._lookups.get(ino, 0) + 1
        return ino

    def _moved(self, src: str, dst: str) -> None:
        """Re-key ``src`` and everything below it to ``dst`` after a rename."""
        dropped = self._ino.pop(dst, None)
        if dropped is not None:
            self._path.pop(dropped, None)
        prefix = src + "/"
        for path in [p for p in self._ino if p == src or p.startswith(prefix)]:
            ino = self._ino.pop(path)
            new = dst + path[len(src):]
            self._ino[new], self._path[ino] = ino, new

    def _gone(self, path: str) -> None:
        ino = self._ino.pop(path, None)
        if ino is not None and not self._lookups.get(ino):
            self._path.pop(ino, None)

    async def forget(self, inode_list: Iterable[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            left = self._lookups.get(ino, 0) - n
            if left > 0 or ino == ROOT:
                self._lookups[ino] = max(left, 0)
                continue
            self._lookups.pop(ino, None)
            path = self._path.pop(ino, None)
            if path is not None and self._ino.get(path) == ino:
                del self._ino[path]

    # -- helpers -----------------------------------------------------------------------
    async def _each_rep(self, fn: Callable[[int], Awaitable[T]],
                        tolerate: tuple[int, ...] = (errno.ENOENT,)) -> T:
        """``fn`` on the authoritative store, then on the other stores, where the errnos in
        ``tolerate`` are expected (a store may never have held a stripe of the file)."""
        try:
            first = await fn(self.reps[0])
        except RemoteError as e:
            raise _fuse(e) from None
        rest = await asyncio.gather(*(fn(d) for d in self.reps[1:]), return_exceptions=True)
        for d, r in zip(self.reps[1:], rest, strict=True):
            if isinstance(r, RemoteError) and r.errno not in tolerate:
                log.warning("store of daemon %s did not follow: %s", d, r)
                raise _fuse(r)
            if isinstance(r, BaseException) and not isinstance(r, RemoteError):
                raise r
        return first

    async def _stat(self, path: str, who: Identity | None) -> tuple[pb.StatReply, int]:
        """The authoritative stat and the file's size (the largest over the stores)."""
        replies = await asyncio.gather(*(self.client.stat(d, path, who) for d in self.reps),
                                       return_exceptions=True)
        first = replies[0]
        if isinstance(first, RemoteError):
            raise _fuse(first)
        if isinstance(first, BaseException):
            raise first
        size = first.size
        if not first.is_dir:
            for r in replies[1:]:
                if isinstance(r, pb.StatReply):
                    size = max(size, r.size)
                elif isinstance(r, RemoteError) and r.errno != errno.ENOENT:
                    raise _fuse(r)
        return first, size

    def _attrs(self, ino: int, st: pb.StatReply, size: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = st.mode
        a.st_nlink = st.nlink or 1
        a.st_size = size
        # The authoritative store's owner and group: with default_permissions the kernel
        # checks every caller against them.
        a.st_uid, a.st_gid = st.uid, st.gid
        a.st_mtime_ns = st.mtime_ns
        a.st_atime_ns = st.atime_ns or st.mtime_ns
        a.st_ctime_ns = st.ctime_ns or st.mtime_ns
        a.st_blksize = self.options.stripe_size
        a.st_blocks = (size + 511) // 512
        a.attr_timeout = a.entry_timeout = self.options.attr_timeout
        return a

    async def _entry(self, path: str, count: bool,
                     who: Identity | None) -> pyfuse3.EntryAttributes:
        st, size = await self._stat(path, who)
        return self._attrs(self._inode(path, count), st, size)

    def _who(self, ctx: pyfuse3.RequestContext) -> Identity:
        return self.resolver.resolve(ctx.pid, ctx.uid, ctx.gid, time.monotonic())

    def _new_fh(self, h: Handle | DirHandle) -> int:
        fh, self._next_fh = self._next_fh, self._next_fh + 1
        self._handles[fh] = h
        return fh

    def _file(self, fh: int) -> Handle:
        h = self._handles.get(fh)
        if not isinstance(h, Handle):
            raise pyfuse3.FUSEError(errno.EBADF)
        return h

    # -- metadata ----------------------------------------------------------------------
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        if _is_probe(path):
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self._entry(path, count=True, who=self._who(ctx))

    async def getattr(self, inode: int,
                      ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        path = self._path_of(inode)
        await self._drain(inode)
        who = self._who(ctx) if ctx is not None else None
        try:
            st, size = await self._stat(path, who)
        except pyfuse3.FUSEError as e:
            if e.errno != errno.EACCES or who is None:
                raise
            # getattr names an inode the caller already holds (an open file, its working
            # directory), reached through the kernel's own permission checks; POSIX lets
            # fstat work whatever the path's directories allow now.
            st, size = await self._stat(path, None)
        return self._attrs(inode, st, size)

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self._path_of(inode)
        who = self._who(ctx)
        if fields.update_size:
            await self._drain(inode)
            # Every store cuts (or sparsely extends) its copy, so no stale stripe shows up
            # again when the file grows back.
            await self._each_rep(lambda d: self.client.truncate(d, path, attr.st_size, who))
        change: dict[str, int] = {}
        if fields.update_mode:
            change["mode"] = attr.st_mode & 0o7777
        if fields.update_uid:
            change["uid"] = attr.st_uid
        if fields.update_gid:
            change["gid"] = attr.st_gid
        now = bool(fields.update_atime and fields.update_mtime
                   and attr.st_atime_ns == attr.st_mtime_ns
                   and abs(attr.st_mtime_ns - time.time_ns()) < _NOW_WINDOW_NS)
        if fields.update_atime and not now:
            change["atime_ns"] = attr.st_atime_ns
        if fields.update_mtime and not now:
            change["mtime_ns"] = attr.st_mtime_ns
        if change or now:
            # Every store: each holds its own copy's owner and mode, which it checks. The
            # authoritative store decides; the others may hold no stripe of the file.
            await self._each_rep(lambda d: self.client.setattr(d, path, who, now=now,
                                                               **change))
        return await self.getattr(inode, ctx)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        who = self._who(ctx)
        try:
            await self.client.mkdir(self.reps[0], path, who, mode & 0o7777)
        except RemoteError as e:
            raise _fuse(e) from None
        # The other stores need the directory before a stripe can land in it; made by the
        # same caller with the same mode, each store checks what the first one does.
        for d in self.reps[1:]:
            try:
                await self.client.mkdir(d, path, who, mode & 0o7777, parents=True)
            except RemoteError as e:
                log.warning("mkdir %r on daemon %s failed (stripes will create it): %s",
                            path, d, e)
        return await self._entry(path, count=True, who=who)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        who = self._who(ctx)
        await self._each_rep(lambda d: self.client.rmdir(d, path, who))
        self._gone(path)

    async def unlink(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        who = self._who(ctx)
        await self._drain_under(path)     # a late write would bring the file back
        await self._each_rep(lambda d: self.client.unlink(d, path, who))
        self._gone(path)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        if flags:
            # RENAME_NOREPLACE/EXCHANGE cannot be made atomic across stores; programs fall
            # back to plain rename on EINVAL.
            raise pyfuse3.FUSEError(errno.EINVAL)
        src = self._child(parent_inode_old, name_old)
        dst = self._child(parent_inode_new, name_new)
        who = self._who(ctx)
        await self._drain_under(src)      # writes in flight name the old path
        try:
            await self.client.rename(self.reps[0], src, dst, who)
        except RemoteError as e:
            raise _fuse(e) from None
        self._moved(src, dst)         # the authoritative store has renamed: follow it
        for d in self.reps[1:]:
            try:
                await self.client.rename(d, src, dst, who)
            except RemoteError as e:
                if e.errno != errno.ENOENT:
                    raise _fuse(e) from None
                # This store held no stripe of src, but may of a file dst replaced.
                try:
                    await self.client.unlink(d, dst, who)
                except RemoteError as e2:
                    if e2.errno not in (errno.ENOENT, errno.EISDIR, errno.ENOTDIR):
                        raise _fuse(e2) from None

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        self._path_of(inode)
        return self._new_fh(DirHandle(inode, self._who(ctx)))

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        h = self._handles.get(fh)
        if not isinstance(h, DirHandle):
            raise pyfuse3.FUSEError(errno.EBADF)
        dir_path = self._path_of(h.inode)
        if h.entries is None or start_id == 0:
            try:
                entries = await self.client.readdir(self.reps[0], dir_path, h.who)
            except RemoteError as e:
                raise _fuse(e) from None
            h.entries = [e for e in entries if not e.name.startswith(PROBE_PREFIX)]
        for i in range(start_id, len(h.entries)):
            ent = h.entries[i]
            path = f"{dir_path}/{ent.name}" if dir_path else ent.name
            a = pyfuse3.EntryAttributes()
            a.st_ino = self._inode(path, count=False)
            a.st_mode = ent.mode or ((stat.S_IFDIR | 0o755) if ent.is_dir
                                     else (stat.S_IFREG | 0o644))
            a.st_uid, a.st_gid = ent.uid, ent.gid
            a.st_size = ent.size
            a.st_mtime_ns = a.st_atime_ns = a.st_ctime_ns = ent.mtime_ns
            # A listing comes from one store and lacks the other stores' sizes: the kernel
            # must not cache it, so stat() asks again.
            a.attr_timeout = a.entry_timeout = 0
            if not pyfuse3.readdir_reply(token, os.fsencode(ent.name), a, i + 1):
                return
            self._lookups[a.st_ino] = self._lookups.get(a.st_ino, 0) + 1

    async def releasedir(self, fh: int) -> None:
        self._handles.pop(fh, None)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        who = self._who(ctx)
        try:
            replies = await asyncio.gather(*(self.client.statfs(d, who) for d in self.reps))
        except RemoteError as e:
            raise _fuse(e) from None
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = sum(r.total_bytes for r in replies) // 4096
        s.f_bfree = s.f_bavail = sum(r.free_bytes for r in replies) // 4096
        s.f_files = sum(r.total_files for r in replies)
        s.f_ffree = s.f_favail = sum(r.free_files for r in replies)
        s.f_namemax = min((r.name_max for r in replies if r.name_max), default=255)
        return s

    # -- files -------------------------------------------------------------------------
    async def open(self, inode: int, flags: int,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        path = self._path_of(inode)
        who = self._who(ctx)
        if flags & os.O_TRUNC:
            await self._drain(inode)
            await self._each_rep(lambda d: self.client.truncate(d, path, 0, who))
        log.debug("open %r by pid %s as job %s (%s)", path, ctx.pid, who.job, who.source)
        # No page cache kept across opens: another node's writes are seen at open, and
        # every read is counted by the daemons.
        return pyfuse3.FileInfo(fh=self._new_fh(self._handle(inode, who)), keep_cache=False)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._child(parent_inode, name)
        if _is_probe(path):
            raise pyfuse3.FUSEError(errno.EINVAL)
        who = self._who(ctx)
        try:
            await self.client.create(self.reps[0], path, mode & 0o7777,
                                     bool(flags & os.O_EXCL), who)
        except RemoteError as e:
            raise _fuse(e) from None
        # On every store at once, with the same owner and mode: a store that first met the
        # file with a stripe would make it as whoever wrote that stripe, in a directory
        # that writer may not be allowed to create in.
        rest = await asyncio.gather(*(self.client.create(d, path, mode & 0o7777, False, who)
                                      for d in self.reps[1:]), return_exceptions=True)
        for d, r in zip(self.reps[1:], rest, strict=True):
            if isinstance(r, BaseException):
                log.warning("create %r on daemon %s failed (its stripes will create it): "
                            "%s", path, d, r)
        if flags & os.O_TRUNC:
            await self._each_rep(lambda d: self.client.truncate(d, path, 0, who))
        attrs = await self._entry(path, count=True, who=who)
        return pyfuse3.FileInfo(fh=self._new_fh(self._handle(attrs.st_ino, who)),
                                keep_cache=False), attrs

    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self._file(fh)
        path = self._path_of(h.inode)
        await self._drain(h.inode)        # this mount's own writes are read back
        pieces = self.layout.pieces(off, size)
        got = await asyncio.gather(*(self._read_piece(path, h.who, p) for p in pieces),
                                   return_exceptions=True)
        try:
            _raise_first(got)
        except RemoteError as e:
            raise _fuse(e) from None
        parts = [(p, cast(bytes, r)) for p, r in zip(pieces, got, strict=True)]
        if all(len(data) == p.length for p, data in parts):
            return b"".join(data for _, data in parts) if len(parts) > 1 else parts[0][1]
        # Something came back short: end of file, or a hole in a store's sparse copy.
        _, file_size = await self._stat(path, h.who)
        return assemble(off, size, parts, file_size)

    async def _read_piece(self, path: str, who: Identity, p: Piece) -> bytes:
        try:
            return await self.client.read(p.daemon, path, p.offset, p.length, who)
        except RemoteError as e:
            if e.errno == errno.ENOENT and p.daemon not in self._primary_store:
                return b""      # this store never received a stripe of the file: a hole
            raise

    def _handle(self, inode: int, who: Identity) -> Handle:
        h = Handle(inode, who)
        o = self.options
        if o.write_window > 0:
            h.writes = WriteBehind(lambda off, data: self._send(h, off, data),
                                   o.stripe_size, o.write_window, o.merge)
        return h

    async def _drain(self, inode: int, report_to: Handle | None = None) -> None:
        """Wait until every write this mount accepted for ``inode`` is on the tier; raise
        only ``report_to``'s own failure (other handles report theirs to their program)."""
        for h in [h for h in self._handles.values()
                  if isinstance(h, Handle) and h.inode == inode and h.writes is not None]:
            assert h.writes is not None
            if h.writes.pending or h is report_to:
                try:
                    await h.writes.drain(report=h is report_to)
                except RemoteError as e:
                    raise _fuse(e) from None

    async def _drain_under(self, path: str) -> None:
        prefix = path + "/"
        inodes = {h.inode for h in self._handles.values()
                  if isinstance(h, Handle) and h.writes is not None and h.writes.pending}
        for ino in inodes:
            p = self._path.get(ino)
            if p is not None and (p == path or p.startswith(prefix)):
                await self._drain(ino)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self._file(fh)
        try:
            if h.writes is not None:
                await h.writes.write(off, buf)
            else:
                await self._send(h, off, buf)
        except RemoteError as e:
            raise _fuse(e) from None
        return len(buf)

    async def _send(self, h: Handle, off: int, buf: bytes) -> int:
        """Write ``buf`` at ``off``, each stripe to its daemon at once; raises RemoteError."""
        path = self._path_of(h.inode)
        pieces = self.layout.pieces(off, len(buf))
        view = memoryview(buf)
        got = await asyncio.gather(
            *(self._write_piece(path, h.who, p,
                                bytes(view[p.offset - off:p.offset - off + p.length])
                                if len(pieces) > 1 else buf) for p in pieces),
            return_exceptions=True)
        _raise_first(got)
        return len(buf)

    async def _write_piece(self, path: str, who: Identity, p: Piece, data: bytes) -> int:
        try:
            return await self.client.write(p.daemon, path, p.offset, data, who)
        except RemoteError as e:
            if e.errno != errno.ENOENT or p.daemon in self._primary_store:
                raise
        # The file's directory is missing in this daemon's store (made before the daemon
        # joined, or its mkdir failed): make it and write again.
        parent = path.rpartition("/")[0]
        if parent:
            await self.client.mkdir(p.daemon, parent, who, parents=True)
        return await self.client.write(p.daemon, path, p.offset, data, who)

    async def flush(self, fh: int) -> None:
        # close(2): the program learns here whether its writes reached the tier.
        h = self._file(fh)
        await self._drain(h.inode, report_to=h)

    async def fsync(self, fh: int, datasync: bool) -> None:
        h = self._file(fh)
        await self._drain(h.inode, report_to=h)
        path = self._path_of(h.inode)
        await self._each_rep(lambda d: self.client.fsync(d, path, h.who))

    async def release(self, fh: int) -> None:
        h = self._handles.get(fh)
        try:
            if isinstance(h, Handle) and h.writes is not None and h.writes.pending:
                await h.writes.drain()
        except Exception as e:        # nobody to tell any more but the log
            log.warning("writes of a closed file were lost: %s", e)
        finally:
            self._handles.pop(fh, None)

    async def drain_all(self) -> None:
        """Before unmounting: put every accepted write on the tier (or log its loss)."""
        for h in list(self._handles.values()):
            if isinstance(h, Handle) and h.writes is not None and h.writes.pending:
                try:
                    await h.writes.drain()
                except Exception as e:
                    log.warning("writes lost at unmount: %s", e)
