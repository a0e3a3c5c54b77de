"""What the SPANK plugin runs at sbatch: answer the job's QoS query and turn the
answer into its placement (tiers, directories, bandwidth), or into one line that
says why not and what would work instead.

Standard library only, and one model read per call: it runs as the submitting user
at every sbatch with ``--qos-*`` options, and its time is added to sbatch's.
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass

from qos_plugin.errors import InputError, QosPluginError
from qos_plugin.planner.contract import Contract, deadline_stretch
from qos_plugin.planner.query import Answer, Choice, Constraints, answer
from qos_plugin.planner.registry import Registry
from qos_plugin.planner.timespec import format_duration, parse_duration
from qos_plugin.planner.trained import TrainedModel
from qos_plugin.slurm.placement import Placement, rule_text
from qos_plugin.slurm.site import Site

MiB = 1 << 20
# The planner's option names as the user typed them at sbatch.
SBATCH_OPTION = {"deadline": "--qos-deadline", "max_nodes": "--qos-max-nodes",
                 "exclude": "--qos-exclude-tier", "tiers": "--qos-exclude-tier",
                 "down": "tiers down"}


class Unavailable(QosPluginError):
    """The planner cannot answer at all (no registry, unreadable model store)."""


class Infeasible(QosPluginError):
    """A well-formed query that no placement meets; the message says why."""


@dataclass(frozen=True)
class Request:
    workflow: str
    deadline: str | None = None
    max_nodes: int | None = None
    exclude: tuple[str, ...] = ()
    objective: str = "frugal"
    stage_in: str = ""
    stage_out: str = ""
    keep: bool = False


def _tiers(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(","))
    if not text or any(not n for n in names):
        raise InputError("--qos-exclude-tier", f"{text!r} has an empty tier name",
                         "give tier names separated by commas")
    return names


def parse_request(workflow: str | None, deadline: str | None = None,
                  max_nodes: str | None = None, exclude: str | None = None,
                  objective: str | None = None, stage_in: str | None = None,
                  stage_out: str | None = None, keep: str | None = None) -> Request:
    """The ``--qos-*`` option values as sbatch got them (strings), checked."""
    if not workflow:
        raise InputError("--qos-workflow", "missing", "name the workflow model the job runs "
                         "(list them with 'qos-plan list')")
    nodes = None
    if max_nodes is not None:
        if not max_nodes.strip().isdecimal() or int(max_nodes) < 1:
            raise InputError("--qos-max-nodes", f"{max_nodes!r} is not a node count",
                             "give a whole number of 1 or more")
        nodes = int(max_nodes)
    if deadline is not None:
        parse_duration(deadline, "--qos-deadline")
    for opt, path in (("--qos-stage-in", stage_in), ("--qos-stage-out", stage_out)):
        if path is not None and (not os.path.isabs(path) or any(c.isspace() for c in path)
                                 or "," in path):
            raise InputError(opt, f"{path!r} is not an absolute path without blanks or commas",
                             "give the full path of a file or directory")
    # Checked now, as the submitting user: found missing at the job's start, it would
    # only end the job after it waited in the queue.
    if stage_in is not None and not os.access(stage_in, os.R_OK):
        raise InputError("--qos-stage-in", f"{stage_in!r} does not exist or you cannot read it",
                         "give a file or directory you can read")
    if keep not in (None, "", "1", "yes", "true"):
        raise InputError("--qos-keep", f"{keep!r} takes no value", "write --qos-keep alone")
    return Request(workflow, deadline, nodes, _tiers(exclude) if exclude else (),
                   objective or "frugal", stage_in or "", stage_out or "", keep is not None)


def load_model(site: Site, ref: str) -> TrainedModel:
    reg = Registry(site.registry)
    if not site.registry.is_dir() or not os.access(site.registry, os.R_OK | os.X_OK):
        raise Unavailable(f"planner unavailable: model registry {str(site.registry)!r} is "
                          "missing or unreadable; tell the administrators")
    try:
        return reg.load(ref)
    except InputError as e:
        raise InputError("--qos-workflow", f"{ref!r}: {e.detail}", e.hint) from None


def _where(c: Choice) -> str:
    tiers = " ".join(f"{s}={t}" for s, t in c.tiers.items())
    # Rounded up like every time in these messages: a deadline set from it must hold.
    nodes = f"{c.nodes} node{'s' * (c.nodes > 1)}"
    return f"{format_duration(math.ceil(c.makespan))} on {nodes} ({tiers})"


def infeasible_text(model: TrainedModel, ans: Answer, site_cap: int | None,
                    user_cap: int | None) -> str:
    """One line: the binding constraint, the closest placement, what would work."""
    c = ans.constraints
    head = f"qos: no placement of {model.name} v{model.version}"
    if ans.binding == "deadline":
        why = (f"{head} meets --qos-deadline={format_duration(c.deadline or 0)}"
               f" ({ans.candidates} placement{'s' * (ans.candidates != 1)} "
               f"{'satisfy' if ans.candidates != 1 else 'satisfies'} the other constraints)")
    elif ans.binding == "max_nodes":
        cap = ("the cluster's limit" if user_cap is None or (site_cap or user_cap) < user_cap
               else "--qos-max-nodes")
        why = f"{head} runs on at most {c.max_nodes} nodes ({cap})"
    elif ans.binding == "sustains":
        caps = ", ".join(f"{t} {v:.1f} MiB/s" for t, v in sorted((c.sustains or {}).items()))
        why = (f"{head} that meets the other constraints needs no more than its tiers "
               f"sustain ({caps}); give a later --qos-deadline, fewer --qos-max-nodes or "
               "exclude the tier")
    elif ans.binding in ("exclude", "tiers"):
        why = f"{head} is left once the excluded tiers are removed (--qos-exclude-tier)"
    else:
        why = f"{head}: the constraints {ans.binding} together leave none"
    parts = [why]
    if ans.closest is not None:
        cl = f"closest: {_where(ans.closest)}"
        if ans.miss is not None and ans.miss > 0:
            cl += f", {format_duration(math.ceil(ans.miss))} late"
        parts.append(cl)
    if ans.binding == "deadline" and ans.closest is not None:
        # Rounded up: a deadline rounded down to the second would miss again.
        parts.append(f"--qos-deadline={format_duration(math.ceil(ans.closest.makespan))} "
                     "would work")
    for name, ch in ans.relaxations.items():
        if name == "max_nodes" and user_cap is None:
            continue
        parts.append(f"without {SBATCH_OPTION[name]}: {_where(ch)}")
    return "; ".join(parts)


def tier_rates(site: Site, contract: Contract, stretch: float = 1.0) -> dict[str, float]:
    """MiB/s to reserve per tier of this site: the contract's rates (a shared tier's
    total, a node-local tier's rate per node) on every tier the job moves data on,
    including the shared tier a node-local placement stages from and flushes to, each
    divided by the deadline's ``stretch`` (``contract.deadline_stretch``) and times the
    tier's ``reserve_margin``."""
    return {t: r * site.tiers[t].reserve_margin for t, r in contract.rates(stretch).items()
            if t in site.tiers}


def sustained(site: Site) -> dict[str, float]:
    """Per enforced tier with a bandwidth, the contract rate (MiB/s) it can reserve
    for: its bandwidth over its ``reserve_margin``."""
    return {t.name: t.bandwidth / MiB / t.reserve_margin for t in site.tiers.values()
            if t.enforced and t.bandwidth is not None}


def new_id() -> str:
    return "q" + secrets.token_hex(6)


def plan(site: Site, req: Request, user: str, placement_id: str | None = None) -> Placement:
    """The placement for ``req``; Infeasible, InputError or Unavailable otherwise."""
    model = load_model(site, req.workflow)
    user_exclude = frozenset(req.exclude)
    unknown = sorted(user_exclude - set(model.tier_names))
    if unknown:
        raise InputError("--qos-exclude-tier", f"unknown tier {unknown[0]!r}",
                         f"workflow {model.name} uses tiers: {', '.join(model.tier_names)}")
    # Tiers the model knows but this cluster lacks can never be placed on.
    missing = frozenset(set(model.tier_names) - set(site.tiers))
    caps = [n for n in (req.max_nodes, site.max_nodes) if n is not None]
    c = Constraints(deadline=parse_duration(req.deadline, "--qos-deadline")
                    if req.deadline else None,
                    max_nodes=min(caps) if caps else None,
                    exclude=user_exclude | missing, objective=req.objective,
                    # Only placements whose reservations the enforced tiers can hold:
                    # a slower one that fits beats a refusal at admission.
                    sustains=sustained(site) or None)
    try:
        ans = answer(model, c)
    except InputError as e:
        raise InputError(e.source.replace("--", "--qos-", 1), e.detail, e.hint) from None
    if not ans.feasible or ans.choice is None:
        # Suggest only what this cluster can run: no tier it lacks, no more nodes than it has.
        def runnable(ch: Choice) -> bool:
            return (not set(ch.tiers.values()) & missing
                    and (site.max_nodes is None or ch.nodes <= site.max_nodes))
        ans.relaxations = {k: ch for k, ch in ans.relaxations.items() if runnable(ch)}
        if ans.closest is not None and not runnable(ans.closest):
            ans.closest = None
        raise Infeasible(infeasible_text(model, ans, site.max_nodes, req.max_nodes))
    ch = ans.choice
    pid = placement_id or new_id()
    used = list(dict.fromkeys(ch.tiers.values()))
    dirs = {t: str(site.tier(t).job_root / user / pid) for t in used}
    if ans.contract is None:
        raise InputError("--qos-workflow", f"model {model.name} v{model.version} has no job "
                         "contracts (trained before them)", "retrain it with 'qos-plan train'")
    bandwidth = tier_rates(site, ans.contract, deadline_stretch(ch.makespan, c.deadline))
    for t, mibps in bandwidth.items():
        cap = site.tier(t).bandwidth
        # Known now: more than the tier sustains even when no other job holds any of it.
        if cap is not None and site.tier(t).enforced and mibps * MiB > cap:
            raise Infeasible(f"qos: the placement of {model.name} v{model.version} needs "
                             f"{mibps:.1f} MiB/s of tier {t}, more than the "
                             f"{cap / MiB:.1f} MiB/s it sustains; give a later "
                             f"--qos-deadline or --qos-exclude-tier={t}")
    local = [t for t in used if site.tier(t).is_local]
    in_tiers, out_tiers = list(ans.contract.stage_in), list(ans.contract.stage_out)
    return Placement(id=pid, workflow=f"{model.name}@{model.version}", nodes=ch.nodes,
                     makespan=ch.makespan, region=ch.region.id, rule=rule_text(ch.region.rule),
                     stages=dict(ch.tiers), dirs=dirs,
                     local=local, bandwidth=bandwidth, deadline=c.deadline,
                     stage_in=req.stage_in, stage_out=req.stage_out,
                     in_tiers=in_tiers, out_tiers=out_tiers, keep=req.keep)
