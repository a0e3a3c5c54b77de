"""Bandwidth policies and how a request's tag finds its policy.

A policy names who it governs (a selector: a job, a user, an account, or the
default), optionally one tier, and sets a limit (maximum bytes/s, 0 = none), a
reservation (guaranteed bytes/s), a weight (share of the spare capacity) and a
burst (bucket depth in bytes, 0 = the daemon's default). The most specific
selector wins (job > user > account > default); within one selector, a policy
for the request's tier beats one for every tier.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from enum import IntEnum

from tokenbucket_daemon.errors import InvalidArgument, NotFound

# 1 TB/s: no storage node we serve comes near it; a larger rate is a typo.
MAX_RATE = 1e12
MAX_WEIGHT = 1e6
MAX_BURST = 1 << 34      # 16 GiB
# A job id, user or account name: Slurm's ids ("4242_7", "4242+1"), POSIX and LDAP user
# names ("ana.b", "svc$", "ana@lab"), qosfs's per-user class ("user:ana"). Bounded so a
# class key, a stats row and a metric label stay small: 300 Stat calls with 1 MiB job
# ids once took the daemon from 88 to 550 MB and made its stats a 315 MB message.
MAX_NAME = 128
_NAME = re.compile(r"[A-Za-z0-9._@+=:$~-]*")
# A tier name in a policy (tiers are named in the daemon's config).
MAX_TIER = 128


def check_name(what: str, value: str) -> str:
    """``value`` if it is a valid job id, user or account name, else InvalidArgument."""
    if len(value) > MAX_NAME:
        raise InvalidArgument(f"{what} longer than {MAX_NAME} bytes", value,
                              f"send a {what} of at most {MAX_NAME} characters")
    if not _NAME.fullmatch(value):
        raise InvalidArgument(f"{what} has characters outside A-Z a-z 0-9 . _ @ + = : $ ~ -",
                              value, f"send the {what} as Slurm and the system name it")
    return value


class Scope(IntEnum):
    DAEMON = 0     # each daemon enforces the limit and reservation on its own
    GROUP = 1      # one limit for the job across the group, split by demand


class Kind(IntEnum):
    JOB = 1
    USER = 2
    ACCOUNT = 3
    DEFAULT = 4


@dataclass(frozen=True)
class Tag:
    """Who issued a request; an empty job is the default (untagged) class."""

    job: str = ""
    user: str = ""
    account: str = ""

    def checked(self) -> Tag:
        """This tag if every field is within :func:`check_name`'s bounds."""
        check_name("job_id", self.job)
        check_name("user", self.user)
        check_name("account", self.account)
        return self


@dataclass(frozen=True)
class Selector:
    kind: Kind
    value: str = ""

    def __str__(self) -> str:
        return "default" if self.kind is Kind.DEFAULT else f"{self.kind.name.lower()}={self.value}"

    @classmethod
    def parse(cls, text: str) -> Selector:
        """``job=42``, ``user=ana``, ``account=phys`` or ``default``."""
        if text == "default":
            return cls(Kind.DEFAULT)
        name, sep, value = text.partition("=")
        kinds = {"job": Kind.JOB, "user": Kind.USER, "account": Kind.ACCOUNT}
        if not sep or name not in kinds or not value:
            raise InvalidArgument("selector must be job=ID, user=NAME, account=NAME or default",
                                  text)
        return cls(kinds[name], value)


@dataclass(frozen=True)
class Policy:
    selector: Selector
    tier: str = ""                 # "" = every tier
    limit_bps: float = 0.0         # 0 = unlimited
    reservation_bps: float = 0.0
    weight: float = 1.0
    burst_bytes: int = 0           # 0 = daemon default
    updated_ns: int = 0
    origin: str = ""
    scope: Scope = Scope.DAEMON

    @property
    def key(self) -> tuple[Selector, str]:
        return (self.selector, self.tier)

    @property
    def limit(self) -> float:
        return self.limit_bps if self.limit_bps > 0 else math.inf

    def validated(self) -> Policy:
        """This policy, or InvalidArgument naming the first bad field."""
        s = self.selector
        if s.kind is not Kind.DEFAULT and not s.value:
            raise InvalidArgument(f"{s.kind.name.lower()} selector needs a value", s.value,
                                  "name the job, user or account")
        check_name(f"{s.kind.name.lower()} selector", s.value)
        if len(self.tier) > MAX_TIER:
            raise InvalidArgument(f"tier name longer than {MAX_TIER} characters", self.tier,
                                  "name a tier of the daemon's config")
        for name in ("limit_bps", "reservation_bps"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise InvalidArgument(f"{name} must be a finite rate >= 0 bytes/s", v,
                                      "give e.g. 200MiB/s")
            if v > MAX_RATE:
                raise InvalidArgument(f"{name} is above 1 TB/s", v,
                                      "check the unit (bytes per second)")
        if self.limit_bps > 0 and self.reservation_bps > self.limit_bps:
            raise InvalidArgument("reservation exceeds the limit",
                                  f"{self.reservation_bps:g} > {self.limit_bps:g}",
                                  "lower the reservation or raise the limit")
        if not math.isfinite(self.weight) or self.weight < 0 or self.weight > MAX_WEIGHT:
            raise InvalidArgument("weight must be between 0 and 1e6 (0 = default 1)",
                                  self.weight, "give e.g. --weight 2")
        if self.burst_bytes < 0 or self.burst_bytes > MAX_BURST:
            raise InvalidArgument("burst must be between 0 and 16 GiB", self.burst_bytes,
                                  "give e.g. --burst 4MiB")
        if self.scope is Scope.GROUP and (s.kind is not Kind.JOB or self.limit_bps <= 0
                                          or self.reservation_bps > 0):
            raise InvalidArgument("group scope is for a job's limit only", str(s),
                                  "use scope group with a job selector, a limit and no "
                                  "reservation")
        return replace(self, weight=self.weight or 1.0)


DEFAULT_POLICY = Policy(Selector(Kind.DEFAULT))


class PolicyTable:
    """The policies in force, keyed by (selector, tier)."""

    def __init__(self, policies: list[Policy] | None = None) -> None:
        self._by_key: dict[tuple[Selector, str], Policy] = {}
        for p in policies or []:
            self.put(p)

    def put(self, policy: Policy) -> Policy:
        p = policy.validated()
        self._by_key[p.key] = p
        return p

    def delete(self, selector: Selector, tier: str = "") -> Policy:
        try:
            return self._by_key.pop((selector, tier))
        except KeyError:
            where = f" on tier {tier}" if tier else ""
            raise NotFound(f"no policy for {selector}{where}", None,
                           "list them with qosctl policy list") from None

    def get(self, selector: Selector, tier: str = "") -> Policy | None:
        return self._by_key.get((selector, tier))

    def all(self) -> list[Policy]:
        return sorted(self._by_key.values(),
                      key=lambda p: (p.selector.kind, p.selector.value, p.tier))

    def resolve(self, tag: Tag, tier: str) -> Policy:
        """The most specific policy for ``tag`` on ``tier``."""
        for sel in _selectors(tag):
            for t in (tier, ""):
                p = self._by_key.get((sel, t))
                if p is not None:
                    return p
        return DEFAULT_POLICY

    def __len__(self) -> int:
        return len(self._by_key)


def _selectors(tag: Tag) -> list[Selector]:
    out = []
    if tag.job:
        out.append(Selector(Kind.JOB, tag.job))
    if tag.user:
        out.append(Selector(Kind.USER, tag.user))
    if tag.account:
        out.append(Selector(Kind.ACCOUNT, tag.account))
    out.append(Selector(Kind.DEFAULT))
    return out
