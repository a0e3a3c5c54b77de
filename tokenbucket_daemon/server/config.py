"""The daemon's TOML configuration.

```toml
daemon_id = "node1"                 # default: host name
listen = "127.0.0.1:50051"          # host:port; port 0 picks a free one
state_dir = "/var/lib/tokenbucketd" # policies.sqlite lives here
admin_token_file = "/etc/tokenbucketd/admin.token"   # root-only file; empty = no admin
metrics_port = 0                    # Prometheus /metrics; 0 = off
peers = ["10.0.0.2:50051"]          # other daemons (demand, group-limit split)
qos = true                          # false: requests bypass the scheduler (overhead baseline)
peer_interval = 0.25                # seconds between group-limit splits (0.05..1)
inline_memory_tiers = true          # tmpfs/ramfs tiers: reads and writes on the event loop
                                    # (other tiers always use the I/O threads)
insecure = false                    # true: plaintext, every caller has every right (tests
                                    # of a lone daemon only); otherwise [tls] is required

[tls]                               # mutual TLS: this daemon's identity and the CA of its
ca = "/etc/tokenbucketd/ca.pem"     # callers (see tokenbucket_daemon/pki.py for the roles
cert = "/etc/tokenbucketd/d0.pem"   # a caller's certificate must carry)
key = "/etc/tokenbucketd/d0.key"
session_listen = "0.0.0.0:50061"    # optional: the plaintext session port, where node
                                    # agents' data-plane calls come sealed with a key of a
                                    # session opened over TLS (docs/auth.md); absent: every
                                    # call pays for TLS
session_lifetime = 3600             # seconds a data session lasts (60..86400)

[etcd]                              # a group's policies (absent: this daemon's own, SQLite)
endpoints = ["10.0.0.9:2379"]       # etcd members' client addresses
ca = "/etc/tokenbucketd/etcd-ca.pem"  # mutual TLS: etcd's CA, and this daemon's etcd
cert = "/etc/tokenbucketd/etcd.pem"   # client certificate (its common name is the etcd
key = "/etc/tokenbucketd/etcd.key"    # user: read-write on prefix only)
prefix = "/qos/v1/"                 # the group's keys; one prefix per daemon group
server_name = ""                    # name in etcd's certificates ("" = the first host)
keepalive = 5.0                     # seconds between pings of a member (0.2..60; etcd
                                    # refuses pings more often than its
                                    # --grpc-keepalive-min-time, 5 s by default)

[tiers]
tmpfs = "/dev/shm/qos"
nvme = "/mnt/nvme/qos"
pfs = "/srv/pfs/qos"

[tier_bandwidth]                    # bytes/s the tier's device serves (optional, per tier):
pfs = "100MB/s"                     # the daemon dispatches no more than this into it, so
                                    # the scheduler (reservations first, then spare by
                                    # weight), not the device's queue, decides who gets it

[emulated_device]                   # a device of this rate in front of the tier's store
pfs = "100MB/s"                     # (optional, per tier; tests and the local cluster):
                                    # every read and write is done no sooner than a FIFO
                                    # device of this rate would finish it, enforcement on
                                    # or off; metadata is free (docs/daemon.md)

[scheduler]
max_in_flight = 16
queue_limit = 4096
default_burst = 1048576
max_request = 67108864
idle_evict = 60.0
timer_slack = 0.01                  # a throttled request waits at least this (0..0.1 s)
tier_burst_seconds = 0.02           # a [tier_bandwidth] bucket's depth, in seconds of it
min_charge = 4096                   # tokens a read or write message costs at least
max_classes = 4096                  # live (job, tier) classes; idle ones evicted first

[limits]                            # what callers may hold (server/limits.py)
max_streams = 0                     # Write/Read streams open in all; 0 = from the fd limit
max_streams_per_client = 256        # ... from one client host
fd_reserve = 256                    # descriptors kept for admin calls; below, data calls
                                    # are RESOURCE_EXHAUSTED and health NOT_SERVING
stream_idle_seconds = 30.0          # a stream silent this long is ended, its file closed
io_stall_seconds = 30.0             # every I/O thread in one call this long: NOT_SERVING
max_path_depth = 256                # directories deep, symlinks followed included
```
"""

from __future__ import annotations

import socket
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenbucket_daemon.core.device import check_rate
from tokenbucket_daemon.core.scheduler import SchedulerConfig
from tokenbucket_daemon.errors import InvalidArgument
from tokenbucket_daemon.server.limits import Limits
from tokenbucket_daemon.units import parse_rate


@dataclass(frozen=True)
class EtcdConfig:
    """Where the group's etcd is and who this daemon is to it."""

    endpoints: list[str]                 # "host:port" of members' client URLs
    ca: Path                             # CA of etcd's certificates
    cert: Path                           # this daemon's etcd client certificate
    key: Path
    prefix: str = "/qos/v1/"             # every key of this group lives under it
    server_name: str = ""                # name etcd's certificates carry ("": the host)
    keepalive: float = 5.0               # seconds between pings of each member
    timeout: float = 3.0                 # seconds a read or write may take


def _etcd(raw: Any, base: Path, source: str) -> EtcdConfig | None:
    if raw is None:
        return None
    need = {"endpoints", "ca", "cert", "key"}
    known = need | {"prefix", "server_name", "keepalive", "timeout"}
    if not isinstance(raw, dict) or not need <= set(raw) or set(raw) - known:
        got = sorted(raw) if isinstance(raw, dict) else raw
        raise InvalidArgument(f"{source}: [etcd] needs endpoints, ca, cert and key", got,
                              f"optional: {', '.join(sorted(known - need))}")
    eps = raw["endpoints"]
    if not isinstance(eps, list) or not eps or not all(
            isinstance(e, str) and e.rpartition(":")[2].isdigit() and e.rpartition(":")[0]
            for e in eps):
        raise InvalidArgument(f"{source}: [etcd] endpoints must be a list of host:port", eps,
                              'write e.g. endpoints = ["10.0.0.9:2379"]')
    prefix = raw.get("prefix", "/qos/v1/")
    if not isinstance(prefix, str) or not prefix.startswith("/") or not prefix.endswith("/"):
        raise InvalidArgument(f"{source}: [etcd] prefix must start and end with /", prefix,
                              'use e.g. "/qos/v1/"')
    nums = {}
    for name, lo, hi, default in (("keepalive", 0.2, 60.0, 5.0), ("timeout", 0.5, 60.0, 3.0)):
        v = raw.get(name, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise InvalidArgument(f"{source}: [etcd] {name} must be {lo:g} to {hi:g} seconds",
                                  v, f"use {default:g}")
        nums[name] = float(v)
    ca, cert, key = ((base / str(raw[k])).resolve() for k in ("ca", "cert", "key"))
    return EtcdConfig([str(e) for e in eps], ca, cert, key, prefix,
                      str(raw.get("server_name", "")), **nums)


@dataclass
class DaemonConfig:
    tiers: dict[str, Path]
    state_dir: Path
    daemon_id: str = field(default_factory=socket.gethostname)
    listen: str = "127.0.0.1:50051"
    admin_token_file: Path | None = None
    metrics_port: int = 0
    peers: list[str] = field(default_factory=list)
    qos: bool = True
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    peer_interval: float = 0.25
    inline_memory_tiers: bool = True
    etcd: EtcdConfig | None = None      # the group's policy store; None: SQLite alone
    tls: tuple[Path, Path, Path] | None = None     # (ca, cert, key)
    session_listen: str = ""        # the session port's host:port; "" = none
    session_lifetime: float = 3600.0
    insecure: bool = False
    limits: Limits = field(default_factory=Limits)
    tier_bandwidth: dict[str, float] = field(default_factory=dict)    # bytes/s per tier
    emulated_device: dict[str, float] = field(default_factory=dict)   # bytes/s per tier

    def admin_token(self) -> str | None:
        """The admin credential, from a file only its owner may read."""
        if self.admin_token_file is None:
            return None
        path = self.admin_token_file
        try:
            st = path.stat()
            token = path.read_text().strip()
        except OSError as e:
            raise InvalidArgument("cannot read admin_token_file", str(path),
                                  f"create it with mode 0600 ({e.strerror})") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InvalidArgument("admin_token_file is readable by others", str(path),
                                  f"run chmod 600 {path}")
        if not token:
            raise InvalidArgument("admin_token_file is empty", str(path),
                                  "write a long random token into it")
        return token


def _tls(raw: Any, insecure: Any, base: Path, source: str) -> tuple[Path, Path, Path] | None:
    """The [tls] files; secure by default: without them the daemon does not start unless
    the config says ``insecure = true`` in so many words."""
    if raw is None:
        if insecure is True:
            return None
        raise InvalidArgument(f"{source}: no [tls]", None,
                              "give the daemon its certificate (ca, cert, key), or set "
                              "insecure = true for a lone test daemon")
    if (not isinstance(raw, dict) or not {"ca", "cert", "key"} <= set(raw)
            or set(raw) - {"ca", "cert", "key", *_SESSION_KEYS}):
        raise InvalidArgument(f"{source}: [tls] needs ca, cert and key (and may have "
                              f"{' and '.join(_SESSION_KEYS)})",
                              sorted(raw) if isinstance(raw, dict) else raw,
                              "write the three file paths")
    if insecure is True:
        raise InvalidArgument(f"{source}: both [tls] and insecure = true", None,
                              "choose one; remove insecure")
    ca, cert, key = ((base / str(raw[k])).resolve() for k in ("ca", "cert", "key"))
    return ca, cert, key


_SESSION_KEYS = ("session_listen", "session_lifetime")


def _sessions(raw: Any, source: str) -> tuple[str, float]:
    """[tls]'s session port and lifetime ("" and the default when absent)."""
    if not isinstance(raw, dict):
        return "", 3600.0
    listen = raw.get("session_listen", "")
    if not isinstance(listen, str) or (listen and not _host_port(listen)):
        raise InvalidArgument(f"{source}: [tls] session_listen must be HOST:PORT", listen,
                              'write e.g. session_listen = "0.0.0.0:50061"')
    life = raw.get("session_lifetime", 3600.0)
    if isinstance(life, bool) or not isinstance(life, (int, float)) or not 60 <= life <= 86400:
        raise InvalidArgument(f"{source}: [tls] session_lifetime must be 60 to 86400 seconds",
                              life, "use 3600")
    return listen, float(life)


def _tier_rates(raw: Any, table: str, tiers: dict[str, Path], source: str) -> dict[str, float]:
    """A table of tier name -> rate (bytes/s as a number, or a string like "200MiB/s")."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{source}: {table} must be a table", raw,
                              f'write a [{table}] section, e.g. pfs = "100MB/s"')
    out = {}
    for name, value in raw.items():
        if name not in tiers:
            raise InvalidArgument(f"{source}: [{table}] names a tier not in [tiers]", name,
                                  f"use one of {', '.join(sorted(tiers))}")
        what = f"[{table}] {name}"
        fix = 'write a rate such as "100MB/s" or 100e6 (bytes/s)'
        if isinstance(value, str):
            try:
                value = parse_rate(value)
            except ValueError:
                raise InvalidArgument(f"{source}: {what} is not a rate", value, fix) from None
        out[name] = check_rate(f"{source}: {what}", value, fix)
    return out


def _host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isascii() and port.isdigit() and int(port) < 65536)


def load_config(path: str | Path) -> DaemonConfig:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except OSError as e:
        raise InvalidArgument("cannot read config", str(p), e.strerror or "check the path") \
            from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument(f"{p}: not valid TOML", str(e), "fix the syntax") from None
    return config_from_dict(raw, base=p.parent, source=str(p))


def config_from_dict(raw: dict[str, Any], base: Path = Path("."),
                     source: str = "config") -> DaemonConfig:
    known = {"daemon_id", "listen", "state_dir", "admin_token_file", "metrics_port", "peers",
             "qos", "tiers", "scheduler", "peer_interval", "inline_memory_tiers", "tls",
             "insecure", "etcd", "limits", "tier_bandwidth", "emulated_device"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidArgument(f"{source}: unknown key", unknown[0],
                              f"use one of {', '.join(sorted(known))}")
    tiers = raw.get("tiers")
    if not isinstance(tiers, dict) or not tiers:
        raise InvalidArgument(f"{source}: no [tiers]", tiers,
                              'add a [tiers] table, e.g. tmpfs = "/dev/shm/qos"')
    resolved = {}
    for name, d in tiers.items():
        if "-" in name or "/" in name or not name:
            raise InvalidArgument(f"{source}: bad tier name", name,
                                  "use letters, digits and underscores")
        path = (base / str(d)).resolve()
        if not path.is_dir():
            raise InvalidArgument(f"{source}: tier {name} is not a directory", str(path),
                                  "create it first")
        resolved[name] = path
    bandwidth = _tier_rates(raw.get("tier_bandwidth"), "tier_bandwidth", resolved, source)
    emulated = _tier_rates(raw.get("emulated_device"), "emulated_device", resolved, source)
    if "state_dir" not in raw:
        raise InvalidArgument(f"{source}: no state_dir", None,
                              'add state_dir = "/var/lib/tokenbucketd"')
    sched_raw = dict(raw.get("scheduler", {}))
    peers = [str(x) for x in raw.get("peers", [])]
    if "group_size" in sched_raw:
        raise InvalidArgument(f"{source}: group_size is not set by hand",
                              sched_raw["group_size"], "list the other daemons in peers")
    try:
        sched = SchedulerConfig(**sched_raw, group_size=1 + len(peers))
    except TypeError as e:
        raise InvalidArgument(f"{source}: bad [scheduler] key", str(e),
                              "see the example in tokenbucket_daemon/server/config.py") \
            from None
    interval = raw.get("peer_interval", 0.25)
    if not isinstance(interval, (int, float)) or not 0.05 <= interval <= 1.0:
        raise InvalidArgument(f"{source}: peer_interval must be 0.05 to 1 seconds", interval,
                              "group limits are re-split every peer_interval; use 0.25")
    for key in ("qos", "inline_memory_tiers", "insecure"):
        if not isinstance(raw.get(key, True), bool):
            raise InvalidArgument(f"{source}: {key} must be true or false", raw[key],
                                  f"write {key} = true (no quotes)")
    tls = _tls(raw.get("tls"), raw.get("insecure", False), base, source)
    session_listen, session_lifetime = _sessions(raw.get("tls"), source)
    limits_raw = raw.get("limits", {})
    if not isinstance(limits_raw, dict):
        raise InvalidArgument(f"{source}: limits must be a table", limits_raw,
                              "write a [limits] section")
    try:
        limits = Limits(**limits_raw)
    except TypeError as e:
        raise InvalidArgument(f"{source}: bad [limits] key", str(e),
                              "see the example in tokenbucket_daemon/server/config.py") \
            from None
    tok = raw.get("admin_token_file")
    cfg = DaemonConfig(
        tiers=resolved, state_dir=(base / str(raw["state_dir"])).resolve(),
        daemon_id=str(raw.get("daemon_id") or socket.gethostname()),
        listen=str(raw.get("listen", "127.0.0.1:50051")),
        admin_token_file=(base / str(tok)).resolve() if tok else None,
        metrics_port=int(raw.get("metrics_port", 0)), peers=peers,
        qos=raw.get("qos", True), scheduler=sched,
        peer_interval=float(interval),
        inline_memory_tiers=raw.get("inline_memory_tiers", True),
        tls=tls, insecure=raw.get("insecure", False),
        session_listen=session_listen, session_lifetime=session_lifetime,
        etcd=_etcd(raw.get("etcd"), base, source), limits=limits,
        tier_bandwidth=bandwidth, emulated_device=emulated)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    return cfg
