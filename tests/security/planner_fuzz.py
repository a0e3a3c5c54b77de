"""Property-based fuzzing of the planner's loaders and of ``qos-plan query``.

Shared by ``tests/security/test_planner_fuzz.py`` (a bounded run in the suite) and
``benchmarks/security/fuzz_planner.py`` (a longer one that prints counts). Each
target takes one generated input and returns what happened: ``"loaded"``, or
``"refused"`` when the package raised its InputError with a one-line message;
anything else (another exception, a message with a line break, an exit status
outside the documented ones) is an AssertionError carrying the input, which
Hypothesis then shrinks.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from qos_plugin.errors import InputError
from qos_plugin.model.costs import COLUMNS as COST_COLUMNS
from qos_plugin.model.costs import load_costs, save_costs
from qos_plugin.model.iodata import REQUIRED as IO_COLUMNS
from qos_plugin.model.iodata import load_io_data
from qos_plugin.model.profile import REQUIRED as PROFILE_COLUMNS
from qos_plugin.model.profile import load_profile
from qos_plugin.model.template import template_to_dict
from qos_plugin.model.wfformat import load_any_template
from qos_plugin.planner.trained import read_model

WORK = Path(tempfile.mkdtemp(prefix="qos-planner-fuzz-"))
atexit.register(shutil.rmtree, WORK, True)     # one per run; none left in /tmp
TIER_SPEC = "pfs:shared,nvme:node-local,ram:node-local,bb:node-local"

# -- generated values ---------------------------------------------------------------

# Cells and JSON scalars a careless or hostile file holds: non-finite and huge
# numbers, other scripts' digits, separators, control characters, empty strings.
TRICKY_TEXT = ["", " ", "nan", "NaN", "-inf", "Infinity", "1e999", "-1", "0", "1e308",
               "1_000", "0x10", "\u0665", "\uff15", "\u0662.5", "3\n", "a,b", "\"", "\x00",
               "stage_in-A", "pfs", "nvme-pfs", "pfs-nvme", "initial_data", "A", "C",
               "\ud800", "\u202e", "read", "write", "cp", "scp", "9" * 30]
cell = st.one_of(st.sampled_from(TRICKY_TEXT), st.integers(-10, 10**6).map(str),
                 st.floats(allow_nan=True, allow_infinity=True).map(repr),
                 st.text(max_size=8))
scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                   st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(TRICKY_TEXT),
                   st.text(max_size=10))
json_value = st.recursive(scalar, lambda c: st.lists(c, max_size=4)
                          | st.dictionaries(st.text(max_size=6) | st.sampled_from(TRICKY_TEXT),
                                            c, max_size=4), max_leaves=20)


def dumps(value: Any) -> bytes:
    """JSON as a careless writer makes it: NaN and Infinity literals allowed,
    surrogates passed through as escapes."""
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few bytes replaced, inserted or deleted, or a piece
    repeated: files that are almost right reach the deepest checks."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        op = draw(st.sampled_from(["replace", "insert", "delete", "repeat"]))
        piece = draw(st.one_of(st.binary(min_size=1, max_size=4),
                               st.sampled_from([b"nan", b"NaN", b"-", b"1e999", b"[", b"{",
                                                b"\xff", b"\xc3", b",", b"\n", b"\"", b"0",
                                                b"\xd9\xa5"])))
        if op == "replace":
            data[pos:pos + len(piece)] = piece
        elif op == "insert":
            data[pos:pos] = piece
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        else:
            data[pos:pos] = bytes(data[pos:pos + 16]) * draw(st.integers(1, 50))
    return bytes(data)


@st.composite
def templates(draw: st.DrawFn) -> bytes:
    """QoSFlow templates of random shape: stage names from a small set (so
    predecessors often name real stages, themselves, or form cycles), fields of
    the right type or of any JSON value."""
    names = draw(st.lists(st.sampled_from(["A", "B", "C", "D", "initial_data", "", "a\nb",
                                           "x" * 200]), min_size=1, max_size=5, unique=True))

    def field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(good, good, good, json_value)

    doc: dict[str, Any] = {}
    for n in names:
        stage: dict[str, Any] = {}
        for key, good in [
                ("stage_order", st.one_of(st.integers(-2, 4), st.floats(0, 4))),
                ("num_tasks", st.one_of(st.integers(-1, 64), st.just(1e30))),
                ("parallelism", st.integers(0, 64)),
                ("predecessors", st.dictionaries(
                    st.sampled_from(names + ["initial_data", "Z"]),
                    st.fixed_dictionaries({"inputs": st.lists(st.sampled_from(
                        ["in", "a.*", "(", "[", "x" * 50]), max_size=2)}), max_size=3)),
                ("outputs", st.lists(st.sampled_from(["o", "(", ".*"]), max_size=2))]:
            if draw(st.integers(0, 9)):              # usually present
                stage[key] = draw(field(good))
        doc[n] = stage
    return dumps(doc)


@st.composite
def wfformat_instances(draw: st.DrawFn) -> bytes:
    """WfFormat 1.5 instances: tasks with parents among a few ids (self-parents
    and cycles included), files possibly unknown, fields of any type sometimes."""
    ids = [f"{t}_ID{i:02d}" for t, i in zip("aabbc", range(5), strict=True)]
    tasks = []
    for tid in draw(st.lists(st.sampled_from(ids + ["", "c_ID09"]), min_size=1, max_size=6)):
        task: dict[str, Any] = {"id": tid, "name": tid}
        if draw(st.booleans()):
            task["parents"] = draw(st.lists(st.sampled_from(ids), max_size=3))
        if draw(st.booleans()):
            task["inputFiles"] = draw(st.lists(st.sampled_from(["f1", "f2", "raw"]), max_size=3))
        if draw(st.booleans()):
            task["outputFiles"] = draw(st.lists(st.sampled_from(["f1", "f2", "f3"]), max_size=2))
        if draw(st.integers(0, 5)) == 0:
            task[draw(st.sampled_from(["parents", "inputFiles", "id", "category"]))] = \
                draw(json_value)
        tasks.append(task)
    spec: Any = {"tasks": tasks}
    if draw(st.booleans()):
        spec["files"] = [{"id": f, "sizeInBytes": 10} for f in ("f1", "f2", "f3", "raw")]
    if draw(st.integers(0, 6)) == 0:
        spec = draw(json_value)
    return dumps({"name": "fuzz", "schemaVersion": "1.5", "workflow": {"specification": spec}})


@st.composite
def csv_files(draw: st.DrawFn, columns: tuple[str, ...]) -> bytes:
    """A CSV with (usually) the required columns, in any order, and rows of
    tricky cells; sometimes a column missing or repeated, rows of the wrong length."""
    header = list(columns)
    if draw(st.integers(0, 5)) == 0:
        header.remove(draw(st.sampled_from(header)))
    if draw(st.integers(0, 8)) == 0:
        header.append(draw(st.sampled_from(header)))
    header = draw(st.permutations(header))
    rows = draw(st.lists(st.lists(cell, min_size=len(header), max_size=len(header)),
                         max_size=5))
    if rows and draw(st.integers(0, 6)) == 0:
        rows[0] = rows[0][:-1]
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    return text.encode("utf-8", "surrogatepass")


@st.composite
def edited_csv(draw: st.DrawFn, original: bytes) -> bytes:
    """A valid CSV with one to three cells replaced by tricky ones (and sometimes a
    row dropped or doubled): rows that pass the syntax reach the value checks."""
    lines = original.decode().splitlines()
    rows = [ln.split(",") for ln in lines[1:]]
    for _ in range(draw(st.integers(1, 3))):
        r = draw(st.integers(0, len(rows) - 1))
        c = draw(st.integers(0, len(rows[r]) - 1))
        rows[r][c] = draw(cell)
    if draw(st.integers(0, 5)) == 0:
        rows.insert(0, list(rows[-1]))
    text = "\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n"
    return text.encode("utf-8", "surrogatepass")


# -- the valid files mutations start from ---------------------------------------------

def _valid_files() -> dict[str, bytes]:
    from tests.unit.handmade import TEMPLATE, cost_table

    save_costs(cost_table(), WORK / "valid-costs.csv")
    profile = ("operation,transferSize,aggregateFilesizeMB,numNodes,tasksPerNode,trMiB,"
               "storageType\nread,4096,64,1,2,100.5,pfs\nwrite,4096,64,1,2,80,pfs\n"
               "cp,4096,64,1,1,300,pfs-nvme\n")
    io_data = ("operation,transferSize,aggregateFilesizeMB,taskName,taskPID,fileName,prevTask\n"
               "read,4096,12.5,A,1,in,initial_data\nwrite,4096,3,A,1,a,\n"
               "read,4096,3,C,2,a,A\n")
    return {"template": json.dumps(template_to_dict(TEMPLATE)).encode(),
            "costs": (WORK / "valid-costs.csv").read_bytes(),
            "profile": profile.encode(), "io_data": io_data.encode()}


VALID = _valid_files()


def trained_registry() -> Path:
    """A registry with model ``hand`` trained on the hand-made workflow (once)."""
    reg = WORK / "registry"
    if not (reg / "hand" / "v1.json").exists():
        (WORK / "t.json").write_bytes(VALID["template"])
        rc, _, err = run_cli(["train", "hand", "--template", str(WORK / "t.json"), "--costs",
                              str(WORK / "valid-costs.csv"), "--nodes", "2,4", "--tiers",
                              TIER_SPEC, "--registry", str(reg)])
        assert rc == 0, err
    return reg


def model_doc() -> dict[str, Any]:
    return dict(json.loads((trained_registry() / "hand" / "v1.json").read_text()))


# -- targets ---------------------------------------------------------------------------

def one_line(e: InputError) -> str:
    text = str(e)
    assert text and "\n" not in text and "\r" not in text, f"message not one line: {text!r}"
    return "refused"


def load_file(loader: Callable[[Path], Any], data: bytes, suffix: str) -> str:
    """Write ``data`` and load it: "loaded", or "refused" with a one-line InputError."""
    path = WORK / f"input{suffix}"
    path.write_bytes(data)
    try:
        loader(path)
    except InputError as e:
        return one_line(e)
    except Exception as e:  # noqa: BLE001 - the property: nothing else escapes
        raise AssertionError(f"{type(e).__name__}: {e} on input {data[:300]!r}") from e
    return "loaded"


def check_template(data: bytes) -> str:
    return load_file(load_any_template, data, ".json")


def check_costs(data: bytes) -> str:
    return load_file(load_costs, data, ".csv")


def check_profile(data: bytes) -> str:
    return load_file(load_profile, data, ".csv")


def check_io_data(data: bytes) -> str:
    return load_file(load_io_data, data, ".csv")


def check_model(data: bytes) -> str:
    return load_file(read_model, data, ".json")


@st.composite
def tampered_models(draw: st.DrawFn) -> bytes:
    """A trained model with one to three values anywhere in it replaced (or a key
    deleted): a column, a table cell, a region field, a tier, the workflow."""
    doc = model_doc()
    for _ in range(draw(st.integers(1, 3))):
        node: Any = doc
        path: list[Any] = []
        while isinstance(node, dict | list) and node and (not path or draw(st.integers(0, 3))):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict)
                                       else range(len(node))))
            path.append((node, key))
            node = node[key]
        if not path:
            break
        parent, key = path[-1]
        if isinstance(parent, dict) and draw(st.integers(0, 4)) == 0:
            del parent[key]
        else:
            parent[key] = draw(st.one_of(json_value, st.just(math.nan), st.just(-1.0),
                                         st.just(0), st.just({"array": "d", "base64": "AAD4fw=="})))
    return dumps(doc)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``qos-plan argv`` in this process: (exit status, stdout, stderr)."""
    from qos_plugin.cli.qos_plan import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:          # argparse: usage errors
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


# Per option, values that mean something to the model (so that queries get
# answered or found infeasible), then edge cases, then anything.
MEANINGFUL = {"--deadline": ["20:00", "1-0", "0:01", "0:30", "5", "2:00:00", "0:20"],
              "--max-nodes": ["1", "2", "4", "5"],
              "--tiers": ["pfs", "pfs,nvme", "pfs,ram,bb", "nvme,ram", "pfs,bb"],
              "--exclude-tier": ["nvme", "ram", "bb", "pfs", "nvme,ram"],
              "--down-tier": ["nvme", "ram", "bb", "pfs"], "--objective": ["fastest", "frugal"]}
EDGES = ["0", "\u0665:\u0660\u0660", ",", "pfs,,ram", "99999999999", "59:60", "1:2:3:4", " 5",
         "5 ", "1e3", "ssd", "hand", "0:00", "366-0", "\uff15", "nvme, ram"]


def option_value(option: str) -> st.SearchStrategy[str]:
    good = st.sampled_from(MEANINGFUL[option])
    return st.one_of(good, good, good, good, st.sampled_from(EDGES), cell)


@st.composite
def query_argv(draw: st.DrawFn) -> list[str]:
    """``query NAME [OPTION VALUE]...`` with names, versions and values of any kind."""
    name = draw(st.one_of(*[st.just("hand")] * 6, st.just("hand@1"),
                          st.sampled_from(["hand@v1", "hand@0", "hand@9", "hand@\u0661",
                                           "nosuch", "../hand", "hand@" + "9" * 40]),
                          st.text(max_size=12)))
    argv = ["query", name, "--registry", str(trained_registry())]
    for option in draw(st.lists(st.sampled_from(sorted(MEANINGFUL)), max_size=4)):
        argv += [option, draw(option_value(option))]
    if draw(st.booleans()):
        argv.append("--json")
    return argv


def check_query(argv: list[str]) -> str:
    """The documented outcomes only: 0 answered (JSON when asked), 3 infeasible,
    1 one error line, 2 one usage line; never a traceback."""
    try:
        code, out, err = run_cli(argv)
    except Exception as e:  # noqa: BLE001 - the property: nothing else escapes
        raise AssertionError(f"{type(e).__name__}: {e} on {argv!r}") from e
    assert code in (0, 1, 2, 3), (code, argv, err)
    if code in (0, 3):
        assert err == "", (argv, err)
        if "--json" in argv:
            json.loads(out)
        return "answered" if code == 0 else "infeasible"
    assert out == "" and err.count("\n") == 1, (argv, err)
    return "refused" if code == 1 else "usage"


@st.composite
def makespan_inputs(draw: st.DrawFn) -> tuple[bytes, bytes, list[str]]:
    """A template and a cost table, one of them edited, and the options of
    ``qos-plan makespan``: the loaders' output goes on through the evaluation."""
    template, costs = VALID["template"], VALID["costs"]
    if draw(st.booleans()):
        costs = draw(edited_csv(costs))
    else:
        template = draw(st.one_of(templates(), mutated(template)))
    options = ["--nodes", draw(st.sampled_from(["2,4", "1", "3,5,7", "4"]))]
    if draw(st.booleans()):
        options += ["--tiers", draw(st.sampled_from([TIER_SPEC, "pfs:shared,nvme:node-local",
                                                     "pfs:shared"]))]
    if draw(st.booleans()):
        options += ["--missing-cost", "zero"]
    return template, costs, options


def check_makespan(case: tuple[bytes, bytes, list[str]]) -> str:
    """``qos-plan makespan``: 0 with the table written, or one line and nothing written."""
    template, costs, options = case
    (WORK / "m-t.json").write_bytes(template)
    (WORK / "m-c.csv").write_bytes(costs)
    out = WORK / "m-out.csv"
    out.unlink(missing_ok=True)
    argv = ["makespan", "--template", str(WORK / "m-t.json"), "--costs", str(WORK / "m-c.csv"),
            "--out", str(out), *options]
    try:
        code, _, err = run_cli(argv)
    except Exception as e:  # noqa: BLE001 - the property: nothing else escapes
        raise AssertionError(f"{type(e).__name__}: {e} on {case!r}"[:600]) from e
    if code == 0:
        assert out.exists(), case
        return "evaluated"
    assert code == 1 and err.count("\n") == 1 and not out.exists(), (code, err, case)
    return "refused"


# target name -> (strategy, check)
TARGETS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], str]]] = {
    "template": (st.one_of(templates(), mutated(VALID["template"]), json_value.map(dumps)),
                 check_template),
    "wfformat": (st.one_of(wfformat_instances(), wfformat_instances().flatmap(mutated)),
                 check_template),
    "costs": (st.one_of(csv_files(COST_COLUMNS), mutated(VALID["costs"]),
                        edited_csv(VALID["costs"])), check_costs),
    "profile": (st.one_of(csv_files(PROFILE_COLUMNS), mutated(VALID["profile"]),
                          edited_csv(VALID["profile"])), check_profile),
    "io_data": (st.one_of(csv_files(IO_COLUMNS), mutated(VALID["io_data"]),
                          edited_csv(VALID["io_data"])), check_io_data),
    "model": (st.one_of(tampered_models(), st.builds(lambda: json.dumps(model_doc()).encode())
                        .flatmap(mutated)), check_model),
    "query": (query_argv(), check_query),
    "makespan": (makespan_inputs(), check_makespan),
}
