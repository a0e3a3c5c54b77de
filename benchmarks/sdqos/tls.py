"""What authentication costs the daemon's data path.

Three daemons of the same code, each in a fresh process: plaintext with no
authentication (``insecure = true``, the baseline), mutual TLS on every byte (no session
port), and the default of the local cluster: a data session opened over TLS, then every
call sealed on the plaintext session port (docs/auth.md). The load is a node agent
(certificates from tokenbucket_daemon.local's CA). Modes run in A-B-C-C-B-A order,
repeated ``--pairs`` times, so that no mode always runs first or on a warmer machine.
The load is qos-ior (4 streams of 4 MiB files, 1 MiB and 64 KiB writes to a tmpfs tier)
in its own process; the daemon is pinned to CPU 0 and the load to CPU 1. Figures: the
daemon's bytes/s (its own counters) as fast as the load goes, and its CPU seconds per GB
(the kernel's CPU clock of the process).

Two processes of the same code differ by themselves (up to 10-20% here, see
benchmarks/sdqos); the A-B-C-C-B-A blocks and their spread say how much of a difference is
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


MODES = ("plain", "tls", "session")
LABEL = {"plain": "plaintext", "tls": "TLS", "session": "session"}


def one(base: Path, mode: str, transfer: str) -> dict[str, float]:
    shm = Path(tempfile.mkdtemp(prefix="qos-tls-", dir="/dev/shm"))
    tls = mode != "plain"
    d = LocalDaemon(base, mode, tiers={"ram": shm}, tls=tls, sessions=mode == "session",
                    cpus={0}).start()
    env = dict(os.environ)
    if mode == "plain":
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
    ap.add_argument("--pairs", type=int, default=4, help="A-B-C-C-B-A blocks per size")
    ap.add_argument("--transfers", default="1MiB,64KiB",
                    help="write sizes, comma-separated (default 1MiB,64KiB)")
    ap.add_argument("--no-write", action="store_true",
                    help="print the table only; keep tls.json and tls.md as they are")
    a = ap.parse_args()
    local_pki()
    base = Path(tempfile.mkdtemp(prefix="qos-tls-bench-"))
    results: dict[str, Any] = {}
    for transfer in a.transfers.split(","):
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        ratios: dict[str, list[float]] = {m: [] for m in MODES[1:]}
        cpu_ratios: dict[str, list[float]] = {m: [] for m in MODES[1:]}
        for k in range(a.pairs):
            block: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
            for mode in (*MODES, *reversed(MODES)):
                r = one(base / f"{transfer}-{k}-{mode}-{len(block[mode])}", mode, transfer)
                block[mode].append(r)
                runs[mode].append(r)
                print(f"  {transfer:6s} block {k + 1} {mode:7s} {r['MBps']:8.1f} MB/s  "
                      f"{r['cpu_s_per_GB']:.3f} CPU s/GB", flush=True)
            mean = {m: statistics.mean(x["MBps"] for x in block[m]) for m in block}
            cpu = {m: statistics.mean(x["cpu_s_per_GB"] for x in block[m]) for m in block}
            for m in MODES[1:]:
                ratios[m].append(1 - mean[m] / mean["plain"])
                cpu_ratios[m].append(cpu[m] / cpu["plain"] - 1)
        out: dict[str, Any] = {"runs": runs}
        for m in MODES:
            out[f"{m}_MBps"] = statistics.mean(x["MBps"] for x in runs[m])
            out[f"{m}_cpu_s_per_GB"] = statistics.mean(x["cpu_s_per_GB"] for x in runs[m])
        for m in MODES[1:]:
            r_ = ratios[m]
            out[f"{m}_throughput_cost_pct"] = 100 * statistics.mean(r_)
            out[f"{m}_throughput_cost_ci95_pct"] = (
                100 * 2 * statistics.stdev(r_) / len(r_) ** 0.5 if len(r_) > 1 else 0.0)
            out[f"{m}_cpu_cost_pct"] = 100 * statistics.mean(cpu_ratios[m])
        results[transfer] = out
    if not a.no_write:
        (HERE / "tls.json").write_text(json.dumps(results, indent=1))
    lines = ["| writes | mode | MB/s | throughput cost | daemon CPU s/GB | CPU cost |",
             "|---|---|---:|---:|---:|---:|"]
    for t, r in results.items():
        for m in MODES:
            cost = ("baseline" if m == "plain" else
                    f"{r[f'{m}_throughput_cost_pct']:+.1f}% "
                    f"(±{r[f'{m}_throughput_cost_ci95_pct']:.1f})")
            cpu = "" if m == "plain" else f"{r[f'{m}_cpu_cost_pct']:+.1f}%"
            lines.append(f"| {t} | {LABEL[m]} | {r[f'{m}_MBps']:.0f} | {cost} | "
                         f"{r[f'{m}_cpu_s_per_GB']:.3f} | {cpu} |")
    if not a.no_write:
        (HERE / "tls.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    subprocess.run(["rm", "-rf", str(base)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
