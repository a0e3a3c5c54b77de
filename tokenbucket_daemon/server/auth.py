"""Who may call what: every rpc is allowed to the roles in its caller's certificate.

The TLS layer has already refused anyone without a certificate of the daemons' CA; this
interceptor reads the verified certificate's common name (``ROLES:NAME``, see
:mod:`tokenbucket_daemon.pki`) and lets a call through only when one of its roles may use
the service: DataPlane the node agents (qosfs, root on a compute node), PeerService the
daemons, AdminService the administrators (who also show the admin token). Health and
reflection answer any caller the CA vouches for. A caller is never asked who it is: the
certificate says it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from tokenbucket_daemon.pki import parse_common_name

log = logging.getLogger(__name__)

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
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or []
    if len(names) != 1:
        return frozenset(), ""
    return parse_common_name(names[0].decode("utf-8", "replace"))


class RoleInterceptor(grpc.aio.ServerInterceptor):
    """Refuses, with PERMISSION_DENIED, a call whose certificate lacks a role of its
    service; the handler never runs."""

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        need = allowed_roles(method)

        async def check(context: grpc.aio.ServicerContext) -> None:
            roles, name = caller_roles(context)
            if not roles & need:
                who = f"{','.join(sorted(roles))}:{name}" if roles else "no certificate role"
                log.warning("refused %s from %s (%s)", method, context.peer(), who)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"{method} is not for {who}; it needs a certificate "
                                    f"with role {' or '.join(sorted(need)) or 'none'}")
        return _guarded(handler, check)


def _guarded(handler: Any, check: Callable[[Any], Awaitable[None]]) -> Any:
    """``handler`` with ``check(context)`` run before its behaviour, for each kind."""
    if handler.unary_unary:
        inner = handler.unary_unary

        async def uu(request: Any, context: Any) -> Any:
            await check(context)
            return await inner(request, context)
        return grpc.unary_unary_rpc_method_handler(
            uu, handler.request_deserializer, handler.response_serializer)
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def su(requests: Any, context: Any) -> Any:
            await check(context)
            return await inner_su(requests, context)
        return grpc.stream_unary_rpc_method_handler(
            su, handler.request_deserializer, handler.response_serializer)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def us(request: Any, context: Any) -> AsyncIterator[Any]:
            await check(context)
            async for item in _aiter(inner_us(request, context)):
                yield item
        return grpc.unary_stream_rpc_method_handler(
            us, handler.request_deserializer, handler.response_serializer)
    inner_ss = handler.stream_stream

    async def ss(requests: Any, context: Any) -> AsyncIterator[Any]:
        await check(context)
        async for item in _aiter(inner_ss(requests, context)):
            yield item
    return grpc.stream_stream_rpc_method_handler(
        ss, handler.request_deserializer, handler.response_serializer)


async def _aiter(result: Any) -> AsyncIterator[Any]:
    """A streaming handler's output, whether it is an async generator or a coroutine
    that writes with ``context.write`` and returns None."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        await result
