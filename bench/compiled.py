"""The compiled inference path against the Python model (#20): one-row latency, 100k-row time and parity.

    python bench/compiled.py             # every family, ~1-2 minutes on 2 cores
    python bench/compiled.py --quick     # fewer calls, 20k-row frames

In process, no server: each model is compiled with ``nbdeploy.compile.compile_model`` (which checks parity on the
sample plus generated rows), then both paths predict the model input exactly as the service builds it (the .npz
route and the schema's checks). One-row figures are medians of a few hundred calls. Target: one-row compiled
latency at most 0.3x the Python model's for RandomForest, GradientBoosting and StandardScaler + LogisticRegression.
``treelite`` (if installed) is timed beside onnxruntime for the tree ensembles it imports, for comparison only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_RATIO = 0.3


def _data(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"f{i}" for i in range(8)])
    margin = X.f0 + X.f1 * X.f2 - 0.5 * X.f3
    y = np.digitize(margin, [-0.7, 0.7])  # three classes
    return X, y, (margin + 0.1 * rng.normal(size=n)).to_numpy()


def _models() -> list[tuple[str, Callable[[], Any], str]]:
    """(name, factory, target kind): classifiers fit on 3 classes, regressors on a noisy margin."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    models: list[tuple[str, Callable[[], Any], str]] = [
        ("RandomForest (100 trees)", lambda: RandomForestClassifier(100, random_state=0), "class"),
        ("ExtraTrees (100 trees)", lambda: ExtraTreesClassifier(100, random_state=0), "class"),
        ("GradientBoosting (100)", lambda: GradientBoostingClassifier(random_state=0), "class"),
        ("GradientBoostingRegressor (100)", lambda: GradientBoostingRegressor(random_state=0), "value"),
        ("HistGradientBoosting (100)", lambda: HistGradientBoostingClassifier(random_state=0), "class"),
        ("StandardScaler + LogisticRegression", lambda: make_pipeline(StandardScaler(), LogisticRegression()), "class"),
        ("Ridge", lambda: Ridge(), "value"),
        (
            "ColumnTransformer(OneHot + scaler) + LogisticRegression",
            lambda: Pipeline(
                [
                    (
                        "prep",
                        ColumnTransformer(
                            [
                                ("num", StandardScaler(), [f"f{i}" for i in range(8)]),
                                ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                            ]
                        ),
                    ),
                    ("clf", LogisticRegression(max_iter=500)),
                ]
            ),
            "class",
        ),
    ]
    try:
        import lightgbm

        models.append(("LightGBM (100)", lambda: lightgbm.LGBMClassifier(verbose=-1), "class"))
    except ImportError:
        pass
    try:
        import xgboost

        models.append(("XGBoost (100, depth 6)", lambda: xgboost.XGBClassifier(n_estimators=100), "class"))
    except ImportError:
        pass
    return models


def _median_us(fn: Callable[[Any], Any], arg: Any, calls: int) -> float:
    fn(arg)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def _best_ms(fn: Callable[[Any], Any], arg: Any) -> float:
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        fn(arg)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _treelite_us(model: Any, x: np.ndarray, calls: int) -> float | None:
    try:
        import treelite
    except ImportError:
        return None
    try:
        tl = treelite.sklearn.import_model(model)
    except Exception:
        return None
    return _median_us(lambda a: treelite.gtil.predict(tl, a, nthread=1), x.astype(np.float64), calls)


def measure(quick: bool = False) -> list[dict[str, Any]]:
    from nbdeploy.capture.schema import infer_schema
    from nbdeploy.compile import _as_input, compile_model
    from nbdeploy.runtime.compiled import load_compiled

    calls, big = (100, 20_000) if quick else (300, 100_000)
    X, y, value = _data(20_000)
    X_big = _data(big, seed=1)[0]
    rng = np.random.default_rng(0)
    rows = []
    for name, factory, target in _models():
        Xm, Xb = X, X_big
        if "OneHot" in name:
            Xm = X.assign(city=rng.choice(["paris", "rome", "oslo", "lima"], len(X)))
            Xb = X_big.assign(city=rng.choice(["paris", "rome", "oslo", "lima"], len(X_big)))
        model = factory().fit(Xm, y if target == "class" else value)
        schema = infer_schema(Xm, model)
        with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            record = compile_model(model, Xm, schema, "estimator", Path(out))
            compile_s = time.perf_counter() - t0
            row: dict[str, Any] = {"model": name, "record": record, "compile_s": compile_s}
            one = _as_input(Xm.iloc[:1], schema)
            big_frame = _as_input(Xb, schema)
            row["python_us"] = _median_us(model.predict, one, calls)
            row["python_big_ms"] = _best_ms(model.predict, big_frame)
            compiled = load_compiled(Path(out))
            if compiled is not None:
                row["compiled_us"] = _median_us(compiled.fns["predict"], one, calls)
                row["compiled_big_ms"] = _best_ms(compiled.fns["predict"], big_frame)
                got, want = compiled.fns["predict"](big_frame), model.predict(big_frame)
                tol = compiled.tolerance
                exact = target == "class"
                same = np.array_equal(got, want) if exact else np.allclose(got, want, tol["rtol"], tol["atol"])
                row["big_equal"] = ("equal" if exact else "within tol") if same else "NO"
            if "OneHot" not in name:
                row["treelite_us"] = _treelite_us(model, Xm.iloc[:1].to_numpy(), calls)
        rows.append(row)
        print(f"  {name}: {record['path']} {record['reason'] or ''}", flush=True)
    return rows


def _fmt(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def report(rows: list[dict[str, Any]], big: int) -> str:
    lines = [
        "## Compiled inference path (in process)",
        "",
        f"One-row `predict` p50 (µs) and a {big:,}-row frame (ms, best of 2), Python model vs compiled path; parity "
        "as checked at compile (sample + generated rows: classes equal, scores within rtol/atol).",
        "",
        "| model | path | python 1 row µs | compiled 1 row µs | ratio | python "
        f"{big // 1000}k ms | compiled {big // 1000}k ms | {big // 1000}k answers | parity rows | classes equal "
        "| max abs diff | max rel diff | rtol / atol | treelite 1 row µs |",
        "|---|---|---:|---:|---:|---:|---:|:-:|---:|:-:|---:|---:|---|---:|",
    ]
    for r in rows:
        rec, parity = r["record"], r["record"]["parity"] or {}
        c_us = r.get("compiled_us")
        ratio = f"{c_us / r['python_us']:.3f}" if c_us else "–"
        path = rec["path"] if rec["path"] != "python" else f"python ({rec['reason']})"
        lines.append(
            f"| {r['model']} | {path} | {_fmt(r['python_us'])} | {_fmt(c_us)} | {ratio} | "
            f"{_fmt(r['python_big_ms'], 1)} | {_fmt(r.get('compiled_big_ms'), 1)} | "
            f"{r.get('big_equal', '–')} | {parity.get('rows', '–')} | "
            f"{'yes' if parity.get('classes_equal') else '–'} | {parity.get('max_abs_diff', 0):.2g} | "
            f"{parity.get('max_rel_diff', 0):.2g} | {parity.get('rtol', '–')} / {parity.get('atol', '–')} | "
            f"{_fmt(r.get('treelite_us'))} |"
        )
    lines += ["", f"Target: ratio ≤ {TARGET_RATIO} for RandomForest, GradientBoosting and scaler + logistic."]
    return "\n".join(lines)


def section(quick: bool = False) -> str:
    """Measure and return the markdown section (for ``run.py``)."""
    print("timing the compiled inference path ...", flush=True)
    return report(measure(quick), 20_000 if quick else 100_000)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer calls, 20k-row frames")
    args = ap.parse_args(argv)
    print(section(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
