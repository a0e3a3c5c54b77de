"""Policies and callers between the core's dataclasses and the wire's messages."""

from __future__ import annotations

from tokenbucket_daemon.caller import Caller
from tokenbucket_daemon.core.policy import Kind, Policy, Scope, Selector
from tokenbucket_daemon.errors import InvalidArgument
from tokenbucket_daemon.proto import qos_pb2 as pb

_KINDS = frozenset(int(k) for k in Kind)


def policy_from_pb(m: pb.Policy) -> Policy:
    if m.selector.kind == pb.Selector.KIND_UNSPECIFIED:
        raise InvalidArgument("selector kind is not set", None,
                              "choose job, user, account or default")
    if m.selector.kind not in _KINDS:       # proto3 enums take any number on the wire
        raise InvalidArgument("unknown selector kind", int(m.selector.kind),
                              "choose job, user, account or default")
    kind = Kind(int(m.selector.kind))
    if kind is Kind.DEFAULT and m.selector.value:
        raise InvalidArgument("the default selector takes no value", m.selector.value,
                              "leave the value empty")
    if m.scope not in (pb.Policy.SCOPE_DAEMON, pb.Policy.SCOPE_GROUP):
        raise InvalidArgument("unknown policy scope", int(m.scope),
                              "use SCOPE_DAEMON or SCOPE_GROUP")
    return Policy(Selector(kind, m.selector.value), m.tier, m.limit_bps, m.reservation_bps,
                  m.weight, m.burst_bytes, m.updated_ns, m.origin, Scope(int(m.scope)))


def policy_to_pb(p: Policy) -> pb.Policy:
    return pb.Policy(selector=pb.Selector(kind=int(p.selector.kind),  # type: ignore[arg-type]
                                          value=p.selector.value),
                     tier=p.tier, limit_bps=p.limit_bps, reservation_bps=p.reservation_bps,
                     weight=p.weight, burst_bytes=p.burst_bytes, updated_ns=p.updated_ns,
                     origin=p.origin, scope=int(p.scope))  # type: ignore[arg-type]


def caller_from_pb(tag: pb.JobTag) -> Caller | None:
    """The tag's caller, checked, or None when the tag carries none."""
    if not tag.HasField("caller"):
        return None
    c = tag.caller
    return Caller(c.uid, c.gid, tuple(c.groups)).checked()


def caller_to_pb(c: Caller) -> pb.Caller:
    return pb.Caller(uid=c.uid, gid=c.gid, groups=list(c.groups))
