"""The main job: train a model, deploy it locally with nbdeploy, and print a prediction from the endpoint.

Run with ``bash scripts/demo.sh`` (sets up the environment first) or ``python examples/deploy_churn.py``.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier

import nbdeploy


def main() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, 2000),
            "monthly": rng.normal(70, 20, 2000).round(2),
            "support_calls": rng.poisson(2, 2000),
        }
    )
    y = ((X.support_calls > 2) & (X.tenure < 24) | (X.monthly > 95)).astype(int)
    model = RandomForestClassifier(n_estimators=50, random_state=0).fit(X[:1500], y[:1500])

    started = time.perf_counter()
    dep = nbdeploy.deploy(model, name="churn-demo", sample=X[:1500])
    try:
        row = X[1500:1501]
        remote = dep.predict(row)
        ready_s = time.perf_counter() - started
        same = bool((dep.predict(X[1500:]) == model.predict(X[1500:])).all())
        print(f"deployed {dep.name} v{dep.version} at {dep.url} in {ready_s:.1f} s (deploy call to first prediction)")
        print(f"input:  {json.dumps(row.to_dict(orient='records')[0])}")
        print(f"prediction from the endpoint: {remote.tolist()}  (in the notebook: {model.predict(row).tolist()})")
        print(f"endpoint == in-process on {len(X) - 1500} rows: {same}")
        print(dep.curl())
        if not same:
            raise SystemExit("the endpoint's predictions differ from the session's")
    finally:
        dep.stop()
        print(f"stopped; status: {dep.status()}")


if __name__ == "__main__":
    main()
