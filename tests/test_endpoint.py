"""One stable endpoint per name: the router in front of the versions, swaps that lose no request, shadow, split,
promotion with a watch that rolls back by itself. Fast tests (no server) first; the slow ones share one name.

Figures a run prints (``-s``): requests sent and failed through the stable URL during each swap.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
from callers import Caller, until
from conftest import SERVICES, notebook

import nbdeploy
from nbdeploy import endpoint as ep_mod
from nbdeploy.errors import NotSupported, PromotionRefused, UsageError
from nbdeploy.registry import CANDIDATE, RUNNING, STANDBY, STOPPED, Registry
from nbdeploy.router.contract import STORE_FILE, VERSION_HEADER, Endpoint, Upstream, Watch, read, write
from nbdeploy.targets._process import is_alive

# -- fast: validation, registry, settling what the router did ----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shadow": True, "split": 10}, "either a shadow or a share"),
        ({"split": 0}, "percent must be in"),
        ({"shadow": 150}, "percent must be in"),
        ({"split": 10, "sticky": "cookie"}, "sticky='cookie' is not understood"),
        ({"sticky": "key"}, "sticky= is for a split"),
    ],
)
def test_bad_roles_are_refused_before_anything_is_built(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        nbdeploy.deploy(lambda df: df, name="roles", sample=pd.DataFrame({"a": [1]}), **kwargs)
    assert not Registry().list("roles", all_versions=True)


def test_shadow_and_split_are_not_supported_where_there_is_no_router(fake: Any) -> None:
    sample = pd.DataFrame({"a": [1.0, 2.0]})
    fn = notebook("def f(df):\n    return df['a']\n")["f"]
    nbdeploy.deploy(fn, name="no-router", sample=sample, target="fake")
    for kwargs in ({"shadow": True}, {"split": 10, "sticky": "header:X-User"}):
        with pytest.raises(NotSupported, match="not supported on the fake target") as err:
            nbdeploy.deploy(fn, name="no-router", sample=sample, target="fake", force=True, **kwargs)
        assert "stable endpoint" in (err.value.hint or "")
    # kubernetes: the Service is stable already, and the hint says what to do there
    with pytest.raises(NotSupported, match="kubernetes") as err:
        ep_mod.check_role("kubernetes", False, 10, None)
    assert "Service is already stable" in (err.value.hint or "")
    # a plain deploy on such a target behaves as before: no router, no stable URL
    dep = nbdeploy.get("no-router")
    assert dep.endpoint_url is None and Registry().endpoint("no-router") is None
    assert [r.version for r in Registry().running("no-router")] == [1]


def test_a_shadow_needs_a_live_version() -> None:
    with pytest.raises(UsageError, match="nothing serves 'lonely' yet"):
        nbdeploy.deploy(lambda df: df, name="lonely", sample=pd.DataFrame({"a": [1]}), shadow=True)


def test_candidates_and_standbys_are_not_running(fake: Any) -> None:
    """``get(name)``, ``claim`` and the views' "one running version" hold with a candidate and a standby around."""
    reg = Registry()
    recs = [reg.allocate("statuses", "fake", {}) for _ in range(3)]
    reg.update("statuses", 1, status=STANDBY, url="http://a")
    reg.update("statuses", 2, status=RUNNING, url="http://b")
    reg.update("statuses", 3, status=CANDIDATE, url="http://c", state={"endpoint": {"mode": "split", "percent": 10}})
    assert [r.version for r in reg.running("statuses")] == [2]
    assert [r.version for r in reg.serving("statuses")] == [1, 2, 3]
    assert reg.get("statuses").version == 2
    assert nbdeploy.get("statuses", 3).role == "split" and nbdeploy.get("statuses").role == "live"
    for r in recs:
        reg.update("statuses", r.version, status=STOPPED)


def test_the_endpoints_table_keeps_the_stable_port() -> None:
    reg = Registry()
    row = reg.set_endpoint("ports", 40123, 111)
    assert (row["port"], row["pid"], row["url"]) == (40123, 111, "http://127.0.0.1:40123")
    assert reg.set_endpoint("ports", 50000, None)["port"] == 40123  # never changes once chosen
    with pytest.raises(UsageError, match="already has the stable port 40123"):
        ep_mod.check_stable_port(reg, "ports", 50000)


def _watched(name: str, outcome: str | None, until: float) -> Registry:
    """v1 standby, v2 live, endpoint.json watching v2 with v1 warm (fake target: no process)."""
    reg = Registry()
    for _ in range(2):
        rec = reg.allocate(name, "fake", {})
        SERVICES[name, rec.version] = "running"
    reg.update(name, 1, status=STANDBY, url="http://v1")
    reg.update(name, 2, status=RUNNING, url="http://v2")
    watch = Watch(previous=Upstream(1, "http://v1"), until=until, outcome=outcome, reason="error rate 0.50")
    live = Upstream(1, "http://v1") if outcome == "rolled-back" else Upstream(2, "http://v2")  # as the router writes
    write(ep_mod.path(name), Endpoint(name=name, port=1, live=live, watch=watch, versions={1: "u1", 2: "u2"}))
    return reg


def test_an_automatic_rollback_is_settled_once(fake: Any) -> None:
    reg = _watched("auto-back", "rolled-back", time.time() + 300)
    ep_mod.sync(reg, "auto-back")
    ep_mod.sync(reg, "auto-back")  # twice: settled once
    assert reg.get("auto-back").version == 1 and reg.get("auto-back", 2).status == STOPPED
    assert SERVICES["auto-back", 2] == "stopped" and SERVICES["auto-back", 1] == "running"
    settled = [e for e in reg.events("auto-back") if e["action"] == "auto-rollback-settled"]
    assert len(settled) == 1 and settled[0]["detail"]["stopped"] == [2]
    assert "error rate" in settled[0]["detail"]["reason"]
    after = read(ep_mod.path("auto-back"))
    assert after.watch is None and after.live == Upstream(1, "http://v1")
    nbdeploy.get("auto-back").stop()


def test_a_watch_that_ends_cleanly_stops_the_previous_version(fake: Any) -> None:
    reg = _watched("kept", None, time.time() - 1)
    nbdeploy.deployments(all_versions=True)  # any view settles it
    assert reg.get("kept", 1).status == STOPPED and reg.get("kept").version == 2
    assert SERVICES["kept", 1] == "stopped"
    assert [e["action"] for e in reg.events("kept")].count("watch-kept") == 1
    assert read(ep_mod.path("kept")).watch is None
    nbdeploy.get("kept").stop()


def test_promotion_refused_names_the_rules_and_carries_the_evidence() -> None:
    err = PromotionRefused("churn", 3, ["max_error_rate: 0.2 > 0.05"], comparison={"n": 40})
    assert isinstance(err, UsageError) and "PromotionRefused" in nbdeploy.__all__
    assert "promotion of 'churn' v3 refused: max_error_rate: 0.2 > 0.05" in str(err)
    assert err.failures == ["max_error_rate: 0.2 > 0.05"] and err.comparison == {"n": 40}


def test_magics_pass_shadow_split_and_sticky(monkeypatch: pytest.MonkeyPatch) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from nbdeploy import _api

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(_api, "deploy", lambda model, **kw: seen.append(kw))
    promoted: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(_api, "promote", lambda name, **kw: promoted.append((name, kw)))
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbdeploy")
    shell.user_ns.update(m=object(), X=pd.DataFrame({"a": [1]}))
    shell.run_line_magic("deploy", "m --name n --sample X --shadow")
    shell.run_line_magic("deploy", "m --name n --sample X --shadow 25")
    shell.run_line_magic("deploy", "m --name n --sample X --split 10 --sticky header:X-User")
    shell.run_line_magic("deploy", "m --name n --sample X")
    assert seen[0]["shadow"] == 100.0 and seen[1]["shadow"] == 25.0
    assert (seen[2]["split"], seen[2]["sticky"]) == (10.0, "header:X-User") and "shadow" not in seen[2]
    assert not {"shadow", "split", "sticky"} & set(seen[3])
    shell.run_line_magic("promote", "n --force --watch 60")
    assert promoted == [("n", {"watch_s": 60.0, "force": True})]


# -- slow: real services behind a real router ----------------------------------------------------------------------

MODEL = """
def score(df):
    if (df['a'] == -999).any():  # the flag the watch test sends: this version breaks on it
        raise ValueError('broken on purpose')
    return df['a'] * {factor}
"""


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0]})


@pytest.fixture(scope="module")
def swapped(sample: pd.DataFrame) -> Iterator[nbdeploy.Deployment]:
    """The name every slow test shares: v1 live. Everything it starts is stopped by PID at the end."""
    dep = nbdeploy.deploy(notebook(MODEL.format(factor=2))["score"], name="ep-swap", sample=sample)
    try:
        yield dep
    finally:
        _stop_all("ep-swap")


def _stop_all(name: str) -> None:
    reg = Registry()
    for rec in reg.serving(name):
        if rec.status == RUNNING:
            nbdeploy.get(name, rec.version).stop()
    for rec in reg.serving(name):
        nbdeploy.get(name, rec.version).stop()
    ep_mod.stop_router(name)


def _served(name: str, since: float) -> list[tuple[int, str]]:
    path = ep_mod.path(name).parent / STORE_FILE
    with sqlite3.connect(path) as con:
        return con.execute("SELECT version, role FROM served WHERE ts >= ?", (since,)).fetchall()


@pytest.mark.slow
def test_redeploy_rollback_and_restart_lose_no_request(swapped: nbdeploy.Deployment, sample: pd.DataFrame) -> None:
    url = swapped.endpoint_url
    assert url and url != swapped.url and swapped.url  # the version keeps its own URL
    caller = Caller(url, swapped.headers())
    caller.start()
    figures: dict[str, tuple[int, int]] = {}
    try:
        caller.wait_for(10)
        t = time.monotonic()
        v2 = nbdeploy.deploy(notebook(MODEL.format(factor=3))["score"], name="ep-swap", sample=sample)
        switched = time.monotonic()
        caller.wait_for(10)
        assert v2.version == 2 and v2.endpoint_url == url and v2.url != swapped.url
        assert Registry().get("ep-swap", 1).status == STOPPED and not is_alive(swapped.record.pid, "bentoml")
        assert {r[2] for r in caller.after(switched)} == {"2"}  # the router serves by the new config already
        figures["redeploy"] = (len(caller.since(t)), sum(r[1] != 200 for r in caller.since(t)))

        t = time.monotonic()
        back = nbdeploy.rollback("ep-swap", 1)
        switched = time.monotonic()
        caller.wait_for(10)
        assert back.version == 1 and back.endpoint_url == url and nbdeploy.get("ep-swap").version == 1
        assert {r[2] for r in caller.after(switched)} == {"1"}
        figures["rollback"] = (len(caller.since(t)), sum(r[1] != 200 for r in caller.since(t)))

        t = time.monotonic()
        old_pid = back.record.pid
        again = back.restart()
        caller.wait_for(10)
        assert again.record.pid != old_pid and not is_alive(old_pid, "bentoml")
        assert again.endpoint_url == url and {r[2] for r in caller.after(time.monotonic())} == {"1"}
        figures["restart"] = (len(caller.since(t)), sum(r[1] != 200 for r in caller.since(t)))
    finally:
        caller.halt.set()
        caller.join(10)
    failed = [r for r in caller.results if r[1] != 200]
    print(f"\nrequests through {url}: {len(caller.results)} sent, {len(failed)} failed; per swap (sent, failed):")
    print(json.dumps(figures))
    assert not failed, failed[:5]
    assert all(f == 0 for _, f in figures.values()) and all(n > 0 for n, _ in figures.values())
    # /v/N/ reaches a version by number through the stable URL
    pinned = httpx.post(f"{url}/v/1/predict", json={"inputs": [{"a": 1.0}]}, headers=swapped.headers())
    assert pinned.status_code == 200 and pinned.headers[VERSION_HEADER] == "1"
    actions = [e["action"] for e in nbdeploy.audit("ep-swap").to_dict("records")]
    assert "endpoint-start" in actions and "rollback" in actions and "restart" in actions


@pytest.mark.slow
def test_shadow_copies_and_a_split_share(swapped: nbdeploy.Deployment, sample: pd.DataFrame) -> None:
    live = nbdeploy.get("ep-swap")
    url, headers = live.endpoint_url, live.headers()
    assert url
    cand = nbdeploy.deploy(notebook(MODEL.format(factor=5))["score"], name="ep-swap", sample=sample, shadow=True)
    assert cand.record.status == CANDIDATE and cand.role == "shadow" and nbdeploy.get("ep-swap").version == live.version
    assert "Endpoint (stable)" in cand._repr_html_() and f"curl -s -X POST {url}/predict" in cand.curl()
    t0 = time.time()
    with httpx.Client(trust_env=False, timeout=10) as client:
        for i in range(20):
            r = client.post(f"{url}/predict", json={"inputs": [{"a": float(i)}]}, headers=headers)
            assert r.status_code == 200 and r.headers[VERSION_HEADER] == str(live.version)  # live answers everyone
            assert r.json()["predictions"] == [pytest.approx(float(i) * (3 if live.version == 2 else 2))]
    store = ep_mod.path("ep-swap").parent / STORE_FILE

    def mirrored() -> list[Any]:
        with sqlite3.connect(store) as con:
            return con.execute(
                "SELECT live_version, cand_version, cand_status FROM mirrored WHERE ts >= ?", (t0,)
            ).fetchall()

    rows = until(lambda: len(mirrored()) >= 20 and mirrored(), what="20 mirrored rows")
    assert {(r[0], r[1], r[2]) for r in rows} == {(live.version, cand.version, 200)}
    assert "shadow-start" in set(nbdeploy.audit("ep-swap")["action"])
    with pytest.raises(PromotionRefused) as refused:  # it answers otherwise than live: the rules say no
        cand.promote()
    assert refused.value.failures and refused.value.comparison is not None
    assert nbdeploy.get("ep-swap").version == live.version and "promote-refused" in set(
        nbdeploy.audit("ep-swap")["action"]
    )

    cand.split(10)
    assert Registry().get("ep-swap", cand.version).state["endpoint"]["mode"] == "split"
    t1 = time.time()
    with httpx.Client(trust_env=False, timeout=10) as client:
        seen = [client.post(f"{url}/predict", json={"inputs": [{"a": 1.0}]}, headers=headers) for _ in range(400)]
    assert all(r.status_code == 200 for r in seen)
    served = until(lambda: len(_served("ep-swap", t1)) >= 400 and _served("ep-swap", t1), what="served rows")
    share = sum(1 for v, role in served if v == cand.version and role == "candidate") / len(served)
    answered = sum(r.headers[VERSION_HEADER] == str(cand.version) for r in seen) / len(seen)
    print(f"\nsplit 10 %: served table {share:.3f}, answers {answered:.3f} from the candidate")
    assert 0.04 < share < 0.18 and abs(share - answered) < 0.02
    # labels posted to the stable URL itself reach the version that answered each request, in one call
    items = [{"request_id": r.json()["request_id"], "y_true": [2.0]} for r in seen]
    fed = httpx.post(f"{url}/feedback", json={"items": items}, headers=headers, timeout=30)
    assert fed.status_code == 200, fed.text
    by_version = {int(v): n for v, n in fed.json()["by_version"].items()}
    answered_by = {
        int(v): sum(r.headers[VERSION_HEADER] == v for r in seen) for v in {r.headers[VERSION_HEADER] for r in seen}
    }
    assert fed.json()["accepted"] == 400 and by_version == answered_by
    events = nbdeploy.audit("ep-swap")
    assert "split-change" in set(events["action"])
    listed = nbdeploy.deployments(all_versions=True)
    mine = listed[(listed.name == "ep-swap") & (listed.version == cand.version)]  # other names have versions too
    assert mine.status.iloc[0] == "candidate"
    cand.reject()
    assert (
        Registry().get("ep-swap", cand.version).status == STOPPED and nbdeploy.get_endpoint("ep-swap").candidate is None
    )
    assert not is_alive(cand.record.pid, "bentoml")


@pytest.mark.slow
def test_promote_keeps_the_previous_warm_and_a_broken_one_rolls_back(
    swapped: nbdeploy.Deployment, sample: pd.DataFrame
) -> None:
    live = nbdeploy.get("ep-swap")
    url, headers = live.endpoint_url, live.headers()
    assert url
    cand = nbdeploy.deploy(notebook(MODEL.format(factor=7))["score"], name="ep-swap", sample=sample, split=5)
    rules = {"max_error_rate": 0.05, "min_requests": 10, "window_s": 30}
    promoted = cand.promote(force=True, watch_s=120, watch_rules=rules)
    assert nbdeploy.get("ep-swap").version == cand.version and promoted.record.status == RUNNING
    assert Registry().get("ep-swap", live.version).status == STANDBY  # kept warm
    assert is_alive(live.record.pid, "bentoml")
    ep = nbdeploy.get_endpoint("ep-swap")
    assert ep.live == cand.version and ep.watch and ep.watch["previous"] == live.version
    with httpx.Client(trust_env=False, timeout=10) as client:
        ok = client.post(f"{url}/predict", json={"inputs": [{"a": 1.0}]}, headers=headers)
        assert ok.headers[VERSION_HEADER] == str(cand.version)
        for _ in range(15):  # an error burst: the new version fails on the flag
            client.post(f"{url}/predict", json={"inputs": [{"a": -999.0}]}, headers=headers)
        back = until(
            lambda: (
                (r := client.post(f"{url}/predict", json={"inputs": [{"a": 1.0}]}, headers=headers)).headers[
                    VERSION_HEADER
                ]
                == str(live.version)
                and r
            ),
            what="traffic back on the previous version",
        )
    assert back.status_code == 200
    # the router records the rollback in endpoint.json just after; the SDK settles the registry when it reads it
    until(lambda: (e := nbdeploy.get_endpoint("ep-swap")).watch is None and e.live == live.version, what="settled")
    assert nbdeploy.get("ep-swap").version == live.version  # the registry agrees with the router
    assert Registry().get("ep-swap", cand.version).status == STOPPED
    assert not is_alive(cand.record.pid, "bentoml")
    actions = list(nbdeploy.audit("ep-swap")["action"])
    assert {"split-start", "promote", "auto-rollback", "auto-rollback-settled"} <= set(actions)
    assert actions.count("auto-rollback-settled") == 1


@pytest.mark.slow
def test_stopping_the_live_version_stops_the_router_and_the_candidate(
    swapped: nbdeploy.Deployment, sample: pd.DataFrame
) -> None:
    live = nbdeploy.get("ep-swap")
    cand = nbdeploy.deploy(notebook(MODEL.format(factor=9))["score"], name="ep-swap", sample=sample, shadow=50)
    router = Registry().endpoint("ep-swap")
    assert router and is_alive(router["pid"], str(ep_mod.path("ep-swap")))
    live.stop()
    assert not is_alive(router["pid"], str(ep_mod.path("ep-swap")))
    assert not is_alive(live.record.pid, "bentoml") and not is_alive(cand.record.pid, "bentoml")
    assert {r.status for r in Registry().list("ep-swap", all_versions=True)} <= {STOPPED, "failed"}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{router['url']}/readyz", timeout=2)
    # the next deploy brings the endpoint back on the same port
    again = nbdeploy.deploy(notebook(MODEL.format(factor=2))["score"], name="ep-swap", sample=sample, force=True)
    assert again.endpoint_url == router["url"]
    r = httpx.post(f"{router['url']}/predict", json={"inputs": [{"a": 1.0}]}, headers=again.headers())
    assert r.status_code == 200 and r.headers[VERSION_HEADER] == str(again.version)
    # a router that died (killed) comes back on the same port with a restart
    dead = Registry().endpoint("ep-swap")
    assert dead and dead["pid"] != router["pid"]
    os.kill(dead["pid"], signal.SIGKILL)
    until(lambda: not is_alive(dead["pid"], str(ep_mod.path("ep-swap"))), what="the router to die")
    again.restart()
    back = Registry().endpoint("ep-swap")
    assert back and back["pid"] != dead["pid"] and back["url"] == router["url"]
    r = httpx.post(f"{router['url']}/predict", json={"inputs": [{"a": 1.0}]}, headers=again.headers())
    assert r.status_code == 200 and "endpoint-restart" in set(nbdeploy.audit("ep-swap")["action"])


def test_the_card_shows_the_stable_endpoint_first_and_curls_it() -> None:
    from nbdeploy import card
    from nbdeploy.record import Info, Record

    rec = Record(name="carded", version=3, target="local", status="running", url="http://127.0.0.1:5001", info=Info())
    page = card.render(rec, endpoint_url="http://127.0.0.1:4000")
    rows = page.split("<tr>")
    assert "Endpoint (stable)" in rows[1] and "http://127.0.0.1:4000" in rows[1]
    assert "This version" in rows[2] and "http://127.0.0.1:5001" in rows[2]
    assert "curl -s -X POST http://127.0.0.1:4000/predict" in page
    assert "curl -s -X POST http://127.0.0.1:5001/predict" in card.render(rec)  # no endpoint: as before
