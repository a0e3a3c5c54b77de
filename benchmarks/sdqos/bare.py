"""A bare gRPC streaming server for the ceiling experiment: the DataPlane ``Write``
rpc and nothing else. No tags, no scheduler, no thread pool, no path checks: each
chunk is ``pwrite``-n inline, so it is the fastest a Python gRPC server can take
the same writes on this machine.

Run: python benchmarks/sdqos/bare.py ROOT  (prints "listening on HOST:PORT")
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import grpc

from tokenbucket_daemon.heap import keep_buffers_in_heap
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.proto import qos_pb2_grpc as rpc

MiB = 1 << 20


class BareWrite(rpc.DataPlaneServicer):
    def __init__(self, root: str) -> None:
        self.root = root

    async def Write(self, request_iterator: AsyncIterator[pb.WriteChunk],
                    context: grpc.aio.ServicerContext) -> pb.WriteReply:
        fd, off = -1, 0
        try:
            async for c in request_iterator:
                if fd < 0:
                    name = os.path.join(self.root, c.path.replace("/", "_"))
                    fd, off = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644), c.offset
                off += os.pwrite(fd, c.data, off)
            return pb.WriteReply(bytes_written=off)
        finally:
            if fd >= 0:
                os.close(fd)


async def serve(root: str) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 8 * MiB)])
    rpc.add_DataPlaneServicer_to_server(BareWrite(root), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    keep_buffers_in_heap()     # as the daemon does: the ceiling compares servers, not mallocs
    asyncio.run(serve(sys.argv[1]))
