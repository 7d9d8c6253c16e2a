"""Turn a ModelArtifact into a self-contained bento, built from a clean temporary directory."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ..capture import ModelArtifact
from ..errors import PackagingError
from ..runtime.compiled import COMPILED_DIR

RUNTIME_PACKAGE = "nbdeploy_runtime"

SERVICE = f"{RUNTIME_PACKAGE}.service:NbdeployService"
_RUNTIME_SRC = Path(__file__).resolve().parent.parent / "runtime"
_build_lock = threading.Lock()
_LINEAGE_LABELS = ("user", "host", "created_at", "notebook", "cells_sha256", "git_commit", "git_dirty")


@dataclass(frozen=True)
class BentoRef:
    tag: str
    path: Path


def bento_env() -> dict[str, str]:
    """Environment for anything BentoML runs: no usage tracking (no network here, nor for many users)."""
    # unbuffered: a server that dies at start must still leave its last words in the log
    env = {"BENTOML_DO_NOT_TRACK": "True", "PYTHONUNBUFFERED": "1"}
    if not os.environ.get("BENTOML_CONFIG_OPTIONS") and not os.environ.get("BENTOML_CONFIG"):
        # With no tracing exporter configured, BentoML still builds an OpenTelemetry span per request only to
        # drop it (~10% of a one-row request's CPU); a user's own BentoML configuration is left alone.
        env["BENTOML_CONFIG_OPTIONS"] = "services.tracing.excluded_urls=.*"
    return env


def _write_context(
    ctx: Path,
    artifact: ModelArtifact,
    service_name: str,
    image: dict[str, str] | None = None,
    extra_meta: dict[str, Any] | None = None,
    compiled_dir: Path | None = None,
) -> None:
    art = ctx / "artifact"
    art.mkdir()
    (art / "model.pkl").write_bytes(artifact.payload)
    if compiled_dir is not None:
        shutil.copytree(compiled_dir, art / COMPILED_DIR)
    meta = {**artifact.meta(service_name), **(extra_meta or {}), **({"image": image} if image else {})}
    (art / "meta.json").write_text(json.dumps(meta, indent=1))
    if artifact.wheels:
        (ctx / "wheels").mkdir()
        for wheel in artifact.wheels:
            shutil.copy2(wheel, ctx / "wheels")
    shutil.copytree(_RUNTIME_SRC, ctx / RUNTIME_PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _pin_name(requirement: str) -> str:
    return canonicalize_name(Requirement(requirement).name)


def _forget_runtime_modules() -> None:
    # BentoML imports the service in-process to inspect it; a second build in the same kernel
    # must import this build's copy, not the cached module of the previous one.
    for mod in [m for m in sys.modules if m == RUNTIME_PACKAGE or m.startswith(RUNTIME_PACKAGE + ".")]:
        del sys.modules[mod]


def build_bento(
    artifact: ModelArtifact,
    name: str,
    version: int,
    store_dir: Path,
    image: dict[str, str] | None = None,
    extra_meta: dict[str, Any] | None = None,
    compiled_dir: Path | None = None,
    extra_packages: list[str] | None = None,
) -> BentoRef:
    """Build the bento into ``store_dir`` (a BentoML store of nbdeploy's own) and return its tag and path.

    ``extra_meta``: more for the service's ``meta.json`` (the version, the example row its ``/docs.json`` shows).

    ``image``: ``bentoml.images.Image`` arguments for the container image (the service declares them; BentoML's
    docker options cannot select ``distro="custom"``, which skips its apt step).

    ``compiled_dir``: the compiled model (``nbdeploy.compile``), copied beside the pickle; ``extra_packages``: the
    pins its runtime needs (onnxruntime), added to the captured ones.
    """
    os.environ.update(bento_env())
    import bentoml
    from bentoml._internal.bento.bento import BentoStore

    store_dir.mkdir(parents=True, exist_ok=True)
    labels = {
        "nbdeploy.name": name,
        "nbdeploy.version": str(version),
        "nbdeploy.sha256": artifact.sha256,
        "nbdeploy.python": artifact.lineage["python"],
        "nbdeploy.requirements-sha256": artifact.lineage["requirements_sha256"],
        **{f"nbdeploy.{k}": str(v) for k, v in artifact.lineage.items() if k in _LINEAGE_LABELS and v is not None},
    }
    packages = {_pin_name(p): p for p in artifact.requirements}
    packages.update({_pin_name(p): p for p in extra_packages or [] if _pin_name(p) not in packages})
    python: dict[str, object] = {"packages": list(packages.values()), "lock_packages": False}
    if artifact.wheels:
        python["wheels"] = [f"wheels/{Path(w).name}" for w in artifact.wheels]
    with _build_lock, tempfile.TemporaryDirectory(prefix="nbdeploy-build-") as tmp:
        ctx = Path(tmp)
        _write_context(ctx, artifact, name, image, extra_meta, compiled_dir)
        _forget_runtime_modules()
        try:
            bento = bentoml.bentos.build(
                SERVICE,
                name=f"nbdeploy-{name}",
                version=f"v{version}-{artifact.sha256[:12]}",
                labels=labels,
                description=f"nbdeploy deployment '{name}', version {version}",
                build_ctx=str(ctx),
                python=python,
                _bento_store=BentoStore(str(store_dir)),
            )
        except Exception as exc:
            raise PackagingError(f"BentoML could not build the bento: {type(exc).__name__}: {exc}") from exc
        finally:
            _forget_runtime_modules()
    return BentoRef(tag=str(bento.tag), path=Path(bento.path))
