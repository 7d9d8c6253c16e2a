"""A version's service image: its bento containerized by BentoML on the local base image, built once per version.

The container target runs this image and the kubernetes target pushes it; both hold an ``ImageBuilder``, so the
engine choice, the check before the bento is built and the reuse of a version's image are written once. What a
build made is recorded under the record's ``info["container"]`` (engine, image, image_id, build_s, size_bytes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import config
from ..errors import ImageBuildError, TargetError
from ..package import bento_env
from ..registry import Record
from . import base, engines
from .engines import Engine

BUILD_TIMEOUT_S = 1800.0
SERVICE_PORT = 3000  # BentoML's port inside the image
BENTO_UID = 1034  # the user BentoML's Dockerfile creates and runs as
_KEPT = ("image", "image_id", "build_s", "size_bytes")


def image_tag(record: Record) -> str:
    """The image's name: the bento's tag (``nbdeploy-NAME:vVERSION-SHA``), lowercase as engines want it."""
    return (record.bento_tag or f"nbdeploy-{record.name}:v{record.version}").lower()


def recorded(record: Record) -> dict[str, Any]:
    """What the version's image build recorded (``info["container"]``), empty if it was never built."""
    return dict(record.state.get("container") or {})


def bento_image_options(base_ref: str) -> dict[str, Any]:
    """``build_bento`` options making BentoML's Dockerfile start from ``base_ref`` (no apt step, nothing pulled)."""
    return {"image": {"base_image": base_ref, "distro": "custom", "python_version": base.session_python()}}


def build_service_image(engine: Engine, record: Record) -> dict[str, Any]:
    """The image to run ``record``: the one recorded if ``engine`` still has it, else a new build of its bento.

    Returns ``image``, ``image_id``, ``build_s`` and ``size_bytes``, to record under ``info["container"]``.
    """
    rec = recorded(record)
    if rec.get("image_id") and engine.image_id(rec["image_id"]):
        return {k: rec[k] for k in _KEPT if k in rec}
    if not record.bento_tag:
        raise TargetError(f"'{record.name}' v{record.version} has no bento to build an image from")
    tag = image_tag(record)
    t0 = time.perf_counter()
    containerize(engine, record.bento_tag, tag, config.deployment_dir(record.name, record.version) / "build.log")
    image_id = engine.image_id(tag)
    if image_id is None:
        raise ImageBuildError(f"the build of {tag} reported success but {engine.name} has no such image")
    build_s = round(time.perf_counter() - t0, 1)
    return {"image": tag, "image_id": image_id, "build_s": build_s, "size_bytes": engine.image_size(image_id)}


class ImageBuilder:
    """The engine and base image a target builds with, chosen once and checked before the bento is built.

    A version built earlier keeps the engine it was built with (status, logs, stop and rollback must not depend on
    which engine works today), unless the caller named one.
    """

    def __init__(self, engine: str | None = None, base_image: str | None = None) -> None:
        self._engine_name = engine
        self._base_image = base_image
        self._engine: Engine | None = None

    def engine(self) -> Engine:
        """The engine named, else NBDEPLOY_CONTAINER_ENGINE, else the first of podman, docker that works."""
        if self._engine is None:
            self._engine = engines.find_engine(self._engine_name)
        return self._engine

    def prepare(self) -> dict[str, Any]:
        """Check engine and base image; return the bento's image options (for ``Target.prepare``)."""
        engine = self.engine()
        return bento_image_options(base.resolve(engine, base.configured(self._base_image)))

    def engine_for(self, record: Record) -> Engine:
        """The engine ``record`` was built with, without re-checking it, unless this builder was given one."""
        made_with = recorded(record).get("engine")
        if self._engine is None and made_with and not self._engine_name:
            return engines.engine_named(made_with)
        return self.engine()

    def image(self, engine: Engine, record: Record) -> dict[str, Any]:
        """``build_service_image``: the recorded image if ``engine`` has it, else a new build."""
        return build_service_image(engine, record)


def containerize(engine: Engine, bento_tag: str, image: str, log: Path) -> None:
    """``bentoml containerize`` with ``engine`` as backend, from nbdeploy's bento store; output goes to ``log``."""
    with tempfile.TemporaryDirectory(prefix="nbdeploy-bentoml-") as tmp:
        (Path(tmp) / "bentos").symlink_to(config.bento_store().resolve(), target_is_directory=True)
        env = {**engine.env(), **bento_env(), "BENTOML_HOME": tmp}
        env["PATH"] = os.pathsep.join([str(Path(engine.binary).parent), env.get("PATH", "")])
        cmd = [sys.executable, "-m", "bentoml", "containerize", bento_tag, "--backend", engine.name]
        cmd += ["--image-tag", image, "--opt", f"label=nbdeploy.home={config.home().resolve()}"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
            try:
                returncode = proc.wait(timeout=BUILD_TIMEOUT_S)
            except BaseException as exc:  # timeout or interrupt: the engine's build must not go on without us
                _stop_build(proc)
                if isinstance(exc, subprocess.TimeoutExpired):
                    raise ImageBuildError(f"the image build of {image} took over {BUILD_TIMEOUT_S:.0f} s") from None
                raise
    if returncode != 0:
        raise ImageBuildError(
            f"building the image {image} with {engine.name} failed (exit {returncode}); full log: {log}",
            hint="last lines of the build log:\n" + _tail(log, 25),
        )


def _stop_build(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the build's process group (its own session); SIGKILL what is left of it after 5 s."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5.0)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the engine's own children, too
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
