"""The protocol every target implements, and the readiness wait they share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

from ..registry import Record


@dataclass(frozen=True)
class Running:
    """What a target reports after starting a service."""

    url: str
    port: int | None = None
    pid: int | None = None


class Target(Protocol):
    name: str

    def deploy(self, record: Record, bento_path: str, port: int | None = None) -> Running: ...

    def status(self, record: Record) -> str: ...

    def logs(self, record: Record, lines: int = 200) -> str: ...

    def stop(self, record: Record) -> None: ...


def is_ready(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(url: str, alive: Callable[[], bool], deadline_s: float) -> bool:
    """Poll ``/readyz`` until it answers 200, the process dies, or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if is_ready(url, timeout=1.0):
            return True
        if not alive():
            return False
        time.sleep(0.05)
    return False
