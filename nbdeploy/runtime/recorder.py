"""Append-only record of prediction requests and ground truth, for the monitoring panels.

The request path only does ``queue.put_nowait``: serialisation and sqlite writes happen in a
background thread, and when the queue is full the record is dropped and counted, so recording
can never slow down or fail a prediction. Several worker processes may write one database (WAL).
"""

from __future__ import annotations

import json
import os
import queue
import random
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .redact import Redactor

DB_NAME = "requests.db"
LINGER_S = 0.2
#: The longest string value kept in the log, and the longest error; longer ones are cut, with their length noted.
MAX_VALUE_CHARS = 1000
MAX_ERROR_CHARS = 2000
#: A request's inputs as JSON beyond this size are walked to cut long values (cheaper requests skip the walk).
_CAP_ABOVE_CHARS = 64 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id  TEXT PRIMARY KEY,
    ts          REAL NOT NULL,
    latency_ms  REAL NOT NULL,
    status      INTEGER NOT NULL,
    n_rows      INTEGER NOT NULL,
    inputs      TEXT,
    outputs     TEXT,
    error       TEXT,
    scores      TEXT
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS feedback (
    request_id  TEXT NOT NULL,
    ts          REAL NOT NULL,
    y_true      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id);
"""
#: Added after the first release: logs made before it get the column at the next start (NULL in old rows).
#: ``scores`` holds a predict_proba / decision_function answer as ``{"method", "classes", "values"}``; ``outputs``
#: then holds the class each row's scores pick, so accuracy and prediction drift read every route alike.
COLUMNS = ("request_id", "ts", "latency_ms", "status", "n_rows", "inputs", "outputs", "error", "scores")
_INSERT = f"INSERT OR REPLACE INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text)} characters]"


def _capped(value: Any) -> Any:
    if isinstance(value, str):
        return _cut(value, MAX_VALUE_CHARS)
    if isinstance(value, list):
        return [_capped(v) for v in value]
    if isinstance(value, dict):
        return {_cut(str(k), MAX_VALUE_CHARS): _capped(v) for k, v in value.items()}
    return value


class _Encoded(str):
    """JSON already written (a frame of numbers: nothing in it to cut), kept as it is."""


def _dumps(value: Any, refused: bool = False) -> str:
    """JSON for the log; a large one has every long string (and key) cut, so one request cannot bloat it. What a
    refused request sent is not bounded by the schema (a million unknown columns), so it is cut as a whole too."""
    text = str(value) if isinstance(value, _Encoded) else json.dumps(value)
    if len(text) <= _CAP_ABOVE_CHARS:
        return text
    if not isinstance(value, _Encoded):
        text = json.dumps(_capped(value))
    if refused and len(text) > _CAP_ABOVE_CHARS:
        # half: escaping the quotes of the JSON text inside a string can double it
        return json.dumps({"truncated": text[: _CAP_ABOVE_CHARS // 2], "characters": len(text)})
    return text


def migrate(con: sqlite3.Connection) -> None:
    """Add the ``scores`` column to a log written before it (two workers may race: the loser finds it there)."""
    have = {row[1] for row in con.execute("PRAGMA table_info(requests)")}
    if "scores" not in have:
        try:
            con.execute("ALTER TABLE requests ADD COLUMN scores TEXT")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise


def predicted_labels(method: str | None, values: Any, classes: Any) -> list[Any] | None:
    """The class each row's scores pick, as ``predict`` would: the largest probability (or decision value), and for
    a binary decision function the sign. None when it cannot be told (no classes, a shape that does not fit)."""
    if not isinstance(classes, list) or not classes or not isinstance(values, list) or not values:
        return None
    try:
        rows = [[np.nan if v is None else v for v in r] if isinstance(r, list) else r for r in values]
        arr = np.asarray([np.nan if r is None else r for r in rows], dtype=float)
    except (TypeError, ValueError):
        return None
    if arr.ndim == 2 and arr.shape[1] == len(classes):
        picked = np.argmax(np.nan_to_num(arr, nan=-np.inf), axis=1)
    elif arr.ndim == 1 and method == "decision_function" and len(classes) == 2:
        picked = (arr > 0).astype(int)
    else:
        return None
    return [classes[i] for i in picked]


def _wal(con: sqlite3.Connection, deadline_s: float = 30.0) -> None:
    """WAL mode; retried while another process holds the file: a journal-mode change gets SQLITE_BUSY at once,
    without the busy timeout (seen: the second of two workers starting together died on 'database is locked')."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > end:
                raise
            time.sleep(0.05)  # the other worker is creating the log this moment: a retry, not a synchronisation


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    else:
        con = sqlite3.connect(path, timeout=30)
        _wal(con)
        con.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; no fsync per commit
    con.execute("PRAGMA busy_timeout=10000")
    return con


class Recorder:
    """Bounded, lossy-under-pressure request log; ``dropped`` counts what pressure cost."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        sample_rate: float = 1.0,
        retention_s: float = 7 * 86400,
        max_queue: int = 10_000,
        max_rows: int = 1_000,
        redactor: Redactor | None = None,
    ) -> None:
        self.enabled = directory is not None and sample_rate > 0
        self.sample_rate = sample_rate
        self.retention_s = retention_s
        self.max_rows = max_rows  # rows of one request kept for drift; the rest are counted only
        self.redactor = redactor or Redactor()
        self.path: Path | None = None
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[tuple[str, tuple[Any, ...]]] = queue.Queue(maxsize=max_queue)
        if not self.enabled:
            return
        self.path = Path(directory) / DB_NAME  # type: ignore[arg-type]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with connect(self.path) as con:
            con.executescript(SCHEMA)
            migrate(con)
        self._thread = threading.Thread(target=self._drain, name="nbdeploy-recorder", daemon=True)
        self._thread.start()

    def _put(self, item: tuple[str, tuple[Any, ...]]) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def request(
        self,
        request_id: str,
        latency_ms: float,
        status: int,
        inputs: Any,
        outputs: Any,
        error: str | None = None,
        scores: dict[str, Any] | None = None,
    ) -> None:
        """Queue one request's record (errors are always kept; successes are sampled). ``scores``: a
        predict_proba or decision_function answer, ``{"method", "classes", "values"}`` (the writer derives
        ``outputs`` from it, off the request path)."""
        if not self.enabled or (status == 200 and self.sample_rate < 1 and random.random() >= self.sample_rate):
            return
        self._put(("request", (request_id, time.time(), latency_ms, status, inputs, outputs, error, scores)))

    def feedback(self, items: list[tuple[str, Any]]) -> None:
        if self.enabled:
            now = time.time()
            for request_id, y_true in items:
                self._put(("feedback", (request_id, now, y_true)))

    def _rows(self, inputs: Any) -> tuple[int, Any]:
        """Row count and the (capped, redacted) inputs to keep."""
        red = self.redactor
        if isinstance(inputs, dict) and "data" in inputs:
            data = inputs.get("data") or []
            n, columns, data = len(data), inputs.get("columns"), data[: self.max_rows]
            if red.enabled and isinstance(columns, list) and isinstance(data, list):
                columns, data = red.split(columns, data)
            return n, {"columns": columns, "data": data}
        if isinstance(inputs, list):
            kept = inputs[: self.max_rows]
            return len(inputs), red.records(kept) if red.enabled else kept
        if isinstance(inputs, dict) and red.enabled:
            return 1, red.records([inputs])[0]
        if hasattr(inputs, "to_json") and hasattr(inputs, "columns"):  # a frame sent as .npz: kept in split form
            head = red.frame(inputs.head(self.max_rows)) if red.enabled else inputs.head(self.max_rows)
            text = head.to_json(orient="split", index=False, date_format="iso")
            if all(dtype.kind in "biuf" for dtype in head.dtypes):  # numbers: written once, not parsed and again
                return len(inputs), _Encoded(text)
            split = json.loads(text)
            return len(inputs), {"columns": split["columns"], "data": split["data"]}
        return (1 if inputs is not None else 0), inputs

    def _drain(self) -> None:
        assert self.path is not None  # started only when enabled
        con = connect(self.path)
        last_purge = 0.0
        while True:
            batch = [self._queue.get()]
            time.sleep(LINGER_S)  # let a burst gather: one commit for many records, not one each
            while len(batch) < 2000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(con, batch)
            except Exception:  # one bad record must not cost the batch: retry one by one
                for item in batch:
                    try:
                        self._write(con, [item])
                    except Exception as exc:  # never let monitoring take the service down
                        self.dropped += 1
                        sys.stderr.write(f"nbdeploy: request log write failed: {type(exc).__name__}: {exc}\n")
            try:
                if time.time() - last_purge > 60:
                    with con:
                        con.execute("DELETE FROM requests WHERE ts < ?", (time.time() - self.retention_s,))
                    last_purge = time.time()
            except Exception as exc:
                sys.stderr.write(f"nbdeploy: request log purge failed: {exc}\n")
            for _ in batch:
                self._queue.task_done()

    def _write(self, con: sqlite3.Connection, batch: list[tuple[str, tuple[Any, ...]]]) -> None:
        requests, feedback = [], []
        for kind, item in batch:
            if kind == "request":
                rid, ts, latency, status, inputs, outputs, error, *rest = item  # scores: queued since it was added
                scores = rest[0] if rest else None
                n, kept = self._rows(inputs)
                scored = None
                if scores is not None:
                    values = scores.get("values")
                    values = values[: self.max_rows] if isinstance(values, list) else values
                    scores = {**scores, "values": values}
                    scored = _dumps(scores)
                    if outputs is None:
                        outputs = predicted_labels(scores.get("method"), values, scores.get("classes"))
                out = outputs[: self.max_rows] if isinstance(outputs, list) else outputs
                error = _cut(self.redactor.error(error), MAX_ERROR_CHARS)
                requests.append((rid, ts, latency, status, n, _dumps(kept, status != 200), _dumps(out), error, scored))
            else:
                rid, ts, y_true = item
                feedback.append((rid, ts, _dumps(y_true)))
        with con:
            con.executemany(_INSERT, requests)
            con.executemany("INSERT INTO feedback VALUES (?, ?, ?)", feedback)
        self.written += len(batch)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued is written (tests and shutdown); True if it was in time."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False
