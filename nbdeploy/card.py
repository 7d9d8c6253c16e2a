"""The card a deployment shows in a notebook: what it is, where it answers, how to call it. Rendering only.

The key is shown in full only when the caller passes it (the handle that a deploy returned, which made the key);
every other card masks it, and the curl line then reads the key from ``$NBDEPLOY_KEY``.
"""

from __future__ import annotations

import html
import json

from . import keys
from .registry import Record

_COLOURS = {"running": "#1a7f37", "stopped": "#6e7781", "failed": "#cf222e"}


def curl(rec: Record, key: str | None = None) -> str:
    """A ready-to-copy request: the first row of the sample the model was deployed with."""
    body = json.dumps({"inputs": rec.info.example or []}).replace("'", "'\\''")
    auth = ""
    if rec.info.auth:
        auth = f" -H 'authorization: Bearer {key}'" if key else ' -H "authorization: Bearer $NBDEPLOY_KEY"'
    return f"curl -s -X POST {rec.url}/predict -H 'content-type: application/json'{auth} -d '{body}'"


def _key_row(rec: Record, shown_key: str | None, stored_key: str | None) -> str:
    if not rec.info.auth:
        return "<b style='color:#cf222e'>off</b> (deployed with auth=False: anyone who reaches the URL can call it)"
    if shown_key:
        return (
            f"<code>{html.escape(shown_key)}</code> <i>shown once: copy it now; later "
            f"<code>nbdeploy key {html.escape(rec.name)}</code> prints it</i>"
        )
    masked = html.escape(keys.masked(stored_key))
    return f"<code>{masked}</code> (<code>export NBDEPLOY_KEY=$(nbdeploy key {rec.name})</code>)"


def _lineage_row(rec: Record) -> str:
    lin = rec.info.lineage
    parts = [f"{lin.get('user', '?')}@{lin.get('host', '?')}", f"Python {lin.get('python', '?')}"]
    if lin.get("git_commit"):
        parts.append(f"git {lin['git_commit'][:10]}" + (" (dirty)" if lin.get("git_dirty") else ""))
    if lin.get("notebook"):
        parts.append(str(lin["notebook"]))
    reqs = rec.info.requirements
    parts.append(f"{len(reqs)} pinned requirements ({str(lin.get('requirements_sha256', ''))[:12]})")
    return html.escape(" · ".join(parts))


def render(rec: Record, shown_key: str | None = None, stored_key: str | None = None) -> str:
    """The card's HTML. ``shown_key``: the full key, for the card of the deploy that made it; ``stored_key``: the
    name's key, shown masked."""
    colour = _COLOURS.get(rec.status, "#9a6700")
    rows = [
        ("URL", f"<code>{html.escape(rec.url or '-')}</code>"),
        ("Target", html.escape(rec.target)),
        ("Status", f"<b style='color:{colour}'>{html.escape(rec.status)}</b>"),
        ("API key", _key_row(rec, shown_key, stored_key)),
        ("Bento", f"<code>{html.escape(rec.bento_tag or '-')}</code>"),
        ("Artifact", f"<code>{html.escape(rec.info.sha256[:16])}</code>"),
        ("Lineage", _lineage_row(rec)),
        ("Monitor", f"<code>dep.monitor()</code> or <code>%monitor {html.escape(rec.name)}</code> (live panel)"),
    ]
    body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return (
        "<div class='nbdeploy-card' style='border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;"
        "max-width:900px'>"
        f"<div style='font-size:1.1em'><b>{html.escape(rec.name)}</b> &middot; version {rec.version}</div>"
        f"<table>{body}</table>"
        f"<div>Try it:</div><pre style='white-space:pre-wrap'>{html.escape(curl(rec, shown_key))}</pre></div>"
    )
