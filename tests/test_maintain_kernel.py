"""The scheduler outlives the notebook: a real Jupyter kernel deploys and sets up maintenance with a signed webhook,
the kernel is shut down, and the scheduler goes on judging windows. A flapping error rate then reaches a real local
webhook receiver exactly once per incident, signed with the secret the kernel gave. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from callers import until

import nbdeploy
from nbdeploy.maintenance.handle import _marker
from nbdeploy.targets._process import is_alive

pytestmark = pytest.mark.slow

NAME = "night-shift"


class Receiver:
    """A webhook receiver on 127.0.0.1 recording every POST (headers and body)."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/nbdeploy"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def kernel() -> Iterator[Any]:
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    try:
        yield km
    finally:
        if km.is_alive():
            km.shutdown_kernel(now=True)
        nbdeploy.Maintenance(NAME).stop(quiet=True)
        for rec in nbdeploy.deployments(all_versions=True).itertuples():
            if rec.name == NAME and rec.recorded in {"running", "candidate", "standby"}:
                nbdeploy.get(NAME, rec.version).stop()


def _run(km: Any, code: str) -> str:
    """Execute ``code`` in the kernel; its stdout, or the traceback as a failure."""
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        reply = client.execute_interactive(code, output_hook=hook, timeout=300)
        assert reply["content"]["status"] == "ok", "".join(out)
        return "".join(out)
    finally:
        client.stop_channels()


CELL = """
import numpy as np, pandas as pd
import nbdeploy
from sklearn.linear_model import LogisticRegression

X = pd.DataFrame({{"a": np.random.default_rng(0).normal(size=300)}})
model = LogisticRegression().fit(X, (X["a"] > 0).astype(int))
dep = nbdeploy.deploy(model, name={name!r}, sample=X)
rule = nbdeploy.AlertRule("error_rate", above=0.2, window_requests=10, min_rows=5, clear_windows=3)
m = dep.maintain(rules=[rule], notify=[nbdeploy.Webhook({url!r}, secret={secret!r})], every="0.2s")
print(m.pid)
"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("nbdeploy"))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_the_scheduler_survives_the_kernel_and_a_flapping_signal_notifies_once(kernel, receiver, tmp_path):
    secret = secrets.token_hex(16)  # made up here: no secret lives in the test file
    pid = int(_run(kernel, CELL.format(name=NAME, url=receiver.url, secret=secret)).split()[-1])
    assert is_alive(pid, _marker(NAME))
    kernel.shutdown_kernel(now=False)
    assert not kernel.is_alive()
    gone = time.time()
    m = nbdeploy.Maintenance(NAME)
    until(lambda: float(m.state().get("heartbeat", 0)) > gone + 0.5, 20, "a heartbeat after the kernel is gone")
    assert m.pid == pid
    assert m.in_flight() == f"{NAME}: watching 1 rule"  # what %deployments and `nbdeploy list` print under the table

    dep = nbdeploy.get(NAME)
    good, bad = {"inputs": [{"a": 0.3}]}, {"inputs": [{"b": 0.3}]}  # bad: the column is missing (400)
    with httpx.Client(trust_env=False, timeout=30, headers=dep.headers()) as http:

        def window(errors: int) -> None:
            for i in range(10):
                r = http.post(f"{dep.endpoint_url}/predict", json=bad if i < errors else good)
                assert r.status_code == (400 if i < errors else 200), r.text

        for errors in (5, 0, 5, 0, 5, 0, 0, 0):  # flapping: the incident opens once and closes after 3 clear
            window(errors)

    def resolved() -> list[dict[str, Any]]:
        return [e for e in nbdeploy.audit(NAME).to_dict(orient="records") if e["action"] == "alert-resolved"]

    until(resolved, 30, "the incident to close")
    events = nbdeploy.audit(NAME).to_dict(orient="records")
    fired = [e for e in events if e["action"] == "alert-fired"]
    assert len(fired) == 1 and fired[0]["detail"]["notified"] is True
    assert fired[0]["detail"]["sinks"][0]["ok"] is True
    assert fired[0]["detail"]["value"] == pytest.approx(0.5)
    assert resolved()[0]["detail"]["incident"] == fired[0]["detail"]["incident"]
    assert len(receiver.received) == 1  # one incident, one message, however often the signal flapped
    headers, body = receiver.received[0]
    headers = {k.lower(): v for k, v in headers.items()}
    assert nbdeploy.verify_signature(secret, body, headers["x-nbdeploy-timestamp"], headers["x-nbdeploy-signature"])
    assert not nbdeploy.verify_signature("not-" + secret, body, headers["x-nbdeploy-timestamp"],
                                         headers["x-nbdeploy-signature"])  # fmt: skip
    payload = json.loads(body)
    assert payload["rule"] == "error_rate" and payload["state"] == "firing" and payload["deployment"] == NAME
    assert payload["incident"] == headers["x-nbdeploy-incident"] == fired[0]["detail"]["incident"]
    assert secret not in json.dumps(events)  # the secret stays in the spec, out of the audit log
    # the gauges the generated Prometheus rules read, on the scheduler's own /metrics
    from prometheus_client.parser import text_string_to_metric_families

    scraped = {
        (s.name, s.labels.get("rule")): s.value
        for f in text_string_to_metric_families(httpx.get(m.metrics_url, trust_env=False).text)
        for s in f.samples
    }
    assert scraped[("nbdeploy_alert_value", "error_rate")] == 0.0  # the last window was clean
    assert (
        scraped[("nbdeploy_alert_firing", "error_rate")] == 0.0
        and scraped[("nbdeploy_alert_breached", "error_rate")] == 0.0
    )
    # the terminal sees the same: status, the Prometheus rules file, and the stop
    shown = _cli("maintenance", NAME)
    assert shown.returncode == 0 and f"{NAME}: watching 1 rule" in shown.stdout and "/metrics" in shown.stdout
    history = _cli("maintenance", NAME, "--history").stdout
    assert "alert-fired v1" in history and "alert-resolved v1" in history
    rules_file = tmp_path / "alerts.rules.yml"
    assert _cli("maintenance", NAME, "--rules-file", str(rules_file)).returncode == 0
    assert 'nbdeploy_alert_value{deployment="night-shift",rule="error_rate"} > 0.2' in rules_file.read_text()
    stopped = _cli("maintenance", NAME, "--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert m.pid is None and not is_alive(pid, _marker(NAME))
    # after a reboot (or a stop) the saved spec starts again, the webhook's secret with it, and resumes its state
    again = _cli("maintenance", NAME, "--start")
    assert again.returncode == 0 and m.running() and m.pid != pid, again.stderr
    assert m.status()["last"]["error_rate"] is not None  # the windows judged before the stop are remembered
    m.stop()
    assert m.pid is None
    assert nbdeploy.audit(NAME)["action"].iloc[-1] == "maintain-stopped"
