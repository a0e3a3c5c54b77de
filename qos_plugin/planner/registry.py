"""The model registry: a directory of versioned trained models.

Layout: ``<registry>/<name>/v<version>.json``; training again under a name adds
the next version, queries use the newest unless ``name@version`` is asked for.
The registry directory is, in order: ``--registry DIR``, the environment
variable ``QOS_PLAN_REGISTRY``, ``registry = "..."`` in the first config file
found (``$QOS_PLAN_CONFIG``, ``$XDG_CONFIG_HOME/qos-plugin/config.toml``,
``/etc/qos-plugin/config.toml``), else ``$XDG_DATA_HOME/qos-plugin/models``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qos_plugin.errors import InputError
from qos_plugin.planner.trained import TrainedModel, read_model

ENV_REGISTRY = "QOS_PLAN_REGISTRY"
ENV_CONFIG = "QOS_PLAN_CONFIG"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# ASCII digits, no leading zero: v01.json would be a second file of version 1.
_VERSION_FILE = re.compile(r"v([1-9][0-9]{0,8})\.json")


def config_files(env: Mapping[str, str]) -> list[Path]:
    home = Path(env.get("HOME", "~")).expanduser()
    xdg = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    files = [Path(env[ENV_CONFIG])] if env.get(ENV_CONFIG) else []
    return files + [xdg / "qos-plugin" / "config.toml", Path("/etc/qos-plugin/config.toml")]


def default_registry(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(ENV_REGISTRY):
        return Path(env[ENV_REGISTRY])
    for f in config_files(env):
        if f.is_file():
            try:
                conf = tomllib.loads(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
                raise InputError(str(f), f"unreadable config ({e})",
                                 "fix the file or set QOS_PLAN_REGISTRY") from None
            if "registry" in conf:
                where = conf["registry"]
                if not isinstance(where, str) or not where or "\0" in where:
                    raise InputError(str(f), f"registry = {str(where)[:40]!r} is not a path",
                                     'write registry = "/path/to/models"')
                return Path(where).expanduser()
    home = Path(env.get("HOME", "~")).expanduser()
    return Path(env.get("XDG_DATA_HOME") or home / ".local" / "share") / "qos-plugin" / "models"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InputError("model name", f"{name[:80]!r} is not a valid name",
                         "use letters, digits, '.', '_' or '-' (up to 64, starting with a "
                         "letter or digit)")
    return name


@dataclass(frozen=True)
class Registry:
    root: Path

    def versions(self, name: str) -> list[int]:
        d = self.root / check_name(name)
        if not d.is_dir():
            return []
        return sorted(int(m.group(1)) for f in d.iterdir()
                      if (m := _VERSION_FILE.fullmatch(f.name)))

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(d.name for d in self.root.iterdir()
                      if d.is_dir() and NAME.fullmatch(d.name) and self.versions(d.name))

    def next_version(self, name: str) -> int:
        have = self.versions(name)
        return (have[-1] + 1) if have else 1

    def save(self, model: TrainedModel) -> Path:
        """Write ``model`` as its version; never overwrites an existing version."""
        d = self.root / check_name(model.name)
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"v{model.version}.json"
        if path.exists():
            raise InputError(str(path), "this model version exists already",
                             "train again to add the next version")
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(model.to_json(), fh, allow_nan=False, separators=(",", ":"))
            os.replace(tmp, path)        # readers never see half a model
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def path_of(self, ref: str) -> Path:
        name, _, ver = ref.partition("@")
        have = self.versions(name)
        if not have:
            known = ", ".join(self.names()) or "none"
            raise InputError(f"model {name!r}", f"not in registry {self.root}",
                             f"models there: {known}; train one with 'qos-plan train {name} "
                             "...'")
        if ver:
            # NAME@1 and NAME@v1 both name version 1, as the file v1.json and the
            # placement's QOS_WORKFLOW (name@1) do; ASCII digits only.
            digits = ver[1:] if ver[:1] in ("v", "V") else ver
            if not (digits.isascii() and digits.isdigit() and len(digits) <= 9) \
                    or int(digits) not in have:
                raise InputError(f"model {ref[:80]!r}", f"no version {ver[:20]!r}",
                                 f"versions of {name}: {', '.join(map(str, have))}")
            return self.root / name / f"v{int(digits)}.json"
        return self.root / name / f"v{have[-1]}.json"

    def load(self, ref: str) -> TrainedModel:
        return read_model(self.path_of(ref))

    def summaries(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name in self.names():
            path = self.path_of(name)
            try:
                m = read_model(path)
            except InputError as e:
                out.append({"name": name, "versions": self.versions(name), "error": str(e)})
                continue
            entry: dict[str, Any] = {
                "name": name, "versions": self.versions(name), "created": m.created,
                "workflow": m.provenance.get("workflow", m.name), "stages": len(m.stages),
                "tiers": m.tier_names, "nodes": m.node_counts, "placements": len(m),
                "regions": len(m.regions)}
            out.append(entry)
        return out
