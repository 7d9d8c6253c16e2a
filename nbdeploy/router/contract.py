"""What the SDK, the router process and the comparison share about one name's stable endpoint.

One router per name listens on a port that never changes (``Endpoint.port``) and forwards every request to the
*live* version, or, by ``split.percent``, to the *candidate*. A *shadow* candidate gets a copy of live requests
(``shadow.percent``) from a bounded queue, and both answers are stored by the live request id. After a promotion
the previous live version stays warm (``watch``) and the router sends traffic back to it by itself if the new one
breaks ``watch.rules``.

Files, under ``NBDEPLOY_HOME/deployments/NAME/``:

- ``endpoint.json``: the ``Endpoint`` below, written by the SDK atomically (``write``), read by the router when
  its mtime changes (``read``). The router writes it too, only to record an automatic rollback (``watch.outcome``).
- ``endpoint.db``: sqlite (WAL), written by the router only, read by the comparison (``SCHEMA``).

The router answers ``GET /_nbdeploy/endpoint`` (``STATUS_PATH``) from 127.0.0.1 only: the config it serves by,
requests in flight per version, mirrored/dropped counts. Every response it forwards carries ``VERSION_HEADER``.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..files import write_private

ENDPOINT_FILE = "endpoint.json"
#: Taken (flock) around a read-modify-write of endpoint.json by ``update``: the SDK and the router both write it.
LOCK_FILE = "endpoint.lock"
STORE_FILE = "endpoint.db"
STATUS_PATH = "/_nbdeploy/endpoint"
VERSION_HEADER = "x-nbdeploy-version"
#: ``/v/3/predict`` on the stable port reaches version 3 whatever serves live (if it runs).
VERSION_PREFIX = "/v/"
#: Requests whose answers are compared (shadow) and whose answers are stored: the model routes.
MODEL_PATHS = ("/predict", "/predict_proba", "/decision_function")


@dataclass
class Upstream:
    """One running version behind the router."""

    version: int
    url: str  # http://127.0.0.1:PORT of the version's own service


@dataclass
class Candidate:
    """A version that is not live: ``mode`` "shadow" (gets copies, answers nobody) or "split" (answers
    ``percent`` % of callers). ``sticky``: None (each request drawn at random), "key" (by the caller's API key) or
    "header:NAME" (by that request header), so one caller always meets the same version."""

    upstream: Upstream
    mode: str  # "shadow" | "split"
    percent: float = 100.0
    sticky: str | None = None


@dataclass
class Watch:
    """After a promotion: ``previous`` stays warm until ``until`` (epoch seconds). If the live version breaks a
    rule meanwhile, the router routes to ``previous`` again and sets ``outcome`` to "rolled-back" with ``reason``.
    ``rules``: ``{"max_error_rate": 0.05, "min_requests": 20, "window_s": 30, "max_p95_ms": None}``."""

    previous: Upstream
    until: float
    rules: dict[str, Any] = field(default_factory=dict)
    outcome: str | None = None  # None while watching, "rolled-back", or "kept" once the period ended cleanly
    reason: str | None = None


@dataclass
class Endpoint:
    name: str
    port: int
    live: Upstream | None = None
    candidate: Candidate | None = None
    watch: Watch | None = None
    #: Every running version the router may reach by ``/v/N/`` (live, candidate, previous included).
    versions: dict[int, str] = field(default_factory=dict)
    generation: int = 0  # bumped on every write: the router logs which config served a request

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Endpoint:
        def up(d: dict[str, Any] | None) -> Upstream | None:
            return Upstream(**d) if d else None

        cand = data.get("candidate")
        watch = data.get("watch")
        return cls(
            name=data["name"],
            port=int(data["port"]),
            live=up(data.get("live")),
            candidate=Candidate(**{**cand, "upstream": Upstream(**cand["upstream"])}) if cand else None,
            watch=Watch(**{**watch, "previous": Upstream(**watch["previous"])}) if watch else None,
            versions={int(k): v for k, v in (data.get("versions") or {}).items()},
            generation=int(data.get("generation", 0)),
        )


def read(path: Path) -> Endpoint:
    return Endpoint.from_dict(json.loads(path.read_text()))


def write(path: Path, endpoint: Endpoint) -> None:
    """Atomically (the router never reads half a file), owner-only; bumps ``generation``."""
    endpoint.generation += 1
    write_private(path, endpoint.to_json())


def update(path: Path, change: Callable[[Endpoint], Endpoint | None]) -> Endpoint | None:
    """Read, ``change``, write, under an exclusive lock on ``LOCK_FILE`` beside ``path``, so two writers (the SDK
    swapping, the router recording a rollback) never lose each other's change. ``change`` returns None to leave the
    file as it is. Returns what was written (or None)."""
    fd = os.open(path.parent / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        new = change(read(path))
        if new is not None:
            write(path, new)
        return new
    finally:
        os.close(fd)  # closing releases the lock


#: endpoint.db. ``served``: one row per request the router forwarded (which version answered, how, how fast).
#: ``mirrored``: one row per shadow copy: the live answer and the candidate's, by the live request id (the id the
#: live service gave, which ``feedback`` uses). Bodies are the services' JSON answers, cut at 64 KB; ``inputs`` is the
#: request body (JSON text; an .npz body is stored as NULL), cut at 64 KB.
SCHEMA = """
CREATE TABLE IF NOT EXISTS served (
    ts          REAL NOT NULL,
    request_id  TEXT,
    path        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    role        TEXT NOT NULL,      -- 'live' | 'candidate' | 'previous' | 'pinned' (a /v/N/ request)
    status      INTEGER NOT NULL,   -- 502 when the upstream could not be reached
    latency_ms  REAL NOT NULL,
    generation  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS served_ts ON served (ts);
CREATE TABLE IF NOT EXISTS mirrored (
    request_id     TEXT PRIMARY KEY,  -- the live answer's x-request-id
    ts             REAL NOT NULL,
    path           TEXT NOT NULL,
    inputs         TEXT,
    live_version   INTEGER NOT NULL,
    live_status    INTEGER NOT NULL,
    live_ms        REAL NOT NULL,
    live_body      TEXT,
    cand_version   INTEGER NOT NULL,
    cand_status    INTEGER,           -- NULL: the copy was sent but no answer came (timeout, refused)
    cand_ms        REAL,
    cand_body      TEXT,
    cand_error     TEXT
);
CREATE INDEX IF NOT EXISTS mirrored_ts ON mirrored (ts);
CREATE TABLE IF NOT EXISTS counters (
    name   TEXT PRIMARY KEY,          -- 'mirror_dropped', 'mirror_sent', 'rollbacks'
    value  INTEGER NOT NULL
);
"""
