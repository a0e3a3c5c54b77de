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

Limits: two dd processes tagged as jobs 101 and 102 (SLURM_JOB_ID, trusted only
because this mount runs with --trust-environ; a real job is found by its cgroup),
limits 40 and 80 MB/s set on the daemon, writing at once through the mount with
conv=fsync for about 10 s, --pair-runs times. Three rates per job: dd's own (its bytes
over the time from its first write through its fsync and close, what the user sees),
the wall clock from starting dd to its exit (adds process start, lookup and create
through the mount, and exit), and the daemon's count over the steady state (from 1 s
after the job's first byte to 1 s before its last).

--only throughput|limits runs one part and prints it without writing the results files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from qosfs.local import LocalMount
from tokenbucket_daemon.client import AdminClient, DataClient
from tokenbucket_daemon.core.policy import Kind, Policy, Selector, Tag
from tokenbucket_daemon.local import LocalDaemon, cpu_seconds

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


def _dd_rate(stderr: str) -> float:
    """dd's own figure, from its last line ("N bytes (...) copied, T s, R MB/s"): bytes
    over the time from its first write through its fsync and close (C locale)."""
    fields = stderr.strip().splitlines()[-1].split(",")
    nbytes, secs = int(fields[0].split()[0]), float(fields[-2].split()[0])
    return nbytes / secs


def _steady(series: list[tuple[float, int]]) -> float | None:
    """A job's rate as the daemon counted it, from 1 s after its first counted byte to
    1 s before its last (the first sample that already holds its final count); None
    when that leaves less than a second."""
    base, final = series[0][1], series[-1][1]
    first = next((t for t, b in series if b > base), None)
    last = next((t for t, b in series if b == final), None)
    if first is None or last is None:
        return None
    inner = [(t, b) for t, b in series if first + 1.0 <= t <= last - 1.0]
    if len(inner) < 2 or inner[-1][0] - inner[0][0] < 1.0:
        return None
    return (inner[-1][1] - inner[0][1]) / (inner[-1][0] - inner[0][0])


def _counts(admin: AdminClient) -> tuple[float, dict[str, int]]:
    """Bytes written per job tag, stamped with the middle of the call (when the daemon
    answered, not when the answer arrived)."""
    t0 = time.perf_counter()
    counts = {c.tag: c.bytes_written for c in admin.stats().classes}
    return (t0 + time.perf_counter()) / 2, counts


def _pair_run(m: LocalMount, admin: AdminClient, daemon_pid: int, jobs: dict[str, float],
              seconds: float, run: int) -> list[dict[str, Any]]:
    series = [_counts(admin)]       # before any dd starts
    stop = threading.Event()
    failed: list[BaseException] = []

    def poll() -> None:
        try:
            while not stop.wait(0.25):
                series.append(_counts(admin))
        except Exception as e:          # re-raised below, not lost in the thread
            failed.append(e)

    poller = threading.Thread(target=poll, daemon=True)
    cpu0 = {"daemon": cpu_seconds(daemon_pid), "mount": cpu_seconds(m.pid)}
    poller.start()
    procs, ends, errs = {}, {}, {}
    # One waiter per process: waiting in turn would charge a job that finished first
    # with the time the other one still ran.
    def wait(job: str, p: subprocess.Popen[str]) -> None:
        try:
            errs[job] = p.communicate(timeout=seconds * 5)[1]
        except subprocess.TimeoutExpired:
            p.kill()
            errs[job] = p.communicate()[1] + f"\ndd of job {job} timed out; killed"
        ends[job] = time.perf_counter()

    try:
        for job, rate in jobs.items():
            count = int(rate * seconds / MiB)
            procs[job] = (count * MiB, time.perf_counter(), subprocess.Popen(
                ["dd", "if=/dev/zero", f"of={m.mountpoint}/dd-{job}-{run}", "bs=1M",
                 f"count={count}", "conv=fsync"], stderr=subprocess.PIPE, text=True,
                env={**os.environ, "SLURM_JOB_ID": job, "LC_ALL": "C"}))
        waiters = [threading.Thread(target=wait, args=(job, p))
                   for job, (_, _, p) in procs.items()]
        for w in waiters:
            w.start()
        for w in waiters:
            w.join()
        time.sleep(0.3)
    finally:
        stop.set()
        poller.join()
    if failed:
        raise failed[0]
    series.append(_counts(admin))
    cpu = {"daemon": cpu_seconds(daemon_pid) - cpu0["daemon"],
           "mount": cpu_seconds(m.pid) - cpu0["mount"]}
    print(f"  run {run}: CPU seconds daemon {cpu['daemon']:.2f}, mount {cpu['mount']:.2f}",
          flush=True)
    rows = []
    for job, (nbytes, t0, p) in procs.items():
        assert p.returncode == 0, f"dd of job {job} failed: {errs.get(job)}"
        counted = series[-1][1].get(job, 0) - series[0][1].get(job, 0)
        limit = jobs[job]
        dd, wall = _dd_rate(errs[job]), nbytes / (ends[job] - t0)
        steady = _steady([(t, b.get(job, 0)) for t, b in series])
        rows.append({"run": run, "job": job, "limit": limit / MB, "bytes": nbytes,
                     "dd_rate": dd / MB, "dev_pct": 100 * (dd / limit - 1),
                     "wall_rate": wall / MB, "wall_dev_pct": 100 * (wall / limit - 1),
                     "steady_rate": None if steady is None else steady / MB,
                     "steady_dev_pct": None if steady is None else 100 * (steady / limit - 1),
                     "daemon_bytes": counted, "daemon_cpu_s": cpu["daemon"],
                     "mount_cpu_s": cpu["mount"]})
        print(f"  run {run} job {job}: limit {limit / MB:.0f} MB/s, dd {dd / MB:.2f} "
              f"({rows[-1]['dev_pct']:+.2f}%), wall {wall / MB:.2f} "
              f"({rows[-1]['wall_dev_pct']:+.2f}%), daemon steady {_steady_text(rows[-1])}, "
              f"counted {counted} of {nbytes} B", flush=True)
    return rows


def _steady_text(row: dict[str, Any]) -> str:
    if row["steady_rate"] is None:
        return "n/a"
    return f"{row['steady_rate']:.2f} ({row['steady_dev_pct']:+.2f}%)"


def limits(base: Path, d: LocalDaemon, seconds: float, runs: int) -> list[dict[str, Any]]:
    admin = d.admin()
    # The pair of the SDQoS experiment (benchmarks/sdqos): 120 MB/s together is what this
    # 2-core machine carries through FUSE, the mount process and the daemon at once.
    jobs = {"101": 40 * MB, "102": 80 * MB}
    for job, rate in jobs.items():
        admin.set_policy(Policy(Selector(Kind.JOB, job), limit_bps=rate))
    rows = []
    with LocalMount(TIER, base / "mnt", [d.address], "--trust-environ") as m:
        for run in range(1, runs + 1):
            rows += _pair_run(m, admin, d.pid, jobs, seconds, run)
            # Free the tier's memory for the next run: on this VM a page of RAM touched
            # for the first time costs the host a fault, and the daemon's writes into
            # never-used tmpfs pages took twice the CPU (clear_page, copy in perf).
            for f in m.mountpoint.glob(f"dd-*-{run}"):
                f.unlink()
    for job in jobs:
        admin.delete_policy(Selector(Kind.JOB, job))
    return rows


def table(res: dict[str, Any]) -> str:
    out = ["## Throughput, one daemon, tier in /dev/shm (MB/s, write / read)", "",
           "| request | raw tier (fio) | client library | mount | mount / client | "
           "mount / raw |", "|---|---|---|---|---|---|"]
    for r in res["throughput"]:
        k = f"{r['bs'] // MiB} MiB" if r["bs"] >= MiB else f"{r['bs'] // KiB} KiB"
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
    out += ["", "## Two dd jobs through the mount at once (MB/s, deviation from the limit)", "",
            "| run | job | limit | dd's own rate | wall clock, start-up included | "
            "daemon, steady state | daemon counted |", "|---|---|---|---|---|---|---|"]
    for r in res["limits"]:
        out.append(f"| {r['run']} | {r['job']} | {r['limit']:.0f} | "
                   f"{r['dd_rate']:.2f} ({r['dev_pct']:+.2f}%) | "
                   f"{r['wall_rate']:.2f} ({r['wall_dev_pct']:+.2f}%) | "
                   f"{_steady_text(r)} | "
                   f"{r['daemon_bytes']} of {r['bytes']} B |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256, help="bytes per throughput cell")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the dd jobs")
    ap.add_argument("--pair-runs", type=int, default=3, help="runs of the two dd jobs")
    ap.add_argument("--only", choices=("throughput", "limits"), help="one part only")
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
            res: dict[str, Any] = {"throughput": [], "limits": []}
            if ns.only in (None, "throughput"):
                print("throughput:", flush=True)
                res["throughput"] = throughput(base, store, d, ns.size_mib * MiB)
            if ns.only in (None, "limits"):
                print("limits:", flush=True)
                res["limits"] = limits(base, d, ns.seconds, ns.pair_runs)
        finally:
            d.stop()
    md = table(res)
    if ns.only:
        print(md)
        return 0
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "results.json").write_text(json.dumps(res, indent=1))
    (ns.out / "results.md").write_text(
        "# qosfs benchmark\n\n`PYTHONPATH=. .venv/bin/python benchmarks/qosfs/run.py`\n\n" + md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
