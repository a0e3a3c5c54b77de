"""Malformed and extreme messages for every DataPlane and AdminService rpc, from the
proto's own descriptors (Hypothesis strategies), sent to a live daemon.

Shared by tests/security/test_fuzz_daemon.py (bounded, derandomized, in the suite) and
benchmarks/security/fuzz.py (longer, random, prints what it found). What counts as a
finding: a status that says the daemon failed, not the caller (INTERNAL, UNKNOWN), or a
call that got no answer in time (DEADLINE_EXCEEDED from the client's own deadline).
"""

from __future__ import annotations

import math
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import strategies as st

from tokenbucket_daemon.proto import qos_pb2 as pb

SERVICES = ("DataPlane", "AdminService")
CALL_TIMEOUT = 10.0          # seconds; a daemon that answers nothing in this is a finding
STREAM_MESSAGES = 8          # responses read from a stream before it is cancelled
FAILED = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
          grpc.StatusCode.DEADLINE_EXCEEDED}

BIG = "x" * (1 << 20)
NAMES = ["", "42", "4242_7", "user:ana", "ana", "phys", "a" * 128, "a" * 129, "job 1",
         "ü", "..", "a/b", "\n", BIG]
PARTS = ["", ".", "..", "a", "d", "f", "fifo", "sock", "loop", "out", "deep", "sub",
         "x" * 255, "x" * 256, "é", "\0", "-", "*"]
RATES = [0.0, -1.0, math.nan, math.inf, -math.inf, 1e6, 5e7, 1e12, 1e12 + 1, 1e300]
INTS64 = [0, 1, -1, 4095, 4096, 1 << 20, (1 << 31) - 1, (1 << 63) - 1, -(1 << 63)]
UINTS32 = [0, 1, 0o777, 0o7777, 0o10000, 0o170000, (1 << 31), (1 << 32) - 1]


def paths() -> st.SearchStrategy[str]:
    joined = st.lists(st.sampled_from(PARTS), max_size=6).map("/".join)
    return st.one_of(joined, st.text(max_size=40),
                     st.sampled_from(["/etc/passwd", "../x", "a/" * 300, "d/" * 257 + "f",
                                      "y" * 5000, BIG, "fifo", "loop/x", "escape/x"]))


def _scalar(f: FieldDescriptor) -> st.SearchStrategy[Any]:
    name, t = f.name, f.type
    if name in ("path", "src", "dst", "page_token"):
        return paths()
    if name in ("job_id", "user", "account", "value", "origin"):
        return st.one_of(st.sampled_from(NAMES), st.text(max_size=20))
    if name == "tier":
        return st.sampled_from(["ram", "disk"] * 4 + ["", "tape", "RAM", "x" * 300, BIG])
    if name in ("limit_bps", "reservation_bps", "bandwidth_bps"):
        # Real limits stay at 1 MB/s or more: a 1 B/s default policy would make every
        # later call of the run wait (correctly), which would hide real findings.
        return st.one_of(st.sampled_from(RATES), st.floats(1e6, 1e13),
                         st.floats(allow_nan=True, allow_infinity=True).filter(
                             lambda v: not 0 < v < 1e6))
    if t == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.text(max_size=30), st.sampled_from(NAMES))
    if t == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=256), st.sampled_from([b"", b"z" * 65536]))
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_DOUBLE or t == FieldDescriptor.TYPE_FLOAT:
        return st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                         st.sampled_from(RATES))
    if t == FieldDescriptor.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in f.enum_type.values]),
                         st.integers(-3, 9))
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.one_of(st.sampled_from(UINTS32), st.integers(0, (1 << 32) - 1))
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.integers(0, (1 << 64) - 1)
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32,
             FieldDescriptor.TYPE_SFIXED32):
        return st.one_of(st.sampled_from([0, 1, -1, 4096, (1 << 31) - 1, -(1 << 31)]),
                         st.integers(-(1 << 31), (1 << 31) - 1))
    return st.one_of(st.sampled_from(INTS64), st.integers(-(1 << 63), (1 << 63) - 1))


def _field(f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        one: st.SearchStrategy[Any] = message(f.message_type, depth + 1)
    else:
        one = _scalar(f)
    if f.is_repeated:
        return st.lists(one, max_size=70 if f.name == "groups" else 3)
    return one


def message(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """Messages of type ``desc`` with any subset of their fields set, at extremes."""
    cls = getattr(pb, desc.name)
    if depth > 2:
        return st.just(cls())
    fields = {f.name: _field(f, depth) for f in desc.fields}
    # Tier and path are always drawn (mostly ones that exist), so most cases get past
    # "unknown tier" into the file system code.
    needed = {k: fields.pop(k) for k in ("tier", "path") if k in fields}
    return st.fixed_dictionaries(needed, optional=fields).map(lambda kw: _build(cls, kw))


def _build(cls: Any, kw: dict[str, Any]) -> Any:
    m = cls()
    for name, value in kw.items():
        field = getattr(m, name)
        if isinstance(value, list):
            field.extend(value)
        elif hasattr(value, "SerializeToString"):
            field.CopyFrom(value)
        else:
            setattr(m, name, value)
    return m


@dataclass(frozen=True)
class Rpc:
    service: str
    method: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/qos.v1.{self.service}/{self.method.name}"

    @property
    def name(self) -> str:
        return f"{self.service}.{self.method.name}"

    def requests(self) -> st.SearchStrategy[Any]:
        one = message(self.method.input_type)
        if not self.method.client_streaming:
            return one
        # A stream as clients send it (the file named once, then data), or anything.
        later = st.builds(pb.WriteChunk, data=st.binary(max_size=4096),
                          fsync=st.booleans())
        proper = st.tuples(one, st.lists(later, max_size=4)).map(lambda t: [t[0], *t[1]])
        return st.one_of(proper, st.lists(one, max_size=5))


def rpcs() -> list[Rpc]:
    return [Rpc(s, m) for s in SERVICES for m in pb.DESCRIPTOR.services_by_name[s].methods]


def seed(base: Path) -> None:
    """Entries the fuzzer's paths name: files, directories, a FIFO, a socket, a symlink
    loop and one out of the tier, a deep directory."""
    for tier in ("ram", "disk"):
        root = base / tier
        (root / "d" / "sub").mkdir(parents=True, exist_ok=True)
        (root / "f").write_bytes(b"0123456789" * 1000)
        (root / "a").write_bytes(b"a")
        if not (root / "fifo").exists():
            os.mkfifo(root / "fifo")
            os.symlink("loop", root / "loop")
            os.symlink("/etc", root / "escape")
            (root / "/".join(["deep"] * 100)).mkdir(parents=True)
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(root / "sock"))
            s.close()
        os.chmod(root / "f", stat.S_IRUSR | stat.S_IWUSR)


def call(chan: grpc.Channel, rpc: Rpc, request: Any, token: str | None) -> grpc.StatusCode:
    """Send ``request`` (or raw bytes) to ``rpc``; the status it ends with."""
    md = (("authorization", f"Bearer {token}"),) if token else ()
    m = rpc.method
    raw = isinstance(request, bytes) or (isinstance(request, list) and request and
                                          isinstance(request[0], bytes))
    ser = None if raw else (lambda r: r.SerializeToString())
    des = None if raw else getattr(pb, m.output_type.name).FromString
    try:
        if m.client_streaming:
            fn = chan.stream_unary(rpc.path, request_serializer=ser,
                                   response_deserializer=des)
            fn(iter(request), metadata=md, timeout=CALL_TIMEOUT)
        elif m.server_streaming:
            fn_s = chan.unary_stream(rpc.path, request_serializer=ser,
                                     response_deserializer=des)
            stream = fn_s(request, metadata=md, timeout=CALL_TIMEOUT)
            # WatchStats sends one snapshot at once and the next after interval_ms.
            most = 1 if m.name == "WatchStats" else STREAM_MESSAGES
            try:
                for i, _ in enumerate(stream):
                    if i + 1 >= most:
                        break
            finally:
                stream.cancel()
        else:
            fn_u = chan.unary_unary(rpc.path, request_serializer=ser,
                                    response_deserializer=des)
            fn_u(request, metadata=md, timeout=CALL_TIMEOUT)
    except grpc.RpcError as e:
        code = e.code()
        return code if code is not None else grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.OK


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
