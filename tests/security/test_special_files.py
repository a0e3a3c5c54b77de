"""A FIFO in a tier once held every I/O thread: four reads waited for a writer that never
came, and every other job and tier timed out while health said SERVING. Only regular
files and directories are served now; the rest is refused at once."""

from __future__ import annotations

import os
import socket
import stat
import threading

import grpc
from grpc_health.v1 import health_pb2

from tokenbucket_daemon.proto import qos_pb2 as pb

from .conftest import status_of

REFUSED = (grpc.StatusCode.FAILED_PRECONDITION, "EOPNOTSUPP")


def test_fifo_reads_are_refused_and_other_tiers_keep_being_served(daemon):
    os.mkfifo(daemon.base / "disk" / "pipe")
    os.mkfifo(daemon.base / "ram" / "pipe")
    results: list[tuple[grpc.StatusCode, str]] = []

    def read(tier: str) -> None:
        code, _, err = status_of(lambda: list(daemon.data.Read(
            pb.ReadRequest(tier=tier, path="pipe"), timeout=20)))
        results.append((code, err))
    # More readers than the daemon has I/O threads (4), at once.
    threads = [threading.Thread(target=read, args=(t,)) for t in ("disk", "ram") * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [REFUSED] * 8
    # A writer and the other calls that open a file are refused too, never blocked.
    chunk = pb.WriteChunk(tier="disk", path="pipe", data=b"x")
    assert status_of(daemon.data.Write, iter([chunk]), timeout=20)[::2] == REFUSED
    assert status_of(daemon.data.Create, pb.CreateRequest(tier="disk", path="pipe"),
                     timeout=20)[::2] == REFUSED
    assert status_of(daemon.data.Truncate, pb.TruncateRequest(tier="disk", path="pipe"),
                     timeout=20)[::2] == REFUSED
    assert status_of(daemon.data.Fsync, pb.FsyncRequest(tier="disk", path="pipe"),
                     timeout=20)[::2] == REFUSED
    # The FIFO is still listed and stat-able: it is served as an entry, not opened.
    st = daemon.data.Stat(pb.StatRequest(tier="disk", path="pipe"), timeout=20)
    assert stat.S_ISFIFO(st.mode)
    daemon.data.Write(iter([pb.WriteChunk(tier="ram", path="ok", data=b"fine")]), timeout=20)
    assert daemon.data.Stat(pb.StatRequest(tier="ram", path="ok"), timeout=20).size == 4
    assert daemon.serving() == health_pb2.HealthCheckResponse.SERVING


def test_sockets_and_devices_are_refused(daemon):
    disk = daemon.base / "disk"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(disk / "sock"))
    os.mknod(disk / "zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))    # like /dev/zero
    try:
        for name in ("sock", "zero"):
            assert status_of(lambda n=name: list(daemon.data.Read(
                pb.ReadRequest(tier="disk", path=n), timeout=20)))[::2] == REFUSED
            assert status_of(daemon.data.Write, iter([pb.WriteChunk(
                tier="disk", path=name, data=b"x")]), timeout=20)[::2] == REFUSED
    finally:
        sock.close()
