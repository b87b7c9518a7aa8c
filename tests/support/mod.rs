//! Shared test support of the core: a virtual-time host for the sans-IO client (the client
//! and storm tests), and the record path's oracles and gzip builder (the framing and client
//! tests).
//!
//! The fuzz crate compiles this same file as `livestream_fuzz::support`, so that its targets
//! check against the same oracles: it may use only what both have, the core crate,
//! miniz_oxide and std.

#![allow(dead_code)]

pub mod gzip;
pub mod oracles;

use livestream_wasm::core::record::write_with_quoted_ids;
use livestream_wasm::core::{
    AttemptId, Client, Config, ConnectRequest, Event, HitSink, Instant, Options, Output,
    RecordInfo, ResponseHead, SlotId, SlotState, StatusEvent,
};

/// Collects the hits a client hands over, as a host's sink would.
#[derive(Default)]
pub struct Hits {
    /// (slot, record text with the ids quoted as the web shell delivers them, key fields).
    pub got: Vec<(SlotId, String, RecordInfo)>,
    /// The texts exactly as the core handed them (ids bare, as on the wire).
    pub wire: Vec<String>,
}

impl HitSink for Hits {
    fn hit(&mut self, slot: SlotId, text: &[u8], info: &RecordInfo) {
        let mut quoted = Vec::new();
        write_with_quoted_ids(text, info, &mut quoted);
        self.got
            .push((slot, String::from_utf8(quoted).expect("UTF-8"), *info));
        self.wire
            .push(String::from_utf8(text.to_vec()).expect("UTF-8"));
    }
}

/// A host that runs a client on a virtual clock (ms): what the timer helpers below need.
/// The client tests' [`Harness`] is one, and so is the fuzz crate's host.
pub trait VirtualHost {
    /// The client it drives.
    fn client(&mut self) -> &mut Client;
    /// The virtual clock, in ms.
    fn clock(&mut self) -> &mut u64;
    /// Carries out what the client asked since the last call.
    fn drain(&mut self);

    /// Moves the clock to `t` (never back), fires the client's timer there and drains, as
    /// a host's timer would (the client ignores a call before its deadline).
    fn fire_at(&mut self, t: u64) {
        let now = (*self.clock()).max(t);
        *self.clock() = now;
        self.client().handle_timeout(Instant::from_millis(now));
        self.drain();
    }

    /// Fires, in order, every timer that falls due by `end`, each at its own time.
    fn fire_due_timers(&mut self, end: u64) {
        while let Some(t) = self.client().poll_timeout().map(Instant::as_millis) {
            if t > end {
                break;
            }
            self.fire_at(t);
        }
    }
}

/// Plays the host: keeps the clock, carries out every output and records it.
pub struct Harness {
    pub client: Client,
    pub now: u64,
    pub connects: Vec<(u64, ConnectRequest)>,
    pub aborts: Vec<(u64, AttemptId)>,
    /// Attempts whose body the client asked to read (200 accepted).
    pub reads: Vec<AttemptId>,
    pub events: Vec<Event>,
    pub sink: Hits,
    /// For each event: (drain number, time) — the order in which the host would see it.
    pub event_marks: Vec<(u64, u64)>,
    /// For each connect: the drain number.
    pub connect_marks: Vec<u64>,
    /// The instant of the last `Output::Wait`.
    pub wait: Option<Instant>,
    /// Error bodies the harness hands over when asked (per status), default empty.
    pub error_body: String,
    drains: u64,
}

pub const URL: &str = "https://livestream.example/api/1/stream/ep";

pub fn options() -> Options {
    Options {
        url: Some(URL.to_string()),
        ..Options::default()
    }
}

/// [`options`] without jitter, so that every wait is exact.
pub fn no_jitter() -> Options {
    Options {
        reconnect_jitter: ms(0),
        ..options()
    }
}

/// A response head with a `Retry-After` header.
pub fn retry_after(status: u16, value: &str) -> ResponseHead {
    ResponseHead {
        status,
        retry_after: Some(value.into()),
        ..ResponseHead::default()
    }
}

/// A redirect's response head.
pub fn redirect(status: u16, location: &str) -> ResponseHead {
    ResponseHead {
        status,
        location: Some(location.into()),
        ..ResponseHead::default()
    }
}

/// Milliseconds as the core's duration type.
pub fn ms(n: u64) -> Option<livestream_wasm::core::Duration> {
    Some(livestream_wasm::core::Duration::from_millis(n))
}

impl Harness {
    pub fn new(o: Options) -> Self {
        Self::with_seed(o, 7)
    }

    pub fn with_seed(o: Options, seed: u64) -> Self {
        let config = Config::new(o).expect("valid options");
        Harness {
            client: Client::new(config, seed),
            now: 0,
            connects: Vec::new(),
            aborts: Vec::new(),
            reads: Vec::new(),
            events: Vec::new(),
            sink: Hits::default(),
            event_marks: Vec::new(),
            connect_marks: Vec::new(),
            wait: None,
            error_body: String::new(),
            drains: 0,
        }
    }

    /// A harness whose client has started (connects made, outputs drained).
    pub fn started(o: Options) -> Self {
        let mut h = Self::new(o);
        h.start();
        h
    }

    /// The current time as the core's instant.
    pub fn at(&self) -> Instant {
        Instant::from_millis(self.now)
    }

    /// Carries out what the client asked since the last call. An error body is handed over
    /// at once (`error_body`), as a host would after reading it.
    pub fn drain(&mut self) {
        self.drains += 1;
        loop {
            match self.client.poll_output() {
                Output::Connect(c) => {
                    self.connects.push((self.now, c));
                    self.connect_marks.push(self.drains);
                }
                Output::Abort { attempt, .. } => self.aborts.push((self.now, attempt)),
                Output::ReadBody { attempt, .. } => self.reads.push(attempt),
                Output::ReadErrorBody { attempt, limit, .. } => {
                    let body = self.error_body.clone();
                    let body = &body.as_bytes()[..body.len().min(limit)];
                    let now = self.at();
                    self.client.handle_error_body(attempt, body, now);
                }
                Output::Event(e) => {
                    self.events.push(e);
                    self.event_marks.push((self.drains, self.now));
                }
                Output::Wait(t) => {
                    self.wait = t;
                    break;
                }
            }
        }
    }

    pub fn start(&mut self) {
        assert_eq!(
            self.client.state(),
            livestream_wasm::core::ClientState::Idle
        );
        let now = self.at();
        self.client.start(now);
        self.drain();
    }

    /// The next timer, in ms (what `Output::Wait` said).
    pub fn timeout(&self) -> Option<u64> {
        self.client.poll_timeout().map(Instant::as_millis)
    }

    /// Moves the clock forward, firing timers on the way as a host would, then the timer
    /// at the end (a host whose timer fires late).
    pub fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        self.fire_due_timers(end);
        self.fire_at(end);
    }

    /// Advances to the next timer and fires it.
    pub fn fire_next_timer(&mut self) {
        let t = self.timeout().expect("a timer is set");
        self.fire_at(t);
    }

    pub fn last_connect(&self) -> &ConnectRequest {
        &self.connects.last().expect("a connect").1
    }

    /// The latest attempt of `slot`.
    pub fn attempt(&self, slot: usize) -> AttemptId {
        self.connects
            .iter()
            .rev()
            .find(|(_, c)| c.slot.index() == slot)
            .expect("slot connected")
            .1
            .attempt
    }

    pub fn respond(&mut self, slot: usize, status: u16) {
        self.respond_with(
            slot,
            ResponseHead {
                status,
                ..ResponseHead::default()
            },
        );
    }

    pub fn respond_with(&mut self, slot: usize, head: ResponseHead) {
        let id = self.attempt(slot);
        let now = self.at();
        self.client.handle_response(id, head, now);
        self.drain();
    }

    /// A non-200 response whose body is `body`.
    pub fn respond_body(&mut self, slot: usize, head: ResponseHead, body: &str) {
        self.error_body = body.to_string();
        self.respond_with(slot, head);
        self.error_body.clear();
    }

    pub fn data(&mut self, slot: usize, bytes: &[u8]) {
        let id = self.attempt(slot);
        let now = self.at();
        self.client.handle_data(id, bytes, now, &mut self.sink);
        self.drain();
    }

    pub fn end(&mut self, slot: usize) {
        let id = self.attempt(slot);
        let now = self.at();
        self.client.handle_end(id, now);
        self.drain();
    }

    pub fn fail(&mut self, slot: usize, msg: &str) {
        let id = self.attempt(slot);
        let now = self.at();
        self.client.handle_failure(id, msg, now);
        self.drain();
    }

    pub fn statuses(&self) -> Vec<&StatusEvent> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Status(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    pub fn last_status(&self, slot: usize) -> &StatusEvent {
        self.statuses()
            .into_iter()
            .rev()
            .find(|s| s.slot.index() == slot)
            .expect("a status for the slot")
    }

    /// The wait the slot's last status announced, in ms.
    pub fn retry_in_ms(&self, slot: usize) -> Option<u64> {
        self.last_status(slot)
            .retry_in
            .map(|d| d.as_millis() as u64)
    }

    pub fn state(&self, slot: usize) -> SlotState {
        self.client.stats().slots[slot].state
    }

    /// All hits delivered so far, as record texts with the ids quoted.
    pub fn hits(&self) -> Vec<String> {
        self.sink.got.iter().map(|(_, t, _)| t.clone()).collect()
    }

    pub fn errors(&self) -> Vec<&livestream_wasm::core::ErrorEvent> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Error(x) => Some(x),
                _ => None,
            })
            .collect()
    }
}

impl VirtualHost for Harness {
    fn client(&mut self) -> &mut Client {
        &mut self.client
    }
    fn clock(&mut self) -> &mut u64 {
        &mut self.now
    }
    fn drain(&mut self) {
        Harness::drain(self);
    }
}

/// A realistic record line with the given ids (no terminator).
pub fn record(high: u64, low: u64) -> String {
    format!(
        r#"{{"reportSuite":"examplecomprod","hitIdHigh":{high},"hitIdLow":{low},"visIdHigh":1944017885723175213,"visIdLow":2512895455560210216,"timeGMT":1372782179,"receivedTimeGMT":1372782180,"pageName":"Page #8552","geoCity":"paris","evars":{{"evars":{{"eVar1":"Summer"}}}},"newField":[1,2,{{"x":null}}]}}"#
    )
}
