"""``qos-plan``: score every storage placement of a workflow and group them.

    qos-plan costs     --template T [--io-data W] --profile P --nodes 2,5,10 --out costs.csv
    qos-plan makespan  --template T --costs C --nodes 2,5,10 --out makespan.csv
    qos-plan regions   --makespan M --out-dir D [--select separated|constrained|...]
    qos-plan rank      --makespan M --regions D/config_regions.csv --nodes 10 [--json]
    qos-plan train     NAME --template T (--costs C | [--io-data W] --profile P) --nodes 2,5,10
                       [--select separated|constrained]
    qos-plan list
    qos-plan query     NAME [--deadline 20:00] [--max-nodes 5] [--tiers a,b]
                       [--exclude-tier x] [--down-tier y] [--objective fastest|frugal] [--json]
    qos-plan run       NAME --placement STAGE=TIER,... --nodes N [--scale F]
                       --tier-dir TIER=PATH ... [--backend local|slurm] [--out RUN.json]
    qos-plan validate  NAME --nodes N --tier-dir TIER=PATH ... [--placements all|K]
                       [--repeat R] [--scale F] [--json] [--out DIR]
    qos-plan calibrate NAME --runs RUNS.json [--daemon-stats STATS.json] [--json]
    qos-plan demo      [--out-dir D]

Every failure is one line on stderr and exit status 1 (2 for a usage error);
``-v`` adds the traceback. ``query`` exits 3 when no placement meets the
constraints (the answer says why).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from qos_plugin.cli.values import parse_count
from qos_plugin.errors import InputError, QosPluginError, one_line

log = logging.getLogger(__name__)

EPILOG = """\
Typical pipeline:
  qos-plan costs    --template wf.json --io-data io.csv --profile ior.csv --nodes 2,5,10 \\
                    --out costs.csv
  qos-plan makespan --template wf.json --costs costs.csv --nodes 2,5,10 --out makespan.csv
  qos-plan regions  --makespan makespan.csv --out-dir regions/
  qos-plan rank     --makespan makespan.csv --regions regions/config_regions.csv --nodes 10

I/O data: a workflow-data CSV, or a WfFormat 1.5/1.6 instance (its tasks' input and
output files; --transfer-size gives the bytes per operation, default 1MiB). Without
--io-data the template's own I/O is read when it is a WfFormat instance.

Tiers: by default kinds are read from the data (a tier with fan-out moves 'x-x' is
node-local, the others shared) and node-local tiers are ordered fastest first.
Declare them with --tiers NAME:shared,NAME:node-local,... (fastest node-local first).
"""


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, as every other error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, one_line(f"{self.prog}: error: {message}; see '{self.prog} --help'")
                  + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="qos-plan", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Predict the makespan of every storage placement of a workflow, "
                    "group placements into regions and rank them.", epilog=EPILOG)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def tiers_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--tiers", metavar="SPEC",
                        help="tiers as NAME:shared,NAME:node-local,... (node-local fastest "
                             "first); default: read from the data")

    def missing_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--missing-cost", choices=["error", "zero"], default="error",
                        help="a cost lookup that finds no row: error (default: refuse, "
                             "naming the row) or zero (charge it 0 s, as the published "
                             "model did; the prediction is then optimistic)")
        sp.add_argument("--memory-budget", metavar="SIZE",
                        help="refuse an evaluation estimated to need more memory than this "
                             "(e.g. 16GiB; default: half of this machine's memory)")

    def io_opt(sp: argparse.ArgumentParser, use: str) -> None:
        sp.add_argument("--io-data", help=f"I/O primitives{use}: a workflow-data CSV or a "
                                          "WfFormat instance (default: the --template when "
                                          "it is a WfFormat instance)")
        sp.add_argument("--transfer-size", metavar="SIZE",
                        help="bytes of one read or write for I/O from a WfFormat instance, "
                             "which has no such field (e.g. 4KiB; default 1MiB); a CSV "
                             "gives its own per row")

    c = sub.add_parser("costs", help="build a per-edge cost table from measurements",
                       description="Build the per-edge cost table from a template, measured "
                                   "I/O primitives and a storage profile.")
    c.add_argument("--template", required=True, help="DAG template JSON (QoSFlow format) or "
                                                     "a WfFormat 1.5/1.6 instance")
    io_opt(c, "")
    c.add_argument("--profile", required=True, help="storage profile CSV (IOR schema)")
    c.add_argument("--nodes", required=True, help="node counts, e.g. 2,5,10")
    c.add_argument("--out", required=True, help="cost table CSV to write")
    tiers_opt(c)

    m = sub.add_parser("makespan", help="makespan of every placement",
                       description="Evaluate every valid (configuration, N) and write the "
                                   "makespan table, sorted by makespan.")
    m.add_argument("--template", required=True, help="DAG template JSON or WfFormat instance")
    m.add_argument("--costs", required=True, help="per-edge cost table CSV")
    m.add_argument("--nodes", required=True, help="node counts, e.g. 2,5,10")
    m.add_argument("--out", required=True, help="makespan CSV to write")
    tiers_opt(m)
    missing_opt(m)

    def select_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--select", default="separated",
                        choices=["separated", "constrained", "pass_only", "weighted"],
                        help="how regions are chosen: separated (default: the most accurate "
                             "regions whose neighbours are all distinct), or a "
                             "cross-validated alpha: constrained (the published QoSFlow "
                             "run), pass_only, weighted")

    r = sub.add_parser("regions", help="group placements into regions (CART)",
                       description="Partition the configurations into regions of similar "
                                   "makespan; write regions.json, config_regions.csv and "
                                   "regions.png to the output directory.")
    r.add_argument("--makespan", required=True, help="makespan CSV from 'qos-plan makespan'")
    r.add_argument("--out-dir", required=True, help="directory for the results")
    select_opt(r)
    r.add_argument("--lookahead", type=int, default=2,
                   help="separated: tree levels a region may be cut down at once (2)")
    r.add_argument("--min-leaf", type=int, default=8, help="rows per leaf, final tree (8)")
    r.add_argument("--cv-min-leaf", type=int, default=3,
                   help="rows per leaf in cross-validation trees (3)")
    r.add_argument("--folds", type=int, default=5, help="K of repeated K-fold (5)")
    r.add_argument("--repeats", type=int, default=5, help="repeats of K-fold (5)")
    r.add_argument("--seed", type=int, default=42, help="random seed (42)")
    r.add_argument("--g-delta", type=float, default=0.10,
                   help="relative gap that makes neighbouring regions distinct (0.10): "
                        "between their medians, and in the adaptive Hedges' g threshold; "
                        "0 for the fixed --g-min threshold (and no gap)")
    r.add_argument("--g-min", type=float, default=0.30, help="fixed Hedges' g threshold")
    r.add_argument("--g-floor", type=float, default=0.0,
                   help="least adaptive Hedges' g threshold, e.g. 0.8 for regions that "
                        "overlap little (0: the published threshold)")

    k = sub.add_parser("rank", help="pairwise concordance of FSF, LTL, Hybrid and QoSFlow",
                       description="Order the configurations at one node count by each "
                                   "policy and report its pairwise concordance.")
    k.add_argument("--makespan", required=True, help="makespan CSV")
    k.add_argument("--regions", required=True, help="config_regions.csv from 'qos-plan regions'")
    k.add_argument("--nodes", required=True, help="the node count to rank at")
    k.add_argument("--json", action="store_true", help="print one JSON object")
    tiers_opt(k)

    def registry_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--registry", metavar="DIR",
                        help="model registry directory (default: $QOS_PLAN_REGISTRY, the "
                             "config file, else ~/.local/share/qos-plugin/models)")

    t = sub.add_parser("train", help="train a model and store it in the registry",
                       description="Evaluate every placement, fit regions and store the "
                                   "result as the next version of model NAME.")
    t.add_argument("name", help="model name (letters, digits, '.', '_', '-')")
    t.add_argument("--template", required=True, help="DAG template JSON or WfFormat instance")
    t.add_argument("--costs", help="per-edge cost table CSV (else built from --io-data and "
                                   "--profile)")
    io_opt(t, " (builds costs with --profile, and gives the volumes a run and the "
              "bandwidth figures use)")
    t.add_argument("--profile", help="storage profile CSV (IOR schema)")
    t.add_argument("--nodes", required=True, help="node counts, e.g. 2,5,10")
    select_opt(t)
    tiers_opt(t)
    missing_opt(t)
    registry_opt(t)

    ls = sub.add_parser("list", help="models in the registry",
                        description="List the models of the registry, newest version each.")
    ls.add_argument("--json", action="store_true", help="print one JSON array")
    registry_opt(ls)

    q = sub.add_parser("query", help="best placement under QoS constraints",
                       description="Answer a QoS query with model NAME (NAME@VERSION for an "
                                   "older version): the placement, its predicted makespan, "
                                   "region, critical path and bandwidth, or why none fits.")
    q.add_argument("name", help="model name, or NAME@VERSION")
    q.add_argument("--deadline", help="time limit in Slurm syntax: MM, MM:SS, HH:MM:SS, "
                                      "D-HH[:MM[:SS]]")
    q.add_argument("--max-nodes", help="use at most this many nodes")
    q.add_argument("--tiers", dest="allowed", help="use only these tiers, e.g. beegfs,ssd")
    q.add_argument("--exclude-tier", action="append", default=[], metavar="TIER",
                   help="do not use this tier (repeat or comma-separate)")
    q.add_argument("--down-tier", action="append", default=[], metavar="TIER",
                   help="this tier is down: find the best alternative (repeatable)")
    q.add_argument("--objective", default="fastest", choices=["fastest", "frugal"],
                   help="fastest (default), or frugal: fewest nodes, then least node-local "
                        "tier, then fastest")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    registry_opt(q)

    pr = sub.add_parser("profile", help="measure this machine's storage tiers",
                        description="Measure read/write bandwidth of each tier with fio "
                                    "(transfer size x data size x tasks) and copies between "
                                    "tiers with cp, and write a storage profile in the IOR "
                                    "CSV schema that 'qos-plan costs' reads.")
    pr.add_argument("--tier", action="append", required=True, metavar="NAME=PATH:KIND",
                    help="a tier to measure, e.g. tmpfs=/dev/shm/qos:node-local or "
                         "disk=/var/tmp/qos:shared (repeat; one must be shared)")
    pr.add_argument("--out", required=True, help="profile CSV to write")
    pr.add_argument("--quick", action="store_true",
                    help="a small sweep that finishes in well under a minute")
    pr.add_argument("--long-runs", action="store_true",
                    help="also read, write (1 MiB transfers) and copy 512 MiB per run: rates "
                         "of the volumes workflows move, which a short run's start lowers")

    rn = sub.add_parser("run", help="run a trained workflow for real (local or Slurm)",
                        description="Run model NAME's workflow for real: each stage's tasks "
                                    "read and write its I/O volumes (times --scale, the I/O "
                                    "data's transfer sizes) on the placement's tier "
                                    "directories, with the model's stage-in copies, stage-out "
                                    "moves and barriers between levels; records per-stage and "
                                    "per-phase times and bytes. --backend local runs the tasks "
                                    "as processes here; --backend slurm, inside an allocation, "
                                    "as srun steps on its nodes (task i on node i %% N).")
    rn.add_argument("name", help="model name, or NAME@VERSION")
    rn.add_argument("--placement", required=True, metavar="STAGE=TIER,...",
                    help="the tier of every stage")
    rn.add_argument("--nodes", required=True, help="node count (one the model has)")
    rn.add_argument("--scale", default="1", help="shrink every volume by this factor, "
                                                 "0 < F <= 1 (default 1)")
    rn.add_argument("--tier-dir", action="append", default=[], metavar="TIER=PATH",
                    help="directory of a tier (repeat; the home tier and every tier of the "
                         "placement; locally a node-local tier gets node0..node{N-1} under "
                         "it; in Slurm mode the job's own directories are the default)")
    rn.add_argument("--backend", default="local", choices=["local", "slurm"],
                    help="local: processes on this machine (default); slurm: srun steps in "
                         "the current allocation")
    rn.add_argument("--out", metavar="RUN.json", help="write the run's record as JSON")
    registry_opt(rn)

    from qos_plugin.cli.validate import add_parsers as validation_parsers

    validation_parsers(sub, registry_opt)

    d = sub.add_parser("demo", help="run the whole pipeline on the bundled example",
                       description="Build costs, makespan, regions and rankings for the "
                                   "example workflow shipped with the package.")
    d.add_argument("--out-dir", default="demo-out", help="directory for the results")
    return p


def _load_template(path: str):  # type: ignore[no-untyped-def]
    from qos_plugin.model.wfformat import load_any_template

    return load_any_template(path)


def _tiers(spec: str | None, template, costs, nodes,  # type: ignore[no-untyped-def]
           missing_cost: str = "error"):
    from qos_plugin.model.makespan import infer_tiers
    from qos_plugin.model.tiers import format_tiers, parse_tiers

    tiers = parse_tiers(spec) if spec else infer_tiers(template, costs, nodes, missing_cost)
    log.info("tiers: %s", format_tiers(tiers))
    return tiers


def _measured_costs(template, io, profile_path: str, spec: str | None,  # type: ignore[no-untyped-def]
                    nodes):
    """Cost table, tiers and the profile read, from measured I/O and a storage profile."""
    from qos_plugin.model.costbuild import build_cost_table
    from qos_plugin.model.profile import load_profile
    from qos_plugin.model.tiers import parse_tiers

    profile = load_profile(profile_path)
    tiers = parse_tiers(spec) if spec else profile.infer_tiers()
    return build_cost_table(template, io, profile, tiers, nodes), tiers, profile


def _load_io(a: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The I/O primitives of --io-data, else of the template (a WfFormat instance)."""
    from qos_plugin.model.wfformat import load_any_io_data

    path = a.io_data or a.template
    return path, load_any_io_data(path, a.transfer_size)


def cmd_costs(a: argparse.Namespace) -> int:
    from qos_plugin.model.costs import save_costs

    template = _load_template(a.template)
    table, tiers, _ = _measured_costs(template, _load_io(a)[1], a.profile, a.tiers, a.nodes)
    save_costs(table, a.out)
    print(f"wrote {len(table)} cost rows for {len(template.stages)} stages on "
          f"{len(tiers)} tiers to {a.out}")
    return 0


def cmd_makespan(a: argparse.Namespace) -> int:
    from qos_plugin.model.configtable import write_makespan_csv
    from qos_plugin.model.costs import load_costs
    from qos_plugin.model.makespan import MakespanModel

    template = _load_template(a.template)
    costs = load_costs(a.costs)
    tiers = _tiers(a.tiers, template, costs, a.nodes, a.missing_cost)
    t0 = time.perf_counter()
    model = MakespanModel(template, costs, tiers, a.missing_cost)
    table = model.evaluate(a.nodes, memory_budget=a.memory_budget)
    elapsed = time.perf_counter() - t0
    write_makespan_csv(table, a.out)
    import numpy as np

    if model.missing:
        log.warning("--missing-cost zero: %d cost lookups found no row and were charged "
                    "0 s (first: %s)", len(model.missing), model.missing[0])
    best = int(np.argmin(table.total))
    print(f"evaluated {len(table)} configurations in {elapsed:.3f} s "
          f"({len(table) / max(elapsed, 1e-9):,.0f}/s); fastest {table.total[best]:.1f} s "
          f"at N={table.nodes[best]}; wrote {a.out}")
    return 0


def run_regions(table, out_dir: str, settings):  # type: ignore[no-untyped-def]
    from qos_plugin.cli.progress import Progress
    from qos_plugin.model.regions import fit_regions
    from qos_plugin.model.rules import build_regions, relabel
    from qos_plugin.report.regions_io import write_region_outputs

    progress = Progress("regions: cross-validation")
    fit = fit_regions(table, settings, progress)
    progress.finish()
    regions = build_regions(table, fit.labels, fit.leaf_bounds)
    labels = relabel(fit.labels, regions)
    paths = write_region_outputs(out_dir, table, fit, regions, labels, settings)
    return fit, regions, labels, paths


def cmd_regions(a: argparse.Namespace) -> int:
    from qos_plugin.model.configtable import load_config_table
    from qos_plugin.model.regions import CartSettings

    table = load_config_table(a.makespan)
    settings = CartSettings(min_samples_leaf=a.min_leaf, cv_min_samples_leaf=a.cv_min_leaf,
                            folds=a.folds, repeats=a.repeats, seed=a.seed, select=a.select,
                            lookahead=a.lookahead, g_min=a.g_min, g_floor=a.g_floor,
                            g_delta=a.g_delta if a.g_delta > 0 else None)
    fit, regions, _, paths = run_regions(table, a.out_dir, settings)
    how = (f"{a.select}, alpha={fit.alpha:.6g}" if fit.alpha is not None
           else "separated: every two neighbours apart")
    print(f"{len(regions)} regions from {len(table)} configurations ({how})")
    for r in regions:
        print(f"  region {r.id:2d}  n={r.stats.size:4d}  median {r.stats.median:10.1f} s  "
              f"{r.rule_text()}")
    print(f"wrote {paths['json']}, {paths['csv']}, {paths['png']}")
    return 0


def _match_regions(table, regions_path: str):  # type: ignore[no-untyped-def]
    import numpy as np

    from qos_plugin.model.configtable import load_config_table

    labelled = load_config_table(regions_path)
    if labelled.region is None:
        raise InputError(regions_path, "no 'region' column",
                         "give the config_regions.csv written by 'qos-plan regions'")
    if labelled.stages != table.stages:
        raise InputError(regions_path, f"stages {labelled.stages} differ from the makespan "
                         f"table's {table.stages}", "use files of the same workflow")
    key = {(int(n), tuple(map(str, p))): int(r) for n, p, r in
           zip(labelled.nodes, labelled.placement, labelled.region, strict=True)}
    labels = np.empty(len(table), dtype=np.int64)
    for i in range(len(table)):
        k = (int(table.nodes[i]), tuple(map(str, table.placement[i])))
        if k not in key:
            raise InputError(regions_path, f"configuration {k} of the makespan table has "
                             "no region", "run 'qos-plan regions' on this makespan table")
        labels[i] = key[k]
    return labels


def cmd_rank(a: argparse.Namespace) -> int:
    from qos_plugin.model.configtable import infer_table_tiers, load_config_table
    from qos_plugin.model.ranking import rank_policies
    from qos_plugin.model.tiers import parse_tiers

    table = load_config_table(a.makespan)
    labels = _match_regions(table, a.regions)
    if not (table.nodes == a.nodes).any():
        have = ",".join(str(n) for n in sorted(set(table.nodes.tolist())))
        raise InputError("--nodes", f"no configuration at N={a.nodes}",
                         f"use one of: {have}")
    tiers = parse_tiers(a.tiers) if a.tiers else infer_table_tiers(table)
    pc = rank_policies(table, labels, tiers.local_names, a.nodes)
    if a.json:
        print(json.dumps(pc))
    else:
        print(f"pairwise concordance at N={a.nodes} (1 = perfect ranking, 0.5 = random):")
        for name, v in pc.items():
            print(f"  {name:8s} {v:.5f}")
    return 0


def cmd_profile(a: argparse.Namespace) -> int:
    from qos_plugin.cli.progress import Progress
    from qos_plugin.model.csvio import write_csv
    from qos_plugin.model.profile import format_start_more
    from qos_plugin.planner.slurmrun import job_hosts
    from qos_plugin.profiler.runner import (
        fio_path,
        measure_phase_start,
        measure_phase_starts,
        run_sweep,
        start_more,
    )
    from qos_plugin.profiler.sweep import (
        COLUMNS,
        FULL,
        QUICK,
        check_tiers,
        file_runs,
        io_runs,
        move_runs,
        parse_tier_dir,
        with_long_runs,
    )

    tiers = [parse_tier_dir(t) for t in a.tier]
    check_tiers(tiers)
    fio_path()
    sweep = QUICK if a.quick else FULL
    if a.long_runs:
        sweep = with_long_runs(sweep)
    io, moves = io_runs(tiers, sweep), move_runs(tiers, sweep)
    files = file_runs(tiers, sweep)
    t0 = time.perf_counter()
    progress = Progress("profile")
    rows = run_sweep(io, moves, progress, files)
    progress.finish()
    more: list[float] = []
    hosts = job_hosts(os.environ) if os.environ.get("SLURM_JOB_ID") else []
    if len(hosts) > 1:
        # In an allocation of several nodes: the start on its first node, and what a
        # phase on more of them takes more.
        starts = measure_phase_starts(dict(os.environ))
        start, more = starts[0], start_more(starts)
        how = (f"srun steps on {hosts[0]}; on 2-{len(hosts)} nodes "
               f"{', '.join(f'{m:+.3f}' for m in more)} s")
    else:
        start, how = measure_phase_start()
    for r in rows:
        r["phaseStartSeconds"] = round(start, 4)
        r["phaseStartMoreSeconds"] = format_start_more(more)
    write_csv(a.out, list(COLUMNS), ([r[c] for c in COLUMNS] for r in rows))
    print(f"measured {len(io)} read/write runs, {len(moves)} moves and {len(files)} "
          f"per-file runs on "
          f"{', '.join(f'{t.name} ({t.kind})' for t in tiers)}, and a phase's start "
          f"({start:.3f} s, {how}) in {time.perf_counter() - t0:.1f} s; wrote {a.out}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from qos_plugin.cli.demo import run_demo

    return run_demo(Path(a.out_dir))


def _registry(a: argparse.Namespace):  # type: ignore[no-untyped-def]
    from qos_plugin.planner.registry import Registry, default_registry

    return Registry(Path(a.registry) if a.registry else default_registry())


def cmd_train(a: argparse.Namespace) -> int:
    import datetime
    import platform

    from qos_plugin import __version__
    from qos_plugin.cli.progress import Progress
    from qos_plugin.model.regions import CartSettings
    from qos_plugin.planner.registry import check_name
    from qos_plugin.planner.training import build_model, file_fingerprint, fit_table_regions

    check_name(a.name)
    if not a.costs and not a.profile:
        raise InputError("qos-plan train", "no costs given",
                         "give --costs C, or --profile P (and --io-data W unless the "
                         "template is a WfFormat instance)")
    registry = _registry(a)
    template = _load_template(a.template)
    inputs = {"template": file_fingerprint(a.template)}
    io = None
    if a.io_data or not a.costs:
        io_path, io = _load_io(a)
        inputs["io_data"] = file_fingerprint(io_path)
    if a.costs:
        from qos_plugin.model.costs import load_costs

        costs = load_costs(a.costs)
        inputs["costs"] = file_fingerprint(a.costs)
        tiers = _tiers(a.tiers, template, costs, a.nodes, a.missing_cost)
        profile = None
    else:
        inputs["profile"] = file_fingerprint(a.profile)
        costs, tiers, profile = _measured_costs(template, io, a.profile, a.tiers, a.nodes)
    from qos_plugin.model.carried import carried_of
    from qos_plugin.model.iodata import stage_volumes
    from qos_plugin.model.makespan import MakespanModel

    volumes = stage_volumes(io, template.stage_names) if io is not None else None
    # A cost table has no volumes to price moves by: only a profile's build has them.
    carried = carried_of(profile, volumes)

    progress = Progress(f"train {a.name}")
    table = MakespanModel(template, costs, tiers, a.missing_cost, carried=carried).evaluate(
        a.nodes, memory_budget=a.memory_budget)
    settings = CartSettings(select=a.select)
    progress.stage(f"{len(table):,} placements evaluated; regions ({a.select})")
    folds = Progress(f"train {a.name}: cross-validation folds")
    configs, regions, labels = fit_table_regions(table, settings, folds)
    progress.stage(f"{len(regions)} regions; writing the model")
    provenance = {"workflow": template.name, "inputs": inputs, "nodes": list(a.nodes),
                  "tiers": [f"{t.name}:{t.kind}" for t in tiers],
                  # Read again with the I/O data (validate, calibrate): the costs used it.
                  **({"transfer_size": a.transfer_size} if a.transfer_size is not None else {}),
                  "region_settings": vars(settings), "qos_plan": __version__,
                  "host": platform.node()}
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    model = build_model(a.name, registry.next_version(a.name), table, configs, regions, labels,
                        volumes, provenance, created)
    path = registry.save(model)
    progress.finish()
    print(f"trained {model.name} v{model.version}: {len(model)} placements "
          f"(N in {','.join(map(str, model.node_counts))}), {len(model.regions)} regions "
          f"-> {path}")
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    registry = _registry(a)
    items = registry.summaries()
    if a.json:
        print(json.dumps(items))
        return 0
    if not items:
        print(f"no models in {registry.root}")
        return 0
    print(f"models in {registry.root}:")
    for m in items:
        if "error" in m:
            print(f"  {m['name']:20s} v{m['versions'][-1]}  UNREADABLE: {m['error']}")
            continue
        print(f"  {m['name']:20s} v{m['versions'][-1]:<3d} {m['created']}  {m['stages']} stages, "
              f"tiers {','.join(m['tiers'])}, N {','.join(map(str, m['nodes']))}, "
              f"{m['placements']} placements, {m['regions']} regions")
    return 0


def _tier_list(values: Sequence[str], option: str) -> frozenset[str]:
    names = [v.strip() for text in values for v in text.split(",")]
    if any(not n for n in names):
        raise InputError(option, f"empty tier name in {','.join(values)!r}",
                         "give tier names separated by commas")
    return frozenset(names)


def cmd_query(a: argparse.Namespace) -> int:
    from qos_plugin.planner.explain import answer_json, explain_text
    from qos_plugin.planner.query import Constraints, answer
    from qos_plugin.planner.timespec import parse_duration

    deadline = parse_duration(a.deadline) if a.deadline is not None else None
    # 0 reads as a number here; Constraints says why it cannot run anything.
    max_nodes = (parse_count(a.max_nodes, "--max-nodes", lo=0, hi=10**9)
                 if a.max_nodes is not None else None)
    constraints = Constraints(
        deadline=deadline, max_nodes=max_nodes,
        tiers=_tier_list([a.allowed], "--tiers") if a.allowed is not None else None,
        exclude=_tier_list(a.exclude_tier, "--exclude-tier"),
        down=_tier_list(a.down_tier, "--down-tier"), objective=a.objective)
    model = _registry(a).load(a.name)
    ans = answer(model, constraints)
    if a.json:
        print(json.dumps(answer_json(model, ans)))
    else:
        print(explain_text(model, ans))
    return 0 if ans.feasible else 3


def cmd_run(a: argparse.Namespace) -> int:
    from qos_plugin.planner import runner

    try:
        scale = float(a.scale)
    except ValueError:
        raise InputError("--scale", f"{a.scale!r} is not a number",
                         "give e.g. --scale 0.01") from None
    from qos_plugin.planner.campaign import BACKENDS, backend_tier_dirs

    spec = runner.check_run(_registry(a).load(a.name), runner.parse_placement(a.placement),
                            a.nodes, scale, backend_tier_dirs(a.backend, a.tier_dir))
    record = BACKENDS[a.backend](spec)
    if a.out:
        Path(a.out).write_text(json.dumps(record, indent=1) + "\n")
    print(runner.run_table(record))
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    from qos_plugin.cli.validate import cmd_validate as validate

    return validate(a, _registry(a))


def cmd_calibrate(a: argparse.Namespace) -> int:
    from qos_plugin.cli.validate import cmd_calibrate as calibrate

    return calibrate(a, _registry(a))


COMMANDS = {"costs": cmd_costs, "makespan": cmd_makespan, "regions": cmd_regions,
            "rank": cmd_rank, "profile": cmd_profile, "train": cmd_train, "list": cmd_list,
            "query": cmd_query, "run": cmd_run, "validate": cmd_validate,
            "calibrate": cmd_calibrate, "demo": cmd_demo}


def _read_values(a: argparse.Namespace) -> None:
    """Typed option values, read strictly here rather than by argparse: a bad one is
    an input error (one line, exit 1), not a usage error."""
    from qos_plugin.cli.values import default_memory_budget, parse_count, parse_nodes, parse_size

    if isinstance(getattr(a, "nodes", None), str):
        a.nodes = (parse_count(a.nodes, "--nodes") if a.command in ("rank", "run", "validate")
                   else parse_nodes(a.nodes))
    if getattr(a, "transfer_size", None) is not None:
        from qos_plugin.model.limits import MAX_TRANSFER_BYTES

        a.transfer_size = parse_size(a.transfer_size, "--transfer-size", lo=1,
                                     hi=MAX_TRANSFER_BYTES)
    if hasattr(a, "memory_budget"):
        a.memory_budget = (parse_size(a.memory_budget, "--memory-budget")
                           if a.memory_budget is not None else default_memory_budget())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else
                        logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        _read_values(args)
        return COMMANDS[args.command](args)
    except QosPluginError as e:
        log.debug("failure", exc_info=True)
        print(f"qos-plan {args.command}: error: {e}", file=sys.stderr)
        return 1
    except MemoryError:
        # The budget check estimates within ~25%; this is the last guard.
        log.debug("out of memory", exc_info=True)
        print(f"qos-plan {args.command}: error: ran out of memory; give fewer node counts, "
              "tiers or stages, or a lower --memory-budget so the estimate refuses it first",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qos-plan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
