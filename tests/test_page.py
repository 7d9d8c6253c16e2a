"""The try-it page without a server: what ``runtime.page`` summarises, configures and renders, and how the service's
middleware and the edge server answer ``/``. The browser checks are in ``test_page_browser.py``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest

from nbdeploy.capture.schema import infer_schema
from nbdeploy.edge import server as edge_server
from nbdeploy.runtime import docs, page, page_assets


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 200
    return pd.DataFrame(
        {
            "tenure": rng.integers(3, 60, n),
            "monthly": rng.normal(70, 20, n).round(2),
            "plan": pd.Categorical(rng.choice(["basic", "plus", "pro"], n)),
            "region": rng.choice(["north", "south"], n),
            "email": [f"user{i}@example.com" for i in range(n)],
            "signup": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 300, n), unit="D"),
            "seen": pd.Timestamp("2024-01-01 08:30") + pd.to_timedelta(rng.integers(0, 10**6, n), unit="s"),
            "vip": rng.random(n) < 0.1,
            "score": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)),
        }
    )


def test_the_summary_has_each_columns_range_or_values_and_rows_spread_over_the_sample(sample):
    schema = infer_schema(sample)
    summary = page.summarize(sample, schema, choices=50, rows=5)
    cols = dict(zip(sample.columns, summary["columns"], strict=True))
    assert cols["tenure"] == {"min": int(sample.tenure.min()), "max": int(sample.tenure.max()), "decimals": 0}
    assert cols["monthly"]["decimals"] == 2 and cols["monthly"]["min"] == sample.monthly.min()
    assert cols["region"] == {"values": ["north", "south"]}
    assert cols["email"]["more"] is True and len(cols["email"]["values"]) == 50
    assert cols["signup"]["time"] is False and cols["seen"]["time"] is True
    assert cols["signup"]["min"] == sample.signup.min().isoformat()
    assert cols["plan"] == {} and cols["vip"] == {}  # the schema has a category's values; a bool needs none
    assert len(summary["rows"]) == 5 and summary["rows"][0][0] == int(sample.tenure.iloc[0])
    assert summary["rows"][-1][2] == sample.plan.iloc[-1]
    json.dumps(summary, allow_nan=False)  # plain JSON: NaN is null, times are ISO strings


def test_redacted_columns_show_neither_values_nor_range(sample):
    schema = infer_schema(sample)
    summary = page.summarize(sample.drop(columns=["tenure"]), schema, redacted=["email"])
    cols = dict(zip(sample.columns, summary["columns"], strict=True))
    assert cols["email"] == {"redacted": True} and cols["tenure"] == {"redacted": True}  # hashed / dropped
    text = json.dumps(summary)
    assert "@example.com" not in text
    assert {row[4] for row in summary["rows"]} == {"redacted"} and {row[0] for row in summary["rows"]} == {0}
    fields = page.config({"schema": schema, "sample_summary": summary}, [])["fields"]
    assert fields[4]["redacted"] is True and "suggestions" not in fields[4]


def test_the_config_asks_for_each_kind_with_the_right_control(sample):
    schema = infer_schema(sample)
    meta = {"service_name": "churn", "version": 3, "schema": schema, "sample_summary": page.summarize(sample, schema)}
    cfg = page.config(meta, ["predict_proba", "decision_function"])
    controls = {f["name"]: f["input"] for f in cfg["fields"]}
    assert controls == {
        "tenure": "number", "monthly": "number", "plan": "select", "region": "select", "email": "text",
        "signup": "date", "seen": "datetime", "vip": "select", "score": "number",
    }  # fmt: skip
    by_name = {f["name"]: f for f in cfg["fields"]}
    assert by_name["plan"]["options"] == ["basic", "plus", "pro"] and by_name["vip"]["options"] == [True, False]
    assert by_name["score"]["nullable"] is True and by_name["tenure"]["nullable"] is False
    assert cfg["proba"] and cfg["feedback"] and cfg["auth"] and cfg["version"] == 3 and not cfg["array"]


def test_without_a_summary_the_page_still_works_from_the_schema_and_the_example(sample):
    """A bento built before summaries (or a deploy that passed none): fields from the schema, the example row."""
    schema = infer_schema(sample)
    example = [{c: None for c in sample.columns} | {"tenure": 5, "plan": "pro", "region": "north"}]
    cfg = page.config({"service_name": "old", "schema": schema, "example": example}, [])
    by_name = {f["name"]: f for f in cfg["fields"]}
    assert by_name["region"]["input"] == "text" and "min" not in by_name["tenure"]
    assert by_name["plan"]["options"] == ["basic", "plus", "pro"]  # categories are in the schema itself
    assert cfg["rows"] == [[5, None, "pro", "north", None, None, None, None, None]]
    assert not cfg["proba"] and cfg["version"] is None
    assert page.config({}, [])["fields"] == []  # not even a schema: an empty form, not an error
    assert "<h1" in page.render(page.config({}, []))


def test_an_array_model_gets_one_number_per_feature():
    X = np.arange(12, dtype="float64").reshape(4, 3)
    schema = infer_schema(X)
    cfg = page.config({"schema": schema, "sample_summary": page.summarize(X, schema)}, [])
    assert cfg["array"] and [f["name"] for f in cfg["fields"]] == ["x0", "x1", "x2"]
    assert cfg["fields"][2]["min"] == 2.0 and cfg["rows"][0] == [0.0, 1.0, 2.0]
    framed = page.summarize(pd.DataFrame(X), schema)  # a reference sample keeps an array as a frame
    assert framed["columns"][0]["max"] == 9.0


def test_the_page_is_self_contained_escapes_its_data_and_hides_who_deployed(sample):
    schema = infer_schema(sample.rename(columns={"region": "</script><script>alert(1)</script>"}))
    lineage = {
        "notebook": "/home/alice/secret-project/churn.ipynb", "user": "alice", "host": "build-7",
        "created_at": "2026-11-30T10:00:00+00:00", "git_commit": "0123456789abcdef", "git_dirty": False,
    }  # fmt: skip
    cfg = page.config({"service_name": "churn", "version": 2, "schema": schema, "lineage": lineage}, [])
    html = page.render(cfg)
    assert html.count("<script") == 2 and "alert(1)</script>" not in html
    assert "churn.ipynb" in html and "captured 2026-11-30 10:00 UTC" in html and "commit 0123456789ab" in html
    for secret in ("alice", "build-7", "secret-project"):
        assert secret not in html
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", html)
    # the CSP's hashes are those of the inline script and styles: only they run, and only this origin is reachable
    for tag, text in (("script-src", page_assets.SCRIPT), ("style-src", page_assets.STYLE)):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"{tag} 'sha256-{digest}'" in page.CSP
        assert text in html
    assert "connect-src 'self'" in page.CSP and "default-src 'none'" in page.CSP


def test_the_service_middleware_serves_the_page_with_its_headers(sample, monkeypatch):
    meta = {"service_name": "churn", "version": 1, "schema": infer_schema(sample)}
    answers: list[dict] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        raise AssertionError("/ must not reach the app")

    async def send(message):  # type: ignore[no-untyped-def]
        answers.append(message)

    monkeypatch.setenv("NBDEPLOY_AUTH", "off")
    mw = docs.Docs(app, meta, lambda: ["predict", "predict_proba"])
    for method in ("GET", "HEAD"):
        asyncio.run(mw({"type": "http", "method": method, "path": "/"}, None, send))  # type: ignore[arg-type]
    head, body, _, body2 = answers
    headers = dict(head["headers"])
    assert head["status"] == 200 and headers[b"content-type"] == b"text/html; charset=utf-8"
    assert headers[b"content-security-policy"] == page.CSP.encode() and headers[b"referrer-policy"] == b"no-referrer"
    assert b'"auth": false' in body["body"] and b'"proba": true' in body["body"] and body2["body"] == b""
    assert int(headers[b"content-length"]) == len(body["body"])


def test_the_edge_server_renders_the_page_bytes_with_their_type():
    raw = edge_server.render(200, b"<!doctype html>", {"content-type": "text/html; charset=utf-8", "x-a": "1"}, False)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert "content-type: text/html; charset=utf-8" in lines and "x-a: 1" in lines and body == b"<!doctype html>"
    assert sum(line.startswith("content-type") for line in lines) == 1
    assert "content-type: application/json" in edge_server.render(200, {"a": 1}, {}, False).decode()
