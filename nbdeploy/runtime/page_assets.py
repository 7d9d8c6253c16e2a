"""The try-it page's HTML skeleton, styles and script, as strings (``page.render`` fills them in).

Kept in a Python module rather than package data so they travel wherever the runtime does: copied into every
bento with ``nbdeploy/runtime``, written into the edge bundle by the export, installed with any wheel.
The script builds the form from the JSON config the page carries; it sets text with ``textContent`` only (column
names and values are data, never markup), keeps the API key in one variable, and fetches relative paths, so the
same page works at a service's ``/``, at a router's stable URL and under its ``/v/N/``.
"""

from __future__ import annotations

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>{title} · nbdeploy</title>
<style>{style}</style>
</head>
<body>
<header class="masthead"><div class="wrap">
<div class="brand">nbdeploy · try it</div>
<h1 id="name">{name}</h1>
<p class="about" id="about">{about}</p>
</div></header>
<main class="wrap" id="app">
<noscript><p class="card">This page needs JavaScript to call the model; the routes below work from any client.</p>
</noscript>
<section class="card" id="api"><h2>API</h2>
<p>Every call needs the API key as <code>authorization: Bearer KEY</code>; the owner prints it with
<code>nbdeploy key {name}</code>. Bodies are JSON: <code>{{"inputs": [{{column: value, ...}}]}}</code>.</p>
<ul class="routes">{routes}</ul>
<details><summary>Input columns</summary><ul class="columns">{columns}</ul></details>
</section>
</main>
<script type="application/json" id="nbdeploy-config">{config}</script>
<script>{script}</script>
</body>
</html>
"""

STYLE = r"""
:root {
  --bg: #f6f8fa; --card: #ffffff; --fg: #1f2328; --muted: #59636e; --border: #d1d9e0; --soft: #eef1f4;
  --accent: #0969da; --accent-fg: #ffffff; --ok: #1a7f37; --ok-bg: #dafbe1; --err: #cf222e; --err-bg: #ffebe9;
  --bar: #54aeff; --code: #f6f8fa;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0d1117; --card: #161b22; --fg: #e6edf3; --muted: #9198a1; --border: #30363d; --soft: #21262d;
    --accent: #4493f8; --accent-fg: #0d1117; --ok: #3fb950; --ok-bg: #12261e; --err: #f85149; --err-bg: #25171c;
    --bar: #1f6feb; --code: #0d1117;
  }
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; }
.wrap { max-width: 1200px; margin: 0 auto; padding: 0 20px; }
.masthead { background: var(--card); border-bottom: 1px solid var(--border); padding: 14px 0 12px;
  margin-bottom: 18px; }
.brand { color: var(--muted); font-size: 12px; letter-spacing: .04em; text-transform: uppercase; }
h1 { margin: 2px 0 2px; font-size: 24px; }
h2 { margin: 0 0 10px; font-size: 16px; }
.about { margin: 0; color: var(--muted); }
.card {
  background: var(--card); border: 1px solid var(--border); border-radius: 8px; padding: 16px; margin-bottom: 16px;
}
.grid { display: grid; grid-template-columns: minmax(0, 1.45fr) minmax(0, 1fr); gap: 16px; align-items: start; }
@media (max-width: 900px) { .grid { grid-template-columns: 1fr; } }
.row { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
.spread { justify-content: space-between; }
.muted { color: var(--muted); }
.small { font-size: 12px; }
button, .button {
  font: inherit; border: 1px solid var(--border); background: var(--soft); color: var(--fg); border-radius: 6px;
  padding: 5px 12px; cursor: pointer; text-decoration: none; display: inline-block;
}
button:hover, .button:hover { border-color: var(--muted); }
button:disabled { opacity: .55; cursor: default; }
button.primary { background: var(--accent); border-color: var(--accent); color: var(--accent-fg); font-weight: 600; }
input, select, textarea {
  font: inherit; color: var(--fg); background: var(--card); border: 1px solid var(--border); border-radius: 6px;
  padding: 5px 8px; width: 100%; min-width: 0;
}
input:focus, select:focus, button:focus-visible { outline: 2px solid var(--accent); outline-offset: 1px; }
.key { display: grid; grid-template-columns: auto minmax(0, 420px) 1fr; gap: 10px; align-items: center; }
@media (max-width: 700px) { .key { grid-template-columns: 1fr; } }
.fields { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 10px 12px; margin: 12px 0; }
.field label { display: flex; justify-content: space-between; gap: 6px; font-weight: 600; margin-bottom: 3px; }
.field label .hint { font-weight: 400; color: var(--muted); font-size: 12px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; flex: 1 1 auto; min-width: 0; text-align: right; }
.field .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; flex: 0 1 auto; max-width: 75%; }
#result-card { position: sticky; top: 12px; }
input[type="file"] { width: auto; max-width: 100%; }
.prediction { font-size: 30px; font-weight: 700; margin: 4px 0 8px; word-break: break-word; }
.prediction.empty { color: var(--muted); font-weight: 400; font-size: 16px; }
.facts { display: grid; grid-template-columns: auto 1fr; gap: 2px 12px; margin: 8px 0 0; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; overflow-wrap: anywhere; }
.proba { margin: 6px 0 4px; }
.proba .bar { display: grid; grid-template-columns: minmax(60px, auto) 1fr 56px; gap: 8px; align-items: center;
  margin: 3px 0; }
.proba .track { background: var(--soft); border-radius: 4px; height: 12px; overflow: hidden; }
.proba .fill { background: var(--bar); height: 100%; }
.proba .best .fill { background: var(--accent); }
.proba .pct { text-align: right; font-variant-numeric: tabular-nums; }
.message { border-radius: 6px; padding: 8px 10px; margin: 8px 0 0; }
.message:empty { display: none; }
.message.error { background: var(--err-bg); color: var(--err); border: 1px solid var(--err); }
.message.ok { background: var(--ok-bg); color: var(--ok); border: 1px solid var(--ok); }
.message.info { background: var(--soft); }
.feedback { border-top: 1px solid var(--border); margin-top: 12px; padding-top: 10px; }
.feedback select, .feedback input { width: auto; min-width: 120px; }
.tabs { display: flex; gap: 4px; border-bottom: 1px solid var(--border); margin-bottom: 8px; flex-wrap: wrap; }
.tabs button { border: none; border-bottom: 2px solid transparent; border-radius: 0; background: none; }
.tabs button[aria-selected="true"] { border-bottom-color: var(--accent); font-weight: 600; }
pre.snippet { background: var(--code); border: 1px solid var(--border); border-radius: 6px; padding: 10px 12px;
  overflow: auto; max-height: 320px; margin: 0 0 8px; font-size: 12.5px; white-space: pre; }
.table-wrap { overflow: auto; max-height: 420px; border: 1px solid var(--border); border-radius: 6px;
  margin-top: 10px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--border); text-align: left; white-space: nowrap; }
th { position: sticky; top: 0; background: var(--soft); }
td.pred, th.pred { font-weight: 600; }
.routes, .columns { margin: 6px 0; padding-left: 18px; }
.columns span { color: var(--muted); }
[hidden] { display: none !important; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("nbdeploy-config").textContent);
  const app = document.getElementById("app");
  // The API key lives in this variable only: never stored, never in a URL, sent only to this page's own origin.
  let apiKey = "";
  let last = null;
  let sampleAt = -1;
  const path = /\/v\/\d+$/.test(location.pathname) ? location.pathname + "/" : location.pathname;
  const base = path.endsWith("/") ? path : path.replace(/[^/]*$/, "");
  const pinnedPage = /\/v\/\d+\/$/.test(base);

  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of [].concat(children || [])) if (c !== null && c !== undefined) node.append(c);
    return node;
  }
  const shown = (v) => (v === null || v === undefined ? "null" : typeof v === "object" ? JSON.stringify(v) : String(v));
  const num = (v) => (Number.isInteger(v) ? v.toLocaleString("en-US") : String(Number(v.toPrecision(6))));
  const pick = (list) => list[Math.floor(Math.random() * list.length)];

  // ------------------------------------------------------------------ fields, from the schema and the sample
  function fieldFromRows(i) {
    const rows = cfg.rows.map((r) => r[i]).filter((v) => v !== null && v !== undefined);
    return rows.length ? pick(rows) : undefined;
  }

  function makeField(f, i) {
    const id = "f-" + i;
    const hint = [];
    let control, read, write, random, extra = null;
    if (f.input === "number") {
      control = el("input", { id, type: "number", step: f.kind === "integer" ? "1" : "any" });
      if (f.min !== undefined) hint.push(num(f.min) + " – " + num(f.max));
      read = () => {
        const t = control.value.trim();
        if (t === "") return null;
        const n = Number(t);
        return Number.isFinite(n) ? n : t;
      };
      write = (v) => { control.value = v === null || v === undefined ? "" : String(v); };
      random = () => {
        if (f.min === undefined) return fieldFromRows(i);
        if (f.kind === "integer") return Math.floor(f.min + Math.random() * (f.max - f.min + 1));
        return Number((f.min + Math.random() * (f.max - f.min)).toFixed(Math.min(f.decimals ?? 3, 6)));
      };
    } else if (f.input === "select") {
      const values = (f.nullable ? [null] : []).concat(f.options);
      control = el("select", { id }, values.map((v, j) =>
        el("option", { value: String(j), text: v === null ? "(missing)" : String(v) })));
      read = () => values[Number(control.value)];
      write = (v) => {
        let j = values.findIndex((o) => o === v);
        if (j < 0) j = values.findIndex((o) => o !== null && v !== null && v !== undefined && String(o) === String(v));
        if (j >= 0) control.value = String(j);
      };
      random = () => (f.options.length ? pick(f.options) : undefined);
      if (f.kind !== "bool") hint.push(f.options.length + (f.options.length === 1 ? " value" : " values"));
    } else if (f.input === "date" || f.input === "datetime") {
      const time = f.input === "datetime";
      const cut = (s) => (s === null || s === undefined ? "" : String(s).slice(0, time ? 19 : 10));
      control = el("input", { id, type: time ? "datetime-local" : "date", step: time ? "1" : undefined });
      if (f.min) {
        const [a, b] = [f.min.slice(0, 10), f.max.slice(0, 10)];
        hint.push(a + " – " + (a.slice(0, 4) === b.slice(0, 4) ? b.slice(5) : b));
      }
      read = () => (control.value === "" ? null : control.value);
      write = (v) => { control.value = cut(v); };
      random = () => {
        if (!f.min) return fieldFromRows(i);
        const a = Date.parse(f.min.slice(0, 19)), b = Date.parse(f.max.slice(0, 19));
        if (!Number.isFinite(a) || !Number.isFinite(b)) return fieldFromRows(i);
        const d = new Date(a + Math.random() * (b - a));
        const pad = (n) => String(n).padStart(2, "0");
        const day = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());
        return time ? day + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) : day;
      };
    } else {
      const json = f.input === "json";
      const list = f.suggestions ? "l-" + i : undefined;
      control = el("input", { id, type: "text", list, autocomplete: "off", spellcheck: "false" });
      if (list) extra = el("datalist", { id: list }, f.suggestions.map((v) => el("option", { value: v })));
      read = () => {
        const t = control.value;
        if (t === "") return f.nullable ? null : "";
        if (!json) return t;
        try { return JSON.parse(t); } catch (e) { return t; }
      };
      write = (v) => {
        control.value = v === null || v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v);
      };
      random = () => (f.suggestions ? pick(f.suggestions) : fieldFromRows(i));
      if (f.suggestions) hint.push("suggestions");
    }
    if (f.redacted) hint.unshift("redacted");
    control.dataset.name = f.name;
    control.addEventListener("input", () => renderSnippet());
    control.addEventListener("change", () => renderSnippet());
    const label = el("label", { for: id, title: f.name + " (" + f.kind + (f.nullable ? ", may be missing" : "") + ")" },
      [el("span", { class: "name", text: f.name }), el("span", { class: "hint", text: hint.join(" · ") || f.kind })]);
    const node = el("div", { class: "field", "data-name": f.name, "data-kind": f.kind }, [label, control, extra]);
    return { spec: f, node, control, read, write, random };
  }

  const fields = cfg.fields.map(makeField);
  const current = () => {
    const values = fields.map((f) => f.read());
    if (cfg.array) return values;
    const record = {};
    cfg.fields.forEach((f, i) => { record[f.name] = values[i]; });
    return record;
  };
  function fillSample() {
    if (!cfg.rows.length) return;
    sampleAt = (sampleAt + 1) % cfg.rows.length;
    cfg.rows[sampleAt].forEach((v, i) => fields[i].write(v));
    sampleButton.textContent = "Sample row " + (sampleAt + 1) + " of " + cfg.rows.length;
    renderSnippet();
  }
  function fillRandom() {
    for (const f of fields) {
      const v = f.random();
      if (v !== undefined) f.write(v);
    }
    renderSnippet();
  }

  // ------------------------------------------------------------------ HTTP
  const route = (path, version) =>
    base + (version !== null && version !== undefined && !pinnedPage ? "v/" + version + "/" : "") + path;
  function headers() {
    const h = { "content-type": "application/json" };
    if (apiKey) h.authorization = "Bearer " + apiKey;
    return h;
  }
  async function post(path, body, version) {
    const t0 = performance.now();
    const response = await fetch(route(path, version), {
      method: "POST", headers: headers(), body: JSON.stringify(body), cache: "no-store", credentials: "omit",
    });
    const text = await response.text();
    const ms = performance.now() - t0;
    let data = null;
    try { data = JSON.parse(text); } catch (e) { data = null; }
    return { response, data, ms };
  }
  function problem(status, data) {
    const said = data && data.error ? String(data.error) : "";
    if (status === 401) {
      return apiKey
        ? "401 Unauthorized: the service refused this API key. Check it: the owner prints the current key with "
          + "`nbdeploy key " + cfg.name + "` (a rotated key replaces the old one)."
        : "No API key: this service needs one, so it answered 401 Unauthorized. Paste the deployment's key above "
          + "(the owner prints it with `nbdeploy key " + cfg.name + "`).";
    }
    if (status === 400) return "400: the service refused this input: " + said;
    if (status === 413) return "413: too large for one request: " + said;
    if (status === 503) return "503: the service is busy; retry in a moment. " + said;
    return status + ": " + (said || "the service could not answer");
  }

  // ------------------------------------------------------------------ layout
  const keyInput = el("input", { id: "key", type: "password", autocomplete: "off", spellcheck: "false",
    placeholder: "paste the API key", "aria-label": "API key" });
  const keyState = el("span", { id: "key-state", class: "muted small",
    text: "Kept in this page's memory only: never stored, sent only to this service." });
  keyInput.addEventListener("input", () => {
    apiKey = keyInput.value.trim();
    keyState.textContent = apiKey
      ? "Key set. Kept in this page's memory only: reloading the page forgets it."
      : "Kept in this page's memory only: never stored, sent only to this service.";
  });
  const keyCard = el("section", { class: "card", id: "key-card" }, cfg.auth
    ? el("div", { class: "key" }, [el("label", { for: "key", text: "API key" }), keyInput, keyState])
    : el("p", { class: "muted", text: "This service takes calls without an API key." }));

  const sampleButton = el("button", { id: "sample", type: "button", onclick: fillSample, disabled: !cfg.rows.length,
    title: "Fill the form with a real row of the training sample" }, "Sample row");
  const randomButton = el("button", { id: "random", type: "button", onclick: fillRandom,
    title: "Random values within the sample's ranges and values seen" }, "Random row");
  const predictButton = el("button", { id: "predict", type: "button", class: "primary", onclick: () => predict() },
    "Predict");
  const inputCard = el("section", { class: "card", id: "input-card" }, [
    el("div", { class: "row spread" }, [el("h2", { text: "Input" }),
      el("div", { class: "row" }, [sampleButton, randomButton])]),
    el("p", { class: "muted small", text: fields.length + (fields.length === 1 ? " field" : " fields")
      + (cfg.array ? " (an array model: one number per feature)" : ", one per column of the training sample")
      + ". Ranges and values are the sample's." }),
    el("div", { class: "fields", id: "fields" }, fields.map((f) => f.node)),
    el("div", { class: "row" }, [predictButton, el("span", { class: "muted small", id: "busy" })]),
  ]);

  const predictionBox = el("div", { id: "prediction", class: "prediction empty", text: "Press Predict" });
  const probaBox = el("div", { id: "proba", class: "proba", hidden: true });
  const latencyCell = el("dd", { id: "latency", text: "–" });
  const versionCell = el("dd", { id: "answered-by", text: "–" });
  const ridCell = el("dd", { id: "request-id", class: "mono small", text: "–" });
  const message = el("div", { id: "message", class: "message", role: "status" });
  const feedbackState = el("div", { id: "feedback-status", class: "message" });
  const labelHolder = el("span", { id: "label-holder" });
  const correction = el("div", { id: "correction", class: "row", hidden: true }, [
    el("span", { text: "True label:" }), labelHolder,
    el("button", { id: "send-feedback", type: "button", onclick: () => sendFeedback(readLabel()) }, "Send"),
  ]);
  const feedbackBox = el("div", { id: "feedback", class: "feedback", hidden: true }, [
    el("div", { class: "row" }, [
      el("span", { text: "Is this prediction right?" }),
      el("button", { id: "right", type: "button", onclick: () => sendFeedback(last && last.prediction) }, "Yes"),
      el("button", { id: "wrong", type: "button", onclick: openCorrection }, "No, this prediction is wrong"),
    ]),
    correction, feedbackState,
  ]);
  const resultCard = el("section", { class: "card", id: "result-card" }, [
    el("h2", { text: "Prediction" }), predictionBox, probaBox,
    el("dl", { class: "facts" }, [
      el("dt", { text: "Latency" }), latencyCell,
      el("dt", { text: "Answered by" }), versionCell,
      el("dt", { text: "Request id" }), ridCell,
    ]),
    message, cfg.feedback ? feedbackBox
      : el("p", { class: "muted small", text: "This server takes no feedback; the deployed service does." }),
  ]);

  // ------------------------------------------------------------------ predict
  function say(text, kind) { message.textContent = text; message.className = "message " + (kind || "info"); }
  function busy(on, text) {
    predictButton.disabled = on;
    document.getElementById("busy").textContent = on ? text || "Calling the service…" : "";
  }
  async function predict() {
    const inputs = current();
    busy(true);
    say("");
    feedbackBox.hidden = true;
    try {
      const { response, data, ms } = await post("predict", { inputs: [inputs] });
      if (!response.ok || !data || !Array.isArray(data.predictions)) {
        predictionBox.textContent = response.status === 401 ? "Unauthorized" : "No prediction";
        predictionBox.className = "prediction empty";
        probaBox.hidden = true;
        say(problem(response.status, data), "error");
        last = null;
        return;
      }
      const header = response.headers.get("x-nbdeploy-version");
      const routed = header !== null;
      const rid = data.request_id || response.headers.get("x-request-id");
      last = { inputs, rid, prediction: data.predictions[0], version: routed ? Number(header) : cfg.version, routed,
        classes: null };
      predictionBox.textContent = shown(last.prediction);
      predictionBox.className = "prediction";
      latencyCell.textContent = ms.toFixed(1) + " ms (round trip from this browser)";
      versionCell.textContent = (last.version === null || last.version === undefined ? "this server"
        : "v" + last.version) + (routed ? " (via the stable endpoint)" : "");
      ridCell.textContent = rid || "–";
      if (data.warning) say(String(data.warning), "info");
      probaBox.hidden = true;
      if (cfg.proba) await probabilities(inputs, routed ? last.version : null);
      if (cfg.feedback && rid) openFeedback();
    } catch (err) {
      say("Could not reach the service: " + err.message, "error");
    } finally {
      busy(false);
    }
  }
  async function probabilities(inputs, version) {
    const { response, data } = await post("predict_proba", { inputs: [inputs] }, version);
    if (!response.ok || !data || !Array.isArray(data.probabilities)) return;
    const values = data.probabilities[0];
    const classes = data.classes || values.map((_, i) => i);
    last.classes = classes;
    const order = values.map((p, i) => i).sort((a, b) => values[b] - values[a]).slice(0, 12);
    probaBox.replaceChildren(...order.map((i, rank) => {
      const fill = el("div", { class: "fill" });
      fill.style.width = Math.max(0, Math.min(100, values[i] * 100)).toFixed(1) + "%";
      return el("div", { class: "bar" + (rank === 0 ? " best" : ""), "data-class": shown(classes[i]) }, [
        el("span", { class: "cls", text: shown(classes[i]) }), el("div", { class: "track" }, fill),
        el("span", { class: "pct", text: (values[i] * 100).toFixed(1) + "%" }),
      ]);
    }));
    probaBox.hidden = false;
  }

  // ------------------------------------------------------------------ feedback
  function openFeedback() {
    correction.hidden = true;
    feedbackState.textContent = "";
    feedbackState.className = "message";
    feedbackBox.hidden = false;
  }
  let readLabel = () => null;
  function openCorrection() {
    if (!last) return;
    const p = last.prediction;
    const options = last.classes || (typeof p === "boolean" ? [true, false] : null);
    if (options) {
      const others = options.filter((c) => shown(c) !== shown(p)).concat(options.filter((c) => shown(c) === shown(p)));
      const select = el("select", { id: "true-label" }, others.map((c, j) =>
        el("option", { value: String(j), text: shown(c) })));
      readLabel = () => others[Number(select.value)];
      labelHolder.replaceChildren(select);
    } else {
      const input = el("input", { id: "true-label", type: "text", placeholder: "the true value" });
      readLabel = () => {
        const t = input.value.trim();
        if (typeof p === "number") return t === "" ? null : Number(t);
        return t;
      };
      labelHolder.replaceChildren(input);
    }
    correction.hidden = false;
    labelHolder.firstChild.focus();
  }
  async function sendFeedback(label) {
    if (!last || !last.rid) return;
    if (label === null || label === undefined || (typeof label === "number" && !Number.isFinite(label))) {
      feedbackState.textContent = "Enter the true label first.";
      feedbackState.className = "message error";
      return;
    }
    try {
      const body = { items: [{ request_id: last.rid, y_true: [label] }] };
      const { response, data } = await post("feedback", body, last.routed ? last.version : null);
      if (response.ok) {
        feedbackState.textContent = "Recorded: true label " + shown(label) + " for request " + last.rid
          + ". The monitor's accuracy counts it.";
        feedbackState.className = "message ok";
        correction.hidden = true;
      } else {
        feedbackState.textContent = problem(response.status, data);
        feedbackState.className = "message error";
      }
    } catch (err) {
      feedbackState.textContent = "Could not reach the service: " + err.message;
      feedbackState.className = "message error";
    }
  }

  // ------------------------------------------------------------------ snippets
  const endpoint = () => location.origin + base + "predict";
  const sh = (s) => "'" + s.replace(/'/g, "'\\''") + "'";
  function py(v) {
    if (v === null || v === undefined) return "None";
    if (v === true) return "True";
    if (v === false) return "False";
    if (typeof v === "number") return Number.isFinite(v) ? String(v) : "None";
    if (typeof v === "string") return JSON.stringify(v);
    if (Array.isArray(v)) return "[" + v.map(py).join(", ") + "]";
    return "{" + Object.entries(v).map(([k, x]) => JSON.stringify(k) + ": " + py(x)).join(", ") + "}";
  }
  const LANGS = [["curl", "curl"], ["requests", "Python · requests"], ["httpx", "Python · httpx"],
    ["fetch", "JavaScript · fetch"]];
  let lang = "curl";
  function snippet(which) {
    const body = { inputs: [current()] };
    const url = endpoint();
    const keyNote = "`nbdeploy key " + cfg.name + "` prints it";
    if (which === "curl") {
      return (cfg.auth ? "# export NBDEPLOY_KEY=<the API key>   # " + keyNote + "\n" : "")
        + "curl -s -X POST " + sh(url) + " \\\n  -H 'content-type: application/json' \\\n"
        + (cfg.auth ? "  -H \"authorization: Bearer $NBDEPLOY_KEY\" \\\n" : "")
        + "  -d " + sh(JSON.stringify(body));
    }
    if (which === "requests" || which === "httpx") {
      return (cfg.auth ? "import os\n\n" : "") + "import " + which + "\n\n"
        + (cfg.auth ? "# NBDEPLOY_KEY holds the API key: " + keyNote + "\n" : "")
        + "response = " + which + ".post(\n    " + JSON.stringify(url) + ",\n"
        + (cfg.auth ? "    headers={\"authorization\": f\"Bearer {os.environ['NBDEPLOY_KEY']}\"},\n" : "")
        + "    json=" + py(body) + ",\n    timeout=30,\n)\nresponse.raise_for_status()\n"
        + "print(response.json()[\"predictions\"])";
    }
    return (cfg.auth ? "const API_KEY = \"YOUR_API_KEY\"; // " + keyNote + "\n" : "")
      + "const response = await fetch(" + JSON.stringify(url) + ", {\n  method: \"POST\",\n"
      + "  headers: { \"content-type\": \"application/json\""
      + (cfg.auth ? ", authorization: \"Bearer \" + API_KEY" : "") + " },\n"
      + "  body: JSON.stringify(" + JSON.stringify(body) + "),\n});\n"
      + "const { predictions } = await response.json();\nconsole.log(predictions);";
  }
  const snippetBox = el("pre", { id: "snippet", class: "snippet" });
  const tabs = el("div", { class: "tabs", role: "tablist", id: "snippet-tabs" }, LANGS.map(([id, label]) =>
    el("button", { type: "button", role: "tab", "data-lang": id, "aria-selected": String(id === lang),
      onclick: () => { lang = id; renderSnippet(); } }, label)));
  function renderSnippet() {
    snippetBox.textContent = snippet(lang);
    for (const b of tabs.children) b.setAttribute("aria-selected", String(b.dataset.lang === lang));
  }
  const copyState = el("span", { class: "muted small", id: "copy-state" });
  async function copy() {
    const text = snippetBox.textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents(snippetBox);
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      document.execCommand("copy");
    }
    copyState.textContent = "Copied.";
    setTimeout(() => { copyState.textContent = ""; }, 1500);
  }
  const codeCard = el("section", { class: "card", id: "code-card" }, [
    el("h2", { text: "Call it from code" }),
    el("p", { class: "muted small", text: "The current input, ready to copy. The key is a placeholder: "
      + "this page never writes it into a snippet." }),
    tabs, snippetBox,
    el("div", { class: "row" }, [el("button", { id: "copy", type: "button", onclick: copy }, "Copy"), copyState]),
  ]);

  // ------------------------------------------------------------------ CSV upload
  function parseCsv(text) {
    let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
    const firstLine = text.slice(i, text.indexOf("\n") < 0 ? text.length : text.indexOf("\n"));
    const count = (ch) => firstLine.split(ch).length - 1;
    const sep = count("\t") > count(",") ? "\t" : count(";") > count(",") ? ";" : ",";
    const rows = [];
    let row = [], cell = "", quoted = false;
    for (; i < text.length; i++) {
      const c = text[i];
      if (quoted) {
        if (c === "\"") {
          if (text[i + 1] === "\"") { cell += "\""; i++; } else quoted = false;
        } else cell += c;
      } else if (c === "\"") quoted = true;
      else if (c === sep) { row.push(cell); cell = ""; }
      else if (c === "\n" || c === "\r") {
        if (c === "\r" && text[i + 1] === "\n") i++;
        row.push(cell); rows.push(row); row = []; cell = "";
      } else cell += c;
    }
    if (cell !== "" || row.length) { row.push(cell); rows.push(row); }
    return rows.filter((r) => !(r.length === 1 && r[0].trim() === ""));
  }
  function csvValue(f, text, where) {
    const t = text.trim();
    if (f.input === "number") {
      if (t === "" || /^(nan|na|null|none)$/i.test(t)) return null;
      const n = Number(t);
      if (!Number.isFinite(n)) throw new Error(where + ": " + JSON.stringify(text) + " is not a number");
      return n;
    }
    if (f.kind === "bool") {
      if (t === "") return null;
      if (/^(true|1|yes|y|t)$/i.test(t)) return true;
      if (/^(false|0|no|n|f)$/i.test(t)) return false;
      throw new Error(where + ": " + JSON.stringify(text) + " is not true or false");
    }
    if (t === "") return f.nullable ? null : "";
    if (f.input === "select") {
      const found = f.options.find((o) => String(o) === text || String(o) === t);
      if (found !== undefined) return found;
      if (f.options.length && f.options.every((o) => typeof o === "number") && Number.isFinite(Number(t))) {
        return Number(t);
      }
      return text;
    }
    if (f.input === "json") { try { return JSON.parse(text); } catch (e) { return text; } }
    return text;
  }
  const csvInput = el("input", { id: "csv", type: "file", accept: ".csv,.tsv,text/csv" });
  const csvStatus = el("div", { id: "csv-status", class: "message" });
  const csvTable = el("div", { id: "csv-table", class: "table-wrap", hidden: true });
  const csvDownload = el("a", { id: "csv-download", class: "button", hidden: true }, "Download predictions (CSV)");
  let csvUrl = null;
  function csvSay(text, kind) { csvStatus.textContent = text; csvStatus.className = "message " + (kind || "info"); }
  const csvCell = (v) => {
    const s = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
    return /[",\n\r]/.test(s) ? "\"" + s.replace(/"/g, "\"\"") + "\"" : s;
  };
  async function scoreCsv() {
    const file = csvInput.files && csvInput.files[0];
    if (!file) return;
    csvTable.hidden = true;
    csvDownload.hidden = true;
    try {
      const rows = parseCsv(await file.text());
      if (!rows.length) { csvSay("The file is empty.", "error"); return; }
      const names = cfg.fields.map((f) => f.name);
      let header = rows[0].map((h) => h.trim());
      let body = rows.slice(1);
      const numeric = header.every((h) => h !== "" && Number.isFinite(Number(h)));
      if (cfg.array && numeric && header.length === names.length) { header = names; body = rows; }
      const missing = names.filter((n) => !header.includes(n));
      if (missing.length) {
        csvSay("The CSV lacks " + (missing.length === 1 ? "column " : "columns ") + missing.join(", ")
          + ". Its header must name the model's columns: " + names.join(", ") + ".", "error");
        return;
      }
      if (!body.length) { csvSay("The CSV has a header but no rows.", "error"); return; }
      if (body.length > cfg.maxCsvRows) {
        csvSay(body.length.toLocaleString("en-US") + " rows: this page scores up to "
          + cfg.maxCsvRows.toLocaleString("en-US") + ". For more, use dep.predict or batch scoring.", "error");
        return;
      }
      const at = names.map((n) => header.indexOf(n));
      const ignored = header.filter((h) => !names.includes(h));
      const data = body.map((r, k) => cfg.fields.map((f, j) =>
        csvValue(f, r[at[j]] === undefined ? "" : r[at[j]], "row " + (k + 1) + ", column '" + f.name + "'")));
      const predictions = [];
      for (let start = 0; start < data.length; start += cfg.csvChunk) {
        const chunk = data.slice(start, start + cfg.csvChunk);
        csvSay("Scoring rows " + (start + 1).toLocaleString("en-US") + "–"
          + (start + chunk.length).toLocaleString("en-US") + " of " + data.length.toLocaleString("en-US") + "…");
        const inputs = cfg.array ? chunk : { columns: names, data: chunk };
        const { response, data: answer } = await post("predict", { inputs });
        if (!response.ok || !answer || !Array.isArray(answer.predictions)) {
          csvSay("Rows " + (start + 1) + "–" + (start + chunk.length) + ": " + problem(response.status, answer)
            + (response.status === 400 ? " (row numbers in the message count from the first row of this part)" : ""),
          "error");
          return;
        }
        predictions.push(...answer.predictions);
      }
      const shownRows = Math.min(100, data.length);
      const head = el("tr", {}, [el("th", { text: "#" })].concat(names.map((n) => el("th", { text: n })),
        [el("th", { class: "pred", text: "prediction" })]));
      const lines = data.slice(0, shownRows).map((r, k) => el("tr", {}, [el("td", { class: "muted", text: k + 1 })]
        .concat(r.map((v) => el("td", { text: v === null ? "" : shown(v) })),
          [el("td", { class: "pred", text: shown(predictions[k]) })])));
      csvTable.replaceChildren(el("table", { id: "csv-results" }, [el("thead", {}, head), el("tbody", {}, lines)]));
      csvTable.hidden = false;
      const text = [names.concat(["prediction"]).map(csvCell).join(",")]
        .concat(data.map((r, k) => r.concat([predictions[k]]).map(csvCell).join(","))).join("\n") + "\n";
      if (csvUrl) URL.revokeObjectURL(csvUrl);
      csvUrl = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
      csvDownload.href = csvUrl;
      csvDownload.download = cfg.name + "-predictions.csv";
      csvDownload.hidden = false;
      csvSay(predictions.length.toLocaleString("en-US") + " predictions for " + file.name
        + (shownRows < data.length ? "; the first " + shownRows + " are shown, the download has all." : ".")
        + (ignored.length ? " Ignored columns: " + ignored.join(", ") + "." : ""), "ok");
    } catch (err) {
      csvSay(err.message.startsWith("row ") ? err.message : "Could not score the file: " + err.message, "error");
    }
  }
  csvInput.addEventListener("change", scoreCsv);
  const csvCard = el("section", { class: "card", id: "csv-card" }, [
    el("h2", { text: "Batch: upload a CSV" }),
    el("p", { class: "muted small", text: "A header row naming the model's columns, up to "
      + cfg.maxCsvRows.toLocaleString("en-US") + " rows. The file is read here and sent only to this service." }),
    el("div", { class: "row" }, [csvInput, csvDownload]), csvStatus, csvTable,
  ]);

  // ------------------------------------------------------------------ assemble
  const api = document.getElementById("api");
  app.insertBefore(keyCard, api);
  app.insertBefore(el("div", { class: "grid" }, [el("div", {}, [inputCard, codeCard]), resultCard]), api);
  app.insertBefore(csvCard, api);
  if (cfg.rows.length) fillSample(); else renderSnippet();
  document.body.dataset.ready = "true";
})();
"""
