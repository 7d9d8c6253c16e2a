"""Hardening: API keys, limits (413/503/504), faults survived. Real services over real HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import pytest
from conftest import auth, notebook

import nbdeploy
from nbdeploy import config, keys
from nbdeploy.registry import Registry
from nbdeploy.targets import _process

pytestmark = pytest.mark.slow

X = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, 0.25, 0.125]})
ROW = {"inputs": [{"a": 1.0, "b": 2.0}]}


@pytest.fixture(scope="module")
def secured():
    dep = nbdeploy.deploy(notebook("def f(df):\n    return df['a'] + df['b']\n")["f"], name="secured", sample=X)
    yield dep
    dep.stop()


def test_requests_without_a_valid_key_get_401_and_no_detail(secured):
    missing = httpx.post(f"{secured.url}/predict", json=ROW)
    wrong = httpx.post(f"{secured.url}/predict", json=ROW, headers={"authorization": "Bearer nbd_wrong"})
    wrong_header = httpx.post(f"{secured.url}/predict", json=ROW, headers={"x-api-key": "nbd_wrong"})
    for resp in (missing, wrong, wrong_header):
        assert resp.status_code == 401
        assert resp.json() == {"error": "unauthorized: send a valid API key"}  # same answer, whatever was wrong
    assert httpx.post(f"{secured.url}/feedback", json={"items": []}).status_code == 401
    good = httpx.post(f"{secured.url}/predict", json=ROW, headers=auth(secured))
    assert good.status_code == 200 and good.json()["predictions"] == [3.0]
    key = auth(secured)["authorization"].split()[1]
    assert httpx.post(f"{secured.url}/predict", json=ROW, headers={"x-api-key": key}).status_code == 200
    for open_path in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(f"{secured.url}{open_path}").status_code == 200, open_path


def test_the_key_is_shown_once_and_never_written_where_it_should_not_be(secured):
    key = Registry().key("secured")
    assert key and key.startswith("nbd_")
    dep = nbdeploy.get("secured")
    assert key not in dep._repr_html_()  # a later card masks it
    # send traffic so the request log and server log have content
    for _ in range(3):
        dep.predict(X)
    bento = Path(dep._record.bento_path)
    home = config.home()
    places = [*bento.rglob("*"), *(home / "deployments" / "secured").rglob("*"), home / "bentoml"]
    leaked = [p for p in places if p.is_file() and key.encode() in p.read_bytes()]
    assert leaked == []
    assert key not in dep.logs(1000)
    assert key not in nbdeploy.audit("secured").to_string()
    assert (Registry().path.stat().st_mode & 0o777) == 0o600


def test_no_card_holds_the_key_not_even_the_first():
    """A card is a notebook output, saved with the .ipynb: the key is masked on every card, the first included, and
    the curl line reads it from $NBDEPLOY_KEY (what a saved notebook holds: tests/test_notebooks.py)."""
    dep = nbdeploy.deploy(notebook("def f(df):\n    return df['a']\n")["f"], name="card-key", sample=X)
    try:
        key = Registry().key("card-key")
        first = dep._repr_html_()
        assert key not in first and keys.masked(key) in first and "Bearer $NBDEPLOY_KEY" in first
        assert dep._repr_html_() == first  # rendering changes nothing
        assert key not in nbdeploy.get("card-key")._repr_html_()
        assert str(dep.key()) == key and key not in repr(dep.key())
    finally:
        dep.stop()


def test_rotation_with_zero_failed_requests_in_a_running_loop(secured):
    old = Registry().key("secured")
    failures, successes = [], [0]
    stop = threading.Event()
    caller = nbdeploy.get("secured")  # another handle, holding the old key

    def loop() -> None:
        while not stop.is_set():
            try:
                caller.predict(X)
                successes[0] += 1
            except Exception as exc:  # counted, never raised
                failures.append(repr(exc))

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while successes[0] < 20:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        new = nbdeploy.get("secured").rotate_key()
        before = successes[0]
        while successes[0] < before + 50:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(30)
    assert failures == []
    assert new != old and Registry().key("secured") == new
    assert httpx.post(f"{secured.url}/predict", json=ROW, headers={"authorization": f"Bearer {old}"}).status_code == 401
    assert httpx.post(f"{secured.url}/predict", json=ROW, headers={"authorization": f"Bearer {new}"}).status_code == 200
    assert "key-rotated" in set(nbdeploy.audit("secured").action)


def test_auth_off_must_be_explicit():
    dep = nbdeploy.deploy(notebook("def f(df):\n    return df['a']\n")["f"], name="open-door", sample=X, auth=False)
    try:
        assert httpx.post(f"{dep.url}/predict", json=ROW).status_code == 200
        assert "auth=False" in dep._repr_html_()
    finally:
        dep.stop()


SLOW = "import time\ndef f(df):\n    time.sleep(float(df['a'].iloc[0]))\n    return df['a']\n"


@pytest.fixture(scope="module")
def limited():
    dep = nbdeploy.deploy(
        notebook(SLOW)["f"],
        name="limited",
        sample=pd.DataFrame({"a": [0.0, 0.0]}),
        limits={"max_rows": 100, "max_body_bytes": 20_000, "timeout_s": 2, "max_concurrency": 1, "max_queue": 1},
    )
    yield dep
    dep.stop()


def _post(dep, body, **kw):
    return httpx.post(f"{dep.url}/predict", json=body, headers=auth(dep), timeout=30, **kw)


def test_413_for_too_many_rows_and_too_large_bodies(limited):
    rows = _post(limited, {"inputs": [{"a": 0.0}] * 101})
    assert rows.status_code == 413 and "101 rows in one request; the limit is 100" in rows.text
    body = _post(limited, {"inputs": [{"a": 0.0}], "padding": "x" * 30_000})
    assert body.status_code == 413 and "over the limit of 20000 bytes" in body.text
    assert _post(limited, {"inputs": [{"a": 0.0}] * 100}).status_code == 200


def test_504_past_the_timeout(limited):
    started = time.monotonic()
    resp = _post(limited, {"inputs": [{"a": 4.0}]})
    assert resp.status_code == 504 and time.monotonic() - started < 4
    # the slow call holds the only slot past the timeout: the worker is recycled (connections drop meanwhile),
    # then the service answers again
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if _post(limited, {"inputs": [{"a": 0.0}]}).status_code == 200:
                break
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_503_with_retry_after_past_concurrency_and_queue(limited):
    # one slot and one queue place: of four simultaneous calls, two are served and two turned away
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _post(limited, {"inputs": [{"a": 0.8}]}), range(4)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 200, 503, 503], codes
    refused = [r for r in answers if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" and "concurrency limit" in r.text for r in refused)


def _worker_pids(rec) -> list[int]:
    procs = _process.members(rec.pid, rec.bento_path)
    return [p for p in procs if "_bentoml_impl.worker" in _process.cmdline(p)]


def test_a_killed_worker_is_replaced(secured):
    dep = nbdeploy.get("secured")
    (worker,) = _worker_pids(dep._record)
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        try:
            if dep.predict(X).tolist() == [1.5, 2.25, 3.125]:
                break
        except nbdeploy.PredictionError:
            pass
        assert time.monotonic() < deadline, "the service did not come back"
        time.sleep(0.1)
    assert _worker_pids(dep._record) and worker not in _worker_pids(dep._record)


def test_a_crashed_server_shows_failed_and_restarts_on_the_same_port():
    dep = nbdeploy.deploy(notebook("def f(df):\n    return df['a'] * 3\n")["f"], name="crashy", sample=X)
    try:
        url, pid = dep.url, dep._record.pid
        os.kill(pid, signal.SIGKILL)  # the server dies; its worker is orphaned and keeps the port
        deadline = time.monotonic() + 10
        while _process.is_alive(pid, "bentoml"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert dep.status() == "failed"
        row = nbdeploy.deployments().loc["crashy"]  # every view checks the process: the truth, and what to do
        assert (row["status"], row["recorded"], row["hint"]) == ("failed", "running", "nbdeploy restart crashy")
        dep.restart()
        assert dep.url == url and dep._record.pid != pid and dep.status() == "running"
        assert dep.predict(X).tolist() == [3.0, 6.0, 9.0]
    finally:
        dep.stop()


KERNEL = textwrap.dedent(
    """
    import sys, pandas as pd, nbdeploy
    X = pd.DataFrame({"a": [1.0, 2.0]})
    factor = float(sys.argv[1])
    def f(df):
        return df["a"] * factor
    try:
        dep = nbdeploy.deploy(f, name="raced", sample=X)
        print(dep.version, "serving", flush=True)
    except nbdeploy.Superseded as exc:  # lost the race: told, with the version that serves
        print(exc.message.split("'")[2].split()[0].lstrip("v"), "superseded", exc.message, flush=True)
    """
)


def test_two_kernels_deploying_at_once_leave_a_consistent_registry():
    env = dict(os.environ)
    procs = [
        subprocess.Popen([sys.executable, "-c", KERNEL, str(k)], stdout=subprocess.PIPE, text=True, env=env)
        for k in (2, 3)
    ]
    try:
        outs = [p.communicate(timeout=300)[0].split() for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
        assert sorted(int(o[0]) for o in outs) == [1, 2]
        running = nbdeploy.get("raced")
        assert running.status() == "running"
        # Whoever returned normally serves, or was replaced afterwards by the newer version; a call whose version
        # lost the race was told so, naming the newer version that serves.
        for version, outcome, *message in outs:
            if outcome == "superseded":
                assert int(version) == 1 and running.version == 2 and "v2" in " ".join(message)
        statuses = {r.version: r.status for r in Registry().list("raced", all_versions=True)}
        assert sorted(statuses.values()) in (["running", "stopped"], ["failed", "running"])
        for rec in Registry().list("raced", all_versions=True):
            if rec.status != "running" and rec.pid:
                assert not _process.is_alive(rec.pid, "bentoml")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for rec in Registry().list("raced", all_versions=True):
            if rec.status == "running":
                nbdeploy.get("raced", rec.version).stop()


INTERRUPTED = textwrap.dedent(
    """
    import pandas as pd, nbdeploy
    from nbdeploy.targets import base
    real = base.wait_ready
    def wait_then_announce(*args, **kwargs):
        print("starting", flush=True)
        return real(*args, **kwargs)
    import nbdeploy.targets.local as local
    local.wait_ready = wait_then_announce
    X = pd.DataFrame({"a": [1.0, 2.0]})
    nbdeploy.deploy(lambda df: df["a"], name="interrupted", sample=X)
    """
)


def test_an_interrupted_deploy_leaves_nothing_half_done():
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        assert proc.stdout.readline().strip() == "starting"
        proc.send_signal(signal.SIGINT)  # Ctrl-C / kernel interrupt while the server starts
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    recs = Registry().list("interrupted", all_versions=True)
    assert [r.status for r in recs] == ["failed"]
    assert "interrupted" not in set(nbdeploy.deployments().name)
    assert _process.members(0, "nbdeploy-interrupted") == []
    assert "deploy-failed" in set(nbdeploy.audit("interrupted").action)
