"""``qos-plan validate`` and ``qos-plan calibrate``: thin adapters over
``planner.validation``, ``planner.calibration`` and ``planner.campaign``
(see docs/validation.md)."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qos_plugin.errors import InputError

log = logging.getLogger(__name__)


def add_parsers(sub: Any, registry_opt: Callable[[argparse.ArgumentParser], None]) -> None:
    """The two subcommands, on the subparsers of ``qos-plan``."""
    v = sub.add_parser(
        "validate", help="run placements and compare them with their predictions",
        description="Run placements of model NAME (all when few, else a sample spread over "
                    "its regions, always with the predicted best) REPEAT times each, and "
                    "compare measured with predicted makespans: pairwise concordance, "
                    "Spearman, median and largest relative error, the error per phase, and "
                    "whether the predicted best is the measured best. Writes OUT/runs.json "
                    "(the input of 'qos-plan calibrate'), OUT/validation.json and "
                    "OUT/predicted-vs-measured.png. With --scale F the predictions are made "
                    "again with every volume times F (docs/validation.md).")
    v.add_argument("name", help="model name, or NAME@VERSION")
    v.add_argument("--nodes", help="node count (one the model has); required unless --runs")
    v.add_argument("--tier-dir", action="append", default=[], metavar="TIER=PATH",
                   help="directory of a tier (repeat; the home tier and every tier of the "
                        "placements run)")
    v.add_argument("--placements", metavar="all|K",
                   help="all placements at N, or K of them (default: all when there are at "
                        "most 12, else 12)")
    v.add_argument("--repeat", default="1", help="runs per placement (default 1)")
    v.add_argument("--scale", default="1", help="every volume times F, 0 < F <= 1 (default 1)")
    v.add_argument("--seed", default="0", help="seed of the sample of placements (default 0)")
    v.add_argument("--backend", default="local", choices=["local", "slurm"],
                   help="how placements run: local (processes on this machine, default) or "
                        "slurm (srun steps in the current allocation)")
    v.add_argument("--out", metavar="DIR", help="directory for the results (default "
                                                "validate-NAME-vVERSION)")
    v.add_argument("--runs", metavar="RUNS.json",
                   help="compare with the runs of this file instead of running (e.g. a "
                        "calibrated model against the runs it was calibrated from)")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    registry_opt(v)

    c = sub.add_parser(
        "calibrate", help="correct the profile from measured runs; train a new version",
        description="Fit a factor per operation and tier (and per copy between tiers) to "
                    "the profile's rates so that the predictions match the measured runs, "
                    "write the corrected profile and train it as the next version of "
                    "NAME. Needs a model trained from --io-data and --profile.")
    c.add_argument("name", help="model name, or NAME@VERSION: the model whose profile is "
                                "corrected")
    c.add_argument("--runs", action="append", required=True, metavar="RUNS.json",
                   help="runs file of 'qos-plan validate' (repeat to fit several)")
    c.add_argument("--daemon-stats", metavar="STATS.json",
                   help="per run (in the order of the runs files), the list of 'qosctl "
                        "stats --job J --json' outputs of its daemons, or null: checks the "
                        "model's volumes on each tier")
    c.add_argument("--out", metavar="DIR", help="directory for the corrected profile "
                                                "(default: that of the first runs file)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    registry_opt(c)


def _number(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(option, f"{text!r} is not a number", "give e.g. --scale 0.01") from None


def _label(placement: dict[str, str], stages: list[str]) -> str:
    return ",".join(f"{s}={placement[s]}" for s in stages)


def cmd_validate(a: argparse.Namespace, registry: Any) -> int:
    from qos_plugin.cli.progress import Progress
    from qos_plugin.cli.values import parse_count
    from qos_plugin.planner import campaign, runner
    from qos_plugin.planner.prediction import (
        model_inputs,
        placement_of,
        predict,
        stored_prediction,
    )
    from qos_plugin.planner.validation import (
        compare,
        comparison_json,
        comparison_text,
        measurement_of,
        select_rows,
    )

    model = registry.load(a.name)
    out = Path(a.out or f"validate-{model.name}-v{model.version}")
    if a.runs:
        doc = campaign.load_runs(a.runs)
        repeat, backend = int(doc.get("repeat") or 1), str(doc.get("backend", "local"))
        runs = [measurement_of(rec, f"{a.runs}: run {i + 1}") for i, rec in enumerate(doc["runs"])]
        placements = list({_label(m.placement, sorted(m.placement)): m.placement
                           for m in runs}.values())
        rows = []
        for p in placements:
            row = model.row_of(runs[0].nodes, p)
            if row is None or any(m.nodes != runs[0].nodes or m.scale != runs[0].scale
                                  for m in runs):
                raise InputError(a.runs, f"its runs are not all placements of {model.name} "
                                 f"v{model.version} on one node count at one scale",
                                 "give the runs file of one 'qos-plan validate' of this "
                                 "workflow")
            rows.append(row)
        nodes, scale = runs[0].nodes, runs[0].scale
        by = {_label(p, model.stages): i for i, p in enumerate(placements)}
        measured: list[list[Any]] = [[] for _ in placements]
        for m in runs:
            measured[by[_label(m.placement, model.stages)]].append(m)
    else:
        if a.nodes is None:
            raise InputError("qos-plan validate", "no --nodes given",
                             "give --nodes N (or --runs RUNS.json to compare existing runs)")
        nodes = a.nodes if isinstance(a.nodes, int) else parse_count(a.nodes, "--nodes")
        scale = _number(a.scale, "--scale")
        repeat = parse_count(a.repeat, "--repeat", lo=1, hi=1000)
        seed = parse_count(a.seed, "--seed", lo=0, hi=2**32 - 1)
        backend = a.backend
        at = [r for r in range(len(model)) if model.nodes[r] == nodes]
        if not at:
            raise InputError("--nodes", f"{model.name} v{model.version} has no placement on "
                             f"{nodes} nodes", f"node counts: "
                             f"{','.join(map(str, model.node_counts))}")
        k = None
        if a.placements is not None:
            k = len(at) if a.placements == "all" else parse_count(
                a.placements, "--placements", lo=1, hi=10**6)
        rows = [at[i] for i in select_rows([model.region[r] for r in at],
                                           [model.total[r] for r in at], k, seed)]
        placements = [placement_of(model, r) for r in rows]
        tier_dirs = campaign.backend_tier_dirs(backend, a.tier_dir)
        # Every run checked before the first starts, and before anything is written.
        specs = [runner.check_run(model, p, nodes, scale, tier_dirs) for p in placements]
    if scale == 1:
        predictions = [stored_prediction(model, r) for r in rows]
    else:
        inputs = model_inputs(model)
        predictions = predict(inputs.template, inputs.io, inputs.profile, inputs.tiers,
                              nodes, placements, scale, inputs.nodes)
    out.mkdir(parents=True, exist_ok=True)
    if not a.runs:
        progress = Progress(f"validate {model.name} v{model.version}")
        records = campaign.run_placements(specs, repeat, campaign.BACKENDS[backend], progress)
        runs_doc = campaign.runs_document(model, backend, nodes, scale, repeat, placements,
                                          rows, predictions, records)
        (out / "runs.json").write_text(json.dumps(runs_doc, indent=1) + "\n")
        n = len(placements)
        measured = [[measurement_of(rec) for rec in records[i::n]] for i in range(n)]
    c = compare(predictions, measured)
    labels = [_label(p, model.stages) for p in placements]
    runs_path = Path(a.runs) if a.runs else out / "runs.json"
    summary = {"model": model.name, "version": model.version, "nodes": nodes, "scale": scale,
               "repeat": repeat, "backend": backend, **comparison_json(c, labels),
               "files": {"runs": str(runs_path), "plot": str(out / "predicted-vs-measured.png")}}
    (out / "validation.json").write_text(json.dumps(summary, indent=1) + "\n")
    from qos_plugin.report.validation_plot import plot_validation

    plot_validation(c, out / "predicted-vs-measured.png",
                    f"{model.name} v{model.version}, N={nodes}, scale {scale:g}")
    if a.json:
        print(json.dumps(summary))
    else:
        print(f"{model.name} v{model.version} on {nodes} nodes at scale {scale:g}, "
              f"{len(placements)} placements x {repeat} runs ({backend}"
              f"{', from ' + a.runs if a.runs else ''})")
        print(comparison_text(c, labels))
        print(f"wrote {'' if a.runs else str(runs_path) + ', '}{out / 'validation.json'}, "
              f"{out / 'predicted-vs-measured.png'}")
    return 0


def _measurements(paths: list[str], base: Any) -> tuple[list[Any], list[str]]:
    """Every run of the runs files, checked against ``base``'s stages and tiers."""
    from qos_plugin.planner.campaign import load_runs
    from qos_plugin.planner.validation import measurement_of

    runs, of = [], []
    for path in paths:
        doc = load_runs(path)
        if doc["model"] != base.name:
            raise InputError(path, f"holds runs of model {doc['model'][:64]!r}, not "
                             f"{base.name!r}", f"give runs of {base.name}")
        of.append(f"{doc['model']}@{doc.get('version')}")
        for i, rec in enumerate(doc["runs"]):
            m = measurement_of(rec, f"{path}: run {i + 1}")
            if set(m.placement) != set(base.stages) or \
                    set(m.placement.values()) - set(base.tier_names) or \
                    len(m.levels) != len(base.levels):
                raise InputError(f"{path}: run {i + 1}", "its placement or levels are not "
                                 f"those of {base.name} v{base.version}",
                                 "give runs of this workflow")
            runs.append(m)
    return runs, of


def cmd_calibrate(a: argparse.Namespace, registry: Any) -> int:
    from qos_plugin.cli.values import default_memory_budget
    from qos_plugin.model.iodata import stage_volumes
    from qos_plugin.model.jsonio import read_json
    from qos_plugin.planner import calibration, campaign
    from qos_plugin.planner.prediction import model_inputs
    from qos_plugin.planner.training import file_fingerprint

    base = registry.load(a.name)
    runs, runs_of = _measurements(a.runs, base)
    inputs = model_inputs(base)
    warnings: list[str] = []
    ratios: list[dict[str, float] | None] = []
    if a.daemon_stats:
        stats = read_json(a.daemon_stats, "daemon statistics")
        if not isinstance(stats, list) or len(stats) != len(runs):
            have = len(stats) if isinstance(stats, list) else "no"
            raise InputError(a.daemon_stats, f"holds {have} entries for {len(runs)} runs",
                             "give a list with one entry per run (null for none)")
        volumes = stage_volumes(inputs.io, inputs.template.stage_names)
        for i, (m, s) in enumerate(zip(runs, stats, strict=True)):
            if s is None:
                ratios.append(None)
                continue
            got = campaign.daemon_tier_bytes(s, f"{a.daemon_stats}: entry {i + 1}")
            r = calibration.byte_ratios(calibration.expected_tier_mib(
                inputs.template, inputs.tiers, volumes, m.placement, m.nodes, m.scale), got)
            ratios.append(r)
            warnings += [f"run {i + 1}: {w}" for w in calibration.volume_warnings(r)]
    for w in warnings:
        log.warning("%s", w)
    cal = calibration.calibrate(inputs.template, inputs.io, inputs.profile, inputs.tiers, runs,
                                inputs.nodes)
    if not cal.shares:
        raise InputError(str(inputs.profile_path), "has no rates of the model's tiers to "
                         "correct; nothing trained", "measure them with 'qos-plan profile'")
    if not cal.fitted:
        raise InputError("--runs", f"no rate of the profile changes the predicted phases of "
                         f"these {cal.runs} runs; nothing trained",
                         "give runs of placements that move data")
    if cal.at_limit:
        op, st = cal.at_limit[0]
        raise InputError("--runs", f"the runs need {op} on {st} at "
                         f"{cal.factors[(op, st)]:.3g} times its profiled rate (the most "
                         f"calibration corrects is {calibration.LIMIT:g}x); nothing trained",
                         "measure the profile again ('qos-plan profile')")
    if cal.error_after > cal.error_before:
        # A profile that predicts its own runs worse would only be a worse model.
        raise InputError("--runs", f"the fitted profile predicts these {cal.runs} runs worse "
                         f"(median error {100 * cal.error_after:.1f}%, "
                         f"{100 * cal.error_before:.1f}% before); nothing trained",
                         "the model stays; more runs (--repeat), or runs at a larger "
                         "--scale, may fit better")
    version = registry.next_version(base.name)
    out = Path(a.out) if a.out else Path(a.runs[0]).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    profile_path = out / f"{base.name}-v{version}-profile.csv"
    campaign.write_profile(calibration.corrected_profile(inputs.profile, cal.factors),
                           profile_path)
    factors = [{"operation": op, "storage": st, "factor": f,
                "share": cal.shares[(op, st)], "fitted": (op, st) in cal.fitted}
               for (op, st), f in cal.factors.items()]
    calibrated_from = {
        "model": f"{base.name}@{base.version}", "base_profile": str(inputs.profile_path),
        "runs": [file_fingerprint(p) for p in a.runs], "runs_of": runs_of,
        "daemon_stats": file_fingerprint(a.daemon_stats) if a.daemon_stats else None,
        "factors": factors, "run_count": cal.runs,
        "median_error_before": cal.error_before, "median_error_after": cal.error_after,
        "volume_warnings": warnings}
    model = campaign.retrain(base, inputs, profile_path, version, calibrated_from,
                             default_memory_budget())
    path = registry.save(model)
    result = {"model": model.name, "version": model.version, "path": str(path),
              "profile": str(profile_path), **calibrated_from,
              "byte_ratios": ratios if a.daemon_stats else None}
    if a.json:
        print(json.dumps(result))
        return 0
    print(f"calibrated {base.name} v{base.version} from {cal.runs} runs:")
    for f in factors:
        how = (f"rate x {f['factor']:.3f}" if f["fitted"] else "not fitted")
        print(f"  {f['operation']:5s} {f['storage']:20s} {how:14s} "
              f"({100 * f['share']:.1f}% of the predicted time)")
    print(f"median makespan error on these runs: {100 * cal.error_before:.1f}% before, "
          f"{100 * cal.error_after:.1f}% after")
    for w in warnings:
        print(f"  warning: {w}")
    print(f"trained {model.name} v{model.version} -> {path} (profile {profile_path}); "
          f"'qos-plan validate {model.name} ...' measures it on new runs")
    return 0
