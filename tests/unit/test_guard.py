"""tokenbucket_daemon/server/guard.py: one guard around each of gRPC's four handler kinds,
called directly (no server): the hooks run, a behaviour's shape is kept, failures go to
the guard."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from tokenbucket_daemon.server.guard import Guard, guarded


class Tagging(Guard):
    """Upper-cases a unary request, prefixes a stream, and records what failed."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    async def unary(self, request: Any, context: Any) -> Any:
        return request.upper()

    async def stream(self, requests: Any, context: Any) -> Any:
        async def more() -> AsyncIterator[str]:
            yield "first"
            async for r in requests:
                yield r
        return more()

    async def failed(self, context: Any, e: BaseException) -> None:
        self.failures.append(str(e))


async def items(*values: str) -> AsyncIterator[str]:
    for v in values:
        yield v


async def collect(it: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in it]


def test_each_kind_gets_the_guards_request() -> None:
    async def uu(request: str, context: Any) -> str:
        return request

    async def su(requests: AsyncIterator[str], context: Any) -> list[str]:
        return await collect(requests)

    async def us(request: str, context: Any) -> AsyncIterator[str]:
        yield request
        yield request

    async def ss(requests: AsyncIterator[str], context: Any) -> AsyncIterator[str]:
        async for r in requests:
            yield r

    g = Tagging()

    async def run() -> None:
        h = guarded(grpc.unary_unary_rpc_method_handler(uu), g)
        assert await h.unary_unary("a", None) == "A"
        h = guarded(grpc.stream_unary_rpc_method_handler(su), g)
        assert await h.stream_unary(items("b"), None) == ["first", "b"]
        h = guarded(grpc.unary_stream_rpc_method_handler(us), g)
        assert inspect.isasyncgenfunction(h.unary_stream)
        assert await collect(h.unary_stream("c", None)) == ["C", "C"]
        h = guarded(grpc.stream_stream_rpc_method_handler(ss), g)
        assert await collect(h.stream_stream(items("d"), None)) == ["first", "d"]
    asyncio.run(run())
    assert g.failures == []


def test_a_streaming_coroutine_that_writes_stays_a_coroutine() -> None:
    written: list[str] = []

    class Context:
        async def write(self, message: str) -> None:
            written.append(message)

    async def watch(request: str, context: Any) -> None:
        await context.write(request)

    h = guarded(grpc.unary_stream_rpc_method_handler(watch), Tagging())
    assert inspect.iscoroutinefunction(h.unary_stream)
    asyncio.run(h.unary_stream("w", Context()))
    assert written == ["W"]


def test_failures_go_to_the_guard_and_on_unless_it_ends_the_call() -> None:
    async def uu(request: str, context: Any) -> str:
        raise ValueError(f"bad {request}")

    async def us(request: str, context: Any) -> AsyncIterator[str]:
        yield "one"
        raise ValueError("mid-stream")

    g = Tagging()
    with pytest.raises(ValueError, match="bad A"):
        asyncio.run(guarded(grpc.unary_unary_rpc_method_handler(uu), g).unary_unary("a", None))
    with pytest.raises(ValueError, match="mid-stream"):
        asyncio.run(collect(guarded(grpc.unary_stream_rpc_method_handler(us), g)
                            .unary_stream("a", None)))
    assert g.failures == ["bad A", "mid-stream"]


def test_a_stream_closed_early_is_not_a_failure() -> None:
    async def us(request: str, context: Any) -> AsyncIterator[str]:
        while True:
            yield request

    g = Tagging()

    async def run() -> None:
        it = guarded(grpc.unary_stream_rpc_method_handler(us), g).unary_stream("x", None)
        assert await it.__anext__() == "X"
        await it.aclose()
    asyncio.run(run())
    assert g.failures == []


def test_the_guard_chooses_the_parsers() -> None:
    class Parsing(Guard):
        def parsers(self, deserializer: Any) -> tuple[Any, Any]:
            return (lambda raw: ("unary", raw)), (lambda raw: ("stream", raw))

    async def uu(request: Any, context: Any) -> Any:
        return request

    async def ss(requests: Any, context: Any) -> AsyncIterator[Any]:
        yield requests

    assert guarded(grpc.unary_unary_rpc_method_handler(uu), Parsing()) \
        .request_deserializer(b"r") == ("unary", b"r")
    assert guarded(grpc.stream_stream_rpc_method_handler(ss), Parsing()) \
        .request_deserializer(b"r") == ("stream", b"r")
