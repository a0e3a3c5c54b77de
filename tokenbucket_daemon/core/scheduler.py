"""The dispatch core: per-tag queues, token buckets, K requests in flight.

Sans-I/O: time is an argument, requests go in with :meth:`Scheduler.submit`,
decisions come out of :meth:`Scheduler.poll` (dispatch these now, wake me at t),
and the shell reports completions with :meth:`Scheduler.complete`.

A class is one (job tag, tier); it is created by its first request and evicted
after ``idle_evict`` seconds without work. Within a class requests leave in
arrival order (FIFO). Across classes, with a free slot (fewer than K in flight):

1. a class behind on its reservation (its reservation clock ``r_next`` is not in
   the future) whose limit bucket lets its head go: the earliest ``r_next`` wins,
   so reservations are met first, earliest deadline first;
2. otherwise any class whose limit bucket lets its head go: the smallest
   virtual start tag wins (start-time fair queuing: each dispatch advances the
   class's tag by bytes / weight, so spare capacity is shared by weight in bytes);
3. otherwise nothing may go: wake at the earliest time a bucket lets a head go.

Every dispatch advances both clocks, so a reservation is a floor: a class gets at
least its reservation and otherwise its weighted share. A limit (token bucket,
bytes) caps both. A policy change re-resolves every class at once and waiting
requests see the new rate at the next poll.

A tier may have a bandwidth (:meth:`Scheduler.set_tier_bandwidth`): a token bucket of
its own, at that rate and a shallow depth (``tier_burst_seconds`` of it), which every
dispatch to the tier also takes from. The daemon then never hands the tier more than it
can serve, so requests wait here, where the rules above decide who goes next, and not
in the device's queue, where arrival order would. Per capped tier only its best ready
class (by the rules above) may take the tier's tokens: a small request of a lower class
cannot take them from a large one of a higher class that waits for enough to gather.
A tier without a bandwidth is scheduled exactly as before.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tokenbucket_daemon.core.bucket import LATE_CREDIT, UNLIMITED, TokenBucket
from tokenbucket_daemon.core.device import check_rate
from tokenbucket_daemon.core.policy import Policy, PolicyTable, Scope, Tag
from tokenbucket_daemon.core.split import Demand
from tokenbucket_daemon.core.window import RateWindow
from tokenbucket_daemon.errors import InvalidArgument, ResourceExhausted

MiB = 1 << 20


USER_CLASS = "user:"      # the class key of a user's untagged work: "user:<name>"


@dataclass(frozen=True)
class SchedulerConfig:
    max_in_flight: int = 16
    queue_limit: int = 4096          # requests waiting per class
    default_burst: int = MiB         # bucket depth when the policy gives none
    # ... or this much of the rate, if larger: 100 ms lets a client that cannot keep its
    # queue full every millisecond (a FUSE mount on a busy node) still get its rate.
    burst_seconds: float = 0.1
    max_request: int = 64 * MiB      # larger requests are refused, not queued
    meta_cost: int = 4096            # bytes charged for a metadata operation
    # Tokens a read or write costs at least: a message costs the daemon CPU whatever it
    # carries, and a stream of empty chunks once cost 5 s of CPU in 5 s, charged nothing.
    min_charge: int = 4096
    # Live classes at most (one per job and tier); a new one beyond it evicts idle
    # classes first, and is refused (RESOURCE_EXHAUSTED) when every class is busy.
    max_classes: int = 4096
    idle_evict: float = 60.0         # seconds an idle class is kept
    group_size: int = 1              # daemons a group-scope limit is split over
    # A request that finds its limit's bucket short, with no request of its class
    # ahead, waits at least this long (and the ones queued behind it with it). The
    # tokens earned meanwhile are banked (bucket.LATE_CREDIT), so the rate is kept;
    # when it goes, the requests a stream sends next find tokens and go at once, so
    # one wake-up releases a few small requests instead of one each. A wake-up costs
    # the event loop and gRPC more than a request: 433 against 252 us of daemon CPU
    # per throttled 4 KiB write at 0 and 10 ms. 0 = each at its exact eligible time.
    timer_slack: float = 0.01
    # Depth of a tier's capacity bucket, in seconds of its bandwidth (at least
    # default_burst). While the tier is busy the device holds about this much (the first
    # burst stays queued, as the bucket fills as fast as the device drains), so every
    # request waits this long there, in arrival order: with 50 ms a one-stream job
    # reserved 40 of 100 MB/s got 34; with 10 ms late timers cost the tier 9% of its
    # bandwidth; 20 ms gave 38 MB/s and the tier full (docs/daemon.md).
    tier_burst_seconds: float = 0.02

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise InvalidArgument("max_in_flight must be at least 1", self.max_in_flight,
                                  "set max_in_flight = 16 in the [scheduler] section")
        if self.group_size < 1:
            raise InvalidArgument("group_size must be at least 1", self.group_size,
                                  "count this daemon and its peers")
        if not 0.0 <= self.timer_slack <= LATE_CREDIT:
            raise InvalidArgument(f"timer_slack must be between 0 and {LATE_CREDIT} seconds",
                                  self.timer_slack, "set timer_slack = 0.01 in [scheduler]")
        if self.queue_limit < 1:
            raise InvalidArgument("queue_limit must be at least 1", self.queue_limit,
                                  "set queue_limit = 4096 in the [scheduler] section")
        if not 0 <= self.min_charge <= self.max_request:
            raise InvalidArgument("min_charge must be between 0 and max_request bytes",
                                  self.min_charge, "set min_charge = 4096 in [scheduler]")
        if self.max_classes < 1:
            raise InvalidArgument("max_classes must be at least 1", self.max_classes,
                                  "set max_classes = 4096 in the [scheduler] section")
        if not 0.001 <= self.tier_burst_seconds <= 1.0:
            raise InvalidArgument("tier_burst_seconds must be between 0.001 and 1",
                                  self.tier_burst_seconds,
                                  "set tier_burst_seconds = 0.02 in [scheduler]")


ClassKey = tuple[str, str]   # (job, tier); job "" = the default class


@dataclass(eq=False, slots=True)
class Request:
    """One I/O request. ``payload`` is the shell's (e.g. a future to resolve)."""

    tag: Tag
    tier: str
    op: str                 # "read", "write" or "meta"
    size: int
    payload: Any = None
    arrival: float = 0.0
    cost: float = 0.0
    rid: int = 0
    hold: float = 0.0       # not before this (arrival, or arrival + timer_slack)
    home: Any = field(default=None, repr=False)   # its _Class, once admitted


@dataclass
class Decision:
    dispatch: list[Request]
    wake_at: float | None     # poll again at this time (None: on the next event)


@dataclass
class ClassStats:
    job: str
    tier: str
    selector: str
    limit_bps: float
    reservation_bps: float
    weight: float
    tokens: float
    queued: int
    in_flight: int
    bytes_read: int
    bytes_written: int
    requests: int
    rejected: int
    wait_seconds_total: float
    rate_bps: float
    demand_bps: float


@dataclass(eq=False)
class _Class:
    key: ClassKey
    tag: Tag
    policy: Policy
    bucket: TokenBucket
    order: int
    fraction: float = 1.0            # this daemon's part of a group-scope limit
    plain: bool = True               # neither limit nor reservation: submit_now's fast path
    queue: deque[Request] = field(default_factory=deque)
    in_flight: int = 0
    p_tag: float = 0.0               # virtual start tag (bytes / weight)
    r_next: float = 0.0              # reservation clock (seconds)
    idle_since: float = 0.0
    bytes_read: int = 0
    bytes_written: int = 0
    requests: int = 0
    rejected: int = 0
    wait_total: float = 0.0
    served: RateWindow = field(default_factory=RateWindow)
    arrived: RateWindow = field(default_factory=RateWindow)

    @property
    def limit(self) -> float:
        lim = self.policy.limit
        return lim * self.fraction if self.policy.scope is Scope.GROUP else lim

    @property
    def busy(self) -> bool:
        return bool(self.queue) or self.in_flight > 0


class Scheduler:
    def __init__(self, config: SchedulerConfig | None = None,
                 policies: PolicyTable | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.policies = policies or PolicyTable()
        self._classes: dict[ClassKey, _Class] = {}
        # Tiers with a bandwidth: their capacity buckets (set_tier_bandwidth).
        self._capacity: dict[str, TokenBucket] = {}
        # Classes with requests queued, in creation order: poll looks only at these,
        # so its cost follows the backlog, not the number of jobs seen.
        self._waiting: dict[ClassKey, _Class] = {}
        self._next_evict = 0.0
        self._fractions: dict[ClassKey, float] = {}
        self._order = itertools.count()
        self._rid = itertools.count(1)
        self._vtime = 0.0
        self.in_flight = 0
        self.refused_classes = 0     # new classes refused at max_classes

    # -- events in ---------------------------------------------------------------

    def submit(self, req: Request, now: float) -> Request:
        """Queue ``req``; ResourceExhausted (nothing queued) when its class is full."""
        self._queue(self._admit(req, now), req)
        return req

    def account(self, tag: Tag, tier: str, op: str, size: int, now: float) -> None:
        """Count a request served while enforcement is off (it bypassed the queues and
        buckets): its class's requests and bytes go on, so per-job statistics still say
        what each job moved. A class that cannot be made (every class busy at
        max_classes) is not counted: accounting never refuses a request."""
        try:
            cls = self._class_of(tag, tier, now)
        except ResourceExhausted:
            return
        cls.requests += 1
        if op == "write":
            cls.bytes_written += size
        elif op == "read":
            cls.bytes_read += size
        cost = float(max(size, self.config.min_charge)) if op != "meta" \
            else float(self.config.meta_cost)
        cls.arrived.add(now, cost)
        cls.served.add(now, cost)
        cls.idle_since = now           # counted as used: not evicted while it works

    def submit_now(self, req: Request, now: float) -> bool:
        """Submit ``req`` and dispatch it at once when its class has no queue, a slot is
        free, its bucket lets it go and no waiting class could go now: then ``poll``
        would release exactly it, and this skips the queue and poll's loop. Most
        requests of a job without a limit take this path, also while limited jobs wait
        for tokens. False: it is queued, and ``poll`` decides."""
        cls = self._classes.get((req.tag.job, req.tier))
        if (cls is not None and cls.plain and not self._waiting
                and self.in_flight < self.config.max_in_flight
                and 0 <= req.size <= self.config.max_request):
            # The books of _admit and _start for a class with neither limit nor
            # reservation while nothing waits anywhere (so its own queue is empty too):
            # inline, as this is every request of a daemon without policies, and the
            # general path costs twice as much (QoS on against off is an issue figure).
            cost = (float(max(req.size, self.config.min_charge)) if req.op != "meta"
                    else float(self.config.meta_cost))
            req.arrival = req.hold = now
            req.cost = cost
            req.rid = next(self._rid)
            req.home = cls
            # As _admit: a class joining an empty queue gets no credit for idle time.
            cls.p_tag = max(cls.p_tag, self._vtime)
            cls.r_next = max(cls.r_next, now)
            self._vtime = cls.p_tag
            cls.p_tag += cost / cls.policy.weight
            cls.in_flight += 1
            self.in_flight += 1
            cls.requests += 1
            if req.op == "write":
                cls.bytes_written += req.size
            elif req.op == "read":
                cls.bytes_read += req.size
            cls.arrived.add(now, cost)
            cls.served.add(now, cost)
            if now >= self._next_evict:
                self._evict(now)
            return True
        cls = self._admit(req, now)
        # Never on a capped tier: poll gives its tokens to its best class, and a request
        # that fits them now may still have to leave them to a larger one waiting.
        if (not cls.queue and self.in_flight < self.config.max_in_flight
                and cls.key[1] not in self._capacity
                and cls.bucket.eligible_at(req.cost, now, now) <= now
                and not any(self._ready(c, now) for c in self._waiting.values())):
            self._start(cls, req, now)
            self._evict(now)
            return True
        self._queue(cls, req)
        return False

    def _admit(self, req: Request, now: float) -> _Class:
        """Check ``req``, find its class and stamp it, as it joins the class's queue."""
        cfg = self.config
        if req.size < 0 or req.size > cfg.max_request:
            raise InvalidArgument(f"request size must be between 0 and {cfg.max_request} bytes",
                                  req.size, "split the I/O into smaller requests")
        cls = self._class_of(req.tag, req.tier, now)
        if len(cls.queue) >= cfg.queue_limit:
            cls.rejected += 1
            raise ResourceExhausted(f"queue of {_who(cls.key)} is full ({cfg.queue_limit} "
                                    "requests waiting)", None, "retry later, or write less at once",
                                    "EAGAIN")
        if not cls.queue:
            # Waking up: no credit for the idle time, on either clock.
            cls.p_tag = max(cls.p_tag, self._vtime)
            cls.r_next = max(cls.r_next, now)
        req.arrival = now
        req.cost = float(max(req.size, cfg.min_charge) if req.op != "meta" else cfg.meta_cost)
        req.rid = next(self._rid)
        req.home = cls
        req.hold = now
        if cfg.timer_slack and cls.bucket.limited:
            if cls.queue:      # FIFO: it cannot go before the request ahead anyway
                req.hold = max(now, cls.queue[-1].hold)
            elif cls.bucket.eligible_at(req.cost, now, now) > now:
                req.hold = now + cfg.timer_slack
        cls.arrived.add(now, req.cost)
        return cls

    def _queue(self, cls: _Class, req: Request) -> None:
        cls.queue.append(req)
        self._waiting.setdefault(cls.key, cls)

    def complete(self, req: Request, now: float) -> bool:
        """``req`` left the tier. True when ``poll`` would release something now: the
        slot freed was one a waiting request lacked (all K were taken), or a waiting
        class is due (its timer has not fired yet). Else polling would find nothing."""
        cls = req.home
        full = self.in_flight >= self.config.max_in_flight
        self.in_flight -= 1
        if cls is not None:
            cls.in_flight -= 1
            if not cls.in_flight and not cls.queue:
                cls.idle_since = now
        return bool(self._waiting) and (full or any(self._ready(c, now)
                                                    for c in self._waiting.values()))

    def cancel(self, req: Request, now: float) -> bool:
        """Drop a queued request (its caller went away); False if not queued."""
        cls = req.home
        if cls is None or req not in cls.queue:
            return False
        cls.queue.remove(req)
        if not cls.queue:
            self._waiting.pop(cls.key, None)
        if not cls.busy:
            cls.idle_since = now
        return True

    def set_policies(self, policies: PolicyTable, now: float) -> None:
        self.policies = policies
        for cls in self._classes.values():
            self._apply(cls, policies.resolve(cls.tag, cls.key[1]), now)

    def set_fraction(self, job: str, tier: str, fraction: float | None, now: float) -> None:
        """This daemon's part (0..1) of the job's group-scope limit on ``tier``, from the
        group's leader; None goes back to an even split. Kept for a class not yet made."""
        if fraction is None:
            self._fractions.pop((job, tier), None)
        else:
            if not 0.0 <= fraction <= 1.0:
                raise InvalidArgument("fraction must be between 0 and 1", fraction,
                                      "send the part of the group limit, e.g. 0.25")
            self._fractions[(job, tier)] = fraction
        cls = self._classes.get((job, tier))
        if cls is not None:
            self._apply(cls, cls.policy, now)

    def fraction(self, job: str, tier: str) -> float:
        return self._fractions.get((job, tier), 1.0 / self.config.group_size)

    def fractions(self) -> dict[ClassKey, float]:
        """The fractions set by a leader (the others are at the even split)."""
        return dict(self._fractions)

    def set_tier_bandwidth(self, tier: str, bps: float | None, now: float) -> None:
        """Dispatch at most ``bps`` bytes/s (plus a burst of ``tier_burst_seconds``) to
        ``tier``, all classes together; None lifts the cap. Tokens earned so far are kept
        when the rate changes."""
        if bps is None:
            self._capacity.pop(tier, None)
        else:
            rate = check_rate(f"bandwidth of tier {tier}", bps,
                              "give the tier's bandwidth in bytes/s, e.g. 200MiB/s")
            depth = max(float(self.config.default_burst),
                        rate * self.config.tier_burst_seconds)
            cap = self._capacity.get(tier)
            if cap is None:
                self._capacity[tier] = TokenBucket(rate, depth, now, late_credit=False)
            else:
                cap.reconfigure(rate, depth, now)
        for cls in self._classes.values():
            if cls.key[1] == tier:
                self._apply(cls, cls.policy, now)

    def tier_bandwidth(self) -> dict[str, float]:
        """The capped tiers and their bandwidth in bytes/s."""
        return {t: b.rate for t, b in self._capacity.items()}

    # -- decisions out -------------------------------------------------------------

    def poll(self, now: float) -> Decision:
        out: list[Request] = []
        wake: float | None = None
        caps = self._capacity
        while self.in_flight < self.config.max_in_flight:
            best: _Class | None = None
            best_key: tuple[int, float, int] | None = None
            wake = None
            # A capped tier's best ready class, which alone may take the tier's tokens.
            capped: dict[str, tuple[tuple[int, float, int], _Class]] = {}
            for cls in self._waiting.values():
                at = self._eligible_at(cls, now)
                if at > now:
                    wake = at if wake is None else min(wake, at)
                    continue
                reserved = cls.policy.reservation_bps > 0 and cls.r_next <= now
                key = (0, cls.r_next, cls.order) if reserved else (1, cls.p_tag, cls.order)
                if caps and cls.key[1] in caps:
                    held = capped.get(cls.key[1])
                    if held is None or key < held[0]:
                        capped[cls.key[1]] = (key, cls)
                    continue
                if best_key is None or key < best_key:
                    best, best_key = cls, key
            for tier, (key, cls) in capped.items():
                at = caps[tier].eligible_at(cls.queue[0].cost, now)
                if at > now:
                    wake = at if wake is None else min(wake, at)
                elif best_key is None or key < best_key:
                    best, best_key = cls, key
            if best is None:
                break
            out.append(self._dispatch(best, now))
            wake = None
        self._evict(now)
        return Decision(out, wake)

    @staticmethod
    def _eligible_at(cls: _Class, now: float) -> float:
        head = cls.queue[0]
        return max(head.hold, cls.bucket.eligible_at(head.cost, now, head.arrival))

    def _ready(self, cls: _Class, now: float) -> bool:
        if self._eligible_at(cls, now) > now:
            return False
        cap = self._capacity.get(cls.key[1]) if self._capacity else None
        return cap is None or cap.eligible_at(cls.queue[0].cost, now) <= now

    def release_all(self, now: float) -> list[Request]:
        """Every queued request at once, past K and without charging buckets or clocks
        (enforcement switched off: a job must not owe tokens for what it moved while
        nothing was enforced). Each still needs ``complete``."""
        out = []
        for cls in list(self._waiting.values()):
            while cls.queue:
                out.append(self._dispatch(cls, now, charge=False))
        return out

    def _dispatch(self, cls: _Class, now: float, charge: bool = True) -> Request:
        req = cls.queue.popleft()
        if not cls.queue:
            del self._waiting[cls.key]
        self._start(cls, req, now, charge)
        return req

    def _start(self, cls: _Class, req: Request, now: float, charge: bool = True) -> None:
        """The books of a request leaving its queue for the tier."""
        if charge:
            cls.bucket.take(req.cost, now)
            if self._capacity:
                cap = self._capacity.get(cls.key[1])
                if cap is not None:
                    cap.take(req.cost, now)
            self._vtime = cls.p_tag
            cls.p_tag += req.cost / cls.policy.weight
            res = cls.policy.reservation_bps
            if res > 0:
                # A class starved for long is owed at most one second of reservation,
                # so catching up cannot turn into a burst that starves everyone else.
                cls.r_next = max(cls.r_next, now - 1.0) + req.cost / res
        cls.in_flight += 1
        self.in_flight += 1
        cls.requests += 1
        if req.op == "read":
            cls.bytes_read += req.size
        elif req.op == "write":
            cls.bytes_written += req.size
        cls.wait_total += now - req.arrival
        cls.served.add(now, req.cost)

    # -- classes -------------------------------------------------------------------

    def _class_of(self, tag: Tag, tier: str, now: float) -> _Class:
        # Untagged work of a known user is that user's class (as qosfs names it for a
        # process outside any job): one class for all users would take the first
        # request's user policy for everyone's.
        key = (tag.job or (USER_CLASS + tag.user if tag.user else ""), tier)
        cls = self._classes.get(key)
        if cls is None:
            if len(self._classes) >= self.config.max_classes:
                self._make_room(now)
            policy = self.policies.resolve(tag, tier)
            cls = _Class(key, tag, policy, TokenBucket(UNLIMITED, 0.0, now),
                         next(self._order), idle_since=now, r_next=now)
            self._apply(cls, policy, now)
            self._classes[key] = cls
        return cls

    def _apply(self, cls: _Class, policy: Policy, now: float) -> None:
        cls.policy = policy
        cls.fraction = self.fraction(*cls.key)
        limit = cls.limit
        depth = 0.0
        if limit != math.inf:
            depth = float(policy.burst_bytes or max(self.config.default_burst,
                                                    limit * self.config.burst_seconds))
        cls.bucket.reconfigure(limit if limit != math.inf else UNLIMITED, depth, now)
        cls.plain = (not cls.bucket.limited and policy.reservation_bps <= 0
                     and cls.key[1] not in self._capacity)

    def _evict(self, now: float) -> None:
        # A sweep over every class per poll would cost more than the dispatch itself;
        # a tenth of the idle time is precise enough.
        if now < self._next_evict:
            return
        self._next_evict = now + self.config.idle_evict / 10
        idle = [k for k, c in self._classes.items()
                if not c.busy and now - c.idle_since >= self.config.idle_evict]
        for k in idle:
            del self._classes[k]

    def _make_room(self, now: float) -> None:
        """Evict idle classes, longest idle first, so a new one fits; a sixteenth of the
        cap at once, so a flood of new jobs pays this sweep once per many classes.
        ResourceExhausted when every class is busy."""
        cap = self.config.max_classes
        idle = sorted((c for c in self._classes.values() if not c.busy),
                      key=lambda c: c.idle_since)
        for c in idle[:max(1, len(self._classes) - cap + 1, cap // 16)]:
            del self._classes[c.key]
        if len(self._classes) >= cap:
            self.refused_classes += 1
            raise ResourceExhausted(f"too many classes ({cap} jobs and tiers with requests "
                                    "in progress)", None,
                                    "retry later, or raise max_classes in [scheduler]",
                                    "EAGAIN")

    # -- reading -------------------------------------------------------------------

    def classes(self) -> list[ClassKey]:
        return list(self._classes)

    def queued(self) -> int:
        return sum(len(c.queue) for c in self._classes.values())

    def stats(self, now: float) -> list[ClassStats]:
        out = []
        for cls in sorted(self._classes.values(), key=lambda c: c.order):
            # A waiting head keeps its lateness credit (see TokenBucket) when sampled.
            if cls.queue:
                cls.bucket.eligible_at(cls.queue[0].cost, now, cls.queue[0].arrival)
            else:
                cls.bucket.refill(now)
            p = cls.policy
            out.append(ClassStats(
                cls.key[0], cls.key[1], str(p.selector),
                0.0 if cls.limit == math.inf else cls.limit, p.reservation_bps, p.weight,
                cls.bucket.tokens, len(cls.queue), cls.in_flight, cls.bytes_read,
                cls.bytes_written, cls.requests, cls.rejected, cls.wait_total,
                cls.served.rate(now), cls.arrived.rate(now)))
        return out

    def demand(self, now: float) -> dict[ClassKey, Demand]:
        """Per tagged class over the last window: bytes/s arriving (what the job asks of
        us), bytes/s served, and bytes waiting now."""
        return {k: Demand(c.arrived.rate(now), c.served.rate(now),
                          sum(r.size for r in c.queue))
                for k, c in self._classes.items() if k[0]}


def _who(key: ClassKey) -> str:
    job, tier = key
    return f"job {job} on tier {tier}" if job else f"untagged I/O on tier {tier}"
