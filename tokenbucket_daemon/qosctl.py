"""``qosctl``: administer tokenbucketd's policies and reservations, and read its stats.

    qosctl policy set job=42 --tier ram --limit 200MiB/s --burst 4MiB
    qosctl policy set user=ana --limit 1GiB/s --reserve 100MiB/s --weight 2
    qosctl policy list
    qosctl policy delete job=42 --tier ram
    qosctl reserve 42 100MiB/s --tier nvme --limit 400MiB/s
    qosctl reservations
    qosctl release 42
    qosctl stats --job 42
    qosctl stats --watch 2 --count 5
    qosctl enforcement off
    qosctl --daemon node7:50051 --json policy list

The daemon is ``--daemon`` (else ``$QOS_DAEMON``, else 127.0.0.1:50051); the admin token is
read from ``--token-file`` (else ``$QOS_TOKEN_FILE``, else /etc/tokenbucketd/admin.token),
a file only its owner may read. Rates are bytes per second (``200MiB/s``, ``50MB/s``,
``0`` = unlimited); ``--json`` prints plain numbers (bytes, bytes/s) instead of a table.
Every input is checked here before the daemon is called: a mistake prints one line,
``qosctl: error: ...``, and exits 2; an error from the daemon exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import stat
import sys
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokenbucket_daemon.client import AdminClient, channel, is_address
from tokenbucket_daemon.core.policy import Kind, Policy, Scope, Selector
from tokenbucket_daemon.errors import InvalidArgument
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.units import format_rate, parse_rate, parse_size

log = logging.getLogger(__name__)

DEFAULT_DAEMON = "127.0.0.1:50051"
DEFAULT_TOKEN_FILE = "/etc/tokenbucketd/admin.token"
ADMIN_SERVICE = "qos.v1.AdminService"
USAGE, FAILED = 2, 1       # exit codes: bad input here; an error from (or reaching) the daemon

Emit = Callable[[Any, str], None]      # (JSON document, text) -> print one of them


class QosctlError(Exception):
    """A failure to report as one line; ``exit_code`` is USAGE or FAILED."""

    def __init__(self, message: str, exit_code: int = USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line and an exception, not usage text and exit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # "-5MiB/s" is a value (to be refused as negative), not an unknown option.
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str) -> NoReturn:
        raise QosctlError(f"{message}; see {self.prog} --help")


# -- input: each value checked as argparse reads it ---------------------------------------

def _rate(text: str) -> float:
    if text.strip().startswith("-"):
        raise argparse.ArgumentTypeError(
            f"rate {text!r} is negative; give bytes/s >= 0 like 200MiB/s or 50MB/s")
    try:
        return parse_rate(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad rate {text!r}; give bytes/s like 200MiB/s or 50MB/s") from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad size {text!r}; give bytes like 4MiB, 512KiB or 0 (daemon default)") from None


def _weight(text: str) -> float:
    try:
        w = float(text)
    except ValueError:
        w = math.nan
    if not math.isfinite(w) or not 0 <= w <= 1e6:
        raise argparse.ArgumentTypeError(
            f"bad weight {text!r}; give a number from 0 to 1e6, e.g. 2 (0 = default 1)")
    return w


def _selector(text: str) -> Selector:
    try:
        return Selector.parse(text)
    except InvalidArgument:
        raise argparse.ArgumentTypeError(
            f"bad selector {text!r}; give job=ID, user=NAME, account=NAME or default") from None


def _job(text: str) -> str:
    if not text.strip() or "=" in text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            f"bad job id {text!r}; give the Slurm job id alone, e.g. 42")
    return text


def _seconds(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        s = math.nan
    if not 0.1 <= s <= 3600:
        raise argparse.ArgumentTypeError(
            f"bad interval {text!r}; give seconds from 0.1 to 3600, e.g. 2")
    return s


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(
            f"bad count {text!r}; give a whole number >= 0 (0 = until interrupted)")
    return int(text)


def _address(text: str) -> str:
    if not is_address(text):
        raise QosctlError(f"bad daemon address {text!r}; give HOST:PORT, e.g. 127.0.0.1:50051 "
                          "(--daemon or QOS_DAEMON)")
    return text


def _checked(p: Policy) -> Policy:
    """``p`` if the daemon would accept it, else a usage error naming the field."""
    if 0 < p.limit_bps < p.reservation_bps:
        raise QosctlError(f"policy for {p.selector}: the reservation "
                          f"{format_rate(p.reservation_bps)} exceeds the limit "
                          f"{format_rate(p.limit_bps)}; lower the reservation or raise --limit")
    try:
        return p.validated()
    except InvalidArgument as e:
        raise QosctlError(f"policy for {p.selector}: {e}") from None


def policy_from_args(a: argparse.Namespace) -> Policy:
    """The policy ``policy set`` stores (the whole policy: options left out take defaults)."""
    return _checked(Policy(a.selector, a.tier, a.limit, a.reserve or 0.0, a.weight, a.burst,
                           scope=Scope.GROUP if a.scope == "group" else Scope.DAEMON))


def keep_reservation(new: Policy, old: list[Policy], asked: float | None,
                     drop: bool) -> tuple[Policy, float]:
    """``new`` with the reservation the job already holds (what a job's prolog reserved
    for its deadline) unless the administrator gave --reserve or --drop-reservation: a
    limit set during an incident must not silently take a running job's floor away.
    Returns the policy to store and the reservation kept (0 if none)."""
    if asked is not None or drop or new.selector.kind != Kind.JOB:
        return new, 0.0
    held = next((p.reservation_bps for p in old
                 if p.selector == new.selector and p.tier == new.tier), 0.0)
    if held <= 0:
        return new, 0.0
    if new.limit_bps and new.limit_bps < held:
        raise QosctlError(f"--limit {format_rate(new.limit_bps)} is below the "
                          f"{format_rate(held)} job {new.selector.value} holds as its "
                          "reservation; give a higher limit, or --drop-reservation to take "
                          "the reservation away")
    return _checked(replace(new, reservation_bps=held)), held


def reservation_from_args(a: argparse.Namespace) -> Policy:
    """The JOB policy ``reserve`` asks for, checked as the daemon will check it."""
    if a.rate <= 0:
        raise QosctlError(f"reservation for job {a.job} must be > 0 bytes/s, got {a.rate:g}; "
                          "give e.g. 100MiB/s (to drop it: qosctl release JOB)")
    return _checked(Policy(Selector(Kind.JOB, a.job), a.tier, a.limit, a.rate))


def read_token(path: Path) -> str:
    """The admin token in ``path``, which only its owner may read."""
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except OSError as e:
        raise QosctlError(f"cannot read admin token file {str(path)!r} ({e.strerror}); "
                          "give --token-file or QOS_TOKEN_FILE (run as root for the "
                          "default)") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise QosctlError(f"admin token file {str(path)!r} is readable by others; "
                          f"run chmod 600 {path}")
    if not token:
        raise QosctlError(f"admin token file {str(path)!r} is empty; "
                          "copy the daemon's admin_token_file")
    return token


# -- the daemon ---------------------------------------------------------------------------

def connect(address: str, timeout: float) -> grpc.Channel:
    """A channel to a serving daemon at ``address``, found in at most ``timeout`` seconds:
    refused at once if nothing listens, so qosctl never hangs on a wrong or silent host."""
    chan = channel(address)
    health = health_pb2_grpc.HealthStub(chan)
    try:
        r = health.Check(health_pb2.HealthCheckRequest(service=ADMIN_SERVICE), timeout=timeout)
    except grpc.RpcError as e:
        chan.close()
        code = e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = e.details() if isinstance(e, grpc.Call) else ""
        if code == grpc.StatusCode.UNAVAILABLE and ("andshake" in (details or "")
                                                    or "Socket closed" in (details or "")):
            raise QosctlError(f"UNAVAILABLE: tokenbucketd at {address} refused this client's "
                              "TLS identity; set QOS_TLS_CA, QOS_TLS_CERT and QOS_TLS_KEY to "
                              "an administrator's certificate (role admin)", FAILED) from None
        why = {grpc.StatusCode.UNAVAILABLE: "nothing answers there",
               grpc.StatusCode.DEADLINE_EXCEEDED: f"no answer within {timeout:g} s"}.get(
                   code, f"its health check says {code.name}; is it a tokenbucketd?")
        raise QosctlError(f"UNAVAILABLE: cannot reach tokenbucketd at {address} ({why}); "
                          "check --daemon or QOS_DAEMON and that the daemon runs", FAILED) \
            from None
    if r.status != health_pb2.HealthCheckResponse.SERVING:
        chan.close()
        raise QosctlError(f"UNAVAILABLE: tokenbucketd at {address} is not serving (stopping?); "
                          "retry when it has restarted", FAILED)
    return chan


def rpc_error_message(e: grpc.RpcError, address: str, token_file: Path) -> str:
    """One line for a failed call: the status code, the daemon's words, a next step."""
    code = e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = e.details() if isinstance(e, grpc.Call) else str(e)
    text = " ".join(f"{code.name}: {details or 'no details'}".split())
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        text += f" (token from {token_file})"
    elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        text += f" (daemon {address}; is tokenbucketd running and reachable?)"
    return text


# -- output -------------------------------------------------------------------------------

def format_bytes(n: float) -> str:
    """``n`` bytes for people: ``1.5MiB``, ``812B`` (negative for token debt)."""
    for unit, f in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1024)):
        if abs(n) >= f:
            return f"{n / f:.1f}{unit}"
    return f"{n:.0f}B"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [headers, *rows])


def _tier(tier: str) -> str:
    return tier or "all"


def _where(tier: str) -> str:
    return f"tier {tier}" if tier else "every tier"


def _reservation(bps: float) -> str:
    return format_rate(bps) if bps > 0 else "none"


def policy_json(p: Policy) -> dict[str, Any]:
    """A policy with plain numbers; ``tier`` "" means every tier, 0 rates mean none."""
    return {"selector": str(p.selector), "kind": p.selector.kind.name.lower(),
            "value": p.selector.value, "tier": p.tier, "limit_bps": p.limit_bps,
            "reservation_bps": p.reservation_bps, "weight": p.weight,
            "burst_bytes": p.burst_bytes, "scope": p.scope.name.lower(),
            "updated_ns": p.updated_ns, "origin": p.origin}


def policy_table(policies: list[Policy]) -> str:
    if not policies:
        return "no policies"
    rows = [[str(p.selector), _tier(p.tier), format_rate(p.limit_bps),
             p.scope.name.lower(), _reservation(p.reservation_bps), f"{p.weight:g}",
             format_bytes(p.burst_bytes) if p.burst_bytes else "default", p.origin]
            for p in policies]
    return table(["SELECTOR", "TIER", "LIMIT", "SCOPE", "RESERVATION", "WEIGHT", "BURST",
                  "ORIGIN"], rows)


def class_json(c: pb.ClassStats) -> dict[str, Any]:
    return {"job": c.tag, "tier": c.tier, "selector": c.selector, "bytes_read": c.bytes_read,
            "bytes_written": c.bytes_written, "requests": c.requests, "queued": c.queued,
            "in_flight": c.in_flight, "wait_seconds_total": c.wait_seconds_total,
            "rate_bps": c.rate_bps, "tokens_bytes": c.tokens, "limit_bps": c.limit_bps,
            "reservation_bps": c.reservation_bps, "weight": c.weight, "rejected": c.rejected}


def tier_json(t: pb.TierStats) -> dict[str, Any]:
    return {"tier": t.tier, "root": t.root, "bytes_read": t.bytes_read,
            "bytes_written": t.bytes_written, "requests": t.requests, "queued": t.queued,
            "in_flight": t.in_flight, "bandwidth_bps": t.bandwidth_bps,
            "emulated_device_bps": t.emulated_device_bps}


def stats_json(s: pb.StatsReply) -> dict[str, Any]:
    return {"daemon_id": s.daemon_id, "time_ns": s.time_ns, "enforcing": s.enforcing,
            "classes": [class_json(c) for c in s.classes],
            "tiers": [tier_json(t) for t in s.tiers]}


def stats_text(s: pb.StatsReply) -> str:
    classes = [[c.tag or "(default)", c.tier, c.selector, format_bytes(c.bytes_read),
                format_bytes(c.bytes_written),
                format_rate(c.rate_bps) if c.rate_bps > 0 else "0B/s",
                format_rate(c.limit_bps), _reservation(c.reservation_bps),
                f"{c.queued}", f"{c.in_flight}", f"{c.wait_seconds_total:.2f}s",
                format_bytes(c.tokens)] for c in s.classes]
    tiers = [[t.tier, format_bytes(t.bytes_read), format_bytes(t.bytes_written),
              f"{t.requests}", f"{t.queued}", f"{t.in_flight}",
              format_rate(t.bandwidth_bps) if t.bandwidth_bps else "uncapped",
              format_rate(t.emulated_device_bps) if t.emulated_device_bps else "none"]
             for t in s.tiers]
    return "\n".join([
        f"daemon {s.daemon_id}" + ("" if s.enforcing else
                                   " (enforcement OFF: requests bypass every policy)"),
        table(["JOB", "TIER", "POLICY", "READ", "WRITTEN", "RATE", "LIMIT", "RESERVATION",
               "QUEUED", "IN-FLIGHT", "WAIT", "TOKENS"], classes) if classes else "no classes",
        "",
        table(["TIER", "READ", "WRITTEN", "REQUESTS", "QUEUED", "IN-FLIGHT", "BANDWIDTH",
               "EMULATED-DEVICE"], tiers)
        if tiers else "no tiers"])


# -- commands: each calls the daemon and emits (JSON document, text) ----------------------

def cmd_policy_set(admin: AdminClient, a: argparse.Namespace, emit: Emit) -> None:
    want, kept = keep_reservation(a.policy, admin.list_policies(), a.reserve,
                                  a.drop_reservation)
    p = admin.set_policy(want)
    note = (f" (kept its reservation of {format_rate(kept)}; --drop-reservation takes it "
            "away)" if kept else "")
    emit({"policy": policy_json(p), "kept_reservation_bps": kept},
         f"set {p.selector} on {_where(p.tier)}{note}\n" + policy_table([p]))


def cmd_policy_delete(admin: AdminClient, a: argparse.Namespace, emit: Emit) -> None:
    if not admin.delete_policy(a.selector, a.tier):
        also = "" if a.tier else " (a one-tier policy needs --tier)"
        raise QosctlError(f"no policy for {a.selector} on {_where(a.tier)}; nothing deleted; "
                          f"see qosctl policy list{also}", FAILED)
    emit({"deleted": True, "selector": str(a.selector), "tier": a.tier},
         f"deleted {a.selector} on {_where(a.tier)}")


def cmd_policy_list(admin: AdminClient, a: argparse.Namespace, emit: Emit) -> None:
    ps = admin.list_policies()
    emit({"policies": [policy_json(p) for p in ps]}, policy_table(ps))


def cmd_reserve(admin: AdminClient, a: argparse.Namespace, emit: Emit) -> None:
    p = a.policy
    got = admin.reserve(a.job, p.reservation_bps, p.tier, p.limit_bps, a.user, a.account)
    emit({"policy": policy_json(got)}, f"reserved {_reservation(got.reservation_bps)} for "
         f"job {a.job} on {_where(got.tier)}\n" + policy_table([got]))


def cmd_release(admin: AdminClient, a: argparse.Namespace, emit: Emit) -> None:
    n = admin.release(a.job)
    emit({"job": a.job, "released": n},
         f"released job {a.job}: {n} JOB {'policy' if n == 1 else 'policies'} deleted")


def site_capacity(path: str) -> dict[str, float]:
    """Each tier's bandwidth per daemon from the site configuration (what the prolog
    admits against: a shared tier's total split over its daemons); {} without one."""
    if not path:
        return {}
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise QosctlError(f"cannot read the site configuration {path!r} ({e}); give --site "
                          "FILE or unset QOS_SITE_CONFIG") from None
    out = {}
    for name, t in (raw.get("tiers") or {}).items():
        bw = t.get("bandwidth") if isinstance(t, dict) else None
        if bw is None:
            continue
        try:
            total = parse_rate(str(bw))
        except ValueError:
            raise QosctlError(f"{path}: tier {name} bandwidth {bw!r} is not a rate") from None
        n = len(t.get("daemons") or []) if t.get("kind") == "shared" else 1
        out[name] = total / max(1, n)
    return out


def reserved_by_tier(ps: list[Policy]) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in ps:
        out[p.tier or "*"] = out.get(p.tier or "*", 0.0) + p.reservation_bps
    return out


def cmd_reservations(admin: AdminClient, a: argparse.Namespace, emit: Emit) -> None:
    ps = [p for p in admin.list_policies() if p.reservation_bps > 0]
    cap = site_capacity(a.site)
    held = reserved_by_tier(ps)
    summary = [{"tier": t, "reserved_bps": b, "capacity_bps": cap.get(t)}
               for t, b in sorted(held.items())]
    summary += [{"tier": t, "reserved_bps": 0.0, "capacity_bps": c}
                for t, c in sorted(cap.items()) if t not in held]
    lines = [f"tier {s['tier']}: {format_rate(s['reserved_bps'])} reserved"
             + (f" of {format_rate(s['capacity_bps'])} on this daemon"
                if s["capacity_bps"] else "") for s in summary]
    emit({"reservations": [policy_json(p) for p in ps], "tiers": summary},
         (policy_table(ps) if ps else "no reservations") + ("\n" + "\n".join(lines)
                                                            if lines else ""))


def cmd_stats(admin: AdminClient, a: argparse.Namespace, emit: Emit) -> None:
    if a.watch is None:
        s = admin.stats(a.job, a.tier)
        emit(stats_json(s), stats_text(s))
        return
    stream = admin.watch_stats(a.job, round(a.watch * 1000))
    try:
        for n, s in enumerate(stream, 1):
            if a.tier:     # WatchStats filters by job only
                s = _only_tier(s, a.tier)
            emit(stats_json(s), stats_text(s) + "\n")
            if n == a.count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        stream.close()


def cmd_enforcement(admin: AdminClient, a: argparse.Namespace, emit: Emit) -> None:
    if a.state is None:
        s = admin.stats()
        emit({"daemon_id": s.daemon_id, "enforcing": s.enforcing},
             f"enforcement {'on' if s.enforcing else 'off'} on {s.daemon_id}")
        return
    on = a.state == "on"
    n = admin.set_enforcement(on)
    emit({"enforcing": on, "released": n}, f"enforcement {a.state} on {a.daemon}"
         + (f"; released {n} waiting requests" if n else ""))


def _only_tier(s: pb.StatsReply, tier: str) -> pb.StatsReply:
    return pb.StatsReply(time_ns=s.time_ns, daemon_id=s.daemon_id, enforcing=s.enforcing,
                         classes=[c for c in s.classes if c.tier == tier],
                         tiers=[t for t in s.tiers if t.tier == tier])


# -- command line -------------------------------------------------------------------------

def build_parser(env: dict[str, str]) -> argparse.ArgumentParser:
    ap = _Parser(prog="qosctl", description=__doc__.split("\n\n")[0].replace("``", ""),
                 epilog="Examples:\n" + __doc__.split("\n\n")[1],
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_global_options(ap, env)
    common = _Parser(add_help=False)    # the same options after the command name too
    _add_global_options(common, None)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_policy_commands(sub, common)
    _add_job_commands(sub, common)
    return ap


def _add_global_options(p: argparse.ArgumentParser, env: dict[str, str] | None) -> None:
    """--daemon, --token-file, ...; with ``env`` None they have no defaults, so a command's
    copy only overrides what was given before the command name."""
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if env is None else value

    e = env or {}
    p.add_argument("--daemon", default=default(e.get("QOS_DAEMON", DEFAULT_DAEMON)),
                   metavar="HOST:PORT",
                   help=f"daemon to talk to (default: $QOS_DAEMON, else {DEFAULT_DAEMON})")
    p.add_argument("--token-file", type=Path, metavar="PATH",
                   default=default(Path(e.get("QOS_TOKEN_FILE", DEFAULT_TOKEN_FILE))),
                   help=f"admin token (default: $QOS_TOKEN_FILE, else {DEFAULT_TOKEN_FILE})")
    p.add_argument("--json", action="store_true", default=default(False),
                   help="print JSON (bytes, bytes/s) instead of a table")
    p.add_argument("--timeout", type=float, default=default(5.0), metavar="SECONDS",
                   help="give up on an unreachable daemon after this long (default 5)")
    p.add_argument("-v", "--verbose", action="store_true", default=default(False),
                   help="log the traceback of an error")


def _command(sub: Any, name: str, common: argparse.ArgumentParser,
             text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=text,
                                                     description=text)
    return parser


def _add_policy_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    policy = sub.add_parser("policy", help="set, delete or list policies").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    s = _command(policy, "set", common, "create or replace the whole policy for SELECTOR "
                 "(and tier); options left out take their defaults")
    s.add_argument("selector", type=_selector, metavar="SELECTOR",
                   help="job=ID, user=NAME, account=NAME or default")
    s.add_argument("--tier", default="", help="one tier (default: every tier)")
    s.add_argument("--limit", type=_rate, default=0.0, metavar="RATE",
                   help="maximum bytes/s, e.g. 200MiB/s (default 0 = unlimited)")
    s.add_argument("--reserve", type=_rate, default=None, metavar="RATE",
                   help="guaranteed bytes/s (default: none, or for a job the reservation "
                        "it already holds)")
    s.add_argument("--drop-reservation", action="store_true",
                   help="for a job that holds a reservation: take it away")
    s.add_argument("--weight", type=_weight, default=1.0, metavar="W",
                   help="share of spare bandwidth (default 1)")
    s.add_argument("--burst", type=_size, default=0, metavar="SIZE",
                   help="bucket depth, e.g. 4MiB (default 0 = the daemon's)")
    s.add_argument("--scope", choices=("daemon", "group"), default="daemon",
                   help="daemon: the limit holds on each daemon; group: once for the job "
                        "across all daemons, split by demand (job selectors only)")
    s.set_defaults(run=cmd_policy_set, prepare=policy_from_args)
    d = _command(policy, "delete", common, "delete the policy for exactly SELECTOR and tier")
    d.add_argument("selector", type=_selector, metavar="SELECTOR")
    d.add_argument("--tier", default="", help="the tier the policy is for (default: every)")
    d.set_defaults(run=cmd_policy_delete)
    _command(policy, "list", common, "every stored policy").set_defaults(run=cmd_policy_list)


def _add_job_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    r = _command(sub, "reserve", common, "guarantee a job bandwidth (Slurm prolog)")
    r.add_argument("job", type=_job, metavar="JOB")
    r.add_argument("rate", type=_rate, metavar="RATE", help="guaranteed bytes/s, > 0")
    r.add_argument("--tier", default="", help="one tier (default: every tier)")
    r.add_argument("--limit", type=_rate, default=0.0, metavar="RATE",
                   help="maximum bytes/s, >= RATE (default 0 = unlimited)")
    r.add_argument("--user", default="", help="the job's user (logged by the daemon)")
    r.add_argument("--account", default="", help="the job's account (logged by the daemon)")
    r.set_defaults(run=cmd_reserve, prepare=reservation_from_args)
    rel = _command(sub, "release", common, "delete every JOB policy of JOB (Slurm epilog)")
    rel.add_argument("job", type=_job, metavar="JOB")
    rel.set_defaults(run=cmd_release)
    res = _command(sub, "reservations", common, "the policies that carry a reservation, "
                   "and per tier what is reserved against what it sustains")
    res.add_argument("--site", default=os.environ.get("QOS_SITE_CONFIG", ""),
                     help="site configuration whose tier bandwidths to show (default "
                          "$QOS_SITE_CONFIG)")
    res.set_defaults(run=cmd_reservations)
    st = _command(sub, "stats", common, "per class and per tier counters")
    st.add_argument("--job", default="", help="only this job's classes")
    st.add_argument("--tier", default="", help="only this tier")
    st.add_argument("--watch", type=_seconds, metavar="SECONDS",
                    help="print a snapshot every SECONDS until interrupted")
    st.add_argument("--count", type=_count, default=0, metavar="N",
                    help="with --watch: stop after N snapshots")
    st.set_defaults(run=cmd_stats)
    en = _command(sub, "enforcement", common, "show, or switch on or off, this daemon's "
                  "enforcement of policies (off: requests bypass the scheduler, until "
                  "switched on or the daemon restarts)")
    en.add_argument("state", nargs="?", choices=("on", "off"), help="omit to show the state")
    en.set_defaults(run=cmd_enforcement)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    a = build_parser(dict(os.environ)).parse_args(argv)
    _address(a.daemon)
    if not (math.isfinite(a.timeout) and a.timeout > 0):
        raise QosctlError(f"bad --timeout {a.timeout!r}; give seconds > 0, e.g. 5")
    if a.command == "stats" and a.count and a.watch is None:
        raise QosctlError("--count needs --watch; e.g. qosctl stats --watch 2 --count 5")
    prepare = getattr(a, "prepare", None)
    a.policy = prepare(a) if prepare else None
    return a


def _emitter(as_json: bool) -> Emit:
    def emit(doc: Any, text: str) -> None:
        print(json.dumps(doc) if as_json else text, flush=True)
    return emit


def run(a: argparse.Namespace) -> None:
    """Read the token, reach the daemon, run the command; errors propagate."""
    a.token = read_token(a.token_file)
    chan = connect(a.daemon, a.timeout)
    admin = AdminClient(a.daemon, a.token, chan)
    try:
        a.run(admin, a, _emitter(a.json))
    except grpc.RpcError as e:
        raise QosctlError(rpc_error_message(e, a.daemon, a.token_file), FAILED) from e
    finally:
        admin.close()


def main(argv: list[str] | None = None) -> int:
    verbose = False
    try:
        a = _parse(argv)
        verbose = a.verbose
        if verbose:
            logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: "
                                "%(message)s")
        run(a)
        return 0
    except QosctlError as e:
        log.debug("qosctl failed", exc_info=True)
        print(f"qosctl: error: {e}", file=sys.stderr)
        return e.exit_code
    except SystemExit as e:        # --help
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        print("qosctl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (qosctl stats | head): nothing to tell it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        log.debug("qosctl failed", exc_info=True)
        hint = "" if verbose else "; rerun with --verbose for the traceback"
        print(f"qosctl: error: internal error: {type(e).__name__}: {e}{hint}", file=sys.stderr)
        return FAILED


__all__ = ["QosctlError", "build_parser", "connect", "main", "read_token"]


if __name__ == "__main__":
    sys.exit(main())
