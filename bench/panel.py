"""Kernel CPU per refresh of the live monitoring panel, at 31, 100 and 200 features.

    python bench/panel.py [--features 31 100 200] [--refreshes 20]

A stopped deployment's request log is written as the service writes it (1,500 requests of 2 rows, three features
shifted), then a ``Panel`` (not started: refreshes are called here) refreshes while 10 new requests arrive
between refreshes. CPU is the refreshing thread's own (``time.thread_time``): what the kernel pays. The first
refresh (reading the whole log, the reference's statistics) is shown apart; drift is recomputed every refresh
every 15 s (the panel's default) and, as the worst case, on every refresh. Target (issue 21): at most 50 ms per refresh.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def features_frame(rng: np.random.Generator, n_rows: int, n_features: int, shifted: int = 0) -> pd.DataFrame:
    """Numbers of a few shapes and every fifth feature a category; the first ``shifted`` numbers moved."""
    cols: dict[str, Any] = {}
    for i in range(n_features):
        if i % 5 == 4:
            cols[f"f{i:03d}"] = rng.choice(["a", "b", "c"], n_rows, p=[0.5, 0.3, 0.2])
        else:
            cols[f"f{i:03d}"] = rng.normal(i % 7, 1 + i % 3, n_rows).round(3)
    frame = pd.DataFrame(cols)
    for i in [i for i in range(n_features) if i % 5 != 4][:shifted]:
        frame[f"f{i:03d}"] += 1.5 * (1 + i % 3)
    return frame


def recorded(name: str, n_features: int, n_requests: int = 1500, shifted: int = 3, rows: int = 2) -> Any:
    """A stopped deployment with a reference and a request log (``rows`` rows a request, one a second)."""
    from nbdeploy import config
    from nbdeploy.capture.schema import infer_schema
    from nbdeploy.reference import save_reference
    from nbdeploy.registry import STOPPED, Registry
    from nbdeploy.runtime.recorder import Recorder

    rng = np.random.default_rng(n_features)
    ref = features_frame(rng, 1000, n_features)
    reg = Registry()
    rec = reg.allocate(name, "local", {"schema": infer_schema(ref)})
    reg.update(name, rec.version, status=STOPPED)
    directory = config.deployment_dir(name, rec.version)
    predict = lambda df: (df.iloc[:, 0] > df.iloc[:, 0].median()).astype(int)  # noqa: E731
    save_reference(directory, ref, predict(ref).to_numpy())
    recorder = Recorder(directory)
    append(recorder, rng, n_features, n_requests, shifted, rows, time.time() - n_requests)
    assert recorder.flush(60)
    return reg.get(name, rec.version), recorder, rng


def append(recorder: Any, rng: Any, n_features: int, n: int, shifted: int, rows: int, start: float) -> None:
    for i in range(n):
        live = features_frame(rng, rows, n_features, shifted)
        preds = (live.iloc[:, 0] > 3).astype(int).tolist()
        status = 400 if i % 50 == 49 else 200
        ok = status == 200
        recorder._put(  # the service's own record, with chosen times
            ("request", (uuid.uuid4().hex[:16], start + i, 2.0 + i % 7, status,
                         live.to_dict("records") if ok else None, preds if ok else None, None if ok else "bad"))
        )  # fmt: skip


def measure(n_features: int, refreshes: int, drift_every_s: float) -> dict[str, float]:
    from nbdeploy.monitor.widget import Panel

    rec, recorder, rng = recorded(f"bench-panel-{n_features}-{drift_every_s:g}", n_features)
    t0 = time.thread_time()
    panel = Panel(rec, start=False, drift_every_s=drift_every_s)
    first = (time.thread_time() - t0) * 1000
    costs = []
    for _ in range(refreshes):
        append(recorder, rng, n_features, 10, 3, 2, time.time())
        assert recorder.flush(30)
        t0 = time.thread_time()
        panel.refresh()
        costs.append((time.thread_time() - t0) * 1000)
    assert panel.data is not None and len(panel.data.drifted) >= 3, panel.data and panel.data.drifted
    drifted = len(panel.data.drifted)
    panel.close()
    return {"features": n_features, "first_ms": first, "median_ms": statistics.median(costs),
            "p90_ms": sorted(costs)[int(0.9 * (len(costs) - 1))], "max_ms": max(costs), "drifted": drifted}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=int, nargs="+", default=[31, 100, 200])
    ap.add_argument("--refreshes", type=int, default=20)
    args = ap.parse_args(argv)
    os.environ.setdefault("NBDEPLOY_HOME", tempfile.mkdtemp(prefix="nbdeploy-bench-panel-"))
    for every in (15.0, 0.0):
        rows = [measure(n, args.refreshes, every) for n in args.features]
        what = "drift recomputed every refresh (worst case)" if not every else "drift every 15 s (the panel's default)"
        print(f"\n{what}")
        _table(rows)
    return 0


def _table(rows: list[dict[str, float]]) -> None:
    print(f"{'features':>8} {'first refresh':>14} {'median':>8} {'p90':>8} {'max':>8} {'drifted':>8}  (kernel CPU, ms)")
    for r in rows:
        print(f"{r['features']:>8} {r['first_ms']:>14.1f} {r['median_ms']:>8.1f} {r['p90_ms']:>8.1f} "
              f"{r['max_ms']:>8.1f} {r['drifted']:>8}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
