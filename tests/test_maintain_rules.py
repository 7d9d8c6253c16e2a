"""Alert rules, incidents and the offline gate without a server: the statistics the scheduler acts on.

The stream here is simulated (windows built in memory); tests/test_maintain.py runs the same rules on a real
service's request log through the real scheduler process.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbdeploy import AlertRule, UsageError
from nbdeploy.maintenance.incidents import Measurement, blank_state, step
from nbdeploy.maintenance.retrain import offline_gate
from nbdeploy.maintenance.rules import as_rules, default_rules, seconds
from nbdeploy.maintenance.signals import Baseline, measure
from nbdeploy.maintenance.windows import WindowData, closed_time_windows


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tenure": rng.normal(24 + shift * 12, 12, n),
            "charges": rng.exponential(70, n),
            "calls": rng.poisson(2, n),
            "plan": rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2]),
            "region": rng.choice([f"r{i}" for i in range(8)], n),
        }
    )


def _window(i: int, inputs: pd.DataFrame, **over: object) -> WindowData:
    n = len(inputs)
    fields = {
        "start": float(i), "end": float(i + 1), "status": np.full(max(n // 10, 1), 200),
        "latency_ms": np.full(max(n // 10, 1), 3.0), "inputs": inputs, "predictions": np.zeros(n),
        "y_true": np.full(n, None, dtype=object), "top_probability": np.full(n, np.nan),
    }  # fmt: skip
    fields.update(over)
    return WindowData(**fields)  # type: ignore[arg-type]


def _run(rule: AlertRule, windows: list[WindowData], baseline: Baseline | None) -> list[tuple[int, str, bool]]:
    state, out = blank_state(), []
    for i, w in enumerate(windows):
        state, tr = step(rule, state, measure(rule, w, baseline), w.end)
        if tr is not None:
            out.append((i, tr.state, tr.notify))
    return out


@pytest.mark.heavy
def test_a_hundred_stationary_windows_of_fifty_thousand_rows_raise_at_most_one_false_alarm() -> None:
    rng = np.random.default_rng(7)
    baseline = Baseline.of(_frame(rng, 5000), np.zeros(5000))
    rule = AlertRule("drift", for_windows=2, min_rows=500)
    fired = [t for t in _run(rule, [_window(i, _frame(rng, 50_000)) for i in range(100)], baseline) if t[1] == "firing"]
    assert len(fired) <= 1, fired


@pytest.mark.heavy
def test_a_covariate_shift_at_window_ten_is_caught_within_three_windows_and_names_the_feature() -> None:
    rng = np.random.default_rng(11)
    baseline = Baseline.of(_frame(rng, 5000), np.zeros(5000))
    rule = AlertRule("drift", for_windows=2, min_rows=500)
    windows = [_window(i, _frame(rng, 2000, shift=0.0 if i < 10 else 0.6)) for i in range(20)]
    fired = [t for t in _run(rule, windows, baseline) if t[1] == "firing"]
    assert fired and 10 <= fired[0][0] <= 12, fired
    assert len(fired) == 1  # the shift stays: one incident, not one per window
    m = measure(rule, windows[12], baseline)
    assert m.evidence["top"][0]["feature"] == "tenure" and m.value >= 0.1


def test_a_flapping_signal_is_one_incident_and_one_notification() -> None:
    rule = AlertRule("error_rate", above=0.1, min_rows=1, clear_windows=3)
    pattern = [0.0, 0.5, 0.0, 0.5, 0.0, 0.0, 0.5, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    state, transitions = blank_state(), []
    for i, rate in enumerate(pattern):
        state, tr = step(rule, state, Measurement(rate, 100, True), float(i))
        transitions += [tr] if tr else []
    assert [(t.state, t.notify) for t in transitions] == [("firing", True), ("resolved", False)]
    # a new breach inside the cooldown after it resolved is a new incident, recorded but not sent
    state, tr = step(rule, state, Measurement(0.5, 100, True), 14.0)
    assert tr is not None and tr.state == "firing" and not tr.notify
    later = AlertRule("error_rate", above=0.1, min_rows=1, cooldown="10s")
    s2, _ = step(later, {**blank_state(), "closed_at": 0.0}, Measurement(0.5, 100, True), 11.0)
    assert s2["incident"] is not None


def test_windows_too_small_are_not_judged_and_do_not_break_a_streak() -> None:
    rule = AlertRule("accuracy", below=0.8, min_rows=50, for_windows=2)
    bad = _window(0, pd.DataFrame({"x": range(60)}), predictions=np.zeros(60), y_true=np.array([1] * 60, dtype=object))
    small = _window(
        1, pd.DataFrame({"x": range(10)}), predictions=np.zeros(10), y_true=np.array([1] * 10, dtype=object)
    )
    assert measure(rule, bad, None).value == 0.0
    assert not measure(rule, small, None).judged
    out = _run(rule, [bad, small, bad], None)
    assert out == [(2, "firing", True)]


def test_each_quantity_reads_its_own_part_of_the_window() -> None:
    w = _window(
        0, pd.DataFrame({"x": range(100)}), status=np.array([200] * 90 + [400] * 10),
        latency_ms=np.arange(1, 101, dtype=float), predictions=np.array(["a"] * 100),
        y_true=np.array(["a"] * 70 + ["b"] * 20 + [None] * 10, dtype=object),
        top_probability=np.array([0.9] * 50 + [0.7] * 50),
    )  # fmt: skip
    assert measure(AlertRule("error_rate", min_rows=1), w, None).value == pytest.approx(0.1)
    assert measure(AlertRule("latency", percentile=95, min_rows=1), w, None).value == pytest.approx(95.05)
    assert measure(AlertRule("accuracy", min_rows=1), w, None).value == pytest.approx(70 / 90)
    assert measure(AlertRule("estimated_accuracy", min_rows=1), w, None).value == pytest.approx(0.8)
    vol = AlertRule("volume", min_rows=0)
    assert vol.breached(
        measure(vol, _window(0, pd.DataFrame(), status=np.array([]), latency_ms=np.array([])), None).value
    )
    assert not vol.breached(measure(vol, w, None).value)


def test_the_offline_gate_refuses_a_worse_model_and_takes_a_better_one() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 400)
    champion = np.where(rng.random(400) < 0.8, truth, 1 - truth)
    worse = np.where(rng.random(400) < 0.6, truth, 1 - truth)
    better = np.where(rng.random(400) < 0.95, truth, 1 - truth)
    passed, evidence = offline_gate(champion, worse, truth, 0.0)
    assert not passed and evidence["candidate"] < evidence["champion"]
    passed, evidence = offline_gate(champion, better, truth, 0.0)
    assert passed and evidence["gain"] > 0.1 and evidence["test"] == "McNemar exact"
    assert not offline_gate(champion, better, truth, 0.5)[0]  # min_gain is a floor on the improvement


def test_rules_refuse_what_cannot_be_judged() -> None:
    with pytest.raises(UsageError, match="unknown alert quantity"):
        AlertRule("drfit")
    with pytest.raises(UsageError, match="not both"):
        AlertRule("drift", above=0.1, below=0.2)
    with pytest.raises(UsageError, match="time window"):
        AlertRule("volume", window_requests=100)
    with pytest.raises(UsageError, match="duration"):
        AlertRule("drift", window="five minutes")
    with pytest.raises(UsageError, match="named drift"):
        as_rules(["drift", {"quantity": "drift"}])
    assert seconds("5min", "w") == 300 and seconds("1h", "w") == 3600 and seconds(2.5, "w") == 2.5
    assert AlertRule("latency", percentile=99).name == "latency_p99"
    assert "drift > 0.1 over 5 min windows" in AlertRule("drift").describe()
    names = [r.name for r in default_rules(True, False)]
    assert names == ["drift", "error_rate", "latency_p95", "volume", "accuracy", "estimated_accuracy"]


def test_time_windows_tumble_on_the_clock_and_only_closed_ones_count() -> None:
    assert closed_time_windows(100.0, 130.0, 10.0) == [(100.0, 110.0), (110.0, 120.0)]  # 120-130 not closed yet
    assert closed_time_windows(105.0, 121.0, 10.0) == [(100.0, 110.0)]  # the window the cursor is in; 2 s grace
    assert closed_time_windows(110.0, 111.0, 10.0) == []


def test_a_delayed_rule_waits_for_late_labels_and_says_so() -> None:
    rule = AlertRule("accuracy", window="1min", delay="10min", min_rows=50)
    assert rule.delay_s == 600 and "judged 600 s after it closes" in rule.describe()
    assert "(≥ 50 labelled rows)" in rule.describe()
    assert "(≥" not in AlertRule("volume").describe()
    assert "over 500-request windows (≥ 200 rows)" in AlertRule("drift", window_requests=500).describe()
    # the scheduler asks for windows closed before now - delay: none of the last ten minutes yet
    now = 10_000.0
    assert closed_time_windows(9_000.0, now - rule.delay_s, rule.window_s)[-1][1] <= now - 600
