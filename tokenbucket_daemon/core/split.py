"""Splitting a job's group-wide limit over the daemons that serve it.

A policy with group scope gives a job one limit for the whole group of daemons
(its files striped over them). Each daemon enforces a *fraction* of that limit;
the fractions of one (job, tier) sum to at most 1, so the job's total never
exceeds its limit, and a change of the limit itself applies everywhere at once.

The leader (the daemon with the smallest id among those that answered lately:
``leads``) gathers
each daemon's measured demand and decides new fractions:

* a daemon whose class is not throttled (no queue, served below its part) is
  given what it uses plus headroom, and a floor so a stripe that wakes up is not
  starved until the next round;
* what remains is shared max-min fairly among the throttled ones (a throttled
  class's arrival rate says nothing about how much more it wants);
* a daemon that did not answer keeps the fraction it was last known to hold.

Going from old to new fractions, lowering one daemon before raising another is
what keeps the sum under the limit while messages are in flight: ``plan`` puts
the decreases in a first phase, and ``raises_after`` hands out the increases
only within what the acknowledged decreases freed.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADROOM = 1.25        # an unthrottled daemon gets 25% more than it used
THROTTLED = 0.95       # served at >= 95% of its part: treat as wanting more


@dataclass(frozen=True)
class Demand:
    """What one daemon measured for one (job, tier) over about the last second."""

    arrival_bps: float = 0.0
    served_bps: float = 0.0
    queued_bytes: int = 0


def leads(me: str, last_heard: dict[str, float], now: float, hold: float) -> bool:
    """Whether daemon ``me`` should lead: no daemon with a smaller id has answered it
    within the last ``hold`` seconds (``last_heard``: id -> time of its last answer).
    Not just this round's answers: under load one exchange with the leader can time
    out, and a second leader would take the leader's part for the even split (all it
    can assume of a daemon it has not heard) and hand out more than the group has."""
    return all(d >= me for d, t in last_heard.items() if now - t <= hold)


def floor_fraction(daemons: int) -> float:
    """Least part any daemon keeps: 2%, or less when there are very many daemons."""
    return min(0.02, 1.0 / (2 * daemons)) if daemons else 0.0


def throttled(d: Demand, fraction: float, limit_bps: float) -> bool:
    return d.queued_bytes > 0 or d.served_bps >= THROTTLED * fraction * limit_bps


def target_fractions(limit_bps: float, demands: dict[str, Demand],
                     current: dict[str, float], pinned: frozenset[str] = frozenset()
                     ) -> dict[str, float]:
    """New fractions for every daemon in ``current`` (the whole group); those in
    ``pinned`` keep theirs. The result sums to at most 1 (to 1 when anyone wants it)."""
    free = [d for d in sorted(current) if d not in pinned]
    out = {d: current[d] for d in pinned if d in current}
    budget = max(0.0, 1.0 - sum(out.values()))
    if not free:
        return out
    floor = min(floor_fraction(len(current)), budget / len(free))
    wants: dict[str, float] = {}
    for d in free:
        dem = demands.get(d, Demand())
        if throttled(dem, current[d], limit_bps) and (dem.arrival_bps > 0 or dem.queued_bytes):
            wants[d] = float("inf")
        else:
            wants[d] = max(floor, min(1.0, dem.served_bps * HEADROOM / limit_bps + floor))
    # Max-min fair: satisfy the smallest wants first, split the rest evenly.
    left, n = budget, len(free)
    give: dict[str, float] = {}
    for d in sorted(free, key=lambda k: (wants[k], k)):
        g = min(wants[d], left / n)
        give[d] = g
        left -= g
        n -= 1
    # Nobody wants the remainder: hand it out evenly, so the limit stays usable by
    # whichever stripe becomes busy first.
    if left > 1e-12:
        for d in free:
            give[d] += left / len(free)
    out.update(give)
    return out


@dataclass(frozen=True)
class Plan:
    lower: dict[str, float]     # phase 1: these daemons go down (or stay)
    raise_: dict[str, float]    # phase 2: these go up, once phase 1 is acknowledged


def plan(current: dict[str, float], target: dict[str, float]) -> Plan:
    lower = {d: f for d, f in target.items() if f <= current.get(d, 0.0)}
    up = {d: f for d, f in target.items() if f > current.get(d, 0.0)}
    return Plan(lower, up)


def raises_after(current: dict[str, float], p: Plan, acked: set[str]) -> dict[str, float]:
    """The increases that fit once phase 1 is done: a daemon that did not acknowledge
    its decrease still counts at its old fraction, and the raises shrink to fit."""
    held = sum(p.lower[d] if d in acked else current.get(d, 0.0) for d in p.lower)
    base = sum(current.get(d, 0.0) for d in p.raise_)
    room = max(0.0, 1.0 - held - base)
    want = sum(f - current.get(d, 0.0) for d, f in p.raise_.items())
    scale = 1.0 if want <= room else room / want
    return {d: current.get(d, 0.0) + (f - current.get(d, 0.0)) * scale
            for d, f in p.raise_.items()}


# ------------------------------------------------------------------ the rounds

Key = tuple[str, str]                 # (job, tier)


@dataclass(frozen=True)
class JobReport:
    """One (job, tier) of a daemon's demand report."""

    job: str
    tier: str
    demand: Demand
    fraction: float = 0.0             # the part it enforces now; 0: no group policy there


@dataclass(frozen=True)
class Report:
    """A daemon's demand report (already validated by the shell)."""

    daemon: str
    jobs: tuple[JobReport, ...] = ()


@dataclass(frozen=True)
class SendFractions:
    """Instruction: make ``daemon`` enforce these parts (this daemon's own id: apply
    them here); report back which daemons acknowledged."""

    daemon: str
    fractions: tuple[tuple[str, str, float], ...]


class GroupSplit:
    """One daemon's side of the group split, sans I/O: who answered when, the part each
    daemon is known to enforce, and, when this daemon leads, the two phases of a round.

    ``peers`` are the configured addresses; a peer is known by its address until it
    answered with its id. Every map is bounded: ids by the configured addresses, the
    times heard by ``forget`` (a daemon silent that long is dropped), the known parts
    by the (job, tier) pairs that still have a group limit and the daemons of the group.
    """

    def __init__(self, me: str, peers: list[str], hold: float, forget: float) -> None:
        self.me = me
        self.peers = list(peers)
        self.hold = hold
        self.forget = forget
        self.ids: dict[str, str] = {}                    # peer address -> daemon id
        self.heard: dict[str, float] = {}                # daemon id -> last answer
        self.known: dict[Key, dict[str, float]] = {}     # what each daemon enforces
        self._round: dict[Key, tuple[dict[str, float], Plan]] = {}

    @property
    def group(self) -> list[str]:
        """This daemon first, then each peer by id (or ``@address`` until it answered)."""
        return [self.me, *(self.ids.get(a, f"@{a}") for a in self.peers)]

    def answered(self, now: float, replies: dict[str, Report | None]) -> None:
        """Record the peers' answers (address -> report, None: no answer)."""
        for addr, r in replies.items():
            if r is not None and addr in self.peers:
                self.ids[addr] = r.daemon
                self.heard[r.daemon] = now
        for d in [d for d, t in self.heard.items() if now - t > self.forget]:
            del self.heard[d]

    def leads(self, now: float) -> bool:
        return leads(self.me, self.heard, now, self.hold)

    def may_lead_me(self, leader: str, now: float) -> bool:
        """Whether fractions from ``leader`` are acceptable here: a daemon of the group
        heard within ``forget`` whose id is below this daemon's (a leader is the
        smallest id it hears, and it heard this daemon, or it would not send)."""
        t = self.heard.get(leader)
        return t is not None and now - t <= self.forget and leader < self.me \
            and leader in self.group

    def start_round(self, now: float, mine: Report, replies: dict[str, Report | None],
                    limits: dict[Key, float]) -> list[SendFractions]:
        """A round: ``mine`` and the peers' replies, the group limits in force here
        (bytes/s per (job, tier)). Returns phase 1 (the decreases) when this daemon
        leads, else nothing."""
        self.answered(now, replies)
        group = self.group
        for key in [k for k in self.known if k not in limits]:
            del self.known[key]
        for parts in self.known.values():
            for d in [d for d in parts if d not in group]:
                del parts[d]
        self._round = {}
        if not self.leads(now):
            return []
        reports = {mine.daemon: mine} | {r.daemon: r for r in replies.values()
                                         if r is not None and r.daemon in group}
        demands: dict[Key, dict[str, Demand]] = {}
        for did, rep in reports.items():
            for j in rep.jobs:
                key = (j.job, j.tier)
                if key not in limits:
                    continue
                demands.setdefault(key, {})[did] = j.demand
                if j.fraction > 0:
                    self.known.setdefault(key, {})[did] = j.fraction
        n = len(group)
        lower: dict[str, list[tuple[str, str, float]]] = {}
        for key in sorted(demands):
            known = self.known.setdefault(key, {})
            current = {d: known.get(d, 1.0 / n) for d in group}
            pinned = frozenset(d for d in group if d not in reports)
            p = plan(current, target_fractions(limits[key], demands[key], current, pinned))
            self._round[key] = (current, p)
            for d, f in p.lower.items():
                if abs(f - current[d]) > 1e-6:
                    lower.setdefault(d, []).append((*key, f))
        return [SendFractions(d, tuple(fs)) for d, fs in sorted(lower.items())]

    def lowered(self, acked: set[str]) -> list[SendFractions]:
        """Phase 1 acknowledged by ``acked``: phase 2, the increases that now fit."""
        raise_: dict[str, list[tuple[str, str, float]]] = {}
        for key, (current, p) in self._round.items():
            ok = {d for d in p.lower if d in acked or abs(p.lower[d] - current[d]) <= 1e-6}
            for d, f in raises_after(current, p, ok).items():
                raise_.setdefault(d, []).append((*key, f))
            for d in ok:
                self.known[key][d] = p.lower[d]
        return [SendFractions(d, tuple(fs)) for d, fs in sorted(raise_.items())]

    def raised(self, sent: list[SendFractions], acked: set[str]) -> None:
        """Phase 2 acknowledged by ``acked``: they hold their new parts."""
        for s in sent:
            if s.daemon in acked:
                for job, tier, f in s.fractions:
                    self.known.setdefault((job, tier), {})[s.daemon] = f
        self._round = {}
