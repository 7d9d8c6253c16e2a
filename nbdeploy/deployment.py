"""The handle users hold: a thin view over a registry record, doing its work through the target."""

from __future__ import annotations

import html
import json
from typing import Any

import httpx
import numpy as np

from . import client
from .errors import PredictionError
from .registry import RUNNING, STOPPED, Record, Registry
from .targets import get_target


class Deployment:
    """One version of a named deployment. ``predict`` goes over HTTP to the running service."""

    def __init__(self, record: Record, registry: Registry | None = None) -> None:
        self._record = record
        self._registry = registry or Registry()
        self._http: httpx.Client | None = None

    name = property(lambda self: self._record.name)
    version = property(lambda self: self._record.version)
    url = property(lambda self: self._record.url)
    target = property(lambda self: self._record.target)

    def _refresh(self) -> Record:
        self._record = self._registry.get(self.name, self.version)
        return self._record

    def predict(self, data: Any, timeout: float = 60.0) -> np.ndarray:
        """Predictions from the endpoint, as an array like ``model.predict`` returns."""
        if self._http is None:
            self._http = httpx.Client(timeout=timeout)
        try:
            resp = self._http.post(
                f"{self.url}/predict", content=client.encode(data), headers={"content-type": "application/json"}
            )
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
        return np.asarray(body["predictions"])

    def status(self) -> str:
        """``running``, ``unhealthy`` (process up, not ready), ``stopped`` or ``failed``."""
        rec = self._refresh()
        if rec.status != RUNNING:
            return rec.status
        return get_target(rec.target).status(rec)

    def logs(self, lines: int = 200) -> str:
        return get_target(self.target).logs(self._record, lines)

    def stop(self) -> None:
        """Stop the service and leave no process behind."""
        rec = self._refresh()
        get_target(rec.target).stop(rec)
        self._record = self._registry.update(rec.name, rec.version, status=STOPPED, pid=None)
        if self._http is not None:
            self._http.close()
            self._http = None

    def info(self) -> dict[str, Any]:
        """Registry record and capture metadata (schema, requirements, lineage)."""
        rec = self._refresh()
        return {
            "name": rec.name,
            "version": rec.version,
            "target": rec.target,
            "status": rec.status,
            "url": rec.url,
            "bento": rec.bento_tag,
            "created_at": rec.created_at,
            **rec.info,
        }

    def curl(self) -> str:
        """A ready-to-copy request: the first row of the sample the model was deployed with."""
        body = json.dumps({"inputs": self._record.info.get("example", [])}).replace("'", "'\\''")
        return f"curl -s -X POST {self.url}/predict -H 'content-type: application/json' -d '{body}'"

    def __repr__(self) -> str:
        return f"Deployment(name={self.name!r}, version={self.version}, target={self.target!r}, url={self.url!r})"

    def _repr_html_(self) -> str:
        rec = self._record
        state = rec.status
        colour = {"running": "#1a7f37", "stopped": "#6e7781", "failed": "#cf222e"}.get(state, "#9a6700")
        rows = [
            ("URL", f"<code>{html.escape(rec.url or '-')}</code>"),
            ("Target", html.escape(rec.target)),
            ("Status", f"<b style='color:{colour}'>{html.escape(state)}</b>"),
            ("Bento", f"<code>{html.escape(rec.bento_tag or '-')}</code>"),
            ("Artifact", f"<code>{html.escape(str(rec.info.get('sha256', ''))[:16])}</code>"),
        ]
        body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td>{v}</td></tr>" for k, v in rows)
        return (
            "<div class='nbdeploy-card' style='border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;"
            "max-width:900px'>"
            f"<div style='font-size:1.1em'><b>{html.escape(rec.name)}</b> &middot; version {rec.version}</div>"
            f"<table>{body}</table>"
            f"<div>Try it:</div><pre style='white-space:pre-wrap'>{html.escape(self.curl())}</pre></div>"
        )
