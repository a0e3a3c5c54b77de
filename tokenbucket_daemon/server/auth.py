"""Who may call what: every rpc is allowed to the roles in its caller's certificate.

The TLS layer has already refused anyone without a certificate of the daemons' CA; this
interceptor reads the verified certificate's common name (``ROLES:NAME``, see
:mod:`tokenbucket_daemon.pki`) and lets a call through only when one of its roles may use
the service: DataPlane the node agents (qosfs, root on a compute node), PeerService the
daemons, AdminService the administrators (who also show the admin token). Health and
reflection answer any caller the CA vouches for. A caller is never asked who it is: the
certificate says it.

A call without a certificate (it came in on the plaintext session port) is an agent's
only if it carries a valid seal of a data session the agent opened over TLS
(:mod:`tokenbucket_daemon.core.session`); then it may do what agents may, except open
another session. Without a seal, or with a bad one, it is UNAUTHENTICATED, and with a
seal for a service agents may not use, PERMISSION_DENIED.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message

from tokenbucket_daemon.core.session import Refusal, SessionTable
from tokenbucket_daemon.errors import ResourceExhausted
from tokenbucket_daemon.pki import parse_common_name
from tokenbucket_daemon.seal import OPEN, SEAL, SESSION_STATE, parse_seal, sealed_bytes
from tokenbucket_daemon.server.guard import Guard, guarded
from tokenbucket_daemon.server.limits import Admission
from tokenbucket_daemon.server.logbound import bounded

# Refusals are what an attacker makes happen at will: bounded and rate-limited.
log = bounded(logging.getLogger(__name__))

# Service (the method's prefix) -> roles that may call it.
ALLOWED: dict[str, frozenset[str]] = {
    "/qos.v1.DataPlane/": frozenset({"agent"}),
    "/qos.v1.PeerService/": frozenset({"daemon"}),
    "/qos.v1.AdminService/": frozenset({"admin"}),
    "/grpc.health.v1.Health/": frozenset({"agent", "daemon", "admin"}),
    "/grpc.reflection.": frozenset({"agent", "daemon", "admin"}),
}


def allowed_roles(method: str) -> frozenset[str]:
    for prefix, roles in ALLOWED.items():
        if method.startswith(prefix):
            return roles
    return frozenset()


def caller_roles(context: grpc.aio.ServicerContext) -> tuple[frozenset[str], str]:
    """The roles and name of the peer's verified certificate (none without TLS)."""
    return roles_of(context.auth_context() or {})


def roles_of(auth: dict[str, list[bytes]]) -> tuple[frozenset[str], str]:
    """The roles and name in a call's auth context (none on the session port, which
    has no TLS and so no certificate)."""
    names = auth.get("x509_common_name") or []
    if len(names) != 1:
        return frozenset(), ""
    return parse_common_name(names[0].decode("utf-8", "replace"))


class RoleInterceptor(grpc.aio.ServerInterceptor):
    """Refuses, with PERMISSION_DENIED, a call whose certificate lacks a role of its
    service, and with UNAUTHENTICATED a call with neither certificate nor a valid seal;
    the handler never runs. ``sessions`` None: this daemon has no session port."""

    def __init__(self, sessions: SessionTable | None = None,
                 clock: Callable[[], int] = time.time_ns, stream_wait: float = 30.0,
                 admission: Callable[[], Admission] | None = None) -> None:
        # stream_wait: how long a sealed stream may take to send the first message
        # the seal covers (the stream idle timeout; the handler's own bounds start later).
        # admission: the daemon's stream bounds, which that wait counts against, so
        # streams that never send cannot pile up before the handler's own count.
        self.sessions, self.clock, self.stream_wait = sessions, clock, stream_wait
        self.admission = admission

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        need = allowed_roles(method)
        seal = next((v for k, v in details.invocation_metadata or () if k == SEAL), None)

        async def check(context: grpc.aio.ServicerContext, first: _First) -> None:
            auth = context.auth_context() or {}
            roles, name = roles_of(auth)
            if not roles and auth.get("transport_security_type") != [b"ssl"]:
                # No certificate: the session port. The seal is the only credential.
                roles, name = await self._unseal(context, method, need, seal, first)
                if not roles:
                    log.warning("refused %s from %s: no certificate, no seal", method,
                                context.peer())
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                        f"{method} needs a certificate of the daemons' CA, "
                                        "or on the session port a seal of a data session")
            if not roles & need:
                who = f"{','.join(sorted(roles))}:{name}" if roles else "no certificate role"
                log.warning("refused %s from %s (%s)", method, context.peer(), who)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"{method} is not for {who}; it needs a certificate "
                                    f"with role {' or '.join(sorted(need)) or 'none'}")
        return guarded(handler, _Checked(check, self.stream_wait))

    async def _unseal(self, context: grpc.aio.ServicerContext, method: str,
                      need: frozenset[str], seal: str | bytes | None,
                      first: _First) -> tuple[frozenset[str], str]:
        if seal is None or self.sessions is None:
            return frozenset(), ""
        if method == OPEN or "agent" not in need:
            # A session opens nothing but the data plane; a new one takes a certificate.
            return frozenset({"session"}), "a data session"
        try:
            sid, counter, mac = parse_seal(str(seal))
        except ValueError:
            await self._refuse(context, method, Refusal("malformed seal"))
        # An unknown or expired session is refused before the daemon waits for, or reads,
        # anything of the call: a made-up seal holds no stream slot (only the agent,
        # which got the id over TLS, knows a live one).
        live = self.sessions.lookup(sid, self.clock())
        if isinstance(live, Refusal):
            await self._refuse(context, method, live)
        try:
            if first.stream is not None and self.admission is not None:
                with self.admission().stream(context.peer()):
                    request = await first.get()
            else:
                request = await first.get()
        except ResourceExhausted as e:
            context.set_trailing_metadata((("qos-errno", e.errno_name or "EMFILE"),))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"{method}: no first message within {self.stream_wait:g} s; "
                                "send the chunk the seal covers right away")
        if request is not None and not isinstance(request, Message):
            # The error interceptor's stand-in for a body that did not parse.
            await self._refuse(context, method, Refusal("the request does not parse"))
        got = self.sessions.check(sid, counter, mac, sealed_bytes(method, counter, request),
                                  self.clock())
        if isinstance(got, Refusal):
            await self._refuse(context, method, got)
        return frozenset({"agent"}), got.agent

    @staticmethod
    async def _refuse(context: grpc.aio.ServicerContext, method: str,
                      why: Refusal) -> NoReturn:
        log.warning("refused sealed %s from %s: %s", method, context.peer(), why.reason)
        if why.state:
            context.set_trailing_metadata(((SESSION_STATE, why.state),))
        hint = ("open a new session over TLS" if why.state else
                "seal each call with a fresh counter of a session opened over TLS")
        await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                            f"{method} refused: {why.reason}; {hint}")
        raise AssertionError("abort returned")


class _First:
    """A call's request for a check: the request itself, or a stream's first message,
    read only if the check asks (within ``wait`` seconds) and then handed on unread."""

    def __init__(self, request: Any = None, stream: Any = None, wait: float = 30.0) -> None:
        self.request, self.stream, self.wait, self.read = request, stream, wait, False

    async def get(self) -> Any:
        if self.stream is not None and not self.read:
            self.read = True
            try:
                # asyncio.timeout, not wait_for: no task per stream.
                async with asyncio.timeout(self.wait):
                    self.request = await self.stream.__anext__()
            except StopAsyncIteration:
                self.request = None
                self.stream = None
        return self.request

    def rest(self, original: Any) -> Any:
        if not self.read:
            return original
        if self.stream is None:
            return _Replay(None, None)
        return _Replay(self.request, self.stream)


class _Replay:
    """A request stream whose first message was read: it again, then the rest straight
    from gRPC (no generator in between: the data plane reads a stream chunk by chunk)."""

    __slots__ = ("first", "it")

    def __init__(self, first: Any, it: Any) -> None:
        self.first, self.it = first, it

    def __aiter__(self) -> _Replay:
        return self

    def __anext__(self) -> Awaitable[Any]:
        if self.first is not None:
            first, self.first = self.first, None
            return _ready(first)
        if self.it is None:
            return _ended()
        return self.it.__anext__()    # type: ignore[no-any-return]


async def _ready(value: Any) -> Any:
    return value


async def _ended() -> Any:
    raise StopAsyncIteration


Check = Callable[[Any, _First], Awaitable[None]]


class _Checked(Guard):
    """``check(context, first)`` before the behaviour; ``first.get()`` is the request (a
    stream's first message, None for an empty one)."""

    def __init__(self, check: Check, wait: float) -> None:
        self.check, self.wait = check, wait

    async def unary(self, request: Any, context: Any) -> Any:
        await self.check(context, _First(request))
        return request

    async def stream(self, requests: Any, context: Any) -> Any:
        first = _First(stream=requests.__aiter__(), wait=self.wait)
        await self.check(context, first)
        return first.rest(requests)
