"""The daemon acts as its callers: the kernel checks their permissions and new entries are
theirs. Real daemons run as root, real users (``tests/integration/users.py``), as root."""

from __future__ import annotations

import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.users import SHARED_GROUP, User, ensure_users, group_id
from tokenbucket_daemon.caller import MAX_GROUPS, Caller
from tokenbucket_daemon.client import DataClient
from tokenbucket_daemon.core.policy import Tag
from tokenbucket_daemon.local import LocalDaemon
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.server.fsid import FsIdentity, thread_identity

CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_FOWNER = 1, 0, 3


@pytest.fixture(scope="module")
def users() -> tuple[User, User]:
    return ensure_users()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDaemon]:
    """A daemon with a memory tier (I/O on the event loop) and a disk tier (I/O threads)."""
    base = tmp_path_factory.mktemp("identity")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        os.chmod(shm, 0o755)
        d = LocalDaemon(base / "d", "d", tiers={"mem": Path(shm), "disk": base / "disk"},
                        token="t").start()
        assert "inline-io mem" in d.banner
        yield d
        d.stop(signal.SIGKILL)


def _roots(d: LocalDaemon) -> dict[str, Path]:
    return {t.tier: Path(t.root) for t in d.admin().stats().tiers}


def errno_of(e: grpc.RpcError) -> str:
    return str(dict(e.trailing_metadata() or ()).get("qos-errno", ""))


def refused(fn, *args, **kw) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kw)
    return e.value.code(), errno_of(e.value)


def cap_effective() -> int:
    for line in Path("/proc/thread-self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapEff line")


def test_the_kernel_drops_dac_override_for_the_switched_thread_only(
        users: tuple[User, User], tmp_path: Path) -> None:
    ana, _ = users
    secret = tmp_path / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    os.chmod(tmp_path, 0o755)
    fsid = FsIdentity()
    assert fsid.unavailable == ""
    inside: dict[str, object] = {}
    switched, checked = threading.Event(), threading.Event()

    def as_ana() -> None:
        inside["identity"] = thread_identity()
        inside["caps"] = cap_effective()
        try:
            secret.read_text()
            inside["read"] = "allowed"
        except PermissionError:
            inside["read"] = "EACCES"
        switched.set()
        checked.wait(10)      # stay switched while the main thread checks itself

    t = threading.Thread(target=fsid.run, args=(ana.caller, as_ana))
    t.start()
    assert switched.wait(10)
    try:
        # The switch is the thread's alone: this thread is still root, with every cap.
        assert thread_identity()[:2] == (0, 0)
        assert secret.read_text() == "root only"
        assert cap_effective() >> CAP_DAC_OVERRIDE & 1
    finally:
        checked.set()
        t.join()
    assert inside["identity"] == (ana.uid, ana.gid, ana.groups)
    caps = int(inside["caps"])  # type: ignore[call-overload]
    for cap in (CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_FOWNER):
        assert not caps >> cap & 1, f"capability {cap} kept with fsuid {ana.uid}"
    assert inside["read"] == "EACCES"
    # On this thread too, and back to the daemon's identity and capabilities after.
    assert fsid.run(ana.caller, thread_identity) == (ana.uid, ana.gid, ana.groups)
    assert thread_identity() == (fsid.uid, fsid.gid, fsid.groups)
    assert cap_effective() >> CAP_DAC_OVERRIDE & 1


@pytest.mark.parametrize("tier", ["mem", "disk"])
def test_files_belong_to_their_caller_and_permissions_are_the_kernels(
        daemon: LocalDaemon, users: tuple[User, User], tier: str) -> None:
    ana, bo = users
    root = _roots(daemon)[tier]
    admin = DataClient(daemon.address)          # no caller: the daemon's own user (root)
    for u in (ana, bo):
        admin.mkdir(tier, u.name)
        os.chown(root / u.name, u.uid, u.gid)
    as_ana = DataClient(daemon.address, Tag("7", ana.name), caller=ana.caller)
    as_bo = DataClient(daemon.address, Tag("8", bo.name), caller=bo.caller)
    try:
        # Made by the caller: theirs, by Write (streamed), Create and Mkdir alike.
        as_ana.write(tier, "qosuser/w.dat", b"x" * 3_000_000, chunk=1 << 20)
        as_ana.create(tier, "qosuser/c.dat", mode=0o600)
        as_ana.mkdir(tier, "qosuser/sub")
        for name in ("w.dat", "c.dat", "sub"):
            st = (root / "qosuser" / name).stat()
            assert (st.st_uid, st.st_gid) == (ana.uid, ana.gid), name
        got = as_ana.stat(tier, "qosuser/c.dat")
        assert (got.uid, got.gid, stat.S_IMODE(got.mode)) == (ana.uid, ana.gid, 0o600)
        assert {e.name: (e.uid, e.gid) for e in as_ana.stub.Readdir(pb.ReaddirRequest(
            tag=as_ana._pbtag(), tier=tier, path="qosuser")).entries}["w.dat"] == (ana.uid,
                                                                                   ana.gid)
        # Another user: no read of a 0600 file, no write into a 0755 directory not theirs,
        # no unlink there, no listing of a 0700 directory.
        assert refused(as_bo.read, tier, "qosuser/c.dat") == (
            grpc.StatusCode.PERMISSION_DENIED, "EACCES")
        assert refused(as_bo.write, tier, "qosuser/bo.dat", b"no") == (
            grpc.StatusCode.PERMISSION_DENIED, "EACCES")
        assert refused(as_bo.unlink, tier, "qosuser/w.dat") == (
            grpc.StatusCode.PERMISSION_DENIED, "EACCES")
        assert refused(as_bo.create, tier, "qosuser/bo2.dat") == (
            grpc.StatusCode.PERMISSION_DENIED, "EACCES")
        # Nor write, truncate or fsync a file it may only read (the stream's open decides).
        assert refused(as_bo.write, tier, "qosuser/w.dat", b"no", offset=5)[1] == "EACCES"
        assert refused(as_bo.stub.Truncate, pb.TruncateRequest(
            tag=as_bo._pbtag(), tier=tier, path="qosuser/w.dat", size=0))[1] == "EACCES"
        assert (root / "qosuser" / "w.dat").stat().st_size == 3_000_000
        # Its owner fsyncs a file it can write but not read.
        as_ana.setattr(tier, "qosuser/w.dat", mode=0o200)
        as_ana.stub.Fsync(pb.FsyncRequest(tag=as_ana._pbtag(), tier=tier, path="qosuser/w.dat"))
        assert refused(as_ana.read, tier, "qosuser/w.dat")[1] == "EACCES"
        as_ana.setattr(tier, "qosuser/w.dat", mode=0o644)
        as_ana.setattr(tier, "qosuser/sub", mode=0o700)
        assert refused(as_bo.readdir, tier, "qosuser/sub")[1] == "EACCES"
        assert refused(as_bo.stat, tier, "qosuser/sub/x")[1] == "EACCES"
        assert (root / "qosuser" / "w.dat").exists()
        assert not (root / "qosuser" / "bo.dat").exists()
        # Nor at the top of the tier, root's 0755 root.
        assert refused(as_ana.create, tier, "top.dat")[1] == "EACCES"
        # The same calls without a caller act as the daemon (root): legacy clients.
        assert admin.read(tier, "qosuser/c.dat") == b""
    finally:
        for u in (ana, bo):
            _rmtree(root / u.name)


def _rmtree(p: Path) -> None:
    import shutil
    shutil.rmtree(p, ignore_errors=True)


@pytest.mark.parametrize("tier", ["mem", "disk"])
def test_setattr_follows_posix_rules_and_never_sets_setid_bits(
        daemon: LocalDaemon, users: tuple[User, User], tier: str) -> None:
    ana, bo = users
    root = _roots(daemon)[tier]
    admin = DataClient(daemon.address)
    admin.mkdir(tier, "shared")
    os.chmod(root / "shared", 0o777)
    as_ana = DataClient(daemon.address, caller=ana.caller)
    as_bo = DataClient(daemon.address, caller=bo.caller)
    share = group_id(SHARED_GROUP)
    try:
        as_ana.create(tier, "shared/f", mode=0o644)
        # The owner changes the mode; another user may not (EPERM).
        assert stat.S_IMODE(as_ana.setattr(tier, "shared/f", mode=0o640).mode) == 0o640
        assert refused(as_bo.setattr, tier, "shared/f", mode=0o666) == (
            grpc.StatusCode.PERMISSION_DENIED, "EPERM")
        # Only root gives a file away; the owner may pick one of its own groups only.
        assert refused(as_ana.setattr, tier, "shared/f", uid=bo.uid)[1] == "EPERM"
        assert as_ana.setattr(tier, "shared/f", gid=share).gid == share
        assert refused(as_ana.setattr, tier, "shared/f", gid=bo.gid)[1] == "EPERM"
        assert refused(as_bo.setattr, tier, "shared/f", gid=bo.gid)[1] == "EPERM"
        st = (root / "shared" / "f").stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (ana.uid, share, 0o640)
        assert admin.setattr(tier, "shared/f", uid=bo.uid, gid=bo.gid).uid == bo.uid
        # Times: explicit ones by the owner only; "now" by anyone who may write.
        assert refused(as_ana.setattr, tier, "shared/f", mtime_ns=10**17)[1] == "EPERM"
        assert as_bo.setattr(tier, "shared/f", mtime_ns=10**17, atime_ns=5).mtime_ns == 10**17
        assert (root / "shared" / "f").stat().st_atime_ns == 5
        as_bo.setattr(tier, "shared/f", mode=0o666)
        # Both to now is a touch (write permission suffices); one alone is not.
        now = pb.SetattrRequest(tag=as_ana._pbtag(), tier=tier, path="shared/f",
                                mtime_now=True)
        assert refused(as_ana.stub.Setattr, now)[1] == "EPERM"
        now.atime_now = True
        r = as_ana.stub.Setattr(now)
        assert r.stat.mtime_ns > 10**17 and r.stat.atime_ns > 5
        r = as_bo.stub.Setattr(pb.SetattrRequest(tag=as_bo._pbtag(), tier=tier,
                                                 path="shared/f", atime_ns=7, mtime_now=True))
        assert r.stat.atime_ns == 7 and r.stat.mtime_ns >= (root / "shared").stat().st_mtime_ns
        # The setuid and setgid bits never come through: chmod, create or mkdir.
        assert stat.S_IMODE(as_bo.setattr(tier, "shared/f", mode=0o6755).mode) == 0o755
        assert stat.S_IMODE(admin.setattr(tier, "shared/f", mode=0o7755).mode) == 0o755
        as_ana.create(tier, "shared/g", mode=0o4755)
        assert stat.S_IMODE((root / "shared" / "g").stat().st_mode) & 0o7000 == 0
        as_ana.stub.Mkdir(pb.MkdirRequest(tag=as_ana._pbtag(), tier=tier, path="shared/d",
                                          mode=0o3777))
        mode = stat.S_IMODE((root / "shared" / "d").stat().st_mode)
        assert mode & 0o6000 == 0 and mode & 0o1000, oct(mode)   # the sticky bit is kept
        # A write by a user clears the setuid bit a root-made file carries (the kernel's
        # rule for unprivileged writers): the stream really writes as its caller.
        suid = root / "shared" / "suid"
        suid.write_bytes(b"")
        suid.chmod(0o4777)
        as_ana.write(tier, "shared/suid", b"payload")
        assert stat.S_IMODE(suid.stat().st_mode) == 0o777
    finally:
        _rmtree(root / "shared")


def test_bad_callers_and_bad_setattr_input_are_invalid_argument(daemon: LocalDaemon) -> None:
    many = DataClient(daemon.address, caller=Caller(1000, 1000, tuple(range(MAX_GROUPS + 1))))
    code, _ = refused(many.stat, "disk", "")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        many.write("disk", "x", b"1")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than 64 supplementary groups" in (e.value.details() or "")
    assert "\n" not in (e.value.details() or "")
    assert DataClient(daemon.address, caller=Caller(
        1000, 1000, tuple(range(MAX_GROUPS)))).stat("disk", "").is_dir
    minus_one = DataClient(daemon.address, caller=Caller(0xFFFFFFFF, 0))
    assert refused(minus_one.stat, "disk", "")[0] == grpc.StatusCode.INVALID_ARGUMENT
    admin = DataClient(daemon.address)
    admin.create("disk", "bad")
    for kw in ({"mode": 0o10000}, {"uid": 0xFFFFFFFF}):
        assert refused(admin.setattr, "disk", "bad", **kw)[0] == grpc.StatusCode.INVALID_ARGUMENT
    r = pb.SetattrRequest(tier="disk", path="bad", atime_ns=1, atime_now=True)
    assert refused(admin.stub.Setattr, r)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert refused(admin.setattr, "disk", "nope", mode=0o600)[0] == grpc.StatusCode.NOT_FOUND
    admin.unlink("disk", "bad")
