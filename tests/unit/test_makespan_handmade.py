"""Makespans and critical paths of a workflow of our own, against hand computation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qos_plugin.model.makespan import MakespanModel, enumerate_configs
from tests.unit.handmade import TEMPLATE, TIERS, cost_table


@pytest.fixture(scope="module")
def table():
    return MakespanModel(TEMPLATE, cost_table(), TIERS).evaluate([2, 4])


def row(table, nodes, **tiers):
    names = TEMPLATE.stage_names
    want = [TIERS.index(tiers[s]) for s in names]
    hit = np.flatnonzero((table.nodes == nodes) & (table.config == want).all(axis=1))
    assert hit.size == 1, f"configuration {tiers} at N={nodes} not found once"
    return int(hit[0])


def test_everything_on_the_shared_tier(table):
    # level 1: A = read 10 (initial, tpn 2 row) + write max(A->C 1.0, A->D 3.0) = 13.0
    #          B = 4 + 0.5 = 4.5                         -> exec_1 = 13.0 (A)
    # level 2: C = read (2.0 + 1.5) + write 2.0 = 5.5; D = 2.5 + final write 0.9 = 3.4
    # level 3: E = 0.7 + 0.3 = 1.0;  no moves anywhere -> 19.5
    i = row(table, 2, A="pfs", B="pfs", C="pfs", D="pfs", E="pfs")
    assert table.total[i] == pytest.approx(19.5, abs=1e-12)
    assert table.critical_paths()[i] == \
        "read_A(2)->write_A(2)->read_C(2)->write_C(2)->read_E(1)->write_E(1)"
    assert np.isnan(table.stage_in[i]).all() and np.isnan(table.stage_out[i]).all()


def test_node_local_stages_with_copies_fan_out_and_a_tie(table):
    # level 1: in = copy of A onto nvme, cheapest row 5.0 (tpn 8)
    #          A on nvme = local read 3.0 + write max(0.5, 1.5) = 4.5; B = 4 + 0.5 = 4.5
    #          tie -> A wins by name; out = max(fan-out A 9.0 (tpn 2), copy B 3.0) = 9.0
    # level 2: in = copy for C (reads B from pfs) 1.25 (tpn 4)
    #          C = (1.0 + 0.5) + 1.0 = 2.5; D = 1.2 + 0.6 = 1.8; out = C nvme->pfs 1.2 (tpn 3)
    # level 3: E on pfs = 0.7 + 0.3 = 1.0
    # total = (5 + 1.25) + (4.5 + 2.5 + 1.0) + (9.0 + 1.2) = 24.45
    i = row(table, 2, A="nvme", B="pfs", C="nvme", D="nvme", E="pfs")
    assert table.total[i] == pytest.approx(24.45, abs=1e-12)
    assert table.critical_paths()[i] == (
        "stage_in_A(8)->read_A(2)->write_A(2)->stage_out_A(2)->stage_in_C(4)->read_C(2)"
        "->write_C(2)->stage_out_C(3)->read_E(1)->write_E(1)")
    k = TEMPLATE.stage_names.index("B")
    assert table.stage_out[i, k] == pytest.approx(3.0)


def test_last_level_flushes_node_local_outputs(table):
    # level 1: A 13.0 (as on pfs); level 2: C 5.5, out = C pfs->nvme 1.5 (tpn 6)
    # level 3: in = copy for E 0.8 (tpn 2); E = 0.4 + final write 0.2 = 0.6;
    #          out = flush E nvme->pfs 1.1 (tpn 2)
    # total = 0.8 + (13 + 5.5 + 0.6) + (1.5 + 1.1) = 22.5
    i = row(table, 2, A="pfs", B="pfs", C="pfs", D="pfs", E="nvme")
    assert table.total[i] == pytest.approx(22.5, abs=1e-12)
    assert table.critical_paths()[i] == (
        "read_A(2)->write_A(2)->read_C(2)->write_C(2)->stage_out_C(6)->stage_in_E(2)"
        "->read_E(1)->write_E(1)->stage_out_E(2)")


def test_the_final_stage_in_the_middle_is_flushed_only_at_the_end(table):
    # D has no successor at level 2 of 3: its write is the final write (0.6 on
    # nvme) and it is not flushed, as only the last level is.
    i = row(table, 2, A="nvme", B="pfs", C="nvme", D="nvme", E="pfs")
    d = TEMPLATE.stage_names.index("D")
    assert table.stage_write[i, d] == pytest.approx(0.6)
    assert np.isnan(table.stage_out[i, d])


def test_validity_matches_brute_force_over_four_tiers():
    local = {"nvme", "ram", "bb"}
    edges = [("A", "C"), ("B", "C"), ("A", "D"), ("C", "E")]
    names = TEMPLATE.stage_names
    expected = []
    for combo in itertools.product(TIERS.names, repeat=len(names)):
        cfg = dict(zip(names, combo, strict=True))
        if all(not (cfg[p] in local and cfg[c] in local and cfg[p] != cfg[c])
               for p, c in edges):
            expected.append([TIERS.index(t) for t in combo])
    got = enumerate_configs(TEMPLATE, TIERS)
    assert got.tolist() == expected
    assert len(got) < len(TIERS) ** len(names)


def test_rows_sorted_by_total_then_nodes(table):
    assert len(table) == 2 * len(enumerate_configs(TEMPLATE, TIERS))
    keys = list(zip(table.total, table.nodes, strict=True))
    assert keys == sorted(keys)


def test_more_nodes_change_only_execution(table):
    # At N=4 every stage has tpn 1: A's initial read falls back to no preferred
    # row for tpn 1 on nvme (only tpn 2 rows) and to the tpn 1 row (99) on pfs.
    i = row(table, 4, A="pfs", B="pfs", C="pfs", D="pfs", E="pfs")
    a = TEMPLATE.stage_names.index("A")
    assert table.stage_read[i, a] == pytest.approx(99.0)
    j = row(table, 2, A="nvme", B="pfs", C="nvme", D="nvme", E="pfs")
    k = row(table, 4, A="nvme", B="pfs", C="nvme", D="nvme", E="pfs")
    assert table.level_in[j].tolist() == table.level_in[k].tolist()
    assert table.level_out[j].tolist() == table.level_out[k].tolist()


def test_a_subset_of_rows_keeps_its_breakdown_and_paths(table):
    # Breakdown columns and paths are gathered lazily; a subset taken before any
    # of them is read must give the same values as the full table.
    fresh = MakespanModel(TEMPLATE, cost_table(), TIERS).evaluate([2, 4])
    rows = np.arange(len(fresh))[::-3]
    part = fresh.take(rows)
    paths = table.critical_paths()
    assert part.critical_paths() == [paths[i] for i in rows]
    for name in ("level_in", "level_exec", "level_out", "stage_read", "stage_write"):
        np.testing.assert_array_equal(getattr(part, name), getattr(table, name)[rows])
    np.testing.assert_allclose(part.total, np.c_[part.level_in, part.level_exec,
                                                 part.level_out].sum(axis=1), rtol=1e-12)


def test_one_node_has_no_fan_out():
    # On one node there is no other node to fan out to: A's fan-out (9.0 on two nodes)
    # is not charged, and level 1's stage-out is B's copy, 3.0. In the same evaluation
    # two nodes keep it; the staging of levels 2 and 3 does not change.
    t = MakespanModel(TEMPLATE, cost_table(), TIERS).evaluate([1, 2])
    tiers = dict(A="nvme", B="pfs", C="nvme", D="nvme", E="pfs")
    one, two = row(t, 1, **tiers), row(t, 2, **tiers)
    a = TEMPLATE.stage_names.index("A")
    assert t.level_out[two].tolist() == pytest.approx([9.0, 1.2, 0.0])
    assert t.level_out[one].tolist() == pytest.approx([3.0, 1.2, 0.0])
    assert np.isnan(t.stage_out[one, a]) and t.stage_out[two, a] == pytest.approx(9.0)
    assert t.level_in[one].tolist() == t.level_in[two].tolist()
    assert "stage_out_A" not in t.critical_paths()[one]
    assert "stage_out_A(2)" in t.critical_paths()[two]
    exec_one = float(t.level_exec[one].sum())
    assert t.total[one] == pytest.approx(5.0 + 1.25 + exec_one + 3.0 + 1.2, abs=1e-12)


def test_fan_out_bytes_are_the_other_nodes_outputs():
    from qos_plugin.model.movement import level_mib

    cfg = np.array([[TIERS.index(t) for t in ("nvme", "pfs", "nvme", "nvme", "pfs")]])
    columns = [cfg[:, s] for s in range(cfg.shape[1])]
    vol = {s: {"read_mib": 0.0, "write_mib": 0.0, "in_files_mib": 0.0,
               "out_files_mib": 10.0 if s == "A" else 0.0} for s in TEMPLATE.stage_names}
    mib = level_mib(TEMPLATE, TIERS, columns, vol)
    nvme = TIERS.index("nvme")
    # A's 10 MiB are written over N nodes; each node gets the (N - 1) / N of them the
    # others wrote: (N - 1) x 10 MiB in all, nothing on one node.
    got = [float(mib.at(0, np.array([0]), np.array([n]))[0, 2, nvme]) for n in (1, 2, 3)]
    assert got == pytest.approx([0.0, 10.0, 20.0])


def _volumes(**by_stage):
    empty = {"read_mib": 0.0, "write_mib": 0.0, "in_files_mib": 0.0, "out_files_mib": 0.0}
    return {s: {**empty, **by_stage.get(s, {})} for s in TEMPLATE.stage_names}


def test_a_shared_tier_serves_a_level_together():
    from qos_plugin.model.capacity import LevelFloor

    # Level 1 moves A's 10 + 6 MiB and B's 4 MiB on pfs; at 1 MiB/s that takes 20 s
    # however the stages split it, more than the published 13.0 of A alone.
    vol = _volumes(A={"read_mib": 10.0, "write_mib": 6.0, "in_files_mib": 3.0},
                   B={"read_mib": 4.0})
    floored = MakespanModel(TEMPLATE, cost_table(), TIERS).evaluate(
        [2, 4], floor=LevelFloor(vol, {"pfs": 1.0}))
    i = row(floored, 2, A="pfs", B="pfs", C="pfs", D="pfs", E="pfs")
    assert floored.level_exec[i].tolist() == pytest.approx([20.0, 5.5, 1.0])
    assert floored.total[i] == pytest.approx(26.5)
    # A's copy onto nvme brings its 3 MiB to every node through pfs: 6 s on two nodes,
    # 12 on four, against the published 5.0 whatever the count; B reads its 4 MiB on
    # pfs (4 s) beside A on nvme, under the published 4.5.
    for n, stage_in in ((2, 6.0), (4, 12.0)):
        j = row(floored, n, A="nvme", B="pfs", C="nvme", D="nvme", E="pfs")
        assert floored.level_in[j, 0] == pytest.approx(stage_in)
        assert floored.level_exec[j, 0] >= 4.0
        if n == 2:
            assert floored.level_exec[j, 0] == pytest.approx(4.5)
        phases = floored.level_in[j] + floored.level_exec[j] + floored.level_out[j]
        assert floored.total[j] == pytest.approx(phases.sum())


def test_no_capacity_leaves_the_published_makespan_bit_for_bit(table):
    from qos_plugin.model.capacity import LevelFloor

    vol = _volumes(A={"read_mib": 10.0})
    same = MakespanModel(TEMPLATE, cost_table(), TIERS).evaluate(
        [2, 4], floor=LevelFloor(vol, {"nvme": 1.0}))   # a node-local tier has none
    assert same.total.tolist() == table.total.tolist()


def test_capacities_come_from_grid_profiles_only():
    from qos_plugin.model.capacity import capacity_of
    from qos_plugin.model.profile import StorageProfile

    point = np.array([[1.0, 1.0, 1048576.0, 64.0]])
    runs = {("read", "pfs"): (point, np.array([90.0])), ("write", "pfs"): (point, [60.0]),
            ("cp", "pfs-nvme"): (point, np.array([110.0])),
            ("read", "nvme"): (point, np.array([900.0]))}
    runs = {k: (x, np.asarray(r)) for k, (x, r) in runs.items()}
    assert capacity_of(StorageProfile("p", runs, estimator="grid"), TIERS) == {"pfs": 110.0}
    assert capacity_of(StorageProfile("p", runs), TIERS) == {}


def _grid_profile(start: float = 0.5):
    """One run per operation and tier, so every lookup gives its rate: reads 10 and
    writes 5 MiB/s on pfs, 100 and 50 on each node-local tier; copies from pfs 20,
    to pfs 10, a fan-out 40 (the profile knows one node: a node-local tier's reads and
    writes scale by nodes, a fan-out's rate is the whole job's)."""
    from qos_plugin.model.profile import StorageProfile

    point = np.array([[1.0, 1.0, 1048576.0, 64.0]])
    rates = {("read", "pfs"): 10.0, ("write", "pfs"): 5.0}
    for t in ("nvme", "ram", "bb"):
        rates |= {("read", t): 100.0, ("write", t): 50.0, ("cp", f"pfs-{t}"): 20.0,
                  ("cp", f"{t}-pfs"): 10.0, ("scp", f"{t}-{t}"): 40.0}
    runs = {k: (point, np.array([r])) for k, r in rates.items()}
    return StorageProfile("hand", runs, estimator="grid", phase_start_s=start)


def _carried_volumes():
    mib = 1048576.0
    vol = {"A": (12.0, 8.0, {"initial_data": 6.0}), "B": (4.0, 2.0, {"initial_data": 4.0}),
           "C": (10.0, 6.0, {"A": 8.0, "B": 2.0}), "D": (8.0, 4.0, {"A": 8.0}),
           "E": (6.0, 1.0, {"C": 6.0})}
    return {s: {"read_mib": r, "write_mib": w, "in_files_mib": sum(src.values()),
                "out_files_mib": w, "in_from_mib": src, "read_transfer_bytes": mib,
                "write_transfer_bytes": mib} for s, (r, w, src) in vol.items()}


@pytest.fixture(scope="module")
def carried():
    from qos_plugin.model.carried import carried_of

    pricing = carried_of(_grid_profile(), _carried_volumes())
    return MakespanModel(TEMPLATE, cost_table(), TIERS, carried=pricing).evaluate([1, 2, 3])


def test_a_site_model_charges_what_each_phase_carries_all_on_the_shared_tier(carried):
    # Each stage's reads and writes once (plus one 0.5 s start), not once per
    # predecessor: A 12/10 + 8/5 + 0.5 = 3.3 (B 1.3); C 10/10 + 6/5 + 0.5 = 2.7
    # (D 2.1); E 0.6 + 0.2 + 0.5 = 1.3. pfs serves 20 MiB/s at most (its copies), so
    # no level's floor (26, 28 and 7 MiB) reaches these.
    i = row(carried, 2, A="pfs", B="pfs", C="pfs", D="pfs", E="pfs")
    assert carried.level_exec[i].tolist() == pytest.approx([3.3, 2.7, 1.3])
    assert carried.level_in[i].tolist() == carried.level_out[i].tolist() == [0, 0, 0]
    assert carried.total[i] == pytest.approx(7.3)


def test_a_site_model_copies_only_what_is_not_on_the_node(carried):
    i = row(carried, 2, A="nvme", B="pfs", C="nvme", D="nvme", E="pfs")
    # L1 in: A's 6 MiB of initial data onto 2 nodes through pfs: 12/20 + 0.5. L1 exec:
    # B on pfs 1.3 (A on nvme: 12/200 + 8/100 + 0.5). L1 out: A fans its 8 MiB out
    # (each node gets the other's half: 8 MiB at the job's 40, not 2 x 40: the pipes
    # share one node) 0.7, B moves its 2 MiB onto nvme 2/20 + 0.5 = 0.6. L2 in: C
    # brings B's 2 MiB (A's outputs are on the nodes): 4/20 + 0.5; exec C 10/200 +
    # 6/100 + 0.5; out C's 6 MiB to pfs 6/10 + 0.5.
    # L3: E on pfs 1.3.
    assert carried.level_in[i].tolist() == pytest.approx([1.1, 0.7, 0.0])
    assert carried.level_exec[i].tolist() == pytest.approx([1.3, 0.61, 1.3])
    assert carried.level_out[i].tolist() == pytest.approx([0.7, 1.1, 0.0])
    assert carried.total[i] == pytest.approx(6.81)
    # On one node: no fan-out, copies onto one node, node-local rates of one node.
    j = row(carried, 1, A="nvme", B="pfs", C="nvme", D="nvme", E="pfs")
    assert carried.level_in[j].tolist() == pytest.approx([0.8, 0.6, 0.0])
    assert carried.level_exec[j].tolist() == pytest.approx([1.3, 0.72, 1.3])
    assert carried.level_out[j].tolist() == pytest.approx([0.6, 1.1, 0.0])


def test_on_three_nodes_fan_outs_carry_the_other_nodes_outputs_and_flushes_once(carried):
    i = row(carried, 3, A="nvme", B="pfs", C="nvme", D="nvme", E="nvme")
    # L1 in: 6 MiB onto 3 nodes through pfs, 18/20 + 0.5. L1 out: A's fan-out gives each
    # node the other two nodes' outputs, (3 - 1) x 8 MiB at the job's 40: 16/40 + 0.5
    # (B's move 2/20 + 0.5 = 0.6). L2 in: B's 2 MiB onto 3 nodes, 6/20 + 0.5; exec C
    # 10/300 + 6/150 + 0.5; out C's fan-out 12/40 + 0.5. L3: E on nvme 6/300 + 1/150
    # + 0.5, its 1 MiB flushed home once: 1/10 + 0.5.
    assert carried.level_in[i].tolist() == pytest.approx([1.4, 0.8, 0.0])
    assert carried.level_exec[i].tolist() == pytest.approx([1.3, 0.5 + 11 / 150,
                                                            0.5 + 4 / 150])
    assert carried.level_out[i].tolist() == pytest.approx([0.9, 0.8, 0.6])
    # Two sources on one shared tier: C brings A's 8 and B's 2 MiB onto each node.
    j = row(carried, 3, A="pfs", B="pfs", C="nvme", D="pfs", E="pfs")
    assert carried.level_in[j, 1] == pytest.approx(30 / 20 + 0.5)


def test_a_phase_on_more_nodes_takes_longer_to_start():
    """A profile whose phase takes 0.2 s more to start on 2 nodes and 0.4 more on 3:
    every phase that moves something pays that on the nodes it starts on: a stage's
    execution on those its tasks run on, a copy onto or from node-local tiers on all."""
    from qos_plugin.model.carried import carried_of

    prof = _grid_profile()
    prof.phase_start_more_s = (0.2, 0.4)
    table = MakespanModel(TEMPLATE, cost_table(), TIERS,
                          carried=carried_of(prof, _carried_volumes())).evaluate([1, 3])
    i = row(table, 3, A="nvme", B="pfs", C="nvme", D="nvme", E="nvme")
    # The same row as on three nodes above: its copies and moves 0.4 s later; B's 2
    # tasks on 2 nodes, 1.3 + 0.2 (A's 4 on 3, 12/300 + 8/150 + 0.9, is less); C on 3,
    # 10/300 + 6/150 + 0.9; E's one task on one node, as before.
    assert table.level_in[i].tolist() == pytest.approx([1.8, 1.2, 0.0])
    assert table.level_out[i].tolist() == pytest.approx([1.3, 1.2, 1.0])
    assert table.level_exec[i].tolist() == pytest.approx([1.5, 0.9 + 11 / 150,
                                                          0.5 + 4 / 150])
    j = row(table, 1, A="pfs", B="pfs", C="pfs", D="pfs", E="pfs")
    assert table.level_exec[j].tolist() == pytest.approx([3.3, 2.7, 1.3])


def test_a_level_s_fan_outs_share_the_job_s_fan_out_rate():
    """A fans its 8 MiB out and B its 2 at once (both on nvme, their consumers too):
    through one node's srun pipes they share the fastest fan-out measured (40 MiB/s),
    so the level's stage-out takes their sum over it, not the larger alone. No start
    here, so the floor shows: on 2 nodes 8/40 = 0.2 alone, (8 + 2)/40 = 0.25 together;
    on 3 nodes each node gets the other two's, (16 + 4)/40 = 0.5."""
    from qos_plugin.model.capacity import fan_out_capacity
    from qos_plugin.model.carried import carried_of

    prof = _grid_profile(start=0.0)
    assert fan_out_capacity(prof, TIERS) == 40.0
    table = MakespanModel(TEMPLATE, cost_table(), TIERS,
                          carried=carried_of(prof, _carried_volumes())).evaluate([2, 3])
    for n, out in ((2, 0.25), (3, 0.5)):
        i = row(table, n, A="nvme", B="nvme", C="nvme", D="nvme", E="pfs")
        assert table.level_out[i, 0] == pytest.approx(out)
    # Read with the published estimator a profile has no floors (the artifact's rules).
    prof.estimator = "qosflow"
    assert fan_out_capacity(prof, TIERS) == 0.0


def test_a_stage_in_copies_a_predecessor_s_whole_files():
    """E reads 2 of the 6 MiB C writes: a copy moves files, so E's stage-in onto nvme
    still brings all 6 MiB onto each node (what a run copies), not the 2 it reads."""
    from qos_plugin.model.carried import carried_of
    from qos_plugin.model.movement import copied_from

    vol = _carried_volumes()
    vol["E"] = {**vol["E"], "read_mib": 2.0, "in_files_mib": 2.0, "in_from_mib": {"C": 2.0}}
    assert copied_from(vol, "E", "C") == 6.0
    assert copied_from(vol, "A", "initial_data") == 6.0      # the initial data: its part
    table = MakespanModel(TEMPLATE, cost_table(), TIERS,
                          carried=carried_of(_grid_profile(), vol)).evaluate([2])
    i = row(table, 2, A="pfs", B="pfs", C="pfs", D="pfs", E="nvme")
    # 6 MiB onto 2 nodes from pfs at 20 MiB/s: 12/20 + 0.5.
    assert table.level_in[i, 2] == pytest.approx(1.1)


def test_a_site_model_charges_each_task_its_files_at_the_tiers_rate():
    """A profile with per-file runs: pfs makes 40 file operations a second on a node,
    nvme 4000. Each task creates its output and opens each input file (one per task of
    each predecessor, one of the initial data): A and B 2 a task, C 1 + 4 + 2, D 1 + 4,
    E 1 + 4; on 2 nodes, 80 a second on pfs (each node's client its own)."""
    from qos_plugin.model.carried import carried_of
    from qos_plugin.model.movement import task_files
    from qos_plugin.model.profile import FILE_BYTES

    assert [task_files(TEMPLATE, s) for s in "ABCDE"] == [2, 2, 7, 5, 5]
    prof = _grid_profile()
    point = np.array([[1.0, 1.0, float(FILE_BYTES), 1.0]])
    for tier, per_s in (("pfs", 40.0), ("nvme", 4000.0)):
        prof.runs[("files", tier)] = (point, np.array([per_s * FILE_BYTES / (1 << 20)]))
    table = MakespanModel(TEMPLATE, cost_table(), TIERS,
                          carried=carried_of(prof, _carried_volumes())).evaluate([2])
    i = row(table, 2, A="pfs", B="pfs", C="pfs", D="pfs", E="pfs")
    # A 3.3 + 8/80, B 1.3 + 4/80; C 2.7 + 28/80, D 2.1 + 10/80; E 1.3 + 5/80.
    assert table.level_exec[i].tolist() == pytest.approx([3.4, 3.05, 1.3625])
    # On nvme the same files cost a hundredth: C 0.61 + 28/8000.
    j = row(table, 2, A="nvme", B="pfs", C="nvme", D="nvme", E="pfs")
    assert table.level_exec[j, 1] == pytest.approx(0.61 + 28 / 8000)
    # A tier the per-file runs never measured (ram) costs nothing per file, as before.
    k = row(table, 2, A="ram", B="pfs", C="ram", D="ram", E="pfs")
    assert table.level_exec[k, 1] == pytest.approx(0.61)


def test_published_estimator_profiles_keep_the_published_rules():
    from qos_plugin.model.carried import carried_of

    published = _grid_profile()
    published.estimator = "qosflow"
    assert carried_of(published, _carried_volumes()) is None
    assert carried_of(_grid_profile(), None) is None
