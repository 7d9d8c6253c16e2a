"""The throughput cost of the request log: one model deployed twice, recording on and off, 8 clients.

    python bench/recording.py [--seconds 10] [--rounds 3]

Runs alternate (on, off, on, off, ...) so machine load hits both alike; the table gives each round
and the median cost. Target (issue 5): under 5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args(argv)
    os.environ["NBDEPLOY_HOME"] = tempfile.mkdtemp(prefix="nbdeploy-bench-rec-")

    from sklearn.ensemble import RandomForestClassifier

    import nbdeploy
    from nbdeploy.registry import Registry

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(5000, 8)), columns=[f"f{i}" for i in range(8)])
    model = RandomForestClassifier(n_estimators=50, random_state=0).fit(X, (X.f0 > 0).astype(int))
    on = nbdeploy.deploy(model, name="rec-on", sample=X)
    off = nbdeploy.deploy(model, name="rec-off", sample=X, limits={"record_sample_rate": 0})
    bodies = [json.dumps({"inputs": [r]}).encode() for r in X[:500].to_dict(orient="records")]
    rows = []
    try:
        for dep in (on, off):  # warm-up
            loadgen.run(f"{dep.url}/predict", bodies[0], clients=args.clients, seconds=2,
                        headers={"authorization": f"Bearer {Registry().key(dep.name)}"})  # fmt: skip
        for i in range(args.rounds):
            rates = {}
            for dep in (on, off) if i % 2 == 0 else (off, on):
                res = loadgen.run(
                    f"{dep.url}/predict",
                    lambda n: bodies[n % len(bodies)],
                    clients=args.clients,
                    seconds=args.seconds,
                    headers={"authorization": f"Bearer {Registry().key(dep.name)}"},
                )
                assert res.failed == 0, res.statuses
                rates[dep.name] = res.rps
            rows.append((rates["rec-on"], rates["rec-off"], 1 - rates["rec-on"] / rates["rec-off"]))
        recorded = len(on.requests())
    finally:
        on.stop()
        off.stop()
    print("| round | recording on (rps) | recording off (rps) | cost |\n|---|---|---|---|")
    for i, (a, b, cost) in enumerate(rows, 1):
        print(f"| {i} | {a:.0f} | {b:.0f} | {cost:+.1%} |")
    print(f"\nmedian cost at {args.clients} clients: {statistics.median(r[2] for r in rows):+.1%} "
          f"({recorded} requests recorded by the 'on' deployment)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
