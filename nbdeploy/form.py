"""``dep.form()``: the try-it page's form inside the notebook, as ipywidgets, for quick what-if checks.

The fields come from the same place as the page's (``runtime.page``): the captured schema, plus ranges, values seen
and real rows summarised from the deploy-time reference sample (redacted columns show a placeholder). A prediction
goes over HTTP through the handle, so the form checks the deployed service, not the object in the kernel.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import random
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from . import config
from .errors import NbdeployError
from .record import Record
from .reference import load_reference
from .runtime import page

if TYPE_CHECKING:
    from .deployment import Deployment

__all__ = ["Form", "sample_summary"]

log = logging.getLogger(__name__)

#: Real rows the form cycles through ("Sample row"): the notebook is the owner's, so more than the open page shows.
FORM_ROWS = 20
_OK, _ERR, _MUTED, _BAR, _BEST = "#1a7f37", "#cf222e", "#59636e", "#54aeff", "#0969da"


def sample_summary(record: Record, rows: int = page.ROWS) -> dict[str, Any] | None:
    """Ranges, values seen and ``rows`` rows of a version's deploy-time reference sample, as the try-it page and
    this form use them (``runtime.page.summarize``); redacted columns show placeholders. None: no reference (or a
    sample it cannot summarise: the page then works from the schema alone)."""
    ref = load_reference(config.deployment_dir(record.name, record.version))
    if ref is None or not record.info.schema:
        return None
    try:
        return page.summarize(ref[0], record.info.schema, redacted=record.info.redact or {}, rows=rows)
    except Exception as exc:  # a nicety: the page and the form work from the schema alone; never fail a deploy
        log.warning("no sample summary for %s v%s (%s: %s)", record.name, record.version, type(exc).__name__, exc)
        return None


class _Field:
    """One input: its spec from ``page.config``, its widget, and how values go in and out of it."""

    def __init__(self, spec: dict[str, Any], rows: list[Any], index: int) -> None:
        import ipywidgets as w

        self.spec, self.name = spec, spec["name"]
        self._seen = [r[index] for r in rows if r[index] is not None]
        kind, how = spec["kind"], spec["input"]
        hint: list[str] = []
        layout = w.Layout(width="100%")
        self.widget: Any
        if how == "number":
            self.widget = (w.IntText if kind == "integer" else w.FloatText)(layout=layout)
            if "min" in spec:
                hint.append(f"{_num(spec['min'])} – {_num(spec['max'])}")
        elif how == "select":
            options = [("(missing)", None)] if spec.get("nullable") else []
            options += [(str(v), v) for v in spec["options"]]
            self.widget = w.Dropdown(options=options, layout=layout)
            if kind != "bool":
                hint.append(f"{len(spec['options'])} values")
        elif how == "date":
            self.widget = w.DatePicker(layout=layout)
            if "min" in spec:
                hint.append(f"{spec['min'][:10]} – {spec['max'][:10]}")
        elif spec.get("suggestions"):
            self.widget = w.Combobox(options=list(spec["suggestions"]), ensure_option=False, layout=layout)
            hint.append("suggestions")
        else:
            self.widget = w.Text(layout=layout)
        if spec.get("redacted"):
            hint.insert(0, "redacted")
        label = (
            f"<b>{html.escape(self.name)}</b> <span style='color:{_MUTED};font-size:12px'>"
            f"{html.escape(' · '.join(hint) or str(kind))}</span>"
        )
        self.box = w.VBox([w.HTML(label), self.widget], layout=w.Layout(min_width="180px"))

    def read(self) -> Any:
        """The value as the service reads it (JSON: numbers, strings, booleans, ISO dates, null)."""
        value, how = self.widget.value, self.spec["input"]
        if how == "date":
            return None if value is None else value.isoformat()
        if how in ("number", "select"):
            return value
        if value == "":
            return None if self.spec.get("nullable") else ""
        if how == "json":
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def write(self, value: Any) -> None:
        how = self.spec["input"]
        if how == "number":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.widget.value = int(value) if self.spec["kind"] == "integer" else float(value)
        elif how == "select":
            values = [v for _, v in self.widget.options]
            match = [v for v in values if v == value and type(v) is type(value)] or [
                v for v in values if v is not None and str(v) == str(value)
            ]
            if match:
                self.widget.value = match[0]
        elif how == "date":
            self.widget.value = None if value is None else dt.date.fromisoformat(str(value)[:10])
        else:
            self.widget.value = "" if value is None else value if isinstance(value, str) else json.dumps(value)

    def random(self, rng: random.Random) -> Any:
        """A value within the sample's range or values seen; else one of the sample's own; None keeps the field."""
        spec = self.spec
        if spec["input"] == "number" and "min" in spec:
            if spec["kind"] == "integer":
                return rng.randint(int(spec["min"]), int(spec["max"]))
            return round(rng.uniform(spec["min"], spec["max"]), min(int(spec.get("decimals", 3)), 6))
        if spec["input"] == "select" and spec["options"]:
            return rng.choice(spec["options"])
        if spec["input"] == "date" and "min" in spec:
            low, high = (dt.date.fromisoformat(spec[k][:10]) for k in ("min", "max"))
            return (low + dt.timedelta(days=rng.randint(0, (high - low).days))).isoformat()
        if spec.get("suggestions"):
            return rng.choice(spec["suggestions"])
        return rng.choice(self._seen) if self._seen else None


def _num(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:.6g}"


class Form:
    """The deployment's inputs as widgets; ``predict()`` sends them to the service and shows the answer.

    Values in: ``form.set(tenure=12, plan="pro")``, the widgets themselves (``form.controls["tenure"]``), or the
    "Sample row" / "Random row" buttons. Prediction out: ``form.predict()`` returns it; ``form.result`` holds the
    last answer (prediction, probabilities, latency, request id, version). With ``auto=True`` every change of a
    value predicts again.
    """

    def __init__(self, deployment: Deployment, auto: bool = True, seed: int | None = None) -> None:
        import ipywidgets as w

        self.deployment = deployment
        rec = deployment.record
        meta = {
            "service_name": rec.name,
            "version": rec.version,
            "schema": rec.info.schema,
            "example": rec.info.example,
            "sample_summary": sample_summary(rec, FORM_ROWS),
        }
        self.config = page.config(meta, rec.info.methods or [], auth=rec.info.auth, server="form")
        self.array = bool(self.config["array"])
        self.rows: list[list[Any]] = self.config["rows"]
        self.fields = [_Field(spec, self.rows, i) for i, spec in enumerate(self.config["fields"])]
        self.controls = {f.name: f.widget for f in self.fields}
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.auto = auto
        self._rng = random.Random(seed)
        self._sample_at = -1
        self._filling = False

        self._sample_button = w.Button(description="Sample row", tooltip="A real row of the training sample")
        self._sample_button.disabled = not self.rows
        self._sample_button.on_click(lambda _: self.sample_row())
        self._random_button = w.Button(description="Random row", tooltip="Random values within the sample's ranges")
        self._random_button.on_click(lambda _: self.random_row())
        self._predict_button = w.Button(description="Predict", button_style="primary")
        self._predict_button.on_click(lambda _: self.predict())
        self._output = w.HTML(self._render()).add_class("nbdeploy-form-result")
        title = w.HTML(
            f"<b style='font-size:15px'>{html.escape(rec.name)}</b> <span style='color:{_MUTED}'>v{rec.version} · "
            f"{len(self.fields)} fields from the training sample · predictions over HTTP</span>"
        )
        grid = w.GridBox(
            [f.box for f in self.fields],
            layout=w.Layout(grid_template_columns="repeat(auto-fill, minmax(190px, 1fr))", grid_gap="8px 12px"),
        )
        self.widget = w.VBox(
            [
                title,
                grid,
                w.HBox([self._predict_button, self._sample_button, self._random_button]),
                self._output,
            ],
            layout=w.Layout(padding="4px", max_width="1000px"),
        ).add_class("nbdeploy-form")
        for f in self.fields:
            f.widget.observe(self._changed, names="value")
        if self.rows:
            self.sample_row(predict=False)

    # -- values in
    def values(self) -> dict[str, Any] | list[Any]:
        """The current input: a record (column: value), or a list of numbers for a model trained on an array."""
        if self.array:
            return [f.read() for f in self.fields]
        return {f.name: f.read() for f in self.fields}

    def set(self, **values: Any) -> Form:
        """Set fields by name (``form.set(tenure=12, plan="pro")``); predicts once afterwards when ``auto``."""
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise KeyError(f"no field {unknown[0]!r}; the fields are {', '.join(self.controls)}")
        self._fill({f.name: values[f.name] for f in self.fields if f.name in values})
        return self

    def sample_row(self, predict: bool | None = None) -> Form:
        """The next real row of the training sample (redacted columns hold a placeholder)."""
        if self.rows:
            self._sample_at = (self._sample_at + 1) % len(self.rows)
            row = self.rows[self._sample_at]
            self._sample_button.description = f"Sample row {self._sample_at + 1}/{len(self.rows)}"
            self._fill({f.name: row[i] for i, f in enumerate(self.fields)}, predict)
        return self

    def random_row(self, predict: bool | None = None) -> Form:
        """Random values within the sample's ranges and values seen."""
        picked = {f.name: f.random(self._rng) for f in self.fields}
        self._fill({k: v for k, v in picked.items() if v is not None}, predict)
        return self

    def _fill(self, values: dict[str, Any], predict: bool | None = None) -> None:
        self._filling = True
        try:
            for f in self.fields:
                if f.name in values:
                    f.write(values[f.name])
        finally:
            self._filling = False
        if self.auto if predict is None else predict:
            self.predict()

    def _changed(self, _change: Any) -> None:
        if self.auto and not self._filling:
            self.predict()

    # -- prediction out
    def predict(self) -> Any:
        """Send the current input to the service; show and return the prediction (None when it failed)."""
        dep = self.deployment
        inputs = self.values()
        body = [inputs] if self.array else inputs
        self.error = None
        try:
            started = time.perf_counter()
            prediction = dep.predict(body)[0]
            latency_ms = (time.perf_counter() - started) * 1000
            request_id = dep.last_request_id
            probabilities = None
            if self.config["proba"]:
                proba = dep.predict_proba(body)[0]
                classes = dep.classes_
                labels = list(classes) if classes is not None else list(range(len(proba)))
                probabilities = {_plain(c): float(p) for c, p in zip(labels, proba, strict=True)}
                dep.last_request_id = request_id  # the prediction's: the one dep.feedback(...) should label
        except NbdeployError as exc:
            self.error = str(exc).splitlines()[0]
            self.result = None
            self._output.value = self._render()
            return None
        self.result = {
            "inputs": inputs,
            "prediction": _plain(prediction),
            "probabilities": probabilities,
            "latency_ms": latency_ms,
            "request_id": request_id,
            "version": dep.version,
        }
        self._output.value = self._render()
        return self.result["prediction"]

    def _render(self) -> str:
        if self.error:
            return f"<div style='color:{_ERR};padding:6px 0'>{html.escape(self.error)}</div>"
        res = self.result
        if res is None:
            return f"<div style='color:{_MUTED};padding:6px 0'>Press Predict (or change a value).</div>"
        bars = ""
        if res["probabilities"]:
            ranked = sorted(res["probabilities"].items(), key=lambda kv: -kv[1])[:12]
            bars = "".join(
                "<div style='display:flex;align-items:center;gap:8px;margin:2px 0'>"
                f"<span style='min-width:60px'>{html.escape(str(c))}</span>"
                "<span style='flex:0 0 240px;height:10px;background:#eef1f4;border-radius:4px;overflow:hidden'>"
                f"<span style='display:block;height:100%;width:{p * 100:.1f}%;background:{_BEST if i == 0 else _BAR}'>"
                f"</span></span><span style='font-variant-numeric:tabular-nums'>{p * 100:.1f}%</span></div>"
                for i, (c, p) in enumerate(ranked)
            )
        facts = f"{res['latency_ms']:.1f} ms · v{res['version']} · request {html.escape(str(res['request_id'] or '–'))}"
        return (
            f"<div style='padding:4px 0'><span style='color:{_MUTED}'>Prediction</span> "
            f"<b style='font-size:22px;color:{_OK}'>{html.escape(_shown(res['prediction']))}</b>"
            f"{bars}<div style='color:{_MUTED};font-size:12px'>{facts}</div></div>"
        )

    # -- display
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle = {**bundle, "text/plain": repr(self)}
        return bundle

    def __repr__(self) -> str:
        dep = self.deployment
        return f"<Form {dep.name} v{dep.version}: {len(self.fields)} fields>"

    def close(self) -> None:
        """Remove the widgets (the deployment keeps running)."""
        _close(self.widget)


def _plain(value: Any) -> Any:
    """NumPy scalars and rows as Python values (JSON, dict keys that print as the page shows them)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _close(widget: Any) -> None:
    for child in getattr(widget, "children", ()):
        _close(child)
    widget.close()
