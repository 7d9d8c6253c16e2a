"""Start, claim, retire, stop and restart versions: the registry's states and the targets' processes, kept in step.

Every transition is recorded before or right after it happens, so a watcher never mistakes a deliberate stop for a
crash, and a version that loses a race to a newer one is told instead of silently stopped.
"""

from __future__ import annotations

from .errors import NbdeployError, Superseded
from .registry import FAILED, RUNNING, STOPPED, Record, Registry
from .targets import Target, get_target


def start_record(
    registry: Registry, rec: Record, port: int | None, target: Target | None = None, supersede: bool = True
) -> Record:
    """Start ``rec``'s bento on its target, then retire every other running version of the name.

    With ``supersede`` (a deploy), a version that finds a newer one already serving does not take over: it is
    stopped and ``Superseded`` says which version serves, so the caller of a lost race is told. A rollback or
    restart (``supersede=False``) takes over whatever runs.
    """
    target = target or get_target(rec.target)
    if port is not None:
        # The caller wants the port another version holds: free it first (a short gap in service).
        for r in registry.running(rec.name):
            if r.version != rec.version and r.port == port:
                stop_record(registry, r)
    if not rec.bento_path:
        raise NbdeployError(f"'{rec.name}' v{rec.version} has no bento to start from")
    running = target.deploy(rec, rec.bento_path, port)
    extra = {"state": {**rec.state, **running.info}} if running.info else {}
    fields = {"url": running.url, "port": running.port, "pid": running.pid, **extra}
    rec, others, newer = registry.claim(rec.name, rec.version, newest_wins=supersede, **fields)
    if newer is not None:
        target.stop(rec)
        raise Superseded(
            f"'{rec.name}' v{rec.version} does not serve: v{newer.version}, deployed at the same time from "
            f"another session, is newer and serves at {newer.url}",
            hint=f"nbdeploy.get('{rec.name}') is the serving version; nbdeploy.rollback('{rec.name}', "
            f"{rec.version}) serves this one",
        )
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
    """Start ``rec`` again on its port (after a crash); a failed restart is recorded as failed and audited."""
    target = get_target(rec.target)
    target.stop(rec)
    try:
        started = start_record(registry, rec, rec.port, target, supersede=False)
    except BaseException as exc:
        registry.update(rec.name, rec.version, status=FAILED, pid=None)
        registry.event("restart-failed", rec.name, rec.version, error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    registry.event("restart", rec.name, rec.version, url=started.url)
    return started


def stop(registry: Registry, rec: Record) -> Record:
    """Stop a version on purpose (audited if it was running); stopping a stopped one changes nothing."""
    stopped = stop_record(registry, rec)
    if rec.status == RUNNING:
        registry.event("stop", rec.name, rec.version)
    return stopped
