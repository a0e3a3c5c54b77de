"""``qosfs``: mount a tier through its tokenbucketd daemons, or unmount it.

    qosfs mount pfs /qos/shared --daemons node1:50051,node2:50051 [--stripe-size 1MiB]
    qosfs umount /qos/shared
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys

from qosfs.errors import QosfsError, UsageError
from qosfs.fs import Options
from qosfs.layout import Layout
from qosfs.mount import MountSpec, check_mountpoint, run
from qosfs.remote import Timeouts
from tokenbucket_daemon.client import is_address
from tokenbucket_daemon.tls import Tls, TlsError, from_env
from tokenbucket_daemon.units import parse_size

log = logging.getLogger(__name__)


def _daemons(text: str) -> list[str]:
    out = [a.strip() for a in text.split(",") if a.strip()]
    for a in out:
        if not is_address(a):
            raise UsageError(f"--daemons: bad address {a!r}; write host:port[,host:port...]")
    if not out:
        raise UsageError("--daemons is empty; give the tier's daemons as host:port,...")
    if len(set(out)) != len(out):
        raise UsageError(f"--daemons names a daemon twice: {text!r}; list each once")
    return out


def _positive(what: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0:
        raise UsageError(f"{what} must be a positive number of seconds, got {text!r}")
    return v


def build_spec(ns: argparse.Namespace) -> MountSpec:
    try:
        stripe = parse_size(ns.stripe_size)
    except ValueError as e:
        raise UsageError(f"--stripe-size: {e}") from None
    if ns.owner:
        # It made one user the owner of every file, root's included: a hole, not a view.
        raise UsageError("--owner was removed: files show their real owners from the "
                         "stores; drop the option")
    attr_timeout = float(ns.attr_timeout)
    if attr_timeout < 0:
        raise UsageError(f"--attr-timeout must be >= 0 seconds, got {ns.attr_timeout!r}")
    try:
        window = parse_size(ns.write_behind)
    except ValueError as e:
        raise UsageError(f"--write-behind: {e}") from None
    try:
        read_ahead = parse_size(ns.read_ahead)
    except ValueError as e:
        raise UsageError(f"--read-ahead: {e}") from None
    if 0 < read_ahead < 4096:
        raise UsageError(f"--read-ahead must be 0 (the kernel's default) or at least 4KiB, "
                         f"got {ns.read_ahead!r}")
    daemons = _daemons(ns.daemons)
    Layout(len(daemons), stripe)        # validates the stripe size
    if not ns.tier or "/" in ns.tier:
        raise UsageError(f"bad tier name {ns.tier!r}; give the name the daemons serve it as")
    check_mountpoint(ns.mountpoint)
    timeout = _positive("--timeout", ns.timeout)
    tls = _tls(ns)
    return MountSpec(ns.tier, os.path.abspath(ns.mountpoint), daemons,
                     Options(stripe_size=stripe, attr_timeout=attr_timeout,
                             writeback_cache=ns.writeback_cache, write_window=window),
                     Timeouts(meta=timeout / 8, data=timeout), read_ahead=read_ahead,
                     trust_environ=ns.trust_environ, tls=tls)


def _tls(ns: argparse.Namespace) -> Tls | None:
    """The node agent's identity: --ca/--cert/--key, else QOS_TLS_*; none is plaintext,
    which only an insecure daemon accepts."""
    given = [ns.ca, ns.cert, ns.key]
    try:
        if any(given):
            if not all(given):
                raise UsageError("--ca, --cert and --key go together; give all three")
            return Tls.from_files(ns.ca, ns.cert, ns.key)
        return from_env()
    except TlsError as e:
        raise UsageError(str(e)) from None


def _mount(ns: argparse.Namespace) -> int:
    spec = build_spec(ns)
    if ns.foreground:
        run(spec, on_ready=lambda: print(f"qosfs: mounted {ns.tier} on {ns.mountpoint}",
                                         flush=True))
        return 0
    # Background: the child mounts and reports through a pipe, so the command returns
    # only once the mount is usable (or with the reason it is not).
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)
        with os.fdopen(rfd) as r:
            msg = r.read()
        if msg.startswith("ok"):
            return 0
        os.waitpid(pid, 0)
        print(msg.strip() or "qosfs: the mount process died before mounting; see its log",
              file=sys.stderr)
        return 1
    os.close(rfd)
    os.setsid()
    os.chdir("/")        # keep no file system busy (the log file is already open)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):     # never hold the caller's pipes or terminal
        os.dup2(null, fd)
    w = os.fdopen(wfd, "w")

    def ready() -> None:
        w.write("ok\n")
        w.close()
    try:
        run(spec, on_ready=ready)
        code = 0
    except Exception as e:      # reported through the pipe, the parent prints it
        if not w.closed:
            w.write(f"qosfs: {e}\n")
            w.close()
        log.error("qosfs: %s", e)
        code = 1
    os._exit(code)


def _umount(ns: argparse.Namespace) -> int:
    path = os.path.abspath(ns.mountpoint)
    if not os.path.ismount(path):
        raise UsageError(f"{path!r} is not mounted; nothing to unmount")
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = [tool, "-u", path] if tool else ["umount", path]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise QosfsError(f"unmounting {path!r} failed: {(r.stderr or r.stdout).strip()}; "
                         f"close the programs using it (fuser -m {path})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="qosfs", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mount", help="mount TIER on MOUNTPOINT through its daemons")
    m.add_argument("tier")
    m.add_argument("mountpoint")
    m.add_argument("--daemons", required=True, help="host:port of the tier's daemons, "
                   "comma-separated, in the same order on every node")
    m.add_argument("--stripe-size", default="1MiB", help="bytes per stripe (default 1MiB)")
    m.add_argument("--owner", default="", help=argparse.SUPPRESS)     # removed; refused
    m.add_argument("--ca", default="", help="CA of the daemons (default $QOS_TLS_CA)")
    m.add_argument("--cert", default="", help="this node agent's certificate, role agent "
                   "(default $QOS_TLS_CERT)")
    m.add_argument("--key", default="", help="its key, readable by root only "
                   "(default $QOS_TLS_KEY)")
    m.add_argument("--trust-environ", action="store_true",
                   help="UNSAFE: charge a process outside any Slurm job cgroup to the job "
                        "its SLURM_JOB_ID names; any process can set its environment, so "
                        "any user can then charge its I/O to any job (default: the "
                        "user's class, user:NAME)")
    m.add_argument("--attr-timeout", default="1", help="seconds the kernel caches attributes")
    m.add_argument("--timeout", default="120", help="seconds one read or write may take "
                   "(waiting for tokens included) before the program gets ETIMEDOUT")
    m.add_argument("--write-behind", default="8MiB", help="bytes of a file handle's writes "
                   "in flight at once (0: each write waits for the daemon; default 8MiB)")
    m.add_argument("--writeback-cache", action="store_true",
                   help="let the kernel buffer and merge writes: faster small writes, but "
                   "every job on the mount is paced alike, which defeats per-job limits")
    m.add_argument("--read-ahead", default="4MiB",
                   help="bytes the kernel reads ahead of a sequential reader (default 4MiB; "
                        "0 keeps the kernel's 128KiB); needs root")
    m.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground")
    m.add_argument("--log", default="", help="log file of the background mount process")
    m.add_argument("--log-level", default="WARNING")
    u = sub.add_parser("umount", help="unmount a qosfs mount")
    u.add_argument("mountpoint")
    ns = ap.parse_args(argv)
    level = getattr(logging, str(getattr(ns, "log_level", "WARNING")).upper(), None)
    if not isinstance(level, int):
        print(f"qosfs: bad --log-level {ns.log_level!r}; use DEBUG, INFO, WARNING or ERROR",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=level, filename=getattr(ns, "log", "") or None,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return _mount(ns) if ns.cmd == "mount" else _umount(ns)
    except UsageError as e:
        print(f"qosfs: {e}", file=sys.stderr)
        return 2
    except QosfsError as e:
        print(f"qosfs: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
