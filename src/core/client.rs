//! The client state machine: a pool of connection slots sharing one configuration, one
//! de-duplication memory and one set of counters.
//!
//! The client owns every decision about a connection attempt; a host (the wasm shell, the
//! native relay) only carries out what [`Client::poll_output`] says and reports back what
//! happened, with the time:
//!
//! ```text
//! host                                   client
//!  start(now) ─────────────────────────▶
//!             ◀── Output::Connect {attempt, url}      get a token, send the GET
//!  handle_response(attempt, head) ─────▶
//!             ◀── Output::ReadBody {attempt}          200: stream the body
//!             ◀── Output::ReadErrorBody {attempt}     non-200: read a little of it
//!  handle_data(attempt, chunk, sink) ──▶ records ──▶ sink.hit(…) (de-duplicated)
//!  handle_end / handle_failure ────────▶
//!             ◀── Output::Event(Status waiting, retry in 60 s)
//!             ◀── Output::Wait(Some(t))               arm one timer for t
//!  handle_timeout(t) ──────────────────▶
//!             ◀── Output::Connect {…}                 the next attempt
//! ```
//!
//! Each slot walks `Idle -> Connecting -> Open -> Waiting -> Connecting …`; `Closed` and
//! `Failed` are final. The one rule that matters (KA-16598): after any loss, a slot's next
//! attempt is at least `reconnect_delay` later. The only immediate follow-ups are a redirect
//! hop (the same attempt, continued) and the first retry after a 401 with a fresh token (a
//! refused request held no slot).

use std::collections::VecDeque;
use std::fmt;

use super::config::{Config, TokenSource};
use super::dedup::Dedup;
use super::framer::{FrameSink, Framer};
use super::policy::{self, Verdict};
use super::record::{RecordInfo, RecordScanner};
use super::time::{millis, Duration, Human, Instant};

pub use super::policy::ErrorCode;

/// Redirects followed in a row before the attempt counts as failed.
pub const MAX_REDIRECTS: u8 = 5;

/// The most of a non-200 body the client asks the host to read, for its error message.
pub const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Names one connection attempt (one request, redirect hops get a new one). Answers about an
/// attempt that is no longer current (aborted, superseded) are ignored, so a host never has to
/// track which of its requests still matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(u64);

impl AttemptId {
    /// The number, for hosts that must hand it through an untyped boundary (JavaScript).
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The id `n` handed back by such a host.
    pub const fn from_raw(n: u64) -> AttemptId {
        AttemptId(n)
    }
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt #{}", self.0)
    }
}

/// Names one connection slot: `info.connection` in JavaScript, 0-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(u8);

impl SlotId {
    /// The slot's index, 0-based.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Slot `i` (hosts and tests; `i` < 256).
    pub const fn new(i: u8) -> SlotId {
        SlotId(i)
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection {}", self.0)
    }
}

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
    /// The `state` string of the public APIs.
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

/// The state of the whole client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Created, not started.
    Idle,
    /// Started: slots connect, read and wait.
    Running,
    /// Closed by the user. Final.
    Closed,
    /// Stopped by a fatal error. Final.
    Failed,
}

impl ClientState {
    /// The `state` string of the public APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Running => "running",
            ClientState::Closed => "closed",
            ClientState::Failed => "failed",
        }
    }
}

/// A request the host must make now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Names this attempt in every `handle_*` call about it.
    pub attempt: AttemptId,
    /// The slot it is for.
    pub slot: SlotId,
    /// The full URL, query parameters included.
    pub url: String,
    /// The previous attempt got 401: a token provider must be asked for a new token.
    pub refresh_token: bool,
}

/// One step the host must carry out, or the end of the steps for now.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Get a token (when the configuration has a source), then send a GET to the URL with
    /// [`Client::request_headers`], without following redirects, and report the response
    /// head with [`Client::handle_response`] or a failure with [`Client::handle_failure`].
    Connect(ConnectRequest),
    /// The 200 response was accepted: stream its body into [`Client::handle_data`] until
    /// [`Client::handle_end`] or [`Client::handle_failure`].
    ReadBody {
        /// The attempt.
        attempt: AttemptId,
        /// Its slot.
        slot: SlotId,
    },
    /// Read at most `limit` bytes of the non-200 body (the server's explanation), then hand
    /// them (or what could be read) to [`Client::handle_error_body`] and drop the rest.
    ReadErrorBody {
        /// The attempt.
        attempt: AttemptId,
        /// Its slot.
        slot: SlotId,
        /// The most bytes to read.
        limit: usize,
    },
    /// Stop the request or body read of `attempt` and release it (idle timeout, fatal error,
    /// close, an unreadable body, a redirect's body). Harmless when it already ended.
    Abort {
        /// The attempt.
        attempt: AttemptId,
        /// Its slot.
        slot: SlotId,
    },
    /// Something to tell the user.
    Event(Event),
    /// Nothing more to do now: call [`Client::handle_timeout`] at this instant (`None`: no
    /// timer is needed; cancel any that is armed).
    Wait(Option<Instant>),
}

/// The parts of a response head the policy needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseHead {
    /// HTTP status code.
    pub status: u16,
    /// `Location` header (redirects are followed by the client, never by the host).
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
}

/// A change of a slot's state, for `onStatus`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    /// The slot.
    pub slot: SlotId,
    /// New state.
    pub state: SlotState,
    /// The HTTP status behind the change, when there is one.
    pub http_status: Option<u16>,
    /// While `Waiting`: the wait actually scheduled.
    pub retry_in: Option<Duration>,
    /// Why, in words a user can act on (while waiting, ending with when the next attempt is).
    pub reason: String,
    /// Why, without when the next attempt is: `reason` except while waiting, for a host that
    /// shows `retry_in` as a live countdown beside it.
    pub cause: String,
}

/// A problem, for `onError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorEvent {
    /// Machine-readable kind.
    pub code: ErrorCode,
    /// What happened and what to do.
    pub message: String,
    /// The slot, when it concerns one.
    pub slot: Option<SlotId>,
    /// HTTP status, when there is one.
    pub http_status: Option<u16>,
    /// True when the client stopped for good.
    pub fatal: bool,
}

/// Something to tell the user (hits go to the [`HitSink`] instead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A slot changed state.
    Status(StatusEvent),
    /// A problem (fatal or not).
    Error(ErrorEvent),
}

/// Receives each new hit while [`Client::handle_data`] runs: the host's fast path.
pub trait HitSink {
    /// One validated record that is not a duplicate. `text` is the record's JSON as received
    /// (valid UTF-8; invalid bytes replaced by U+FFFD; ids bare, as on the wire); `info` has
    /// the key fields and where the ids are.
    fn hit(&mut self, slot: SlotId, text: &[u8], info: &RecordInfo);
}

/// Per-slot figures, part of [`Stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotStats {
    /// The slot.
    pub slot: SlotId,
    /// Current state.
    pub state: SlotState,
    /// When the slot entered it.
    pub since: Instant,
    /// Last HTTP status seen.
    pub http_status: Option<u16>,
    /// While waiting: when the next attempt is due.
    pub next_attempt_at: Option<Instant>,
    /// Why it is in this state (as in the last status event; while waiting it ends with when
    /// the next attempt is).
    pub reason: String,
    /// Why it is in this state without when the next attempt is: `reason` less its schedule,
    /// for a host that shows `next_attempt_at` as a live countdown beside it.
    pub cause: String,
    /// Hits delivered from this slot.
    pub hits: u64,
    /// Body bytes received on this slot.
    pub bytes: u64,
    /// Requests made by this slot (redirect hops included).
    pub connects: u64,
    /// Failed attempts in a row (drives the growth of the wait).
    pub failures: u32,
}

/// Counters of the whole client.
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

/// Where the current attempt of a slot is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Waiting for the response head.
    Request,
    /// A non-200 head arrived; waiting for its body.
    ErrorBody,
    /// Reading a 200 body.
    Body,
}

struct Attempt {
    id: AttemptId,
    step: Step,
    /// The head of a non-200 response while its body is read.
    head: Option<ResponseHead>,
}

struct Slot {
    state: SlotState,
    since: Instant,
    attempt: Option<Attempt>,
    requested_url: String,
    http_status: Option<u16>,
    reason: String,
    /// `reason` without the time of the next attempt (see [`SlotStats::cause`]).
    cause: String,
    next_attempt_at: Option<Instant>,
    opened_at: Option<Instant>,
    /// Hits delivered by the current connection (a connection that delivered is a success).
    hits_this_connection: u64,
    last_activity: Instant,
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
    outputs: VecDeque<Output>,
    /// Scans the records (its scratch and the names it learned).
    scanner: RecordScanner,
}

impl Client {
    /// A client for `config`; `seed` drives the reconnect jitter and keys the duplicate
    /// filter's hash (any value; hosts pass a random one, tests a fixed one).
    pub fn new(config: Config, seed: u64) -> Self {
        let slots = (0..config.connections)
            .map(|_| Slot {
                state: SlotState::Idle,
                since: Instant::ZERO,
                attempt: None,
                requested_url: String::new(),
                http_status: None,
                reason: "not started".to_string(),
                cause: "not started".to_string(),
                next_attempt_at: None,
                opened_at: None,
                hits_this_connection: 0,
                last_activity: Instant::ZERO,
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
            outputs: VecDeque::new(),
            scanner: RecordScanner::default(),
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The headers of a request: pass the token the host got for it (checked here; a leading
    /// `Bearer ` is dropped), or `None` when the configuration has no token source.
    pub fn request_headers(
        &self,
        token: Option<&str>,
    ) -> Result<Vec<(&'static str, String)>, super::config::ConfigError> {
        let bare = token.map(super::config::validate_token).transpose()?;
        Ok(self.config.request_headers(bare.as_deref()))
    }

    /// Opens every slot now. Does nothing when already started, closed or failed.
    pub fn start(&mut self, now: Instant) {
        self.start_after(now, None);
    }

    /// Opens every slot, but when another holder of the same stream lost (or may have lost)
    /// its connection at `last_loss`, no sooner than `reconnect_delay` after it: Adobe still
    /// holds that connection's slot for about a minute (KA-16598). Used for hand-overs between
    /// tabs or relays. Does nothing when already started, closed or failed.
    pub fn start_after(&mut self, now: Instant, last_loss: Option<Instant>) {
        if self.phase != Phase::New {
            return;
        }
        self.phase = Phase::Running;
        for i in 0..self.slots.len() {
            match last_loss {
                Some(lost) if lost + self.config.reconnect_delay > now => {
                    let wait = self.jittered(self.config.reconnect_delay);
                    let at = lost + wait;
                    let left = at - now;
                    let slot = &mut self.slots[i];
                    slot.next_attempt_at = Some(at);
                    let cause = format!(
                        "taking over a connection lost {} ago; the service still holds its slot (KA-16598)",
                        Human(now - lost)
                    );
                    let reason = format!(
                        "taking over a connection lost {} ago; the service still holds its slot, so the first attempt waits {} (KA-16598)",
                        Human(now - lost),
                        Human(left)
                    );
                    self.set_state(
                        i,
                        SlotState::Waiting,
                        now,
                        None,
                        Some((left, cause)),
                        reason,
                    );
                }
                _ => self.connect(i, None, false, now),
            }
        }
    }

    /// The state of the whole client.
    pub fn state(&self) -> ClientState {
        match self.phase {
            Phase::New => ClientState::Idle,
            Phase::Running => ClientState::Running,
            Phase::Closed => ClientState::Closed,
            Phase::Failed => ClientState::Failed,
        }
    }

    /// True once `close` was called or a fatal error stopped the client.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Closed | Phase::Failed)
    }

    /// Aborts everything; every slot ends `Closed`. Idempotent; later input is ignored.
    pub fn close(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        for i in 0..self.slots.len() {
            self.retire_attempt(i);
            self.slots[i].next_attempt_at = None;
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

    /// The next step for the host. Ends with [`Output::Wait`] once nothing else is queued.
    pub fn poll_output(&mut self) -> Output {
        self.outputs
            .pop_front()
            .unwrap_or_else(|| Output::Wait(self.poll_timeout()))
    }

    /// True when [`Client::poll_output`] has more than the final [`Output::Wait`] to give.
    pub fn has_pending_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    /// When [`Client::handle_timeout`] is due next (None: no timer needed). The same instant
    /// that [`Output::Wait`] carries.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase != Phase::Running {
            return None;
        }
        self.slots
            .iter()
            .filter_map(|s| match s.state {
                SlotState::Waiting => s.next_attempt_at,
                SlotState::Connecting | SlotState::Open => {
                    self.config.idle_timeout.map(|t| s.last_activity + t)
                }
                _ => None,
            })
            .min()
    }

    /// Time passed: starts due attempts and turns silent connections into losses.
    pub fn handle_timeout(&mut self, now: Instant) {
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
                    let Some(idle) = self.config.idle_timeout else {
                        continue;
                    };
                    if now - slot.last_activity < idle {
                        continue;
                    }
                    let what = if slot.state == SlotState::Open {
                        "no data"
                    } else {
                        "no response"
                    };
                    let msg = format!(
                        "{what} for {} (idleTimeoutMs); the connection is presumed dead",
                        Human(idle)
                    );
                    self.retire_attempt(i);
                    self.lose(i, ErrorCode::IdleTimeout, msg, None, None, now);
                }
                _ => {}
            }
        }
    }

    /// The slot whose current attempt is `id`, at one of `steps`.
    fn current(&self, id: AttemptId, steps: &[Step]) -> Option<usize> {
        if self.phase != Phase::Running {
            return None;
        }
        self.slots.iter().position(|s| {
            s.attempt
                .as_ref()
                .is_some_and(|a| a.id == id && steps.contains(&a.step))
        })
    }

    /// The response head of attempt `id` arrived.
    pub fn handle_response(&mut self, id: AttemptId, head: ResponseHead, now: Instant) {
        let Some(i) = self.current(id, &[Step::Request]) else {
            return;
        };
        let slot = SlotId(i as u8);
        self.slots[i].last_activity = now;
        self.slots[i].http_status = Some(head.status);
        if let Some(final_url) = head.final_url.as_deref() {
            let requested = self.slots[i].requested_url.clone();
            if !final_url.is_empty() && !policy::same_origin(&requested, final_url) {
                let msg = format!(
                    "the request to {requested} was redirected to another origin ({final_url}); browsers strip the Authorization header on such a redirect, so the stream cannot be read from here. Point the client at a same-origin relay that holds the token, or run it in Node/a worker without that limit"
                );
                self.retire_attempt(i);
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
        match policy::classify(head.status).0 {
            Verdict::Read => {
                let s = &mut self.slots[i];
                s.framer.reset();
                s.opened_at = Some(now);
                s.hits_this_connection = 0;
                s.has_opened = true;
                s.redirect_hops = 0;
                s.unauthorized_in_a_row = 0;
                if let Some(a) = s.attempt.as_mut() {
                    a.step = Step::Body;
                }
                self.outputs
                    .push_back(Output::ReadBody { attempt: id, slot });
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
                // The body of a redirect says nothing the client needs.
                self.retire_attempt(i);
                self.follow(i, &head, now);
            }
            _ => {
                if let Some(a) = self.slots[i].attempt.as_mut() {
                    a.step = Step::ErrorBody;
                    a.head = Some(head);
                }
                self.outputs.push_back(Output::ReadErrorBody {
                    attempt: id,
                    slot,
                    limit: ERROR_BODY_LIMIT,
                });
            }
        }
    }

    fn follow(&mut self, i: usize, head: &ResponseHead, now: Instant) {
        let target = head
            .location
            .as_deref()
            .and_then(|l| policy::resolve_location(&self.slots[i].requested_url, l));
        let Some(target) = target else {
            let msg = format!(
                "redirect ({}) without a usable Location header ({:?})",
                head.status,
                head.location.clone().unwrap_or_default()
            );
            self.lose(i, ErrorCode::BadRedirect, msg, Some(head.status), None, now);
            return;
        };
        if !self.config.may_send_credentials_to(&target) {
            let msg = format!(
                "the stream redirected ({}) to {target}, which is not an origin the credentials may go to (the stream's own, or one listed in redirectOrigins; never a downgrade from https to http); the client stopped rather than send the token there. If this host is Adobe's, add its origin to redirectOrigins",
                head.status
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

    /// The body (or its first bytes) of the non-200 response of attempt `id`: the client
    /// now judges the response.
    pub fn handle_error_body(&mut self, id: AttemptId, body: &[u8], now: Instant) {
        let Some(i) = self.current(id, &[Step::ErrorBody]) else {
            return;
        };
        let head = self.slots[i]
            .attempt
            .take()
            .and_then(|a| a.head)
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_LIMIT)]);
        let detail = policy::error_description(&body);
        let (verdict, code) = policy::classify(head.status);
        match verdict {
            Verdict::RefreshToken => self.unauthorized(i, detail.as_deref(), now),
            Verdict::Retry => {
                let msg = policy::describe_status(head.status, detail.as_deref());
                let retry_after = head.retry_after.as_deref().and_then(|v| {
                    policy::retry_after_ms(v, head.date.as_deref(), head.wall_clock_ms)
                });
                self.lose(i, code, msg, Some(head.status), retry_after, now);
            }
            _ => {
                let msg = policy::describe_status(head.status, detail.as_deref());
                self.fail(i, code, msg, Some(head.status), now);
            }
        }
    }

    fn unauthorized(&mut self, i: usize, detail: Option<&str>, now: Instant) {
        let code = ErrorCode::Unauthorized;
        let base = policy::describe_status(401, detail);
        let slot = &mut self.slots[i];
        slot.unauthorized_in_a_row += 1;
        match self.config.token {
            TokenSource::Refreshable if slot.unauthorized_in_a_row == 1 => {
                self.error(code, base, Some(i), Some(401), false);
                self.counters.reconnects += 1;
                self.connect(i, None, true, now);
            }
            TokenSource::Refreshable => {
                let msg = format!("{base}; the fresh token from the token source was refused too: check its credentials and scope");
                self.lose(i, code, msg, Some(401), None, now);
            }
            TokenSource::Fixed => {
                let msg = format!("{base}; the configured token was refused and a fixed token string cannot be refreshed: pass a function as token that fetches a new one");
                self.lose(i, code, msg, Some(401), None, now);
            }
            TokenSource::None => {
                let msg = format!("{base}; no token is configured (the token option): set one, or point url at a relay that adds it");
                self.lose(i, code, msg, Some(401), None, now);
            }
        }
    }

    /// A chunk of the 200 body of attempt `id`. New hits go to `sink` before this returns;
    /// problems with records come out of [`Client::poll_output`].
    pub fn handle_data<S: HitSink>(
        &mut self,
        id: AttemptId,
        data: &[u8],
        now: Instant,
        sink: &mut S,
    ) {
        let Some(i) = self.current(id, &[Step::Body]) else {
            return;
        };
        let Client {
            slots,
            dedup,
            counters,
            outputs,
            scanner,
            config,
            ..
        } = self;
        let slot = &mut slots[i];
        slot.last_activity = now;
        slot.bytes += data.len() as u64;
        counters.bytes += data.len() as u64;
        let mut records = RecordSink {
            slot: SlotId(i as u8),
            max_record_bytes: config.max_record_bytes,
            sink,
            dedup,
            counters,
            outputs,
            scanner,
            delivered: 0,
            gzip_failure: None,
        };
        slot.framer.push(data, &mut records);
        let delivered = records.delivered;
        let gzip_failure = records.gzip_failure.take();
        slot.hits += delivered;
        slot.hits_this_connection += delivered;
        if let Some(message) = gzip_failure {
            // The rest of this body is unreadable: end the connection like any loss.
            self.retire_attempt(i);
            let msg = format!("the body is gzip but cannot be inflated ({message})");
            self.lose(i, ErrorCode::GzipError, msg, None, None, now);
        }
    }

    /// The server ended the 200 body of attempt `id`: a loss, not a close.
    pub fn handle_end(&mut self, id: AttemptId, now: Instant) {
        let Some(i) = self.current(id, &[Step::Body]) else {
            return;
        };
        self.slots[i].attempt = None;
        self.lose(
            i,
            ErrorCode::StreamEnded,
            "the server ended the stream".into(),
            None,
            None,
            now,
        );
    }

    /// Attempt `id` failed without a (complete) response: network error, reset, CORS, or the
    /// body broke off.
    pub fn handle_failure(&mut self, id: AttemptId, message: &str, now: Instant) {
        let Some(i) = self.current(id, &[Step::Request, Step::ErrorBody, Step::Body]) else {
            return;
        };
        let step = self.slots[i].attempt.take().map(|a| a.step);
        let msg = if step == Some(Step::Body) {
            format!("the connection broke mid-stream ({message})")
        } else {
            format!("request failed: {message}")
        };
        self.lose(i, ErrorCode::NetworkError, msg, None, None, now);
    }

    /// The token for attempt `id` could not be had (provider threw, rejected, or returned
    /// something unusable); the attempt counts as failed and is retried later.
    pub fn handle_token_error(&mut self, id: AttemptId, message: &str, now: Instant) {
        let Some(i) = self.current(id, &[Step::Request]) else {
            return;
        };
        self.slots[i].attempt = None;
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
                .enumerate()
                .map(|(i, s)| SlotStats {
                    slot: SlotId(i as u8),
                    state: s.state,
                    since: s.since,
                    http_status: s.http_status,
                    next_attempt_at: s.next_attempt_at,
                    reason: s.reason.clone(),
                    cause: s.cause.clone(),
                    hits: s.hits,
                    bytes: s.bytes,
                    connects: s.connects,
                    failures: s.failures,
                })
                .collect(),
        }
    }

    /// Frees the big buffers (de-duplication memory, record buffers) once the client is
    /// finished ([`Client::close`] or a fatal error); does nothing before.
    pub fn release_buffers(&mut self) {
        if !self.is_finished() {
            return;
        }
        self.dedup.release();
        self.scanner = RecordScanner::default();
        let max = self.config.max_record_bytes;
        for slot in &mut self.slots {
            slot.framer = Framer::new(max);
        }
    }

    /// Remembers hit ids that another holder of the same stream already delivered (the tab
    /// or relay this client takes over from), so the records the service re-sends when this
    /// client resumes are dropped as duplicates rather than delivered twice.
    pub fn remember_hits(&mut self, keys: impl IntoIterator<Item = super::record::HitKey>) {
        for key in keys {
            self.dedup.insert(key);
        }
    }

    /// How many hit ids the de-duplication memory holds now.
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    /// Ends the host's work on slot `i`'s current attempt, if any.
    fn retire_attempt(&mut self, i: usize) {
        if let Some(a) = self.slots[i].attempt.take() {
            self.outputs.push_back(Output::Abort {
                attempt: a.id,
                slot: SlotId(i as u8),
            });
        }
    }

    fn connect(&mut self, i: usize, url: Option<String>, refresh_token: bool, now: Instant) {
        let id = AttemptId(self.next_id);
        self.next_id += 1;
        let redirect = url.is_some();
        let url = url.unwrap_or_else(|| self.config.request_url(!self.slots[i].has_opened));
        let slot = &mut self.slots[i];
        slot.attempt = Some(Attempt {
            id,
            step: Step::Request,
            head: None,
        });
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
        self.outputs.push_back(Output::Connect(ConnectRequest {
            attempt: id,
            slot: SlotId(i as u8),
            url,
            refresh_token,
        }));
        self.set_state(i, SlotState::Connecting, now, None, None, reason);
    }

    /// `base` plus the random extra wait (never less than `base`).
    fn jittered(&mut self, base: Duration) -> Duration {
        let range = millis(self.config.reconnect_jitter);
        let jitter = if range == 0 {
            0
        } else {
            self.next_random() % (range + 1)
        };
        base + Duration::from_millis(jitter)
    }

    /// The wait before the next attempt after the `failures`-th failed attempt in a row.
    fn backoff(&mut self, failures: u32) -> Duration {
        let c = &self.config;
        let grown = millis(c.reconnect_delay)
            .saturating_mul(1u64 << failures.saturating_sub(1).min(30))
            .min(millis(c.max_reconnect_delay));
        self.jittered(Duration::from_millis(grown))
    }

    fn next_random(&mut self) -> u64 {
        // SplitMix64: tiny, seedable, good enough to spread reconnects.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// How long a connection must have stayed open to count as a success even if it
    /// delivered nothing (a quiet report suite).
    fn stable_after(&self) -> Duration {
        (2 * self.config.reconnect_delay).max(Duration::from_secs(60))
    }

    /// Slot `i` lost its connection (or its attempt failed); its attempt is already retired.
    fn lose(
        &mut self,
        i: usize,
        code: ErrorCode,
        message: String,
        http_status: Option<u16>,
        retry_after_ms: Option<u64>,
        now: Instant,
    ) {
        let stable = self.stable_after();
        let was_open = self.slots[i].state == SlotState::Open;
        if was_open {
            let left = self.slots[i].framer.finish();
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
        // A connection that delivered hits, or stayed open a good while, was a success: the
        // next wait is the plain delay again. Growth is for attempts that fail, so a flaky
        // link that keeps delivering never backs off past the service's resume window.
        let succeeded = was_open
            && (slot.hits_this_connection > 0 || slot.opened_at.is_some_and(|t| now - t >= stable));
        if succeeded {
            slot.failures = 0;
        }
        slot.failures = slot.failures.saturating_add(1);
        let failures = slot.failures;
        let mut wait = self.backoff(failures);
        if let Some(ra) = retry_after_ms {
            // Honoured up to the cap of the growing wait (documented with maxReconnectDelayMs).
            let ra = Duration::from_millis(ra).min(self.config.max_reconnect_delay);
            wait = wait.max(ra);
        }
        let slot = &mut self.slots[i];
        slot.next_attempt_at = Some(now + wait);
        slot.opened_at = None;
        self.error(code, message.clone(), Some(i), http_status, false);
        let reason = format!("{message}; next attempt in {}", Human(wait));
        self.set_state(
            i,
            SlotState::Waiting,
            now,
            http_status,
            Some((wait, message)),
            reason,
        );
    }

    fn fail(
        &mut self,
        i: usize,
        code: ErrorCode,
        message: String,
        http_status: Option<u16>,
        now: Instant,
    ) {
        self.phase = Phase::Failed;
        self.error(code, message.clone(), Some(i), http_status, true);
        for j in 0..self.slots.len() {
            self.retire_attempt(j);
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

    /// Moves slot `i` to `state` and queues its status event. `wait`, while waiting: the wait
    /// scheduled and the cause without it (`reason` says both).
    fn set_state(
        &mut self,
        i: usize,
        state: SlotState,
        now: Instant,
        http_status: Option<u16>,
        wait: Option<(Duration, String)>,
        reason: String,
    ) {
        let (retry_in, cause) = match wait {
            Some((wait, cause)) => (Some(wait), cause),
            None => (None, reason.clone()),
        };
        let slot = &mut self.slots[i];
        slot.state = state;
        slot.since = now;
        slot.reason = reason.clone();
        slot.cause = cause.clone();
        self.outputs
            .push_back(Output::Event(Event::Status(StatusEvent {
                slot: SlotId(i as u8),
                state,
                http_status,
                retry_in,
                reason,
                cause,
            })));
    }

    fn error(
        &mut self,
        code: ErrorCode,
        message: String,
        slot: Option<usize>,
        http_status: Option<u16>,
        fatal: bool,
    ) {
        self.outputs
            .push_back(Output::Event(Event::Error(ErrorEvent {
                code,
                message,
                slot: slot.map(|i| SlotId(i as u8)),
                http_status,
                fatal,
            })));
    }
}

/// Receives the framer's records: scans, de-duplicates, hands new hits to the host's sink
/// and reports bad records.
struct RecordSink<'a, S: HitSink> {
    slot: SlotId,
    max_record_bytes: usize,
    sink: &'a mut S,
    dedup: &'a mut Dedup,
    counters: &'a mut Counters,
    outputs: &'a mut VecDeque<Output>,
    scanner: &'a mut RecordScanner,
    delivered: u64,
    gzip_failure: Option<String>,
}

impl<S: HitSink> RecordSink<'_, S> {
    fn report(&mut self, code: ErrorCode, message: String) {
        self.outputs
            .push_back(Output::Event(Event::Error(ErrorEvent {
                code,
                message,
                slot: Some(self.slot),
                http_status: None,
                fatal: false,
            })));
    }
}

/// The first characters of a record, for error messages.
fn preview(record: &[u8]) -> String {
    let mut end = record.len().min(80);
    // Cut on a character boundary when the record is valid UTF-8 there.
    while end < record.len() && end > 0 && (record[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    let text = String::from_utf8_lossy(&record[..end]);
    if end < record.len() {
        format!("{text}…")
    } else {
        text.into_owned()
    }
}

impl<S: HitSink> FrameSink for RecordSink<'_, S> {
    fn record(&mut self, record: &[u8]) {
        match self.scanner.scan(record) {
            Ok(scanned) => {
                if let Some(key) = scanned.info.hit_key {
                    if !self.dedup.insert(key) {
                        self.counters.duplicates += 1;
                        return;
                    }
                }
                let info = scanned.info;
                self.sink.hit(self.slot, scanned.text, &info);
                self.counters.hits += 1;
                self.delivered += 1;
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
            }
            Err(e) => {
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
