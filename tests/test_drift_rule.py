"""The drift rule on seeded data: few false flags across many features, and real shifts found.

50 features (40 numbers of several shapes, 10 categories) and a 2,000-row reference; 100 live windows of 500 rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbdeploy.monitor.drift import DriftThresholds, ReferenceStats, benjamini_hochberg, compute, dataset_drifted

N_NUM, N_CAT, N_REF, WINDOW, WINDOWS = 40, 10, 2000, 500, 100
CATS = np.array(["a", "b", "c", "d"])
P_CAT = [0.4, 0.3, 0.2, 0.1]


def _frame(rng: np.random.Generator, n: int, shifted: tuple[str, ...] = ()) -> pd.DataFrame:
    cols: dict[str, np.ndarray] = {}
    for i in range(N_NUM):
        kind = i % 4
        if kind == 0:
            v = rng.normal(0, 1, n)
        elif kind == 1:
            v = rng.lognormal(0, 0.5, n)
        elif kind == 2:
            v = rng.integers(0, 10, n).astype(float)
        else:
            v = rng.exponential(2.0, n)
        cols[f"n{i}"] = v
    for i in range(N_CAT):
        cols[f"c{i}"] = rng.choice(CATS, n, p=P_CAT)
    frame = pd.DataFrame(cols)
    if "n0" in shifted:
        frame["n0"] += 0.3  # 0.3 standard deviations
    if "c1" in shifted:
        frame["c1"] = rng.choice(CATS, n, p=[0.25, 0.3, 0.25, 0.2])
    return frame


def _rates(shifted: tuple[str, ...]) -> tuple[list[int], dict[str, int], float]:
    """Per window whether a stationary feature was flagged; per shifted feature how often it was found; the mean
    false discovery proportion (false flags / flags)."""
    rng = np.random.default_rng(2026)
    ref = _frame(rng, N_REF)
    cache = ReferenceStats.build(ref)
    any_flag, found, fdp = [], dict.fromkeys(shifted, 0), []
    for _ in range(WINDOWS):
        table = compute(ref, _frame(rng, WINDOW, shifted), stats_cache=cache)
        flagged = set(table.index[table["drifted"]])
        false = flagged - set(shifted)
        any_flag.append(int(bool(false)))
        fdp.append(len(false) / max(len(flagged), 1))
        for f in shifted:
            found[f] += f in flagged
    return any_flag, found, float(np.mean(fdp))


def test_stationary_features_flag_in_at_most_5_percent_of_windows():
    any_flag, _, _ = _rates(())
    assert sum(any_flag) / WINDOWS <= 0.05, f"{sum(any_flag)} of {WINDOWS} windows flagged a stationary feature"


def test_two_shifted_features_are_found_in_95_percent_of_windows():
    _, found, fdp = _rates(("n0", "c1"))
    for feature, hits in found.items():
        assert hits / WINDOWS >= 0.95, f"{feature} found in {hits} of {WINDOWS} windows"
    assert fdp <= 0.05  # what Benjamini-Hochberg controls: the share of false flags among the flags


def test_benjamini_hochberg_matches_the_textbook():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    q = benjamini_hochberg(p)
    np.testing.assert_allclose(q[:4], [0.02, 0.04, 0.04, 0.02])
    assert np.isnan(q[4])


def test_small_windows_are_not_judged_and_flags_hold_with_hysteresis():
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"x": rng.normal(size=2000)})
    t = DriftThresholds(min_current=200)
    assert compute(ref, pd.DataFrame({"x": rng.normal(1, 1, 150)}), thresholds=t).loc["x", "test"] == "too few rows"
    mild = pd.DataFrame({"x": rng.normal(0.085, 1, 5000)})  # effect ~0.085: below 0.1, above 0.75 x 0.1
    first = compute(ref, mild, thresholds=DriftThresholds(window=5000))
    held = compute(ref, mild, thresholds=DriftThresholds(window=5000), previous={"x"})
    assert not first.loc["x", "drifted"] and held.loc["x", "drifted"]
    assert 0.075 <= first.loc["x", "effect"] < 0.1


def test_dataset_rule_is_a_share_of_features():
    rng = np.random.default_rng(5)
    ref = pd.DataFrame(rng.normal(size=(1000, 4)), columns=list("abcd"))
    live = pd.DataFrame(rng.normal(size=(800, 4)), columns=list("abcd"))
    live["a"] += 1
    table = compute(ref, live)
    assert list(table.index[table.drifted]) == ["a"]
    assert not dataset_drifted(table) and dataset_drifted(table, DriftThresholds(dataset_share=0.25))


@pytest.mark.parametrize("n", [500, 3000])
def test_ks_p_value_agrees_with_scipy(n):
    from scipy import stats

    rng = np.random.default_rng(n)
    ref, cur = rng.normal(size=n), rng.normal(0.1, 1, 700)
    table = compute(pd.DataFrame({"x": ref}), pd.DataFrame({"x": cur}))
    res = stats.ks_2samp(ref, cur, method="asymp")
    assert table.loc["x", "statistic"] == pytest.approx(res.statistic)
    assert table.loc["x", "p_value"] == pytest.approx(res.pvalue, rel=0.05)
    assert table.loc["x", "effect"] == pytest.approx(stats.wasserstein_distance(ref, cur) / ref.std(), rel=1e-9)
