"""Errors through one interceptor: what no handler expected is INTERNAL with a short
message and never a traceback; a message that cannot be parsed is INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
import logging

import grpc

from tokenbucket_daemon.errors import NotFound
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.proto import qos_pb2_grpc as rpc
from tokenbucket_daemon.server import interceptors

from .conftest import ADMIN_MD, status_of


class Broken(rpc.DataPlaneServicer):
    """Handlers that fail as a bug would, and one that fails as the domain does."""

    async def Stat(self, request, context):
        raise ZeroDivisionError("x" * 100_000)

    async def Unlink(self, request, context):
        raise NotFound("no such entry", request.path, "check the path", "ENOENT")

    async def Read(self, request, context):
        yield pb.ReadChunk(offset=0, data=b"a")
        raise KeyError("mid-stream")

    async def Write(self, request_iterator, context):
        async for _ in request_iterator:
            raise RuntimeError("while writing")
        return pb.WriteReply()


def test_the_interceptor_maps_every_failure_to_a_short_status(caplog):
    async def run() -> list[tuple[grpc.StatusCode, str, str]]:
        server = grpc.aio.server(interceptors=[interceptors.error_interceptor()])
        rpc.add_DataPlaneServicer_to_server(Broken(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        out = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            stub = rpc.DataPlaneStub(chan)
            calls = [lambda: stub.Stat(pb.StatRequest()) for _ in range(50)]
            calls += [lambda: stub.Unlink(pb.UnlinkRequest(path="p")),
                      lambda: _drain(stub.Read(pb.ReadRequest())),
                      lambda: stub.Write(iter([pb.WriteChunk()])),
                      lambda: chan.unary_unary("/qos.v1.DataPlane/Stat")(b"\xff\xff\xff"),
                      lambda: chan.unary_unary("/qos.v1.DataPlane/Stat")(b"\x1a\x02\xc3\x28")]
            for call in calls:
                try:
                    await call()
                    out.append((grpc.StatusCode.OK, "", ""))
                except grpc.aio.AioRpcError as e:
                    md = dict(e.trailing_metadata() or ())
                    out.append((e.code(), e.details() or "", str(md.get("qos-errno", ""))))
        await server.stop(None)
        return out

    with caplog.at_level(logging.ERROR, logger=interceptors.__name__):
        got = asyncio.run(run())
    for code, details, _ in got[:50]:
        assert code == grpc.StatusCode.INTERNAL
        assert "ZeroDivisionError" in details and "Traceback" not in details
        assert len(details) < 200
    assert got[50] == (grpc.StatusCode.NOT_FOUND, "no such entry: 'p'; check the path",
                       "ENOENT")
    assert [c for c, _, _ in got[51:53]] == [grpc.StatusCode.INTERNAL] * 2
    assert [c for c, _, _ in got[53:]] == [grpc.StatusCode.INVALID_ARGUMENT] * 2
    # Fifty failures of one kind: a burst of lines, then one a second, each bounded.
    mine = [r for r in caplog.records if r.name == interceptors.__name__]
    assert 3 <= len(mine) <= 20
    assert all(len(r.getMessage()) <= 1100 for r in mine)


async def _drain(call) -> None:
    async for _ in call:
        pass


def test_malformed_messages_to_a_live_daemon_are_invalid_argument(daemon):
    for method in ("/qos.v1.DataPlane/Stat", "/qos.v1.DataPlane/Mkdir",
                   "/qos.v1.AdminService/SetPolicy", "/qos.v1.AdminService/GetStats"):
        raw = daemon.chan.unary_unary(method)
        for payload in (b"\xff\xff\xff", b"\x0a\x02\xc3\x28", b"\x0a\xff\xff\xff\xff\x0f"):
            code = status_of(raw, payload, metadata=ADMIN_MD, timeout=20)[0]
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (method, payload)
    stream = daemon.chan.stream_unary("/qos.v1.DataPlane/Write")
    assert status_of(stream, iter([b"\xff\xff"]), timeout=20)[0] == \
        grpc.StatusCode.INVALID_ARGUMENT
