// The monitoring panel's charts and drift table, drawn in the browser as SVG from the JSON the kernel sends.
// No library, no network: the same code runs in the live widget (anywidget) and in the standalone report.
// Interaction (time range, zoom, hover, search, sort, the selected feature) stays in the browser.
const NS = "http://www.w3.org/2000/svg";
const C = { ref: "#8c959f", live: "#0969da", red: "#cf222e", green: "#1a7f37", orange: "#bc4c00", muted: "#59636e",
            grid: "#eaeef2", band: "rgba(9,105,218,0.15)", purple: "#8250df", grey: "#6e7781" };
const RANGES = [["5m", "5 min"], ["1h", "1 h"], ["24h", "24 h"], ["all", "all"]];
// the timeline's lanes, top to bottom (monitor.history.KINDS), and an alert's colour by severity
const KINDS = [["alert", C.red], ["retrain", C.live], ["promote", C.green], ["rollback", C.purple], ["other", C.grey]];
const SEVERITY = { critical: C.red, warning: C.orange, info: C.live };
const TOAST_MS = 10000, TOASTS = 3, LATEST = 8;

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "style") e.style.cssText = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}
function s(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
function fmt(v, d = 3) {
  if (v == null || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  if (v !== 0 && (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3)) return v.toExponential(2);
  return Number.isInteger(v) ? v.toLocaleString() : v.toFixed(d);
}
function clock(t) { return new Date(t * 1000).toLocaleTimeString([], { hour12: false }); }
function esc(v) { return String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`); }
// a time on an axis that may span days: the date too when it does
function when(t, span) {
  if (span <= 72000) return clock(t);
  return new Date(t * 1000).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false });
}
function pct(v) { return v == null ? "–" : (100 * v).toFixed(1) + " %"; }
// a change, with its sign: +0.118, -0.004, 0.000
function signed(v) {
  if (v == null || Number.isNaN(v)) return "–";
  const text = Math.abs(v) >= 1e4 ? v.toExponential(2) : v.toFixed(3);
  return v > 0 && Number(text) !== 0 ? "+" + text : Number(text) === 0 ? (0).toFixed(3) : text;
}

function tipOf(root) {
  let tip = root.querySelector(".nbd-tip");
  if (!tip) { tip = h("div", { class: "nbd-tip" }); root.append(tip); }
  return tip;
}
function showTip(root, evt, html) {
  const tip = tipOf(root), box = root.getBoundingClientRect();
  tip.innerHTML = html; tip.style.display = "block";
  tip.style.left = (evt.clientX - box.left + 12) + "px"; tip.style.top = (evt.clientY - box.top + 12) + "px";
}
function hideTip(root) { const t = root.querySelector(".nbd-tip"); if (t) t.style.display = "none"; }

// A time chart: lines (and an optional band) over [t0, t1]; hover shows the nearest point's values; drag zooms,
// double-click resets the zoom.
function timeChart(root, state, o) {
  const W = o.width || 460, H = o.height || 160, L = 44, R = 10, T = 18, B = 22;
  const svg = s("svg", { width: W, height: H, class: "nbd-chart " + (o.cls || ""), viewBox: `0 0 ${W} ${H}` });
  const [t0, t1] = state.zoom || o.span;
  const inside = (t) => t >= t0 && t <= t1;
  let ymax = 0, ymin = o.ymin != null ? o.ymin : 0;
  for (const sr of o.series) sr.t.forEach((t, i) => { if (inside(t) && sr.y[i] != null) ymax = Math.max(ymax, sr.hi ? sr.hi[i] : sr.y[i]); });
  if (o.ymax != null) ymax = Math.max(o.ymax, ymax * (o.fixed ? 0 : 1)); if (o.fixed) ymax = o.ymax;
  if (o.threshold != null) ymax = Math.max(ymax, o.threshold * 1.2);
  if (ymax <= ymin) ymax = ymin + 1;
  const x = (t) => L + (W - L - R) * (t - t0) / Math.max(t1 - t0, 1e-9);
  const y = (v) => H - B - (H - T - B) * (v - ymin) / (ymax - ymin);
  svg.append(Object.assign(s("text", { x: 4, y: 12, "font-size": 11, fill: C.muted }), { textContent: o.title }));
  for (let k = 0; k <= 3; k++) {
    const v = ymin + (ymax - ymin) * k / 3;
    svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: C.grid }));
    svg.append(Object.assign(s("text", { x: L - 4, y: y(v) + 3, "font-size": 9, fill: C.muted, "text-anchor": "end" }),
      { textContent: o.yfmt ? o.yfmt(v) : fmt(v, 2) }));
  }
  for (let k = 0; k <= 3; k++) {
    const t = t0 + (t1 - t0) * k / 3;
    svg.append(Object.assign(s("text", { x: x(t), y: H - 6, "font-size": 9, fill: C.muted,
      "text-anchor": k === 0 ? "start" : k === 3 ? "end" : "middle" }), { textContent: clock(t) }));
  }
  if (o.threshold != null) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(o.threshold), y2: y(o.threshold), stroke: C.red,
      "stroke-dasharray": "4 3" }));
  }
  let points = 0;
  for (const sr of o.series) {
    const idx = sr.t.map((t, i) => i).filter((i) => inside(sr.t[i]) && sr.y[i] != null);
    points += idx.length;
    if (sr.lo && idx.length) {
      const up = idx.map((i) => `${x(sr.t[i])},${y(sr.hi[i])}`), down = idx.slice().reverse().map((i) => `${x(sr.t[i])},${y(sr.lo[i])}`);
      svg.append(s("polygon", { points: up.concat(down).join(" "), fill: C.band, class: "nbd-band" }));
    }
    if (idx.length) svg.append(s("polyline", { points: idx.map((i) => `${x(sr.t[i])},${y(sr.y[i])}`).join(" "),
      fill: "none", stroke: sr.color, "stroke-width": 1.6 }));
    if (idx.length <= 40) for (const i of idx) svg.append(s("circle", { cx: x(sr.t[i]), cy: y(sr.y[i]), r: 2.2, fill: sr.color }));
  }
  if (!points) svg.append(Object.assign(s("text", { x: W / 2, y: H / 2, "font-size": 11, fill: C.muted,
    "text-anchor": "middle", class: "nbd-empty" }), { textContent: o.empty || "nothing in this range" }));
  svg.dataset.points = points;
  const cursor = s("line", { y1: T, y2: H - B, stroke: C.muted, "stroke-width": 0.8, visibility: "hidden" });
  const brush = s("rect", { y: T, height: H - T - B, fill: "rgba(9,105,218,0.12)", visibility: "hidden" });
  svg.append(cursor, brush);
  const tOf = (evt) => { const b = svg.getBoundingClientRect(); return t0 + (evt.clientX - b.left - L) / (W - L - R) * (t1 - t0); };
  // the drag's start lives in the panel's state, so a refresh that redraws the chart mid-drag does not lose it
  const key = o.cls || "chart";
  const dragged = () => (state.drag && state.drag.key === key ? state.drag.t : null);
  svg.addEventListener("mousemove", (evt) => {
    const t = tOf(evt), drag = dragged();
    if (drag != null) { brush.setAttribute("x", Math.min(x(drag), x(t))); brush.setAttribute("width", Math.abs(x(t) - x(drag))); brush.setAttribute("visibility", "visible"); }
    const rows = [];
    let best = null;
    for (const sr of o.series) {
      let bi = -1, bd = Infinity;
      sr.t.forEach((tt, i) => { if (inside(tt) && sr.y[i] != null && Math.abs(tt - t) < bd) { bd = Math.abs(tt - t); bi = i; } });
      if (bi >= 0) { best = sr.t[bi]; rows.push(`<span style="color:${sr.color}">■</span> ${sr.name}: <b>${(sr.fmt || fmt)(sr.y[bi])}</b>${sr.extra ? " " + sr.extra(bi) : ""}`); }
    }
    if (best == null) { hideTip(root); return; }
    cursor.setAttribute("x1", x(best)); cursor.setAttribute("x2", x(best)); cursor.setAttribute("visibility", "visible");
    showTip(root, evt, `<div>${clock(best)}</div>` + rows.join("<br>"));
  });
  svg.addEventListener("mouseleave", () => { hideTip(root); cursor.setAttribute("visibility", "hidden"); if (svg.isConnected) state.drag = null; brush.setAttribute("visibility", "hidden"); });
  svg.addEventListener("mousedown", (evt) => { state.drag = { key, t: tOf(evt) }; evt.preventDefault(); });
  svg.addEventListener("mouseup", (evt) => {
    const t = tOf(evt), drag = dragged();
    state.drag = null;
    if (drag != null && Math.abs(x(t) - x(drag)) > 6) { state.zoom = [Math.min(drag, t), Math.max(drag, t)]; state.redraw(); }
  });
  svg.addEventListener("dblclick", () => { state.zoom = null; state.redraw(); });
  return svg;
}

// Reference and live shares overlaid: bins of numbers or categories; hover shows both shares.
function overlay(root, d, title, cls) {
  const W = 460, H = 170, L = 44, R = 10, T = 18, B = 34;
  const svg = s("svg", { width: W, height: H, class: "nbd-chart " + cls, viewBox: `0 0 ${W} ${H}` });
  const n = d.reference.length, ymax = Math.min(1, Math.max(1e-9, ...d.reference, ...d.live) * 1.1);
  const bw = (W - L - R) / Math.max(n, 1), y = (v) => H - B - (H - T - B) * v / ymax;
  svg.append(Object.assign(s("text", { x: 4, y: 12, "font-size": 11, fill: C.muted }), { textContent: title }));
  svg.append(Object.assign(s("text", { x: W - R, y: 12, "font-size": 10, fill: C.muted, "text-anchor": "end" }),
    { textContent: "■ reference  ■ live" }));
  const legend = svg.lastChild; legend.innerHTML = `<tspan fill="${C.ref}">■</tspan> reference  <tspan fill="${C.live}">■</tspan> live`;
  for (let k = 0; k <= 2; k++) {
    const v = ymax * k / 2;
    svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: C.grid }));
    svg.append(Object.assign(s("text", { x: L - 4, y: y(v) + 3, "font-size": 9, fill: C.muted, "text-anchor": "end" }), { textContent: pct(v) }));
  }
  const label = (i) => d.kind === "numeric" ? `[${fmt(d.edges[i])}, ${fmt(d.edges[i + 1])})` : String(d.categories[i]);
  for (let i = 0; i < n; i++) {
    const x0 = L + i * bw;
    const g = s("g", { class: "nbd-bin" });
    if (d.kind === "numeric") {
      g.append(s("rect", { x: x0, y: y(d.reference[i]), width: bw - 1, height: H - B - y(d.reference[i]), fill: C.ref, opacity: 0.55 }));
      g.append(s("rect", { x: x0 + bw * 0.2, y: y(d.live[i]), width: bw * 0.6, height: H - B - y(d.live[i]), fill: C.live, opacity: 0.75 }));
    } else {
      g.append(s("rect", { x: x0 + 2, y: y(d.reference[i]), width: bw / 2 - 2, height: H - B - y(d.reference[i]), fill: C.ref }));
      g.append(s("rect", { x: x0 + bw / 2, y: y(d.live[i]), width: bw / 2 - 2, height: H - B - y(d.live[i]), fill: C.live }));
    }
    g.append(s("rect", { x: x0, y: T, width: bw, height: H - T - B, fill: "transparent" }));
    g.addEventListener("mousemove", (evt) => showTip(root, evt, `${label(i)}<br>reference <b>${pct(d.reference[i])}</b><br>live <b>${pct(d.live[i])}</b>`));
    g.addEventListener("mouseleave", () => hideTip(root));
    svg.append(g);
  }
  const ticks = d.kind === "numeric" ? [0, Math.floor(n / 2), n] : [...Array(n).keys()];
  for (const i of ticks) {
    const tx = d.kind === "numeric" ? L + i * bw : L + (i + 0.5) * bw;
    const text = d.kind === "numeric" ? fmt(d.edges[i]) : String(d.categories[i]).slice(0, 10);
    svg.append(Object.assign(s("text", { x: tx, y: H - B + 12, "font-size": 9, fill: C.muted, "text-anchor": "middle" }), { textContent: text }));
  }
  return svg;
}

// The calibration of logged probabilities against feedback (a reliability diagram): the observed frequency per bin of
// predicted probability at the bin's mean prediction, the dashed diagonal being perfect calibration; the bars along
// the bottom and the dots' sizes are the bins' rows. Hover a bin for its numbers.
function calibrationChart(root, c) {
  const W = 260, H = 240, L = 48, R = 12, T = 18, B = 32;
  const svg = s("svg", { width: W, height: H, class: "nbd-chart nbd-calibration", viewBox: `0 0 ${W} ${H}` });
  const x = (v) => L + (W - L - R) * v, y = (v) => H - B - (H - T - B) * v;
  svg.append(Object.assign(s("text", { x: 4, y: 12, "font-size": 11, fill: C.muted }),
    { textContent: `calibration of ${c.of} · ${fmt(c.rows)} rows` }));
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: C.grid }));
    svg.append(Object.assign(s("text", { x: L - 4, y: y(v) + 3, "font-size": 9, fill: C.muted, "text-anchor": "end" }), { textContent: pct(v).replace(".0 ", " ") }));
    svg.append(Object.assign(s("text", { x: x(v), y: H - B + 12, "font-size": 9, fill: C.muted, "text-anchor": "middle" }), { textContent: fmt(v, 2) }));
  }
  svg.append(Object.assign(s("text", { x: (L + W - R) / 2, y: H - 6, "font-size": 10, fill: C.muted, "text-anchor": "middle" }),
    { textContent: "mean predicted probability" }));
  svg.append(Object.assign(s("text", { x: -(T + H - B) / 2, y: 11, "font-size": 10, fill: C.muted, "text-anchor": "middle",
    transform: "rotate(-90)" }), { textContent: "observed frequency" }));
  svg.append(s("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(1), stroke: C.grey, "stroke-dasharray": "4 3" }));
  const most = Math.max(1, ...c.n), n = c.n.length;
  for (let i = 0; i < n; i++) {  // the rows per bin: bars up to a quarter of the height
    const top = y(0.25 * c.n[i] / most);
    svg.append(s("rect", { x: x(c.lower[i]) + 1, y: top, width: Math.max(1, x(c.upper[i]) - x(c.lower[i]) - 2), height: y(0) - top,
      fill: C.ref, opacity: 0.35, class: "nbd-cal-count" }));
  }
  svg.append(s("polyline", { points: c.predicted.map((p, i) => `${x(p)},${y(c.observed[i])}`).join(" "), fill: "none", stroke: C.live, "stroke-width": 1.6 }));
  for (let i = 0; i < n; i++) {
    svg.append(s("circle", { cx: x(c.predicted[i]), cy: y(c.observed[i]), r: 2.5 + 4 * Math.sqrt(c.n[i] / most), fill: C.live, "fill-opacity": 0.85, stroke: "#fff" }));
  }
  for (let i = 0; i < n; i++) {  // hover: the whole column of a bin
    const g = s("rect", { x: x(c.lower[i]), y: T, width: x(c.upper[i]) - x(c.lower[i]), height: H - T - B, fill: "transparent", class: "nbd-bin nbd-cal-bin" });
    const tip = `bin ${fmt(c.lower[i], 2)}–${fmt(c.upper[i], 2)} (${esc(c.of)})<br>rows <b>${fmt(c.n[i])}</b>` +
      `<br>mean predicted <b>${fmt(c.predicted[i])}</b><br>observed <b>${pct(c.observed[i])}</b>`;
    g.addEventListener("mousemove", (evt) => showTip(root, evt, tip));
    g.addEventListener("mouseleave", () => hideTip(root));
    svg.append(g);
  }
  return svg;
}

// How much a feature's shift alone moves the predictions: a bar from the middle of a small track (right: up, left:
// down), scaled to the largest figure of the table or the observed total, and the figure.
function movesCell(v, most) {
  const cell = h("td", { class: "num nbd-moves" });
  if (v == null) { cell.append("–"); return cell; }
  const w = Math.min(50, 50 * Math.abs(v) / (most || 1));
  cell.append(h("span", { class: "nbd-track" }, h("span", { class: "nbd-bar", style: `left:${v < 0 ? 50 - w : 50}%;width:${w}%` })), " " + signed(v));
  return cell;
}

function driftTable(root, data, state) {
  const wrap = h("div", { class: "nbd-drift" });
  const feats = data.features.filter((f) => f.name.toLowerCase().includes(state.search.toLowerCase()));
  const key = state.sort.key, dir = state.sort.dir;
  feats.sort((a, b) => {
    if (key === "default") return (b.drifted - a.drifted) || ((b.effect / (b.threshold || 1) || -1) - (a.effect / (a.threshold || 1) || -1));
    const by = (f) => key === "moves" && f.moves != null ? Math.abs(f.moves) : f[key];  // either way: by how much
    const va = by(a), vb = by(b);
    if (typeof va === "string") return dir * va.localeCompare(vb);
    return dir * ((va == null ? -Infinity : va) - (vb == null ? -Infinity : vb));
  });
  const att = data.attribution;
  const cols = [["name", "feature"], ["status", "status"], ["effect", "effect"], ...(att ? [["moves", "moves prediction"]] : []),
                ["threshold", "threshold"], ["q", "BH q"], ["p", "p"], ["psi", "PSI"], ["n", "live rows"]];
  const tips = { moves: att ? `how much this feature's shift alone moves the ${att.target} (observed total: ${signed(att.observed)}): ` +
    "the reference's mean prediction per bin of the feature, weighed by the live shares of the bins; one feature at a time, interactions ignored" : "" };
  const most = Math.max(Math.abs(att && att.observed || 0), ...data.features.map((f) => Math.abs(f.moves || 0)));
  const head = h("tr", {}, ...cols.map(([k, label]) => h("th", { "data-key": k, class: "nbd-sort", title: tips[k] ? "sort · " + tips[k] : "sort",
    onclick: () => { state.sort = { key: k, dir: state.sort.key === k ? -state.sort.dir : (k === "name" ? 1 : -1) }; state.redraw(); } },
    label + (state.sort.key === k ? (state.sort.dir > 0 ? " ▲" : " ▼") : ""))));
  const body = h("tbody");
  for (const f of feats.slice(0, state.limit)) {
    const status = f.test === "too few rows" ? "too few rows" : f.drifted ? "drifted" : "ok";
    const tr = h("tr", { class: "nbd-row" + (f.drifted ? " nbd-drifted" : "") + (state.selected === f.name ? " nbd-selected" : ""),
      "data-feature": f.name, onclick: () => { state.selected = f.name; state.redraw(); } },
      h("td", {}, f.name), h("td", { class: "nbd-status-" + status.replace(/ /g, "-") }, status),
      h("td", { class: "num" }, fmt(f.effect)), att ? movesCell(f.moves, most) : null,
      ...[f.threshold, f.q, f.p, f.psi].map((v) => h("td", { class: "num" }, fmt(v))),
      h("td", { class: "num" }, fmt(f.n)));
    body.append(tr);
  }
  const more = feats.length > state.limit ? h("div", { class: "nbd-more" }, `${feats.length - state.limit} more: search to narrow, or `,
    h("a", { href: "#", onclick: (e) => { e.preventDefault(); state.limit += 100; state.redraw(); } }, "show 100 more")) : null;
  const search = h("input", { class: "nbd-search", type: "search", placeholder: `search ${data.features.length} features`, value: state.search });
  search.addEventListener("input", () => { state.search = search.value; state.limit = 30; state.redrawTable(); });
  wrap.append(h("div", { class: "nbd-toolbar" }, search,
    h("span", { class: "nbd-muted" }, ` ${data.drifted.length} drifted · click a row for its distributions`)));
  wrap.append(h("div", { class: "nbd-scroll" }, h("table", { class: "nbd-drift-table" }, h("thead", {}, head), body)));
  if (more) wrap.append(more);
  return wrap;
}

function detail(root, data, state) {
  const box = h("div", { class: "nbd-detail" });
  const name = state.selected;
  const f = data.features.find((x) => x.name === name);
  const d = data.dist[name];
  if (!f || !d) { box.append(h("div", { class: "nbd-muted" }, "Select a feature in the table to see its distributions.")); return box; }
  const how = f.kind === "numeric" ? "Wasserstein/σ" : "Jensen-Shannon";
  box.append(h("div", { class: "nbd-title" }, `${name}: `, h("b", { style: `color:${f.drifted ? C.red : C.green}` }, f.drifted ? "drifted" : "no drift"),
    ` · ${how} ${fmt(f.effect)} (threshold ${fmt(f.threshold)}) · BH q ${fmt(f.q)} · ${fmt(f.n)} live rows`));
  const att = data.attribution;
  if (att && f.moves != null) {
    box.append(h("div", { class: "nbd-moves-line", title: "one feature at a time: the reference's mean prediction per bin of " +
      "this feature, weighed by the live shares of the bins (interactions ignored)" },
      `alone, this shift moves the ${att.target} by `, h("b", {}, signed(f.moves)),
      ` (observed total: ${signed(att.observed)}, ${fmt(att.reference)} → ${fmt(att.live)})`));
  }
  box.append(overlay(root, d, `${name}: reference vs live (${data.window})`, "nbd-overlay"));
  const hist = data.history;
  if (hist && hist.t.length) {
    box.append(timeChart(root, state, { title: `${name}: ${how} per judgement (dashed: threshold)`, cls: "nbd-effect-chart",
      span: state.span(hist.t), threshold: f.threshold,
      series: [{ name: how, t: hist.t, y: hist.effect[name] || hist.t.map(() => null), color: f.drifted ? C.red : C.live }] }));
  }
  return box;
}

// The name's alerts, retrainings, promotions and rollbacks: one lane per kind on a time axis from the first event to
// now (hover a marker for its text), and the latest few events in words, newest first.
function history(root, data) {
  const rows = data.timeline || [], colour = Object.fromEntries(KINDS);
  const box = h("div", { class: "nbd-history" }, h("div", { class: "nbd-title" }, h("b", {}, "History"),
    h("span", { class: "nbd-muted" }, ` · alerts, retrainings, promotions and rollbacks of ${data.name}, every version (${rows.length} event${rows.length === 1 ? "" : "s"})`)));
  if (!rows.length) { box.append(h("div", { class: "nbd-muted" }, "Nothing yet: dep.maintain() records its alerts and retrainings here.")); return box; }
  const W = 720, L = 64, R = 12, T = 6, lane = 16, H = T + lane * KINDS.length + 20;
  const svg = s("svg", { width: W, height: H, class: "nbd-chart nbd-timeline", viewBox: `0 0 ${W} ${H}` });
  const t1 = Math.max(data.at, rows[rows.length - 1].t), t0 = Math.min(t1 - 60, rows[0].t), span = Math.max(t1 - t0, 1);
  const x = (t) => L + (W - L - R) * (t - t0) / span, y = (kind) => T + lane * KINDS.findIndex(([k]) => k === kind) + lane / 2;
  for (const [kind, c] of KINDS) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(kind), y2: y(kind), stroke: C.grid }));
    svg.append(Object.assign(s("text", { x: 4, y: y(kind) + 3, "font-size": 10, fill: c }), { textContent: kind }));
  }
  for (let k = 0; k <= 3; k++) {
    const t = t0 + span * k / 3;
    svg.append(Object.assign(s("text", { x: x(t), y: H - 5, "font-size": 9, fill: C.muted,
      "text-anchor": k === 0 ? "start" : k === 3 ? "end" : "middle" }), { textContent: when(t, span) }));
  }
  for (const r of rows) {
    const dot = s("circle", { cx: x(r.t), cy: y(r.kind), r: 4.5, fill: colour[r.kind] || C.grey, "fill-opacity": 0.85,
      stroke: "#fff", class: `nbd-event nbd-event-${r.kind}`, "data-action": r.action, "data-id": r.id, "aria-label": r.text });
    const tip = `${when(r.t, span)} · ${r.action}${r.version != null ? " · v" + r.version : ""}<br><b>${esc(r.text)}</b>`;
    dot.addEventListener("mousemove", (evt) => showTip(root, evt, tip));
    dot.addEventListener("mouseleave", () => hideTip(root));
    svg.append(dot);
  }
  box.append(svg);
  const list = h("ul", { class: "nbd-history-list" });
  for (const r of rows.slice(-LATEST).reverse()) {
    list.append(h("li", { class: "nbd-history-item", "data-kind": r.kind, "data-action": r.action },
      h("span", { style: `color:${colour[r.kind] || C.grey}` }, "● "), h("span", { class: "nbd-muted" }, when(r.t, t1 - r.t) + " "), r.text));
  }
  box.append(list);
  return box;
}

// A toast for each alert that fired since the panel was first drawn: what was there when it opened is old news.
function toastAlerts(el, data, state) {
  if (!data.timeline) return;
  const fired = data.timeline.filter((r) => r.action === "alert-fired");
  const newest = Math.max(0, ...fired.map((r) => r.id));
  if (state.alertsSeen == null) { state.alertsSeen = newest; return; }
  for (const r of fired) if (r.id > state.alertsSeen) toast(el, r);
  state.alertsSeen = Math.max(state.alertsSeen, newest);
}
// Toasts stand at the top right of the part of the panel in view (a notebook scrolls inside its own elements).
function placeToasts(el) {
  const stack = el.querySelector(".nbd-toast-stack");
  if (!stack) return;
  let top = 0;
  for (let p = el.parentElement; p; p = p.parentElement) {
    if (/(auto|scroll|hidden)/.test(getComputedStyle(p).overflowY)) top = Math.max(top, p.getBoundingClientRect().top);
  }
  const box = el.getBoundingClientRect(), want = Math.max(8, top - box.top + 8);
  stack.style.top = Math.max(8, Math.min(want, box.height - stack.offsetHeight - 8)) + "px";
}
function toast(el, r) {
  let stack = el.querySelector(".nbd-toast-stack");
  if (!stack) {
    stack = h("div", { class: "nbd-toast-stack" });
    el.prepend(stack);
    if (getComputedStyle(el).position === "static") el.style.position = "relative";
    const place = () => {
      if (!stack.isConnected) { document.removeEventListener("scroll", place, true); window.removeEventListener("resize", place); }
      else if (stack.children.length) placeToasts(el);
    };
    document.addEventListener("scroll", place, { capture: true, passive: true });
    window.addEventListener("resize", place);
  }
  const colour = SEVERITY[r.severity] || C.orange;
  const box = h("div", { class: "nbd-toast", role: "alert", "data-severity": r.severity, "data-id": r.id, style: `border-left-color:${colour}` },
    h("button", { class: "nbd-toast-close", title: "dismiss", "aria-label": "dismiss", onclick: () => box.remove() }, "×"),
    h("div", { class: "nbd-toast-head" }, h("b", { style: `color:${colour}` }, r.severity || "alert"), ` alert fired · ${clock(r.t)}`),
    h("div", { class: "nbd-toast-body" }, r.summary || r.text));
  stack.append(box);
  while (stack.children.length > TOASTS) stack.firstChild.remove();
  placeToasts(el);
  setTimeout(() => box.remove(), TOAST_MS);
}

function nbdeployPanel(el, data, state) {
  state = state || {};
  state.range = state.range || "1h"; state.sort = state.sort || { key: "default", dir: -1 };
  state.search = state.search || ""; state.limit = state.limit || 30; state.zoom = state.zoom || null;
  if (state.selected == null && data.features && data.features.length) state.selected = (data.features.find((f) => f.drifted) || {}).name;
  state.span = (ts) => {
    const now = data.at, r = { "5m": 300, "1h": 3600, "24h": 86400 }[state.range];
    if (r) return [now - r, now];
    const first = Math.min(now - 60, ...(ts.length ? ts : [now]));
    return [first, now];
  };
  let root = el.querySelector(".nbd-root");
  if (!root) {
    root = h("div", { class: "nbd-root" });
    el.append(root);
    // the pointer's place survives a redraw (a refresh every few seconds): the tooltip is shown again there
    root.addEventListener("mousemove", (e) => { state.pointer = [e.clientX, e.clientY]; });
    root.addEventListener("mouseleave", () => { state.pointer = null; });
  }
  const typing = document.activeElement && document.activeElement.classList.contains("nbd-search") && root.contains(document.activeElement);
  state.redraw = () => nbdeployPanel(el, data, state);
  state.redrawTable = () => { const old = root.querySelector(".nbd-drift"); const at = old && old.querySelector(".nbd-search");
    const fresh = driftTable(root, data, state); old.replaceWith(fresh); const ns = fresh.querySelector(".nbd-search"); ns.focus(); ns.setSelectionRange(ns.value.length, ns.value.length); };
  const keepScroll = root.querySelector(".nbd-scroll") ? root.querySelector(".nbd-scroll").scrollTop : 0;
  root.replaceChildren();
  const rangeBar = h("div", { class: "nbd-ranges" }, h("span", { class: "nbd-muted" }, "time range "),
    ...RANGES.map(([k, label]) => h("button", { class: "nbd-range" + (state.range === k ? " nbd-active" : ""), "data-range": k,
      onclick: () => { state.range = k; state.zoom = null; state.redraw(); } }, label)),
    h("span", { class: "nbd-muted" }, state.zoom ? ` zoomed ${clock(state.zoom[0])}–${clock(state.zoom[1])} (double-click to reset)` : " · drag on a chart to zoom"));
  root.append(rangeBar);
  const tr = data.traffic[state.range] || { t: [], rate: [], p95: [], errors: [], n: [] };
  const span = state.span(tr.t);
  const charts = h("div", { class: "nbd-row-wrap" });
  charts.append(timeChart(root, state, { title: `requests/s and errors · v${data.version} · bucket ${tr.bucket || "–"} s`, cls: "nbd-traffic", span,
    series: [{ name: "requests/s", t: tr.t, y: tr.rate, color: C.live, extra: (i) => `(${tr.n[i]} requests)` },
             { name: "errors/s", t: tr.t, y: tr.errors, color: C.red }] }));
  charts.append(timeChart(root, state, { title: `latency p95 (ms) · v${data.version}`, cls: "nbd-latency", span,
    series: [{ name: "p95 ms", t: tr.t, y: tr.p95, color: C.orange }, { name: "p50 ms", t: tr.t, y: tr.p50, color: C.muted }] }));
  const acc = data.accuracy;
  if (acc && acc.t.length) {
    const pctm = acc.metric === "accuracy";
    charts.append(timeChart(root, state, { title: `${acc.metric} per ${acc.bucket} s, ${pctm ? "95 % Wilson band" : "MAE"} · v${data.version}`,
      cls: "nbd-accuracy", span, ymin: 0, ymax: pctm ? 1 : null, fixed: false, yfmt: pctm ? (v) => pct(v) : null,
      series: [{ name: acc.metric, t: acc.t, y: acc.value, lo: acc.lo, hi: acc.hi, color: C.green, fmt: pctm ? pct : fmt,
                 extra: (i) => `n=${acc.n[i]}` + (acc.lo ? ` [${pct(acc.lo[i])}, ${pct(acc.hi[i])}]` : "") }] }));
  }
  if (data.calibration && data.calibration.n.length) charts.append(calibrationChart(root, data.calibration));
  if (data.dist && data.dist.prediction) charts.append(overlay(root, data.dist.prediction, `predictions: reference vs live (${data.window})`, "nbd-predictions"));
  root.append(charts);
  root.append(h("div", { class: "nbd-rule" }, h("b", { style: `color:${data.dataset_drift ? C.red : C.muted}` },
    data.dataset_drift ? "dataset drifted" : "dataset not drifted"), ` · ${data.window} · `, data.rule));
  if (data.features && data.features.length) {
    root.append(h("div", { class: "nbd-row-wrap" }, driftTable(root, data, state), detail(root, data, state)));
  } else {
    root.append(h("div", { class: "nbd-muted" }, data.no_drift || "no drift table yet"));
  }
  if (data.timeline) root.append(history(root, data));
  const sc = root.querySelector(".nbd-scroll"); if (sc) sc.scrollTop = keepScroll;
  if (typing) { const ns = root.querySelector(".nbd-search"); if (ns) { ns.focus(); ns.setSelectionRange(ns.value.length, ns.value.length); } }
  if (state.pointer) {
    const [px, py] = state.pointer, under = document.elementFromPoint(px, py);
    if (under && root.contains(under)) under.dispatchEvent(new MouseEvent("mousemove", { clientX: px, clientY: py, bubbles: true }));
  }
}

const CSS = `
.nbd-root{font:12px system-ui,sans-serif;color:#1f2328;position:relative;max-width:1100px}
.nbd-root .nbd-row-wrap{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start;margin:6px 0}
.nbd-root .nbd-chart{border:1px solid #d0d7de;border-radius:6px;background:#fff;cursor:crosshair;user-select:none}
.nbd-root .nbd-tip{position:absolute;display:none;pointer-events:none;background:#fff;border:1px solid #d0d7de;
 border-radius:4px;padding:4px 6px;font-size:11px;box-shadow:0 1px 4px rgba(0,0,0,.15);z-index:10;white-space:nowrap}
.nbd-root .nbd-range{border:1px solid #d0d7de;background:#f6f8fa;border-radius:4px;margin:0 2px;padding:1px 8px;cursor:pointer}
.nbd-root .nbd-range.nbd-active{background:#0969da;color:#fff;border-color:#0969da}
.nbd-root .nbd-muted{color:#59636e}
.nbd-root .nbd-rule{color:#59636e;font-size:11px;margin:4px 0}
.nbd-root .nbd-search{width:220px;padding:2px 6px;border:1px solid #d0d7de;border-radius:4px}
.nbd-root .nbd-scroll{max-height:330px;overflow:auto;border:1px solid #d0d7de;border-radius:6px;margin-top:4px}
.nbd-root table{border-collapse:collapse;font-variant-numeric:tabular-nums}
.nbd-root th{position:sticky;top:0;background:#f6f8fa;padding:3px 8px;text-align:left;cursor:pointer;border-bottom:1px solid #d0d7de}
.nbd-root td{padding:2px 8px;border-bottom:1px solid #f0f2f4}
.nbd-root td.num{text-align:right}
.nbd-root tr.nbd-row{cursor:pointer}
.nbd-root tr.nbd-row:hover{background:#f6f8fa}
.nbd-root tr.nbd-drifted{background:#ffebe9}
.nbd-root tr.nbd-selected{outline:2px solid #0969da;outline-offset:-2px}
.nbd-root .nbd-status-drifted{color:#cf222e;font-weight:600}
.nbd-root .nbd-status-ok{color:#1a7f37}
.nbd-root .nbd-status-too-few-rows{color:#6e7781}
.nbd-root .nbd-track{display:inline-block;position:relative;width:44px;height:8px;background:#f6f8fa;border-radius:2px;vertical-align:middle}
.nbd-root .nbd-track::after{content:"";position:absolute;left:50%;top:-1px;height:10px;border-left:1px solid #8c959f}
.nbd-root .nbd-bar{position:absolute;top:0;height:8px;background:#bc4c00;border-radius:1px}
.nbd-root .nbd-moves-line{color:#1f2328}
.nbd-root .nbd-detail{display:flex;flex-direction:column;gap:6px}
.nbd-root .nbd-title{font-size:12px}
.nbd-root .nbd-more{color:#59636e;padding:4px}
.nbd-root .nbd-history{margin:8px 0 4px;display:flex;flex-direction:column;gap:4px}
.nbd-root .nbd-timeline{cursor:default}
.nbd-root .nbd-event:hover{stroke:#1f2328}
.nbd-root .nbd-history-list{margin:0;padding:0;list-style:none;line-height:1.6}
.nbd-toast-stack{position:absolute;right:8px;top:8px;z-index:30;display:flex;flex-direction:column;gap:6px;width:380px;max-width:90%}
.nbd-toast{position:relative;background:#fff;border:1px solid #d0d7de;border-left:4px solid #bc4c00;border-radius:6px;
 box-shadow:0 4px 12px rgba(0,0,0,.18);padding:8px 28px 8px 10px;font:12px system-ui,sans-serif;color:#1f2328;line-height:1.4}
.nbd-toast-head{margin-bottom:2px}
.nbd-toast-close{position:absolute;top:2px;right:4px;border:none;background:none;font-size:16px;line-height:1;cursor:pointer;color:#59636e}
`;

function nbdeployStyle(el) {
  if (!el.querySelector("style.nbd-style")) el.append(Object.assign(document.createElement("style"), { className: "nbd-style", textContent: CSS }));
}
// --- anywidget
export default {
  render({ model, el }) {
    nbdeployStyle(el);
    const state = {};
    let driftText = null, drift = {};
    const draw = () => {
      const d = model.get("data");
      if (!d || !d.at) return;
      const text = model.get("drift_json");
      if (text !== driftText) { driftText = text; drift = text ? JSON.parse(text) : {}; }  // parsed once per judgement
      const data = { ...drift, ...d, timeline: model.get("timeline") };
      nbdeployPanel(el, data, state);
      toastAlerts(el, data, state);
    };
    model.on("change:data", draw);
    model.on("change:drift_json", draw);
    model.on("change:timeline", draw);
    draw();
  },
};
