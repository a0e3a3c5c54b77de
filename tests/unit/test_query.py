"""The query's fast paths (digit strings, masks combined in C, the two best by heap)
against the plain definition: every row checked, every candidate list sorted."""

from __future__ import annotations

import itertools
import json

import pytest

from qos_plugin.model.configtable import from_makespan
from qos_plugin.model.makespan import MakespanModel
from qos_plugin.model.regions import fit_regions
from qos_plugin.model.rules import build_regions, relabel
from qos_plugin.model.synthetic import TierModel, fan_workflow
from qos_plugin.model.tiers import parse_tiers
from qos_plugin.planner.query import HARD, Constraints, answer
from qos_plugin.planner.trained import TrainedModel, model_from_json
from qos_plugin.planner.training import build_model

TIERS = parse_tiers("lustre:shared,nfs:shared,ram:node-local,ssd:node-local")
SPEEDS = {"lustre": TierModel(1500, 1000, 0.6), "nfs": TierModel(300, 200, 0.5),
          "ram": TierModel(6000, 4000, 0.3), "ssd": TierModel(2000, 1200, 0.4)}


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    wf = fan_workflow(3, TIERS, SPEEDS)
    table = MakespanModel(wf.template, wf.cost_table([1, 2, 4]), TIERS).evaluate([1, 2, 4])
    configs = from_makespan(table)
    fit = fit_regions(configs)
    regions = build_regions(configs, fit.labels, fit.leaf_bounds)
    m = build_model("fan", 1, table, configs, regions, relabel(fit.labels, regions), None,
                    {}, "now")
    return model_from_json(json.loads(json.dumps(m.to_json())), "fan")   # as loaded


def plain(model: TrainedModel, c: Constraints) -> dict[str, object]:
    """Rows of the answer by the definition, with lists and sorts only."""
    R = range(len(model))
    tiers = [[model.tier_names[t] for t in model.placement[r]] for r in R]
    allowed = {"tiers": c.tiers, "exclude": set(model.tier_names) - c.exclude if c.exclude
               else None, "down": set(model.tier_names) - c.down if c.down else None}
    keep = {}
    if c.max_nodes is not None:
        keep["max_nodes"] = {r for r in R if model.nodes[r] <= c.max_nodes}
    for name in ("tiers", "exclude", "down"):
        if allowed[name] is not None:
            keep[name] = {r for r in R if set(tiers[r]) <= allowed[name]}
    if c.deadline is not None:
        keep["deadline"] = {r for r in R if model.total[r] <= c.deadline}

    def rows(skip: str = "") -> list[int]:
        return [r for r in R if all(r in v for k, v in keep.items() if k != skip)]

    def rank(rs: list[int], objective: str) -> list[int]:
        if objective == "fastest":
            return sorted(rs, key=lambda r: (model.total[r], model.nodes[r], r))
        local = model.local_tiers
        return sorted(rs, key=lambda r: (model.nodes[r], *(tiers[r].count(t) for t in local),
                                         model.total[r], r))

    hard = rows("deadline")
    ok = rows()
    out: dict[str, object] = {"feasible": bool(ok), "candidates": len(hard)}
    if ok:
        ranked = rank(ok, c.objective)
        out["choice"] = ranked[0]
        out["runner_up"] = ranked[1] if len(ranked) > 1 else None
        if c.down:
            up = rank(rows("down"), c.objective)[0]
            out["with_down_up"] = up if up != ranked[0] else None
        return out
    out["relaxations"] = {k: rank(rows(k), c.objective)[0] for k in keep
                          if k != "deadline" and rows(k)}
    if hard:
        out["binding"], out["closest"] = "deadline", rank(hard, "fastest")[0]
        return out
    given = [k for k in HARD if k in keep]
    binding, pool = ",".join(given), list(R)
    for k in given:
        rest = [r for r in R if all(r in v for n, v in keep.items()
                                    if n not in ("deadline", k))]
        if rest:
            binding, pool = k, rest
            break
    out["binding"], out["closest"] = binding, rank(pool, "fastest")[0]
    return out


def fast(model: TrainedModel, c: Constraints) -> dict[str, object]:
    a = answer(model, c)
    out: dict[str, object] = {"feasible": a.feasible, "candidates": a.candidates}
    if a.feasible:
        assert a.choice is not None
        out["choice"] = a.choice.row
        out["runner_up"] = a.runner_up.row if a.runner_up else None
        if c.down:
            out["with_down_up"] = a.with_down_up.row if a.with_down_up else None
        return out
    assert a.closest is not None
    out["relaxations"] = {k: v.row for k, v in a.relaxations.items()}
    out["binding"], out["closest"] = a.binding, a.closest.row
    return out


def test_fast_answers_are_the_plain_ones(model):
    assert len(model) > 1000
    totals = sorted(model.total)
    deadlines = [None, totals[0] * 0.5, totals[0], totals[len(totals) // 3], totals[-1]]
    names = model.tier_names
    tier_sets = [None, frozenset({"lustre", "ram"}), frozenset({"nfs"})]
    n = 0
    for deadline, max_nodes, allowed, exclude, down, objective in itertools.product(
            deadlines, [None, 1, 2], tier_sets, [frozenset(), frozenset({"ssd"})],
            [frozenset(), frozenset({"ram"}), frozenset(names[1:])], ["fastest", "frugal"]):
        c = Constraints(deadline, max_nodes, allowed, exclude, down, objective)
        assert fast(model, c) == plain(model, c), c
        n += 1
    assert n == 540
