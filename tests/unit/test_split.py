"""Splitting a group-scope limit over daemons: fractions from demand, and the two
phases that keep the parts' sum within the limit while they change."""

from __future__ import annotations

import pytest

from tokenbucket_daemon.core.split import (
    Demand,
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
