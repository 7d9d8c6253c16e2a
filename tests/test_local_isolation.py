"""Two local services side by side keep their own metrics: ``bentoml serve`` empties its home's Prometheus folder
at start, so a shared home made one service's /metrics show (and lose) another's counts."""

from __future__ import annotations

import httpx
import pandas as pd
import pytest
from conftest import notebook

import nbdeploy

pytestmark = pytest.mark.slow


def test_each_local_service_counts_only_its_own_requests(stop_after):
    X = pd.DataFrame({"a": [1.0, 2.0]})
    f = notebook("def f(df):\n    return df['a'] * 2\n")["f"]
    first = nbdeploy.deploy(f, name="metrics-first", sample=X)
    stop_after(first)
    for _ in range(3):
        first.predict(X)
    before = httpx.get(f"{first.url}/metrics", trust_env=False, timeout=10).text
    second = nbdeploy.deploy(f, name="metrics-second", sample=X, force=True)
    stop_after(second)
    for _ in range(5):
        second.predict(X)
    after = httpx.get(f"{first.url}/metrics", trust_env=False, timeout=10).text
    theirs = httpx.get(f"{second.url}/metrics", trust_env=False, timeout=10).text
    assert _count(before) == 3 and _count(after) == 3, "the first service lost or gained counts"
    assert _count(theirs) == 5


def _count(text: str) -> float:
    """Requests to /predict with status 200, from BentoML's request counter."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("bentoml_service_request_total{") and 'endpoint="/predict"' in line and '"200"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total
