"""SDQoS experiments on localhost (issue 4): the parts built so far.

Run: PYTHONPATH=. .venv/bin/python benchmarks/sdqos/run.py [--duration 12]
Writes benchmarks/sdqos/results.json and prints a table. Rates are MB/s (1e6 B/s).
Measured: single job at 25/50/100/200 MB/s; two jobs with different targets at once.
Not yet: interference, overhead at 1/2/4/8 daemons, ceiling, distributed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from pathlib import Path

from tokenbucket_daemon.core.policy import Kind, Policy, Selector, Tag
from tokenbucket_daemon.ior import run_ior
from tokenbucket_daemon.local import LocalDaemon

MB = 1e6
KiB = 1024
OUT = Path(__file__).with_name("results.json")


def served(admin, job: str, warmup: float, duration: float, out: dict[str, float]) -> None:
    """The daemon's own count of the job's bytes between warmup and the end: the
    rate it enforced, free of the client's block granularity."""
    import time

    def count() -> tuple[float, int]:
        cls = [c for c in admin.stats(job=job).classes]
        return time.monotonic(), sum(c.bytes_written for c in cls)
    time.sleep(warmup)
    t0, b0 = count()
    time.sleep(duration - warmup - 0.5)
    t1, b1 = count()
    out[job] = (b1 - b0) / (t1 - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=12.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm, \
            tempfile.TemporaryDirectory() as state:
        d = LocalDaemon(Path(state) / "d1", "d1", tiers={"ram": Path(shm)}).start()
        try:
            admin = d.admin()
            for target in (25, 50, 100, 200):
                job = f"single-{target}"
                admin.set_policy(Policy(Selector(Kind.JOB, job), limit_bps=target * MB))
                srv: dict[str, float] = {}
                probe = threading.Thread(target=served,
                                         args=(admin, job, a.warmup, a.duration, srv))
                probe.start()
                run_ior([d.address], "ram", Tag(job), 64 * KiB, 4 << 20, 4, a.duration,
                        warmup=a.warmup)
                probe.join()
                rows.append(("single job", job, target, srv[job] / MB))
            results: dict[str, float] = {}
            jobs = {"pair-40": 40, "pair-80": 80}
            for job, target in jobs.items():
                admin.set_policy(Policy(Selector(Kind.JOB, job), limit_bps=target * MB))

            def one(job: str) -> None:
                run_ior([d.address], "ram", Tag(job), 64 * KiB, 4 << 20, 3, a.duration,
                        warmup=a.warmup)
            ts = [threading.Thread(target=one, args=(j,)) for j in jobs]
            ts += [threading.Thread(target=served, args=(admin, j, a.warmup, a.duration,
                                                         results)) for j in jobs]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            for job, target in jobs.items():
                rows.append(("two jobs at once", job, target, results[job] / MB))
        finally:
            d.stop()
    print(f"{'experiment':18s} {'job':12s} {'target MB/s':>11s} {'got MB/s':>9s} "
          f"{'deviation':>9s}")
    out = []
    for exp, job, target, got in rows:
        dev = (got - target) / target
        print(f"{exp:18s} {job:12s} {target:11.1f} {got:9.2f} {dev:+9.2%}")
        out.append({"experiment": exp, "job": job, "target_MBps": target, "got_MBps": got,
                    "deviation": dev})
    OUT.write_text(json.dumps({"duration_s": a.duration, "warmup_s": a.warmup,
                               "request": "64 KiB, 4 MiB files, 4 streams (3 per job in pairs)",
                               "rows": out}, indent=1))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
