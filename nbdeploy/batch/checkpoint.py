"""The checkpoint of a job that writes a file: which keys are done, in which part, in one SQLite file.

Keys, not line numbers: a source read again after a crash may come in another order, or have grown, and a key says
what was scored whatever its position. A chunk is committed in one transaction: its keys, its quarantined rows and
its part file (renamed into place inside the transaction, so a part on disk that the checkpoint does not list is a
leftover of a crash and is removed). The primary key on ``key`` refuses a key seen twice: a duplicate in the source.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .quarantine import BadRow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parts (seq INTEGER PRIMARY KEY, file TEXT NOT NULL, n_rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS done (key PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (key PRIMARY KEY, "column" TEXT, value TEXT, reason TEXT, row TEXT);
"""


class DuplicateKey(Exception):
    """A key already committed: the source holds it twice."""

    def __init__(self, key: Any) -> None:
        super().__init__(key)
        self.key = key


class Checkpoint:
    """One job's progress; opened again by the same call after an interruption."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")  # a killed process loses nothing committed; power loss may
        self.con.executescript(_SCHEMA)

    def close(self) -> None:
        self.con.close()

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.con.execute("SELECT name, value FROM meta")}

    def set_meta(self, values: dict[str, Any]) -> None:
        with self._transaction():
            self.con.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()]
            )

    def parts(self) -> list[tuple[int, str, int]]:
        return list(self.con.execute("SELECT seq, file, n_rows FROM parts ORDER BY seq"))

    def next_seq(self) -> int:
        """The number the next part takes (the parts table numbers them as they are committed)."""
        return int(self.con.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM parts").fetchone()[0])

    def counts(self) -> tuple[int, int]:
        """Rows scored and rows quarantined so far."""
        scored = self.con.execute("SELECT COALESCE(SUM(n_rows), 0) FROM parts").fetchone()[0]
        bad = self.con.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
        return int(scored), int(bad)

    def done(self, keys: list[Any]) -> set[Any]:
        """Which of ``keys`` are committed already (scored or quarantined)."""
        found = self.con.execute(
            "SELECT value FROM json_each(?) AS p WHERE EXISTS (SELECT 1 FROM done WHERE key = p.value)"
            " OR EXISTS (SELECT 1 FROM quarantine WHERE key = p.value)",
            (json.dumps(keys),),
        )
        return {k for (k,) in found}

    def commit(self, file: str | None, keys: list[Any], bad: list[BadRow], place: Callable[[], None]) -> None:
        """Record one chunk; ``place`` puts its part file where it belongs, inside the transaction."""
        try:
            with self._transaction():
                if keys:  # one statement per chunk: json_each parses the list in C (executemany: 3x slower)
                    self.con.execute("INSERT INTO done SELECT value FROM json_each(?)", (json.dumps(keys),))
                if bad:
                    self.con.executemany("INSERT INTO quarantine VALUES (?, ?, ?, ?, ?)", (b.as_tuple() for b in bad))
                if file is not None:
                    self.con.execute("INSERT INTO parts (file, n_rows) VALUES (?, ?)", (file, len(keys)))
                place()
        except sqlite3.IntegrityError:
            raise DuplicateKey(self._repeated([*keys, *(b.key for b in bad)])) from None

    def _repeated(self, keys: Iterable[Any]) -> Any:
        seen: set[Any] = set()
        listed = list(keys)
        for k in listed:
            if k in seen:
                return k
            seen.add(k)
        hits = self.done(listed)
        return next((k for k in listed if k in hits), None)

    def quarantined(self) -> list[tuple[Any, ...]]:
        return list(self.con.execute('SELECT key, "column", value, reason, row FROM quarantine ORDER BY rowid'))

    def _transaction(self) -> Any:
        return _Transaction(self.con)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any error (autocommit connection)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def __enter__(self) -> None:
        self.con.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: Any, *_: Any) -> None:
        self.con.execute("ROLLBACK" if kind is not None else "COMMIT")
