"""The protocol every target implements, and the readiness wait they share."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from ..registry import Record


@dataclass(frozen=True)
class Running:
    """What a target reports after starting a service."""

    url: str
    port: int | None = None
    pid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)  # merged into the registry record's info (image ids, ...)


class Target(Protocol):
    name: str

    def deploy(self, record: Record, bento_path: str, port: int | None = None) -> Running: ...

    def status(self, record: Record) -> str: ...

    def logs(self, record: Record, lines: int = 200) -> str: ...

    def stop(self, record: Record) -> None: ...


_probe_client: httpx.Client | None = None


def is_ready(url: str, timeout: float = 2.0) -> bool:
    global _probe_client
    if _probe_client is None:  # one client: a new one per poll would load the CA bundle every time
        _probe_client = httpx.Client(trust_env=False)
    try:
        return _probe_client.get(f"{url}/readyz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _never() -> bool:
    return False


def wait_ready(url: str, alive: Callable[[], bool], deadline_s: float, failed: Callable[[], bool] = _never) -> bool:
    """Poll ``/readyz`` until it answers 200, the service dies or reports failure, or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if is_ready(url, timeout=1.0):
            return True
        if not alive() or failed():
            return False
        time.sleep(0.05)
    return False


def check_python(record: Record, target_python: str) -> None:
    """Refuse to serve an artifact pickled under another Python major.minor (pickles are not portable)."""
    captured = str(record.info.get("lineage", {}).get("python", ""))
    if captured and captured.split(".")[:2] != target_python.split(".")[:2]:
        from ..errors import TargetError

        raise TargetError(
            f"'{record.name}' v{record.version} was captured with Python {captured}, "
            f"but the {record.target} target runs Python {target_python}",
            hint=f"serve it from a Python {'.'.join(captured.split('.')[:2])} environment, or redeploy from this one",
        )


#: deploy(limits=...) names and the variables the service reads them from.
LIMITS = {
    "max_rows": "NBDEPLOY_MAX_ROWS",
    "max_body_bytes": "NBDEPLOY_MAX_BODY_BYTES",
    "timeout_s": "NBDEPLOY_TIMEOUT_S",
    "max_concurrency": "NBDEPLOY_MAX_CONCURRENCY",
    "max_queue": "NBDEPLOY_MAX_QUEUE",
    "record_sample_rate": "NBDEPLOY_RECORD_SAMPLE_RATE",
    "record_retention_days": "NBDEPLOY_RECORD_RETENTION_DAYS",
}


def service_env(record: Record, root: str) -> dict[str, str]:
    """Variables the service reads; ``root`` is the deployment's folder as the service sees it.

    The folder holds ``keys.json`` (key hashes) and ``vN/`` (request log, reference sample) and is
    the host's ``NBDEPLOY_HOME/deployments/NAME``, mounted into containers.
    """
    env = {
        "NBDEPLOY_DATA_DIR": f"{root}/v{record.version}",
        "NBDEPLOY_KEYS_FILE": f"{root}/keys.json",
        "NBDEPLOY_AUTH": "required" if record.info.get("auth", True) else "off",
        # the hash the service checks the artifact against, from the registry, not from the bento it checks
        "NBDEPLOY_ARTIFACT_SHA256": str(record.info.get("sha256", "")),
    }
    if record.info.get("redact"):  # columns kept out of the request log; the salt stays in a file beside the keys
        env["NBDEPLOY_REDACT"] = json.dumps(record.info["redact"])
        env["NBDEPLOY_REDACT_SALT_FILE"] = f"{root}/redact.salt"
    for name, value in (record.info.get("limits") or {}).items():
        env[LIMITS[name]] = str(value)
    if os.environ.get("NBDEPLOY_ACCESS_LOG"):  # BentoML's line per request, off by default (it costs throughput)
        env["NBDEPLOY_ACCESS_LOG"] = os.environ["NBDEPLOY_ACCESS_LOG"]
    return env
