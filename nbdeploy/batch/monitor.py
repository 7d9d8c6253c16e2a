"""Batch requests marked in the version's request log, so the monitor can tell a nightly run from live traffic.

The service logs every request it answers, a batch chunk too (at most 1,000 of its rows: a sample), so a scored
batch shows in the drift panel like any traffic. What the service cannot know is that a chunk came from a batch
job: the job writes that down beside the log, in ``batch_requests`` (request id, job, rows), when the log is on
this machine (local and container targets; a Kubernetes pod keeps its own).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..runtime.recorder import DB_NAME, connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_requests (
    request_id TEXT PRIMARY KEY,
    job        TEXT NOT NULL,
    ts         REAL NOT NULL,
    n_rows     INTEGER NOT NULL
)
"""


class Marker:
    """Writes the job's request ids into the request log; does nothing where there is no log on this machine."""

    def __init__(self, directory: Path | None, job: str) -> None:
        path = directory / DB_NAME if directory is not None else None
        self.path = path if path is not None and path.exists() else None
        self.job = job
        self.marked = 0

    def mark(self, request_ids: list[tuple[str, int]]) -> None:
        if self.path is None or not request_ids:
            return
        con = connect(self.path)
        try:
            with con:
                con.execute(_SCHEMA)
                now = time.time()
                con.executemany(
                    "INSERT OR REPLACE INTO batch_requests VALUES (?, ?, ?, ?)",
                    [(rid, self.job, now, n) for rid, n in request_ids],
                )
            self.marked += len(request_ids)
        finally:
            con.close()
