"""Scaled predictions, calibration from synthetic runs of a known profile, and
``qos-plan validate`` / ``calibrate`` for real on a small workflow of our own
(a shared tier on disk, a node-local one in /dev/shm)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from qos_plugin.cli.qos_plan import main
from qos_plugin.model.csvio import write_csv
from qos_plugin.model.iodata import write_io_csv
from qos_plugin.model.profile import StorageProfile
from qos_plugin.model.synthetic import TierModel, dag_workflow
from qos_plugin.model.template import template_to_dict
from qos_plugin.model.tiers import parse_tiers
from qos_plugin.planner.calibration import (
    byte_ratios,
    calibrate,
    corrected_profile,
    expected_tier_mib,
    volume_warnings,
)
from qos_plugin.planner.prediction import placement_of, predict, stored_prediction
from qos_plugin.planner.registry import Registry
from qos_plugin.planner.validation import Measurement

TIERS = parse_tiers("disk:shared,shm:node-local")
# (stage, level, tasks, {source: MiB read per task}, MiB written per task)
STAGES = [("gen", 1, 2, {"initial_data": 8.0}, 8.0), ("proc", 2, 2, {"gen": 8.0}, 4.0),
          ("merge", 3, 1, {"proc": 8.0}, 2.0)]
WF = dag_workflow("tiny", STAGES, TIERS, {"disk": TierModel(1, 1), "shm": TierModel(1, 1)})
RATES = {("read", "disk"): 800.0, ("write", "disk"): 400.0, ("read", "shm"): 3000.0,
         ("write", "shm"): 2000.0, ("cp", "disk-shm"): 500.0, ("cp", "shm-disk"): 300.0,
         ("scp", "shm-shm"): 1500.0}
COLUMNS = ["operation", "transferSize", "aggregateFilesizeMB", "numNodes", "tasksPerNode",
           "trMiB", "storageType"]


def _rows(sizes=((1.0, 0.5), (64.0, 1.0))) -> list[list[object]]:
    """Profile rows: every rate at two data sizes (small ones at half the rate, as a
    latency would make them) and one or two tasks."""
    return [[op, float(1 << 20), size, 1.0, float(tpn), r * f * (1 + 0.5 * (tpn - 1)), st]
            for (op, st), r in RATES.items() for size, f in sizes for tpn in (1, 2)]


def _profile(rows: list[list[object]]) -> StorageProfile:
    runs: dict[tuple[str, str], tuple[list[list[float]], list[float]]] = {}
    for op, _t, size, n, tpn, rate, st in rows:
        x, r = runs.setdefault((str(op), str(st)), ([], []))
        x.append([float(n), float(tpn), float(1 << 20), float(size)])
        r.append(float(rate))
    return StorageProfile("hand", {k: (np.array(x), np.array(r)) for k, (x, r) in runs.items()})


ALL = [{"gen": a, "proc": b, "merge": c} for a in TIERS.names for b in TIERS.names
       for c in TIERS.names]


def test_a_scaled_prediction_scales_per_byte_costs_only():
    io = WF.io_data()
    flat = _profile(_rows(sizes=((64.0, 1.0),)))     # one size: rates do not depend on it
    one = predict(WF.template, io, flat, TIERS, 2, ALL, 1.0)
    half = predict(WF.template, io, flat, TIERS, 2, ALL, 0.5)
    assert [h.total for h in half] == pytest.approx([0.5 * o.total for o in one])
    # With slower small transfers, half the data takes more than half the time.
    sized = _profile(_rows())
    one, half = (predict(WF.template, io, sized, TIERS, 2, ALL, f) for f in (1.0, 0.25))
    assert all(h.total > 0.25 * o.total for h, o in zip(half, one, strict=True))


def _true_runs(profile: StorageProfile, scale: float) -> list[Measurement]:
    preds = predict(WF.template, WF.io_data(), profile, TIERS, 2, ALL, scale)
    return [Measurement(dict(p), 2, scale, pr.total, pr.levels)
            for p, pr in zip(ALL, preds, strict=True)]


def test_calibration_recovers_a_tier_three_times_slower():
    model = _profile(_rows())
    truth = corrected_profile(model, {("read", "disk"): 1 / 3, ("write", "disk"): 1 / 3})
    runs = _true_runs(truth, 0.5)
    cal = calibrate(WF.template, WF.io_data(), model, TIERS, runs)
    assert cal.error_before > 0.2         # the model's profile is far off
    fixed = corrected_profile(model, cal.factors)
    again = predict(WF.template, WF.io_data(), fixed, TIERS, 2, ALL, 0.5)
    for m, p in zip(runs, again, strict=True):
        assert p.total == pytest.approx(m.total, rel=0.03)
    assert cal.error_after < 0.03
    assert cal.factors[("read", "disk")] == pytest.approx(1 / 3, rel=0.05)
    assert cal.factors[("write", "disk")] == pytest.approx(1 / 3, rel=0.05)
    # Tiers the runs showed right stay (about) as they were.
    assert cal.factors[("read", "shm")] == pytest.approx(1.0, rel=0.05)


def _biased_runs() -> list[Measurement]:
    """Runs of the two placements with gen and proc on disk, whose disk reads are half
    the profile's, measured 4% slower than that truth, +-4% apart."""
    truth = corrected_profile(_profile(_rows()), {("read", "disk"): 0.5})
    few = [p for p in ALL if p["gen"] == p["proc"] == "disk"]
    runs = []
    for m in _true_runs(truth, 0.5):
        if m.placement in few:
            f = 1.04 + 0.04 * (-1) ** len(runs)
            runs.append(Measurement(m.placement, m.nodes, m.scale, m.total * f,
                                    [[x * f for x in lv] for lv in m.levels]))
    return runs


def test_a_rate_the_runs_hardly_use_stays_as_profiled(monkeypatch):
    runs = _biased_runs()
    assert len(runs) == 2
    cal = calibrate(WF.template, WF.io_data(), _profile(_rows()), TIERS, runs)
    # Shares: the model's time on each key's operations over the predicted time.
    assert cal.shares[("write", "disk")] > 0.3 and cal.shares[("read", "disk")] > 0.1
    assert cal.shares[("scp", "shm-shm")] == 0.0      # no fan-out in these placements
    assert ("scp", "shm-shm") not in cal.fitted and cal.factors[("scp", "shm-shm")] == 1.0
    assert cal.factors[("read", "disk")] == pytest.approx(0.5, rel=0.1)
    # merge reading on shm: half a percent of the time; the runs' bias and
    # noise do not set its rate.
    assert 0 < cal.shares[("read", "shm")] < 0.01
    assert cal.factors[("read", "shm")] == pytest.approx(1.0, abs=0.05)
    assert cal.at_limit == []
    # Pulled as hard as the rates the runs spend their time on, it would have been.
    import qos_plugin.planner.calibration as calibration
    monkeypatch.setattr(calibration, "MIN_SHARE", 0.0)
    loose = calibrate(WF.template, WF.io_data(), _profile(_rows()), TIERS, runs)
    assert abs(loose.factors[("read", "shm")] - 1) > 0.2


def test_a_tier_two_hundred_times_slower_is_at_the_limit():
    model = _profile(_rows())
    truth = corrected_profile(model, {("write", "disk"): 1 / 200})
    cal = calibrate(WF.template, WF.io_data(), model, TIERS, _true_runs(truth, 0.5))
    assert cal.factors[("write", "disk")] == pytest.approx(1 / 100, rel=1e-6)
    assert cal.at_limit == [("write", "disk")]


def test_daemon_bytes_check_the_volumes():
    placement = {"gen": "disk", "proc": "disk", "merge": "disk"}
    from qos_plugin.model.iodata import stage_volumes

    vol = stage_volumes(WF.io_data(), WF.template.stage_names)
    mib = expected_tier_mib(WF.template, TIERS, vol, placement, 2, 0.5)
    # All on the shared tier, no copies: each stage's reads and writes, halved.
    # gen 2 x (8 + 8), proc 2 x (8 + 4), merge 8 + 2 MiB.
    assert mib == {"disk": pytest.approx(0.5 * (32 + 24 + 10)), "shm": 0.0}
    ratios = byte_ratios(mib, {"disk": 2 * mib["disk"] * (1 << 20)})
    assert ratios == {"disk": pytest.approx(2.0)}
    assert volume_warnings(ratios) == ["tier disk: the daemons served 2.00x the bytes the "
                                       "model moves there"]
    assert volume_warnings(byte_ratios(mib, {"disk": mib["disk"] * (1 << 20)})) == []


# --- for real: train, validate, calibrate, validate again ---------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("calibrate")
    write_io_csv(WF.io_data(), d / "io.csv")
    (d / "tiny.json").write_text(json.dumps(template_to_dict(WF.template)))
    write_csv(d / "profile.csv", COLUMNS, _rows())
    reg = d / "registry"
    assert main(["train", "tiny", "--registry", str(reg), "--template", str(d / "tiny.json"),
                 "--io-data", str(d / "io.csv"), "--profile", str(d / "profile.csv"),
                 "--nodes", "1,2", "--tiers", "disk:shared,shm:node-local"]) == 0
    shm = Path(tempfile.mkdtemp(prefix="qos-validate-", dir="/dev/shm"))
    yield d, reg, shm
    shutil.rmtree(shm, ignore_errors=True)


def _validate(d, reg, shm, out, *extra):
    return ["validate", "tiny", "--registry", str(reg), "--nodes", "2", "--tier-dir",
            f"disk={d / 'disk'}", "--tier-dir", f"shm={shm}", "--scale", "0.25",
            "--out", str(out), "--json", *extra]


def test_stored_predictions_are_the_scale_one_predictions(trained):
    d, reg, _ = trained
    model = Registry(reg).load("tiny@1")
    rows = [r for r in range(len(model)) if model.nodes[r] == 2]
    again = predict(WF.template, WF.io_data(), _profile(_rows()), TIERS, 2,
                    [placement_of(model, r) for r in rows], 1.0, cost_nodes=[1, 2])
    for r, p in zip(rows, again, strict=True):
        s = stored_prediction(model, r)
        assert p.total == pytest.approx(s.total, rel=1e-12)
        assert np.ravel(p.levels) == pytest.approx(np.ravel(s.levels), rel=1e-12)


def test_validate_calibrate_validate(trained, capsys):
    d, reg, shm = trained
    before_dir = d / "before"
    assert main(_validate(d, reg, shm, before_dir)) == 0
    before = json.loads(capsys.readouterr().out)
    runs = json.loads((before_dir / "runs.json").read_text())
    assert runs["format"] == "qos-runs/1" and runs["version"] == 1
    # 2 tiers, 3 stages: all 8 placements at N=2 (at most 12: all), once each.
    assert len(runs["placements"]) == len(runs["runs"]) == 8
    assert (before_dir / "predicted-vs-measured.png").stat().st_size > 0
    assert json.loads((before_dir / "validation.json").read_text()) == before
    for key in ("concordance", "spearman", "median_relative_error", "max_relative_error",
                "predicted_best", "measured_best", "best_gap", "best_within"):
        assert key in before
    assert set(before["phases"]) == {"stage-in", "execution", "stage-out"}
    assert all(p["measured_seconds"] > 0 for p in before["placements"])

    assert main(["calibrate", "tiny", "--registry", str(reg), "--runs",
                 str(before_dir / "runs.json"), "--json"]) == 0
    cal = json.loads(capsys.readouterr().out)
    assert cal["version"] == 2 and Path(cal["profile"]).is_file()
    assert cal["median_error_after"] <= cal["median_error_before"]
    v2 = Registry(reg).load("tiny@2")
    src = v2.provenance["calibrated_from"]
    assert src["model"] == "tiny@1" and src["run_count"] == 8
    assert {(f["operation"], f["storage"]) for f in src["factors"]} == set(RATES)
    # All 8 placements at N = 2 ran: every rate changes some phase, and is fitted.
    assert all(f["fitted"] and f["share"] > 0 for f in cal["factors"])
    assert v2.provenance["inputs"]["profile"]["path"] == str(Path(cal["profile"]).resolve())

    # The calibrated model against the runs it was fitted to, then on new runs.
    assert main(_validate(d, reg, shm, d / "refit", "--runs",
                          str(before_dir / "runs.json"))) == 0
    refit = json.loads(capsys.readouterr().out)
    assert refit["version"] == 2
    assert refit["median_relative_error"] <= before["median_relative_error"]
    assert not (d / "refit" / "runs.json").exists()
    assert main(_validate(d, reg, shm, d / "after")) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["version"] == 2 and (d / "after" / "runs.json").is_file()
    assert 0 <= after["median_relative_error"] <= after["max_relative_error"]


def test_calibrate_refuses_a_profile_too_far_off(trained, tmp_path, capsys):
    # Real runs made 500 times slower: no factor within 1/100 fits them; the profile is
    # to be measured again, and nothing is trained.
    d, reg, shm = trained
    assert main(_validate(d, reg, shm, tmp_path / "v")) == 0
    capsys.readouterr()
    doc = json.loads((tmp_path / "v" / "runs.json").read_text())
    for rec in doc["runs"]:
        rec["total_seconds"] *= 500
        for lv in rec["levels"]:
            for ph in lv["phases"].values():
                if ph["launched"] is not None:
                    ph["returned"] = ph["launched"] + 500 * (ph["returned"] - ph["launched"])
    (tmp_path / "slow.json").write_text(json.dumps(doc))
    versions = sorted(p.name for p in (reg / "tiny").iterdir())
    assert main(["calibrate", "tiny", "--registry", str(reg), "--runs",
                 str(tmp_path / "slow.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qos-plan calibrate: error: --runs: the runs need ") and \
        "times its profiled rate" in err and "measure the profile again" in err
    assert err.count("\n") == 1
    assert sorted(p.name for p in (reg / "tiny").iterdir()) == versions


def test_calibrate_refuses_a_model_whose_profile_changed_since_training(trained, tmp_path,
                                                                        capsys):
    """A model's profile file rewritten since training (here its tiers' runs renamed away,
    which would leave calibration no rate to correct): calibrate refuses it in one line by
    its fingerprint, before fitting anything, and trains nothing."""
    d, reg, shm = trained
    assert main(_validate(d, reg, shm, tmp_path / "v")) == 0
    capsys.readouterr()
    own = tmp_path / "registry"
    profile = tmp_path / "profile.csv"
    write_csv(profile, COLUMNS, _rows())
    assert main(["train", "tiny", "--registry", str(own), "--template", str(d / "tiny.json"),
                 "--io-data", str(d / "io.csv"), "--profile", str(profile), "--nodes", "1,2",
                 "--tiers", "disk:shared,shm:node-local"]) == 0
    capsys.readouterr()
    write_csv(profile, COLUMNS, [[*r[:-1], f"other-{r[-1]}"] for r in _rows()])
    assert main(["calibrate", "tiny", "--registry", str(own), "--runs",
                 str(tmp_path / "v" / "runs.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qos-plan calibrate: error: tiny@1: its profile ") and \
        "changed since training" in err and "train it again" in err, err
    assert err.count("\n") == 1
    assert Registry(own).versions("tiny") == [1]


@pytest.mark.parametrize("args, says", [
    (["validate", "tiny", "--tier-dir", "disk=/nonexistent"], "no --nodes given"),
    (["validate", "tiny", "--nodes", "3"], "has no placement on 3 nodes"),
    (["validate", "tiny", "--nodes", "2", "--placements", "0"], "--placements"),
    (["validate", "tiny", "--nodes", "2", "--repeat", "x"], "--repeat"),
    (["validate", "tiny", "--nodes", "2", "--scale", "2"], "--scale"),
    (["validate", "tiny", "--nodes", "2"], "no directory for tier"),
    (["calibrate", "tiny", "--runs", "/nonexistent.json"], "/nonexistent.json"),
])
def test_bad_input_is_one_line(trained, tmp_path, capsys, args, says):
    _, reg, _ = trained
    assert main([*args, "--registry", str(reg), *([] if "--runs" in args else
                                                   ["--out", str(tmp_path / "out")])]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"qos-plan {args[0]}: error: ") and says in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_calibrate_refuses_runs_of_another_workflow(trained, tmp_path, capsys):
    _, reg, _ = trained
    (tmp_path / "runs.json").write_text(json.dumps(
        {"format": "qos-runs/1", "model": "other", "runs": [{}]}))
    assert main(["calibrate", "tiny", "--registry", str(reg), "--runs",
                 str(tmp_path / "runs.json")]) == 1
    err = capsys.readouterr().err
    assert "holds runs of model 'other'" in err and err.count("\n") == 1
    assert Registry(reg).versions("tiny")[-1] <= 2


def test_train_from_a_grid_profile_prices_what_each_phase_carries(tmp_path):
    # The CLI wires a grid profile's model to the carried prices (model/carried.py),
    # floored by the shared tier; the same file read by the published estimator
    # keeps the published rules, which charge these moves more.
    from qos_plugin.model.carried import carried_of
    from qos_plugin.model.costbuild import build_cost_table
    from qos_plugin.model.iodata import stage_volumes
    from qos_plugin.model.makespan import MakespanModel
    from qos_plugin.model.profile import load_profile

    write_io_csv(WF.io_data(), tmp_path / "io.csv")
    (tmp_path / "tiny.json").write_text(json.dumps(template_to_dict(WF.template)))
    totals = {}
    for estimator in ("grid", "qosflow"):
        prof = tmp_path / f"{estimator}.csv"
        write_csv(prof, [*COLUMNS, "estimator"], [[*r, estimator] for r in _rows()])
        reg = tmp_path / estimator
        assert main(["train", "tiny", "--registry", str(reg), "--template",
                     str(tmp_path / "tiny.json"), "--io-data", str(tmp_path / "io.csv"),
                     "--profile", str(prof), "--nodes", "1,2",
                     "--tiers", "disk:shared,shm:node-local"]) == 0
        totals[estimator] = sorted(Registry(reg).load("tiny@1").total)
        profile = load_profile(prof)
        io = WF.io_data()
        costs = build_cost_table(WF.template, io, profile, TIERS, [1, 2])
        carried = carried_of(profile, stage_volumes(io, WF.template.stage_names))
        assert (carried is None) == (estimator == "qosflow")
        want = MakespanModel(WF.template, costs, TIERS, carried=carried).evaluate([1, 2])
        assert totals[estimator] == pytest.approx(sorted(want.total.tolist()), rel=1e-12)
        if carried is not None:
            # Same rates, the published rules: they charge these placements more.
            published = MakespanModel(WF.template, costs, TIERS).evaluate([1, 2])
            assert published.total.sum() > 1.1 * want.total.sum()
