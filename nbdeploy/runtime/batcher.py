"""Adaptive batching: requests that arrive while the model is busy are predicted together.

No request waits for a batch to fill: the first one runs at once, and whatever queued up in the
meantime forms the next batch. Under light load that is one request per call (no added latency);
under heavy load the per-call overhead of the model (a RandomForest pays ~2 ms whatever the rows)
is shared. Only used for models whose predictions were shown not to depend on their batch-mates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

Frame = pd.DataFrame | np.ndarray


def _concat(frames: list[Frame]) -> Frame:
    if len(frames) == 1:
        return frames[0]
    if isinstance(frames[0], np.ndarray):
        return np.concatenate(frames)
    return pd.concat([f for f in frames if isinstance(f, pd.DataFrame)], ignore_index=True)


class Batcher:
    def __init__(self, predict: Callable[[Frame], list[Any]], max_rows: int = 2048) -> None:
        self._predict = predict
        self.max_rows = max_rows
        self._pending: list[tuple[Frame, asyncio.Future[list[Any]]]] = []
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="nbdeploy-predict")
        self.batches = 0  # model calls, and the requests they served: requests / batches = mean batch
        self.requests = 0
        #: When the model call now running began (monotonic), None when idle: the watchdog reads it.
        self.busy_since: float | None = None

    async def predict(self, frame: Frame) -> list[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append((frame, future))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[Frame, asyncio.Future[list[Any]]]]:
        batch: list[tuple[Frame, asyncio.Future[list[Any]]]] = []
        rows = 0
        while self._pending and (not batch or rows + len(self._pending[0][0]) <= self.max_rows):
            item = self._pending.pop(0)
            batch.append(item)
            rows += len(item[0])
        return batch

    def _timed(self, frame: Frame) -> list[Any]:
        self.busy_since = time.monotonic()
        try:
            return self._predict(frame)
        finally:
            self.busy_since = None

    async def _call(self, frame: Frame) -> list[Any]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._timed, frame)

    async def _run(self, frames: list[Frame]) -> list[list[Any] | Exception]:
        try:
            return list(_split(await self._call(_concat(frames)), [len(f) for f in frames]))
        except Exception as exc:
            if len(frames) == 1:
                return [exc]
        results: list[list[Any] | Exception] = []  # a failing batch: one by one, so only the bad one fails
        for frame in frames:
            try:
                results.append(await self._call(frame))
            except Exception as exc:
                results.append(exc)
        return results

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._take()
                results = await self._run([f for f, _ in batch])
                self.batches += 1
                self.requests += len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._task = None  # no await after the loop's last check: nothing can slip in unserved


def _split(out: list[Any], sizes: list[int]) -> list[list[Any]]:
    if len(out) != sum(sizes):
        raise RuntimeError(f"the model returned {len(out)} predictions for {sum(sizes)} rows")
    parts, start = [], 0
    for n in sizes:
        parts.append(out[start : start + n])
        start += n
    return parts
