"""The handle users hold: a thin view over a registry record, doing its work through the target."""

from __future__ import annotations

import html
import json
from typing import Any

import httpx
import numpy as np
import pandas as pd

from . import client
from .errors import NbdeployError, PredictionError, Superseded, TargetError
from .registry import FAILED, RUNNING, STOPPED, Record, Registry
from .runtime import frames
from .targets import Target, get_target


class Deployment:
    """One version of a named deployment. ``predict`` goes over HTTP to the running service."""

    def __init__(self, record: Record, registry: Registry | None = None) -> None:
        self._record = record
        self._registry = registry or Registry()
        self._http: httpx.Client | None = None
        #: The id the service gave the last ``predict`` call; pass it to ``feedback``.
        self.last_request_id: str | None = None
        self._key: str | None = None
        self._reveal_key: str | None = None  # a key made by this call: the card shows it once

    def _headers(self, reload: bool = False) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self._record.info.get("auth", True):
            if self._key is None or reload:
                self._key = self._registry.key(self.name)
            if self._key:
                headers["authorization"] = f"Bearer {self._key}"
        return headers

    def headers(self) -> dict[str, str]:
        """Headers for any HTTP client (httpx, requests, a load tester): JSON content type and the API key.

        The card shows the key once; this reads it from the owner-only registry, as ``nbdeploy key NAME`` does.
        """
        return self._headers(reload=True)

    @property
    def name(self) -> str:
        """The deployment's name; versions of one name share its API key."""
        return self._record.name

    @property
    def version(self) -> int:
        """1 for the first deploy of a name, then 2, 3, ..."""
        return self._record.version

    @property
    def url(self) -> str | None:
        """Where the service answers, e.g. ``http://127.0.0.1:PORT``."""
        return self._record.url

    @property
    def target(self) -> str:
        """Where it runs: ``local``, ``container`` or ``kubernetes``."""
        return self._record.target

    def _refresh(self) -> Record:
        self._record = self._registry.get(self.name, self.version)
        return self._record

    def predict(self, data: Any, timeout: float = 60.0) -> np.ndarray:
        """Predictions from the endpoint, as an array like ``model.predict`` returns."""
        if self._http is None:
            self._http = httpx.Client(timeout=timeout)
        route, body_bytes, headers = "/predict", None, self._headers()
        if isinstance(data, pd.DataFrame) and len(data) >= client.NPZ_ROWS and self._record.target != "edge":
            body_bytes = frames.encode(data)  # large frames as arrays: no JSON to write or parse
        if body_bytes is None:
            body_bytes = client.encode(data)
        else:
            route, headers = frames.ROUTE, {**headers, "content-type": frames.MEDIA_TYPE}
        try:
            resp = self._post(route, body_bytes, headers, data)
            if resp.status_code == 401:  # the key was rotated by another handle: read it again, once
                headers = {**self._headers(reload=True), "content-type": headers["content-type"]}
                resp = self._post(route, body_bytes, headers, data)
        except httpx.HTTPError as exc:
            raise PredictionError(
                f"cannot reach '{self.name}' v{self.version} at {self.url}: {exc}",
                status=0,
                hint=f"check dep.status() and dep.logs(); status now: {self.status()}",
            ) from exc
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text
        if resp.status_code != 200:
            msg = body.get("error") if isinstance(body, dict) else body
            raise PredictionError(f"'{self.name}' answered {resp.status_code}: {msg}", status=resp.status_code)
        self.last_request_id = body.get("request_id")
        return np.asarray(body["predictions"])

    def _post(self, route: str, body: bytes, headers: dict[str, str], data: Any) -> httpx.Response:
        assert self._http is not None
        resp = self._http.post(f"{self.url}{route}", content=body, headers=headers)
        if route == "/predict" or resp.status_code != 404:
            return resp
        # a version deployed before the .npz route: JSON, as it always took
        headers = {**headers, "content-type": "application/json"}
        return self._http.post(f"{self.url}/predict", content=client.encode(data), headers=headers)

    def feedback(self, request_ids: str | list[str], y_true: Any) -> int:
        """Ground truth for earlier predictions, so the panel can show accuracy over time.

        ``feedback(dep.last_request_id, y)`` for one request, or lists of ids and label arrays.
        """
        from .monitor import send_feedback

        if isinstance(request_ids, str):
            request_ids, y_true = [request_ids], [y_true]
        return send_feedback(self._refresh().url, list(request_ids), list(y_true), headers=self._headers(reload=True))

    def rotate_key(self) -> str:
        """Replace the API key without downtime; returns the new key (the old one stops working)."""
        from . import keys

        rec = self._refresh()
        if not rec.info.get("auth", True):
            raise NbdeployError(f"'{rec.name}' was deployed with auth=False: it has no key to rotate")
        old = self._registry.key(rec.name)
        new = keys.new_key()
        urls = [r.url for r in self._registry.running(rec.name) if r.url]
        keys.write_hashes(rec.name, [h for h in (keys.digest(new), old and keys.digest(old)) if h])
        for url in urls:  # both keys work now; switch the SDK, then retire the old one
            keys.wait_until(url, new, accepted=True)
        self._registry.set_key(rec.name, new, keys.digest(new))
        keys.write_hashes(rec.name, [keys.digest(new)])
        for url in urls:
            if old:
                keys.wait_until(url, old, accepted=False)
        self._registry.event("key-rotated", rec.name, rec.version, old=keys.masked(old), new=keys.masked(new))
        self._key = new
        self._reveal_key = new
        return new

    def requests(self) -> pd.DataFrame:
        """The request log: one row per recorded request (time, latency, status, rows)."""
        from .monitor import log_for

        return log_for(self._record).requests()

    def drift(self, thresholds: Any = None) -> pd.DataFrame:
        """Drift of live inputs and predictions against the deploy-time sample, one row per feature.

        ``thresholds``: ``nbdeploy.DriftThresholds(...)`` to change the tests' cut-offs (defaults as Evidently's).
        """
        from .monitor import drift

        return drift(self._refresh(), thresholds)

    def accuracy(self, freq: str = "1min") -> pd.DataFrame:
        """Accuracy (labels) or mean absolute error (numbers) over time, from ``feedback``."""
        from .monitor import accuracy_over_time, log_for

        return accuracy_over_time(log_for(self._record).feedback(), freq)

    def monitor(self, interval: float = 3.0, live: bool = True) -> Any:
        """The monitoring panel: tiles, traffic and latency, predictions vs reference, drift, accuracy.

        Live (ipywidgets, refreshed every ``interval`` s until closed or the deployment stops) by
        default; ``live=False`` gives a static HTML snapshot for saved notebooks and docs. Leave it
        last in a cell (or ``display(...)`` it) to show it.
        """
        from .monitor.panel import open_panel

        return open_panel(self._refresh(), interval=interval, live=live)

    def status(self) -> str:
        """``running``, ``degraded`` (process up, not answering /readyz: starting, or a model call stuck past the
        timeout until the worker is recycled), ``stopped`` or ``failed``."""
        rec = self._refresh()
        if rec.status != RUNNING:
            return rec.status
        return get_target(rec.target).status(rec)

    def scale(self, n: int) -> Deployment:
        """Run ``n`` replicas (kubernetes target). With an autoscaler, ``n`` becomes its minimum: the HPA owns
        the replica count. Returns at once; ``status()`` and ``info()["cluster"]`` show the pods coming up."""
        rec = self._refresh()
        scale = getattr(get_target(rec.target), "scale", None)
        if scale is None:
            raise TargetError(
                f"scale is for the kubernetes target; '{rec.name}' v{rec.version} runs on {rec.target}",
                hint="deploy with target='kubernetes' to run several replicas",
            )
        if rec.status != RUNNING:
            raise TargetError(f"'{rec.name}' v{rec.version} is {rec.status}: only the running version scales")
        info = scale(rec, n)
        self._record = self._registry.update(rec.name, rec.version, info={**rec.info, "kubernetes": info})
        self._registry.event("scale", rec.name, rec.version, replicas=n, hpa=info.get("hpa"))
        return self

    def restart(self) -> Deployment:
        """Start this version again on the same port (after a crash), with the limits it was deployed with."""
        rec = self._refresh()
        target = get_target(rec.target)
        target.stop(rec)
        try:
            self._record = start_record(self._registry, rec, rec.port, target, supersede=False)
        except BaseException as exc:
            self._registry.update(rec.name, rec.version, status=FAILED, pid=None)
            self._registry.event("restart-failed", rec.name, rec.version, error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        self._registry.event("restart", rec.name, rec.version, url=self._record.url)
        return self

    def logs(self, lines: int = 200) -> str:
        return get_target(self.target).logs(self._record, lines)

    def stop(self) -> None:
        """Stop the service and leave no process behind."""
        rec = self._refresh()
        self._record = stop_record(self._registry, rec)
        if rec.status == RUNNING:
            self._registry.event("stop", rec.name, rec.version)
        if self._http is not None:
            self._http.close()
            self._http = None

    def export(self, path: str) -> list[str]:
        """Write this version's image archive and bento archive into the folder ``path``; return their paths."""
        rec = self._refresh()
        target = get_target(rec.target)
        export = getattr(target, "export", None)
        if export is None:
            raise TargetError(
                f"'{rec.name}' v{rec.version} runs on the {rec.target} target, which has no image to export",
                hint="deploy it with target='container' to get an image archive",
            )
        return [str(p) for p in export(rec, path)]

    def export_edge(self, path: str, quantize: bool = False) -> Any:
        """Write this version's edge bundle (ONNX model, schema, manifest, onnxruntime-only server) to ``path``."""
        from .targets.edge import export_record

        return export_record(self._refresh(), path, quantize=quantize)

    def info(self) -> dict[str, Any]:
        """Registry record and capture metadata (schema, requirements, lineage); on Kubernetes, ``cluster``:
        replicas ready/desired, pods and recent events, read from the cluster now."""
        rec = self._refresh()
        live: dict[str, Any] = {}
        describe = getattr(get_target(rec.target), "describe", None) if rec.status == RUNNING else None
        if describe is not None:
            try:
                live["cluster"] = describe(rec)
            except NbdeployError as exc:  # info() must work while the cluster is unreachable
                live["cluster"] = {"error": str(exc)}
        return {
            "name": rec.name,
            "version": rec.version,
            "target": rec.target,
            "status": rec.status,
            "url": rec.url,
            "bento": rec.bento_tag,
            "created_at": rec.created_at,
            **rec.info,
            **live,
        }

    def curl(self, key: str | None = None) -> str:
        """A ready-to-copy request: the first row of the sample the model was deployed with."""
        body = json.dumps({"inputs": self._record.info.get("example", [])}).replace("'", "'\\''")
        auth = ""
        if self._record.info.get("auth", True):
            auth = f" -H 'authorization: Bearer {key}'" if key else ' -H "authorization: Bearer $NBDEPLOY_KEY"'
        return f"curl -s -X POST {self.url}/predict -H 'content-type: application/json'{auth} -d '{body}'"

    def __repr__(self) -> str:
        return f"Deployment(name={self.name!r}, version={self.version}, target={self.target!r}, url={self.url!r})"

    def _key_row(self, shown_key: str | None) -> str:
        from . import keys

        if not self._record.info.get("auth", True):
            return "<b style='color:#cf222e'>off</b> (deployed with auth=False: anyone who reaches the URL can call it)"
        if shown_key:
            return (
                f"<code>{html.escape(shown_key)}</code> <i>shown once: copy it now; later "
                f"<code>nbdeploy key {html.escape(self.name)}</code> prints it</i>"
            )
        masked = html.escape(keys.masked(self._registry.key(self.name)))
        return f"<code>{masked}</code> (<code>export NBDEPLOY_KEY=$(nbdeploy key {self.name})</code>)"

    def _lineage_row(self) -> str:
        lin = self._record.info.get("lineage", {})
        parts = [f"{lin.get('user', '?')}@{lin.get('host', '?')}", f"Python {lin.get('python', '?')}"]
        if lin.get("git_commit"):
            parts.append(f"git {lin['git_commit'][:10]}" + (" (dirty)" if lin.get("git_dirty") else ""))
        if lin.get("notebook"):
            parts.append(str(lin["notebook"]))
        reqs = self._record.info.get("requirements", [])
        parts.append(f"{len(reqs)} pinned requirements ({str(lin.get('requirements_sha256', ''))[:12]})")
        return html.escape(" · ".join(parts))

    def _repr_html_(self) -> str:
        rec = self._record
        shown_key, self._reveal_key = self._reveal_key, None
        state = rec.status
        colour = {"running": "#1a7f37", "stopped": "#6e7781", "failed": "#cf222e"}.get(state, "#9a6700")
        rows = [
            ("URL", f"<code>{html.escape(rec.url or '-')}</code>"),
            ("Target", html.escape(rec.target)),
            ("Status", f"<b style='color:{colour}'>{html.escape(state)}</b>"),
            ("Bento", f"<code>{html.escape(rec.bento_tag or '-')}</code>"),
            ("Artifact", f"<code>{html.escape(str(rec.info.get('sha256', ''))[:16])}</code>"),
            ("Lineage", self._lineage_row()),
            ("Monitor", f"<code>dep.monitor()</code> or <code>%monitor {html.escape(rec.name)}</code> (live panel)"),
        ]
        rows.insert(3, ("API key", self._key_row(shown_key)))
        body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td>{v}</td></tr>" for k, v in rows)
        return (
            "<div class='nbdeploy-card' style='border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;"
            "max-width:900px'>"
            f"<div style='font-size:1.1em'><b>{html.escape(rec.name)}</b> &middot; version {rec.version}</div>"
            f"<table>{body}</table>"
            f"<div>Try it:</div><pre style='white-space:pre-wrap'>{html.escape(self.curl(shown_key))}</pre></div>"
        )


def start_record(
    registry: Registry, rec: Record, port: int | None, target: Target | None = None, supersede: bool = True
) -> Record:
    """Start ``rec``'s bento on its target, then retire every other running version of the name.

    With ``supersede`` (a deploy), a version that finds a newer one already serving does not take over: it is
    stopped and ``Superseded`` says which version serves, so the caller of a lost race is told. A rollback or
    restart (``supersede=False``) takes over whatever runs.
    """
    target = target or get_target(rec.target)
    if port is not None:
        # The caller wants the port another version holds: free it first (a short gap in service).
        for r in registry.running(rec.name):
            if r.version != rec.version and r.port == port:
                stop_record(registry, r)
    if not rec.bento_path:
        raise NbdeployError(f"'{rec.name}' v{rec.version} has no bento to start from")
    running = target.deploy(rec, rec.bento_path, port)
    extra = {"info": {**rec.info, **running.info}} if running.info else {}
    fields = {"url": running.url, "port": running.port, "pid": running.pid, **extra}
    rec, others, newer = registry.claim(rec.name, rec.version, newest_wins=supersede, **fields)
    if newer is not None:
        target.stop(rec)
        raise Superseded(
            f"'{rec.name}' v{rec.version} does not serve: v{newer.version}, deployed at the same time from "
            f"another session, is newer and serves at {newer.url}",
            hint=f"nbdeploy.get('{rec.name}') is the serving version; nbdeploy.rollback('{rec.name}', "
            f"{rec.version}) serves this one",
        )
    for other in others:
        stop_record(registry, other)
    return rec


def stop_record(registry: Registry, rec: Record) -> Record:
    """Record the stop first, then stop: a watcher must never see a version stopping on purpose as crashed."""
    stopped = registry.update(rec.name, rec.version, status=STOPPED, pid=None)
    try:
        get_target(rec.target).stop(rec)
    except BaseException:
        registry.update(rec.name, rec.version, status=FAILED)
        raise
    return stopped
