"""One daemon's copy of its group's policies: etcd is the truth, SQLite the fallback.

A group of daemons keeps its policies in etcd, one key per (selector, tier) under a
prefix. Each daemon reads the whole prefix when it connects (a *snapshot* at one
revision), then follows etcd's watch from the next revision; every change it applies is
also persisted to its SQLite copy, with the revision, so a daemon that restarts while
etcd is unreachable serves what it last saw. Order is etcd's revision, never a clock a
peer could set: an event below the revision already reflected is a replay and changes
nothing, and a snapshot replaces everything (what etcd no longer has is gone).

A lone daemon (no etcd) has no revisions: administrators' changes are applied and
persisted as they come (``LocalPut``, ``LocalDelete``).

:class:`Replica` is sans-I/O: events in (``Restored``, ``Snapshot``, ``Put``,
``Deleted``, ``Unreachable``, ``LocalPut``, ``LocalDelete``), instructions out
(``Apply``, ``Remove``, ``Persist``, ``Log``). The daemon's shell
(``server/replication.py``) reads etcd and SQLite and carries the instructions out. The
key and value encodings of a policy in etcd live here too, so they are tested without
etcd.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from tokenbucket_daemon.core.policy import Kind, Policy, Scope, Selector
from tokenbucket_daemon.errors import InvalidArgument

Key = tuple[Selector, str]           # (selector, tier); tier "" = every tier

# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Restored:
    """The SQLite copy, read at start: the policies and the etcd revision they reflect
    (0: never synchronised, or a lone daemon)."""

    policies: tuple[Policy, ...]
    revision: int


@dataclass(frozen=True)
class Snapshot:
    """Every policy under the prefix, read from etcd at ``revision``."""

    revision: int
    policies: tuple[Policy, ...]


@dataclass(frozen=True)
class Put:
    """A policy key was written at ``revision`` (from the watch)."""

    revision: int
    policy: Policy


@dataclass(frozen=True)
class Deleted:
    """A policy key was deleted at ``revision``, or written with a value that is not
    a valid policy (every daemon drops it alike)."""

    revision: int
    key: Key


@dataclass(frozen=True)
class Unreachable:
    """etcd could not be read or watched (at ``now``, monotonic seconds)."""

    now: float
    reason: str


@dataclass(frozen=True)
class LocalPut:
    """A lone daemon's administrator set a policy."""

    policy: Policy


@dataclass(frozen=True)
class LocalDelete:
    """A lone daemon's administrator deleted a policy."""

    key: Key


Event = Restored | Snapshot | Put | Deleted | Unreachable | LocalPut | LocalDelete

# --------------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Apply:
    """Put ``policy`` in force (new, or changed)."""

    policy: Policy


@dataclass(frozen=True)
class Remove:
    """Take the policy of ``key`` out of force."""

    key: Key


@dataclass(frozen=True)
class Persist:
    """Write these changes and the revision to the SQLite copy, in one transaction."""

    upserts: tuple[Policy, ...]
    deletes: tuple[Key, ...]
    revision: int


@dataclass(frozen=True)
class Log:
    """Something an operator should see: ``level`` is ``"info"`` or ``"warning"``."""

    level: str
    message: str


Instruction = Apply | Remove | Persist | Log


class Replica:
    """The policies this daemon enforces and the etcd revision they reflect."""

    def __init__(self) -> None:
        self.policies: dict[Key, Policy] = {}
        self.revision = 0
        # True while what is served is the SQLite copy, not a live view of etcd.
        self.serving_copy = True
        self._down_since: float | None = None

    def handle(self, *events: Event) -> list[Instruction]:
        out: list[Instruction] = []
        for e in events:
            out.extend(self._one(e))
        return out

    def _one(self, e: Event) -> list[Instruction]:
        if isinstance(e, Restored):
            return self._replace(e.policies, e.revision, persist=False)
        if isinstance(e, Snapshot):
            out: list[Instruction] = []
            if e.revision < self.revision:
                # Only a restored backup or a new cluster goes back; etcd is still the
                # truth, but an operator should know the copy was from elsewhere.
                out.append(Log("warning", f"etcd's revision went back from {self.revision} "
                                          f"to {e.revision}: its data was replaced; "
                                          "following it"))
            if self.serving_copy:
                out.append(Log("info", f"policies from etcd at revision {e.revision} "
                                       f"({len(e.policies)} policies)"))
            self.serving_copy = False
            self._down_since = None
            return out + self._replace(e.policies, e.revision, persist=True)
        # Below the revision reflected: a replay. At it: another key of the same
        # transaction (a release deletes all of a job's keys at one revision).
        if isinstance(e, Put):
            if e.revision < self.revision:
                return []
            self.revision = e.revision
            return self._set(e.policy, e.revision)
        if isinstance(e, Deleted):
            if e.revision < self.revision:
                return []
            self.revision = e.revision
            return self._drop(e.key, e.revision)
        if isinstance(e, Unreachable):
            if self._down_since is not None:
                return []       # already said
            self._down_since = e.now
            self.serving_copy = True
            return [Log("warning", f"etcd unreachable ({e.reason}): serving the "
                                   f"{len(self.policies)} policies of the SQLite copy at "
                                   f"revision {self.revision}; admin changes are refused "
                                   "until it is back")]
        if isinstance(e, LocalPut):
            return self._set(e.policy, self.revision)
        return self._drop(e.key, self.revision)

    def _set(self, p: Policy, revision: int) -> list[Instruction]:
        if self.policies.get(p.key) == p:
            return [Persist((), (), revision)]
        self.policies[p.key] = p
        return [Apply(p), Persist((p,), (), revision)]

    def _drop(self, key: Key, revision: int) -> list[Instruction]:
        if self.policies.pop(key, None) is None:
            return [Persist((), (), revision)]
        return [Remove(key), Persist((), (key,), revision)]

    def _replace(self, policies: Iterable[Policy], revision: int,
                 persist: bool) -> list[Instruction]:
        new = {p.key: p for p in policies}
        out: list[Instruction] = []
        gone = sorted((k for k in self.policies if k not in new), key=_order)
        changed = [p for k, p in sorted(new.items(), key=lambda kv: _order(kv[0]))
                   if self.policies.get(k) != p]
        out += [Remove(k) for k in gone]
        out += [Apply(p) for p in changed]
        self.policies = new
        self.revision = revision
        if persist:
            out.append(Persist(tuple(changed), tuple(gone), revision))
        return out


def _order(k: Key) -> tuple[int, str, str]:
    return (int(k[0].kind), k[0].value, k[1])


# ------------------------------------------------------------------ etcd encoding

_KIND_NAMES = {Kind.JOB: "job", Kind.USER: "user", Kind.ACCOUNT: "account",
               Kind.DEFAULT: "default"}
_KINDS = {v: k for k, v in _KIND_NAMES.items()}
EVERY_TIER = "*"         # quote() never yields "*", so it cannot be a tier's name
MAX_VALUE = 4096         # bytes: a policy is ~200; anything larger is not one of ours


def policy_key(prefix: str, key: Key) -> str:
    """``PREFIX policies/KIND/VALUE/TIER``, value and tier percent-encoded ("/" too)."""
    sel, tier = key
    return (f"{prefix}policies/{_KIND_NAMES[sel.kind]}/{quote(sel.value, safe='')}/"
            f"{quote(tier, safe='') if tier else EVERY_TIER}")


def job_prefix(prefix: str, job: str) -> str:
    """The prefix of every key of ``job``'s policies (every tier)."""
    return f"{prefix}policies/job/{quote(job, safe='')}/"


def key_from_etcd(prefix: str, key: str) -> Key:
    """The (selector, tier) of an etcd key; InvalidArgument when it is not one."""
    head = f"{prefix}policies/"
    parts = key[len(head):].split("/") if key.startswith(head) else []
    if len(parts) != 3 or parts[0] not in _KINDS or not parts[2]:
        raise InvalidArgument("not a policy key", key, f"keys are {head}KIND/VALUE/TIER")
    kind = _KINDS[parts[0]]
    value = unquote(parts[1])
    if (kind is Kind.DEFAULT) != (value == ""):
        raise InvalidArgument("selector value does not fit its kind", key,
                              "default has no value, the others one")
    return Selector(kind, value), "" if parts[2] == EVERY_TIER else unquote(parts[2])


def value_of(p: Policy) -> str:
    """The JSON stored in etcd for ``p`` (its key says selector and tier)."""
    return json.dumps({"limit_bps": p.limit_bps, "reservation_bps": p.reservation_bps,
                       "weight": p.weight, "burst_bytes": p.burst_bytes,
                       "scope": p.scope.name.lower(), "updated_ns": p.updated_ns,
                       "origin": p.origin}, sort_keys=True)


def policy_from_etcd(key: Key, value: bytes) -> Policy:
    """The validated policy stored under ``key``; InvalidArgument when the value is not
    one (every daemon then drops the key alike)."""
    if len(value) > MAX_VALUE:
        raise InvalidArgument("policy value too large", len(value),
                              f"a policy is at most {MAX_VALUE} bytes")
    try:
        raw = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("policy value is not JSON", value[:60], "") from None
    want = {"limit_bps", "reservation_bps", "weight", "burst_bytes", "scope", "updated_ns",
            "origin"}
    if not isinstance(raw, dict) or set(raw) != want:
        raise InvalidArgument("policy value has the wrong fields",
                              sorted(raw) if isinstance(raw, dict) else raw,
                              f"expected {', '.join(sorted(want))}")
    nums = ("limit_bps", "reservation_bps", "weight")
    if any(isinstance(raw[n], bool) or not isinstance(raw[n], (int, float))
           or not math.isfinite(raw[n]) for n in nums) \
            or any(isinstance(raw[n], bool) or not isinstance(raw[n], int)
                   for n in ("burst_bytes", "updated_ns")) \
            or raw["scope"] not in ("daemon", "group") or not isinstance(raw["origin"], str):
        raise InvalidArgument("policy value has a field of the wrong type", raw, "")
    sel, tier = key
    return Policy(sel, tier, float(raw["limit_bps"]), float(raw["reservation_bps"]),
                  float(raw["weight"]), raw["burst_bytes"], raw["updated_ns"], raw["origin"],
                  Scope[raw["scope"].upper()]).validated()
