"""The BentoML service every nbdeploy bento runs. Its name comes from the artifact's metadata."""

from __future__ import annotations

import asyncio
import os
import time
import typing as t
import uuid
from pathlib import Path

import bentoml

from . import guard
from .batcher import Batcher
from .model import Predictor, read_meta
from .recorder import Recorder
from .schema import InputError, count_rows

ARTIFACT_DIR = Path(__file__).resolve().parent.parent / "artifact"
META = read_meta(ARTIFACT_DIR)
# Set for container deployments: a local base image, and no apt step (build-essential, git) in the Dockerfile.
IMAGE = bentoml.images.Image(**META["image"]) if META.get("image") else None
# Where the request log lives; the target sets it (a host folder, mounted into containers).
DATA_DIR = os.environ.get("NBDEPLOY_DATA_DIR") or None
SAMPLE_RATE = float(os.environ.get("NBDEPLOY_RECORD_SAMPLE_RATE", "1.0"))
RETENTION_S = float(os.environ.get("NBDEPLOY_RECORD_RETENTION_DAYS", "7")) * 86400
TIMEOUT_S = float(os.environ.get("NBDEPLOY_TIMEOUT_S", "60"))
MAX_ROWS = int(os.environ.get("NBDEPLOY_MAX_ROWS", "200000"))
BATCH_ROWS = int(os.environ.get("NBDEPLOY_BATCH_ROWS", "2048"))


@bentoml.service(name=META["service_name"], workers=1, traffic={"timeout": TIMEOUT_S}, image=IMAGE)
class NbdeployService:
    def __init__(self) -> None:
        self.predictor = Predictor(ARTIFACT_DIR)
        # batch-mates only for models shown row-independent at capture; others run one request a call
        self.batcher = Batcher(self.predictor.run, max_rows=BATCH_ROWS if self.predictor.batchable else 0)
        self.recorder = Recorder(DATA_DIR, SAMPLE_RATE, RETENTION_S)
        self._dropped_reported = 0
        # Made here, not at import: the SDK imports this module at every build, and Prometheus
        # refuses a second registration of the same name in one process.
        self._dropped_metric = bentoml.metrics.Counter(
            name="nbdeploy_records_dropped", documentation="Request records dropped because the log queue was full"
        )

    def _record(self, rid: str, started: float, status: int, inputs: t.Any, outputs: t.Any, error: str | None) -> None:
        self.recorder.request(rid, (time.perf_counter() - started) * 1000, status, inputs, outputs, error)
        if self.recorder.dropped != self._dropped_reported:
            self._dropped_metric.inc(self.recorder.dropped - self._dropped_reported)
            self._dropped_reported = self.recorder.dropped

    @bentoml.api(route="/predict")
    async def predict(self, inputs: t.Any, ctx: bentoml.Context) -> dict[str, t.Any]:
        started = time.perf_counter()
        rid = uuid.uuid4().hex[:16]
        ctx.response.headers["x-request-id"] = rid
        rows = count_rows(inputs)
        if rows > MAX_ROWS:
            ctx.response.status_code = 413
            error = f"{rows} rows in one request; the limit is {MAX_ROWS}: split the frame into smaller requests"
            self._record(rid, started, 413, None, None, error)
            return {"error": error, "request_id": rid}
        try:
            # large frames are validated off the event loop, so they do not stall small requests
            frame = (
                self.predictor.frame(inputs) if rows <= 1000 else await asyncio.to_thread(self.predictor.frame, inputs)
            )
            predictions = await self.batcher.predict(frame)
        except InputError as exc:
            ctx.response.status_code = 400
            self._record(rid, started, 400, None, None, str(exc))
            return {"error": str(exc), "request_id": rid}
        except Exception as exc:
            self._record(rid, started, 500, None, None, f"{type(exc).__name__}: {exc}")
            raise
        self._record(rid, started, 200, inputs, predictions, None)
        return {"predictions": predictions, "request_id": rid}

    @bentoml.api(route="/feedback")
    def feedback(self, items: list[dict[str, t.Any]], ctx: bentoml.Context) -> dict[str, t.Any]:
        """Ground truth for earlier requests: ``{"items": [{"request_id": ..., "y_true": [...]}]}``."""
        for i, item in enumerate(items):
            if not isinstance(item.get("request_id"), str) or "y_true" not in item:
                ctx.response.status_code = 400
                return {"error": f"item {i}: needs 'request_id' (a string) and 'y_true'"}
        if not self.recorder.enabled:
            ctx.response.status_code = 409
            return {"error": "request recording is off for this deployment, so feedback cannot be joined"}
        self.recorder.feedback([(item["request_id"], item["y_true"]) for item in items])
        return {"accepted": len(items)}


NbdeployService.add_asgi_middleware(guard.from_environment)
