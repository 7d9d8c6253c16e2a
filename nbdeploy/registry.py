"""The registry of deployments: one sqlite file, safe with several kernels writing at once.

Each row is one version of a named deployment. Versions are allocated inside an IMMEDIATE
transaction, so two kernels deploying the same name get different numbers.
"""

from __future__ import annotations

import builtins
import getpass
import json
import socket
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import config
from .errors import DeploymentNotFound
from .record import Info, Record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    target      TEXT NOT NULL,
    status      TEXT NOT NULL,
    bento_tag   TEXT,
    bento_path  TEXT,
    url         TEXT,
    port        INTEGER,
    pid         INTEGER,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    info        TEXT NOT NULL DEFAULT '{}',
    state       TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       TEXT NOT NULL,
    who      TEXT NOT NULL,
    host     TEXT NOT NULL,
    action   TEXT NOT NULL,
    name     TEXT NOT NULL,
    version  INTEGER,
    detail   TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS keys (
    name        TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoints (
    name        TEXT PRIMARY KEY,
    port        INTEGER NOT NULL,
    pid         INTEGER,
    url         TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
"""

#: Statuses a row can have. ``running`` rows own a live process; at most one per name.
STARTING, RUNNING, STOPPED, FAILED = "starting", "running", "stopped", "failed"
#: Also owning a live process, behind the name's stable endpoint but not live: ``candidate`` (a shadow or a share
#: of a split, its role in ``state["endpoint"]``) and ``standby`` (the previous live version, kept warm while a
#: promotion is watched). Neither is ``running``, so "one running version per name" stays true.
CANDIDATE, STANDBY = "candidate", "standby"
#: Statuses whose version has a process to check and to stop.
SERVING = frozenset({RUNNING, CANDIDATE, STANDBY})


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _column(key: str, value: Any) -> Any:
    if key == "info":
        return json.dumps(value.to_dict() if isinstance(value, Info) else value)
    return json.dumps(value) if key == "state" else value


class Registry:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config.home() / "registry.db"
        with self._connect() as con:
            con.executescript(_SCHEMA)
            if "state" not in {r["name"] for r in con.execute("PRAGMA table_info(deployments)")}:
                con.execute("ALTER TABLE deployments ADD COLUMN state TEXT NOT NULL DEFAULT '{}'")  # older registries
        self.path.chmod(0o600)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA busy_timeout=30000")
            yield con
        finally:
            con.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def allocate(self, name: str, target: str, info: Info | dict[str, Any]) -> Record:
        """Reserve the next version number of ``name`` with status ``starting``."""
        now = _now()
        with self._tx() as con:
            (last,) = con.execute("SELECT COALESCE(MAX(version), 0) FROM deployments WHERE name=?", (name,)).fetchone()
            con.execute(
                "INSERT INTO deployments (name, version, target, status, created_at, updated_at, info)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, last + 1, target, STARTING, now, now, _column("info", info)),
            )
        return self.get(name, last + 1)

    _FIELDS = ("target", "status", "bento_tag", "bento_path", "url", "port", "pid")

    def _assignments(self, fields: dict[str, Any]) -> tuple[str, list[Any]]:
        unknown = set(fields) - set(self._FIELDS) - {"info", "state"}
        if unknown:
            raise ValueError(f"unknown registry fields: {sorted(unknown)}")
        values = [_column(k, v) for k, v in fields.items()]
        return ", ".join(f"{k}=?" for k in fields), values

    def update(self, name: str, version: int, **fields: Any) -> Record:
        cols, values = self._assignments(fields)
        with self._tx() as con:
            cur = con.execute(
                f"UPDATE deployments SET {cols}, updated_at=? WHERE name=? AND version=?",
                (*values, _now(), name, version),
            )
            if cur.rowcount == 0:
                raise DeploymentNotFound(f"no version {version} of deployment '{name}'")
        return self.get(name, version)

    def get(self, name: str, version: int | None = None) -> Record:
        """One version; without ``version``, the running one, else the newest that is not failed."""
        with self._connect() as con:
            if version is not None:
                row = con.execute("SELECT * FROM deployments WHERE name=? AND version=?", (name, version)).fetchone()
            else:
                row = con.execute(
                    f"SELECT * FROM deployments WHERE name=? AND status != 'failed' {self._CURRENT} LIMIT 1",
                    (name,),
                ).fetchone()
        if row is None:
            versions = [r.version for r in self.list(name, all_versions=True)]
            if version is not None and versions:
                known = ", ".join(map(str, versions))
                raise DeploymentNotFound(f"no version {version} of deployment '{name}'", hint=f"its versions: {known}")
            names = ", ".join(sorted({r.name for r in self.list()})) or "none yet"
            raise DeploymentNotFound(f"no deployment '{name}'", hint=f"known deployments: {names}")
        return Record.from_row(row)

    _CURRENT = "ORDER BY status = 'running' DESC, updated_at DESC, version DESC"

    def list(self, name: str | None = None, all_versions: bool = False) -> list[Record]:
        """Every version (``all_versions``) or, per name, the one ``get`` would return."""
        where, args = ("WHERE name=?", (name,)) if name is not None else ("", ())
        with self._connect() as con:
            if all_versions:
                rows = con.execute(f"SELECT * FROM deployments {where} ORDER BY name, version", args).fetchall()
            else:
                cond = f"{where} AND" if where else "WHERE"
                rows = con.execute(
                    f"SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY name {self._CURRENT}) AS rn"
                    f" FROM deployments {cond} status != 'failed') WHERE rn = 1 ORDER BY name",
                    args,
                ).fetchall()
        return [Record.from_row(r) for r in rows]

    def event(self, action: str, name: str, version: int | None = None, **detail: Any) -> None:
        """Append an audit event (who, when, what); events are never updated or deleted."""
        with self._tx() as con:
            con.execute(
                "INSERT INTO events (at, who, host, action, name, version, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_now(), _who(), socket.gethostname(), action, name, version, json.dumps(detail, default=str)),
            )

    def events(
        self, name: str | None = None, *, actions: Iterable[str] | None = None, last: int | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Audit events, oldest first: of ``name`` (else every name), of ``actions`` (else every action), the
        ``last`` ones only (else all)."""
        clauses, args = [], []
        if name:
            clauses.append("name=?")
            args.append(name)
        if actions is not None:
            wanted = builtins.list(actions)
            clauses.append(f"action IN ({', '.join('?' * len(wanted))})" if wanted else "0")
            args += wanted
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        limit = f" LIMIT {int(last)}" if last is not None else ""
        with self._connect() as con:
            rows = con.execute(f"SELECT * FROM events {where} ORDER BY id DESC{limit}", args).fetchall()
        return [{**dict(zip(r.keys(), r, strict=True)), "detail": json.loads(r["detail"])} for r in reversed(rows)]

    def claim(
        self, name: str, version: int, newest_wins: bool = False, **fields: Any
    ) -> tuple[Record, builtins.list[Record], Record | None]:
        """Mark ``version`` running and return the other running versions, atomically.

        Two kernels finishing deploys of one name at once each see the other's claim or none. With
        ``newest_wins`` (deploys), a version that finds a newer one running does not claim: it is marked
        stopped and the newer one is returned third, for the caller to say so. Otherwise whoever claims
        last retires the rest. Either way exactly one version is left running.
        """
        with self._tx() as con:
            if newest_wins:
                newer = con.execute(
                    "SELECT * FROM deployments WHERE name=? AND status=? AND version > ? ORDER BY version DESC",
                    (name, RUNNING, version),
                ).fetchone()
                if newer is not None:
                    con.execute(
                        "UPDATE deployments SET status=?, pid=NULL, updated_at=? WHERE name=? AND version=?",
                        (STOPPED, _now(), name, version),
                    )
                    return self._row(con, name, version), [], Record.from_row(newer)
            cols, values = self._assignments({"status": RUNNING, **fields})
            con.execute(
                f"UPDATE deployments SET {cols}, updated_at=? WHERE name=? AND version=?",
                (*values, _now(), name, version),
            )
            rows = con.execute(
                "SELECT * FROM deployments WHERE name=? AND status=? AND version != ?", (name, RUNNING, version)
            ).fetchall()
            mine = self._row(con, name, version)
        return mine, [Record.from_row(r) for r in rows], None

    @staticmethod
    def _row(con: sqlite3.Connection, name: str, version: int) -> Record:
        row = con.execute("SELECT * FROM deployments WHERE name=? AND version=?", (name, version)).fetchone()
        return Record.from_row(row)

    def key(self, name: str) -> str | None:
        """The API key the SDK sends for ``name`` (this file is readable by its owner only)."""
        with self._connect() as con:
            row = con.execute("SELECT secret FROM keys WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def set_key(self, name: str, secret: str, sha256: str) -> None:
        with self._tx() as con:
            con.execute(
                "INSERT INTO keys (name, secret, sha256, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET secret=excluded.secret, sha256=excluded.sha256,"
                " created_at=excluded.created_at",
                (name, secret, sha256, _now()),
            )

    def running(self, name: str) -> builtins.list[Record]:
        with self._connect() as con:
            rows = con.execute(
                "SELECT * FROM deployments WHERE name=? AND status=? ORDER BY version", (name, RUNNING)
            ).fetchall()
        return [Record.from_row(r) for r in rows]

    def serving(self, name: str) -> builtins.list[Record]:
        """Every version of ``name`` that owns a process: running, candidate and standby."""
        marks = ", ".join("?" * len(SERVING))
        with self._connect() as con:
            rows = con.execute(
                f"SELECT * FROM deployments WHERE name=? AND status IN ({marks}) ORDER BY version",
                (name, *sorted(SERVING)),
            ).fetchall()
        return [Record.from_row(r) for r in rows]

    # -- the stable endpoint of a name: its router's port (chosen once, never changed) and process --

    def endpoint(self, name: str) -> dict[str, Any] | None:
        """``{"name", "port", "pid", "url", "created_at"}`` of the name's router, or None if it never had one."""
        with self._connect() as con:
            row = con.execute("SELECT * FROM endpoints WHERE name=?", (name,)).fetchone()
        return dict(zip(row.keys(), row, strict=True)) if row else None

    def set_endpoint(self, name: str, port: int, pid: int | None) -> dict[str, Any]:
        """Record the router's process; the port of an existing row is kept (the stable URL never changes)."""
        with self._tx() as con:
            con.execute(
                "INSERT INTO endpoints (name, port, pid, url, created_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET pid=excluded.pid",
                (name, port, pid, f"http://127.0.0.1:{port}", _now()),
            )
        found = self.endpoint(name)
        assert found is not None
        return found

    def endpoints(self) -> builtins.list[dict[str, Any]]:
        with self._connect() as con:
            rows = con.execute("SELECT * FROM endpoints ORDER BY name").fetchall()
        return [dict(zip(r.keys(), r, strict=True)) for r in rows]
