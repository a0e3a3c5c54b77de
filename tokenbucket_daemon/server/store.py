"""Durable policies: a SQLite table, rewritten row by row as policies change.

A daemon restarted (even after ``kill -9``) reads its policies back from here.
Deletions are kept as tombstones (a row with ``deleted = 1``) so replication
between daemons can tell "deleted later" from "never seen".
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from tokenbucket_daemon.core.policy import Kind, Policy, Scope, Selector

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policy (
    kind INTEGER NOT NULL, value TEXT NOT NULL, tier TEXT NOT NULL,
    limit_bps REAL NOT NULL, reservation_bps REAL NOT NULL, weight REAL NOT NULL,
    burst_bytes INTEGER NOT NULL, updated_ns INTEGER NOT NULL, origin TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, scope INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, value, tier))
"""


class PolicyStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # autocommit off; every change is its own committed transaction, and WAL
        # plus synchronous=FULL makes a committed policy survive a crash.
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(policy)")}
        if "scope" not in cols:      # a state_dir from before group-scope limits
            self._db.execute("ALTER TABLE policy ADD COLUMN scope INTEGER NOT NULL DEFAULT 0")
        self._db.commit()

    def save(self, p: Policy, deleted: bool = False) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO policy (kind, value, tier, limit_bps, reservation_bps,"
                " weight, burst_bytes, updated_ns, origin, deleted, scope)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (int(p.selector.kind), p.selector.value, p.tier, p.limit_bps,
                 p.reservation_bps, p.weight, p.burst_bytes, p.updated_ns, p.origin,
                 int(deleted), int(p.scope)))

    def load(self) -> tuple[list[Policy], list[Policy]]:
        """(live policies, tombstones)."""
        live, dead = [], []
        rows = self._db.execute(
            "SELECT kind, value, tier, limit_bps, reservation_bps, weight, burst_bytes,"
            " updated_ns, origin, deleted, scope FROM policy ORDER BY kind, value, tier")
        for row in rows:
            kind, value, tier, lim, res, w, burst, ns, origin, deleted, scope = row
            p = Policy(Selector(Kind(kind), value), tier, lim, res, w, burst, ns, origin,
                       Scope(scope))
            (dead if deleted else live).append(p)
        return live, dead

    def close(self) -> None:
        self._db.close()
