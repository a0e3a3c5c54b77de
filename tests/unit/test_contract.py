"""The job contract (what a placement needs from each tier in each phase), computed at
training from the makespan's own moves: against hand computation on a small workflow
with two shared tiers, against the makespan's record of its moves on every row, and
through the model file (tampered rates refused)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qos_plugin.errors import InputError
from qos_plugin.model.iodata import stage_volumes
from qos_plugin.model.makespan import MakespanModel
from qos_plugin.model.synthetic import TierModel, dag_workflow
from qos_plugin.model.tiers import parse_tiers
from qos_plugin.planner.query import Constraints, answer
from qos_plugin.planner.trained import model_from_json
from qos_plugin.planner.training import build_model, fit_table_regions

# Two shared tiers: pfs (home: the input lives there, outputs are flushed there) and nfs.
TIERS = parse_tiers("pfs:shared,nfs:shared,ram:node-local")
SPEED = {"pfs": TierModel(1000, 800, 0.5), "nfs": TierModel(300, 200, 0.5),
         "ram": TierModel(6000, 4000, 0.3)}
# (stage, level, tasks, {source: MiB read per task}, MiB written per task)
STAGES = [("A", 1, 2, {"initial_data": 10.0}, 4.0),
          ("B", 1, 2, {"initial_data": 5.0}, 3.0),
          ("C", 2, 2, {"A": 4.0, "B": 3.0}, 1.0)]
NODES = [1, 2]


@pytest.fixture(scope="module")
def trained():
    wf = dag_workflow("two-shared", STAGES, TIERS, SPEED)
    table = MakespanModel(wf.template, wf.cost_table(NODES), TIERS).evaluate(NODES)
    volumes = stage_volumes(wf.io_data(), wf.template.stage_names)
    configs, regions, labels = fit_table_regions(table, _settings())
    model = build_model("two-shared", 1, table, configs, regions, labels, volumes, {}, "now")
    return table, model


def _settings():
    from qos_plugin.model.regions import CartSettings

    return CartSettings()


def _row(table, nodes, **tiers):
    want = [TIERS.index(tiers[s]) for s in table.template.stage_names]
    hit = np.flatnonzero((table.nodes == nodes) & (table.config == want).all(axis=1))
    assert hit.size == 1
    return int(hit[0])


def _needs(contract):
    return {(n.level, n.phase, n.tier): n for n in contract.needs}


def test_a_placement_over_two_shared_tiers_by_hand(trained):
    table, model = trained
    r = _row(table, 2, A="pfs", B="nfs", C="ram")
    c = model.contract(r)
    # Volumes (the synthetic run): A reads input.0, input.1 (10 MiB each) and writes
    # 2 x 4 MiB; B reads 2 x 5 and writes 2 x 3; C reads A's 2 x 4 and B's 2 x 3 and
    # writes 2 x 1.
    # Level 1: A executes on pfs (20 + 8), B on nfs (10 + 6); their outputs are copied
    # once to C's tier ram: A's 8 MiB from pfs, B's 6 from nfs (stage-out).
    # Level 2: C on ram copies each source from the shared tier it is on onto each of
    # the 2 nodes: A's 8 MiB from pfs (16), B's 6 from nfs (12), so ram gets 28;
    # C executes on ram (14 + 2); the last level flushes its 2 MiB to pfs (home).
    want = {(1, "execution", "pfs"): 28.0, (1, "execution", "nfs"): 16.0,
            (1, "stage-out", "pfs"): 8.0, (1, "stage-out", "nfs"): 6.0,
            (1, "stage-out", "ram"): 14.0,
            (2, "stage-in", "pfs"): 16.0, (2, "stage-in", "nfs"): 12.0,
            (2, "stage-in", "ram"): 28.0,
            (2, "execution", "ram"): 16.0,
            (2, "stage-out", "ram"): 2.0, (2, "stage-out", "pfs"): 2.0}
    got = _needs(c)
    assert {k: n.mib for k, n in got.items()} == pytest.approx(want)
    # Times are the makespan's phases; rates their quotient; ram's per node is half.
    times = {"stage-in": table.level_in[r], "execution": table.level_exec[r],
             "stage-out": table.level_out[r]}
    for (level, phase, tier), n in got.items():
        assert n.seconds == times[phase][int(level) - 1]
        assert n.mib_per_s == pytest.approx(want[level, phase, tier] / n.seconds)
        assert n.per_node_mib_per_s == (None if tier != "ram" else
                                        pytest.approx(n.mib_per_s / 2))
    assert c.stage_in == ("pfs", "nfs") and c.stage_out == ("ram",)
    # What is reserved: each tier's peak over phases (ram per node).
    peak = {t: max(n.mib_per_s for k, n in got.items() if k[2] == t) for t in ("pfs", "nfs")}
    assert c.rates()["pfs"] == pytest.approx(peak["pfs"])
    assert c.rates()["nfs"] == pytest.approx(peak["nfs"])


def test_every_rows_contract_follows_the_makespans_moves(trained):
    table, model = trained
    level_of = [table.template.levels.index(s.level) for s in table.template.stages]
    for r in range(len(table)):
        got = _needs(model.contract(r))
        for k, level in enumerate(table.template.levels):
            members = [s for s in range(len(level_of)) if level_of[s] == k]
            # A copy in the makespan (a stage-in or stage-out term) is bytes in the
            # contract in that phase, and bytes in the contract are a copy there.
            for phase, terms, time in (("stage-in", table.stage_in, table.level_in),
                                       ("stage-out", table.stage_out, table.level_out)):
                moved = not np.isnan(terms[r, members]).all()
                charged = any(key[:2] == (level, phase) for key in got)
                assert moved == charged, (r, level, phase)
                for key, n in got.items():
                    if key[:2] == (level, phase):
                        assert n.seconds == time[r, k] and n.mib_per_s * n.seconds == \
                            pytest.approx(n.mib)
        # A node-local stage that reads a predecessor on nfs copies from nfs, never from
        # pfs alone (the old second copy of the rules charged the home tier).
        tiers = dict(zip(table.template.stage_names, (TIERS.names[i] for i in table.config[r]),
                         strict=True))
        if tiers["C"] == "ram" and tiers["B"] == "nfs":
            assert (2.0, "stage-in", "nfs") in got


def test_the_query_answers_with_the_contract(trained):
    _, model = trained
    ans = answer(model, Constraints(objective="fastest"))
    assert ans.contract == model.contract(ans.choice.row)
    assert ans.bandwidth == ans.contract.summary()


def test_the_contract_survives_the_model_file_and_a_forged_rate_is_refused(trained):
    _, model = trained
    doc = json.loads(json.dumps(model.to_json()))
    again = model_from_json(doc, "m.json")
    assert [again.contract(r) for r in range(len(again))] == \
        [model.contract(r) for r in range(len(model))]
    needs = next(n for n in doc["contracts"]["levels"][0] if n)
    needs[0][3] *= 10                                      # reserve ten times the need
    with pytest.raises(InputError, match="rate is not its MiB over its phase's time"):
        model_from_json(doc, "m.json")


def test_a_deadline_with_slack_lowers_every_rate_by_the_same_stretch() -> None:
    from qos_plugin.planner.contract import DEADLINE_MARGIN, Contract, Need, deadline_stretch

    assert deadline_stretch(100.0, 150.0) == pytest.approx(150.0 * DEADLINE_MARGIN / 100.0)
    assert deadline_stretch(100.0, 105.0) == 1.0     # within the margin: the contract
    # No deadline, one tighter than the prediction, or nonsense: the contract's rates.
    for deadline in (None, 100.0, 50.0, float("nan"), float("inf")):
        assert deadline_stretch(100.0, deadline) == 1.0
    for makespan in (0.0, -1.0, float("nan")):
        assert deadline_stretch(makespan, 120.0) == 1.0
    c = Contract(needs=(Need(0, "execution", "pfs", 600.0, 2.0, 300.0),
                        Need(1, "stage_out", "pfs", 100.0, 1.0, 100.0),
                        Need(0, "execution", "ssd", 800.0, 2.0, 400.0, 200.0)),
                 stage_in=(), stage_out=())
    assert c.rates(1.25) == pytest.approx({"pfs": 240.0, "ssd": 160.0})
    # Each phase stretched by 1.25 takes 1.25 times as long: the makespan (3 s of phases)
    # becomes 3.75 s, the deadline, with every byte still moved.
    assert sum(n.mib / (n.mib_per_s / 1.25) for n in c.needs if n.tier == "pfs") == \
        pytest.approx(1.25 * 3.0)
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="stretch"):
            c.rates(bad)
