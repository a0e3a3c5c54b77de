"""Templates (QoSFlow JSON and WfFormat 1.5), tiers and separation on plain data."""

from __future__ import annotations

import numpy as np
import pytest

from qos_plugin.errors import InputError
from qos_plugin.model.ranking import concordance
from qos_plugin.model.separation import hedges_g, separation
from qos_plugin.model.template import template_from_dict
from qos_plugin.model.tiers import parse_tiers
from qos_plugin.model.wfformat import template_from_wfformat


def test_template_errors_name_the_problem():
    with pytest.raises(InputError, match="unknown predecessor 'X'"):
        template_from_dict({"A": {"stage_order": 1, "num_tasks": 1,
                                  "predecessors": {"X": {"inputs": []}}}})
    with pytest.raises(InputError, match="at a later level"):
        template_from_dict({"A": {"stage_order": 2, "num_tasks": 1},
                            "B": {"stage_order": 1, "num_tasks": 1,
                                  "predecessors": {"A": {"inputs": []}}}})
    with pytest.raises(InputError, match="has no 'num_tasks'"):
        template_from_dict({"A": {"stage_order": 1}})
    with pytest.raises(InputError, match="bad regex"):
        template_from_dict({"A": {"stage_order": 1, "num_tasks": 1, "outputs": ["("]}})


def test_tier_names_may_not_contain_the_move_separator():
    with pytest.raises(InputError, match="invalid tier name 'burst-buffer'"):
        parse_tiers("pfs:shared,burst-buffer:node-local")


def test_wfformat_instance_becomes_a_template():
    def task(tid, parents, ins, outs):
        return {"id": tid, "name": tid, "parents": parents, "inputFiles": ins,
                "outputFiles": outs}
    data = {"name": "tiny", "schemaVersion": "1.5", "workflow": {"specification": {
        "tasks": [task("split_ID01", [], ["raw"], ["p1", "p2"]),
                  task("work_ID02", ["split_ID01"], ["p1", "ref"], ["o1"]),
                  task("work_ID03", ["split_ID01"], ["p2", "ref"], ["o2"]),
                  task("merge_ID04", ["work_ID02", "work_ID03", "split_ID01"], ["o1", "o2", "p1"],
                       ["final"])],
        "files": [{"id": f, "sizeInBytes": 10} for f in
                  ["raw", "p1", "p2", "ref", "o1", "o2", "final"]]}}}
    t = template_from_wfformat(data)
    assert t.stage_names == ["split", "work", "merge"]
    assert [t[s].level for s in t.stage_names] == [1.0, 2.0, 3.0]
    assert t["work"].num_tasks == 2
    assert set(t["work"].predecessors) == {"split", "initial_data"}
    assert set(t["merge"].predecessors) == {"work", "split"}


def test_hedges_g_by_hand():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    # pooled sd 1, d = 3, J = 1 - 3 / (4 * 6 - 9) = 0.8
    assert hedges_g(x, y) == pytest.approx(2.4)


def test_separation_needs_enough_rows_per_leaf():
    y = np.array([1.0, 2.0, 3.0, 10.0, 11.0, 12.0])
    leaves = np.array([0, 0, 0, 1, 1, 1])
    assert separation(y, leaves, n_min_pair=3).score > 0
    assert separation(y, leaves, n_min_pair=4).pairs == 0


def test_concordance_counts_inversions():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert concordance(np.array([0, 1, 2, 3]), y) == 1.0
    assert concordance(np.array([3, 2, 1, 0]), y) == 0.0
    assert concordance(np.array([1, 0, 2, 3]), y) == pytest.approx(5 / 6)
