"""The dashboard page (``GET /``): one self-contained HTML document, plain JavaScript and inline SVG.

It loads nothing from elsewhere (the collector may have no internet) and asks
``/api/v1/stats`` for its numbers. It lives in a Python module so that every
install of the package carries it. Every value from the data is inserted as
text (``textContent``), never as markup.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ox-telemetry</title>
<style>
  :root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --bg: #f6f7f9; --card: #fff;
          --a: #3867d6; --b: #e55039; --c: #20bf6b; --d: #8854d0; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: var(--fg); background: var(--bg); }
  header { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; padding: 14px 20px;
           background: var(--card); border-bottom: 1px solid var(--line); }
  header h1 { font-size: 17px; margin: 0 12px 0 0; }
  header label { color: var(--muted); }
  select, input, button { font: inherit; padding: 4px 8px; border: 1px solid var(--line); border-radius: 6px;
                          background: #fff; }
  button { cursor: pointer; }
  #status { margin-left: auto; color: var(--muted); }
  #status.error { color: var(--b); }
  main { padding: 16px 20px; display: grid; gap: 16px; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); }
  .tiles { grid-column: 1 / -1; display: grid; gap: 12px; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); }
  .tile { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; }
  .tile b { display: block; font-size: 22px; }
  .tile span { color: var(--muted); }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; }
  .card.wide { grid-column: 1 / -1; }
  .card h2 { font-size: 14px; margin: 0 0 8px; }
  .legend { color: var(--muted); font-size: 12px; margin-left: 8px; font-weight: normal; }
  .legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 10px; }
  svg { width: 100%; height: auto; display: block; }
  svg text { font-size: 11px; fill: var(--muted); }
  svg text.v { fill: var(--fg); }
  .empty { fill: var(--muted); font-size: 13px; }
</style>
</head>
<body>
<header>
  <h1>ox-telemetry</h1>
  <label for="range">Range</label>
  <select id="range">
    <option value="3600">last hour</option>
    <option value="21600">last 6 hours</option>
    <option value="86400" selected>last 24 hours</option>
    <option value="604800">last 7 days</option>
    <option value="2592000">last 30 days</option>
    <option value="7776000">last 90 days</option>
    <option value="custom">custom…</option>
  </select>
  <span id="custom" hidden>
    <input id="from" type="datetime-local" aria-label="from"> &ndash;
    <input id="to" type="datetime-local" aria-label="to">
    <button id="apply" type="button">Apply</button>
  </span>
  <span id="status">loading…</span>
</header>
<main>
  <section class="tiles" id="tiles"></section>
  <section class="card wide"><h2>Events over time<span class="legend"><i style="background:var(--a)"></i>CLI events
    <i style="background:var(--b)"></i>errors<i style="background:var(--d)"></i>daemon events</span></h2>
    <svg id="chart-series" data-chart="series"></svg></section>
  <section class="card"><h2>Top commands <span class="legend">runs</span></h2>
    <svg id="chart-commands" data-chart="commands"></svg></section>
  <section class="card"><h2>Error rate per command</h2><svg id="chart-errors" data-chart="errors"></svg></section>
  <section class="card"><h2>Duration per command<span class="legend"><i style="background:var(--a)"></i>p50
    <i style="background:var(--d)"></i>p95</span></h2><svg id="chart-durations" data-chart="durations"></svg></section>
  <section class="card"><h2>CLI versions</h2><svg id="chart-versions" data-chart="versions"></svg></section>
  <section class="card"><h2>OS / architecture</h2><svg id="chart-platforms" data-chart="platforms"></svg></section>
  <section class="card"><h2>Agent types</h2><svg id="chart-agents" data-chart="agents"></svg></section>
  <section class="card"><h2>Daemon events by type</h2><svg id="chart-daemon" data-chart="daemon"></svg></section>
  <section class="card"><h2>Event types</h2><svg id="chart-types" data-chart="types"></svg></section>
</main>
<script>
"use strict";
const NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function el(parent, tag, attrs, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  parent.appendChild(node);
  return node;
}

function fmt(n) {
  if (n === null || n === undefined) return "\u2013";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function ms(n) {
  if (n === null || n === undefined) return "\u2013";
  return n >= 1000 ? (n / 1000).toFixed(n >= 10000 ? 0 : 1) + " s" : Math.round(n) + " ms";
}

// Drawn at the element's real width, so text keeps its size whatever the card's width.
function reset(svg, height) {
  svg.replaceChildren();
  const width = Math.max(280, Math.round(svg.getBoundingClientRect().width) || 600);
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  return width;
}

function finish(svg, marks) {
  if (marks === 0) {
    const width = reset(svg, 60);
    el(svg, "text", {x: width / 2, y: 34, "text-anchor": "middle", class: "empty"}, "no data in this range");
    svg.dataset.state = "empty";
  } else {
    svg.dataset.state = "drawn";
  }
  svg.dataset.marks = String(marks);
}

// Horizontal bars: rows of {label, values: [number...], text}; one colour per value.
function bars(svg, rows, colours, max) {
  const rowH = 14 * colours.length + 8, left = 150, right = 90;
  const W = reset(svg, Math.max(rows.length, 1) * rowH + 6);
  const top = max || Math.max(1e-9, ...rows.flatMap((r) => r.values.map((v) => v || 0)));
  let marks = 0;
  rows.forEach((row, i) => {
    const y = 4 + i * rowH;
    const label = el(svg, "text", {x: left - 8, y: y + rowH / 2 + 2, "text-anchor": "end"},
                     row.label.length > 24 ? row.label.slice(0, 23) + "…" : row.label);
    el(label, "title", {}, row.label);
    row.values.forEach((v, j) => {
      const width = Math.max(v ? 1 : 0, ((v || 0) / top) * (W - left - right));
      const bar = el(svg, "rect", {x: left, y: y + j * 14, width: width, height: 12, rx: 2,
                                   fill: colours[j], "data-value": String(v)});
      el(bar, "title", {}, row.label + ": " + row.texts[j]);
      el(svg, "text", {x: left + width + 6, y: y + j * 14 + 10, class: "v"}, row.texts[j]);
      marks += 1;
    });
  });
  finish(svg, marks);
}

function breakdown(svg, items) {
  bars(svg, items.map((it) => ({label: it.value, values: [it.count], texts: [fmt(it.count)]})), ["var(--a)"]);
}

function timeLabel(t, step, span) {
  const d = new Date(t);
  const day = d.toLocaleDateString(undefined, {month: "short", day: "numeric"});
  if (step >= 86400000) return day;
  const hm = d.toLocaleTimeString(undefined, {hour: "2-digit", minute: "2-digit"});
  return span > 86400000 ? day + " " + hm : hm;
}

function series(svg, data) {
  const points = data.series, H = 240, left = 48, right = 12, top = 10, bottom = 24;
  const W = reset(svg, H);
  const keys = [["events", "var(--a)"], ["errors", "var(--b)"], ["daemon", "var(--d)"]];
  const max = Math.max(0, ...points.flatMap((p) => keys.map(([k]) => p[k])));
  if (!points.length || max === 0) { finish(svg, 0); return; }
  const x = (i) => left + (points.length === 1 ? 0.5 : i / (points.length - 1)) * (W - left - right);
  const y = (v) => top + (1 - v / max) * (H - top - bottom);
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    el(svg, "line", {x1: left, x2: W - right, y1: y(v), y2: y(v), stroke: "#eef0f3"});
    el(svg, "text", {x: left - 6, y: y(v) + 4, "text-anchor": "end"}, fmt(Math.round(v)));
  }
  const ticks = Math.min(6, points.length);
  for (let i = 0; i < ticks; i++) {
    const idx = Math.round((i * (points.length - 1)) / Math.max(1, ticks - 1));
    const anchor = i === 0 ? "start" : i === ticks - 1 ? "end" : "middle";
    el(svg, "text", {x: x(idx), y: H - 6, "text-anchor": anchor},
       timeLabel(points[idx].t, data.step, data.to - data.from));
  }
  let marks = 0;
  for (const [key, colour] of keys) {
    if (!points.some((p) => p[key] > 0)) continue;
    const d = points.map((p, i) => (i ? "L" : "M") + x(i).toFixed(1) + " " + y(p[key]).toFixed(1)).join("");
    el(svg, "path", {d: d, fill: "none", stroke: colour, "stroke-width": 1.5, "stroke-linejoin": "round",
                     "data-series": key});
    marks += 1;
  }
  finish(svg, marks);
}

function tiles(data) {
  const t = data.totals, box = $("tiles");
  box.replaceChildren();
  const flagged = Object.values(t.flagged_times).reduce((a, b) => a + b, 0);
  const rate = t.command_runs ? ((100 * t.errors) / t.command_runs).toFixed(1) + "%" : "\u2013";
  for (const [value, label] of [[fmt(t.events), "CLI events"], [fmt(t.command_runs), "command runs"],
                                [rate, "command error rate"], [fmt(t.daemon_events), "daemon events"],
                                [fmt(flagged), "implausible timestamps"]]) {
    const tile = document.createElement("div");
    tile.className = "tile";
    const b = document.createElement("b");
    b.textContent = value;
    const span = document.createElement("span");
    span.textContent = label;
    tile.append(b, span);
    box.appendChild(tile);
  }
}

function draw(data) {
  tiles(data);
  series($("chart-series"), data);
  const cmds = data.commands;
  bars($("chart-commands"), cmds.map((c) => ({label: c.command, values: [c.runs], texts: [fmt(c.runs)]})),
       ["var(--a)"]);
  bars($("chart-errors"), cmds.map((c) => ({label: c.command, values: [c.error_rate],
       texts: [(100 * c.error_rate).toFixed(1) + "% of " + fmt(c.runs)]})), ["var(--b)"], 1);
  const timed = cmds.filter((c) => c.p50_ms !== null);
  bars($("chart-durations"), timed.map((c) => ({label: c.command, values: [c.p50_ms, c.p95_ms],
       texts: [ms(c.p50_ms), ms(c.p95_ms)]})), ["var(--a)", "var(--d)"]);
  breakdown($("chart-versions"), data.cli_versions);
  breakdown($("chart-platforms"), data.os_arch);
  breakdown($("chart-agents"), data.agent_types);
  breakdown($("chart-daemon"), data.daemon_events);
  breakdown($("chart-types"), data.event_types);
}

function currentRange() {
  const choice = $("range").value;
  if (choice !== "custom") {
    const to = Date.now();
    return {from: to - Number(choice) * 1000, to: to};
  }
  const from = new Date($("from").value).getTime(), to = new Date($("to").value).getTime();
  return {from: from, to: to};
}

let generation = 0;
async function load() {
  const range = currentRange(), status = $("status"), mine = ++generation;
  if (!(range.from < range.to)) {
    status.textContent = "choose a start before the end";
    status.className = "error";
    return;
  }
  const started = performance.now();
  status.className = "";
  status.textContent = "loading…";
  try {
    const response = await fetch("api/v1/stats?from=" + Math.floor(range.from) + "&to=" + Math.ceil(range.to),
                                 {credentials: "same-origin", cache: "no-store"});
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    if (mine !== generation) return;  // a newer request was made meanwhile
    draw(data);
    const took = Math.round(performance.now() - started);
    status.textContent = "updated " + new Date().toLocaleTimeString() + " · " + took + " ms";
    document.body.dataset.loaded = String(took);
  } catch (err) {
    status.textContent = "could not load: " + err.message;
    status.className = "error";
    document.body.dataset.failed = err.message;
  }
}

function toLocalInput(t) {
  const d = new Date(t - new Date(t).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

$("range").addEventListener("change", () => {
  const custom = $("range").value === "custom";
  $("custom").hidden = !custom;
  if (custom) {
    $("to").value = toLocalInput(Date.now());
    $("from").value = toLocalInput(Date.now() - 86400000);
  }
  load();
});
$("apply").addEventListener("click", load);
setInterval(() => { if ($("range").value !== "custom") load(); }, 60000);
load();
</script>
</body>
</html>
"""
