"""A grpc method handler of any kind with something done around its behaviour.

gRPC has four kinds of handler (unary or stream request, unary or stream response), each
built by its own function, and a streaming response comes either from an async generator
or from a coroutine that writes with ``context.write``. :func:`guarded` is the one place
that knows them; an interceptor says only what to do, as a :class:`Guard`.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

Handler = Any          # grpc.RpcMethodHandler: its four behaviour slots, one set
Behaviour = Callable[[Any, Any], Any]
Start = Callable[[Any, Any], Awaitable[Any]]


class Guard:
    """What a guarded handler does around its behaviour; each default does nothing."""

    async def unary(self, request: Any, context: Any) -> Any:
        """Before a call with one request: the request the behaviour gets."""
        return request

    async def stream(self, requests: Any, context: Any) -> Any:
        """Before a call with a request stream: the stream the behaviour gets."""
        return requests

    async def failed(self, context: Any, e: BaseException) -> None:
        """``e`` came out of the call (a hook above or the behaviour): end the call here
        (abort), or return to let ``e`` propagate."""

    def parsers(self, deserializer: Any) -> tuple[Any, Any]:
        """The request deserializers for a unary request and for a stream's messages."""
        return deserializer, deserializer


def guarded(handler: Handler, guard: Guard) -> Handler:
    """``handler`` with ``guard`` around its behaviour, whichever kind it is."""
    parse_unary, parse_stream = guard.parsers(handler.request_deserializer)
    out = handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _awaited(handler.unary_unary, guard.unary, guard), parse_unary, out)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _awaited(handler.stream_unary, guard.stream, guard), parse_stream, out)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _responses(handler.unary_stream, guard.unary, guard), parse_unary, out)
    return grpc.stream_stream_rpc_method_handler(
        _responses(handler.stream_stream, guard.stream, guard), parse_stream, out)


def _awaited(inner: Behaviour, start: Start, guard: Guard) -> Behaviour:
    async def call(request: Any, context: Any) -> Any:
        try:
            return await inner(await start(request, context), context)
        except BaseException as e:
            await guard.failed(context, e)
            raise
    return call


def _responses(inner: Behaviour, start: Start, guard: Guard) -> Behaviour:
    """A streaming behaviour keeps its shape: a generator stays one, a coroutine that
    writes stays one."""
    if not inspect.isasyncgenfunction(inner):
        return _awaited(inner, start, guard)

    async def call(request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            async for item in inner(await start(request, context), context):
                yield item
        except GeneratorExit:
            raise               # the call is over; an async generator may not await now
        except BaseException as e:
            await guard.failed(context, e)
            raise
    return call
