"""nbdeploy edge server: serve an ONNX bundle with onnxruntime, numpy and the standard library alone.

This file is copied into every edge bundle as ``server.py``; it must never import nbdeploy, pandas,
scikit-learn, BentoML or cloudpickle. Run ``python -I server.py --port 8080 --manifest-sha256 HASH`` inside
the bundle (``-I``: files put beside server.py cannot shadow the modules it imports).

Contract (as the other nbdeploy targets): ``POST /predict`` with ``{"inputs": [{col: value}, ...]}``
or ``{"inputs": {"columns": [...], "data": [[...]]}}`` answers ``{"predictions": [...]}``; bad input
is a 400 naming the column; ``/livez`` and ``/readyz`` answer 200; ``GET /`` is the try-it page the export wrote
(``page.html``, checked against the manifest like every file). When ``NBDEPLOY_AUTH`` is not
``off``, ``/predict`` needs ``Authorization: Bearer KEY`` (or ``X-API-Key``) whose sha256 is listed
in ``NBDEPLOY_KEYS_FILE`` (``{"sha256": [...]}``, re-read when it changes).

Integrity: the server starts only with the sha256 of manifest.json given from outside the bundle
(``--manifest-sha256`` or ``NBDEPLOY_MANIFEST_SHA256``); the manifest holds every other file's sha256.

HTTP (asyncio): a slow or idle client costs a coroutine and a socket, never a thread, and health checks never
wait for the model. 401, 404, 405, 411, 413 and 400 (a Content-Length that cannot frame a body: negative, not a
number, several values, or with Transfer-Encoding) are answered from the head alone, without reading the body,
and close the connection; chunked bodies are refused (411). At most ``NBDEPLOY_MAX_CONNECTIONS`` (64) requests
read a body and predict at once, in as many threads; beyond, 503 with Retry-After. A request head must arrive
within ``NBDEPLOY_IDLE_TIMEOUT_S`` (10 s; also the keep-alive idle limit and the limit to write an answer), a
body within ``NBDEPLOY_REQUEST_TIMEOUT_S`` (60 s); past either the connection is cut. At most
``NBDEPLOY_MAX_OPEN_CONNECTIONS`` (1024, less if the descriptor limit is lower) connections wait for a head;
beyond, the one waiting longest is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import queue
import re
import reprlib
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

GUARDED = ("/predict",)
HEALTH = ("/livez", "/readyz", "/healthz")
_EXPECTED = {"integer": "a number", "float": "a number", "bool": "true or false", "string": "a string"}
MAX_HEAD = 64 * 1024
MAX_HEADER_LINES = 100
SHOWN = 100
_FLOAT32_MAX = float(np.finfo("float32").max)
_REPR = reprlib.Repr()  # bounded in depth and length: a request's value may be megabytes or 900 lists deep
_REPR.maxlevel, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 3, SHOWN, SHOWN, SHOWN


class InputError(ValueError):
    """A request the schema refuses; the message names the column or field."""


class IntegrityError(RuntimeError):
    """The bundle is not the one exported: a file differs from the manifest, or the manifest from its sha256."""


def shown(value: Any) -> str:
    """A value from a request as an error echoes it: a repr of at most ~100 characters."""
    text = _REPR.repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "…"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_bundle(root: Path, manifest_sha256: str | None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest, and the checked bytes of schema.json, the model and the page (the bytes checked are the bytes
    used).

    ``manifest_sha256`` comes from outside the bundle and anchors the manifest; without it the files are only
    checked against the manifest beside them, which whoever swaps a file can rewrite too.
    """
    try:
        raw = (root / "manifest.json").read_bytes()
    except OSError as exc:
        raise IntegrityError(f"cannot read {root / 'manifest.json'}: {exc.strerror}") from None
    if manifest_sha256 is not None:
        want = manifest_sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", want):
            raise IntegrityError(f"the expected manifest sha256 {shown(manifest_sha256)} is not 64 hex digits")
        got = hashlib.sha256(raw).hexdigest()
        if not hmac.compare_digest(got, want):
            raise IntegrityError(
                f"manifest.json has sha256 {got}, expected {want}: this is not the bundle that was exported"
            )
    manifest = json.loads(raw)
    files, model = manifest.get("files") or {}, manifest.get("model")
    page = (manifest.get("page") or {}).get("file")
    for needed in ("schema.json", model):
        if needed not in files:
            raise IntegrityError(f"the manifest lists no sha256 for {shown(needed)}")
    kept: dict[str, bytes] = {}
    for name, digest in files.items():
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
            raise IntegrityError(f"the manifest lists {shown(name)}, which is not a file name in the bundle")
        try:
            data = (root / name).read_bytes()
        except OSError as exc:
            raise IntegrityError(f"{name} is listed in the manifest but cannot be read: {exc.strerror}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(f"{name} has been modified since export (sha256 differs from the manifest)")
        if name in ("schema.json", model, page):
            kept[name] = data
    return manifest, kept


def _check_names(got: list[str], names: list[str]) -> None:
    """Repeated, missing and unknown names, in time linear in the request (sets, never list lookups)."""
    seen: set[str] = set()
    for name in got:
        if name in seen:
            raise InputError(f"column {shown(name)} is named twice")
        seen.add(name)
    missing = [c for c in names if c not in seen]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"missing column '{missing[0]}'{more}")
    expected = set(names)
    unknown = next((c for c in got if c not in expected), None)
    if unknown is not None:
        listed = ", ".join(names[:20]) + (f", … ({len(names)} in all)" if len(names) > 20 else "")
        raise InputError(f"unknown column {shown(unknown)}; expected columns: {listed}")


def _columns(inputs: Any, names: list[str]) -> tuple[dict[str, list[Any]], int]:
    """Column name -> values, from records or split inputs; refuses missing and unknown columns."""
    if isinstance(inputs, dict) and "data" in inputs:
        cols, data = inputs.get("columns"), inputs["data"]
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise InputError("split inputs need 'columns': a list of column names")
        if not isinstance(data, list) or not all(isinstance(r, list) and len(r) == len(cols) for r in data):
            raise InputError(f"split inputs need 'data': a list of rows (lists) of {len(cols)} values")
        if not data:
            raise InputError("'inputs' is empty: send at least one row")
        _check_names(cols, names)
        return {c: list(v) for c, v in zip(cols, zip(*data, strict=True), strict=True)}, len(data)
    records = [inputs] if isinstance(inputs, dict) else inputs
    if not isinstance(records, list):
        raise InputError(f"'inputs' must be a list of records or {{'columns', 'data'}}, got {type(inputs).__name__}")
    if not records:
        raise InputError("'inputs' is empty: send at least one row")
    seen: dict[str, None] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InputError(f"row {i} is {type(rec).__name__}, expected an object of column: value")
        seen.update(dict.fromkeys(rec))
        if len(seen) > len(names):
            break  # an unknown column: _check_names names it
    _check_names(list(seen), names)
    return {c: [rec.get(c) for rec in records] for c in names}, len(records)


def _missing(name: str, row: int) -> InputError:
    return InputError(f"column '{name}': missing value in row {row} (the sample had no missing values)")


def _floats(rows: list[Any]) -> np.ndarray | None:
    """float64 array of numbers (None as NaN), or None when an integer is too large for float64."""
    try:
        return np.array(rows, dtype="float64")
    except OverflowError:
        return None


def _out_of_range(arr: np.ndarray, limit: float) -> np.ndarray:
    """Index of the first value that is infinite or beyond ``limit`` (NaN is a missing value, not out of range)."""
    bad = ~np.isnan(arr) & ~(np.abs(arr) <= limit)
    return np.argwhere(bad)[0] if bad.any() else np.array([], dtype=int)


def _not_finite(where: str, value: Any, dtype: str, row: int) -> InputError:
    fits = "" if value in (float("inf"), float("-inf")) else f" that fits in {dtype}"
    return InputError(f"{where}: expected a finite number{fits}, got {shown(value)} (row {row})")


def _numbers(name: str, values: list[Any], spec: dict[str, Any], dtype: str) -> np.ndarray:
    """A number (or bool) column: no infinities or overflows, NaN only where the sample had missing values."""
    kind = spec["kind"]
    allowed = (bool,) if kind == "bool" else (int, float)
    for i, v in enumerate(values):
        if v is None:
            if not spec.get("nullable", True) or dtype == "int64":
                raise _missing(name, i)
        elif not isinstance(v, allowed) or (kind != "bool" and isinstance(v, bool)):
            raise InputError(f"column '{name}': expected {_EXPECTED.get(kind)}, got {shown(v)} (row {i})")
    if dtype == "int64" and all(type(v) is int for v in values):  # exact: no detour through float64
        try:
            return np.array(values, dtype="int64").reshape(-1, 1)
        except OverflowError:
            row = next(i for i, v in enumerate(values) if not -(2**63) <= v < 2**63)
            raise _not_finite(f"column '{name}'", values[row], dtype, row) from None
    arr = _floats([np.nan if v is None else v for v in values])
    if arr is None:  # an integer beyond float64: find it
        row = next(i for i, v in enumerate(values) if isinstance(v, int) and _floats([v]) is None)
        raise _not_finite(f"column '{name}'", values[row], dtype, row)
    bad = _out_of_range(arr, 2.0**63 - 1024 if dtype == "int64" else _FLOAT32_MAX)
    if bad.size:
        raise _not_finite(f"column '{name}'", values[int(bad[0])], dtype, int(bad[0]))
    if kind == "integer":
        frac = ~np.isnan(arr) & (arr % 1 != 0)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise InputError(f"column '{name}': expected an integer, got {shown(values[i])} (row {i})")
    return arr.astype(dtype).reshape(-1, 1)


def _column(name: str, values: list[Any], spec: dict[str, Any], onnx_type: str) -> np.ndarray:
    """One column as the (n, 1) array the ONNX input expects; JSON's NaN is a missing value, as null is."""
    values = [None if isinstance(v, float) and v != v else v for v in values]
    kind = spec["kind"]
    if kind not in ("string", "category"):
        return _numbers(name, values, spec, "int64" if "int64" in onnx_type else "float32")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            if v is None:
                raise InputError(f"column '{name}': missing value in row {i} (the edge bundle needs a string)")
            raise InputError(f"column '{name}': expected a string, got {shown(v)} (row {i})")
    if kind == "category":
        known = set(spec.get("categories") or [])
        for i, v in enumerate(values):
            if v not in known:
                raise InputError(f"column '{name}': unknown category {shown(v)} (row {i})")
    return np.array(values, dtype=object).reshape(-1, 1)


def _matrix(inputs: Any, schema: dict[str, Any]) -> np.ndarray:
    """Rows of numbers for a model trained on an array: same finite and missing-value rules as columns."""
    width = schema["n_features"]
    rows = inputs.get("data") if isinstance(inputs, dict) else inputs
    if not isinstance(rows, list) or not rows:
        raise InputError(f"'inputs' must be a non-empty list of rows of {width} numbers")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise InputError(f"row {i}: expected a list of {width} numbers")
        for j, v in enumerate(row):
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)):
                raise InputError(f"feature {j}: expected a number, got {shown(v)} (row {i})")
    arr = _floats([[np.nan if v is None else v for v in row] for row in rows])
    if arr is None:
        i, j = next((i, j) for i, row in enumerate(rows) for j, v in enumerate(row) if _floats([v or 0]) is None)
        raise _not_finite(f"feature {j}", rows[i][j], "float32", i)
    bad = _out_of_range(arr, _FLOAT32_MAX)
    if bad.size:
        i, j = int(bad[0]), int(bad[1])
        raise _not_finite(f"feature {j}", rows[i][j], "float32", i)
    if not schema.get("nullable", True) and np.isnan(arr).any():
        i, j = map(int, np.argwhere(np.isnan(arr))[0])
        raise InputError(f"feature {j}: missing value in row {i} (the sample had none)")
    return arr.astype("float32")


class EdgeModel:
    """The bundle's ONNX model behind the schema check: request inputs in, JSON-ready predictions out."""

    def __init__(self, bundle: Path, manifest_sha256: str | None = None) -> None:
        import onnxruntime as ort

        self.bundle = Path(bundle)
        self.manifest, blobs = read_bundle(self.bundle, manifest_sha256)
        self.schema = json.loads(blobs["schema.json"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("NBDEPLOY_THREADS", "1"))
        self.session = ort.InferenceSession(blobs[self.manifest["model"]], opts, providers=["CPUExecutionProvider"])
        self.types = {i.name: i.type for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.mode = self.manifest["inputs"]["mode"]
        page = self.manifest.get("page") or {}
        #: The try-it page and its headers (a bundle exported before pages has none: ``/`` is a 404 there).
        self.page: bytes | None = blobs.get(page.get("file"))
        self.page_headers: dict[str, str] = {str(k): str(v) for k, v in (page.get("headers") or {}).items()}

    def feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        if self.schema["kind"] == "ndarray":
            return {"input": _matrix(inputs, self.schema)}
        specs = self.schema["columns"]
        got, _ = _columns(inputs, [c["name"] for c in specs])
        default = "tensor(float)"
        cols = {c["name"]: _column(c["name"], got[c["name"]], c, self.types.get(c["name"], default)) for c in specs}
        if self.mode == "columns":
            return cols
        return {"input": np.hstack([cols[c["name"]].astype("float32") for c in specs])}

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (or values) and, for classifiers, the probabilities."""
        out = self.session.run(None, feeds)
        labels = np.asarray(out[0]).reshape(len(next(iter(feeds.values()))), -1)
        labels = labels.ravel() if labels.shape[1] == 1 else labels
        if self.manifest.get("labels") == "bool":  # ONNX has no bool labels: it returns the classes 0 and 1
            labels = labels.astype(bool)
        return labels, (np.asarray(out[1]) if len(out) > 1 else None)

    def predict(self, inputs: Any) -> list[Any]:
        labels, _ = self.run(self.feeds(inputs))
        if labels.dtype.kind == "f" and np.isnan(labels).any():
            return np.where(np.isnan(labels), None, labels.astype(object)).tolist()
        return labels.tolist()


class KeyFile:
    """Accepted key hashes, re-read when the file changes; fail closed when auth is required."""

    def __init__(self, path: str | None, required: bool) -> None:
        self.path = Path(path) if path else None
        self.required = required
        self._hashes: tuple[str, ...] = ()
        self._mtime = -1
        self._lock = threading.Lock()

    def accepts(self, key: str | None) -> bool:
        if not self.required:
            return True
        with self._lock:
            try:
                if self.path is not None and self.path.stat().st_mtime_ns != self._mtime:
                    self._mtime = self.path.stat().st_mtime_ns
                    self._hashes = tuple(str(h) for h in json.loads(self.path.read_text()).get("sha256", []))
            except (OSError, ValueError):
                pass  # keep the last good set
            hashes = self._hashes
        if not key or not hashes:
            return False
        presented = hashlib.sha256(key.encode()).hexdigest().encode()
        return any(hmac.compare_digest(presented, h.encode()) for h in hashes)


def count_rows(inputs: Any) -> int:
    """Rows in a request before any validation (for the rows-per-request limit); never fails."""
    if isinstance(inputs, dict):
        data = inputs.get("data")
        return len(data) if isinstance(data, list) else 1
    return len(inputs) if isinstance(inputs, list) else 0


# ---- HTTP/1.1 on asyncio: heads in the event loop, bodies and predictions bounded ----

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
Reply = tuple[int, Any, dict[str, str]]
T = TypeVar("T")


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")


class HttpError(Exception):
    """A request the server will not read further: answered from its head, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    """A request head; ``length`` is the body's (checked; None: the request sent no length)."""

    method: str
    path: str
    headers: dict[str, list[str]]
    length: int | None
    keep_alive: bool
    expect_continue: bool


def body_length(headers: dict[str, list[str]]) -> int | None:
    """Content-Length, refused (400) when it cannot frame a body for sure; chunked bodies are refused (411)."""
    if "transfer-encoding" in headers:
        if "content-length" in headers:
            raise HttpError(400, "both Transfer-Encoding and Content-Length: send a Content-Length only")
        raise HttpError(411, "chunked bodies are not accepted: send a Content-Length")
    values = {v.strip(" \t") for line in headers.get("content-length", []) for v in line.split(",")}
    if not values:
        return None
    if len(values) > 1:
        raise HttpError(400, "several different Content-Length values")
    value = values.pop()
    if not (value.isascii() and value.isdigit()):
        raise HttpError(400, f"Content-Length must be a number of bytes, got {shown(value)}")
    value = value.lstrip("0") or "0"
    return int(value) if len(value) <= 18 else 10**18


def parse_head(raw: bytes) -> Request:
    """Request line and headers; refuses what must not be guessed (whitespace before a colon, folded lines)."""
    lines = raw.decode("latin-1").split("\n")
    if len(lines) > MAX_HEADER_LINES + 1:
        raise HttpError(431, f"more than {MAX_HEADER_LINES} header lines")
    parts = lines[0].rstrip("\r").split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1].startswith("/"):
        raise HttpError(400, "malformed request line")
    if parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(400, "only HTTP/1.0 and HTTP/1.1 are served")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.rstrip("\r").partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HttpError(400, "malformed header line")
        headers.setdefault(name.lower(), []).append(value.strip(" \t"))
    tokens = {t.strip().lower() for v in headers.get("connection", []) for t in v.split(",")}
    keep = "close" not in tokens and (parts[2] == "HTTP/1.1" or "keep-alive" in tokens)
    expect = any(v.lower() == "100-continue" for v in headers.get("expect", []))
    return Request(parts[0], parts[1].split("?")[0], headers, body_length(headers), keep, expect)


def render(status: int, body: Any, headers: dict[str, str], close: bool) -> bytes:
    """An answer: JSON, text (metrics), or bytes whose content type ``headers`` gives (the page)."""
    text = isinstance(body, str)
    raw = body if isinstance(body, bytes) else (body if text else json.dumps(body)).encode()
    media = headers.get("content-type") or ("text/plain; version=0.0.4" if text else "application/json")
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "server: nbdeploy-edge",
        f"content-type: {media}",
        f"content-length: {len(raw)}",
        *(f"{k}: {v}" for k, v in headers.items() if k != "content-type"),
        *(["connection: close"] if close else []),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + raw


def refusal(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    """An error answer that closes the connection (whatever the client sent after the head is not read)."""
    return render(status, {"error": message}, headers or {}, True)


def _key(headers: dict[str, list[str]]) -> str | None:
    auth = (headers.get("authorization") or [""])[0]
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return (headers.get("x-api-key") or [None])[0]


def _inputs(body: bytes | bytearray) -> Any:
    """The body's 'inputs'; every way a body can fail to be JSON is a 400 (a 500 would blame the model)."""
    try:
        doc = json.loads(body or b"null")
    except RecursionError:
        raise InputError("the body is not valid JSON: it nests too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"the body is not valid JSON: {str(exc)[:SHOWN]}") from None
    except ValueError:  # Python's limit on the digits of an integer
        raise InputError("the body is not valid JSON: a number in it has too many digits") from None
    if not isinstance(doc, dict) or "inputs" not in doc:
        raise InputError("the body must be a JSON object with 'inputs'")
    return doc["inputs"]


#: The request log's table, as nbdeploy/runtime/recorder.py writes it (this file cannot import nbdeploy): the
#: monitoring panel and drift read edge deployments as the others.
LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, ts REAL NOT NULL, latency_ms REAL NOT NULL, status INTEGER NOT NULL,
    n_rows INTEGER NOT NULL, inputs TEXT, outputs TEXT, error TEXT, scores TEXT
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS feedback (request_id TEXT NOT NULL, ts REAL NOT NULL, y_true TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id);
"""


class RequestLog:
    """Requests written to ``DIR/requests.db`` by a background thread, batched; never blocks an answer (a full
    queue drops the record). With redaction configured the inputs are not kept (the redactor is nbdeploy's)."""

    def __init__(self, directory: str, keep_inputs: bool = True, capacity: int = 10_000) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "requests.db")
        self.keep_inputs = keep_inputs
        self.dropped = 0
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue(capacity)
        con = sqlite3.connect(self.path)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(LOG_SCHEMA)
        finally:
            con.close()
        threading.Thread(target=self._drain, name="nbdeploy-edge-log", daemon=True).start()

    def request(self, rid: str, latency_ms: float, status: int, n: int, inputs: Any, outputs: Any, error: Any) -> None:
        kept = json.dumps(inputs) if self.keep_inputs and inputs is not None else None
        row = (rid, time.time(), latency_ms, status, n, kept, None if outputs is None else json.dumps(outputs), error)
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1

    def _drain(self) -> None:
        con = sqlite3.connect(self.path, timeout=30)
        while True:
            batch = [self._queue.get()]
            time.sleep(0.2)  # one commit for a burst
            while len(batch) < 2000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                with con:
                    con.executemany(
                        "INSERT OR REPLACE INTO requests (request_id, ts, latency_ms, status, n_rows, inputs, outputs,"
                        " error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        batch,
                    )
            except Exception as exc:  # never let the log take the server down
                self.dropped += len(batch)
                log(f"nbdeploy edge: request log write failed: {type(exc).__name__}: {exc}")


class App:
    """What the server answers: from the head alone where it can, from the body for predictions."""

    def __init__(
        self, model: EdgeModel, keys: KeyFile, max_body: int, max_rows: int, requests: RequestLog | None = None
    ) -> None:
        self.model, self.keys, self.max_body, self.max_rows = model, keys, max_body, max_rows
        self.requests = requests
        self.counts: dict[int, int] = {}
        self._lock = threading.Lock()

    def count(self, status: int) -> None:
        with self._lock:
            self.counts[status] = self.counts.get(status, 0) + 1

    def metrics(self) -> str:
        with self._lock:
            lines = [f'nbdeploy_edge_responses_total{{status="{s}"}} {n}' for s, n in sorted(self.counts.items())]
        return "\n".join(["# TYPE nbdeploy_edge_responses_total counter", *lines]) + "\n"

    def triage(self, req: Request) -> Reply | None:
        """The answer from the head alone, or None for a prediction (a worker reads its body)."""
        if req.method == "GET" and req.path in HEALTH:
            return 200, {"status": "ok"}, {}
        if req.method == "GET" and req.path == "/metrics":
            return 200, self.metrics(), {}
        if req.method == "GET" and req.path == "/" and self.model.page is not None:
            return 200, self.model.page, {"content-type": "text/html; charset=utf-8", **self.model.page_headers}
        if req.path not in GUARDED:
            return 404, {"error": f"no route {shown(req.path)}"}, {}
        if req.method != "POST":
            return 405, {"error": f"{req.path} takes POST"}, {"allow": "POST"}
        if req.length is None:
            return 411, {"error": "POST needs a Content-Length"}, {}
        if not self.keys.accepts(_key(req.headers)):
            return 401, {"error": "unauthorized: send a valid API key"}, {"www-authenticate": "Bearer"}
        if req.length > self.max_body:
            return 413, {"error": f"request body over the limit of {self.max_body} bytes"}, {}
        return None

    def predict(self, body: bytes | bytearray) -> Reply:
        rid, start = uuid.uuid4().hex, time.perf_counter()
        inputs: Any = None
        rows = 0
        try:
            inputs = _inputs(body)
            rows = count_rows(inputs)
            if rows > self.max_rows:
                return 413, {"error": f"{rows} rows in one request; the limit is {self.max_rows}"}, {}
            predictions = self.model.predict(inputs)
            self._record(rid, start, 200, rows, inputs, predictions, None)
            return 200, {"predictions": predictions, "request_id": rid}, {}
        except InputError as exc:
            self._record(rid, start, 400, rows, None, None, str(exc)[:2000])
            return 400, {"error": str(exc), "request_id": rid}, {}
        except Exception as exc:  # the model failed: report it, keep serving
            error = f"{type(exc).__name__}: {exc}"[: 3 * SHOWN]
            self._record(rid, start, 500, rows, None, None, error)
            return 500, {"error": error, "request_id": rid}, {}

    def _record(self, rid: str, start: float, status: int, n: int, inputs: Any, outputs: Any, error: Any) -> None:
        if self.requests is not None:
            self.requests.request(rid, (time.perf_counter() - start) * 1000, status, n, inputs, outputs, error)


class EdgeServer:
    """asyncio: a slow or idle client costs a coroutine, never a thread, and health checks never wait for the
    model. At most ``workers`` requests read a body and predict at once (the model in a thread pool); beyond, 503."""

    def __init__(self, app: App, lim: dict[str, float]) -> None:
        self.app, self.idle_s, self.request_s = app, lim["idle_s"], lim["request_s"]
        self.workers, self.max_open = int(lim["workers"]), int(lim["max_open"])
        self.access_log = os.environ.get("NBDEPLOY_ACCESS_LOG") == "1"
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="nbdeploy-edge")
        self.busy = 0  # requests reading a body or predicting (touched by the event loop only)
        self.waiting: dict[asyncio.StreamWriter, float] = {}  # connections waiting for a head, since when

    async def serve(self, host: str, port: int, ready: Any = None) -> None:
        server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEAD, backlog=1024)
        if ready is not None:
            ready()
        async with server:
            await server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away, or stalled and was cut off
        except Exception as exc:  # a bug here must cost one connection, not the server
            log(f"nbdeploy edge: {type(exc).__name__}: {str(exc)[:SHOWN]}")
        finally:
            self.waiting.pop(writer, None)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is to close."""
        try:
            req = await self._head(reader, writer)
            reply = self.app.triage(req)
        except HttpError as exc:
            return await self._send(writer, None, refusal(exc.status, str(exc)))
        if reply is not None:
            close = not req.keep_alive or bool(req.length) or reply[0] == 411  # a body that will not be read
            return await self._send(writer, req, render(*reply, close), keep=not close)
        if self.busy >= self.workers:
            error = f"the server is at its limit of {self.workers} requests at once; retry shortly"
            return await self._send(writer, req, refusal(503, error, {"retry-after": "1"}))
        self.busy += 1
        try:
            if req.expect_continue:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await self._within(self.request_s, writer, reader.readexactly(req.length or 0))
            loop = asyncio.get_running_loop()
            data = await loop.run_in_executor(self.pool, self._predict, body, not req.keep_alive)
        finally:
            self.busy -= 1
        return await self._send(writer, req, data, keep=req.keep_alive)

    async def _head(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request:
        """The next request head, within the idle timeout; counts as waiting (and evictable) meanwhile."""
        if len(self.waiting) >= self.max_open:  # the connection waiting longest makes room
            oldest = min(self.waiting, key=self.waiting.__getitem__)
            del self.waiting[oldest]
            oldest.transport.abort()
        self.waiting[writer] = time.monotonic()
        try:
            head = await self._within(self.idle_s, writer, reader.readuntil(b"\r\n\r\n"))
        except asyncio.LimitOverrunError:
            raise HttpError(431, f"request head over {MAX_HEAD} bytes") from None
        finally:
            self.waiting.pop(writer, None)
        return parse_head(head[:-4].lstrip(b"\r\n"))

    def _predict(self, body: bytes, close: bool) -> bytes:
        """In a worker thread: parse, check, predict and render (nothing CPU-bound in the event loop)."""
        return render(*self.app.predict(body), close)

    async def _send(self, writer: asyncio.StreamWriter, req: Request | None, data: bytes, keep: bool = False) -> bool:
        status = int(data[9:12])
        self.app.count(status)
        if self.access_log:
            what = f"{req.method} {shown(req.path)}" if req else "-"
            log(f"{writer.get_extra_info('peername', ('?',))[0]} {what} {status}")
        writer.write(data)
        await self._within(self.idle_s, writer, writer.drain())
        return keep

    @staticmethod
    async def _within(seconds: float, writer: asyncio.StreamWriter, step: Awaitable[T]) -> T:
        """``step``, or the connection aborted after ``seconds`` (a timer: cheaper than a task per wait_for)."""
        timer = asyncio.get_running_loop().call_later(seconds, writer.transport.abort)
        try:
            return await step
        finally:
            timer.cancel()


_LIMITS = {  # key: (variable, default)
    "idle_s": ("NBDEPLOY_IDLE_TIMEOUT_S", 10.0),
    "request_s": ("NBDEPLOY_REQUEST_TIMEOUT_S", 60.0),
    "workers": ("NBDEPLOY_MAX_CONNECTIONS", 64),
    "max_open": ("NBDEPLOY_MAX_OPEN_CONNECTIONS", 1024),
    "max_body": ("NBDEPLOY_MAX_BODY_BYTES", 128 * 1024 * 1024),
    "max_rows": ("NBDEPLOY_MAX_ROWS", 200_000),
}


def limits(env: Any) -> dict[str, float]:
    """The server's limits from the environment; a value that is not a positive number refuses the start."""
    out: dict[str, float] = {}
    for key, (var, default) in _LIMITS.items():
        raw = env.get(var) or str(default)
        try:
            value = float(raw) if isinstance(default, float) else int(raw)
        except ValueError:
            value = 0
        if not 0 < value < 1e12:
            raise ValueError(f"{var} must be a positive number, got {shown(raw)}")
        out[key] = value
    try:  # sockets waiting for a head must leave descriptors for the workers and the model
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft != resource.RLIM_INFINITY:
            out["max_open"] = max(8, min(out["max_open"], soft - out["workers"] - 64))
    except (ImportError, OSError, ValueError):
        pass
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an nbdeploy edge bundle with onnxruntime.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--bundle", default=str(Path(__file__).resolve().parent))
    parser.add_argument(
        "--manifest-sha256",
        default=os.environ.get("NBDEPLOY_MANIFEST_SHA256"),
        help="sha256 of manifest.json as export_edge returned it (default: $NBDEPLOY_MANIFEST_SHA256); required",
    )
    args = parser.parse_args(argv)
    env = os.environ
    try:
        if not args.manifest_sha256:
            raise IntegrityError(
                "no manifest sha256 to check the bundle against: pass --manifest-sha256 or set "
                "NBDEPLOY_MANIFEST_SHA256 to the value export_edge returned (bundle.manifest_sha256)"
            )
        model = EdgeModel(Path(args.bundle), args.manifest_sha256)
        lim = limits(env)
        keys = KeyFile(env.get("NBDEPLOY_KEYS_FILE"), required=env.get("NBDEPLOY_AUTH", "required") != "off")
        data_dir = env.get("NBDEPLOY_DATA_DIR")  # the deployment's folder: the request log as the other targets
        requests = RequestLog(data_dir, keep_inputs=not env.get("NBDEPLOY_REDACT")) if data_dir else None
        server = EdgeServer(App(model, keys, int(lim["max_body"]), int(lim["max_rows"]), requests), lim)
    except Exception as exc:
        sys.stderr.write(f"nbdeploy: REFUSING TO START: {exc}\n")
        raise SystemExit(1) from exc
    if not (sys.flags.isolated or getattr(sys.flags, "safe_path", False)):
        log("nbdeploy edge: warning: run `python -I server.py`, so files put beside it cannot shadow its imports")
    serving = f"nbdeploy edge: serving {args.bundle} on http://{args.host}:{args.port}"
    try:
        asyncio.run(server.serve(args.host, args.port, lambda: log(serving)))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the port is taken
        sys.stderr.write(f"nbdeploy: REFUSING TO START: {exc}\n")
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
