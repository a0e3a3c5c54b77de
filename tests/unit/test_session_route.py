"""The agent's session decisions (tokenbucket_daemon/seal.py SessionRoute) on synthetic
time: when it opens a session, where data calls go, when a failed call is made again."""

from __future__ import annotations

import pytest

from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.seal import SessionRoute

SEC = 10**9
EXPIRED = (("qos-session", "expired"),)


def reply(port: int = 6000, life: int = 100, sid: bytes = b"i" * 16) -> pb.OpenSessionReply:
    return pb.OpenSessionReply(session_id=sid, key=b"k" * 32, data_port=port,
                               lifetime_seconds=life)


def opened(route: SessionRoute, now: int = 0, port: int = 6000) -> SessionRoute:
    route.opened(reply(port), now)
    return route


def test_without_tls_nothing_is_opened_and_data_go_over_tls() -> None:
    route = SessionRoute("node1:50051", wanted=False)
    assert not route.must_open(0) and route.sealing is None


def test_the_first_call_opens_and_the_session_lasts_three_quarters_of_its_life() -> None:
    route = SessionRoute("node1:50051", wanted=True)
    assert route.must_open(0) and route.sealing is None
    assert route.opened(reply(port=6000, life=100), 10 * SEC) == "node1:6000"
    s = route.sealing
    assert s is not None and s.data_port == 6000
    assert not route.must_open(84 * SEC) and route.must_open(86 * SEC)
    # Stale but not yet renewed: still the one to seal with (a call opens one at most).
    assert route.sealing is s


def test_a_renewal_on_the_same_port_keeps_the_channel_a_moved_port_does_not() -> None:
    route = opened(SessionRoute("10.0.0.7:50051", wanted=True), port=6000)
    assert route.opened(reply(port=6000, sid=b"j" * 16), 80 * SEC) is None
    assert route.sealing is not None and route.sealing.session_id == b"j" * 16
    assert route.opened(reply(port=6001), 160 * SEC) == "10.0.0.7:6001"


def test_a_daemon_without_a_session_port_is_spoken_to_over_tls_for_good() -> None:
    route = opened(SessionRoute("node1:50051", wanted=True))
    assert route.open_failed("FAILED_PRECONDITION")
    assert route.sealing is None and not route.must_open(200 * SEC)


@pytest.mark.parametrize("code", ["UNAVAILABLE", "PERMISSION_DENIED", "DEADLINE_EXCEEDED"])
def test_other_open_failures_are_the_agents_to_report(code: str) -> None:
    route = SessionRoute("node1:50051", wanted=True)
    assert not route.open_failed(code)
    assert route.must_open(0)


def test_a_malformed_reply_changes_nothing() -> None:
    route = opened(SessionRoute("node1:50051", wanted=True))
    before = route.sealing
    with pytest.raises(ValueError, match="malformed"):
        route.opened(pb.OpenSessionReply(session_id=b"i", key=b"k" * 32, data_port=1,
                                         lifetime_seconds=100), 1)
    assert route.sealing is before and not route.must_open(1)


@pytest.mark.parametrize("code,trailing", [("UNAVAILABLE", ()),
                                           ("UNAUTHENTICATED", EXPIRED),
                                           ("UNAUTHENTICATED", (("qos-session", "unknown"),))])
def test_a_restart_or_a_forgotten_session_is_retried_once_with_a_new_session(
        code: str, trailing: tuple[tuple[str, str], ...]) -> None:
    route = opened(SessionRoute("node1:50051", wanted=True), port=6000)
    s = route.sealing
    assert route.retry(s, code, trailing, retried=False)
    assert route.sealing is None and route.must_open(1)
    # The retry's new session: on the same port the channel is kept.
    assert route.opened(reply(port=6000, sid=b"j" * 16), 2) is None
    assert not route.retry(route.sealing, code, trailing, retried=True)
    assert route.sealing is not None and route.sealing.session_id == b"j" * 16


@pytest.mark.parametrize("code,trailing", [("UNAUTHENTICATED", ()),
                                           ("UNAUTHENTICATED", (("qos-errno", "EACCES"),)),
                                           ("NOT_FOUND", EXPIRED),
                                           ("RESOURCE_EXHAUSTED", ())])
def test_other_failures_are_not_retried(code: str, trailing: tuple[tuple[str, str], ...]) -> None:
    route = opened(SessionRoute("node1:50051", wanted=True))
    s = route.sealing
    assert not route.retry(s, code, trailing, retried=False)
    assert route.sealing is s


def test_calls_over_tls_are_not_retried() -> None:
    route = SessionRoute("node1:50051", wanted=False)
    assert not route.retry(None, "UNAVAILABLE", (), retried=False)


def test_a_late_failure_of_an_old_session_leaves_a_newer_one_alone() -> None:
    route = opened(SessionRoute("node1:50051", wanted=True))
    old = route.sealing
    route.opened(reply(sid=b"j" * 16), 80 * SEC)     # another call renewed meanwhile
    new = route.sealing
    assert route.retry(old, "UNAVAILABLE", (), retried=False)
    assert route.sealing is new and not route.must_open(80 * SEC)
