"""The router's request log (``endpoint.db``), written by one thread so sqlite never runs on the event loop.

The event loop only appends rows to a deque (atomic under the GIL, no lock, no wake-up); the writer thread wakes
every ``FLUSH_EVERY_S`` and writes what piled up in one transaction. Waking the thread per row (``queue.Queue``)
cost the proxy a thread switch and a commit per request, about 0.3 ms of added latency. When the backlog is full
the row is dropped and counted rather than making a caller wait: the log serves monitoring, the answer comes first.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import deque
from pathlib import Path
from typing import Any

from .contract import SCHEMA

log = logging.getLogger("nbdeploy.router")

FLUSH_EVERY_S = 0.2


class Store:
    """Appends ``served`` and ``mirrored`` rows and keeps ``counters`` as running totals."""

    def __init__(self, path: Path, maxsize: int = 50_000) -> None:
        self.path = path
        self.maxsize = maxsize
        self._rows: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._stop = threading.Event()
        #: Totals since this process started; the writer adds the increase since its last flush to the table,
        #: so the table holds totals across restarts.
        self.counters: dict[str, int] = {}
        self._flushed: dict[str, int] = {}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nbdeploy-router-store", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error:
            raise self._error

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def served(self, row: tuple[Any, ...]) -> None:
        """(ts, request_id, path, version, role, status, latency_ms, generation)."""
        if len(self._rows) < self.maxsize:
            self._rows.append(("s", row))
        else:
            self.count("served_dropped")

    def mirrored(self, row: tuple[Any, ...]) -> None:
        """The ``mirrored`` columns in table order."""
        if len(self._rows) < self.maxsize:
            self._rows.append(("m", row))
        else:
            self.count("mirror_dropped")

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        self._stop.set()
        self._thread.join(timeout)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.executescript(SCHEMA)
        self.path.chmod(0o600)  # inputs are users' data
        return con

    def _run(self) -> None:
        try:
            con = self._connect()
        except BaseException as exc:  # reported to the constructor, which raises it in the router's thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        while True:
            stop = self._stop.wait(FLUSH_EVERY_S)
            items = []
            rows = self._rows
            while rows:
                items.append(rows.popleft())
            try:
                self._flush(con, items)
            except sqlite3.Error as exc:  # a locked or full disk must not kill the router: log and go on
                log.warning("request log write failed (%d rows lost): %s", len(items), exc)
            if stop:
                break
        con.close()

    def _flush(self, con: sqlite3.Connection, items: list[Any]) -> None:
        deltas = {k: v - self._flushed.get(k, 0) for k, v in list(self.counters.items())}
        deltas = {k: v for k, v in deltas.items() if v}
        if not items and not deltas:
            return
        served = [row for kind, row in items if kind == "s"]
        mirrored = [row for kind, row in items if kind == "m"]
        con.execute("BEGIN")
        try:
            if served:
                con.executemany("INSERT INTO served VALUES (?, ?, ?, ?, ?, ?, ?, ?)", served)
            if mirrored:
                con.executemany(
                    "INSERT OR REPLACE INTO mirrored VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", mirrored
                )
            for name, n in deltas.items():
                con.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (name, n),
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        for name, n in deltas.items():
            self._flushed[name] = self._flushed.get(name, 0) + n
