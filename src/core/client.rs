//! The client state machine: a pool of connection slots sharing one configuration, one
//! de-duplication memory and one set of counters.
//!
//! Each slot walks `Idle -> Connecting -> Open -> Waiting -> Connecting …`; `Closed` and
//! `Failed` are final. The one rule that matters (KA-16598): after any loss, a slot's next
//! attempt is at least `reconnect_delay_ms` later. The only immediate follow-ups are a
//! redirect hop (the same attempt, continued) and the first retry after a 401 with a fresh
//! token (a refused request held no slot).

use std::collections::VecDeque;

use super::config::Config;
use super::dedup::Dedup;
use super::framer::{FrameSink, Framer};
use super::policy::{self, Verdict};
use super::record::{scan_record, text_class, write_with_quoted_ids, RecordInfo, TextClass};
use super::Millis;

pub use super::policy::ErrorCode;

/// Redirects followed in a row before the attempt counts as failed.
pub const MAX_REDIRECTS: u8 = 5;

/// The state of one connection slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Not started yet.
    Idle,
    /// A request is under way (token, request, response headers).
    Connecting,
    /// A 200 response is being read.
    Open,
    /// Lost; the next attempt is scheduled.
    Waiting,
    /// Closed by the user. Final.
    Closed,
    /// Stopped by a fatal error. Final.
    Failed,
}

impl SlotState {
    /// The `state` string of the JavaScript API.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Idle => "idle",
            SlotState::Connecting => "connecting",
            SlotState::Open => "open",
            SlotState::Waiting => "waiting",
            SlotState::Closed => "closed",
            SlotState::Failed => "failed",
        }
    }
}

/// A request the shell must make now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Identifies this attempt in every `handle_*` call about it; answers about an attempt
    /// that is no longer current (aborted, superseded) are ignored.
    pub id: u64,
    /// The slot index (`info.connection` in JavaScript).
    pub slot: usize,
    /// The full URL, query parameters included.
    pub url: String,
    /// The previous attempt got 401: a token provider must be asked for a new token.
    pub refresh_token: bool,
}

/// Something the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Get a token, then send a GET with [`Client::request_headers`] to `url`.
    Connect(ConnectRequest),
    /// Abort the request or body read of attempt `id` (idle timeout, fatal error, close).
    Abort {
        /// The attempt.
        id: u64,
        /// Its slot.
        slot: usize,
    },
}

/// The parts of a response the policy needs. For a non-200 status the shell reads the body
/// (bounded, e.g. 64 KiB) into `body` first, so a 409's `error_description` can be shown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseHead {
    /// HTTP status code.
    pub status: u16,
    /// `Location` header (redirects handled by the shell with `redirect: "manual"`).
    pub location: Option<String>,
    /// `Retry-After` header.
    pub retry_after: Option<String>,
    /// `Date` header, to measure an HTTP-date `Retry-After` on the server's clock.
    pub date: Option<String>,
    /// Local Unix time in ms when the response arrived.
    pub wall_clock_ms: Option<u64>,
    /// The URL the response finally came from, when the platform followed redirects itself
    /// (a browser's `response.url`); a different origin is fatal, since `Authorization` was
    /// stripped on the way.
    pub final_url: Option<String>,
    /// The body of a non-200 response (or empty).
    pub body: String,
}

/// A change of a slot's state, for `onStatus`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    /// Slot index.
    pub slot: usize,
    /// New state.
    pub state: SlotState,
    /// The HTTP status behind the change, when there is one.
    pub http_status: Option<u16>,
    /// While `Waiting`: the wait actually scheduled.
    pub retry_in_ms: Option<u64>,
    /// Why, in words a user can act on.
    pub reason: String,
}

/// A problem, for `onError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorEvent {
    /// Machine-readable kind.
    pub code: ErrorCode,
    /// What happened and what to do.
    pub message: String,
    /// Slot index, when it concerns one slot.
    pub slot: Option<usize>,
    /// HTTP status, when there is one.
    pub http_status: Option<u16>,
    /// True when the client stopped for good.
    pub fatal: bool,
}

/// Bit in [`Batch::flags`]: the record has both hitIdHigh and hitIdLow.
pub const HAS_HIT_ID: u8 = 1;
/// Bit in [`Batch::flags`]: the record has both visIdHigh and visIdLow.
pub const HAS_VIS_ID: u8 = 2;

/// The new (de-duplicated) hits of one chunk, in a form that crosses into JavaScript in one
/// go: `json` holds the records as JSON text, ids as strings; the other vectors hold one
/// entry per record for consumers that only count and aggregate.
///
/// `json` is three JSON arrays back to back, `[r,…][r,…][r,…]`, each in stream order:
/// `json[..regions[0]]` holds the records that are all ASCII, `json[regions[0]..regions[1]]`
/// those with characters up to U+00FF (both one-byte strings in V8, but only pure ASCII
/// decodes at memcpy speed), `json[regions[1]..]` the others (two-byte strings). A reader
/// that decodes whole regions keeps each record in its fastest form; `starts[i]` tells which
/// region hit `i` is in, so stream order can be restored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Slot index the chunk came from.
    pub slot: usize,
    /// `[ASCII records][Latin-1 records][wide records]`, valid UTF-8, the six id fields as
    /// decimal strings.
    pub json: Vec<u8>,
    /// Byte offsets in `json` where the second and the third region start.
    pub regions: [usize; 2],
    /// Byte offset of each record in `json`, in stream order.
    pub starts: Vec<u32>,
    /// Byte offset just past each record in `json`.
    pub ends: Vec<u32>,
    /// hitIdHigh (0 when absent; see `flags`).
    pub hit_id_high: Vec<u64>,
    /// hitIdLow (0 when absent).
    pub hit_id_low: Vec<u64>,
    /// visIdHigh (0 when absent).
    pub vis_id_high: Vec<u64>,
    /// visIdLow (0 when absent).
    pub vis_id_low: Vec<u64>,
    /// timeGMT in Unix seconds (NaN when absent).
    pub time_gmt: Vec<f64>,
    /// receivedTimeGMT in Unix seconds (NaN when absent).
    pub received_time_gmt: Vec<f64>,
    /// [`HAS_HIT_ID`] | [`HAS_VIS_ID`] per record.
    pub flags: Vec<u8>,
    /// Scratch while building: the Latin-1 and the wide records' text and indices.
    spill: [Spill; 2],
}

/// The records of one region while a batch is built (see [`Batch`]).
#[derive(Clone, Debug, Default, PartialEq)]
struct Spill {
    text: Vec<u8>,
    index: Vec<u32>,
}

/// A recycled batch whose text buffer grew beyond this is dropped rather than kept.
const KEEP_BATCH_BYTES: usize = 4 << 20;

impl Batch {
    /// Closes the ASCII region and appends the other two: `[…]` + `[…]` + `[…]`.
    fn finish(&mut self) {
        self.json.push(b']');
        for k in 0..2 {
            self.regions[k] = self.json.len();
            let base = (self.json.len() + 1) as u32;
            let r = &mut self.spill[k];
            self.json.push(b'[');
            self.json.extend_from_slice(&r.text);
            self.json.push(b']');
            for &i in &r.index {
                self.starts[i as usize] += base;
                self.ends[i as usize] += base;
            }
            r.text.clear();
        }
    }

    /// Number of records in each region of `json`: all ASCII, Latin-1, wide.
    pub fn region_lens(&self) -> [usize; 3] {
        let (l, w) = (self.spill[0].index.len(), self.spill[1].index.len());
        [self.len() - l - w, l, w]
    }

    /// Number of hits.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// True when there are no hits.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The text of hit `i` (a JSON object).
    pub fn record(&self, i: usize) -> &str {
        let bytes = &self.json[self.starts[i] as usize..self.ends[i] as usize];
        // The batch is built from validated UTF-8 only.
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    fn clear(&mut self, slot: usize) {
        self.slot = slot;
        self.json.clear();
        self.json.push(b'[');
        self.regions = [0; 2];
        for r in &mut self.spill {
            r.text.clear();
            r.index.clear();
        }
        self.starts.clear();
        self.ends.clear();
        self.hit_id_high.clear();
        self.hit_id_low.clear();
        self.vis_id_high.clear();
        self.vis_id_low.clear();
        self.time_gmt.clear();
        self.received_time_gmt.clear();
        self.flags.clear();
    }

    /// Records the entry of the record just written at `json[start..]`. A record that is
    /// not all ASCII is moved to its region's scratch buffer; its offsets are fixed up in
    /// `finish`.
    fn push_info(&mut self, mark: usize, start: usize, info: &RecordInfo) {
        let class = text_class(&self.json[start..]);
        if class != TextClass::Ascii {
            let r = &mut self.spill[class as usize - 1];
            if !r.text.is_empty() {
                r.text.push(b',');
            }
            let at = r.text.len();
            r.text.extend_from_slice(&self.json[start..]);
            self.json.truncate(mark);
            r.index.push(self.starts.len() as u32);
            self.starts.push(at as u32);
            self.ends.push(r.text.len() as u32);
        } else {
            self.starts.push(start as u32);
            self.ends.push(self.json.len() as u32);
        }
        let (hh, hl) = info.hit_key.map_or((0, 0), |k| (k.high, k.low));
        let (vh, vl) = info.vis_id.unwrap_or((0, 0));
        self.hit_id_high.push(hh);
        self.hit_id_low.push(hl);
        self.vis_id_high.push(vh);
        self.vis_id_low.push(vl);
        self.time_gmt.push(info.time_gmt.unwrap_or(f64::NAN));
        self.received_time_gmt
            .push(info.received_time_gmt.unwrap_or(f64::NAN));
        let mut f = 0;
        if info.hit_key.is_some() {
            f |= HAS_HIT_ID;
        }
        if info.vis_id.is_some() {
            f |= HAS_VIS_ID;
        }
        self.flags.push(f);
    }
}

/// Something to deliver to the user.
// Hits is by far the most frequent event; boxing it would cost an allocation per chunk, and
// an event is only moved twice (into the queue and out of it).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// New hits (never empty).
    Hits(Batch),
    /// A slot changed state.
    Status(StatusEvent),
    /// A problem (fatal or not).
    Error(ErrorEvent),
}

/// Per-slot figures, part of [`Stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotStats {
    /// Current state.
    pub state: SlotState,
    /// When the slot entered it.
    pub since: Millis,
    /// Last HTTP status seen.
    pub http_status: Option<u16>,
    /// While waiting: when the next attempt is due.
    pub next_attempt_at: Option<Millis>,
    /// Why it is in this state.
    pub reason: String,
    /// Hits delivered from this slot.
    pub hits: u64,
    /// Body bytes received on this slot.
    pub bytes: u64,
    /// Requests made by this slot (redirect hops included).
    pub connects: u64,
    /// Failures in a row (drives the growth of the wait).
    pub failures: u32,
}

/// Counters of the whole client, for `stream.stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Hits delivered (duplicates excluded).
    pub hits: u64,
    /// Body bytes received (after HTTP decoding).
    pub bytes: u64,
    /// Duplicate hits dropped.
    pub duplicates: u64,
    /// Malformed records skipped.
    pub malformed: u64,
    /// Oversized records skipped.
    pub oversized: u64,
    /// Records delivered with invalid UTF-8 replaced.
    pub invalid_utf8: u64,
    /// Incomplete records discarded at the end of a connection.
    pub truncated: u64,
    /// Attempts made after a loss (redirect hops excluded).
    pub reconnects: u64,
    /// Requests made in all (redirect hops included).
    pub connects: u64,
    /// Per slot.
    pub slots: Vec<SlotStats>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    New,
    Running,
    Closed,
    Failed,
}

struct Slot {
    state: SlotState,
    since: Millis,
    attempt: Option<u64>,
    requested_url: String,
    http_status: Option<u16>,
    reason: String,
    next_attempt_at: Option<Millis>,
    opened_at: Option<Millis>,
    last_activity: Millis,
    has_opened: bool,
    failures: u32,
    unauthorized_in_a_row: u32,
    redirect_hops: u8,
    framer: Framer,
    hits: u64,
    bytes: u64,
    connects: u64,
}

#[derive(Default)]
struct Counters {
    hits: u64,
    bytes: u64,
    duplicates: u64,
    malformed: u64,
    oversized: u64,
    invalid_utf8: u64,
    truncated: u64,
    reconnects: u64,
    connects: u64,
}

/// The sans-IO Live Stream client. See the module docs.
pub struct Client {
    config: Config,
    slots: Vec<Slot>,
    dedup: Dedup,
    rng: u64,
    next_id: u64,
    phase: Phase,
    counters: Counters,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    batch: Batch,
}

impl Client {
    /// A client for `config`; `seed` drives the reconnect jitter (any value; the shell
    /// passes a random one, tests a fixed one).
    pub fn new(config: Config, seed: u64) -> Self {
        let slots = (0..config.connections)
            .map(|_| Slot {
                state: SlotState::Idle,
                since: 0,
                attempt: None,
                requested_url: String::new(),
                http_status: None,
                reason: "not started".to_string(),
                next_attempt_at: None,
                opened_at: None,
                last_activity: 0,
                has_opened: false,
                failures: 0,
                unauthorized_in_a_row: 0,
                redirect_hops: 0,
                framer: Framer::new(config.max_record_bytes),
                hits: 0,
                bytes: 0,
                connects: 0,
            })
            .collect();
        Client {
            dedup: Dedup::new(config.dedup_window, seed),
            config,
            slots,
            rng: seed ^ 0x9E37_79B9_7F4A_7C15,
            next_id: 1,
            phase: Phase::New,
            counters: Counters::default(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            batch: Batch::default(),
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The headers of a request, given the token (checked; a leading `Bearer ` is dropped).
    pub fn request_headers(&self, token: &str) -> Result<Vec<(&'static str, String)>, String> {
        let bare = super::config::validate_token(token).map_err(|e| e.to_string())?;
        Ok(self.config.request_headers(&bare))
    }

    /// Opens every slot. Returns false (and does nothing) when already started, closed or
    /// failed.
    pub fn start(&mut self, now: Millis) -> bool {
        if self.phase != Phase::New {
            return false;
        }
        self.phase = Phase::Running;
        for i in 0..self.slots.len() {
            self.connect(i, None, false, now);
        }
        true
    }

    /// True once `close` was called or a fatal error stopped the client.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Closed | Phase::Failed)
    }

    /// Aborts everything; every slot ends `Closed`. Idempotent; later input is ignored.
    pub fn close(&mut self, now: Millis) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        for i in 0..self.slots.len() {
            if let Some(id) = self.slots[i].attempt.take() {
                self.actions.push_back(Action::Abort { id, slot: i });
            }
            if self.slots[i].state != SlotState::Closed {
                self.set_state(
                    i,
                    SlotState::Closed,
                    now,
                    None,
                    None,
                    "closed by close()".into(),
                );
            }
        }
    }

    /// The next thing the shell must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next thing to deliver to the user.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Client::handle_timeout`] next (None: no timer needed).
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.phase != Phase::Running {
            return None;
        }
        self.slots
            .iter()
            .filter_map(|s| match s.state {
                SlotState::Waiting => s.next_attempt_at,
                SlotState::Connecting | SlotState::Open => self
                    .config
                    .idle_timeout_ms
                    .map(|t| s.last_activity.saturating_add(t)),
                _ => None,
            })
            .min()
    }

    /// Time passed: starts due attempts and turns silent connections into losses.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.phase != Phase::Running {
            return;
        }
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            match slot.state {
                SlotState::Waiting if slot.next_attempt_at.is_some_and(|t| t <= now) => {
                    self.counters.reconnects += 1;
                    self.connect(i, None, false, now);
                }
                SlotState::Connecting | SlotState::Open => {
                    let Some(idle) = self.config.idle_timeout_ms else {
                        continue;
                    };
                    if now.saturating_sub(slot.last_activity) < idle {
                        continue;
                    }
                    let id = slot.attempt.expect("in-flight slot has an attempt");
                    self.actions.push_back(Action::Abort { id, slot: i });
                    let what = if slot.state == SlotState::Open {
                        "no data"
                    } else {
                        "no response"
                    };
                    let msg = format!(
                        "{what} for {} s (idleTimeoutMs); the connection is presumed dead",
                        idle as f64 / 1000.0
                    );
                    self.lose(i, ErrorCode::IdleTimeout, msg, None, None, now);
                }
                _ => {}
            }
        }
    }

    fn current(&self, id: u64, states: &[SlotState]) -> Option<usize> {
        if self.phase != Phase::Running {
            return None;
        }
        self.slots
            .iter()
            .position(|s| s.attempt == Some(id) && states.contains(&s.state))
    }

    /// The response headers of attempt `id` arrived (with the body, for a non-200).
    pub fn handle_response(&mut self, id: u64, head: ResponseHead, now: Millis) {
        let Some(i) = self.current(id, &[SlotState::Connecting]) else {
            return;
        };
        self.slots[i].last_activity = now;
        self.slots[i].http_status = Some(head.status);
        if let Some(final_url) = head.final_url.as_deref() {
            let requested = self.slots[i].requested_url.clone();
            if !final_url.is_empty() && !policy::same_origin(&requested, final_url) {
                let msg = format!(
                    "the request to {requested} was redirected to another origin ({final_url}); browsers strip the Authorization header on such a redirect, so the stream cannot be read from here. Point the client at a same-origin relay that holds the token, or run it in Node/a worker without that limit"
                );
                self.fail(
                    i,
                    ErrorCode::CrossOriginRedirect,
                    msg,
                    Some(head.status),
                    now,
                );
                return;
            }
        }
        let (verdict, code) = policy::classify(head.status);
        match verdict {
            Verdict::Read => {
                let slot = &mut self.slots[i];
                slot.framer.reset();
                slot.opened_at = Some(now);
                slot.has_opened = true;
                slot.redirect_hops = 0;
                slot.unauthorized_in_a_row = 0;
                self.set_state(
                    i,
                    SlotState::Open,
                    now,
                    Some(200),
                    None,
                    "connected; reading records".into(),
                );
            }
            Verdict::Follow => {
                let target = head
                    .location
                    .as_deref()
                    .and_then(|l| policy::resolve_location(&self.slots[i].requested_url, l));
                let Some(target) = target else {
                    let msg = format!(
                        "redirect ({}) without a usable Location header ({:?})",
                        head.status,
                        head.location.unwrap_or_default()
                    );
                    self.lose(i, ErrorCode::BadRedirect, msg, Some(head.status), None, now);
                    return;
                };
                if self.slots[i].redirect_hops >= MAX_REDIRECTS {
                    let msg = format!(
                        "more than {MAX_REDIRECTS} redirects in a row (last to {target}); waiting before retrying"
                    );
                    self.slots[i].redirect_hops = 0;
                    self.lose(
                        i,
                        ErrorCode::TooManyRedirects,
                        msg,
                        Some(head.status),
                        None,
                        now,
                    );
                    return;
                }
                self.slots[i].redirect_hops += 1;
                self.connect(i, Some(target), false, now);
            }
            Verdict::RefreshToken => {
                let msg =
                    policy::describe_status(401, policy::error_description(&head.body).as_deref());
                self.slots[i].unauthorized_in_a_row += 1;
                if self.slots[i].unauthorized_in_a_row == 1 {
                    self.error(code, msg, Some(i), Some(401), false);
                    self.counters.reconnects += 1;
                    self.connect(i, None, true, now);
                } else {
                    let msg = format!(
                        "{msg}; the fresh token was refused too (a static token string cannot be refreshed: pass a function as token)"
                    );
                    self.lose(i, code, msg, Some(401), None, now);
                }
            }
            Verdict::Retry => {
                let detail = policy::error_description(&head.body);
                let msg = policy::describe_status(head.status, detail.as_deref());
                let retry_after = head.retry_after.as_deref().and_then(|v| {
                    policy::retry_after_ms(v, head.date.as_deref(), head.wall_clock_ms)
                });
                self.lose(i, code, msg, Some(head.status), retry_after, now);
            }
            Verdict::Fatal => {
                let detail = policy::error_description(&head.body);
                let msg = policy::describe_status(head.status, detail.as_deref());
                self.fail(i, code, msg, Some(head.status), now);
            }
        }
    }

    /// A chunk of the 200 body of attempt `id`. Hits come out as one [`Event::Hits`].
    pub fn handle_data(&mut self, id: u64, data: &[u8], now: Millis) {
        let Some(i) = self.current(id, &[SlotState::Open]) else {
            return;
        };
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear(i);
        let Client {
            slots,
            dedup,
            counters,
            events,
            ..
        } = self;
        let slot = &mut slots[i];
        slot.last_activity = now;
        slot.bytes += data.len() as u64;
        counters.bytes += data.len() as u64;
        let mut sink = RecordSink {
            slot: i,
            max_record_bytes: self.config.max_record_bytes,
            batch: &mut batch,
            dedup,
            counters,
            events,
            gzip_failure: None,
        };
        slot.framer.push(data, &mut sink);
        let gzip_failure = sink.gzip_failure.take();
        let n = batch.len() as u64;
        slot.hits += n;
        if batch.is_empty() {
            self.batch = batch;
        } else {
            batch.finish();
            self.events.push_back(Event::Hits(batch));
        }
        if let Some(message) = gzip_failure {
            // The rest of this body is unreadable: end the connection like any loss.
            self.actions.push_back(Action::Abort { id, slot: i });
            let msg = format!("the body is gzip but cannot be inflated ({message})");
            self.lose(i, ErrorCode::GzipError, msg, None, None, now);
        }
    }

    /// The server ended the 200 body of attempt `id`: a loss, not a close.
    pub fn handle_end(&mut self, id: u64, now: Millis) {
        let Some(i) = self.current(id, &[SlotState::Open]) else {
            return;
        };
        self.lose(
            i,
            ErrorCode::StreamEnded,
            "the server ended the stream".into(),
            None,
            None,
            now,
        );
    }

    /// Attempt `id` failed without a (complete) response: network error, reset, CORS.
    pub fn handle_failure(&mut self, id: u64, message: &str, now: Millis) {
        let Some(i) = self.current(id, &[SlotState::Connecting, SlotState::Open]) else {
            return;
        };
        let msg = if self.slots[i].state == SlotState::Open {
            format!("the connection broke mid-stream ({message})")
        } else {
            format!("request failed: {message}")
        };
        self.lose(i, ErrorCode::NetworkError, msg, None, None, now);
    }

    /// The token for attempt `id` could not be had (provider threw, rejected, or returned
    /// something unusable); the attempt counts as failed and is retried later.
    pub fn handle_token_error(&mut self, id: u64, message: &str, now: Millis) {
        let Some(i) = self.current(id, &[SlotState::Connecting]) else {
            return;
        };
        let msg = format!("could not get an access token: {message}");
        self.lose(i, ErrorCode::TokenError, msg, None, None, now);
    }

    /// A snapshot of the counters and of every slot.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            hits: c.hits,
            bytes: c.bytes,
            duplicates: c.duplicates,
            malformed: c.malformed,
            oversized: c.oversized,
            invalid_utf8: c.invalid_utf8,
            truncated: c.truncated,
            reconnects: c.reconnects,
            connects: c.connects,
            slots: self
                .slots
                .iter()
                .map(|s| SlotStats {
                    state: s.state,
                    since: s.since,
                    http_status: s.http_status,
                    next_attempt_at: s.next_attempt_at,
                    reason: s.reason.clone(),
                    hits: s.hits,
                    bytes: s.bytes,
                    connects: s.connects,
                    failures: s.failures,
                })
                .collect(),
        }
    }

    /// Hands a delivered [`Event::Hits`] batch back, so that its buffers are reused for the
    /// next chunk instead of growing new ones. Optional; a very large batch is dropped.
    pub fn recycle(&mut self, batch: Batch) {
        if batch.json.capacity() <= KEEP_BATCH_BYTES
            && batch.json.capacity() > self.batch.json.capacity()
        {
            self.batch = batch;
        }
    }

    /// Frees the big buffers (de-duplication memory, record buffers, the spare batch) once
    /// the client is finished ([`Client::close`] or a fatal error); does nothing before.
    pub fn release_buffers(&mut self) {
        if !self.is_finished() {
            return;
        }
        self.dedup.release();
        self.batch = Batch::default();
        let max = self.config.max_record_bytes;
        for slot in &mut self.slots {
            slot.framer = Framer::new(max);
        }
    }

    /// How many hit ids the de-duplication memory holds now.
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    fn connect(&mut self, i: usize, url: Option<String>, refresh_token: bool, now: Millis) {
        let id = self.next_id;
        self.next_id += 1;
        let redirect = url.is_some();
        let url = url.unwrap_or_else(|| self.config.request_url(!self.slots[i].has_opened));
        let slot = &mut self.slots[i];
        slot.attempt = Some(id);
        slot.requested_url = url.clone();
        slot.last_activity = now;
        slot.next_attempt_at = None;
        slot.opened_at = None;
        slot.connects += 1;
        self.counters.connects += 1;
        let reason = if redirect {
            format!("following a redirect to {url}")
        } else if refresh_token {
            "retrying at once with a fresh token after 401".to_string()
        } else if slot.connects == 1 {
            "connecting".to_string()
        } else {
            "reconnecting after the wait".to_string()
        };
        self.actions.push_back(Action::Connect(ConnectRequest {
            id,
            slot: i,
            url,
            refresh_token,
        }));
        self.set_state(i, SlotState::Connecting, now, None, None, reason);
    }

    /// The wait before the next attempt after the `failures`-th failure in a row.
    fn backoff(&mut self, failures: u32) -> u64 {
        let c = &self.config;
        let grown = c
            .reconnect_delay_ms
            .saturating_mul(1u64 << failures.saturating_sub(1).min(30))
            .min(c.max_reconnect_delay_ms);
        let jitter_range = c.reconnect_jitter_ms;
        let jitter = if jitter_range == 0 {
            0
        } else {
            self.next_random() % (jitter_range + 1)
        };
        grown + jitter
    }

    fn next_random(&mut self) -> u64 {
        // SplitMix64: tiny, seedable, good enough to spread reconnects.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// How long a connection must have stayed open for its loss to count as a first failure.
    fn stable_after_ms(&self) -> u64 {
        (2 * self.config.reconnect_delay_ms).max(60_000)
    }

    fn lose(
        &mut self,
        i: usize,
        code: ErrorCode,
        message: String,
        http_status: Option<u16>,
        retry_after_ms: Option<u64>,
        now: Millis,
    ) {
        let stable = self.stable_after_ms();
        let slot = &mut self.slots[i];
        slot.attempt = None;
        if slot.state == SlotState::Open {
            let left = slot.framer.finish();
            if left > 0 {
                self.counters.truncated += 1;
                self.error(
                    ErrorCode::TruncatedRecord,
                    format!("an incomplete record of {left} bytes was discarded when the connection ended"),
                    Some(i),
                    None,
                    false,
                );
            }
        }
        let slot = &mut self.slots[i];
        if slot
            .opened_at
            .is_some_and(|t| now.saturating_sub(t) >= stable)
        {
            slot.failures = 0;
        }
        slot.failures = slot.failures.saturating_add(1);
        let failures = slot.failures;
        let mut wait = self.backoff(failures);
        if let Some(ra) = retry_after_ms {
            wait = wait.max(ra);
        }
        let slot = &mut self.slots[i];
        slot.next_attempt_at = Some(now + wait);
        slot.opened_at = None;
        self.error(code, message.clone(), Some(i), http_status, false);
        let reason = format!(
            "{message}; next attempt in {} s",
            (wait as f64 / 100.0).round() / 10.0
        );
        self.set_state(i, SlotState::Waiting, now, http_status, Some(wait), reason);
    }

    fn fail(
        &mut self,
        i: usize,
        code: ErrorCode,
        message: String,
        http_status: Option<u16>,
        now: Millis,
    ) {
        self.phase = Phase::Failed;
        self.error(code, message.clone(), Some(i), http_status, true);
        for j in 0..self.slots.len() {
            if let Some(id) = self.slots[j].attempt.take() {
                if j != i {
                    self.actions.push_back(Action::Abort { id, slot: j });
                }
            }
            self.slots[j].next_attempt_at = None;
            let reason = if j == i {
                message.clone()
            } else {
                format!("stopped because connection {i} failed: {message}")
            };
            let status = if j == i { http_status } else { None };
            self.set_state(j, SlotState::Failed, now, status, None, reason);
        }
    }

    fn set_state(
        &mut self,
        i: usize,
        state: SlotState,
        now: Millis,
        http_status: Option<u16>,
        retry_in_ms: Option<u64>,
        reason: String,
    ) {
        let slot = &mut self.slots[i];
        slot.state = state;
        slot.since = now;
        slot.reason = reason.clone();
        self.events.push_back(Event::Status(StatusEvent {
            slot: i,
            state,
            http_status,
            retry_in_ms,
            reason,
        }));
    }

    fn error(
        &mut self,
        code: ErrorCode,
        message: String,
        slot: Option<usize>,
        http_status: Option<u16>,
        fatal: bool,
    ) {
        self.events.push_back(Event::Error(ErrorEvent {
            code,
            message,
            slot,
            http_status,
            fatal,
        }));
    }
}

/// Receives the framer's records and turns them into batch entries and error events.
struct RecordSink<'a> {
    slot: usize,
    max_record_bytes: usize,
    batch: &'a mut Batch,
    dedup: &'a mut Dedup,
    counters: &'a mut Counters,
    events: &'a mut VecDeque<Event>,
    gzip_failure: Option<String>,
}

impl RecordSink<'_> {
    fn report(&mut self, code: ErrorCode, message: String) {
        self.events.push_back(Event::Error(ErrorEvent {
            code,
            message,
            slot: Some(self.slot),
            http_status: None,
            fatal: false,
        }));
    }
}

/// The first characters of a record, for error messages.
fn preview(record: &[u8]) -> String {
    let text = String::from_utf8_lossy(&record[..record.len().min(80)]);
    if record.len() > 80 {
        format!("{text}…")
    } else {
        text.into_owned()
    }
}

impl FrameSink for RecordSink<'_> {
    fn record(&mut self, record: &[u8]) {
        let mark = self.batch.json.len();
        // The narrow region so far is `[` alone, or `[r,…,r`.
        if mark > 1 {
            self.batch.json.push(b',');
        }
        let start = self.batch.json.len();
        // Filled only for a record with invalid UTF-8 (no allocation otherwise).
        let mut repaired = Vec::new();
        match scan_record(record, &mut repaired) {
            Ok(scanned) => {
                let info = scanned.info;
                if let Some(key) = info.hit_key {
                    if !self.dedup.insert(key) {
                        self.batch.json.truncate(mark);
                        self.counters.duplicates += 1;
                        return;
                    }
                }
                write_with_quoted_ids(scanned.text, &info, &mut self.batch.json);
                if info.replaced_invalid_utf8 {
                    self.counters.invalid_utf8 += 1;
                    self.report(
                        ErrorCode::InvalidUtf8,
                        format!(
                            "a record with invalid UTF-8 was delivered with U+FFFD in place of the bad bytes: {}",
                            preview(record)
                        ),
                    );
                }
                self.counters.hits += 1;
                self.batch.push_info(mark, start, &info);
            }
            Err(e) => {
                self.batch.json.truncate(mark);
                self.counters.malformed += 1;
                self.report(
                    ErrorCode::MalformedRecord,
                    format!("malformed record skipped ({e}): {}", preview(record)),
                );
            }
        }
    }

    fn oversized(&mut self, bytes: u64) {
        self.counters.oversized += 1;
        self.report(
            ErrorCode::OversizedRecord,
            format!(
                "a record of {bytes} bytes exceeds maxRecordBytes ({}) and was skipped",
                self.max_record_bytes
            ),
        );
    }

    fn gzip_error(&mut self, message: &str) {
        self.gzip_failure.get_or_insert_with(|| message.to_string());
    }
}
