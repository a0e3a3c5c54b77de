"""Slurm integration figures, on a real multi-node cluster started by deploy/local/up.

  deploy       deploy/local/up --nodes 3 to three idle nodes, and deploy/local/down
               (fresh directory each time; the Debian packages already installed)
  sbatch       the latency --qos-* adds to sbatch: plain `sbatch --hold` against the
               same with a placement (shared tier only, and with a node-local tier as a
               user), and the planner helper alone
  first job    submit to COMPLETED for a QoS job on the shared tier and on a node-local
               tier (the node prolog and epilog)
  throughput   dd of one job (1 MiB blocks, conv=fsync) into its shared-tier directory
               through qosfs and the daemons, against dd as root straight into the store
               on the same disk; and into node-local tiers used directly (tmpfs, disk)

Run as root:  .venv/bin/python benchmarks/slurm/run.py [--reps 20]
Writes benchmarks/slurm/results.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from qos_plugin.slurm.localcluster import LocalCluster  # noqa: E402

USER = "qosuser"


def timed(argv: list[str], env: dict[str, str],
          cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=cwd)
    return time.perf_counter() - t0, p


def stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"median_ms": round(1000 * statistics.median(xs), 1),
            "p90_ms": round(1000 * xs[int(0.9 * (len(xs) - 1))], 1),
            "min_ms": round(1000 * xs[0], 1), "n": len(xs)}


def deploy(reps: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(reps):
        root = Path(f"/tmp/qos-bench-deploy-{os.getpid()}-{i}")
        t_up, p = timed([str(REPO / "deploy/local/up"), "--dir", str(root), "--nodes", "3",
                         "--user", USER], dict(os.environ), REPO)
        if p.returncode:
            raise SystemExit(f"deploy/local/up failed: {p.stderr}")
        t_down, p = timed([str(REPO / "deploy/local/down"), "--dir", str(root), "--purge"],
                          dict(os.environ), REPO)
        rows.append({"up_s": round(t_up, 2), "down_s": round(t_down, 2)})
        print(f"  deploy {i + 1}: up {t_up:.2f} s, down {t_down:.2f} s", flush=True)
    return rows


_DD = re.compile(r"(\d+) bytes .* copied, ([\d.]+) s")


def dd_rate(text: str) -> float:
    """MB/s from dd's last line: its bytes over its seconds."""
    m = _DD.findall(text)
    if not m:
        raise SystemExit(f"no dd summary in {text!r}")
    n, secs = m[-1]
    return int(n) / float(secs) / 1e6


DD = "dd if=/dev/zero bs=1M count={mib} conv=fsync"
# (tier, --qos-* options) of a job whose placement puts its data there
SHARED = ("pfs", ["--qos-exclude-tier=ram,ssd"])
RAM = ("ram", ["--qos-objective=fastest", "--qos-exclude-tier=ssd", "--qos-max-nodes=1"])
SSD = ("ssd", ["--qos-objective=fastest", "--qos-exclude-tier=ram", "--qos-max-nodes=1"])


def dd_jobs(env: dict[str, str], work: Path, as_user: list[str], mib: int, reps: int,
            jobs: dict[str, tuple[str, list[str]]]) -> dict[str, list[float]]:
    """MB/s of each of ``reps`` dd runs inside one job per case, into the job's directory
    on the case's tier."""
    runs: dict[str, list[float]] = {}
    dd = DD.format(mib=mib)
    for name, (tier, opts) in jobs.items():
        script = work / f"dd-{tier}.sh"
        var = f"SLURM_SPANK_QOS_DIR_{tier.upper()}"
        script.write_text(f"#!/bin/bash\nfor i in $(seq {reps}); do {dd} of=${var}/f 2>&1; "
                          f"rm -f ${var}/f; done\n")
        script.chmod(0o755)
        out = work / f"dd-{tier}.out"
        p = subprocess.run(as_user + ["sbatch", "--parsable", "-W", "-o", str(out),
                                      "--qos-workflow=pipeline", *opts, str(script)],
                           env=env, capture_output=True, text=True, cwd=work)
        if p.returncode:
            raise SystemExit(f"{name}: {p.stderr.strip()}")
        runs[name] = [dd_rate(line) for line in out.read_text().splitlines()
                      if "copied" in line]
        if len(runs[name]) != reps:
            raise SystemExit(f"{name}: {out.read_text()}")
        print(f"  dd {name:44s} {statistics.median(runs[name]):8.1f} MB/s  {runs[name]}",
              flush=True)
    return runs


def raw_dd(path: Path, mib: int, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        p = subprocess.run(["sh", "-c", f"{DD.format(mib=mib)} of={path} 2>&1; rm -f {path}"],
                           capture_output=True, text=True)
        out.append(dd_rate(p.stdout))
    print(f"  dd {'raw store, dd as root':44s} {statistics.median(out):8.1f} MB/s  {out}",
          flush=True)
    return out


def enforced_local(mib: int, reps: int) -> dict[str, list[float]]:
    """A one-node cluster whose disk tier goes through the node's own daemon: what
    enforcing a node-local tier would cost a job."""
    root = Path(f"/tmp/qos-bench-local-{os.getpid()}")
    subprocess.run([str(REPO / "deploy/local/up"), "--dir", str(root), "--nodes", "1",
                    "--enforce-local", "--user", USER], check=True, capture_output=True)
    try:
        c = LocalCluster(root)
        env = {**os.environ, **c.env()}
        work = root / "work"
        work.mkdir(mode=0o1777)
        work.chmod(0o1777)
        as_user = ["runuser", "-u", USER, "--", "env", f"SLURM_CONF={env['SLURM_CONF']}"]
        return dd_jobs(env, work, as_user, mib, reps,
                       {"node-local disk through its node's daemon (job)": SSD})
    finally:
        subprocess.run([str(REPO / "deploy/local/down"), "--dir", str(root), "--purge"],
                       capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20, help="sbatch calls per case")
    ap.add_argument("--deploys", type=int, default=3)
    ap.add_argument("--dd-mib", type=int, default=512, help="MiB per dd run")
    ap.add_argument("--dd-reps", type=int, default=3)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (it starts Slurm)")
    results: dict[str, Any] = {"deploy": deploy(a.deploys)}

    root = Path(f"/tmp/qos-bench-{os.getpid()}")
    subprocess.run([str(REPO / "deploy/local/up"), "--dir", str(root), "--nodes", "3",
                    "--user", USER], check=True, capture_output=True)
    c = LocalCluster(root)
    env = {**os.environ, **c.env()}
    work = root / "work"
    work.mkdir(mode=0o1777)
    work.chmod(0o1777)
    script = work / "job.sh"
    script.write_text("#!/bin/bash\ntrue\n")
    script.chmod(0o755)
    as_user = ["runuser", "-u", USER, "--", "env", f"SLURM_CONF={env['SLURM_CONF']}"]
    base = ["sbatch", "--parsable", "-o", "/dev/null"]
    qos = ["--qos-workflow=pipeline"]
    cases = {
        "plain sbatch (root)": base + ["--hold", str(script)],
        "--qos-* shared tier (root)": base + ["--hold", *qos, "--qos-exclude-tier=ram,ssd",
                                              str(script)],
        "plain sbatch (user)": as_user + base + ["--hold", str(script)],
        "--qos-deadline, node-local tier (user)": as_user + base + [
            "--hold", *qos, "--qos-deadline=5:00", str(script)],
        "planner helper alone (user)": as_user + [
            str(root / "bin/qos-slurm-plan"), "--site", str(c.site_conf), "plan",
            "--workflow", "pipeline", "--deadline", "5:00"],
    }
    sb: dict[str, dict[str, float]] = {}
    try:
        for name, argv in cases.items():
            times = []
            for _ in range(a.reps):
                t, p = timed(argv, env, work)
                if p.returncode:
                    raise SystemExit(f"{name}: {p.stderr.strip()}")
                times.append(t)
                if p.stdout.strip().isdigit():
                    subprocess.run(["scancel", p.stdout.strip()], env=env)
            sb[name] = stats(times)
            print(f"  {name:42s} median {sb[name]['median_ms']:7.1f} ms  "
                  f"p90 {sb[name]['p90_ms']:7.1f} ms", flush=True)
        results["sbatch"] = sb
        results["added_ms"] = {
            "shared tier (root)": round(sb["--qos-* shared tier (root)"]["median_ms"]
                                        - sb["plain sbatch (root)"]["median_ms"], 1),
            "node-local tier (user)": round(
                sb["--qos-deadline, node-local tier (user)"]["median_ms"]
                - sb["plain sbatch (user)"]["median_ms"], 1)}
        first = {}
        shared_job = base + [*qos, "--qos-exclude-tier=ram,ssd", str(script)]
        for name, argv in (("QoS job, shared tier (root)", shared_job),
                           ("QoS job, node-local tier (user)",
                            as_user + base + [*qos, "--qos-deadline=5:00", str(script)])):
            t0 = time.perf_counter()
            p = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=work)
            job = p.stdout.strip()
            while True:
                out = subprocess.run(["scontrol", "-o", "show", "job", job], env=env,
                                     capture_output=True, text=True).stdout
                if "JobState=COMPLETED" in out or "JobState=FAILED" in out:
                    break
                time.sleep(0.05)
            first[name] = round(time.perf_counter() - t0, 2)
            print(f"  {name:42s} submit to completed {first[name]:.2f} s", flush=True)
        results["job_turnaround_s"] = first
        runs = dd_jobs(env, work, as_user, a.dd_mib, a.dd_reps,
                       {"shared tier through qosfs (job)": SHARED,
                        "node-local tmpfs, direct (job)": RAM,
                        "node-local disk, direct (job)": SSD})
        runs["raw store, dd as root"] = raw_dd(c.store_path("pfs") / "raw-dd", a.dd_mib,
                                               a.dd_reps)
    finally:
        subprocess.run([str(REPO / "deploy/local/down"), "--dir", str(root), "--purge"],
                       capture_output=True)
    runs |= enforced_local(a.dd_mib, a.dd_reps)
    med = {k: round(statistics.median(v), 1) for k, v in runs.items()}
    results["throughput"] = {
        "MBps": med, "runs": runs,
        "qosfs_vs_raw": round(med["shared tier through qosfs (job)"]
                              / med["raw store, dd as root"], 3),
        "enforced_vs_direct_disk": round(med["node-local disk through its node's daemon (job)"]
                                         / med["node-local disk, direct (job)"], 3)}
    (HERE / "results.json").write_text(json.dumps(results, indent=1))
    ups = [r["up_s"] for r in results["deploy"]]
    downs = [r["down_s"] for r in results["deploy"]]
    lines = ["| measure | value |", "|---|---:|",
             f"| deploy/local/up to idle (median of {len(ups)}) | {statistics.median(ups):.2f} s |",
             f"| deploy/local/down | {statistics.median(downs):.2f} s |"]
    for name, s in sb.items():
        lines.append(f"| {name}, median (p90) | {s['median_ms']:.0f} ms ({s['p90_ms']:.0f}) |")
    for name, v in results["added_ms"].items():
        lines.append(f"| **added by --qos-\\***, {name} | **{v:.0f} ms** |")
    for name, v in first.items():
        lines.append(f"| {name}: submit to completed | {v:.2f} s |")
    tp = results["throughput"]
    for name, v in tp["MBps"].items():
        lines.append(f"| dd {a.dd_mib} MiB, {name}, median of {a.dd_reps} | {v:.0f} MB/s |")
    lines.append(f"| **qosfs against the raw store** | **{tp['qosfs_vs_raw']:.2f}** |")
    lines.append(f"| **node-local disk: through its daemon against direct** | "
                 f"**{tp['enforced_vs_direct_disk']:.2f}** |")
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
