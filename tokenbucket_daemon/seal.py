"""What a sealed data-plane call covers, and the agent's side of a data session.

Both ends build the sealed bytes here, so they cannot disagree: the method's full name, a
NUL, the counter (8 bytes, big-endian), then the request serialized; for a Write stream
its first message with the data left empty (payload bytes are not covered, see
docs/auth.md). The seal travels as metadata ``qos-seal`` =
``<session id hex>.<counter>.<mac hex>``.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from tokenbucket_daemon.core.session import ID_BYTES, KEY_BYTES, MAC_BYTES, mac_of
from tokenbucket_daemon.proto import qos_pb2 as pb

SEAL = "qos-seal"
SESSION_STATE = "qos-session"       # trailing metadata of a refused seal
PREFIX = "/qos.v1.DataPlane/"
OPEN = PREFIX + "OpenSession"
_MAX_TEXT = 2 * ID_BYTES + 1 + 19 + 1 + 2 * MAC_BYTES


def sealed_bytes(method: str, counter: int, request: Any) -> bytes:
    """The bytes a call's seal covers (``request`` None: an empty stream)."""
    if isinstance(request, pb.WriteChunk) and request.data:
        request = pb.WriteChunk(tag=request.tag, tier=request.tier, path=request.path,
                                offset=request.offset, fsync=request.fsync)
    body = request.SerializeToString() if request is not None else b""
    return method.encode() + b"\0" + counter.to_bytes(8, "big") + body


def parse_seal(text: str) -> tuple[bytes, int, bytes]:
    """(session id, counter, mac) of a ``qos-seal`` value; ValueError when malformed."""
    if len(text) > _MAX_TEXT:
        raise ValueError("seal too long")
    sid, counter, mac = text.split(".")
    if not counter.isascii() or not counter.isdigit() or len(counter) > 19:
        raise ValueError("bad counter")
    out = bytes.fromhex(sid), int(counter), bytes.fromhex(mac)
    if len(out[0]) != ID_BYTES or len(out[2]) != MAC_BYTES:
        raise ValueError("bad length")
    return out


@dataclass
class AgentSession:
    """A session the agent holds with one daemon: seals calls with a fresh counter each.
    Its life is timed on this host's monotonic clock from the daemon's lifetime, not by
    comparing wall clocks (a clock ahead by an hour would make every session stale)."""

    session_id: bytes
    key: bytes
    ends_mono_ns: int
    data_port: int
    lifetime_ns: int
    _counter: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_reply(cls, r: pb.OpenSessionReply, now_mono_ns: int | None = None) -> AgentSession:
        if len(r.session_id) != ID_BYTES or len(r.key) != KEY_BYTES or not r.data_port \
                or not r.lifetime_seconds:
            raise ValueError("malformed session reply")
        now = time.monotonic_ns() if now_mono_ns is None else now_mono_ns
        life = int(r.lifetime_seconds) * 10**9
        return cls(bytes(r.session_id), bytes(r.key), now + life, r.data_port, life)

    def fresh(self, now_mono_ns: int | None = None) -> bool:
        """Still good for a while: renewed once three quarters of its life are gone, so
        a call never starts on a session about to end."""
        now = time.monotonic_ns() if now_mono_ns is None else now_mono_ns
        return now < self.ends_mono_ns - self.lifetime_ns // 4

    def seal(self, method: str, request: Any) -> tuple[tuple[str, str]]:
        """The metadata that seals one call of ``method`` (full name) with ``request``."""
        with self._lock:        # FUSE threads and asyncio tasks share one session
            counter = next(self._counter)
        mac = mac_of(self.key, sealed_bytes(method, counter, request))
        return ((SEAL, f"{self.session_id.hex()}.{counter}.{mac.hex()}"),)


def session_state(trailing: Any) -> str:
    """"expired"/"unknown" when a call was refused for its session (open a new one)."""
    for k, v in trailing or ():
        if k == SESSION_STATE:
            return str(v)
    return ""


def data_address(address: str, port: int) -> str:
    """The session port on the host ``address`` (HOST:PORT, the TLS port) names."""
    return f"{address.rpartition(':')[0]}:{port}"


class SessionRoute:
    """Where an agent's data calls to one daemon go, and when it opens a data session:
    the decisions the agents (DataClient, qosfs's TierClient) share, without I/O. The
    agent asks, makes the calls, and says here what they gave; ``now_ns`` is this host's
    monotonic clock.

    The agent keeps one data channel, on the port of :attr:`session`, the last session
    opened, even once that is forgotten: a new session on the same port reuses it."""

    def __init__(self, address: str, wanted: bool) -> None:
        self.address = address      # the daemon's TLS address, HOST:PORT
        # False: data over TLS (no TLS, sessions not asked for, no session port).
        self.wanted = wanted
        self.session: AgentSession | None = None
        self._forgotten = False

    def must_open(self, now_ns: int) -> bool:
        """Open a session over TLS before the next data call: none yet, the last one
        forgotten, or about to end."""
        s = self.session
        return self.wanted and (s is None or self._forgotten or not s.fresh(now_ns))

    def open_failed(self, code: str) -> bool:
        """OpenSession failed with status ``code`` (its name). True: data go over TLS from
        now on (FAILED_PRECONDITION: the daemon has no session port); False: the failure
        is the agent's to report."""
        if code != "FAILED_PRECONDITION":
            return False
        self.wanted = False
        return True

    def opened(self, reply: pb.OpenSessionReply, now_ns: int) -> str | None:
        """Take the session ``reply`` gives. Returns the address to open a new data
        channel to (closing the old one) when there is none yet or the port moved (the
        daemon restarted), else None."""
        new = AgentSession.from_reply(reply, now_ns)
        old, self.session, self._forgotten = self.session, new, False
        if old is not None and old.data_port == new.data_port:
            return None
        return data_address(self.address, new.data_port)

    @property
    def sealing(self) -> AgentSession | None:
        """The session to seal the next data call with; None: over TLS. Once opened it
        is used even if already stale, so a call opens one session at most."""
        return self.session if self.wanted and not self._forgotten else None

    def retry(self, session: AgentSession | None, code: str, trailing: Any,
              retried: bool) -> bool:
        """A data call sealed with ``session`` (None: over TLS) failed with status
        ``code`` and ``trailing`` metadata. True: forget that session and make the call
        again, once (``retried``: it was made again already): the daemon restarted
        (UNAVAILABLE; its session port may have moved) or forgot the session
        (UNAUTHENTICATED saying so); a new one is opened over TLS."""
        if session is None or retried:
            return False
        if code != "UNAVAILABLE" and not (code == "UNAUTHENTICATED"
                                          and session_state(trailing)):
            return False
        if self.session is session:     # not one another call opened meanwhile
            self._forgotten = True
        return True


class SealedStub:
    """A DataPlane stub whose every call is sealed with ``session``; on the session port.

    Calls take the same arguments as the generated stub's; a stream's first message is
    read before the call starts, since the seal covers it."""

    def __init__(self, stub: Any, session: AgentSession) -> None:
        self._stub, self.session = stub, session

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._stub, name)
        method = PREFIX + name

        def call(request: Any, *args: Any, metadata: Any = (), **kw: Any) -> Any:
            if isinstance(request, Message):
                first = request
            else:
                it = iter(request)
                first = next(it, None)
                request = itertools.chain(() if first is None else (first,), it)
            md = tuple(metadata) + self.session.seal(method, first)
            return fn(request, *args, metadata=md, **kw)
        return call
