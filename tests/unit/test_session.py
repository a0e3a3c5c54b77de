"""The data-session rule (tokenbucket_daemon/core/session.py) on synthetic time: a seal
is good once, for its own call, within its session's life; nothing else gets through."""

from __future__ import annotations

import os

import pytest

from tokenbucket_daemon.core.session import RANDOM_BYTES, Refusal, Session, SessionTable, mac_of
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.seal import AgentSession, parse_seal, sealed_bytes

SEC = 10**9


def table(**kw: int) -> SessionTable:
    return SessionTable(lifetime_ns=kw.pop("life", 100 * SEC), **kw)


def sealed(s: Session, counter: int, body: bytes = b"call") -> tuple[bytes, int, bytes, bytes]:
    return s.session_id, counter, mac_of(s.key, body), body


def test_a_fresh_seal_passes_once_and_names_its_agent() -> None:
    t = table()
    s = t.open("agent:node1", 0, os.urandom(RANDOM_BYTES))
    got = t.check(*sealed(s, 1), now_ns=1)
    assert isinstance(got, Session) and got.agent == "agent:node1"
    again = t.check(*sealed(s, 1), now_ns=2)
    assert again == Refusal("counter 1 replayed")


def test_late_counters_within_the_window_pass_once_older_ones_never() -> None:
    t = table(window=8)
    s = t.open("a", 0, os.urandom(RANDOM_BYTES))
    for c in (5, 3, 4, 1):
        assert isinstance(t.check(*sealed(s, c), now_ns=1), Session), c
    assert t.check(*sealed(s, 3), now_ns=1) == Refusal("counter 3 replayed")
    assert isinstance(t.check(*sealed(s, 20), now_ns=1), Session)
    # 20 - 12 = 8: at the window's edge, too old even though never used.
    assert t.check(*sealed(s, 12), now_ns=1) == Refusal("counter 12 too old")
    assert isinstance(t.check(*sealed(s, 13), now_ns=1), Session)
    assert t.check(*sealed(s, 13), now_ns=1) == Refusal("counter 13 replayed")


def test_a_bad_mac_does_not_burn_the_real_calls_counter() -> None:
    t = table()
    s = t.open("a", 0, os.urandom(RANDOM_BYTES))
    forged = (s.session_id, 7, mac_of(os.urandom(32), b"call"), b"call")
    assert t.check(*forged, now_ns=1) == Refusal("the seal does not match the call")
    assert isinstance(t.check(*sealed(s, 7), now_ns=1), Session)


def test_a_seal_covers_its_body_and_its_session_only() -> None:
    t = table()
    a = t.open("a", 0, os.urandom(RANDOM_BYTES))
    b = t.open("b", 0, os.urandom(RANDOM_BYTES))
    sid, c, mac, _ = sealed(a, 1, b"stat x")
    assert t.check(sid, c, mac, b"stat y", 1) == Refusal("the seal does not match the call")
    assert t.check(b.session_id, c, mac, b"stat x", 1) == Refusal(
        "the seal does not match the call")
    assert t.check(os.urandom(16), c, mac, b"stat x", 1) == Refusal("unknown session",
                                                                     "unknown")


def test_sessions_end_and_say_so() -> None:
    t = table(life=10 * SEC)
    s = t.open("a", 0, os.urandom(RANDOM_BYTES))
    assert isinstance(t.check(*sealed(s, 1), now_ns=10 * SEC - 1), Session)
    assert t.check(*sealed(s, 2), now_ns=10 * SEC) == Refusal("session expired", "expired")
    assert len(t) == 0


@pytest.mark.parametrize("counter", [0, -1, 1 << 63])
def test_counters_out_of_range_are_refused(counter: int) -> None:
    t = table()
    s = t.open("a", 0, os.urandom(RANDOM_BYTES))
    assert t.check(*sealed(s, counter), now_ns=1) == Refusal(f"counter {counter} out of range")


def test_the_table_is_bounded_per_agent_and_in_all_oldest_first() -> None:
    t = table(per_agent=2, max_sessions=3)
    a1, a2, a3 = (t.open("a", i, os.urandom(RANDOM_BYTES)) for i in range(3))
    assert t.check(*sealed(a1, 1), now_ns=5) == Refusal("unknown session", "unknown")
    assert isinstance(t.check(*sealed(a3, 1), now_ns=5), Session)
    b1 = t.open("b", 3, os.urandom(RANDOM_BYTES))
    c1 = t.open("c", 4, os.urandom(RANDOM_BYTES))
    assert len(t) == 3
    assert t.check(*sealed(a2, 1), now_ns=5) == Refusal("unknown session", "unknown")
    for s in (a3, b1, c1):
        assert isinstance(t.check(*sealed(s, 2), now_ns=5), Session)
    with pytest.raises(ValueError, match="random bytes"):
        t.open("d", 5, b"short")


def test_agent_and_daemon_seal_the_same_bytes_payload_excluded() -> None:
    t = table()
    s = t.open("a", 0, os.urandom(RANDOM_BYTES))
    agent = AgentSession(s.session_id, s.key, s.expires_ns, 5000, 100 * SEC)
    chunk = pb.WriteChunk(tier="pfs", path="job/out", offset=4096, data=b"x" * 70000)
    chunk.tag.job_id = "42"
    chunk.tag.caller.uid = 1000
    (key, value), = agent.seal("/qos.v1.DataPlane/Write", chunk)
    sid, counter, mac = parse_seal(value)
    body = sealed_bytes("/qos.v1.DataPlane/Write", counter, chunk)
    assert key == "qos-seal" and b"x" * 100 not in body
    assert isinstance(t.check(sid, counter, mac, body, 1), Session)
    other = pb.WriteChunk()
    other.CopyFrom(chunk)
    other.data = b"y" * 70000          # the payload is not covered: same seal
    assert sealed_bytes("/qos.v1.DataPlane/Write", counter, other) == body
    other.tag.caller.uid = 0           # who asks is
    assert sealed_bytes("/qos.v1.DataPlane/Write", counter, other) != body
    assert sealed_bytes("/qos.v1.DataPlane/Read", counter, chunk) != body
    assert sealed_bytes("/qos.v1.DataPlane/Write", counter + 1, chunk) != body


@pytest.mark.parametrize("text", ["", "a.b.c", "00.1.00", "x" * 500,
                                  f"{'0' * 32}.١.{'0' * 32}", f"{'0' * 32}.1.{'0' * 30}"])
def test_malformed_seals_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_seal(text)


def test_the_agent_renews_before_the_end() -> None:
    s = AgentSession(b"i" * 16, b"k" * 32, ends_mono_ns=100 * SEC, data_port=1,
                     lifetime_ns=100 * SEC)
    assert s.fresh(74 * SEC) and not s.fresh(76 * SEC)
    counters = {parse_seal(s.seal("/m", pb.StatRequest())[0][1])[1] for _ in range(100)}
    assert counters == set(range(1, 101))


def test_a_huge_counter_jump_costs_nothing_and_forgets_the_window() -> None:
    """Shifting the seen-bitmap by the jump before masking it built an integer of that
    many bits: 2^40 would be 128 GiB. Past the window, it is reset instead."""
    import time as _time

    t = table(window=64)
    s = t.open("a", 0, os.urandom(RANDOM_BYTES))
    assert isinstance(t.check(*sealed(s, 5), now_ns=1), Session)
    t0 = _time.perf_counter()
    assert isinstance(t.check(*sealed(s, 1 << 40), now_ns=1), Session)
    assert _time.perf_counter() - t0 < 1.0
    assert s.seen == 1 and s.highest == 1 << 40
    assert t.check(*sealed(s, 1 << 40), now_ns=1) == Refusal(f"counter {1 << 40} replayed")
    assert t.check(*sealed(s, 5), now_ns=1) == Refusal("counter 5 too old")


def test_the_agent_times_its_session_on_its_own_clock() -> None:
    """A reply says how long the session lasts; the agent's wall clock does not enter
    (an agent an hour ahead of the daemon once found every session stale at once)."""
    r = pb.OpenSessionReply(session_id=b"i" * 16, key=b"k" * 32, expires_ns=1,
                            data_port=9, window=4096, lifetime_seconds=100)
    s = AgentSession.from_reply(r, now_mono_ns=5 * SEC)
    assert s.fresh(5 * SEC) and s.fresh(79 * SEC) and not s.fresh(81 * SEC)
    for bad in (pb.OpenSessionReply(session_id=b"i" * 16, key=b"k" * 32, data_port=9),
                pb.OpenSessionReply(session_id=b"i", key=b"k" * 32, data_port=9,
                                    lifetime_seconds=100)):
        with pytest.raises(ValueError, match="malformed"):
            AgentSession.from_reply(bad)
