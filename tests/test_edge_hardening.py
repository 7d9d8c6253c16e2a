"""The edge server under attack: real servers over real HTTP on 127.0.0.1, raw sockets for what no client sends.

Each test closes one class of failure and holds the same bounds while it runs: ``/livez`` answers within
LIVEZ_S, the server's RSS grows by less than RSS_BOUND_MB, and it runs at most THREAD_BOUND threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from test_edge import _model, _serve, churn

import nbdeploy
from nbdeploy.edge import BundleIntegrityError, EdgeBundle, verify_bundle
from nbdeploy.edge.server import EdgeModel, InputError, IntegrityError
from nbdeploy.errors import TargetError
from nbdeploy.targets import _process

KEY = "nbd_hardening-key"
LIVEZ_S = 1.0
RSS_BOUND_MB = 50
MAX_CONNECTIONS = 8
IDLE_S, REQUEST_S = 2, 3
MAX_BODY = 1 << 20
THREAD_BOUND = MAX_CONNECTIONS + 6  # the pool, the event loop, and the few onnxruntime and Python keep
BIG = 200 << 20  # a body announced (and sent) without the right to send it
ENV = {
    "NBDEPLOY_IDLE_TIMEOUT_S": str(IDLE_S),
    "NBDEPLOY_REQUEST_TIMEOUT_S": str(REQUEST_S),
    "NBDEPLOY_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    "NBDEPLOY_MAX_BODY_BYTES": str(MAX_BODY),
}

pytestmark = pytest.mark.slow  # real edge servers over real sockets


@dataclass
class Server:
    pid: int
    url: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def _status(self, field: str) -> int:
        line = next(x for x in Path(f"/proc/{self.pid}/status").read_text().splitlines() if x.startswith(field))
        return int(line.split()[1])

    def rss_mb(self) -> float:
        return self._status("VmRSS:") / 1024

    def threads(self) -> int:
        return self._status("Threads:")

    def livez_s(self) -> float:
        """Seconds /livez took to answer 200 (fails beyond LIVEZ_S)."""
        start = time.monotonic()
        answer = exchange(self.port, b"GET /livez HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", LIVEZ_S)
        assert status_of(answer) == 200, answer[:200]
        return time.monotonic() - start

    def check_bounds(self, rss_before: float) -> None:
        assert self.livez_s() < LIVEZ_S
        assert self.threads() <= THREAD_BOUND
        assert self.rss_mb() - rss_before < RSS_BOUND_MB, f"RSS {rss_before:.0f} -> {self.rss_mb():.0f} MB"


def read_all(sock: socket.socket) -> bytes:
    """What the server sent until it closed; a reset after its answer still leaves the answer read."""
    chunks = []
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def closed_by_server(sock: socket.socket, end: float) -> bytes | None:
    """What the server sent before it closed ``sock``, or None if it had not closed it by ``end``."""
    chunks = []
    try:
        while True:
            sock.settimeout(max(0.01, end - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except TimeoutError:
        return None
    except OSError:  # a reset: closed
        return b"".join(chunks)


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_all(sock)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def head(path: str = "/predict", *lines: str, key: str | None = KEY) -> bytes:
    fields = ["Host: t", *([f"X-API-Key: {key}"] if key else []), *lines]
    return (f"POST {path} HTTP/1.1\r\n" + "".join(f"{f}\r\n" for f in fields) + "\r\n").encode()


def wait_for(condition, deadline_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, f"{what} did not happen within {deadline_s} s"
        time.sleep(0.05)


# ---- a bundle with a nullable column, served once for the module ----


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    return churn()


@pytest.fixture(scope="module")
def nullable(data):  # type: ignore[no-untyped-def]
    """A model whose sample has missing values in 'monthly' only, and that sample."""
    X, y = data
    X = X[["tenure", "monthly", "plan"]].copy()
    X.loc[::10, "monthly"] = np.nan
    prep = ColumnTransformer(
        [
            ("tenure", StandardScaler(), ["tenure"]),
            ("monthly", Pipeline([("fill", SimpleImputer()), ("scale", StandardScaler())]), ["monthly"]),
            ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
        ]
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))]).fit(X, y), X


@pytest.fixture(scope="module")
def bundle(nullable, tmp_path_factory) -> EdgeBundle:  # type: ignore[no-untyped-def]
    model, sample = nullable
    return nbdeploy.export_edge(model, tmp_path_factory.mktemp("hardening") / "churn.edge", sample=sample)


@pytest.fixture(scope="module")
def other_bundle(data, tmp_path_factory) -> EdgeBundle:  # type: ignore[no-untyped-def]
    model, sample = _model("random-forest", *data)
    return nbdeploy.export_edge(model, tmp_path_factory.mktemp("other") / "rf.edge", sample=sample)


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):  # type: ignore[no-untyped-def]
    keys = tmp_path_factory.mktemp("keys") / "keys.json"
    keys.write_text(json.dumps({"sha256": [hashlib.sha256(KEY.encode()).hexdigest()]}))
    pid, url = _serve(sys.executable, bundle, {**ENV, "NBDEPLOY_KEYS_FILE": str(keys)})
    try:
        yield Server(pid, url)
    finally:
        _process.stop_group(pid, str(bundle.path))


# ---- 1. refusals from the head alone: no body read, the connection closed ----


class Flood(threading.Thread):
    """Sends ``head`` then ``BIG`` bytes until the server closes; keeps what it answered and how much went out."""

    def __init__(self, port: int, head: bytes) -> None:
        super().__init__(daemon=True)
        self.port, self.head, self.sent, self.answer = port, head, 0, b""

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=20) as sock:
            sock.sendall(self.head)
            chunk = b"x" * (1 << 20)
            with contextlib.suppress(OSError):
                while self.sent < BIG:
                    self.sent += sock.send(chunk)
            self.answer = read_all(sock)


@pytest.mark.parametrize(
    ("path", "key", "expected"),
    [("/predict", None, 401), ("/predict", "nbd_wrong", 401), ("/nope", None, 404), ("/predict", KEY, 413)],
)
def test_refusals_are_answered_from_the_head_without_reading_the_body(server, path, key, expected):
    rss = server.rss_mb()
    flood = Flood(server.port, head(path, f"Content-Length: {BIG}", key=key))
    flood.start()
    latencies = [server.livez_s()]
    end = time.monotonic() + 30
    while flood.is_alive() and time.monotonic() < end:
        latencies.append(server.livez_s())
    flood.join(30)
    assert status_of(flood.answer) == expected, flood.answer[:300]
    assert b"connection: close" in flood.answer.lower()
    assert flood.sent < BIG // 8, f"{flood.sent >> 20} MB went out: the server kept reading"
    assert max(latencies) < LIVEZ_S
    server.check_bounds(rss)


# ---- 2. lengths that cannot frame a body ----

SMUGGLED = b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n"  # must never be read as a second request


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["Content-Length: -1"], 400),
        (["Content-Length: abc"], 400),
        (["Content-Length: 1e3"], 400),
        (["Content-Length: +33"], 400),
        (["Content-Length: 33", "Content-Length: 34"], 400),
        (["Content-Length: 33, 34"], 400),
        (["Content-Length : 33"], 400),
        (["Transfer-Encoding: chunked", "Content-Length: 33"], 400),
        (["Transfer-Encoding: chunked"], 411),
        ([], 411),
        ([f"Content-Length: {'9' * 40}"], 413),
    ],
)
def test_lengths_that_cannot_frame_a_body_are_refused(server, lines, expected):
    rss = server.rss_mb()
    answer = exchange(server.port, head("/predict", *lines) + SMUGGLED)
    assert status_of(answer) == expected, answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1 and b"connection: close" in answer.lower()
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    server.check_bounds(rss)


# ---- 3. slow clients: a socket each, never a thread, and cut off ----


def test_slow_clients_cost_no_threads_and_are_cut_off(server):
    rss = server.rss_mb()
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=IDLE_S + 5) for _ in range(300)]
    try:
        for sock in slow:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\n")  # and never the rest of the head
        latencies = [server.livez_s() for _ in range(5)]
        print(f"300 slow heads: /livez max {max(latencies) * 1000:.1f} ms, {server.threads()} threads")
        assert max(latencies) < LIVEZ_S
        server.check_bounds(rss)
        end = time.monotonic() + IDLE_S + 3
        assert all(closed_by_server(sock, end) == b"" for sock in slow)  # within the idle timeout and a margin
    finally:
        for sock in slow:
            sock.close()


def test_bodies_beyond_the_cap_get_503_and_stalled_bodies_are_cut_off(server):
    rss = server.rss_mb()
    stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=REQUEST_S + 5) for _ in range(60)]
    try:
        for sock in stalled:
            sock.sendall(head("/predict", "Content-Length: 100") + b"{")
        body = json.dumps({"inputs": [{"tenure": 1, "monthly": 2.0, "plan": "pro"}]}).encode()
        answer = exchange(server.port, head("/predict", f"Content-Length: {len(body)}") + body)
        assert status_of(answer) == 503 and b"retry-after: 1" in answer.lower()
        print(f"{len(stalled)} stalled bodies: {server.threads()} threads, /livez {server.livez_s() * 1000:.1f} ms")
        server.check_bounds(rss)
        end = time.monotonic() + REQUEST_S + 3
        for sock in stalled:  # answered 503 (beyond the cap) or cut off after NBDEPLOY_REQUEST_TIMEOUT_S
            answer = closed_by_server(sock, end)
            assert answer is not None and status_of(answer) in (0, 503)
        resp = httpx.post(f"{server.url}/predict", content=body, headers={"x-api-key": KEY}, trust_env=False)
        assert resp.status_code == 200, resp.text
    finally:
        for sock in stalled:
            sock.close()


# ---- 4. every malformed body is a 400 with a short message ----

ROW = b'{"tenure": 3, "monthly": 50.5, "plan": "pro"}'


def rows(*extra: bytes) -> bytes:
    return b'{"inputs": [' + b", ".join([ROW, *extra]) + b"]}"


BAD_BODIES = {
    "inputs a number": (b'{"inputs": 5}', "'inputs' must be"),
    "data a number": (b'{"inputs": {"data": 5}}', "split inputs need 'columns'"),
    "a list": (b'[{"inputs": []}]', "a JSON object with 'inputs'"),
    "no inputs": (b'{"rows": []}', "a JSON object with 'inputs'"),
    "not JSON": (b'{"inputs": [', "not valid JSON"),
    "invalid UTF-8": (b'{"inputs": "\xff\xfe"}', "not valid JSON"),
    "100,000 nested lists": (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests too deeply"),
    "30,000 nested objects": (b'{"a": ' * 30_000 + b"1" + b"}" * 30_000, "nests too deeply"),
    "5,000 digits": (rows(b'{"tenure": ' + b"9" * 5000 + b', "monthly": 1, "plan": "pro"}'), "too many digits"),
    "4,000 digits": (rows(b'{"tenure": ' + b"9" * 4000 + b', "monthly": 1, "plan": "pro"}'), "column 'tenure'"),
    "a row not a list": (b'{"inputs": {"columns": ["tenure", "monthly", "plan"], "data": [5]}}', "'data'"),
    "a row not an object": (b'{"inputs": [5]}', "row 0 is int"),
    "a column named twice": (
        b'{"inputs": {"columns": ["tenure", "tenure", "monthly"], "data": [[1, 2, 3]]}}',
        "'tenure' is named twice",
    ),
    "NaN where the sample had none": (
        rows(b'{"tenure": NaN, "monthly": 1, "plan": "pro"}'),
        "column 'tenure': missing value in row 1",
    ),
    "NaN as a string": (rows(b'{"tenure": 1, "monthly": 1, "plan": NaN}'), "column 'plan': missing value in row 1"),
    "Infinity": (rows(b'{"tenure": 1, "monthly": Infinity, "plan": "pro"}'), "column 'monthly': expected a finite"),
    "-Infinity": (rows(b'{"tenure": 1, "monthly": -Infinity, "plan": "pro"}'), "column 'monthly': expected a finite"),
    "1e999": (rows(b'{"tenure": 1, "monthly": 1e999, "plan": "pro"}'), "column 'monthly': expected a finite"),
    "1e300 (beyond float32)": (rows(b'{"tenure": 1, "monthly": 1e300, "plan": "pro"}'), "column 'monthly'"),
    "1e30 integer (beyond int64)": (rows(b'{"tenure": 1e30, "monthly": 1, "plan": "pro"}'), "column 'tenure'"),
    "a megabyte value": (rows(b'{"tenure": "' + b"x" * 900_000 + b'", "monthly": 1, "plan": "p"}'), "column 'tenure'"),
    "a megabyte name": (rows(b'{"' + b"y" * 900_000 + b'": 1, "tenure": 1, "monthly": 1, "plan": "p"}'), "unknown"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_malformed_bodies_are_400_with_a_short_message(server, case):
    body, message = BAD_BODIES[case]
    rss = server.rss_mb()
    resp = httpx.post(f"{server.url}/predict", content=body, headers={"x-api-key": KEY}, trust_env=False, timeout=30)
    assert resp.status_code == 400, resp.text[:300]
    error = resp.json()["error"]
    assert message in error and len(error) < 300, error
    server.check_bounds(rss)


def test_nan_is_a_missing_value_where_the_sample_had_some(server, nullable):
    model, sample = nullable
    body = rows(b'{"tenure": 3, "monthly": NaN, "plan": "pro"}', ROW.replace(b"50.5", b"null"))
    got = httpx.post(f"{server.url}/predict", content=body, headers={"x-api-key": KEY}, trust_env=False)
    assert got.status_code == 200, got.text
    frame = pd.DataFrame({"tenure": [3, 3, 3], "monthly": [50.5, np.nan, np.nan], "plan": ["pro"] * 3})
    assert got.json()["predictions"] == model.predict(frame[sample.columns]).tolist()


def test_array_models_refuse_the_same_values(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    model = LogisticRegression().fit(X, X[:, 0] > 0)
    edge = EdgeModel(nbdeploy.export_edge(model, tmp_path / "a.edge", sample=X).path)
    for inputs, message in [
        ([[1, 2, float("inf")]], "feature 2: expected a finite number"),
        ([[1, 2, 10**400]], "feature 2: expected a finite number"),
        ([[1, 2, 1e300]], "feature 2: expected a finite number"),
        ([[1, 2, 3], [1, float("nan"), 3]], "feature 1: missing value in row 1"),
        ([[1, 2, "x" * 10**6]], "feature 2: expected a number"),
        ([5], "row 0: expected a list"),
        (5, "non-empty list"),
        ({"data": 5}, "non-empty list"),
    ]:
        with pytest.raises(InputError, match=message) as err:
            edge.feeds(inputs)
        assert len(str(err.value)) < 300
    assert edge.predict([[1, 2, 3]]) == model.predict([[1, 2, 3]]).tolist()


# ---- 5. integrity: the manifest's sha256 comes from outside the bundle ----


def tamper(path: Path, other: EdgeBundle) -> None:
    """Swap in another export's model and rewrite the manifest to match: consistent, and not what was exported."""
    shutil.copy2(other.path / "model.onnx", path / "model.onnx")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = hashlib.sha256((path / "model.onnx").read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1))


def start_refused(bundle_dir: Path, manifest_sha256: str | None) -> tuple[int | None, str, list[int]]:
    """Start the server and poll /predict until it exits; (exit code, stderr, statuses it answered)."""
    port = _process.free_port()
    env = {"PATH": os.environ["PATH"], "NBDEPLOY_AUTH": "off"}
    env |= {"NBDEPLOY_MANIFEST_SHA256": manifest_sha256} if manifest_sha256 else {}
    cmd = [sys.executable, "-I", str(bundle_dir / "server.py"), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    answered: list[int] = []
    try:
        end = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < end:
            with contextlib.suppress(httpx.HTTPError):
                resp = httpx.post(f"http://127.0.0.1:{port}/predict", json={"inputs": []}, timeout=1, trust_env=False)
                answered.append(resp.status_code)
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    return proc.returncode, proc.stderr.read() if proc.stderr else "", answered


def test_a_tampered_bundle_refuses_to_start_and_never_answers(bundle, other_bundle, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle.path, tampered)
    tamper(tampered, other_bundle)
    EdgeModel(tampered)  # consistent with the manifest beside it: only the anchor tells
    with pytest.raises(IntegrityError, match=r"manifest\.json has sha256"):
        EdgeModel(tampered, bundle.manifest_sha256)
    for anchor, why in [(bundle.manifest_sha256, "manifest.json has sha256"), (None, "no manifest sha256")]:
        code, stderr, answered = start_refused(tampered, anchor)
        assert code not in (0, None) and f"nbdeploy: REFUSING TO START: {why}" in stderr, stderr
        assert answered == []


def test_verify_bundle_names_the_file_that_differs(bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle.path, copy)
    assert verify_bundle(copy, bundle.manifest_sha256)["format"] == "nbdeploy-edge/1"
    schema = (copy / "schema.json").read_bytes()
    (copy / "schema.json").write_bytes(schema.replace(b"monthly", b"monthlY"))
    with pytest.raises(BundleIntegrityError, match=r"schema\.json has been modified"):
        verify_bundle(copy, bundle.manifest_sha256)
    (copy / "schema.json").write_bytes(schema)
    (copy / "numpy.py").write_text("raise SystemExit('shadowed')\n")
    with pytest.raises(BundleIntegrityError, match=r"numpy\.py is in the bundle but not in its manifest"):
        verify_bundle(copy, bundle.manifest_sha256)
    with pytest.raises(BundleIntegrityError, match=r"manifest\.json has sha256"):
        verify_bundle(copy, "0" * 64)


def test_the_image_verifies_itself_with_the_exported_hash(bundle, other_bundle, tmp_path, monkeypatch):
    from nbdeploy.edge import build_image
    from nbdeploy.targets import _baseimage, _engine

    fake = tmp_path / "engine"  # a container engine that keeps what it was asked to build
    fake.write_text(f'#!/bin/sh\nif [ "$1" = build ]; then cp "$5" {tmp_path}; ls "$6/bundle" > {tmp_path}/files; fi\n')
    fake.chmod(0o755)
    monkeypatch.setattr(_engine, "find_engine", lambda name=None: _engine.Engine("fake", str(fake)))
    monkeypatch.setattr(_baseimage, "resolve", lambda engine, ref: ref)
    source = tmp_path / "bundle"
    shutil.copytree(bundle.path, source)
    (source / "notes.log").write_text("not in the manifest, so not in the image")
    image = build_image(source, "localhost/t:1", manifest_sha256=bundle.manifest_sha256)
    text = (tmp_path / "Containerfile").read_text()
    assert '"-I", "/bundle/server.py"' in text and f'"--manifest-sha256", "{bundle.manifest_sha256}"' in text
    assert image.manifest_sha256 == bundle.manifest_sha256
    assert (tmp_path / "files").read_text().split() == sorted(["manifest.json", *bundle.manifest["files"]])
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle.path, tampered)
    tamper(tampered, other_bundle)
    with pytest.raises(BundleIntegrityError, match=r"manifest\.json has sha256"):
        build_image(tampered, "localhost/t:2", manifest_sha256=bundle.manifest_sha256)


def test_the_edge_target_starts_a_bundle_only_with_the_hash_it_recorded(data, other_bundle, stop_after, monkeypatch):
    monkeypatch.delenv("NBDEPLOY_EDGE_PYTHON", raising=False)
    model, sample = _model("columns+logreg", *data)
    dep = nbdeploy.deploy(model, name="edge-anchor", sample=sample, target="edge")
    stop_after(dep)
    edge = dep.info()["edge"]
    bundle_dir = Path(edge["bundle"])
    assert edge["manifest_sha256"] == hashlib.sha256((bundle_dir / "manifest.json").read_bytes()).hexdigest()
    dep.stop()
    dep = nbdeploy.rollback("edge-anchor", 1)  # the bundle made at deploy, checked against the recorded hash
    stop_after(dep)
    np.testing.assert_array_equal(dep.predict(sample[:20]), model.predict(sample[:20]))
    dep.stop()
    tamper(bundle_dir, other_bundle)
    with pytest.raises(TargetError, match="did not start") as err:
        nbdeploy.rollback("edge-anchor", 1)
    assert "REFUSING TO START: manifest.json has sha256" in str(err.value.hint)
