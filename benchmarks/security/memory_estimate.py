"""The makespan evaluation's memory estimate against its measured peak.

Each case runs in its own process: build the model, then evaluate every placement
and read what the makespan CSV and training read (breakdown, critical paths); the
peak resident memory above the process's state before the evaluation is compared
with ``evaluation_bytes``. Prints a table and writes
benchmarks/security/memory_estimate.json. Run:
    PYTHONPATH=. .venv/bin/python benchmarks/security/memory_estimate.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# (name, stages, tiers, stages per level): flat templates (every placement
# valid: the worst case per stage), chains (few valid) and a fan-out/fan-in.
CASES = [("flat 10x3", 10, 3, 10), ("flat 12x3", 12, 3, 12), ("flat 8x4", 8, 4, 8),
         ("flat 7x5", 7, 5, 7), ("chain 12x3 w2", 12, 3, 2), ("chain 14x3 w4", 14, 3, 4),
         ("fan 9x4", 9, 4, 0)]
NODES = [2, 5, 10]


def one(stages: int, n_tiers: int, width: int) -> dict[str, float]:
    """Measure one case in this process."""
    import gc

    from qos_plugin.model.makespan import MakespanModel, evaluation_bytes
    from qos_plugin.model.synthetic import TierModel, chain_workflow, fan_workflow
    from qos_plugin.model.tiers import parse_tiers

    tiers = parse_tiers(",".join(["pfs:shared"] + [f"l{i}:node-local"
                                                   for i in range(n_tiers - 1)]))
    models = {t.name: TierModel(100.0 * (i + 1), 80.0 * (i + 1)) for i, t in enumerate(tiers)}
    wf = (fan_workflow(stages - 2, tiers, models) if width == 0
          else chain_workflow(stages, tiers, models, width=width))
    model = MakespanModel(wf.template, wf.cost_table(NODES), tiers)
    gc.collect()   # nothing before the evaluation may raise the high-water mark
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    table = model.evaluate(NODES)
    _ = table.level_exec, table.stage_read, table.critical_paths()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    estimate = evaluation_bytes(wf.template, tiers, len(table) // len(NODES), len(NODES))
    return {"placements": len(table), "measured_mib": peak / 2**20,
            "estimate_mib": estimate / 2**20, "estimate_over_measured": estimate / peak}


def main() -> int:
    if len(sys.argv) == 4:
        print(json.dumps(one(*map(int, sys.argv[1:]))))
        return 0
    results = []
    print(f"{'case':16s} {'placements':>11s} {'measured MiB':>13s} {'estimate MiB':>13s} "
          f"{'est/measured':>13s}")
    for name, stages, n_tiers, width in CASES:
        out = subprocess.run([sys.executable, __file__, str(stages), str(n_tiers), str(width)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        r = {"case": name, **json.loads(out.stdout)}
        results.append(r)
        print(f"{name:16s} {r['placements']:>11,d} {r['measured_mib']:>13.1f} "
              f"{r['estimate_mib']:>13.1f} {r['estimate_over_measured']:>13.2f}")
    (HERE / "memory_estimate.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
