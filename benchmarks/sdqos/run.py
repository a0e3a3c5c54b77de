"""The SDQoS experiments on localhost (issue 4), all from one command.

Run: PYTHONPATH=. .venv/bin/python benchmarks/sdqos/run.py [--duration 12] [--only NAMES]
Writes benchmarks/sdqos/results.json and results.md, and prints the table.

Every rate is MB/s (1e6 B/s), counted by the daemons themselves (bytes they
released per job, or bytes their tiers took) between the end of the warm-up
and the end of the run: the rate enforced, free of the client's block
granularity. The load is ``qos-ior`` in separate processes (two, so that the
load generator is not one GIL), against tiers in /dev/shm. On a 2-core machine
the daemons and the load share the cores: read the capacity figures as this
machine's, not a storage server's.

Experiments:
  single       one job at 25/50/100/200 MB/s, 64 KiB requests, one daemon
  pair         two jobs at 40 and 80 MB/s at once, one daemon
  interference a 4 KiB job and a 64 KiB job; aggregate without QoS vs with the
               4 KiB job limited
  overhead     QoS on without limits vs QoS off (scheduler bypassed), 1/2/4/8 daemons,
               switched at run time in the same daemons
  ceiling      1 MiB writes: fio on the raw tier, a bare gRPC server, tokenbucketd
  distributed  one job striped over 4 daemons, 100 MB/s group-scope limit
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tokenbucket_daemon.client import AdminClient
from tokenbucket_daemon.core.policy import Kind, Policy, Scope, Selector
from tokenbucket_daemon.local import LocalDaemon, cpu_seconds, start_group

MB = 1e6
KiB, MiB = 1024, 1 << 20
HERE = Path(__file__).parent
REPO = HERE.parents[1]
EXPERIMENTS = ("single", "pair", "interference", "overhead", "ceiling", "distributed")


class Run:
    def __init__(self, duration: float, warmup: float, shm: Path, state: Path,
                 pin: bool) -> None:
        self.duration, self.warmup = duration, warmup
        # Servers on CPU 0, load on the others: the daemons (or the bare server, or fio)
        # always get the same core, so a run does not depend on where the kernel put
        # each process, and the load does not steal the server's core.
        cpus = sorted(os.sched_getaffinity(0))
        self.server_cpus = {cpus[0]} if pin and len(cpus) > 1 else None
        self.load_cpus = set(cpus[1:]) if pin and len(cpus) > 1 else None
        self.shm, self.state = shm, state
        self.rows: list[dict[str, Any]] = []
        self._n = 0

    def fresh(self, name: str) -> Path:
        self._n += 1
        return self.state / f"{self._n:02d}-{name}"

    def tier(self, i: int = 0, names: tuple[str, ...] = ("ram",)) -> dict[str, Path]:
        self._n += 1
        out = {}
        for name in names:
            out[name] = self.shm / f"t{self._n:02d}-{i}-{name}"
            out[name].mkdir()
        return out

    def row(self, experiment: str, case: str, target: float | None, got: float,
            **extra: Any) -> None:
        r: dict[str, Any] = {"experiment": experiment, "case": case, "target_MBps": target,
                             "got_MBps": round(got, 3)}
        if target:
            r["deviation"] = round((got - target) / target, 5)
        r.update(extra)
        self.rows.append(r)
        dev = f"{r['deviation']:+.2%}" if "deviation" in r else ""
        tgt = f"{target:.1f}" if target else "-"
        more = " ".join(f"{k}={v}" for k, v in extra.items())
        print(f"  {experiment:12s} {case:34s} {tgt:>7s} {got:9.2f} {dev:>8s} {more}",
              flush=True)


# ------------------------------------------------------------------ load and measure


def pin(proc: subprocess.Popen[str], cpus: set[int] | None) -> subprocess.Popen[str]:
    """Pin a process just started (not in a preexec_fn: forking with gRPC threads
    running and then running Python in the child can abort it)."""
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    return proc


LOAD_CPUS: set[int] | None = None     # set by main from Run.load_cpus


def ior(addresses: list[str], job: str, transfer: str, streams: int, seconds: float,
        block: str = "4MiB", procs: int = 2, tier: str = "ram",
        warmup: float = 0.0, rate_mbps: float = 0.0) -> list[subprocess.Popen[str]]:
    """qos-ior in ``procs`` processes, ``streams`` streams in all; ``rate_mbps`` > 0
    offers that load in all (split by streams), else as fast as they go."""
    out = []
    for p in range(procs):
        n = streams // procs + (1 if p < streams % procs else 0)
        if n == 0:
            continue
        # Rotate the address list so that the processes' streams cover every daemon.
        rot = addresses[p * n % len(addresses):] + addresses[:p * n % len(addresses)]
        cmd = [sys.executable, "-m", "tokenbucket_daemon.ior", "--tier", tier,
               "--job", job, "--transfer", transfer, "--block", block, "--streams", str(n),
               "--duration", str(seconds), "--warmup", str(warmup), "--json",
               "--prefix", f"p{p}", "--rate", f"{rate_mbps * n / streams}MB/s"]
        for a in rot:
            cmd += ["--daemon", a]
        out.append(pin(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True,
                                        env={"PYTHONPATH": str(REPO)}), LOAD_CPUS))
    return out


def finish(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"qos-ior exited {p.returncode}: {out[-300:]}")


def job_bytes(admins: list[AdminClient], job: str) -> int:
    return sum(c.bytes_written + c.bytes_read for a in admins
               for c in a.stats(job=job).classes if c.tag == job)


def tier_bytes(admins: list[AdminClient], tier: str = "") -> int:
    with ThreadPoolExecutor(len(admins)) as pool:     # at once: one snapshot in time
        replies = list(pool.map(lambda a: a.stats(), admins))
    return sum(t.bytes_written + t.bytes_read for r in replies for t in r.tiers
               if tier in ("", t.tier))


def measure(run: Run, counters: dict[str, Callable[[], int]],
            load: Callable[[float], list[subprocess.Popen[str]]],
            seconds: float | None = None, during: Callable[[], None] | None = None
            ) -> dict[str, float]:
    """Start the load for ``seconds``; the rate of each counter between the end of
    the warm-up and half a second before the load stops."""
    seconds = seconds or run.duration
    procs = load(seconds)
    try:
        time.sleep(run.warmup)
        t0 = time.monotonic()
        b0 = {k: f() for k, f in counters.items()}
        end = t0 + seconds - run.warmup - 0.5
        while time.monotonic() < end:
            if during:
                during()
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
        t1 = time.monotonic()
        b1 = {k: f() for k, f in counters.items()}
    finally:
        finish(procs)
    return {k: (b1[k] - b0[k]) / (t1 - t0) / MB for k in counters}


@contextmanager
def daemons(run: Run, n: int, name: str,
            tiers: tuple[str, ...] = ("ram",)) -> Iterator[list[LocalDaemon]]:
    base = run.fresh(name)
    if n == 1:
        group = [LocalDaemon(base / "g0", "g0", tiers=run.tier(0, tiers),
                             cpus=run.server_cpus).start()]
    else:
        group = start_group(base, n, tiers=run.tier, cpus=run.server_cpus)
    try:
        yield group
    finally:
        for d in group:
            d.stop()


def limit(admin: AdminClient, job: str, mbps: float, scope: Scope = Scope.DAEMON) -> None:
    admin.set_policy(Policy(Selector(Kind.JOB, job), limit_bps=mbps * MB, scope=scope))


# ------------------------------------------------------------------ experiments


def single(run: Run) -> None:
    with daemons(run, 1, "single") as (d,):
        admin = d.admin()
        for target in (25, 50, 100, 200):
            job = f"single-{target}"
            limit(admin, job, target)
            got = measure(run, {"job": lambda j=job: job_bytes([admin], j)},
                          lambda s, j=job: ior([d.address], j, "64KiB", 4, s))
            run.row("single", f"64 KiB, 4 streams, limit {target}", target, got["job"])


def pair(run: Run) -> None:
    jobs = {"pair-40": 40, "pair-80": 80}
    with daemons(run, 1, "pair") as (d,):
        admin = d.admin()
        for job, target in jobs.items():
            limit(admin, job, target)
        got = measure(run, {j: lambda j=j: job_bytes([admin], j) for j in jobs},
                      lambda s: [p for j in jobs
                                 for p in ior([d.address], j, "64KiB", 3, s)])
        for job, target in jobs.items():
            run.row("pair", f"{job}, 64 KiB, 3 streams, at once", target, got[job])


def interference(run: Run, share: float, seconds: float) -> None:
    """A 4 KiB job (tier ram) and a 64 KiB job (tier ram2, so that the tiers' counters
    give each job's rate even with QoS off). A first load without QoS (enforcement off)
    gives the 4 KiB job's rate; it is then limited to ``share`` of that, and a second
    load switches between no QoS (enforcement off) and QoS (on, the limit applies)
    every two seconds, in one daemon process."""
    with daemons(run, 1, "interference", tiers=("ram", "ram2")) as (d,):
        admin = d.admin()
        admin.set_enforcement(False)

        def load(s: float) -> list[subprocess.Popen[str]]:
            return (ior([d.address], "small", "4KiB", 2, s, block="256KiB", procs=1)
                    + ior([d.address], "large", "64KiB", 2, s, procs=1, tier="ram2"))
        jobs: dict[str, Callable[[], int]] = {
            "small": lambda: tier_bytes([admin], "ram"),
            "large": lambda: tier_bytes([admin], "ram2")}
        alone = measure(run, jobs, load)
        limit(admin, "small", share * alone["small"])
        got = _interleaved(run, [d], seconds, load, jobs, slice_s=2.0)
    agg = {m: got[m]["small"] + got[m]["large"] for m in ("off", "on")}
    run.row("interference", "no QoS: aggregate", None, agg["off"],
            small_4KiB=round(got["off"]["small"], 1), large_64KiB=round(got["off"]["large"], 1),
            slices=int(got["off"]["slices"]))
    run.row("interference", f"4 KiB job limited to {share:.0%} of its rate", None, agg["on"],
            small_4KiB=round(got["on"]["small"], 1), large_64KiB=round(got["on"]["large"], 1),
            slices=int(got["on"]["slices"]), first_run_small_4KiB=round(alone["small"], 1))
    run.row("interference", "aggregate gain", None, 100 * (agg["on"] / agg["off"] - 1),
            unit="% over no QoS")


def written_bytes(group: list[LocalDaemon]) -> int:
    """Bytes the daemons have written so far, from /proc/PID/io: ``wchar`` counts
    write and pwrite (the tier writes) but not the sendmsg gRPC answers with, so it
    follows the tiers' counters (to 1% per quarter second, exactly over a run) and
    costs the daemons nothing to read: with stats calls to 8 daemons, half of each
    quarter-second slice went to the calls."""
    total = 0
    for d in group:
        for line in Path(f"/proc/{d.pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                total += int(line.split()[1])
    return total


def cpu_us(group: list[LocalDaemon]) -> float:
    """CPU time the daemons used so far, in microseconds, to the nanosecond: in a
    quarter-second slice at 8 daemons, 10 ms ticks would be a third of one daemon's."""
    return 1e6 * sum(cpu_seconds(d.pid) for d in group)


Load = Callable[[float], list[subprocess.Popen[str]]]


def _interleaved(run: Run, group: list[LocalDaemon], seconds: float, load: Load,
                 counters: dict[str, Callable[[], int]], slice_s: float = 1.0,
                 settle: float = 0.1) -> dict[str, dict[str, float]]:
    """One ``load`` for ``seconds``; after the warm-up, enforcement is switched every
    ``slice_s`` in the order off-on-on-off (ABBA), and each slice's counts and daemon
    CPU are added to its mode, leaving out the first ``settle`` seconds after a switch
    (requests the other mode admitted still finish then). Two processes of the same
    code differ by 10-20% in efficiency for as long as they live, and a run's cost
    drifts with this VM's neighbours by 5-10% over minutes: modes switched within the
    same processes and the same seconds see the same of both.

    Returns per mode each counter's MB/s, the daemons' CPU seconds per GB of all
    counters together, and the slices; and under "spread" the half-widths of the 95%
    confidence intervals, in percent, of on against off for the counters together
    (``MBps_pct``) and for the CPU per GB (``cpu_pct``). They come from the spread of
    the ABBA blocks' own ratios: the slices of one block see about the same state of
    the machine, and the blocks vary about independently. Only whole blocks count."""
    admins = [d.admin() for d in group]
    slices: list[tuple[str, dict[str, float]]] = []
    # The daemons are switched at once, not one after another: with 8 daemons under
    # load, calls in turn took half a second of every slice.
    pool = ThreadPoolExecutor(len(admins))

    def snap() -> dict[str, float]:
        return {"s": time.monotonic(), "cpu_us": cpu_us(group),
                **{k: f() for k, f in counters.items()}}
    procs = load(seconds)
    try:
        time.sleep(run.warmup)
        end = time.monotonic() + seconds - run.warmup - 0.5
        while time.monotonic() + slice_s <= end:
            mode = "off" if len(slices) % 4 in (0, 3) else "on"
            list(pool.map(AdminClient.set_enforcement, admins, [mode == "on"] * len(admins)))
            time.sleep(settle)
            a0 = snap()
            time.sleep(max(0.0, slice_s - settle))
            a1 = snap()
            slices.append((mode, {k: a1[k] - a0[k] for k in a0}))
    finally:
        pool.shutdown()
        for a in admins:
            a.set_enforcement(True)
        finish(procs)
    # Whole blocks only, for the figures as for their spread: a trailing off-on-on
    # would tilt the balance that ABBA keeps against a drift.
    blocks = [slices[i:i + 4] for i in range(0, len(slices) - 3, 4)]
    if not blocks:
        raise RuntimeError(f"no whole off-on-on-off block in {seconds} s of load; "
                           f"give it at least {run.warmup + 4 * slice_s + 1} s")
    whole = [x for b in blocks for x in b]
    out: dict[str, dict[str, float]] = {}
    for mode in ("on", "off"):
        s = _sum(whole, mode)
        out[mode] = {**{k: s[k] / s["s"] / MB for k in counters},
                     "cpu_s_per_GB": _cpu_per_gb(s, counters), "slices": 2 * len(blocks)}
    rate_ratios, cpu_ratios = [], []
    for b in blocks:
        on, off = _sum(b, "on"), _sum(b, "off")
        if _moved(on, counters) > 0 and _moved(off, counters) > 0:
            rate_ratios.append(_moved(on, counters) / on["s"] / (_moved(off, counters) / off["s"]))
            cpu_ratios.append(_cpu_per_gb(on, counters) / _cpu_per_gb(off, counters))
    out["spread"] = {"MBps_pct": _half_width(rate_ratios), "cpu_pct": _half_width(cpu_ratios),
                     "blocks": len(rate_ratios)}
    return out


def _sum(slices: list[tuple[str, dict[str, float]]], mode: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for m, d in slices:
        if m == mode:
            for k, v in d.items():
                out[k] = out.get(k, 0.0) + v
    return out


def _moved(s: dict[str, float], counters: dict[str, Callable[[], int]]) -> float:
    return sum(s[k] for k in counters)


def _cpu_per_gb(s: dict[str, float], counters: dict[str, Callable[[], int]]) -> float:
    """CPU seconds per GB; inf for a mode that moved nothing (its CPU was all waste)."""
    moved = _moved(s, counters)
    return s["cpu_us"] / moved * 1e3 if moved > 0 else math.inf


def _half_width(ratios: list[float]) -> float:
    """Half-width in percent of the 95% confidence interval of the mean ratio: two
    standard errors, the normal approximation, fair for the 40-100 blocks of an
    overhead measure (too narrow below ~20). 0 with fewer than two blocks."""
    if len(ratios) < 2:
        return 0.0
    return round(100 * 2 * statistics.stdev(ratios) / math.sqrt(len(ratios)), 2)


def overhead(run: Run, seconds: float, load_share: float) -> None:
    """1 MiB requests at 1/2/4/8 daemons (the size parallel file systems move data in),
    and 64 KiB at one daemon, where the per-request cost shows most. QoS on (no limits)
    and off (scheduler bypassed) alternate every quarter second in the same daemons.

    Two measures. Throughput as fast as the load goes (the servers' core saturated). And
    the daemons' CPU seconds per GB at a fixed offered load (``load_share`` of the QoS-off
    throughput), where the servers have headroom: the cost QoS adds per byte."""
    for n, transfer in ((1, "1MiB"), (2, "1MiB"), (4, "1MiB"), (8, "1MiB"), (1, "64KiB")):
        _overhead_case(run, n, transfer, seconds, load_share)


def _overhead_case(run: Run, n: int, transfer: str, seconds: float, load_share: float) -> None:
    streams = max(4, n)
    size = transfer.replace("MiB", " MiB").replace("KiB", " KiB")
    with daemons(run, n, f"ovh{n}") as group:
        admins = [d.admin() for d in group]
        addrs = [d.address for d in group]
        moved = {"MBps": lambda: written_bytes(group)}
        counted0, wrote0 = tier_bytes(admins), written_bytes(group)
        # Quarter-second slices: the daemons' efficiency wanders by 7-8% from one half
        # second to the next, slowly (successive half seconds correlate at 0.5), so the
        # closer the slices of a block, the more of it they share: at 4 daemons the
        # interval was +-2.9% with half seconds and +-1.8% with quarters, in 60 s. The
        # requests of the other mode are gone within 30 ms of a switch.
        sat = _interleaved(run, group, seconds,
                           lambda s: ior(addrs, "ovh", transfer, streams, s), moved,
                           slice_s=0.25, settle=0.04)
        load = round(load_share * sat["off"]["MBps"], 1)
        fixed = _interleaved(run, group, seconds, lambda s: ior(
            addrs, "ovh", transfer, streams, s, rate_mbps=load), moved,
            slice_s=0.25, settle=0.04)
        # The check that wchar measured what the daemons counted as written.
        wchar_vs_counters = (written_bytes(group) - wrote0) / (tier_bytes(admins) - counted0)
    on_m, off_m = sat["on"]["MBps"], sat["off"]["MBps"]
    c_on, c_off = fixed["on"]["cpu_s_per_GB"], fixed["off"]["cpu_s_per_GB"]
    run.row("overhead", f"{n} daemon(s), {size}, QoS off", None, off_m,
            cpu_s_per_GB_at_load=round(c_off, 3), offered_MBps=load,
            slices=int(sat["off"]["slices"]))
    run.row("overhead", f"{n} daemon(s), {size}, QoS on, no limits", None, on_m,
            cpu_s_per_GB_at_load=round(c_on, 3), offered_MBps=load,
            slices=int(sat["on"]["slices"]),
            throughput_overhead_pct=round(100 * (1 - on_m / off_m), 2),
            throughput_ci95_pct=sat["spread"]["MBps_pct"],
            cpu_overhead_pct=round(100 * (c_on / c_off - 1), 2),
            cpu_ci95_pct=fixed["spread"]["cpu_pct"],
            wchar_vs_counters=round(wchar_vs_counters, 4))


def fio_like_ior(directory: Path, seconds: float, cpus: set[int] | None,
                 jobs: int = 4) -> float:
    """MB/s of fio doing what qos-ior's streams do: each of ``jobs`` rewrites its own
    4 MiB file in 1 MiB writes, for ``seconds``."""
    from qos_plugin.profiler.runner import fio_path
    out = subprocess.run(
        [fio_path(), "--name=ceiling", f"--directory={directory}", "--bs=1M", "--size=4M",
         f"--numjobs={jobs}", "--rw=write", "--ioengine=psync", "--time_based",
         f"--runtime={seconds:g}", "--group_reporting", "--output-format=json",
         *([f"--cpus_allowed={','.join(map(str, sorted(cpus)))}"] if cpus else [])],
        capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout[out.stdout.find("{"):])
    return float(doc["jobs"][0]["write"]["bw_bytes"]) / MB


def ceiling(run: Run) -> None:
    scratch = run.tier()["ram"]
    fio = fio_like_ior(scratch, run.duration - run.warmup, run.server_cpus)
    for f in scratch.iterdir():
        f.unlink()
    run.row("ceiling", "fio psync, 4 jobs rewriting 4 MiB files, 1 MiB", None, fio)
    bare = pin(subprocess.Popen([sys.executable, str(HERE / "bare.py"), str(scratch)],
                                cwd=REPO, stdout=subprocess.PIPE, text=True,
                                env={"PYTHONPATH": str(REPO)}), run.server_cpus)
    try:
        assert bare.stdout is not None
        addr = bare.stdout.readline().split()[-1]
        # The bare server keeps no counters: count the bytes its tier holds at the end.
        r = run_bare(run, addr, scratch)
    finally:
        bare.kill()
        bare.wait()
    run.row("ceiling", "bare gRPC streaming server, 1 MiB", None, r)
    with daemons(run, 1, "ceiling") as (d,):
        admin = d.admin()
        got = measure(run, {"all": lambda: tier_bytes([admin])},
                      lambda s: ior([d.address], "ceil", "1MiB", 4, s))["all"]
    run.row("ceiling", "tokenbucketd, QoS on, 1 MiB", None, got,
            vs_fio=round(got / fio, 3), vs_bare=round(got / r, 3))


def run_bare(run: Run, addr: str, scratch: Path) -> float:
    """The bare server's rate from the client's count (it keeps no counters)."""
    procs = ior([addr], "bare", "1MiB", 4, run.duration, warmup=run.warmup)
    return sum(float(json.loads(p.communicate(timeout=120)[0])["steady_MBps"]) for p in procs)


def distributed(run: Run, target: float) -> None:
    with daemons(run, 4, "distributed") as group:
        admins = [d.admin() for d in group]
        limit(admins[0], "striped", target, Scope.GROUP)
        peak = [0.0]

        def watch() -> None:
            total = sum(c.limit_bps for a in admins
                        for c in a.stats(job="striped").classes if c.tag == "striped")
            peak[0] = max(peak[0], total / MB)
        got = measure(run, {"job": lambda: job_bytes(admins, "striped")},
                      lambda s: ior([d.address for d in group], "striped", "64KiB", 8, s),
                      during=watch)
        per = [round(job_bytes([a], "striped") / 1e6) for a in admins]
    run.row("distributed", f"4 daemons, group limit {target:g}, 8 streams", target,
            got["job"], peak_sum_of_parts_MBps=round(peak[0], 3), MB_per_daemon=per)


# ------------------------------------------------------------------ report


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| experiment | case | target MB/s | got MB/s | deviation | notes |",
             "|---|---|---:|---:|---:|---|"]
    for r in rows:
        notes = ", ".join(f"{k} {v}" for k, v in r.items()
                          if k not in ("experiment", "case", "target_MBps", "got_MBps",
                                       "deviation"))
        dev = f"{r['deviation']:+.2%}" if "deviation" in r else ""
        tgt = f"{r['target_MBps']:g}" if r["target_MBps"] else ""
        lines.append(f"| {r['experiment']} | {r['case']} | {tgt} | {r['got_MBps']:.2f} | "
                     f"{dev} | {notes} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=12.0, help="seconds per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds left out at the start")
    ap.add_argument("--only", default=",".join(EXPERIMENTS),
                    help=f"comma-separated subset of {','.join(EXPERIMENTS)}")
    ap.add_argument("--interference-seconds", type=float, default=82.0,
                    help="interference: seconds of the load that switches modes")
    ap.add_argument("--load-share", type=float, default=0.5,
                    help="overhead: the fixed offered load, as a share of QoS-off throughput")
    ap.add_argument("--overhead-seconds", type=float, default=60.0,
                    help="overhead: seconds per load (modes switched every quarter second)")
    ap.add_argument("--small-share", type=float, default=0.25,
                    help="interference: the 4 KiB job's limit, as a share of its rate "
                         "without QoS")
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    ap.add_argument("--no-pin", action="store_true",
                    help="let the kernel place servers and load (default: servers on CPU 0)")
    a = ap.parse_args()
    only = [x.strip() for x in a.only.split(",") if x.strip()]
    bad = [x for x in only if x not in EXPERIMENTS]
    if bad or a.duration <= a.warmup + 1:
        print(f"run.py: error: unknown experiment {bad} or duration <= warmup + 1; "
              f"choose from {','.join(EXPERIMENTS)}", file=sys.stderr)
        return 2
    started = time.time()
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm, \
            tempfile.TemporaryDirectory() as state:
        run = Run(a.duration, a.warmup, Path(shm), Path(state), pin=not a.no_pin)
        global LOAD_CPUS
        LOAD_CPUS = run.load_cpus
        print(f"  {'experiment':12s} {'case':34s} {'target':>7s} {'got MB/s':>9s} "
              f"{'dev':>8s}", flush=True)
        steps: dict[str, Callable[[], None]] = {
            "single": lambda: single(run), "pair": lambda: pair(run),
            "interference": lambda: interference(run, a.small_share, a.interference_seconds),
            "overhead": lambda: overhead(run, a.overhead_seconds, a.load_share),
            "ceiling": lambda: ceiling(run),
            "distributed": lambda: distributed(run, 100.0)}
        for name in only:
            steps[name]()
    doc = {"duration_s": a.duration, "warmup_s": a.warmup, "wall_s": round(time.time() - started),
           "machine": f"{os.cpu_count()} vCPU, tiers in /dev/shm",
           "server_cpus": sorted(run.server_cpus or []), "load_cpus": sorted(LOAD_CPUS or []),
           "rows": run.rows}
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(markdown(run.rows))
    print(f"wrote {a.out} and {a.out.with_suffix('.md')} ({doc['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
