"""The public functions: deploy, get, deployments, rollback. Orchestration only; work lives elsewhere."""

from __future__ import annotations

import re
import time
from typing import Any

import pandas as pd

from . import config
from .capture import capture
from .capture.schema import as_frame
from .client import payload
from .deployment import Deployment
from .errors import DeploymentNotFound, NbdeployError, TargetError
from .package import build_bento
from .registry import FAILED, RUNNING, STOPPED, Record, Registry
from .targets import get_target

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise NbdeployError(
            f"invalid deployment name {name!r}",
            hint="use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit",
        )


def _example(sample: Any) -> Any:
    data = as_frame(sample)
    head = data.iloc[:1] if isinstance(data, pd.DataFrame) else data[:1]
    if isinstance(head, pd.DataFrame):
        return payload(head.to_dict(orient="records"))["inputs"]
    return payload(head)["inputs"]


def _start(reg: Registry, rec: Record, port: int | None) -> Record:
    """Start ``rec``'s bento on its target, then retire every other running version of the name."""
    target = get_target(rec.target)
    others = [r for r in reg.running(rec.name) if r.version != rec.version]
    if port is not None and any(r.port == port for r in others):
        # The caller wants the port the current version holds: free it first (a short gap in service).
        for r in others:
            if r.port == port:
                _retire(reg, r)
        others = [r for r in others if r.port != port]
    assert rec.bento_path is not None
    running = target.deploy(rec, rec.bento_path, port)
    rec = reg.update(rec.name, rec.version, status=RUNNING, url=running.url, port=running.port, pid=running.pid)
    for r in others:
        _retire(reg, r)
    return rec


def _retire(reg: Registry, rec: Record) -> None:
    get_target(rec.target).stop(rec)
    reg.update(rec.name, rec.version, status=STOPPED, pid=None)


def deploy(
    obj: Any,
    name: str,
    sample: Any,
    *,
    target: str = "local",
    port: int | None = None,
    requirements: list[str] | None = None,
) -> Deployment:
    """Capture ``obj``, package it as a bento and serve it on ``target``; return the handle.

    Deploying an existing name makes the next version; the old one is stopped only once the
    new one answers ``/readyz``.
    """
    _check_name(name)
    get_target(target)
    t0 = time.perf_counter()
    artifact = capture(obj, sample, requirements)
    t1 = time.perf_counter()
    reg = Registry()
    info = {
        "kind": artifact.kind,
        "sha256": artifact.sha256,
        "schema": artifact.schema,
        "requirements": artifact.requirements,
        "local_modules": artifact.local_modules,
        "lineage": artifact.lineage,
        "example": _example(sample),
    }
    rec = reg.allocate(name, target, info)
    try:
        bento = build_bento(artifact, name, rec.version, config.bento_store())
        t2 = time.perf_counter()
        rec = reg.update(name, rec.version, bento_tag=bento.tag, bento_path=str(bento.path))
        rec = _start(reg, rec, port)
        t3 = time.perf_counter()
        timings = {"capture_s": round(t1 - t0, 3), "package_s": round(t2 - t1, 3), "start_s": round(t3 - t2, 3)}
        rec = reg.update(name, rec.version, info={**rec.info, "timings": timings})
    except BaseException:
        reg.update(name, rec.version, status=FAILED, pid=None)
        raise
    return Deployment(rec, reg)


def get(name: str, version: int | None = None) -> Deployment:
    """The handle of a deployment: the running version, or the one named."""
    reg = Registry()
    return Deployment(reg.get(name, version), reg)


def deployments(all_versions: bool = False) -> pd.DataFrame:
    """One row per deployment (or per version), with status as the registry last recorded it."""
    records = Registry().list(all_versions=all_versions)
    cols = ["name", "version", "target", "status", "url", "bento_tag", "created_at", "updated_at"]
    return pd.DataFrame([{c: getattr(r, c) for c in cols} for r in records], columns=cols)


def rollback(name: str, version: int, *, port: int | None = None) -> Deployment:
    """Serve an earlier version again from its stored bento; the current one stops once it is ready."""
    reg = Registry()
    rec = reg.get(name, version)
    if rec.status == RUNNING:
        return Deployment(rec, reg)
    if not rec.bento_path:
        raise DeploymentNotFound(f"version {version} of '{name}' has no stored bento (it never finished building)")
    from pathlib import Path

    if not Path(rec.bento_path).exists():
        raise TargetError(f"the bento of '{name}' v{version} is gone from {rec.bento_path}")
    try:
        rec = _start(reg, rec, port)
    except BaseException:
        reg.update(name, version, status=STOPPED, pid=None)
        raise
    return Deployment(rec, reg)
