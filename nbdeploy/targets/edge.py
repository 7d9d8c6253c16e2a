"""The edge target: the model as an ONNX bundle, served by the bundle's own onnxruntime-only server.

The bundle is exported from the bento's artifact and checked against the deploy-time reference
sample, then ``server.py`` runs as a background process on 127.0.0.1 (its own process group,
tracked by PID). ``NBDEPLOY_EDGE_PYTHON`` picks the interpreter (default: this one); it needs only
onnxruntime and numpy.

The sha256 of the bundle's manifest is recorded at export (``info["edge"]["manifest_sha256"]``) and given to
the server on every start, from the record, never from the bundle: a bundle changed on disk does not start.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import config
from ..errors import TargetError
from ..registry import Record
from . import _process
from .base import Running, Target, is_ready, service_env, wait_ready

READY_DEADLINE_S = 60.0
BUNDLE = "edge"


def _dir(record: Record) -> Path:
    return config.deployment_dir(record.name, record.version)


def _server(record: Record) -> Path:
    return _dir(record) / BUNDLE / "server.py"


class EdgeTarget(Target):
    name = "edge"

    def prepare(self) -> dict[str, Any]:
        """Fail before the build when the converters are missing."""
        for module, dist in (("skl2onnx", "skl2onnx"), ("onnxruntime", "onnxruntime")):
            try:
                __import__(module)
            except ImportError:
                raise TargetError(f"the edge target needs {dist}", hint=f"pip install {dist}") from None
        return {}

    def deploy(self, record: Record, bento_path: str, port: int | None = None) -> Running:
        server = _server(record)
        info: dict[str, Any] = {}
        expected = (record.state.get("edge") or {}).get("manifest_sha256")
        if not server.exists() or not expected:  # a rollback serves the bundle made at deploy, as recorded then
            from ..edge.from_record import export_record  # the converters only when a bundle is made

            made = export_record(replace(record, bento_path=bento_path), server.parent)
            expected = made.manifest_sha256
            info = {"edge": {"bundle": str(made.path), "size_bytes": made.size_bytes}}
            info["edge"].update(max_abs_difference=made.max_difference, manifest_sha256=expected)
        if port is None:
            port = _process.free_port()
        else:
            _process.check_port(port)
        log = _dir(record) / "server.log"
        python = os.environ.get("NBDEPLOY_EDGE_PYTHON") or sys.executable
        # -I: files put beside server.py cannot shadow the modules it imports
        cmd = [python, "-I", str(server), "--host", "127.0.0.1", "--port", str(port)]
        env = {**os.environ, **service_env(record, str(log.parent.parent)), "NBDEPLOY_MANIFEST_SHA256": expected}
        pid = _process.spawn(cmd, log, env, cwd=server.parent)
        url = f"http://127.0.0.1:{port}"
        try:
            ready = wait_ready(url, lambda: _process.is_alive(pid, str(server)), READY_DEADLINE_S)
        except BaseException:
            _process.stop_group(pid, str(server))
            raise
        if not ready:
            _process.stop_group(pid, str(server))
            raise TargetError(
                f"the edge server for '{record.name}' v{record.version} did not start",
                hint="server log:\n" + _process.tail(log, 30),
            )
        return Running(url=url, port=port, pid=pid, info=info)

    def status(self, record: Record) -> str:
        if not _process.is_alive(record.pid, str(_server(record))):
            return "failed"
        return "running" if record.url and is_ready(record.url) else "degraded"

    def logs(self, record: Record, lines: int = 200) -> str:
        return _process.tail(_dir(record) / "server.log", lines)

    def stop(self, record: Record) -> None:
        marker = str(_server(record))
        pgid = record.pid if record.pid and _process.is_alive(record.pid, marker) else 0
        if _process.members(pgid, marker):
            _process.stop_group(pgid, marker)
