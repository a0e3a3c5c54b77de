"""The enforcement core on a synthetic clock: exact dispatch orders and counts."""

from __future__ import annotations

import heapq

import pytest

from tokenbucket_daemon.core import Kind, Policy, PolicyTable, Request, Scheduler, Selector, Tag
from tokenbucket_daemon.core.policy import Scope
from tokenbucket_daemon.core.scheduler import SchedulerConfig
from tokenbucket_daemon.errors import InvalidArgument, NotFound, ResourceExhausted

KiB, MiB = 1024, 1 << 20
A, B = Tag("A", "ana", "phys"), Tag("B", "bob", "chem")


def job(name: str, **kw: float) -> Policy:
    return Policy(Selector(Kind.JOB, name), **kw)  # type: ignore[arg-type]


def sched(*policies: Policy, **cfg: int) -> Scheduler:
    return Scheduler(SchedulerConfig(**cfg), PolicyTable(list(policies)))


def req(tag: Tag, size: int = 64 * KiB, op: str = "write", tier: str = "t") -> Request:
    return Request(tag, tier, op, size)


def simulate(s: Scheduler, feed: dict[Tag, int], device_bps: float, until: float) -> dict:
    """Keep every tag in ``feed`` backlogged with requests of that size; a device
    serves dispatched requests one after another at ``device_bps``. Returns bytes
    served per job by ``until``."""
    now, free_at, seq = 0.0, 0.0, 0
    done: list[tuple[float, int, Request]] = []
    served: dict[str, int] = {t.job: 0 for t in feed}
    for tag, size in feed.items():
        for _ in range(8):
            s.submit(req(tag, size), now)
    while now < until:
        d = s.poll(now)
        for r in d.dispatch:
            free_at = max(free_at, now) + r.size / device_bps
            seq += 1
            heapq.heappush(done, (free_at, seq, r))
        nxt = [t for t in (done[0][0] if done else None, d.wake_at) if t is not None]
        now = min(nxt)
        while done and done[0][0] <= now:
            _, _, r = heapq.heappop(done)
            s.complete(r, now)
            if now <= until:
                served[r.tag.job] += r.size
            s.submit(req(r.tag, feed[r.tag]), now)     # stay backlogged
    return served


def test_weights_one_to_two_share_six_dispatches_two_and_four():
    s = sched(job("A", weight=1), job("B", weight=2), max_in_flight=6)
    for _ in range(6):
        s.submit(req(A), 0.0)
        s.submit(req(B), 0.0)
    order = [r.tag.job for r in s.poll(0.0).dispatch]
    assert order == ["A", "B", "B", "A", "B", "B"]
    assert (order.count("A"), order.count("B")) == (2, 4)


def test_reservation_is_honoured_under_overload():
    device = 100e6
    plain = simulate(sched(job("A", weight=1), job("B", weight=10), max_in_flight=1),
                     {A: 64 * KiB, B: 64 * KiB}, device, 10.0)
    assert plain["A"] < 0.12 * device * 10          # its weight alone gives ~1/11
    res = simulate(sched(job("A", weight=1, reservation_bps=30e6), job("B", weight=10),
                         max_in_flight=1), {A: 64 * KiB, B: 64 * KiB}, device, 10.0)
    assert res["A"] >= 0.99 * 30e6 * 10
    assert res["A"] <= 30e6 * 10 + 2 * device          # the floor, not much more
    assert res["A"] + res["B"] >= 0.99 * device * 10   # and the device stays busy


def test_limit_lets_exactly_depth_plus_rate_through():
    s = sched(job("A", limit_bps=50e6, burst_bytes=MiB), max_in_flight=1000)
    sent, now = 0, 0.0
    while now <= 10.0:
        while s.queued() < 100:
            s.submit(req(A), now)
        d = s.poll(now)
        for r in d.dispatch:
            sent += r.size
            s.complete(r, now)
        assert d.wake_at is not None
        now = d.wake_at if d.dispatch == [] else now
    allowed = MiB + 50e6 * 10.0
    assert allowed - 64 * KiB <= sent <= allowed + 64 * KiB


def test_large_request_behind_small_ones_in_one_class_goes_on_debt():
    s = sched(job("A", limit_bps=1e6, burst_bytes=64 * KiB), max_in_flight=1000)
    for _ in range(20):
        s.submit(req(A, 4 * KiB), 0.0)
    big = s.submit(req(A, MiB), 0.0)
    after = s.submit(req(A, 4 * KiB), 0.0)
    now, when = 0.0, {}
    for _ in range(1000):              # bounded: a starved request fails, not hangs
        if after.rid in when:
            break
        d = s.poll(now)
        for r in d.dispatch:
            when[r.rid] = now
            s.complete(r, now)
        if not d.dispatch:
            assert d.wake_at is not None
            now = d.wake_at
    # 16 small ones use the full 64 KiB bucket, 4 more wait for 16 KiB of tokens;
    # the 1 MiB one needs only a full bucket: 80 KiB of tokens after the start.
    assert when[big.rid] == pytest.approx(20 * 4 * KiB / 1e6)
    # ... and leaves 960 KiB of debt that the next request waits out.
    assert when[after.rid] - when[big.rid] == pytest.approx((MiB - 64 * KiB + 4 * KiB) / 1e6)


def test_large_request_of_another_class_is_not_starved_by_a_stream():
    s = sched(max_in_flight=1)
    for _ in range(100):
        s.submit(req(A, 4 * KiB), 0.0)
    now = 0.0
    for _ in range(50):                   # A streams 50 requests alone
        (r,) = s.poll(now).dispatch
        s.complete(r, now)
        s.submit(req(A, 4 * KiB), now)
        now += 0.001
    big = s.submit(req(B, MiB), now)
    served = []
    for _ in range(3):
        (r,) = s.poll(now).dispatch
        served.append(r)
        s.complete(r, now)
        s.submit(req(A, 4 * KiB), now)
    assert big in served[:2]


def test_rate_change_while_requests_wait_takes_effect_at_once():
    s = sched(job("A", limit_bps=1e6, burst_bytes=64 * KiB), max_in_flight=100)
    for _ in range(10):
        s.submit(req(A), 0.0)
    d = s.poll(0.0)
    assert len(d.dispatch) == 1 and d.wake_at == pytest.approx(64 * KiB / 1e6)
    s.set_policies(PolicyTable([job("A", limit_bps=10e6, burst_bytes=64 * KiB)]), 0.01)
    d = s.poll(0.01)
    # 10,000 tokens were earned at the old rate; the rest comes at the new one.
    assert d.dispatch == [] and d.wake_at == pytest.approx(0.01 + (64 * KiB - 10_000) / 10e6)


def test_at_most_k_in_flight():
    s = sched()
    for _ in range(20):
        s.submit(req(A), 0.0)
    first = s.poll(0.0).dispatch
    assert len(first) == 16 and s.poll(0.0).dispatch == []
    s.complete(first[0], 0.0)
    assert len(s.poll(0.0).dispatch) == 1


def test_release_all_frees_every_queued_request_without_charging_its_bucket():
    s = sched(job("A", limit_bps=1e6, burst_bytes=MiB), max_in_flight=2)
    for _ in range(10):
        s.submit(req(A, MiB), 0.0)
    s.submit(req(B), 0.0)
    first = s.poll(0.0).dispatch           # A's bucket holds one request, B is unlimited
    assert sorted(r.tag.job for r in first) == ["A", "B"]
    freed = s.release_all(0.0)
    assert len(freed) == 9 and s.queued() == 0 and s.in_flight == 11
    (a,) = [st for st in s.stats(0.0) if st.job == "A"]
    assert a.tokens == 0.0                  # only the first request was charged
    for r in first + freed:
        s.complete(r, 0.0)
    assert s.in_flight == 0
    # Back to normal: after one second A has earned exactly one more request.
    s.submit(req(A, MiB), 0.5)
    assert s.poll(0.5).dispatch == []
    assert len(s.poll(MiB / 1e6).dispatch) == 1


def _replay(fast: bool, seed: int, slack: float) -> list[tuple[float, int, str]]:
    """A random mix of arrivals (three jobs: limited, reserved, unlimited; several
    sizes) on a 300 MB/s device with 2 slots. ``fast`` drives the scheduler as the gate
    does (submit_now, and poll after a completion only when it says a slot was lacked);
    else submit and poll after every event. Returns (time, request id, job) per
    dispatch."""
    import random
    rng = random.Random(seed)
    s = Scheduler(SchedulerConfig(max_in_flight=2, timer_slack=slack), PolicyTable([
        job("L", limit_bps=40e6, burst_bytes=MiB), job("R", reservation_bps=60e6)]))
    tags = [Tag("L"), Tag("R"), Tag("U")]
    arrivals, t = [], 0.0
    for _ in range(400):
        t += rng.expovariate(1500.0)
        arrivals.append((t, rng.choice(tags), rng.choice((4 * KiB, 64 * KiB, MiB))))
    out: list[tuple[float, int, str]] = []
    done: list[tuple[float, int, Request]] = []
    wake: float | None = None
    free_at, i = 0.0, 0

    def started(rs: list[Request], now: float) -> None:
        nonlocal free_at
        for r in rs:
            free_at = max(free_at, now) + r.size / 300e6
            heapq.heappush(done, (free_at, r.rid, r))
            # Rounded: buckets refilled at other moments differ in the last bit.
            out.append((round(now, 9), r.rid, r.tag.job))

    def poll(now: float) -> None:
        nonlocal wake
        d = s.poll(now)
        started(d.dispatch, now)
        # Timers fire late, as asyncio's do: arrivals then meet classes already due.
        wake = None if d.wake_at is None else d.wake_at + 0.0003

    while i < len(arrivals) or done or s.queued():
        now = min(x for x in (arrivals[i][0] if i < len(arrivals) else None,
                              done[0][0] if done else None, wake) if x is not None)
        if done and done[0][0] == now:
            if s.complete(heapq.heappop(done)[2], now) or not fast:
                poll(now)
        elif i < len(arrivals) and arrivals[i][0] == now:
            _, tag, size = arrivals[i]
            i += 1
            r = req(tag, size)
            if fast and s.submit_now(r, now):
                started([r], now)
            else:
                if not fast:
                    s.submit(r, now)
                elif not s.queued():
                    raise AssertionError("submit_now neither dispatched nor queued")
                poll(now)
        else:
            poll(now)
    return out


@pytest.mark.parametrize("slack", [0.0, 0.005])
@pytest.mark.parametrize("seed", range(20))
def test_the_fast_path_dispatches_exactly_what_submit_and_poll_would(seed, slack):
    slow, fast = _replay(False, seed, slack), _replay(True, seed, slack)
    assert len(slow) == 400 and fast == slow


@pytest.mark.parametrize("slack", [0.0, 0.01])
def test_timer_slack_batches_a_throttled_stream_and_keeps_its_rate(slack):
    """A stream that sends its next 4 KiB request when the last one is done (as a
    gRPC write stream does), limited to 3 MB/s for 10 s: the bytes are depth + rate x t
    either way, and with 10 ms of slack the scheduler wakes up ~100 times a second
    instead of once per request (~730)."""
    s = Scheduler(SchedulerConfig(timer_slack=slack),
                  PolicyTable([job("A", limit_bps=3e6, burst_bytes=64 * KiB)]))
    now, sent, wakeups = 0.0, 0, 0
    pending = req(A, 4 * KiB)
    while now <= 10.0:
        if not s.submit_now(pending, now):
            while pending not in (d := s.poll(now)).dispatch:
                assert d.wake_at is not None and d.wake_at > now
                now, wakeups = d.wake_at, wakeups + 1
        s.complete(pending, now)
        sent += 4 * KiB
        pending = req(A, 4 * KiB)
    assert 64 * KiB + 3e6 * 10 - 8 * KiB <= sent <= 64 * KiB + 3e6 * 10 + 4 * KiB
    if slack:
        assert 10 / slack * 0.9 <= wakeups <= 10 / slack + 1
    else:
        assert wakeups >= 3e6 * 10 / (4 * KiB) * 0.9


def test_full_queue_rejects_and_changes_nothing():
    s = sched(queue_limit=3)
    for _ in range(3):
        s.submit(req(A), 0.0)
    with pytest.raises(ResourceExhausted, match="queue of job A on tier t is full"):
        s.submit(req(A), 0.0)
    assert s.queued() == 3
    (st,) = s.stats(0.0)
    assert (st.queued, st.rejected) == (3, 1)


def test_untagged_requests_share_the_default_class_which_is_evicted_when_idle():
    s = sched(Policy(Selector(Kind.DEFAULT), limit_bps=5e6))
    r1 = s.submit(req(Tag()), 0.0)
    r2 = s.submit(req(Tag()), 0.0)
    (st,) = s.stats(0.0)
    assert (st.job, st.selector, st.limit_bps, st.queued) == ("", "default", 5e6, 2)
    for r in s.poll(0.0).dispatch:
        s.complete(r, 1.0)
    assert {r1, r2} and s.classes() == [("", "t")]
    s.poll(30.0)
    assert s.classes() == [("", "t")]
    s.poll(61.0)
    assert s.classes() == []


def test_untagged_work_is_classed_per_user_with_each_users_policy():
    # One shared class took the first request's user policy for everyone's.
    s = sched(Policy(Selector(Kind.USER, "slow"), limit_bps=1e6),
              Policy(Selector(Kind.USER, "fast"), limit_bps=100e6))
    s.submit(req(Tag(user="slow")), 0.0)
    s.submit(req(Tag(user="fast")), 0.0)
    s.submit(req(Tag()), 0.0)
    got = {st.job: (st.selector, st.limit_bps) for st in s.stats(0.0)}
    assert got == {"user:slow": ("user=slow", 1e6), "user:fast": ("user=fast", 100e6),
                   "": ("default", 0.0)}


def test_most_specific_policy_wins():
    table = PolicyTable([
        Policy(Selector(Kind.DEFAULT), limit_bps=1),
        Policy(Selector(Kind.ACCOUNT, "phys"), limit_bps=2),
        Policy(Selector(Kind.USER, "ana"), limit_bps=3),
        Policy(Selector(Kind.USER, "ana"), tier="nvme", limit_bps=4),
        Policy(Selector(Kind.JOB, "A"), tier="ram", limit_bps=5)])
    assert table.resolve(A, "ram").limit_bps == 5
    assert table.resolve(A, "nvme").limit_bps == 4
    assert table.resolve(A, "disk").limit_bps == 3
    assert table.resolve(Tag("C", "carl", "phys"), "disk").limit_bps == 2
    assert table.resolve(Tag("D", "dan", "bio"), "disk").limit_bps == 1
    with pytest.raises(NotFound, match="no policy for job=Z"):
        table.delete(Selector(Kind.JOB, "Z"))


@pytest.mark.parametrize("fields,needle", [
    ({"limit_bps": -1.0}, "limit_bps must be a finite rate"),
    ({"limit_bps": 5e12}, "above 1 TB/s"),
    ({"reservation_bps": float("nan")}, "reservation_bps must be a finite rate"),
    ({"limit_bps": 10.0, "reservation_bps": 20.0}, "reservation exceeds the limit"),
    ({"weight": -2.0}, "weight must be"),
    ({"burst_bytes": -1}, "burst must be"),
])
def test_bad_policies_are_refused(fields, needle):
    table = PolicyTable([job("A", limit_bps=7)])
    with pytest.raises(InvalidArgument, match=needle):
        table.put(job("A", **fields))
    assert table.resolve(A, "t").limit_bps == 7     # nothing changed


def test_oversized_request_is_refused_before_queueing():
    s = sched(max_request=MiB)
    with pytest.raises(InvalidArgument, match="request size"):
        s.submit(req(A, MiB + 1), 0.0)
    assert s.queued() == 0


def test_group_limit_is_enforced_as_this_daemons_fraction():
    s = sched(job("A", limit_bps=100e6, burst_bytes=64 * KiB, scope=Scope.GROUP),
              max_in_flight=100, group_size=4)
    s.set_fraction("A", "t", 0.1, 0.0)       # before the class exists: kept for it
    s.submit(req(A), 0.0)
    (st,) = s.stats(0.0)
    assert st.limit_bps == pytest.approx(10e6)
    s.set_fraction("A", "t", None, 0.0)      # back to the even split of 4 daemons
    assert s.stats(0.0)[0].limit_bps == pytest.approx(25e6)
    # A daemon-scope policy ignores fractions: each daemon enforces the whole limit.
    s.set_policies(PolicyTable([Policy(Selector(Kind.JOB, "A"), limit_bps=100e6)]), 0.0)
    s.set_fraction("A", "t", 0.1, 0.0)
    assert s.stats(0.0)[0].limit_bps == 100e6
    with pytest.raises(InvalidArgument, match="between 0 and 1"):
        s.set_fraction("A", "t", 1.5, 0.0)


def test_demand_and_served_rate_are_measured_over_the_last_second():
    s = sched(max_in_flight=1000)
    for i in range(10):
        s.submit(req(A, 100_000), 0.05 + i * 0.1)
        for r in s.poll(0.05 + i * 0.1).dispatch:
            s.complete(r, 0.05 + i * 0.1)
    assert s.demand(0.96)[("A", "t")].arrival_bps == pytest.approx(1e6)
    assert s.stats(0.96)[0].rate_bps == pytest.approx(1e6)
    assert s.demand(2.5)[("A", "t")].arrival_bps == 0.0


def test_requests_as_large_as_the_bucket_keep_their_rate_when_dispatch_is_late():
    # 1 MiB requests against a 1 MiB bucket at 100 MB/s, every dispatch 7 ms after the
    # wake-up time asked for (coarse timers, a busy node): the late time must not be lost
    # to the cap.
    s = sched(job("A", limit_bps=100e6, burst_bytes=MiB))
    now, sent = 0.0, 0
    for _ in range(4):
        s.submit(req(A, MiB), now)
    while sent < 1000:
        d = s.poll(now)
        for r in d.dispatch:
            s.complete(r, now)
            s.submit(req(A, MiB), now)
            sent += 1
        if not d.dispatch:
            assert d.wake_at is not None
            now = d.wake_at + 0.007
    # 1000 MiB less the first full bucket, at exactly 100 MB/s (+ one late wake-up).
    assert now == pytest.approx(999 * MiB / 100e6 + 0.007, abs=1e-6)


def test_an_idle_bucket_still_fills_to_its_depth_only():
    s = sched(job("A", limit_bps=1e6, burst_bytes=4 * 64 * KiB))
    for _ in range(8):
        s.submit(req(A), 100.0)       # after 100 s idle: 4 requests' worth, not 5
    assert len(s.poll(100.0).dispatch) == 4


def test_a_limit_set_on_a_class_that_took_the_fast_path_applies_to_its_next_request():
    """An unlimited class goes out through submit_now's inline books; a policy that
    gives it a limit (or a reservation) must take it off that path at once, and
    removing the limit must put it back."""
    A = Tag("A")
    s = sched(timer_slack=0)
    for _ in range(3):
        r = req(A, MiB)
        assert s.submit_now(r, 0.0)
        s.complete(r, 0.0)
    s.set_policies(PolicyTable([job("A", limit_bps=1e6, burst_bytes=64 * KiB)]), 0.0)
    first, second = req(A, 64 * KiB), req(A, 64 * KiB)
    assert s.submit_now(first, 0.0)          # the bucket starts full: 64 KiB deep
    assert not s.submit_now(second, 0.0)     # then 1 MB/s: 64 KiB more after 65.5 ms
    assert s.poll(0.0).wake_at == pytest.approx(64 * KiB / 1e6)
    assert s.poll(64 * KiB / 1e6).dispatch == [second]
    s.set_policies(PolicyTable([job("A", reservation_bps=1e6)]), 1.0)
    assert not s._classes[("A", "t")].plain  # a reservation keeps the general books
    s.set_policies(PolicyTable(), 1.0)
    r = req(A, MiB)
    assert s.submit_now(r, 1.0) and s.stats(1.0)[0].requests == 6


def test_cancel_drops_a_queued_request_once_and_not_one_in_flight():
    A = Tag("A")
    s = sched(job("A", limit_bps=1e6, burst_bytes=64 * KiB), timer_slack=0)
    first, second = req(A, 64 * KiB), req(A, 64 * KiB)
    assert s.submit_now(first, 0.0) and not s.submit_now(second, 0.0)
    assert not s.cancel(first, 0.0)          # in flight: it must complete instead
    assert s.cancel(second, 0.0) and s.queued() == 0
    assert not s.cancel(second, 0.0)
    assert s.poll(1.0).dispatch == []


def test_requests_served_with_enforcement_off_are_still_counted_per_job() -> None:
    """Enforcement off bypasses queues and buckets, not the books: per-job bytes go on,
    under the same class a scheduled request would have had, and nothing waits."""
    s = sched(job("A", limit_bps=1.0))
    s.account(A, "t", "write", 5 * MiB, 0.0)
    s.account(A, "t", "read", 3 * MiB, 0.5)
    s.account(B, "t", "meta", 0, 0.6)
    s.account(Tag("", "ana"), "t", "write", KiB, 0.7)
    got = {(c.job, c.tier): c for c in s.stats(1.0)}
    a = got[("A", "t")]
    assert (a.bytes_written, a.bytes_read, a.requests) == (5 * MiB, 3 * MiB, 2)
    assert a.limit_bps == 1.0 and a.queued == 0 and a.in_flight == 0   # not held back
    assert got[("B", "t")].requests == 1 and got[("B", "t")].bytes_written == 0
    assert got[("user:ana", "t")].bytes_written == KiB
    assert s.in_flight == 0
    # Every class busy at max_classes: the request is not counted, and nothing raises.
    full = sched(max_classes=1)
    full.submit(req(A), 0.0)
    full.account(B, "t", "write", MiB, 0.0)
    assert [c.job for c in full.stats(0.0)] == ["A"]
