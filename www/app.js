// The livestream-wasm demo dashboard.
//
// Data flow: the client's callbacks (onHits, onStatus, onError) and a 4-per-second poll of
// `stream.stats` only update bounded in-memory aggregates (metrics.js) and mark what
// changed. The DOM is touched at most once per animation frame, never per hit, so the page
// keeps up with thousands of hits per second.

import { RateSeries, SlidingTop, LatestRing, ErrorLog } from "./metrics.js";
import { createChart } from "./chart.js";
import * as settings from "./settings.js";

const $ = (id) => document.getElementById(id);

const TABLE_ROWS = 50;
const TOP_ITEMS = 8;
const POLL_MS = 250;
const TABLE_MIN_INTERVAL_MS = 250; // at most 4 table refreshes a second: readable, and cheap to lay out and paint
const TOPS_MIN_INTERVAL_MS = 500;

const nf = new Intl.NumberFormat();
const nf1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const pct = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 0 });

// ---------------------------------------------------------------- state

const rate = new RateSeries(300);
const pages = new SlidingTop({ seconds: 60, maxKeys: 500, otherKey: "Other pages" });
const countries = new SlidingTop({ seconds: 60, maxKeys: 300, otherKey: "Other countries" });
const latest = new LatestRing(TABLE_ROWS);
const errors = new ErrorLog(25);

const state = {
  client: null,
  generation: 0, // callbacks of an older client are ignored
  starting: false,
  releaseLock: null,
  slots: [], // see newSlot()
  stats: null,
  ownHits: 0,
  paused: false,
  fatal: false,
};

function newSlot(index) {
  return {
    index,
    state: "idle",
    since: Date.now(),
    httpStatus: null, // the last HTTP status seen on this slot
    waitStatus: null, // the HTTP status that caused the current wait, if any
    reason: "",
    deadline: null, // performance.now() of the next attempt while waiting
    hits: 0,
    bytes: 0,
    connects: 0,
    fromCallback: false,
  };
}

function slot(i) {
  const n = Number.isInteger(i) && i >= 0 ? i : 0;
  while (state.slots.length <= n) state.slots.push(newSlot(state.slots.length));
  return state.slots[n];
}

const dirty = { kpi: true, slots: true, errors: true, summary: true };

// ---------------------------------------------------------------- formatting

function formatBytes(n) {
  if (!Number.isFinite(n)) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${i === 0 ? nf.format(n) : nf1.format(n)} ${units[i]}`;
}

function formatWait(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
}

function formatAgo(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
function clock(ms) {
  return timeFmt.format(ms);
}

const textCache = new WeakMap();
function setText(el, text) {
  if (textCache.get(el) !== text) {
    el.textContent = text;
    textCache.set(el, text);
  }
}

/** Why a waiting slot waits, in words, from the status that caused the wait. */
function waitExplanation(s) {
  switch (s.waitStatus) {
    case 409:
      return "the server still counts an earlier connection (409 Conflict); waiting lets it free the old slot (KA-16598)";
    case 503:
      return "the server answered 503: no hits for the report suite yet, or the old slot is still held (KA-16598)";
    case 401:
      return "the token was refused (401); trying again with a fresh one";
    case 429:
      return "too many requests (429); backing off";
    default:
      if (s.waitStatus >= 500) return `the service failed (${s.waitStatus}); backing off before trying again`;
      return "waiting so the server frees the old slot (KA-16598); reconnecting sooner would be answered 409 or 503";
  }
}

// ---------------------------------------------------------------- the client

let pkgPromise = null;
function loadPackage() {
  pkgPromise ??= (async () => {
    const mod = await import("livestream-wasm");
    await mod.default();
    return mod;
  })().catch((e) => {
    pkgPromise = null;
    throw new Error(
      `The livestream-wasm package could not be loaded from /pkg/ (${e?.message || e}). ` +
        "Build it with `npm run build`, or run `npm start`, which builds it and serves this page.",
    );
  });
  return pkgPromise;
}

/** Holds a Web Lock per stream URL so that two tabs of this page never both connect. */
async function acquireTabLock(url) {
  if (!navigator.locks) return () => {};
  return new Promise((resolve) => {
    navigator.locks
      .request(`livestream-wasm-demo:${url}`, { ifAvailable: true }, (lock) => {
        if (!lock) { resolve(null); return undefined; }
        return new Promise((release) => resolve(release));
      })
      .catch(() => resolve(() => {}));
  });
}

function resetView(slotCount) {
  rate.reset();
  pages.reset();
  countries.reset();
  latest.reset();
  errors.reset();
  state.stats = null;
  state.ownHits = 0;
  state.fatal = false;
  state.slots = [];
  for (let i = 0; i < slotCount; i++) slot(i);
  renderedSlotCount = -1;
  lastTopsRender = 0;
  lastChartSec = 0;
  Object.keys(dirty).forEach((k) => (dirty[k] = true));
}

function showFormError(msg) {
  const el = $("form-error");
  el.textContent = msg || "";
  el.hidden = !msg;
}

async function connect() {
  if (state.client || state.starting) return;
  const form = $("connect-form");
  const values = settings.readForm(form);
  showFormError("");
  let options;
  try {
    if (!values.url) throw new Error("Enter the stream URL, e.g. http://127.0.0.1:8787/api/1/stream/demo");
    options = settings.toOptions(values);
  } catch (e) {
    showFormError(e.message);
    return;
  }
  settings.save(values);

  state.starting = true;
  setFormBusy(true);
  try {
    const { LiveStream } = await loadPackage();
    const release = await acquireTabLock(values.url);
    if (!release) {
      throw new Error(
        "Another tab of this dashboard is already connected to this stream. Every tab would be one more " +
          "client of the stream, and beyond maxConnections the service answers 409 (KA-16598): disconnect there first.",
      );
    }
    const gen = ++state.generation;
    const live = (fn) => (...args) => { if (gen === state.generation) fn(...args); };
    let client;
    try {
      client = new LiveStream({
        ...options,
        onHits: live(onHits),
        onStatus: live(onStatus),
        onError: live(onError),
      });
    } catch (e) {
      release();
      throw e;
    }
    const count = options.connections ?? options.maxConnections ?? 1;
    resetView(Math.min(8, Math.max(1, count | 0)));
    rate.start(Date.now());
    state.client = client;
    state.releaseLock = release;
    client.start();
    pollStats();
  } catch (e) {
    showFormError(e?.message || String(e));
  } finally {
    state.starting = false;
    setFormBusy(!!state.client);
    schedule();
  }
}

/** Closes the client (idempotent); `keepFailed` keeps failed slots showing their reason. */
function disconnect() {
  const c = state.client;
  if (!c) return;
  try { state.stats = c.stats; } catch { /* already gone */ }
  try { c.close(); } catch (e) { console.warn("close() threw", e); }
  state.generation++;
  state.client = null;
  for (const s of state.slots) {
    if (s.state !== "failed" && s.state !== "closed") {
      s.state = "closed";
      s.since = Date.now();
      s.reason = state.fatal ? "stopped: the client failed (see Errors)" : "closed by you";
    }
    s.deadline = null;
  }
  state.releaseLock?.();
  state.releaseLock = null;
  setFormBusy(false);
  dirty.slots = dirty.kpi = dirty.summary = true;
  schedule();
}

function setFormBusy(busy) {
  $("settings").disabled = busy;
  $("connect").disabled = busy;
  $("disconnect").disabled = !state.client;
  document.body.classList.toggle("connected", !!state.client);
  setText($("conn-line"), state.client ? $("url").value : "");
}

// ---------------------------------------------------------------- callbacks (no DOM here)

function onHits(hits, info) {
  const n = hits.length;
  if (!n) return;
  const now = Date.now();
  rate.add(n, now);
  state.ownHits += n;
  const sec = Math.floor(now / 1000);
  pages.advance(sec);
  countries.advance(sec);
  for (let i = 0; i < n; i++) {
    const h = hits[i];
    pages.addKey(h.pageName || h.pageURL || "(no page name)", sec);
    countries.addKey(h.geoCountry ? String(h.geoCountry).toUpperCase() : "Unknown", sec);
  }
  if (!state.paused) latest.pushAll(hits);
  const s = state.slots[info?.connection];
  if (s && s.state !== "open" && s.state !== "closed") {
    // Hits prove the slot is open even if its status has not arrived yet.
    s.state = "open";
    dirty.slots = dirty.summary = true;
  }
  dirty.kpi = true;
  schedule();
}

function onStatus(status) {
  const s = slot(status?.connection);
  const next = status?.state || "idle";
  if (s.state === "failed" && next === "closed") return; // keep the reason it failed
  if (s.state !== next) s.since = Date.now();
  s.state = next;
  s.fromCallback = true;
  if (status.httpStatus != null) s.httpStatus = status.httpStatus;
  s.waitStatus = next === "waiting" ? status.httpStatus ?? null : null;
  s.reason = status.reason || "";
  s.deadline = next === "waiting" && status.retryInMs != null ? performance.now() + status.retryInMs : null;
  dirty.slots = dirty.summary = true;
  schedule();
}

let announceTimer = 0;
function onError(error) {
  const e = errors.add(error, Date.now());
  if (e.count === 1 || e.fatal) {
    // A new kind of problem is read out once (throttled), not every repeat.
    clearTimeout(announceTimer);
    announceTimer = setTimeout(() => setText($("error-announce"), `${e.fatal ? "Fatal error" : "Error"}: ${e.message}`), 300);
  }
  if (e.fatal) {
    state.fatal = true;
    // close() must not run inside the client's own callback; do it right after.
    setTimeout(() => { if (state.client) disconnect(); }, 0);
  }
  dirty.errors = dirty.summary = true;
  schedule();
}

function pollStats() {
  const c = state.client;
  const now = Date.now();
  if (c) {
    let st = null;
    try { st = c.stats; } catch { /* closed meanwhile */ }
    if (st) {
      state.stats = st;
      const list = Array.isArray(st.slots) ? st.slots : [];
      list.forEach((x, idx) => {
        const s = slot(x.connection ?? idx);
        s.hits = x.hits ?? s.hits;
        s.bytes = x.bytes ?? s.bytes;
        s.connects = x.connects ?? s.connects;
        if (!s.fromCallback && x.state) {
          if (s.state !== x.state) s.since = now;
          s.state = x.state;
          s.reason = x.reason ?? s.reason;
          if (x.httpStatus != null) s.httpStatus = x.httpStatus;
        }
        if (s.state === "waiting" && x.state === "waiting" && x.nextAttemptInMs != null) {
          s.deadline = performance.now() + x.nextAttemptInMs;
        }
      });
    }
    rate.noteOpen(now, state.slots.some((s) => s.state === "open"));
    dirty.kpi = dirty.slots = true;
  }
  schedule();
}

// ---------------------------------------------------------------- rendering (once per frame)

let rafPending = false;
function schedule() {
  if (rafPending) return;
  rafPending = true;
  requestAnimationFrame(frame);
}

let chart = null;
let lastChartSec = 0;
let lastTableRender = 0;
let lastTopsRender = 0;
let renderedLatest = -1;
let renderedErrors = -1;
let renderedSlotCount = -1;
const chartXs = [];
const chartYs = [];
const chartGaps = [];

function frame() {
  rafPending = false;
  const now = Date.now();
  if (dirty.kpi) { dirty.kpi = false; renderKpis(now); }
  if (dirty.slots) { dirty.slots = false; renderSlots(); }
  if (dirty.summary) { dirty.summary = false; renderSummary(); }
  if (latest.version !== renderedLatest) {
    if (now - lastTableRender >= TABLE_MIN_INTERVAL_MS) renderTable(now);
    else schedule();
  }
  if (now - lastTopsRender >= TOPS_MIN_INTERVAL_MS) renderTops(now);
  const sec = Math.floor(now / 1000);
  if (chart && sec !== lastChartSec && (state.client || rate.firstSec >= 0)) {
    lastChartSec = sec;
    chart.setData(rate.fill(now, chartXs, chartYs, chartGaps));
  }
  if (dirty.errors) { dirty.errors = false; renderErrors(); }
}

function renderKpis(now) {
  const st = state.stats || {};
  setText($("kpi-hits"), nf.format(st.hits ?? state.ownHits));
  const r = rate.rate(now, 10);
  setText($("kpi-rate"), r < 10 ? nf1.format(r) : nf.format(Math.round(r)));
  setText($("kpi-bytes"), formatBytes(st.bytes ?? 0));
  setText($("kpi-dups"), nf.format(st.duplicates ?? 0));
  setText($("kpi-bad"), nf.format(st.malformed ?? 0));
  const extra = [];
  if (st.oversized) extra.push(`${nf.format(st.oversized)} oversized`);
  if (st.invalidUtf8) extra.push(`${nf.format(st.invalidUtf8)} invalid UTF-8`);
  if (st.truncated) extra.push(`${nf.format(st.truncated)} truncated`);
  setText($("kpi-bad-sub"), extra.length ? extra.join(" · ") : "skipped, reported below");
  setText($("kpi-reconnects"), nf.format(st.reconnects ?? 0));
  setText($("kpi-reconnects-sub"), `${nf.format(st.connects ?? 0)} connects in all`);
}

const slotEls = [];
function buildSlotCard(i) {
  const el = document.createElement("article");
  el.className = "slot";
  el.dataset.slot = String(i);
  el.setAttribute("aria-labelledby", `slot-${i}-name`);
  el.innerHTML = `
    <div class="slot-head">
      <span class="slot-name" id="slot-${i}-name"></span>
      <span class="pill" data-role="state"></span>
    </div>
    <div class="slot-meta">
      <span>since <b data-role="since"></b></span>
      <span>HTTP <b data-role="http"></b></span>
      <span><b data-role="hits"></b> hits</span>
      <span><b data-role="connects"></b> connects</span>
    </div>
    <p class="slot-reason" data-role="reason"></p>
    <p class="countdown" data-role="countdown" hidden></p>`;
  const q = (r) => el.querySelector(`[data-role="${r}"]`);
  setText(el.querySelector(".slot-name"), `Connection ${i + 1}`);
  return { el, state: q("state"), since: q("since"), http: q("http"), hits: q("hits"), connects: q("connects"), reason: q("reason"), countdown: q("countdown") };
}

function renderSlots() {
  const box = $("slots");
  if (renderedSlotCount !== state.slots.length) {
    box.innerHTML = "";
    slotEls.length = 0;
    if (!state.slots.length) {
      box.innerHTML = '<p class="empty">Connect to see each connection slot here.</p>';
    }
    for (let i = 0; i < state.slots.length; i++) {
      const c = buildSlotCard(i);
      slotEls.push(c);
      box.append(c.el);
    }
    renderedSlotCount = state.slots.length;
  }
  const now = Date.now();
  const pnow = performance.now();
  state.slots.forEach((s, i) => {
    const c = slotEls[i];
    if (c.el.dataset.state !== s.state) c.el.dataset.state = s.state;
    setText(c.state, s.state);
    setText(c.since, `${clock(s.since)} · ${formatAgo(now - s.since)}`);
    setText(c.http, s.httpStatus == null ? "–" : String(s.httpStatus));
    setText(c.hits, nf.format(s.hits));
    setText(c.connects, nf.format(s.connects));
    setText(c.reason, s.reason || (s.state === "idle" ? "not started" : ""));
    const waiting = s.state === "waiting";
    if (c.countdown.hidden === waiting) c.countdown.hidden = !waiting;
    if (waiting) {
      const left = s.deadline == null ? null : s.deadline - pnow;
      const lead = left == null ? "Reconnecting soon" : left > 250 ? `Reconnecting in ${formatWait(left)}` : "Reconnecting now";
      setText(c.countdown, `${lead} — ${waitExplanation(s)}.`);
    }
  });
  const open = state.slots.filter((s) => s.state === "open").length;
  setText($("slots-note"), state.slots.length ? `${open} of ${state.slots.length} open` : "none yet");
}

function renderSummary() {
  const el = $("summary");
  const slots = state.slots;
  const n = slots.length;
  const count = (st) => slots.filter((s) => s.state === st).length;
  let st = "idle";
  let text = "Not connected";
  if (state.fatal || count("failed")) {
    st = "failed";
    text = "Stopped: a fatal error (see Errors)";
  } else if (!state.client && n) {
    st = "closed";
    text = "Disconnected";
  } else if (n && count("open") === n) {
    st = "open";
    text = n === 1 ? "Live · connected" : `Live · ${n} of ${n} connections open`;
  } else if (count("waiting")) {
    st = "waiting";
    text = `Waiting to reconnect · ${count("open")} of ${n} open`;
  } else if (state.client) {
    st = count("open") ? "open" : "connecting";
    text = count("open") ? `Live · ${count("open")} of ${n} open` : "Connecting…";
  }
  if (el.dataset.state !== st) el.dataset.state = st;
  setText($("summary-text"), text);
}

let tableRows = null;
function renderTable(now) {
  lastTableRender = now;
  renderedLatest = latest.version;
  if (!tableRows) {
    const tbody = $("hits").tBodies[0];
    tableRows = [];
    const cls = ["c-time", "c-page", "c-url", "c-country", "c-browser", "c-id"];
    for (let r = 0; r < TABLE_ROWS; r++) {
      const tr = document.createElement("tr");
      tr.hidden = true;
      const cells = cls.map((c) => {
        const td = document.createElement("td");
        td.className = c;
        tr.append(td);
        return td;
      });
      tbody.append(tr);
      tableRows.push({ tr, cells, hit: null });
    }
  }
  for (let r = 0; r < TABLE_ROWS; r++) {
    const row = tableRows[r];
    const h = latest.at(r);
    if (!h) { if (!row.tr.hidden) row.tr.hidden = true; row.hit = null; continue; }
    if (row.tr.hidden) row.tr.hidden = false;
    if (row.hit === h) continue;
    row.hit = h;
    const [t, page, url, country, browser, id] = row.cells;
    setText(t, Number.isFinite(h.timeGMT) ? clock(h.timeGMT * 1000) : "–");
    setText(page, h.pageName || "–");
    page.title = h.pageName || "";
    // The path says more than a truncated "https://shop.exa…"; the full URL is the tooltip.
    setText(url, h.pageURL ? String(h.pageURL).replace(/^[a-z][a-z0-9+.-]*:\/\/[^/]+/i, "") || h.pageURL : "–");
    url.title = h.pageURL || "";
    const geo = [h.geoCountry ? String(h.geoCountry).toUpperCase() : "", h.geoCity || ""].filter(Boolean).join(" · ");
    setText(country, geo || "–");
    setText(browser, h.browser || "–");
    setText(id, h.hitIdHigh != null ? `${h.hitIdHigh}:${h.hitIdLow}` : "–");
  }
  const empty = latest.size === 0;
  if ($("hits-empty").hidden !== !empty) $("hits-empty").hidden = !empty;
}

function renderTopList(el, top, emptyText) {
  const { items, total } = top;
  if (!el._rows) {
    el._rows = [];
    for (let i = 0; i < TOP_ITEMS; i++) {
      const li = document.createElement("li");
      const k = document.createElement("span");
      k.className = "k";
      const n = document.createElement("span");
      n.className = "n";
      li.append(k, n);
      li.hidden = true;
      el.append(li);
      el._rows.push({ li, k, n, w: "" });
    }
    const p = document.createElement("li");
    p.className = "empty";
    el.append(p);
    el._empty = p;
  }
  const max = items.length ? items[0][1] : 0;
  el._rows.forEach((row, i) => {
    const it = items[i];
    if (!it) { if (!row.li.hidden) row.li.hidden = true; return; }
    if (row.li.hidden) row.li.hidden = false;
    setText(row.k, it[0]);
    row.k.title = it[0];
    setText(row.n, `${nf.format(it[1])} · ${pct.format(it[1] / total)}`);
    const w = `${((it[1] / max) * 100).toFixed(1)}%`;
    if (row.w !== w) { row.li.style.setProperty("--w", w); row.w = w; }
  });
  setText(el._empty, items.length ? "" : emptyText);
  el._empty.hidden = !!items.length;
}

function renderTops(now) {
  lastTopsRender = now;
  renderTopList($("top-pages"), pages.top(TOP_ITEMS, now), "No hits in the last minute.");
  renderTopList($("top-countries"), countries.top(TOP_ITEMS, now), "No hits in the last minute.");
}

function renderErrors() {
  const ol = $("errors");
  const list = errors.list();
  ol.replaceChildren(
    ...list.map((e) => {
      const li = document.createElement("li");
      if (e.fatal) li.className = "fatal";
      const code = document.createElement("span");
      code.className = "code";
      code.textContent = e.httpStatus ? `${e.code} · ${e.httpStatus}` : e.code;
      const msg = document.createElement("span");
      msg.className = "msg";
      msg.textContent = (e.fatal ? "Fatal: " : "") + e.message;
      const when = document.createElement("span");
      when.className = "when";
      const where = e.connection != null ? ` · conn ${Number(e.connection) + 1}` : "";
      when.textContent = `${clock(e.last)}${where}`;
      if (e.count > 1) {
        const n = document.createElement("span");
        n.className = "count";
        n.textContent = `×${nf.format(e.count)}`;
        n.title = `${e.count} times since ${clock(e.first)}`;
        when.append(n);
      }
      li.append(code, msg, when);
      return li;
    }),
  );
  const kinds = list.length;
  setText($("errors-note"), errors.total ? `${nf.format(errors.total)} in all · ${kinds} kind${kinds === 1 ? "" : "s"}` : "none");
}

// ---------------------------------------------------------------- wiring

function updateSmoothing() {
  $("smoothingBucketSize").disabled = !$("smoothing").checked;
}

function updateDelayWarning() {
  const v = $("reconnectDelayMs").value.trim();
  $("delay-warning").hidden = !(v !== "" && Number(v) < 60000);
}

function init() {
  const form = $("connect-form");
  const { values, autoconnect } = settings.initialValues(location);
  settings.writeForm(form, values);
  updateDelayWarning();
  updateSmoothing();
  $("smoothing").addEventListener("change", updateSmoothing);

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    connect();
  });
  $("disconnect").addEventListener("click", () => {
    disconnect();
    $("connect").focus();
  });
  $("reconnectDelayMs").addEventListener("input", updateDelayWarning);
  $("rememberToken").addEventListener("change", () => settings.save(settings.readForm(form)));
  $("pause").addEventListener("click", (e) => {
    state.paused = !state.paused;
    e.currentTarget.setAttribute("aria-pressed", String(state.paused));
    e.currentTarget.textContent = state.paused ? "Resume" : "Pause";
  });
  addEventListener("pagehide", () => disconnect());

  createChart($("chart"), { readout: $("chart-readout") })
    .then((c) => { chart = c; lastChartSec = 0; schedule(); })
    .catch((e) => console.warn("chart unavailable", e));

  setInterval(pollStats, POLL_MS);
  schedule();
  if (autoconnect) connect();
}

// For poking at it from the console: `liveStreamDemo.client.stats`.
window.liveStreamDemo = {
  get client() { return state.client; },
  get slots() { return state.slots; },
  connect,
  disconnect,
};

init();
