"""A name's timeline: alerts fired, retrainings, promotions and rollbacks, from the registry's audit events.

``timeline`` reads the latest events of those actions (one query) and reduces each to a small JSON-ready row the
panel draws: its time, action, version, a one-line text and a kind for its colour. The maintenance loop
(``nbdeploy.maintenance``, ``dep.maintain()``) writes most of these events; ``deploy``, ``promote``, ``rollback``,
``auto-rollback`` and ``reject`` come from the deploys, the router and the user, and share the timeline.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..registry import Registry
from .style import BLUE, GREEN, GREY, MUTED, PURPLE, RED, clock

__all__ = ["HISTORY_ACTIONS", "KINDS", "history_html", "row", "timeline"]

#: events of the maintenance loop, with the router's and the user's decisions that share its timeline
HISTORY_ACTIONS = (
    "maintain-started", "maintain-stopped", "alert-fired", "alert-resolved", "retrain-started", "retrain-skipped",
    "retrain-failed", "retrain-gate", "retrain-lost", "retrain-shadow", "retrain-promoted", "retrain-rejected",
    "retrain-superseded", "deploy", "promote", "rollback", "auto-rollback", "reject",
)  # fmt: skip

#: a row's kind -> its colour on the timeline (the lanes, top to bottom)
KINDS = {"alert": RED, "retrain": BLUE, "promote": GREEN, "rollback": PURPLE, "other": GREY}
LATEST = 200  # events the panel keeps
TEXT_CHARS = 200


def _kind(action: str) -> str:
    if action == "alert-fired":
        return "alert"
    if action in ("promote", "retrain-promoted", "deploy"):
        return "promote"
    if action in ("rollback", "auto-rollback", "reject", "retrain-rejected"):
        return "rollback"
    return "retrain" if action.startswith("retrain-") else "other"


def _num(v: Any, spec: str = ".3g") -> str:
    try:
        return format(float(v), spec)
    except (TypeError, ValueError):
        return "?"


def _rows_of(evidence: Any) -> str:
    """' on 1,200 rows' from an alert's evidence (rows, requests or labelled rows), else ''."""
    if not isinstance(evidence, Mapping):
        return ""
    for key, unit in (("rows", "rows"), ("requests", "requests"), ("labelled", "labelled rows"),
                      ("rows_with_probabilities", "rows")):  # fmt: skip
        if isinstance(evidence.get(key), int | float):
            return f" on {int(evidence[key]):,} {unit}"
    return ""


def _gate(d: Mapping[str, Any]) -> str:
    """'retrain gate passed: accuracy 0.78 → 1.00 on 1,260 held-out rows (McNemar p = 1e-20)'."""
    metric = str(d.get("metric") or "score")
    spec = ".2f" if metric == "accuracy" else ".4g"
    test = str(d.get("test") or "").split(" ")[0]
    p = f" ({test + ' ' if test else ''}p = {_num(d['p_value'], '.2g')})" if d.get("p_value") is not None else ""
    rows = f" on {int(d['rows']):,} held-out rows" if isinstance(d.get("rows"), int | float) else ""
    verdict = "passed" if d.get("passed") else "failed"
    scores = f"{_num(d.get('champion'), spec)} → {_num(d.get('candidate'), spec)}"
    return f"retrain gate {verdict}: {metric} {scores}{rows}{p}"


def _because(d: Mapping[str, Any]) -> str:
    why = d.get("why") or d.get("reason")
    if why:
        return f": {why}"
    rules = d.get("rules")
    return f": {'; '.join(map(str, rules))}" if isinstance(rules, list) and rules else ""


def _text(action: str, version: int | None, d: Mapping[str, Any]) -> str:
    v = f"v{version}" if version is not None else "?"
    if action in ("alert-fired", "alert-resolved"):
        rule = d.get("rule", "?")
        if action == "alert-resolved":
            return f"{rule} resolved{_because(d)}"
        measured = f"{rule} {d.get('op', '?')} {_num(d.get('threshold'), 'g')}: {_num(d.get('value'))}"
        return f"{measured}{_rows_of(d.get('evidence'))} ({d.get('severity', '?')})"
    if action == "retrain-gate":
        return _gate(d)
    texts = {
        "retrain-started": f"retraining started by {(d.get('trigger') or {}).get('rule', 'hand')}",
        "retrain-shadow": f"retrained {v} shadows v{d.get('champion', '?')}",
        "retrain-promoted": f"retrained {v} promoted",
        "retrain-rejected": f"retrained {v} rejected",
        "retrain-superseded": f"retrained {v} superseded ({d.get('status', '?')})",
        "deploy": f"{v} deployed" + (f" ({d['role']})" if d.get("role") else ""),
        "promote": f"{v} promoted" + (" (forced)" if d.get("forced") else ""),
        "rollback": f"rolled back to {v}",
        "auto-rollback": f"{v} rolled back automatically" + (f" to v{d['to']}" if d.get("to") else ""),
        "reject": f"{v} rejected",
        "maintain-started": "maintenance started" + (f" ({len(d['rules'])} rules)" if d.get("rules") else ""),
        "maintain-stopped": "maintenance stopped",
    }
    head = texts.get(action, action.replace("-", " ").replace("retrain ", "retraining "))
    return head + ("" if action in ("retrain-started", "retrain-shadow") else _because(d))


def _epoch(at: Any) -> float:
    try:
        return datetime.fromisoformat(str(at)).timestamp()
    except ValueError:
        return 0.0


def row(event: Mapping[str, Any]) -> dict[str, Any]:
    """One audit event (``Registry.events``) as the panel's timeline row: id, t (epoch s), action, version,
    text (one line), kind (alert, retrain, promote, rollback, other); an alert also carries its severity and
    summary (the toast)."""
    action, version = str(event["action"]), event.get("version")
    raw = event.get("detail")
    detail: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    text = " ".join(_text(action, version, detail).split())
    out: dict[str, Any] = {
        "id": int(event.get("id") or 0), "t": _epoch(event.get("at")), "action": action, "version": version,
        "text": text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…", "kind": _kind(action),
    }  # fmt: skip
    if action == "alert-fired":
        out["severity"] = str(detail.get("severity") or "warning")
        out["summary"] = str(detail.get("summary") or text)[:500]
    return out


def timeline(name: str, registry: Registry | None = None, last: int = LATEST) -> list[dict[str, Any]]:
    """The latest ``last`` timeline events of ``name`` (every version), oldest first, as ``row``s."""
    events = (registry or Registry()).events(name, actions=HISTORY_ACTIONS, last=last)
    return [row(e) for e in events]


# ---------------------------------------------------------------------------------------------- static HTML


def _svg(rows: list[dict[str, Any]], now: float, width: int = 760) -> str:
    """The timeline as inline SVG: one lane per kind, one marker per event, its text as the native tooltip."""
    left, right, lane, top = 70, 12, 16, 6
    height = top + lane * len(KINDS) + 20
    t0 = min(min(r["t"] for r in rows), now - 60)
    span = max(now - t0, 1.0)

    def x(t: float) -> float:
        return left + (width - left - right) * (t - t0) / span

    parts = [f"<svg width='{width}' height='{height}' viewBox='0 0 {width} {height}' class='nbd-timeline' "
             "style='border:1px solid #d0d7de;border-radius:6px;background:#fff'>"]  # fmt: skip
    for i, (kind, colour) in enumerate(KINDS.items()):
        y = top + lane * i + lane / 2
        parts.append(f"<line x1='{left}' x2='{width - right}' y1='{y}' y2='{y}' stroke='#eaeef2'/>"
                     f"<text x='4' y='{y + 3}' font-size='10' fill='{colour}'>{kind}</text>")  # fmt: skip
    for r in rows:
        y = top + lane * list(KINDS).index(r["kind"]) + lane / 2
        tip = html.escape(f"{clock(r['t'])} · {r['text']}")
        parts.append(f"<circle cx='{x(r['t']):.1f}' cy='{y}' r='4.5' fill='{KINDS[r['kind']]}' fill-opacity='0.85'>"
                     f"<title>{tip}</title></circle>")  # fmt: skip
    for k, anchor in ((0, "start"), (1, "middle"), (2, "end")):
        t = t0 + span * k / 2
        parts.append(f"<text x='{x(t):.1f}' y='{height - 5}' font-size='9' fill='{MUTED}' text-anchor='{anchor}'>"
                     f"{_when(t, span)}</text>")  # fmt: skip
    return "".join(parts) + "</svg>"


def _when(t: float, span: float) -> str:
    return datetime.fromtimestamp(t).astimezone().strftime("%b %d %H:%M") if span > 20 * 3600 else clock(t)


def history_html(rows: list[dict[str, Any]], now: float, latest: int = 8) -> str:
    """The History section of the static snapshot: the timeline and the latest events, newest first."""
    head = "<div style='font-size:13px;font-weight:600;margin:8px 0 4px'>History</div>"
    if not rows:
        return (f"{head}<div style='color:{GREY};font-size:12px'>No alerts, retrainings, promotions or rollbacks "
                "yet.</div>")  # fmt: skip
    items = "".join(
        f"<li style='list-style:none'><span style='color:{KINDS[r['kind']]}'>●</span> "
        f"<span style='color:{MUTED}'>{_when(r['t'], now - r['t'])}</span> {html.escape(r['text'])}</li>"
        for r in reversed(rows[-latest:])
    )
    return (
        f"<div class='nbdeploy-history'>{head}{_svg(rows, now)}"
        f"<ul style='margin:4px 0;padding:0;font-size:12px;line-height:1.5'>{items}</ul></div>"
    )
