"""A client that keeps calling a URL while versions swap behind it, and a poll with a deadline (no sleeps as
synchronisation): shared by the endpoint tests on each target."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from nbdeploy.router.contract import VERSION_HEADER


def until(check: Any, deadline_s: float = 20, what: str = "") -> Any:
    end = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < end, f"timed out waiting for {what or check}"
        time.sleep(0.05)


class Caller(threading.Thread):
    """A client sending one-row requests through the stable URL every ~20 ms, recording each answer."""

    def __init__(self, url: str, headers: dict[str, str], payload: dict[str, Any] | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.payload = payload or {"inputs": [{"a": 2.0}]}
        self.results: list[tuple[float, int | None, str | None, str | None]] = []  # (sent, status, version, error)
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(trust_env=False, timeout=30) as client:
            while not self.halt.is_set():
                sent = time.monotonic()
                try:
                    r = client.post(f"{self.url}/predict", json=self.payload, headers=self.headers)
                    self.results.append((sent, r.status_code, r.headers.get(VERSION_HEADER), None))
                except httpx.HTTPError as exc:
                    self.results.append((sent, None, None, f"{type(exc).__name__}: {exc}"))
                time.sleep(0.02)

    def since(self, t: float) -> list[tuple[float, int | None, str | None, str | None]]:
        return [r for r in list(self.results) if r[0] >= t]

    def after(
        self, t: float, n: int = 10, deadline_s: float = 20
    ) -> list[tuple[float, int | None, str | None, str | None]]:
        """The answers to requests sent after ``t``, once there are ``n`` of them."""
        until(lambda: len(self.since(t)) >= n, deadline_s, "answers")
        return self.since(t)

    def wait_for(self, n: int, deadline_s: float = 20) -> None:
        end = time.monotonic() + deadline_s
        start = len(self.results)
        while len(self.results) < start + n:
            assert time.monotonic() < end, "the caller stopped getting answers"
            time.sleep(0.02)
