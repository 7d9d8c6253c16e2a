"""Sustained load with flat memory, and schemathesis fuzzing of the service's OpenAPI: no 5xx."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import schemathesis
from conftest import ROOT, auth
from hypothesis import HealthCheck, given, settings
from sklearn.ensemble import RandomForestClassifier

import nbdeploy
from nbdeploy.targets import _process

sys.path.insert(0, str(ROOT))
from bench import loadgen

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def forest():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, 8)), columns=[f"f{i}" for i in range(8)])
    X["plan"] = rng.choice(["basic", "pro"], len(X))
    y = (X.f0 + X.f1 > 0).astype(int)
    num = X.drop(columns="plan")
    model = RandomForestClassifier(n_estimators=50, random_state=0).fit(num, y)
    dep = nbdeploy.deploy(model, name="loaded", sample=num)
    yield dep, num
    dep.stop()


def test_60_seconds_of_16_clients_without_a_failure_and_flat_memory(forest):
    """Memory is flat once the allocator has warmed up.

    The worker's RSS grows ~5 KB per request over its first ~20k requests and then levels off. tracemalloc in the
    worker shows the Python heap flat over that span (3k -> 6k requests: 143.9 -> 142.9 MB traced), the growth is
    private anonymous memory (smaps_rollup), it is the same with MALLOC_ARENA_MAX=2 and with PYTHONMALLOC=malloc,
    and a hand-written BentoML service shows it too: allocator high-water marks, not a leak. Measured 2026-11-29
    in 30 s windows of continuous load (~14k requests each): 237 -> 252 -> 256 -> 259 -> 260 -> 261 MB. Warm-up
    rounds with pauses between them understate it (they looked calm after 7,500 requests, then 60 s grew 6%), and
    it grows in steps (two calm 15 s windows after 21k requests, then a 22 MB step), so the warm-up is continuous
    load in 15 s windows, for at least 40k requests and until two windows in a row each move RSS by under 0.5%;
    then 60 s of load must keep it within 5% (the early growth rate would add ~20%).
    """
    dep, X = forest
    rows = X.to_dict(orient="records")
    bodies = [json.dumps({"inputs": [r]}).encode() for r in rows[:500]]
    url = f"{dep.url}/predict"
    procs = _process.members(dep._record.pid, dep._record.bento_path)
    start = rss = loadgen.rss_mb(procs)
    warm_requests = calm = 0
    for _ in range(24):  # at most 6 minutes of warm-up
        warm = loadgen.run(url, lambda n: bodies[n % 500], clients=16, seconds=15, headers=auth(dep))
        assert warm.failed == 0
        warm_requests += warm.requests
        rss, previous = loadgen.rss_mb(procs), rss
        calm = calm + 1 if rss - previous < 0.005 * previous else 0
        if calm >= 2 and warm_requests >= 40_000:  # two quiet windows in a row, past the measured level-off
            break
    else:
        pytest.fail(f"service memory still growing after {warm_requests} requests: {start:.0f} -> {rss:.0f} MiB")
    before = loadgen.rss_mb(procs)
    result = loadgen.run(url, lambda n: bodies[n % 500], clients=16, seconds=60, headers=auth(dep))
    after = loadgen.rss_mb(procs)
    print(
        f"\nwarm-up: {warm_requests} requests, service memory {start:.0f} -> {before:.0f} MiB"
        f"\nload: {result.requests} requests in {result.seconds:.0f} s ({result.rps:.0f}/s), "
        f"{result.failed} failed, p50 {result.percentile(50):.1f} ms, p99 {result.percentile(99):.1f} ms, "
        f"service memory {before:.0f} -> {after:.0f} MiB"
    )
    assert result.failed == 0 and result.errors == []
    assert result.requests > 1000
    assert after - before < 0.05 * before, (before, after)


def test_fuzzed_requests_never_get_a_5xx(forest):
    """Every operation of the service's own OpenAPI, fuzzed by schemathesis (driven by hypothesis)."""
    dep, _ = forest
    schema = schemathesis.openapi.from_url(f"{dep.url}/docs.json")
    schema.config.base_url = dep.url  # the service's own loopback address
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/predict", "/feedback"} <= paths, paths
    seen: dict[str, set[int]] = {}
    for operation in operations:

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case) -> None:
            response = case.call(headers=auth(dep))
            seen.setdefault(case.path, set()).add(response.status_code)
            assert response.status_code < 500, (case.path, case.body, response.status_code, response.text[:300])

        check()
    print(f"\nfuzzed: {', '.join(f'{p} -> {sorted(codes)}' for p, codes in sorted(seen.items()))}")
    assert 400 in seen["/predict"]  # the fuzzer did reach the validator
