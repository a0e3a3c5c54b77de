"""Mounting: check the daemons, find which share a store, run the FUSE loop until unmounted."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pyfuse3
import pyfuse3.asyncio

from qosfs.errors import QosfsError, RemoteError, UsageError
from qosfs.fs import PROBE_PREFIX, Options, QosFS
from qosfs.jobid import JobResolver
from qosfs.layout import store_groups
from qosfs.procfs import Procfs
from qosfs.remote import TierClient, Timeouts
from tokenbucket_daemon.heap import keep_buffers_in_heap
from tokenbucket_daemon.tls import Tls

log = logging.getLogger(__name__)


@dataclass
class MountSpec:
    tier: str
    mountpoint: str
    daemons: list[str]
    options: Options
    timeouts: Timeouts
    job_cache_ttl: float = 5.0
    read_ahead: int = 4 << 20      # bytes the kernel reads ahead per file (0: its default)
    # SLURM_JOB_ID in a process's environment names its job when no job cgroup does.
    # Unsafe: any process can set its environment (qosfs mount --trust-environ).
    trust_environ: bool = False
    tls: Tls | None = None         # the node agent's identity (None: plaintext)


def check_mountpoint(path: str) -> None:
    if not os.path.isdir(path):
        raise UsageError(f"mount point {path!r} is not a directory; create it first")
    if os.path.ismount(path):
        raise UsageError(f"{path!r} is already a mount point; unmount it first "
                         f"(qosfs umount {path})")


def set_read_ahead(mountpoint: str, nbytes: int) -> None:
    """Let the kernel read ``nbytes`` ahead of sequential readers of this mount. Its
    default, 128 KiB, is one round trip to the daemons at a time (~80 MB/s here); 4 MiB
    keeps several in flight (~250). Call it once FUSE's INIT is answered: the kernel
    caps the read-ahead with INIT's reply and would undo an earlier setting."""
    path = "the mount's read_ahead_kb"
    try:
        dev = os.stat(mountpoint).st_dev
        path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
        with open(path, "w", encoding="ascii") as f:
            f.write(str(nbytes // 1024))
    except OSError as e:
        why = "it needs root" if e.errno in (errno.EACCES, errno.EPERM) else e.strerror
        log.warning("read-ahead left at the kernel's default: cannot write %s (%s)", path, why)


async def _when_up(spec: MountSpec, ready: asyncio.Future[None] | None) -> None:
    """Once the kernel has the mount (a stat of the root answered by our own loop, so
    from a thread): set the read-ahead, then tell the caller it is mounted."""
    try:
        if spec.read_ahead:
            await asyncio.to_thread(set_read_ahead, spec.mountpoint, spec.read_ahead)
    except Exception:          # the mount works without it; never leave the caller waiting
        log.exception("setting the read-ahead failed")
    finally:
        if ready is not None and not ready.done():
            ready.set_result(None)


async def probe(client: TierClient) -> list[list[int]]:
    """Which daemons share a store: a file made through one daemon is looked for through
    the others. Also proves every daemon is reachable and serves the tier."""
    n = len(client.addresses)
    for d in range(n):
        try:
            await client.stat(d, "", None)
        except RemoteError as e:
            hint = ("start it or leave it out of --daemons" if e.errno in (errno.EIO,
                    errno.ETIMEDOUT) else f"check that it serves tier {client.tier!r}")
            raise QosfsError(f"daemon {client.addresses[d]} cannot be used: {e}; {hint}") \
                from None
    sees = [[False] * n for _ in range(n)]
    placed: set[int] = set()
    for i in range(n):
        if i in placed:
            continue
        name = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        await client.create(i, name, 0o600, True, None)
        try:
            for j in range(i + 1, n):
                if j in placed:
                    continue
                try:
                    await client.stat(j, name, None)
                    sees[i][j] = True
                    placed.add(j)
                except RemoteError as e:
                    if e.errno != errno.ENOENT:
                        raise
        finally:
            await client.unlink(i, name, None)
    return store_groups(sees)


async def serve(spec: MountSpec, ready: asyncio.Future[None] | None = None) -> None:
    """Mount and serve until unmounted or SIGTERM/SIGINT; sets ``ready`` once mounted."""
    client = TierClient(spec.tier, spec.daemons, spec.timeouts, spec.tls)
    try:
        groups = await probe(client)
        log.info("tier %s: %d daemon(s), stores %s, stripe %d B", spec.tier,
                 len(spec.daemons), groups, spec.options.stripe_size)
        resolver = JobResolver(Procfs(), ttl=spec.job_cache_ttl,
                               trust_environ=spec.trust_environ)
        if spec.trust_environ:
            log.warning("--trust-environ: a process outside a job cgroup is charged to the "
                        "job its SLURM_JOB_ID names, which any process can set")
        fs = QosFS(client, groups, resolver, spec.options)
        opts = set(pyfuse3.default_options)
        # The kernel checks every access against the owners and modes qosfs reports (the
        # daemons check again, acting as the caller, against the stores).
        # nosuid, nodev: no file the daemons report (over a session port whose replies
        # are not authenticated, docs/auth.md) can raise a program's rights or be a device.
        opts |= {f"fsname=qosfs:{spec.tier}", "subtype=qosfs", "default_permissions",
                 "nosuid", "nodev"}
        if os.geteuid() == 0:
            opts.add("allow_other")     # a root mount serves every user's programs
        pyfuse3.init(fs, spec.mountpoint, opts)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, pyfuse3.terminate)
        up = asyncio.ensure_future(_when_up(spec, ready))
        try:
            await pyfuse3.main()
            await fs.drain_all()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            up.cancel()
            pyfuse3.close(unmount=True)
    finally:
        await client.close()


def run(spec: MountSpec, on_ready: Callable[[], None] | None = None) -> None:
    """Blocking: mount ``spec`` and serve it. ``on_ready()`` runs once the mount is up."""
    pyfuse3.asyncio.enable()
    keep_buffers_in_heap()

    async def main() -> None:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if on_ready is not None:
            ready.add_done_callback(lambda _: on_ready())
        await serve(spec, ready)
    asyncio.run(main())
