"""The POSIX tier backend: file operations, errno mapping, and confinement to the root."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from tokenbucket_daemon.errors import (
    AlreadyExists,
    DaemonError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from tokenbucket_daemon.server import backend as backend_mod
from tokenbucket_daemon.server.backend import TierBackend


@pytest.fixture()
def root(tmp_path):
    r = tmp_path / "tier"
    r.mkdir()
    return r


@pytest.fixture()
def outside(tmp_path):
    o = tmp_path / "outside"
    o.mkdir()
    (o / "secret").write_bytes(b"top secret")
    return o


@pytest.fixture()
def tier(root):
    return TierBackend("nvme", root)


def raises(cls, path, fn, *args, **kwargs):
    """Assert ``fn`` raises exactly ``cls`` with a one-line message naming ``path``."""
    with pytest.raises(cls) as info:
        fn(*args, **kwargs)
    assert type(info.value) is cls
    msg = str(info.value)
    assert repr(path) in msg, msg
    assert "\n" not in msg
    return msg


def assert_no_host_path(msg, root):
    assert str(root) not in msg


# ---- construction ---------------------------------------------------------------

def test_root_must_be_an_existing_directory(tmp_path):
    with pytest.raises(InvalidArgument):
        TierBackend("x", tmp_path / "missing")
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(InvalidArgument):
        TierBackend("x", tmp_path / "f")


def test_properties(tier, root):
    assert tier.name == "nvme"
    assert tier.root == root.resolve()


# ---- data -----------------------------------------------------------------------

def test_pwrite_pread_round_trip_with_offsets(tier, root):
    assert tier.pwrite("f", 0, b"hello") == 5
    assert tier.pwrite("f", 10, b"world") == 5
    assert (root / "f").read_bytes() == b"hello\0\0\0\0\0world"
    assert stat.S_IMODE((root / "f").stat().st_mode) == 0o644 & ~_umask()
    assert tier.pread("f", 0, 5) == b"hello"
    assert tier.pread("f", 10, 100) == b"world"  # short only at EOF
    assert tier.pread("f", 100, 10) == b""
    assert tier.pread("f", 2, 0) == b""
    assert tier.pwrite("f", 1, memoryview(b"EL")) == 2
    assert tier.pread("f", 0, 5) == b"hELlo"


def test_pwrite_large_buffer(tier):
    data = os.urandom(3 * (1 << 20) + 7)
    assert tier.pwrite("big", 0, data) == len(data)
    assert tier.pread("big", 0, len(data) + 10) == data


def test_stream_writer_reuses_one_fd(tier, root):
    with tier.open_for_write("s", 4) as w:
        assert w.write(b"ab") == 2
        assert w.write(bytearray(b"cd")) == 2
        assert w.offset == 8
        # Each write has reached the tier before write returns.
        assert (root / "s").read_bytes() == b"\0\0\0\0abcd"
        w.fsync()
    assert w.closed
    raises(FailedPrecondition, "s", w.write, b"x")
    w.close()  # idempotent


def test_claimed_ranges_written_out_of_order_from_threads(tier, root):
    """The daemon pipelines a stream: offsets are claimed in order, writes land in any
    order from several threads; the file must read back exactly as sent."""
    from concurrent.futures import ThreadPoolExecutor
    chunks = [bytes([i]) * (1000 + i) for i in range(40)]
    with tier.open_for_write("p", 0) as w:
        offsets = [w.claim(len(c)) for c in chunks]
        assert w.offset == sum(map(len, chunks))
        with ThreadPoolExecutor(4) as pool:
            done = list(pool.map(w.write_at, reversed(offsets), reversed(chunks)))
        assert done == [len(c) for c in reversed(chunks)]
    assert (root / "p").read_bytes() == b"".join(chunks)
    raises(FailedPrecondition, "p", w.claim, 1)


def test_read_chunks(tier):
    tier.pwrite("c", 0, bytes(range(10)))
    assert list(tier.read_chunks("c", 0, -1, 4)) == [b"\0\1\2\3", b"\4\5\6\7", b"\x08\x09"]
    assert list(tier.read_chunks("c", 2, 5, 2)) == [b"\2\3", b"\4\5", b"\6"]
    assert list(tier.read_chunks("c", 8, 100, 4)) == [b"\x08\x09"]
    assert list(tier.read_chunks("c", 20, -1, 4)) == []
    reader = tier.read_chunks("c", 0, -1, 3)
    assert next(reader) == b"\0\1\2"
    reader.close()
    assert list(reader) == []


def test_read_chunks_fails_at_call_time(tier):
    raises(NotFound, "nope", tier.read_chunks, "nope", 0, -1, 4)
    raises(InvalidArgument, 0, tier.read_chunks, "nope", 0, -1, 0)


def test_fsync_flag(tier, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(backend_mod.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    tier.pwrite("f", 0, b"x")
    assert calls == []
    tier.pwrite("f", 0, b"y", fsync=True)
    assert len(calls) == 1  # existing file: the file only
    tier.pwrite("g", 0, b"z", fsync=True)
    assert len(calls) == 3  # new file: the file and its directory
    tier.fsync("f")
    tier.fsync("")
    assert len(calls) == 5


def test_read_and_truncate_missing_file(tier):
    raises(NotFound, "missing", tier.pread, "missing", 0, 1)
    raises(NotFound, "missing", tier.truncate, "missing", 0)
    raises(NotFound, "d/missing", tier.pwrite, "d/missing", 0, b"x")


def test_pwrite_on_directory_and_through_file(tier):
    tier.mkdir("d")
    raises(FailedPrecondition, "d", tier.pwrite, "d", 0, b"x")
    raises(FailedPrecondition, "", tier.pwrite, "", 0, b"x")
    tier.pwrite("f", 0, b"x")
    raises(FailedPrecondition, "f/x", tier.pwrite, "f/x", 0, b"x")


def test_truncate(tier):
    tier.pwrite("t", 0, b"0123456789")
    tier.truncate("t", 4)
    assert tier.pread("t", 0, 100) == b"0123"
    tier.truncate("t", 6)
    assert tier.pread("t", 0, 100) == b"0123\0\0"
    assert tier.stat("t")["size"] == 6


# ---- metadata -------------------------------------------------------------------

def test_stat_fields(tier, root):
    tier.pwrite("f", 0, b"abc")
    st = tier.stat("f")
    real = os.stat(root / "f")
    assert st == {"size": 3, "mode": real.st_mode, "mtime_ns": real.st_mtime_ns,
                  "is_dir": False, "nlink": 1, "uid": real.st_uid, "gid": real.st_gid,
                  "atime_ns": real.st_atime_ns, "ctime_ns": real.st_ctime_ns}
    assert stat.S_ISREG(st["mode"])
    tier.mkdir("d")
    assert tier.stat("d")["is_dir"] is True
    for r in ("", "."):
        assert tier.stat(r)["is_dir"] is True
    raises(NotFound, "nope", tier.stat, "nope")


def test_create(tier, root):
    tier.create("e", mode=0o600)
    assert (root / "e").read_bytes() == b""
    assert stat.S_IMODE((root / "e").stat().st_mode) == 0o600 & ~_umask()
    tier.pwrite("e", 0, b"keep")
    tier.create("e")  # non-exclusive leaves an existing file alone
    assert (root / "e").read_bytes() == b"keep"
    tier.create("x", exclusive=True)
    msg = raises(AlreadyExists, "x", tier.create, "x", exclusive=True)
    assert_no_host_path(msg, root)
    raises(InvalidArgument, "0o17777", tier.create, "y", mode=0o17777)


def test_unlink(tier, root):
    tier.create("f")
    tier.unlink("f")
    assert not (root / "f").exists()
    msg = raises(NotFound, "f", tier.unlink, "f")
    assert_no_host_path(msg, root)
    tier.mkdir("d")
    raises(FailedPrecondition, "d", tier.unlink, "d")


def test_mkdir_and_parents(tier, root):
    tier.mkdir("a")
    raises(AlreadyExists, "a", tier.mkdir, "a")
    raises(NotFound, "b/c/d", tier.mkdir, "b/c/d")
    tier.mkdir("b/c/d", parents=True)
    assert (root / "b" / "c" / "d").is_dir()
    raises(AlreadyExists, "b/c/d", tier.mkdir, "b/c/d", parents=True)
    tier.mkdir("b/c/e", parents=True)  # existing parents are fine
    assert (root / "b" / "c" / "e").is_dir()
    raises(AlreadyExists, "", tier.mkdir, "")


def test_readdir_sorted(tier):
    for name in ("zeta", "alpha", "Mid"):
        tier.pwrite(name, 0, b"12")
    tier.mkdir("beta")
    rows = tier.readdir("")
    assert [r[0] for r in rows] == sorted(["zeta", "alpha", "Mid", "beta"])
    assert ("alpha", False, 2) in [r[:3] for r in rows]
    alpha = os.stat(tier.root / "alpha")
    assert rows[[r.name for r in rows].index("alpha")][3:] == (
        alpha.st_mode, alpha.st_uid, alpha.st_gid, alpha.st_mtime_ns)
    assert [r for r in rows if r[0] == "beta"][0][1] is True
    assert tier.readdir(".") == rows
    tier.pwrite("beta/inner", 0, b"x")
    assert [r[:3] for r in tier.readdir("beta")] == [("inner", False, 1)]
    raises(FailedPrecondition, "alpha", tier.readdir, "alpha")
    raises(NotFound, "nope", tier.readdir, "nope")


def test_rename(tier, root):
    tier.pwrite("a", 0, b"data")
    tier.mkdir("d")
    tier.rename("a", "d/b")
    assert not (root / "a").exists()
    assert tier.pread("d/b", 0, 10) == b"data"
    msg = raises(NotFound, "a", tier.rename, "a", "c")
    assert repr("c") in msg
    raises(InvalidArgument, "", tier.rename, "", "z")


def test_rmdir(tier, root):
    tier.mkdir("d")
    tier.pwrite("d/f", 0, b"x")
    msg = raises(FailedPrecondition, "d", tier.rmdir, "d")
    assert_no_host_path(msg, root)
    tier.unlink("d/f")
    tier.rmdir("d")
    assert not (root / "d").exists()
    raises(NotFound, "d", tier.rmdir, "d")
    raises(InvalidArgument, "", tier.rmdir, "")


@pytest.mark.parametrize("code, cls", [
    (errno.ENOENT, NotFound), (errno.EEXIST, AlreadyExists),
    (errno.ENOTDIR, FailedPrecondition), (errno.EISDIR, FailedPrecondition),
    (errno.ENOTEMPTY, FailedPrecondition), (errno.EACCES, PermissionDenied),
    (errno.EPERM, PermissionDenied), (errno.ENOSPC, ResourceExhausted),
    (errno.EDQUOT, ResourceExhausted), (errno.EIO, Unavailable),
    (errno.ENAMETOOLONG, InvalidArgument), (errno.ELOOP, FailedPrecondition),
    (errno.EFBIG, OutOfRange), (errno.EMFILE, ResourceExhausted),
    (errno.EROFS, PermissionDenied), (errno.ECHRNG, FailedPrecondition),
])
def test_errno_mapping(tier, root, monkeypatch, code, cls):
    tier.pwrite("f", 0, b"x")

    def fail(fd, size):
        raise OSError(code, os.strerror(code), str(root / "f"))

    monkeypatch.setattr(backend_mod.os, "ftruncate", fail)
    msg = raises(cls, "f", tier.truncate, "f", 0)
    assert_no_host_path(msg, root)


def test_einval_from_the_kernel_is_invalid_argument(tier):
    tier.mkdir("d")
    # Renaming a directory into itself is EINVAL: once INTERNAL, now the caller's error.
    raises(InvalidArgument, ("d", "d/e"), tier.rename, "d", "d/e")


# ---- argument checks ------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda t: t.pwrite("f", -1, b"x"),
    lambda t: t.pread("f", -1, 1),
    lambda t: t.pread("f", 0, -1),
    lambda t: t.open_for_write("f", -5),
    lambda t: t.read_chunks("f", -1, 1, 1),
    lambda t: t.truncate("f", -1),
])
def test_negative_numbers_refused(tier, root, call):
    tier.pwrite("f", 0, b"abc")
    with pytest.raises(InvalidArgument) as info:
        call(tier)
    assert "must not be negative" in str(info.value)
    assert (root / "f").read_bytes() == b"abc"


def test_nul_in_path(tier):
    msg = raises(InvalidArgument, "a\0b", tier.pwrite, "a\0b", 0, b"x")
    assert "NUL" in msg
    raises(InvalidArgument, "\0", tier.stat, "\0")


def test_data_must_be_bytes(tier):
    with pytest.raises(InvalidArgument):
        tier.pwrite("f", 0, "text")  # type: ignore[arg-type]


# ---- confinement ----------------------------------------------------------------

ESCAPES = ["../x", "a/../../x", "a/../b", "..", "/etc/passwd", "/"]


@pytest.mark.parametrize("path", ESCAPES)
def test_lexical_escapes_refused_everywhere(tier, root, tmp_path, path):
    tier.mkdir("a")
    calls = [
        lambda: tier.pwrite(path, 0, b"x"),
        lambda: tier.open_for_write(path, 0),
        lambda: tier.pread(path, 0, 10),
        lambda: tier.read_chunks(path, 0, -1, 4),
        lambda: tier.stat(path),
        lambda: tier.create(path),
        lambda: tier.unlink(path),
        lambda: tier.mkdir(path, parents=True),
        lambda: tier.rmdir(path),
        lambda: tier.readdir(path),
        lambda: tier.rename("a", path),
        lambda: tier.rename(path, "z"),
        lambda: tier.truncate(path, 0),
        lambda: tier.fsync(path),
    ]
    for call in calls:
        msg = raises(PermissionDenied, path, call)
        assert "escapes the root" in msg
    assert sorted(os.listdir(tmp_path)) == ["tier"]
    assert os.listdir(root) == ["a"]


def test_symlink_to_outside_directory(tier, root, outside):
    os.symlink(outside, root / "out")
    os.symlink("../outside", root / "rel")
    for link in ("out", "rel"):
        p = f"{link}/secret"
        assert "escapes the root" in raises(PermissionDenied, p, tier.pread, p, 0, 100)
        raises(PermissionDenied, p, tier.read_chunks, p, 0, -1, 4)
        raises(PermissionDenied, p, tier.pwrite, p, 0, b"pwned")
        raises(PermissionDenied, f"{link}/new", tier.pwrite, f"{link}/new", 0, b"pwned")
        raises(PermissionDenied, f"{link}/new", tier.open_for_write, f"{link}/new", 0)
        raises(PermissionDenied, f"{link}/new", tier.create, f"{link}/new")
        raises(PermissionDenied, f"{link}/d", tier.mkdir, f"{link}/d")
        raises(PermissionDenied, p, tier.truncate, p, 0)
        raises(PermissionDenied, p, tier.unlink, p)
        raises(PermissionDenied, p, tier.stat, p)
        raises(PermissionDenied, link, tier.readdir, link)
        raises(PermissionDenied, p, tier.rename, p, "stolen")
        raises(PermissionDenied, f"{link}/moved", tier.rename, "x", f"{link}/moved")
    # Nothing changed outside.
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_bytes() == b"top secret"
    # The link itself is inside the tier: removing it is allowed and leaves the target.
    tier.unlink("out")
    assert (outside / "secret").exists()


def test_symlink_to_outside_file(tier, root, outside):
    os.symlink(outside / "secret", root / "abs")
    os.symlink("../outside/secret", root / "rel")
    tier.mkdir("sub")
    os.symlink("../../outside/secret", root / "sub" / "deep")
    for p in ("abs", "rel", "sub/deep"):
        raises(PermissionDenied, p, tier.pread, p, 0, 100)
        raises(PermissionDenied, p, tier.pwrite, p, 0, b"pwned")
        raises(PermissionDenied, p, tier.open_for_write, p, 0)
        raises(PermissionDenied, p, tier.truncate, p, 0)
        raises(PermissionDenied, p, tier.create, p)
        raises(PermissionDenied, p, tier.stat, p)
        raises(PermissionDenied, p, tier.fsync, p)
    assert (outside / "secret").read_bytes() == b"top secret"


def test_dangling_symlink_to_outside_not_created(tier, root, outside):
    os.symlink(outside / "planted", root / "trap")
    raises(PermissionDenied, "trap", tier.pwrite, "trap", 0, b"x")
    raises(PermissionDenied, "trap", tier.create, "trap")
    assert not (outside / "planted").exists()
    # An exclusive create does not follow the final link: the name is simply taken.
    raises(AlreadyExists, "trap", tier.create, "trap", exclusive=True)
    assert not (outside / "planted").exists()


def test_symlinks_inside_root_are_followed(tier, root):
    tier.mkdir("data/real", parents=True)
    tier.pwrite("data/real/f", 0, b"inside")
    os.symlink("data/real", root / "rel")
    os.symlink(root.resolve() / "data" / "real", root / "abs")
    os.symlink("../data/real/f", root / "data" / "flink")  # '..' stays inside
    os.symlink(".", root / "self")
    assert tier.pread("rel/f", 0, 10) == b"inside"
    assert tier.pread("abs/f", 0, 10) == b"inside"
    assert tier.pread("data/flink", 0, 10) == b"inside"
    assert tier.pread("self/self/data/real/f", 0, 10) == b"inside"
    tier.pwrite("rel/g", 0, b"via link")
    assert (root / "data" / "real" / "g").read_bytes() == b"via link"
    assert tier.stat("rel")["is_dir"] is True
    assert [r[0] for r in tier.readdir("abs")] == ["f", "g"]
    # readdir does not follow entries: a link shows as a link.
    assert ("rel", False, len("data/real")) in [r[:3] for r in tier.readdir("")]


def test_symlink_loop(tier, root):
    os.symlink("b", root / "a")
    os.symlink("a", root / "b")
    with pytest.raises(DaemonError) as info:
        tier.pread("a", 0, 1)
    assert repr("a") in str(info.value)


def test_root_reached_through_a_symlinked_path(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "alias")
    tier = TierBackend("ram", tmp_path / "alias")
    os.symlink(real / "f", real / "abs")  # absolute target under the resolved root
    tier.pwrite("f", 0, b"ok")
    assert tier.pread("abs", 0, 2) == b"ok"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_filesystem_type_picks_the_longest_mount_prefix(tmp_path):
    from pathlib import Path
    assert backend_mod.filesystem_type(Path("/proc/self")) == "proc"
    assert backend_mod.filesystem_type(Path("/dev/shm")) == "tmpfs"
    # Both are mounts inside "/": the deeper mount point wins.
    assert TierBackend("m", "/dev/shm").in_memory
    assert backend_mod.filesystem_type(Path("/proc/no/such/mount")) == "proc"


# ---- attributes -----------------------------------------------------------------

def test_setattr_changes_mode_owner_and_times_and_returns_them(tier, root):
    tier.create("f", mode=0o644)
    st = tier.setattr("f", mode=0o600)
    assert stat.S_IMODE(st["mode"]) == 0o600 == stat.S_IMODE((root / "f").stat().st_mode)
    st = tier.setattr("f", atime_ns=1_000_000_123, mtime_ns=2_000_000_456)
    real = (root / "f").stat()
    assert (st["atime_ns"], st["mtime_ns"]) == (1_000_000_123, 2_000_000_456)
    assert (real.st_atime_ns, real.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
    # One time alone leaves the other as it is; "now" is the clock's.
    st = tier.setattr("f", mtime_now=True)
    assert st["atime_ns"] == 1_000_000_123 and st["mtime_ns"] > 2_000_000_456
    if os.geteuid() == 0:
        st = tier.setattr("f", uid=65534, gid=65534)
        assert ((root / "f").stat().st_uid, st["gid"]) == (65534, 65534)
    tier.mkdir("d")
    assert tier.setattr("d", mode=0o1777)["is_dir"] is True
    assert stat.S_IMODE((root / "d").stat().st_mode) == 0o1777
    assert stat.S_IMODE(tier.setattr("", mode=0o755)["mode"]) == 0o755


def test_setid_bits_are_never_set(tier, root):
    tier.create("f")
    assert stat.S_IMODE(tier.setattr("f", mode=0o7755)["mode"]) == 0o755
    tier.create("g", mode=0o6755)
    assert stat.S_IMODE((root / "g").stat().st_mode) & 0o7000 == 0
    tier.mkdir("d", mode=0o3777)
    assert stat.S_IMODE((root / "d").stat().st_mode) & 0o7000 == 0o1000
    tier.mkdir("p/q", mode=0o2755, parents=True)
    for p in ("p", "p/q"):
        assert stat.S_IMODE((root / p).stat().st_mode) & 0o6000 == 0, p
    assert stat.S_IMODE(tier.setattr("d", mode=0o7777)["mode"]) == 0o1777


def test_setattr_bad_input_and_escapes(tier, root, outside):
    tier.create("f")
    raises(InvalidArgument, "0o10000", tier.setattr, "f", mode=0o10000)
    raises(InvalidArgument, 0xFFFFFFFF, tier.setattr, "f", uid=0xFFFFFFFF)
    raises(InvalidArgument, 5, tier.setattr, "f", atime_ns=5, atime_now=True)
    raises(NotFound, "nope", tier.setattr, "nope", mode=0o600)
    os.symlink(outside / "secret", root / "out")
    before = (outside / "secret").stat().st_mode
    raises(PermissionDenied, "out", tier.setattr, "out", mode=0o777)
    assert (outside / "secret").stat().st_mode == before
