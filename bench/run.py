"""Benchmark nbdeploy against its peers, side by side in one run, and write docs/performance.md.

    python bench/run.py            # full run (~10 min on 2 cores)
    python bench/run.py --quick    # under 5 minutes
    python bench/run.py --no-mlflow

Same model (RandomForest, 50 trees, 8 features), same data, same client (threads with one
keep-alive connection each, loopback only, bounded in time), errors counted everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import batch as batch_bench  # noqa: E402
from bench import deploy_time, loadgen, peers  # noqa: E402
from bench import panel as panel_bench  # noqa: E402


def _model() -> tuple[object, pd.DataFrame]:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(20_000, 8)), columns=[f"f{i}" for i in range(8)])
    y = ((X.f0 + X.f1 * X.f2) > 0).astype(int)
    return RandomForestClassifier(n_estimators=50, random_state=0).fit(X, y), X


def _families(X: pd.DataFrame) -> dict[str, object]:
    """The issue's three families beside the forest: gradient boosting and a scaler + logistic pipeline."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = ((X.f0 + X.f1 * X.f2) > 0).astype(int)
    return {
        "GradientBoosting, 100 trees": GradientBoostingClassifier(random_state=0).fit(X[:5000], y[:5000]),
        "StandardScaler + LogisticRegression": make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y),
    }


def family_latency(label: str, model, X: pd.DataFrame, work: Path, args: argparse.Namespace) -> dict:
    """One-row p50 (sequential) of the family through nbdeploy (compiled by default) and a hand-written BentoML."""
    import nbdeploy
    from nbdeploy.registry import Registry

    name = "bench-" + "".join(c for c in label.lower() if c.isalnum())[:20]
    rows_json = X[:500].to_dict(orient="records")
    model_path = work / f"{name}.pkl"
    model_path.write_bytes(pickle.dumps(model))
    print(f"  {label}: deploying ...", flush=True)
    dep = nbdeploy.deploy(model, name=name, sample=X[:1000])
    srv = None
    try:
        key = {"authorization": f"Bearer {Registry().key(name)}"}
        ours = _sequential(f"{dep.url}/predict", _bodies("records", rows_json), args.sequential, key)
        srv = peers.hand_written(model_path, work / f"hw-{name}", False)
        hand = _sequential(f"{srv.url}/predict", _bodies(srv.body, rows_json), args.sequential, {})
        path = (dep.info().get("compiled") or {}).get("path", "python")
    finally:
        if srv is not None:
            srv.stop()
        dep.stop()
    print(f"  {label}: {ours[0]:.2f} ms vs {hand[0]:.2f} ms ({path})", flush=True)
    return {"model": label, "path": path, "ours_ms": ours[0], "hand_ms": hand[0], "errors": ours[2] + hand[2]}


def _bodies(server_kind: str, rows: list[dict]) -> list[bytes]:
    if server_kind == "mlflow":
        return [json.dumps({"dataframe_records": [r]}).encode() for r in rows]
    if server_kind == "array":
        return [json.dumps({"inputs": [list(r.values())]}).encode() for r in rows]
    return [json.dumps({"inputs": [r]}).encode() for r in rows]


def _sequential(url: str, bodies: list[bytes], n: int, headers: dict[str, str]) -> tuple[float, float, int]:
    lat, errors = [], 0
    hdrs = {"content-type": "application/json", **headers}
    with httpx.Client(trust_env=False, timeout=30) as http:
        for i in range(20):  # warm-up
            http.post(url, content=bodies[i % len(bodies)], headers=hdrs)
        for i in range(n):
            t0 = time.perf_counter()
            resp = http.post(url, content=bodies[i % len(bodies)], headers=hdrs)
            lat.append((time.perf_counter() - t0) * 1000)
            errors += resp.status_code != 200
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), errors


def nbdeploy_deploy_shadow(model, X: pd.DataFrame):
    """The same model again, as a shadow of the live version: every request copied to it."""
    import nbdeploy

    print("deploying a shadow of it ...", flush=True)
    return nbdeploy.deploy(model, name="bench", sample=X[:1000], shadow=True)


def measure(name: str, url: str, bodies: list[bytes], args: argparse.Namespace, headers: dict[str, str]) -> dict:
    p50, p99, seq_errors = _sequential(url, bodies, args.sequential, headers)
    row = {"server": name, "seq_p50_ms": p50, "seq_p99_ms": p99, "errors": seq_errors}
    for clients in (1, 8, 32):
        res = loadgen.run(
            url, lambda n: bodies[n % len(bodies)], clients=clients, seconds=args.seconds, headers=headers
        )
        row[f"rps_{clients}"] = res.rps
        row["errors"] += res.failed
    print(f"  {name}: p50 {p50:.2f} ms, rps@8 {row['rps_8']:.0f}, errors {row['errors']}", flush=True)
    return row


def in_process(model, X: pd.DataFrame, n: int) -> dict:
    rows = [X.iloc[[i]] for i in range(50)]
    for r in rows[:10]:
        model.predict(r)
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        model.predict(rows[i % 50])
        lat.append((time.perf_counter() - t0) * 1000)
    return {
        "server": "in-process predict",
        "seq_p50_ms": float(np.percentile(lat, 50)),
        "seq_p99_ms": float(np.percentile(lat, 99)),
    }


def batch_100k(dep, model, X: pd.DataFrame) -> dict:
    big = pd.concat([X] * 5, ignore_index=True)[:100_000]
    t0 = time.perf_counter()
    local = model.predict(big)
    in_proc = time.perf_counter() - t0
    t0 = time.perf_counter()
    remote = dep.predict(big, timeout=300)
    endpoint = time.perf_counter() - t0
    assert (remote == local).all(), "the endpoint disagrees with the session on the 100k batch"
    return {"rows": len(big), "in_process_s": in_proc, "endpoint_s": endpoint, "ratio": endpoint / in_proc}


def deploy_timings(model, X: pd.DataFrame) -> tuple[object, dict]:
    import nbdeploy

    t0 = time.perf_counter()
    dep = nbdeploy.deploy(model, name="bench", sample=X[:5000])
    dep.predict(X[:1])
    total = time.perf_counter() - t0
    timings = dep.info()["timings"]
    return dep, {**timings, "first_prediction_s": total}


def container_run(model, X: pd.DataFrame, rows_json: list[dict], args: argparse.Namespace) -> tuple[object, dict, dict]:
    """The same model on the container target: its endpoint row, and image size, build and start times."""
    import nbdeploy
    from nbdeploy.registry import Registry

    t0 = time.perf_counter()
    dep = nbdeploy.deploy(model, name="bench-ctr", sample=X[:5000], target="container")
    dep.predict(X[:1])
    first = time.perf_counter() - t0
    c = dep.info()["container"]
    key = {"authorization": f"Bearer {Registry().key('bench-ctr')}"}
    row = measure("nbdeploy container endpoint", f"{dep.url}/predict", _bodies("records", rows_json), args, key)
    facts = {
        "size_mb": (c.get("size_bytes") or 0) / 1e6,
        "build_s": c.get("build_s"),
        "ready_s": c.get("ready_s"),
        "first_prediction_s": first,
    }
    return dep, {**row, "ready_s": c.get("ready_s")}, facts


def _fmt(v: object, digits: int = 1) -> str:
    return f"{v:.{digits}f}" if isinstance(v, float) and not np.isnan(v) else ("–" if v is None else str(v))


def report(
    rows: list[dict],
    batch: dict,
    deploy: dict,
    args: argparse.Namespace,
    ctr: dict | None = None,
    families: list[dict] | None = None,
) -> str:
    families = families or []
    by = {r["server"]: r for r in rows}
    ours = by.get("nbdeploy local endpoint", {})
    hand = by.get("hand-written BentoML", {})
    mlf = by.get("MLflow models serve", {})
    lines = [
        "# Performance",
        "",
        f"Measured by `bench/run.py{' --quick' if args.quick else ''}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. Model: RandomForest, 50 trees, 8 features; "
        "one-row requests over loopback HTTP, client threads with one keep-alive connection each. "
        "All servers ran side by side in one run; absolute numbers swing with machine load, ratios less so.",
        "",
        "| server | ready after (s) | seq p50 (ms) | seq p99 (ms) | rps, 1 client | rps, 8 clients | rps, 32 clients | failed requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {_fmt(r.get('ready_s'))} | {_fmt(r.get('seq_p50_ms'), 2)} | {_fmt(r.get('seq_p99_ms'), 2)} "
            f"| {_fmt(r.get('rps_1'), 0)} | {_fmt(r.get('rps_8'), 0)} | {_fmt(r.get('rps_32'), 0)} | {r.get('errors', '–')} |"
        )
    lines += ["", "## Against the goals", "", "| goal | target | reached |", "|---|---|---|"]

    def goal(what: str, target: str, ratio: float, met: bool, detail: str = "") -> None:
        lines.append(f"| {what} | {target} | {ratio:.2f}×{detail} ({'met' if met else 'missed'}) |")

    for fam in families:
        goal(
            f"one-row p50 vs hand-written BentoML: {fam['model']} ({fam['path']})", "≤ 0.3×",
            fam["ours_ms"] / fam["hand_ms"], fam["ours_ms"] / fam["hand_ms"] <= 0.3,
            f" ({fam['ours_ms']:.2f} vs {fam['hand_ms']:.2f} ms)",
        )  # fmt: skip
    if ours and hand:
        ratio = ours["seq_p50_ms"] / hand["seq_p50_ms"]
        goal("one-row p50 vs hand-written BentoML: RandomForest, 50 trees", "≤ 0.3×", ratio, ratio <= 0.3)
    if ours and mlf:
        ratio = ours["rps_8"] / mlf["rps_8"]
        goal("throughput at 8 clients vs MLflow", "≥ 5×", ratio, ratio >= 5)
    goal(
        "100k rows through the endpoint vs in-process", "≤ 1.1×", batch["ratio"], batch["ratio"] <= 1.1,
        f" ({batch['endpoint_s']:.2f} s vs {batch['in_process_s']:.2f} s)",
    )  # fmt: skip
    stable, shadowed = by.get("nbdeploy stable URL", {}), by.get("nbdeploy stable URL, shadow 100 %", {})
    if ours and stable and shadowed:
        for label, row in (("stable URL", stable), ("stable URL with a 100 % shadow", shadowed)):
            added = row["seq_p50_ms"] / ours["seq_p50_ms"] - 1
            lines.append(
                f"| one-row p50 through the {label} vs the version's own URL | ≤ 5 % added | "
                f"{added * 100:+.0f} % ({row['seq_p50_ms']:.2f} vs {ours['seq_p50_ms']:.2f} ms; "
                f"{'met' if added <= 0.05 else 'missed'}) |"
            )
    failed = sum(int(r.get("errors") or 0) for r in rows if str(r.get("server", "")).startswith("nbdeploy"))
    failed += sum(int(f["errors"]) for f in families)
    lines.append(
        f"| failed requests (every nbdeploy run above) | 0 | {failed} ({'met' if failed == 0 else 'missed'}) |"
    )
    first = deploy["first_prediction_s"]
    lines += [
        "",
        "## Deploy to first prediction",
        "",
        "| capture (s) | package (s) | start (s) | deploy() call to first prediction (s) |",
        "|---|---|---|---|",
        f"| {deploy['capture_s']:.2f} | {deploy['package_s']:.2f} | {deploy['start_s']:.2f} | {first:.2f} |",
        "",
    ]
    if ctr:
        lines += [
            "## Container target",
            "",
            'The same model deployed with `target="container"` (podman; local base image, no apt step). The image build '
            "reuses the engine's cache of the Python packages, so a first build on a new machine takes longer.",
            "",
            "| image size (MB) | image build (s) | container start to ready (s) | deploy() call to first prediction (s) |",
            "|---|---|---|---|",
            f"| {ctr['size_mb']:.0f} | {_fmt(ctr['build_s'])} | {_fmt(ctr['ready_s'])} | {ctr['first_prediction_s']:.1f} |",
            "",
        ]
    return "\n".join(lines)


# -- CLI start-up (issue #17, item 9): `nbdeploy --help` and `nbdeploy list`, each a fresh process ------------------
CLI_TARGET_S = 0.3


def cli_timings(runs: int = 15) -> dict[str, dict[str, float]]:
    """Wall time of `nbdeploy --help` and `nbdeploy list` as a shell runs them: a new process each time (Python
    start-up and imports included), against the NBDEPLOY_HOME in the environment. Median of ``runs``, after one
    warm-up run (the OS file cache)."""
    import shutil
    import statistics
    import subprocess

    exe = shutil.which("nbdeploy") or str(Path(sys.executable).parent / "nbdeploy")
    out = {}
    for argv in (["--help"], ["list"]):
        label, times = " ".join(["nbdeploy", *argv]), []
        for i in range(runs + 1):
            t0 = time.perf_counter()
            subprocess.run([exe, *argv], capture_output=True, check=True, env=dict(os.environ))
            if i:
                times.append(time.perf_counter() - t0)
        out[label] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}
        print(f"  {label}: median {out[label]['median_s']:.3f} s", flush=True)
    return out


def cli_report(timings: dict[str, dict[str, float]], rows: int) -> str:
    lines = [
        "## Command line start-up",
        "",
        f"Each command a fresh process, as a shell runs it (median of 15, after a warm-up); `list` with {rows} "
        "deployment(s), whose status it checks live (PID and `/readyz`).",
        "",
        f"| command | median (s) | min (s) | max (s) | target < {CLI_TARGET_S} s |",
        "|---|---|---|---|---|",
    ]
    for cmd, t in timings.items():
        met = "met" if t["median_s"] < CLI_TARGET_S else "missed"
        lines.append(f"| `{cmd}` | {t['median_s']:.3f} | {t['min_s']:.3f} | {t['max_s']:.3f} | {met} |")
    return "\n".join([*lines, ""])


# -- end of the CLI start-up block -----------------------------------------------------------------------------------


# -- capture cost against model size (#18 item 7): bench/capture_cost.py ---------------------------------------------
from bench import capture_cost  # noqa: E402

# -- end of the capture-cost block -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter runs, under 5 minutes")
    ap.add_argument("--no-mlflow", action="store_true", help="skip MLflow (it installs into .cache/bench once)")
    ap.add_argument("--no-container", action="store_true", help="skip the container target (needs podman or docker)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    ap.add_argument("--cli-only", action="store_true", help="only time `nbdeploy --help` and `nbdeploy list`; print")
    args = ap.parse_args(argv)
    if args.cli_only:
        os.environ["NBDEPLOY_HOME"] = tempfile.mkdtemp(prefix="nbdeploy-bench-cli-")
        print(cli_report(cli_timings(), rows=0))
        return 0
    args.seconds = 4.0 if args.quick else 12.0
    args.sequential = 200 if args.quick else 1000

    import sklearn

    from nbdeploy.registry import Registry

    home = tempfile.mkdtemp(prefix="nbdeploy-bench-")
    os.environ["NBDEPLOY_HOME"] = home
    model, X = _model()
    work = Path(home) / "peers"
    work.mkdir()
    model_path = work / "model.pkl"
    model_path.write_bytes(pickle.dumps(model))
    rows_json = X[:500].to_dict(orient="records")
    results, servers = [in_process(model, X, args.sequential)], []
    dep = ctr_dep = ctr = None
    try:
        print("deploying with nbdeploy ...", flush=True)
        dep, deploy = deploy_timings(model, X)
        key = {"authorization": f"Bearer {Registry().key('bench')}"}
        row = measure("nbdeploy local endpoint", f"{dep.url}/predict", _bodies("records", rows_json), args, key)
        results.append({**row, "ready_s": deploy["start_s"]})
        # the stable URL (the name's router) against the version's own, then with a shadow of the same model
        stable = measure("nbdeploy stable URL", f"{dep.endpoint_url}/predict", _bodies("records", rows_json), args, key)
        results.append({**stable, "ready_s": deploy["start_s"]})
        shadow = nbdeploy_deploy_shadow(model, X)
        results.append(
            {
                **measure(
                    "nbdeploy stable URL, shadow 100 %",
                    f"{dep.endpoint_url}/predict",
                    _bodies("records", rows_json),
                    args,
                    key,
                ),
                "ready_s": deploy["start_s"],
            }
        )
        shadow.stop()
        print("timing the command line ...", flush=True)
        cli = cli_timings()  # with the deployment above running: `list` probes it
        batch = batch_100k(dep, model, X)
        if not args.no_container:
            print("deploying to the container target ...", flush=True)
            ctr_dep, ctr_row, ctr = container_run(model, X, rows_json, args)
            results.append(ctr_row)
        for batched in (False, True):
            print(f"starting hand-written BentoML (batchable={batched}) ...", flush=True)
            srv = peers.hand_written(model_path, work / ("hw-batched" if batched else "hw"), batched)
            servers.append(srv)
            results.append(
                {
                    **measure(srv.name, f"{srv.url}/predict", _bodies(srv.body, rows_json), args, {}),
                    "ready_s": srv.ready_s,
                }
            )
        if not args.no_mlflow:
            print("starting MLflow models serve (first run installs it into .cache/bench) ...", flush=True)
            srv = peers.mlflow_serve(model_path, work, sklearn.__version__)
            servers.append(srv)
            results.append(
                {
                    **measure(srv.name, f"{srv.url}/invocations", _bodies("mlflow", rows_json), args, {}),
                    "ready_s": srv.ready_s,
                }
            )
    finally:
        for srv in servers:
            srv.stop()
        for d in (dep, ctr_dep):
            if d is not None:
                d.stop()
    print("one-row latency of two more families against hand-written BentoML ...", flush=True)
    families = [family_latency(label, m, X, work, args) for label, m in _families(X).items()]
    print("deploy time: first deploy, redeploy, bentoml serve of the bento (fresh processes) ...", flush=True)
    rounds, imports = deploy_time.run_rounds(1 if args.quick else 3)
    text = report(results, batch, deploy, args, ctr, families) + "\n" + deploy_time.report(rounds, imports) + "\n"
    text += "\n" + cli_report(cli, rows=1)
    text += "\n" + batch_bench.section(200_000 if args.quick else 1_000_000)  # bench/batch.py
    text += "\n" + capture_cost.section()  # capture cost against model size (bench/capture_cost.py)
    text += "\n" + panel_bench.section(10 if args.quick else 20)  # the panel's kernel CPU (bench/panel.py)
    print("\n" + text)
    Path(args.out).write_text(text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
