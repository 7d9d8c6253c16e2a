"""The local target: ``bentoml serve`` of the bento as a background process on 127.0.0.1."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .. import config
from ..errors import TargetError
from ..package import bento_env
from ..registry import Record
from . import _process
from .base import Running, is_ready, wait_ready

READY_DEADLINE_S = 120.0


def _log_path(record: Record) -> Path:
    return config.deployment_dir(record.name, record.version) / "server.log"


class LocalTarget:
    name = "local"

    def deploy(self, record: Record, bento_path: str, port: int | None = None) -> Running:
        if port is None:
            port = _process.free_port()
        else:
            _process.check_port(port)
        log = _log_path(record)
        cmd = [sys.executable, "-m", "bentoml", "serve", bento_path, "--host", "127.0.0.1", "--port", str(port)]
        env = {**os.environ, **bento_env(), "BENTOML_HOME": str(config.home() / "bentoml")}
        pid = _process.spawn(cmd, log, env, cwd=log.parent)
        url = f"http://127.0.0.1:{port}"
        try:
            ready = wait_ready(url, lambda: _process.is_alive(pid, bento_path), READY_DEADLINE_S)
        except BaseException:  # interrupted: leave no orphan behind
            _process.stop_group(pid)
            raise
        if not ready:
            _process.stop_group(pid)
            raise TargetError(
                f"the service for '{record.name}' v{record.version} did not become ready on {url}",
                hint="server log:\n" + _process.tail(log, 30),
            )
        return Running(url=url, port=port, pid=pid)

    def _alive(self, record: Record) -> bool:
        return _process.is_alive(record.pid, record.bento_path or "bentoml")

    def status(self, record: Record) -> str:
        if not self._alive(record):
            return "stopped"
        return "running" if record.url and is_ready(record.url) else "unhealthy"

    def logs(self, record: Record, lines: int = 200) -> str:
        return _process.tail(_log_path(record), lines)

    def stop(self, record: Record) -> None:
        if self._alive(record):
            assert record.pid is not None
            _process.stop_group(record.pid)
        elif record.pid and _process.group_members(record.pid):
            _process.stop_group(record.pid)
        if record.pid and _process.group_members(record.pid):
            raise TargetError(f"could not stop process group {record.pid} of '{record.name}'")
