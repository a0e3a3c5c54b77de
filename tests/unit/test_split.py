"""Splitting a group-scope limit over daemons: fractions from demand, the two phases
that keep the parts' sum within the limit while they change, and the rounds' state
(who leads, whom a daemon follows, bounded maps) with synthetic time."""

from __future__ import annotations

import pytest

from tokenbucket_daemon.core.split import (
    Demand,
    GroupSplit,
    JobReport,
    Report,
    SendFractions,
    floor_fraction,
    plan,
    raises_after,
    target_fractions,
)

L = 100e6
EVEN = {d: 0.25 for d in "abcd"}


def busy(served: float) -> Demand:
    return Demand(arrival_bps=served, served_bps=served, queued_bytes=1 << 20)


def test_equal_backlogged_stripes_split_evenly_and_use_the_whole_limit():
    t = target_fractions(L, {d: busy(25e6) for d in "abcd"}, EVEN)
    assert t == pytest.approx(EVEN)
    assert sum(t.values()) == pytest.approx(1.0)


def test_idle_stripes_keep_a_floor_and_the_busy_one_gets_the_rest():
    t = target_fractions(L, {"a": busy(25e6)}, EVEN)
    f = floor_fraction(4)
    assert f == 0.02
    assert t["b"] == t["c"] == t["d"] == pytest.approx(f)
    assert t["a"] == pytest.approx(1 - 3 * f)


def test_an_unthrottled_stripe_gets_its_use_plus_headroom_and_the_rest_goes_to_busy_ones():
    # c serves 10 MB/s of its 25 with no queue: it is satisfied with 10*1.25 + floor.
    dem = {"a": busy(25e6), "b": busy(25e6), "c": Demand(10e6, 10e6, 0), "d": Demand()}
    t = target_fractions(L, dem, EVEN)
    assert t["c"] == pytest.approx(0.125 + 0.02)
    assert t["d"] == pytest.approx(0.02)
    assert t["a"] == t["b"] == pytest.approx((1 - 0.145 - 0.02) / 2)
    assert sum(t.values()) == pytest.approx(1.0)


def test_nobody_busy_leaves_the_remainder_spread_evenly():
    dem = {d: Demand(1e6, 1e6, 0) for d in "abcd"}
    t = target_fractions(L, dem, EVEN)
    assert t == pytest.approx(EVEN)


def test_unreachable_daemon_keeps_its_fraction_and_the_rest_fit_around_it():
    cur = {"a": 0.7, "b": 0.1, "c": 0.1, "d": 0.1}
    t = target_fractions(L, {d: busy(1e6) for d in "bcd"}, cur, pinned=frozenset("a"))
    assert t["a"] == 0.7
    assert [t[d] for d in "bcd"] == pytest.approx([0.1] * 3)
    assert sum(t.values()) <= 1.0 + 1e-12


def test_decreases_go_first_and_raises_only_use_what_acknowledged_decreases_freed():
    cur = {"a": 0.5, "b": 0.3, "c": 0.2}
    target = {"a": 0.2, "b": 0.3, "c": 0.5}
    p = plan(cur, target)
    assert p.lower == {"a": 0.2, "b": 0.3}
    assert p.raise_ == {"c": 0.5}
    assert raises_after(cur, p, {"a", "b"}) == pytest.approx({"c": 0.5})
    # a did not acknowledge: it may still run at 0.5, so c cannot grow at all.
    assert raises_after(cur, p, {"b"}) == pytest.approx({"c": 0.2})


@pytest.mark.parametrize("seed", range(30))
def test_no_interleaving_of_the_two_phases_sums_above_one(seed):
    """Any subset of daemons may have applied its new value at any moment; with the
    lowered ones applied before any raise, every mix of old and new sums <= 1."""
    import random
    rnd = random.Random(seed)
    names = "abcdefgh"[: rnd.randint(2, 8)]
    raw = [rnd.random() for _ in names]
    cur = {d: x / sum(raw) for d, x in zip(names, raw, strict=True)}
    dem = {d: (busy(rnd.uniform(0, 50e6)) if rnd.random() < 0.5
               else Demand(rnd.uniform(0, 20e6), rnd.uniform(0, 20e6), 0)) for d in names}
    target = target_fractions(L, dem, cur)
    assert sum(target.values()) <= 1.0 + 1e-9
    p = plan(cur, target)
    acked = {d for d in p.lower if rnd.random() < 0.8}
    ups = raises_after(cur, p, acked)
    lowered, raised = sorted(p.lower), sorted(ups)
    # Phase 1: any subset of the decreases applied, no raise sent yet.
    for mask in range(1 << len(lowered)):
        total = sum(p.lower[d] if mask >> i & 1 else cur[d] for i, d in enumerate(lowered))
        assert total + sum(cur[d] for d in raised) <= 1.0 + 1e-9
    # Phase 2 starts once phase 1 is answered: acknowledged decreases hold, the others
    # count at their old value, and any subset of the raises is applied.
    held = sum(p.lower[d] if d in acked else cur[d] for d in lowered)
    for mask in range(1 << len(raised)):
        total = held + sum(ups[d] if mask >> i & 1 else cur[d] for i, d in enumerate(raised))
        assert total <= 1.0 + 1e-9


def test_a_daemon_leads_only_when_no_smaller_id_answered_lately():
    from tokenbucket_daemon.core.split import leads
    assert leads("g1", {}, 10.0, 0.75)                        # alone, or at start
    assert leads("g0", {"g1": 10.0, "g2": 10.0}, 10.0, 0.75)
    # g0 answered 0.5 s ago but not this round (a late answer under load): g1 waits.
    assert not leads("g1", {"g0": 9.5, "g2": 10.0}, 10.0, 0.75)
    # g0 silent for longer than the hold: g1 takes over.
    assert leads("g1", {"g0": 9.0, "g2": 10.0}, 10.0, 0.75)
    assert not leads("g2", {"g0": 9.0, "g1": 10.0}, 10.0, 0.75)


# ------------------------------------------------------------- GroupSplit: the rounds

JOB = ("42", "ram")
PERIOD = 0.25


def split_of(me: str = "a", peers: tuple[str, ...] = ("h:b", "h:c")) -> GroupSplit:
    return GroupSplit(me, list(peers), hold=3 * PERIOD, forget=40 * PERIOD)


def report(d: str, served: float = 0.0, fraction: float = 0.0, queued: int = 0) -> Report:
    return Report(d, (JobReport(*JOB, Demand(served, served, queued), fraction),))


def test_the_leader_lowers_first_and_raises_only_what_the_acknowledged_lowering_freed():
    s = split_of()
    # a is busy; b and c are idle at the even third each.
    lower = s.start_round(0.0, report("a", 30e6, 1 / 3, queued=1 << 20),
                          {"h:b": report("b", 0, 1 / 3), "h:c": report("c", 0, 1 / 3)},
                          {JOB: 90e6})
    assert [x.daemon for x in lower] == ["b", "c"]
    assert all(f == pytest.approx(0.02) for x in lower for *_, f in x.fractions)
    # Only b acknowledged: c still counts at 1/3, so a may grow by b's drop alone.
    up = s.lowered({"b"})
    assert up == [SendFractions("a", (("42", "ram", pytest.approx(1 - 0.02 - 1 / 3)),))]
    s.raised(up, {"a"})
    assert sum(s.known[JOB].values()) <= 1 + 1e-9
    assert s.known[JOB] == pytest.approx({"a": 1 - 0.02 - 1 / 3, "b": 0.02, "c": 1 / 3})


def test_a_silent_daemon_keeps_its_part_and_only_the_smallest_id_heard_leads():
    s = split_of()
    lower = s.start_round(0.0, report("a", 30e6, 0.5, queued=1), {"h:b": report("b", 0, 0.5),
                                                                 "h:c": None}, {JOB: 90e6})
    assert all(x.daemon != "c" for x in lower)      # c did not answer: pinned, untouched
    b = split_of("b", ("h:a", "h:c"))
    assert b.start_round(0.0, report("b"), {"h:a": report("a"), "h:c": report("c")},
                         {JOB: 90e6}) == []         # a answers: b follows
    # a silent for longer than the hold: b takes the lead.
    assert b.start_round(1.0, report("b", 1e6, 0.5, queued=1),
                         {"h:a": None, "h:c": report("c", 0, 0.5)}, {JOB: 90e6}) != []


def test_fractions_are_taken_only_from_a_smaller_daemon_heard_lately():
    b = split_of("b", ("h:a", "h:c"))
    b.start_round(0.0, report("b"), {"h:a": report("a"), "h:c": report("c")}, {})
    assert b.may_lead_me("a", 1.0)
    assert not b.may_lead_me("c", 1.0)           # a larger id never leads b
    assert not b.may_lead_me("0-unknown", 1.0)   # never heard from
    assert not b.may_lead_me("a", 20.0)          # silent for longer than forget


def test_the_maps_stay_bounded_by_the_group_and_the_live_group_limits():
    s = split_of()
    for i in range(100):
        # A peer that comes back under a new id each time, jobs that come and go.
        job = (str(i), "ram")
        s.start_round(float(i), Report("a", (JobReport(*job, Demand(1e6, 1e6, 1), 0.5),)),
                      {"h:b": Report(f"b{i}", (JobReport(*job, Demand(), 0.5),)),
                       "h:c": None}, {job: 10e6})
    assert len(s.ids) == 1                          # one id per configured address
    assert set(s.heard) <= {f"b{i}" for i in range(100 - 41, 100)}
    assert list(s.known) == [("99", "ram")]         # only the job that has a limit now
    assert set(s.known[("99", "ram")]) <= {"a", "b99", "@h:c"}
    # Answers from addresses not configured are not recorded at all.
    s.answered(200.0, {"h:x": report("x")})
    assert "x" not in s.heard


def test_rounds_never_hand_out_more_than_the_limit_whatever_is_acknowledged():
    import random
    rnd = random.Random(7)
    s = split_of("a", ("h:b", "h:c", "h:d"))
    enforced = {"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}
    for t in range(300):
        def rep(d: str) -> Report:
            busy = rnd.random() < 0.5
            served = enforced[d] * 40e6 * (1 if busy else rnd.random())
            return report(d, served, enforced[d], queued=1 if busy else 0)
        replies = {f"h:{d}": (rep(d) if rnd.random() < 0.9 else None) for d in "bcd"}
        lower = s.start_round(t * PERIOD, rep("a"), replies, {JOB: 40e6})
        acked = {x.daemon for x in lower if rnd.random() < 0.8}
        for x in lower:
            if x.daemon in acked:
                enforced[x.daemon] = x.fractions[0][2]
        assert sum(enforced.values()) <= 1 + 1e-9
        up = s.lowered(acked)
        acked_up = {x.daemon for x in up if rnd.random() < 0.8}
        for x in up:
            if x.daemon in acked_up:
                enforced[x.daemon] = x.fractions[0][2]
            assert sum(enforced.values()) <= 1 + 1e-9, (t, enforced)
        s.raised(up, acked_up)
