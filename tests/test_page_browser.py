"""The try-it page at a service's ``/``, in headless Chromium driven by Playwright, against real services.

One model is deployed for the module (local target) and one edge bundle served; one browser opens the page and
records every request it makes. Checked as a person would use it: one field per column with the training
categories, 20 random rows giving what ``dep.predict`` gives, a missing or wrong key answered 401 and said clearly,
the feedback buttons moving ``dep.accuracy()``, a CSV upload scored row for row, copy-ready snippets that run, the
stable endpoint naming the version that answered, the same page on the edge server, and no request leaving
127.0.0.1. The screenshot in the docs (``docs/img/try-it-page.png``) is taken here. Every server is stopped by
PID (the deployment by ``dep.stop()``, the edge server by its process group) even when a test fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, ROOT

import nbdeploy
from nbdeploy.registry import Registry
from nbdeploy.targets import _process

pytestmark = pytest.mark.slow

NAME = "try-page"
SCREENSHOT = ROOT / "docs" / "img" / "try-it-page.png"
NUMERIC = ["tenure", "monthly", "support_calls"]
#: Every URL the browser asked for, in every page of the module (checked last).
SEEN: list[str] = []


def _churn(n: int = 600) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(7)
    X = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "monthly": rng.normal(70, 20, n).round(2),
            "support_calls": rng.poisson(2, n),
            "plan": pd.Categorical(rng.choice(["basic", "plus", "pro"], n)),
            "region": rng.choice(["north", "south", "east", "west"], n),
            "signup": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
            "paperless": rng.random(n) < 0.4,
        }
    )
    y = ((X.support_calls > 2) & (X.tenure < 24) | (X.monthly > 95) | (X.plan == "basic") & X.paperless).astype(int)
    return X, y


@pytest.fixture(scope="module")
def deployed():
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    X, y = _churn()
    prep = ColumnTransformer(
        [
            ("num", "passthrough", [*NUMERIC, "paperless"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]),
        ]
    )  # signup is dropped: the page still asks for it, as a date
    model = Pipeline([("prep", prep), ("clf", RandomForestClassifier(n_estimators=30, random_state=0))]).fit(X, y)
    dep = nbdeploy.deploy(model, name=NAME, sample=X[:500], compile=False)
    try:
        meta = json.loads((Path(dep.record.bento_path or "") / "src" / "artifact" / "meta.json").read_text())
        assert meta.get("sample_summary"), "deploy gave the service no sample_summary (ranges, values, rows)"
        yield model, X, y, dep
    finally:
        dep.stop()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no {CHROMIUM}: run scripts/browser-setup.sh (Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _open(browser, url: str, downloads: bool = False):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=downloads)
    context.on("request", lambda r: SEEN.append(r.url))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "401" not in m.text else None)
    response = page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    page.errors = errors  # type: ignore[attr-defined]
    return page, response


@pytest.fixture(scope="module")
def page(deployed, browser):
    *_, dep = deployed
    page, response = _open(browser, f"{dep.url}/", downloads=True)
    page.main_response = response  # type: ignore[attr-defined]
    yield page
    assert not page.errors, page.errors  # type: ignore[attr-defined]
    page.context.close()


def _key(dep) -> str:  # type: ignore[no-untyped-def]
    return str(Registry().key(dep.name))


def _predict(page):  # type: ignore[no-untyped-def]
    """Press Predict; the /predict response, once the page has shown everything (probabilities included)."""
    with page.expect_response(lambda r: urlsplit(r.url).path.endswith("/predict")) as got:
        page.click("#predict")
    page.wait_for_function("() => !document.getElementById('predict').disabled")
    return got.value


# ---------------------------------------------------------------------------------------------- the service's page


def test_the_page_has_one_field_per_column_with_the_training_categories(deployed, page):
    _, X, _, dep = deployed
    fields = page.locator(".field")
    assert fields.count() == X.shape[1]
    assert [fields.nth(i).get_attribute("data-name") for i in range(fields.count())] == list(X.columns)
    options = page.locator(".field[data-name=plan] select option").all_inner_texts()
    assert options == list(X.plan.cat.categories)
    assert page.locator(".field[data-name=region] select option").all_inner_texts() == sorted(X.region.unique())
    assert page.locator(".field[data-name=paperless] select option").all_inner_texts() == ["true", "false"]
    assert page.locator(".field[data-name=signup] input").get_attribute("type") == "date"
    assert page.locator(".field[data-name=tenure] input").get_attribute("type") == "number"
    low, high = X.tenure[:500].min(), X.tenure[:500].max()
    assert page.inner_text(".field[data-name=tenure] .hint") == f"{low} – {high}"
    about = page.inner_text("#about")
    assert "version 1" in about and "Pipeline(ColumnTransformer → RandomForestClassifier)" in about
    # open, and nothing secret on it: the key is never in the page; the page may talk to its own origin only
    html = page.content()
    assert _key(dep) not in html
    headers = page.main_response.headers  # type: ignore[attr-defined]
    assert "connect-src 'self'" in headers["content-security-policy"]
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", page.main_response.text())  # type: ignore[attr-defined]


def test_a_missing_or_wrong_key_is_a_401_and_the_page_says_so(page):
    page.fill("#key", "")
    assert _predict(page).status == 401
    assert page.inner_text("#message").startswith("No API key: this service needs one, so it answered 401")
    page.fill("#key", "nbd_" + "x" * 40)
    assert _predict(page).status == 401
    message = page.inner_text("#message")
    assert message.startswith("401 Unauthorized: the service refused this API key") and NAME in message
    assert page.inner_text("#prediction") == "Unauthorized"


def test_twenty_random_rows_through_the_page_give_what_dep_predict_gives(deployed, page):
    _, X, _, dep = deployed
    page.fill("#key", _key(dep))
    sent, answered, shown = [], [], []
    for _ in range(20):
        page.click("#random")
        response = _predict(page)
        assert response.status == 200, response.text()
        sent.append(json.loads(response.request.post_data)["inputs"][0])
        answered.append(response.json()["predictions"][0])
        shown.append(page.inner_text("#prediction"))
        assert page.inner_text("#request-id") == response.json()["request_id"]
        assert page.locator("#proba .bar").count() == 2
    assert len({json.dumps(r, sort_keys=True) for r in sent}) == 20, "random rows repeat"
    for record in sent:
        assert X.tenure.min() <= record["tenure"] <= X.tenure.max() and record["plan"] in X.plan.cat.categories
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", record["signup"]) and isinstance(record["paperless"], bool)
    expected = dep.predict(sent).tolist()
    assert answered == expected
    assert shown == [str(v) for v in expected]
    assert "v1" in page.inner_text("#answered-by") and re.fullmatch(r"[\d.]+ ms.*", page.inner_text("#latency"))


def test_the_feedback_buttons_change_dep_accuracy(deployed, page):
    _, _, _, dep = deployed
    before = dep.accuracy()
    assert before.empty
    _predict(page)
    right = page.inner_text("#prediction")
    page.click("#right")
    page.wait_for_selector("#feedback-status.ok")
    assert f"true label {right}" in page.inner_text("#feedback-status")
    _predict(page)
    predicted = page.inner_text("#prediction")
    page.click("#wrong")
    options = page.locator("#true-label option").all_inner_texts()
    assert sorted(options) == ["0", "1"] and options[0] != predicted  # the other class first
    with page.expect_response(lambda r: urlsplit(r.url).path.endswith("/feedback")) as got:
        page.click("#send-feedback")
    assert got.value.status == 200 and got.value.json() == {"accepted": 1}
    page.wait_for_selector("#feedback-status.ok")
    after = dep.accuracy()
    assert int(after["n"].sum()) == 2
    assert (after["value"] * after["n"]).sum() / after["n"].sum() == pytest.approx(0.5)


def test_a_csv_upload_gives_one_prediction_per_row_and_a_download(deployed, page, tmp_path):
    _, X, _, dep = deployed
    rows = pd.concat([X] * 3).iloc[:1234].reset_index(drop=True)
    path = tmp_path / "customers.csv"
    rows.assign(extra="ignored").to_csv(path, index=False)
    page.set_input_files("#csv", str(path))
    page.wait_for_selector("#csv-status.ok, #csv-status.error", timeout=60_000)
    status = page.inner_text("#csv-status")
    assert status.startswith("1,234 predictions for customers.csv"), status
    assert "Ignored columns: extra." in status
    assert page.locator("#csv-results tbody tr").count() == 100
    with page.expect_download() as got:
        page.click("#csv-download")
    downloaded = pd.read_csv(got.value.path())
    assert len(downloaded) == 1234 and list(downloaded.columns) == [*X.columns, "prediction"]
    assert downloaded["prediction"].tolist() == dep.predict(rows).tolist()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=SCREENSHOT, full_page=True)


def test_the_snippets_run_as_copied_with_the_key_as_a_placeholder(deployed, page, monkeypatch, capsys):
    _, _, _, dep = deployed
    key = _key(dep)
    page.click("#sample")
    snippets = {}
    for lang in ("curl", "requests", "httpx", "fetch"):
        page.click(f"#snippet-tabs button[data-lang={lang}]")
        snippets[lang] = page.inner_text("#snippet")
        assert key not in snippets[lang] and f"{dep.url}/predict" in snippets[lang]
    assert "$NBDEPLOY_KEY" in snippets["curl"] and "YOUR_API_KEY" in snippets["fetch"]
    assert "os.environ['NBDEPLOY_KEY']" in snippets["httpx"] and "requests.post(" in snippets["requests"]
    assert snippets["curl"].startswith(f"# export NBDEPLOY_KEY=<the API key>   # `nbdeploy key {NAME}` prints it")
    expected = dep.predict(json.loads(snippets["curl"].split(" -d ")[1].strip("'"))["inputs"]).tolist()
    monkeypatch.setenv("NBDEPLOY_KEY", key)
    exec(compile(snippets["httpx"], "<snippet>", "exec"), {})
    assert capsys.readouterr().out.strip() == str(expected)
    out = subprocess.run(["bash", "-c", snippets["curl"]], capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(out.stdout)["predictions"] == expected


def test_behind_the_stable_endpoint_the_page_names_the_version_that_answered(deployed, browser):
    _, _, _, dep = deployed
    if dep.endpoint_url is None:
        pytest.skip("this target has no stable endpoint")
    page, _ = _open(browser, f"{dep.endpoint_url}/")
    try:
        page.fill("#key", _key(dep))
        response = _predict(page)
        assert response.headers["x-nbdeploy-version"] == "1"
        assert page.inner_text("#answered-by") == "v1 (via the stable endpoint)"
        with page.expect_response(lambda r: urlsplit(r.url).path.endswith("/feedback")) as got:
            page.click("#right")
        assert urlsplit(got.value.url).path == "/v/1/feedback" and got.value.status == 200  # to the one that answered
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        page.context.close()
    pinned, _ = _open(browser, f"{dep.endpoint_url}/v/1")  # one version's page, through the stable URL
    try:
        pinned.fill("#key", _key(dep))
        response = _predict(pinned)
        assert urlsplit(response.url).path == "/v/1/predict" and response.status == 200
        assert pinned.inner_text("#answered-by") == "v1 (via the stable endpoint)"
    finally:
        pinned.context.close()


# ---------------------------------------------------------------------------------------------- the edge server


def test_the_edge_server_serves_the_same_page(browser, tmp_path):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from nbdeploy.targets.base import wait_ready

    X, y = _churn(400)
    X = X[[*NUMERIC, "plan", "region"]].astype({"plan": str, "tenure": "float64", "support_calls": "float64"})
    prep = ColumnTransformer(
        [("num", StandardScaler(), NUMERIC), ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"])]
    )
    model = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))]).fit(X, y)
    bundle = nbdeploy.export_edge(model, tmp_path / "churn.edge", sample=X)
    key = "nbd_edge-page-test-key"
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"sha256": [hashlib.sha256(key.encode()).hexdigest()]}))
    port = _process.free_port()
    env = {"PATH": os.environ["PATH"], "NBDEPLOY_MANIFEST_SHA256": bundle.manifest_sha256,
           "NBDEPLOY_KEYS_FILE": str(keys_file)}  # fmt: skip
    cmd = [sys.executable, "-I", str(bundle.path / "server.py"), "--port", str(port)]
    pid = _process.spawn(cmd, tmp_path / "edge.log", env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_ready(url, lambda: _process.is_alive(pid, str(bundle.path)), 60), _process.tail(
            tmp_path / "edge.log", 30
        )
        page, response = _open(browser, f"{url}/")
        try:
            assert "connect-src 'self'" in response.headers["content-security-policy"]
            assert page.locator(".field").count() == X.shape[1]
            assert page.locator(".field[data-name=plan] select option").all_inner_texts() == ["basic", "plus", "pro"]
            assert _predict(page).status == 401
            page.fill("#key", key)
            page.click("#random")
            response = _predict(page)
            record = json.loads(response.request.post_data)["inputs"][0]
            expected = model.predict(pd.DataFrame([record])[X.columns].astype(X.dtypes.to_dict()))
            assert response.json()["predictions"] == expected.tolist()
            assert page.inner_text("#prediction") == str(expected[0])
            assert page.inner_text("#answered-by") == "this server"
            assert "takes no feedback" in page.inner_text("#result-card")
            assert not page.errors  # type: ignore[attr-defined]
        finally:
            page.context.close()
    finally:
        _process.stop_group(pid, str(bundle.path))


# ---------------------------------------------------------------------------------------------- last: the network


def test_no_request_left_127_0_0_1():
    assert len(SEEN) > 40, SEEN
    for url in SEEN:
        parts = urlsplit(url.removeprefix("blob:"))
        assert parts.scheme in ("http", "data") and (parts.scheme == "data" or parts.hostname == "127.0.0.1"), url


@pytest.fixture(scope="module", autouse=True)
def _stop_leftovers():
    """Whatever a failed test left of this module's deployment is stopped at the end."""
    yield
    with contextlib.suppress(Exception):
        for rec in nbdeploy.deployments(all_versions=True).itertuples():
            if rec.name == NAME and rec.recorded == "running":
                nbdeploy.get(rec.name, rec.version).stop()
