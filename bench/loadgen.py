"""A bounded load generator for loopback services: N client threads, each with one keep-alive
connection, for a fixed time or request count. It never targets anything but the URL it is given,
and it stops by itself. Used by the load test and the benchmarks.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

LOOPBACK = ("127.", "localhost", "[::1]", "::1")


@dataclass
class Result:
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # transport errors (no HTTP answer)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    @property
    def failed(self) -> int:
        return len(self.errors) + sum(n for code, n in self.statuses.items() if code != 200)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def run(
    url: str,
    body: bytes | Callable[[int], bytes],
    *,
    clients: int,
    seconds: float | None = None,
    requests: int | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Result:
    """POST ``body`` to ``url`` from ``clients`` threads until ``seconds`` pass or ``requests`` are sent."""
    host = urlparse(url).hostname or ""
    if not host.startswith(LOOPBACK):
        raise ValueError(f"the load generator only targets loopback addresses, not {host!r}")
    if seconds is None and requests is None:
        raise ValueError("bound the run: pass seconds= or requests=")
    hdrs = {"content-type": "application/json", **(headers or {})}
    lock = threading.Lock()
    result = Result(seconds=0.0)
    sent = [0]
    stop_at = time.monotonic() + seconds if seconds is not None else float("inf")

    def take() -> int | None:
        with lock:
            if requests is not None and sent[0] >= requests:
                return None
            sent[0] += 1
            return sent[0]

    def client() -> None:
        lat: list[float] = []
        codes: Counter[int] = Counter()
        errs: list[str] = []
        with httpx.Client(timeout=timeout, trust_env=False) as http:
            while time.monotonic() < stop_at:
                n = take()
                if n is None:
                    break
                payload = body(n) if callable(body) else body
                t0 = time.perf_counter()
                try:
                    resp = http.post(url, content=payload, headers=hdrs)
                    codes[resp.status_code] += 1
                except httpx.HTTPError as exc:
                    errs.append(f"{type(exc).__name__}: {exc}")
                    continue
                lat.append((time.perf_counter() - t0) * 1000)
        with lock:
            result.latencies_ms.extend(lat)
            result.statuses.update(codes)
            result.errors.extend(errs)

    started = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.monotonic() - started
    return result


def rss_mb(pids: list[int]) -> float:
    """Resident memory of the given processes, summed, in MiB (from /proc)."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return total / 1024
