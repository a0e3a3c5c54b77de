"""What mutual TLS costs the daemon's data path.

One daemon with TLS (certificates from tokenbucket_daemon.local's CA, the load as a node
agent) against one started plaintext (``insecure = true``), each in a fresh process, in
A-B-B-A order repeated ``--pairs`` times, so that neither mode always runs first or on
a warmer machine. The load is qos-ior (4 streams of 4 MiB files, 1 MiB and 64 KiB
writes to a tmpfs tier) in its own process; the daemon is pinned to CPU 0 and the load
to CPU 1. Figures: the daemon's bytes/s (its own counters) as fast as the load goes, and
its CPU seconds per GB (the kernel's CPU clock of the process).

Two processes of the same code differ by themselves (up to 10-20% here, see
benchmarks/sdqos); the A-B-B-A blocks and their spread say how much of a difference is
the mode.

Run as root:  PYTHONPATH=. .venv/bin/python benchmarks/sdqos/tls.py [--pairs 4]
Writes benchmarks/sdqos/tls.json and tls.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from tokenbucket_daemon.client import AdminClient  # noqa: E402
from tokenbucket_daemon.local import LocalDaemon, cpu_seconds, local_pki  # noqa: E402
from tokenbucket_daemon.tls import ENV  # noqa: E402

SECONDS = 8.0
WARMUP = 2.0


def one(base: Path, tls: bool, transfer: str) -> dict[str, float]:
    shm = Path(tempfile.mkdtemp(prefix="qos-tls-", dir="/dev/shm"))
    d = LocalDaemon(base, f"{'tls' if tls else 'plain'}", tiers={"ram": shm}, tls=tls,
                    cpus={0}).start()
    env = dict(os.environ)
    if not tls:
        for k in ENV:
            env.pop(k, None)
    try:
        admin = AdminClient(d.address, d.token, tls="env" if tls else None)
        p = subprocess.Popen([sys.executable, "-m", "tokenbucket_daemon.ior", "--daemon",
                              d.address, "--tier", "ram", "--job", "1", "--transfer",
                              transfer, "--block", "4MiB", "--streams", "4", "--duration",
                              str(SECONDS + WARMUP), "--json"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.sched_setaffinity(p.pid, {1})
        time.sleep(WARMUP)

        def written() -> int:
            return sum(t.bytes_written for t in admin.stats().tiers)
        b0, c0, t0 = written(), cpu_seconds(d.pid), time.monotonic()
        time.sleep(SECONDS - 1.0)
        b1, c1, t1 = written(), cpu_seconds(d.pid), time.monotonic()
        out, err = p.communicate(timeout=60)
        if p.returncode:
            raise SystemExit(f"qos-ior failed: {err[-400:]}")
        admin.close()
        moved = b1 - b0
        return {"MBps": moved / (t1 - t0) / 1e6, "cpu_s_per_GB": (c1 - c0) / (moved / 1e9)}
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", str(shm)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=4, help="A-B-B-A blocks per size")
    a = ap.parse_args()
    local_pki()
    base = Path(tempfile.mkdtemp(prefix="qos-tls-bench-"))
    results: dict[str, Any] = {}
    for transfer in ("1MiB", "64KiB"):
        runs: dict[str, list[dict[str, float]]] = {"plain": [], "tls": []}
        ratios, cpu_ratios = [], []
        for k in range(a.pairs):
            block: dict[str, list[dict[str, float]]] = {"plain": [], "tls": []}
            for mode in ("plain", "tls", "tls", "plain"):
                r = one(base / f"{transfer}-{k}-{mode}-{len(block[mode])}", mode == "tls",
                        transfer)
                block[mode].append(r)
                runs[mode].append(r)
                print(f"  {transfer:6s} block {k + 1} {mode:5s} {r['MBps']:8.1f} MB/s  "
                      f"{r['cpu_s_per_GB']:.3f} CPU s/GB", flush=True)
            mean = {m: statistics.mean(x["MBps"] for x in block[m]) for m in block}
            cpu = {m: statistics.mean(x["cpu_s_per_GB"] for x in block[m]) for m in block}
            ratios.append(1 - mean["tls"] / mean["plain"])
            cpu_ratios.append(cpu["tls"] / cpu["plain"] - 1)
        spread = (2 * statistics.stdev(ratios) / len(ratios) ** 0.5) if len(ratios) > 1 else 0
        results[transfer] = {
            "plain_MBps": statistics.mean(x["MBps"] for x in runs["plain"]),
            "tls_MBps": statistics.mean(x["MBps"] for x in runs["tls"]),
            "plain_cpu_s_per_GB": statistics.mean(x["cpu_s_per_GB"] for x in runs["plain"]),
            "tls_cpu_s_per_GB": statistics.mean(x["cpu_s_per_GB"] for x in runs["tls"]),
            "throughput_cost_pct": 100 * statistics.mean(ratios),
            "throughput_cost_ci95_pct": 100 * spread,
            "cpu_cost_pct": 100 * statistics.mean(cpu_ratios), "runs": runs}
    (HERE / "tls.json").write_text(json.dumps(results, indent=1))
    lines = ["| writes | plaintext MB/s | TLS MB/s | throughput cost | plaintext CPU s/GB "
             "| TLS CPU s/GB | CPU cost |", "|---|---:|---:|---:|---:|---:|---:|"]
    for t, r in results.items():
        lines.append(f"| {t} | {r['plain_MBps']:.0f} | {r['tls_MBps']:.0f} | "
                     f"{r['throughput_cost_pct']:+.1f}% (±{r['throughput_cost_ci95_pct']:.1f}) "
                     f"| {r['plain_cpu_s_per_GB']:.3f} | {r['tls_cpu_s_per_GB']:.3f} | "
                     f"{r['cpu_cost_pct']:+.1f}% |")
    (HERE / "tls.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    subprocess.run(["rm", "-rf", str(base)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
