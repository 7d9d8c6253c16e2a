"""API keys: made at deploy, kept by the SDK in the owner-only registry; the service sees hashes only.

The hashes live in ``deployments/NAME/keys.json``, which the service re-reads when it changes:
rotation writes old and new hashes, switches the SDK to the new key once the service accepts it,
then drops the old hash, so no request in flight fails.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path

import httpx

from . import config
from .errors import TargetError
from .runtime.guard import digest

PREFIX = "nbd_"
KEYS_FILE = "keys.json"


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def keys_path(name: str) -> Path:
    path = config.home() / "deployments" / name
    path.mkdir(parents=True, exist_ok=True)
    return path / KEYS_FILE


def write_hashes(name: str, hashes: list[str]) -> None:
    """Atomically replace the accepted hashes (the service never reads a half-written file)."""
    path = keys_path(name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    with os.fdopen(fd, "w") as fh:
        json.dump({"sha256": hashes}, fh)
    os.chmod(tmp, 0o644)  # the service (maybe another uid in a container) must read the hashes
    os.replace(tmp, path)


def read_hashes(name: str) -> list[str]:
    path = keys_path(name)
    return json.loads(path.read_text()).get("sha256", []) if path.exists() else []


def masked(key: str | None) -> str:
    return f"{key[:8]}…{key[-4:]}" if key else "-"


def wait_until(url: str, key: str, accepted: bool, deadline_s: float = 10.0) -> None:
    """Poll until the service accepts (or refuses) ``key``; it re-reads the hash file twice a second."""
    end = time.monotonic() + deadline_s
    with httpx.Client(trust_env=False) as http:
        while time.monotonic() < end:
            try:
                resp = http.post(f"{url}/predict", json={"inputs": []}, headers={"authorization": f"Bearer {key}"})
            except httpx.HTTPError:
                resp = None
            if resp is not None and (resp.status_code != 401) == accepted:
                return
            time.sleep(0.05)
    state = "accept the new key" if accepted else "refuse the old key"
    raise TargetError(f"the service at {url} did not {state} within {deadline_s:.0f} s")


__all__ = ["digest", "masked", "new_key", "read_hashes", "wait_until", "write_hashes"]
