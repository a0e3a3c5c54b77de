"""The ranges every number the planner reads must fall in.

A value outside them is a mistake in the file (a unit slip, a corrupted cell, a
tampered model), never a workflow: refusing it on load keeps sums finite and
keeps a prediction from being built on it. Standard library only (the query
path checks models against these).
"""

from __future__ import annotations

# Any time in seconds: a cost, a makespan, a phase. ~31.7 years; a sum of a few
# hundred of them stays far from float overflow.
MAX_SECONDS = 1e9
# Tasks of a stage, tasks per node, concurrent copies.
MAX_TASKS = 10_000_000
# Nodes of one run: more than any machine has.
MAX_NODES = 100_000
# Node counts one training or evaluation takes.
MAX_NODE_COUNTS = 64
# Data sizes in MiB (an exbibyte) and transfer sizes in bytes (a pebibyte).
MAX_MIB = float(1 << 40)
MAX_TRANSFER_BYTES = float(1 << 50)
# Measured rates, MiB/s.
MAX_RATE_MIBPS = 1e12
# Stage order (level) of a stage: any finite value in this range.
MAX_LEVEL = 1e6
# Stages of a template, and characters of a stage or tier name.
MAX_STAGES = 256
MAX_NAME = 128


def check_name(name: object) -> str | None:
    """Why ``name`` cannot name a stage or tier (None when it can): it must be a
    printable string of 1 to MAX_NAME characters, since names end up in file
    columns, error lines and Slurm comments."""
    if not isinstance(name, str):
        return f"is {type(name).__name__}, not a string"
    if not name:
        return "is empty"
    if len(name) > MAX_NAME:
        return f"has {len(name)} characters, more than {MAX_NAME}"
    if not name.isprintable():
        return "has a control or unprintable character"
    return None
