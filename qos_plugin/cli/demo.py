"""``qos-plan demo``: the whole product on this machine, no cluster needed.

1. profile this machine's tiers (quick sweep): ``/dev/shm`` as a node-local
   tmpfs, a directory on disk as the shared tier;
2. write the 1000 Genomes example (template and I/O primitives, built from
   public WfCommons facts) and build its cost table from the profile;
3. train the model (every placement at N = 2, 5, 10, regions, rules) into a
   registry under the output directory;
4. answer four queries with explanations, and draw the region plot.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path

NODES = "2,5,10"


def _step(text: str) -> None:
    print(f"\n== {text}")


def run_demo(out_dir: Path, shm: Path = Path("/dev/shm")) -> int:
    from qos_plugin.cli.qos_plan import main as qos_plan
    from qos_plugin.examples.genome import io_data, template_dict
    from qos_plugin.model.iodata import write_io_csv

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    shared = out_dir / "shared-tier"
    shared.mkdir(exist_ok=True)
    local = Path(tempfile.mkdtemp(prefix="qos-demo-", dir=shm if shm.is_dir() else None))
    registry = out_dir / "registry"
    try:
        _step(f"1. profiling tiers: tmpfs={local} (node-local), disk={shared} (shared)")
        profile = out_dir / "profile.csv"
        rc = qos_plan(["profile", "--quick", "--tier", f"tmpfs={local}:node-local",
                       "--tier", f"disk={shared}:shared", "--out", str(profile)])
        if rc:
            return rc
    finally:
        shutil.rmtree(local, ignore_errors=True)

    _step("2. the 1000 Genomes workflow (10 chromosomes, 7 populations) and its costs")
    template = out_dir / "1000genome.json"
    template.write_text(json.dumps(template_dict(), indent=1))
    io_csv = out_dir / "1000genome-io.csv"
    write_io_csv(io_data(), io_csv)
    print(f"template {template}, I/O primitives {io_csv}")
    costs = out_dir / "costs.csv"
    rc = qos_plan(["costs", "--template", str(template), "--io-data", str(io_csv),
                   "--profile", str(profile), "--nodes", NODES, "--out", str(costs)])
    if rc:
        return rc

    _step("3. training the model (every placement, regions, rules)")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(registry / "1000genome")
    rc = qos_plan(["train", "1000genome", "--template", str(template), "--costs", str(costs),
                   "--io-data", str(io_csv), "--nodes", NODES, "--registry", str(registry)])
    if rc:
        return rc
    rc = qos_plan(["makespan", "--template", str(template), "--costs", str(costs),
                   "--nodes", NODES, "--out", str(out_dir / "makespan.csv")])
    if rc:
        return rc
    rc = qos_plan(["regions", "--makespan", str(out_dir / "makespan.csv"),
                   "--out-dir", str(out_dir / "regions")])
    if rc:
        return rc

    queries = [
        ("fastest on at most 5 nodes", ["--max-nodes", "5"]),
        ("only the shared disk and tmpfs, frugal, within 2 hours",
         ["--tiers", "disk,tmpfs", "--objective", "frugal", "--deadline", "2:00:00"]),
        ("tmpfs is down", ["--down-tier", "tmpfs"]),
        ("an impossible deadline without tmpfs", ["--deadline", "1:00", "--exclude-tier",
                                                  "tmpfs"]),
    ]
    for i, (title, args) in enumerate(queries, 1):
        _step(f"4.{i} query: {title}")
        print(f"$ qos-plan query 1000genome {' '.join(args)}")
        qos_plan(["query", "1000genome", "--registry", str(registry), *args])
    print(f"\nregion plot: {out_dir / 'regions' / 'regions.png'}; model registry: {registry}")
    print(f"demo done in {time.perf_counter() - t0:.1f} s")
    return 0
