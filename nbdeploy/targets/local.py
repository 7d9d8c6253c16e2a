"""The local target: ``bentoml serve`` of the bento as a background process on 127.0.0.1."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from .. import config
from ..errors import TargetError
from ..package import bento_env
from ..registry import Record
from . import _process
from .base import Running, Target, check_python, is_ready, service_env, wait_ready

READY_DEADLINE_S = 120.0
STARTUP_FAILED = "Application startup failed"


def _log_path(record: Record) -> Path:
    return config.deployment_dir(record.name, record.version) / "server.log"


def _startup_failed(log: Path, offset: int) -> bool:
    # BentoML keeps the arbiter alive when a worker's startup fails; the log says so at once. Only what this
    # start wrote counts: the log is appended to, and an earlier failed start must not fail the next one.
    return STARTUP_FAILED in _process.read_since(log, offset)


def _cause(log: Path, offset: int) -> str:
    """The most telling line of a failed start: nbdeploy's own refusal, else the last exception."""
    lines = _process.read_since(log, offset).splitlines()[-200:]
    for line in lines:
        if line.startswith("nbdeploy: "):
            return line.removeprefix("nbdeploy: ")
    errors = [ln for ln in lines if re.match(r"^[A-Za-z_.]+(Error|Exception)\b", ln)]
    return errors[-1] if errors else "see the server log below"


class LocalTarget(Target):
    name = "local"

    def deploy(self, record: Record, bento_path: str, port: int | None = None) -> Running:
        check_python(record, ".".join(map(str, sys.version_info[:3])))
        if port is None:
            port = _process.free_port()
        else:
            _process.check_port(port)
        log = _log_path(record)
        cmd = [sys.executable, "-m", "bentoml", "serve", bento_path, "--host", "127.0.0.1", "--port", str(port)]
        env = {
            **os.environ,
            **bento_env(),
            # one BentoML home per version: `bentoml serve` empties its home's Prometheus folder at start, and two
            # services sharing one would read (and wipe) each other's request counts
            "BENTOML_HOME": str(config.deployment_dir(record.name, record.version) / "bentoml"),
            # one worker beside the notebook's kernel, which needs the same cores (and each worker holds a copy of
            # the model); limits={"workers": N} or NBDEPLOY_WORKERS asks for more. Containers take one per core.
            "NBDEPLOY_WORKERS": "1",
            **service_env(record, str(log.parent.parent)),
        }
        offset = log.stat().st_size if log.exists() else 0
        pid = _process.spawn(cmd, log, env, cwd=log.parent)
        url = f"http://127.0.0.1:{port}"
        alive, failed = (lambda: _process.started_alive(pid)), (lambda: _startup_failed(log, offset))
        try:
            ready = wait_ready(url, alive, READY_DEADLINE_S, failed)
        except BaseException:  # interrupted: leave no orphan behind
            _process.stop_group(pid, bento_path)
            raise
        if not ready:
            _process.stop_group(pid, bento_path)
            raise TargetError(
                f"the service for '{record.name}' v{record.version} did not start: {_cause(log, offset)}",
                hint="server log:\n" + "\n".join(_process.read_since(log, offset).splitlines()[-30:]),
            )
        return Running(url=url, port=port, pid=pid)

    def start_beside(self, record: Record, bento_path: str) -> Running:
        return self.deploy(record, bento_path, None)

    def stop_instance(self, record: Record) -> None:
        """The other instance runs the same bento: stop this one's process tree by pid, not by command line."""
        _process.stop_tree(record.pid)

    def _alive(self, record: Record) -> bool:
        return _process.is_alive(record.pid, record.bento_path or "bentoml")

    def status(self, record: Record) -> str:
        """Called for versions the registry holds as running: a dead process means it crashed."""
        if not self._alive(record):
            return "failed"
        return "running" if record.url and is_ready(record.url) else "degraded"

    def logs(self, record: Record, lines: int = 200) -> str:
        return _process.tail(_log_path(record), lines)

    def stop(self, record: Record) -> None:
        """Stop the server and its workers, also those orphaned by a crashed server; idempotent."""
        marker = record.bento_path or ""
        pgid = record.pid if record.pid and _process.is_alive(record.pid, marker or "bentoml") else 0
        if marker and _process.members(pgid, marker):
            _process.stop_group(pgid, marker)
