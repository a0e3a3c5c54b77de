"""Data sessions: the keys node agents seal their data-plane calls with (sans-I/O).

A node agent proves once, over mutual TLS, that it is an agent; the daemon gives it a
session (an id and a random key). From then on each data-plane call travels on the
plaintext session port with a seal: a counter used once and an HMAC under the key of the
call's method, counter and request (without its payload bytes). The daemon checks the
seal here and so knows, per call, which agent asks and that nobody changed what it asks
(job, caller, tier, path, offset, length) or replayed it, without TLS on every byte (the
cost is measured in benchmarks/sdqos/tls.md; the trade-off is argued in docs/auth.md).

This module holds the rule and the state; time and randomness are parameters, so tests
drive it with synthetic clocks. The servicer adapter is tokenbucket_daemon/server/auth.py.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from dataclasses import dataclass, field

ID_BYTES = 16
KEY_BYTES = 32
MAC_BYTES = 16          # HMAC-SHA256 cut to 128 bits: forging it is still 2^-128 a try
RANDOM_BYTES = ID_BYTES + KEY_BYTES
WINDOW = 4096           # a late call may arrive this far below the highest counter seen
MAX_COUNTER = (1 << 63) - 1


def mac_of(key: bytes, body: bytes) -> bytes:
    """The seal of ``body`` under ``key``."""
    return hmac.digest(key, body, "sha256")[:MAC_BYTES]


@dataclass
class Session:
    """One agent's session: its key, when it ends, and the counters already used."""

    session_id: bytes
    key: bytes
    agent: str
    expires_ns: int
    highest: int = 0
    # Bit i set: counter ``highest - i`` was used. Bit 0 is ``highest`` itself.
    seen: int = 0

    def take(self, counter: int, window: int) -> str:
        """Use ``counter``; "" when it was fresh, else why not."""
        if counter > self.highest:
            shift = counter - self.highest
            # A jump past the window forgets it: shifting first would build an integer
            # of `shift` bits (a counter of 2^36 is gigabytes) before the mask.
            self.seen = 1 if shift >= window else ((self.seen << shift) | 1) & ((1 << window) - 1)
            self.highest = counter
            return ""
        back = self.highest - counter
        if back >= window:
            return "too old"
        if self.seen >> back & 1:
            return "replayed"
        self.seen |= 1 << back
        return ""


@dataclass(frozen=True)
class Refusal:
    """Why a seal was not accepted; ``state`` is what the agent should do about it:
    "expired" or "unknown" (open a new session), "" (nothing: the call was not its)."""

    reason: str
    state: str = ""


@dataclass
class SessionTable:
    """Every open session of this daemon, bounded: at most ``per_agent`` per agent and
    ``max_sessions`` in all, the oldest going first (an agent opens one per daemon and
    mount; more means it restarted, and its old sessions are dead)."""

    lifetime_ns: int
    max_sessions: int = 4096
    per_agent: int = 64
    window: int = WINDOW
    _sessions: OrderedDict[bytes, Session] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, agent: str, now_ns: int, random: bytes) -> Session:
        """A new session for ``agent``; ``random`` is RANDOM_BYTES from a CSPRNG."""
        if len(random) != RANDOM_BYTES:
            raise ValueError(f"a session needs {RANDOM_BYTES} random bytes, got "
                             f"{len(random)}")
        self._drop_expired(now_ns)
        mine = [sid for sid, s in self._sessions.items() if s.agent == agent]
        for sid in mine[:max(0, len(mine) - self.per_agent + 1)]:
            del self._sessions[sid]
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        s = Session(random[:ID_BYTES], random[ID_BYTES:], agent, now_ns + self.lifetime_ns)
        self._sessions[s.session_id] = s
        return s

    def lookup(self, session_id: bytes, now_ns: int) -> Session | Refusal:
        """The live session of this id, or why there is none (unknown, expired): asked
        before anything of the call is read, so a made-up seal costs the daemon nothing."""
        s = self._sessions.get(session_id)
        if s is None:
            return Refusal("unknown session", "unknown")
        if now_ns >= s.expires_ns:
            del self._sessions[session_id]
            return Refusal("session expired", "expired")
        return s

    def check(self, session_id: bytes, counter: int, mac: bytes, body: bytes,
              now_ns: int) -> Session | Refusal:
        """The session a sealed call belongs to, or why the seal fails. The mac is checked
        before the counter is used, so a forged call cannot burn a real one's counter."""
        s = self.lookup(session_id, now_ns)
        if isinstance(s, Refusal):
            return s
        if not 0 < counter <= MAX_COUNTER:
            return Refusal(f"counter {counter} out of range")
        if not hmac.compare_digest(mac, mac_of(s.key, body)):
            return Refusal("the seal does not match the call")
        why = s.take(counter, self.window)
        if why:
            return Refusal(f"counter {counter} {why}")
        return s

    def _drop_expired(self, now_ns: int) -> None:
        for sid in [sid for sid, s in self._sessions.items() if now_ns >= s.expires_ns]:
            del self._sessions[sid]
