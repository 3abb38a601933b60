// The cifar-hpo dashboard: fetches /api/search/<name>, draws it, and fetches again whenever the server's event
// stream says the search changed. No library, nothing from elsewhere; text from the store is only ever set as
// textContent, never as HTML.
"use strict";

const STATE_COLORS = { ok: "#1f77b4", stopped: "#d9730d", failed: "#d62728", running: "#2a9d4b", pending: "#7a7f8a" };
const MAX_ROWS = 500;
const ui = { search: null, searches: [], doc: null, version: -1, events: null, sort: { key: "tid", dir: 1 },
             filter: "", selected: null };

const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}
const fmt = (v, digits = 4) => (v === null || v === undefined ? "" : typeof v === "number" ?
  (Number.isInteger(v) ? String(v) : v.toPrecision(digits)) : String(v));
function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

// ---- plots ---------------------------------------------------------------------------------------------------
function canvasContext(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "11px system-ui, sans-serif";
  return ctx;
}
function bounds(values, pad = 0.05) {
  let lo = Math.min(...values), hi = Math.max(...values);
  if (!isFinite(lo) || !isFinite(hi)) { lo = 0; hi = 1; }
  if (lo === hi) { lo -= 0.5; hi += 0.5; }
  const p = (hi - lo) * pad;
  return [lo - p, hi + p];
}
function ticks(lo, hi, n = 5) { return Array.from({ length: n + 1 }, (_, i) => lo + (hi - lo) * i / n); }

// series: [{points: [[x, y]...], color, kind: "scatter" | "line" | "step", marker: "o" | "x", count: bool}]
function plotXY(canvas, series, opts = {}) {
  const ctx = canvasContext(canvas);
  const W = canvas.width, H = canvas.height, L = 52, R = 10, T = 10, B = 34;
  const all = series.flatMap((s) => s.points);
  let counted = 0;
  for (const s of series) if (s.count !== false && s.kind === "scatter") counted += s.points.length;
  canvas.dataset.points = String(counted);
  if (!all.length) {
    ctx.fillStyle = "#7a7f8a"; ctx.fillText(opts.empty || "nothing to show yet", L, H / 2); return;
  }
  const [x0, x1] = opts.xRange || bounds(all.map((p) => p[0]), 0.02);
  const [y0, y1] = opts.yRange || bounds(all.map((p) => p[1]));
  const X = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), Y = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  ctx.strokeStyle = "#d5dae3"; ctx.fillStyle = "#5b6475"; ctx.lineWidth = 1;
  for (const t of ticks(y0, y1)) {
    ctx.beginPath(); ctx.moveTo(L, Y(t)); ctx.lineTo(W - R, Y(t)); ctx.stroke();
    ctx.fillText(fmt(t, 3), 4, Y(t) + 4);
  }
  const xTicks = opts.xLabels || ticks(x0, x1).map((t) => [t, opts.xTime ? new Date(t * 1000).toLocaleTimeString()
    : opts.xInteger ? String(Math.round(t)) : fmt(t, 3)]);
  const drawn = new Set();
  for (const [t, label] of xTicks.slice(0, 8)) {
    if (drawn.has(label)) continue; // integer ticks of a short range repeat
    drawn.add(label);
    ctx.fillText(String(label).slice(0, 10), X(t) - 14, H - B + 14);
  }
  ctx.fillText(opts.xLabel || "", W / 2 - 20, H - 4);
  for (const s of series) {
    ctx.strokeStyle = ctx.fillStyle = s.color || "#333"; ctx.lineWidth = s.width || 1.5;
    if (s.kind === "line" || s.kind === "step") {
      ctx.beginPath();
      s.points.forEach(([x, y], i) => {
        if (i === 0) ctx.moveTo(X(x), Y(y));
        else { if (s.kind === "step") ctx.lineTo(X(x), Y(s.points[i - 1][1])); ctx.lineTo(X(x), Y(y)); }
      });
      ctx.stroke();
    } else {
      for (const [x, y] of s.points) {
        if (s.marker === "x") {
          ctx.beginPath(); ctx.moveTo(X(x) - 4, Y(y) - 4); ctx.lineTo(X(x) + 4, Y(y) + 4);
          ctx.moveTo(X(x) + 4, Y(y) - 4); ctx.lineTo(X(x) - 4, Y(y) + 4); ctx.stroke();
        } else { ctx.beginPath(); ctx.arc(X(x), Y(y), s.radius || 3, 0, 2 * Math.PI); ctx.fill(); }
      }
    }
  }
}

function scoreColor(t) { // 0..1 → blue .. yellow (a viridis-like ramp)
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.max(0, Math.min(1, t)) * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i, c = stops[i].map((v, k) => Math.round(v + (stops[i + 1][k] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function axisOf(param, trials) {
  const vals = trials.map((t) => t.params[param.name]).filter((v) => v !== undefined && v !== null);
  if (param.kind === "number") {
    const nums = vals.map(Number);
    const lo = Math.min(...nums), hi = Math.max(...nums);
    const log = lo > 0 && hi / lo > 20;
    const f = (v) => (log ? Math.log(v) : v);
    const [a, b] = [f(lo), f(hi)];
    return { at: (v) => (v === undefined || v === null ? null : b === a ? 0.5 : (f(Number(v)) - a) / (b - a)),
             labels: [[0, fmt(lo, 3)], [1, fmt(hi, 3)]], log };
  }
  const cats = [...new Set(vals.map(String))].sort();
  return { at: (v) => (v === undefined ? null : cats.length < 2 ? 0.5 : cats.indexOf(String(v)) / (cats.length - 1)),
           labels: cats.map((c, i) => [cats.length < 2 ? 0.5 : i / (cats.length - 1), c]) };
}

function plotParallel(canvas, doc) {
  const ctx = canvasContext(canvas);
  const W = canvas.width, H = canvas.height, T = 18, B = 30, L = 40, R = 40;
  const params = doc.params;
  const trials = doc.trials.filter((t) => t.state !== "pending");
  canvas.dataset.points = String(trials.length);
  if (!params.length || !trials.length) { ctx.fillStyle = "#7a7f8a"; ctx.fillText("nothing to show yet", L, H / 2); return; }
  const axes = params.map((p) => axisOf(p, trials));
  const objectives = trials.map((t) => t.objective).filter((v) => v !== null);
  const [o0, o1] = objectives.length ? [Math.min(...objectives), Math.max(...objectives)] : [0, 1];
  const X = (i) => L + (params.length < 2 ? 0.5 : i / (params.length - 1)) * (W - L - R);
  const Y = (f) => H - B - f * (H - T - B);
  const ordered = [...trials].sort((a, b) => (a.objective ?? -1) - (b.objective ?? -1)); // best drawn last
  ctx.lineWidth = 1;
  for (const t of ordered) {
    ctx.strokeStyle = t.objective === null ? "rgba(150,150,150,0.35)" : scoreColor((t.objective - o0) / ((o1 - o0) || 1));
    ctx.globalAlpha = trials.length > 500 ? 0.35 : 0.8;
    ctx.beginPath();
    let started = false;
    params.forEach((p, i) => {
      const f = axes[i].at(t.params[p.name]);
      if (f === null) { started = false; return; }
      if (!started) { ctx.moveTo(X(i), Y(f)); started = true; } else ctx.lineTo(X(i), Y(f));
    });
    ctx.stroke();
  }
  ctx.globalAlpha = 1; ctx.strokeStyle = "#1d2330"; ctx.fillStyle = "#1d2330";
  params.forEach((p, i) => {
    ctx.beginPath(); ctx.moveTo(X(i), Y(0)); ctx.lineTo(X(i), Y(1)); ctx.stroke();
    ctx.fillText(p.name.slice(0, 16) + (axes[i].log ? " (log)" : ""), X(i) - 24, H - (i % 2 ? 2 : 14));
    for (const [f, label] of axes[i].labels.slice(0, 8)) ctx.fillText(label, X(i) + 3, Y(f) + 4);
  });
}

function plotImportance(canvas, importance) {
  const ctx = canvasContext(canvas);
  const entries = Object.entries(importance).sort((a, b) => b[1] - a[1]);
  canvas.dataset.points = String(entries.length);
  if (!entries.length) {
    ctx.fillStyle = "#7a7f8a"; ctx.fillText("needs 8 scored trials", 12, canvas.height / 2); return;
  }
  const rowH = Math.min(28, (canvas.height - 10) / entries.length), L = 170, W = canvas.width - L - 50;
  entries.forEach(([name, v], i) => {
    const y = 6 + i * rowH;
    ctx.fillStyle = "#1d2330"; ctx.fillText(name, 6, y + rowH / 2 + 4);
    ctx.fillStyle = "#3c7be0"; ctx.fillRect(L, y + 3, Math.max(1, v * W), rowH - 6);
    ctx.fillStyle = "#1d2330"; ctx.fillText(v.toFixed(3), L + v * W + 4, y + rowH / 2 + 4);
  });
}

function bestSoFar(points) {
  let best = -Infinity;
  const out = [];
  for (const [x, y] of points) { if (y > best) best = y; out.push([x, best]); }
  return out;
}

function drawPlots(doc) {
  const scored = doc.trials.filter((t) => t.objective !== null && (t.state === "ok" || t.state === "stopped"));
  const byState = (state, marker) => ({ kind: "scatter", color: STATE_COLORS[state], marker,
    points: doc.trials.filter((t) => t.state === state && t.objective !== null).map((t) => [t.tid, t.objective]) });
  plotXY($("plot-trials"), [
    byState("ok"), byState("stopped"), byState("failed", "x"),
    { kind: "step", color: "#1d2330", points: bestSoFar(scored.map((t) => [t.tid, t.objective])) },
  ], { xLabel: "trial", xInteger: true, empty: "no trial has an objective yet" });
  const timed = scored.filter((t) => t.finished_at).sort((a, b) => a.finished_at - b.finished_at);
  plotXY($("plot-time"), [
    { kind: "step", color: "#1d2330", points: bestSoFar(timed.map((t) => [t.finished_at, t.objective])) },
    { kind: "scatter", color: "#1f77b4", radius: 2, points: timed.map((t) => [t.finished_at, t.objective]) },
  ], { xLabel: "time", xTime: true, empty: "no trial has finished yet" });
  const curves = doc.trials.filter((t) => t.curve.some((v) => v !== null));
  const series = curves.map((t) => ({ kind: "line", width: t.state === "running" ? 2 : 1,
    color: STATE_COLORS[t.state] || "#333", count: false,
    points: t.curve.map((v, i) => [i + 1, v]).filter((p) => p[1] !== null) }));
  const cuts = curves.filter((t) => t.cut_epoch && t.curve[t.cut_epoch - 1] !== null && t.curve[t.cut_epoch - 1] !== undefined)
    .map((t) => [t.cut_epoch, t.curve[t.cut_epoch - 1]]);
  series.push({ kind: "scatter", marker: "x", color: "#d62728", points: cuts, count: false });
  plotXY($("plot-curves"), series, { xLabel: "epoch", xInteger: true, empty: "no epoch reported yet" });
  $("plot-curves").dataset.points = String(curves.length);
  $("plot-curves").dataset.cuts = String(cuts.length);
  plotImportance($("plot-importance"), doc.importance);
  plotParallel($("plot-parallel"), doc);
  const box = $("param-plots");
  box.replaceChildren();
  for (const p of doc.params) {
    const canvas = el("canvas", { id: `plot-param-${p.name}`, width: "280", height: "180" });
    box.append(el("figure", {}, el("figcaption", { text: p.name }), canvas));
    const axis = axisOf(p, scored);
    const pts = scored.map((t) => [axis.at(t.params[p.name]), t.objective]).filter((q) => q[0] !== null);
    plotXY(canvas, [{ kind: "scatter", color: "#1f77b4", radius: 2.5, points: pts }],
           { xRange: [-0.05, 1.05], xLabels: axis.labels, xLabel: axis.log ? "log scale" : "",
             empty: "no objective yet" });
  }
}

// ---- cards, table, detail ------------------------------------------------------------------------------------
function drawCards(doc) {
  const b = doc.budget, done = b.total ? Math.min(1, b.finished / b.total) : 0;
  const best = doc.best;
  const cards = [
    ["state", doc.state, doc.reason || ""],
    ["budget", `${b.finished} / ${b.total ?? "?"}`, `${b.left ?? "?"} left, ${b.parallelism} at a time`],
    ["best", best ? fmt(best.objective) : "–", best ? `trial ${best.tid}` : "no objective yet"],
    ["time left", seconds(doc.eta_seconds), "estimate: median trial × rounds left"],
    ["trials", Object.entries(doc.counts).map(([k, v]) => `${v} ${k}`).join(", ") || "none", ""],
  ];
  $("cards").replaceChildren(...cards.map(([title, value, note], i) => {
    const card = el("div", { class: "card", id: `card-${title.replace(" ", "-")}` }, el("small", { text: title }),
                    el("b", { text: value }), el("small", { text: note }));
    if (i === 1) { const bar = el("div", { class: "bar" }, el("div")); bar.firstChild.style.width = `${done * 100}%`; card.append(bar); }
    return card;
  }));
  if (best) {
    $("cards").append(el("div", { class: "card", id: "card-best-params" }, el("small", { text: "best parameters" }),
      el("small", { text: Object.entries(best.params).map(([k, v]) => `${k}=${fmt(v, 3)}`).join(", ") })));
  }
  $("error").hidden = !doc.error;
  $("error").textContent = doc.error || "";
}

function columns(doc) {
  return [["tid", (t) => t.tid], ["state", (t) => t.state], ["objective", (t) => t.objective],
    ["duration s", (t) => t.duration], ["origin", (t) => t.origin], ["epoch", (t) => t.curve.length || t.epoch],
    ["reason", (t) => t.reason], ...doc.params.map((p) => [p.name, (t) => t.params[p.name]])];
}

function matches(t, filter, cols) {
  if (!filter) return true;
  return filter.toLowerCase().split(/\s+/).filter(Boolean).every((tok) => {
    const m = tok.match(/^([a-z_]+):(.*)$/);
    if (m && ["state", "origin", "tid"].includes(m[1])) return String(t[m[1]]).toLowerCase() === m[2];
    return cols.some(([, get]) => String(get(t) ?? "").toLowerCase().includes(tok));
  });
}

function drawTable(doc) {
  const cols = columns(doc), { key, dir } = ui.sort;
  const thead = el("tr", {}, ...cols.map(([name]) => {
    const th = el("th", { text: name, "data-key": name });
    if (name === key) th.className = dir > 0 ? "sorted-asc" : "sorted-desc";
    th.addEventListener("click", () => {
      ui.sort = { key: name, dir: ui.sort.key === name ? -ui.sort.dir : 1 };
      drawTable(ui.doc);
    });
    return th;
  }), el("th", { text: "files" }));
  $("trials").tHead.replaceChildren(thead);
  const get = (cols.find(([n]) => n === key) || cols[0])[1];
  const rows = doc.trials.filter((t) => matches(t, ui.filter, cols)).sort((a, b) => {
    const x = get(a), y = get(b);
    if (x === y) return a.tid - b.tid;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * dir;
  });
  $("shown").textContent = `${rows.length} of ${doc.trials.length} trials` +
    (rows.length > MAX_ROWS ? ` (the first ${MAX_ROWS} shown: filter to narrow)` : "");
  $("trials").tBodies[0].replaceChildren(...rows.slice(0, MAX_ROWS).map((t) => {
    const tr = el("tr", { "data-tid": String(t.tid) }, ...cols.map(([name, g]) => el("td", {
      text: name === "objective" ? fmt(g(t)) : fmt(g(t), 3), class: name === "state" ? `state-${t.state}` :
        name === "reason" ? "reason" : "", title: name === "reason" ? (t.reason || "") : "" })),
      el("td", {}, ...["log", "result", "model"].map((f) => el("a", {
        href: `/api/search/${encodeURIComponent(doc.name)}/trial/${t.tid}/${f}`, text: f + " " }))));
    if (ui.selected === t.tid) tr.className = "selected";
    tr.addEventListener("click", (e) => { if (e.target.tagName !== "A") showTrial(t.tid); });
    return tr;
  }));
}

async function showTrial(tid) {
  ui.selected = tid;
  const base = `/api/search/${encodeURIComponent(ui.search)}/trial/${tid}`;
  $("detail").hidden = false;
  $("detail-title").textContent = `Trial ${tid}`;
  $("detail-links").replaceChildren(...["log", "result", "model"].map((f) => el("a", { href: `${base}/${f}`, text: f + "  " })));
  for (const [what, target] of [["log", "detail-log"], ["result", "detail-result"]]) {
    const r = await fetch(`${base}/${what}`, { cache: "no-store" });
    const text = await r.text();
    // Shown as text, never as HTML: a log line with markup stays a line of text.
    $(target).textContent = r.ok && what === "result" ? JSON.stringify(JSON.parse(text), null, 1) : text;
  }
  drawTable(ui.doc);
}

function drawFailures(doc) {
  $("failures").tBodies[0].replaceChildren(...(doc.failures.length ? doc.failures.map((f) => el("tr", {},
    el("td", { text: f.reason, class: "reason", title: f.reason }), el("td", { text: String(f.count) }),
    el("td", { text: f.tids.slice(0, 30).join(", ") + (f.tids.length > 30 ? " …" : "") })))
    : [el("tr", {}, el("td", { text: "no failed trial", colspan: "3" }))]));
}

function drawStartup(doc) {
  const withStartup = doc.trials.filter((t) => t.startup);
  const phases = [...new Set(withStartup.flatMap((t) => Object.keys(t.startup)))];
  $("startup").tHead.replaceChildren(el("tr", {}, el("th", { text: "tid" }), ...phases.map((p) => el("th", { text: p })),
    el("th", { text: "total" })));
  $("startup").tBodies[0].replaceChildren(...(withStartup.length ? withStartup.slice(-MAX_ROWS).map((t) => el("tr", {},
    el("td", { text: String(t.tid) }), ...phases.map((p) => el("td", { text: fmt(t.startup[p], 3) })),
    el("td", { text: fmt(Object.values(t.startup).reduce((a, b) => a + (b || 0), 0), 3) })))
    : [el("tr", {}, el("td", { text: "no trial recorded its start-up phases (the CIFAR trainer does)" }))]));
}

function drawNav(summaries) {
  $("searches").replaceChildren(...summaries.map((s) => el("a", { href: `#${encodeURIComponent(s.name)}`,
    text: `${s.name} (${s.state}, ${s.budget.finished}/${s.budget.total ?? "?"})`,
    class: s.name === ui.search ? "current" : "" })));
  $("overview").tBodies[0].replaceChildren(...summaries.map((s) => el("tr", { "data-search": s.name },
    el("td", {}, el("a", { href: `#${encodeURIComponent(s.name)}`, text: s.name })), el("td", { text: s.state }),
    el("td", { text: `${s.budget.finished} / ${s.budget.total ?? "?"}` }),
    el("td", { text: s.best ? `${fmt(s.best.objective)} (trial ${s.best.tid})` : "–" }),
    el("td", { text: seconds(s.eta_seconds) }),
    el("td", { text: Object.entries(s.counts).map(([k, v]) => `${v} ${k}`).join(", ") }))));
}

function render(doc) {
  const t0 = performance.now();
  ui.doc = doc;
  ui.searches = ui.searches.map((s) => (s.name === doc.name ? doc : s));
  drawNav(ui.searches);
  $("search").hidden = false;
  drawCards(doc);
  drawPlots(doc);
  drawTable(doc);
  drawFailures(doc);
  drawStartup(doc);
  document.title = `${doc.name}: ${doc.state} — cifar-hpo`;
  // For the tests and benchmarks/d1_dashboard.py: which document is shown, and how long drawing it took.
  document.body.dataset.version = String(doc.version);
  document.body.dataset.renderMs = (performance.now() - t0).toFixed(1);
  if (!document.body.dataset.firstRenderAt) document.body.dataset.firstRenderAt = performance.now().toFixed(1);
}

// ---- loading and live updates --------------------------------------------------------------------------------
async function load() {
  const doc = await getJSON(`/api/search/${encodeURIComponent(ui.search)}`);
  ui.version = doc.version;
  render(doc);
}

function listen() {
  if (ui.events) ui.events.close();
  ui.events = new EventSource(`/api/events?search=${encodeURIComponent(ui.search)}`);
  ui.events.onopen = () => { $("live").textContent = "● live"; $("live").className = "on"; };
  ui.events.onerror = () => { $("live").textContent = "○ reconnecting"; $("live").className = ""; };
  ui.events.onmessage = (e) => {
    const { version } = JSON.parse(e.data);
    if (version !== ui.version) load().catch(showError);
  };
}

function showError(e) { $("error").hidden = false; $("error").textContent = String(e); }

async function start() {
  const searches = await getJSON("/api/searches");
  if (!searches.length) { $("empty").hidden = false; return; }
  const wanted = decodeURIComponent(location.hash.slice(1));
  ui.search = searches.some((s) => s.name === wanted) ? wanted : searches[0].name;
  ui.searches = searches;
  await load();
  listen();
}

$("filter").addEventListener("input", (e) => { ui.filter = e.target.value; drawTable(ui.doc); });
window.addEventListener("hashchange", () => { ui.selected = null; $("detail").hidden = true; start().catch(showError); });
start().catch(showError);
