"""Streams: 11,000 idle write streams once held 19,549 of 20,000 descriptors, with no
timeout, and a stream of empty chunks cost 5 s of CPU in 5 s while charged nothing."""

from __future__ import annotations

import queue
import threading
import urllib.request

import grpc
from grpc_health.v1 import health_pb2

from tests.security.conftest import wait_until
from tokenbucket_daemon.local import free_ports
from tokenbucket_daemon.proto import qos_pb2 as pb

from .conftest import ADMIN_MD, open_fds, status_of

MiB = 1 << 20


class Feed:
    """A Write stream whose chunks the test hands over one by one."""

    def __init__(self, daemon, path: str, job: str = "s", **first: object) -> None:
        self.q: queue.Queue[pb.WriteChunk | None] = queue.Queue()
        self.q.put(pb.WriteChunk(tag=pb.JobTag(job_id=job), tier="disk", path=path,
                                 data=b"x", **first))
        self.call = daemon.data.Write.future(iter(self.q.get, None), timeout=120)

    def end(self) -> None:
        self.q.put(None)


def test_streams_per_client_are_capped_and_admin_calls_still_go(daemon_factory):
    (port,) = free_ports(1)
    d = daemon_factory(limits={"max_streams_per_client": 3}, metrics_port=port)
    feeds = [Feed(d, f"open{i}") for i in range(3)]
    wait_until(lambda: all((d.base / "disk" / f"open{i}").exists() for i in range(3)))
    code, _, err = status_of(d.data.Write, iter([pb.WriteChunk(tier="disk", path="fourth",
                                                               data=b"y")]), timeout=20)
    assert (code, err) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "EMFILE")
    code, _, err = status_of(lambda: list(d.data.Read(pb.ReadRequest(tier="disk",
                                                                     path="open0"),
                                                      timeout=20)))
    assert (code, err) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "EMFILE")
    assert not (d.base / "disk" / "fourth").exists()
    # Metadata calls hold no stream, and the admin is never locked out.
    d.data.Stat(pb.StatRequest(tier="disk", path="open0"), timeout=20)
    assert d.admin.GetStats(pb.StatsRequest(), metadata=ADMIN_MD, timeout=20).tiers
    assert d.serving() == health_pb2.HealthCheckResponse.SERVING
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    lines = metrics.decode().splitlines()
    assert "qos_data_streams 3.0" in lines and "qos_serving 1.0" in lines
    assert 'qos_refused_total{bound="streams_or_fds"} 2.0' in lines
    for f in feeds:
        f.end()
    assert [f.call.result().bytes_written for f in feeds] == [1, 1, 1]
    d.data.Write(iter([pb.WriteChunk(tier="disk", path="fourth", data=b"y")]), timeout=20)


def test_an_idle_write_stream_is_ended_and_its_file_closed(daemon_factory):
    d = daemon_factory(limits={"stream_idle_seconds": 1.0})
    feed = Feed(d, "idle")
    err = feed.call.exception(timeout=60)
    assert isinstance(err, grpc.RpcError)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert dict(err.trailing_metadata() or ()).get("qos-errno") == "ETIMEDOUT"
    assert "sent nothing" in (err.details() or "")
    wait_until(lambda: not any(p.endswith("/disk/idle") for p in open_fds(d.pid)))
    feed.end()
    # A stream that keeps sending is not cut, however long it lasts in all.
    busy = Feed(d, "busy")
    for _ in range(6):
        threading.Event().wait(0.4)
        busy.q.put(pb.WriteChunk(data=b"z"))
    busy.end()
    assert busy.call.result(timeout=60).bytes_written == 7


def test_a_reader_that_takes_nothing_is_cut_off_and_its_file_closed(daemon_factory):
    d = daemon_factory(limits={"stream_idle_seconds": 1.0})
    with open(d.base / "disk" / "big", "wb") as f:
        f.truncate(64 * MiB)
    call = d.data.Read(pb.ReadRequest(tier="disk", path="big", chunk_size=MiB), timeout=120)
    next(call)              # the stream is open; the test takes nothing more
    wait_until(lambda: not any(p.endswith("/disk/big") for p in open_fds(d.pid)))
    call.cancel()


def test_empty_chunks_are_charged(daemon):
    daemon.admin.SetPolicy(pb.SetPolicyRequest(policy=pb.Policy(
        selector=pb.Selector(kind=pb.Selector.JOB, value="empty"), limit_bps=1000,
        burst_bytes=64 * 1024)), metadata=ADMIN_MD, timeout=20)
    chunks = [pb.WriteChunk(tag=pb.JobTag(job_id="empty"), tier="ram", path="e")]
    chunks += [pb.WriteChunk() for _ in range(7)]
    assert daemon.data.Write(iter(chunks), timeout=60).bytes_written == 0
    (cls,) = daemon.admin.GetStats(pb.StatsRequest(job_id="empty"), metadata=ADMIN_MD,
                                   timeout=20).classes
    # Eight messages at 4 KiB each came out of a 64 KiB bucket that refills 1000 B/s.
    assert cls.requests == 8
    assert cls.tokens < 64 * 1024 - 8 * 4096 + 16 * 1000
