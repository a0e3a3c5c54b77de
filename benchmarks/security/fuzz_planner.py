"""A longer fuzzing run of the planner's loaders and ``qos-plan query``.

The targets of ``tests/security/planner_fuzz.py`` with many more cases and a
random seed: prints, per target, how many cases ran, how they ended (loaded,
refused in one line, answered, infeasible, usage) and every failure found (an
exception other than InputError, a message over one line, an undocumented exit
status), and writes benchmarks/security/fuzz_planner.json. Run:
    PYTHONPATH=. .venv/bin/python benchmarks/security/fuzz_planner.py [--examples N]
        [--seed S] [--target NAME ...]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, seed, settings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.security.planner_fuzz import TARGETS  # noqa: E402


def run(target: str, examples: int, rng_seed: int) -> dict[str, Any]:
    strategy, check = TARGETS[target]
    outcomes: Counter[str] = Counter()
    failures: list[str] = []

    @seed(rng_seed)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def fuzz(value: Any) -> None:
        try:
            outcomes[check(value)] += 1
        except AssertionError as e:
            outcomes["FAILED"] += 1
            failures.append(str(e)[:400])
            raise

    t0 = time.perf_counter()
    try:
        fuzz()
    except Exception:  # noqa: BLE001 - one failure or a group of them, recorded above
        pass
    return {"target": target, "cases": sum(outcomes.values()), "outcomes": dict(outcomes),
            "failures": sorted(set(failures))[:10], "seconds": time.perf_counter() - t0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=3000, help="cases per target (3000)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--target", action="append", choices=sorted(TARGETS),
                   help="only these targets (repeatable)")
    a = p.parse_args()
    rng_seed = a.seed if a.seed is not None else random.randrange(2**32)
    results = []
    print(f"seed {rng_seed}, {a.examples} cases per target")
    print(f"{'target':10s} {'cases':>7s} {'failed':>7s} {'seconds':>8s}  outcomes")
    for target in a.target or sorted(TARGETS):
        r = run(target, a.examples, rng_seed)
        results.append(r)
        shown = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
        print(f"{target:10s} {r['cases']:>7d} {r['outcomes'].get('FAILED', 0):>7d} "
              f"{r['seconds']:>8.1f}  {shown}")
        for f in r["failures"]:
            print(f"    FAILURE: {f}")
    (HERE / "fuzz_planner.json").write_text(json.dumps(
        {"seed": rng_seed, "examples": a.examples, "results": results}, indent=1) + "\n")
    return 1 if any(r["failures"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
