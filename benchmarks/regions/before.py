"""Region training time before issue 20, for benchmarks/regions/run.py.

Writes a workflow's makespan table with today's code, then times ``fit_regions``
of commit 1ea6a74 (checked out with ``git archive`` into a temporary directory)
on it, in a separate process. A run longer than ``--max-seconds`` is stopped and
its time estimated from the cross-validation steps done so far (elapsed x total /
done), which is marked ``estimated``. Updates before.json. Run:
    PYTHONPATH=. .venv/bin/python benchmarks/regions/before.py mixed9 [--max-seconds 900]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from qos_plugin.model.configtable import write_makespan_csv
from qos_plugin.model.costs import load_costs
from qos_plugin.model.makespan import MakespanModel, infer_tiers
from qos_plugin.model.template import load_template

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from workflows import BY_NAME  # noqa: E402

COMMIT = "1ea6a740967131982cace857db29c24b78fb222d"
CHILD = """
import json, sys, time
from qos_plugin.model.configtable import load_config_table
from qos_plugin.model.regions import fit_regions
table = load_config_table(sys.argv[1])
limit = float(sys.argv[2])
t0 = time.perf_counter()
class Stop(Exception):
    pass
seen = {}
def progress(done, total):
    seen.update(done=done, total=total)
    if time.perf_counter() - t0 > limit:
        raise Stop
try:
    fit = fit_regions(table, None, progress)
    out = dict(train_s=time.perf_counter() - t0, regions=int(fit.labels.max()) + 1)
except Stop:
    el = time.perf_counter() - t0
    out = dict(train_s=el * seen["total"] / seen["done"], estimated=True,
               ran_s=el, steps_done=seen["done"], steps=seen["total"])
print(json.dumps(out))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workflow", choices=sorted(BY_NAME) + ["1kgenome"])
    p.add_argument("--max-seconds", type=float, default=1200.0)
    a = p.parse_args()
    if a.workflow == "1kgenome":
        kg = ROOT.parent / "shared" / "qosflow-artifact" / "1kgenome"
        template = load_template(kg / "1kg_script_order.json")
        costs = load_costs(kg / "1kg_filtered_spm_results.csv")
        table = MakespanModel(template, costs, infer_tiers(template, costs, [2, 5, 10])) \
            .evaluate([2, 5, 10])
    else:
        case = BY_NAME[a.workflow]
        wf = case.build()
        table = MakespanModel(wf.template, wf.cost_table(list(case.nodes)),
                              case.tiers).evaluate(list(case.nodes))
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", COMMIT],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        csv = Path(tmp) / "makespan.csv"
        write_makespan_csv(table, csv)
        run = subprocess.run([sys.executable, "-c", CHILD, str(csv), str(a.max_seconds)],
                             capture_output=True, text=True, cwd=tmp,
                             env={"PYTHONPATH": str(old), "PATH": "/usr/bin:/bin"})
    if run.returncode != 0:
        print(run.stderr, file=sys.stderr)
        return 1
    result = dict(json.loads(run.stdout), placements=len(table), commit=COMMIT[:7])
    print(json.dumps(result))
    path = HERE / "before.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[a.workflow] = result
    path.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
