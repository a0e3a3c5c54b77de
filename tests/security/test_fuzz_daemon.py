"""Every DataPlane and AdminService rpc of a live daemon gets malformed and extreme
messages (tests/security/fuzzing.py) for a bounded time: no call may end INTERNAL or
UNKNOWN or go unanswered, and afterwards the daemon must be healthy, with its memory and
descriptors bounded. Derandomized, so a run in CI fails only on a real regression;
benchmarks/security/fuzz.py runs longer and random."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import fuzzing
from .conftest import TOKEN, start

RPCS = fuzzing.rpcs()
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    d = start(tmp_path_factory.mktemp("fuzz"), "fuzz")
    fuzzing.seed(d.base)
    # Warm up, so the bounds compare against a daemon that has served each kind once.
    for rpc in RPCS:
        fuzzing.call(d.chan, rpc, [] if rpc.method.client_streaming else
                     getattr(fuzzing.pb, rpc.method.input_type.name)(), TOKEN)
    before = (fuzzing.rss_kib(d.pid), fuzzing.fd_count(d.pid))
    yield d, before
    d.stop()


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: r.name)
def test_extreme_messages_get_a_callers_status(target, rpc):
    d, _ = target

    @FUZZ
    @given(request=rpc.requests(), token=st.sampled_from([TOKEN, TOKEN, None, "wrong"]))
    def one(request, token):
        code = fuzzing.call(d.chan, rpc, request, token)
        assert code not in fuzzing.FAILED, f"{rpc.name}: {code.name} for {request!r:.300}"
    one()


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: r.name)
def test_unparsable_bytes_are_invalid_argument(target, rpc):
    d, _ = target
    raw = st.binary(min_size=1, max_size=300)

    @settings(FUZZ, max_examples=30)
    @given(payload=st.lists(raw, min_size=1, max_size=3) if rpc.method.client_streaming
           else raw)
    def one(payload):
        code = fuzzing.call(d.chan, rpc, payload, TOKEN)
        assert code not in fuzzing.FAILED, f"{rpc.name}: {code.name} for {payload!r:.300}"
    one()


def test_the_daemon_is_healthy_and_bounded_afterwards(target):
    d, (rss, fds) = target
    assert d.local.proc is not None and d.local.proc.poll() is None
    assert d.serving() == health_pb2.HealthCheckResponse.SERVING
    assert d.serving("qos.v1.DataPlane") == health_pb2.HealthCheckResponse.SERVING
    assert fuzzing.rss_kib(d.pid) < rss + 256 * 1024
    assert fuzzing.fd_count(d.pid) < fds + 64
    # The daemon logged, but boundedly: no line carries a megabyte value.
    assert d.log_bytes() < 1 << 20
    assert all(len(line) < 4096 for line in d.output)
    d.data.Stat(fuzzing.pb.StatRequest(tier="ram", path=""), timeout=10)
    _ = grpc
