"""The container target: the version's service image (``nbdeploy.images``), run with podman or docker.

The image starts from a local base image instead of BentoML's default ``python:X.Y-slim`` plus build-essential
and git: nothing is pulled, and the image is half the size. The container publishes its port on 127.0.0.1 only,
restarts on failure, and runs under an init so a stop is quick.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import config
from ..errors import TargetError
from ..images import BENTO_UID, SERVICE_PORT, Engine, ImageBuilder, image_tag, recorded
from ..package import bento_env
from ..registry import Record
from . import _process
from .base import Running, Target, is_ready, service_env, wait_ready

__all__ = ["BENTO_UID", "SERVICE_PORT", "ContainerTarget", "container_name", "image_tag"]

READY_DEADLINE_S = 120.0
EXPORT_TIMEOUT_S = 1800.0
RESTART = "unless-stopped"
DATA_MOUNT = "/var/lib/nbdeploy"  # deployments/NAME inside the container: API key hashes, request log
_UP = {"created", "configured", "initialized", "running"}
STARTUP_FAILED = "Application startup failed"


def container_name(record: Record) -> str:
    return f"nbdeploy-{record.name}-v{record.version}"


def _other_name(record: Record) -> str:
    """The name a restart beside the running container takes: the one it does not have."""
    first = container_name(record)
    return f"{first}-b" if (recorded(record).get("container") or first) == first else first


def _dir(record: Record) -> Path:
    return config.deployment_dir(record.name, record.version)


class ContainerTarget(Target):
    """Run a version's image with ``engine`` (podman, docker; default: the first that works), built on
    ``base_image`` (default: NBDEPLOY_BASE_IMAGE, else nbdeploy's own)."""

    name = "container"

    def __init__(self, engine: str | None = None, base_image: str | None = None) -> None:
        self._images = ImageBuilder(engine=engine, base_image=base_image)

    def prepare(self) -> dict[str, Any]:
        """Check engine and base image before anything is built; return the bento's image options."""
        return self._images.prepare()

    # -- the Target contract -------------------------------------------------------------------------------------

    def deploy(self, record: Record, bento_path: str, port: int | None = None) -> Running:
        return self._run(record, port, container_name(record))

    def start_beside(self, record: Record, bento_path: str) -> Running:
        """A second container of the version (the names alternate between ``…-vN`` and ``…-vN-b``)."""
        return self._run(record, None, _other_name(record))

    def _run(self, record: Record, port: int | None, name: str) -> Running:
        engine = self._images.engine_for(record)
        if port is None:
            port = _process.free_port()
        else:
            _process.check_port(port)
        info = {"engine": engine.name, **self._images.image(engine, record)}
        self._clear_name(engine, name)
        labels = {"nbdeploy.name": record.name, "nbdeploy.version": str(record.version), "nbdeploy.home": _home()}
        cmd = ["run", "-d", "--name", name, "--init", "--restart", RESTART, "--pull", "never"]
        cmd += ["-p", f"127.0.0.1:{port}:{SERVICE_PORT}"]
        cmd += [a for k, v in labels.items() for a in ("--label", f"{k}={v}")]
        cmd += ["-v", _data_volume(record)]
        env = {**bento_env(), **service_env(record, DATA_MOUNT)}
        if os.getuid() != 0:  # rootless: the service's files belong to a sub-uid; keep them readable to this user
            env["NBDEPLOY_UMASK"] = "022"
        cmd += [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        t0 = time.perf_counter()
        container_id = engine.run([*cmd, info["image_id"]]).stdout.strip()
        url = f"http://127.0.0.1:{port}"
        try:
            ready = wait_ready(url, lambda: _alive(engine, name), READY_DEADLINE_S, _startup_failed(engine, name))
        except BaseException:  # interrupted: leave no container behind
            _remove(engine, name, _dir(record))
            raise
        if not ready:
            log = _remove(engine, name, _dir(record))
            raise TargetError(
                f"the container for '{record.name}' v{record.version} did not become ready on {url}",
                hint="container log:\n" + _process.tail(log, 30),
            )
        info.update(container=name, container_id=container_id, ready_s=round(time.perf_counter() - t0, 2))
        return Running(url=url, port=port, info={"container": info})

    def status(self, record: Record) -> str:
        """Called for versions the registry holds as running: a container gone or exited means it failed."""
        state = _state(self._images.engine_for(record), record)
        if state is None or state[0] not in _UP | {"restarting", "paused"}:
            return "failed"
        return "running" if state[0] == "running" and record.url and is_ready(record.url) else "degraded"

    def logs(self, record: Record, lines: int = 200) -> str:
        engine = self._images.engine_for(record)
        name = recorded(record).get("container") or container_name(record)
        if engine.container_state(name) is not None:
            return _container_logs(engine, name, lines)
        return _process.tail(_dir(record) / "container.log", lines)

    def stop(self, record: Record) -> None:
        engine = self._images.engine_for(record)
        name = recorded(record).get("container") or container_name(record)
        _remove(engine, name, _dir(record))
        if engine.container_state(name) is not None:
            raise TargetError(
                f"could not remove container {name} of '{record.name}'", hint=f"`{engine.name} rm -f {name}`"
            )

    # -- extras --------------------------------------------------------------------------------------------------

    def export(self, record: Record, path: str | Path) -> list[Path]:
        """Write the image archive (``ENGINE load -i``) and the bento archive (``bentoml import``) into ``path``."""
        rec = recorded(record)
        engine = self._images.engine_for(record)
        if not rec.get("image_id") or engine.image_id(rec["image_id"]) is None:
            raise TargetError(
                f"'{record.name}' v{record.version} has no image in {engine.name}",
                hint="deploy it with target='container' (or roll back to it) to build the image first",
            )
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"nbdeploy-{record.name}-v{record.version}"
        image_archive = out / f"{stem}.image.tar"
        image_archive.unlink(missing_ok=True)
        engine.run(["save", "-o", str(image_archive), rec["image"]], timeout=EXPORT_TIMEOUT_S)
        return [image_archive, _export_bento(record, out / f"{stem}.bento")]

    # -- helpers -------------------------------------------------------------------------------------------------

    def _clear_name(self, engine: Engine, name: str) -> None:
        """Remove a leftover container of this name made from this NBDEPLOY_HOME; refuse to touch anyone else's."""
        if engine.container_state(name) is None:
            return
        owner = engine.run(["container", "inspect", "--format", '{{index .Config.Labels "nbdeploy.home"}}', name])
        if owner.stdout.strip() != _home():
            raise TargetError(
                f"a container named {name} already exists (not made from this NBDEPLOY_HOME)",
                hint=f"remove it (`{engine.name} rm -f {name}`) or deploy under another name",
            )
        engine.remove(name, grace_s=0)


def _data_volume(record: Record) -> str:
    """``deployments/NAME`` (keys.json, vN/) mounted where ``service_env`` says, for the image's user alone.

    As root, the name's folder, vN/, keys.json and the salt are handed to that user (uid 1034), owner-only. Rootless,
    the host user cannot give them away: they are opened to others, inside an NBDEPLOY_HOME that stays 0700.
    """
    version_dir = _dir(record)
    name_dir = version_dir.parent
    private = [f for f in (name_dir / "keys.json", name_dir / "redact.salt") if f.exists()]
    try:
        for path in (name_dir, version_dir, *private):
            os.chown(path, BENTO_UID, BENTO_UID)
    except PermissionError:
        name_dir.chmod(0o755)
        version_dir.chmod(0o777)
        for path in private:
            path.chmod(0o644)
    return f"{version_dir.parent}:{DATA_MOUNT}"


def _home() -> str:
    return str(config.home().resolve())


def _state(engine: Engine, record: Record) -> tuple[str, int] | None:
    return engine.container_state(recorded(record).get("container") or container_name(record))


def _alive(engine: Engine, name: str) -> bool:
    """Still starting or up; a restart during startup counts as a crash."""
    state = engine.container_state(name)
    return state is not None and state[0] in _UP and state[1] == 0


def _startup_failed(engine: Engine, name: str) -> Callable[[], bool]:
    """BentoML keeps its arbiter (so the container) up when the service fails to start: read the log, once a second."""
    last = [0.0]

    def check() -> bool:
        if time.monotonic() - last[0] < 1.0:
            return False
        last[0] = time.monotonic()
        return STARTUP_FAILED in _container_logs(engine, name, 40)

    return check


def _container_logs(engine: Engine, name: str, lines: int) -> str:
    proc = subprocess.run(
        [engine.binary, "logs", "--tail", str(lines), name],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=engine.env(), timeout=60,
    )  # fmt: skip
    return proc.stdout.rstrip("\n")


def _remove(engine: Engine, name: str, keep_logs_in: Path) -> Path:
    """Save the container's log beside the deployment (``logs()`` still works after stop), then remove it."""
    log = keep_logs_in / "container.log"
    if engine.container_state(name) is not None:
        with contextlib.suppress(OSError):  # a log we cannot keep must not keep the container alive
            log.write_text(_container_logs(engine, name, 5000) + "\n")
        engine.remove(name)
    return log


def _export_bento(record: Record, dest: Path) -> Path:
    import bentoml
    from bentoml._internal.bento.bento import BentoStore

    if not record.bento_tag:
        raise TargetError(f"'{record.name}' v{record.version} has no bento")
    dest.unlink(missing_ok=True)
    path = bentoml.bentos.export_bento(record.bento_tag, str(dest), _bento_store=BentoStore(str(config.bento_store())))
    return Path(path)
