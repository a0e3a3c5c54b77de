"""A job's placement as the environment variables Slurm carries for it.

The SPANK plugin puts these into the job control environment at sbatch; Slurm then
shows them to job_submit.lua (``QOS_*``), to the prolog and epilog (``SPANK_QOS_*``)
and to the job (``SLURM_SPANK_QOS_*``). Pure: strings in, strings out.

=================  ===================================================================
``QOS_ID``         this placement's id; the job's directories are named after it
``QOS_WORKFLOW``   the model answered, ``name@version``
``QOS_DEADLINE``   the deadline in seconds (absent without ``--qos-deadline``)
``QOS_NODES``      nodes the placement uses
``QOS_MAKESPAN``   predicted makespan in seconds
``QOS_REGION``     the placement's region, ``QOS_RULE`` its rule in one line
``QOS_STAGES``     ``stage=tier,...``
``QOS_DIRS``       ``tier=directory,...`` for every tier the placement uses
``QOS_LOCAL``      the node-local tiers used (the node prolog prepares them), comma separated
``QOS_BANDWIDTH``  ``tier=MiB/s,...``, the least the job's deadline needs reserved (the
                   prolog reserves up to its contract in full, or the least under the
                   site's ``reserve = "least"``, admission.py): a shared tier's total, a
                   node-local tier's rate per node
``QOS_STAGE_IN``   declared input to stage into the node-local tiers (optional)
``QOS_STAGE_OUT``  where the node-local outputs go when the job ends (optional)
``QOS_IN_TIERS``   tiers of the stages that read the workflow's input (the stage-in goes
                   there), ``QOS_OUT_TIERS`` those of the last level's stages (the
                   stage-out comes from there)
``QOS_KEEP``       ``1``: keep the shared-tier job directories after the job
                   (``--qos-keep``); otherwise the epilog removes them after stage-out
``QOS_DIR_<T>``    the directory on tier T (one per tier, for job scripts)
``QOS_STAGE_<S>``  ``tier:directory`` of stage S (one per stage, for job scripts)
=================  ===================================================================

``<T>`` and ``<S>`` are the names upper-cased with other characters than letters and
digits replaced by ``_``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qos_plugin.errors import InputError

SPANK_JOB_PREFIX = "SLURM_SPANK_"      # what the job sees
SPANK_PROLOG_PREFIX = "SPANK_"         # what prolog, epilog and PrologSlurmctld see
PLACEMENT_ID = re.compile(r"q[0-9a-f]{12}")


def env_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _pairs(text: str, key: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise InputError(key, f"{item!r} is not name=value", "the placement is damaged; "
                             "submit the job again")
        out[k] = v
    return out


def _join(d: Mapping[str, object]) -> str:
    return ",".join(f"{k}={v}" for k, v in d.items())


@dataclass
class Placement:
    id: str
    workflow: str
    nodes: int
    makespan: float
    region: int
    rule: str
    stages: dict[str, str]
    dirs: dict[str, str]
    local: list[str]
    bandwidth: dict[str, float] = field(default_factory=dict)   # MiB/s
    deadline: float | None = None
    stage_in: str = ""
    stage_out: str = ""
    in_tiers: list[str] = field(default_factory=list)
    out_tiers: list[str] = field(default_factory=list)
    keep: bool = False

    def to_env(self) -> dict[str, str]:
        env = {"QOS_ID": self.id, "QOS_WORKFLOW": self.workflow, "QOS_NODES": str(self.nodes),
               "QOS_MAKESPAN": f"{self.makespan:.1f}", "QOS_REGION": str(self.region),
               "QOS_RULE": self.rule, "QOS_STAGES": _join(self.stages),
               "QOS_DIRS": _join(self.dirs), "QOS_LOCAL": ",".join(self.local),
               "QOS_BANDWIDTH": _join({t: f"{b:.3f}" for t, b in self.bandwidth.items()}),
               "QOS_IN_TIERS": ",".join(self.in_tiers), "QOS_OUT_TIERS": ",".join(self.out_tiers)}
        if self.deadline is not None:
            env["QOS_DEADLINE"] = str(int(round(self.deadline)))
        if self.stage_in:
            env["QOS_STAGE_IN"] = self.stage_in
        if self.stage_out:
            env["QOS_STAGE_OUT"] = self.stage_out
        if self.keep:
            env["QOS_KEEP"] = "1"
        for t, d in self.dirs.items():
            env[f"QOS_DIR_{env_name(t)}"] = d
        for s, t in self.stages.items():
            env[f"QOS_STAGE_{env_name(s)}"] = f"{t}:{self.dirs[t]}"
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str = "") -> Placement | None:
        """The placement in ``env`` (keys after ``prefix``), or None for a job
        submitted without ``--qos-*`` options."""
        def get(key: str, default: str | None = None) -> str:
            v = env.get(prefix + key, default)
            if v is None:
                raise InputError(prefix + key, "missing from the job's environment",
                                 "the placement is incomplete; submit the job again")
            return v
        if prefix + "QOS_ID" not in env:
            return None
        try:
            bandwidth = {t: float(b) for t, b in _pairs(get("QOS_BANDWIDTH", ""),
                                                         "QOS_BANDWIDTH").items()}
            deadline = env.get(prefix + "QOS_DEADLINE")
            return cls(id=get("QOS_ID"), workflow=get("QOS_WORKFLOW"), nodes=int(get("QOS_NODES")),
                       makespan=float(get("QOS_MAKESPAN")), region=int(get("QOS_REGION")),
                       rule=get("QOS_RULE", ""), stages=_pairs(get("QOS_STAGES"), "QOS_STAGES"),
                       dirs=_pairs(get("QOS_DIRS"), "QOS_DIRS"),
                       local=[t for t in get("QOS_LOCAL", "").split(",") if t],
                       bandwidth=bandwidth,
                       deadline=float(deadline) if deadline else None,
                       stage_in=get("QOS_STAGE_IN", ""), stage_out=get("QOS_STAGE_OUT", ""),
                       in_tiers=[t for t in get("QOS_IN_TIERS", "").split(",") if t],
                       out_tiers=[t for t in get("QOS_OUT_TIERS", "").split(",") if t],
                       keep=get("QOS_KEEP", "") == "1")
        except ValueError as e:
            raise InputError("job environment", f"malformed placement ({e})",
                             "submit the job again") from None

    def job_dir(self, tier: str) -> Path:
        return Path(self.dirs[tier])


def rule_text(rule: Mapping[str, str]) -> str:
    """A region's rule in one line: ``nodes=1 s00=ram s01 in {pfs,ssd}``."""
    parts = []
    for k, v in rule.items():
        parts.append(f"{k} in {{{v}}}" if "," in v else f"{k}={v}")
    return " ".join(parts)
