"""The SDK side of a name's stable endpoint: one router process per name, on a port chosen once.

Why a router: a version is a process with its own port, so without one a name's URL changed with every deploy and
a redeploy dropped requests. The router (``nbdeploy.router``, its contract in ``nbdeploy.router.contract``) owns the
stable port and forwards to whatever ``endpoint.json`` says is live; the SDK only ever rewrites that file. A swap is:
start the new version on a port of its own, write ``live`` = new, wait until the router serves by that config
(``generation``), wait until the old version has nothing in flight, then stop it. No request is refused or cut.

Who owns what: the registry's ``endpoints`` table keeps the stable port (never changed once chosen) and the router's
pid; ``endpoint.json`` is the router's config; the registry's statuses say what each version is (``running`` = live,
``candidate``, ``standby``). Every SDK write to an endpoint happens under a per-name file lock, so two kernels do
not interleave. The router writes ``endpoint.json`` only to record an automatic rollback (``watch.outcome``); the SDK
reads it back whenever it touches the endpoint (``sync``) and settles the registry and the audit trail once.

Kept light at import (no httpx, no targets): ``nbdeploy list`` reads endpoints through here.
"""

from __future__ import annotations

import contextlib
import fcntl
import html
import http.client
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config
from .errors import NotSupported, PromotionRefused, TargetError, UsageError
from .registry import CANDIDATE, RUNNING, STANDBY, STOPPED, Record, Registry
from .router.contract import (
    ENDPOINT_FILE,
    STATUS_PATH,
    Candidate,
    Endpoint,
    Upstream,
    Watch,
    read,
    write,
)

if TYPE_CHECKING:
    from .targets import Target

#: Targets whose versions answer plain HTTP on a host port, so a router on the host can stand in front of them.
#: Kubernetes has a stable Service already; a registered target is left as it is.
ROUTED_TARGETS = frozenset({"local", "container", "edge"})
ROUTER_READY_S = 30.0
LOAD_DEADLINE_S = 10.0
DRAIN_DEADLINE_S = 30.0
#: The watch after a promotion: traffic goes back to the previous version if the new one breaks these.
DEFAULT_WATCH_RULES: dict[str, Any] = {"max_error_rate": 0.05, "min_requests": 20, "window_s": 30, "max_p95_ms": None}
STICKY_HINT = "sticky takes 'key' (the caller's API key) or 'header:NAME' (a request header, e.g. header:X-User)"


def enabled() -> bool:
    """``NBDEPLOY_ROUTER=0`` turns stable endpoints off (versions then serve on their own URLs only, as before)."""
    return os.environ.get("NBDEPLOY_ROUTER", "1").strip().lower() not in {"0", "off", "false", "no"}


def routed(target: str) -> bool:
    return enabled() and target in ROUTED_TARGETS


def path(name: str) -> Path:
    return config.name_dir(name) / ENDPOINT_FILE


def log_path(name: str) -> Path:
    return config.name_dir(name) / "router.log"


def load(name: str) -> Endpoint | None:
    """The name's ``endpoint.json``, or None if it never had one (or it cannot be read)."""
    file = path(name)
    try:
        return read(file) if file.exists() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- one writer at a time per name (kernels, CLI), re-entrant within a process ---------------------------------------

_guard = threading.Lock()
_held: dict[str, tuple[threading.RLock, list[int]]] = {}


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    with _guard:
        lock, depth = _held.setdefault(name, (threading.RLock(), [0]))
    with lock:
        fd = None
        if depth[0] == 0:
            fd = os.open(config.name_dir(name) / ".endpoint.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
        depth[0] += 1
        try:
            yield
        finally:
            depth[0] -= 1
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


# -- the router process ----------------------------------------------------------------------------------------------


def router_status(port: int, timeout: float = 1.0) -> dict[str, Any] | None:
    """The router's ``GET /_nbdeploy/endpoint`` (JSON), or None if nothing answers on ``port``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", STATUS_PATH)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            return None
        data = json.loads(body)
        return data if isinstance(data, dict) else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def _generation(status: dict[str, Any]) -> int | None:
    """Which ``endpoint.json`` generation the router serves by (top level, or inside its config)."""
    for where in (status, status.get("endpoint"), status.get("config")):
        if isinstance(where, dict) and isinstance(where.get("generation"), int):
            return int(where["generation"])
    return None


def _in_flight(status: dict[str, Any]) -> dict[int, int]:
    """Requests in flight per version, from the forms a status may take: ``{"in_flight": {"3": 1}}`` or
    ``{"versions": {"3": {"in_flight": 1}}}``."""
    out: dict[int, int] = {}
    for key in ("in_flight", "inflight"):
        value = status.get(key)
        if isinstance(value, dict):
            for version, count in value.items():
                with contextlib.suppress(TypeError, ValueError):
                    out[int(version)] = out.get(int(version), 0) + int(count)
    versions = status.get("versions")
    if isinstance(versions, dict):
        for version, item in versions.items():
            if isinstance(item, dict) and "in_flight" in item:
                with contextlib.suppress(TypeError, ValueError):
                    out[int(version)] = max(out.get(int(version), 0), int(item["in_flight"]))
    return out


def _router_cmd(file: Path) -> list[str]:
    return [sys.executable, "-m", "nbdeploy.router", "--endpoint", str(file)]


def _alive(pid: int | None, name: str) -> bool:
    from .targets import _process

    return _process.is_alive(pid, str(path(name)))


def ensure_router(name: str, port: int | None = None, registry: Registry | None = None) -> Endpoint:
    """The name's router, running and answering: started (on the stable port) if it is not.

    The stable port is chosen once: ``port`` (a deploy's ``port=``) or a free one on the first call, then the
    recorded one forever; ``port`` naming another one is refused. A router that died (a reboot, a kill) is
    started again on the same port, so the URL callers hold keeps working.
    """
    from .targets import _process

    reg = registry or Registry()
    with locked(name):
        row = reg.endpoint(name)
        if row is not None and port is not None and port != row["port"]:
            raise UsageError(
                f"'{name}' already has the stable port {row['port']}: port={port} cannot change it",
                hint=f"leave port= out (callers use {row['url']}); each version gets a port of its own",
            )
        file = path(name)
        if row is not None and _alive(row["pid"], name):
            if _wait_answering(row["port"], row["pid"], name, LOAD_DEADLINE_S):
                return read(file)
            _process.stop_group(row["pid"], str(file))  # alive but deaf: start it again
        stable = int(row["port"]) if row is not None else (port or _process.stable_port())
        _process.check_port(stable)
        current = load(name) or Endpoint(name=name, port=stable)
        write(file, replace(current, port=stable))
        log = log_path(name)
        offset = log.stat().st_size if log.exists() else 0
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [_package_root(), os.environ.get("PYTHONPATH")])),
        }
        pid = _process.spawn(_router_cmd(file), log, env, cwd=file.parent)
        try:
            ready = _wait_answering(stable, pid, name, ROUTER_READY_S)
        except BaseException:
            _process.stop_group(pid, str(file))
            raise
        if not ready:
            _process.stop_group(pid, str(file))
            tail = "\n".join(_process.read_since(log, offset).splitlines()[-20:])
            raise TargetError(f"the router of '{name}' did not start on port {stable}", hint=f"router log:\n{tail}")
        restarted = row is not None
        reg.set_endpoint(name, stable, pid)
        reg.event("endpoint-restart" if restarted else "endpoint-start", name, None, port=stable, pid=pid)
        return read(file)


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _wait_answering(port: int, pid: int, name: str, deadline_s: float) -> bool:
    from .targets import _process

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if router_status(port, timeout=1.0) is not None:
            return True
        # a process this one spawned is asked directly: before its exec, its command line is still ours
        if not (_process.started_alive(pid) if pid in _process._children else _alive(pid, name)):
            return False
        time.sleep(0.05)
    return False


def stop_router(name: str, registry: Registry | None = None) -> None:
    """Stop the name's router (its stable port stays recorded for the next deploy); idempotent."""
    from .targets import _process

    reg = registry or Registry()
    with locked(name):
        row = reg.endpoint(name)
        if row is None:
            return
        marker = str(path(name))
        pgid = row["pid"] if _alive(row["pid"], name) else 0
        if _process.members(pgid, marker):
            _process.stop_group(pgid, marker)
        if row["pid"] is not None:
            reg.set_endpoint(name, row["port"], None)
            reg.event("endpoint-stop", name, None, port=row["port"])


def check_stable_port(registry: Registry, name: str, port: int) -> None:
    """Refuse ``port=`` naming another port than the name's stable one (before anything is built)."""
    row = registry.endpoint(name)
    if row is not None and port != row["port"]:
        raise UsageError(
            f"'{name}' already has the stable port {row['port']}: port={port} cannot change it",
            hint=f"leave port= out (callers use {row['url']}); each version gets a port of its own",
        )


def url_of(name: str, registry: Registry | None = None) -> str | None:
    """The name's stable URL, if it has one."""
    row = (registry or Registry()).endpoint(name)
    return str(row["url"]) if row else None


# -- switching --------------------------------------------------------------------------------------------------------


def _commit(name: str, ep: Endpoint, registry: Registry) -> int:
    """Write ``ep`` and wait until the router serves by it; return its generation. A dead router is started again
    first, so the written config is what the next request meets."""
    write(path(name), ep)
    row = registry.endpoint(name)
    if row is None:
        return ep.generation
    if not _alive(row["pid"], name):
        ensure_router(name, registry=registry)
    end = time.monotonic() + LOAD_DEADLINE_S
    while time.monotonic() < end:
        status = router_status(row["port"])
        if status is not None:
            served = _generation(status)
            if served is None or served >= ep.generation:
                return ep.generation
        time.sleep(0.02)
    return ep.generation


def drain(
    name: str, versions: list[int], registry: Registry | None = None, deadline_s: float = DRAIN_DEADLINE_S
) -> bool:
    """Wait until the router has no request in flight to ``versions``; False if the deadline passed first."""
    row = (registry or Registry()).endpoint(name)
    if row is None or not versions:
        return True
    end = time.monotonic() + deadline_s
    misses = 0
    while time.monotonic() < end:
        status = router_status(row["port"])
        if status is None:
            misses += 1
            if misses >= 5:  # no router: nothing can be in flight through it
                return True
        else:
            flight = _in_flight(status)
            if all(flight.get(v, 0) == 0 for v in versions):
                return True
        time.sleep(0.02)
    return False


def _stop_version(registry: Registry, rec: Record) -> None:
    """Stop a version whose status was already recorded (stopped first: a watcher must not see it as a crash)."""
    from .registry import FAILED
    from .targets import get_target

    try:
        get_target(rec.target).stop(rec)
    except BaseException:
        registry.update(rec.name, rec.version, status=FAILED)
        raise


def _versions(registry: Registry, name: str, ep: Endpoint) -> dict[int, str]:
    """Every version with a process the router may reach by ``/v/N/``."""
    return {r.version: r.url for r in registry.serving(name) if r.url} | {
        u.version: u.url for u in (ep.live, ep.candidate.upstream if ep.candidate else None) if u is not None
    }


def go_live(registry: Registry, rec: Record, others: list[Record]) -> None:
    """``rec`` (just claimed running) serves the name: switch the router to it, drain ``others`` (the versions it
    replaces) and any standby of a watch it ends, then stop them."""
    name = rec.name
    with locked(name):
        now = registry.get(name, rec.version)
        if now.status != RUNNING or now.url != rec.url:  # a newer deploy took over meanwhile: it switched already
            return
        ep = load(name) or Endpoint(name=name, port=_stable_port(registry, name))
        retiring = {r.version: r for r in others}
        if ep.watch is not None:  # a new live version ends the watch of the previous promotion
            with contextlib.suppress(Exception):
                prev = registry.get(name, ep.watch.previous.version)
                if prev.status == STANDBY:
                    retiring[prev.version] = prev
            registry.event("watch-ended", name, ep.watch.previous.version, reason=f"v{rec.version} went live")
        if ep.candidate is not None and ep.candidate.upstream.version == rec.version:
            ep.candidate = None
        ep.live, ep.watch = Upstream(rec.version, str(rec.url)), None
        for r in retiring.values():  # recorded first, stopped after the drain
            registry.update(name, r.version, status=STOPPED, pid=None)
        ep.versions = _versions(registry, name, ep) | {r.version: str(r.url) for r in retiring.values() if r.url}
        _commit(name, ep, registry)
        drain(name, sorted(retiring), registry)
        for r in retiring.values():
            _stop_version(registry, r)
        if retiring:
            ep = load(name) or ep
            ep.versions = _versions(registry, name, ep)
            _commit(name, ep, registry)


def _stable_port(registry: Registry, name: str) -> int:
    row = registry.endpoint(name)
    if row is None:
        raise TargetError(f"'{name}' has no stable endpoint yet")
    return int(row["port"])


def swap_process(registry: Registry, old: Record, new: Record, stop_old: Callable[[Record], None]) -> None:
    """The same version in a fresh instance (a restart of the live version): switch to the new one, drain the
    version, then ``stop_old`` stops the old instance alone (``Target.stop_instance``)."""
    name = new.name
    with locked(name):
        ep = load(name) or Endpoint(name=name, port=_stable_port(registry, name))
        ep.live = Upstream(new.version, str(new.url))
        ep.versions = _versions(registry, name, ep)
        _commit(name, ep, registry)
        drain(name, [new.version], registry)
        stop_old(old)


# -- candidates: shadow and split -------------------------------------------------------------------------------------


def check_role(target: str, shadow: bool | float, split: float | None, sticky: str | None) -> dict[str, Any] | None:
    """The candidate role a deploy asks for (``{"mode", "percent", "sticky"}``), or None for a plain deploy; a
    role this target cannot have, or a malformed one, is refused before anything is built."""
    if shadow is False or shadow is None:
        shadow_pct = None
    elif shadow is True:
        shadow_pct = 100.0
    else:
        shadow_pct = float(shadow)
    if shadow_pct is None and split is None:
        if sticky is not None:
            raise UsageError("sticky= is for a split or a sampled shadow", hint="deploy with split=PERCENT too")
        return None
    if shadow_pct is not None and split is not None:
        raise UsageError("a version is either a shadow or a share of a split, not both", hint="pass one of them")
    percent = shadow_pct if shadow_pct is not None else float(split)  # type: ignore[arg-type]
    if not 0 < percent <= 100:
        raise UsageError(f"percent must be in (0, 100], got {percent:g}")
    if sticky is not None and not (sticky == "key" or (sticky.startswith("header:") and len(sticky) > 7)):
        raise UsageError(f"sticky={sticky!r} is not understood", hint=STICKY_HINT)
    if target not in ROUTED_TARGETS:
        hint = (
            "the Service is already stable there: run the candidate as its own deployment (another name) and "
            "split with your ingress or service mesh"
            if target == "kubernetes"
            else "shadow and split need a stable endpoint: deploy to target='local' or 'container'"
        )
        raise NotSupported(f"shadow and split are not supported on the {target} target", hint=hint)
    if not enabled():
        raise NotSupported("shadow and split need the router", hint="unset NBDEPLOY_ROUTER=0")
    return {"mode": "shadow" if shadow_pct is not None else "split", "percent": percent, "sticky": sticky}


def check_live(registry: Registry, name: str) -> Record:
    live = registry.running(name)
    if not live:
        raise UsageError(
            f"nothing serves '{name}' yet: a shadow or a split needs a live version to stand beside",
            hint=f"deploy '{name}' without shadow=/split= first",
        )
    return live[-1]


def add_candidate(registry: Registry, rec: Record, role: dict[str, Any]) -> Record:
    """``rec`` (started, not claimed) becomes the name's candidate; a candidate it replaces is drained and stopped."""
    name = rec.name
    with locked(name):
        ep = load(name) or Endpoint(name=name, port=_stable_port(registry, name))
        state = {**rec.state, "endpoint": role}
        rec = registry.update(name, rec.version, status=CANDIDATE, state=state)
        replaced = None
        if ep.candidate is not None and ep.candidate.upstream.version != rec.version:
            with contextlib.suppress(Exception):
                replaced = registry.get(name, ep.candidate.upstream.version)
        ep.candidate = Candidate(Upstream(rec.version, str(rec.url)), role["mode"], role["percent"], role["sticky"])
        if replaced is not None and replaced.status == CANDIDATE:
            registry.update(name, replaced.version, status=STOPPED, pid=None)
        ep.versions = _versions(registry, name, ep)
        _commit(name, ep, registry)
        live = ep.live.version if ep.live else None
        registry.event(f"{role['mode']}-start", name, rec.version, live=live, **role, url=rec.url)
        if replaced is not None and replaced.status == CANDIDATE:
            drain(name, [replaced.version], registry)
            _stop_version(registry, replaced)
            registry.event("candidate-replaced", name, replaced.version, by=rec.version)
            ep = load(name) or ep
            ep.versions = _versions(registry, name, ep)
            _commit(name, ep, registry)
    return rec


def set_split(registry: Registry, rec: Record, percent: float, sticky: str | None = None) -> Record:
    """Change the share of a candidate (a shadow becomes a split this way too)."""
    check_role(rec.target, False, percent, sticky)
    with locked(rec.name):
        ep = load(rec.name)
        if ep is None or ep.candidate is None or ep.candidate.upstream.version != rec.version:
            raise UsageError(f"'{rec.name}' v{rec.version} is not the candidate of its endpoint")
        before = {"mode": ep.candidate.mode, "percent": ep.candidate.percent, "sticky": ep.candidate.sticky}
        ep.candidate.mode, ep.candidate.percent = "split", float(percent)
        ep.candidate.sticky = sticky if sticky is not None else ep.candidate.sticky
        role = {"mode": "split", "percent": float(percent), "sticky": ep.candidate.sticky}
        rec = registry.update(rec.name, rec.version, state={**rec.state, "endpoint": role})
        _commit(rec.name, ep, registry)
        registry.event("split-change", rec.name, rec.version, before=before, after=role)
    return rec


def remove(registry: Registry, rec: Record) -> None:
    """Before ``rec`` stops: take it out of its endpoint. The live version takes everything with it (candidate,
    standby, the router); a candidate or a standby only leaves the router's config (drained first)."""
    if not routed(rec.target) and registry.endpoint(rec.name) is None:
        return
    name = rec.name
    with locked(name):
        ep = load(name)
        if ep is None:
            return
        if rec.status == RUNNING and ep.live is not None and ep.live.version == rec.version:
            for other in registry.serving(name):
                if other.version != rec.version:
                    registry.update(name, other.version, status=STOPPED, pid=None)
                    registry.event("stop", name, other.version, because=f"live v{rec.version} stopped")
                    _stop_version(registry, other)
            stop_router(name, registry)
            write(path(name), replace(ep, live=None, candidate=None, watch=None, versions={}))
            return
        if ep.candidate is not None and ep.candidate.upstream.version == rec.version:
            ep.candidate = None
            ep.versions = {v: u for v, u in ep.versions.items() if v != rec.version}
            _commit(name, ep, registry)
            drain(name, [rec.version], registry)
            registry.event("candidate-removed", name, rec.version)
        elif ep.watch is not None and ep.watch.previous.version == rec.version:
            ep.watch = None
            ep.versions = {v: u for v, u in ep.versions.items() if v != rec.version}
            _commit(name, ep, registry)
            registry.event("watch-ended", name, rec.version, reason="the previous version was stopped")


# -- promotion and its watch -------------------------------------------------------------------------------------------


def _gate(name: str, rules: Any) -> tuple[Any, list[Any]]:
    """The comparison of the candidate with live and the rules it fails (``nbdeploy.comparison``, imported late: it
    needs pandas and scipy, which a plain deploy does not)."""
    from . import comparison

    _, verdicts, evidence = comparison.gate(name, rules)
    return evidence, [v for v in verdicts if not v.passed]


def promote(
    registry: Registry,
    name: str,
    *,
    rules: Any = None,
    watch_s: float = 300.0,
    watch_rules: dict[str, Any] | None = None,
    force: bool = False,
) -> Record:
    """The candidate becomes live if it passes ``rules`` (unless ``force``); the previous live version stays warm
    (``standby``) for ``watch_s`` seconds, and the router sends traffic back to it if the new one breaks
    ``watch_rules``. Returns the promoted record."""
    sync(registry, name)
    with locked(name):
        ep = load(name)
        if ep is None or ep.candidate is None:
            raise UsageError(
                f"'{name}' has no candidate to promote",
                hint=f"deploy a new version of '{name}' with shadow= or split= first",
            )
        cand = registry.get(name, ep.candidate.upstream.version)
        comparison = None
        if not force:
            comparison, failures = _gate(name, rules)
            if failures:
                shown = [str(f) for f in failures]
                registry.event(
                    "promote-refused", name, cand.version, failures=shown, rules=_summary(rules),
                    comparison=_summary(comparison),
                )  # fmt: skip
                raise PromotionRefused(name, cand.version, failures, comparison)
        watched = watch_s > 0 and ep.live is not None
        rules_used = {**DEFAULT_WATCH_RULES, **(watch_rules or {})}
        state = {k: v for k, v in cand.state.items() if k != "endpoint"}
        promoted, others, _ = registry.claim(name, cand.version, state=state)
        retiring = list(others)
        if ep.watch is not None:  # an earlier watch ends: its standby goes
            with contextlib.suppress(Exception):
                prev = registry.get(name, ep.watch.previous.version)
                if prev.status == STANDBY:
                    retiring.append(prev)
        previous = ep.live
        standby = [r for r in others if previous is not None and r.version == previous.version and watched]
        for r in retiring:
            registry.update(
                name, r.version, status=STANDBY if r in standby else STOPPED, **({} if r in standby else {"pid": None})
            )
        ep.live, ep.candidate = Upstream(promoted.version, str(promoted.url)), None
        ep.watch = (
            Watch(previous=previous, until=time.time() + watch_s, rules=rules_used)
            if watched and previous is not None
            else None
        )
        ep.versions = _versions(registry, name, ep) | {r.version: str(r.url) for r in retiring if r.url}
        _commit(name, ep, registry)
        registry.event(
            "promote", name, promoted.version, previous=previous.version if previous else None, forced=force,
            watch_s=watch_s if watched else 0, watch_rules=rules_used if watched else None,
            comparison=_summary(comparison),
        )  # fmt: skip
        gone = [r for r in retiring if r not in standby]
        drain(name, [r.version for r in gone], registry)
        for r in gone:
            _stop_version(registry, r)
    return promoted


def _summary(value: Any) -> Any:
    """Something JSON can keep for the audit trail: a dict as is, a dataclass or an object by its summary."""
    if value is None or isinstance(value, (dict, list, str, int, float, bool)):
        return value
    for attr in ("summary", "to_dict", "as_dict"):
        found = getattr(value, attr, None)
        if isinstance(found, dict):
            return found
        if callable(found):
            with contextlib.suppress(Exception):
                return found()
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        with contextlib.suppress(Exception):
            return asdict(value)
    return str(value)[:2000]


def answered_by(name: str, request_ids: list[str], default: int) -> dict[int, list[int]]:
    """Which version answered each request id, as positions per version, from the router's log (``served``); ids it
    did not route (a version's own URL, no endpoint) belong to ``default``."""
    from .router.contract import STORE_FILE

    store = config.name_dir(name) / STORE_FILE
    found: dict[str, int] = {}
    ep = load(name) if store.exists() and request_ids else None
    # the router logs who answered within 0.2 s: while two versions may have answered (a split, a shadow about to
    # be promoted, the watch after a promotion), wait that long for ids it has not written yet
    two = ep is not None and (ep.candidate is not None or ep.watch is not None)
    deadline = time.monotonic() + (1.0 if two else 0.0)
    while ep is not None:
        _served_by(store, [r for r in request_ids if r not in found], found)
        if len(found) == len(set(request_ids)) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    groups: dict[int, list[int]] = {}
    for i, rid in enumerate(request_ids):
        groups.setdefault(found.get(rid, default), []).append(i)
    return groups


def _served_by(store: Path, request_ids: list[str], found: dict[str, int]) -> None:
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)) as con:
        for start in range(0, len(request_ids), 500):
            chunk = request_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = con.execute(
                f"SELECT request_id, version FROM served WHERE request_id IN ({marks}) AND status = 200", chunk
            ).fetchall()
            found.update({str(rid): int(version) for rid, version in rows})


def sync(registry: Registry, name: str) -> Endpoint | None:
    """Settle what the router did by itself: after an automatic rollback the broken version is stopped and the
    previous one is live again in the registry; a watch that ended cleanly stops the previous version. Each is
    audited once (the endpoint's watch is cleared under the lock)."""
    ep = load(name)
    if ep is None or ep.watch is None:
        return ep
    if ep.watch.outcome not in {"rolled-back", "kept"} and time.time() < ep.watch.until:
        return ep
    with locked(name):
        ep = load(name)
        if ep is None or ep.watch is None:
            return ep
        watch = ep.watch
        if watch.outcome == "rolled-back":  # the router already sends everything to the previous version
            back, others, _ = registry.claim(name, watch.previous.version)
            for r in others:
                registry.update(name, r.version, status=STOPPED, pid=None)
            ep.live, ep.candidate, ep.watch = Upstream(back.version, str(back.url)), None, None
            ep.versions = _versions(registry, name, ep)
            _commit(name, ep, registry)
            # the router audited the rollback itself ("auto-rollback"); this records what the registry did after
            registry.event(
                "auto-rollback-settled", name, back.version, stopped=[r.version for r in others],
                reason=watch.reason, rules=watch.rules,
            )  # fmt: skip
            drain(name, [r.version for r in others], registry)
            for r in others:
                _stop_version(registry, r)
        elif watch.outcome == "kept" or time.time() >= watch.until:
            ep.watch = None
            prev = None
            with contextlib.suppress(Exception):
                prev = registry.get(name, watch.previous.version)
            if prev is not None and prev.status == STANDBY:
                registry.update(name, prev.version, status=STOPPED, pid=None)
            ep.versions = _versions(registry, name, ep)
            _commit(name, ep, registry)
            live = ep.live.version if ep.live else None
            registry.event("watch-kept", name, live, previous=watch.previous.version, rules=watch.rules)
            if prev is not None and prev.status == STANDBY:
                drain(name, [prev.version], registry)
                _stop_version(registry, prev)
        return ep


def sync_all(registry: Registry | None = None) -> None:
    """``sync`` every name with an endpoint (the list views call this: one small file read per name)."""
    reg = registry or Registry()
    for file in sorted((config.home() / "deployments").glob(f"*/{ENDPOINT_FILE}")):
        with contextlib.suppress(Exception):  # a view must not fail on one endpoint
            sync(reg, file.parent.name)


# -- what users see ----------------------------------------------------------------------------------------------------


@dataclass
class EndpointInfo:
    """A name's stable endpoint as it is now: the URL callers use, what answers behind it, the router's figures."""

    name: str
    url: str
    port: int
    live: int | None
    candidate: dict[str, Any] | None
    watch: dict[str, Any] | None
    versions: dict[int, str]
    router_pid: int | None
    router_running: bool
    status: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def _repr_html_(self) -> str:
        esc = html.escape
        state = "running" if self.router_running else "stopped"
        colour = "#1a7f37" if self.router_running else "#6e7781"
        rows = [
            ("Endpoint (stable)", f"<code>{esc(self.url)}</code> · router <b style='color:{colour}'>{state}</b>"),
            ("Live", f"v{self.live}" if self.live is not None else "–"),
        ]
        if self.candidate:
            c = self.candidate
            sticky = f", sticky by {esc(str(c['sticky']))}" if c.get("sticky") else ""
            rows.append(("Candidate", f"v{c['version']} · {esc(str(c['mode']))} {c['percent']:g} %{sticky}"))
        if self.watch:
            w = self.watch
            left = max(0.0, float(w["until"]) - time.time())
            outcome = w.get("outcome") or f"watching, {left:.0f} s left"
            rows.append(("Watch", f"previous v{w['previous']} warm · {esc(str(outcome))}"))
        rows.append(("Versions", " · ".join(f"<code>/v/{v}/</code>" for v in sorted(self.versions)) or "–"))
        body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td>{v}</td></tr>" for k, v in rows)
        return (
            "<div class='nbdeploy-endpoint' style='border:1px solid #d0d7de;border-radius:6px;padding:8px 12px'>"
            f"<b>{esc(self.name)}</b> · endpoint<table>{body}</table></div>"
        )


def info(name: str, registry: Registry | None = None) -> EndpointInfo:
    """The name's endpoint now (after ``sync``), or ``DeploymentNotFound`` if it has none."""
    from .errors import DeploymentNotFound

    reg = registry or Registry()
    row = reg.endpoint(name)
    if row is None:
        reg.get(name)  # an unknown name says so, with the known ones
        raise DeploymentNotFound(
            f"'{name}' has no stable endpoint", hint="its target has none (kubernetes: the Service is stable)"
        )
    ep = sync(reg, name) or Endpoint(name=name, port=int(row["port"]))
    running = _alive(row["pid"], name)
    cand = ep.candidate
    watch = ep.watch
    return EndpointInfo(
        name=name,
        url=str(row["url"]),
        port=int(row["port"]),
        live=ep.live.version if ep.live else None,
        candidate=(
            {"version": cand.upstream.version, "mode": cand.mode, "percent": cand.percent, "sticky": cand.sticky}
            if cand
            else None
        ),
        watch=(
            {
                "previous": watch.previous.version,
                "until": watch.until,
                "rules": watch.rules,
                "outcome": watch.outcome,
                "reason": watch.reason,
            }
            if watch
            else None
        ),
        versions=dict(ep.versions),
        router_pid=row["pid"] if running else None,
        router_running=running,
        status=router_status(int(row["port"])) if running else None,
    )


def start_candidate(registry: Registry, rec: Record, target: Target, role: dict[str, Any]) -> Record:
    """Start ``rec`` beside the live version (its own port) and make it the candidate."""
    check_live(registry, rec.name)
    ensure_router(rec.name, registry=registry)
    if not rec.bento_path:
        raise TargetError(f"'{rec.name}' v{rec.version} has no bento to start from")
    running = target.deploy(rec, rec.bento_path, None)
    extra = {"state": {**rec.state, **running.info}} if running.info else {}
    rec = registry.update(rec.name, rec.version, url=running.url, port=running.port, pid=running.pid, **extra)
    try:
        return add_candidate(registry, rec, role)
    except BaseException:
        target.stop(rec)
        raise
