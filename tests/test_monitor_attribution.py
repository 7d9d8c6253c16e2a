"""Which features' shifts moved the predictions (``monitor.attribution``), and the panel's calibration and
attribution in the snapshot and the model the browser draws. No server: seeded frames and a recorded log."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from test_monitor import _recorded

from nbdeploy.monitor.attribution import ReferenceAttribution
from nbdeploy.monitor.panel import Panel, snapshot, static_html

rng = np.random.default_rng(11)


def _numbers(n: int, shift: dict[str, float] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({k: rng.normal(0, 1, n) for k in ("drives", "shifts", "still")})
    for k, v in (shift or {}).items():
        frame[k] += v
    return frame


def test_numbers_the_feature_that_drives_the_prediction_gets_the_change_the_other_none():
    ref, live = _numbers(3000), _numbers(1000, {"drives": 0.7, "shifts": 1.0})
    label = lambda d: (d["drives"] > 0.3).astype(int).to_numpy()  # noqa: E731
    a = ReferenceAttribution.build(ref, label(ref), labels=True).attribute(live, label(live))
    assert a.target == "share of predictions = 1" and a.observed == pytest.approx(0.27, abs=0.05)
    assert a.moves["drives"] == pytest.approx(a.observed, abs=0.03)
    assert abs(a.moves["shifts"]) < 0.02 and abs(a.moves["still"]) < 0.02
    # a number predicted: the mean prediction
    value = lambda d: (3 * d["drives"] + rng.normal(0, 0.1, len(d))).to_numpy()  # noqa: E731
    m = ReferenceAttribution.build(ref, value(ref), labels=False).attribute(live, value(live), ["drives", "shifts"])
    assert m.target == "mean prediction" and m.observed == pytest.approx(2.1, abs=0.15)
    assert m.moves["drives"] == pytest.approx(m.observed, rel=0.1) and abs(m.moves["shifts"]) < 0.05
    assert set(m.moves) == {"drives", "shifts"}  # only the features asked for


def _categories(n: int, plan: list[float], region: list[float]) -> pd.DataFrame:
    plans, regions = rng.choice(["a", "b", "c"], n, p=plan), rng.choice(list("nsew"), n, p=region)
    return pd.DataFrame({"plan": plans, "region": regions, "age": rng.integers(18, 80, n)})


def test_categories_the_feature_that_drives_the_prediction_gets_the_change_the_other_none():
    ref = _categories(3000, [0.5, 0.3, 0.2], [0.25] * 4)
    live = _categories(1000, [0.2, 0.3, 0.5], [0.55, 0.15, 0.15, 0.15])
    label = lambda d: np.where(d["plan"] == "c", "churn", "stay")  # noqa: E731
    a = ReferenceAttribution.build(ref, label(ref), labels=True).attribute(live, label(live))
    assert a.target == "share of predictions = stay"  # of two classes the latter
    assert a.observed == pytest.approx(-0.3, abs=0.05)
    assert a.moves["plan"] == pytest.approx(a.observed, abs=1e-9)  # a category decides the label: exactly
    assert abs(a.moves["region"]) < 0.02 and abs(a.moves["age"]) < 0.02


def test_unseen_categories_missing_values_and_the_class_that_moved_most():
    ref = pd.DataFrame({"plan": ["a"] * 50 + ["b"] * 50 + ["rare"] * 2, "x": np.r_[np.arange(100.0), [np.nan] * 2]})
    preds = np.r_[["low"] * 50, ["mid"] * 25, ["high"] * 25, ["mid", "mid"]]
    side = ReferenceAttribution.build(ref, preds, labels=True)
    assert side.classes == ["high", "low", "mid"]
    live = pd.DataFrame({"plan": ["a"] * 10 + ["new"] * 10 + ["rare"] * 5 + [None] * 5, "x": [np.nan] * 30})
    a = side.attribute(live, ["low"] * 30)
    assert a.target == "share of predictions = low"  # of three classes: the one whose share moved most
    # "a" (all low) is a third of the rows; a new, a rare (fewer than 5 rows) and a missing plan move nothing
    assert a.moves["plan"] == pytest.approx(10 / 30 * (1 - 50 / 102))
    assert a.moves["x"] == 0.0  # missing numbers: the reference had 2, too few to say
    assert side.attribute(live.iloc[0:0], []).moves == {}  # no live rows: nothing to say


def test_a_hundred_features_and_a_thousand_live_rows_cost_a_few_milliseconds():
    names = [f"f{i:03d}" for i in range(100)]
    ref = pd.DataFrame(rng.normal(0, 1, (1000, 100)), columns=names)
    live = pd.DataFrame(rng.normal(0.3, 1, (1000, 100)), columns=names)
    side = ReferenceAttribution.build(ref, (ref["f000"] > 0).astype(int), labels=True)
    best = float("inf")
    for _ in range(7):
        t = time.perf_counter()
        side.attribute(live, (live["f000"] > 0).astype(int), names)
        best = min(best, time.perf_counter() - t)
    assert best < 0.02, f"{best * 1e3:.1f} ms"  # about 2 ms; the bound leaves room for a busy machine


def _proba(d: pd.DataFrame) -> list[list[float]]:
    q = 1 / (1 + np.exp(-(d["monthly"].to_numpy() - 80) / 8))
    return np.c_[1 - q, q].round(4).tolist()


def test_the_snapshot_and_the_browser_model_carry_calibration_points_and_the_attribution():
    rec = _recorded("monitor-attribution", lambda d: (d.monthly > 80).astype(int), lambda p: p, _proba)
    data = snapshot(rec)  # no cache: the rows the drift read are reused
    a = data.attribution
    assert a is not None and a.target == "share of predictions = 1" and a.observed > 0.2
    assert a.moves["monthly"] == pytest.approx(a.observed, abs=0.08) and abs(a.moves["tenure"]) < 0.05
    assert data.scored == 228 and not data.calibration.empty
    assert static_html(data).count("data:image/png") == 4  # the static snapshot keeps its calibration PNG
    panel = Panel(rec, start=False)  # the live panel: calibration and attribution in the model, no PNG
    try:
        assert not hasattr(panel, "_calibration")
        assert panel.data.attribution.moves == pytest.approx(a.moves)  # the cache's reference side, the same
        cal = panel.charts.data["calibration"]
        assert sum(cal["n"]) == 228 and cal["of"] == "class 1" and cal["rows"] == 228
        assert len(cal["lower"]) == len(cal["predicted"]) == len(cal["observed"]) == len(cal["n"]) >= 3
        assert all(lo <= p <= hi for lo, p, hi in zip(cal["lower"], cal["predicted"], cal["upper"], strict=True))
        drift = panel.charts.drift
        assert drift["attribution"]["target"] == "share of predictions = 1"
        assert drift["attribution"]["observed"] == pytest.approx(a.observed, abs=1e-6)
        moves = {f["name"]: f["moves"] for f in drift["features"]}
        assert moves["monthly"] == pytest.approx(a.moves["monthly"], abs=1e-6)
    finally:
        panel.close()
