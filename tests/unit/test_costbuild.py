"""The cost builder on a workflow of our own, checked against hand computation."""

from __future__ import annotations

import numpy as np
import pytest

from qos_plugin.model.costbuild import COPY_BATCH, build_cost_table
from qos_plugin.model.iodata import IoData, IoRecord
from qos_plugin.model.profile import StorageProfile
from qos_plugin.model.template import INITIAL_DATA, Stage, WorkflowTemplate
from qos_plugin.model.tiers import Tier, TierKind, TierSet

# One measured point per (operation, storage): every lookup returns that rate.
RATES = {("read", "lustre"): 100.0, ("write", "lustre"): 50.0,
         ("read", "nvme"): 400.0, ("write", "nvme"): 200.0,
         ("cp", "lustre-nvme"): 80.0, ("cp", "nvme-lustre"): 40.0, ("scp", "nvme-nvme"): 160.0}
N_OUT = 65      # gen's outputs: more than one copy batch


def _profile() -> StorageProfile:
    point = np.array([[2.0, 1.0, 1000.0, 10.0]])
    return StorageProfile("hand", {k: (point, np.array([r])) for k, r in RATES.items()})


@pytest.fixture(scope="module")
def costs():
    gen = Stage("gen", 1.0, 4, 4, {INITIAL_DATA: ("in0",)}, ("o.*",))
    summ = Stage("sum", 2.0, 2, 2, {"gen": ("o0",)}, ("out",))
    recs = [IoRecord("gen", "g1", "in0", "read", 1000.0, 10.0, INITIAL_DATA)]
    recs += [IoRecord("gen", "g1", f"o{i}", "write", 2000.0, 1.0, "") for i in range(N_OUT)]
    recs += [IoRecord("sum", "s1", "o0", "read", 1000.0, 1.0, "gen"),
             IoRecord("sum", "s1", "out", "write", 1000.0, 5.0, "")]
    tiers = TierSet((Tier("lustre", TierKind.SHARED), Tier("nvme", TierKind.NODE_LOCAL)))
    return build_cost_table(WorkflowTemplate("hand", (gen, summ)), IoData(recs, "hand"),
                            _profile(), tiers, [2])


def _rows(t, producer, consumer, ptier, ctier):
    return [(int(t.producer_tpn[i]), int(t.consumer_tpn[i]), t.est_prod[i], t.est_cons[i])
            for i in range(len(t)) if (t.producer[i], t.consumer[i], t.producer_tier[i],
                                       t.consumer_tier[i]) == (producer, consumer, ptier, ctier)]


def test_edge_charges_each_side_its_stage_volume(costs):
    # gen writes 65 MiB in all (tpn 2 on 2 nodes), sum reads 1 MiB (tpn 1).
    assert _rows(costs, "gen", "sum", "lustre", "lustre") == [(2, 1, 65 / 50, 1 / 100)]
    assert _rows(costs, "gen", "sum", "nvme", "nvme") == [(2, 1, 65 / 200, 1 / 400)]


def test_reading_in_place_is_charged_the_slowest_record(costs):
    # gen's 10 MiB of reads take 0.1 s, its 65 MiB of writes 1.3 s on lustre.
    assert _rows(costs, "stage_in-gen", "gen", "lustre", "lustre") == [(2, 2, 0.0, 65 / 50)]


def test_copies_in_batches_one_row_per_parallelism(costs):
    # Batches: 60 of gen's 66 files (30 copies per node), the other 6 (3), and the
    # initial input alone (1). Each copies all 75 distinct MiB to both nodes.
    assert COPY_BATCH == 60
    rows = sorted(_rows(costs, "stage_in-gen", "gen", "lustre-nvme", "nvme"))
    copy = 75 * 2 / 80
    assert rows == [(1, 2, copy, 10 / 400), (3, 2, copy, 65 / 200), (30, 2, copy, 65 / 200)]


def test_flushes_of_the_last_level(costs):
    # sum's two files (6 MiB) go home with one copy per node; the producer side is
    # sum's slowest record on nvme, its 5 MiB write (reads 1 MiB at 400 MiB/s).
    assert _rows(costs, "sum", "stage_out-sum", "nvme", "nvme-lustre") == \
        [(1, 1, 5 / 200, 6 * 2 / 40)]
    assert _rows(costs, "sum", "stage_out-sum", "nvme", "nvme-nvme") == \
        [(1, 1, 5 / 200, 6 * 2 / 160)]
    # Between two node-local tiers nothing moves, and a shared tier is never "moved" to itself.
    assert not any("-" in t and t.split("-")[0] == t.split("-")[1] == "lustre"
                   for t in costs.consumer_tier)


def test_rate_brackets_with_two_measured_values_and_takes_the_median():
    sizes = np.array([[1.0, 1.0, 1000.0, s] for s in (1.0, 2.0, 4.0)])
    prof = StorageProfile("hand", {("read", "t"): (sizes, np.array([10.0, 20.0, 80.0]))})
    # Between 2 and 4: the line gives 50, as does the mean of the two kept runs.
    assert prof.rate("read", "t", 1, 1, 1000, 3.0) == pytest.approx(50.0)
    # On a measured value the runs below it are kept too: nodes, tasks and
    # transfer see the mean of 10 and 20, size sees 20; the median is 15.
    assert prof.rate("read", "t", 1, 1, 1000, 2.0) == pytest.approx(15.0)
    # Beyond the range the size line extrapolates to 200; the median stays 50.
    assert prof.rate("read", "t", 1, 1, 1000, 8.0) == pytest.approx(50.0)
    assert np.isnan(prof.rate("write", "t", 1, 1, 1000, 8.0))


def test_the_grid_estimator_is_exact_on_measured_points_and_never_extrapolates():
    # A sparse profile as qos-plan profile measures it: one size, 1 and 2 tasks,
    # 4 KiB and 1 MiB transfers.
    x = np.array([[1.0, 1.0, 4096.0, 64.0], [1.0, 2.0, 4096.0, 64.0],
                  [1.0, 1.0, 1048576.0, 64.0], [1.0, 2.0, 1048576.0, 64.0]])
    rates = np.array([21.0, 29.0, 103.0, 107.0])
    qosflow = StorageProfile("hand", {("write", "t"): (x, rates)})
    grid = StorageProfile("hand", {("write", "t"): (x, rates)}, estimator="grid")
    # The published estimator mixes the transfer sizes into its other dimensions.
    assert qosflow.rate("write", "t", 1, 1, 1048576, 64) < 80
    for point, rate in zip(x.tolist(), rates.tolist(), strict=True):
        assert grid.rate("write", "t", *point) == pytest.approx(rate)
    # Between measured values: linear in each dimension, the first dimension first.
    mid = (1.0, 1.0, (4096 + 1048576) / 2, 64.0)
    assert grid.rate("write", "t", *mid) == pytest.approx((21 + 103) / 2)
    # Outside the measured range: the nearest measured value (8 tasks: the 2 tasks'
    # rate; 720 MiB: the 64 MiB runs'; 3 nodes: the one node's).
    assert grid.rate("write", "t", 1, 8, 1048576, 720) == pytest.approx(107.0)
    assert grid.rate("write", "t", 3, 1, 1048576, 64) == pytest.approx(103.0)
    assert grid.rate("write", "t", 1, 1, 512, 1) == pytest.approx(21.0)
    assert np.isnan(grid.rate("read", "t", 1, 1, 4096, 64))


def test_a_profile_says_how_it_is_read(tmp_path):
    from qos_plugin.errors import InputError
    from qos_plugin.model.profile import load_profile
    from qos_plugin.planner.campaign import write_profile

    head = ("operation,transferSize,aggregateFilesizeMB,numNodes,tasksPerNode,trMiB,"
            "storageType")
    rows = ["write,4096,64,1,1,21,t", "write,1048576,64,1,1,103,t"]
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join([head, *rows]) + "\n")
    assert load_profile(plain).estimator == "qosflow"
    tagged = tmp_path / "grid.csv"
    tagged.write_text("\n".join([head + ",estimator", *(r + ",grid" for r in rows)]) + "\n")
    prof = load_profile(tagged)
    assert prof.estimator == "grid" and prof.rate("write", "t", 1, 1, 1048576, 64) == 103
    # written back (a calibrated profile) it is read the same way
    write_profile(prof, tmp_path / "again.csv")
    assert load_profile(tmp_path / "again.csv").estimator == "grid"
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("\n".join([head + ",estimator", rows[0] + ",grid", rows[1] + ",qosflow"]))
    with pytest.raises(InputError, match="not one of qosflow, grid for the whole file"):
        load_profile(mixed)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([head + ",estimator", rows[0] + ",spline"]))
    with pytest.raises(InputError, match="'spline' is not one of"):
        load_profile(bad)


def _hand_inputs():
    gen = Stage("gen", 1.0, 4, 4, {INITIAL_DATA: ("in0",)}, ("o.*",))
    summ = Stage("sum", 2.0, 2, 2, {"gen": ("o0",)}, ("out",))
    recs = [IoRecord("gen", "g1", "in0", "read", 1000.0, 10.0, INITIAL_DATA),
            IoRecord("gen", "g1", "o0", "write", 2000.0, 4.0, ""),
            IoRecord("sum", "s1", "o0", "read", 1000.0, 1.0, "gen"),
            IoRecord("sum", "s1", "out", "write", 1000.0, 5.0, "")]
    tiers = TierSet((Tier("lustre", TierKind.SHARED), Tier("nvme", TierKind.NODE_LOCAL)))
    return WorkflowTemplate("hand", (gen, summ)), IoData(recs, "hand"), tiers


def test_a_phase_start_is_charged_once_to_every_phase_that_moves_something():
    from qos_plugin.model.makespan import compute_makespan

    template, io, tiers = _hand_inputs()
    plain = _profile()
    started = StorageProfile("hand", plain.runs, phase_start_s=0.25)
    a = build_cost_table(template, io, plain, tiers, [2])
    b = build_cost_table(template, io, started, tiers, [2])
    # Producer sides (a write, a copy of a stage-in) and moves of a stage-out pay it
    # when they take time; reads, which share the execution's start, never do.
    assert np.allclose(b.est_prod, np.where(a.est_prod > 0, a.est_prod + 0.25, 0.0))
    moves = np.array(["-" in t for t in a.consumer_tier])
    assert np.allclose(b.est_cons, np.where(moves & (a.est_cons > 0), a.est_cons + 0.25,
                                            a.est_cons))
    ta, tb = (compute_makespan(template, c, tiers, [2]) for c in (a, b))
    got = tb.totals_by_placement()
    # All on lustre: two executions and no move. All on nvme: a stage-in, two
    # executions, gen's fan-out and sum's flush home.
    for placement, phases in (((2, "lustre", "lustre"), 2), ((2, "nvme", "nvme"), 5)):
        assert got[placement] == pytest.approx(ta.totals_by_placement()[placement]
                                               + 0.25 * phases)


def test_a_phase_on_more_nodes_starts_later():
    template, io, tiers = _hand_inputs()
    plain = _profile()
    flat = StorageProfile("hand", plain.runs, phase_start_s=0.25)
    wide = StorageProfile("hand", plain.runs, phase_start_s=0.25,
                          phase_start_more_s=(0.05, 0.2))
    # Measured on 2 and 3 nodes; beyond, growing as from 2 to 3.
    assert [wide.phase_start(n) for n in (1, 2, 3, 5)] == pytest.approx([0.25, 0.3, 0.45,
                                                                         0.75])
    for n in (1, 2, 3):
        a = build_cost_table(template, io, flat, tiers, [n])
        b = build_cost_table(template, io, wide, tiers, [n])
        # Every start the flat profile charges costs more on the nodes its phase
        # starts on: a stage's write on those its tasks run on, copies on all n.
        more = np.array([wide.phase_start(min(n, tasks)) - 0.25
                         for tasks in _producer_tasks(template, a)])
        assert np.allclose(b.est_prod, np.where(a.est_prod > 0, a.est_prod + more, 0.0))


def _producer_tasks(template, table):
    """Per row, how many nodes the action its est_prod prices starts on at most:
    a stage's task count for a write, any for a copy (stage_in-/stage_out- rows)."""
    out = []
    for p, c in zip(table.producer, table.consumer, strict=True):
        moving = p.startswith("stage_in") or c.startswith("stage_out")
        out.append(1 << 30 if moving else template[p].num_tasks)
    return out


def test_a_profile_says_how_long_a_phase_takes_to_start(tmp_path):
    from qos_plugin.errors import InputError
    from qos_plugin.model.profile import load_profile
    from qos_plugin.planner.calibration import corrected_profile
    from qos_plugin.planner.campaign import write_profile

    head = ("operation,transferSize,aggregateFilesizeMB,numNodes,tasksPerNode,trMiB,"
            "storageType,phaseStartSeconds")
    rows = ["write,4096,64,1,1,21,t", "write,1048576,64,1,1,103,t"]
    path = tmp_path / "p.csv"
    path.write_text("\n".join([head + ",phaseStartMoreSeconds",
                               *(r + ",0.15,0.05;0.25" for r in rows)]) + "\n")
    prof = load_profile(path)
    assert (prof.phase_start_s, prof.phase_start_more_s) == (0.15, (0.05, 0.25))
    # Calibration corrects rates, not the start; written back, it is read the same.
    fixed = corrected_profile(prof, {("write", "t"): 2.0})
    assert (fixed.phase_start_s, fixed.phase_start_more_s) == (0.15, (0.05, 0.25))
    write_profile(fixed, tmp_path / "again.csv")
    again = load_profile(tmp_path / "again.csv")
    assert (again.phase_start_s, again.phase_start_more_s) == (0.15, (0.05, 0.25))
    assert again.runs[("write", "t")][1].tolist() == [42.0, 206.0]
    for cells, needle in (((",0.15", ",0.2"), "phaseStartSeconds differs between rows"),
                          ((",-1", ",-1"), "outside 0 to 60"),
                          ((",soon", ",soon"), "'soon'")):
        lines = [r + c for r, c in zip(rows, cells, strict=True)]
        path.write_text("\n".join([head, *lines]) + "\n")
        with pytest.raises(InputError, match=needle):
            load_profile(path)


@pytest.mark.parametrize("cells, needle", [
    ((",0.1;0.2", ",0.1"), "phaseStartMoreSeconds differs between rows"),
    ((",0.1;-2", ",0.1;-2"), "is not seconds 0 to 60 separated by ';'"),
    ((",0.1;;0.3", ",0.1;;0.3"), "is not seconds 0 to 60"),
    ((",soon", ",soon"), "'soon' is not seconds"),
])
def test_a_bad_phase_start_on_more_nodes_is_refused(tmp_path, cells, needle):
    from qos_plugin.errors import InputError
    from qos_plugin.model.profile import load_profile

    head = ("operation,transferSize,aggregateFilesizeMB,numNodes,tasksPerNode,trMiB,"
            "storageType,phaseStartMoreSeconds")
    rows = ["write,4096,64,1,1,21,t", "write,1048576,64,1,1,103,t"]
    path = tmp_path / "p.csv"
    path.write_text("\n".join([head, *(r + c for r, c in zip(rows, cells, strict=True))])
                    + "\n")
    with pytest.raises(InputError, match=needle):
        load_profile(path)
