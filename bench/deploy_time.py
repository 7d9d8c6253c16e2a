"""Where the seconds of a deploy go (issue #20 part 3): first deploy, redeploy, and plain ``bentoml serve``.

    python bench/deploy_time.py              # 3 rounds, median; ~2 min on 2 cores
    python bench/deploy_time.py --rounds 1
    python bench/deploy_time.py --json out.json

Each round runs in a fresh Python process (``--one-round``), as a new notebook kernel would: nothing of
BentoML is imported yet, and a fresh ``NBDEPLOY_HOME`` and ``BENTOML_HOME`` (temporary folders) hold all state.
In the round, with a RandomForest (100 trees) fitted on 5,000 churn-like rows:

1. ``nbdeploy.deploy(...)`` on the empty home → first successful ``dep.predict``, split by the stages that
   ``dep.info()["timings"]`` records (what happens outside a stage is "unstaged");
2. the same model retrained (same requirements) deployed again under the same name → first prediction;
3. with both stopped, ``bentoml serve <the v1 bento nbdeploy built>`` spawned by hand on a free port, as the
   local target does (same environment variables) → ``/readyz`` answers 200; and the hand-written BentoML
   peer of ``bench/peers.py`` (a ``service.py`` with the pickled model, no bento) → ``/readyz`` 200;
4. ``python -c "import bentoml"`` and ``python -c "import sklearn"``, for reference.

Targets: (a) first deploy to first prediction ≤ 1.3× the ``bentoml serve`` ready time of the same run;
(b) the redeploy ≤ 0.5× the first deploy. Every process started is stopped by its PID, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ROWS = 5000
TARGET_FIRST = 1.3  # first deploy ≤ 1.3 × bentoml serve ready
TARGET_REDEPLOY = 0.5  # redeploy ≤ 0.5 × first deploy


def churn(n: int = ROWS, seed: int = 42) -> tuple[Any, Any]:
    """Churn-like rows (as tests/conftest.py's maker, with the plan as a category code, and more of them)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "monthly": rng.normal(70, 20, n).round(2),
            "support_calls": rng.poisson(2, n),
            "plan": rng.integers(0, 3, n),
            "age": rng.integers(18, 90, n),
            "paperless": rng.integers(0, 2, n),
        }
    )
    y = ((X.support_calls > 2) & (X.tenure < 24) | (X.monthly > 95)).astype(int)
    return X, y


def fit(X: Any, y: Any, seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1).fit(X, y)


def _timed_cmd(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def import_times(env: dict[str, str], runs: int = 3) -> dict[str, float]:
    """Median wall time of a fresh interpreter importing each module (interpreter start-up included)."""
    out = {}
    cases = (
        ("python", "pass"),
        ("bentoml", "import bentoml"),  # lazy: the SDK loads on first use
        ("bentoml_sdk", "import bentoml, _bentoml_sdk"),  # what importing a service loads
        ("pandas", "import pandas"),
        ("sklearn", "import sklearn.ensemble"),  # what unpickling the forest loads
    )
    for label, code in cases:
        _timed_cmd([sys.executable, "-c", code], env)  # warm the OS file cache
        out[f"import_{label}_s"] = statistics.median(_timed_cmd([sys.executable, "-c", code], env) for _ in range(runs))
    return out


#: Lines of BentoML's log that mark the phases of ``bentoml serve`` (the first match of each counts).
SERVE_PHASES = (
    ("arbiter_s", "Starting production"),  # python start, bentoml CLI, the service imported in the arbiter
    ("worker_loaded_s", "[:1] Service loaded"),  # the worker process started and imported the service
    ("initialized_s", "initialized"),  # the service's __init__ ran: the model unpickled (its imports)
)


def serve_bento(bento_path: str, workdir: Path, service_env: dict[str, str]) -> dict[str, float]:
    """``bentoml serve`` of a built bento, spawned as the local target does → /readyz 200; stopped by PID.

    Returns the ready time and when each of ``SERVE_PHASES`` appeared in its log (stamped here, in ms)."""
    import threading

    from bench.peers import _wait
    from nbdeploy.package import bento_env
    from nbdeploy.targets import _process

    workdir.mkdir(parents=True, exist_ok=True)
    port = _process.free_port()
    cmd = [sys.executable, "-m", "bentoml", "serve", bento_path, "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, **bento_env(), "BENTOML_HOME": str(workdir / "bentoml"), **service_env}
    phases: dict[str, float] = {}
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=workdir,
        start_new_session=True,
    )  # fmt: skip

    def stamp() -> None:
        with open(workdir / "serve.log", "wb") as log:
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                for key, text in SERVE_PHASES:
                    if key not in phases and text.encode() in line:
                        phases[key] = time.perf_counter() - started

    reader = threading.Thread(target=stamp, daemon=True)
    reader.start()
    try:
        _wait(f"http://127.0.0.1:{port}", "/readyz", proc.pid, bento_path, deadline_s=120)
        ready = time.perf_counter() - started
    finally:
        _process.stop_group(proc.pid, bento_path)  # its process group, and workers naming this (temporary) bento
        proc.wait(10)
        reader.join(5)
    return {"ready_s": ready, **phases}


def hand_written_ready(model: Any, workdir: Path) -> float:
    """The hand-written BentoML peer of bench/peers.py (a service.py with the pickled model, no bento) → /readyz
    200; stopped by PID (its process tree), also when it fails to start."""
    import pickle

    from bench.peers import HAND_WRITTEN, _wait
    from nbdeploy.targets import _process

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "service.py").write_text(HAND_WRITTEN)
    (workdir / "model.pkl").write_bytes(pickle.dumps(model))
    port = _process.free_port()
    cmd = [sys.executable, "-m", "bentoml", "serve", "service:HandWritten", "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(workdir / "home")}
    started = time.perf_counter()
    pid = _process.spawn(cmd, workdir / "HandWritten.log", env, cwd=workdir)
    try:
        _wait(f"http://127.0.0.1:{port}", "/readyz", pid, "service:HandWritten")
        return time.perf_counter() - started
    finally:
        _process.stop_tree(pid)


def one_round(out: Path) -> None:
    """One round in this (fresh) process; writes its figures to ``out`` as JSON."""
    home = Path(tempfile.mkdtemp(prefix="nbdeploy-deploytime-"))
    os.environ["NBDEPLOY_HOME"] = str(home / "nbdeploy")
    os.environ["BENTOML_HOME"] = str(home / "bentoml")  # BentoML's default home stays untouched
    os.environ.setdefault("NBDEPLOY_PROGRESS", "0")
    X, y = churn()
    model_v1, model_v2 = fit(X, y, seed=0), fit(X, y, seed=1)
    import nbdeploy

    res: dict[str, Any] = {"home": str(home)}
    deps: list[Any] = []
    try:
        # -- 1. first deploy on a fresh home; 2. redeploy: the model retrained, same requirements ----------------
        for label, model in (("first", model_v1), ("redeploy", model_v2)):
            t0 = time.perf_counter()
            dep = nbdeploy.deploy(model, name="churn", sample=X)
            deps.append(dep)
            t_deployed = time.perf_counter()
            assert (dep.predict(X[:1]) == model.predict(X[:1])).all()
            t_first = time.perf_counter()
            info = dep.info()
            res[label] = {
                "total_s": t_first - t0,
                "deploy_call_s": t_deployed - t0,
                "first_predict_s": t_first - t_deployed,
                **info["timings"],
            }
            res.setdefault("requirements", []).append(info["requirements"])
        assert res["requirements"][0] == res["requirements"][1], "the retrained model changed the requirements"
        dep2 = deps[-1]
        dep2.stop()  # the live version: takes the router (and anything left of v1) with it
        deps.clear()
        # -- 3. bentoml serve of the v1 bento, spawned by hand; the hand-written peer ----------------------------
        from nbdeploy.registry import Registry
        from nbdeploy.targets.base import service_env

        rec1 = Registry().get("churn", 1)
        senv = service_env(rec1, str(Path(os.environ["NBDEPLOY_HOME"]) / "deployments" / "churn"))
        res["serve"] = serve_bento(str(rec1.bento_path), home / "serve", senv)
        res["bentoml_serve_ready_s"] = res["serve"]["ready_s"]
        res["hand_written_ready_s"] = hand_written_ready(model_v1, home / "peer")
    finally:
        for dep in reversed(deps):
            try:
                if dep.status() in {"running", "degraded"}:
                    dep.stop()
            except Exception as exc:  # keep stopping the others
                print(f"stopping {dep.name} v{dep.version} failed: {exc}", file=sys.stderr)
        _sweep(home)
    out.write_text(json.dumps(res))


def _sweep(home: Path) -> None:
    """Anything still running under this round's home (router, server, workers): stopped by PID."""
    import signal

    from nbdeploy.targets._process import members

    for pid in members(0, str(home)):
        try:
            os.kill(pid, signal.SIGKILL)
            print(f"killed leftover process {pid}", file=sys.stderr)
        except OSError:
            pass


def _median(rounds: list[dict[str, Any]], *path: str) -> float:
    values = []
    for r in rounds:
        v: Any = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            values.append(float(v))
    return statistics.median(values) if values else float("nan")


def _stages(rounds: list[dict[str, Any]]) -> list[str]:
    """The stage timings the deploys recorded (``dep.info()["timings"]``), in the order they ran."""
    seen: dict[str, None] = {}
    for r in rounds:
        for kind in ("first", "redeploy"):
            for key in r.get(kind, {}):
                if key not in {"total_s", "deploy_call_s", "first_predict_s"}:
                    seen[key] = None
    return list(seen)


def report(rounds: list[dict[str, Any]], imports: dict[str, float]) -> str:
    def m(*path: str) -> float:
        return _median(rounds, *path)

    serve, hand = m("bentoml_serve_ready_s"), m("hand_written_ready_s")
    first, redeploy = m("first", "total_s"), m("redeploy", "total_s")
    stages = _stages(rounds)
    lines = [
        f"## Deploy time (bench/deploy_time.py, median of {len(rounds)} round(s), {os.cpu_count()} cores)",
        "",
        "| step | first deploy (s) | redeploy, same requirements (s) |",
        "|---|---|---|",
    ]
    for stage in stages:
        label = stage.removesuffix("_s").replace("_", " ")
        lines.append(f"| {label} | {m('first', stage):.2f} | {m('redeploy', stage):.2f} |")
    unstaged = [
        m(k, "deploy_call_s") - sum(m(k, s) for s in stages if s in rounds[0][k]) for k in ("first", "redeploy")
    ]
    imp = {k.removeprefix("import_").removesuffix("_s"): v for k, v in imports.items()}
    ok_first, ok_re = first / serve <= TARGET_FIRST, redeploy / first <= TARGET_REDEPLOY
    lines += [
        f"| unstaged (nbdeploy._api import, key, reference rows, registry) | {unstaged[0]:.2f} | {unstaged[1]:.2f} |",
        f"| deploy() call | {m('first', 'deploy_call_s'):.2f} | {m('redeploy', 'deploy_call_s'):.2f} |",
        f"| first dep.predict | {m('first', 'first_predict_s'):.2f} | {m('redeploy', 'first_predict_s'):.2f} |",
        f"| **call → first prediction** | **{first:.2f}** | **{redeploy:.2f}** |",
        f"| … minus `bentoml serve` ready (nbdeploy's own overhead) | {first - serve:.2f} | {redeploy - serve:.2f} |",
        "",
        "| reference | seconds |",
        "|---|---|",
        f"| `bentoml serve <nbdeploy's v1 bento>` → /readyz 200 | {serve:.2f} |",
        f"| … arbiter up: python, CLI, service imported ('Starting production') | {m('serve', 'arbiter_s'):.2f} |",
        f"| … worker spawned, service imported ('[:1] Service loaded') | {m('serve', 'worker_loaded_s'):.2f} |",
        f"| … model unpickled, sklearn imported ('initialized') | {m('serve', 'initialized_s'):.2f} |",
        f"| hand-written BentoML service (bench/peers.py) → /readyz 200 | {hand:.2f} |",
        f"| `python -c pass` | {imp['python']:.2f} |",
        f"| `python -c 'import bentoml'` (lazy) | {imp['bentoml']:.2f} |",
        f"| `python -c 'import bentoml, _bentoml_sdk'` | {imp['bentoml_sdk']:.2f} |",
        f"| `python -c 'import pandas'` | {imp['pandas']:.2f} |",
        f"| `python -c 'import sklearn.ensemble'` | {imp['sklearn']:.2f} |",
        "",
        "| goal | target | measured | |",
        "|---|---|---|---|",
        f"| first deploy / bentoml serve ready | ≤ {TARGET_FIRST}× | {first / serve:.2f}× "
        f"({first:.1f} / {serve:.1f} s) | {'met' if ok_first else 'missed'} |",
        f"| redeploy / first deploy | ≤ {TARGET_REDEPLOY}× | {redeploy / first:.2f}× "
        f"({redeploy:.1f} / {first:.1f} s) | {'met' if ok_re else 'missed'} |",
        f"| first deploy / hand-written peer ready | (info) | {first / hand:.2f}× | |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write every round's figures here")
    ap.add_argument("--keep", action="store_true", help="keep each round's temporary home (logs, bentos)")
    ap.add_argument("--one-round", metavar="OUT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one_round:
        one_round(Path(args.one_round))
        return 0
    rounds, imports = run_rounds(args.rounds, args.keep)
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rounds, "imports": imports}, indent=1))
    print("\n" + report(rounds, imports))
    return 0


def run_rounds(n: int, keep: bool = False) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """``n`` rounds, each in a fresh process (nothing imported yet, as in a new kernel; it stops what it starts),
    and the reference import times."""
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True"}
    rounds = []
    with tempfile.TemporaryDirectory(prefix="nbdeploy-deploytime-out-") as tmp:
        for i in range(n):
            out = Path(tmp) / f"round{i}.json"
            started = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--one-round", str(out)], check=True, env=env)
            rounds.append(json.loads(out.read_text()))
            r = rounds[-1]
            if not keep:
                shutil.rmtree(r["home"], ignore_errors=True)
            print(
                f"round {i + 1}: first {r['first']['total_s']:.2f} s, redeploy {r['redeploy']['total_s']:.2f} s, "
                f"bentoml serve {r['bentoml_serve_ready_s']:.2f} s, hand-written {r['hand_written_ready_s']:.2f} s "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    return rounds, import_times(env)


if __name__ == "__main__":
    raise SystemExit(main())
