"""qosfs end to end: unmodified programs on a real FUSE mount of real daemons.

Data is always checked after a fresh mount (or on the stores themselves), so the page
cache of the first mount cannot answer for the daemons.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from qosfs.local import LocalMount
from tests.qosfs.conftest import TIER, Daemons, _require_fuse
from tokenbucket_daemon.client import AdminClient

REPO = Path(__file__).resolve().parents[2]
STRIPE = 64 * 1024
QOSFS = [sys.executable, "-m", "qosfs.cli"]


def mount(d: Daemons, name: str = "mnt", *args: str) -> LocalMount:
    return LocalMount(TIER, d.base / name, d.addresses, "--stripe-size", f"{STRIPE}",
                      *args)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sh(cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120,
                          **kw)  # type: ignore[call-overload]


def job_bytes(d: Daemons) -> dict[str, int]:
    """Bytes written per job tag, summed over the daemons."""
    out: dict[str, int] = {}
    for a in d.addresses:
        for c in AdminClient(a, "local-admin").stats().classes:
            out[c.tag] = out.get(c.tag, 0) + c.bytes_written
    return out


def test_dd_cp_tar_and_python_round_trip(clean: Daemons, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(5 * 1024 * 1024 + 12345))
    tree = REPO / "qos_plugin" / "model"
    with mount(clean) as m:
        mnt = m.mountpoint
        r = sh(f"dd if={src} of={mnt}/dd.bin bs=1M conv=fsync status=none && "
               f"cp {src} {mnt}/cp.bin && mkdir -p {mnt}/a/b && "
               f"tar -C {tree.parent} -cf - model | tar -C {mnt}/a/b -xf -")
        assert r.returncode == 0, r.stderr
        # Python file code: seek, overwrite in place, extend past a hole, append.
        with open(mnt / "py.bin", "wb") as f:
            f.write(b"A" * 200_000)
            f.seek(70_000)
            f.write(b"B" * 1000)
            f.seek(500_000)
            f.write(b"tail")
        with open(mnt / "py.bin", "ab") as f:
            f.write(b"!")
    expect_py = bytearray(b"A" * 200_000 + bytes(300_000) + b"tail!")
    expect_py[70_000:71_000] = b"B" * 1000
    with mount(clean) as m:
        mnt = m.mountpoint
        assert sha(mnt / "dd.bin") == sha(src)
        assert sha(mnt / "cp.bin") == sha(src)
        assert (mnt / "py.bin").read_bytes() == bytes(expect_py)
        assert os.path.getsize(mnt / "py.bin") == len(expect_py)
        r = sh(f"diff -r {tree} {mnt}/a/b/model")
        assert r.returncode == 0, r.stdout + r.stderr
        # tar reads it back as an archive too.
        with tarfile.open(tmp_path / "back.tar", "w") as t:
            t.add(mnt / "a", arcname="a")
        names = tarfile.open(tmp_path / "back.tar").getnames()
        assert "a/b/model/makespan.py" in names


def test_stripes_land_on_every_daemon_at_their_offsets(clean: Daemons, tmp_path: Path) -> None:
    data = os.urandom(7 * STRIPE + 100)
    with mount(clean, "mnt", "--log-level", "INFO") as m:
        (m.mountpoint / "s.bin").write_bytes(data)
    assert "stores [[0], [1], [2]]" in m.log.read_text()
    for k in range(8):
        store = clean.stores[k % 3] / "s.bin"
        with open(store, "rb") as f:
            f.seek(k * STRIPE)
            assert f.read(STRIPE) == data[k * STRIPE:(k + 1) * STRIPE], f"stripe {k}"
    # Every store holds its own stripes only: the rest of its copy is holes (zeros).
    with open(clean.stores[1] / "s.bin", "rb") as f:
        assert f.read(STRIPE) == bytes(STRIPE)


def test_fio_with_concurrent_writers_verifies(clean: Daemons) -> None:
    with mount(clean) as m:
        r = sh(f"fio --name=v --directory={m.mountpoint} --rw=randwrite --bs=16k --size=8M "
               "--numjobs=4 --verify=crc32c --verify_fatal=1 --end_fsync=1 "
               "--verify_state_save=0 "
               "--group_reporting --output-format=terse")
        assert r.returncode == 0, r.stdout + r.stderr
        fields = r.stdout.strip().splitlines()[-1].split(";")
        assert fields[4] == "0", f"fio reported error {fields[4]}"


def test_concurrent_writers_of_many_files_and_one_shared_file(clean: Daemons,
                                                              tmp_path: Path) -> None:
    blobs = [os.urandom(3 * 1024 * 1024 + i) for i in range(4)]
    for i, b in enumerate(blobs):
        (tmp_path / f"b{i}").write_bytes(b)
    half = 2 * 1024 * 1024
    with mount(clean) as m:
        mnt = m.mountpoint
        (mnt / "shared.bin").write_bytes(b"")
        procs = [subprocess.Popen(["cp", str(tmp_path / f"b{i}"), str(mnt / f"f{i}")])
                 for i in range(4)]
        # Two writers filling disjoint halves of one file at once.
        procs += [subprocess.Popen(["dd", f"if={tmp_path}/b{i}", f"of={mnt}/shared.bin",
                                    "bs=64k", f"count={half // 65536}", f"seek={i * 32}",
                                    "conv=notrunc,fsync", "status=none"]) for i in (0, 1)]
        assert [p.wait(timeout=120) for p in procs] == [0] * 6
    with mount(clean) as m:
        for i, b in enumerate(blobs):
            assert (m.mountpoint / f"f{i}").read_bytes() == b, f"f{i}"
        assert (m.mountpoint / "shared.bin").read_bytes() == blobs[0][:half] + blobs[1][:half]


def test_rename_over_a_bigger_file_leaves_no_stale_stripes(clean: Daemons) -> None:
    with mount(clean) as m:
        mnt = m.mountpoint
        (mnt / "big").write_bytes(b"x" * (5 * STRIPE))
        (mnt / "small").write_bytes(b"tiny")
        os.rename(mnt / "small", mnt / "big")
        os.truncate(mnt / "big", 3 * STRIPE)      # grows back over the old stripes
        os.mkdir(mnt / "d")
        (mnt / "d" / "f").write_bytes(b"y" * (2 * STRIPE))
        os.rename(mnt / "d", mnt / "e")
    with mount(clean) as m:
        mnt = m.mountpoint
        assert (mnt / "big").read_bytes() == b"tiny" + bytes(3 * STRIPE - 4)
        assert not (mnt / "small").exists()
        assert (mnt / "e" / "f").read_bytes() == b"y" * (2 * STRIPE)
        assert sorted(os.listdir(mnt)) == ["big", "e"]
        for s in clean.stores:
            assert not (s / "d").exists()


def test_errors_reach_programs_with_their_errno(clean: Daemons) -> None:
    with mount(clean) as m:
        mnt = m.mountpoint
        os.mkdir(mnt / "full")
        (mnt / "full" / "f").write_bytes(b"1")
        cases = [(lambda: os.rmdir(mnt / "full"), errno.ENOTEMPTY),
                 (lambda: os.mkdir(mnt / "full"), errno.EEXIST),
                 (lambda: open(mnt / "nope"), errno.ENOENT),
                 (lambda: open(mnt / "full", "wb"), errno.EISDIR),
                 (lambda: os.open(mnt / "full" / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY),
                  errno.EEXIST),
                 (lambda: open(mnt / "full" / "f" / "x", "wb"), errno.ENOTDIR),
                 # The daemons' paths are UTF-8: other bytes are refused, not a hang.
                 (lambda: open(os.path.join(os.fsencode(mnt), b"\xff"), "wb"), errno.EILSEQ)]
        for fn, code in cases:
            with pytest.raises(OSError) as e:
                fn()
            assert e.value.errno == code, (fn, e.value)
        # Nothing changed by the failed calls.
        assert (mnt / "full" / "f").read_bytes() == b"1"
        st = os.statvfs(mnt)
        assert st.f_blocks > 0 and 0 < st.f_bavail <= st.f_blocks


def test_each_file_handle_is_tagged_with_its_opener_job(clean: Daemons, tmp_path: Path) -> None:
    before = job_bytes(clean)
    mib = 1024 * 1024
    with mount(clean) as m:
        mnt = m.mountpoint
        # Outside a job cgroup the environment names no job (anyone can set it): the user's.
        r = sh(f"SLURM_JOB_ID=9101 dd if=/dev/zero of={mnt}/j1 bs=1M count=3 conv=fsync "
               f"status=none && env -u SLURM_JOB_ID dd if=/dev/zero of={mnt}/u bs=1M "
               f"count=2 conv=fsync status=none")
        assert r.returncode == 0, r.stderr
        # A process in a Slurm-style cgroup is that job, whatever its environment says.
        cg = Path(f"/sys/fs/cgroup/pids/qosfs-test-{os.getpid()}/job_9202/step_0")
        try:
            cg.mkdir(parents=True)
        except OSError as e:
            pytest.fail(f"cannot create a cgroup to test attribution ({e}); the suite needs "
                        "root and a writable cgroup v1 pids hierarchy")
        try:
            r = sh(f"echo $$ > {cg}/cgroup.procs && SLURM_JOB_ID=9101 exec dd if=/dev/zero "
                   f"of={mnt}/j2 bs=1M count=1 conv=fsync status=none")
            assert r.returncode == 0, r.stderr
        finally:
            for p in (cg, cg.parent, cg.parent.parent):
                p.rmdir()
    # A site that trusts the environment (--trust-environ, unsafe) gets the named job.
    with mount(clean, "mnt", "--trust-environ") as m:
        r = sh(f"SLURM_JOB_ID=9101 dd if=/dev/zero of={m.mountpoint}/j3 bs=1M count=4 "
               f"conv=fsync status=none")
        assert r.returncode == 0, r.stderr
    after = job_bytes(clean)
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert grew.get("9101") == 4 * mib
    assert grew.get("9202") == 1 * mib
    assert grew.get("user:root") == 5 * mib


def test_daemon_killed_mid_write_errors_then_recovers_without_losing_acked_data(
        clean: Daemons, tmp_path: Path) -> None:
    victim = clean.group[1]
    block = STRIPE          # one fsync'd block per stripe: every third lands on the victim
    writer = tmp_path / "writer.py"
    writer.write_text(
        "import os, sys\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\n"
        "n = 0\n"
        "try:\n"
        "    while n < 100000:\n"
        f"        os.write(fd, n.to_bytes(4, 'big') * {block // 4})\n"
        "        os.fsync(fd)\n"
        "        n += 1\n"
        "        print(n, flush=True)\n"
        "except OSError as e:\n"
        "    print('error', e.errno, flush=True)\n"
        "    sys.exit(3)\n")
    with mount(clean, "mnt", "--timeout", "10") as m:
        mnt = m.mountpoint
        p = subprocess.Popen([sys.executable, str(writer), str(mnt / "log.bin")],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        acked = 0
        for line in p.stdout:
            acked = int(line)
            if acked == 30:
                victim.stop(signal.SIGKILL)
                break
        out = p.communicate(timeout=60)[0].split()
        assert p.returncode == 3, out
        assert out[-2:] == ["error", str(errno.EIO)]
        acked = max([acked] + [int(x) for x in out if x.isdigit() and len(x) < 6])
        victim.start()
        deadline = time.monotonic() + 10
        while True:     # the channel reconnects within about a second
            try:
                (mnt / "after.bin").write_bytes(b"z" * (3 * STRIPE))
                break
            except OSError:
                assert time.monotonic() < deadline, "mount unusable after the daemon came back"
                time.sleep(0.2)
        assert (mnt / "after.bin").read_bytes() == b"z" * (3 * STRIPE)
    with mount(clean) as m:
        got = (m.mountpoint / "log.bin").read_bytes()
        assert len(got) >= acked * block
        for n in range(acked):
            assert got[n * block:(n + 1) * block] == n.to_bytes(4, "big") * (block // 4), n


def read_ahead_kb(mnt: Path) -> int:
    dev = os.stat(mnt).st_dev
    return int(Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
               .read_text())


def test_background_mount_and_umount(clean: Daemons) -> None:
    mnt = clean.base / "bg"
    mnt.mkdir(exist_ok=True)
    r = subprocess.run([*QOSFS, "mount", TIER, str(mnt), "--daemons",
                        ",".join(clean.addresses)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        assert os.path.ismount(mnt)         # usable as soon as the command returns
        (mnt / "x").write_text("bg")
        assert (mnt / "x").read_text() == "bg"
        assert read_ahead_kb(mnt) == 4096   # the default --read-ahead, set on the mount
    finally:
        r = subprocess.run([*QOSFS, "umount", str(mnt)], capture_output=True, text=True,
                           timeout=60)
    assert r.returncode == 0, r.stderr
    assert not os.path.ismount(mnt)


def test_read_ahead_is_set_and_sequential_reads_match(clean: Daemons) -> None:
    data = os.urandom(3 * 1024 * 1024 + 12345)
    with mount(clean, "ra", "--read-ahead", "256KiB") as m:
        assert read_ahead_kb(m.mountpoint) == 256
        (m.mountpoint / "seq").write_bytes(data)
    with mount(clean, "ra2", "--read-ahead", "8MiB") as m:
        assert read_ahead_kb(m.mountpoint) == 8192
        with open(m.mountpoint / "seq", "rb") as f:      # small reads, far read ahead
            got = b"".join(iter(lambda: f.read(4096), b""))
    assert got == data


@pytest.mark.parametrize("args,code,says", [
    (["--read-ahead", "100"], 2, "--read-ahead must be 0"),
    (["--stripe-size", "1000"], 2, "multiple of 4 KiB"),
    (["--stripe-size", "lots"], 2, "--stripe-size"),
    (["--daemons", "nohostport"], 2, "bad address 'nohostport'"),
    (["--timeout", "-3"], 2, "--timeout must be a positive"),
    (["--owner", "qosuser"], 2, "--owner was removed"),
    (["--daemons", "127.0.0.1:1"], 1, "cannot be used"),
])
def test_bad_mount_input_is_refused_and_mounts_nothing(clean: Daemons, args: list[str],
                                                       code: int, says: str) -> None:
    mnt = clean.base / "bad"
    mnt.mkdir(exist_ok=True)
    argv = [*QOSFS, "mount", TIER, str(mnt), "--daemons", ",".join(clean.addresses), *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == code, r.stderr
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not os.path.ismount(mnt)


def test_unknown_tier_missing_mountpoint_and_umount_of_nothing(clean: Daemons) -> None:
    mnt = clean.base / "bad2"
    mnt.mkdir(exist_ok=True)
    r = subprocess.run([*QOSFS, "mount", "nosuchtier", str(mnt), "--daemons",
                        ",".join(clean.addresses)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "serves tier 'nosuchtier'" in r.stderr, r.stderr
    r = subprocess.run([*QOSFS, "mount", TIER, str(mnt / "absent"), "--daemons",
                        ",".join(clean.addresses)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a directory" in r.stderr, r.stderr
    r = subprocess.run([*QOSFS, "umount", str(mnt)], capture_output=True, text=True)
    assert r.returncode == 2 and "not mounted" in r.stderr, r.stderr
    assert not os.path.ismount(mnt)


def test_daemons_sharing_one_store_are_one_namespace(tmp_path: Path) -> None:
    _require_fuse()
    d = Daemons(tmp_path, 2, shared=True)
    try:
        data = os.urandom(5 * STRIPE + 7)
        with mount(d, "mnt", "--log-level", "INFO") as m:
            (m.mountpoint / "f").write_bytes(data)
            os.rename(m.mountpoint / "f", m.mountpoint / "g")
        assert "stores [[0, 1]]" in m.log.read_text()
        assert (d.stores[0] / "g").read_bytes() == data     # one file, both daemons wrote it
        assert not (d.stores[0] / "f").exists()
        tags = job_bytes(d)
        assert tags.get("user:root", 0) >= len(data)
        with mount(d) as m:
            os.unlink(m.mountpoint / "g")
        assert list(d.stores[0].iterdir()) == []
    finally:
        d.stop()
