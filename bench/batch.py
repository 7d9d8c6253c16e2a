"""Batch scoring against in-process ``predict`` on the same 1,000,000 rows (#23), local target.

    python bench/batch.py                 # both models, 1M rows
    python bench/batch.py --rows 200000   # smaller

For each model: the rows in a Parquet file, ``model.predict`` on them in this process (the frame already in memory:
the limit), then ``nbdeploy.score`` of the file through a local deployment of the same model (the Python object, not
the compiled path) into another Parquet file, end to end: read, send, validate, predict, write, checkpoint; with one
service worker (the local target's default) and with two (one per core here). The goal is at least 0.7x the
in-process rate. Two models, because the ratio is a question of what predict costs: a cheap one
(the churn pipeline: scaling and a logistic regression) where moving rows dominates, and the peers' RandomForest
(50 trees, 8 features; ``bench/run.py``) where the model does. ``run.py`` can call ``section()``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ROWS = 1_000_000
GOAL = 0.7

_CHURN = """
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.compose import make_column_transformer

def build(X, y):
    prep = make_column_transformer((StandardScaler(), ["tenure", "monthly", "support_calls"]),
                                   (OneHotEncoder(), ["plan"]))
    return make_pipeline(prep, LogisticRegression(max_iter=500)).fit(X, y)
"""


def _churn(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": np.arange(n, dtype="int64"),
            "tenure": rng.integers(0, 72, n),
            "monthly": rng.normal(70, 20, n).round(2),
            "support_calls": rng.poisson(2, n),
            "plan": rng.choice(np.array(["basic", "plus", "pro"], dtype=object), n),
        }
    )


def _forest(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"f{i}" for i in range(8)])
    X.insert(0, "customer_id", np.arange(n, dtype="int64"))
    return X


def models() -> list[tuple[str, Any, Any]]:
    """(label, fitted model, row generator) for each model measured."""
    from sklearn.ensemble import RandomForestClassifier

    train = _churn(5000, 0).drop(columns="customer_id")
    y = ((train.support_calls > 2) & (train.tenure < 24) | (train.monthly > 95)).astype(int)
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(_CHURN, ns)
    churn = ns["build"](train, y)
    X = _forest(20_000, 0).drop(columns="customer_id")
    forest = RandomForestClassifier(n_estimators=50, random_state=0).fit(X, ((X.f0 + X.f1 * X.f2) > 0).astype(int))
    return [
        ("churn pipeline (scaler + logistic regression)", churn, _churn),
        ("RandomForest, 50 trees, 8 features", forest, _forest),
    ]


def measure(rows: int = ROWS, runs: int = 2, workers: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Rows per second in-process and through batch scoring, per model and service worker count; best of ``runs``.

    One worker is the local target's default (it leaves a core to the notebook); two is one per core here."""
    import nbdeploy

    out = []
    work = Path(tempfile.mkdtemp(prefix="nbdeploy-bench-batch-"))
    for i, (label, model, make) in enumerate(models()):
        data = make(rows, 1)
        features = data.drop(columns="customer_id")
        source = work / f"source-{i}.parquet"
        data.to_parquet(source, row_group_size=100_000)
        inproc = []
        for _ in range(runs):
            started = time.perf_counter()
            expected = model.predict(features)
            inproc.append(time.perf_counter() - started)
        row: dict[str, Any] = {"model": label, "rows": rows, "inprocess_rows_s": rows / min(inproc)}
        for n in workers:
            dep = nbdeploy.deploy(
                model, name=f"bench-batch-{i}-{n}", sample=features[:1000], compile=False, limits={"workers": n}
            )
            try:
                batch = []
                for _ in range(runs):
                    started = time.perf_counter()
                    dep.score(str(source), into=str(work / "scores.parquet"), key="customer_id", overwrite=True,
                              progress=False)  # fmt: skip
                    batch.append(time.perf_counter() - started)
                scored = pd.read_parquet(work / "scores.parquet")["prediction"].to_numpy()
            finally:
                dep.stop()
            row[f"batch_rows_s_{n}"] = rows / min(batch)
            row[f"ratio_{n}"] = row[f"batch_rows_s_{n}"] / row["inprocess_rows_s"]
            row[f"identical_{n}"] = bool(np.array_equal(scored, expected))
            print(f"  {label}, {n} worker(s): in-process {row['inprocess_rows_s']:,.0f} rows/s, batch "
                  f"{row[f'batch_rows_s_{n}']:,.0f} rows/s ({row[f'ratio_{n}']:.2f}x), identical: "
                  f"{row[f'identical_{n}']}", flush=True)  # fmt: skip
        out.append(row)
    shutil.rmtree(work, ignore_errors=True)
    return {"rows": out, "cpus": os.cpu_count(), "workers": list(workers)}


def report(result: dict[str, Any]) -> str:
    workers = result["workers"]
    head = " | ".join(f"batch rows/s, {n} worker{'s' if n > 1 else ''} (x in-process)" for n in workers)
    lines = [
        "## Batch scoring against in-process predict",
        "",
        f"{result['rows'][0]['rows']:,} rows from a Parquet file into a Parquet file through a local deployment, "
        f"against `model.predict` on the same rows already in memory (one core). {result['cpus']} cores, shared by "
        "the scoring client and the service. Best of two runs each.",
        "",
        f"| model | in-process rows/s | {head} | predictions identical |",
        "|---|---|" + "---|" * len(workers) + "---|",
    ]
    for r in result["rows"]:
        cells = " | ".join(f"{r[f'batch_rows_s_{n}']:,.0f} ({r[f'ratio_{n}']:.2f}x)" for n in workers)
        same = all(r[f"identical_{n}"] for n in workers)
        lines.append(f"| {r['model']} | {r['inprocess_rows_s']:,.0f} | {cells} | {'yes' if same else 'NO'} |")
    met = [f"{r['model']} ({n} workers)" for r in result["rows"] for n in workers if r[f"ratio_{n}"] >= GOAL]
    lines.append(
        f"\nGoal: batch >= {GOAL}x the in-process rate; met for: {', '.join(met) if met else 'none'}."
        " A model that predicts a million rows in a fraction of a second is bounded by moving the rows (read, encode,"
        " HTTP, validate, log, write, checkpoint), not by the model."
    )
    return "\n".join([*lines, ""])


def section(rows: int = ROWS) -> str:
    """Measure and return the markdown section (what ``run.py`` can append to the report)."""
    print("timing batch scoring against in-process predict ...", flush=True)
    return report(measure(rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=ROWS)
    args = ap.parse_args(argv)
    os.environ.setdefault("NBDEPLOY_HOME", tempfile.mkdtemp(prefix="nbdeploy-bench-batch-home-"))
    print(section(args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
