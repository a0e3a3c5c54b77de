"""The daemon's own server interceptors: errors to status codes, and health.

:func:`error_interceptor` is the one place a :class:`~tokenbucket_daemon.errors.DaemonError`
becomes its status code (the servicers only raise), with the file system's errno in the
``qos-errno`` trailer. Anything else a handler raises is a bug: the caller gets INTERNAL
with a short message, never a traceback, and the log one rate-limited line with it. A
message that cannot be parsed is INVALID_ARGUMENT (gRPC's own answer would be UNKNOWN,
with the parser's words).

:func:`health_interceptor` makes the health service answer NOT_SERVING for "" and
qos.v1.DataPlane while the daemon cannot serve data (every I/O thread stuck, descriptors
short: :meth:`Node.health_problem`), on top of what the daemon set (SERVING once started,
NOT_SERVING while it stops).

:func:`daemon_interceptors` gives both, for ``grpc.aio.server(interceptors=...)``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from tokenbucket_daemon.errors import MAX_MESSAGE, DaemonError, InvalidArgument, shorten
from tokenbucket_daemon.server.guard import Guard, Handler, guarded
from tokenbucket_daemon.server.limits import Limits
from tokenbucket_daemon.server.logbound import bounded
from tokenbucket_daemon.server.service import Node

log = bounded(logging.getLogger(__name__))

HEALTH = "/grpc.health.v1.Health/"
# Health of these names follows the daemon's ability to serve data; AdminService and
# PeerService keep answering from the descriptors kept in reserve.
DATA_HEALTH = ("", "qos.v1.DataPlane")


def daemon_interceptors(node: Node, limits: Limits) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors of a daemon serving ``node``, which is put under ``limits``."""
    node.set_limits(limits)
    return [health_interceptor(node), error_interceptor()]


async def abort_with(context: grpc.aio.ServicerContext, e: DaemonError) -> None:
    """End the call with ``e``'s status and one-line message; a file system errno rides
    along as ``qos-errno``."""
    trailer = (("qos-errno", e.errno_name),) if e.errno_name else ()
    await context.abort(grpc.StatusCode[e.code], shorten(str(e), MAX_MESSAGE),
                        trailing_metadata=trailer)


class _Malformed:
    """What a request that could not be parsed becomes for a unary handler."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parse_error(e: Exception) -> InvalidArgument:
    return InvalidArgument("request message could not be parsed", shorten(str(e), 120),
                           "send a message of the rpc's request type")


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Handler]],
                                details: grpc.HandlerCallDetails) -> Handler:
        handler = await continuation(details)
        if handler is None:
            return None
        return _wrap(handler, details.method)


def error_interceptor() -> grpc.aio.ServerInterceptor:
    """Every DaemonError to its status, everything else to a short INTERNAL."""
    return ErrorInterceptor()


async def _fail(context: grpc.aio.ServicerContext, method: str, e: BaseException) -> None:
    """End the call for an exception out of its handler (always raises)."""
    if isinstance(e, DaemonError):
        await abort_with(context, e)
    log.error("%s failed unexpectedly: %s: %s", method, type(e).__name__, e,
              exc_info=(type(e), e, e.__traceback__))
    await context.abort(grpc.StatusCode.INTERNAL,
                        f"internal error in {method} ({type(e).__name__}); the daemon's log "
                        "has the details")


def _passes(e: BaseException) -> bool:
    """An exception that is already a status (abort) or not ours to turn into one."""
    return isinstance(e, (grpc.aio.AbortError, asyncio.CancelledError))


def _wrap(handler: Handler, method: str) -> Handler:
    """``handler`` with its behaviour's exceptions turned into statuses; sync behaviours
    (none of ours) are left as they are."""
    behaviour = (handler.unary_unary or handler.stream_unary or handler.unary_stream
                 or handler.stream_stream)
    if not (inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)):
        return handler
    return guarded(handler, _Errors(method))


class _Errors(Guard):
    """A request that does not parse is INVALID_ARGUMENT, any other exception its status."""

    def __init__(self, method: str) -> None:
        self.method = method

    async def unary(self, request: Any, context: Any) -> Any:
        if isinstance(request, _Malformed):
            raise _parse_error(ValueError(request.reason))
        return request

    async def failed(self, context: Any, e: BaseException) -> None:
        if not _passes(e):
            await _fail(context, self.method, e)

    def parsers(self, deserializer: Any) -> tuple[Any, Any]:
        def parse_unary(raw: bytes) -> Any:
            try:
                return deserializer(raw) if deserializer is not None else raw
            except Exception as e:        # noqa: BLE001 - any parser failure is the caller's
                return _Malformed(str(e))

        def parse_stream(raw: bytes) -> Any:
            try:
                return deserializer(raw) if deserializer is not None else raw
            except Exception as e:        # noqa: BLE001
                raise _parse_error(e) from None
        return parse_unary, parse_stream


# ---------------------------------------------------------------------------- health


class HealthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, node: Node, interval: float = 1.0) -> None:
        self.node = node
        self.interval = interval      # how often a Watch looks at the node again

    def effective(self, service: str, status: int) -> int:
        """``status`` as the health servicer has it, or NOT_SERVING while the node cannot
        serve data."""
        if status != health_pb2.HealthCheckResponse.SERVING or service not in DATA_HEALTH:
            return status
        problem = self.node.health_problem()
        if not problem:
            return status
        log.warning("health of %r is NOT_SERVING: %s", service, problem)
        return health_pb2.HealthCheckResponse.NOT_SERVING

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Handler]],
                                details: grpc.HandlerCallDetails) -> Handler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(HEALTH):
            return handler
        if details.method.endswith("/Check") and handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._check(handler.unary_unary), handler.request_deserializer,
                handler.response_serializer)
        if details.method.endswith("/Watch") and handler.unary_stream and \
                inspect.iscoroutinefunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                self._watch(handler.unary_stream), handler.request_deserializer,
                handler.response_serializer)
        return handler

    def _check(self, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def check(request: Any, context: Any) -> Any:
            reply = await inner(request, context)
            status = self.effective(request.service, reply.status)
            return reply if status == reply.status else \
                health_pb2.HealthCheckResponse(status=status)
        return check

    def _watch(self, inner: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        async def watch(request: Any, context: Any) -> None:
            # The servicer writes when its own status changes; the node's state is looked
            # at every interval too. Both go through send, which writes changes only.
            lock = asyncio.Lock()
            state: dict[str, int | None] = {"inner": None, "sent": None}

            async def send() -> None:
                if state["inner"] is None:
                    return
                status = self.effective(request.service, int(state["inner"]))
                async with lock:
                    if status != state["sent"]:
                        state["sent"] = status
                        await context.write(health_pb2.HealthCheckResponse(status=status))

            class Relay:
                """The servicer's context, its writes going through ``send``."""

                def __getattr__(self, name: str) -> Any:
                    return getattr(context, name)

                async def write(self, message: Any) -> None:
                    state["inner"] = message.status
                    await send()

            task = asyncio.ensure_future(inner(request, Relay()))
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=self.interval)
                    await send()
                await task
            finally:
                task.cancel()
        return watch


def health_interceptor(node: Node) -> grpc.aio.ServerInterceptor:
    """Health of "" and qos.v1.DataPlane NOT_SERVING while ``node`` cannot serve data."""
    return HealthInterceptor(node)
