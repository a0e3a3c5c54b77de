"""A workflow of our own for any cluster's tiers: four stages in three levels
(two parallel preprocessing stages read the input, an analysis stage reads both,
a summary stage reads the analysis), priced with the synthetic bandwidth model
from the tiers' nominal speeds. ``deploy/local`` trains it for the local cluster so
that sbatch has a model without profiling the machine first."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from qos_plugin.model.costs import save_costs
from qos_plugin.model.iodata import write_io_csv
from qos_plugin.model.synthetic import StageIO, SyntheticWorkflow, TierModel
from qos_plugin.model.template import Stage, WorkflowTemplate, template_to_dict
from qos_plugin.model.tiers import Tier, TierKind, TierSet


def pipeline(tiers: Sequence[tuple[str, str]], speeds: Mapping[str, TierModel],
             name: str = "pipeline", scale: float = 1.0) -> SyntheticWorkflow:
    """``tiers`` as (name, kind), shared first; ``scale`` multiplies every volume."""
    ts = TierSet(tuple(Tier(n, TierKind(k)) for n, k in tiers))
    inp = {"initial_data": ("input.*",)}
    stages = (
        Stage("prep_a", 1.0, 8, 8, inp, ("prep_a_out.*",)),
        Stage("prep_b", 1.0, 4, 4, inp, ("prep_b_out.*",)),
        Stage("analyze", 2.0, 8, 8, {"prep_a": ("prep_a_out.*",), "prep_b": ("prep_b_out.*",)},
              ("analyze_out.*",)),
        Stage("summary", 3.0, 1, 1, {"analyze": ("analyze_out.*",)}, ("summary_out.*",)),
    )
    s = scale
    io = {"prep_a": StageIO({"initial_data": 600 * s}, 400 * s),
          "prep_b": StageIO({"initial_data": 300 * s}, 250 * s),
          "analyze": StageIO({"prep_a": 400 * s, "prep_b": 120 * s}, 300 * s),
          "summary": StageIO({"analyze": 900 * s}, 50 * s)}
    return SyntheticWorkflow(WorkflowTemplate(name, stages), io, ts, dict(speeds))


def write_pipeline(wf: SyntheticWorkflow, out: Path, nodes: Sequence[int]) -> dict[str, Path]:
    """Template JSON, cost table CSV and I/O primitives CSV, ready for ``qos-plan train``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"template": out / f"{wf.template.name}.json",
             "costs": out / f"{wf.template.name}-costs.csv",
             "io": out / f"{wf.template.name}-io.csv"}
    paths["template"].write_text(json.dumps(template_to_dict(wf.template), indent=1))
    save_costs(wf.cost_table(nodes), paths["costs"])
    write_io_csv(wf.io_data(), paths["io"])
    return paths
