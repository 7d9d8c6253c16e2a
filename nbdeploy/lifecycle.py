"""Start, claim, retire, stop and restart versions: the registry's states and the targets' processes, kept in step.

Every transition is recorded before or right after it happens, so a watcher never mistakes a deliberate stop for a
crash, and a version that loses a race to a newer one is told instead of silently stopped.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from . import endpoint
from .errors import NbdeployError, Superseded
from .registry import FAILED, RUNNING, SERVING, STOPPED, Record, Registry
from .targets import Target, get_target


def start_record(
    registry: Registry,
    rec: Record,
    port: int | None,
    target: Target | None = None,
    supersede: bool = True,
    role: dict[str, Any] | None = None,
    own_port: int | None = None,
) -> Record:
    """Start ``rec``'s bento on its target, then retire every other running version of the name.

    With ``supersede`` (a deploy), a version that finds a newer one already serving does not take over: it is
    stopped and ``Superseded`` says which version serves, so the caller of a lost race is told. A rollback or
    restart (``supersede=False``) takes over whatever runs.

    On a target with a stable endpoint (``endpoint.routed``) the version gets a port of its own, ``port`` is the
    name's stable port (the first deploy's choice), and the swap drains the replaced version before stopping it,
    so callers of the stable URL lose nothing. ``role`` (``{"mode": "shadow"|"split", ...}``) starts it as the
    name's candidate instead: the live version keeps serving. ``own_port``: the version's own port there (a
    crashed version restarted where it was).
    """
    target = target or get_target(rec.target)
    routed = endpoint.routed(rec.target)
    if role is not None:
        return endpoint.start_candidate(registry, rec, target, role)
    if routed:
        if port is not None:
            endpoint.check_stable_port(registry, rec.name, port)
        version_port = own_port
    else:
        version_port = port
    if version_port is not None and not routed:
        # The caller wants the port another version holds: free it first (a short gap in service).
        for r in registry.running(rec.name):
            if r.version != rec.version and r.port == version_port:
                stop_record(registry, r)
    if not rec.bento_path:
        raise NbdeployError(f"'{rec.name}' v{rec.version} has no bento to start from")
    running = target.deploy(rec, rec.bento_path, version_port)
    extra = {"state": {**rec.state, **running.info}} if running.info else {}
    fields: dict[str, Any] = {"url": running.url, "port": running.port, "pid": running.pid, **extra}
    if routed:
        try:
            endpoint.ensure_router(rec.name, port, registry)
        except BaseException:
            target.stop(replace(rec, **fields))
            raise
    rec, others, newer = registry.claim(rec.name, rec.version, newest_wins=supersede, **fields)
    if newer is not None:
        target.stop(rec)
        raise Superseded(
            f"'{rec.name}' v{rec.version} does not serve: v{newer.version}, deployed at the same time from "
            f"another session, is newer and serves at {newer.url}",
            hint=f"nbdeploy.get('{rec.name}') is the serving version; nbdeploy.rollback('{rec.name}', "
            f"{rec.version}) serves this one",
        )
    if routed:
        endpoint.go_live(registry, rec, others)
        return rec
    for other in others:
        stop_record(registry, other)
    return rec


def stop_record(registry: Registry, rec: Record) -> Record:
    """Record the stop first, then stop: a watcher must never see a version stopping on purpose as crashed."""
    stopped = registry.update(rec.name, rec.version, status=STOPPED, pid=None)
    try:
        get_target(rec.target).stop(rec)
    except BaseException:
        registry.update(rec.name, rec.version, status=FAILED)
        raise
    return stopped


def restart(registry: Registry, rec: Record) -> Record:
    """Start ``rec`` again; a failed restart is recorded as failed and audited.

    A crashed version comes back on its port (nothing to drain). The live version of a stable endpoint that still
    runs is started afresh beside itself (``Target.start_beside``: a new process, or a second container), the
    router switched to it, the old instance drained and then stopped: a restart no caller notices.
    """
    target = get_target(rec.target)
    live = rec.status == RUNNING and endpoint.routed(rec.target)
    if live and target.status(rec) in {"running", "degraded"}:
        started = _restart_beside(registry, rec, target)
        if started is not None:
            return started
    target.stop(rec)
    try:
        if endpoint.routed(rec.target):  # back on its own port; the stable port is the router's
            started = start_record(registry, rec, None, target, supersede=False, own_port=rec.port)
        else:
            started = start_record(registry, rec, rec.port, target, supersede=False)
    except BaseException as exc:
        registry.update(rec.name, rec.version, status=FAILED, pid=None)
        registry.event("restart-failed", rec.name, rec.version, error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    registry.event("restart", rec.name, rec.version, url=started.url)
    return started


def _restart_beside(registry: Registry, rec: Record, target: Target) -> Record | None:
    """A fresh instance of the live version on a new port, then the switch and the drain
    (``endpoint.swap_process``); None if the target cannot run two instances of a version."""
    if not rec.bento_path:
        raise NbdeployError(f"'{rec.name}' v{rec.version} has no bento to start from")
    endpoint.ensure_router(rec.name, registry=registry)
    try:
        running = target.start_beside(rec, rec.bento_path)
    except BaseException as exc:
        registry.event("restart-failed", rec.name, rec.version, error=f"{type(exc).__name__}: {exc}"[:500])
        raise  # the old instance still serves
    if running is None:
        return None
    extra = {"state": {**rec.state, **running.info}} if running.info else {}
    started = registry.update(rec.name, rec.version, url=running.url, port=running.port, pid=running.pid, **extra)
    endpoint.swap_process(registry, rec, started, target.stop_instance)
    registry.event("restart", rec.name, rec.version, url=started.url, previous_url=rec.url, drained=True)
    return started


def stop(registry: Registry, rec: Record) -> Record:
    """Stop a version on purpose (audited if it was running); stopping a stopped one changes nothing.

    The live version of a stable endpoint takes its router and any candidate or standby with it; a candidate or a
    standby leaves the router's config first (drained), the live version keeps serving."""
    if rec.status in SERVING:
        endpoint.remove(registry, rec)
    stopped = stop_record(registry, rec)
    if rec.status in SERVING:
        registry.event("stop", rec.name, rec.version, **({} if rec.status == RUNNING else {"was": rec.status}))
    return stopped
