"""The service's front door, as one ASGI middleware: API keys, request size, and concurrency.

Every path needs a key but health, metrics and the OpenAPI page (``OPEN``): a new route is guarded by default.
Keys arrive as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; the service only ever sees
their sha256 (a file the SDK rewrites on rotation, re-read when it changes). A 401 says nothing
about why the key was refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Open without a key: health, metrics and the API description. Every other path needs one, so a route added
# later (such as the .npz route, a mounted app) is guarded by default instead of open by default.
OPEN = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/schema.json", "/"})
OPEN_PREFIXES = ("/static_content/",)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyFile:
    """The accepted key hashes, re-read at most every ``every_s`` when the file changes."""

    def __init__(self, path: str | None, required: bool, every_s: float = 0.5) -> None:
        self.path = Path(path) if path else None
        self.required = required
        self.every_s = every_s
        self._hashes: tuple[str, ...] = ()
        self._mtime = -1.0
        self._checked = 0.0
        self._load()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._hashes, self._mtime = (), -1.0
            return
        if mtime != self._mtime:
            data = json.loads(self.path.read_text())
            self._hashes = tuple(str(h) for h in data.get("sha256", []))
            self._mtime = mtime

    def accepts(self, key: str | None) -> bool:
        if not self.required:
            return True
        now = time.monotonic()
        if now - self._checked > self.every_s:
            self._checked = now
            with contextlib.suppress(OSError, ValueError):  # keep the last good set on a bad read
                self._load()
        if not key or not self._hashes:
            return False  # fail closed: auth required and no key configured means nobody gets in
        presented = digest(key)
        return any(hmac.compare_digest(presented, h) for h in self._hashes)


#: Routes whose body is JSON: another declared media type is refused (BentoML would pick another parser for it).
JSON_ROUTES = frozenset({"/predict", "/feedback"})
#: Bodies larger than this are parsed off the event loop (``PARSED`` in the scope), so one large request
#: cannot stall the others, nor ``/livez``.
PARSE_OFF_LOOP_BYTES = 256 * 1024
PARSED = "nbdeploy.parsed"


class _TooLarge(Exception):
    pass


def _media_type(headers: list[tuple[bytes, bytes]]) -> str | None:
    raw = next((v for k, v in headers if k == b"content-type"), None)
    return None if raw is None else raw.decode("latin-1").split(";")[0].strip().lower()


def _is_json(media: str | None) -> bool:
    """No content type (a bare client) counts as JSON; any other declared type must say JSON."""
    return media in (None, "", "application/json") or (media or "").endswith("+json")


async def _answer(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    raw = json.dumps(body).encode()
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": raw})


def _key_from(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip().decode("latin-1")
        if name == b"x-api-key":
            return value.strip().decode("latin-1")
    return None


class Guard:
    """API key check, then body size (413), then an in-flight limit with a bounded queue (503)."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyFile,
        max_body_bytes: int,
        max_concurrency: int,
        max_queue: int,
    ) -> None:
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.max_queue = max_queue
        self._slots = asyncio.Semaphore(max_concurrency)
        self._waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN or path.startswith(OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        headers = scope.get("headers", [])
        if not self.keys.accepts(_key_from(headers)):
            return await _answer(
                send,
                401,
                {"error": "unauthorized: send a valid API key"},
                {"www-authenticate": 'Bearer realm="nbdeploy"'},
            )
        lengths = [v for k, v in headers if k == b"content-length"]
        if len(set(lengths)) > 1 or (lengths and not lengths[0].isdigit()):
            return await _answer(send, 400, {"error": "the Content-Length header is not one non-negative number"})
        if lengths and int(lengths[0]) > self.max_body_bytes:
            return await self._too_large(send)
        media = _media_type(headers) if path in JSON_ROUTES else None
        if not _is_json(media):
            return await _answer(send, 415, {"error": f"send JSON (content-type: application/json), not {media}"})
        if self._slots.locked() and self._waiting >= self.max_queue:
            return await _answer(
                send,
                503,
                {"error": "the service is at its concurrency limit and its queue is full; retry shortly"},
                {"retry-after": "1"},
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            if not lengths or (path == "/predict" and int(lengths[0]) > PARSE_OFF_LOOP_BYTES):
                return await self._buffered(scope, receive, send)
            await self._call(scope, receive, send)
        finally:
            self._slots.release()

    async def _buffered(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the whole body here, under the size limit (a chunked body declares no length); a large
        /predict body is parsed in a thread and handed on parsed, so the event loop never parses it."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return await self._too_large(send)
            if not message.get("more_body"):
                break
        raw = bytes(body)
        if scope.get("path") == "/predict" and len(raw) > PARSE_OFF_LOOP_BYTES:
            parsed = await asyncio.to_thread(_parse, raw)
            if parsed is not None:
                scope[PARSED] = parsed
                raw = b'{"inputs": null}'  # BentoML still sees a valid body; the handler takes the parsed one
        await self._call(scope, _replay(raw, receive), send)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:
                raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        limit = self.max_body_bytes
        await _answer(
            send, 413, {"error": f"request body over the limit of {limit} bytes; send fewer rows per request"}
        )


def _parse(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object with ``inputs``, or None to let BentoML answer a malformed body as usual."""
    from pydantic_core import from_json

    try:
        parsed = from_json(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) and "inputs" in parsed else None


def _replay(raw: bytes, receive: Receive) -> Receive:
    """The body read already, then the connection's own events (a disconnect arrives as it happens)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    return replayed


def from_environment(app: ASGIApp) -> Guard:
    """Build the guard from the variables the target sets (see nbdeploy.targets.base.service_env)."""
    env = os.environ
    keys = KeyFile(env.get("NBDEPLOY_KEYS_FILE"), required=env.get("NBDEPLOY_AUTH", "required") != "off")
    return Guard(
        app,
        keys,
        max_body_bytes=int(env.get("NBDEPLOY_MAX_BODY_BYTES", str(128 * 1024 * 1024))),
        max_concurrency=int(env.get("NBDEPLOY_MAX_CONCURRENCY", "32")),
        max_queue=int(env.get("NBDEPLOY_MAX_QUEUE", "256")),
    )
