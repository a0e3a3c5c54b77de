"""Durable policies: a SQLite table, changed row by row as policies change.

A lone daemon keeps its policies here and nowhere else; a daemon of a group keeps here
its copy of etcd's (``core.replica``), with the etcd revision it reflects, and serves it
while etcd is unreachable. A daemon restarted (even after ``kill -9``) reads it back.
Rows marked deleted are tombstones of the replication that used peer clocks; they are
dropped when the table is opened.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from tokenbucket_daemon.core.policy import Kind, Policy, Scope, Selector

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policy (
    kind INTEGER NOT NULL, value TEXT NOT NULL, tier TEXT NOT NULL,
    limit_bps REAL NOT NULL, reservation_bps REAL NOT NULL, weight REAL NOT NULL,
    burst_bytes INTEGER NOT NULL, updated_ns INTEGER NOT NULL, origin TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, scope INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, value, tier));
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class PolicyStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # autocommit off; every change is its own committed transaction, and WAL
        # plus synchronous=FULL makes a committed policy survive a crash.
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(policy)")}
        if "scope" not in cols:      # a state_dir from before group-scope limits
            self._db.execute("ALTER TABLE policy ADD COLUMN scope INTEGER NOT NULL DEFAULT 0")
        self._db.execute("DELETE FROM policy WHERE deleted = 1")
        self._db.commit()

    def write(self, upserts: Iterable[Policy], deletes: Iterable[tuple[Selector, str]],
              revision: int) -> None:
        """Store and delete policies and record the etcd ``revision``, all or nothing."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO policy (kind, value, tier, limit_bps, reservation_bps,"
                " weight, burst_bytes, updated_ns, origin, deleted, scope)"
                " VALUES (?,?,?,?,?,?,?,?,?,0,?)",
                [(int(p.selector.kind), p.selector.value, p.tier, p.limit_bps,
                  p.reservation_bps, p.weight, p.burst_bytes, p.updated_ns, p.origin,
                  int(p.scope)) for p in upserts])
            self._db.executemany(
                "DELETE FROM policy WHERE kind = ? AND value = ? AND tier = ?",
                [(int(sel.kind), sel.value, tier) for sel, tier in deletes])
            self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES "
                             "('etcd_revision', ?)", (revision,))

    def save(self, p: Policy) -> None:
        """Store one policy (keeping the recorded revision)."""
        self.write([p], [], self.load()[1])

    def load(self) -> tuple[list[Policy], int]:
        """(the policies, the etcd revision they reflect; 0 when none)."""
        rows = self._db.execute(
            "SELECT kind, value, tier, limit_bps, reservation_bps, weight, burst_bytes,"
            " updated_ns, origin, scope FROM policy ORDER BY kind, value, tier")
        live = [Policy(Selector(Kind(kind), value), tier, lim, res, w, burst, ns, origin,
                       Scope(scope))
                for kind, value, tier, lim, res, w, burst, ns, origin, scope in rows]
        rev = self._db.execute("SELECT value FROM meta WHERE name = 'etcd_revision'").fetchone()
        return live, int(rev[0]) if rev else 0

    def close(self) -> None:
        self._db.close()
