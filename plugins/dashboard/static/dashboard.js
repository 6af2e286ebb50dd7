/* The cluster's dashboard: the box of racks, the lamp, the Warble feed, the leaderboard and the totals,
   kept live from the server's WebSocket (/dashboard/live: a snapshot, then batched updates).

   Messages are queued as they arrive and applied once per animation frame, so a burst of updates
   costs one layout. Everything that comes from the network is written with textContent, never as HTML.
   Tests and the bench read `window.pidaemonDashboard` and the data-* attributes; nothing else is API. */
"use strict";
(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const MAX_FEED = 50;
  const HISTORY_SECONDS = 600;
  const RECONNECT_MIN_MS = 500, RECONNECT_MAX_MS = 5000;
  const PANEL_REFRESH_MS = 5000;

  // Scales: viridis (CPU, memory) and cividis (temperature), ten stops each.
  const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
  const CIVIDIS = ["#00224e", "#123570", "#3b496c", "#575d6d", "#707173", "#8a8779", "#a69d75", "#c4b56c", "#e4cf5b", "#fee838"];
  const READINGS = {
    state: {label: "state"},
    cpu: {label: "CPU", field: "cpu", ramp: VIRIDIS, min: 0, max: 100, unit: " %"},
    temp: {label: "temperature", field: "temp", ramp: CIVIDIS, min: 30, max: 85, unit: " °C"},
    mem: {label: "memory", field: "mem", ramp: VIRIDIS, min: 0, max: 100, unit: " %"},
    warble: {label: "running a Warble"},
  };
  const STATES = ["online", "unhealthy", "offline", "unknown"];
  const SPARKS = [
    {field: "cpu", label: "CPU", unit: " %", colour: "#56b4e9", min: 0, max: 100},
    {field: "temp", label: "temperature", unit: " °C", colour: "#e69f00", min: null, max: null},
    {field: "mem", label: "memory", unit: " %", colour: "#cc79a7", min: 0, max: 100},
  ];

  /* The read-only hook for tests and the bench. */
  const hook = window.pidaemonDashboard = {
    ready: false,            // a snapshot has been drawn
    connected: false,        // the WebSocket is open and its snapshot drawn
    firstPictureAt: null,    // performance.now() (ms since navigation start) once the first snapshot was painted
    lastMessageAt: null,     // Date.now() of the last message received
    lastRenderAt: null,      // Date.now() at the end of the last frame that applied messages
    messages: 0, snapshots: 0, renders: 0, reconnects: 0, snapshotBytes: 0,
    nodes: 0, placed: 0, unplaced: 0,
    reading: "state",
  };

  const $ = (id) => document.getElementById(id);
  const el = (tag, props, ...children) => {
    const node = document.createElement(tag);
    if (props) for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "title") node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  };
  const svgEl = (tag, attrs) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  };
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  const str = (v) => (typeof v === "string" ? v : v === null || v === undefined ? "" : String(v));
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  const fmt = (v, digits = 0) => (num(v) === null ? "–" : v.toFixed(digits));
  const clock = (t) => (num(t) === null ? "" : new Date(t * 1000).toLocaleTimeString([], {hour12: false}));
  const ago = (t) => {
    if (num(t) === null) return "";
    const s = Math.max(0, Date.now() / 1000 - t);
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 172800) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} days ago`;
  };

  function hexToRgb(hex) {
    const n = parseInt(hex.slice(1), 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }
  const RAMPS = new Map([[VIRIDIS, VIRIDIS.map(hexToRgb)], [CIVIDIS, CIVIDIS.map(hexToRgb)]]);
  function rampColour(ramp, t) {
    const stops = RAMPS.get(ramp);
    const x = clamp(t, 0, 1) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
    const c = stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * f));
    return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
  }

  /* ---- the model ---- */
  const model = {
    server: "",
    layout: null,            // {racks: [...], slots: n}
    layoutKey: "",
    nodes: new Map(),        // id -> NodeView
    lamp: null,
    feed: [],                // newest last
    leaderboard: null,
    totals: null,
    history: [],             // oldest first
  };
  const view = {
    reading: "state",
    slots: new Map(),        // "r-b-s" -> cell element
    cellOf: new Map(),       // node id -> cell element (a slot or a tray cell)
    dirty: new Set(),        // node ids to redraw
    lampDirty: false, feedDirty: false, boardDirty: false, totalsDirty: false, historyDirty: false,
    newFeed: new Set(),
    cols: 10,
  };

  /* ---- the box: racks, banks, slots ---- */
  function buildBox(layout) {
    const racks = $("racks");
    racks.textContent = "";
    view.slots.clear();
    const slots = layout.slots;
    view.cols = slots <= 10 ? slots : slots % 10 === 0 || slots > 60 ? 10 : Math.ceil(Math.sqrt(slots * 2));
    racks.style.setProperty("--cols", view.cols);
    layout.racks.forEach((banks, r) => {
      const rack = el("div", {class: "rack", "data-rack": r + 1}, el("h3", {text: `rack ${r + 1}`}));
      for (let b = 1; b <= banks; b++) {
        const grid = el("div", {class: "slots"});
        for (let s = 1; s <= slots; s++) {
          const place = `${r + 1}-${b}-${s}`;
          const cell = el("div", {class: "cell", "data-place": place});
          view.slots.set(place, cell);
          grid.append(cell);
        }
        rack.append(el("div", {class: "bank", "data-bank": `${r + 1}-${b}`},
          el("span", {class: "bank-label", text: `B${b}`}), grid));
      }
      racks.append(rack);
    });
    view.cellOf.clear();
    $("tray").textContent = "";
    for (const id of model.nodes.keys()) view.dirty.add(id);
    sizeCells();
  }

  function validLayout(layout) {
    if (!layout || typeof layout !== "object") return null;
    const racks = Array.isArray(layout.racks) ? layout.racks.filter((n) => Number.isInteger(n) && n > 0 && n <= 100) : [];
    const slots = Number.isInteger(layout.slots) && layout.slots > 0 && layout.slots <= 500 ? layout.slots : 0;
    return racks.length && slots ? {racks: racks.slice(0, 20), slots} : null;
  }

  function placeKey(v) {
    const p = v.place;
    if (!Array.isArray(p) || p.length !== 3 || !p.every(Number.isInteger)) return null;
    const key = p.join("-");
    return view.slots.has(key) ? key : null;
  }

  function release(id) {
    const cell = view.cellOf.get(id);
    if (!cell) return;
    view.cellOf.delete(id);
    if (cell.parentElement === $("tray")) { cell.remove(); return; }
    for (const a of ["data-node", "data-state", "data-reading", "data-running", "title", "aria-label", "role", "tabindex"]) cell.removeAttribute(a);
    cell.style.backgroundColor = "";
    cell.classList.remove("selected");
  }

  function cellFor(id, v) {
    const key = placeKey(v);
    const want = key ? view.slots.get(key) : null;
    const have = view.cellOf.get(id);
    if (want && have === want) return want;
    if (!want && have && have.parentElement === $("tray")) return have;
    release(id);
    let cell = want && !want.hasAttribute("data-node") ? want : null;
    if (!cell) {
      cell = el("div", {class: "cell", text: id});
      insertSorted($("tray"), cell, id);
    }
    cell.setAttribute("data-node", id);
    cell.setAttribute("role", "button");
    cell.tabIndex = 0;
    if (panel.id === id) cell.classList.add("selected");
    view.cellOf.set(id, cell);
    return cell;
  }

  function insertSorted(parent, cell, id) {
    for (const other of parent.children) {
      if (other.getAttribute("data-node") > id) { parent.insertBefore(cell, other); return; }
    }
    parent.append(cell);
  }

  /* What a node's cell shows under the chosen reading: [data-reading, inline colour or ""]. */
  function readingOf(v) {
    const state = STATES.includes(v.state) ? v.state : "unknown";
    const reading = READINGS[view.reading];
    if (view.reading === "state") return [state, ""];
    if (state === "offline") return ["offline", ""];
    if (view.reading === "warble") return [v.warble ? "warble" : "idle", ""];
    const value = num(v[reading.field]);
    if (value === null) return ["nodata", ""];
    return [view.reading, rampColour(reading.ramp, (value - reading.min) / (reading.max - reading.min))];
  }

  function describe(v) {
    const parts = [v.id, STATES.includes(v.state) ? v.state : "unknown"];
    if (num(v.cpu) !== null) parts.push(`CPU ${fmt(v.cpu)} %`);
    if (num(v.temp) !== null) parts.push(`${fmt(v.temp, 1)} °C`);
    if (num(v.mem) !== null) parts.push(`memory ${fmt(v.mem)} %`);
    if (v.warble) parts.push(`running Warble ${str(v.warble)}`);
    return parts.join(" · ");
  }

  function drawNode(id) {
    const v = model.nodes.get(id);
    if (!v) { release(id); return; }
    const cell = cellFor(id, v);
    const [reading, colour] = readingOf(v);
    cell.setAttribute("data-state", STATES.includes(v.state) ? v.state : "unknown");
    cell.setAttribute("data-reading", reading);
    cell.style.backgroundColor = colour;
    cell.toggleAttribute("data-running", Boolean(v.warble) && v.state !== "offline");
    const text = describe(v);
    cell.title = text;
    cell.setAttribute("aria-label", text);
  }

  /* ---- the lamp ---- */
  function lampColour(pixel, brightness) {
    const p = Array.isArray(pixel) ? pixel : [];
    const part = (i) => clamp(num(p[i]) ?? 0, 0, 255);
    const w = part(3);
    return [0, 1, 2].map((i) => Math.round(clamp(part(i) + w, 0, 255) * brightness));
  }

  function drawLamp() {
    const lamp = model.lamp && typeof model.lamp === "object" ? model.lamp : null;
    const pixels = lamp && Array.isArray(lamp.pixels) ? lamp.pixels.slice(0, 1024) : [];
    const brightness = lamp ? clamp(num(lamp.brightness) ?? 1, 0, 1) : 0;
    const holder = $("lamp-pixels");
    const count = lamp ? pixels.length : Math.max(holder.children.length, 24);
    while (holder.children.length < count) holder.append(el("span", {class: "pixel", "data-pixel": holder.children.length}));
    while (holder.children.length > count) holder.lastChild.remove();
    let lit = 0;
    for (let i = 0; i < count; i++) {
      const rgb = lamp ? lampColour(pixels[i], brightness) : [0, 0, 0];
      const px = holder.children[i];
      const css = `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
      px.style.backgroundColor = css;
      px.setAttribute("data-rgb", rgb.join(","));
      const on = rgb.some((c) => c > 0);
      px.classList.toggle("lit", on);
      if (on) { px.style.setProperty("--glow", css); lit++; } else px.style.removeProperty("--glow");
    }
    const effect = lamp && typeof lamp.effect === "string" ? lamp.effect : "";
    $("lamp").setAttribute("data-effect", effect);
    $("lamp").setAttribute("data-on", lamp && lamp.on ? "true" : "false");
    $("lamp-caption").textContent = !lamp ? "lamp: no state yet"
      : `lamp: ${count} pixels, ${lit} lit · brightness ${Math.round(brightness * 100)} %` + (effect ? ` · effect ${effect}` : "")
        + (lamp.on === false ? " · off" : "");
  }

  /* ---- the feed ---- */
  function feedItemElement(item) {
    const status = str(item.status) || "?";
    const error = item.error && typeof item.error === "object" ? str(item.error.message) : str(item.error);
    const output = Array.isArray(item.output) ? item.output.slice(0, 20).map(str).join("\n") : "";
    const elapsed = num(item.elapsed);
    return el("li", {"data-job": str(item.id), "data-status": status},
      el("div", {class: "meta"},
        el("span", {class: `status ${status.replace(/[^a-z_]/g, "")}`, text: status}),
        el("span", {class: "who", text: str(item.user) || "anonymous"}),
        item.node ? el("span", {}, "on ", el("span", {class: "node", text: str(item.node)})) : null,
        elapsed !== null ? el("span", {text: elapsed < 1 ? `${Math.round(elapsed * 1000)} ms` : `${elapsed.toFixed(2)} s`}) : null,
        el("span", {text: clock(num(item.time))})),
      el("pre", {class: "source", text: str(item.source)}),
      output ? el("pre", {class: "output", text: output}) : null,
      error ? el("pre", {class: "error", text: error}) : null);
  }

  function drawFeed() {
    const list = $("feed");
    list.textContent = "";
    if (!model.feed.length) list.append(el("li", {class: "empty", text: "no Warble yet"}));
    for (let i = model.feed.length - 1; i >= 0; i--) {
      const item = model.feed[i];
      const li = feedItemElement(item);
      if (view.newFeed.has(item.id)) li.classList.add("new");
      list.append(li);
    }
    view.newFeed.clear();
    $("feed-count").textContent = model.feed.length ? String(model.feed.length) : "";
  }

  function addFeed(items, fresh) {
    if (!Array.isArray(items)) return;
    for (const item of items) {
      if (!item || typeof item !== "object") continue;
      const at = model.feed.findIndex((x) => x.id === item.id);
      if (at >= 0) model.feed.splice(at, 1);
      model.feed.push(item);
      if (fresh) view.newFeed.add(item.id);
    }
    if (model.feed.length > MAX_FEED) model.feed.splice(0, model.feed.length - MAX_FEED);
    view.feedDirty = true;
  }

  /* ---- leaderboard, totals, plots ---- */
  function drawLeaderboard() {
    const list = $("leaderboard");
    list.textContent = "";
    const rows = model.leaderboard && Array.isArray(model.leaderboard.pi_digits) ? model.leaderboard.pi_digits : [];
    if (!rows.length) { list.append(el("li", {class: "empty", text: "nobody yet"})); return; }
    for (const row of rows.slice(0, 10)) {
      if (!row || typeof row !== "object") continue;
      list.append(el("li", {title: row.time ? `job ${str(row.job)}, ${clock(num(row.time))}` : null},
        el("span", {class: "user", text: str(row.user)}),
        el("span", {class: "digits", text: num(row.digits) !== null ? row.digits.toLocaleString("en") : "?"})));
    }
  }

  function drawTotals() {
    const t = model.totals && typeof model.totals === "object" ? model.totals : {};
    const counts = t.nodes && typeof t.nodes === "object" ? t.nodes : {};
    const dl = $("counts");
    dl.textContent = "";
    for (const s of STATES) {
      dl.append(el("div", {"data-total": s},
        el("dt", {}, el("span", {class: `swatch ${s === "offline" ? "offline" : ""}`, style: `background-color: var(--${s})`}), s),
        el("dd", {text: String(num(counts[s]) ?? 0)})));
    }
    const per = num(t.warbles_per_s);
    for (const [key, label, value] of [["queue", "queued", num(t.queue)], ["running", "running", num(t.running)],
      ["warbles_per_s", "Warbles / s (last 10 s)", per === null ? null : per < 10 ? per.toFixed(1) : per.toFixed(0)],
      ["done", "done", num(t.done)]]) {
      const title = key === "warbles_per_s" ? "Warbles done a second, counted over the last 10 s" : null;
      dl.append(el("div", {"data-total": key, title},
        el("dt", {text: label}), el("dd", {text: value === null ? "–" : String(value)})));
    }
  }

  function drawPlot(id, field, digits) {
    const figure = $(id);
    const svg = figure.querySelector("svg");
    svg.textContent = "";
    const now = model.history.length ? num(model.history[model.history.length - 1].time) : null;
    const points = model.history.filter((p) => num(p[field]) !== null && num(p.time) !== null);
    const last = points.length ? points[points.length - 1][field] : null;
    figure.querySelector("b").textContent = last === null ? "–" : last.toFixed(digits);
    if (points.length < 2 || now === null) return;
    const max = Math.max(1, ...points.map((p) => p[field]));
    const x = (t) => (200 * (1 - (now - t) / HISTORY_SECONDS)).toFixed(1);
    const y = (v) => (38 - 36 * (v / max)).toFixed(1);
    const line = points.map((p) => `${x(p.time)},${y(p[field])}`).join(" ");
    svg.append(svgEl("polygon", {points: `${x(points[0].time)},40 ${line} ${x(points[points.length - 1].time)},40`}));
    svg.append(svgEl("polyline", {points: line}));
    svg.setAttribute("aria-label", `${field}: last ${last}, highest ${max} over the last ${HISTORY_SECONDS / 60} minutes`);
  }

  /* What the plots span and how often they get a point (the server's `history_interval`, 5 s unless set). */
  function drawPlotsNote() {
    let step = null;
    for (let i = 1; i < model.history.length; i++) {
      const gap = model.history[i].time - model.history[i - 1].time;
      if (gap > 0 && (step === null || gap < step)) step = gap;
    }
    const every = step === null ? "" : step < 90 ? `, a point every ${Math.round(step)} s` : `, a point every ${Math.round(step / 60)} min`;
    $("plots-note").textContent = `plots: last ${HISTORY_SECONDS / 60} min${every} (latest beside the name)`;
  }

  function addHistory(points) {
    if (!Array.isArray(points)) return;
    const seen = new Set(model.history.map((p) => p.time));
    for (const p of points) if (p && typeof p === "object" && num(p.time) !== null && !seen.has(p.time)) model.history.push(p);
    model.history.sort((a, b) => a.time - b.time);
    const newest = model.history.length ? model.history[model.history.length - 1].time : 0;
    while (model.history.length && model.history[0].time < newest - HISTORY_SECONDS) model.history.shift();
    view.historyDirty = true;
  }

  /* ---- the legend and the reading selector ---- */
  function drawLegend() {
    const legend = $("legend");
    legend.textContent = "";
    const swatch = (name, label, cls = "") => el("li", {"data-legend": name},
      el("span", {class: `swatch ${cls}`, style: cls ? null : `background-color: var(--${name})`}), label);
    const reading = READINGS[view.reading];
    if (view.reading === "state") {
      for (const s of STATES) legend.append(swatch(s, s, s === "offline" ? "offline" : ""));
      legend.append(el("li", {"data-legend": "running"}, el("span", {class: "swatch running-mark"}), "running a Warble"));
    } else if (view.reading === "warble") {
      legend.append(swatch("warble", "running a Warble"), swatch("idle", "idle"), swatch("offline", "offline", "offline"));
    } else {
      legend.append(el("li", {"data-legend": "scale"},
        el("span", {class: "ends", text: `${reading.min}${reading.unit}`}),
        el("span", {class: "ramp", style: `background: linear-gradient(90deg, ${reading.ramp.join(", ")})`}),
        el("span", {class: "ends", text: `${reading.max}${reading.unit}`})));
      legend.append(swatch("nodata", "no reading"), swatch("offline", "offline", "offline"));
    }
    legend.append(el("li", {"data-legend": "empty"}, el("span", {class: "swatch", style: "background-color: var(--empty); border: 1px solid #2c3540"}), "empty slot"));
  }

  function setReading(name) {
    if (!READINGS[name]) name = "state";
    view.reading = hook.reading = name;
    $("reading").value = name;
    document.body.setAttribute("data-reading", name);
    drawLegend();
    for (const id of model.nodes.keys()) view.dirty.add(id);
    schedule();
  }

  /* ---- sizing the cells to the screen ---- */
  function sizeCells() {
    const stage = $("stage"), box = $("box");
    const root = document.documentElement;
    const measure = (c) => { root.style.setProperty("--cell", `${c}px`); return [box.offsetWidth, box.offsetHeight]; };
    const [w1, h1] = measure(10), [w2, h2] = measure(20);
    const bw = (w2 - w1) / 10, bh = (h2 - h1) / 10, aw = w1 - 10 * bw, ah = h1 - 10 * bh;
    const tray = $("tray-section");
    const stacked = window.matchMedia("(max-width: 900px)").matches;
    const width = stage.clientWidth;
    const height = stacked ? Infinity : stage.clientHeight - (tray.hidden ? 0 : tray.offsetHeight + 10);
    const cell = Math.floor(clamp(Math.min((width - aw) / bw, (height - ah) / bh), 6, 48));
    root.style.setProperty("--cell", `${cell}px`);
  }

  /* ---- messages go into the model as they arrive; the page is redrawn once per frame ---- */
  let frameAsked = false;
  function schedule() {
    if (!frameAsked) { frameAsked = true; requestAnimationFrame(frame); }
  }

  function applySnapshot(m) {
    model.server = str(m.server);
    const layout = validLayout(m.layout) || {racks: [5, 5, 5, 6], slots: 50};
    const key = JSON.stringify(layout);
    for (const id of model.nodes.keys()) view.dirty.add(id);  // so that those gone are released
    model.nodes.clear();
    if (key !== model.layoutKey) { model.layout = layout; model.layoutKey = key; buildBox(layout); }
    mergeNodes(m.nodes);
    model.lamp = m.lamp ?? null; view.lampDirty = true;
    model.feed = []; addFeed(m.feed, false);
    model.leaderboard = m.leaderboard ?? null; view.boardDirty = true;
    model.totals = m.totals ?? null; view.totalsDirty = true;
    model.history = []; addHistory(m.history);
    $("server-name").textContent = model.server ? `served by ${model.server}` : "";
  }

  function mergeNodes(nodes) {
    if (!nodes || typeof nodes !== "object") return;
    for (const [id, v] of Object.entries(nodes)) {
      if (v && typeof v === "object") model.nodes.set(id, {...v, id});
      else model.nodes.delete(id);
      view.dirty.add(id);
    }
  }

  function applyUpdate(m) {
    mergeNodes(m.nodes);
    if ("lamp" in m) { model.lamp = m.lamp; view.lampDirty = true; }
    if ("feed" in m) addFeed(m.feed, true);
    if ("leaderboard" in m) { model.leaderboard = m.leaderboard; view.boardDirty = true; }
    if ("totals" in m) { model.totals = m.totals; view.totalsDirty = true; }
    if ("history" in m) addHistory(m.history);
  }

  let snapshotSeen = false, snapshotToDraw = false, changed = false;
  function receive(m) {
    if (m.type === "snapshot") { applySnapshot(m); snapshotSeen = snapshotToDraw = true; }
    else if (m.type === "update" && snapshotSeen) applyUpdate(m);
    else return;
    changed = true;
    schedule();
  }

  function frame() {
    frameAsked = false;
    const snapshot = snapshotToDraw;
    snapshotToDraw = false;
    const trayBefore = $("tray").children.length;
    const panelDirty = panel.id !== null && view.dirty.has(panel.id);
    for (const id of view.dirty) drawNode(id);
    view.dirty.clear();
    if (view.lampDirty) { drawLamp(); view.lampDirty = false; }
    if (view.feedDirty) { drawFeed(); view.feedDirty = false; }
    if (view.boardDirty) { drawLeaderboard(); view.boardDirty = false; }
    if (view.totalsDirty) { drawTotals(); view.totalsDirty = false; }
    if (view.historyDirty) {
      drawPlot("plot-warbles", "warbles_per_s", 1); drawPlot("plot-queue", "queue", 0); drawPlot("plot-online", "online", 0);
      drawPlotsNote();
      view.historyDirty = false;
    }
    const trayCount = $("tray").children.length;
    $("tray-count").textContent = String(trayCount);
    if ((trayCount === 0) !== $("tray-section").hidden || (trayBefore === 0) !== (trayCount === 0)) {
      $("tray-section").hidden = trayCount === 0;
      sizeCells();
    }
    hook.nodes = model.nodes.size;
    hook.unplaced = trayCount;
    hook.placed = view.cellOf.size - trayCount;
    if (changed) { hook.renders++; hook.lastRenderAt = Date.now(); changed = false; }
    if (panelDirty) drawPanelNow();
    if (snapshot) {
      hook.snapshots++;
      setConnected(socket !== null && socket.readyState === WebSocket.OPEN);
      if (!hook.ready) {
        hook.ready = true;
        requestAnimationFrame(() => { hook.firstPictureAt = performance.now(); });  // the frame above is painted
      }
    }
  }

  /* ---- the connection ---- */
  let socket = null, attempt = 0, retryTimer = null;

  function setConnected(on) {
    hook.connected = on;
    document.body.setAttribute("data-connected", on ? "true" : "false");
    $("connection").textContent = on ? "live" : socket ? "connecting…" : "disconnected";
    $("banner").hidden = on || attempt === 0;
  }

  function connect() {
    retryTimer = null;
    const url = new URL("/dashboard/live", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try { ws = new WebSocket(url); } catch (e) { retry(); return; }
    socket = ws;
    ws.onmessage = (event) => {
      if (ws !== socket) return;
      let m;
      try { m = JSON.parse(event.data); } catch (e) { console.warn("dashboard: a message that is not JSON", e); return; }
      if (!m || typeof m !== "object") return;
      hook.messages++;
      hook.lastMessageAt = Date.now();
      if (m.type === "snapshot") { attempt = 0; hook.snapshotBytes = event.data.length; }
      receive(m);
    };
    ws.onclose = () => {
      if (ws !== socket) return;
      socket = null;
      snapshotSeen = false;
      retry();
    };
  }

  /* The back/forward cache keeps a page that is navigated away from, frozen: its socket would stay open,
     holding one of the server's connections and receiving every push. So the page lets it go as it is
     hidden (no banner, no retry) and, if it is shown again from that cache, connects at once for a
     fresh snapshot. */
  function leave() {
    clearTimeout(retryTimer);
    retryTimer = null;
    attempt = 0;
    snapshotSeen = false;
    const ws = socket;
    socket = null;          // its close event is then ignored
    if (ws) ws.close(1000, "page hidden");
    setConnected(false);
  }

  function comeBack(event) {
    if (!event.persisted || socket || retryTimer) return;
    connect();
    setConnected(false);    // "connecting…" until the snapshot is drawn
  }

  function retry() {
    attempt++;
    hook.reconnects++;
    const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** (attempt - 1)) * (0.75 + Math.random() * 0.25);
    setConnected(false);
    $("banner").textContent = `Reconnecting… (attempt ${attempt})`;
    $("banner").hidden = false;
    $("connection").textContent = "reconnecting…";
    if (!retryTimer) retryTimer = setTimeout(connect, delay);
  }

  /* ---- the node panel ---- */
  const panel = {id: null, detail: null, timer: null, fetching: null};

  function openPanel(id) {
    if (panel.id) { const c = view.cellOf.get(panel.id); if (c) c.classList.remove("selected"); }
    panel.id = id;
    panel.detail = null;
    const cell = view.cellOf.get(id);
    if (cell) cell.classList.add("selected");
    $("panel").hidden = false;
    $("panel").setAttribute("data-node", id);
    $("panel").setAttribute("data-loaded", "false");
    drawPanelNow();
    fetchDetail();
    clearInterval(panel.timer);
    panel.timer = setInterval(fetchDetail, PANEL_REFRESH_MS);
  }

  function closePanel() {
    if (panel.id) { const c = view.cellOf.get(panel.id); if (c) c.classList.remove("selected"); }
    panel.id = null;
    clearInterval(panel.timer);
    $("panel").hidden = true;
    $("panel").removeAttribute("data-node");
  }

  async function fetchDetail() {
    const id = panel.id;
    if (!id) return;
    try {
      const response = await fetch(`/dashboard/nodes/${encodeURIComponent(id)}`, {cache: "no-store"});
      const body = await response.json().catch(() => null);
      if (panel.id !== id) return;
      panel.detail = response.ok && body && typeof body === "object" ? body
        : {error: response.status === 404 ? "the server does not know this node (any more)"
          : `the server answered ${response.status}${body && body.error ? `: ${str(body.error)}` : ""}`};
    } catch (e) {
      if (panel.id !== id) return;
      panel.detail = {error: "the server cannot be reached"};
    }
    drawPanelNow();
    $("panel").setAttribute("data-loaded", "true");
  }

  function facts(pairs) {
    const dl = el("dl", {class: "facts"});
    for (const [k, v] of pairs) if (v !== null && v !== undefined && v !== "") dl.append(el("dt", {text: k}), el("dd", {text: str(v)}));
    return dl;
  }

  function sparkline(spec, times, values) {
    const pts = [];
    for (let i = 0; i < values.length; i++) if (num(values[i]) !== null && num(times[i]) !== null) pts.push([times[i], values[i]]);
    const row = el("div", {class: `spark${pts.length ? "" : " none"}`, "data-spark": spec.field});
    const svg = svgEl("svg", {viewBox: "0 0 200 40", preserveAspectRatio: "none", role: "img"});
    const now = el("span", {class: "now"});
    row.append(el("span", {text: spec.label}), svg, now);
    if (!pts.length) { now.textContent = "–"; svg.setAttribute("aria-label", `${spec.label}: no samples`); return row; }
    const vs = pts.map((p) => p[1]);
    const lo = spec.min ?? Math.min(...vs) - 1, hi = spec.max ?? Math.max(...vs) + 1;
    const t0 = pts[0][0], t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
    const line = pts.map(([t, v]) => `${(200 * (t - t0) / (t1 - t0)).toFixed(1)},${(38 - 36 * clamp((v - lo) / (hi - lo), 0, 1)).toFixed(1)}`).join(" ");
    const y = line.split(" ")[0].split(",")[1];
    svg.append(svgEl("polyline", {points: pts.length === 1 ? `0,${y} 200,${y}` : line, stroke: spec.colour}));
    svg.setAttribute("aria-label", `${spec.label}: ${pts.length} samples, from ${Math.min(...vs).toFixed(1)} to ${Math.max(...vs).toFixed(1)}${spec.unit}`);
    now.textContent = `${vs[vs.length - 1].toFixed(spec.field === "temp" ? 1 : 0)}${spec.unit}`;
    now.append(el("span", {class: "range", text: `${Math.min(...vs).toFixed(0)}–${Math.max(...vs).toFixed(0)}`}));
    return row;
  }

  function drawPanelNow() {
    const id = panel.id;
    if (!id) return;
    const d = panel.detail || {};
    const v = model.nodes.get(id) || (d.view && typeof d.view === "object" ? d.view : {id});
    const info = d.info && typeof d.info === "object" ? d.info : {};
    const health = d.health && typeof d.health === "object" ? d.health : null;
    const state = STATES.includes(v.state) ? v.state : "unknown";
    const place = Array.isArray(v.place) && v.place.length === 3 ? `rack ${v.place[0]} · bank ${v.place[1]} · slot ${v.place[2]}` : "unplaced";
    const body = el("div", {},
      el("h2", {class: "node-id", text: id}),
      el("div", {},
        el("span", {class: `badge ${state}`, "data-panel-state": state, text: state}),
        el("span", {class: "badge", text: str(v.role || info.role) || "?"}),
        v.simulated || info.simulated ? el("span", {class: "badge", text: "simulated"}) : null,
        el("span", {class: "place", text: place})),
      el("h3", {text: "now"}),
      facts([["CPU", num(v.cpu) !== null ? `${fmt(v.cpu, 1)} %` : "–"], ["temperature", num(v.temp) !== null ? `${fmt(v.temp, 1)} °C` : "–"],
        ["memory", num(v.mem) !== null ? `${fmt(v.mem, 1)} %` : "–"], ["Warble", v.warble ? `running ${str(v.warble)}` : "idle"]]));
    if (d.error) body.append(el("p", {class: "error-text", text: d.error}));
    if (!panel.detail) body.append(el("p", {class: "empty", text: "loading…"}));
    if (health) body.append(el("h3", {text: "health"}),
      facts([["state", str(health.state)], ["since", num(health.since) !== null ? `${clock(health.since)} (${ago(health.since)})` : ""],
        ["reason", str(health.reason)], ["server", str(health.server)]]));
    if (Object.keys(info).length) body.append(el("h3", {text: "info"}),
      facts([["hostname", info.hostname], ["ip", info.ip], ["mac", info.mac], ["os", info.os], ["machine", info.machine],
        ["CPUs", info.cpu_count], ["version", info.version],
        ["started", num(info.started) !== null ? `${clock(info.started)} (${ago(info.started)})` : ""],
        ["capabilities", Array.isArray(info.capabilities) ? info.capabilities.map(str).join(", ") : ""]]));
    // The detail's `plugins` ({name: state}) with what info says of each (version, error, failing hooks).
    const plugins = {};
    for (const source of [d.plugins, info.plugins]) {
      if (!source || typeof source !== "object") continue;
      for (const [name, p] of Object.entries(source)) if (!(name in plugins) || (p && typeof p === "object")) plugins[name] = p;
    }
    if (Object.keys(plugins).length) {
      const table = el("table", {"data-plugins": ""});
      for (const name of Object.keys(plugins).sort()) {
        const p = plugins[name];
        const pState = p && typeof p === "object" ? str(p.state) : str(p);
        const failing = p && typeof p === "object" && p.hook_errors && typeof p.hook_errors === "object"
          ? Object.entries(p.hook_errors).filter(([, e]) => e && e.failing).map(([hook]) => hook) : [];
        const note = p && typeof p === "object" && p.error ? str(p.error) : failing.length ? `failing: ${failing.join(", ")}` : "";
        table.append(el("tr", {"data-plugin": name},
          el("td", {text: name}),
          el("td", {text: p && typeof p === "object" ? str(p.version) : ""}),
          el("td", {class: `state-${pState.replace(/[^a-z]/g, "")}`}, pState, note ? el("div", {class: "error-text", text: note}) : null)));
      }
      body.append(el("h3", {text: "plugins"}), table);
    }
    if (panel.detail && !d.error) {
      const h = d.history && typeof d.history === "object" ? d.history : {};
      const times = Array.isArray(h.time) ? h.time : [];
      body.append(el("h3", {text: "last 15 minutes"}));
      for (const spec of SPARKS) body.append(sparkline(spec, times, Array.isArray(h[spec.field]) ? h[spec.field] : []));
      if (!times.length) body.append(el("p", {class: "empty", text: "no samples: the server keeps none (plugin telemetry_store)"}));
    }
    const holder = $("panel-body");
    holder.textContent = "";
    holder.append(body);
  }

  /* ---- start ---- */
  function start() {
    const params = new URLSearchParams(window.location.search);
    setReading(params.get("reading") || "state");
    $("reading").addEventListener("change", (e) => {
      setReading(e.target.value);
      const url = new URL(window.location.href);
      url.searchParams.set("reading", view.reading);
      history.replaceState(null, "", url);
    });
    const onCell = (e) => {
      const cell = e.target.closest(".cell[data-node]");
      if (!cell) return;
      const id = cell.getAttribute("data-node");
      if (panel.id === id) closePanel(); else openPanel(id);
    };
    $("racks").addEventListener("click", onCell);
    $("tray").addEventListener("click", onCell);
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape") closePanel();
      else if ((e.key === "Enter" || e.key === " ") && e.target.matches && e.target.matches(".cell[data-node]")) { e.preventDefault(); onCell(e); }
    });
    $("panel-close").addEventListener("click", closePanel);
    let resizeTimer = null;
    window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(sizeCells, 100); });
    model.layout = {racks: [5, 5, 5, 6], slots: 50};
    model.layoutKey = JSON.stringify(model.layout);
    buildBox(model.layout);
    drawLamp(); drawTotals();
    $("tray-section").hidden = true;
    sizeCells();
    window.addEventListener("pagehide", leave);
    window.addEventListener("pageshow", comeBack);
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
