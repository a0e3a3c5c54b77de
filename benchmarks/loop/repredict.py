#!/usr/bin/env python3
"""Re-predict a kept loop experiment's measured runs with the code checked out here.

``benchmarks/loop/run.py --keep`` leaves its cluster directory (default /tmp/qos-loop):
the profile, each workflow's training inputs and every validation's ``runs.json``. This
trains each workflow again from that profile into a registry of its own, compares the
same measured runs with its predictions (``qos-plan validate NAME --runs``), calibrates
from the "before" runs and compares the calibrated model with the "after" runs. Nothing
is run on a cluster; it prints one line per row of the experiment's table (a).

``--starts-from-log`` replaces a profile's linear per-node start (``phaseStartPerNodeSeconds``,
7dd5ce3) by the starts on 1, 2, ... nodes the fan-out job logged
(``phaseStartMoreSeconds``), for a profile measured before that column existed.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = REPO / ".venv" / "bin" / "python"
sys.path.insert(0, str(REPO))
from qos_plugin.model.profile import format_start_more  # noqa: E402
from qos_plugin.profiler.runner import start_more  # noqa: E402

TIERS = "pfs:shared,ram:node-local,ssd:node-local"


def _profile(root: Path, out: Path, from_log: bool) -> Path:
    src = root / "profile" / "profile.csv"
    if not from_log:
        return src
    starts: list[float] = []
    for log in sorted((root / "profile").glob("qos-fanout-*.out")):
        m = re.search(r"start on 1 to \d+ nodes: ([0-9., ]+) s", log.read_text())
        if m:
            starts = [float(x) for x in m.group(1).split(",")]
    if not starts:
        raise SystemExit(f"--starts-from-log: no starts in {root / 'profile'}/qos-fanout-*.out")
    more = format_start_more(start_more(starts))
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = [c for c in rows[0] if c != "phaseStartPerNodeSeconds"]
    cols += [] if "phaseStartMoreSeconds" in cols else ["phaseStartMoreSeconds"]
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "phaseStartMoreSeconds": more})
    print(f"starts on 1-{len(starts)} nodes {starts} s: phaseStartMoreSeconds {more}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/qos-loop"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/qos-repredict"))
    ap.add_argument("--starts-from-log", action="store_true")
    a = ap.parse_args(argv)
    shutil.rmtree(a.work, ignore_errors=True)
    registry = a.work / "registry"
    registry.mkdir(parents=True)
    profile = _profile(a.dir, a.work / "profile.csv", a.starts_from_log)

    def qp(*args: str) -> dict | None:
        p = subprocess.run([str(PY), "-m", "qos_plugin.cli.qos_plan", *args,
                            "--registry", str(registry)], capture_output=True, text=True)
        if p.returncode:
            print(f"  {args[0]}: {p.stderr.strip()[-300:]}")
            return None
        return json.loads(p.stdout) if "--json" in args else {}

    out: dict[str, dict] = {}
    for name in ("loop", "kgenome"):
        model = a.dir / "profile" / "model"
        if not (model / f"{name}.json").exists():
            continue
        qp("train", name, "--template", str(model / f"{name}.json"), "--io-data",
           str(model / f"{name}-io.csv"), "--profile", str(profile), "--tiers", TIERS,
           "--nodes", "1,2,3")
        for n in (1, 2, 3):
            runs = {w: a.dir / "loop" / f"validate-{name}-{n}-{w}" / "runs.json"
                    for w in ("before", "after")}
            if not runs["before"].exists():
                continue
            row: dict[str, dict | None] = {}
            row["before"] = qp("validate", f"{name}@1", "--runs", str(runs["before"]),
                               "--json", "--out", str(a.work / f"{name}-{n}-before"))
            cal = qp("calibrate", f"{name}@1", "--runs", str(runs["before"]), "--json")
            if cal and runs["after"].exists():
                row["after"] = qp("validate", f"{name}@{cal['version']}", "--runs",
                                  str(runs["after"]), "--json", "--out",
                                  str(a.work / f"{name}-{n}-after"))
            out[f"{name} N={n}"] = row
            for when, v in row.items():
                if v:
                    print(f"{name} N={n} {when}: concordance {v['concordance']:.3f}, "
                          f"Spearman {v['spearman']:.3f}, median "
                          f"{100 * v['median_relative_error']:.1f}%, max "
                          f"{100 * v['max_relative_error']:.1f}%, best within 5%: "
                          f"{'yes' if v['best_within'] else 'no'} "
                          f"(gap {100 * v['best_gap']:.1f}%)", flush=True)
    (a.work / "repredicted.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
