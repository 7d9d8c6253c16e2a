"""The card a deployment shows in a notebook: what it is, where it answers, how to call it. Rendering only.

A card never holds the full API key: a notebook's outputs are saved into the ``.ipynb``, which goes to git. The key
is masked here; ``dep.key()`` and ``nbdeploy key NAME`` give it, and the snippets read it from ``$NBDEPLOY_KEY``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from . import keys
from .record import Record

_COLOURS = {
    "running": "#1a7f37",
    "stopped": "#6e7781",
    "failed": "#cf222e",
    "degraded": "#9a6700",
    "candidate": "#0969da",
    "standby": "#8250df",
}
#: A request body up to this many characters goes inline in the curl line; a longer one is read from a file.
INLINE_BODY_CHARS = 160
EXAMPLE_FILE = "example.json"


def example_body(rec: Record) -> str:
    """The JSON body of the card's example request: the first row of the sample the model was deployed with."""
    return json.dumps({"inputs": rec.info.example or []})


def curl(rec: Record, key: str | None = None, example_path: Path | None = None, url: str | None = None) -> str:
    """A ready-to-copy request. The key comes from ``$NBDEPLOY_KEY`` unless one is passed (scripts, tests); a long
    body (a wide model) is read from ``example_path`` (``@file``), so the line stays one line. ``url``: where to
    send it (the name's stable URL), else the version's own."""
    body = example_body(rec)
    auth = ""
    if rec.info.auth:
        auth = f" -H 'authorization: Bearer {key}'" if key else ' -H "authorization: Bearer $NBDEPLOY_KEY"'
    data = "'" + body.replace("'", "'\\''") + "'"
    if example_path is not None and len(body) > INLINE_BODY_CHARS:
        data = f"@{example_path}"
    return f"curl -s -X POST {url or rec.url}/predict -H 'content-type: application/json'{auth} -d {data}"


def _key_row(rec: Record, stored_key: str | None) -> str:
    if not rec.info.auth:
        return "<b style='color:#cf222e'>off</b> (deployed with auth=False: anyone who reaches the URL can call it)"
    name = html.escape(rec.name)
    return (
        f"<code>{html.escape(keys.masked(stored_key))}</code> "
        f"<span style='color:#57606a'>never shown here, so it never lands in a saved notebook: "
        f'<code>nbdeploy.get("{name}").key()</code>, or in a shell '
        f"<code>export NBDEPLOY_KEY=$(nbdeploy key {name})</code></span>"
    )


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


def _column_kind(spec: dict[str, Any]) -> str:
    kind = str(spec.get("kind", spec.get("dtype", "?")))
    if spec.get("categories") is not None:
        shown = ", ".join(map(str, spec["categories"][:8])) + (" …" if len(spec["categories"]) > 8 else "")
        kind += f" ({shown})"
    return kind + (", may be missing" if spec.get("nullable") else "")


def _schema_rows(rec: Record) -> str:
    """The input schema, collapsed: one line per column (kind, categories) and the example row."""
    schema = rec.info.schema
    if schema.get("kind") == "ndarray":
        summary = f"an array of {schema.get('n_features')} features ({schema.get('dtype')})"
        table = ""
    else:
        columns = schema.get("columns", [])
        summary = f"{len(columns)} columns"
        rows = "".join(
            f"<tr><td><code>{html.escape(str(c['name']))}</code></td><td>{html.escape(_column_kind(c))}</td></tr>"
            for c in columns
        )
        table = f"<table style='font-size:0.9em'>{rows}</table>"
    example = html.escape(example_body(rec))
    return (
        f"<details><summary>{html.escape(summary)}</summary>{table}"
        f"<div>Example body:</div><pre style='white-space:pre-wrap;font-size:0.85em'>{example}</pre></details>"
    )


def _timings(rec: Record) -> str | None:
    t = rec.info.timings
    if not t:
        return None
    parts = " · ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in t.items() if isinstance(v, (int, float)))
    return f"{sum(v for v in t.values() if isinstance(v, (int, float))):.1f} s ({parts})"


def serving_line(compiled: dict[str, Any] | None) -> str | None:
    """Which path answers and why, in words: the compiled model with its parity figures, or the Python object with
    the reason it serves."""
    if not compiled:
        return None
    if compiled.get("path", "python") == "python":
        return f"the Python object ({compiled.get('reason') or 'not compiled'})"
    parity = compiled.get("parity") or {}
    speed = compiled.get("one_row_us") or {}
    parts = [f"compiled: {compiled.get('backend') or compiled['path']}"]
    if parity:
        rows = parity.get("rows", 0)
        classes = "classes identical, " if parity.get("classes_equal") else ""
        parts.append(
            f"parity on {rows:,} rows ({parity.get('sample_rows', 0):,} sample + {parity.get('generated_rows', 0):,}"
            f" generated): {classes}max relative difference {parity.get('max_rel_diff', 0):.1e}"
            f" (tolerance {parity.get('rtol', 0):.0e})"
        )
    if speed.get("python") and speed.get("compiled"):
        parts.append(f"one row {speed['compiled'] / 1000:.2f} ms vs {speed['python'] / 1000:.2f} ms in Python")
    return " · ".join(parts)


def _try_it(url: str | None) -> str:
    """A link to the service's own page (a form from the schema), where there is a URL to open."""
    return f"<a href='{html.escape(url)}/' target='_blank'>try it in a browser</a> · " if url else ""


def _routes(rec: Record) -> str:
    methods = [m for m in rec.info.methods or [] if m != "predict"]
    calls = ["<code>.predict(X)</code>", *(f"<code>.{html.escape(m)}(X)</code>" for m in methods)]
    return " ".join(calls)


def render(
    rec: Record,
    stored_key: str | None = None,
    note: str | None = None,
    example_path: Path | None = None,
    endpoint_url: str | None = None,
) -> str:
    """The card's HTML; ``stored_key``: the name's key, shown masked; ``note``: a line above the table (such as
    "unchanged: this version already serves the model"); ``example_path``: the saved example body, for wide
    models' curl line; ``endpoint_url``: the name's stable URL, shown first and used in the curl line."""
    colour = _COLOURS.get(rec.status, "#9a6700")
    name = html.escape(rec.name)
    model = html.escape(rec.info.model or rec.info.kind or "?")
    own = "This version" if endpoint_url else "URL"
    rows = [
        ("URL", f"<code>{html.escape(rec.url or '-')}</code>"),
        ("Status", f"<b style='color:{colour}'>{html.escape(rec.status)}</b> on {html.escape(rec.target)}"),
        ("Model", f"{model} · {_routes(rec)}"),
        ("Input", _schema_rows(rec)),
        ("API key", _key_row(rec, stored_key)),
        ("Deployed in", html.escape(_timings(rec) or "-")),
        (
            "Artifact",
            f"<code>{html.escape(rec.info.sha256[:16])}</code> · <code>{html.escape(rec.bento_tag or '-')}</code>",
        ),
        ("Lineage", _lineage_row(rec)),
        ("Serving", html.escape(serving_line(rec.info.compiled) or "the Python object")),
        (
            "Use it",
            _try_it(endpoint_url or rec.url)
            + f'<code>dep = nbdeploy.get("{name}")</code> · <code>%monitor {name}</code> (live panel) · '
            + f"<code>nbdeploy status {name}</code>",
        ),
    ]
    if endpoint_url:
        role = (rec.state.get("endpoint") or {}) if rec.status == "candidate" else {}
        what = f" · this version is a {role.get('mode')} candidate ({role.get('percent', 100):g} %)" if role else ""
        stable = f"<code>{html.escape(endpoint_url)}</code> <span style='color:#57606a'>same URL for every version"
        rows[0] = (own, f"<code>{html.escape(rec.url or '-')}</code>")
        rows.insert(0, ("Endpoint (stable)", f"{stable}{html.escape(what)}</span>"))
    body = "".join(
        f"<tr><th style='text-align:left;padding-right:1em;vertical-align:top'>{k}</th><td>{v}</td></tr>"
        for k, v in rows
    )
    try_it = curl(rec, None, example_path, endpoint_url)
    banner = f"<div style='color:#9a6700'>{html.escape(note)}</div>" if note else ""
    return (
        "<div class='nbdeploy-card' style='border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;"
        "max-width:900px'>"
        f"<div style='font-size:1.1em'><b>{name}</b> &middot; version {rec.version}</div>{banner}"
        f"<table>{body}</table>"
        f"<div>Try it:</div><pre style='white-space:pre-wrap'>{html.escape(try_it)}</pre>"
        "</div>"
    )
