"""What every list view shows (``nbdeploy list``, ``nbdeploy.deployments()``, ``%deployments``), built in one place.

The registry says what was *meant* to run; a view must say what *does*. For each version the registry holds as
running, the row's status is checked live and cheaply, concurrently for all rows (threads, so ten deployments
stay well under a second):

- ``local`` and ``edge``: is the server's PID alive (its command line checked against PID reuse), and, if so,
  does ``/readyz`` answer within ``PROBE_TIMEOUT_S``: ``running``; alive but not answering: ``degraded``; dead:
  ``failed``.
- ``container``: ``/readyz`` answering means ``running``; otherwise the engine is asked for the container's state
  (one ``podman container inspect``): gone or exited is ``failed``, up but not answering is ``degraded``.
- ``kubernetes``: the cluster is **not** called from a list (it can take seconds, or hang while it is unreachable):
  the row shows the registry's status with ``checked=False`` (shown as "not checked"); ``nbdeploy status NAME``
  and ``Deployment.status()`` ask the cluster.
- any other registered target: its own ``status``.

A crashed version is shown ``failed`` but is *not* written back as failed: the registry keeps it ``running`` (the
version still owns the name and its port), so ``nbdeploy.get(name)``, ``nbdeploy restart NAME`` and
``Deployment.restart()`` find it and bring it back on the same URL; every view computes the same live status, so
they agree without a write. ``recorded`` keeps the registry's word.

Requests and error rate come from the version's request log (sqlite, read-only, two ``COUNT`` queries on the
indexed ``ts`` column). This module imports the standard library and the registry only: the ``nbdeploy`` command
uses it without loading pandas, numpy, httpx or BentoML.
"""

from __future__ import annotations

import html
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import config
from .registry import RUNNING, SERVING, Record, Registry

#: Seconds a ``/readyz`` probe may take before the service counts as not answering.
PROBE_TIMEOUT_S = 0.5
#: The window requests and error rate are counted over.
WINDOW_S = 3600.0
#: The request log's file name in a version's data folder (``nbdeploy.runtime.recorder.DB_NAME``).
REQUEST_LOG = "requests.db"
#: Statuses a container may have while it is up (``nbdeploy.targets.container``).
_CONTAINER_UP = {"created", "configured", "initialized", "running", "restarting", "paused"}
#: Targets whose status in a list is the registry's (asking them is slow or needs a network).
NOT_CHECKED = {"kubernetes"}


@dataclass(frozen=True)
class Row:
    """One version as every view shows it."""

    name: str
    version: int
    target: str
    status: str  # live: running, degraded, failed; or the registry's for versions not running (stopped, ...)
    recorded: str  # what the registry holds
    checked: bool  # False: ``status`` is the registry's, not checked now (kubernetes)
    url: str | None
    bento_tag: str | None
    created_at: str
    updated_at: str
    requests: int | None  # in the last ``window_s``; None: no request log on this machine
    errors: int | None  # of those, answered with a status other than 200
    window_s: float = WINDOW_S

    @property
    def error_rate(self) -> float | None:
        """Errors / requests over the window; None without requests."""
        return self.errors / self.requests if self.requests and self.errors is not None else None

    @property
    def hint(self) -> str:
        """What to do about a version that should run and does not (empty when nothing is to be done)."""
        if self.recorded != RUNNING or not self.checked:
            return ""
        # a running version is the one ``nbdeploy.get(name)`` returns: no --version needed
        if self.status == "failed":
            return f"nbdeploy restart {self.name}"
        if self.status == "degraded":
            return f"nbdeploy logs {self.name}; nbdeploy restart {self.name}"
        return ""

    @classmethod
    def from_mapping(cls, values: Any, window_s: float = WINDOW_S) -> Row:
        """A row back from ``as_dict`` (or a DataFrame row of it); missing counts are None."""

        def given(key: str) -> Any:
            value = values.get(key)
            missing = value is None or (isinstance(value, float) and value != value) or str(value) == "<NA>"
            return None if missing else value  # None, NaN and pd.NA: pandas' ways of saying missing

        def count(key: str) -> int | None:
            value = given(key)
            return None if value is None else int(value)

        return cls(
            name=str(values["name"]),
            version=int(values["version"]),
            target=str(values["target"]),
            status=str(values["status"]),
            recorded=str(values.get("recorded", values["status"])),
            checked=bool(values.get("checked", True)),
            url=given("url"),
            bento_tag=given("bento_tag"),
            created_at=str(values["created_at"]),
            updated_at=str(values.get("updated_at", values["created_at"])),
            requests=count("requests"),
            errors=count("errors"),
            window_s=window_s,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "target": self.target,
            "status": self.status,
            "recorded": self.recorded,
            "checked": self.checked,
            "url": self.url,
            "bento_tag": self.bento_tag,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "hint": self.hint,
        }


#: Columns of ``nbdeploy.deployments()``, in order.
COLUMNS = [
    "name", "version", "target", "status", "recorded", "checked", "url", "bento_tag", "created_at", "updated_at",
    "requests", "errors", "error_rate", "hint",
]  # fmt: skip


def rows(
    all_versions: bool = False, *, registry: Registry | None = None, window_s: float = WINDOW_S, live: bool = True
) -> list[Row]:
    """The rows of the list views: per name the version ``nbdeploy.get`` returns (or every version), checked live."""
    reg = registry or Registry()
    if live:  # settle what a router did by itself (an automatic rollback, a watch that ended) before showing it
        from .endpoint import sync_all

        sync_all(reg)
    records = reg.list(all_versions=all_versions)
    since = time.time() - window_s
    if not records:
        return []
    if len(records) == 1:
        return [_row(records[0], since, window_s, live)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(16, len(records))) as pool:
        return list(pool.map(lambda r: _row(r, since, window_s, live), records))


def _row(rec: Record, since: float, window_s: float, live: bool) -> Row:
    # a candidate or a standby has a process too: checked as a running one, shown by its role while it is healthy
    serving = rec.status in SERVING
    status, checked = live_status(rec) if live and serving else (rec.status, not serving)
    if serving and rec.status != RUNNING and status == RUNNING:
        status = rec.status
    counts = request_counts(rec, since)
    return Row(
        name=rec.name,
        version=rec.version,
        target=rec.target,
        status=status,
        recorded=rec.status,
        checked=checked,
        url=rec.url,
        bento_tag=rec.bento_tag,
        created_at=rec.created_at,
        updated_at=rec.updated_at,
        requests=counts[0] if counts else None,
        errors=counts[1] if counts else None,
        window_s=window_s,
    )


# -- live status ---------------------------------------------------------------------------------------------------


def live_status(rec: Record) -> tuple[str, bool]:
    """(status, checked) of a version the registry holds as running; see the module docstring for how."""
    if rec.target in NOT_CHECKED:
        return rec.status, False
    if rec.target == "local":
        return _process_status(rec, rec.bento_path or "bentoml"), True
    if rec.target == "edge":  # the server is the bundle's server.py in the version's folder
        return _process_status(rec, str(_version_dir(rec))), True
    if rec.target == "container":
        return _container_status(rec), True
    try:  # a registered target: it knows best how to tell
        from .targets import get_target

        return get_target(rec.target).status(rec), True
    except Exception:  # an unimportable plugin must not break the list
        return rec.status, False


def _process_status(rec: Record, marker: str) -> str:
    if not pid_alive(rec.pid, marker):
        return "failed"
    return "running" if rec.url and probe(rec.url) else "degraded"


def _container_status(rec: Record) -> str:
    if rec.url and probe(rec.url):
        return "running"
    from .images import recorded_engine

    recorded = rec.state.get("container") or {}
    try:
        engine = recorded_engine(str(recorded.get("engine") or "podman"))
        state = engine.container_state(str(recorded.get("container") or f"nbdeploy-{rec.name}-v{rec.version}"))
    except Exception:  # the engine is gone: nothing of the container can run
        return "failed"
    return "degraded" if state is not None and state[0] in _CONTAINER_UP else "failed"


def pid_alive(pid: int | None, marker: str) -> bool:
    """True if ``pid`` runs (not a zombie) and its command line contains ``marker``.

    The same test as ``nbdeploy.targets._process.is_alive``, read from /proc here because importing
    ``nbdeploy.targets`` loads httpx, which the ``nbdeploy`` command must not pay for on every ``list``.
    """
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z" and marker in cmdline


def probe(url: str, path: str = "/readyz", timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Does ``url`` answer ``path`` with 200 within ``timeout``? (http.client: no proxies from the environment,
    as the SDK's own probe, and no httpx to import.)"""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.hostname:
        return False
    conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_class(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


# -- the request log -----------------------------------------------------------------------------------------------


def _version_dir(rec: Record) -> Path:
    """The version's data folder, without creating it (a view must not write)."""
    return config.home() / "deployments" / rec.name / f"v{rec.version}"


def request_log_path(rec: Record) -> Path | None:
    """Where the version's service writes its request log on this machine (None on Kubernetes: it is in the pods)."""
    return None if rec.target == "kubernetes" else _version_dir(rec) / REQUEST_LOG


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=PROBE_TIMEOUT_S)
    con.execute(f"PRAGMA busy_timeout={int(PROBE_TIMEOUT_S * 1000)}")
    return con


def request_counts(rec: Record, since: float) -> tuple[int, int] | None:
    """(requests, errors) since ``since`` (epoch seconds); (0, 0) before the first request; None without a log here."""
    path = request_log_path(rec)
    if path is None:
        return None
    if not path.exists():
        return 0, 0
    try:
        con = _connect(path)
        try:
            total, errors = con.execute(
                "SELECT COUNT(*), COALESCE(SUM(status != 200), 0) FROM requests WHERE ts >= ?", (since,)
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error:  # unreadable (a container's file, a schema from the future): unknown, not an error
        return None
    return int(total), int(errors)


def recent_requests(rec: Record, limit: int = 20, errors_only: bool = False) -> list[dict[str, Any]]:
    """The latest ``limit`` requests of the version, newest first: ts, status, latency_ms, rows, error."""
    path = request_log_path(rec)
    if path is None or not path.exists():
        return []
    where = "WHERE status != 200" if errors_only else ""
    con = _connect(path)
    try:
        cur = con.execute(
            f"SELECT request_id, ts, status, latency_ms, n_rows, error FROM requests {where} ORDER BY ts DESC LIMIT ?",
            (limit,),
        )
        keys = [d[0] for d in cur.description]
        return [dict(zip(keys, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


# -- formatting ----------------------------------------------------------------------------------------------------


def _parse(moment: str | float | datetime) -> datetime:
    if isinstance(moment, datetime):
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if isinstance(moment, int | float):
        return datetime.fromtimestamp(moment, UTC)
    parsed = datetime.fromisoformat(moment)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def ago(moment: str | float | datetime, now: datetime | None = None) -> str:
    """``just now``, ``45 s ago``, ``3 min ago``, ``2 h ago``, ``5 days ago``; older than 30 days: the date."""
    then = _parse(moment)
    seconds = ((now or datetime.now(UTC)) - then).total_seconds()
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 30 * 86400:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days > 1 else ''} ago"
    return then.strftime("%Y-%m-%d")


def error_rate_text(row: Row) -> str:
    rate = row.error_rate
    if rate is None:
        return "–"
    return f"{rate:.0%}" if rate == 0 or rate >= 0.01 else f"{rate:.1%}"


def status_text(row: Row) -> str:
    return row.status if row.checked else f"{row.status} (not checked)"


def _window_text(window_s: float) -> str:
    return f"{int(window_s // 3600)} h" if window_s >= 3600 else f"{int(window_s // 60)} min"


def text_table(headers: Sequence[str], body: Iterable[Sequence[Any]]) -> str:
    """A plain table: columns padded to their widest cell, two spaces apart, no wrapping."""
    cells = [[str(h) for h in headers], *([("" if c is None else str(c)) for c in r] for r in body)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def maintenance_line(name: str) -> str | None:
    """What a name's scheduler is doing, in one line (``Deployment.maintain``); None when none runs. Read from its
    state file, so the list costs no import of the maintenance machinery."""
    folder = config.home() / "deployments" / name / "maintain"
    try:
        pid = int((folder / "scheduler.pid").read_text().strip())
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return None
    if not pid_alive(pid, f"nbdeploy.maintenance {name}") or not isinstance(state, dict):
        return None
    rules = state.get("rules") or {}
    parts = [f"watching {len(rules)} rule{'' if len(rules) == 1 else 's'}"]
    firing = sorted(k for k, v in rules.items() if isinstance(v, dict) and v.get("incident"))
    if firing:
        parts.append(", ".join(firing) + " firing")
    retrain = state.get("retrain") or {}
    if retrain.get("status") == "running":
        parts.append(f"retraining after {(retrain.get('trigger') or {}).get('rule', 'an alert')}")
    elif retrain.get("status"):
        parts.append(f"last retraining {retrain['status']}")
    return f"{name}: {'; '.join(parts)}"


def _footnotes(table: Sequence[Row]) -> list[str]:
    notes = []
    for name in dict.fromkeys(r.name for r in table):
        line = maintenance_line(name)
        if line:
            notes.append(f"maintenance of {line}")
    for r in table:
        if r.status == "failed" and r.hint:
            notes.append(f"{r.name} v{r.version} is not running (its server died): {r.hint}")
        elif r.status == "degraded" and r.hint:
            notes.append(f"{r.name} v{r.version} runs but does not answer /readyz: {r.hint}")
    if any(not r.checked for r in table):
        notes.append("not checked: the registry's word (nbdeploy status NAME asks the cluster)")
    return notes


def list_text(table: Sequence[Row], now: datetime | None = None) -> str:
    """``nbdeploy list``: one line per version, then what to do about the failed ones."""
    if not table:
        return "no deployments"
    window = _window_text(table[0].window_s)
    headers = ["NAME", "VERSION", "TARGET", "STATUS", "URL", "DEPLOYED", f"REQUESTS ({window})", "ERRORS"]
    body = [
        [
            r.name, f"v{r.version}", r.target, status_text(r), r.url or "–", ago(r.created_at, now),
            "–" if r.requests is None else r.requests, error_rate_text(r),
        ]
        for r in table
    ]  # fmt: skip
    return "\n".join([text_table(headers, body), *_footnotes(table)])


_COLOURS = {
    "running": "#1a7f37",
    "degraded": "#9a6700",
    "failed": "#cf222e",
    "starting": "#9a6700",
    "candidate": "#0969da",
    "standby": "#8250df",
}


def html_table(table: Sequence[Row], now: datetime | None = None) -> str:
    """``%deployments``: a compact table keyed by name, times relative, status coloured, the fix beside a failure."""
    if not table:
        return "<p><i>no deployments</i></p>"
    esc = html.escape
    window = _window_text(table[0].window_s)
    cell = "padding:2px 10px;text-align:left;white-space:nowrap"
    heads = ["name", "version", "target", "status", "url", "deployed", f"requests ({window})", "errors", ""]
    out = [
        '<table class="nbdeploy-deployments" style="border-collapse:collapse;font-size:13px">',
        "<thead><tr>" + "".join(f'<th style="{cell}">{esc(h)}</th>' for h in heads) + "</tr></thead><tbody>",
    ]
    for r in table:
        colour = _COLOURS.get(r.status, "#57606a")
        url = f'<a href="{esc(r.url)}/docs" target="_blank">{esc(r.url)}</a>' if r.url and r.status in SERVING else ""
        created = esc(r.created_at)
        values = [
            f"<b>{esc(r.name)}</b>",
            f"v{r.version}",
            esc(r.target),
            f'<span style="color:{colour};font-weight:600">{esc(r.status)}</span>'
            + ("" if r.checked else ' <span style="color:#57606a">(not checked)</span>'),
            url or esc(r.url or "–"),
            f'<span title="{created}">{esc(ago(r.created_at, now))}</span>',
            "–" if r.requests is None else str(r.requests),
            esc(error_rate_text(r)),
            f'<code style="color:{colour}" title="{esc(_notebook_hint(r))}">{esc(r.hint)}</code>' if r.hint else "",
        ]
        out.append("<tr>" + "".join(f'<td style="{cell}">{v}</td>' for v in values) + "</tr>")
    out.append("</tbody></table>")
    notes = [n for n in _footnotes(table) if n.startswith(("not checked", "maintenance of"))]
    for note in notes:
        out.append(f'<p style="font-size:12px;color:#57606a;margin:2px 0">{esc(note)}</p>')
    return "".join(out)


def _notebook_hint(row: Row) -> str:
    return f"in Python: nbdeploy.get({row.name!r}).restart()"
