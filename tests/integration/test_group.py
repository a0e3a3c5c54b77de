"""A group-scope limit over real daemons: the leader splits it by demand, and the
parts the daemons enforce never sum above it."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from tokenbucket_daemon.client import DataClient
from tokenbucket_daemon.core.policy import Kind, Policy, Scope, Selector, Tag
from tokenbucket_daemon.errors import InvalidArgument
from tokenbucket_daemon.local import start_group

MiB = 1 << 20
LIMIT = 40e6


@pytest.fixture
def group(tmp_path, etcd):
    ds = start_group(tmp_path, 4, etcd=etcd)     # the policy reaches all through etcd
    yield ds
    for d in ds:
        d.stop(signal.SIGKILL)


def _limits(ds, job: str) -> list[float]:
    """The limit each daemon enforces for the job (0 where it has no class), as one
    state of the group: the daemons are read one after another, so a split round
    (lower some, then raise others) can fall between two reads and a read can pair a
    daemon's part from before the round with another's from after it, a state that
    never existed. So read until two whole passes agree: nothing moved meanwhile."""
    admins = [d.admin() for d in ds]
    try:
        def one_pass() -> list[float]:
            out = []
            for a in admins:
                cls = [c for c in a.stats(job=job).classes if c.tier == "ram"]
                out.append(cls[0].limit_bps if cls else 0.0)
            return out
        last = one_pass()
        for _ in range(50):
            now = one_pass()
            if now == last:
                return now
            last = now
        raise AssertionError(f"the parts never held still for two passes: {last}")
    finally:
        for a in admins:
            a.close()


def _writers(ds, job: str, which: list[int], stop: threading.Event) -> list[threading.Thread]:
    def loop(i: int) -> None:
        c = DataClient(ds[i].address, Tag(job))
        chunk = b"z" * (256 * 1024)
        while not stop.is_set():
            c.write_chunks("ram", f"stripe-{i}", (chunk for _ in range(4)))
        c.close()
    ts = [threading.Thread(target=loop, args=(i,)) for i in which]
    for t in ts:
        t.start()
    return ts


def test_group_limit_follows_demand_and_never_sums_above_it(group):
    admin = group[1].admin()     # any daemon: the policy replicates to all
    admin.set_policy(Policy(Selector(Kind.JOB, "77"), limit_bps=LIMIT, scope=Scope.GROUP))
    stop = threading.Event()
    threads = _writers(group, "77", [0, 1], stop)     # only two of four stripes busy
    try:
        def settle(ok, what: str) -> list[float]:
            """Sample until ``ok`` holds (10 s at most); every sample must respect the
            limit, converged or not."""
            s: list[float] = []
            for _ in range(100):
                time.sleep(0.1)
                s = _limits(group, "77")
                assert sum(s) <= LIMIT * (1 + 1e-6), s
                if ok(s):
                    return s
            raise AssertionError(f"{what} not reached in 10 s: {s}")
        # The two busy stripes get nearly all of it; the idle ones only their floor
        # (they report 0: no class there yet).
        settle(lambda s: s[0] + s[1] >= 0.9 * LIMIT and abs(s[0] - s[1]) <= 0.05 * LIMIT,
               "two busy stripes sharing the limit")
        # All four stripes busy: an even split.
        threads += _writers(group, "77", [2, 3], stop)
        settle(lambda s: s == pytest.approx([LIMIT / 4] * 4, rel=0.05), "an even split")
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_group_scope_is_refused_where_it_cannot_be_split(group):
    admin = group[0].admin()
    for bad in (Policy(Selector(Kind.USER, "ana"), limit_bps=LIMIT, scope=Scope.GROUP),
                Policy(Selector(Kind.JOB, "1"), scope=Scope.GROUP),
                Policy(Selector(Kind.JOB, "1"), limit_bps=LIMIT, reservation_bps=1e6,
                       scope=Scope.GROUP)):
        with pytest.raises(InvalidArgument, match="group scope"):
            bad.validated()
        import grpc
        with pytest.raises(grpc.RpcError) as e:
            admin.set_policy(bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert admin.list_policies() == []


def test_bad_peer_messages_and_scopes_get_invalid_argument_and_change_nothing(group):
    import grpc

    from tokenbucket_daemon.client import channel
    from tokenbucket_daemon.local import local_pki
    from tokenbucket_daemon.proto import qos_pb2 as pb
    from tokenbucket_daemon.proto import qos_pb2_grpc as rpc
    from tokenbucket_daemon.tls import Tls

    d = group[0]
    # A daemon's certificate: PeerService is for daemons only (tests/security/test_auth).
    i = local_pki().issue(("daemon",), "probe")
    peer = rpc.PeerServiceStub(channel(d.address, Tls.from_files(i.ca, i.cert, i.key)))
    bad_calls = [
        (peer.ExchangeDemand, pb.DemandReport(daemon_id="")),
        (peer.ExchangeDemand, pb.DemandReport(daemon_id="x", jobs=[
            pb.JobDemand(job_id="1", tier="ram", demand_bps=-1.0)])),
        (peer.SetFractions, pb.FractionUpdate(leader="", fractions=[])),
        (peer.SetFractions, pb.FractionUpdate(leader="g9", fractions=[
            pb.JobFraction(job_id="1", tier="ram", fraction=0.5),
            pb.JobFraction(job_id="2", tier="ram", fraction=1.5)])),
        (peer.SetFractions, pb.FractionUpdate(leader="g9", fractions=[
            pb.JobFraction(job_id="", tier="ram", fraction=0.5)])),
    ]
    for call, msg in bad_calls:
        with pytest.raises(grpc.RpcError) as e:
            call(msg, timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, msg
        assert "\n" not in e.value.details()
    # The refused update applied nothing, not even its valid first entry.
    report = peer.ExchangeDemand(pb.DemandReport(daemon_id="probe"), timeout=5)
    assert [j.job_id for j in report.jobs] == []
    admin = d.admin()
    with pytest.raises(grpc.RpcError) as e:
        admin.stub.SetPolicy(pb.SetPolicyRequest(policy=pb.Policy(
            selector=pb.Selector(kind=pb.Selector.JOB, value="1"), limit_bps=1e6, scope=7)),
            metadata=[("authorization", f"Bearer {d.token}")], timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown policy scope" in e.value.details()
    assert admin.list_policies() == []
