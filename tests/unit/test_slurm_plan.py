"""The sbatch planner helper on a model trained here (tiers "lustre" shared, "tmpfs"
and "nvme" node-local: nothing may depend on the local cluster's pfs/ram/ssd), with
site files written per test; and ``qos-slurm plan`` exit codes and output."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from qos_plugin.errors import InputError
from qos_plugin.planner.contract import deadline_stretch
from qos_plugin.planner.query import Answer, Constraints, answer, choice
from qos_plugin.planner.registry import Registry
from qos_plugin.planner.timespec import parse_duration
from qos_plugin.planner.trained import TrainedModel
from qos_plugin.slurm.cli import main as slurm_main
from qos_plugin.slurm.jobhooks import MiB, reservations
from qos_plugin.slurm.placement import Placement
from qos_plugin.slurm.plan import (
    Infeasible,
    Request,
    Unavailable,
    infeasible_text,
    new_id,
    parse_request,
    plan,
)
from qos_plugin.slurm.site import Site, load_site
from qos_plugin.slurm.staging import check_request, words_of

# (name, kind, read MiB/s, write MiB/s, latency) as localcluster.TIERS, our own names.
TIERS = (("lustre", "shared", 100.0, 80.0, 0.5), ("tmpfs", "node-local", 2000.0, 1500.0, 0.3),
         ("nvme", "node-local", 500.0, 300.0, 0.4))
LOCAL = {"tmpfs", "nvme"}
READS_INPUT = ("prep_a", "prep_b")           # the pipeline's first level
LAST = ("summary",)                          # ... and its last
PID = "q0123456789ab"


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    """The example pipeline trained for our tiers, once per module (about 3 s)."""
    from qos_plugin.cli.qos_plan import main as qos_plan
    from qos_plugin.examples.pipeline import pipeline, write_pipeline
    from qos_plugin.model.synthetic import TierModel

    root = tmp_path_factory.mktemp("trained")
    wf = pipeline([(n, k) for n, k, *_ in TIERS],
                  {n: TierModel(r, w, c) for n, _, r, w, c in TIERS}, scale=10.0)
    wf.move_mibps = 200.0
    # On 2 and 4 nodes: the cases below are about caps between them (on one node there
    # is no fan-out, and the pipeline would be fastest there).
    files = write_pipeline(wf, root / "model", [2, 4])
    rc = qos_plan(["train", "pipeline", "--template", str(files["template"]),
                   "--costs", str(files["costs"]), "--io-data", str(files["io"]),
                   "--nodes", "2,4", "--registry", str(root / "registry")])
    assert rc == 0
    return root / "registry"


@pytest.fixture(scope="module")
def model(registry) -> TrainedModel:
    return Registry(registry).load("pipeline")


def site_toml(tmp_path: Path, registry: Path, tiers=("lustre", "tmpfs", "nvme"),
              extra: str = "", tail: str = "") -> Path:
    kinds = {n: k for n, k, *_ in TIERS} | {"scratch": "shared"}
    daemons = {"lustre": '["io1:50051", "io2:50051", "io3:50051"]',
               "tmpfs": '["node1:50051"]', "nvme": '["node1:50051", "node2:50051"]',
               "scratch": "[]"}
    text = f'registry = "{registry}"\n{extra}'
    for t in tiers:
        text += (f'[tiers.{t}]\nkind = "{kinds[t]}"\npath = "{tmp_path / "tiers" / t}"\n'
                 f"daemons = {daemons[t]}\n")
        # Shared tiers through qosfs; tmpfs through its nodes' daemons; the rest direct.
        if t == "lustre":
            text += f'mount = "{tmp_path / "tiers" / t}"\n'
        if t == "tmpfs":
            text += f'enforce = "daemons"\nmount = "{tmp_path / "tiers" / t}"\n'
    p = tmp_path / "site.toml"
    p.write_text(text + tail)
    return p


def make_site(tmp_path: Path, registry: Path, **kw) -> Site:
    return load_site(site_toml(tmp_path, registry, **kw))


@pytest.fixture()
def site(tmp_path, registry) -> Site:
    return make_site(tmp_path, registry)


def req(**kw) -> Request:
    kw.setdefault("workflow", "pipeline")
    return parse_request(**kw)


def infeasible(site: Site, **kw) -> str:
    with pytest.raises(Infeasible) as e:
        plan(site, req(**kw), "alice")
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# --- parse_request ------------------------------------------------------------------

def test_parse_request_defaults_and_cleaning():
    r = parse_request("pipeline", "10:00", "4", " nvme , tmpfs ", None, "/usr/share", None)
    assert r == Request("pipeline", "10:00", 4, ("nvme", "tmpfs"), "frugal", "/usr/share", "")
    assert parse_request("pipeline", objective="fastest").objective == "fastest"


@pytest.mark.parametrize("kw, option, needle", [
    ({"workflow": None}, "--qos-workflow", "missing"),
    ({"workflow": ""}, "--qos-workflow", "missing"),
    ({"max_nodes": "0"}, "--qos-max-nodes", "'0' is not a node count"),
    ({"max_nodes": "zero"}, "--qos-max-nodes", "'zero' is not a node count"),
    ({"max_nodes": "-1"}, "--qos-max-nodes", "is not a node count"),
    ({"max_nodes": "2.5"}, "--qos-max-nodes", "is not a node count"),
    ({"max_nodes": "\u00b2"}, "--qos-max-nodes", "is not a node count"),  # isdigit, not int
    ({"deadline": "banana"}, "--qos-deadline", "'banana' is not a duration"),
    ({"deadline": "0:00"}, "--qos-deadline", "not a positive duration"),
    ({"deadline": "1:75"}, "--qos-deadline", "over 59"),
    ({"exclude": "nvme,,tmpfs"}, "--qos-exclude-tier", "has an empty tier name"),
    ({"exclude": ","}, "--qos-exclude-tier", "has an empty tier name"),
    ({"stage_in": "data/in"}, "--qos-stage-in", "is not an absolute path"),
    ({"stage_in": "/home/a/my data"}, "--qos-stage-in", "without blanks or commas"),
    ({"stage_out": "/home/a/x,y"}, "--qos-stage-out", "without blanks or commas"),
    ({"stage_in": "/nonexistent/in"}, "--qos-stage-in", "does not exist or you cannot read"),
    ({"keep": "no"}, "--qos-keep", "takes no value"),
])
def test_parse_request_refuses_bad_options(kw, option, needle):
    kw.setdefault("workflow", "pipeline")
    with pytest.raises(InputError) as e:
        parse_request(**kw)
    assert e.value.source == option and needle in str(e.value)


# --- feasible plans -----------------------------------------------------------------

def test_feasible_plan_places_every_stage_with_directories_per_used_tier(site, model):
    for objective in ("frugal", "fastest"):
        p = plan(site, req(objective=objective), "alice", PID)
        assert p.id == PID and p.workflow == f"pipeline@{model.version}"
        assert set(p.stages) == set(model.stages)
        used = set(p.stages.values())
        assert set(p.dirs) == used
        for t in used:
            assert p.dirs[t] == str(site.tiers[t].path / "alice" / PID)
        assert p.local == [t for t in p.dirs if t in LOCAL]
        assert p.deadline is None and p.makespan > 0


def test_new_ids_are_fresh_placement_ids(site):
    ids = {new_id() for _ in range(50)}
    assert len(ids) == 50 and all(re.fullmatch(r"q[0-9a-f]{12}", i) for i in ids)
    p = plan(site, req(), "alice")
    assert re.fullmatch(r"q[0-9a-f]{12}", p.id) and p.id in next(iter(p.dirs.values()))


def test_placement_travels_to_the_prolog_and_the_node_hooks(site):
    """to_env -> SPANK_ prefix -> from_env, and the node-local part the node prolog takes
    from it passes staging's checks for the same user (and not for another)."""
    p = plan(site, req(deadline="0:45", stage_in="/usr/share", stage_out="/home/alice/o"),
             "alice", PID)
    assert p.local, "a 45 s deadline needs a node-local tier"
    env = {"SPANK_" + k: v for k, v in p.to_env().items()}
    back = Placement.from_env(env, "SPANK_")
    assert back is not None and back.makespan == pytest.approx(p.makespan, abs=0.05)
    assert (back.stages, back.dirs, back.local, back.in_tiers, back.out_tiers, back.deadline) == \
        (p.stages, p.dirs, p.local, p.in_tiers, p.out_tiers, 45.0)
    words = words_of(back, site)
    rec = check_request(site, "5", "alice", 1001, 1001, words)
    assert rec.dirs == {t: p.dirs[t] for t in p.local} and rec.stage_in == "/usr/share"
    with pytest.raises(InputError, match="it must be"):
        check_request(site, "5", "bob", 1002, 1002, words)


def plans(site: Site, **kw):
    """Feasible placements over a spread of queries."""
    out = []
    for objective in ("frugal", "fastest"):
        for deadline in ("0:45", "1:00", "2:00", "3:00", "4:00", "5:00", "8:00", "11:00", None):
            for exclude in (None, "tmpfs", "nvme"):
                try:
                    out.append(plan(site, req(objective=objective, deadline=deadline,
                                              exclude=exclude, **kw), "alice", PID))
                except Infeasible:
                    pass
    return out


def test_in_and_out_tiers_are_the_tiers_of_the_first_and_last_stages(site):
    seen = set()
    for p in plans(site):
        want_in = list(dict.fromkeys(p.stages[s] for s in READS_INPUT))
        want_out = list(dict.fromkeys(p.stages[s] for s in LAST))
        assert p.in_tiers == want_in and p.out_tiers == want_out, p
        seen.add((bool(set(p.in_tiers) & LOCAL), bool(set(p.out_tiers) & LOCAL),
                  bool(p.local)))
    # The spread covers: all shared; local used but neither staged in nor out; staged in
    # only; staged in and out.
    assert {(False, False, False), (False, False, True), (True, False, True),
            (True, True, True)} <= seen


def test_bandwidth_is_the_total_for_shared_tiers_and_per_node_for_node_local(site, model):
    checked_multi_node = False
    for objective, deadline, exclude in (("fastest", None, None), ("frugal", "4:00", None),
                                         ("frugal", "7:00", "tmpfs,nvme")):
        p = plan(site, req(objective=objective, deadline=deadline, exclude=exclude), "alice")
        ans = answer(model, Constraints(deadline=p.deadline, objective=objective,
                                        exclude=frozenset(exclude.split(",") if exclude
                                                          else ())))
        assert ans.choice is not None and ans.choice.tiers == p.stages
        bw = ans.bandwidth or {}
        # every tier the job moves data on, also the shared tier a node-local
        # placement stages from, which has no directory of its own
        assert set(p.bandwidth) == set(bw) and set(p.dirs) <= set(bw)
        # The reservation is the contract's peak lowered by the deadline's slack.
        stretch = deadline_stretch(ans.choice.makespan, p.deadline)
        for t, mibps in p.bandwidth.items():
            key = "per_node_mib_per_s" if t in LOCAL else "mib_per_s"
            assert mibps == pytest.approx(float(bw[t][key]) / stretch)
            assert mibps == pytest.approx(float(bw[t]["mib_per_s"]) / stretch
                                          / (p.nodes if t in LOCAL else 1), rel=1e-3)
        checked_multi_node |= p.nodes > 1
    assert checked_multi_node


def test_reservations_from_a_plan(tmp_path, registry):
    """Shared: the total split over its daemons; node-local (enforced): the per-node rate
    on each of the job's nodes' daemons; a tier used directly: nothing."""
    site = make_site(tmp_path, registry, tail=(
        '[nodes.c1]\ndaemon = "c1:50051"\n[nodes.c2]\ndaemon = "c2:50051"\n'
        '[nodes.c3]\ndaemon = "c3:50051"\n'))
    p = plan(site, req(objective="fastest"), "alice")          # 4 nodes, all tmpfs
    assert p.nodes == 4 and p.local == ["tmpfs"]
    got = reservations(site, p, ["c1", "c3"])
    assert ("c1:50051", "tmpfs", p.bandwidth["tmpfs"] * MiB) in got
    assert ("c3:50051", "tmpfs", p.bandwidth["tmpfs"] * MiB) in got
    assert not [d for d, t, _ in got if d == "c2:50051"]
    # the stage-in from lustre is reserved too, split over lustre's daemons
    assert sorted(d for d, t, _ in got if t == "lustre") == ["io1:50051", "io2:50051",
                                                            "io3:50051"]
    p = plan(site, req(deadline="7:00", exclude="tmpfs,nvme"), "alice")  # lustre, 4 nodes
    assert p.nodes == 4 and list(p.dirs) == ["lustre"]
    got = reservations(site, p)
    assert [d for d, _, _ in got] == ["io1:50051", "io2:50051", "io3:50051"]
    assert all(b == pytest.approx(p.bandwidth["lustre"] * MiB / 3) for _, _, b in got)


def test_site_without_a_tier_never_places_on_it(tmp_path, registry):
    site = make_site(tmp_path, registry, tiers=("lustre", "nvme", "scratch"))
    got = plans(site) + plans(site, max_nodes="1")
    assert got and any("nvme" in p.local for p in got)
    for p in got:
        assert "tmpfs" not in p.stages.values() and "tmpfs" not in p.dirs
    # Not even when it is the only way to meet the deadline; and the answer does not
    # suggest the missing tier either.
    msg = infeasible(site, deadline="0:45")
    assert "tmpfs" not in msg and "without --qos-exclude-tier" not in msg
    assert "closest:" in msg and "nvme" in msg


def test_site_max_nodes_caps_the_query(tmp_path, registry, site):
    assert plan(site, req(objective="fastest"), "alice").nodes == 4
    capped = make_site(tmp_path, registry, extra="max_nodes = 2\n")
    assert plan(capped, req(objective="fastest"), "alice").nodes == 2
    assert plan(capped, req(objective="fastest", max_nodes="4"), "alice").nodes == 2
    # The model has no placement on one node: the user's cap is named as what binds.
    with pytest.raises(Infeasible, match=r"runs on at most 1 nodes \(--qos-max-nodes\)"):
        plan(capped, req(objective="fastest", max_nodes="1"), "alice")


def test_infeasible_deadline_names_it_the_closest_and_a_deadline_that_works(site, model):
    # 40 s on at most 2 nodes: the closest takes 40.5 s, which rounds DOWN to 40.
    msg = infeasible(site, deadline="0:40", max_nodes="2")
    assert msg.startswith(f"qos: no placement of pipeline v{model.version} meets "
                          "--qos-deadline=00:00:40 (")
    assert re.search(r"closest: \d\d:\d\d:\d\d on 2 nodes \(prep_a=\w+ .*\), 00:00:01 late",
                     msg), msg
    closest = answer(model, Constraints(deadline=40, max_nodes=2, objective="frugal")).closest
    assert closest is not None and round(closest.makespan) == 40     # the trap
    suggested = re.search(r"--qos-deadline=(\d\d:\d\d:\d\d) would work", msg)
    assert suggested, msg
    seconds = parse_duration(suggested.group(1))
    assert seconds == math.ceil(closest.makespan) == 41
    # ... and the advice holds.
    p = plan(site, req(deadline=suggested.group(1), max_nodes="2"), "alice")
    assert p.makespan <= seconds and p.deadline == seconds
    # The user's own cap is named as what to drop, with what that would give.
    assert re.search(r"without --qos-max-nodes: 00:00:38 on 4 nodes", msg), msg


def test_suggestions_stay_within_the_cluster(tmp_path, registry):
    capped = make_site(tmp_path, registry, extra="max_nodes = 2\n")
    for user_cap in (None, "4"):
        kw = {"max_nodes": user_cap} if user_cap else {}
        msg = infeasible(capped, deadline="0:40", **kw)
        assert "on 4 nodes" not in msg and "without --qos-max-nodes" not in msg, msg
        suggested = re.search(r"--qos-deadline=(\d\d:\d\d:\d\d) would work", msg)
        assert suggested, msg
        plan(capped, req(deadline=suggested.group(1), **kw), "alice")     # feasible


def test_excluding_tiers_can_leave_nothing(site):
    msg = infeasible(site, deadline="1:00", exclude="tmpfs,nvme")
    assert "meets --qos-deadline=00:01:00" in msg
    assert re.search(r"without --qos-exclude-tier: \d\d:\d\d:\d\d on", msg), msg


def test_unknown_exclude_tier_names_the_option_and_the_known_tiers(site):
    for name in ("pfs", "ram", "ssd", "scratch"):
        with pytest.raises(InputError) as e:
            plan(site, req(exclude=f"nvme,{name}"), "alice")
        assert e.value.source == "--qos-exclude-tier"
        assert f"unknown tier {name!r}" in str(e.value)
        assert "uses tiers: lustre, tmpfs, nvme" in str(e.value)


def test_bad_objective_and_unknown_workflow_name_the_sbatch_option(site):
    with pytest.raises(InputError) as e:
        plan(site, req(objective="cheapest"), "alice")
    assert e.value.source == "--qos-objective" and "cheapest" in str(e.value)
    with pytest.raises(InputError) as e:
        plan(site, req(workflow="nosuch"), "alice")
    assert e.value.source == "--qos-workflow" and "nosuch" in str(e.value)


def test_missing_registry_is_unavailable(tmp_path):
    site = make_site(tmp_path, tmp_path / "no-registry")
    with pytest.raises(Unavailable) as e:
        plan(site, req(), "alice")
    assert str(e.value).startswith("planner unavailable: model registry")
    assert str(tmp_path / "no-registry") in str(e.value)


def test_infeasible_text_names_who_set_the_binding_cap(model):
    row = model.nodes.index(2)
    c = Constraints(max_nodes=1)

    def text(binding, site_cap, user_cap, relaxations=None):
        ans = Answer(feasible=False, constraints=c, binding=binding,
                     closest=choice(model, row), relaxations=relaxations or {})
        return infeasible_text(model, ans, site_cap, user_cap)

    assert "runs on at most 1 nodes (the cluster's limit)" in text("max_nodes", 1, None)
    assert "runs on at most 1 nodes (the cluster's limit)" in text("max_nodes", 1, 3)
    assert "runs on at most 1 nodes (--qos-max-nodes)" in text("max_nodes", None, 1)
    assert "runs on at most 1 nodes (--qos-max-nodes)" in text("max_nodes", 4, 1)
    assert "excluded tiers are removed (--qos-exclude-tier)" in text("exclude", None, None)
    assert "closest: " in text("exclude", None, None)
    other = choice(model, model.nodes.index(4))
    assert "without --qos-max-nodes" not in text("max_nodes", 1, None, {"max_nodes": other})
    assert "without --qos-max-nodes: " in text("max_nodes", None, 1, {"max_nodes": other})


# --- qos-slurm plan -----------------------------------------------------------------

def run(capsys, *argv: str) -> tuple[int, list[str]]:
    code = slurm_main(list(argv))
    return code, capsys.readouterr().out.splitlines()


def test_cli_plan_prints_the_placement(tmp_path, registry, capsys):
    conf = site_toml(tmp_path, registry)
    code, lines = run(capsys, "--site", str(conf), "plan", "--workflow", "pipeline",
                      "--deadline", "0:45", "--user", "alice", "--stage-in", "/usr/share")
    assert code == 0
    assert all(re.fullmatch(r"QOS_[A-Z0-9_]+=.*", ln) for ln in lines), lines
    env = dict(ln.split("=", 1) for ln in lines)
    p = Placement.from_env(env)
    assert p is not None and p.deadline == 45.0 and p.stage_in == "/usr/share"
    assert all(d.startswith(str(tmp_path / "tiers")) and f"/alice/{p.id}" in d
               for d in p.dirs.values())
    for t, d in p.dirs.items():
        assert env[f"QOS_DIR_{t.upper()}"] == d


def test_cli_plan_user_defaults_to_the_caller(tmp_path, registry, capsys, monkeypatch):
    monkeypatch.setenv("QOS_SITE_CONFIG", str(site_toml(tmp_path, registry)))
    code, lines = run(capsys, "plan", "--workflow", "pipeline")
    assert code == 0
    p = Placement.from_env(dict(ln.split("=", 1) for ln in lines))
    assert p is not None and all(f"/root/{p.id}" in d for d in p.dirs.values())


@pytest.mark.parametrize("argv, needle", [
    (["--max-nodes", "zero"], "qos: --qos-max-nodes: 'zero' is not a node count"),
    (["--deadline", "banana"], "qos: --qos-deadline: 'banana' is not a duration"),
    (["--exclude-tier", "ssd"], "qos: --qos-exclude-tier: unknown tier 'ssd'"),
    (["--objective", "cheapest"], "qos: --qos-objective: unknown objective 'cheapest'"),
])
def test_cli_plan_bad_input_is_exit_1_and_one_line(tmp_path, registry, capsys, argv, needle):
    conf = site_toml(tmp_path, registry)
    code, lines = run(capsys, "--site", str(conf), "plan", "--workflow", "pipeline", *argv)
    assert code == 1 and len(lines) == 1 and lines[0].startswith(needle), lines


def test_cli_plan_unknown_workflow_and_missing_workflow(tmp_path, registry, capsys):
    conf = str(site_toml(tmp_path, registry))
    code, lines = run(capsys, "--site", conf, "plan", "--workflow", "nosuch")
    assert code == 1 and len(lines) == 1 and lines[0].startswith("qos: --qos-workflow: ")
    code, lines = run(capsys, "--site", conf, "plan")
    assert code == 1 and len(lines) == 1 and "--qos-workflow: missing" in lines[0]


def test_cli_plan_unknown_option_is_exit_1_on_stdout(capsys):
    with pytest.raises(SystemExit) as e:
        slurm_main(["plan", "--workflow", "pipeline", "--bogus"])
    assert e.value.code == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("qos: ") and "--bogus" in out[0]


def test_cli_plan_infeasible_is_exit_3(tmp_path, registry, capsys):
    conf = site_toml(tmp_path, registry)
    code, lines = run(capsys, "--site", str(conf), "plan", "--workflow", "pipeline",
                      "--deadline", "0:30")
    assert code == 3 and len(lines) == 1
    assert lines[0].startswith("qos: no placement of pipeline") and "closest:" in lines[0]
    assert "--qos-deadline=00:00:30" in lines[0]


def test_cli_plan_unavailable_is_exit_4(tmp_path, capsys):
    conf = site_toml(tmp_path, tmp_path / "no-registry")
    code, lines = run(capsys, "--site", str(conf), "plan", "--workflow", "pipeline")
    assert code == 4 and len(lines) == 1
    assert lines[0].startswith("planner unavailable: model registry")
    missing = tmp_path / "nope.toml"
    code, lines = run(capsys, "--site", str(missing), "plan", "--workflow", "pipeline")
    assert code == 4 and len(lines) == 1
    assert lines[0].startswith(f"planner unavailable: {missing}: cannot read the site")
    (tmp_path / "bad.toml").write_text("registry = \n")
    code, lines = run(capsys, "--site", str(tmp_path / "bad.toml"), "plan", "--workflow", "x")
    assert code == 4 and "not valid TOML" in lines[0] and len(lines) == 1


def test_cli_plan_checks_the_options_before_the_site(tmp_path, capsys):
    code, lines = run(capsys, "--site", str(tmp_path / "nope.toml"), "plan", "--workflow",
                      "pipeline", "--max-nodes", "0")
    assert code == 1 and lines[0].startswith("qos: --qos-max-nodes")


def test_the_prolog_reserves_the_models_rates_not_the_jobs(site):
    """The placement reaches the prolog through the job's environment, which a user can
    write: the rates are recomputed from the model, and a placement the model does not
    have is refused."""
    from qos_plugin.errors import QosPluginError
    from qos_plugin.slurm.jobhooks import trusted_bandwidth

    for objective, exclude in (("fastest", None), ("frugal", "tmpfs,nvme")):
        p = plan(site, req(objective=objective, deadline="7:00", exclude=exclude), "alice")
        honest = dict(p.bandwidth)
        p.bandwidth = {t: 1e6 for t in honest}                # a forged environment
        full, most = trusted_bandwidth(site, p)
        assert {t: r / most for t, r in full.items()} == pytest.approx(honest)
        # the deadline "7:00" leaves slack: the contract in full is that much more
        assert most >= 1.0 and all(full[t] >= honest[t] for t in honest)
    p.stages = {s: "tmpfs" for s in p.stages}
    p.nodes = 3                                               # the model has 1, 2, 4
    with pytest.raises(QosPluginError, match="has no placement"):
        trusted_bandwidth(site, p)
    p.stages = {"prep_a": "tmpfs"}
    with pytest.raises(QosPluginError, match="are not a placement of"):
        trusted_bandwidth(site, p)


def test_the_planner_passes_over_placements_whose_needs_a_tier_cannot_hold(tmp_path,
                                                                          registry):
    """A site that says what its enforced tiers sustain gets the best placement whose
    reservations fit, rather than the best one refused at admission; nothing fits: one
    line that says so."""
    from dataclasses import replace

    site = make_site(tmp_path, registry)
    ask = {"objective": "fastest", "exclude": "tmpfs,nvme"}
    free = plan(site, req(**ask), "alice")
    need = free.bandwidth["lustre"]
    site.tiers["lustre"] = replace(site.tiers["lustre"], bandwidth=0.9 * need * MiB)
    held = plan(site, req(**ask), "alice")
    assert held.bandwidth["lustre"] <= 0.9 * need * (1 + 1e-9)
    assert (held.nodes, held.stages) != (free.nodes, free.stages)
    assert held.makespan >= free.makespan
    site.tiers["lustre"] = replace(site.tiers["lustre"], bandwidth=1.0)
    msg = infeasible(site, **ask)
    assert "needs no more than its tiers sustain (lustre 0.0 MiB/s)" in msg
