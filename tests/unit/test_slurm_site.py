"""The Slurm side's pure pieces: the site configuration, the placement as environment
variables, how a placement's bandwidth becomes reservations on the daemons, and the
small Slurm client (parsing and backend choice; no Slurm runs here)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from qos_plugin.errors import InputError
from qos_plugin.slurm import slurmapi
from qos_plugin.slurm.jobhooks import MiB, reservations
from qos_plugin.slurm.placement import Placement, env_name, rule_text
from qos_plugin.slurm.site import ENV_SITE, load_site, parse_size, site_from_dict
from qos_plugin.slurm.slurmapi import (
    CommandBackend,
    PySlurmBackend,
    SlurmError,
    job_from_fields,
    parse_scontrol_line,
    pyslurm_matches,
    slurm_client,
)

GOOD = """\
registry = "/srv/models"
on_unavailable = "closed"
max_nodes = 16
admin_token_file = "{tok}"
state_dir = "/srv/state"

[tiers.lustre]
kind = "shared"
path = "/lustre/qos"
daemons = ["10.0.0.1:50051", "10.0.0.2:50051"]
capacity = "100TiB"

[tiers.nvme]
kind = "node-local"
path = "/local/nvme"
daemons = ["node1:50051"]
capacity = "1.5TB"

[tiers.tmpfs]
kind = "node-local"
path = "/dev/shm/qos"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "site.toml"
    p.write_text(text)
    return p


# --- the site configuration ---------------------------------------------------------

def test_good_site_loads_every_field(tmp_path):
    site = load_site(write(tmp_path, GOOD.format(tok=tmp_path / "tok")))
    assert site.registry == Path("/srv/models")
    assert site.on_unavailable == "closed" and site.max_nodes == 16
    assert site.admin_token_file == tmp_path / "tok" and site.state_dir == Path("/srv/state")
    assert list(site.tiers) == ["lustre", "nvme", "tmpfs"]
    lustre, nvme, tmpfs = site.tiers.values()
    assert (lustre.kind, lustre.is_local, lustre.path) == ("shared", False, Path("/lustre/qos"))
    assert lustre.daemons == ("10.0.0.1:50051", "10.0.0.2:50051")
    assert lustre.capacity == 100 * 2**40
    assert nvme.is_local and nvme.capacity == 1_500_000_000_000
    assert tmpfs.is_local and tmpfs.daemons == () and tmpfs.capacity is None


def test_defaults_and_the_environment_variable(tmp_path, monkeypatch):
    p = write(tmp_path, 'registry = "/r"\n[tiers.scratch]\nkind = "shared"\npath = "/s"\n')
    monkeypatch.setenv(ENV_SITE, str(p))
    site = load_site()
    assert site.source == p
    assert site.on_unavailable == "open" and site.max_nodes is None
    assert site.admin_token_file is None and site.admin_token() is None
    assert site.state_dir == Path("/var/lib/qos-plugin")


def test_admin_token_is_read_and_stripped_and_a_missing_file_is_one_line(tmp_path):
    tok = tmp_path / "tok"
    site = load_site(write(tmp_path, GOOD.format(tok=tok)))
    tok.write_text("  s3cret\n")
    assert site.admin_token() == "s3cret"
    tok.write_text("\n")
    assert site.admin_token() is None
    tok.unlink()
    with pytest.raises(InputError) as e:
        site.admin_token()
    assert "cannot read admin_token_file" in str(e.value) and str(tok) in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_tier_names_the_known_ones_and_the_option(tmp_path):
    site = load_site(write(tmp_path, GOOD.format(tok="/t")))
    assert site.tier("nvme").path == Path("/local/nvme")
    with pytest.raises(InputError) as e:
        site.tier("pfs")
    msg = str(e.value)
    assert "tier 'pfs' is not configured" in msg
    assert "known tiers: lustre, nvme, tmpfs" in msg and "--qos-exclude-tier" in msg


TIER = '[tiers.nvme]\nkind = "node-local"\npath = "/nvme"\n'


@pytest.mark.parametrize("text, needles", [
    ('registry = "/r"\ncolour = "red"\n' + TIER, ["unknown key 'colour'", "known keys:"]),
    ('registry = "/r"\n' + TIER + 'capcity = "1TiB"\n',
     ["[tiers.nvme]", "unknown key 'capcity'", "capacity, daemons, enforce, kind, mount, path"]),
    (TIER, ["no registry", "add registry"]),
    ('registry = 5\n' + TIER, ["registry = 5 is not a str"]),
    ('registry = "/r"\n[tiers.nvme]\nkind = "local"\npath = "/nvme"\n',
     ["[tiers.nvme]", "kind = 'local'", '"shared" or "node-local"']),
    ('registry = "/r"\n[tiers.nvme]\npath = "/nvme"\n', ["kind = None"]),
    ('registry = "/r"\n[tiers.nvme]\nkind = "shared"\npath = "scratch/qos"\n',
     ["path = 'scratch/qos'", "absolute"]),
    ('registry = "/r"\n[tiers.nvme]\nkind = "shared"\n', ["path = None", "absolute"]),
    ('registry = "/r"\non_unavailable = "maybe"\n' + TIER,
     ["on_unavailable = 'maybe'", '"open" or "closed"']),
    ('registry = "/r"\nmax_nodes = 0\n' + TIER, ["max_nodes = 0", "give 1 or more"]),
    ('registry = "/r"\nmax_nodes = -3\n' + TIER, ["max_nodes = -3", "give 1 or more"]),
    ('registry = "/r"\nmax_nodes = "4"\n' + TIER, ["max_nodes = '4' is not a int"]),
    ('registry = "/r"\nmax_nodes = true\n' + TIER, ["max_nodes = True is not a int"]),
    ('registry = "/r"\n' + TIER + 'capacity = "lots"\n',
     ["[tiers.nvme] capacity", "'lots' is not a size", "500GiB"]),
    ('registry = "/r"\n' + TIER + 'capacity = "12XB"\n', ["'12XB' is not a size"]),
    ('registry = "/r"\n' + TIER + 'capacity = "-1GB"\n', ["'-1GB' is not a size"]),
    ('registry = "/r"\n' + TIER + 'daemons = "node1:50051"\n',
     ["daemons = 'node1:50051' is not a list"]),
    ('registry = "/r"\n' + TIER + 'daemons = ["node1"]\n', ['"host:port"']),
    ('registry = "/r"\n', ["no tiers", "[tiers.NAME]"]),
    ('registry = "/r"\n[tiers]\n', ["no tiers"]),
    ('registry = "/r"\ntiers = "nvme"\n', ["tiers = 'nvme' is not a dict"]),
    ('registry = "/r"\n[tiers.9lives]\nkind = "shared"\npath = "/x"\n',
     ["'9lives' is not a tier table with a valid name"]),
    ('registry = "/r"\n[tiers]\nnvme = "fast"\n', ["'nvme' is not a tier table"]),
    ('registry = "/r"\n[tiers.nvme\n', ["not valid TOML", "fix the syntax"]),
    ("this is not toml\n", ["not valid TOML"]),
])
def test_every_bad_value_is_one_line_naming_it(tmp_path, text, needles):
    p = write(tmp_path, text)
    with pytest.raises(InputError) as e:
        load_site(p)
    msg = str(e.value)
    assert msg.startswith(str(p)) and "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


def test_missing_site_file_says_how_to_point_at_one(tmp_path):
    with pytest.raises(InputError) as e:
        load_site(tmp_path / "nope.toml")
    msg = str(e.value)
    assert "cannot read the site configuration" in msg and ENV_SITE in msg
    assert "\n" not in msg


def test_site_from_dict_names_its_source():
    site = site_from_dict({"registry": "/r", "tiers": {"a": {"kind": "shared", "path": "/a"}}},
                          Path("/etc/x.toml"))
    assert site.source == Path("/etc/x.toml") and site.tier("a").kind == "shared"


@pytest.mark.parametrize("text, size", [
    ("4096", 4096), ("500GiB", 500 * 2**30), ("2TB", 2 * 10**12), ("1.5 KiB", 1536),
    ("10g", 10 * 10**9), ("3MiB", 3 * 2**20), ("1P", 10**15), ("0", 0),
])
def test_parse_size(text, size):
    assert parse_size(text, "x") == size


@pytest.mark.parametrize("text", ["", "GiB", "1.2.3GB", "5 ZiB", "ten"])
def test_parse_size_refuses(text):
    with pytest.raises(InputError, match="is not a size"):
        parse_size(text, "x")


# --- the placement as environment variables -----------------------------------------

def placement(**kw) -> Placement:
    base = dict(id="q0123456789ab", workflow="pipeline@3", nodes=2, makespan=123.4, region=7,
                rule="prep_a in {nvme,tmpfs} nodes=2",
                stages={"prep_a": "nvme", "prep-b": "lustre", "analyze": "nvme"},
                dirs={"lustre": "/lustre/alice/q0123456789ab",
                      "nvme": "/local/nvme-1/alice/q0123456789ab"},
                local=["nvme"], bandwidth={"lustre": 250.5, "nvme": 1000.0}, deadline=600.0,
                stage_in="/home/alice/in", stage_out="/home/alice/out", in_tiers=["nvme"],
                out_tiers=["nvme"])
    base.update(kw)
    return Placement(**base)


@pytest.mark.parametrize("prefix", ["", "SPANK_", "SLURM_SPANK_"])
def test_placement_round_trips_through_the_environment(prefix):
    p = placement()
    env = {prefix + k: v for k, v in p.to_env().items()}
    env["UNRELATED"] = "x"
    assert Placement.from_env(env, prefix) == p


def test_to_env_writes_the_documented_variables():
    env = placement().to_env()
    assert env["QOS_ID"] == "q0123456789ab" and env["QOS_NODES"] == "2"
    assert env["QOS_STAGES"] == "prep_a=nvme,prep-b=lustre,analyze=nvme"
    assert env["QOS_LOCAL"] == "nvme" and env["QOS_DEADLINE"] == "600"
    assert env["QOS_BANDWIDTH"] == "lustre=250.500,nvme=1000.000"
    assert env["QOS_DIR_NVME"] == "/local/nvme-1/alice/q0123456789ab"
    assert env["QOS_STAGE_PREP_B"] == "lustre:/lustre/alice/q0123456789ab"
    assert env["QOS_STAGE_ANALYZE"] == "nvme:/local/nvme-1/alice/q0123456789ab"
    assert env["QOS_IN_TIERS"] == "nvme" and env["QOS_OUT_TIERS"] == "nvme"


def test_optional_fields_are_absent_and_come_back_empty():
    p = placement(deadline=None, stage_in="", stage_out="", local=[], in_tiers=[],
                  out_tiers=[], bandwidth={}, stages={"prep_a": "lustre"},
                  dirs={"lustre": "/lustre/alice/q0123456789ab"})
    env = p.to_env()
    assert not {"QOS_DEADLINE", "QOS_STAGE_IN", "QOS_STAGE_OUT"} & set(env)
    assert Placement.from_env(env) == p


def test_no_placement_without_qos_id():
    env = {k: v for k, v in placement().to_env().items() if k != "QOS_ID"}
    assert Placement.from_env(env) is None
    # ... and the prefix matters: unprefixed variables are not the prolog's.
    assert Placement.from_env(placement().to_env(), "SPANK_") is None


@pytest.mark.parametrize("key, value, needle", [
    ("QOS_WORKFLOW", None, "SPANK_QOS_WORKFLOW: missing"),
    ("QOS_NODES", "two", "malformed placement"),
    ("QOS_BANDWIDTH", "nvme=fast", "malformed placement"),
    ("QOS_DIRS", "lustre", "'lustre' is not name=value"),
    ("QOS_STAGES", "=nvme", "'=nvme' is not name=value"),
])
def test_damaged_placement_is_an_input_error(key, value, needle):
    env = {"SPANK_" + k: v for k, v in placement().to_env().items()}
    if value is None:
        del env["SPANK_" + key]
    else:
        env["SPANK_" + key] = value
    with pytest.raises(InputError) as e:
        Placement.from_env(env, "SPANK_")
    assert needle in str(e.value)


def test_env_name_and_rule_text():
    assert env_name("nvme-1.fast") == "NVME_1_FAST"
    assert rule_text({"nodes": "1", "s00": "tmpfs", "s01": "lustre,nvme"}) == \
        "nodes=1 s00=tmpfs s01 in {lustre,nvme}"


# --- reservations: how a tier's bandwidth is split over its daemons ------------------

def test_shared_tier_is_split_and_node_local_goes_to_the_jobs_own_nodes():
    site = site_from_dict({"registry": "/r", "tiers": {
        "lustre": {"kind": "shared", "path": "/l", "mount": "/q/l",
                   "daemons": ["a:1", "b:1", "c:1", "d:1"]},
        "nvme": {"kind": "node-local", "path": "/n", "enforce": "daemons", "mount": "/q/n"},
        "tmpfs": {"kind": "node-local", "path": "/t"},                  # used directly
        "scratch": {"kind": "shared", "path": "/s", "daemons": ["f:1"]},  # direct: no mount
        "burst": {"kind": "shared", "path": "/b", "mount": "/q/b", "daemons": ["e:1"]}},
        "nodes": {"n1": {"daemon": "n1:1"}, "n2": {"daemon": "n2:1"},
                  "n3": {"daemon": "n3:1"}}}, Path("/s"))
    assert site.tiers["lustre"].enforced and not site.tiers["tmpfs"].enforced
    assert not site.tiers["scratch"].enforced and site.tiers["nvme"].enforced
    assert site.tiers["lustre"].job_root == Path("/q/l") and \
        site.tiers["tmpfs"].job_root == Path("/t")
    p = placement(bandwidth={"lustre": 400.0, "nvme": 100.0, "tmpfs": 50.0, "burst": 0.0,
                             "scratch": 10.0})
    got = reservations(site, p, ["n1", "n3"])
    assert sorted(got) == sorted([("a:1", "lustre", 100 * MiB), ("b:1", "lustre", 100 * MiB),
                                  ("c:1", "lustre", 100 * MiB), ("d:1", "lustre", 100 * MiB),
                                  ("n1:1", "nvme", 100 * MiB), ("n3:1", "nvme", 100 * MiB)])
    assert sum(b for _, t, b in got if t == "lustre") == 400 * MiB


@pytest.mark.parametrize("tiers, needle", [
    ({"p": {"kind": "shared", "path": "/p", "enforce": "daemons", "daemons": ["a:1"]}},
     "needs mount and daemons"),
    ({"p": {"kind": "shared", "path": "/p", "mount": "/q", "enforce": "daemons"}},
     "needs mount and daemons"),
    ({"p": {"kind": "node-local", "path": "/p", "enforce": "daemons"}}, "needs mount"),
    ({"p": {"kind": "shared", "path": "/p", "enforce": "kernel"}}, "enforce = 'kernel'"),
    ({"p": {"kind": "shared", "path": "/p", "mount": "rel", "daemons": ["a:1"]}},
     "mount = 'rel'"),
])
def test_enforced_tiers_need_their_mount_and_daemons(tiers, needle):
    with pytest.raises(InputError, match=needle):
        site_from_dict({"registry": "/r", "tiers": tiers}, Path("/s"))


def test_nodes_table_names_each_nodes_daemon():
    base = {"registry": "/r", "tiers": {"p": {"kind": "shared", "path": "/p"}}}
    for nodes, needle in (({"n1": {"daemon": "nohost"}}, "write \"host:port\""),
                          ({"n1": {"daemon": "a:1", "x": 1}}, "a table with a daemon key"),
                          ({"n1": "a:1"}, "a table with a daemon key")):
        with pytest.raises(InputError, match=needle):
            site_from_dict({**base, "nodes": nodes}, Path("/s"))


def test_reservation_on_a_tier_the_site_lacks_is_an_input_error():
    site = site_from_dict({"registry": "/r", "tiers": {
        "lustre": {"kind": "shared", "path": "/l", "daemons": ["a:1"]}}}, Path("/s"))
    with pytest.raises(InputError, match="tier 'nvme' is not configured"):
        reservations(site, placement(bandwidth={"lustre": 1.0, "nvme": 2.0}))


# --- the Slurm client ---------------------------------------------------------------

LINE = ("JobId=42 JobName=my job UserId=alice(1001) GroupId=alice(1001) Priority=4294901758 "
        "JobState=PENDING Reason=BurstBufferStageIn Dependency=(null) NumNodes=2-4 "
        "NumCPUs=2 Socks/Node=* ReqB:S:C:T=0:0:*:* TimeLimit=00:10:00 "
        "Comment=qos q0123456789ab: pipeline@1 region 3 (prep_a=nvme nodes=2), predicted 44s "
        "BurstBuffer=#BB_LUA qos id=q0123456789ab dirs=NVMe=/n/alice/q0123456789ab in=NVMe "
        "out= stage_in=/home/alice/in Power= Command=/home/alice/job.sh a b")


def test_parse_scontrol_line_keeps_blanks_inside_values():
    f = parse_scontrol_line(LINE)
    assert f["JobId"] == "42" and f["JobName"] == "my job"
    assert f["Socks/Node"] == "*" and f["ReqB:S:C:T"] == "0:0:*:*"
    assert f["Comment"] == ("qos q0123456789ab: pipeline@1 region 3 (prep_a=nvme nodes=2), "
                            "predicted 44s")
    # A capitalised tier name after '=' is part of the value, not a new field.
    assert f["BurstBuffer"].startswith("#BB_LUA qos id=q0123456789ab dirs=NVMe=")
    assert f["BurstBuffer"].endswith("stage_in=/home/alice/in")
    assert f["Power"] == "" and f["Command"] == "/home/alice/job.sh a b"
    assert "id" not in f and "dirs" not in f and "stage_in" not in f and "NVMe" not in f


def test_job_from_fields_and_its_burst_buffer_request():
    j = job_from_fields(parse_scontrol_line(LINE))
    assert (j.id, j.name, j.user, j.uid) == ("42", "my job", "alice", 1001)
    assert (j.state, j.reason, j.nodes, j.time_limit) == ("PENDING", "BurstBufferStageIn", 2,
                                                          "00:10:00")
    assert j.burst_buffer.startswith("#BB_LUA qos id=q0123456789ab dirs=NVMe=")


def test_job_from_fields_nulls_and_gaps():
    j = job_from_fields({"JobId": "7", "Comment": "(null)", "BurstBuffer": "(null)"})
    assert j.comment == "" and j.burst_buffer == ""
    assert j.user == "" and j.uid == -1 and j.nodes == 0
    j = job_from_fields({"UserId": "weird", "NumNodes": "3"})
    assert j.user == "weird" and j.uid == -1 and j.nodes == 3


@pytest.mark.parametrize("module, slurm, ok", [
    ("22.5.1", "22.05", True), ("22.5.0", "22.05.8", True), ("23.2.0", "22.05", False),
    ("22.5.1", "23.02", False), ("22.5.1", None, False), ("", "22.05", False),
    ("22.50.1", "22.05", False),
])
def test_pyslurm_matches(module, slurm, ok):
    assert pyslurm_matches(module, slurm) is ok


def test_command_backend_refuses_a_non_numeric_job_id_and_reports_missing_commands():
    with pytest.raises(SlurmError, match="is not a number"):
        CommandBackend().job("42; rm -rf /")
    with pytest.raises(SlurmError, match="cannot run"):
        CommandBackend()._run(["/nonexistent/sinfo", "--json"])
    with pytest.raises(SlurmError, match="exit 1"):
        CommandBackend()._run(["false"])


def test_without_pyslurm_the_commands_are_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyslurm", None)      # import pyslurm -> ImportError
    assert isinstance(slurm_client(), CommandBackend)
    assert slurm_client("commands").backend == "commands"
    with pytest.raises(SlurmError, match="pyslurm is not installed"):
        slurm_client("pyslurm")


class _FakeJobs:
    def __init__(self, jobs):
        self.jobs = jobs

    def find_id(self, job_id):
        if job_id not in self.jobs:
            raise ValueError("Invalid job id")
        return self.jobs[job_id]


def fake_pyslurm(version: str, jobs=None) -> types.ModuleType:
    m = types.ModuleType("pyslurm")
    m.__version__ = version
    m.job = lambda: _FakeJobs(jobs or {})
    m.node = lambda: types.SimpleNamespace(get=lambda: {
        "n1": {"state": "IDLE", "cpus": 8, "partitions": ["debug"]}})
    return m


def test_pyslurm_is_used_only_when_it_matches_the_installed_slurm(monkeypatch):
    monkeypatch.setattr(slurmapi, "installed_slurm_version", lambda: "22.05")
    monkeypatch.setitem(sys.modules, "pyslurm", fake_pyslurm("22.5.3"))
    assert isinstance(slurm_client(), PySlurmBackend)
    assert isinstance(slurm_client("commands"), CommandBackend)
    monkeypatch.setitem(sys.modules, "pyslurm", fake_pyslurm("23.2.0"))
    assert isinstance(slurm_client(), CommandBackend)


def test_pyslurm_backend_reads_jobs_and_nodes():
    jobs = {"9": [{"job_id": 9, "name": "j", "user_id": 0, "job_state": "RUNNING",
                   "state_reason": "None", "num_nodes": 2, "time_limit": 10,
                   "comment": None, "burst_buffer": "#BB_LUA qos id=q0123456789ab"}],
            "10": []}
    b = PySlurmBackend(fake_pyslurm("22.5.3", jobs))
    j = b.job("9")
    assert j is not None
    # The hooks check directories named after the user: the name, not the uid.
    assert (j.id, j.user, j.uid, j.nodes, j.comment) == ("9", "root", 0, 2, "")
    assert j.burst_buffer == "#BB_LUA qos id=q0123456789ab"
    assert b.job("10") is None and b.job("11") is None
    assert [(n.name, n.state, n.cpus, n.partitions) for n in b.nodes()] == \
        [("n1", "idle", 8, ("debug",))]


def test_a_reserve_margin_raises_the_reservation_and_lowers_what_a_tier_can_promise():
    from qos_plugin.planner.contract import Contract, Need
    from qos_plugin.slurm.plan import sustained, tier_rates

    pfs = {"kind": "shared", "path": "/p", "mount": "/q", "daemons": ["a:1"],
           "bandwidth": "120MiB/s"}
    site = site_from_dict({"registry": "/r", "tiers": {"pfs": {**pfs, "reserve_margin": 1.2},
                                                       "ram": {"kind": "node-local",
                                                               "path": "/m"}}}, Path("/s"))
    need = Need(1.0, "stage-in", "pfs", 900.0, 10.0, 90.0, None)
    contract = Contract((need,), ("ram",), ("ram",))
    # 90 MiB/s of pfs in the contract: 108 reserved, and pfs promises contracts 100.
    assert tier_rates(site, contract) == {"pfs": pytest.approx(108.0)}
    assert tier_rates(site, contract, stretch=2.0) == {"pfs": pytest.approx(54.0)}
    assert sustained(site) == {"pfs": pytest.approx(100.0)}
    plain = site_from_dict({"registry": "/r", "tiers": {"pfs": pfs}}, Path("/s"))
    assert tier_rates(plain, contract) == {"pfs": pytest.approx(90.0)}
    for bad in (0.9, 2.5, "1.2", True):
        with pytest.raises(InputError, match="reserve_margin = .*give a number from 1 to 2"):
            site_from_dict({"registry": "/r", "tiers": {"pfs": {**pfs, "reserve_margin": bad}}},
                           Path("/s"))


def test_the_reserve_rule_is_contract_by_default_least_when_asked_else_refused():
    pfs = {"kind": "node-local", "path": "/p"}
    assert site_from_dict({"registry": "/r", "tiers": {"pfs": pfs}}, Path("s")).reserve \
        == "contract"
    site = site_from_dict({"registry": "/r", "reserve": "least", "tiers": {"pfs": pfs}},
                          Path("s"))
    assert site.reserve == "least"
    for bad in ("most", 1, "LEAST"):
        with pytest.raises(InputError, match='reserve = .*(not a reserve rule; use "contract" '
                           'or "least"|is not a str)'):
            site_from_dict({"registry": "/r", "reserve": bad, "tiers": {"pfs": pfs}},
                           Path("s"))
