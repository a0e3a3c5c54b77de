"""Planner input that cannot lie (issue 18): each finding a tester reproduced, as a
test. Every refusal is one line ``qos-plan <cmd>: error: ...``, exit status 1,
and writes nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from qos_plugin.cli.qos_plan import main
from qos_plugin.errors import InputError
from qos_plugin.model.costs import load_costs, save_costs
from qos_plugin.model.iodata import load_io_data
from qos_plugin.model.makespan import MakespanModel, evaluation_bytes
from qos_plugin.model.profile import load_profile
from qos_plugin.model.synthetic import TierModel, chain_workflow
from qos_plugin.model.template import load_template, template_from_dict, template_to_dict
from qos_plugin.model.tiers import parse_tiers
from qos_plugin.model.wfformat import template_from_wfformat
from qos_plugin.planner.registry import Registry
from qos_plugin.planner.timespec import parse_duration
from qos_plugin.planner.trained import pack, read_model, unpack
from tests.unit.handmade import TEMPLATE, TIERS, cost_table

TIER_SPEC = "pfs:shared,nvme:node-local,ram:node-local,bb:node-local"
ARABIC_FIVE_MINUTES = "\u0665:\u0660\u0660"          # '٥:٠٠'


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    (tmp_path / "t.json").write_text(json.dumps(template_to_dict(TEMPLATE)))
    save_costs(cost_table(), tmp_path / "c.csv")
    return tmp_path


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("inputs")
    (d / "t.json").write_text(json.dumps(template_to_dict(TEMPLATE)))
    save_costs(cost_table(), d / "c.csv")
    assert main(["train", "hand", "--template", str(d / "t.json"), "--costs",
                 str(d / "c.csv"), "--nodes", "2,4", "--tiers", TIER_SPEC,
                 "--registry", str(d / "reg")]) == 0
    return d / "reg"


def refused(capsys: pytest.CaptureFixture[str], command: str, *argv: str) -> str:
    """Run ``qos-plan command argv``; it must fail with exactly one error line."""
    code = main([command, *argv])
    out = capsys.readouterr()
    assert code == 1, (out.out, out.err)
    assert out.out == ""
    assert out.err.count("\n") == 1 and out.err.startswith(f"qos-plan {command}: error: "), \
        out.err
    return out.err


def makespan(files: Path, costs: Path, *extra: str) -> list[str]:
    return ["--template", str(files / "t.json"), "--costs", str(costs), "--nodes", "2,4",
            "--tiers", TIER_SPEC, "--out", str(files / "m.csv"), *extra]


def replace_cells(src: Path, dst: Path, column: str, value: str, rows: int = 10**9) -> None:
    lines = src.read_text().splitlines()
    col = lines[0].split(",").index(column)
    for i in range(1, min(len(lines), rows + 1)):
        cells = lines[i].split(",")
        cells[col] = value
        lines[i] = ",".join(cells)
    dst.write_text("\n".join(lines) + "\n")


# -- 1. NaN and inf refused on load --------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_non_finite_costs_are_refused_naming_file_line_and_value(files, capsys, value):
    replace_cells(files / "c.csv", files / "bad.csv", "estT_cons", value, rows=3)
    err = refused(capsys, "makespan", *makespan(files, files / "bad.csv"))
    assert f"bad.csv:2: column 'estT_cons' has '{value}', not a finite number" in err
    assert "costs are times in seconds" in err
    assert not (files / "m.csv").exists()


def test_nan_costs_no_longer_train_a_model_of_zero_makespans(files, capsys):
    replace_cells(files / "c.csv", files / "nan.csv", "estT_prod", "nan")
    replace_cells(files / "nan.csv", files / "nan.csv", "estT_cons", "nan")
    refused(capsys, "train", "zeros", "--template", str(files / "t.json"), "--costs",
            str(files / "nan.csv"), "--nodes", "2,4", "--tiers", TIER_SPEC,
            "--registry", str(files / "reg"))
    assert not (files / "reg").exists()


@pytest.mark.parametrize("column,value", [("trMiB", "nan"), ("trMiB", "inf"),
                                          ("aggregateFilesizeMB", "NaN"),
                                          ("numNodes", "\u0662"), ("tasksPerNode", "1_0")])
def test_profiles_refuse_non_finite_and_non_ascii_numbers(tmp_path, column, value):
    header = "operation,transferSize,aggregateFilesizeMB,numNodes,tasksPerNode,trMiB,storageType"
    row = {"operation": "read", "transferSize": "4096", "aggregateFilesizeMB": "64",
           "numNodes": "1", "tasksPerNode": "2", "trMiB": "100", "storageType": "pfs"}
    row[column] = value
    (tmp_path / "p.csv").write_text(header + "\n" + ",".join(row.values()) + "\n")
    with pytest.raises(InputError, match=rf"p.csv:2: column '{column}' has .*not a"):
        load_profile(tmp_path / "p.csv")


@pytest.mark.parametrize("column,value", [("aggregateFilesizeMB", "nan"),
                                          ("transferSize", "inf"), ("transferSize", "0")])
def test_io_data_refuses_non_finite_sizes(tmp_path, column, value):
    row = {"operation": "read", "transferSize": "4096", "aggregateFilesizeMB": "64",
           "taskName": "A", "taskPID": "1", "fileName": "f", "prevTask": "initial_data"}
    row[column] = value
    (tmp_path / "io.csv").write_text(",".join(row) + "\n" + ",".join(row.values()) + "\n")
    with pytest.raises(InputError, match=rf"io.csv:2: column '{column}' has"):
        load_io_data(tmp_path / "io.csv")


def test_out_of_range_costs_cannot_overflow_a_sum(files):
    replace_cells(files / "c.csv", files / "big.csv", "estT_prod", "1e300", rows=1)
    with pytest.raises(InputError, match="has 1e300, outside 0 to 1e"):
        load_costs(files / "big.csv")


def test_a_built_cost_table_has_the_bounds_of_a_loaded_one():
    from qos_plugin.model.costs import CostRow, CostTable

    for bad in (math.inf, -1.0, 2e9):
        with pytest.raises(InputError, match="estT_cons of A->C on pfs/pfs is"):
            CostTable.from_rows([CostRow("A", 1, "C", 2, "pfs", 1, "pfs", 1, 1.0, bad)],
                                source="built")


# -- 2. a cost lookup that finds no row ------------------------------------------------

def _without_stage_in_copies_of(stage: str, src: Path, dst: Path) -> None:
    lines = src.read_text().splitlines()
    dst.write_text("\n".join(ln for ln in lines
                             if not (ln.startswith(f"stage_in-{stage},") and "-nvme," in ln))
                   + "\n")


def test_a_missing_cost_row_is_an_error_naming_the_row(files, capsys):
    _without_stage_in_copies_of("C", files / "c.csv", files / "gap.csv")
    err = refused(capsys, "makespan", *makespan(files, files / "gap.csv"))
    assert "no cost for the stage-in copy of C from pfs onto nvme" in err
    assert "producer=stage_in-C, consumer=C, producerStorageType=pfs-nvme, " \
           "consumerStorageType=nvme" in err
    assert "--missing-cost zero" in err and not (files / "m.csv").exists()


def test_missing_cost_zero_is_an_explicit_choice(files, capsys, caplog):
    _without_stage_in_copies_of("C", files / "c.csv", files / "gap.csv")
    code = main(["makespan", *makespan(files, files / "gap.csv", "--missing-cost", "zero")])
    assert code == 0 and (files / "m.csv").exists()
    assert "--missing-cost zero: 1 cost lookups found no row and were charged 0 s" in \
        caplog.text


def test_an_exec_lookup_without_row_names_stage_tier_and_tasks_per_node():
    table = cost_table()
    keep = [i for i in range(len(table)) if table.row_key(i)[:2] != ("A", "D")]
    from qos_plugin.model.costs import CostTable
    cut = CostTable(**{f: getattr(table, f)[keep] for f in (
        "producer", "producer_level", "consumer", "consumer_level", "producer_tier",
        "producer_tpn", "consumer_tier", "consumer_tpn", "spm", "est_prod", "est_cons")},
        source="cut.csv")
    with pytest.raises(InputError, match=r"cut.csv: no cost for the write of A->D on pfs: no "
                       r"row producer=A, consumer=D, producerStorageType=pfs with a value "
                       r"in estT_prod \(A runs 2 tasks per node at N=2\)"):
        MakespanModel(TEMPLATE, cut, TIERS).evaluate([2])


def test_an_unmeasured_profile_rate_is_an_error_not_zero_seconds(tmp_path, capsys):
    from qos_plugin.model.iodata import write_io_csv

    tiers = parse_tiers("pfs:shared")
    wf = chain_workflow(2, tiers, {"pfs": TierModel(100.0, 80.0)}, width=1)
    (tmp_path / "t.json").write_text(json.dumps(template_to_dict(wf.template)))
    write_io_csv(wf.io_data(), tmp_path / "io.csv")
    (tmp_path / "p.csv").write_text(
        "operation,transferSize,aggregateFilesizeMB,numNodes,tasksPerNode,trMiB,storageType\n"
        "read,1048576,64,1,1,100,pfs\nread,1048576,1024,1,8,400,pfs\n")    # no write run
    err = refused(capsys, "costs", "--template", str(tmp_path / "t.json"), "--io-data",
                  str(tmp_path / "io.csv"), "--profile", str(tmp_path / "p.csv"), "--nodes",
                  "2", "--tiers", "pfs:shared", "--out", str(tmp_path / "c.csv"))
    assert "p.csv: no write run on tier pfs (stage s00 writes" in err
    assert not (tmp_path / "c.csv").exists()


# -- 3. memory budget ------------------------------------------------------------------

def test_fifteen_stages_on_three_tiers_are_refused_with_the_estimate(tmp_path, capsys):
    tiers = parse_tiers("pfs:shared,l0:node-local,l1:node-local")
    wf = chain_workflow(15, tiers, {t.name: TierModel(100.0 * (i + 1), 80.0 * (i + 1))
                                    for i, t in enumerate(tiers)}, width=15)
    (tmp_path / "t.json").write_text(json.dumps(template_to_dict(wf.template)))
    save_costs(wf.cost_table([2, 5, 10]), tmp_path / "c.csv")
    err = refused(capsys, "makespan", "--template", str(tmp_path / "t.json"), "--costs",
                  str(tmp_path / "c.csv"), "--nodes", "2,5,10", "--tiers",
                  "pfs:shared,l0:node-local,l1:node-local", "--out", str(tmp_path / "m.csv"),
                  "--memory-budget", "12GiB")
    assert "evaluating 43,046,721 placements (14,348,907 configurations x 3 node count(s), " \
           "15 stages on 3 tiers) needs about" in err
    assert "more than the budget of 12.0 GiB" in err and "--memory-budget" in err
    assert not (tmp_path / "m.csv").exists()
    need = evaluation_bytes(wf.template, tiers, 3 ** 15, 3)
    assert 35 * 2**30 < need < 50 * 2**30


def test_a_budget_that_holds_evaluates(files):
    assert main(["makespan", *makespan(files, files / "c.csv", "--memory-budget", "2MiB")]) \
        == 0


@pytest.mark.parametrize("size", ["lots", "12 parsecs", "\u0661\u0662GiB", "0", "5GB!"])
def test_bad_memory_budgets_are_one_line(files, capsys, size):
    assert "--memory-budget" in refused(capsys, "makespan", *makespan(
        files, files / "c.csv", "--memory-budget", size))


# -- 4. cycles ---------------------------------------------------------------------------

def stage(level: float, *preds: str) -> dict[str, object]:
    return {"stage_order": level, "num_tasks": 2,
            "predecessors": {p: {"inputs": []} for p in preds}}


def test_a_self_loop_is_refused():
    with pytest.raises(InputError, match="stage 'A' names itself as a predecessor"):
        template_from_dict({"A": stage(1, "initial_data", "A")})


def test_a_same_level_two_cycle_is_refused_with_the_cycle_named():
    with pytest.raises(InputError, match="stages form a cycle: B -> C -> B"):
        template_from_dict({"A": stage(1, "initial_data"), "B": stage(2, "A", "C"),
                            "C": stage(2, "B")})


def test_a_longer_same_level_cycle_is_named():
    with pytest.raises(InputError, match="stages form a cycle: (X -> Y -> Z -> X|Y -> Z -> X "
                                         "-> Y|Z -> X -> Y -> Z)"):
        template_from_dict({"X": stage(1, "Z"), "Y": stage(1, "X"), "Z": stage(1, "Y")})


def test_a_long_chain_is_no_recursion_problem():
    chain = {"s0": stage(1, "initial_data")}
    chain.update({f"s{i}": stage(1, f"s{i - 1}") for i in range(1, 250)})
    assert len(template_from_dict(chain).stages) == 250


def wf_instance(tasks: list[dict[str, object]]) -> dict[str, object]:
    return {"name": "w", "schemaVersion": "1.5", "workflow": {"specification": {
        "tasks": tasks, "files": []}}}


def test_wfformat_task_cycles_are_refused():
    with pytest.raises(InputError, match="tasks form a cycle: a_1 -> a_1"):
        template_from_wfformat(wf_instance([{"id": "a_1", "parents": ["a_1"]}]))
    with pytest.raises(InputError, match="tasks form a cycle"):
        template_from_wfformat(wf_instance([{"id": "a_1", "parents": ["b_1"]},
                                            {"id": "b_1", "parents": ["a_1"]}]))


# -- 5. numbers bounded, malformed files one line --------------------------------------

def write_template(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


@pytest.mark.parametrize("text,needle", [
    ("[" * 100_000 + "]" * 100_000, "nested deeper than 32 levels"),
    ('{"A": ' + "[" * 40 + "]" * 40 + "}", "nested deeper than 32 levels"),
    ('{"A": {"stage_order": 1, "num_tasks": 1e30}}', "num_tasks=1e+30 is not a whole number"),
    ('{"A": {"stage_order": 1, "num_tasks": 100000000000}}', "num_tasks=100000000000"),
    ('{"A": {"stage_order": NaN, "num_tasks": 1}}', "has NaN that is not a finite number"),
    ('{"A": {"stage_order": 1e999, "num_tasks": 1}}', "has 1e999 that overflows a float"),
    ('{"A": {"stage_order": "1", "num_tasks": 1}}', "stage_order=1 is not a finite number"),
    ('{"A": {"stage_order": 1, "num_tasks": 2.5}}', "num_tasks=2.5 is not a whole number"),
    ('{"A": {"stage_order": 1, "num_tasks": true}}', "num_tasks=True is not a whole number"),
    ('{"A": {"stage_order": 1, "num_tasks": ' + "9" * 5000 + "}}", "has more than 19 digits"),
    ('{"A\\nB": {"stage_order": 1, "num_tasks": 1}}', "has a control or unprintable"),
    ('{"A": {"stage_order": 1, "num_tasks": 1, "outputs": ["' + "(" * 600 + ")" * 600
     + '"]}}', "outputs of 'A' has a pattern of 1200 characters"),
    ('{"A": {"stage_order": 1, "num_tasks": 1, "predecessors": []}}',
     "predecessors is not an object"),
    ("[1, 2]", "expected a JSON object of stages"),
])
def test_malformed_templates_are_one_line(files, capsys, text, needle):
    write_template(files / "t.json", text)
    err = refused(capsys, "makespan", *makespan(files, files / "c.csv"))
    assert needle in err, err


def test_non_utf8_files_are_one_line(files, capsys):
    write_template(files / "t.json", b'{"A\xff": {}}')
    assert "t.json:1: the template is not UTF-8 text (byte 0xff at column 4)" in refused(
        capsys, "makespan", *makespan(files, files / "c.csv"))
    (files / "t.json").write_text(json.dumps(template_to_dict(TEMPLATE)))
    data = (files / "c.csv").read_bytes().replace(b"stage_in-A", b"stage_in-\xe9", 1)
    (files / "latin1.csv").write_bytes(data)
    assert "latin1.csv:2: the cost table is not UTF-8 text (byte 0xe9" in refused(
        capsys, "makespan", *makespan(files, files / "latin1.csv"))


def test_huge_files_are_refused_before_they_are_read(files, capsys, monkeypatch):
    import qos_plugin.model.template as template_module

    monkeypatch.setattr(template_module, "read_json",
                        lambda path, what: __import__("qos_plugin.model.jsonio", fromlist=["x"])
                        .read_json(path, what, max_bytes=1000))
    write_template(files / "t.json", " " * 2000 + "{}")
    assert "the template is larger than 1000 B" in refused(
        capsys, "makespan", *makespan(files, files / "c.csv"))


@pytest.mark.parametrize("nodes", ["0", "2,\u0664", "1_0", "200000", "2,2", "", ",", "x"])
def test_node_counts_are_ascii_bounded_and_distinct(files, capsys, nodes):
    argv = makespan(files, files / "c.csv")
    argv[argv.index("--nodes") + 1] = nodes
    assert "--nodes: " in refused(capsys, "makespan", *argv)


def test_wfformat_wrong_types_are_one_line():
    for spec, needle in [({"tasks": [{"id": "a", "parents": "b"}]}, "parents is not a list"),
                         ({"tasks": [{"id": "a", "inputFiles": 3}]}, "inputFiles is not a"),
                         ({"tasks": [{"id": ["a"]}]}, "task without an id"),
                         ({"tasks": [{"id": "a"}], "files": 7}, "files is not a list"),
                         ({"tasks": [{"id": "a"}, {"id": "a"}]}, "given twice"),
                         ([], "not a WfFormat instance")]:
        data = {"schemaVersion": "1.5", "workflow": {"specification": spec}}
        with pytest.raises(InputError, match=needle):
            template_from_wfformat(data)


def test_usage_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as info:
        main(["query"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("qos-plan query: error: the following arguments are required")


# -- 6. time specs in ASCII digits only --------------------------------------------------

@pytest.mark.parametrize("text", [ARABIC_FIVE_MINUTES, "\uff15", "\u0665", "\u09e7:00",
                                  "9" * 5000, "367-0", "1_0"])
def test_deadlines_accept_ascii_digits_only(text):
    with pytest.raises(InputError, match="--deadline"):
        parse_duration(text)


def test_a_deadline_in_arabic_indic_digits_is_refused_by_the_query(registry, capsys):
    err = refused(capsys, "query", "hand", "--registry", str(registry), "--deadline",
                  ARABIC_FIVE_MINUTES)
    assert "is not a duration" in err
    assert "--max-nodes" in refused(capsys, "query", "hand", "--registry", str(registry),
                                    "--max-nodes", "\u0665")


# -- 7. tampered trained models -----------------------------------------------------------

def tamper(registry: Path, tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    doc = json.loads((registry / "hand" / "v1.json").read_text())
    change(doc)
    d = tmp_path / "reg" / "hand"
    d.mkdir(parents=True, exist_ok=True)
    (d / "v1.json").write_text(json.dumps(doc))   # allow_nan: NaN written as a literal
    return tmp_path / "reg"


def set_column(doc, key, values, code=None):  # type: ignore[no-untyped-def]
    doc["rows"][key] = pack(values, code)


def column(doc, key):  # type: ignore[no-untyped-def]
    return list(unpack(doc["rows"][key], doc["rows"]["count"]))


TAMPERING = [
    ("NaN makespan", lambda d: set_column(d, "total", [math.nan] + column(d, "total")[1:], "d"),
     "rows.total holds a time that is negative, NaN, infinite"),
    ("negative makespan", lambda d: set_column(d, "total", [-1.0] + column(d, "total")[1:],
                                                "d"), "rows.total holds a time that is negative"),
    ("nodes = 0", lambda d: set_column(d, "nodes", [0] + column(d, "nodes")[1:]),
     "rows.nodes are not all from 1 to"),
    ("negative phase", lambda d: d["phases"][0].__setitem__(0, [-5.0, 1.0, 1.0]),
     "phases holds a time that is negative"),
    ("NaN phase literal", lambda d: d["phases"][0].__setitem__(0, [math.nan, 1.0, 1.0]),
     "has NaN that is not a finite number"),
    ("region median", lambda d: d["regions"][0].__setitem__("median", -3),
     "a region median is -3"),
    ("version as text", lambda d: d.__setitem__("version", "1"), "version is 1, not a whole"),
    ("tier kind", lambda d: d["tiers"][0].__setitem__("kind", 7),
     "a tier kind is not a printable string"),
    ("no shared tier", lambda d: [t.__setitem__("kind", "node-local") for t in d["tiers"]],
     "no shared tier"),
    ("stage name", lambda d: d["stages"].__setitem__(0, 5), "stages: '5' is int"),
    ("levels", lambda d: d.__setitem__("levels", [1.0, 2.0]), "levels are not the stages'"),
    ("workflow", lambda d: d["workflow"]["A"].__setitem__("num_tasks", 0),
     "its workflow is not a valid template"),
    ("workflow cycle", lambda d: d["workflow"]["A"]["predecessors"].__setitem__(
        "A", {"inputs": []}), "names itself as a predecessor"),
    ("volumes", lambda d: d.__setitem__("volumes", {"A": {"read_mib": 1}}),
     "volumes is not an object with every stage"),
    ("count", lambda d: d["rows"].__setitem__("count", 10**12), "rows.count is"),
    ("paths", lambda d: d.__setitem__("paths", [1]), "a critical path is not a printable"),
    ("forged output", lambda d: d["paths"].__setitem__(0, "read_A\n  feasible: forged"),
     "a critical path is not a printable string"),
    ("name", lambda d: d.__setitem__("name", "hand\x1b[2J"), "name is not a printable"),
    ("deep provenance", lambda d: d.__setitem__("provenance", json.loads("[" * 50 + "]" * 50)),
     "nested deeper than 32 levels"),
]


@pytest.mark.parametrize("name,change,needle", TAMPERING, ids=[t[0] for t in TAMPERING])
def test_a_tampered_model_is_refused_at_load(registry, tmp_path, capsys, name, change, needle):
    reg = tamper(registry, tmp_path, change)
    err = refused(capsys, "query", "hand", "--registry", str(reg), "--deadline", "0:01")
    assert needle in err, err


def test_a_non_utf8_model_is_one_line(registry, tmp_path, capsys):
    reg = tamper(registry, tmp_path, lambda d: None)
    path = reg / "hand" / "v1.json"
    path.write_bytes(path.read_bytes().replace(b'"hand"', b'"h\xffnd"', 1))
    assert "the model is not UTF-8 text (byte 0xff" in refused(
        capsys, "query", "hand", "--registry", str(reg))


def test_the_untampered_model_still_loads(registry):
    model = read_model(registry / "hand" / "v1.json")
    assert len(model) and Registry(registry).load("hand@1").version == 1


def test_loaders_read_the_1000_genomes_template(artifact):
    t = load_template(artifact / "1kgenome" / "1kg_script_order.json")
    assert [s.name for s in t.ordered()][0] == "individuals"
