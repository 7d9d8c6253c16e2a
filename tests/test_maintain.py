"""The maintenance loop for real: a served model, a simulated stream through its stable URL with labels sent back,
the scheduler process judging count windows of the request log, retraining, the offline gate, a shadow deployed by
the scheduler and a promotion decided by the promotion rules. Nothing is mocked.

The world: the label is 1 when 0.5 < x0 < 2.2. The champion learnt it from x0 in [0, 1] (so it says x0 > 0.5);
from stream window 10 on, x0 comes from [1.2, 3] and the champion is wrong on a third of the rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from callers import until
from conftest import notebook

import nbdeploy

pytestmark = pytest.mark.slow

REQUESTS, ROWS = 10, 20  # a stream window: 10 requests of 20 rows, the rule's count window

MODELS = """
import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.tree import DecisionTreeClassifier

def world(x0):
    return ((x0 > 0.5) & (x0 < 2.2)).astype(int)

def retrain_tree(data):
    assert len(data.X) == len(data.y) and len(data.requests) >= len(data.X)
    return DecisionTreeClassifier(max_depth=4, random_state=0).fit(data.X, data.y.astype(int))

def retrain_worse(data):
    return DummyClassifier(strategy="constant", constant=0).fit(data.X, data.y.astype(int))

def retrain_raises(data):
    raise RuntimeError(f"the feature store is down ({len(data.X)} rows were ready)")
"""


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return notebook(MODELS)


def _rows(rng: np.random.Generator, shifted: bool) -> pd.DataFrame:
    lo, hi = (1.2, 3.0) if shifted else (0.0, 1.0)
    return pd.DataFrame({"x0": rng.uniform(lo, hi, ROWS), "x1": rng.normal(0, 1, ROWS)})


def _champion(models: dict[str, Any], name: str) -> nbdeploy.Deployment:
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x0": rng.uniform(0, 1, 2000), "x1": rng.normal(0, 1, 2000)})
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, models["world"](X["x0"]))
    return nbdeploy.deploy(model, name=name, sample=X)


class Stream:
    """Sends stream windows through the stable URL and the labels back, recording when each window was sent."""

    def __init__(self, name: str, world: Any) -> None:
        self.name, self.world = name, world
        self.rng = np.random.default_rng(42)
        self.spans: list[tuple[float, float]] = []
        self.http = httpx.Client(trust_env=False, timeout=30)

    def window(self, shifted: bool) -> None:
        dep = nbdeploy.get(self.name)
        ids, labels = [], []
        start = time.time()
        for _ in range(REQUESTS):
            frame = _rows(self.rng, shifted)
            r = self.http.post(
                f"{dep.endpoint_url}/predict", json={"inputs": frame.to_dict(orient="records")}, headers=dep.headers()
            )
            assert r.status_code == 200, r.text
            ids.append(r.json()["request_id"])
            labels.append([int(v) for v in self.world(frame["x0"])])
        self.spans.append((start, time.time()))
        assert dep.feedback(ids, labels) == REQUESTS  # accepted: one per request

    def close(self) -> None:
        self.http.close()


def _actions(name: str) -> list[dict[str, Any]]:
    frame = nbdeploy.audit(name)
    return [dict(r) for r in frame.to_dict(orient="records")]


def _first(events: list[dict[str, Any]], action: str) -> dict[str, Any] | None:
    return next((e for e in events if e["action"] == action), None)


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        nbdeploy.Maintenance(name).stop(quiet=True)
        for rec in nbdeploy.deployments(all_versions=True).itertuples():
            if rec.name == name and rec.recorded in {"running", "candidate", "standby"}:
                nbdeploy.get(name, rec.version).stop()
    assert all(nbdeploy.Maintenance(n).pid is None for n in names)


def _drift_rule() -> nbdeploy.AlertRule:
    return nbdeploy.AlertRule("drift", window_requests=REQUESTS, min_rows=150, for_windows=2, severity="critical")


def test_a_shift_is_caught_within_three_windows_retrained_shadowed_and_promoted(models, cleanup):
    name = "maintained"
    cleanup.append(name)
    champion = _champion(models, name)
    m = champion.maintain(
        rules=[_drift_rule()], notify=["log"], retrain=models["retrain_tree"], every="0.3s",
        promotion={"latency_slack_ms": 500.0, "min_requests": 100}, shadow_for="4min",
    )  # fmt: skip
    assert m.running() and m.status()["version"] == champion.version
    stream = Stream(name, models["world"])
    try:
        for _ in range(10):
            stream.window(shifted=False)
        deadline = time.monotonic() + 420
        while _first(_actions(name), "retrain-promoted") is None:
            events = _actions(name)
            failed = [e for e in events if e["action"] in ("retrain-failed", "retrain-lost", "retrain-rejected")]
            assert not failed, failed
            assert time.monotonic() < deadline, [e["action"] for e in events]
            stream.window(shifted=True)
    finally:
        stream.close()

    events = _actions(name)
    fired = [e for e in events if e["action"] == "alert-fired"]
    assert fired and fired[0]["detail"]["rule"] == "drift" and fired[0]["detail"]["severity"] == "critical"
    assert all(e["detail"]["quantity"] == "drift" for e in fired)
    end = fired[0]["detail"]["window_end"]
    caught = max(i for i, (a, _) in enumerate(stream.spans) if a <= end)  # the stream window it ended in
    assert 10 <= caught <= 12, (caught, stream.spans)  # the shift began at window 10
    assert fired[0]["detail"]["evidence"]["top"][0]["feature"] == "x0"
    order = [e["action"] for e in events if e["action"].startswith(("alert-", "retrain-", "promote"))]
    steps = ["alert-fired", "retrain-started", "retrain-gate", "retrain-shadow", "promote", "retrain-promoted"]
    positions = [order.index(s) for s in steps]
    assert positions == sorted(positions), order
    gate = _first(events, "retrain-gate")["detail"]
    assert gate["passed"] and gate["candidate"] > gate["champion"] and gate["p_value"] < 0.05
    promoted = _first(events, "retrain-promoted")
    assert nbdeploy.get(name).version == promoted["version"] > champion.version
    assert any("passed" in r for r in promoted["detail"]["rules"])
    # the new live version is judged afresh, on its own reference (the retrain's data)
    until(lambda: m.status()["version"] == promoted["version"], 30, "the scheduler follows the new live version")
    history = m.history()
    assert {"alert-fired", "retrain-gate", "retrain-promoted", "maintain-started"} <= set(history["action"])
    assert (m.state().get("retrain") or {}).get("status") == "promoted"
    from nbdeploy.views import html_table, list_text, rows

    shown = list_text(rows())
    assert f"maintenance of {name}: watching 1 rule; last retraining promoted" in shown
    assert f"maintenance of {name}: watching 1 rule" in html_table(rows())
    lines = _alert_log(name)  # the default sink: one JSON line per notification
    assert any(line["rule"] == "drift" and line["state"] == "firing" for line in lines)


def _alert_log(name: str) -> list[dict[str, Any]]:
    import json

    from nbdeploy.maintenance import store

    path = store.folder(name) / store.ALERTS_LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(("fn", "outcome"), [("retrain_worse", "retrain-lost"), ("retrain_raises", "retrain-failed")])
def test_a_retrain_that_loses_or_fails_leaves_the_champion_untouched_and_says_why(models, cleanup, fn, outcome):
    name = f"maintained-{fn.split('_')[1]}"
    cleanup.append(name)
    champion = _champion(models, name)
    m = champion.maintain(rules=[_drift_rule()], retrain=models[fn], every="0.3s")
    stream = Stream(name, models["world"])
    try:
        for _ in range(10):
            stream.window(shifted=False)
        deadline = time.monotonic() + 120
        while _first(_actions(name), outcome) is None:
            assert time.monotonic() < deadline, [e["action"] for e in _actions(name)]
            stream.window(shifted=True)
    finally:
        stream.close()
    events = _actions(name)
    why = _first(events, outcome)["detail"]["why"]
    if fn == "retrain_worse":
        gate = _first(events, "retrain-gate")["detail"]
        assert not gate["passed"] and gate["candidate"] < gate["champion"]
        assert "better" in why
    else:
        assert "RuntimeError: the feature store is down" in why and _first(events, "retrain-gate") is None
    assert _first(events, "retrain-shadow") is None and _first(events, "promote") is None
    assert nbdeploy.get(name).version == champion.version
    assert [r.version for r in nbdeploy.deployments(all_versions=True).itertuples() if r.name == name] == [1]
    assert m.running()  # the loop goes on watching
    nbdeploy.get(name).stop()  # stopping the name ends its scheduler by itself
    until(lambda: m.pid is None, 30, "the scheduler to end with its name")
    assert _actions(name)[-1]["detail"]["why"] == "the name has no live version"
