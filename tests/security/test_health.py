"""Health says NOT_SERVING when the daemon cannot serve data: every I/O thread stuck in
one call (a hung tier), or file descriptors short. Once it said SERVING while every
other job and tier timed out."""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.security.conftest import wait_until
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.tls import from_env, secure_channel

from .conftest import ADMIN_MD, open_fds, status_of

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_wedged_io_threads_turn_health_not_serving_and_back(daemon_factory):
    d = daemon_factory(limits={"io_stall_seconds": 0.5})
    held = d.base / "disk" / "held"
    held.write_bytes(b"data")
    # A write lease makes every other open of the file wait until it is given up: four
    # reads then hold the daemon's four I/O threads, as a hung tier would.
    old = signal.signal(signal.SIGIO, signal.SIG_IGN)     # the lease break notice
    fd = os.open(held, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        reads = [Reader(d) for _ in range(4)]
        wait_until(lambda: d.serving() == NOT_SERVING)
        assert d.serving("qos.v1.DataPlane") == NOT_SERVING
        assert d.serving("qos.v1.AdminService") == SERVING
        # Calls that need an I/O thread are refused at once, not queued behind the stuck.
        code, details, _ = status_of(d.data.Stat, pb.StatRequest(tier="disk", path=""),
                                     timeout=20)
        assert code == grpc.StatusCode.UNAVAILABLE and "stuck" in details
        assert d.admin.GetStats(pb.StatsRequest(), metadata=ADMIN_MD, timeout=20).tiers
    finally:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        os.close(fd)
        signal.signal(signal.SIGIO, old)
    for r in reads:
        r.join(timeout=60)
    assert [r.got for r in reads] == [b"data"] * 4
    wait_until(lambda: d.serving() == SERVING)
    d.data.Stat(pb.StatRequest(tier="disk", path="held"), timeout=20)


class Reader(threading.Thread):
    """A Read of the leased file, in a thread of its own."""

    def __init__(self, d) -> None:
        super().__init__(daemon=True)
        self.d, self.got = d, b""
        self.start()

    def run(self) -> None:
        self.got = b"".join(m.data for m in self.d.data.Read(
            pb.ReadRequest(tier="disk", path="held"), timeout=60))


def test_descriptors_short_turn_health_not_serving_and_refuse_data_calls(daemon_factory):
    d = daemon_factory(limits={"fd_reserve": 64})
    d.data.Stat(pb.StatRequest(tier="ram", path=""), timeout=20)
    used = len(open_fds(d.pid))
    # 100 descriptors above what it uses now; then 60 connections leave it 40 < 64.
    resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (used + 100, used + 100))
    tls = from_env()
    chans = [secure_channel(d.address, tls, [("grpc.use_local_subchannel_pool", 1)])
             for _ in range(60)]
    try:
        for c in chans:
            health_pb2_grpc.HealthStub(c).Check(health_pb2.HealthCheckRequest(), timeout=20)
        wait_until(lambda: d.serving() == NOT_SERVING)
        code, _, err = status_of(d.data.Stat, pb.StatRequest(tier="ram", path=""),
                                 timeout=20)
        assert (code, err) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "EMFILE")
        assert d.admin.GetStats(pb.StatsRequest(), metadata=ADMIN_MD, timeout=20).tiers
    finally:
        for c in chans:
            c.close()
    wait_until(lambda: d.serving() == SERVING)
    d.data.Stat(pb.StatRequest(tier="ram", path=""), timeout=20)
