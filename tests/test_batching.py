"""Adaptive batching: only for row-independent models, never mixing answers between requests."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from conftest import notebook

import nbdeploy
from nbdeploy.capture import capture
from nbdeploy.runtime.batcher import Batcher

X = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 3})


def test_row_independence_is_detected_at_capture():
    assert capture(notebook("def f(df):\n    return df['a'] * 2 + df['b']\n")["f"], X).batchable
    assert not capture(notebook("def f(df):\n    return df['a'] - df['a'].mean()\n")["f"], X).batchable


def test_requests_queued_while_the_model_runs_form_one_batch():
    gate = threading.Event()
    calls: list[int] = []

    def predict(frame: pd.DataFrame) -> list[float]:
        calls.append(len(frame))
        gate.wait(5)
        return (frame["a"] * 10).tolist()

    async def scenario() -> list[list[float]]:
        batcher = Batcher(predict, max_rows=100)
        first = asyncio.ensure_future(batcher.predict(X[:1]))
        while not calls:  # the first request is with the model
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(batcher.predict(X[i : i + 2].reset_index(drop=True))) for i in range(1, 9, 2)]
        await asyncio.sleep(0.01)
        gate.set()
        out = await asyncio.gather(first, *rest)
        assert (batcher.batches, batcher.requests) == (2, 5)
        return out

    out = asyncio.run(scenario())
    assert calls == [1, 8]
    assert out == [[0.0], [10.0, 20.0], [30.0, 40.0], [50.0, 60.0], [70.0, 80.0]]


def test_a_bad_request_in_a_batch_fails_alone():
    def predict(frame: pd.DataFrame) -> list[float]:
        if (frame["a"] < 0).any():
            raise ValueError("negative")
        return frame["a"].tolist()

    async def scenario() -> list[object]:
        batcher = Batcher(predict)
        frames = [pd.DataFrame({"a": [1.0]}), pd.DataFrame({"a": [-1.0]}), pd.DataFrame({"a": [2.0]})]
        return await asyncio.gather(*(batcher.predict(f) for f in frames), return_exceptions=True)

    ok1, bad, ok2 = asyncio.run(scenario())
    assert ok1 == [1.0] and ok2 == [2.0] and isinstance(bad, ValueError)


@pytest.mark.slow
def test_concurrent_requests_to_a_non_batchable_model_are_never_mixed():
    ns = notebook("def f(df):\n    return df['a'] - df['a'].mean()\n")
    dep = nbdeploy.deploy(ns["f"], name="centered", sample=X)
    try:
        frames = [pd.DataFrame({"a": np.arange(5.0) * (k + 1)}) for k in range(24)]
        frames = [f.assign(b=0.0) for f in frames]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda f: nbdeploy.get("centered").predict(f), frames))
        for frame, got in zip(frames, results, strict=True):
            np.testing.assert_array_equal(got, ns["f"](frame).to_numpy())
    finally:
        dep.stop()
