"""qosfs on localhost (issue 6): throughput through the mount against the client library
and the raw tier, and two dd jobs held to their limits through the mount.

Run (as root): PYTHONPATH=. .venv/bin/python benchmarks/qosfs/run.py [--size-mib 256]
Writes benchmarks/qosfs/results.json and results.md, and prints the tables.

Throughput (MB/s = 1e6 B/s), one daemon serving a tier in /dev/shm, no limits:
  raw tier   fio psync on the tier directory itself
  client     tokenbucket_daemon's DataClient: one gRPC stream of chunks of the size
  mount      fio psync through the qosfs mount (writes end with fsync, so what the kernel
             buffered is counted; reads start with the page cache dropped)
The mount runs as by default: no kernel writeback cache, 8 MiB of write-behind per file
handle, small contiguous writes merged up to 1 MiB. 4 KiB is also shown with the
kernel's writeback cache (--writeback-cache), which merges small writes in the kernel.

Limits: two dd processes tagged as jobs 101 and 102 (SLURM_JOB_ID), limits 40 and
80 MB/s set on the daemon, writing at once through the mount with conv=fsync for
about 10 s; the rate is bytes / dd's wall time, and also the daemon's count between
the first and the last second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qosfs.local import LocalMount
from tokenbucket_daemon.client import DataClient
from tokenbucket_daemon.core.policy import Kind, Policy, Selector, Tag
from tokenbucket_daemon.local import LocalDaemon

MB = 1e6
KiB, MiB = 1024, 1 << 20
HERE = Path(__file__).parent
SIZES = (4 * KiB, 64 * KiB, MiB)
TIER = "shm"


def fio(directory: Path, rw: str, bs: int, size: int) -> float:
    name = f"f{bs}"
    args = ["fio", f"--name={name}", f"--directory={directory}", f"--rw={rw}", f"--bs={bs}",
            f"--size={size}", "--ioengine=psync", "--output-format=json", "--invalidate=1"]
    if rw == "write":
        args.append("--end_fsync=1")
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, check=True)
    job = json.loads(r.stdout)["jobs"][0]
    return float(job["read" if rw == "read" else "write"]["bw_bytes"]) / MB


def client_rates(addr: str, bs: int, size: int) -> tuple[float, float]:
    c = DataClient(addr, Tag("bench"))
    data = os.urandom(bs) * (size // bs)
    t0 = time.perf_counter()
    c.write(TIER, f"client-{bs}", data, chunk=bs, fsync=True)
    w = size / (time.perf_counter() - t0) / MB
    t0 = time.perf_counter()
    n = sum(len(b) for b in c.read_chunks(TIER, f"client-{bs}", chunk=bs))
    r = n / (time.perf_counter() - t0) / MB
    c.unlink(TIER, f"client-{bs}")
    c.close()
    return w, r


def clear(d: Path) -> None:
    for p in d.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def throughput(base: Path, store: Path, d: LocalDaemon, size: int) -> list[dict[str, Any]]:
    rows = []
    for bs in SIZES:
        n = size // 4 if bs == 4 * KiB else size     # 4 KiB is slow through gRPC
        row: dict[str, Any] = {"bs": bs, "bytes": n}
        for rw in ("write", "read"):
            row[f"raw_{rw}"] = fio(store, rw, bs, n)
            clear(store)
        row["client_write"], row["client_read"] = client_rates(d.address, bs, n)
        variants: list[tuple[str, list[str]]] = [("mount", [])]
        if bs == 4 * KiB:
            variants.append(("mount_wb", ["--writeback-cache"]))
        for key, extra in variants:
            with LocalMount(TIER, base / "mnt", [d.address], *extra) as m:
                row[f"{key}_write"] = fio(m.mountpoint, "write", bs, n)
                row[f"{key}_read"] = fio(m.mountpoint, "read", bs, n)
            clear(store)
        print(f"  {bs // KiB:>5} KiB  raw {row['raw_write']:7.0f}/{row['raw_read']:7.0f}  "
              f"client {row['client_write']:6.0f}/{row['client_read']:6.0f}  "
              f"mount {row['mount_write']:6.0f}/{row['mount_read']:6.0f} MB/s (write/read)",
              flush=True)
        rows.append(row)
    return rows


def limits(base: Path, d: LocalDaemon, seconds: float) -> list[dict[str, Any]]:
    admin = d.admin()
    # The pair of the SDQoS experiment (benchmarks/sdqos): 120 MB/s together is what this
    # 2-core machine carries through FUSE, the mount process and the daemon at once.
    jobs = {"101": 40 * MB, "102": 80 * MB}
    for job, rate in jobs.items():
        admin.set_policy(Policy(Selector(Kind.JOB, job), limit_bps=rate))
    rows = []
    with LocalMount(TIER, base / "mnt", [d.address]) as m:
        before = {c.tag: c.bytes_written for c in admin.stats().classes}
        procs = {}
        for job, rate in jobs.items():
            count = int(rate * seconds / MiB)
            procs[job] = (count * MiB, time.perf_counter(), subprocess.Popen(
                ["dd", "if=/dev/zero", f"of={m.mountpoint}/dd-{job}", "bs=1M",
                 f"count={count}", "conv=fsync", "status=none"],
                env={**os.environ, "SLURM_JOB_ID": job}))
        for job, (nbytes, t0, p) in procs.items():
            assert p.wait(timeout=seconds * 5) == 0, f"dd of job {job} failed"
            took = time.perf_counter() - t0
            got = {c.tag: c.bytes_written for c in admin.stats().classes}
            counted = got.get(job, 0) - before.get(job, 0)
            rate = nbytes / took
            rows.append({"job": job, "limit": jobs[job] / MB, "bytes": nbytes,
                         "seconds": took, "rate": rate / MB,
                         "dev_pct": 100 * (rate / jobs[job] - 1),
                         "daemon_bytes": counted})
            print(f"  job {job}: limit {jobs[job] / MB:.0f} MB/s, dd {rate / MB:.2f} MB/s "
                  f"over {took:.2f} s ({rows[-1]['dev_pct']:+.2f}%), daemon counted "
                  f"{counted} of {nbytes} B", flush=True)
    for job in jobs:
        admin.delete_policy(Selector(Kind.JOB, job))
    return rows


def table(res: dict[str, Any]) -> str:
    out = ["## Throughput, one daemon, tier in /dev/shm (MB/s, write / read)", "",
           "| request | raw tier (fio) | client library | mount | mount / client | "
           "mount / raw |", "|---|---|---|---|---|---|"]
    for r in res["throughput"]:
        k = f"{r['bs'] // KiB} KiB"
        out.append(f"| {k} | {r['raw_write']:.0f} / {r['raw_read']:.0f} | "
                   f"{r['client_write']:.0f} / {r['client_read']:.0f} | "
                   f"{r['mount_write']:.0f} / {r['mount_read']:.0f} | "
                   f"{r['mount_write'] / r['client_write']:.2f} / "
                   f"{r['mount_read'] / r['client_read']:.2f} | "
                   f"{r['mount_write'] / r['raw_write']:.2f} / "
                   f"{r['mount_read'] / r['raw_read']:.2f} |")
        if "mount_wb_write" in r:
            out.append(f"| {k}, kernel writeback cache | | | {r['mount_wb_write']:.0f} / "
                       f"{r['mount_wb_read']:.0f} | "
                       f"{r['mount_wb_write'] / r['client_write']:.2f} / "
                       f"{r['mount_wb_read'] / r['client_read']:.2f} | "
                       f"{r['mount_wb_write'] / r['raw_write']:.2f} / "
                       f"{r['mount_wb_read'] / r['raw_read']:.2f} |")
    out += ["", "## Two dd jobs through the mount at once", "",
            "| job | limit MB/s | dd MB/s | seconds | deviation | daemon counted |",
            "|---|---|---|---|---|---|"]
    for r in res["limits"]:
        out.append(f"| {r['job']} | {r['limit']:.0f} | {r['rate']:.2f} | {r['seconds']:.2f} | "
                   f"{r['dev_pct']:+.2f}% | {r['daemon_bytes']} of {r['bytes']} B |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256, help="bytes per throughput cell")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the dd jobs")
    ap.add_argument("--out", type=Path, default=HERE)
    ns = ap.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/qosfs: needs root (FUSE mounts with allow_other)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="qosfs-bench-", dir="/dev/shm") as shm, \
            tempfile.TemporaryDirectory(prefix="qosfs-bench-") as tmp:
        store, base = Path(shm) / "store", Path(tmp)
        d = LocalDaemon(base / "d0", "d0", tiers={TIER: store}, max_request=4 * MiB).start()
        try:
            print("throughput:", flush=True)
            res = {"throughput": throughput(base, store, d, ns.size_mib * MiB)}
            print("limits:", flush=True)
            res["limits"] = limits(base, d, ns.seconds)
        finally:
            d.stop()
    md = table(res)
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "results.json").write_text(json.dumps(res, indent=1))
    (ns.out / "results.md").write_text(
        "# qosfs benchmark\n\n`PYTHONPATH=. .venv/bin/python benchmarks/qosfs/run.py`\n\n" + md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
