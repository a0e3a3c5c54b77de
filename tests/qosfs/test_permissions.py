"""Owners, permissions and job identity through a root qosfs mount of real daemons, as
real users (``tests/integration/users.py``) use it: one mount for every user of the node.

The stores sit below a directory only root can enter, as on a compute node; the mount
point is where every user can reach it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from qosfs.local import LocalMount
from tests.integration.users import SHARED_GROUP, User, ensure_users, group_id
from tests.qosfs.conftest import TIER, Daemons
from tests.qosfs.test_mount import STRIPE, job_bytes

MiB = 1 << 20


@pytest.fixture(scope="module")
def users() -> tuple[User, User]:
    return ensure_users()


@pytest.fixture
def public() -> Iterator[Path]:
    """A directory every user can reach, for mount points."""
    d = Path(tempfile.mkdtemp(prefix="qosfs-perm-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def mount(d: Daemons, where: Path, *args: str) -> LocalMount:
    return LocalMount(TIER, where / "mnt", d.addresses, "--stripe-size", f"{STRIPE}", *args)


def as_user(user: User, cmd: str) -> subprocess.CompletedProcess[str]:
    """``cmd`` in bash as ``user``, with the user's groups, as a login would give them."""
    return subprocess.run(["runuser", "-u", user.name, "--", "bash", "-c", cmd],
                          capture_output=True, text=True, timeout=120, cwd="/")


def ok(user: User, cmd: str) -> str:
    r = as_user(user, cmd)
    assert r.returncode == 0, f"{user.name}: {cmd}: {r.stderr}"
    return r.stdout


def denied(user: User, cmd: str, why: str) -> None:
    r = as_user(user, cmd)
    assert r.returncode != 0 and why in r.stderr, f"{user.name}: {cmd}: {r.stdout}{r.stderr}"


def owner(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_uid, st.st_gid


@pytest.fixture
def homes(clean: Daemons, users: tuple[User, User], public: Path) -> Iterator[Path]:
    """A mount with a directory per user, made and given away by root through it."""
    with mount(clean, public) as m:
        for u in users:
            os.mkdir(m.mountpoint / u.name, 0o755)
            os.chown(m.mountpoint / u.name, u.uid, u.gid)
        yield m.mountpoint


def test_a_user_owns_what_it_makes_on_the_mount_and_on_every_store(
        homes: Path, clean: Daemons, users: tuple[User, User]) -> None:
    ana, _ = users
    mine = homes / ana.name
    # Files striped over all three daemons, a directory, a rename: all the user's.
    ok(ana, f"echo hi > {mine}/f && mkdir {mine}/d && "
            f"dd if=/dev/urandom of={mine}/big bs=64k count=5 status=none && "
            f"mv {mine}/big {mine}/d/big")
    assert ok(ana, f"stat -c '%u %g' {mine}/f {mine}/d {mine}/d/big").split() == \
        [str(ana.uid), str(ana.gid)] * 3
    assert ok(ana, f"cat {mine}/f") == "hi\n"
    for store in clean.stores:
        for rel in (ana.name, f"{ana.name}/f", f"{ana.name}/d", f"{ana.name}/d/big"):
            assert owner(store / rel) == (ana.uid, ana.gid), (store, rel)
    # Nothing the user may not: the tier's root is root's 0755 directory.
    denied(ana, f"touch {homes}/top", "Permission denied")
    assert not any((s / "top").exists() for s in clean.stores)
    # Root's directories show root as their owner (no --owner view any more).
    assert ok(ana, f"stat -c '%u' {homes}").strip() == "0"


def test_a_user_cannot_read_or_delete_what_is_not_its_own(
        homes: Path, clean: Daemons, users: tuple[User, User]) -> None:
    ana, bo = users
    ok(bo, f"umask 077 && echo secret > {homes}/{bo.name}/s && echo open > "
           f"{homes}/{bo.name}/o && chmod 644 {homes}/{bo.name}/o")
    (homes / "rootfile").write_text("root's")
    (homes / "rootfile").chmod(0o600)
    assert ok(ana, f"stat -c '%a %u' {homes}/{bo.name}/s").split() == ["600", str(bo.uid)]
    denied(ana, f"cat {homes}/{bo.name}/s", "Permission denied")
    denied(ana, f"cat {homes}/rootfile", "Permission denied")
    assert ok(ana, f"cat {homes}/{bo.name}/o") == "open\n"          # 0644 is readable
    # Not in a directory it cannot write: neither delete, nor replace, nor create.
    denied(ana, f"rm -f {homes}/{bo.name}/o", "Permission denied")
    denied(ana, f"mv {homes}/{ana.name}/../{bo.name}/o {homes}/{ana.name}/stolen",
           "Permission denied")
    denied(ana, f"echo x > {homes}/{bo.name}/new", "Permission denied")
    denied(ana, f"echo x >> {homes}/{bo.name}/o", "Permission denied")
    assert (homes / bo.name / "o").read_text() == "open\n"
    assert (clean.stores[0] / bo.name / "s").read_text() == "secret\n"
    assert (clean.stores[0] / bo.name / "o").exists()
    assert not (clean.stores[0] / bo.name / "new").exists()


def test_chmod_chown_and_times_follow_posix_rules_on_every_store(
        homes: Path, clean: Daemons, users: tuple[User, User]) -> None:
    ana, bo = users
    f = homes / ana.name / "f"
    ok(ana, f"dd if=/dev/zero of={f} bs=64k count=4 status=none")    # a stripe per store
    ok(ana, f"chmod 640 {f}")
    assert ok(bo, f"stat -c '%a' {f}").strip() == "640"
    for store in clean.stores:
        assert stat.S_IMODE((store / ana.name / "f").stat().st_mode) == 0o640, store
    denied(bo, f"chmod 666 {f}", "Operation not permitted")
    denied(ana, f"chown {bo.name} {f}", "Operation not permitted")
    denied(ana, f"chgrp {bo.name} {f}", "Operation not permitted")      # not its group
    ok(ana, f"chgrp {SHARED_GROUP} {f}")                                # one of its groups
    share = group_id(SHARED_GROUP)
    for store in clean.stores:
        assert owner(store / ana.name / "f") == (ana.uid, share), store
    # The setuid and setgid bits never reach a store.
    ok(ana, f"chmod u+s,g+s {f}")
    assert ok(ana, f"stat -c '%a' {f}").strip() == "640"
    for store in clean.stores:
        assert stat.S_IMODE((store / ana.name / "f").stat().st_mode) & 0o6000 == 0, store
    # Times: the owner sets any; another user with write permission only "now" (touch).
    ok(ana, f"touch -m -d '2001-02-03 04:05:06 UTC' {f}")
    assert ok(bo, f"stat -c '%Y' {f}").strip() == "981173106"
    assert (clean.stores[0] / ana.name / "f").stat().st_mtime == 981173106
    ok(ana, f"chmod 666 {f}")
    ok(bo, f"touch {f}")
    assert (clean.stores[0] / ana.name / "f").stat().st_mtime > 981173106 + 10**8
    denied(bo, f"touch -d '2001-02-03' {f}", "Operation not permitted")
    # Root gives the file away, on every store.
    os.chown(f, bo.uid, bo.gid)
    for store in clean.stores:
        assert owner(store / ana.name / "f") == (bo.uid, bo.gid), store
    assert ok(ana, f"stat -c '%u %g' {f}").split() == [str(bo.uid), str(bo.gid)]


def test_a_forged_job_id_is_charged_to_the_user_unless_the_site_trusts_the_environment(
        clean: Daemons, users: tuple[User, User], public: Path) -> None:
    ana, _ = users
    before = job_bytes(clean)
    for args in ((), ("--trust-environ",)):
        with mount(clean, public, *args) as m:
            if not args:
                os.mkdir(m.mountpoint / ana.name)
                os.chown(m.mountpoint / ana.name, ana.uid, ana.gid)
            ok(ana, f"env SLURM_JOB_ID=999 dd if=/dev/zero of={m.mountpoint}/{ana.name}/"
                    f"forged{len(args)} bs=1M count={2 + len(args)} conv=fsync status=none")
    after = job_bytes(clean)
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert grew.get(f"user:{ana.name}") == 2 * MiB      # not job 999
    assert grew.get("999") == 3 * MiB                    # --trust-environ: job 999
