"""The site configuration: which storage tiers the cluster has, where a job's
directories go on each, which daemons enforce them, where the trained models are,
and what to do when the planner or a daemon cannot be reached.

```toml
registry = "/var/lib/qos-plugin/models"      # trained models (qos-plan train --registry)
on_unavailable = "open"     # planner/daemon unreachable: "open" runs the job without
                            # placement or reservation; "closed" refuses it
max_nodes = 64              # the most nodes a placement may use (the partition's size)
admin_token_file = "/etc/tokenbucketd/admin.token"   # credential for the daemons
state_dir = "/var/lib/qos-plugin"   # per-job staging records and the hooks' log (root)
reserve = "contract"        # what a deadline job reserves: its contract in full when free
                            # (default), or "least", what its deadline needs (docs/slurm.md)

[tiers.pfs]
kind = "shared"             # or "node-local"
enforce = "daemons"         # its I/O goes through the daemons (default for shared tiers)
path = "/srv/qos/pfs"       # where the data lives: the store behind the daemons (root only)
mount = "/qos/pfs"          # what jobs see: the qosfs mount of every compute node
daemons = ["10.0.0.1:50051", "10.0.0.2:50051"]       # tokenbucketd serving the tier
capacity = "100TiB"         # optional: the most the tier may hold (default: free space)
bandwidth = "400MB/s"       # optional: what it sustains in all; reservations are admitted
                            # against it (a node-local tier: per node)
reserve_margin = 1.2        # optional (1 to 2, default 1): reservations ask this many
                            # times the job contract's rate, for what a busy tier's
                            # clients fall short of their reservation (docs/slurm.md)

[tiers.ram]
kind = "node-local"
enforce = "direct"          # used at kernel speed (default for node-local tiers)
path = "/dev/shm/qos"       # the same path on every node, each node's own storage

[nodes.node1]               # a node's own daemon, for node-local tiers with
daemon = "10.0.1.1:50051"   # enforce = "daemons" (their reservations go there)
```

A job's directory on a tier is ``<job root>/<user>/<id>``: under ``mount`` for a tier
enforced through daemons (created in ``path``, the store, by the controller's prolog),
under ``path`` for a tier used directly.

Standard library only: the sbatch helper loads it as the submitting user.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qos_plugin.errors import InputError

ENV_SITE = "QOS_SITE_CONFIG"
DEFAULT_SITE = Path("/etc/qos-plugin/site.toml")
KINDS = ("shared", "node-local")
ENFORCE = ("daemons", "direct")
# A reservation more than twice what the job's contract needs is not a margin.
MAX_RESERVE_MARGIN = 2.0
MODES = ("open", "closed")
# What a deadline job reserves: the rules slurm/admission.py applies.
RESERVE_RULES = ("contract", "least")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?)B?\s*", re.IGNORECASE)
_TIER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")


def parse_size(text: str, what: str) -> int:
    """Bytes in ``text`` such as ``100GiB``, ``1.5TB`` or ``4096``."""
    m = _SIZE.fullmatch(str(text))
    if not m:
        raise InputError(what, f"{text!r} is not a size", "write it like 500GiB or 2TB")
    scale = 1024 if m.group(3) else 1000
    power = " KMGTP".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * scale ** power)


def parse_rate(text: str, what: str) -> float:
    """Bytes/s in ``text`` such as ``400MB/s`` or ``2GiB/s`` (more than 0)."""
    size, sep, _ = str(text).strip().partition("/")
    if not sep or not _.strip().lower() == "s":
        raise InputError(what, f"{text!r} is not a rate", "write it like 400MB/s or 2GiB/s")
    bps = float(parse_size(size, what))
    if bps <= 0:
        raise InputError(what, f"{text!r} is not a rate above 0", "write it like 400MB/s")
    return bps


@dataclass(frozen=True)
class SiteTier:
    name: str
    kind: str
    path: Path
    daemons: tuple[str, ...]
    capacity: int | None = None
    enforce: str = "direct"
    mount: Path | None = None
    bandwidth: float | None = None      # bytes/s the tier sustains (admission)
    reserve_margin: float = 1.0         # reservations: the contract's rate times this

    @property
    def is_local(self) -> bool:
        return self.kind == "node-local"

    @property
    def enforced(self) -> bool:
        return self.enforce == "daemons"

    @property
    def job_root(self) -> Path:
        """Where jobs see the tier: the qosfs mount when enforced, else the tier itself."""
        return self.mount if self.mount is not None else self.path


@dataclass(frozen=True)
class Site:
    source: Path
    registry: Path
    tiers: dict[str, SiteTier]
    on_unavailable: str = "open"
    max_nodes: int | None = None
    admin_token_file: Path | None = None
    state_dir: Path = Path("/var/lib/qos-plugin")
    node_daemons: dict[str, str] = field(default_factory=dict)
    reserve: str = "contract"

    def tier(self, name: str) -> SiteTier:
        if name not in self.tiers:
            raise InputError(str(self.source), f"tier {name!r} is not configured on this "
                             "cluster", f"known tiers: {', '.join(self.tiers)}; ask the "
                             "administrators to add it or exclude it with --qos-exclude-tier")
        return self.tiers[name]

    def admin_token(self) -> str | None:
        if self.admin_token_file is None:
            return None
        try:
            return self.admin_token_file.read_text().strip() or None
        except OSError as e:
            raise InputError(str(self.source), f"cannot read admin_token_file "
                             f"{str(self.admin_token_file)!r} ({e.strerror})",
                             "run the prolog as root or fix the path") from None


def site_path(given: str | Path | None = None) -> Path:
    if given:
        return Path(given)
    return Path(os.environ.get(ENV_SITE) or DEFAULT_SITE)


def load_site(path: str | Path | None = None) -> Site:
    p = site_path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except OSError as e:
        raise InputError(str(p), f"cannot read the site configuration ({e.strerror})",
                         f"create it or set {ENV_SITE}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(str(p), f"not valid TOML ({e})", "fix the syntax") from None
    return site_from_dict(raw, p)


def _get(raw: dict[str, Any], key: str, kind: type, source: str, default: Any = None) -> Any:
    value = raw.get(key, default)
    # A TOML boolean is a Python int: max_nodes = true must not read as 1.
    if value is not None and (not isinstance(value, kind) or
                              (kind is int and isinstance(value, bool))):
        raise InputError(source, f"{key} = {value!r} is not a {kind.__name__}",
                         f"write {key} as a TOML {kind.__name__}")
    return value


def site_from_dict(raw: dict[str, Any], source: Path) -> Site:
    src = str(source)
    known = {"registry", "on_unavailable", "max_nodes", "admin_token_file", "state_dir",
             "reserve", "tiers", "nodes"}
    extra = sorted(set(raw) - known)
    if extra:
        raise InputError(src, f"unknown key {extra[0]!r}",
                         f"known keys: {', '.join(sorted(known))}")
    registry = _get(raw, "registry", str, src)
    if not registry:
        raise InputError(src, "no registry", 'add registry = "/path/to/models"')
    mode = _get(raw, "on_unavailable", str, src, "open")
    if mode not in MODES:
        raise InputError(src, f"on_unavailable = {mode!r}", 'use "open" or "closed"')
    reserve = _get(raw, "reserve", str, src, "contract")
    if reserve not in RESERVE_RULES:
        raise InputError(src, f"reserve = {reserve[:40]!r} is not a reserve rule",
                         "use " + " or ".join(f'"{r}"' for r in RESERVE_RULES))
    max_nodes = _get(raw, "max_nodes", int, src)
    if max_nodes is not None and max_nodes < 1:
        raise InputError(src, f"max_nodes = {max_nodes}", "give 1 or more")
    token = _get(raw, "admin_token_file", str, src)
    state = _get(raw, "state_dir", str, src, "/var/lib/qos-plugin")
    tiers_raw = _get(raw, "tiers", dict, src, {})
    tiers: dict[str, SiteTier] = {}
    for name, t in tiers_raw.items():
        where = f"{src} [tiers.{name}]"
        if not _TIER_NAME.fullmatch(name) or not isinstance(t, dict):
            raise InputError(where, f"{name!r} is not a tier table with a valid name",
                             "name tiers with letters, digits, '_' or '-'")
        keys = {"kind", "path", "daemons", "capacity", "enforce", "mount", "bandwidth",
                "reserve_margin"}
        extra = sorted(set(t) - keys)
        if extra:
            raise InputError(where, f"unknown key {extra[0]!r}",
                             f"known keys: {', '.join(sorted(keys))}")
        kind = _get(t, "kind", str, where)
        if kind not in KINDS:
            raise InputError(where, f"kind = {kind!r}", 'use "shared" or "node-local"')
        path = _get(t, "path", str, where)
        if not path or not Path(path).is_absolute():
            raise InputError(where, f"path = {path!r}", "give the absolute directory jobs use")
        daemons = _get(t, "daemons", list, where, [])
        if not all(isinstance(d, str) and ":" in d for d in daemons):
            raise InputError(where, f"daemons = {daemons!r}", 'list "host:port" strings')
        cap = t.get("capacity")
        capacity = parse_size(str(cap), f"{where} capacity") if cap is not None else None
        enforce = _get(t, "enforce", str, where, "direct" if kind == "node-local" else
                       ("daemons" if t.get("mount") else "direct"))
        if enforce not in ENFORCE:
            raise InputError(where, f"enforce = {enforce!r}", 'use "daemons" or "direct"')
        mount = _get(t, "mount", str, where)
        if mount is not None and not Path(mount).is_absolute():
            raise InputError(where, f"mount = {mount!r}", "give the absolute path jobs see")
        if enforce == "daemons" and kind == "shared" and (not mount or not daemons):
            raise InputError(where, "enforce = \"daemons\" needs mount and daemons",
                             "add the qosfs mount point jobs see and the tier's daemons, "
                             "or set enforce = \"direct\"")
        if enforce == "daemons" and kind == "node-local" and not mount:
            raise InputError(where, "enforce = \"daemons\" needs mount",
                             "add the qosfs mount point jobs see on every node")
        bw = t.get("bandwidth")
        bandwidth = parse_rate(str(bw), f"{where} bandwidth") if bw is not None else None
        margin = t.get("reserve_margin", 1.0)
        if isinstance(margin, bool) or not isinstance(margin, int | float) \
                or not 1.0 <= margin <= MAX_RESERVE_MARGIN:
            raise InputError(where, f"reserve_margin = {str(margin)[:20]}",
                             f"give a number from 1 to {MAX_RESERVE_MARGIN:g}")
        tiers[name] = SiteTier(name, kind, Path(path), tuple(daemons), capacity, enforce,
                               Path(mount) if mount else None, bandwidth, float(margin))
    if not tiers:
        raise InputError(src, "no tiers", "declare at least one [tiers.NAME] table")
    nodes: dict[str, str] = {}
    for node, n in _get(raw, "nodes", dict, src, {}).items():
        where = f"{src} [nodes.{node}]"
        if not isinstance(n, dict) or set(n) - {"daemon"}:
            raise InputError(where, f"{n!r} is not a table with a daemon key",
                             'write daemon = "host:port"')
        d = _get(n, "daemon", str, where)
        if d is not None:
            if ":" not in d:
                raise InputError(where, f"daemon = {d!r}", 'write "host:port"')
            nodes[node] = d
    return Site(source, Path(registry), tiers, mode, max_nodes,
                Path(token) if token else None, Path(state), nodes, reserve)
