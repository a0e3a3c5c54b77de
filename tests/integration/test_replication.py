"""A daemon group's policies in a real etcd: admin changes through any daemon reach every
daemon, survive daemons and etcd members that are killed, stopped (SIGSTOP: a partition)
and restarted, and end equal to etcd's; an admin change always wins over a peer, which
has no write path at all."""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Callable

import grpc
import pytest

from tokenbucket_daemon.client import channel
from tokenbucket_daemon.core.policy import Kind, Policy, Scope, Selector
from tokenbucket_daemon.core.replica import key_from_etcd, policy_from_etcd
from tokenbucket_daemon.etcdlocal import PREFIX, EtcdCluster, issue
from tokenbucket_daemon.local import LocalDaemon, local_pki, start_group
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.proto import qos_pb2_grpc as rpc
from tokenbucket_daemon.tls import Tls

JOB7 = Selector(Kind.JOB, "7")
ANA = Selector(Kind.USER, "ana")


def etcd_policies(etcd: EtcdCluster) -> dict[tuple[Selector, str], Policy]:
    """What etcd holds under the policy prefix, decoded as the daemons decode it."""
    out = etcd.etcdctl("get", "--prefix", f"{PREFIX}policies/", "-w", "json",
                       user="tokenbucketd").stdout
    got = {}
    for kv in json.loads(out).get("kvs", []):
        key = key_from_etcd(PREFIX, base64.b64decode(kv["key"]).decode())
        got[key] = policy_from_etcd(key, base64.b64decode(kv["value"]))
    return got


def held(d: LocalDaemon) -> dict[tuple[Selector, str], Policy]:
    a = d.admin()
    try:
        return {p.key: p for p in a.list_policies()}
    finally:
        a.close()


def converged(ds: list[LocalDaemon], etcd: EtcdCluster, timeout: float = 15.0) -> dict:
    """Wait until every daemon holds exactly etcd's policies; returns them."""
    end = time.monotonic() + timeout
    want: dict = {}
    seen: list[dict] = []
    while time.monotonic() < end:
        want = etcd_policies(etcd)
        seen = [held(d) for d in ds]
        if all(s == want for s in seen):
            return want
        time.sleep(0.1)
    raise AssertionError(f"daemons never matched etcd {want}: {seen}")


def until(cond: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout:.0f} s")


@pytest.fixture
def trio(tmp_path, etcd):
    ds = start_group(tmp_path, 3, etcd=etcd)
    yield ds
    for d in ds:
        if d.proc and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGCONT)
        d.stop(signal.SIGKILL)


def test_admin_calls_on_any_daemon_reach_every_daemon_and_equal_etcd(trio, etcd):
    a0, a1, a2 = (d.admin() for d in trio)
    a0.set_policy(Policy(JOB7, limit_bps=5e6))
    # The daemon that took the call shows it at once (it waited for its own watch).
    assert [p.limit_bps for p in a0.list_policies()] == [5e6]
    a1.set_policy(Policy(ANA, "ram", limit_bps=2e6, weight=3))
    a2.reserve("9", 1e6, tier="ram")
    a2.reserve("9", 2e6, tier="disk")
    want = converged(trio, etcd)
    assert {str(k[0]) for k in want} == {"job=7", "user=ana", "job=9"}
    assert want[(JOB7, "")].origin == "g0"
    # Release deletes every policy of the job at one revision; delete is idempotent.
    assert a0.release("9") == 2
    assert a1.delete_policy(JOB7) is True and a2.delete_policy(JOB7) is False
    want = converged(trio, etcd)
    assert list(want) == [(ANA, "ram")]
    with pytest.raises(grpc.RpcError) as e:
        a2.release("9")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_peer_has_no_write_path_and_the_admin_change_wins(trio, etcd):
    """The failures of issue 18: a far-future PushPolicies, a planted tombstone and
    fractions from anyone. The first two have no rpc any more; fractions are refused from
    a daemon that does not lead, or in another daemon's name; the admin's changes stay."""
    admin = trio[1].admin()
    admin.set_policy(Policy(Selector(Kind.JOB, "77"), limit_bps=6e6, scope=Scope.GROUP))
    probe = local_pki().issue(("daemon",), "probe")        # a daemon's certificate
    chan = channel(trio[0].address, Tls.from_files(probe.ca, probe.cert, probe.key))
    push = chan.unary_unary("/qos.v1.PeerService/PushPolicies",
                            request_serializer=lambda m: m.SerializeToString(),
                            response_deserializer=pb.Policy.FromString)
    forged = pb.Policy(selector=pb.Selector(kind=pb.Selector.JOB, value="77"), limit_bps=1,
                       updated_ns=2**63 - 1, origin="zzz")
    with pytest.raises(grpc.RpcError) as e:
        push(forged, timeout=5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    peer = rpc.PeerServiceStub(chan)
    for leader, code in (("g0", grpc.StatusCode.PERMISSION_DENIED),     # not its name
                         ("probe", grpc.StatusCode.INVALID_ARGUMENT)):  # leads nobody
        with pytest.raises(grpc.RpcError) as e:
            peer.SetFractions(pb.FractionUpdate(leader=leader, fractions=[
                pb.JobFraction(job_id="77", tier="ram", fraction=1.0)]), timeout=5)
        assert e.value.code() == code, leader
        assert "\n" not in e.value.details()
    # Oversize lists are refused before anything is looked at.
    with pytest.raises(grpc.RpcError) as e:
        peer.ExchangeDemand(pb.DemandReport(daemon_id="probe", jobs=[
            pb.JobDemand(job_id=str(i), tier="ram") for i in range(4097)]), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # An admin's delete and a later reserve, then longer than the old revert (2.5 s) and
    # a few split rounds: both stand on every daemon.
    assert admin.delete_policy(Selector(Kind.JOB, "77")) is True
    trio[2].admin().reserve("78", 3e6)
    time.sleep(3)
    want = converged(trio, etcd)
    assert [(str(k[0]), p.reservation_bps) for k, p in want.items()] == [("job=78", 3e6)]


def test_only_the_daemons_certificate_may_write_the_policy_prefix(etcd, tmp_path):
    """etcd's own guard: TLS with client certificates, and the daemons' etcd user may
    write the prefix and nothing else; another certificate of the same CA may not."""
    etcd.etcdctl("put", f"{PREFIX}policies/job/1/*", "{}", user="tokenbucketd")
    denied = etcd.etcdctl("put", "/elsewhere", "x", user="tokenbucketd", check=False)
    assert denied.returncode != 0 and "permission denied" in denied.stderr
    issue(etcd.pki, "intruder", "intruder", server=False)   # no etcd user, no role
    p = etcd.etcdctl("put", f"{PREFIX}policies/job/1/*", "{}", user="intruder", check=False)
    assert p.returncode != 0 and ("permission denied" in p.stderr
                                  or "user name not found" in p.stderr), p.stderr
    # Without a client certificate there is no connection at all.
    import subprocess
    bare = subprocess.run(["etcdctl", "--endpoints", f"https://{etcd.endpoints[0]}",
                           "--cacert", str(etcd.pki / "ca.pem"), "--dial-timeout", "1s",
                           "--command-timeout", "2s", "put", f"{PREFIX}x", "y"],
                          capture_output=True, text=True, env={"ETCDCTL_API": "3"})
    assert bare.returncode != 0


def test_daemons_stopped_killed_and_restarted_end_with_etcds_policies(trio, etcd):
    a0 = trio[0].admin()
    a0.set_policy(Policy(JOB7, limit_bps=5e6))
    a0.set_policy(Policy(ANA, limit_bps=1e6))
    converged(trio, etcd)
    # g2 hangs (SIGSTOP: as cut off) while the policies change, then comes back.
    trio[2].proc.send_signal(signal.SIGSTOP)
    a0.set_policy(Policy(JOB7, limit_bps=8e6))
    assert a0.delete_policy(ANA)
    a0.reserve("5", 2e6)
    trio[2].proc.send_signal(signal.SIGCONT)
    converged(trio, etcd)
    # g1 killed; changes meanwhile; restarted from its SQLite copy, it catches up.
    trio[1].stop(signal.SIGKILL)
    trio[2].admin().set_policy(Policy(ANA, "ram", limit_bps=4e6))
    assert a0.release("5") == 1
    trio[1].start()
    want = converged(trio, etcd)
    assert sorted(str(k[0]) for k in want) == ["job=7", "user=ana"]
    assert want[(JOB7, "")].limit_bps == 8e6


def test_with_etcd_down_daemons_serve_their_copy_and_refuse_changes(trio, etcd):
    a0 = trio[0].admin()
    a0.set_policy(Policy(JOB7, limit_bps=5e6))
    want = converged(trio, etcd)
    etcd.stop()
    with pytest.raises(grpc.RpcError) as e:
        a0.set_policy(Policy(JOB7, limit_bps=1e6))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "etcd" in e.value.details() and "\n" not in e.value.details()
    # A daemon restarted while etcd is down serves its SQLite copy.
    trio[1].stop(signal.SIGKILL)
    trio[1].start()
    assert all(held(d) == want for d in trio)
    etcd.start()
    until(lambda: _try_set(trio[1], Policy(JOB7, limit_bps=9e6)), "a change after etcd is back")
    assert converged(trio, etcd)[(JOB7, "")].limit_bps == 9e6


def _try_set(d: LocalDaemon, p: Policy) -> bool:
    a = d.admin()
    try:
        a.set_policy(p)
        return True
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE, e
        return False
    finally:
        a.close()


def test_a_three_member_etcd_keeps_serving_with_one_member_down(tmp_path):
    etcd = EtcdCluster(tmp_path / "etcd3", members=3).start()
    ds = start_group(tmp_path / "ds", 2, etcd=etcd)
    try:
        ds[0].admin().set_policy(Policy(JOB7, limit_bps=5e6))
        converged(ds, etcd)
        etcd.signal_member(0, signal.SIGSTOP)       # a member that hangs
        until(lambda: _try_set(ds[1], Policy(JOB7, limit_bps=6e6)), "a change on 2 of 3")
        etcd.stop_member(1, signal.SIGKILL)         # and a second one gone: no quorum
        with pytest.raises(grpc.RpcError) as e:
            ds[0].admin().set_policy(Policy(ANA, limit_bps=1e6))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        etcd.signal_member(0, signal.SIGCONT)
        etcd.start_member(1)
        until(lambda: _try_set(ds[0], Policy(ANA, limit_bps=2e6)), "a change after")
        want = converged(ds, etcd)
        assert want[(JOB7, "")].limit_bps == 6e6 and want[(ANA, "")].limit_bps == 2e6
    finally:
        for d in ds:
            d.stop(signal.SIGKILL)
        etcd.stop()


def test_a_lone_daemon_keeps_its_policies_in_sqlite(tmp_path):
    d = LocalDaemon(tmp_path / "lone", "lone").start()
    try:
        d.admin().set_policy(Policy(JOB7, limit_bps=5e6))
        d.admin().reserve("8", 1e6, tier="ram")
        d.stop(signal.SIGKILL)
        d.start()
        assert sorted(str(p.selector) for p in d.admin().list_policies()) == ["job=7", "job=8"]
        assert d.admin().release("8") == 1
    finally:
        d.stop(signal.SIGKILL)
