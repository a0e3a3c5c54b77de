"""The gRPC contract: stubs current, messages round-trip, rpcs as agreed, all commented."""

from __future__ import annotations

import subprocess
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_tools import protoc

from tokenbucket_daemon.proto import qos_pb2, qos_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
PROTO = "qos/v1/qos.proto"

# service -> rpc -> (request, reply, client streams, server streams)
SERVICES = {
    "DataPlane": {
        "Write": ("WriteChunk", "WriteReply", True, False),
        "Read": ("ReadRequest", "ReadChunk", False, True),
        "Stat": ("StatRequest", "StatReply", False, False),
        "Create": ("CreateRequest", "CreateReply", False, False),
        "Unlink": ("UnlinkRequest", "UnlinkReply", False, False),
        "Mkdir": ("MkdirRequest", "MkdirReply", False, False),
        "Rmdir": ("RmdirRequest", "RmdirReply", False, False),
        "Readdir": ("ReaddirRequest", "ReaddirReply", False, False),
        "Rename": ("RenameRequest", "RenameReply", False, False),
        "Truncate": ("TruncateRequest", "TruncateReply", False, False),
        "Fsync": ("FsyncRequest", "FsyncReply", False, False),
        "Statfs": ("StatfsRequest", "StatfsReply", False, False),
        "Setattr": ("SetattrRequest", "SetattrReply", False, False),
        "OpenSession": ("OpenSessionRequest", "OpenSessionReply", False, False),
    },
    "AdminService": {
        "SetPolicy": ("SetPolicyRequest", "Policy", False, False),
        "DeletePolicy": ("DeletePolicyRequest", "DeletePolicyReply", False, False),
        "ListPolicies": ("ListPoliciesRequest", "ListPoliciesReply", False, False),
        "Reserve": ("ReserveRequest", "ReserveReply", False, False),
        "Release": ("ReleaseRequest", "ReleaseReply", False, False),
        "GetStats": ("StatsRequest", "StatsReply", False, False),
        "WatchStats": ("WatchStatsRequest", "StatsReply", False, True),
        "SetEnforcement": ("SetEnforcementRequest", "SetEnforcementReply", False, False),
    },
    "PeerService": {
        "ExchangeDemand": ("DemandReport", "DemandReport", False, False),
        "SetFractions": ("FractionUpdate", "FractionAck", False, False),
        "ListPeers": ("ListPeersRequest", "ListPeersReply", False, False),
    },
}


def test_stubs_are_current() -> None:
    run = subprocess.run([str(REPO / "scripts" / "gen-protos"), "--check"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr or run.stdout


def test_services_have_every_rpc() -> None:
    services = qos_pb2.DESCRIPTOR.services_by_name
    assert set(services) == set(SERVICES)
    for name, rpcs in SERVICES.items():
        methods = services[name].methods_by_name
        assert set(methods) == set(rpcs), name
        for rpc, (req, rep, client_streams, server_streams) in rpcs.items():
            m = methods[rpc]
            assert (m.input_type.name, m.output_type.name) == (req, rep), f"{name}.{rpc}"
            assert m.client_streaming is client_streams, f"{name}.{rpc}"
            assert m.server_streaming is server_streams, f"{name}.{rpc}"
        for attr in (f"{name}Stub", f"{name}Servicer", f"add_{name}Servicer_to_server"):
            assert hasattr(qos_pb2_grpc, attr), attr


def _fill(msg: Message, depth: int = 0) -> Message:
    """Set every field of ``msg`` to a value that is not its default (repeated: two)."""
    for f in msg.DESCRIPTOR.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 3:
                continue
            if f.is_repeated:
                for _ in range(2):
                    _fill(getattr(msg, f.name).add(), depth + 1)
            else:
                _fill(getattr(msg, f.name), depth + 1)
            continue
        value = _scalar(f)
        if f.is_repeated:
            getattr(msg, f.name).extend([value, value])
        else:
            setattr(msg, f.name, value)
    return msg


def _scalar(f: FieldDescriptor) -> object:
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        return f"{f.name}-é/42"
    if t == FieldDescriptor.TYPE_BYTES:
        return b"\x00\xffdata"
    if t == FieldDescriptor.TYPE_BOOL:
        return True
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 1.5
    if t == FieldDescriptor.TYPE_ENUM:
        return f.enum_type.values[-1].number
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64):
        return (1 << 40) + 7          # beyond 32 bits: sizes and nanosecond times
    return 7


def _all_messages() -> list[Descriptor]:
    return list(qos_pb2.DESCRIPTOR.message_types_by_name.values())


def test_every_message_round_trips_with_all_fields_set() -> None:
    assert len(_all_messages()) > 40
    for desc in _all_messages():
        cls = getattr(qos_pb2, desc.name)
        msg = _fill(cls())
        back = cls.FromString(msg.SerializeToString())
        assert back == msg, desc.name
        for f in desc.fields:
            if f.is_repeated:
                assert len(getattr(back, f.name)) == 2, f"{desc.name}.{f.name}"
            else:
                assert back.HasField(f.name) if f.message_type else getattr(back, f.name), (
                    f"{desc.name}.{f.name}")


def test_request_messages_round_trip() -> None:
    tag = qos_pb2.JobTag(job_id="4242_7", user="ana", account="phys")
    first = qos_pb2.WriteChunk(tag=tag, tier="nvme", path="run/out.dat", offset=1 << 33,
                               data=b"\x00" * 1024, fsync=True)
    back = qos_pb2.WriteChunk.FromString(first.SerializeToString())
    assert back == first and back.tag.job_id == "4242_7" and back.offset == 1 << 33

    read = qos_pb2.ReadRequest(tag=tag, tier="pfs", path="/in.dat", offset=4096,
                               length=1 << 20, chunk_size=65536)
    assert qos_pb2.ReadRequest.FromString(read.SerializeToString()) == read

    job = qos_pb2.Selector(kind=qos_pb2.Selector.JOB, value="4242")
    policy = qos_pb2.Policy(selector=job, tier="nvme", limit_bps=200 * 2**20,
                            reservation_bps=50 * 2**20, weight=2.0, burst_bytes=4 << 20,
                            updated_ns=1_700_000_000_123_456_789, origin="node01")
    req = qos_pb2.SetPolicyRequest(policy=policy)
    back_req = qos_pb2.SetPolicyRequest.FromString(req.SerializeToString())
    assert back_req == req
    assert back_req.policy.selector.kind == qos_pb2.Selector.Kind.Value("JOB") == 1
    assert back_req.policy.updated_ns == 1_700_000_000_123_456_789

    reserve = qos_pb2.ReserveRequest(job_id="4242", user="ana", account="phys", tier="",
                                     bandwidth_bps=1.25e8, limit_bps=2.5e8)
    assert qos_pb2.ReserveRequest.FromString(reserve.SerializeToString()) == reserve

    fractions = qos_pb2.FractionUpdate(leader="node01", fractions=[
        qos_pb2.JobFraction(job_id="4242", tier="pfs", fraction=0.25)])
    assert qos_pb2.FractionUpdate.FromString(fractions.SerializeToString()) == fractions
    # Replication between daemons is gone (etcd keeps a group's policies).
    assert not hasattr(qos_pb2, "PolicySync") and not hasattr(qos_pb2, "Tombstone")

    demand = qos_pb2.DemandReport(daemon_id="node01", time_ns=1, jobs=[
        qos_pb2.JobDemand(job_id="4242", tier="nvme", demand_bps=3e8, queued_bytes=1 << 34)])
    assert qos_pb2.DemandReport.FromString(demand.SerializeToString()) == demand

    # Untagged is the default: an empty JobTag costs nothing on the wire.
    assert qos_pb2.JobTag().SerializeToString() == b""
    # A caller is told apart from none, also when every id of it is 0 (root).
    root = qos_pb2.JobTag(caller=qos_pb2.Caller(uid=0, gid=0))
    back_root = qos_pb2.JobTag.FromString(root.SerializeToString())
    assert back_root.HasField("caller") and not qos_pb2.JobTag().HasField("caller")
    assert back_root.caller.uid == 0 and list(back_root.caller.groups) == []
    # Setattr's fields are optional: mode 0 and "no mode" differ on the wire.
    zero = qos_pb2.SetattrRequest(path="f", mode=0)
    back_zero = qos_pb2.SetattrRequest.FromString(zero.SerializeToString())
    assert back_zero.HasField("mode") and not back_zero.HasField("uid")


def test_every_rpc_message_field_and_enum_value_is_commented(tmp_path: Path) -> None:
    out = tmp_path / "qos.pb"
    code = protoc.main(["protoc", f"-I{REPO / 'protos'}", f"--descriptor_set_out={out}",
                        "--include_source_info", str(REPO / "protos" / PROTO)])
    assert code == 0
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (fd,) = fds.file
    comments = {tuple(loc.path): loc.leading_comments.strip()
                for loc in fd.source_code_info.location}
    # Paths as in descriptor.proto: file message_type = 4, enum_type = 5, service = 6;
    # message field = 2, nested_type = 3, enum_type = 4; enum value = 2; service method = 2.
    wanted: dict[tuple[int, ...], str] = {}

    def enum(path: tuple[int, ...], e: descriptor_pb2.EnumDescriptorProto) -> None:
        wanted[path] = f"enum {e.name}"
        for i, v in enumerate(e.value):
            wanted[path + (2, i)] = f"{e.name}.{v.name}"

    def message(path: tuple[int, ...], m: descriptor_pb2.DescriptorProto) -> None:
        wanted[path] = f"message {m.name}"
        for i, f in enumerate(m.field):
            wanted[path + (2, i)] = f"{m.name}.{f.name}"
        for i, n in enumerate(m.nested_type):
            message(path + (3, i), n)
        for i, e in enumerate(m.enum_type):
            enum(path + (4, i), e)

    for i, m in enumerate(fd.message_type):
        message((4, i), m)
    for i, e in enumerate(fd.enum_type):
        enum((5, i), e)
    for i, s in enumerate(fd.service):
        wanted[(6, i)] = f"service {s.name}"
        for j, m in enumerate(s.method):
            wanted[(6, i, 2, j)] = f"rpc {s.name}.{m.name}"
    missing = sorted(what for path, what in wanted.items() if not comments.get(path))
    assert not missing, f"no comment on: {', '.join(missing)}"
    assert len(wanted) > 200
