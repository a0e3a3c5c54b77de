"""The policy replica core: etcd's revisions order everything, SQLite is the fallback,
and the encodings of a policy in etcd round-trip and refuse what is not one."""

from __future__ import annotations

import json

import pytest

from tokenbucket_daemon.core.policy import Kind, Policy, Scope, Selector
from tokenbucket_daemon.core.replica import (
    Apply,
    Deleted,
    LocalDelete,
    LocalPut,
    Log,
    Persist,
    Put,
    Remove,
    Replica,
    Restored,
    Snapshot,
    Unreachable,
    job_prefix,
    key_from_etcd,
    policy_from_etcd,
    policy_key,
    value_of,
)
from tokenbucket_daemon.errors import InvalidArgument

P = "/qos/v1/"
A = Policy(Selector(Kind.JOB, "7"), limit_bps=5e6, updated_ns=10, origin="d0")
A2 = Policy(Selector(Kind.JOB, "7"), limit_bps=9e6, updated_ns=1, origin="d1")
B = Policy(Selector(Kind.USER, "ana"), "ram", limit_bps=2e6)
FAR = Policy(Selector(Kind.JOB, "7"), limit_bps=1.0, updated_ns=2**63 - 1, origin="evil")


def online(*policies: Policy, revision: int = 10) -> Replica:
    r = Replica()
    r.handle(Snapshot(revision, policies))
    return r


def test_a_snapshot_replaces_the_sqlite_copy_and_says_so():
    r = Replica()
    assert r.handle(Restored((A, B), 4)) == [Apply(A), Apply(B)]    # served at once
    assert r.serving_copy and r.revision == 4
    out = r.handle(Snapshot(9, (A2,)))
    assert out[0] == Log("info", "policies from etcd at revision 9 (1 policies)")
    assert out[1:] == [Remove(B.key), Apply(A2), Persist((A2,), (B.key,), 9)]
    assert r.policies == {A2.key: A2} and r.revision == 9 and not r.serving_copy


def test_order_is_the_revision_not_the_clock_in_the_value():
    """A value carrying a far-future updated_ns wins nothing: the later revision wins."""
    r = online()
    assert r.handle(Put(11, FAR)) == [Apply(FAR), Persist((FAR,), (), 11)]
    # The administrator's change, later in etcd, with an ordinary clock: in force.
    assert r.handle(Put(12, A)) == [Apply(A), Persist((A,), (), 12)]
    assert r.policies[A.key] == A
    # A replay of the earlier event (a watch restarted from an old revision) does nothing.
    assert r.handle(Put(11, FAR)) == []
    assert r.policies[A.key] == A


def test_a_delete_is_ordered_by_revision_too_and_a_later_put_brings_the_key_back():
    r = online(A)
    assert r.handle(Deleted(11, A.key)) == [Remove(A.key), Persist((), (A.key,), 11)]
    assert r.handle(Put(10, A)) == []               # older than the delete: a replay
    assert r.handle(Put(12, A2)) == [Apply(A2), Persist((A2,), (), 12)]
    assert r.policies == {A2.key: A2}


def test_every_key_of_one_revision_applies():
    """A release deletes all of a job's keys in one transaction, at one revision."""
    other = Policy(Selector(Kind.JOB, "7"), "ram", limit_bps=1e6)
    r = online(A, other)
    out = r.handle(Deleted(11, A.key), Deleted(11, other.key))
    assert [i for i in out if isinstance(i, Remove)] == [Remove(A.key), Remove(other.key)]
    assert r.policies == {}


def test_unreachable_is_said_once_and_the_copy_keeps_serving():
    r = online(A)
    out = r.handle(Unreachable(5.0, "UNAVAILABLE"), Unreachable(5.25, "UNAVAILABLE"))
    assert len(out) == 1 and isinstance(out[0], Log) and out[0].level == "warning"
    assert "serving the 1 policies of the SQLite copy at revision 10" in out[0].message
    assert r.policies == {A.key: A} and r.serving_copy
    out = r.handle(Snapshot(10, (A,)))      # back, nothing changed meanwhile
    assert out == [Log("info", "policies from etcd at revision 10 (1 policies)"),
                   Persist((), (), 10)]


def test_a_revision_that_goes_back_is_followed_with_a_warning():
    r = online(A, revision=50)
    out = r.handle(Snapshot(3, (B,)))
    assert isinstance(out[0], Log) and "went back from 50 to 3" in out[0].message
    assert r.policies == {B.key: B} and r.revision == 3


def test_an_unchanged_put_applies_nothing():
    r = online(A)
    assert r.handle(Put(11, A)) == [Persist((), (), 11)]


def test_a_lone_daemon_applies_and_persists_at_once():
    r = Replica()
    assert r.handle(LocalPut(A)) == [Apply(A), Persist((A,), (), 0)]
    assert r.handle(LocalDelete(A.key)) == [Remove(A.key), Persist((), (A.key,), 0)]
    assert r.handle(LocalDelete(A.key)) == [Persist((), (), 0)]


@pytest.mark.parametrize("p", [A, B, Policy(Selector(Kind.DEFAULT), weight=2.0),
                               Policy(Selector(Kind.ACCOUNT, "phys.lab@x+1:y"), "nvme_1",
                                      limit_bps=1e9, reservation_bps=1e8, burst_bytes=4096),
                               Policy(Selector(Kind.JOB, "42"), limit_bps=6e6,
                                      scope=Scope.GROUP)])
def test_keys_and_values_round_trip(p):
    k = policy_key(P, p.key)
    assert k.count("/") == 6          # selector value and tier never add a level
    assert key_from_etcd(P, k) == p.key
    assert policy_from_etcd(p.key, value_of(p).encode()) == p.validated()


def test_a_jobs_prefix_covers_its_keys_and_no_other_jobs():
    assert policy_key(P, (Selector(Kind.JOB, "4"), "ram")).startswith(job_prefix(P, "4"))
    assert not policy_key(P, (Selector(Kind.JOB, "42"), "")).startswith(job_prefix(P, "4"))


@pytest.mark.parametrize("key", ["/qos/v1/policies/job/7", "/qos/v1/policies/host/7/*",
                                 "/qos/v1/other/job/7/*", "/qos/v1/policies/job//*",
                                 "/qos/v1/policies/default/x/*",
                                 "/qos/v1/policies/job/7/"])
def test_keys_that_are_not_policies_are_refused(key):
    with pytest.raises(InvalidArgument):
        key_from_etcd(P, key)


def _value(**change: object) -> bytes:
    raw = json.loads(value_of(A))
    raw.update(change)
    return json.dumps(raw).encode()


@pytest.mark.parametrize("value", [
    b"not json", b"[]", _value(limit_bps=-1), _value(limit_bps="5"), _value(weight=True),
    _value(scope="everywhere"), _value(burst_bytes=1.5), _value(extra=1),
    _value(reservation_bps=1e7),                  # above the limit: SetPolicy would refuse
    b"{" + b" " * 5000 + b"}"])
def test_values_that_are_not_valid_policies_are_refused(value):
    with pytest.raises(InvalidArgument):
        policy_from_etcd(A.key, value)
