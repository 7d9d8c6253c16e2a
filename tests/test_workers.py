"""A service with two worker processes (the default is one per usable core; the rest of the suite runs one).

Both workers answer, each request is logged once, and feedback sent at once for requests either worker answered is
accepted in one call (the worker that takes it finds the other's answers in the shared request log).
"""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pandas as pd
import pytest
from callers import until
from sklearn.linear_model import LogisticRegression

import nbdeploy
from nbdeploy.runtime.workers import usable_cores, workers

pytestmark = pytest.mark.slow


def test_usable_cores_is_at_least_one_and_at_most_the_affinity() -> None:
    import os

    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))
    assert workers("auto") == min(usable_cores(), 8) and workers("3") == 3 and workers("0") == 1


def test_ready_only_when_every_worker_is_up(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from nbdeploy.runtime.workers import Started

    one = Started(1, tmp_path / "one")
    assert one.all_up()  # a single worker is up when it answers
    two = Started(2, tmp_path / "two")
    two.add()
    assert two.count() == 1 and not two.all_up()  # the first worker up, the second still loading
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (two.folder / str(dead.pid)).touch()  # a worker recycled by the watchdog left its file
    assert two.count() == 1 and not (two.folder / str(dead.pid)).exists()
    (two.folder / str(os.getppid())).touch()  # the second worker up
    assert two.count() == 2 and two.all_up()


def test_two_workers_answer_log_once_and_take_feedback_for_each_other(stop_after) -> None:
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(400, 3)), columns=["a", "b", "c"])
    y = (X.a + X.b > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    dep = nbdeploy.deploy(model, name="two-workers", sample=X, limits={"workers": 2}, compile=False)
    stop_after(dep)
    headers = dep.headers()
    rows = X[:1].to_dict(orient="records")
    ids: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(trust_env=False, timeout=30) as http:
            for _ in range(40):
                r = http.post(f"{dep.url}/predict", json={"inputs": rows}, headers=headers)
                assert r.status_code == 200, r.text
                with lock:
                    ids.append(r.json()["request_id"])

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(ids) == 320
    prefixes = {rid[:8] for rid in ids}  # a random prefix per worker process
    assert len(prefixes) == 2, prefixes
    # labels at once, in one call, for answers of both workers: none refused as unknown
    accepted = dep.feedback(ids, [[1]] * len(ids))
    assert accepted == len(ids)

    def logged() -> list[str] | None:
        got = list(dep.requests()["request_id"])
        return got if len(got) >= len(ids) else None

    assert sorted(until(logged, 20, "the request log")) == sorted(ids)  # each request once


def test_batch_chunks_are_shared_by_both_workers(stop_after, tmp_path) -> None:
    """A batch job's chunks are shared by both workers (each chunk on a connection of its own: see
    ``batch/transport.py``), and the predictions are the model's."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(2000, 6)), columns=[f"f{i}" for i in range(6)])
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(X, (X.f0 + X.f1 > 0).astype(int))
    dep = nbdeploy.deploy(model, name="two-workers-batch", sample=X, limits={"workers": 2}, compile=False)
    stop_after(dep)
    big = pd.DataFrame(rng.normal(size=(120_000, 6)), columns=X.columns).assign(id=np.arange(120_000))
    result = dep.score(big, into=str(tmp_path / "scores.parquet"), key="id", chunk_rows=4000, progress=False)
    assert result.rows_scored == 120_000 and result.chunks == 30
    until(lambda: len(_chunk_requests(dep, 4000)) == 30, 30, "the 30 chunks in the request log")
    chunks = _chunk_requests(dep, 4000)
    by_worker = chunks["request_id"].str[:8].value_counts()  # a random prefix per worker process
    assert len(by_worker) == 2 and by_worker.min() >= 6, by_worker.to_dict()  # each took a fifth of the chunks at least
    scored = pd.read_parquet(tmp_path / "scores.parquet").sort_values("id")
    assert np.array_equal(scored["prediction"].to_numpy(), model.predict(big[X.columns]))


def _chunk_requests(dep, rows: int) -> pd.DataFrame:
    log = dep.requests()
    return log[(log["n_rows"] == rows) & (log["status"] == 200)]
