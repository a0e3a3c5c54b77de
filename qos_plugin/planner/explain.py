"""Answers as a person reads them in a terminal, and as one JSON object."""

from __future__ import annotations

from typing import Any

from qos_plugin.planner.query import OPTION, Answer, Choice, Constraints
from qos_plugin.planner.timespec import format_duration
from qos_plugin.planner.trained import TrainedModel


def _secs(x: float) -> str:
    return f"{format_duration(x)} ({x:,.1f} s)"


def _placement(c: Choice) -> str:
    return " ".join(f"{s}={t}" for s, t in c.tiers.items())


def describe_constraints(c: Constraints) -> str:
    parts = []
    if c.deadline is not None:
        parts.append(f"deadline {format_duration(c.deadline)}")
    if c.max_nodes is not None:
        parts.append(f"at most {c.max_nodes} nodes")
    if c.tiers is not None:
        parts.append(f"only tiers {','.join(sorted(c.tiers))}")
    if c.exclude:
        parts.append(f"without {','.join(sorted(c.exclude))}")
    if c.down:
        parts.append(f"{','.join(sorted(c.down))} down")
    return ", ".join(parts) or "no constraints"


def _differs(a: Choice, b: Choice) -> str:
    diff = [f"{s}={t}" for s, t in b.tiers.items() if a.tiers.get(s) != t]
    if a.nodes != b.nodes:
        diff.insert(0, f"N={b.nodes}")
    return " ".join(diff) or "same placement"


def explain_text(model: TrainedModel, ans: Answer) -> str:
    c = ans.constraints
    head = (f"model {model.name} v{model.version}: {c.objective} placement, "
            f"{describe_constraints(c)}")
    lines = [head]
    if ans.feasible and ans.choice is not None:
        ch = ans.choice
        lines.append(f"  feasible: predicted makespan {_secs(ch.makespan)} on {ch.nodes} nodes"
                     + (f", {format_duration(ans.margin)} to spare" if ans.margin is not None
                        else ""))
        lines.append(f"  placement: {_placement(ch)}")
        lines += _region_lines(model, ch)
        lines.append(f"  critical path: {ch.critical_path.replace('->', ' -> ')}")
        if ans.runner_up is not None:
            ru = ans.runner_up
            lines.append(f"  runner-up: {_secs(ru.makespan)} on {ru.nodes} nodes "
                         f"({ru.makespan - ch.makespan:+,.1f} s), differs in {_differs(ch, ru)}")
        if ans.with_down_up is not None:
            up = ans.with_down_up
            lines.append(f"  with {','.join(sorted(c.down))} up it would be "
                         f"{_secs(up.makespan)} ({_differs(ch, up)}); the outage costs "
                         f"{ch.makespan - up.makespan:,.1f} s")
        lines.append("  bandwidth to hold the prediction: " + _bandwidth_text(ans))
        return "\n".join(lines)
    lines.append(f"  infeasible: {_binding_text(model, ans)}")
    if ans.closest is not None:
        cl = ans.closest
        miss = f", misses the deadline by {_secs(ans.miss)}" if ans.miss is not None else ""
        lines.append(f"  closest: {_secs(cl.makespan)} on {cl.nodes} nodes{miss}")
        lines.append(f"           {_placement(cl)}")
    for name, ch in ans.relaxations.items():
        lines.append(f"  without {OPTION[name]}: {_secs(ch.makespan)} on {ch.nodes} nodes "
                     f"({_placement(ch)})")
    return "\n".join(lines)


def _binding_text(model: TrainedModel, ans: Answer) -> str:
    c = ans.constraints
    if ans.binding == "deadline":
        return (f"no placement meets the deadline {format_duration(c.deadline or 0)} "
                f"({ans.candidates} satisfy the other constraints)")
    if ans.binding == "max_nodes":
        return (f"no placement with at most {c.max_nodes} nodes (the model has N in "
                f"{', '.join(map(str, model.node_counts))})")
    if ans.binding in ("tiers", "exclude", "down"):
        return (f"no valid placement uses only the tiers left by {OPTION[ans.binding]} "
                "(every stage needs a tier, and no move exists between two node-local tiers)")
    return f"the constraints {ans.binding} together leave no placement"


def _region_lines(model: TrainedModel, ch: Choice) -> list[str]:
    r = ch.region
    rank = sorted(model.regions).index(r.id) + 1
    lines = [f"  region {r.id} ({rank} of {len(model.regions)} by median): {r.size} placements, "
             f"median {r.median:,.1f} s, {r.min:,.1f}-{r.max:,.1f} s"]
    fixed = [f"{s}={ch.tiers[s]}" for s in r.critical if s in ch.tiers]
    sets = [f"{s} in {{{v}}}" for s, v in r.rule.items() if "," in v and s != "nodes"]
    lines.append(f"    critical (fixed in this region): {', '.join(fixed) or 'none'}")
    lines.append(f"    flexible (any tier keeps the region): {', '.join(r.flexible) or 'none'}")
    if sets:
        lines.append(f"    restricted: {', '.join(sets)}")
    return lines


def _bandwidth_text(ans: Answer) -> str:
    if not ans.bandwidth:
        return "unknown (model trained without I/O volumes; train with --io-data)"
    parts = []
    for t, b in ans.bandwidth.items():
        txt = f"{t} {float(str(b['mib_per_s'])):,.1f} MiB/s in {b['phase']}"
        if "per_node_mib_per_s" in b:
            txt += f" ({float(str(b['per_node_mib_per_s'])):,.1f} per node)"
        parts.append(txt)
    return "; ".join(parts)


def _choice_json(c: Choice | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"nodes": c.nodes, "tiers": c.tiers, "makespan": c.makespan, "region": c.region.id,
            "critical_path": c.critical_path}


def answer_json(model: TrainedModel, ans: Answer) -> dict[str, Any]:
    c, ch = ans.constraints, ans.choice
    out: dict[str, Any] = {
        "model": model.name, "version": model.version, "feasible": ans.feasible,
        "objective": c.objective,
        "constraints": {"deadline": c.deadline, "max_nodes": c.max_nodes,
                        "tiers": sorted(c.tiers) if c.tiers is not None else None,
                        "exclude": sorted(c.exclude), "down": sorted(c.down)},
        "nodes": ch.nodes if ch else None, "tiers": ch.tiers if ch else None,
        "makespan": ch.makespan if ch else None, "margin": ans.margin,
        "region": ch.region.id if ch else None,
        "rule": ch.region.rule if ch else None,
        "critical": ch.region.critical if ch else None,
        "flexible": ch.region.flexible if ch else None,
        "critical_path": ch.critical_path if ch else None,
        "bandwidth": ans.bandwidth,
        "contract": ans.contract.to_json() if ans.contract is not None else None,
        "runner_up": _choice_json(ans.runner_up),
    }
    if ans.with_down_up is not None:
        out["with_down_tiers_up"] = _choice_json(ans.with_down_up)
    if not ans.feasible:
        out["binding"] = ans.binding
        closest = _choice_json(ans.closest)
        if closest is not None:
            closest["miss"] = ans.miss
        out["closest"] = closest
        out["relaxations"] = {OPTION[k]: _choice_json(v) for k, v in ans.relaxations.items()}
    return out
