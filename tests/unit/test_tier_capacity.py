"""A tier's bandwidth in the scheduler, and the emulated device, on a synthetic clock.

The device serves what it is given in arrival order; with the tier's bandwidth the
scheduler hands it no more than that, so reservations and weights decide who gets it.
"""

from __future__ import annotations

import heapq
import math

import pytest

from tokenbucket_daemon.core import Kind, Policy, PolicyTable, Request, Scheduler, Selector, Tag
from tokenbucket_daemon.core.device import DeviceClock
from tokenbucket_daemon.core.scheduler import SchedulerConfig
from tokenbucket_daemon.errors import InvalidArgument

KiB, MiB = 1024, 1 << 20
MB = 1e6
A, B = Tag("A"), Tag("B")


def job(name: str, **kw: float) -> Policy:
    return Policy(Selector(Kind.JOB, name), **kw)  # type: ignore[arg-type]


def capped(bps: float, *policies: Policy, tier: str = "t", **cfg: float) -> Scheduler:
    s = Scheduler(SchedulerConfig(**cfg), PolicyTable(list(policies)))  # type: ignore[arg-type]
    s.set_tier_bandwidth(tier, bps, 0.0)
    return s


def req(tag: Tag, size: int, tier: str = "t") -> Request:
    return Request(tag, tier, "write", size)


def run(s: Scheduler, feed: dict[Tag, int], device_bps: float, until: float,
        tier: str = "t", backlog: int = 8) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """Keep ``backlog`` requests of each tag in ``feed`` (of that size) queued or in
    flight, in front of an emulated device of ``device_bps``, polling at every
    completion and wake-up. Returns bytes completed per job by ``until`` and every
    dispatch (time, cost)."""
    dev = DeviceClock(device_bps)
    now, seq = 0.0, 0
    done: list[tuple[float, int, Request]] = []
    served = {t.job: 0.0 for t in feed}
    sent: list[tuple[float, float]] = []
    for tag, size in feed.items():
        for _ in range(backlog):
            s.submit(req(tag, size, tier), now)
    while now < until:
        d = s.poll(now)
        for r in d.dispatch:
            sent.append((now, r.cost))
            seq += 1
            heapq.heappush(done, (dev.admit(r.size, now), seq, r))
        now = min(done[0][0] if done else math.inf,
                  d.wake_at if d.wake_at is not None else math.inf)
        assert now < math.inf, "nothing in flight and nothing to wake for"
        while done and done[0][0] <= now:
            _, _, r = heapq.heappop(done)
            s.complete(r, now)
            if now <= until:
                served[r.tag.job] += r.size
            s.submit(req(r.tag, feed[r.tag], tier), now)
    return served, sent


def most_in_any_window(sent: list[tuple[float, float]], window: float) -> float:
    """The most bytes dispatched in any ``window`` seconds (two pointers)."""
    most = total = 0.0
    lo = 0
    for t, cost in sent:
        total += cost
        while sent[lo][0] < t - window:
            total -= sent[lo][1]
            lo += 1
        most = max(most, total)
    return most


def test_a_reservation_is_met_and_the_neighbour_gets_all_the_rest():
    # The device is as fast as the tier's bandwidth. Its queue holds about a bucket's
    # depth (1 MiB here), so the neighbour keeps enough requests in flight to use it all.
    cap, res, secs = 100 * MB, 30 * MB, 5.0
    s = capped(cap, job("A", reservation_bps=res, weight=1), job("B", weight=10),
               max_in_flight=64, tier_burst_seconds=0.01)
    served, sent = run(s, {A: MiB, B: 64 * KiB}, device_bps=cap, until=secs, backlog=32)
    assert served["A"] >= 0.98 * res * secs
    assert served["A"] <= res * secs + 4 * MiB               # a floor, not much more
    assert served["B"] >= 0.97 * (cap - res) * secs           # the spare is not wasted
    assert served["A"] + served["B"] <= cap * secs + MiB


def test_small_requests_cannot_starve_large_ones_of_the_tiers_tokens():
    # 4 KiB requests always fit the tokens there are; 1 MiB ones need them to gather.
    # Only the tier's best class may take them, so the two share by weight (in bytes).
    cap, secs = 10 * MB, 5.0
    s = capped(cap, job("A"), job("B"), max_in_flight=256)
    served, _ = run(s, {A: MiB, B: 4 * KiB}, device_bps=10 * cap, until=secs, backlog=128)
    assert served["A"] == pytest.approx(cap * secs / 2, rel=0.03)
    assert served["B"] == pytest.approx(cap * secs / 2, rel=0.03)


def test_a_reservation_above_the_weighted_share_is_a_floor_of_the_tier():
    cap, res, secs = 100 * MB, 60 * MB, 5.0
    s = capped(cap, job("A", reservation_bps=res), job("B"))
    served, _ = run(s, {A: 256 * KiB, B: 256 * KiB}, device_bps=4 * cap, until=secs)
    assert served["A"] == pytest.approx(res * secs, rel=0.02)
    assert served["B"] == pytest.approx((cap - res) * secs, rel=0.03)


def test_without_reservations_the_tier_is_shared_by_weight():
    cap, secs = 100 * MB, 5.0
    s = capped(cap, job("A", weight=1), job("B", weight=3))
    served, _ = run(s, {A: 64 * KiB, B: 64 * KiB}, device_bps=10 * cap, until=secs)
    total = served["A"] + served["B"]
    assert served["A"] / total == pytest.approx(0.25, abs=0.01)
    assert total == pytest.approx(cap * secs, rel=0.02)


def test_no_window_gets_more_than_the_bandwidth_and_the_burst():
    # A device ten times faster than the tier's bandwidth would take anything: what
    # reaches it is the scheduler's doing alone.
    cap = 50 * MB
    s = capped(cap, job("A", reservation_bps=10 * MB), job("B", weight=2))
    _, sent = run(s, {A: MiB, B: 64 * KiB, Tag("C"): 4 * KiB}, device_bps=10 * cap,
                  until=4.0)
    depth = max(s.config.default_burst, cap * s.config.tier_burst_seconds)
    for window in (0.01, 0.1, 1.0):
        assert most_in_any_window(sent, window) <= cap * window + depth + 1
    assert sum(c for _, c in sent) >= 0.99 * cap * 4.0


def test_the_wake_time_is_when_the_tier_has_tokens_for_the_head():
    s = capped(1 * MB, default_burst=64 * KiB)      # depth: 64 KiB (above 50 ms of it)
    for _ in range(3):
        assert not s.submit_now(req(A, 64 * KiB), 0.0)   # never past the tier's tokens
    d = s.poll(0.0)
    assert len(d.dispatch) == 1 and d.wake_at == pytest.approx(64 * KiB / MB)
    early = s.poll(d.wake_at / 2)
    assert early.dispatch == [] and early.wake_at == pytest.approx(d.wake_at)
    # (Refilling at two instants rounds: a nanosecond covers the float's last bit.)
    assert len(s.poll(d.wake_at + 1e-9).dispatch) == 1


def test_other_tiers_are_not_held_back_by_a_capped_one():
    s = capped(1 * MB, default_burst=64 * KiB, tier="pfs")
    for _ in range(3):
        s.submit(req(A, 64 * KiB, "pfs"), 0.0)
    assert [r.tier for r in s.poll(0.0).dispatch] == ["pfs"]
    assert s.submit_now(req(B, MiB, "nvme"), 0.0)    # the fast path is still there


def test_lifting_the_cap_restores_the_uncapped_scheduler():
    s = capped(1 * MB, default_burst=64 * KiB)
    for _ in range(4):
        s.submit(req(A, 64 * KiB), 0.0)
    assert len(s.poll(0.0).dispatch) == 1
    s.set_tier_bandwidth("t", None, 0.0)
    assert s.tier_bandwidth() == {}
    assert len(s.poll(0.0).dispatch) == 3
    assert s.submit_now(req(A, 64 * KiB), 0.0)


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, 2e12, True, "100MB/s"])
def test_a_bad_tier_bandwidth_is_one_line_and_changes_nothing(bad):
    s = Scheduler()
    with pytest.raises(InvalidArgument) as e:
        s.set_tier_bandwidth("pfs", bad, 0.0)
    assert "bandwidth of tier pfs must be a rate above 0" in str(e.value)
    assert "\n" not in str(e.value) and s.tier_bandwidth() == {}


def test_the_emulated_device_serves_in_arrival_order_at_its_rate():
    dev = DeviceClock(100 * MB)
    assert dev.admit(MiB, 0.0) == pytest.approx(MiB / (100 * MB))
    # A second request queues behind the first; one after an idle gap starts at once.
    assert dev.admit(MiB, 0.0) == pytest.approx(2 * MiB / (100 * MB))
    assert dev.backlog(0.01) == pytest.approx(2 * MiB / (100 * MB) - 0.01)
    assert dev.admit(1_000_000, 5.0) == pytest.approx(5.01)
    assert dev.backlog(6.0) == 0.0 and dev.bytes == 2 * MiB + 1_000_000
    with pytest.raises(InvalidArgument, match="must be a rate above 0"):
        DeviceClock(0)
