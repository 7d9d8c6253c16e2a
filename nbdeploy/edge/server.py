"""nbdeploy edge server: serve an ONNX bundle with onnxruntime, numpy and the standard library alone.

This file is copied into every edge bundle as ``server.py``; it must never import nbdeploy, pandas,
scikit-learn, BentoML or cloudpickle. Run ``python server.py --port 8080`` inside the bundle.

Contract (as the other nbdeploy targets): ``POST /predict`` with ``{"inputs": [{col: value}, ...]}``
or ``{"inputs": {"columns": [...], "data": [[...]]}}`` answers ``{"predictions": [...]}``; bad input
is a 400 naming the column; ``/livez`` and ``/readyz`` answer 200. When ``NBDEPLOY_AUTH`` is not
``off``, ``/predict`` needs ``Authorization: Bearer KEY`` (or ``X-API-Key``) whose sha256 is listed
in ``NBDEPLOY_KEYS_FILE`` (``{"sha256": [...]}``, re-read when it changes).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

GUARDED = ("/predict",)
_EXPECTED = {"integer": "a number", "float": "a number", "bool": "true or false", "string": "a string"}


class InputError(ValueError):
    """A request the schema refuses; the message names the column or field."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _columns(inputs: Any, names: list[str]) -> tuple[dict[str, list[Any]], int]:
    """Column name -> values, from records or split inputs; refuses missing and unknown columns."""
    if isinstance(inputs, dict) and "data" in inputs:
        cols, data = inputs.get("columns"), inputs["data"]
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise InputError("split inputs need 'columns': a list of column names")
        if len(set(cols)) != len(cols):
            raise InputError(f"column '{next(c for c in cols if cols.count(c) > 1)}' is named twice")
        if not isinstance(data, list) or not all(isinstance(r, list) and len(r) == len(cols) for r in data):
            raise InputError(f"split inputs need 'data': a list of rows of {len(cols)} values")
        got = {c: list(v) for c, v in zip(cols, zip(*data, strict=True), strict=True)} if data else {}
        n = len(data)
    else:
        records = [inputs] if isinstance(inputs, dict) else inputs
        if not isinstance(records, list):
            raise InputError(
                f"'inputs' must be a list of records or {{'columns', 'data'}}, got {type(inputs).__name__}"
            )
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise InputError(f"row {i} is {type(rec).__name__}, expected an object of column: value")
        seen: dict[str, None] = {}
        for rec in records:
            seen.update(dict.fromkeys(rec))
        got = {c: [rec.get(c) for rec in records] for c in seen}
        n = len(records)
    if n == 0:
        raise InputError("'inputs' is empty: send at least one row")
    missing = [c for c in names if c not in got]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"missing column '{missing[0]}'{more}")
    unknown = [c for c in got if c not in names]
    if unknown:
        raise InputError(f"unknown column '{unknown[0]}'; expected columns: {', '.join(names)}")
    return got, n


def _bad(name: str, spec: dict[str, Any], values: list[Any], row: int) -> InputError:
    expected = _EXPECTED.get(spec["kind"], "a string")
    return InputError(f"column '{name}': expected {expected}, got {values[row]!r} (row {row})")


def _column(name: str, values: list[Any], spec: dict[str, Any], onnx_type: str) -> np.ndarray:
    """One column as the (n, 1) array the ONNX input expects."""
    kind = spec["kind"]
    if kind in ("string", "category"):
        for i, v in enumerate(values):
            if not isinstance(v, str):
                if v is None:
                    raise InputError(f"column '{name}': missing value in row {i} (the edge bundle needs a string)")
                raise _bad(name, spec, values, i)
        if kind == "category":
            known = set(spec.get("categories") or [])
            for i, v in enumerate(values):
                if v not in known:
                    raise InputError(f"column '{name}': unknown category {v!r} (row {i})")
        return np.array(values, dtype=object).reshape(-1, 1)
    allowed = (bool,) if kind == "bool" else (int, float)
    for i, v in enumerate(values):
        if v is None:
            if not spec.get("nullable", True) or "int64" in onnx_type:
                raise InputError(f"column '{name}': missing value in row {i} (the sample had no missing values)")
        elif not isinstance(v, allowed) or (kind != "bool" and isinstance(v, bool)):
            raise _bad(name, spec, values, i)
    arr = np.array([np.nan if v is None else v for v in values], dtype="float64")
    if kind == "integer":
        frac = ~np.isnan(arr) & (arr % 1 != 0)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise InputError(f"column '{name}': expected an integer, got {values[i]!r} (row {i})")
    dtype = "int64" if "int64" in onnx_type else "float32"
    return arr.astype(dtype).reshape(-1, 1)


class EdgeModel:
    """The bundle's ONNX model behind the schema check: request inputs in, JSON-ready predictions out."""

    def __init__(self, bundle: Path) -> None:
        import onnxruntime as ort

        self.bundle = Path(bundle)
        self.schema = json.loads((self.bundle / "schema.json").read_text())
        self.manifest = json.loads((self.bundle / "manifest.json").read_text())
        for name, digest in self.manifest["files"].items():
            if name != "manifest.json" and sha256_file(self.bundle / name) != digest:
                raise RuntimeError(f"{name} has been modified since export (sha256 differs from the manifest)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("NBDEPLOY_THREADS", "1"))
        self.session = ort.InferenceSession(
            str(self.bundle / self.manifest["model"]), opts, providers=["CPUExecutionProvider"]
        )
        self.types = {i.name: i.type for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.mode = self.manifest["inputs"]["mode"]

    def feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        if self.schema["kind"] == "ndarray":
            width = self.schema["n_features"]
            rows = inputs.get("data") if isinstance(inputs, dict) else inputs
            if not isinstance(rows, list) or not rows:
                raise InputError(f"'inputs' must be a non-empty list of rows of {width} numbers")
            for i, row in enumerate(rows):
                if not isinstance(row, list) or len(row) != width:
                    raise InputError(f"row {i}: expected a list of {width} numbers")
                for j, v in enumerate(row):
                    if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)):
                        raise InputError(f"feature {j}: expected a number, got {v!r} (row {i})")
            arr = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype="float32")
            return {"input": arr}
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
                    self._hashes = tuple(json.loads(self.path.read_text()).get("sha256", []))
            except (OSError, ValueError):
                pass  # keep the last good set
            hashes = self._hashes
        if not key or not hashes:
            return False
        presented = hashlib.sha256(key.encode()).hexdigest()
        return any(hmac.compare_digest(presented, h) for h in hashes)


def make_handler(model: EdgeModel, keys: KeyFile, max_body: int, max_rows: int) -> type[BaseHTTPRequestHandler]:
    counts: dict[int, int] = {}
    counts_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
        server_version = "nbdeploy-edge"

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.address_string()} {format % args}\n")

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None, text: bool = False) -> None:
            raw = (body if text else json.dumps(body)).encode()
            self.send_response(status)
            self.send_header("content-type", "text/plain; version=0.0.4" if text else "application/json")
            self.send_header("content-length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)
            with counts_lock:
                counts[status] = counts.get(status, 0) + 1

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path in ("/livez", "/readyz", "/healthz"):
                self._send(200, {"status": "ok"})
            elif path == "/metrics":
                with counts_lock:
                    lines = [f'nbdeploy_edge_responses_total{{status="{s}"}} {n}' for s, n in sorted(counts.items())]
                self._send(200, "\n".join(["# TYPE nbdeploy_edge_responses_total counter", *lines]) + "\n", text=True)
            else:
                self._send(404, {"error": f"no route {path}"})

        def _key(self) -> str | None:
            auth = self.headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                return auth[7:].strip()
            return self.headers.get("x-api-key")

        def do_POST(self) -> None:
            path = self.path.split("?")[0]
            length = int(self.headers.get("content-length") or 0)
            if path not in GUARDED:
                self.rfile.read(length)
                return self._send(404, {"error": f"no route {path}"})
            if not keys.accepts(self._key()):
                self.rfile.read(length)
                return self._send(401, {"error": "unauthorized: send a valid API key"}, {"www-authenticate": "Bearer"})
            if length > max_body:
                self.close_connection = True
                return self._send(413, {"error": f"request body over the limit of {max_body} bytes"})
            rid = uuid.uuid4().hex
            try:
                body = json.loads(self.rfile.read(length) or b"null")
                if not isinstance(body, dict) or "inputs" not in body:
                    raise InputError("the body must be a JSON object with 'inputs'")
                inputs = body["inputs"]
                rows = len(inputs.get("data", [])) if isinstance(inputs, dict) else len(inputs or [])
                if rows > max_rows:
                    return self._send(413, {"error": f"{rows} rows in one request; the limit is {max_rows}"})
                predictions = model.predict(inputs)
            except (InputError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                return self._send(400, {"error": str(exc), "request_id": rid})
            except Exception as exc:  # the model failed: report it, keep serving
                return self._send(500, {"error": f"{type(exc).__name__}: {exc}", "request_id": rid})
            self._send(200, {"predictions": predictions, "request_id": rid})

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an nbdeploy edge bundle with onnxruntime.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--bundle", default=str(Path(__file__).resolve().parent))
    args = parser.parse_args(argv)
    env = os.environ
    try:
        model = EdgeModel(Path(args.bundle))
    except Exception as exc:
        sys.stderr.write(f"nbdeploy: REFUSING TO START: {exc}\n")
        raise SystemExit(1) from exc
    keys = KeyFile(env.get("NBDEPLOY_KEYS_FILE"), required=env.get("NBDEPLOY_AUTH", "required") != "off")
    handler = make_handler(
        model, keys, int(env.get("NBDEPLOY_MAX_BODY_BYTES", str(128 * 1024 * 1024))),
        int(env.get("NBDEPLOY_MAX_ROWS", "200000")),
    )  # fmt: skip
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    sys.stderr.write(f"nbdeploy edge: serving {args.bundle} on http://{args.host}:{args.port}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
