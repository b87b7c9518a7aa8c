// The livestream-wasm demo dashboard.
//
// One connection for every tab: the client runs with `share: true`, so the first tab holds the
// connection and every other tab of this origin follows it (same hits, through a
// BroadcastChannel); `stream.stats.role` says which one this tab is.
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
const RELAY_POLL_MS = 2000;
const RECENT_IDS = 5000;
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
  role: null, // "leader" | "follower" with share: true, while connected
  tookOver: false, // this tab followed a leader, then took the connection over
  followedLeader: false, // this tab, as a follower, saw another tab's connection
  statsBase: null, // totals of earlier leaders, so that a hand-over does not reset the counters
  lastStats: null,
  mode: { kind: "direct" }, // "relay" when the page is served by livestream-relay
  relay: null, // the relay's last /status
  relayError: "",
  specs: null, // the package's option schema, by name
  credentialsOrigin: null, // the origin the filled-in credentials were remembered for
  slots: [], // see newSlot()
  stats: null,
  ownHits: 0,
  paused: false,
  fatal: false,
};

// The ids of the last hits received, for checking that tabs see the same hits.
const recentIds = [];

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

const dirty = { kpi: true, slots: true, errors: true, summary: true, share: true, route: true };

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
      if (state.tookOver && s.waitStatus == null) {
        return "this tab took over the connection from a tab that left; the service still holds that connection's slot for about a minute, so it waits first (KA-16598)";
      }
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

function resetView(slotCount) {
  rate.reset();
  pages.reset();
  countries.reset();
  latest.reset();
  errors.reset();
  state.stats = null;
  state.ownHits = 0;
  state.fatal = false;
  state.role = null;
  state.tookOver = false;
  state.followedLeader = false;
  state.statsBase = null;
  state.lastStats = null;
  recentIds.length = 0;
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
  state.credentialsOrigin = values.remember && (values.token || values.apiKey) ? settings.originOf(values.url) : null;

  state.starting = true;
  setFormBusy(true);
  try {
    const { LiveStream } = await loadPackage();
    const gen = ++state.generation;
    const live = (fn) => (...args) => { if (gen === state.generation) fn(...args); };
    // share: true: every tab of this origin with the same stream and options uses one set of
    // connections. The first tab leads; the others follow and get the same callbacks.
    const client = new LiveStream({
      ...options,
      share: true,
      onHits: live(onHits),
      onStatus: live(onStatus),
      onError: live(onError),
    });
    const count = options.connections ?? options.maxConnections ?? settings.numericDefault(state.specs, "maxConnections") ?? 1;
    resetView(Math.min(8, Math.max(1, count | 0 || 1)));
    rate.start(Date.now());
    state.client = client;
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
  try { state.stats = withBase(c.stats); } catch { /* already gone */ }
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
  state.role = null;
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
  dirty.share = true;
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
  for (let i = Math.max(0, n - RECENT_IDS); i < n; i++) {
    const h = hits[i];
    if (h.hitIdHigh != null) recentIds.push(`${h.hitIdHigh}:${h.hitIdLow}`);
  }
  if (recentIds.length > RECENT_IDS) recentIds.splice(0, recentIds.length - RECENT_IDS);
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
  // The card shows its own live countdown while waiting, so the cause without the schedule.
  s.reason = status.cause || status.reason || "";
  s.deadline = next === "waiting" && status.retryInMs != null ? performance.now() + status.retryInMs : null;
  dirty.slots = dirty.summary = dirty.share = true;
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

const TOTALS = ["hits", "bytes", "duplicates", "malformed", "oversized", "invalidUtf8", "truncated", "reconnects", "connects"];

/** The stats with the totals of earlier leaders added. */
function withBase(st) {
  const base = state.statsBase;
  if (!base) return st;
  const out = { ...st };
  for (const k of TOTALS) out[k] = (st[k] ?? 0) + (base[k] ?? 0);
  return out;
}

function pollStats() {
  const c = state.client;
  const now = Date.now();
  if (c) {
    let st = null;
    try { st = c.stats; } catch { /* closed meanwhile */ }
    if (st) {
      const role = st.role ?? null;
      // Following a tab that held the stream (its hits reached this tab, or its heartbeat said
      // a slot was in use) makes becoming the leader later a take-over. A tab that is only
      // waiting for the lock at its start (also "follower") has seen neither.
      if (role === "follower" && (state.ownHits > 0 || (Array.isArray(st.slots) && st.slots.some((x) => x.state && x.state !== "idle")))) {
        state.followedLeader = true;
      }
      if (role !== state.role) {
        if (state.role === "follower" && role === "leader" && state.followedLeader) state.tookOver = true;
        state.role = role;
        dirty.share = dirty.summary = dirty.slots = true;
      }
      // Another tab now holds the connection: its counters start from zero. Keep the totals.
      const prev = state.lastStats;
      if (prev && (st.hits ?? 0) < (prev.hits ?? 0)) {
        const base = state.statsBase || {};
        for (const k of TOTALS) base[k] = (base[k] ?? 0) + (prev[k] ?? 0);
        state.statsBase = base;
      }
      state.lastStats = st;
      state.stats = withBase(st);
      const list = Array.isArray(st.slots) ? st.slots : [];
      list.forEach((x, idx) => {
        const s = slot(x.connection ?? idx);
        s.hits = x.hits ?? s.hits;
        s.bytes = x.bytes ?? s.bytes;
        s.connects = x.connects ?? s.connects;
        if (!s.fromCallback && x.state) {
          if (s.state !== x.state) s.since = now;
          s.state = x.state;
          s.reason = x.cause ?? x.reason ?? s.reason;
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
  if (dirty.share) { dirty.share = false; renderShare(); }
  if (dirty.route) { dirty.route = false; renderRoute(); }
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
    text = state.tookOver && !count("open") ? "Taking over · waiting for the held slot" : `Waiting to reconnect · ${count("open")} of ${n} open`;
  } else if (state.client) {
    st = count("open") ? "open" : "connecting";
    text = count("open") ? `Live · ${count("open")} of ${n} open` : "Connecting…";
  }
  if (state.client && state.role === "follower" && (st === "open" || st === "connecting" || st === "waiting")) {
    text = st === "open" ? "Live · following another tab" : `${text} · following another tab`;
  }
  if (el.dataset.state !== st) el.dataset.state = st;
  setText($("summary-text"), text);
}

/** The tab-sharing card: which tab holds the connection, and what happens on hand-over. */
function renderShare() {
  const box = $("share");
  const role = state.client ? state.role : null;
  box.hidden = !role;
  box.dataset.role = role || "";
  const btn = $("disconnect");
  setText(btn, role === "follower" ? "Stop following" : "Disconnect");
  if (!role) return;
  const delay = currentDelayMs();
  const wait = Number.isFinite(delay) ? formatWait(delay) : "the reconnect delay";
  if (role === "follower") {
    setText($("share-title"), "Following the tab that holds the connection");
    setText(
      $("share-detail"),
      "This tab shows the same live hits through that tab (share: true) and opens no connection of its own, " +
        "so the service still sees one client. If that tab closes or disconnects, this one takes over: " +
        `it waits ${wait} first, because the service keeps the old connection's slot for about a minute (KA-16598).`,
    );
  } else if (state.tookOver && !state.slots.some((x) => x.state === "open")) {
    setText($("share-title"), "This tab is taking over the connection");
    setText(
      $("share-detail"),
      `The tab that held it left. This tab waits ${wait} after that connection ended before connecting, so that the ` +
        "service has freed its slot (KA-16598). Other tabs of this dashboard follow this one.",
    );
  } else if (state.tookOver) {
    setText($("share-title"), "This tab took over the connection");
    setText(
      $("share-detail"),
      `The tab that held it left. This tab waited ${wait} after that connection ended before connecting, so the service ` +
        "had freed its slot (KA-16598). Other tabs of this dashboard follow this one.",
    );
  } else {
    setText($("share-title"), "This tab holds the connection");
    setText(
      $("share-detail"),
      "Other tabs of this dashboard open no connection of their own: they follow this one and show the same hits. " +
        "If this tab closes, one of them takes over.",
    );
  }
}

/** The reconnect delay in use: the form's value, else the package's default. */
function currentDelayMs() {
  const v = $("reconnectDelayMs").value.trim();
  if (v !== "" && Number.isFinite(Number(v))) return Number(v);
  return settings.numericDefault(state.specs, "reconnectDelayMs");
}

/** The route card: shown when the page reads a livestream-relay, with its upstream state. */
function renderRoute() {
  const box = $("route");
  const relay = state.mode.kind === "relay";
  const viaRelay = relay && settings.originOf($("url").value) === location.origin;
  box.hidden = !viaRelay;
  if (!viaRelay) return;
  const st = state.relay;
  const stream = st ? pickRelayStream(st) : null;
  setText($("route-title"), `Through livestream-relay at ${location.host}`);
  const parts = ["The relay holds the Adobe token and the only connection to Live Stream; every viewer of this page reads the relay"];
  if (st?.tokenSource) {
    const source = st.tokenSource === "ims" ? "token from Adobe IMS (OAuth server-to-server)" : st.tokenSource === "fixed" ? "a fixed token" : `token: ${st.tokenSource}`;
    parts.push(`${source}${st.tokenRenewals ? `, fetched ${nf.format(st.tokenRenewals)}×` : ""}`);
  }
  setText($("route-detail"), `${parts.join(" · ")}.`);
  const pill = $("route-pill");
  let pstate = "connecting";
  let ptext = "checking…";
  if (state.relayError) { pstate = "failed"; ptext = "status unavailable"; }
  else if (st && !st.healthy) { pstate = "failed"; ptext = "upstream failed"; }
  else if (stream) {
    const slots = stream.slots || [];
    const open = slots.filter((x) => x.state === "open").length;
    pstate = open === slots.length && slots.length ? "open" : slots.some((x) => x.state === "waiting") ? "waiting" : "connecting";
    ptext = `upstream ${open} of ${slots.length} open`;
  }
  if (pill.dataset.state !== pstate) pill.dataset.state = pstate;
  setText(pill, ptext);
  const up = $("relay-upstream");
  up.hidden = !stream && !state.relayError && !(st && st.reason && !st.healthy);
  if (up.hidden) return;
  const rows = [];
  if (state.relayError) rows.push(["Status", state.relayError]);
  if (st && !st.healthy && st.reason) rows.push(["Problem", st.reason]);
  if (stream) {
    (stream.slots || []).forEach((x, i) => {
      let v = x.state;
      if (x.httpStatus != null) v += ` · HTTP ${x.httpStatus}`;
      if (x.state === "waiting" && x.retryInMs != null) v += ` · next attempt in ${formatWait(x.retryInMs)}`;
      if (x.reason && x.state !== "open") v += ` · ${x.reason}`;
      rows.push([`Upstream ${i + 1}`, v, x.state]);
    });
    rows.push(["Records in", nf.format(stream.recordsIn ?? 0)]);
    rows.push(["Upstream reconnects", nf.format(stream.reconnects ?? 0)]);
    const statuses = Object.entries(stream.statuses || {}).filter(([, n]) => n > 0).map(([k, n]) => `${k}×${nf.format(n)}`).join(" ");
    if (statuses) rows.push(["Upstream answers", statuses]);
    rows.push(["Relay clients now", nf.format(stream.clients ?? 0)]);
    if (stream.clientsCut) rows.push(["Viewers cut (too slow)", nf.format(stream.clientsCut)]);
  }
  up.replaceChildren(
    ...rows.map(([k, v, stt]) => {
      const d = document.createElement("div");
      const dt = document.createElement("span");
      dt.className = "k";
      dt.textContent = k;
      const dd = document.createElement("b");
      dd.textContent = v;
      if (stt) dd.dataset.state = stt;
      d.append(dt, dd);
      return d;
    }),
  );
}

/** The relay stream this page's URL reads (else the first). */
function pickRelayStream(st) {
  const streams = Array.isArray(st.streams) ? st.streams : [];
  let path = "";
  try { path = new URL($("url").value, location.href).pathname; } catch { /* not a URL */ }
  return streams.find((x) => x.path === path) || streams[0] || null;
}

/** Asks the page's server for the relay's `/status` (the emulator and static servers answer `{"relay": null}` from www/status). */
async function fetchRelayStatus() {
  const headers = {};
  const token = $("token")?.value.trim();
  if (token && state.mode.kind === "relay") headers.authorization = `Bearer ${token}`;
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 3000);
  try {
    const res = await fetch("/status", { headers, cache: "no-store", signal: ctl.signal });
    if (res.status === 401) return { error: "the relay wants its token (LIVESTREAM_RELAY_TOKEN) in the token field" };
    if (!res.ok) return { error: `/status answered ${res.status}` };
    const body = await res.json();
    return body && body.relay === "livestream-relay" ? { status: body } : { status: null };
  } catch (e) {
    return { error: e?.name === "AbortError" ? "/status did not answer" : String(e?.message || e) };
  } finally {
    clearTimeout(timer);
  }
}

async function pollRelay() {
  const r = await fetchRelayStatus();
  if (r.status) { state.relay = r.status; state.relayError = ""; }
  else if (r.error) state.relayError = r.error;
  dirty.route = true;
  schedule();
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
  // What the real service needs: the package's default delay (60 000 ms).
  const polite = settings.numericDefault(state.specs, "reconnectDelayMs");
  const short = v !== "" && Number(v) < (Number.isFinite(polite) ? polite : 60000);
  const viaRelay = state.mode.kind === "relay" && settings.originOf($("url").value) === location.origin;
  $("delay-warning").hidden = !short || viaRelay;
  $("delay-relay").hidden = !short || !viaRelay;
  dirty.share = true;
}

/** Shows for which server the credentials would be remembered. */
function updateRememberNote() {
  const origin = settings.originOf($("url").value);
  setText($("remember-origin"), origin || "this stream's server");
}

/**
 * The URL changed: credentials filled in for another origin must not go along. Fill in what
 * was remembered for the new origin, or clear what had been filled in automatically.
 */
function onUrlChanged() {
  const origin = settings.originOf($("url").value);
  updateRememberNote();
  updateDelayWarning();
  dirty.route = true;
  schedule();
  if (origin === state.credentialsOrigin) return;
  const saved = settings.credentialsFor(origin);
  if (saved) {
    $("token").value = saved.token;
    $("apiKey").value = saved.apiKey;
    $("remember").checked = true;
    state.credentialsOrigin = origin;
  } else if (state.credentialsOrigin) {
    $("token").value = "";
    $("apiKey").value = "";
    $("remember").checked = false;
    state.credentialsOrigin = null;
  }
}

async function init() {
  const form = $("connect-form");
  // Where this page is served from (the relay answers /status), and the package's option
  // schema for the form's defaults and ranges: both before the form is filled in.
  const [probe, pkg] = await Promise.all([
    fetchRelayStatus(),
    loadPackage().catch((e) => { showFormError(e.message); return null; }),
  ]);
  if (probe.status) {
    state.mode = { kind: "relay", streamPath: probe.status.streams?.[0]?.path };
    setText($("lede-source"), "Here it reads livestream-relay, which serves this page, holds the Adobe token and keeps the one connection to Live Stream for every viewer.");
    state.relay = probe.status;
    setInterval(pollRelay, RELAY_POLL_MS);
  }
  if (pkg) state.specs = settings.applySchema(form, pkg.optionSchema());
  const { values, autoconnect, credentialsOrigin } = settings.initialValues(location, state.mode);
  state.credentialsOrigin = credentialsOrigin;
  settings.writeForm(form, values, state.mode);
  updateDelayWarning();
  updateSmoothing();
  updateRememberNote();
  $("smoothing").addEventListener("change", updateSmoothing);
  $("url").addEventListener("input", onUrlChanged);
  $("remember").addEventListener("change", () => {
    const v = settings.readForm(form);
    settings.save(v);
    state.credentialsOrigin = v.remember ? settings.originOf(v.url) : null;
  });

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    connect();
  });
  $("disconnect").addEventListener("click", () => {
    disconnect();
    $("connect").focus();
  });
  $("reconnectDelayMs").addEventListener("input", updateDelayWarning);
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
  // The form is filled in and wired: tests (and scripts) wait for this.
  document.documentElement.dataset.ready = "1";
}

// For poking at it from the console: `liveStreamDemo.client.stats`.
window.liveStreamDemo = {
  get client() { return state.client; },
  get slots() { return state.slots; },
  get role() { return state.role; },
  get mode() { return state.mode.kind; },
  recentHitIds: () => recentIds.slice(),
  connect,
  disconnect,
};

init();
