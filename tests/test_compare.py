"""Comparing a candidate with the live version, and the promotion rules, on synthetic router and request stores.

No server: each test writes ``endpoint.json``, ``endpoint.db`` (the router's ``SCHEMA``) and the versions'
``requests.db`` (the recorder's ``SCHEMA``) in its own NBDEPLOY_HOME, as the router and the services would.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nbdeploy import config
from nbdeploy.comparison import (
    Comparer,
    PromotionRules,
    as_rules,
    check_rules,
    compare,
    explain,
    gate,
)
from nbdeploy.errors import UsageError
from nbdeploy.reference import save_reference
from nbdeploy.router import contract
from nbdeploy.runtime import recorder

NAME = "churn"
T0 = 1_700_000_000.0


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NBDEPLOY_HOME", str(tmp_path))
    return tmp_path


def write_endpoint(mode: str = "shadow", live: int = 1, cand: int = 2) -> None:
    ep = contract.Endpoint(
        name=NAME,
        port=9000,
        live=contract.Upstream(live, "http://127.0.0.1:9001"),
        candidate=contract.Candidate(contract.Upstream(cand, "http://127.0.0.1:9002"), mode=mode),
    )
    contract.write(config.name_dir(NAME) / contract.ENDPOINT_FILE, ep)


def store() -> sqlite3.Connection:
    con = sqlite3.connect(config.name_dir(NAME) / contract.STORE_FILE)
    con.executescript(contract.SCHEMA)
    return con


def body(preds: list[Any]) -> str:
    return json.dumps({"predictions": preds, "request_id": "x"})


def mirror(
    live: list[Any],
    cand: list[Any],
    *,
    live_ms: list[float] | None = None,
    cand_ms: list[float] | None = None,
    cand_status: list[int | None] | None = None,
    inputs: list[Any] | None = None,
    start: int = 0,
    live_body: Any = body,
    cand_body: Any = body,
) -> list[str]:
    """One mirrored request per answer (a list answer is one request of several rows); returns the ids."""
    n = len(live)
    ids = [f"r{start + i:05d}" for i in range(n)]
    live_ms = live_ms or [5.0] * n
    cand_ms = cand_ms or [5.0] * n
    cand_status = cand_status or [200] * n
    with store() as con:
        for i in range(n):
            rows_l = live[i] if isinstance(live[i], list) else [live[i]]
            rows_c = cand[i] if isinstance(cand[i], list) else [cand[i]]
            x = inputs[i] if inputs is not None else [{"tenure": start + i, "plan": "basic"}]
            con.execute(
                "INSERT OR REPLACE INTO mirrored VALUES (?, ?, ?, ?, 1, 200, ?, ?, 2, ?, ?, ?, ?)",
                (
                    ids[i], T0 + start + i, "/predict", json.dumps({"inputs": x}), live_ms[i], live_body(rows_l),
                    cand_status[i], cand_ms[i] if cand_status[i] is not None else None,
                    cand_body(rows_c) if cand_status[i] == 200 else None,
                    None if cand_status[i] is not None else "timeout",
                ),
            )  # fmt: skip
    return ids


def request_log(version: int) -> sqlite3.Connection:
    con = sqlite3.connect(config.deployment_dir(NAME, version) / recorder.DB_NAME)
    con.executescript(recorder.SCHEMA)
    return con


def feedback(ids: list[str], labels: list[Any], version: int = 1) -> None:
    with request_log(version) as con:
        con.executemany(
            "INSERT INTO feedback VALUES (?, ?, ?)",
            [
                (rid, T0 + 10_000, json.dumps(y if isinstance(y, list) else [y]))
                for rid, y in zip(ids, labels, strict=True)
            ],
        )


def shadow(live: list[Any], cand: list[Any], labels: list[Any] | None = None, **kw: Any) -> list[str]:
    write_endpoint("shadow")
    ids = mirror(live, cand, **kw)
    request_log(1).close()
    if labels is not None:
        feedback(ids, labels)
    return ids


def failed(results: list[Any]) -> list[str]:
    return [r.name for r in results if not r.passed]


# ---------------------------------------------------------------------------------------------- shadow: classes


def test_identical_candidate_agrees_fully_and_promotes() -> None:
    preds = [i % 3 for i in range(300)]
    shadow(preds, preds)
    c = compare(NAME)
    assert (c.champion, c.challenger, c.mode, c.kind) == (1, 2, "shadow", "classes")
    assert c.summary["agreement"] == 1.0
    assert c.summary["rows_compared"] == c.summary["requests_compared"] == 300
    assert c.disagreements.empty
    assert np.diag(c.flips.to_numpy()).sum() == 300 and c.flips.to_numpy().sum() == 300
    ok, results, _ = gate(NAME)
    assert ok, explain(results)
    assert "agrees with live v1 on all 300 live requests" in c.sentence()
    assert "promotion allowed" in explain(results)


def test_five_percent_flips_are_refused_and_listed() -> None:
    live = [i % 2 for i in range(400)]
    cand = [1 - p if i % 20 == 0 else p for i, p in enumerate(live)]
    ids = shadow(live, cand)
    ok, results, c = gate(NAME)
    assert c.summary["agreement"] == pytest.approx(0.95)
    assert not ok
    assert failed(results) == ["min_agreement or labelled_win"]
    flipped = {ids[i] for i in range(400) if i % 20 == 0}
    assert set(c.disagreements["request_id"]) == flipped and len(c.disagreements) == 20
    assert {"tenure", "plan", "live", "candidate", "label"} <= set(c.disagreements.columns)
    assert c.flips.loc["0", "1"] == 20 and c.flips.loc["1", "0"] == 0 and c.flips.loc["1", "1"] == 200
    message = explain(results, c)
    assert "promotion refused" in message and "min_agreement or labelled_win" in message
    assert "agreement 95.0 % is below 99.0 %" in message
    assert "disagrees on 5.0 % of 400 live requests" in c.sentence()


def paired_outcomes(n: int, both: int, live_only: int, cand_only: int) -> tuple[list[int], list[int], list[int]]:
    """Live and candidate answers and labels on ``n`` rows: ``both`` rows both right, ``live_only`` rows only live
    right, ``cand_only`` only the candidate right, the rest both wrong (and agreeing)."""
    truth = [i % 2 for i in range(n)]
    live, cand = [], []
    for i, y in enumerate(truth):
        if i < both:
            live.append(y), cand.append(y)
        elif i < both + live_only:
            live.append(y), cand.append(1 - y)
        elif i < both + live_only + cand_only:
            live.append(1 - y), cand.append(y)
        else:
            live.append(1 - y), cand.append(1 - y)
    return live, cand, truth


def test_a_candidate_five_points_better_on_labels_promotes_on_the_labelled_rule() -> None:
    live, cand, truth = paired_outcomes(400, both=315, live_only=5, cand_only=25)
    shadow(live, cand, truth)
    ok, results, c = gate(NAME)
    s = c.summary
    assert s["labelled_rows"] == 400
    assert s["candidate_accuracy"] - s["live_accuracy"] == pytest.approx(0.05)
    assert (s["live_only_right"], s["candidate_only_right"]) == (5, 25)
    assert s["p_value"] == pytest.approx(stats.binomtest(25, 30, 0.5).pvalue)
    assert s["p_value"] < 0.05 and s["test"] == "McNemar exact"
    assert s["agreement"] == pytest.approx(370 / 400)  # below 0.99: only the labelled win promotes it
    assert ok, explain(results)
    rule = next(r for r in results if r.name == "min_agreement or labelled_win")
    assert "a significant win on labels" in rule.sentence
    assert "on the 400 labelled ones it is right 5.0 points more often (McNemar exact p = " in c.sentence()
    assert len(c.labelled) == 400


def test_a_worse_candidate_is_refused() -> None:
    live, cand, truth = paired_outcomes(400, both=315, live_only=25, cand_only=5)
    shadow(live, cand, truth)
    ok, results, c = gate(NAME)
    assert not ok
    assert failed(results) == ["min_agreement or labelled_win", "not worse on labels"]
    assert "right 5.0 points less often" in c.sentence()


def test_a_better_candidate_without_significance_does_not_promote_on_labels() -> None:
    live, cand, truth = paired_outcomes(400, both=300, live_only=20, cand_only=28)
    shadow(live, cand, truth)
    ok, results, c = gate(NAME)
    assert c.summary["p_value"] == pytest.approx(stats.binomtest(28, 48, 0.5).pvalue)
    assert c.summary["p_value"] > 0.05
    assert not ok and failed(results) == ["min_agreement or labelled_win"]


def test_labels_sent_twice_count_once_the_latest_wins() -> None:
    ids = shadow([0, 1], [0, 1])
    feedback(ids, [1, 1])
    feedback(ids[:1], [0])  # corrected later
    c = compare(NAME)
    assert c.summary["labelled_rows"] == 2
    assert c.summary["live_accuracy"] == 1.0


def test_probability_answers_compare_by_the_class_they_pick() -> None:
    def proba(rows: list[Any]) -> str:
        return json.dumps({"probabilities": rows, "classes": ["no", "yes"], "request_id": "x"})

    live = [[[0.9, 0.1]], [[0.2, 0.8]], [[0.6, 0.4]]]
    cand = [[[0.8, 0.2]], [[0.3, 0.7]], [[0.4, 0.6]]]  # the third flips no -> yes
    write_endpoint()
    ids = mirror(live, cand, live_body=proba, cand_body=proba)
    c = compare(NAME)
    assert c.summary["agreement"] == pytest.approx(2 / 3)
    assert list(c.disagreements["request_id"]) == [ids[2]]
    assert (c.disagreements["live"].iloc[0], c.disagreements["candidate"].iloc[0]) == ("no", "yes")
    assert c.flips.loc["no", "yes"] == 1


def test_multi_row_requests_in_split_form_expand_their_inputs() -> None:
    write_endpoint()
    inputs = [{"columns": ["a", "b"], "data": [[1, "x"], [2, "y"], [3, "z"]]}]
    ids = mirror([[0, 1, 1]], [[0, 0, 1]], inputs=inputs)
    feedback(ids, [[0, 1, 1]])
    c = compare(NAME)
    assert (c.summary["requests_compared"], c.summary["rows_compared"]) == (1, 3)
    d = c.disagreements
    assert list(d[["request_id", "row", "a", "b", "label"]].iloc[0]) == [ids[0], 1, 2, "y", 1]
    assert "2 of 3 rows" not in c.sentence() and "3 rows in 1 live request;" in c.sentence()


# ---------------------------------------------------------------------------------------------- shadow: numbers


def test_numbers_show_differences_and_a_paired_wilcoxon_test() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(10, 2, 200)
    live = truth + rng.normal(0, 1.0, 200)
    cand = truth + rng.normal(0, 0.5, 200)
    shadow([float(v) for v in live], [float(v) for v in cand], [float(v) for v in truth])
    ok, results, c = gate(NAME)
    assert c.kind == "numbers" and c.flips.empty
    assert c.summary["agreement"] == 0.0
    diff = c.differences["candidate - live"]
    assert diff["count"] == 200 and diff["mean"] == pytest.approx(float(np.mean(cand - live)))
    expected = stats.wilcoxon(np.abs(live - truth), np.abs(cand - truth)).pvalue
    assert c.summary["p_value"] == pytest.approx(expected)
    assert c.summary["test"] == "Wilcoxon signed-rank" and c.summary["p_value"] < 0.05
    assert c.summary["candidate_mae"] < c.summary["live_mae"]
    assert ok, explain(results)  # no agreement, but significantly closer to the truth
    assert "mean absolute error is" in c.sentence() and "lower" in c.sentence()
    assert "difference" in c.disagreements.columns and len(c.disagreements) == 200


def test_identical_numbers_agree_within_the_tolerance() -> None:
    values = [0.1 * i + 0.05 for i in range(150)]
    shadow(values, [v * (1 + 1e-9) for v in values])
    c = compare(NAME)
    assert c.kind == "numbers" and c.summary["agreement"] == 1.0
    assert compare(NAME, tolerance=0.0).summary["agreement"] < 1.0


# ---------------------------------------------------------------------------------------------- errors and latency


def test_a_slower_candidate_is_refused_by_the_latency_rule() -> None:
    preds = [1] * 200
    shadow(preds, preds, live_ms=[10.0] * 200, cand_ms=[30.0] * 200)
    ok, results, c = gate(NAME)
    assert not ok and failed(results) == ["max_p95_latency_increase"]
    assert c.latency.loc["candidate v2", "p95_ms"] == pytest.approx(30.0)
    assert "candidate p95 30.0 ms against live 10.0 ms" in explain(results)
    assert gate(NAME, {"max_p95_latency_increase": None})[0]
    assert gate(NAME, PromotionRules(max_p95_latency_increase=2.0))[0]


def test_candidate_errors_are_refused_but_one_timeout_is_tolerated() -> None:
    preds = [1] * 200
    statuses: list[int | None] = [200] * 200
    statuses[7] = None  # one copy that got no answer
    shadow(preds, preds, cand_status=statuses)
    ok, results, c = gate(NAME)
    assert c.summary["candidate_error_rate"] == pytest.approx(1 / 200)
    assert ok, explain(results)


def test_candidate_errors_beyond_the_tolerance_are_refused() -> None:
    preds = [1] * 200
    statuses: list[int | None] = [500 if i % 20 == 0 else 200 for i in range(200)]
    shadow(preds, preds, cand_status=statuses)
    ok, results, c = gate(NAME)
    assert c.summary["candidate_error_rate"] == pytest.approx(0.05)
    assert c.summary["live_error_rate"] == 0.0
    assert not ok and failed(results) == ["max_error_rate_increase"]
    assert c.summary["rows_compared"] == 190  # the failed copies are not compared


def test_too_few_requests_decide_nothing() -> None:
    shadow([1] * 20, [1] * 20)
    ok, results, _ = gate(NAME)
    assert not ok and failed(results) == ["min_requests"]
    assert "20 rows compared: fewer than the 100" in explain(results)


def test_rules_read_from_a_dict_and_unknown_ones_refused() -> None:
    assert as_rules({"min_agreement": 0.9}).min_agreement == 0.9
    assert as_rules(None) == PromotionRules()
    with pytest.raises(UsageError, match="min_agrement"):
        as_rules({"min_agrement": 0.9})
    assert "min_agreement=0.99" in str(PromotionRules())


def test_no_candidate_is_a_usage_error() -> None:
    config.name_dir(NAME)
    with pytest.raises(UsageError, match="no live version"):
        compare(NAME)


# ---------------------------------------------------------------------------------------------- split traffic


def test_split_traffic_is_compared_unpaired_with_fisher() -> None:
    write_endpoint("split")
    rng = np.random.default_rng(1)
    for version, n, right in ((1, 300, 240), (2, 200, 180)):
        with request_log(version) as con:
            for i in range(n):
                y = int(rng.integers(0, 2))
                pred = y if i < right else 1 - y
                rid = f"v{version}-{i}"
                con.execute(
                    "INSERT INTO requests VALUES (?, ?, ?, 200, 1, ?, ?, NULL, NULL)",
                    (rid, T0 + i, 4.0, json.dumps([{"a": i}]), json.dumps([pred])),
                )
                con.execute("INSERT INTO feedback VALUES (?, ?, ?)", (rid, T0 + 5000, json.dumps([y])))
    with store() as con:
        con.executemany(
            "INSERT INTO served VALUES (?, ?, '/predict', ?, ?, 200, ?, 1)",
            [(T0 + i, f"s{i}", 1 if i % 5 else 2, "live" if i % 5 else "candidate", 4.0) for i in range(500)],
        )
    c = compare(NAME)
    assert c.mode == "split" and c.summary["paired"] is False and c.summary["agreement"] is None
    assert (c.summary["live_accuracy"], c.summary["candidate_accuracy"]) == (0.8, 0.9)
    expected = stats.fisher_exact([[180, 20], [240, 60]]).pvalue
    assert c.summary["test"] == "Fisher exact" and c.summary["p_value"] == pytest.approx(expected)
    assert (c.summary["live_requests"], c.summary["candidate_requests"]) == (400, 100)
    assert "unpaired" in c.sentence()
    ok, results, _ = gate(NAME)
    assert ok, explain(results)  # significantly better (p < 0.05), unpaired
    assert gate(NAME, {"labelled_win": False})[0] is False


# ---------------------------------------------------------------------------------- incremental, drift, card


def test_the_comparer_reads_only_new_rows() -> None:
    write_endpoint()
    mirror([1] * 50, [1] * 50)
    comparer = Comparer(NAME)
    assert comparer.compare().summary["rows_compared"] == 50
    mirror([1] * 50, [0] * 50, start=50)
    c = comparer.compare()
    assert c.summary["rows_compared"] == 100 and c.summary["agreement"] == 0.5
    assert comparer.compare(since=T0 + 50).summary["agreement"] == 0.0
    small = Comparer(NAME, max_rows=30).compare()
    assert small.summary["rows_compared"] == 30


def test_each_version_s_prediction_drift_against_its_reference() -> None:
    preds = [i % 2 for i in range(200)]
    shadow(preds, [1] * 200)
    for v in (1, 2):
        save_reference(config.deployment_dir(NAME, v), pd.DataFrame({"a": range(100)}), [i % 2 for i in range(100)])
    c = compare(NAME)
    assert list(c.drift.index) == ["live v1", "candidate v2"]
    assert not bool(c.drift.loc["live v1", "drifted"]) and bool(c.drift.loc["candidate v2", "drifted"])


def test_the_card_has_the_sentence_the_flips_and_the_disagreements() -> None:
    live = [i % 2 for i in range(400)]
    cand = [1 - p if i % 20 == 0 else p for i, p in enumerate(live)]
    ids = shadow(live, cand)
    c = compare(NAME)
    page = c._repr_html_()
    assert c.sentence() in page.replace("&#x27;", "'")
    assert "Flips" in page and "Disagreeing rows (20)" in page and ids[0] in page
    assert "Latency and errors" in page
    assert "agreement over time" not in page  # the chart is the panel's
    over = c.agreement_over_time
    assert over["requests"].sum() == 400 and over["rows"].sum() == 400
    results = check_rules(c)
    assert "min_agreement or labelled_win" in c.check()[1].name and len(results) == 5


def test_now_is_the_default_end_of_time() -> None:
    write_endpoint()
    mirror([1], [1])
    assert compare(NAME, since=time.time() + 60).summary["requests"] == 0


# ---------------------------------------------------------------------------------------------- the panel


def test_the_challenger_panel_builds_static_and_live() -> None:
    from nbdeploy.monitor.challenger import ComparisonPanel, StaticComparison, comparison_panel

    live, cand, truth = paired_outcomes(400, both=315, live_only=5, cand_only=25)
    shadow(live, cand, truth)
    static = comparison_panel(NAME, live=False)
    assert isinstance(static, StaticComparison)
    page = static._repr_html_().replace("&#x27;", "'")
    assert static.comparison.sentence() in page
    assert "Flips: live class" in page and "data:image/png;base64," in page
    assert "McNemar exact p = " in page and "Promotion rules" in page and "allowed" in page

    panel = ComparisonPanel(NAME, start=False)
    assert not panel.live and panel.error is None
    assert panel.comparison is not None and panel.comparison.summary["rows_compared"] == 400
    assert "McNemar exact" in panel.tiles["labelled"].value
    assert panel._chart.value[:4] == b"\x89PNG"
    mirror([1] * 10, [0] * 10, start=400)  # new mirrored requests: the next refresh reads only those
    assert panel.refresh().summary["rows_compared"] == 410
    panel.close()


def test_the_panel_of_split_traffic_and_of_an_empty_store() -> None:
    from nbdeploy.monitor.challenger import comparison_panel

    write_endpoint("split")
    page = comparison_panel(NAME, live=False)._repr_html_()
    assert "split traffic, unpaired" in page and "waiting for feedback" in page
