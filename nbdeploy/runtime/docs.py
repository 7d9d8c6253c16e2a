"""What the service says about itself, at ``/`` and ``/docs.json``, made from the captured schema.

BentoML's own page loads Google Tag Manager, and its ``/docs.json`` has neither the input columns nor a security
scheme, so nothing on it can be called. Here ``/docs.json`` is an OpenAPI document with the columns (types,
categories, an example), the bearer-key scheme and the routes this model has; ``/`` is the try-it page
(``page``): a form generated from the schema, with no request to any other host. Both are open (``guard.OPEN``)
and reveal nothing secret: the page asks for the key and keeps it in the browser's memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import page
from .guard import ASGIApp, Receive, Scope, Send

ARTIFACT_DIR = Path(__file__).resolve().parent.parent / "artifact"
_JSON_TYPES = {"integer": "integer", "float": "number", "bool": "boolean", "string": "string", "datetime": "string"}
#: Routes beyond /predict that a model may have; the service says which (``Docs(methods=...)``).
EXTRA_METHODS = ("predict_proba", "decision_function")


def _column_schema(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.get("kind")
    out: dict[str, Any] = {}
    if kind == "category":
        out["enum"] = list(spec.get("categories") or [])
    elif kind in _JSON_TYPES:
        out["type"] = _JSON_TYPES[kind]
        if kind == "datetime":
            out["format"] = "date-time"
    if spec.get("nullable"):
        out["nullable"] = True
    out["description"] = f"dtype {spec.get('dtype', '?')}"
    return out


def input_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of ``inputs``: records (or split form) of the sample's columns, or rows of n numbers."""
    if schema.get("kind") == "ndarray":
        n = int(schema.get("n_features", 0))
        row = {"type": "array", "items": {"type": "number", "nullable": True}, "minItems": n, "maxItems": n}
        return {"type": "array", "items": row, "description": f"rows of {n} features"}
    columns = schema.get("columns", [])
    record = {
        "type": "object",
        "properties": {str(c["name"]): _column_schema(c) for c in columns},
        "required": [str(c["name"]) for c in columns],
        "additionalProperties": False,
    }
    split = {
        "type": "object",
        "properties": {"columns": {"type": "array", "items": {"type": "string"}}, "data": {"type": "array"}},
        "required": ["columns", "data"],
    }
    return {"oneOf": [{"type": "array", "items": record}, split, record]}


def openapi(meta: dict[str, Any], methods: list[str], example: Any = None) -> dict[str, Any]:
    """An OpenAPI 3 document of this service's routes, with the columns and the API-key scheme."""
    body: dict[str, Any] = {
        "type": "object",
        "properties": {"inputs": input_schema(meta.get("schema", {}))},
        "required": ["inputs"],
    }
    content: dict[str, Any] = {"schema": body}
    if example is not None:
        content["example"] = {"inputs": example}
    secured: list[dict[str, list[str]]] = [{"apiKey": []}]

    def post(summary: str, answer: dict[str, Any]) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "security": secured,
                "requestBody": {"required": True, "content": {"application/json": content}},
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {"schema": answer}}},
                    "400": {"description": "the input does not match the schema; the error names the column"},
                    "401": {"description": "no valid API key"},
                },
            }
        }

    rid = {"request_id": {"type": "string"}}
    paths: dict[str, Any] = {
        "/predict": post("Predictions, as model.predict returns them", {"type": "object", "properties": rid}),
    }
    for method in methods:
        if method in EXTRA_METHODS:
            paths[f"/{method}"] = post(f"model.{method}, with the class labels", {"type": "object"})
    paths["/feedback"] = {
        "post": {
            "summary": "Ground truth for earlier requests: {items: [{request_id, y_true: [...]}]}",
            "security": secured,
            "responses": {"200": {"description": "accepted"}},
        }
    }
    for path, what in (("/livez", "the process answers"), ("/readyz", "the model is loaded and not stuck")):
        paths[path] = {"get": {"summary": what, "security": [], "responses": {"200": {"description": "OK"}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": str(meta.get("service_name", "nbdeploy")), "version": str(meta.get("sha256", ""))[:12]},
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "the deployment's API key"}
            }
        },
        "security": secured,
        "paths": paths,
    }


def index_page(meta: dict[str, Any], methods: list[str], auth: bool | None = None) -> str:
    """The try-it page (``page``): a form from the schema, with no request to any other host."""
    if auth is None:
        auth = os.environ.get("NBDEPLOY_AUTH", "required") != "off"
    return page.render(page.config(meta, methods, auth=auth))


class Docs:
    """ASGI middleware answering ``GET /`` and ``GET /docs.json``; everything else goes on to the app."""

    def __init__(self, app: ASGIApp, meta: dict[str, Any], methods: Callable[[], list[str]]) -> None:
        self.app = app
        self.meta = meta
        self.methods = methods
        self._cache: dict[str, bytes] = {}

    def _body(self, path: str) -> tuple[bytes, dict[str, str]]:
        if path not in self._cache:
            methods = [m for m in self.methods() if m != "predict"]
            if path == "/docs.json":
                self._cache[path] = json.dumps(openapi(self.meta, methods, self.meta.get("example"))).encode()
            else:
                self._cache[path] = index_page(self.meta, methods).encode()
        if path == "/docs.json":
            return self._cache[path], {"content-type": "application/json"}
        return self._cache[path], {"content-type": "text/html; charset=utf-8", **page.HEADERS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") not in {"GET", "HEAD"} or path not in {"/", "/docs.json"}:
            await self.app(scope, receive, send)
            return
        body, extra = self._body(path)
        headers = [(k.encode(), v.encode()) for k, v in extra.items()]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})


def middleware(methods: Callable[[], list[str]]) -> Callable[[ASGIApp], Docs]:
    """For ``add_asgi_middleware``: reads the artifact's meta once, asks ``methods`` at the first request."""
    meta = json.loads((ARTIFACT_DIR / "meta.json").read_text())
    return lambda app: Docs(app, meta, methods)
