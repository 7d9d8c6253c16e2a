"""The base class every target subclasses, the errors it raises for what it cannot do, and the readiness wait.

Why a base class: the callers (``deploy``, the handle, the lifecycle) call every capability plainly, and a
target that lacks one says so in one clear error, instead of each caller probing for methods.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from ..errors import NotSupported, TargetError
from ..registry import Record


@dataclass(frozen=True)
class Running:
    """What a target reports after starting a service."""

    url: str
    port: int | None = None
    pid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)  # merged into the registry record's info (image ids, ...)


#: What each optional capability is for, to say which target to deploy to instead.
_PURPOSE = {
    "scale": ("runs as one service there", "to run several replicas"),
    "export": ("has no image to export", "to get an image archive"),
    "describe": ("has no cluster state to describe", "to see replicas, pods and events"),
}


class Target(ABC):
    """Where a version runs. ``deploy``, ``status``, ``logs`` and ``stop`` are required; the rest have defaults.

    The constructor's keywords are the target's options (``deploy(..., engine=...)`` or ``target_options=``);
    it must also work without any: status, logs, stop and rollback make the target with none, from what
    ``deploy`` recorded in the record's target state (``Running.info`` -> ``Record.state``).
    """

    name: ClassVar[str] = ""
    #: None if ``deploy(port=...)`` chooses the local port; else why the target takes none (the error's hint).
    no_port: ClassVar[str | None] = None

    @classmethod
    def options(cls) -> frozenset[str]:
        """The option names this target takes: its constructor's keyword parameters."""
        params = inspect.signature(cls.__init__).parameters.values()
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return frozenset(p.name for p in params if p.kind in kinds and p.name != "self")

    def prepare(self) -> dict[str, Any]:
        """Check what the target needs before anything is built; return options for ``build_bento``."""
        return {}

    def check_port_option(self, port: int | None) -> None:
        """Refuse ``port=`` on a target that chooses its own address (before the build, and again at deploy)."""
        if port is not None and self.no_port:
            raise TargetError(f"port= is not for the {self.name} target", hint=self.no_port)

    @abstractmethod
    def deploy(self, record: Record, bento_path: str, port: int | None = None) -> Running:
        """Start ``record``'s bento; return once it answers ``/readyz``, else raise (leaving nothing behind)."""

    @abstractmethod
    def status(self, record: Record) -> str:
        """``running``, ``degraded``, ``starting``, ``stopped`` or ``failed``, for a version recorded as running."""

    @abstractmethod
    def logs(self, record: Record, lines: int = 200) -> str:
        """The last ``lines`` of the service's log."""

    @abstractmethod
    def stop(self, record: Record) -> None:
        """Stop the version and leave nothing of it running; idempotent."""

    def start_beside(self, record: Record, bento_path: str) -> Running | None:
        """A second instance of the running ``record`` on a port of its own, or None where a target cannot run
        two (then a restart stops and starts in place). The router switches to it, drains the first, and
        ``stop_instance`` stops the first: a restart the callers of the stable URL do not notice."""
        return None

    def stop_instance(self, record: Record) -> None:
        """Stop the one instance ``record`` describes (its pid or container), not the others of its version."""
        self.stop(record)

    def scale(self, record: Record, n: int) -> dict[str, Any]:
        """Run ``n`` replicas; return the record's new target info."""
        raise self.unsupported("scale", record)

    def export(self, record: Record, path: str | Path) -> list[Path]:
        """Write the version's image (and bento) archives into the folder ``path``; return their paths."""
        raise self.unsupported("export", record)

    def describe(self, record: Record) -> dict[str, Any]:
        """Live state beyond ``status`` (replicas, pods, events), for ``Deployment.info()``."""
        raise self.unsupported("describe", record)

    def unsupported(self, verb: str, record: Record) -> NotSupported:
        """The error for a capability this target has not, naming the targets that have it."""
        from . import supporting

        what, purpose = _PURPOSE.get(verb, ("", ""))
        where = f"'{record.name}' v{record.version}" + (f" {what}" if what else "")
        others = supporting(verb)
        hint = (
            f"{verb} is for the {' or '.join(others)} target: deploy with target='{others[0]}' {purpose}".rstrip()
            if others
            else f"no registered target supports {verb}"
        )
        target = self.name or type(self).__name__
        return NotSupported(f"{verb} is not supported on the {target} target: {where}", hint=hint)


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
    captured = str(record.info.lineage.get("python", ""))
    if captured and captured.split(".")[:2] != target_python.split(".")[:2]:
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
    "workers": "NBDEPLOY_WORKERS",  # processes serving the version (default: one per usable core, up to 8)
}


def service_env(record: Record, root: str) -> dict[str, str]:
    """Variables the service reads; ``root`` is the deployment's folder as the service sees it.

    The folder holds ``keys.json`` (key hashes) and ``vN/`` (request log, reference sample) and is
    the host's ``NBDEPLOY_HOME/deployments/NAME``, mounted into containers.
    """
    env = {
        "NBDEPLOY_DATA_DIR": f"{root}/v{record.version}",
        "NBDEPLOY_KEYS_FILE": f"{root}/keys.json",
        "NBDEPLOY_AUTH": "required" if record.info.auth else "off",
        # the hash the service checks the artifact against, from the registry, not from the bento it checks
        "NBDEPLOY_ARTIFACT_SHA256": record.info.sha256,
    }
    compiled = record.info.compiled or {}
    if compiled.get("manifest_sha256"):  # the compiled model's anchor, from the registry as the artifact's is
        env["NBDEPLOY_COMPILED_SHA256"] = compiled["manifest_sha256"]
    if record.info.redact:  # columns kept out of the request log; the salt stays in a file beside the keys
        env["NBDEPLOY_REDACT"] = json.dumps(record.info.redact)
        env["NBDEPLOY_REDACT_SALT_FILE"] = f"{root}/redact.salt"
    for name, value in record.info.limits.items():
        env[LIMITS[name]] = str(value)
    # the session's own settings reach every target (BentoML's access log line is off by default: it costs
    # throughput); a deploy's limits win
    for passed in ("NBDEPLOY_ACCESS_LOG", "NBDEPLOY_WORKERS"):
        if os.environ.get(passed):
            env.setdefault(passed, os.environ[passed])
    return env
