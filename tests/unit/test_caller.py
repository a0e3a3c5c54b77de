"""Caller credentials on the wire: presence, bounds, one-line refusals."""

from __future__ import annotations

import pytest

from tokenbucket_daemon.caller import MAX_GROUPS, NO_ID, Caller
from tokenbucket_daemon.convert import caller_from_pb, caller_to_pb
from tokenbucket_daemon.errors import InvalidArgument
from tokenbucket_daemon.proto import qos_pb2 as pb


def test_no_caller_is_none_and_root_is_a_caller() -> None:
    assert caller_from_pb(pb.JobTag(job_id="1")) is None
    root = pb.JobTag(caller=pb.Caller())
    assert caller_from_pb(root) == Caller(0, 0, ())
    c = Caller(1000, 100, (100, 27, 1000))
    assert caller_from_pb(pb.JobTag(caller=caller_to_pb(c))) == c


@pytest.mark.parametrize("caller,says", [
    (Caller(NO_ID, 0), "caller uid out of range"),
    (Caller(0, NO_ID), "caller gid out of range"),
    (Caller(0, 0, (1, NO_ID)), "caller group id out of range"),
    (Caller(0, 0, tuple(range(MAX_GROUPS + 1))), "more than 64 supplementary groups"),
    (Caller(-1, 0), "caller uid out of range"),
])
def test_bad_callers_are_refused_with_one_line(caller: Caller, says: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        caller.checked()
    assert says in str(e.value) and "\n" not in str(e.value)
    assert e.value.code == "INVALID_ARGUMENT"


def test_the_bound_itself_is_accepted() -> None:
    c = Caller(1, 1, tuple(range(MAX_GROUPS)))
    assert c.checked() is c
    assert caller_from_pb(pb.JobTag(caller=caller_to_pb(c))) == c
