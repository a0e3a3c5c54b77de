"""``tokenbucketd --config FILE``: wire the parts together and serve until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tokenbucket_daemon.core.device import DeviceClock
from tokenbucket_daemon.core.policy import PolicyTable
from tokenbucket_daemon.core.session import SessionTable
from tokenbucket_daemon.errors import DaemonError
from tokenbucket_daemon.heap import keep_buffers_in_heap
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.proto import qos_pb2_grpc as rpc
from tokenbucket_daemon.server.auth import RoleInterceptor
from tokenbucket_daemon.server.backend import TierBackend
from tokenbucket_daemon.server.config import DaemonConfig, load_config
from tokenbucket_daemon.server.etcdstore import EtcdClient
from tokenbucket_daemon.server.gate import Gate
from tokenbucket_daemon.server.interceptors import daemon_interceptors
from tokenbucket_daemon.server.metrics import start_metrics
from tokenbucket_daemon.server.peer import PeerService, Splitter
from tokenbucket_daemon.server.replication import PolicySync
from tokenbucket_daemon.server.service import AdminService, DataPlane, Node
from tokenbucket_daemon.server.store import PolicyStore
from tokenbucket_daemon.tls import Tls
from tokenbucket_daemon.units import format_rate

log = logging.getLogger(__name__)
SERVICES = ("qos.v1.DataPlane", "qos.v1.AdminService", "qos.v1.PeerService")
MAX_STREAMS_PER_CONN = 1024     # HTTP/2 streams at once on one connection


async def serve(cfg: DaemonConfig, ready: Any = None) -> None:
    store = PolicyStore(cfg.state_dir / "policies.sqlite")
    policies = PolicyTable()
    gate = Gate(cfg.scheduler, policies, enabled=cfg.qos, tier_bandwidth=cfg.tier_bandwidth)
    tiers = {name: TierBackend(name, path) for name, path in cfg.tiers.items()}
    node = Node(cfg.daemon_id, tiers, gate, policies, cfg.scheduler.max_request)
    node.devices = {name: DeviceClock(bps) for name, bps in cfg.emulated_device.items()}
    # The SQLite copy is in force before the first request; etcd, when the group has
    # one, replaces it as soon as it answers (server/replication.py).
    sync = PolicySync(node, store, EtcdClient(cfg.etcd) if cfg.etcd else None,
                      cfg.etcd.prefix if cfg.etcd else "")
    sync.restore()
    node.policy_writer = sync
    if cfg.peers and cfg.etcd is None:
        log.warning("peers but no [etcd]: each daemon keeps its own policies (a group "
                    "shares them through etcd)")
    unknown = sorted(set(cfg.tiers) - set(cfg.tier_bandwidth)) if cfg.qos else []
    if unknown:
        # Found by a test on a 2-core runner: reserved jobs got a third of their floor
        # beside a flood, the surplus queued in the CPU where the scheduler cannot reach.
        log.warning("tier %s: no [tier_bandwidth], so a reservation holds only while the "
                    "device keeps up; set it to the device's rate, this daemon's part "
                    "(docs/daemon.md)", ", ".join(unknown))
    tls = Tls.from_files(*cfg.tls) if cfg.tls else None
    node.tls = tls
    if cfg.inline_memory_tiers:
        node.inline = {name for name, t in tiers.items() if t.in_memory}
    token = cfg.admin_token()
    # Headroom over the largest request for the message envelope; anything larger is
    # refused by gRPC itself with RESOURCE_EXHAUSTED before it is buffered.
    limit = cfg.scheduler.max_request + 64 * 1024
    # Without TLS (insecure = true, said in so many words) there is no certificate to
    # read roles from: every caller may do everything, as a lone test daemon allows.
    sessions = (SessionTable(int(cfg.session_lifetime * 1e9))
                if tls and cfg.session_listen else None)
    node.sessions = sessions
    interceptors = ([RoleInterceptor(sessions, stream_wait=cfg.limits.stream_idle_seconds,
                                     admission=lambda: node.admission)] if tls else [])
    interceptors += daemon_interceptors(node, cfg.limits)   # errors -> statuses; health
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit),
                                      # Bounds for connections anyone can open to the
                                      # plaintext session port: streams per connection,
                                      # and a connection idle for 2 minutes is closed
                                      # (clients reconnect on their next call).
                                      ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONN),
                                      ("grpc.max_connection_idle_ms", 120_000)],
                             interceptors=interceptors)
    rpc.add_DataPlaneServicer_to_server(DataPlane(node), server)
    rpc.add_AdminServiceServicer_to_server(AdminService(node, token), server)
    splitter = Splitter(node, cfg.peers, cfg.peer_interval)
    rpc.add_PeerServiceServicer_to_server(PeerService(node, cfg.peers, splitter.split), server)
    hs = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    reflection.enable_server_reflection(
        (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = (server.add_secure_port(cfg.listen, tls.server_credentials()) if tls
            else server.add_insecure_port(cfg.listen))
    if port == 0:
        raise DaemonError("cannot listen", cfg.listen, "pick a free port")
    if sessions is not None:
        # Plaintext, but every call on it must carry a seal of a session opened over TLS
        # on the port above (server/auth.py); without one it is UNAUTHENTICATED.
        node.session_port = server.add_insecure_port(cfg.session_listen)
        if node.session_port == 0:
            raise DaemonError("cannot listen", cfg.session_listen,
                              "pick a free port for session_listen")
    await server.start()
    for name in ("", *SERVICES):
        await hs.set(name, health_pb2.HealthCheckResponse.SERVING)
    metrics_port = (start_metrics(node, cfg.metrics_port, asyncio.get_running_loop())
                    if cfg.metrics_port else 0)
    host = cfg.listen.rsplit(":", 1)[0]
    tasks = [asyncio.create_task(sync.run())]
    if cfg.peers:
        tasks.append(asyncio.create_task(splitter.run()))
    print(f"tokenbucketd {cfg.daemon_id} listening on {host}:{port}"
          + (f" metrics :{metrics_port}" if metrics_port else "")
          + f" tiers {','.join(sorted(tiers))} qos {'on' if cfg.qos else 'off'}"
          + (" tls" if tls else " INSECURE")
          + (f" sessions :{node.session_port}" if node.session_port else "")
          + (f" etcd {','.join(cfg.etcd.endpoints)}" if cfg.etcd else "")
          + (f" inline-io {','.join(sorted(node.inline))}" if node.inline else "")
          + _rates(" bandwidth", cfg.tier_bandwidth)
          + _rates(" emulated-device", cfg.emulated_device), flush=True)
    if ready is not None:
        ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing requests in flight")
    for name in ("", *SERVICES):
        await hs.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(grace=5.0)
    for t in tasks:
        t.cancel()
    await splitter.close()
    await sync.close()
    node.pool.shutdown()
    store.close()
    print(f"tokenbucketd {cfg.daemon_id} stopped", flush=True)


def _rates(label: str, rates: dict[str, float]) -> str:
    """`` bandwidth pfs=95.4MiB/s,...`` for the banner; "" when there are none."""
    if not rates:
        return ""
    return label + " " + ",".join(f"{t}={format_rate(b)}" for t, b in sorted(rates.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="tokenbucketd",
        description="Per-storage-node I/O QoS daemon (see docs/tokenbucketd.md).")
    ap.add_argument("--config", required=True, help="TOML config file")
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_config(args.config)
        keep_buffers_in_heap()
        asyncio.run(serve(cfg))
    except DaemonError as e:
        print(f"tokenbucketd: error: {e}", file=sys.stderr)
        return 1
    return 0


_ = pb  # the message module is loaded for reflection's descriptor pool

if __name__ == "__main__":
    sys.exit(main())
