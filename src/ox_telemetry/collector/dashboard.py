"""The dashboard page (``GET /``) and its icon (``GET /favicon.ico``).

The page is one self-contained HTML document, plain JavaScript and inline SVG.
It loads nothing from elsewhere (the collector may have no internet) and holds
no data: it asks ``/api/v1/stats``, ``/api/v1/installs`` and ``/api/v1/errors``
for its numbers, with the page's filters (``version``, ``os``, ``command``),
which live in its URL so that a view can be shared. A panel whose API the
collector lacks (404) says "not available" and the rest still draw. It lives in
a Python module so that every install of the package carries it. Every value
from the data is inserted as text (``textContent``), never as markup.
"""

from __future__ import annotations

import struct

from starlette.requests import Request
from starlette.responses import Response


def _icon(size: int = 32) -> bytes:
    """A ``size``-pixel ICO: three white bars on blue, drawn here so that the package carries no binary file."""
    blue, white = bytes((0xD6, 0x67, 0x38, 0xFF)), bytes((0xFF, 0xFF, 0xFF, 0xFF))  # BGRA
    bars = ((6, 12), (14, 20), (22, 8))  # left edge, height, from the bottom
    pixels = b"".join(  # BMP rows go bottom-up
        white if any(left <= x < left + 5 and 5 <= y < 5 + height for left, height in bars) else blue
        for y in range(size) for x in range(size)
    )
    mask = bytes(size * size // 8)  # every pixel opaque
    image = struct.pack("<IiiHHIIiiII", 40, size, 2 * size, 1, 32, 0, len(pixels) + len(mask), 0, 0, 0, 0)
    image += pixels + mask
    return struct.pack("<HHHBBBBHHII", 0, 1, 1, size, size, 0, 0, 1, 32, len(image), 22) + image


FAVICON = _icon()


async def favicon(request: Request) -> Response:
    """``GET /favicon.ico``: browsers ask for it on every page; it holds no data, so it needs no read token."""
    return Response(FAVICON, media_type="image/x-icon", headers={"Cache-Control": "max-age=86400"})


PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ox-telemetry</title>
<link rel="icon" href="favicon.ico">
<style>
  :root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --bg: #f6f7f9; --card: #fff;
          --a: #3867d6; --b: #e55039; --c: #20bf6b; --d: #8854d0; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: var(--fg); background: var(--bg); }
  header { display: flex; flex-wrap: wrap; gap: 8px 12px; align-items: center; padding: 14px 20px;
           background: var(--card); border-bottom: 1px solid var(--line); }
  header h1 { font-size: 17px; margin: 0 12px 0 0; }
  header label { color: var(--muted); }
  select, input, button { font: inherit; padding: 4px 8px; border: 1px solid var(--line); border-radius: 6px;
                          background: #fff; max-width: 100%; }
  button { cursor: pointer; }
  #status { margin-left: auto; color: var(--muted); }
  #status.error { color: var(--b); }
  #filters { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; padding: 10px 20px 0; }
  #filters[hidden] { display: none; }
  .chip { display: inline-flex; align-items: center; gap: 4px; max-width: 100%; padding: 2px 4px 2px 10px;
          border-radius: 999px; background: #e8eefb; color: var(--fg); }
  .chip b { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .chip button { border: 0; background: none; padding: 0 6px; font-size: 16px; line-height: 1; color: var(--muted); }
  .link { border: 0; background: none; padding: 0; color: var(--a); text-align: left; overflow-wrap: anywhere; }
  main { padding: 16px 20px; display: grid; gap: 16px;
         grid-template-columns: repeat(auto-fill, minmax(min(440px, 100%), 1fr)); }
  .tiles { grid-column: 1 / -1; display: grid; gap: 12px; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); }
  .tile, .card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px;
                 min-width: 0; }
  .tile b { display: block; font-size: 22px; }
  .tile span { color: var(--muted); }
  .card.wide { grid-column: 1 / -1; }
  .card h2 { font-size: 14px; margin: 0 0 8px; }
  .legend { color: var(--muted); font-size: 12px; margin-left: 8px; font-weight: normal; }
  .legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 10px; }
  .legend button { font-size: 12px; }
  svg { width: 100%; height: auto; display: block; }
  svg text { font-size: 11px; fill: var(--muted); }
  svg text.v { fill: var(--fg); }
  svg [data-filter] { cursor: pointer; }
  svg rect.hit:hover, svg rect.hit:focus { fill: rgba(56, 103, 214, 0.08); outline: none; }
  svg path[data-filter]:hover { opacity: 0.8; }
  .empty { fill: var(--muted); font-size: 13px; }
  table { width: 100%; border-collapse: collapse; table-layout: fixed; }
  th, td { text-align: left; padding: 5px 6px; border-bottom: 1px solid var(--line); overflow-wrap: anywhere;
           vertical-align: top; }
  th { color: var(--muted); font-weight: normal; }
  th:first-child { width: 40%; }
  th.n, td.n { text-align: right; width: 4.5em; }
  p.note { color: var(--muted); margin: 8px 0; }
  @media (max-width: 600px) {
    header, main { padding-left: 10px; padding-right: 10px; }
    #filters { padding: 10px 10px 0; }
    main { gap: 10px; }
    .tiles { gap: 8px; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); }
    .card { padding: 10px; }
  }
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
<nav id="filters" aria-label="active filters" hidden></nav>
<main>
  <section class="tiles" id="tiles"></section>
  <section class="card wide"><h2>Version adoption <span class="legend" id="adoption-range">installations a day</span>
    <span class="legend" id="adoption-legend"></span></h2>
    <svg id="chart-adoption" data-chart="adoption"></svg></section>
  <section class="card wide"><h2>Events over time<span class="legend"><i style="background:var(--a)"></i>CLI events
    <i style="background:var(--b)"></i>errors<i style="background:var(--d)"></i>daemon events</span></h2>
    <svg id="chart-series" data-chart="series"></svg></section>
  <section class="card wide"><h2>Top errors <span class="legend">error, command and version, in this range</span></h2>
    <div id="errors" data-state="loading"></div></section>
  <section class="card"><h2>Top commands <span class="legend">runs</span></h2>
    <svg id="chart-commands" data-chart="commands"></svg></section>
  <section class="card"><h2>Error rate per command</h2><svg id="chart-errors" data-chart="errors"></svg></section>
  <section class="card"><h2>Duration per command<span class="legend"><i style="background:var(--a)"></i>p50
    <i style="background:var(--d)"></i>p95</span></h2><svg id="chart-durations" data-chart="durations"></svg></section>
  <section class="card"><h2>CLI versions <span class="legend">events</span></h2>
    <svg id="chart-versions" data-chart="versions"></svg></section>
  <section class="card"><h2>OS / architecture <span class="legend">events</span></h2>
    <svg id="chart-platforms" data-chart="platforms"></svg></section>
  <section class="card"><h2>Agent types</h2><svg id="chart-agents" data-chart="agents"></svg></section>
  <section class="card"><h2>Daemon events by type</h2><svg id="chart-daemon" data-chart="daemon"></svg></section>
  <section class="card"><h2>Event types</h2><svg id="chart-types" data-chart="types"></svg></section>
</main>
<script>
"use strict";
const NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const FILTERS = [["version", "version"], ["os", "OS"], ["command", "command"]];
const DAY = 86400000;
// Versions newest first take these, strongest first; older ones share the last, muted colour.
const VERSION_COLOURS = ["#1d4ed8", "#f97316", "#16a34a", "#9333ea", "#0891b2", "#ca8a04"];
const OLDER_COLOUR = "#c3c9d4";
const filters = {};

function el(parent, tag, attrs, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  parent.appendChild(node);
  return node;
}

function html(parent, tag, text, attrs) {
  const node = document.createElement(tag);
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

// Newest first: numeric parts compare as numbers, a release after its pre-releases (1.2.0 after 1.2.0-rc1),
// and anything that is not a version ("(unknown)", "dev") after every version.
function versionParts(v) {
  const m = /^v?(\d+(?:\.\d+)*)(.*)$/.exec(v);
  return m ? {nums: m[1].split(".").map(Number), rest: m[2]} : null;
}
function newerFirst(a, b) {
  const pa = versionParts(a), pb = versionParts(b);
  if (!pa || !pb) return pa ? -1 : pb ? 1 : a.localeCompare(b);
  for (let i = 0; i < Math.max(pa.nums.length, pb.nums.length); i++) {
    const d = (pb.nums[i] || 0) - (pa.nums[i] || 0);
    if (d) return d;
  }
  if (!pa.rest !== !pb.rest) return pa.rest ? 1 : -1;
  return pb.rest.localeCompare(pa.rest, undefined, {numeric: true});
}

// Drawn at the element's real width, so text keeps its size whatever the card's width.
function reset(svg, height) {
  svg.replaceChildren();
  const width = Math.max(240, Math.round(svg.getBoundingClientRect().width) || 600);
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  return width;
}

function message(svg, text, state) {
  const width = reset(svg, 60);
  el(svg, "text", {x: width / 2, y: 34, "text-anchor": "middle", class: "empty"}, text);
  svg.dataset.state = state;
  svg.dataset.marks = "0";
}

function finish(svg, marks) {
  if (marks === 0) {
    message(svg, "no data in this range", "empty");
  } else {
    svg.dataset.state = "drawn";
    svg.dataset.marks = String(marks);
  }
}

// Axis labels left to right: each that would touch the one kept before it is dropped, so a narrow chart keeps
// fewer labels rather than overlapping ones.
function thin(labels) {
  let right = -Infinity;
  for (const label of labels) {
    const box = label.getBBox();
    if (box.x < right + 8) label.remove();
    else right = box.x + box.width;
  }
}

function clickable(node, dim, key, label) {
  if (!dim || !key || key.startsWith("(")) return;  // "(other)", "(none)", "(unknown)" name no single value
  node.setAttribute("data-filter", dim);
  node.setAttribute("data-key", key);
  node.setAttribute("tabindex", "0");
  node.setAttribute("role", "button");
  node.setAttribute("aria-label", "show only " + dim + " " + key);
  el(node, "title", {}, label + " \u2013 click to show only this " + dim);
}

// Horizontal bars: rows of {label, values: [number...], texts}; one colour per value. With ``dim``, clicking a
// row filters the page by its label.
function bars(svg, rows, colours, max, dim) {
  const rowH = 14 * colours.length + 8, right = 86;
  const W = reset(svg, Math.max(rows.length, 1) * rowH + 6);
  const left = Math.min(150, Math.round(W * 0.34)), fits = Math.max(4, Math.floor((left - 8) / 6.2));
  const top = max || Math.max(1e-9, ...rows.flatMap((r) => r.values.map((v) => v || 0)));
  let marks = 0;
  rows.forEach((row, i) => {
    const y = 4 + i * rowH;
    const label = el(svg, "text", {x: left - 8, y: y + rowH / 2 + 2, "text-anchor": "end"},
                     row.label.length > fits ? row.label.slice(0, fits - 1) + "…" : row.label);
    el(label, "title", {}, row.label);
    row.values.forEach((v, j) => {
      const width = Math.max(v ? 1 : 0, ((v || 0) / top) * (W - left - right));
      const bar = el(svg, "rect", {x: left, y: y + j * 14, width: width, height: 12, rx: 2,
                                   fill: colours[j], "data-value": String(v)});
      el(bar, "title", {}, row.label + ": " + row.texts[j]);
      el(svg, "text", {x: left + width + 6, y: y + j * 14 + 10, class: "v"}, row.texts[j]);
      marks += 1;
    });
    const hit = el(svg, "rect", {x: 0, y: y - 2, width: W, height: rowH, fill: "transparent", class: "hit"});
    clickable(hit, dim, row.label, row.label + ": " + row.texts.join(", "));
    if (!hit.hasAttribute("data-filter")) hit.remove();
  });
  finish(svg, marks);
}

function breakdown(svg, items, dim) {
  bars(svg, items.map((it) => ({label: it.value, values: [it.count], texts: [fmt(it.count)]})), ["var(--a)"],
       0, dim);
}

function timeLabel(t, step, span) {
  const d = new Date(t);
  const day = d.toLocaleDateString(undefined, {month: "short", day: "numeric"});
  if (step >= DAY) return day;
  const hm = d.toLocaleTimeString(undefined, {hour: "2-digit", minute: "2-digit"});
  return span > DAY ? day + " " + hm : hm;
}

function dayLabel(day) {
  return new Date(day + "T00:00:00Z").toLocaleDateString(undefined, {month: "short", day: "numeric",
                                                                     timeZone: "UTC"});
}

// The frame of a time chart: horizontal grid lines with their values, and time labels thinned to fit.
function axes(svg, frame, max, count, label) {
  const {W, H, left, right, top, bottom} = frame;
  const y = (v) => top + (1 - v / max) * (H - top - bottom);
  const x = (i) => left + (count === 1 ? 0.5 : i / (count - 1)) * (W - left - right);
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    el(svg, "line", {x1: left, x2: W - right, y1: y(v), y2: y(v), stroke: "#eef0f3"});
    el(svg, "text", {x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "y-label"}, fmt(Math.round(v)));
  }
  const ticks = Math.min(8, count), labels = [];
  for (let i = 0; i < ticks; i++) {
    const idx = Math.round((i * (count - 1)) / Math.max(1, ticks - 1));
    const anchor = count === 1 ? "middle" : i === 0 ? "start" : i === ticks - 1 ? "end" : "middle";
    labels.push(el(svg, "text", {x: x(idx), y: H - 6, "text-anchor": anchor, class: "x-label"}, label(idx)));
  }
  thin(labels);
  return {x, y};
}

function series(svg, data) {
  const points = data.series;
  const W = reset(svg, 240), frame = {W, H: 240, left: 48, right: 12, top: 10, bottom: 24};
  const keys = [["events", "var(--a)"], ["errors", "var(--b)"], ["daemon", "var(--d)"]];
  const max = Math.max(0, ...points.flatMap((p) => keys.map(([k]) => p[k])));
  if (!points.length || max === 0) { finish(svg, 0); return; }
  const {x, y} = axes(svg, frame, max, points.length,
                      (i) => timeLabel(points[i].t, data.step, data.to - data.from));
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

// Installations a day by version, stacked: the oldest at the bottom, the newest on top in the strongest colour.
function adoption(svg, data) {
  const legend = $("adoption-legend");
  legend.replaceChildren();
  const days = data.daily.map((d) => d.day);
  const versions = data.series.map((s) => s.key || "(unknown)").sort(newerFirst);
  const byKey = new Map(data.series.map((s) => [s.key || "(unknown)",
                                                new Map(s.daily.map((d) => [d.day, d.installs]))]));
  const shown = versions.slice(0, VERSION_COLOURS.length);
  const counts = (v) => days.map((d) => byKey.get(v).get(d) || 0);
  const layers = shown.map((v, i) => ({key: v, colour: VERSION_COLOURS[i], counts: counts(v)}));
  if (versions.length > shown.length) {
    const older = versions.slice(shown.length).map(counts);
    layers.push({key: "older", colour: OLDER_COLOUR,
                 counts: days.map((_, i) => older.reduce((sum, c) => sum + c[i], 0))});
  }
  layers.reverse();  // stacked from the bottom: oldest first
  const totals = days.map((_, i) => layers.reduce((sum, l) => sum + l.counts[i], 0));
  const max = Math.max(0, ...totals);
  if (!days.length || max === 0) { finish(svg, 0); return; }
  const W = reset(svg, 220), frame = {W, H: 220, left: 48, right: 12, top: 10, bottom: 24};
  const {x, y} = axes(svg, frame, max, days.length, (i) => dayLabel(days[i]));
  // One day alone is drawn across the whole width.
  const xs = days.length === 1 ? [frame.left, W - frame.right] : days.map((_, i) => x(i));
  const at = (values) => (days.length === 1 ? [values[0], values[0]] : values);
  const base = days.map(() => 0);
  let marks = 0;
  for (const layer of layers) {
    const lower = at(base.slice()), upper = at(base.map((b, i) => b + layer.counts[i]));
    layer.counts.forEach((c, i) => { base[i] += c; });
    if (!layer.counts.some((c) => c > 0)) continue;
    const point = (v, i) => xs[i].toFixed(1) + " " + y(v).toFixed(1);
    const path = "M" + upper.map(point).join("L") + "L" + lower.map(point).reverse().join("L") + "Z";
    const area = el(svg, "path", {d: path, fill: layer.colour, "fill-opacity": 0.85, stroke: "#fff",
                                  "stroke-width": 0.5, "data-version": layer.key});
    if (layer.key !== "older") clickable(area, "version", layer.key, "version " + layer.key);
    else el(area, "title", {}, "older versions");
    marks += 1;
  }
  for (const layer of layers.slice().reverse()) {  // the legend reads newest first, as the stack from the top
    html(legend, "i", undefined, {style: "background:" + layer.colour});
    if (layer.key === "older" || layer.key.startsWith("(")) html(legend, "span", layer.key);
    else html(legend, "button", layer.key, {type: "button", class: "link", "data-filter": "version",
                                            "data-key": layer.key});
  }
  finish(svg, marks);
}

function tiles(data, installs) {
  const t = data.totals, box = $("tiles");
  box.replaceChildren();
  const flagged = Object.values(t.flagged_times).reduce((a, b) => a + b, 0);
  const rate = t.command_runs ? ((100 * t.errors) / t.command_runs).toFixed(1) + "%" : "\u2013";
  const rows = installs.map(([answer, label]) => [answer.ok ? fmt(answer.data.total) : "\u2013",
                                                  answer.ok ? label : label + " (" + answer.problem + ")",
                                                  answer.ok ? "installs" : "unavailable"]);
  rows.push([fmt(t.events), "CLI events"], [fmt(t.command_runs), "command runs"],
            [rate, "command error rate"], [fmt(t.daemon_events), "daemon events"],
            [fmt(flagged), "implausible timestamps"]);
  for (const [value, label, kind] of rows) {
    const tile = html(box, "div", undefined, {class: "tile"});
    if (kind) tile.dataset.kind = kind;
    html(tile, "b", value);
    html(tile, "span", label);
  }
}

function errorTable(answer) {
  const box = $("errors");
  box.replaceChildren();
  if (!answer.ok) {
    html(box, "p", "Top errors: " + answer.problem + ".", {class: "note"});
    box.dataset.state = "unavailable";
    return;
  }
  if (!answer.data.errors.length) {
    html(box, "p", "no errors in this range", {class: "note"});
    box.dataset.state = "empty";
    return;
  }
  const table = html(box, "table");
  const head = html(html(table, "thead"), "tr");
  for (const [name, cls] of [["error", ""], ["command", ""], ["version", ""], ["count", "n"]]) {
    html(head, "th", name, cls ? {class: cls} : {});
  }
  const body = html(table, "tbody");
  for (const row of answer.data.errors) {
    const tr = html(body, "tr");
    html(tr, "td", row.error_code || "(none)");
    for (const [dim, value] of [["command", row.command], ["version", row.version]]) {
      const td = html(tr, "td");
      if (value && !filters[dim]) html(td, "button", value, {type: "button", class: "link", "data-filter": dim,
                                                             "data-key": value});
      else td.textContent = value || "(none)";
    }
    html(tr, "td", fmt(row.count), {class: "n"});
  }
  box.dataset.state = "drawn";
  box.dataset.rows = String(answer.data.errors.length);
}

function draw(data, installs, adopted, errors) {
  tiles(data, installs);
  if (adopted.ok) adoption($("chart-adoption"), adopted.data);
  else { $("adoption-legend").replaceChildren(); message($("chart-adoption"), adopted.problem, "unavailable"); }
  series($("chart-series"), data);
  errorTable(errors);
  const cmds = data.commands;
  bars($("chart-commands"), cmds.map((c) => ({label: c.command, values: [c.runs], texts: [fmt(c.runs)]})),
       ["var(--a)"], 0, "command");
  bars($("chart-errors"), cmds.map((c) => ({label: c.command, values: [c.error_rate],
       texts: [(100 * c.error_rate).toFixed(1) + "% of " + fmt(c.runs)]})), ["var(--b)"], 1, "command");
  const timed = cmds.filter((c) => c.p50_ms !== null);
  bars($("chart-durations"), timed.map((c) => ({label: c.command, values: [c.p50_ms, c.p95_ms],
       texts: [ms(c.p50_ms), ms(c.p95_ms)]})), ["var(--a)", "var(--d)"], 0, "command");
  breakdown($("chart-versions"), data.cli_versions, "version");
  breakdown($("chart-platforms"), data.os_arch, "os");
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

// The page's own URL keeps the range and the filters, so a view can be shared; the token never goes there.
function saveUrl() {
  const q = new URLSearchParams();
  for (const [dim] of FILTERS) if (filters[dim]) q.set(dim, filters[dim]);
  const choice = $("range").value;
  if (choice === "custom") {
    const range = currentRange();
    if (range.from < range.to) { q.set("range", "custom"); q.set("from", range.from); q.set("to", range.to); }
  } else if (choice !== "86400") {
    q.set("range", choice);
  }
  const text = q.toString();
  history.replaceState(null, "", location.pathname + (text ? "?" + text : ""));
}

function restoreUrl() {
  const q = new URLSearchParams(location.search);
  for (const [dim] of FILTERS) if (q.get(dim)) filters[dim] = q.get(dim);
  const choice = q.get("range");
  if (choice === "custom" && Number(q.get("from")) < Number(q.get("to"))) {
    $("range").value = "custom";
    $("custom").hidden = false;
    $("from").value = toLocalInput(Number(q.get("from")));
    $("to").value = toLocalInput(Number(q.get("to")));
  } else if (choice && [...$("range").options].some((o) => o.value === choice)) {
    $("range").value = choice;
  }
}

function chips() {
  const box = $("filters");
  box.replaceChildren();
  const active = FILTERS.filter(([dim]) => filters[dim]);
  box.hidden = !active.length;
  for (const [dim, name] of active) {
    const chip = html(box, "span", undefined, {class: "chip", "data-dim": dim});
    html(chip, "span", name + ":");
    html(chip, "b", filters[dim], {title: filters[dim]});
    html(chip, "button", "\u00d7", {type: "button", "data-clear": dim, "aria-label": "clear the " + name + " filter",
                                     title: "clear the " + name + " filter"});
  }
  if (active.length > 1) html(box, "button", "clear all", {type: "button", "data-clear": "all"});
}

function setFilter(dim, key) {
  if (dim === "all") for (const [d] of FILTERS) delete filters[d];
  else if (key === undefined) delete filters[dim];
  else filters[dim] = key;
  chips();
  saveUrl();
  load();
}

function query(from, to, extra) {
  const q = new URLSearchParams({from: String(Math.floor(from)), to: String(Math.ceil(to))});
  for (const [dim] of FILTERS) if (filters[dim]) q.set(dim, filters[dim]);
  for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
  return q.toString();
}

// {ok, data} or {ok: false, problem}: a collector without this API (404) makes its panels say so, not fail.
async function ask(path) {
  try {
    const response = await fetch(path, {credentials: "same-origin", cache: "no-store"});
    if (response.status === 404) return {ok: false, problem: "not available on this collector"};
    const data = await response.json();
    if (!response.ok) return {ok: false, problem: "could not load: " + (data.error || response.statusText)};
    return {ok: true, data: data};
  } catch (err) {
    return {ok: false, problem: "could not load: " + err.message};
  }
}

let generation = 0;
async function load() {
  const range = currentRange(), status = $("status"), mine = ++generation;
  if (!(range.from < range.to)) {
    status.textContent = "choose a start before the end";
    status.className = "error";
    return;
  }
  const started = performance.now(), now = Date.now(), midnight = new Date(now).setHours(0, 0, 0, 0);
  // Adoption needs days: at least the last 28, more when the range is longer.
  const adoptFrom = Math.min(range.from, range.to - 28 * DAY);
  status.className = "";
  status.textContent = "loading…";
  const [stats, today, week, month, adopted, errors] = await Promise.all([
    ask("api/v1/stats?" + query(range.from, range.to)),
    ask("api/v1/installs?" + query(midnight, now)),
    ask("api/v1/installs?" + query(now - 7 * DAY, now)),
    ask("api/v1/installs?" + query(now - 28 * DAY, now)),
    ask("api/v1/installs?" + query(adoptFrom, range.to, {by: "version"})),
    ask("api/v1/errors?" + query(range.from, range.to, {limit: "50"})),
  ]);
  if (mine !== generation) return;  // a newer request was made meanwhile
  if (!stats.ok) {
    status.textContent = stats.problem;
    status.className = "error";
    document.body.dataset.failed = stats.problem;
    return;
  }
  draw(stats.data, [[today, "installations today"], [week, "installations, 7 days"],
                    [month, "installations, 28 days"]], adopted, errors);
  $("adoption-range").textContent = "installations a day, last " + Math.round((range.to - adoptFrom) / DAY) + " days";
  const took = Math.round(performance.now() - started);
  status.textContent = "updated " + new Date().toLocaleTimeString() + " · " + took + " ms";
  document.body.dataset.loaded = String(took);
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
    $("from").value = toLocalInput(Date.now() - DAY);
  }
  saveUrl();
  load();
});
$("apply").addEventListener("click", () => { saveUrl(); load(); });
// One listener for every bar, area, legend entry, table cell and chip that filters or clears a filter.
document.addEventListener("click", (event) => {
  const target = event.target.closest("[data-filter], [data-clear]");
  if (!target) return;
  if (target.dataset.clear) setFilter(target.dataset.clear);
  else setFilter(target.dataset.filter, target.dataset.key);
});
document.addEventListener("keydown", (event) => {
  const target = event.target.closest && event.target.closest("svg [data-filter]");
  if (target && (event.key === "Enter" || event.key === " ")) {
    event.preventDefault();
    setFilter(target.dataset.filter, target.dataset.key);
  }
});
setInterval(() => { if ($("range").value !== "custom") load(); }, 60000);
restoreUrl();
chips();
load();
</script>
</body>
</html>
"""
