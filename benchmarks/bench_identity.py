"""What acting as the caller costs the daemon: the switch of the thread's fsuid, fsgid and
groups (and back) around one call, alone, around a tier stat and a 1 MiB write in process,
and between the daemon's own Stat and 1 MiB Write calls over gRPC, with and without a
caller in the tag (daemon CPU per call from its kernel CPU clock).

Needs root (the daemon switches to another user). Prints a table and writes
benchmarks/out/identity.json. Run:
    PYTHONPATH=. .venv/bin/python benchmarks/bench_identity.py
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tokenbucket_daemon.caller import Caller
from tokenbucket_daemon.client import DataClient
from tokenbucket_daemon.local import LocalDaemon, cpu_seconds
from tokenbucket_daemon.server.backend import TierBackend
from tokenbucket_daemon.server.fsid import FsIdentity

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20
# Someone who is not the daemon, in a few groups, as a job's process is.
CALLER = Caller(65534, 65534, (65534, 100, 27, 1000))
ROUNDS = 8      # each measure is repeated; the table gives the median


def per_call_us(fn: Callable[[], object], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def paired(name: str, without: Callable[[], float], with_: Callable[[], float]) -> dict:
    """Median of ROUNDS measures of both, in alternating order (a drift of the machine
    during the run then falls on both alike), and their difference."""
    a, b = [], []
    for i in range(ROUNDS):
        if i % 2:
            b.append(with_())
            a.append(without())
        else:
            a.append(without())
            b.append(with_())
    off, on = statistics.median(a), statistics.median(b)
    return {"case": name, "without_us": round(off, 2), "with_us": round(on, 2),
            "cost_us": round(on - off, 2), "cost_pct": round((on - off) / off * 100, 1)}


def in_process(shm: Path) -> list[dict]:
    fsid = FsIdentity()
    if fsid.unavailable:
        raise SystemExit(f"bench_identity: cannot switch identities: {fsid.unavailable}")
    tier = TierBackend("mem", shm)
    tier.create("f")
    os.chmod(shm / "f", 0o666)
    writer = tier.open_for_write("f", 0)
    block = os.urandom(MiB)
    rows = [paired("switch alone (no call)",
                   lambda: per_call_us(lambda: fsid.run(None, int), 50_000),
                   lambda: per_call_us(lambda: fsid.run(CALLER, int), 50_000)),
            paired("tier stat, in process",
                   lambda: per_call_us(lambda: fsid.run(None, tier.stat, "f"), 20_000),
                   lambda: per_call_us(lambda: fsid.run(CALLER, tier.stat, "f"), 20_000)),
            paired("tier 1 MiB pwrite, in process",
                   lambda: per_call_us(lambda: fsid.run(None, writer.write_at, 0, block), 1000),
                   lambda: per_call_us(lambda: fsid.run(CALLER, writer.write_at, 0, block),
                                       1000))]
    writer.close()
    tier.close()
    return rows


def daemon_cpu_us(pid: int, fn: Callable[[], object], n: int) -> float:
    """The daemon's CPU time per call of ``fn`` (the client's own time not counted)."""
    c = cpu_seconds(pid)
    for _ in range(n):
        fn()
    return (cpu_seconds(pid) - c) / n * 1e6


def through_daemon(base: Path, shm: Path) -> list[dict]:
    d = LocalDaemon(base / "d", "d", tiers={"mem": shm, "disk": base / "disk"}).start()
    try:
        plain = DataClient(d.address)
        acting = DataClient(d.address, caller=CALLER)
        block = os.urandom(MiB)
        rows = []
        for tier, how, root in (("mem", "inline on the event loop", shm),
                                ("disk", "I/O thread", base / "disk")):
            plain.create(tier, "f")
            os.chmod(root / "f", 0o666)

            def stat(c: DataClient, tier: str = tier) -> float:
                return daemon_cpu_us(d.pid, lambda: c.stat(tier, "f"), 2000)

            def write(c: DataClient, tier: str = tier) -> float:
                return daemon_cpu_us(d.pid, lambda: c.write(tier, "f", block), 300)
            rows.append(paired(f"daemon Stat, {tier} tier ({how}), daemon CPU",
                               lambda: stat(plain), lambda: stat(acting)))
            rows.append(paired(f"daemon 1 MiB Write, {tier} tier ({how}), daemon CPU",
                               lambda: write(plain), lambda: write(acting)))
        return rows
    finally:
        d.stop(signal.SIGKILL)


def main() -> int:
    if os.geteuid() != 0:
        print("bench_identity: needs root (the daemon acts as another user)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm, \
            tempfile.TemporaryDirectory() as tmp:
        os.chmod(shm, 0o777)
        rows = in_process(Path(shm))
        rows += through_daemon(Path(tmp), Path(shm))
    print(f"{'case':<66} {'without':>9} {'with':>9} {'cost':>8}")
    for r in rows:
        print(f"{r['case']:<66} {r['without_us']:>7.2f}us {r['with_us']:>7.2f}us "
              f"{r['cost_us']:>+6.2f}us ({r['cost_pct']:+.1f}%)")
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "identity.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
