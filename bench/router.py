"""What the stable URL costs: one-row predict p50/p95 through the endpoint router vs straight to the version.

    python bench/router.py [--n 3000] [--rounds 6]

Upstreams are uvicorn (httptools + uvloop, the HTTP stack BentoML serves with) running a tiny ASGI app that answers
``POST /predict`` with a one-row JSON prediction and an ``x-request-id``, so the table isolates the router's own cost
from model time. Version 1 is live; version 2 is the shadow candidate in the "shadow" rows. Requests are sequential
over one keep-alive connection (httpx), direct and routed interleaved in rounds so machine drift hits both alike.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nbdeploy.router import contract  # noqa: E402

APP = r"""
import json, sys, uuid
VERSION = int(sys.argv[2])

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    rows = json.loads(body or b"{}").get("inputs", [])
    data = json.dumps({"predictions": [r.get("x", 0) * 2 for r in rows]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
        (b"x-request-id", uuid.uuid4().hex.encode())]})
    await send({"type": "http.response.body", "body": data})

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", loop="uvloop", http="httptools")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1)
            return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def timings(client: httpx.Client, url: str, n: int) -> list[float]:
    body = b'{"inputs": [{"x": 1.5}]}'
    headers = {"content-type": "application/json"}
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.post(url, content=body, headers=headers)
        out.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {r.text}")
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000, help="requests per row of the table")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nbdeploy-bench-router-"))
    (tmp / "app.py").write_text(APP)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ups = {}
        for version in (1, 2):
            port = free_port()
            procs.append(subprocess.Popen([sys.executable, str(tmp / "app.py"), str(port), str(version)]))
            ups[version] = contract.Upstream(version, f"http://127.0.0.1:{port}")
        for up in ups.values():
            wait_http(up.url + "/livez")
        path = tmp / contract.ENDPOINT_FILE
        ep = contract.Endpoint(name="bench", port=free_port(), live=ups[1], versions={v: u.url for v, u in ups.items()})
        contract.write(path, ep)
        router = subprocess.Popen(
            [sys.executable, "-m", "nbdeploy.router", "--endpoint", str(path)], cwd=ROOT, stderr=subprocess.DEVNULL
        )
        procs.append(router)
        stable = f"http://127.0.0.1:{ep.port}"
        wait_http(stable + contract.STATUS_PATH)

        results: dict[str, list[float]] = {}
        per = max(1, args.n // args.rounds)
        for mode in ("plain", "shadow"):
            if mode == "shadow":
                ep.candidate = contract.Candidate(ups[2], "shadow", 100.0)
                contract.write(path, ep)
                deadline = time.monotonic() + 5
                while httpx.get(stable + contract.STATUS_PATH).json()["generation"] != ep.generation:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the router did not pick up the shadow config")
                    time.sleep(0.02)
            with httpx.Client(timeout=30) as direct, httpx.Client(timeout=30) as routed:
                timings(direct, ups[1].url + "/predict", 300)  # warm up both paths
                timings(routed, stable + "/predict", 300)
                for _ in range(args.rounds):
                    results.setdefault(f"direct ({mode})", []).extend(timings(direct, ups[1].url + "/predict", per))
                    results.setdefault(f"router ({mode})", []).extend(timings(routed, stable + "/predict", per))
        status = httpx.get(stable + contract.STATUS_PATH).json()

        print(f"one-row POST /predict, sequential keep-alive, {per * args.rounds} requests per row\n")
        print(f"| {'path':<18} | {'p50 ms':>7} | {'p95 ms':>7} | {'added p50 µs':>12} | {'added %':>7} |")
        print(f"|{'-' * 20}|{'-' * 9}|{'-' * 9}|{'-' * 14}|{'-' * 9}|")
        for mode in ("plain", "shadow"):
            d = results[f"direct ({mode})"]
            r = results[f"router ({mode})"]
            dp50, rp50 = statistics.median(d) * 1000, statistics.median(r) * 1000
            print(f"| {'direct (' + mode + ')':<18} | {dp50:7.3f} | {pct(d, 0.95):7.3f} | {'':>12} | {'':>7} |")
            added = (rp50 - dp50) * 1000
            print(
                f"| {'router (' + mode + ')':<18} | {rp50:7.3f} | {pct(r, 0.95):7.3f} | {added:12.0f} |"
                f" {100 * (rp50 - dp50) / dp50:6.1f}% |"
            )
        m = status["mirror"]
        print(f"\nshadow copies: sent {m['sent']}, dropped {m['dropped']}, queued {m['queued']}")
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
