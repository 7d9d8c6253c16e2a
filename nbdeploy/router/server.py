"""The endpoint router: one stable port per name, in front of the version services (see ``contract``).

An asyncio HTTP/1.1 reverse proxy, kept small so a one-row prediction pays little for the stable URL: the request
is parsed by httptools, forwarded over a pooled keep-alive connection to the version it is routed to, and the answer
is streamed back with ``x-nbdeploy-version``. It reads only what the hot path needs:

- the config (``endpoint.json``) is re-read when its mtime changes, checked by a 50 ms ticker, not per request;
- the request log and the shadow pairs go to ``Store`` (a writer thread), never to sqlite on the loop;
- shadow copies are sent by background tasks from a bounded queue, after the live answer is written.

A request that could not reach its upstream (connection refused or reset before any answer byte) is retried on
whatever serves its route now, for up to ``RETRY_S``: this is what makes a swap race or a restart on the same port
lose no request. A request whose answer had started is never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sqlite3
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httptools  # type: ignore[import-untyped]

from . import contract
from .contract import MODEL_PATHS, STATUS_PATH, STORE_FILE, VERSION_PREFIX, Endpoint
from .store import Store

log = logging.getLogger("nbdeploy.router")

RELOAD_EVERY_S = 0.05
RETRY_S = 10.0
CONNECT_TIMEOUT_S = 3.0
MIRROR_TIMEOUT_S = 10.0
MIRROR_QUEUE = 256
MIRROR_WORKERS = 2
MIRROR_MAX_BODY = 1 << 20
STORE_BODY_CUT = 64 * 1024
HEAD_LIMIT = 64 * 1024
READ_SIZE = 64 * 1024
MAX_REQUEST_BODY = 256 << 20  # the services set their own, smaller limits; this one only guards the router's memory
CLIENT_IDLE_S = 120.0
POOL_IDLE_MAX = 64  # idle upstream connections kept per version
SHUTDOWN_GRACE_S = 10.0
#: Request ids answered (200) kept in memory with the version that answered: labels posted to the stable URL's
#: /feedback go to that version. Older ids are looked up in the router's log (``served``).
ANSWERED_KEPT = 100_000
_FEEDBACK = b"/feedback"
DEFAULT_RULES: dict[str, Any] = {"max_error_rate": 0.05, "min_requests": 20, "window_s": 30, "max_p95_ms": None}

_MODEL_PATHS = tuple(p.encode() for p in MODEL_PATHS)
_FRAME_PREFIX = b"/frame/"
_STATUS = STATUS_PATH.encode()
_VPREFIX = VERSION_PREFIX.encode()
_LOCAL_PEERS = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
#: Request headers the router does not pass on: hop-by-hop (RFC 9110 §7.6.1), plus the framing it sets itself.
_REQ_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"expect",
    }
)
#: Response headers it does not pass on (``content-length`` passes: the body streams through unchanged).
_RESP_DROP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"te", b"trailer", b"transfer-encoding"}
)
_REASONS = {400: b"Bad Request", 404: b"Not Found", 413: b"Content Too Large", 431: b"Request Header Fields Too Large"}
_REASONS |= {500: b"Internal Server Error", 502: b"Bad Gateway", 503: b"Service Unavailable"}


def is_model_path(path: bytes) -> bool:
    """The routes whose answers are predictions: mirrored to a shadow, counted by the watch."""
    return path in _MODEL_PATHS or path.startswith(_FRAME_PREFIX)


def _hostport(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or 80)


def _json_response(status: int, body: Any, keep: bool, extra: bytes = b"") -> bytes:
    data = json.dumps(body).encode()
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s%s\r\n%s" % (
        status,
        _REASONS.get(status, b"Error"),
        len(data),
        extra,
        b"" if keep else b"connection: close\r\n",
        data,
    )


# -- parsing --------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Request:
    method: bytes
    url: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool


class _RequestSink:
    """httptools callbacks for the client side: complete requests pile up in ``done`` (pipelining works)."""

    def __init__(self) -> None:
        self.parser: Any = None
        self.done: deque[Request] = deque()
        self.in_head = False
        self.head_size = 0
        self.body_size = 0
        self.expect_continue = False
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def on_message_begin(self) -> None:
        self._reset()
        self.in_head = True
        self.head_size = 0
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        for name, value in self.headers:
            if name.lower() == b"expect" and value.lower() == b"100-continue":
                self.expect_continue = True

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        self.body.append(body)

    def on_message_complete(self) -> None:
        p = self.parser
        keep = p.should_keep_alive() and p.get_http_version() == "1.1"
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.done.append(Request(p.get_method(), self.url, self.headers, body, keep))
        self._reset()


class _ResponseSink:
    """httptools callbacks for one upstream answer."""

    __slots__ = ("chunks", "complete", "headers", "headers_done", "keep_alive", "parser", "reason")

    def __init__(self) -> None:
        self.parser: Any = None
        self.keep_alive = False
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.headers_done = False
        self.complete = False

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()  # only valid inside the callbacks: llhttp resets after

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


# -- upstream connections -------------------------------------------------------------------------------------------


class _Conn:
    __slots__ = ("reader", "reused", "url", "writer")

    def __init__(self, url: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.url = url
        self.reader = reader
        self.writer = writer
        self.reused = False

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Idle keep-alive connections per upstream URL; a connection goes back only after a complete answer."""

    def __init__(self) -> None:
        self.idle: dict[str, list[_Conn]] = {}
        self.alive: frozenset[str] = frozenset()

    async def acquire(self, url: str) -> _Conn:
        idle = self.idle.get(url)
        while idle:
            conn = idle.pop()
            if conn.reader.at_eof() or conn.writer.is_closing():  # the service closed it while idle
                conn.close()
                continue
            conn.reused = True
            return conn
        host, port = _hostport(url)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=READ_SIZE), CONNECT_TIMEOUT_S)
        return _Conn(url, reader, writer)

    def release(self, conn: _Conn) -> None:
        idle = self.idle.setdefault(conn.url, [])
        if conn.url in self.alive and len(idle) < POOL_IDLE_MAX and not conn.writer.is_closing():
            idle.append(conn)
        else:
            conn.close()

    def keep_only(self, urls: frozenset[str]) -> None:
        """Close the idle connections to versions the config no longer names."""
        self.alive = urls
        for url in list(self.idle):
            if url not in urls:
                for conn in self.idle.pop(url):
                    conn.close()

    def close(self) -> None:
        self.keep_only(frozenset())


_CLIENT_GONE = "the client went away"


class _Retry(Exception):
    """Nothing of an answer came back: the request may go again."""


class _Broken(Exception):
    """The answer broke after it had started (or could not be retried): never retried."""

    def __init__(self, reason: str, head_sent: bool) -> None:
        super().__init__(reason)
        self.head_sent = head_sent


@dataclass(slots=True)
class _Answer:
    status: int
    request_id: str | None
    body: bytes  # captured only when asked for (shadow), cut at STORE_BODY_CUT
    client_ok: bool  # False: the client connection must close (it went away, or the body was close-delimited)


def _request_head(method: bytes, target: bytes, header_block: bytes) -> bytes:
    return b"%s %s HTTP/1.1\r\n%s" % (method, target, header_block)


def _header_block(headers: list[tuple[bytes, bytes]], body_len: int, method: bytes) -> bytes:
    """The forwarded headers (hop-by-hop ones removed) and the body framing, ending with the blank line."""
    drop = _REQ_DROP
    for name, value in headers:
        if name.lower() == b"connection":
            extra = {t.strip().lower() for t in value.split(b",")} - {b"keep-alive", b"close", b""}
            if extra:
                drop = drop | extra
    parts = [b"%s: %s\r\n" % (n, v) for n, v in headers if n.lower() not in drop]
    if body_len or method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
        parts.append(b"content-length: %d\r\n" % body_len)
    parts.append(b"\r\n")
    return b"".join(parts)


async def exchange(
    pool: Pool,
    url: str,
    head: bytes,
    body: bytes,
    *,
    retry_ok: bool,
    is_head: bool = False,
    client: asyncio.StreamWriter | None = None,
    client_keep: bool = True,
    version: int = 0,
    capture: bool = False,
) -> _Answer:
    """Send one request to ``url`` over a pooled connection; stream the answer to ``client`` (if given) with the
    version header, or buffer it (mirror copies). Raises ``_Retry`` if nothing came back and a retry is safe."""
    try:
        conn = await pool.acquire(url)
    except (TimeoutError, OSError) as exc:
        raise _Retry(f"connect to {url}: {exc!r}") from None
    sink = _ResponseSink()
    parser = httptools.HttpResponseParser(sink)
    sink.parser = parser
    got = False
    head_sent = False
    chunked = False
    close_delimited = False
    no_body = is_head
    request_id: str | None = None
    kept: list[bytes] = []
    kept_len = 0
    client_ok = client is not None and client_keep
    status = 0
    try:
        conn.writer.write(head + body if body else head)
        while True:
            try:
                data = await conn.reader.read(READ_SIZE)
            except OSError:
                data = b""
            if not data:
                if not got:
                    if retry_ok or conn.reused:  # a reused connection the service had closed: the classic race
                        raise _Retry(f"{url} closed the connection before answering")
                    raise _Broken(f"{url} closed the connection before answering", False)
                if not (sink.headers_done and close_delimited):
                    raise _Broken(f"{url} closed the connection in the middle of an answer", head_sent)
                sink.complete = True
            else:
                got = True
                try:
                    parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    raise _Broken(f"{url} sent a malformed answer: {exc}", head_sent) from None
            out: list[bytes] = []  # one write (one syscall) per upstream read: head and body together
            if sink.headers_done and not head_sent:
                status = parser.get_status_code()
                has_length = False
                for name, value in sink.headers:
                    low = name.lower()
                    if low == b"content-length":
                        has_length = True
                    elif low == b"transfer-encoding" and b"chunked" in value.lower():
                        chunked = True
                    elif low == b"x-request-id":
                        request_id = value.decode("latin-1")
                no_body = no_body or status in (204, 304) or 100 <= status < 200
                close_delimited = not (has_length or chunked or no_body)
                if is_head:
                    sink.complete = True
                if client is not None:
                    if close_delimited:
                        client_ok = False
                    parts = [b"HTTP/1.1 %d %s\r\n" % (status, sink.reason)]
                    parts += [b"%s: %s\r\n" % (n, v) for n, v in sink.headers if n.lower() not in _RESP_DROP]
                    parts.append(b"x-nbdeploy-version: %d\r\n" % version)
                    if chunked:
                        parts.append(b"transfer-encoding: chunked\r\n")
                    if not client_ok:
                        parts.append(b"connection: close\r\n")
                    parts.append(b"\r\n")
                    out += parts
                head_sent = True
            if sink.chunks:
                chunks = sink.chunks
                sink.chunks = []
                if capture or client is None:
                    for c in chunks:
                        if kept_len < STORE_BODY_CUT:
                            kept.append(c)
                            kept_len += len(c)
                if client is not None:
                    if chunked:
                        out += (b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
                    else:
                        out += chunks
            if sink.complete and chunked:
                out.append(b"0\r\n\r\n")
            if client is not None and out:
                client.write(b"".join(out))
            if sink.complete:
                break
            if client is not None and head_sent:
                try:
                    await client.drain()  # backpressure for large answers; returns at once otherwise
                except OSError:
                    raise _Broken(_CLIENT_GONE, True) from None
    except BaseException:
        conn.close()  # the connection is in an unknown state (or this task was cancelled): never reuse it
        raise
    if close_delimited or not sink.keep_alive:
        conn.close()
    else:
        pool.release(conn)
    return _Answer(status, request_id, b"".join(kept)[:STORE_BODY_CUT], client_ok)


# -- the router -----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Mirror:
    ts: float
    target: bytes
    method: bytes
    header_block: bytes
    body: bytes
    inputs: str | None
    live_version: int
    live_status: int
    live_ms: float
    live_body: bytes
    request_id: str
    cand_version: int
    cand_url: str


def _text(data: bytes | None) -> str | None:
    return None if data is None else data[:STORE_BODY_CUT].decode("utf-8", "replace")


class Router:
    """One name's front door. ``start`` binds and returns; ``run`` serves until SIGTERM/SIGINT (or ``stop``)."""

    def __init__(self, endpoint_path: Path, host: str = "127.0.0.1", access_log: bool = False) -> None:
        self.path = Path(endpoint_path)
        self.host = host
        self.access_log = access_log
        self.ep: Endpoint = contract.read(self.path)
        self._stat: tuple[int, int, int] = self._file_stat()
        self.pool = Pool()
        self.mirror_pool = Pool()
        self.store = Store(self.path.parent / STORE_FILE)
        self.inflight: dict[int, int] = {}
        self.served: dict[int, int] = {}
        self.answered: dict[str, int] = {}  # request id -> version (insertion order: oldest first)
        self.busy = 0
        self.mirror_q: asyncio.Queue[_Mirror] = asyncio.Queue(MIRROR_QUEUE)
        self.window: deque[tuple[float, bool, float]] = deque()  # (t, error, ms) of the live version while watched
        self.window_errors = 0
        self._watch_pending = False
        self._clients: dict[asyncio.StreamWriter, list[Any]] = {}  # writer -> [busy, last_active]
        self._server: asyncio.base_events.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = asyncio.Event()
        self._draining = False
        self.started = time.time()
        self._apply(self.ep)

    # config ----------------------------------------------------------------------------------------------------

    def _file_stat(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def reload(self, force: bool = False) -> bool:
        """Re-read endpoint.json if it changed (or ``force``); a file that cannot be read keeps the old config."""
        st = self._file_stat()
        if st == self._stat and not force:
            return False
        self._stat = st
        try:
            ep = contract.read(self.path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot read %s, keeping generation %d: %s", self.path, self.ep.generation, exc)
            return False
        if ep.generation != self.ep.generation or force:
            old = self.ep
            self._apply(ep)
            if ep.generation != old.generation:
                log.info(
                    "config generation %d: live=%s candidate=%s watch=%s",
                    ep.generation,
                    ep.live and ep.live.version,
                    ep.candidate and f"{ep.candidate.upstream.version} ({ep.candidate.mode})",
                    ep.watch and f"previous={ep.watch.previous.version} outcome={ep.watch.outcome}",
                )
        return True

    def _apply(self, ep: Endpoint) -> None:
        live_before = self.ep.live.version if self.ep.live else None
        self.ep = ep
        urls = set(ep.versions.values())
        for up in (ep.live, ep.candidate and ep.candidate.upstream, ep.watch and ep.watch.previous):
            if up:
                urls.add(up.url)
        self.pool.keep_only(frozenset(urls))
        self.mirror_pool.keep_only(frozenset({ep.candidate.upstream.url}) if ep.candidate else frozenset())
        if (ep.live.version if ep.live else None) != live_before:
            self.window.clear()
            self.window_errors = 0

    # serving ---------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._client, self.host, self.ep.port, limit=READ_SIZE, reuse_address=True, backlog=1024
        )
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._ticker()))
        for _ in range(MIRROR_WORKERS):
            self._tasks.append(loop.create_task(self._mirror_worker()))
        log.info("router for %r on %s:%d (generation %d)", self.ep.name, self.host, self.ep.port, self.ep.generation)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stopping.set)
        await self.start()
        await self._stopping.wait()
        await self.shutdown()

    def stop(self) -> None:
        self._stopping.set()

    async def shutdown(self) -> None:
        """Stop accepting, let requests in flight finish (at most SHUTDOWN_GRACE_S), flush the log."""
        log.info("stopping: %d requests in flight", self.busy)
        self._draining = True
        if self._server:
            self._server.close()
        for writer, state in list(self._clients.items()):
            if not state[0]:
                writer.close()
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for writer in list(self._clients):
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.pool.close()
        self.mirror_pool.close()
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)
        log.info("stopped")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        local = bool(peer) and peer[0] in _LOCAL_PEERS
        sink = _RequestSink()
        parser = httptools.HttpRequestParser(sink)
        sink.parser = parser
        state: list[Any] = [False, time.monotonic()]
        self._clients[writer] = state
        try:
            while True:
                while not sink.done:
                    try:
                        data = await reader.read(READ_SIZE)
                    except OSError:
                        return
                    if not data:
                        return
                    state[1] = time.monotonic()
                    try:
                        parser.feed_data(data)
                    except httptools.HttpParserUpgrade:
                        writer.write(_json_response(400, {"error": "protocol upgrades are not supported"}, False))
                        return
                    except httptools.HttpParserError as exc:
                        writer.write(_json_response(400, {"error": f"malformed request: {exc}"}, False))
                        return
                    if sink.in_head:
                        sink.head_size += len(data)
                        if sink.head_size > HEAD_LIMIT:
                            writer.write(_json_response(431, {"error": "request head over 64 KB"}, False))
                            return
                    if sink.body_size > MAX_REQUEST_BODY:
                        writer.write(_json_response(413, {"error": "request body too large"}, False))
                        return
                    if sink.expect_continue:
                        sink.expect_continue = False
                        if not sink.done:
                            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                req = sink.done.popleft()
                state[0] = True
                self.busy += 1
                try:
                    keep = await self._handle(req, writer, local)
                finally:
                    self.busy -= 1
                    state[0] = False
                    state[1] = time.monotonic()
                if not keep or self._draining:
                    return
                if writer.is_closing():
                    return
        except Exception:
            log.exception("client connection failed")
        finally:
            self._clients.pop(writer, None)
            with contextlib.suppress(Exception):
                if not writer.is_closing() and writer.can_write_eof():
                    await writer.drain()
            writer.close()

    async def _handle(self, req: Request, writer: asyncio.StreamWriter, local: bool) -> bool:
        """Answer one request; returns whether the client connection stays open."""
        keep = req.keep_alive and not self._draining
        path, _, _query = req.url.partition(b"?")
        if path == _STATUS and req.method == b"GET":
            if local:
                writer.write(_json_response(200, self.status(), keep))
            else:
                writer.write(_json_response(404, {"error": "not found"}, keep))
            return keep
        return await self._proxy(req, path, writer, keep)

    def _draw(self, req: Request) -> float:
        """0..100: below the candidate's percent goes to the candidate. Sticky modes hash the caller (crc32, the same
        in every process, unlike ``hash``) so one caller keeps meeting one version; absent key -> random."""
        cand = self.ep.candidate
        sticky = cand.sticky if cand else None
        key: bytes | None = None
        if sticky == "key":
            for name, value in req.headers:
                low = name.lower()
                if low == b"authorization" and value[:7].lower() == b"bearer ":
                    key = value[7:].strip()
                    break
                if low == b"x-api-key":
                    key = value.strip()
                    break
        elif sticky and sticky.startswith("header:"):
            want = sticky[7:].strip().lower().encode()
            for name, value in req.headers:
                if name.lower() == want:
                    key = value
                    break
        if key is None:
            return random.random() * 100.0
        return (zlib.crc32(key) % 10_000) / 100.0

    def _route(self, path: bytes, url: bytes, draw: float) -> tuple[str, int, str, bytes] | tuple[int, str]:
        """(role, version, upstream url, target) or (status, error)."""
        ep = self.ep
        if path.startswith(_VPREFIX):
            num, _, tail = url[len(_VPREFIX) :].partition(b"/")
            num, sep, query = num.partition(b"?")
            try:
                version = int(num)
            except ValueError:
                return 404, f"not a version: {num.decode('latin-1')!r}"
            up = ep.versions.get(version)
            if up is None:
                return 404, f"version {version} of {ep.name!r} is not running behind this endpoint"
            return "pinned", version, up, b"/" + tail + (b"?" + query if sep else b"")
        cand = ep.candidate
        if cand is not None and cand.mode == "split" and draw < cand.percent:
            return "candidate", cand.upstream.version, cand.upstream.url, url
        if ep.live is None:
            return 503, f"no live version of {ep.name!r}"
        return "live", ep.live.version, ep.live.url, url

    async def _proxy(self, req: Request, path: bytes, writer: asyncio.StreamWriter, keep: bool) -> bool:
        if path == _FEEDBACK and req.method == b"POST" and len(self.ep.versions) > 1:
            return await self._feedback(req, writer, keep)
        t0 = time.perf_counter()
        draw = self._draw(req) if self.ep.candidate is not None and self.ep.candidate.mode == "split" else 100.0
        retry_ok = req.method in _IDEMPOTENT or is_model_path(path)  # a prediction is a pure function of its input
        header_block = _header_block(req.headers, len(req.body), req.method)
        deadline = t0 + RETRY_S
        delay = 0.005
        last_error = ""
        while True:
            route = self._route(path, req.url, draw)
            if len(route) == 2:
                writer.write(_json_response(route[0], {"error": route[1]}, keep))  # type: ignore[misc]
                return keep
            role, version, url, target = route  # type: ignore[misc]
            cand = self.ep.candidate
            shadow = (
                cand is not None
                and cand.mode == "shadow"
                and role == "live"
                and is_model_path(path)
                and random.random() * 100.0 < cand.percent
            )
            generation = self.ep.generation
            inflight = self.inflight
            inflight[version] = inflight.get(version, 0) + 1
            try:
                ans = await exchange(
                    self.pool,
                    url,
                    _request_head(req.method, target, header_block),
                    req.body,
                    retry_ok=retry_ok,
                    is_head=req.method == b"HEAD",
                    client=writer,
                    client_keep=keep,
                    version=version,
                    capture=shadow,
                )
            except _Retry as exc:
                last_error = str(exc)
                if time.perf_counter() + delay < deadline and not self._stopping.is_set():
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.1)
                    self.reload(force=True)
                    continue
                return self._fail(writer, keep, t0, path, version, role, generation, last_error, False)
            except _Broken as exc:
                return self._fail(writer, keep, t0, path, version, role, generation, str(exc), exc.head_sent)
            finally:
                inflight[version] -= 1
            ms = (time.perf_counter() - t0) * 1000.0
            self._record(path, version, role, ans.status, ms, generation, ans.request_id)
            if shadow and cand is not None:
                self._enqueue_mirror(req, target, header_block, path, version, ans, ms, cand.upstream)
            return keep and ans.client_ok

    async def _feedback(self, req: Request, writer: asyncio.StreamWriter, keep: bool) -> bool:
        """Labels posted to the stable URL go to the version that answered each request (behind a split, or a
        version kept warm after a promotion): one call per version, the accepted counts added. A body that is not
        ``{"items": [...]}`` goes to the live version, which says what is wrong with it."""
        try:
            items = json.loads(req.body)["items"]
            ids = [str(item["request_id"]) for item in items]
        except (ValueError, KeyError, TypeError):
            ids = []
        live = self.ep.live.version if self.ep.live is not None else None
        found = {rid: self.answered[rid] for rid in ids if rid in self.answered}
        missing = [rid for rid in ids if rid not in found]
        if missing:
            found.update(await asyncio.to_thread(self._answered_in_log, missing))
        groups: dict[int, list[Any]] = {}
        for item, rid in zip(items if ids else [], ids, strict=True):
            version = found.get(rid, live)
            if version is None or version not in self.ep.versions:
                version = live
            groups.setdefault(version if version is not None else -1, []).append(item)
        if len(groups) <= 1:  # one version (or nothing to split): forwarded as it came
            target = next(iter(groups), -1)
            version = target if target != -1 else live
            url = self.ep.versions.get(version) if version is not None else None
            if version is None or url is None:
                writer.write(_json_response(503, {"error": f"no live version of {self.ep.name!r}"}, keep))
                return keep
            answer = await self._forward_feedback(req, writer, keep, version, url, req.body)
            return keep if answer is None else keep and answer.client_ok
        accepted: dict[int, int] = {}
        for version, part in sorted(groups.items()):
            body = json.dumps({"items": part}).encode()
            url = self.ep.versions.get(version)
            answer = None if url is None else await self._forward_feedback(req, None, keep, version, url, body)
            if answer is None or answer.status != 200:
                status = 502 if answer is None else answer.status
                error = _text(answer.body) if answer is not None else f"version {version} could not answer"
                refused = {"error": f"version {version} refused its labels: {error}", "accepted": accepted}
                writer.write(_json_response(status, refused, keep))
                return keep
            accepted[version] = int(json.loads(answer.body).get("accepted", 0))
        writer.write(_json_response(200, {"accepted": sum(accepted.values()), "by_version": accepted}, keep))
        return keep

    async def _forward_feedback(
        self, req: Request, client: asyncio.StreamWriter | None, keep: bool, version: int, url: str, body: bytes
    ) -> _Answer | None:
        """One feedback call to one version: streamed to ``client``, or buffered (``client`` None)."""
        head = _request_head(req.method, _FEEDBACK, _header_block(req.headers, len(body), req.method))
        try:
            return await exchange(
                self.pool, url, head, body, retry_ok=False, client=client, client_keep=keep, version=version,
                capture=client is None,
            )  # fmt: skip
        except (_Retry, _Broken) as exc:
            if client is not None:
                client.write(_json_response(502, {"error": f"version {version} could not answer: {exc}"}, keep))
            return None

    def _answered_in_log(self, request_ids: list[str]) -> dict[str, int]:
        """Versions that answered these ids, from the router's log (ids answered before this process started)."""
        found: dict[str, int] = {}
        try:
            con = sqlite3.connect(f"file:{self.path.parent / STORE_FILE}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error:
            return found
        try:
            for start in range(0, len(request_ids), 500):
                chunk = request_ids[start : start + 500]
                rows = con.execute(
                    f"SELECT request_id, version FROM served WHERE request_id IN ({','.join('?' * len(chunk))})"
                    " AND status = 200",
                    chunk,
                ).fetchall()
                found.update({str(rid): int(version) for rid, version in rows})
        except sqlite3.Error:
            pass
        finally:
            con.close()
        return found

    def _fail(
        self,
        writer: asyncio.StreamWriter,
        keep: bool,
        t0: float,
        path: bytes,
        version: int,
        role: str,
        generation: int,
        reason: str,
        head_sent: bool,
    ) -> bool:
        ms = (time.perf_counter() - t0) * 1000.0
        if reason == _CLIENT_GONE:  # not the version's fault: 499 (as nginx logs it), not counted by the watch
            self._record(path, version, role, 499, ms, generation, None)
            return False
        log.warning("502 for %s to version %d (%s): %s", path.decode("latin-1"), version, role, reason)
        self._record(path, version, role, 502, ms, generation, None)
        if head_sent:  # the answer had started: the client can only learn by the connection closing
            return False
        writer.write(
            _json_response(
                502,
                {"error": f"version {version} could not answer: {reason}"},
                keep,
                b"x-nbdeploy-version: %d\r\n" % version,
            )
        )
        return keep

    def _record(
        self, path: bytes, version: int, role: str, status: int, ms: float, generation: int, request_id: str | None
    ) -> None:
        now = time.time()
        self.served[version] = self.served.get(version, 0) + 1
        if request_id is not None and status == 200:
            answered = self.answered
            answered[request_id] = version
            if len(answered) > ANSWERED_KEPT:
                del answered[next(iter(answered))]
        self.store.served((now, request_id, path.decode("latin-1"), version, role, status, ms, generation))
        if self.access_log:
            log.info(
                "%s %s -> version %d (%s) %d %.2f ms", request_id, path.decode("latin-1"), version, role, status, ms
            )
        watch = self.ep.watch
        if watch is not None and watch.outcome is None and role == "live" and is_model_path(path):
            error = status >= 500 or status == 422  # 422: the model failed on input its schema accepts
            self.window.append((now, error, ms))
            if error:  # judged at once, not at the next tick: at 1000 req/s a tick is 50 failed callers
                self.window_errors += 1
                self._check_watch()

    # shadow ----------------------------------------------------------------------------------------------------

    def _enqueue_mirror(
        self,
        req: Request,
        target: bytes,
        header_block: bytes,
        path: bytes,
        live_version: int,
        ans: _Answer,
        live_ms: float,
        cand: contract.Upstream,
    ) -> None:
        if len(req.body) > MIRROR_MAX_BODY:
            self.store.count("mirror_dropped")
            return
        frame = path.startswith(_FRAME_PREFIX)
        item = _Mirror(
            ts=time.time(),
            target=target,
            method=req.method,
            header_block=header_block,
            body=req.body,
            inputs=None if frame else _text(req.body),
            live_version=live_version,
            live_status=ans.status,
            live_ms=live_ms,
            live_body=ans.body,
            request_id=ans.request_id or f"router-{uuid.uuid4().hex}",
            cand_version=cand.version,
            cand_url=cand.url,
        )
        try:
            self.mirror_q.put_nowait(item)
        except asyncio.QueueFull:
            self.store.count("mirror_dropped")

    async def _mirror_worker(self) -> None:
        """Sends copies to the candidate one at a time; whatever it does costs live callers nothing."""
        while True:
            item = await self.mirror_q.get()
            t0 = time.perf_counter()
            status: int | None = None
            body: bytes | None = None
            error: str | None = None
            try:
                ans = await asyncio.wait_for(
                    exchange(
                        self.mirror_pool,
                        item.cand_url,
                        _request_head(item.method, item.target, item.header_block),
                        item.body,
                        retry_ok=False,
                    ),
                    MIRROR_TIMEOUT_S,
                )
                status, body = ans.status, ans.body
            except TimeoutError:
                error = f"no answer in {MIRROR_TIMEOUT_S:g} s"
            except (_Retry, _Broken) as exc:
                error = str(exc)
            except Exception as exc:
                error = repr(exc)
            ms = (time.perf_counter() - t0) * 1000.0
            self.store.count("mirror_sent")
            self.store.mirrored(
                (
                    item.request_id,
                    item.ts,
                    item.target.partition(b"?")[0].decode("latin-1"),
                    item.inputs,
                    item.live_version,
                    item.live_status,
                    item.live_ms,
                    _text(item.live_body),
                    item.cand_version,
                    status,
                    ms if status is not None else None,
                    _text(body),
                    error,
                )
            )

    # watch -----------------------------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        """Every 50 ms: config changes, the watch rules; every few seconds: idle clients."""
        n = 0
        while True:
            await asyncio.sleep(RELOAD_EVERY_S)
            n += 1
            try:
                self.reload()
                self._check_watch()
                if n % 100 == 0:
                    self._close_idle_clients()
            except Exception:
                log.exception("ticker")

    def _close_idle_clients(self) -> None:
        limit = time.monotonic() - CLIENT_IDLE_S
        for writer, (busy, last) in list(self._clients.items()):
            if not busy and last < limit:
                writer.close()

    def _check_watch(self) -> None:
        watch = self.ep.watch
        if watch is None or watch.outcome is not None or self._watch_pending:
            return
        rules = {**DEFAULT_RULES, **{k: v for k, v in (watch.rules or {}).items() if v is not None}}
        if "max_p95_ms" not in (watch.rules or {}):
            rules["max_p95_ms"] = None
        now = time.time()
        window_s = float(rules["window_s"])
        win = self.window
        while win and win[0][0] < now - window_s:
            self.window_errors -= win.popleft()[1]
        reason = None
        if len(win) >= int(rules["min_requests"]):
            rate = self.window_errors / len(win)
            if rate > float(rules["max_error_rate"]):
                reason = f"error rate {rate:.2f} over {len(win)} requests in {window_s:g} s > {rules['max_error_rate']}"
            elif rules["max_p95_ms"] is not None:
                lat = sorted(ms for _, _, ms in win)
                p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
                if p95 > float(rules["max_p95_ms"]):
                    reason = f"p95 {p95:.1f} ms over {len(win)} requests in {window_s:g} s > {rules['max_p95_ms']} ms"
        if reason is not None:
            self._rollback(reason)
        elif now > watch.until:
            self._watch_pending = True
            asyncio.get_running_loop().run_in_executor(None, self._write_outcome, "kept", None)

    def _rollback(self, reason: str) -> None:
        """Traffic goes back to the previous version now (in memory), the file and the audit follow in a thread."""
        ep = self.ep
        watch = ep.watch
        assert watch is not None and ep.live is not None
        broken = ep.live.version
        log.warning("auto-rollback of %r: version %d -> %d: %s", ep.name, broken, watch.previous.version, reason)
        self._apply(
            replace(ep, live=watch.previous, candidate=None, watch=replace(watch, outcome="rolled-back", reason=reason))
        )
        self.store.count("rollbacks")
        self._watch_pending = True
        asyncio.get_running_loop().run_in_executor(None, self._write_outcome, "rolled-back", reason, broken)

    def _write_outcome(self, outcome: str, reason: str | None, broken: int | None = None) -> None:
        """Record the watch's outcome in endpoint.json (under ``contract.update``'s lock, so a write of the SDK in
        the same instant is not lost), then the audit event for a rollback."""
        previous: int | None = None

        def change(ep: Endpoint) -> Endpoint | None:
            nonlocal previous
            w = ep.watch
            if w is None or w.outcome is not None:
                return None  # the SDK changed the plan meanwhile: its file wins
            previous = w.previous.version
            if outcome == "kept":
                return replace(ep, watch=replace(w, outcome="kept"))
            return replace(ep, live=w.previous, candidate=None, watch=replace(w, outcome=outcome, reason=reason))

        try:
            contract.update(self.path, change)
        except Exception:
            log.exception("could not record the watch outcome in %s", self.path)
        finally:
            self._watch_pending = False
        if outcome == "rolled-back" and previous is not None:
            try:
                from nbdeploy.registry import Registry  # lazily: the router's hot path never needs it

                home = self.path.parent.parent.parent
                reg = Registry(home / "registry.db") if self.path.parent.parent.name == "deployments" else Registry()
                reg.event("auto-rollback", self.ep.name, broken, reason=reason, to=previous)
            except Exception:
                log.exception("could not record the auto-rollback audit event")

    # status ----------------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        ep = self.ep
        cand = ep.candidate
        watch = ep.watch
        c = self.store.counters
        return {
            "name": ep.name,
            "pid": os.getpid(),
            "port": ep.port,
            "generation": ep.generation,
            "live": ep.live.version if ep.live else None,
            "candidate": (
                {"version": cand.upstream.version, "mode": cand.mode, "percent": cand.percent, "sticky": cand.sticky}
                if cand
                else None
            ),
            "previous": watch.previous.version if watch else None,
            "watch": (
                {"until": watch.until, "outcome": watch.outcome, "reason": watch.reason, "window": len(self.window)}
                if watch
                else None
            ),
            "versions": sorted(ep.versions),
            "in_flight": {str(v): n for v, n in self.inflight.items() if n},
            "in_flight_total": self.busy,
            "served": {str(v): n for v, n in self.served.items()},
            "mirror": {
                "sent": c.get("mirror_sent", 0),
                "dropped": c.get("mirror_dropped", 0),
                "queued": self.mirror_q.qsize(),
            },
            "served_dropped": c.get("served_dropped", 0),
            "rollbacks": c.get("rollbacks", 0),
            "uptime_s": round(time.time() - self.started, 3),
        }


def run(endpoint_path: Path, host: str = "127.0.0.1", access_log: bool = False) -> None:
    """The process entry point: uvloop when importable, plain asyncio otherwise."""
    runner: Callable[[Any], Any] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass

    async def main() -> None:
        await Router(endpoint_path, host, access_log).run()

    runner(main())
