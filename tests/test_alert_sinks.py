"""Alert sinks against real receivers: an HTTP server and an SMTP server on 127.0.0.1, each in a thread.

Every secret here (webhook keys, tokens, SMTP passwords) is made at run time by ``secrets``: no literal that looks
like a credential sits in this file, and each test checks that the secret shows in no description, repr, error
text or log record.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import notebook

from nbdeploy.errors import UsageError
from nbdeploy.maintenance.sinks import (
    AppriseSink,
    CallableSink,
    LogSink,
    Webhook,
    alert_title,
    build_sinks,
    canonical_json,
    deliver,
    sign,
    verify_signature,
)


def alert(**over: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "deployment": "churn",
        "version": 3,
        "rule": "drift",
        "quantity": "drift",
        "state": "firing",
        "severity": "warning",
        "value": 0.23,
        "threshold": 0.1,
        "op": ">",
        "incident": f"churn-drift-{secrets.token_hex(4)}",
        "window_start": 1_700_000_000,
        "window_end": 1_700_000_300,
        "summary": "Feature tenure drifted (effect 0.23 > 0.1) in the last two 5 min windows.",
        "evidence": {"features": {"tenure": {"effect": 0.23, "q": 0.001}}, "rows": 1200},
        "time": 1_700_000_301,
    }
    payload.update(over)
    return payload


def free_port() -> int:
    """A port nothing listens on (bound and released: connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- a real HTTP receiver --------------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every request; answers with the queued statuses in turn, then 200. ``echo``: the body of a non-2xx
    answer is the request's path and query (as some servers do), to show error texts do not leak it."""

    port: int = 0
    requests: list[Request] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    echo: bool = False

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                rec.requests.append(Request("POST", self.path, dict(self.headers.items()), body))
                status = rec.statuses.pop(0) if rec.statuses else 200
            answer = self.path.encode() if rec.echo and status >= 300 else b"{}"
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- a real SMTP server ----------------------------------------------------------------------------------------------


@dataclass
class Mailbox:
    port: int
    user: str
    password: str
    messages: list[tuple[str, list[str], Message, bool]] = field(default_factory=list)  # from, to, message, authed


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    box = Mailbox(free_port(), f"alerts-{secrets.token_hex(3)}", f"pw-{secrets.token_urlsafe(12)}")

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            content = envelope.original_content or envelope.content
            box.messages.append(
                (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(content), session.authenticated)
            )
            return "250 OK"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            box.user.encode(),
            box.password.encode(),
        )
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    controller = Controller(
        Handler(), hostname="127.0.0.1", port=box.port, authenticator=authenticator, auth_require_tls=False
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


# -- the signed webhook -----------------------------------------------------------------------------------------------


def test_webhook_arrives_signed_and_the_receiver_verifies_it(receiver: Receiver) -> None:
    secret = secrets.token_urlsafe(24)
    payload = alert()
    hook = Webhook(receiver.url(), secret)
    assert deliver([hook], payload) == [{"sink": f"webhook {receiver.url()}", "ok": True, "error": None}]

    (req,) = receiver.requests
    assert req.path == "/hook"
    assert req.body == canonical_json(payload)  # compact, sorted keys: the bytes that were signed
    assert json.loads(req.body) == payload
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Nbdeploy-Incident"] == payload["incident"]
    ts, sig = req.headers["X-Nbdeploy-Timestamp"], req.headers["X-Nbdeploy-Signature"]
    assert abs(int(ts) - time.time()) < 60
    assert sig.startswith("sha256=") and len(sig) == len("sha256=") + 64
    assert verify_signature(secret, req.body, ts, sig)
    assert verify_signature(secret, req.body, ts, sig.removeprefix("sha256="))  # a bare hex digest too

    # what a receiver must refuse
    tampered = req.body.replace(b'"severity":"warning"', b'"severity":"info"')
    assert tampered != req.body
    assert not verify_signature(secret, tampered, ts, sig)
    assert not verify_signature(secret + "x", req.body, ts, sig)
    assert not verify_signature(secret, req.body, str(int(ts) + 1), sig)  # the timestamp is signed too
    assert not verify_signature(secret, req.body, "not-a-time", sig)
    assert not verify_signature(secret, req.body, ts, "sha256=" + "0" * 64)
    assert not verify_signature(secret, req.body, ts, "")
    # a stale (replayed) request, though signed right: refused outside the tolerance, taken inside it
    old = str(int(time.time()) - 3600)
    old_sig = sign(secret, req.body, old)
    assert not verify_signature(secret, req.body, old, old_sig)
    assert verify_signature(secret, req.body, old, old_sig, tolerance_s=7200)
    assert not verify_signature(secret, req.body, ts, sig, now=int(ts) + 301)  # from the future, seen from ts
    assert not verify_signature(secret, req.body, ts, sig, now=int(ts) - 301)


def test_webhook_retries_a_5xx_and_each_try_is_signed(receiver: Receiver) -> None:
    secret = secrets.token_urlsafe(24)
    receiver.statuses = [500, 503]
    payload = alert()
    started = time.monotonic()
    (result,) = deliver([Webhook(receiver.url(), secret, backoff=0.05)], payload)
    assert result["ok"] is True, result
    assert time.monotonic() - started < 2
    assert len(receiver.requests) == 3  # 500, 503, then 200
    for req in receiver.requests:
        assert req.body == canonical_json(payload)
        assert req.headers["X-Nbdeploy-Incident"] == payload["incident"]  # the receiver's key to drop duplicates
        assert verify_signature(
            secret, req.body, req.headers["X-Nbdeploy-Timestamp"], req.headers["X-Nbdeploy-Signature"]
        )


def test_webhook_gives_up_after_its_retries_and_does_not_retry_a_4xx(receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    (result,) = deliver([Webhook(receiver.url(), secrets.token_hex(16), retries=2, backoff=0.01)], alert())
    assert result["ok"] is False and "HTTP 500" in result["error"] and "after 3 tries" in result["error"]
    assert len(receiver.requests) == 3

    receiver.requests.clear()
    receiver.statuses = [401]
    (result,) = deliver([Webhook(receiver.url(), secrets.token_hex(16), backoff=0.01)], alert())
    assert result["ok"] is False and "HTTP 401" in result["error"] and "after 1 try" in result["error"]
    assert len(receiver.requests) == 1  # refused: the same bytes would be refused again


def test_unreachable_webhook_is_reported_not_raised_and_leaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    secret, token = secrets.token_urlsafe(24), secrets.token_urlsafe(18)
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook?token={token}"
    hook = Webhook(url, secret, timeout=1.0, retries=2, backoff=0.01)
    seen: list[dict[str, Any]] = []
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        results = deliver([hook, CallableSink(seen.append)], alert())  # the dead sink does not stop the next one
    assert time.monotonic() - started < 3
    assert [r["ok"] for r in results] == [False, True] and len(seen) == 1
    error = results[0]["error"]
    assert "ConnectError" in error and "after 3 tries" in error
    assert results[0]["sink"] == f"webhook http://127.0.0.1:{port}/hook"  # host and path; no query
    for text in (error, results[0]["sink"], repr(hook), str(hook), hook.describe(), caplog.text):
        assert secret not in text and token not in text


def test_an_error_text_echoing_the_url_does_not_leak_its_token(receiver: Receiver) -> None:
    """Servers answer a 404 with the path they were asked for; the error text quotes the answer, redacted."""
    token, password = secrets.token_urlsafe(18), secrets.token_urlsafe(12)
    receiver.statuses, receiver.echo = [404], True
    url = f"http://ops:{password}@127.0.0.1:{receiver.port}/hook?token={token}"
    (result,) = deliver([Webhook(url, secrets.token_hex(16))], alert())
    assert result["ok"] is False and "HTTP 404" in result["error"] and "/hook" in result["error"]
    assert receiver.requests[0].path == f"/hook?token={token}"  # the server did see (and echo) the token
    assert token not in result["error"] and password not in result["error"] and "***" in result["error"]
    assert password not in result["sink"] and token not in result["sink"]


def test_webhook_refuses_what_it_cannot_send() -> None:
    with pytest.raises(UsageError, match="http:// or https://"):
        Webhook("ftp://example.com/x", "k" * 16)
    with pytest.raises(UsageError, match="secret is empty"):
        Webhook("https://example.com/x", "")


# -- apprise --------------------------------------------------------------------------------------------------------


def test_apprise_json_url_really_posts_the_alert(receiver: Receiver) -> None:
    payload = alert(severity="critical")
    sinks = build_sinks([f"json://127.0.0.1:{receiver.port}/alerts"], Path("unused.log"))
    assert [s.describe() for s in sinks] == [f"json://127.0.0.1:{receiver.port}"]
    assert deliver(sinks, payload) == [{"sink": f"json://127.0.0.1:{receiver.port}", "ok": True, "error": None}]

    (req,) = receiver.requests  # apprise's own JSON shape: version, title, message, type, attachments
    assert req.path == "/alerts"
    sent = json.loads(req.body)
    assert sent["title"] == "[critical] churn: drift > 0.1 (firing)" == alert_title(payload)
    assert sent["type"] == "failure"  # critical is apprise's failure
    assert sent["message"].startswith(payload["summary"])
    assert payload["incident"] in sent["message"] and "tenure" in sent["message"]

    receiver.requests.clear()
    deliver(sinks, alert(state="resolved"))
    assert json.loads(receiver.requests[0].body)["type"] == "success"


def test_apprise_failure_is_an_error_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    password = secrets.token_urlsafe(14)
    url = f"json://ops:{password}@127.0.0.1:{free_port()}/alerts"
    with caplog.at_level(logging.DEBUG):
        (sink,) = build_sinks([url], Path("unused.log"))
        (result,) = deliver([sink], alert())
    assert result["ok"] is False
    assert result["sink"].startswith("json://127.0.0.1:")
    assert "connection error" in result["error"].lower()  # apprise's own reason, from its result's log
    for text in (result["error"], result["sink"], repr(sink), caplog.text):
        assert password not in text


def test_a_url_apprise_refuses_fails_early_naming_the_sink_not_the_token(caplog: pytest.LogCaptureFixture) -> None:
    token = secrets.token_hex(12).upper()
    with caplog.at_level(logging.DEBUG), pytest.raises(UsageError) as info:
        build_sinks(["log", f"slack://{token}"], Path("unused.log"))  # Slack needs three tokens
    assert "slack://" in str(info.value) and "does not accept" in str(info.value)
    assert token not in str(info.value)
    # apprise itself logs the refused URL whole ("Could not load Slack URL: slack://..."): redacted on its logger
    assert any(r.name == "apprise" and r.levelno >= logging.ERROR for r in caplog.records)
    assert token not in caplog.text

    with pytest.raises(UsageError, match="neither 'log' nor a URL"):
        build_sinks(["slack"], Path("unused.log"))
    with pytest.raises(UsageError, match="is a int"):
        build_sinks([42], Path("unused.log"))  # type: ignore[list-item]


def test_descriptions_show_a_scheme_and_a_host_never_a_token() -> None:
    a, b, c = (secrets.token_hex(5).upper(), secrets.token_hex(5).upper(), secrets.token_hex(12))
    slack = f"slack://{a}/{b}/{c}/#alerts"
    discord_id, discord_token = str(secrets.randbelow(10**17) + 10**17), secrets.token_urlsafe(40)
    discord = f"discord://{discord_id}/{discord_token}"
    password = secrets.token_urlsafe(14)
    mail = f"mailtos://ops:{password}@smtp.example.com?to=oncall@example.com"
    sinks = build_sinks([slack, discord, mail], Path("unused.log"))
    assert [s.describe() for s in sinks] == ["slack://", "discord://", "mailtos://smtp.example.com"]
    for sink in sinks:
        for text in (sink.describe(), repr(sink), str(sink)):
            for secret in (a, b, c, discord_id, discord_token, password):
                assert secret not in text


# -- e-mail through apprise to a real SMTP server ------------------------------------------------------------------


def test_mailto_sends_the_alert_to_a_local_smtp_server(smtp_server: Mailbox) -> None:
    box = smtp_server
    url = f"mailto://{box.user}:{box.password}@127.0.0.1:{box.port}?from=alerts@example.com&to=oncall@example.com"
    (sink,) = build_sinks([url], Path("unused.log"))
    assert sink.describe() == f"mailto://127.0.0.1:{box.port}"
    payload = alert()
    assert deliver([sink], payload)[0]["ok"] is True

    ((sender, to, message, authed),) = box.messages
    assert sender == "alerts@example.com" and to == ["oncall@example.com"]
    assert authed  # apprise logged in with the URL's user and password
    assert message["Subject"] == alert_title(payload)
    text = message.get_payload(decode=True) if not message.is_multipart() else None
    if text is None:
        text = next(p.get_payload(decode=True) for p in message.walk() if p.get_content_type() == "text/plain")
    assert isinstance(text, bytes)
    assert payload["summary"] in text.decode() and payload["incident"] in text.decode()


def test_mailto_with_a_wrong_password_fails_without_showing_it(
    smtp_server: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    box = smtp_server
    wrong = f"pw-{secrets.token_urlsafe(12)}"
    url = f"mailto://{box.user}:{wrong}@127.0.0.1:{box.port}?from=alerts@example.com&to=oncall@example.com"
    with caplog.at_level(logging.DEBUG):
        (result,) = deliver(build_sinks([url], Path("unused.log")), alert())
    assert result["ok"] is False and result["error"]
    assert box.messages == []
    for text in (result["error"], result["sink"], caplog.text):
        assert wrong not in text and box.password not in text


# -- the log line and the callable ----------------------------------------------------------------------------------


def test_log_sink_appends_one_json_line_and_a_log_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "churn" / "alerts.log"
    sinks = build_sinks(["log"], path)
    assert isinstance(sinks[0], LogSink) and sinks[0].describe() == f"log {path}"
    first, second = alert(), alert(state="resolved", value=0.02)
    with caplog.at_level(logging.INFO, logger="nbdeploy.alerts"):
        assert deliver(sinks, first)[0]["ok"] and deliver(sinks, second)[0]["ok"]
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [first, second]
    records = [r for r in caplog.records if r.name == "nbdeploy.alerts"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO]  # resolved is news, not a warning
    assert "[warning] churn: drift > 0.1 (firing)" in records[0].getMessage()

    # None means the log alone: an alert is never lost silently
    (default,) = build_sinks(None, path)
    assert isinstance(default, LogSink)


def test_callable_sink_gets_a_copy_and_its_exception_is_reported(tmp_path: Path) -> None:
    got: list[dict[str, Any]] = []

    def keep(payload: dict[str, Any]) -> None:
        payload["evidence"]["rows"] = -1  # cannot change what the next sink sees
        got.append(payload)

    def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError("pager down")

    payload = alert()
    results = deliver(build_sinks([keep, broken, "log"], tmp_path / "alerts.log"), payload)
    assert [r["ok"] for r in results] == [True, False, True]
    assert results[1]["sink"].endswith("broken") and results[1]["error"] == "RuntimeError: pager down"
    assert got[0]["evidence"]["rows"] == -1 and payload["evidence"]["rows"] == 1200
    assert json.loads((tmp_path / "alerts.log").read_text()) == payload


def test_canonical_json_is_strict_json() -> None:
    body = canonical_json(alert(value=float("nan"), evidence={"b": 1, "a": float("inf")}))
    parsed = json.loads(body, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert parsed["value"] is None and list(parsed["evidence"]) == ["a", "b"]
    assert b" " not in body.replace(b"Feature tenure drifted (effect 0.23 > 0.1) in the last two 5 min windows.", b"")


def test_apprise_sink_type_is_built_for_url_strings(receiver: Receiver) -> None:
    (sink,) = build_sinks([f"json://127.0.0.1:{receiver.port}/x"], Path("unused.log"))
    assert isinstance(sink, AppriseSink)


def test_the_sinks_secrets_are_not_reachable_from_a_captured_logger() -> None:
    """A notebook object that holds a logger reaches every logger (logging's manager), the ``apprise`` one and its
    filter included: the sinks' secrets must not ride along into a deployed artifact's secret scan."""
    from nbdeploy.capture import secrets as scanner
    from nbdeploy.capture import serialize

    password = secrets.token_urlsafe(12)
    build_sinks([f"json://alerts:{password}@127.0.0.1:9/hook", Webhook("http://127.0.0.1:9/h", secrets.token_hex(16))],
                Path("unused.log"))  # fmt: skip

    ns = notebook(
        """
        import logging
        log = logging.getLogger("churn")

        def predict(df):
            log.info("predicting %d rows", len(df))
            return [0] * len(df)
        """
    )
    fn = ns["predict"]
    assert scanner.scan(fn, serialize.dump(fn).data) == []
