"""The endpoint router (``nbdeploy.router``): forwarding, swaps and restarts with no lost request, split, shadow,
the watch's automatic rollback.

The unit tests run in-process. The ``slow`` ones start the real router (``python -m nbdeploy.router``) in front of
small stand-in services (a threaded ``http.server`` answering JSON with an ``x-request-id``), never BentoML. Every
process a test starts is stopped by PID in the fixture's teardown, also when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbdeploy.router import contract
from nbdeploy.router.contract import Candidate, Endpoint, Upstream, Watch
from nbdeploy.router.server import Request, Router, _header_block, is_model_path
from nbdeploy.router.store import Store

ROOT = Path(__file__).resolve().parent.parent

UPSTREAM = r'''
"""A stand-in version: argv PORT VERSION [DELAY_S]. POST /_ctl/fail makes the model routes answer 500 from then on."""
import json, sys, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, VERSION = int(sys.argv[1]), int(sys.argv[2])
DELAY = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
state = {"fail": False}


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # http.server writes the head and the body in two sends: with Nagle on, the body waits for the router's delayed
    # ACK (40 ms) on a kept-alive connection. Services on asyncio (BentoML's uvicorn) set TCP_NODELAY already.
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass

    def _send(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", uuid.uuid4().hex)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.send_header("x-request-id", "chunky")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        self._send(200, {"version": VERSION, "path": self.path, "headers": dict(self.headers)})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/_ctl/fail":
            state["fail"] = True
            return self._send(200, {})
        if DELAY:
            time.sleep(DELAY)
        if state["fail"]:
            return self._send(500, {"error": "boom"})
        self._send(200, {"version": VERSION, "path": self.path, "body": body.decode(), "headers": dict(self.headers)})


srv = ThreadingHTTPServer(("127.0.0.1", PORT), H)
srv.daemon_threads = True
srv.serve_forever()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Lab:
    """Starts stand-in versions and the router for one test; ``close`` stops every process by PID."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.script = tmp / "upstream.py"
        self.script.write_text(UPSTREAM)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.path = tmp / "deployments" / "demo" / contract.ENDPOINT_FILE
        self.path.parent.mkdir(parents=True)
        self.port = free_port()
        self.router: subprocess.Popen[bytes] | None = None
        self.router_log = tmp / "router.log"

    def upstream(self, version: int, port: int | None = None, delay: float = 0.0) -> tuple[Upstream, Any]:
        port = port or free_port()
        proc = subprocess.Popen([sys.executable, str(self.script), str(port), str(version), str(delay)])
        self.procs.append(proc)
        wait_for(lambda: port_open(port), what=f"stand-in version {version} on {port}")
        return Upstream(version, f"http://127.0.0.1:{port}"), proc

    def write(self, **fields: Any) -> Endpoint:
        ep = contract.read(self.path) if self.path.exists() else Endpoint(name="demo", port=self.port)
        for key, value in fields.items():
            setattr(ep, key, value)
        contract.write(self.path, ep)
        return ep

    def start_router(self) -> None:
        self.router = subprocess.Popen(
            [sys.executable, "-m", "nbdeploy.router", "--endpoint", str(self.path)],
            cwd=ROOT,
            stderr=self.router_log.open("wb"),
        )
        self.procs.append(self.router)
        wait_for(lambda: self.status()["generation"] >= 0, what="the router")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        return httpx.get(self.url + contract.STATUS_PATH, timeout=5).json()

    def wait_generation(self, generation: int) -> None:
        wait_for(lambda: self.status()["generation"] >= generation, what=f"generation {generation}")

    def kill(self, proc: Any, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)

    def db(self, sql: str) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(self.path.parent / contract.STORE_FILE, timeout=10)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


class Load:
    """Threads posting /predict in a loop over keep-alive connections, as a busy client would."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.versions: list[int] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(self.url + "/predict", json={"inputs": [{"x": 1}]})
                    version = int(r.headers["x-nbdeploy-version"])
                    with self.lock:
                        if r.status_code != 200:
                            self.errors.append(f"{r.status_code} {r.text}")
                        self.versions.append(version)
                except Exception as exc:
                    with self.lock:
                        self.errors.append(repr(exc))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def wait_count(self, n: int) -> None:
        wait_for(lambda: len(self.versions) >= n, timeout=60, what=f"{n} answers")


# -- unit: no process ----------------------------------------------------------------------------------------------


def test_forwarded_headers_drop_hop_by_hop() -> None:
    headers = [
        (b"Host", b"x"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Authorization", b"Bearer k"),
        (b"Content-Length", b"99"),
        (b"Expect", b"100-continue"),
    ]
    block = _header_block(headers, 5, b"POST")
    assert block == b"Host: x\r\nAuthorization: Bearer k\r\ncontent-length: 5\r\n\r\n"
    assert _header_block([(b"Host", b"x")], 0, b"GET") == b"Host: x\r\n\r\n"


def test_model_paths() -> None:
    assert is_model_path(b"/predict") and is_model_path(b"/frame/predict_proba")
    assert not is_model_path(b"/metrics") and not is_model_path(b"/predictx")


def test_contract_update_is_read_modify_write(tmp_path: Path) -> None:
    path = tmp_path / contract.ENDPOINT_FILE
    contract.write(path, Endpoint(name="n", port=1))

    def bump(ep: Endpoint) -> Endpoint:
        ep.versions[ep.generation] = "u"
        return ep

    threads = [threading.Thread(target=contract.update, args=(path, bump)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ep = contract.read(path)
    assert ep.generation == 9 and len(ep.versions) == 8  # no write lost another's change
    assert contract.update(path, lambda ep: None) is None and contract.read(path).generation == 9


def test_store_batches_rows_and_counters(tmp_path: Path) -> None:
    store = Store(tmp_path / "e.db")
    for i in range(2500):
        store.served((time.time(), f"r{i}", "/predict", 1, "live", 200, 1.0, 1))
    store.count("mirror_dropped", 3)
    store.close()
    store = Store(tmp_path / "e.db")  # counters add up across restarts
    store.count("mirror_dropped", 2)
    store.close()
    con = sqlite3.connect(tmp_path / "e.db")
    assert con.execute("SELECT count(*) FROM served").fetchone()[0] == 2500
    assert con.execute("SELECT value FROM counters WHERE name='mirror_dropped'").fetchone()[0] == 5


def _router(tmp_path: Path, **fields: Any) -> Router:
    path = tmp_path / contract.ENDPOINT_FILE
    contract.write(path, Endpoint(name="n", port=free_port(), **fields))
    return Router(path)


def _req(*headers: tuple[bytes, bytes]) -> Request:
    return Request(b"POST", b"/predict", list(headers), b"{}", True)


def test_split_draw_is_sticky_by_key_or_header(tmp_path: Path) -> None:
    cand = Candidate(Upstream(2, "http://127.0.0.1:2"), "split", 10.0, sticky="key")
    router = _router(tmp_path, live=Upstream(1, "http://127.0.0.1:1"), candidate=cand)
    try:
        a = {router._draw(_req((b"Authorization", b"Bearer alice"))) for _ in range(20)}
        assert len(a) == 1
        assert router._draw(_req((b"X-API-Key", b"alice"))) == a.pop()  # either way of giving the key
        router.ep.candidate = Candidate(cand.upstream, "split", 10.0, sticky="header:X-User")
        assert len({router._draw(_req((b"x-user", b"bob"))) for _ in range(20)}) == 1
        assert len({router._draw(_req()) for _ in range(20)}) > 1  # no header: random
        share = sum(router._draw(_req((b"x-user", b"u%d" % i))) < 10 for i in range(5000)) / 5000
        assert 0.08 < share < 0.12
        route = router._route(b"/v/2/predict", b"/v/2/predict?x=1", 50.0)
        assert route == ("pinned", 2, "http://127.0.0.1:2", b"/predict?x=1") or route[0] == 404
    finally:
        router.store.close()


def test_status_endpoint_refuses_remote_clients(tmp_path: Path) -> None:
    router = _router(tmp_path, live=Upstream(1, "http://127.0.0.1:1"))

    class Writer:
        data = b""

        def write(self, data: bytes) -> None:
            self.data += data

    async def ask(local: bool) -> bytes:
        w = Writer()
        await router._handle(Request(b"GET", contract.STATUS_PATH.encode(), [], b"", True), w, local)  # type: ignore[arg-type]
        return w.data

    try:
        assert asyncio.run(ask(False)).startswith(b"HTTP/1.1 404")
        answer = asyncio.run(ask(True))
        assert answer.startswith(b"HTTP/1.1 200")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["live"] == 1
    finally:
        router.store.close()


def test_watch_rolls_back_on_errors_and_records_it(tmp_path: Path) -> None:
    prev, new = Upstream(1, "http://127.0.0.1:1"), Upstream(2, "http://127.0.0.1:2")
    watch = Watch(prev, time.time() + 60, {"max_error_rate": 0.05, "min_requests": 20, "window_s": 30})
    router = _router(tmp_path, live=new, watch=watch, versions={1: prev.url, 2: new.url})

    async def burst() -> None:
        for i in range(30):
            router._record(b"/predict", 2, "live", 500 if i % 3 == 0 else 200, 4.0, 1, None)
        router._record(b"/metrics", 2, "live", 500, 4.0, 1, None)  # not a model route: not counted
        router._check_watch()
        assert router.ep.live is not None and router.ep.live.version == 1  # at once, in memory
        while router._watch_pending:
            await asyncio.sleep(0.01)

    try:
        asyncio.run(burst())
        ep = contract.read(tmp_path / contract.ENDPOINT_FILE)
        assert ep.live == prev and ep.candidate is None and ep.watch is not None
        assert ep.watch.outcome == "rolled-back"
        assert ep.watch.reason == "error rate 0.36 over 22 requests in 30 s > 0.05"  # judged at the 8th error
    finally:
        router.store.close()


def test_watch_keeps_the_new_version_after_a_clean_period(tmp_path: Path) -> None:
    prev, new = Upstream(1, "http://127.0.0.1:1"), Upstream(2, "http://127.0.0.1:2")
    router = _router(tmp_path, live=new, watch=Watch(prev, time.time() - 1), versions={1: prev.url, 2: new.url})

    async def tick() -> None:
        router._check_watch()
        while router._watch_pending:
            await asyncio.sleep(0.01)

    try:
        asyncio.run(tick())
        ep = contract.read(tmp_path / contract.ENDPOINT_FILE)
        assert ep.live == new and ep.watch is not None and ep.watch.outcome == "kept"
    finally:
        router.store.close()


# -- slow: the real process ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_forwarding_headers_versions_and_status(lab: Lab) -> None:
    v1, _ = lab.upstream(1)
    v2, _ = lab.upstream(2)
    lab.write(live=v1, versions={1: v1.url, 2: v2.url})
    lab.start_router()
    with httpx.Client(base_url=lab.url, timeout=10) as c:
        r = c.post("/predict", json={"a": 1}, headers={"X-Custom": "yes", "Authorization": "Bearer k"})
        assert r.status_code == 200 and r.headers["x-nbdeploy-version"] == "1" and r.headers["x-request-id"]
        seen = {k.lower(): v for k, v in r.json()["headers"].items()}
        assert seen["x-custom"] == "yes" and seen["authorization"] == "Bearer k" and r.json()["body"] == '{"a":1}'
        assert "keep-alive" not in seen.get("connection", "")
        r = c.post("/v/2/predict?x=1", content=b"{}")
        assert (
            r.json()["version"] == 2 and r.json()["path"] == "/predict?x=1" and r.headers["x-nbdeploy-version"] == "2"
        )
        r = c.get("/v/9/predict")
        assert r.status_code == 404 and "version 9" in r.json()["error"]
        r = c.get("/chunked")  # a chunked answer goes through re-framed
        assert r.text == "hello chunked world" and r.headers["x-nbdeploy-version"] == "1"
        assert c.get("/livez").json()["path"] == "/livez"
        status = c.get(contract.STATUS_PATH).json()
        assert status["live"] == 1 and status["served"] == {"1": 3, "2": 1} and status["versions"] == [1, 2]
    # a malformed request: 400 and the connection closed
    with socket.create_connection(("127.0.0.1", lab.port), timeout=5) as s:
        s.sendall(b"GARBAGE / HTTP/9\r\n\r\n")
        data = s.recv(65536)
        assert data.startswith(b"HTTP/1.1 400") and s.recv(65536) == b""
    with socket.create_connection(("127.0.0.1", lab.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 431")
    rows = wait_for(lambda: lab.db("SELECT version, role, status FROM served ORDER BY ts"), what="served rows")
    assert ("2", "pinned") in {(str(v), r) for v, r, _ in rows}


@pytest.mark.slow
def test_swap_under_continuous_load_loses_nothing(lab: Lab) -> None:
    v1, p1 = lab.upstream(1)
    v2, _ = lab.upstream(2)
    lab.write(live=v1, versions={1: v1.url})
    lab.start_router()
    with Load(lab.url) as load:
        load.wait_count(200)
        ep = lab.write(live=v2, versions={1: v1.url, 2: v2.url})
        wait_for(lambda: load.versions[-1] == 2, what="answers from version 2")
        # as the SDK does: wait until version 1 has nothing in flight, take it out, stop it
        wait_for(lambda: lab.status()["in_flight"].get("1", 0) == 0, what="version 1 drained")
        lab.write(versions={2: v2.url})
        lab.kill(p1, signal.SIGTERM)
        n = len(load.versions)
        load.wait_count(n + 300)
    assert load.errors == []
    assert load.versions[-300:] == [2] * 300
    assert lab.status()["generation"] == ep.generation + 1


@pytest.mark.slow
def test_restart_on_the_same_port_loses_nothing(lab: Lab) -> None:
    port = free_port()
    v1, p1 = lab.upstream(1, port)
    lab.write(live=v1, versions={1: v1.url})
    lab.start_router()
    with Load(lab.url) as load:
        load.wait_count(200)
        lab.kill(p1)  # SIGKILL, requests in flight included
        n = len(load.versions)
        time.sleep(0.3)  # the version stays down a while; this is the outage being tested, not a synchronisation
        lab.upstream(1, port)
        load.wait_count(n + 300)
    assert load.errors == []


@pytest.mark.slow
def test_split_ninety_ten_and_sticky_callers(lab: Lab) -> None:
    v1, _ = lab.upstream(1)
    v2, _ = lab.upstream(2)
    lab.write(live=v1, candidate=Candidate(v2, "split", 10.0), versions={1: v1.url, 2: v2.url})
    lab.start_router()
    with httpx.Client(base_url=lab.url, timeout=10) as c:
        got = Counter(int(c.post("/predict", content=b"{}").headers["x-nbdeploy-version"]) for _ in range(2000))
        assert 0.08 <= got[2] / 2000 <= 0.12, got
        ep = lab.write(candidate=Candidate(v2, "split", 10.0, sticky="key"))
        lab.wait_generation(ep.generation)
        by_key: dict[str, set[int]] = {}
        for i in range(1000):
            key = f"caller-{i % 200}"
            r = c.post("/predict", content=b"{}", headers={"Authorization": f"Bearer {key}"})
            by_key.setdefault(key, set()).add(int(r.headers["x-nbdeploy-version"]))
    assert all(len(v) == 1 for v in by_key.values())
    share = sum(v == {2} for v in by_key.values()) / len(by_key)
    assert 0.04 <= share <= 0.18
    roles = Counter(r for (r,) in wait_for(lambda: lab.db("SELECT role FROM served"), what="rows"))
    assert roles["candidate"] > 0 and roles["live"] > 0


def _p50_sequential(url: str, n: int) -> tuple[float, int]:
    times, failed = [], 0
    with httpx.Client(base_url=url, timeout=30) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.post("/predict", json={"inputs": [{"x": 1}]})
            times.append(time.perf_counter() - t0)
            failed += r.status_code != 200
    return statistics.median(times) * 1000, failed


@pytest.mark.slow
def test_shadow_stores_pairs_by_live_request_id(lab: Lab) -> None:
    v1, _ = lab.upstream(1)
    v2, _ = lab.upstream(2)
    lab.write(live=v1, candidate=Candidate(v2, "shadow", 100.0), versions={1: v1.url, 2: v2.url})
    lab.start_router()
    ids = set()
    with httpx.Client(base_url=lab.url, timeout=10) as c:
        for i in range(50):
            r = c.post("/predict", json={"i": i}, headers={"Authorization": "Bearer k"})
            assert r.json()["version"] == 1
            ids.add(r.headers["x-request-id"])
        c.get("/metrics")  # not a model route: not mirrored
    rows = wait_for(lambda: (r := lab.db("SELECT * FROM mirrored")) and len(r) >= 50 and r, what="50 pairs")
    assert {r[0] for r in rows} == ids and len(rows) == 50
    for _rid, _ts, path, inputs, lv, ls, _lms, lbody, cv, cs, cms, cbody, err in rows:
        assert path == "/predict" and lv == 1 and cv == 2 and ls == cs == 200 and err is None and cms > 0
        assert json.loads(lbody)["version"] == 1 and json.loads(cbody)["version"] == 2
        assert json.loads(cbody)["headers"]["Authorization"] == "Bearer k"  # the copy carries the caller's auth
        assert json.loads(inputs)["i"] >= 0
    assert lab.status()["mirror"]["sent"] == 50


@pytest.mark.slow
def test_slow_or_dead_shadow_costs_live_callers_nothing(lab: Lab) -> None:
    v1, _ = lab.upstream(1)
    v2, p2 = lab.upstream(2, delay=0.5)
    lab.write(live=v1, versions={1: v1.url, 2: v2.url})
    lab.start_router()
    _p50_sequential(lab.url, 50)  # warm up
    base, failed = _p50_sequential(lab.url, 400)
    assert failed == 0
    ep = lab.write(candidate=Candidate(v2, "shadow", 100.0))
    lab.wait_generation(ep.generation)
    shadowed, failed = _p50_sequential(lab.url, 400)  # 400 copies at ~4/s: the 256-deep queue fills and drops
    assert failed == 0
    assert shadowed <= base * 1.25 + 0.3, (base, shadowed)
    mirror = lab.status()["mirror"]
    assert mirror["dropped"] > 0 and mirror["sent"] + mirror["dropped"] + mirror["queued"] <= 400 + 2
    lab.kill(p2)  # the candidate dies: copies fail, live answers do not
    wait_for(lambda: lab.status()["mirror"]["queued"] == 0, timeout=30, what="the queue to empty")
    _, failed = _p50_sequential(lab.url, 100)
    assert failed == 0
    errors = wait_for(
        lambda: lab.db("SELECT cand_error FROM mirrored WHERE cand_status IS NULL"), timeout=20, what="failed copies"
    )
    assert errors and all(e for (e,) in errors)


@pytest.mark.slow
def test_watch_rolls_back_an_error_burst(lab: Lab) -> None:
    from nbdeploy.registry import Registry

    v1, _ = lab.upstream(1)
    v2, _ = lab.upstream(2)
    rules = {"max_error_rate": 0.05, "min_requests": 20, "window_s": 30}
    lab.write(live=v2, watch=Watch(v1, time.time() + 120, rules), versions={1: v1.url, 2: v2.url})
    lab.start_router()
    with Load(lab.url, threads=2) as load:
        load.wait_count(100)
        httpx.post(v2.url + "/_ctl/fail", timeout=5)  # version 2 breaks
        wait_for(lambda: load.versions[-20:] == [1] * 20, timeout=30, what="traffic back on version 1")
    failures = [e for e in load.errors if e.startswith("500")]
    assert failures and len(failures) <= 40 and len(failures) == len(load.errors)
    ep = wait_for(
        lambda: (e := contract.read(lab.path)).watch and e.watch.outcome and e, what="the outcome in the file"
    )
    assert ep.watch.outcome == "rolled-back" and ep.live == v1 and ep.candidate is None
    assert ep.watch.reason.startswith("error rate ") and "> 0.05" in ep.watch.reason
    registry = Registry(lab.tmp / "registry.db")  # NBDEPLOY_HOME as the router finds it from the endpoint's path
    events = wait_for(lambda: [e for e in registry.events("demo") if e["action"] == "auto-rollback"], what="event")
    assert events[-1]["version"] == 2 and events[-1]["detail"]["to"] == 1
    assert lab.status()["live"] == 1


@pytest.mark.slow
def test_sigterm_finishes_requests_in_flight(lab: Lab) -> None:
    v1, _ = lab.upstream(1, delay=1.0)
    lab.write(live=v1, versions={1: v1.url})
    lab.start_router()
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(httpx.post(lab.url + "/predict", content=b"{}", timeout=30)))
    t.start()
    wait_for(lambda: lab.status()["in_flight_total"] >= 2, what="a request in flight")  # it and this status call
    assert lab.router is not None
    os.kill(lab.router.pid, signal.SIGTERM)
    t.join(30)
    assert result and result[0].status_code == 200
    assert lab.router.wait(15) == 0
    assert lab.db("SELECT count(*) FROM served")[0][0] == 1  # flushed before exit
