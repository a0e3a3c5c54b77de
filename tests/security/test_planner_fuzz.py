"""Fuzzing the planner's loaders and ``qos-plan query`` (issue 18), bounded for the
suite: a fixed number of derandomized cases per target, ~20-40 s in all here.
Every input either loads or is refused with the package's one-line InputError;
``benchmarks/security/fuzz_planner.py`` runs the same targets longer."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.security.planner_fuzz import TARGETS

# Per target; the query target runs the CLI in-process and is the slowest.
EXAMPLES = {"template": 300, "wfformat": 200, "costs": 250, "profile": 200, "io_data": 200,
            "model": 150, "query": 200, "makespan": 150}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_input_loads_or_is_refused_in_one_line(target):
    strategy, check = TARGETS[target]
    seen: dict[str, int] = {}

    @settings(max_examples=EXAMPLES[target], deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(strategy)
    def fuzz(value):  # type: ignore[no-untyped-def]
        outcome = check(value)
        seen[outcome] = seen.get(outcome, 0) + 1

    fuzz()
    # The generators reach past the first checks: some inputs are refused, and
    # (but for hostile-only targets) some load.
    assert seen.get("refused", 0) > 0 or seen.get("usage", 0) > 0, seen
