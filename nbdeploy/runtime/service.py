"""The BentoML service every nbdeploy bento runs. Its name comes from the artifact's metadata."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import typing as t
from pathlib import Path

import bentoml
import pandas as pd
from pydantic_core import to_json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import docs, feedback, frames, guard, metric_paths
from .batcher import Batcher
from .model import ANSWER_KEYS, SCORE_METHODS, Predictor, read_meta
from .recorder import Recorder
from .redact import Redactor
from .schema import InputError, arrays_to_model_input, count_rows, input_warning, names_warning
from .watchdog import Watchdog
from .workers import Started, workers

ARTIFACT_DIR = Path(__file__).resolve().parent.parent / "artifact"
META = read_meta(ARTIFACT_DIR)
# Set for container deployments: a local base image, and no apt step (build-essential, git) in the Dockerfile.
IMAGE = bentoml.images.Image(**META["image"]) if META.get("image") else None
# Where the request log lives; the target sets it (a host folder, mounted into containers).
DATA_DIR = os.environ.get("NBDEPLOY_DATA_DIR") or None
SAMPLE_RATE = float(os.environ.get("NBDEPLOY_RECORD_SAMPLE_RATE", "1.0"))
RETENTION_S = float(os.environ.get("NBDEPLOY_RECORD_RETENTION_DAYS", "7")) * 86400
TIMEOUT_S = float(os.environ.get("NBDEPLOY_TIMEOUT_S", "60"))
# A model call still running this long after it began is wedged: the worker exits and BentoML's arbiter starts a
# fresh one (its caller had its 504 long ago; everything queued behind it would only time out too).
RECYCLE_AFTER_S = float(os.environ.get("NBDEPLOY_RECYCLE_AFTER_S") or 1.5 * TIMEOUT_S)
MAX_ROWS = int(os.environ.get("NBDEPLOY_MAX_ROWS", "200000"))
MAX_BODY_BYTES = int(os.environ.get("NBDEPLOY_MAX_BODY_BYTES", str(128 * 1024 * 1024)))
#: Answered requests remembered for /feedback (id -> rows); older ones are looked up in the request log.
ANSWERED_KEPT = 4096
MAX_FEEDBACK_ITEMS = 10_000
BATCH_ROWS = int(os.environ.get("NBDEPLOY_BATCH_ROWS", "2048"))
# Off by default: BentoML's access log writes a line per request (a tenth of a one-row request's CPU here);
# the request log (dep.requests()) has every request already.
ACCESS_LOG = os.environ.get("NBDEPLOY_ACCESS_LOG", "") == "1"
WORKERS = workers()
# Request ids: a random prefix per worker process plus a counter (uuid4 costs a getrandom call per request).
_ID_PREFIX = os.urandom(4).hex()  # with the counter: 16 hex digits, as before
_IDS = itertools.count()


def _request_id() -> str:
    return f"{_ID_PREFIX}{next(_IDS):08x}"


def _json(answer: dict[str, t.Any]) -> Response:
    """The answer as a ready response: BentoML would otherwise derive the media type from a JSON schema per call."""
    return Response(to_json(answer), media_type="application/json")


#: The JSON routes of the score methods. They are ``/predict`` with another model method: a front middleware
#: (``_score_routes``) hands them to ``/predict`` marked with the method, so the guard (key, size, JSON, parsing
#: large bodies off the loop), validation, limits and the request log treat them as ``/predict`` by construction.
SCORE_ROUTES = {f"/{m}": m for m in SCORE_METHODS}
METHOD = "nbdeploy.method"  # the scope key carrying the asked method to the /predict handler


def _score_routes(app: t.Any) -> t.Any:
    async def routed(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        method = SCORE_ROUTES.get(scope.get("path", "")) if scope.get("type") == "http" else None
        if method is not None:
            scope = {**scope, "path": "/predict", "raw_path": b"/predict", METHOD: method}
        await app(scope, receive, send)

    return routed


def _npz_route(method: str) -> t.Callable[[Request], t.Awaitable[Response]]:
    async def route(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != frames.MEDIA_TYPE:
            error = {"error": f"send the frame as {frames.MEDIA_TYPE} (numpy.savez), or JSON to /{method}"}
            return Response(to_json(error), status_code=415, media_type="application/json")
        service = bentoml.get_current_service()
        status, rid, answer = await service.predict_npz(await request.body(), method)
        response = _json(answer)
        response.status_code = status
        response.headers["x-request-id"] = rid
        return response

    return route


_FRAME_ROUTES = {f"{frames.MOUNT}/{m}": m for m in ("predict", *SCORE_METHODS)}  # frames.ROUTE is the first
metric_paths.install(
    {"/predict", "/feedback", *SCORE_ROUTES, *_FRAME_ROUTES, "/docs", *guard.OPEN}, guard.OPEN_PREFIXES
)

# Large frames as NumPy .npz bodies (runtime/frames.py): behind the same guard (keys, size limits) as /predict.
_FRAME_APP = Starlette(
    routes=[
        Route(path.removeprefix(frames.MOUNT), _npz_route(m), methods=["POST"]) for path, m in _FRAME_ROUTES.items()
    ]
)


@bentoml.asgi_app(_FRAME_APP, path=frames.MOUNT)
@bentoml.service(
    name=META["service_name"],
    workers=WORKERS,
    traffic={"timeout": TIMEOUT_S},
    image=IMAGE,
    logging={"access": {"enabled": ACCESS_LOG}},
)
class NbdeployService:
    def __init__(self) -> None:
        # Here, not at import (the SDK imports this module to build): the request log holds users' inputs, so
        # the worker's files are owner-only (a rootless container's target relaxes it).
        os.umask(int(os.environ.get("NBDEPLOY_UMASK", "077"), 8))
        self.predictor = Predictor(ARTIFACT_DIR)
        # batch-mates only for models shown row-independent at capture; others run one request a call. One batcher
        # per method: a batch is one model call.
        rows = BATCH_ROWS if self.predictor.batchable else 0
        self.batchers = {m: Batcher(self.predictor.runner(m), max_rows=rows) for m in self.predictor.methods}
        self.batcher = self.batchers["predict"]
        self.recorder = Recorder(DATA_DIR, SAMPLE_RATE, RETENTION_S, redactor=Redactor.from_environment())
        self.answered = feedback.Answered(
            self.recorder.path, ANSWERED_KEPT, lambda: self.recorder.flush(2.0), others_s=2.0 if WORKERS > 1 else 0.0
        )
        self.frame_limits = frames.Limits(MAX_ROWS, self.predictor.width, MAX_BODY_BYTES)
        self.watchdog = Watchdog(self._busy_since, TIMEOUT_S, RECYCLE_AFTER_S, lambda: self.recorder.flush(1.0)).start()
        self._dropped_reported = 0
        self.started = Started(WORKERS)
        self.started.add()
        # Made here, not at import: the SDK imports this module at every build, and Prometheus
        # refuses a second registration of the same name in one process.
        self._dropped_metric = bentoml.metrics.Counter(
            name="nbdeploy_records_dropped", documentation="Request records dropped because the log queue was full"
        )

    def _busy_since(self) -> float | None:
        """When the oldest model call now running began (the watchdog's clock), over every method."""
        return min((b.busy_since for b in self.batchers.values() if b.busy_since is not None), default=None)

    async def __is_ready__(self) -> bool:
        """Not ready until every worker has loaded the model (``workers.Started``), nor while a model call is stuck
        past the request timeout (the watchdog recycles the worker)."""
        return not self.watchdog.degraded and self.started.all_up()

    def _record(
        self,
        rid: str,
        started: float,
        status: int,
        inputs: t.Any,
        outputs: t.Any,
        error: str | None,
        scores: dict[str, t.Any] | None = None,
    ) -> None:
        self.recorder.request(rid, (time.perf_counter() - started) * 1000, status, inputs, outputs, error, scores)
        if self.recorder.dropped != self._dropped_reported:
            self._dropped_metric.inc(self.recorder.dropped - self._dropped_reported)
            self._dropped_reported = self.recorder.dropped

    @bentoml.api(route="/predict")
    async def predict(self, inputs: t.Any, ctx: bentoml.Context) -> dict[str, t.Any]:
        """Predictions; also ``POST /predict_proba`` and ``/decision_function`` (see ``SCORE_ROUTES``), which answer
        ``{"probabilities" | "scores": [...], "classes": [...]}``."""
        started = time.perf_counter()
        rid = _request_id()
        ctx.response.headers["x-request-id"] = rid
        method = ctx.request.scope.get(METHOD, "predict")
        parsed = ctx.request.scope.get(guard.PARSED)  # a large body, parsed off the event loop by the guard
        if parsed is not None:
            inputs = parsed["inputs"]
        rows = count_rows(inputs)
        # large requests are validated off the event loop, so they do not stall small ones (nor /livez)
        status, answer = await self._answer(
            rid,
            started,
            rows,
            inputs,
            lambda: self.predictor.frame(inputs),
            off_loop=parsed is not None or rows > 1000,
            method=method,
            warning=input_warning(inputs, self.predictor.schema),
        )
        ctx.response.status_code = status
        return _json(answer)  # type: ignore[return-value]  # the annotation documents the body in /docs.json

    async def predict_npz(self, body: bytes, method: str = "predict") -> tuple[int, str, dict[str, t.Any]]:
        """``POST /frame/<method>``: an ``.npz`` frame (``frames``), decoded and checked off the event loop."""
        started = time.perf_counter()
        rid = _request_id()
        if method not in self.predictor.methods:  # before decoding a body that cannot be answered
            return self._missing(rid, started, method)
        try:
            names, arrays = await asyncio.to_thread(frames.decode, body, self.frame_limits)
        except frames.FrameError as exc:
            self._record(rid, started, exc.status, None, None, str(exc))
            return exc.status, rid, {"error": str(exc), "request_id": rid}
        raw = pd.DataFrame(dict(zip(names, arrays, strict=True)), copy=False)  # what was sent, for the log
        schema = self.predictor.schema
        status, answer = await self._answer(
            rid,
            started,
            len(raw),
            raw,
            lambda: arrays_to_model_input(names, arrays, schema),
            True,
            method,
            warning=names_warning(names, schema),
        )
        return status, rid, answer

    def _missing(self, rid: str, started: float, method: str) -> tuple[int, str, dict[str, t.Any]]:
        """404 for a method the model does not have, naming what it has."""
        error = self.predictor.missing(method)
        self._record(rid, started, 404, None, None, error)
        return 404, rid, {"error": error, "methods": self.predictor.methods, "request_id": rid}

    async def _answer(
        self,
        rid: str,
        started: float,
        rows: int,
        inputs: t.Any,
        make_frame: t.Callable[[], t.Any],
        off_loop: bool,
        method: str = "predict",
        warning: str | None = None,
    ) -> tuple[int, dict[str, t.Any]]:
        """Status and body for one request to ``method``; every outcome is recorded once. ``warning``: said with
        the answer (named columns taken by position)."""
        if method not in self.predictor.methods:
            status, _, answer = self._missing(rid, started, method)
            return status, answer
        if rows > MAX_ROWS:
            error = f"{rows} rows in one request; the limit is {MAX_ROWS}: split the frame into smaller requests"
            self._record(rid, started, 413, None, None, error)
            return 413, {"error": error, "request_id": rid}
        try:
            frame = await asyncio.to_thread(make_frame) if off_loop else make_frame()
            values = await self.batchers[method].predict(frame)
        except InputError as exc:
            self._record(rid, started, 400, inputs, None, str(exc))  # kept: what was refused, to debug it
            return 400, {"error": str(exc), "request_id": rid}
        except ValueError as exc:
            # values the schema allows but the model cannot use (scikit-learn refuses 3.4e38 once cast to float32):
            # the caller's input, said in the model's words, not a server fault
            error = f"the model could not use this input: {type(exc).__name__}: {str(exc)[:300]}"
            self._record(rid, started, 422, inputs, None, error)
            return 422, {"error": error, "request_id": rid}
        except Exception as exc:
            self._record(rid, started, 500, None, None, f"{type(exc).__name__}: {exc}")
            raise
        self.answered.remember(rid, len(values))
        said = {"warning": warning} if warning else {}
        if method == "predict":
            self._record(rid, started, 200, inputs, values, None)
            return 200, {"predictions": values, "request_id": rid, **said}
        classes = self.predictor.classes
        self._record(rid, started, 200, inputs, None, None, {"method": method, "classes": classes, "values": values})
        return 200, {ANSWER_KEYS[method]: values, "classes": classes, "request_id": rid, **said}

    @bentoml.api(route="/feedback")
    def feedback(self, items: list[dict[str, t.Any]], ctx: bentoml.Context) -> dict[str, t.Any]:
        """Ground truth for earlier requests: ``{"items": [{"request_id": ..., "y_true": [...]}]}``, one label
        per row of an answered request; the whole call is refused (400, naming the item) if one item is wrong."""
        if not self.recorder.enabled:
            ctx.response.status_code = 409
            return {"error": "request recording is off for this deployment, so feedback cannot be joined"}
        try:
            accepted = feedback.checked(items, self.answered, MAX_FEEDBACK_ITEMS)
        except InputError as exc:
            ctx.response.status_code = 400
            return {"error": str(exc)}
        self.recorder.feedback(accepted)
        # answered once stored (up to 2 s): labels acknowledged are joinable at once (comparisons, the panel);
        # feedback is rare and runs in BentoML's thread pool, so the wait costs no prediction anything
        self.recorder.flush(2.0)
        return {"accepted": len(accepted)}


# The service's own / and /docs.json (from the schema, nothing fetched from another host), before BentoML's.
NbdeployService.add_asgi_middleware(docs.middleware(lambda: bentoml.get_current_service().predictor.methods))  # type: ignore[attr-defined]
# In front of the guard (the first middleware added is the outermost), so it sees the score routes as /predict.
NbdeployService.add_asgi_middleware(_score_routes)  # type: ignore[attr-defined]
NbdeployService.add_asgi_middleware(guard.from_environment)  # type: ignore[attr-defined]
