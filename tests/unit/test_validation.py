"""The comparison core of ``qos-plan validate`` on numbers worked out by hand, the
sample of placements it runs, and run records it refuses."""

from __future__ import annotations

import math

import pytest

from qos_plugin.errors import InputError
from qos_plugin.planner.prediction import Prediction
from qos_plugin.planner.validation import (
    ALL_BELOW,
    DEFAULT_SAMPLE,
    Measurement,
    compare,
    comparison_json,
    measurement_of,
    select_rows,
    spearman,
)


def _m(total: float, phases: tuple[float, float, float]) -> Measurement:
    return Measurement({"a": "x"}, 1, 1.0, total, (phases,))


# Three placements, one level each. Predicted 10, 20, 30 s; measured 12, median(10,
# 12) = 11 and 40 s: one pair out of order (the first two).
PRED = [Prediction(10.0, ((2.0, 6.0, 2.0),)), Prediction(20.0, ((5.0, 10.0, 5.0),)),
        Prediction(30.0, ((0.0, 30.0, 0.0),))]
MEAS = [[_m(12.0, (1.0, 8.0, 0.0))],
        [_m(10.0, (4.0, 5.0, 1.0)), _m(12.0, (6.0, 5.0, 1.0))],
        [_m(40.0, (0.0, 40.0, 0.0))]]


def test_statistics_worked_out_by_hand():
    c = compare(PRED, MEAS)
    assert c.measured == [12.0, 11.0, 40.0]
    assert c.repeats == [1, 2, 1]
    # Pairs in predicted order: (12, 11) inverted, (12, 40) and (11, 40) not: 2 of 3.
    assert c.concordance == pytest.approx(2 / 3)
    # Ranks (1, 2, 3) against (2, 1, 3): sum d^2 = 2, rho = 1 - 6 * 2 / (3 * 8) = 0.5.
    assert c.spearman == pytest.approx(0.5)
    # |10-12|/12, |20-11|/11, |30-40|/40.
    assert c.relative_error == pytest.approx([1 / 6, 9 / 11, 1 / 4])
    assert c.median_relative_error == pytest.approx(1 / 4)
    assert c.max_relative_error == pytest.approx(9 / 11)
    # Predicted best is placement 0 (10 s), measured best placement 1 (11 s):
    # 12 s instead of 11 s is 1/11 slower, outside 5%.
    assert (c.predicted_best, c.measured_best) == (0, 1)
    assert c.best_gap == pytest.approx(1 / 11) and not c.best_within


def test_phase_errors_worked_out_by_hand():
    ph = compare(PRED, MEAS).phases
    # Stage-in: predicted 2, 5, 0 against 1, median(4, 6) = 5, 0; the third took no
    # time and is left out: errors 1 and 0.
    assert ph["stage-in"]["median_relative_error"] == pytest.approx(0.5)
    assert ph["stage-in"]["median_share_error"] == pytest.approx(0.0)
    assert ph["stage-in"]["predicted_seconds"] == 7.0
    assert ph["stage-in"]["measured_seconds"] == 6.0
    # Execution: 6, 10, 30 against 8, 5, 40: 2/8, 5/5, 10/40 of the phase;
    # 2/12, 5/11, 10/40 of the makespan.
    assert ph["execution"]["median_relative_error"] == pytest.approx(0.25)
    assert ph["execution"]["median_share_error"] == pytest.approx(0.25)
    # Stage-out: only the second took time (1 s, predicted 5 s).
    assert ph["stage-out"]["median_relative_error"] == pytest.approx(4.0)
    assert ph["stage-out"]["median_share_error"] == pytest.approx(2 / 12)


def test_a_perfect_prediction_and_the_json_form():
    c = compare(PRED, [[_m(p.total, p.levels[0])] for p in PRED])
    assert c.concordance == 1.0 and c.spearman == pytest.approx(1.0)
    assert c.median_relative_error == 0.0 and c.best_within and c.best_gap == 0.0
    doc = comparison_json(c, ["p0", "p1", "p2"])
    assert doc["predicted_best"] == doc["measured_best"] == "p0"
    assert [p["placement"] for p in doc["placements"]] == ["p0", "p1", "p2"]
    # One placement: no pairs, no ranks; JSON says null rather than NaN.
    one = comparison_json(compare(PRED[:1], MEAS[:1]), ["p0"])
    assert one["concordance"] is None and one["spearman"] is None


def test_spread_and_the_pairs_the_runs_tell_apart_worked_out_by_hand():
    # Four placements predicted 10, 20, 30, 40 s, each run twice:
    # a 11, 13 (median 12, spread 2); b 11.5, 12.5 (12, 1): b is no slower than a,
    # but 0 s apart against 2 s of spread; c 20, 30 (25, 10); d 23, 25 (24, 2):
    # inverted against c, and 1 s apart against 10 of spread.
    runs = [[_m(t, (0.0, t, 0.0)) for t in pair]
            for pair in ((11.0, 13.0), (11.5, 12.5), (20.0, 30.0), (23.0, 25.0))]
    pred = [Prediction(t, ((0.0, t, 0.0),)) for t in (10.0, 20.0, 30.0, 40.0)]
    c = compare(pred, runs)
    assert c.spread == pytest.approx([2 / 12, 1 / 12, 10 / 25, 2 / 24])
    assert c.median_spread == pytest.approx((1 / 12 + 2 / 12) / 2)   # of 1/12, 2/12, 1/12, 2/5
    assert c.max_spread == pytest.approx(0.4)
    # All pairs: a-b tie (concordant), c-d inverted: 5 of 6.
    assert c.concordance == pytest.approx(5 / 6)
    # Told apart: a-c (13 s vs 10), a-d (12 vs 2), b-c (13 vs 10), b-d (12 vs 2); not
    # a-b (0 vs 2) nor c-d (1 vs 10). All four in the predicted order.
    assert c.separable_pairs == 4 and c.separable_concordance == 1.0
    doc = comparison_json(c, list("abcd"))
    assert doc["separable_pairs"] == 4 and doc["max_spread"] == pytest.approx(0.4)
    assert [p["spread"] for p in doc["placements"]] == pytest.approx(c.spread)
    # Run once, a placement has no spread, and its pairs are not told apart.
    once = compare(PRED, MEAS)
    assert once.spread == [None, pytest.approx(2 / 11), None]
    assert once.separable_pairs == 0 and math.isnan(once.separable_concordance)
    assert comparison_json(once, ["p0", "p1", "p2"])["separable_concordance"] is None


def test_spearman_gives_ties_their_average_rank():
    # Ranks (1.5, 1.5, 3) against (1, 2, 3): the Pearson correlation of the ranks.
    a, b = [1.5, 1.5, 3.0], [1.0, 2.0, 3.0]
    ma, mb = sum(a) / 3, sum(b) / 3
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    expected = cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))
    assert spearman([5.0, 5.0, 9.0], [1.0, 2.0, 3.0]) == pytest.approx(expected)
    assert math.isnan(spearman([1.0, 1.0], [1.0, 2.0]))


def test_sample_keeps_the_best_and_takes_every_region_before_a_second():
    regions = [0, 0, 1, 1, 2]
    totals = [5.0, 1.0, 9.0, 7.0, 3.0]
    # Best is index 1. Regions by their fastest: 2 (3 s), 0 (5 s, without the best),
    # 1 (7 s).
    assert select_rows(regions, totals, 3) == [1, 4, 0]
    four = select_rows(regions, totals, 4, seed=7)
    assert four[:3] == [1, 4, 0] and four[3] in (2, 3)
    assert select_rows(regions, totals, 4, seed=7) == four
    assert select_rows(regions, totals, 10) == [0, 1, 2, 3, 4]


def test_all_when_few_else_the_default_sample():
    few = ALL_BELOW
    assert select_rows([0] * few, [float(i) for i in range(few)], None) == list(range(few))
    many = select_rows([i % 4 for i in range(40)], [float(i) for i in range(40)], None)
    assert len(many) == DEFAULT_SAMPLE and len(set(many)) == DEFAULT_SAMPLE
    assert many[0] == 0


def _record() -> dict:
    return {"placement": {"a": "x"}, "nodes": 2, "scale": 0.5, "total_seconds": 3.0,
            "levels": [{"phases": {"stage-in": {"start": None, "end": None},
                                   "execution": {"start": 1.7e9, "end": 1.7e9 + 2.5},
                                   "stage-out": {"start": 1.7e9 + 2.5, "end": 1.7e9 + 3}}}]}


def test_a_run_record_becomes_a_measurement():
    m = measurement_of(_record())
    assert (m.nodes, m.scale, m.total) == (2, 0.5, 3.0)
    assert m.levels == ((0.0, 2.5, 0.5),)
    assert m.phases == {"stage-in": 0.0, "execution": 2.5, "stage-out": 0.5}


def test_a_phase_lasts_from_its_launch_to_its_barrier_when_the_record_has_them():
    rec = _record()
    out = rec["levels"][0]["phases"]["stage-out"]
    # The run started the phase 0.2 s before its copy began and saw it end 0.1 s after.
    out.update(launched=out["start"] - 0.2, returned=out["end"] + 0.1)
    assert measurement_of(rec).levels == ((0.0, 2.5, pytest.approx(0.8, abs=1e-6)),)


@pytest.mark.parametrize("change", [
    {"total_seconds": "3"}, {"total_seconds": float("nan")}, {"nodes": 0}, {"scale": 2.0},
    {"placement": ["a"]}, {"levels": [{"phases": {}}]}, {"levels": None},
])
def test_a_damaged_record_is_one_line(change):
    with pytest.raises(InputError) as e:
        measurement_of({**_record(), **change}, "runs.json: run 1")
    assert str(e.value).startswith("runs.json: run 1: is not a run record")
    assert "\n" not in str(e.value)
