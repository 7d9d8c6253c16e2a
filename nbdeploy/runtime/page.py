"""The try-it page at a service's ``/``: a form generated from the captured schema, with no request to another host.

Three steps, each usable on its own (the service, the edge bundle and the notebook form share them):

- ``summarize`` (at deploy, where the sample is): each column's range or values seen, and a few real rows. Redacted
  columns get neither (their rows hold a placeholder of their kind), so the open page shows nothing the request
  log would not keep.
- ``config`` (in the service): the page's JSON from the artifact's meta; without a summary (an older bento) the
  page still works from the schema and the example row alone.
- ``render``: one HTML document with its script and styles inline (``page_assets``) and a Content-Security-Policy
  that lets it talk to its own origin only, so it works offline and behind a firewall, and cannot leak the key.

The API key is typed into the page and kept in the page's memory only (never stored, never put in a URL).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from . import page_assets
from .schema import from_polars, is_polars

#: Real rows of the sample the page offers ("Sample row"); few, as the page is open to anyone who can reach it.
ROWS = 5
#: A string column with at most this many distinct values is a drop-down; beyond, the most common are suggestions.
CHOICES = 50
#: Rows one CSV upload may have (sent in chunks of ``CSV_CHUNK``): a what-if table, not batch scoring.
MAX_CSV_ROWS = 10_000
CSV_CHUNK = 1000
_MAX_DECIMALS = 6


# ---------------------------------------------------------------------------------------------- summary


def fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The input fields a schema asks for, in order: a DataFrame's column specs, or one number per array feature."""
    if schema.get("kind") == "ndarray":
        n = int(schema.get("n_features", 0))
        names = schema.get("feature_names") or [f"x{i}" for i in range(n)]
        kind = "integer" if str(schema.get("dtype", "float")).startswith(("int", "uint")) else "float"
        return [{"name": str(nm), "kind": kind, "nullable": bool(schema.get("nullable"))} for nm in names]
    return [dict(c) for c in schema.get("columns", [])]


def _frame(data: Any, schema: dict[str, Any]) -> pd.DataFrame:
    """The sample as a frame whose columns are the fields' names (an array's features by position)."""
    if is_polars(data):
        data = from_polars(data)
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = pd.DataFrame.from_records(data)
    if isinstance(data, pd.DataFrame) and schema.get("kind") != "ndarray":
        return data.set_axis([str(c) for c in data.columns], axis=1)
    arr = np.asarray(data)
    names = [f["name"] for f in fields(schema)]
    if arr.ndim != 2 or arr.shape[1] != len(names):
        return pd.DataFrame()
    return pd.DataFrame(arr, columns=names)


def _decimals(values: np.ndarray) -> int:
    """The fewest decimals that write every value exactly (up to ``_MAX_DECIMALS``): random rows look like real ones."""
    head = values[:1000]
    for d in range(_MAX_DECIMALS + 1):
        if np.array_equal(np.round(head, d), head):
            return d
    return _MAX_DECIMALS


def _number_facts(col: pd.Series, kind: str) -> dict[str, Any]:
    try:
        arr = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        return {}
    arr = arr[np.isfinite(arr)]
    if not arr.size:
        return {}
    low, high = float(arr.min()), float(arr.max())
    if kind == "integer":
        return {"min": int(low), "max": int(high), "decimals": 0}
    return {"min": low, "max": high, "decimals": _decimals(arr)}


def _datetime_facts(col: pd.Series) -> dict[str, Any]:
    try:
        ts = pd.to_datetime(col, errors="coerce").dropna()
    except (TypeError, ValueError, OverflowError):
        return {}
    if ts.empty:
        return {}
    with_time = bool((ts != ts.dt.normalize()).any())
    return {"min": ts.min().isoformat(), "max": ts.max().isoformat(), "time": with_time}


def _string_facts(col: pd.Series, choices: int) -> dict[str, Any]:
    present = col.dropna()
    present = present[[isinstance(v, str) for v in present]]
    if present.empty:
        return {}
    counts = present.value_counts()
    if len(counts) <= choices:
        return {"values": sorted(str(v) for v in counts.index)}
    return {"values": [str(v) for v in counts.index[:choices]], "more": True}


def _column_facts(col: pd.Series, spec: dict[str, Any], choices: int) -> dict[str, Any]:
    kind = spec.get("kind")
    if kind in ("integer", "float"):
        return _number_facts(col, kind)
    if kind == "datetime":
        return _datetime_facts(col)
    if kind == "string":
        return _string_facts(col, choices)
    return {}


def _cell(value: Any) -> Any:
    """A sample value as the JSON the service reads (``nbdeploy.wire`` writes the same)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, pd.Timedelta):
        return str(value)
    if isinstance(value, (str, int, bool)):
        return value
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def placeholder(spec: dict[str, Any]) -> Any:
    """What a redacted column's cell holds on the page: a value of its kind that says nothing about anyone."""
    kind = spec.get("kind")
    if kind == "bool":
        return False
    if kind in ("integer", "float"):
        return 0
    if kind == "category":
        return (spec.get("categories") or [None])[0]
    if kind == "datetime":
        return "1970-01-01T00:00:00"
    return "redacted"


def summarize(
    data: Any, schema: dict[str, Any], redacted: Iterable[str] = (), rows: int = ROWS, choices: int = CHOICES
) -> dict[str, Any]:
    """Per field, the sample's range (numbers, dates) or values seen (strings), and ``rows`` rows spread over it.

    ``data`` is the sample the model was deployed with (pandas, polars, array or records). A redacted column, or one
    ``data`` lacks (a reference sample with the column dropped), is marked ``redacted`` and shows a placeholder.
    """
    frame = _frame(data, schema)
    specs = fields(schema)
    hidden = set(redacted)
    present = set(frame.columns)
    columns: list[dict[str, Any]] = []
    for spec in specs:
        name = spec["name"]
        if name in hidden or name not in present:
            columns.append({"redacted": True})
        else:
            columns.append(_column_facts(frame[name], spec, choices))
    n = len(frame)
    picks = sorted({round(i) for i in np.linspace(0, n - 1, min(rows, n))}) if n else []
    out_rows = []
    for i in picks:
        row = []
        for spec, facts in zip(specs, columns, strict=True):
            row.append(placeholder(spec) if facts.get("redacted") else _cell(frame[spec["name"]].iloc[i]))
        out_rows.append(row)
    return {"columns": columns, "rows": out_rows}


# ---------------------------------------------------------------------------------------------- config


def _input(spec: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """How the page asks for one field: the control, its range or options."""
    kind = spec.get("kind")
    out: dict[str, Any] = {"name": spec["name"], "kind": kind, "nullable": bool(spec.get("nullable"))}
    if facts.get("redacted"):
        out["redacted"] = True
    if kind in ("integer", "float"):
        out["input"] = "number"
        for key in ("min", "max", "decimals"):
            if key in facts:
                out[key] = facts[key]
    elif kind == "bool":
        out.update(input="select", options=[True, False])
    elif kind == "category":
        out.update(input="select", options=list(spec.get("categories") or []))
    elif kind == "datetime":
        out["input"] = "datetime" if facts.get("time") else "date"
        for key in ("min", "max"):
            if key in facts:
                out[key] = facts[key]
    elif kind == "string" and facts.get("values"):
        if facts.get("more"):
            out.update(input="text", suggestions=facts["values"])
        else:
            out.update(input="select", options=facts["values"])
    elif kind == "object":
        out["input"] = "json"
    else:
        out["input"] = "text"
    return out


def _example_rows(example: Any, names: list[str], array: bool) -> list[list[Any]]:
    if not isinstance(example, list):
        return []
    if array:
        return [list(r) for r in example if isinstance(r, list) and len(r) == len(names)]
    return [[r.get(n) for n in names] for r in example if isinstance(r, dict)]


def _lineage(lineage: dict[str, Any] | None) -> dict[str, Any]:
    """Where the model came from, without who or on which host: the notebook's file name, when, which commit."""
    lineage = lineage or {}
    out: dict[str, Any] = {}
    notebook = PurePath(str(lineage.get("notebook") or "")).name
    if notebook and not notebook.startswith("__"):  # not a runner's __main__.py
        out["notebook"] = notebook
    if lineage.get("created_at"):
        out["created_at"] = str(lineage["created_at"])
    if lineage.get("git_commit"):
        out["git_commit"] = str(lineage["git_commit"])[:12]
        out["git_dirty"] = bool(lineage.get("git_dirty"))
    return out


def config(meta: dict[str, Any], methods: Iterable[str], auth: bool = True, server: str = "service") -> dict[str, Any]:
    """What the page's script needs, from the artifact's meta: fields, sample rows, routes, and who it is.

    ``meta`` has ``schema`` and may have ``service_name``, ``version``, ``model``, ``lineage``, ``example`` and
    ``sample_summary`` (``summarize``'s); ``methods`` are the model's routes beside ``predict``.
    """
    schema = meta.get("schema") or {}
    specs = fields(schema)
    summary = meta.get("sample_summary") or {}
    facts = summary.get("columns") or []
    if len(facts) != len(specs):
        facts = [{} for _ in specs]
    names = [s["name"] for s in specs]
    array = schema.get("kind") == "ndarray"
    rows = summary.get("rows") or _example_rows(meta.get("example"), names, array)
    methods = set(methods)
    return {
        "name": str(meta.get("service_name") or "nbdeploy"),
        "version": meta.get("version"),
        "model": meta.get("model") or None,
        "lineage": _lineage(meta.get("lineage")),
        "array": array,
        "fields": [_input(s, f) for s, f in zip(specs, facts, strict=True)],
        "rows": [r for r in rows if isinstance(r, list) and len(r) == len(specs)],
        "proba": "predict_proba" in methods,
        "feedback": server == "service",
        "auth": bool(auth),
        "server": server,
        "maxCsvRows": MAX_CSV_ROWS,
        "csvChunk": CSV_CHUNK,
    }


# ---------------------------------------------------------------------------------------------- render


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


#: Only this page's own script and styles run, and it may talk to its own origin only.
CSP = "; ".join(
    [
        "default-src 'none'",
        f"script-src '{_sha256(page_assets.SCRIPT)}'",
        f"style-src '{_sha256(page_assets.STYLE)}'",
        "connect-src 'self'",
        "img-src 'self' data: blob:",
        "base-uri 'none'",
        "form-action 'none'",
    ]
)
#: Headers the page is served with (the service and the edge server alike).
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def _json_in_html(value: Any) -> str:
    """JSON safe inside a ``<script type="application/json">``: no ``</script>`` or comment can close it."""
    return json.dumps(value).replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _about(cfg: dict[str, Any]) -> str:
    """The line under the title, readable without the script: version, model, notebook, when, commit."""
    parts = [f"version {cfg['version']}" if cfg.get("version") is not None else "edge bundle"]
    if cfg.get("model"):
        parts.append(str(cfg["model"]))
    lineage = cfg.get("lineage") or {}
    if lineage.get("notebook"):
        parts.append(f"from {lineage['notebook']}")
    if lineage.get("created_at"):
        parts.append(f"captured {_when(str(lineage['created_at']))}")
    if lineage.get("git_commit"):
        parts.append(f"commit {lineage['git_commit']}{' (uncommitted changes)' if lineage.get('git_dirty') else ''}")
    return " · ".join(html.escape(p) for p in parts)


def _when(text: str) -> str:
    """An ISO time as people read it: ``2026-11-30 10:00 UTC``."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return text
    zone = "" if at.tzinfo is None else " UTC" if at.utcoffset() == timedelta(0) else at.strftime(" %z")
    return at.strftime("%Y-%m-%d %H:%M") + zone


def render(cfg: dict[str, Any]) -> str:
    """The page: title, a description readable without script, the config as JSON, and the inline script."""
    name = html.escape(cfg["name"])
    routes = ["POST /predict"]
    if cfg.get("proba"):
        routes.append("POST /predict_proba")
    if cfg.get("feedback"):
        routes.append("POST /feedback")
    if cfg.get("server") == "service":
        routes.append("GET /docs.json")
    listed = "".join(f"<li><code>{html.escape(r)}</code></li>" for r in routes)
    columns = "".join(
        f"<li><code>{html.escape(f['name'])}</code> <span>{html.escape(str(f['kind']))}</span></li>"
        for f in cfg["fields"][:200]
    )
    return page_assets.TEMPLATE.format(
        title=name,
        name=name,
        about=_about(cfg),
        routes=listed,
        columns=columns,
        config=_json_in_html(cfg),
        style=page_assets.STYLE,
        script=page_assets.SCRIPT,
    )
