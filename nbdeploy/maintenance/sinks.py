"""Alert sinks: where an incident's one notification goes.

The scheduler hands every sink the same plain JSON-able payload (``deployment``, ``version``, ``rule``, ``quantity``,
``state``, ``severity``, ``value``, ``threshold``, ``op``, ``incident``, ``window_start``, ``window_end``,
``summary``, ``evidence``, ``time``). Four kinds of sink take it:

- :class:`Webhook`: a JSON POST signed with HMAC-SHA256, so the receiver can tell it came from us
  (:func:`verify_signature` is the receiver's half);
- any URL with a scheme (``slack://``, ``mailto://``, ``json://``, ``discord://``...): handed to apprise, which
  speaks to many services at once so that nbdeploy writes no client of its own;
- ``"log"``: one JSON line per alert in the deployment's alert log, and a record on the ``nbdeploy.alerts`` logger;
- a Python callable: called with the payload (tests, custom code).

Secrets (the webhook's key, tokens inside apprise URLs, SMTP passwords) must never reach a log, an audit event or an
error text: :meth:`Sink.describe` shows only a scheme and a host that looks like a host, and every error text and
every record of the ``apprise`` logger is redacted against the secrets of the sinks built here.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httpx

from ..errors import NbdeployError, UsageError

if TYPE_CHECKING:
    import apprise

log = logging.getLogger("nbdeploy.alerts")

Payload = Mapping[str, Any]

#: what a redacted secret becomes in a text
REDACTED = "***"
#: shorter fragments of a URL are not redacted: replacing every "ab" would mangle the message more than it protects
_MIN_SECRET = 3

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HOSTNAME = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"  # a dotted name ending in a letters-only label
    r"|localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:.]+\]"  # or localhost, an IPv4 or a bracketed IPv6 literal
)


class DeliveryError(NbdeployError):
    """A sink could not deliver an alert (the text is already free of the sink's secrets)."""


@runtime_checkable
class Sink(Protocol):
    """Where an alert goes: ``describe()`` names it without secrets, ``send()`` raises when delivery failed."""

    def describe(self) -> str: ...

    def send(self, payload: Payload) -> None: ...


# -- secrets: what to hide, and hiding it --------------------------------------------------------------------------


def _split_netloc(netloc: str) -> tuple[str, str, str]:
    """(userinfo, host, port) without ``urlsplit``'s ``.port``, which raises on ``tgram://123:token/``."""
    userinfo, _, hostport = netloc.rpartition("@")
    m = re.fullmatch(r"(.*):(\d{1,5})", hostport)
    host, port = (m.group(1), m.group(2)) if m else (hostport, "")
    return userinfo, host, port


def _shown_host(host: str, port: str) -> str:
    """The host (and port) when it looks like a host name or address; ``""`` when it may be a token (Slack's, a
    Discord webhook id, a Telegram bot token, an ntfy topic all sit where the host goes)."""
    if not _HOSTNAME.fullmatch(host):
        return ""
    return f"{host}:{port}" if port else host


def _variants(pieces: Iterable[str]) -> set[str]:
    """Each piece as written, percent-decoded and percent-encoded: an error text may quote any of them."""
    out: set[str] = set()
    for p in pieces:
        out.update({p, urllib.parse.unquote(p), urllib.parse.quote(p, safe=""), urllib.parse.quote(p, safe="/@:")})
    return out


def _url_parts(url: str, *, keep: Iterable[str] = ()) -> set[str]:
    """Every fragment of ``url`` that may be secret: the URL itself, userinfo, a host that is not shown, path
    segments, query values and the fragment; tokens written ``id:secret`` also in their halves."""
    parts = urllib.parse.urlsplit(url)
    userinfo, host, port = _split_netloc(parts.netloc)
    raw: set[str] = {url, parts.query, parts.fragment, parts.path.strip("/")}
    if userinfo:
        raw.update({parts.netloc, userinfo, *userinfo.split(":", 1)})
    if not _shown_host(host, port):
        raw.update({parts.netloc, host, *host.split(":")})
    for segment in parts.path.split("/"):
        raw.update({segment, *segment.split(":")})
    raw.update(v for _, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    kept = set(keep)
    return {p for p in _variants(raw) if len(p) >= _MIN_SECRET and p not in kept}


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (longest first, so a token's parts do not leave its rest behind) replaced."""
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(s, REDACTED)
    return text


def _secrets_of(sink: object) -> set[str]:
    parts = getattr(sink, "_secret_parts", None)
    return set(parts()) if callable(parts) else set()


#: the sinks' secrets, for the redaction below: kept here, not on the filter, because the filter hangs off the
#: ``apprise`` logger, which every object holding a logger reaches (logging's manager knows all loggers): a model
#: captured later would carry them to the secret scan, and a deployed artifact must never hold them
_SECRETS: frozenset[str] = frozenset()  # replaced whole, never changed in place: a filter reads it without the lock
_SECRETS_LOCK = threading.Lock()


class _Redactor(logging.Filter):
    """Redacts the records of the ``apprise`` logger: apprise logs a URL it refuses whole, token and all
    (``Could not load Slack URL: slack://...``), and may echo a failed request's URL with its query."""

    def add(self, secrets: Iterable[str]) -> None:
        global _SECRETS
        with _SECRETS_LOCK:
            _SECRETS = _SECRETS | {s for s in secrets if len(s) >= _MIN_SECRET}

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _SECRETS
        if secrets:
            try:
                message = record.getMessage()
            except Exception:  # a malformed record: leave it to logging's own error handling
                return True
            clean = redact(message, secrets)
            if clean != message:
                record.msg, record.args = clean, None
        return True


_APPRISE_REDACTOR = _Redactor()
# A logger's filters run before its handlers, apprise's own log capture (its result's logs()) included.
logging.getLogger("apprise").addFilter(_APPRISE_REDACTOR)


# -- the payload as bytes -------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON's own types: numpy scalars become numbers, NaN and infinities ``null`` (strict receivers refuse
    ``NaN``), anything else unknown its ``str``."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return _plain(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def canonical_json(payload: Payload) -> bytes:
    """The payload as compact JSON with sorted keys: the exact bytes a webhook signs and a log line holds."""
    return json.dumps(_plain(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def alert_title(payload: Payload) -> str:
    """``[warning] churn: drift > 0.1 (firing)``: the subject of an e-mail, the heading of a chat message."""
    threshold = payload.get("threshold")
    t = f"{threshold:g}" if isinstance(threshold, int | float) else str(threshold)
    return (
        f"[{payload.get('severity', 'warning')}] {payload.get('deployment', '?')}: "
        f"{payload.get('rule') or payload.get('quantity', '?')} {payload.get('op', '?')} {t} "
        f"({payload.get('state', 'firing')})"
    )


def _utc(epoch: Any) -> str:
    if not isinstance(epoch, int | float) or not math.isfinite(epoch):
        return str(epoch)
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def alert_body(payload: Payload, *, max_evidence: int = 8, max_chars: int = 200) -> str:
    """The summary, then the numbers and the first few items of the evidence: enough to act on from a phone."""
    value = payload.get("value")
    shown = f"{value:g}" if isinstance(value, int | float) else str(value)
    lines = [str(payload.get("summary", "")).strip(), ""]
    lines.append(f"value {shown} (the rule fires at {payload.get('op', '?')} {payload.get('threshold')})")
    lines.append(f"deployment {payload.get('deployment')} v{payload.get('version')}, rule {payload.get('rule')}")
    lines.append(f"window {_utc(payload.get('window_start'))} to {_utc(payload.get('window_end'))}")
    lines.append(f"incident {payload.get('incident')}")
    evidence = payload.get("evidence")
    if isinstance(evidence, Mapping) and evidence:
        lines.append("")
        lines.append("evidence:")
        for i, (key, v) in enumerate(evidence.items()):
            if i == max_evidence:
                lines.append(f"  ... and {len(evidence) - max_evidence} more")
                break
            text = v if isinstance(v, str) else json.dumps(_plain(v), separators=(",", ":"), ensure_ascii=False)
            if len(text) > max_chars:
                text = text[: max_chars - 1] + "…"
            lines.append(f"  {key}: {text}")
    return "\n".join(lines).strip()


# -- webhook --------------------------------------------------------------------------------------------------------


def sign(secret: str | bytes, body: bytes, timestamp: str) -> str:
    """``sha256=<hex>``: HMAC-SHA256 over ``"{timestamp}." + body``; the timestamp is signed so that a recorded
    request cannot be replayed later (the receiver rejects stale timestamps)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str | bytes,
    body: bytes,
    timestamp: str,
    signature: str,
    tolerance_s: float = 300,
    *,
    now: float | None = None,
) -> bool:
    """For receivers: is ``signature`` (the ``X-Nbdeploy-Signature`` header) ours for exactly this ``body`` and
    ``timestamp`` (``X-Nbdeploy-Timestamp``), and is the timestamp within ``tolerance_s`` of now? Compared in
    constant time; never raises on malformed input."""
    if not isinstance(timestamp, str) or not re.fullmatch(r"\d{1,12}", timestamp):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        return False
    if not isinstance(signature, str) or not isinstance(body, bytes | bytearray):
        return False
    given = signature.strip()
    if not given.startswith("sha256="):
        given = "sha256=" + given
    expected = sign(secret, bytes(body), timestamp)
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


@dataclass(repr=False)
class Webhook:
    """A JSON POST signed with HMAC-SHA256 (``X-Nbdeploy-Signature``), retried on connection errors, 429 and 5xx.

    ``retries`` is the number of tries after the first; the waits between them double from ``backoff`` seconds
    (0.25, 0.5, 1...) up to 2 s, so a dead receiver costs at most ``(retries + 1) * timeout`` plus a few seconds.
    Each try is signed afresh (a new timestamp); ``X-Nbdeploy-Incident`` lets the receiver drop duplicates.
    """

    url: str
    secret: str
    timeout: float = 5.0
    retries: int = 3
    backoff: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not re.match(r"^https?://[^/?#]", self.url, re.IGNORECASE):
            raise UsageError(
                f"webhook URL {self.describe()!r}: give an http:// or https:// address",
                hint="for Slack, e-mail and other services, pass an apprise URL string (slack://..., mailto://...)",
            )
        if not self.secret:
            raise UsageError(
                f"webhook {self.describe()}: the secret is empty", hint="the receiver checks the HMAC with it"
            )
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0:
            raise UsageError(f"webhook {self.describe()}: timeout must be > 0, retries and backoff ≥ 0")
        _APPRISE_REDACTOR.add(self._secret_parts())  # httpx and urllib3 do not log here, but apprise may see it

    def __repr__(self) -> str:
        return f"Webhook({self.describe()!r}, timeout={self.timeout}, retries={self.retries})"

    __str__ = __repr__

    def describe(self) -> str:
        """``webhook https://host:port/path``: no userinfo, no query, no fragment, no secret."""
        try:
            parts = urllib.parse.urlsplit(str(self.url))
            _, host, port = _split_netloc(parts.netloc)
            hostport = f"{host}:{port}" if port else host
            return f"webhook {parts.scheme}://{hostport}{parts.path}"
        except ValueError:
            return "webhook (unreadable URL)"

    def _secret_parts(self) -> set[str]:
        parts = urllib.parse.urlsplit(str(self.url))
        userinfo, _, _ = _split_netloc(parts.netloc)
        found = {userinfo, *userinfo.split(":", 1), parts.query, parts.fragment}
        found.update(v for _, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        return {p for p in _variants(found) if len(p) >= _MIN_SECRET} | {str(self.secret)}

    def headers(self, body: bytes, payload: Payload, timestamp: str | None = None) -> dict[str, str]:
        """The request's headers, signature included (public so a receiver's tests can build a valid request)."""
        ts = timestamp if timestamp is not None else str(int(time.time()))
        return {
            "Content-Type": "application/json",
            "User-Agent": "nbdeploy-alerts",
            "X-Nbdeploy-Timestamp": ts,
            "X-Nbdeploy-Signature": sign(self.secret, body, ts),
            "X-Nbdeploy-Incident": str(payload.get("incident", "")),
        }

    def send(self, payload: Payload) -> None:
        """POST the payload; raises :class:`DeliveryError` once the tries are spent or on a 4xx (not retried: the
        receiver refused this request, and the same bytes will be refused again)."""
        body = canonical_json(payload)
        problem, tries = "", 0
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            for attempt in range(self.retries + 1):
                if attempt:
                    time.sleep(min(self.backoff * 2 ** (attempt - 1), 2.0))
                tries += 1
                try:
                    r = client.post(self.url, content=body, headers=self.headers(body, payload))
                except httpx.TransportError as e:  # refused, unreachable, timed out, cut off
                    problem = f"{type(e).__name__}: {e}"
                    continue
                if 200 <= r.status_code < 300:
                    return
                problem = f"HTTP {r.status_code} {r.text[:200].strip()}".strip()
                if r.status_code != 429 and r.status_code < 500:
                    break
        raise DeliveryError(
            redact(
                f"{self.describe()}: {problem} (after {tries} {'try' if tries == 1 else 'tries'})", self._secret_parts()
            )
        )


# -- apprise --------------------------------------------------------------------------------------------------------


def _notify_type(payload: Payload) -> apprise.NotifyType:
    """apprise's colour and icon: resolved is a success; else info, warning, or failure for critical. (An enum in
    apprise 2: its ``str()`` is ``NotifyType.FAILURE``, which apprise refuses, so the member itself is passed.)"""
    import apprise

    if payload.get("state") == "resolved":
        return apprise.NotifyType.SUCCESS
    return {"info": apprise.NotifyType.INFO, "critical": apprise.NotifyType.FAILURE}.get(
        str(payload.get("severity")), apprise.NotifyType.WARNING
    )


class AppriseSink:
    """One apprise URL: ``slack://...``, ``json://``, ``mailtos://smtp.example.com?to=ops@example.com`` (STARTTLS,
    port 587 unless given; an SMTP login goes before the host, as in any URL; ``mailto://`` is plain SMTP, port 25,
    so its password crosses the network in clear)...

    One apprise object per URL, so that ``deliver`` can tell which one failed. The URL is checked when the sink is
    built: a URL apprise refuses is a :class:`UsageError` naming the sink, never the URL's secrets.
    """

    def __init__(self, url: str) -> None:
        import apprise

        self._url = url
        m = _SCHEME.match(url)
        self._scheme = m.group(1).lower() if m else "?"
        _APPRISE_REDACTOR.add(self._secret_parts())  # before add(): apprise logs a refused URL whole
        asset = apprise.AppriseAsset(app_id="nbdeploy", app_desc="nbdeploy alerts")
        self._apprise = apprise.Apprise(asset=asset)
        if not self._apprise.add(url):
            raise UsageError(
                f"alert sink {self.describe()}: apprise does not accept this URL",
                hint=(
                    "check the scheme and the fields apprise's page for that service asks for; for a signed "
                    "webhook of your own, pass nbdeploy.Webhook(url, secret)"
                ),
            )

    def __repr__(self) -> str:
        return f"AppriseSink({self.describe()!r})"

    __str__ = __repr__

    def describe(self) -> str:
        """``slack://`` (its host is a token), ``mailto://smtp.example.com``, ``json://127.0.0.1:8080``."""
        _, host, port = _split_netloc(urllib.parse.urlsplit(self._url).netloc)
        return f"{self._scheme}://{_shown_host(host, port)}"

    def _secret_parts(self) -> set[str]:
        return _url_parts(self._url, keep={self.describe(), self.describe().split("://", 1)[1]})

    def send(self, payload: Payload) -> None:
        """Notify through apprise; apprise never raises here but answers false (a result object in apprise 2),
        with its reasons as log records: those become the error."""
        import apprise

        result = self._apprise.notify(
            body=alert_body(payload),
            title=alert_title(payload),
            notify_type=_notify_type(payload),
            body_format=apprise.NotifyFormat.TEXT,
        )
        if result:
            return
        reasons: list[str] = []
        logs = getattr(result, "logs", None)  # apprise ≥ 2: the records of this call (already redacted)
        if callable(logs):
            for entry in logs():
                message = str(getattr(entry, "message", entry)).strip()
                if message and message not in reasons:
                    reasons.append(message)
        why = "; ".join(reasons[-3:]) or "apprise reported a failure (its log, logger 'apprise', says why)"
        raise DeliveryError(redact(f"{self.describe()}: {why}", self._secret_parts()))


# -- log and callable -----------------------------------------------------------------------------------------------

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}


class LogSink:
    """One JSON line per alert, appended to ``path`` (the record that outlives any chat), and a record on the
    ``nbdeploy.alerts`` logger at the alert's severity (a resolved alert at INFO)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"LogSink({str(self.path)!r})"

    def describe(self) -> str:
        return f"log {self.path}"

    def send(self, payload: Payload) -> None:
        line = canonical_json(payload).decode() + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:  # one write of one line: appends do not interleave
            f.write(line)
        level = (
            logging.INFO
            if payload.get("state") == "resolved"
            else _LEVELS.get(str(payload.get("severity")), logging.WARNING)
        )
        log.log(level, "%s: %s", alert_title(payload), payload.get("summary", ""), extra={"alert": dict(payload)})


class CallableSink:
    """A Python function called with a copy of the payload (so it cannot change what the next sink sees)."""

    def __init__(self, fn: Callable[[dict[str, Any]], Any]) -> None:
        self.fn = fn

    def __repr__(self) -> str:
        return f"CallableSink({self.describe()!r})"

    def describe(self) -> str:
        name = getattr(self.fn, "__qualname__", None) or type(self.fn).__qualname__
        module = getattr(self.fn, "__module__", None) or type(self.fn).__module__
        return f"python:{module}.{name}"

    def send(self, payload: Payload) -> None:
        self.fn(copy.deepcopy(dict(payload)))


# -- building and delivering ----------------------------------------------------------------------------------------


def build_sinks(notify: list[str | Webhook | Callable[..., Any]] | None, log_path: Path) -> list[Sink]:
    """The sinks of ``notify``, checked now so a typo fails when the alerts are set up, not at 3 a.m.

    ``None`` means ``["log"]``: an alert is never lost silently; ``[]`` means no sink at all. A string is ``"log"``
    (the JSON lines of ``log_path``) or a URL for apprise; a :class:`Webhook`, any object with ``describe()`` and
    ``send()``, or a callable are taken as they are.
    """
    items: list[Any] = ["log"] if notify is None else list(notify)
    sinks: list[Sink] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if item.strip().lower() == "log":
                sinks.append(LogSink(log_path))
            elif _SCHEME.match(item.strip()):
                sinks.append(AppriseSink(item.strip()))
            else:
                shown = item if len(item) <= 12 and ":" not in item and "@" not in item else f"{item[:4]}..."
                raise UsageError(
                    f"alert sink #{i + 1} ({shown!r}) is neither 'log' nor a URL",
                    hint="write 'log', an apprise URL such as 'slack://...' or 'mailto://...', or Webhook(url, secret)",
                )
        elif isinstance(item, Sink):
            sinks.append(item)
        elif callable(item):
            sinks.append(CallableSink(item))
        else:
            raise UsageError(
                f"alert sink #{i + 1} is a {type(item).__name__}",
                hint="give 'log', an apprise URL string, a Webhook or a function of the payload",
            )
    return sinks


def deliver(sinks: Iterable[Sink], payload: Payload) -> list[dict[str, Any]]:
    """Send ``payload`` to every sink in turn and never raise: one dead sink must not silence the others.

    Returns, per sink, ``{"sink": describe(), "ok": bool, "error": str | None}``: the error text is redacted
    against the sink's secrets, so the list can go to an audit event or a log as it is.
    """
    out: list[dict[str, Any]] = []
    for sink in sinks:
        try:
            name = sink.describe()
        except Exception as e:  # a custom sink's describe() failing must not stop the others either
            name = f"{type(sink).__name__} (describe() failed: {type(e).__name__})"
        try:
            sink.send(payload)
        except Exception as e:
            text = str(e) if isinstance(e, DeliveryError) else f"{type(e).__name__}: {e}"
            error = redact(text, _secrets_of(sink))
            log.warning("alert %s not delivered to %s: %s", payload.get("incident"), name, error)
            out.append({"sink": name, "ok": False, "error": error})
        else:
            out.append({"sink": name, "ok": True, "error": None})
    return out
