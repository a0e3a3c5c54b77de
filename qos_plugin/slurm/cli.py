"""``qos-slurm``: the Slurm side's entry points.

``plan``     run by the SPANK plugin at sbatch as the submitting user: prints the
             placement as ``KEY=VALUE`` lines (exit 0), or one line saying why not:
             exit 1 bad input, 3 infeasible, 4 planner unavailable
``prolog``   PrologSlurmctld: create the job's shared-tier directories, reserve its
             bandwidth on the daemons
``epilog``   EpilogSlurmctld: release the job's reservations
``node-prolog``  slurmd's Prolog on each of the job's nodes: node-local tier
             directories and stage-in
``node-epilog``  slurmd's Epilog on each node: stage-out, remove the directories

``plan`` imports the standard library only; the others import gRPC when they run.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import sys
from collections.abc import Sequence
from typing import NoReturn

from qos_plugin.errors import InputError, QosPluginError

EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_UNAVAILABLE = 1, 3, 4


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line on stdout, where the SPANK plugin reads it.
        print(f"qos: {message}")
        sys.exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="qos-slurm", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--site", help="site configuration (default $QOS_SITE_CONFIG or "
                   "/etc/qos-plugin/site.toml)")
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("plan", help="answer a job's QoS query (the SPANK plugin runs it)")
    pl.add_argument("--workflow")
    pl.add_argument("--deadline")
    pl.add_argument("--max-nodes")
    pl.add_argument("--exclude-tier")
    pl.add_argument("--objective")
    pl.add_argument("--stage-in")
    pl.add_argument("--stage-out")
    pl.add_argument("--keep")
    pl.add_argument("--user", help="the submitting user (default: the caller)")
    sub.add_parser("prolog", help="PrologSlurmctld: directories and reservations")
    sub.add_parser("epilog", help="EpilogSlurmctld: release the reservations")
    sub.add_parser("node-prolog", help="slurmd Prolog: node-local directories, stage-in")
    sub.add_parser("node-epilog", help="slurmd Epilog: stage-out, remove the directories")
    return p


def cmd_plan(a: argparse.Namespace) -> int:
    from qos_plugin.slurm.plan import Infeasible, Unavailable, parse_request, plan
    from qos_plugin.slurm.site import load_site

    try:
        req = parse_request(a.workflow, a.deadline, a.max_nodes, a.exclude_tier,
                            a.objective, a.stage_in, a.stage_out, a.keep)
        try:
            site = load_site(a.site)
        except InputError as e:
            raise Unavailable(f"planner unavailable: {e}") from None
        user = a.user or pwd.getpwuid(os.getuid()).pw_name
        placement = plan(site, req, user)
    except Unavailable as e:
        print(str(e))
        return EXIT_UNAVAILABLE
    except Infeasible as e:
        print(str(e))
        return EXIT_INFEASIBLE
    except QosPluginError as e:
        print(f"qos: {e}")
        return EXIT_BAD_INPUT
    for k, v in placement.to_env().items():
        print(f"{k}={v}")
    return 0


def _hook_logging(site_path: str | None) -> None:
    """The hooks run under slurmctld with nowhere to print: log to the state dir."""
    from qos_plugin.slurm.site import load_site

    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    try:
        state = load_site(site_path).state_dir
        state.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(state / "qos-slurm.log"))
    except (QosPluginError, OSError):
        pass
    logging.basicConfig(level=logging.INFO, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_prolog(a: argparse.Namespace) -> int:
    from qos_plugin.slurm.jobhooks import prolog

    return prolog(a.site, os.environ)


def cmd_epilog(a: argparse.Namespace) -> int:
    from qos_plugin.slurm.jobhooks import epilog

    return epilog(a.site, os.environ)


def cmd_node_prolog(a: argparse.Namespace) -> int:
    from qos_plugin.slurm.staging import node_prolog

    return node_prolog(a.site, dict(os.environ))


def cmd_node_epilog(a: argparse.Namespace) -> int:
    from qos_plugin.slurm.staging import node_epilog

    return node_epilog(a.site, dict(os.environ))


COMMANDS = {"plan": cmd_plan, "prolog": cmd_prolog, "epilog": cmd_epilog,
            "node-prolog": cmd_node_prolog, "node-epilog": cmd_node_epilog}


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.command != "plan":
        _hook_logging(a.site)
    return COMMANDS[a.command](a)


if __name__ == "__main__":
    sys.exit(main())
