//! Target (c): the client state machine, driven by a host whose every move comes from the
//! input bytes (responses of any status, body chunks, ends, failures, token errors, stale
//! answers about old attempts, timers fired on time or spuriously, close), on a virtual
//! clock. Invariants checked after every step:
//! - after a slot's loss (its `Waiting` status), its next connect is no sooner than the
//!   reconnect delay, and no sooner than the wait the status announced; a connect right
//!   after an attempt ended is only allowed for a redirect hop or the one immediate retry
//!   with a fresh token after a 401 (KA-16598);
//! - never more attempts in flight than `connections`, never two for one slot;
//! - every output names a known attempt; a body is read only after a 200;
//! - after `close`, nothing but the close's own events: no connect, no read, no timer;
//! - the web host's batch, asked for references into each chunk, gives every record that is
//!   a slice of the chunk as that slice with the id quotes put back.

use livestream_wasm::core::{
    AttemptId, Client, Config, Duration, Event, HitSink, Instant, Options, Output, RecordInfo,
    ResponseHead, SlotId, SlotState, TokenSource,
};

use livestream_wasm::crossing::{Batch, NOT_IN_CHUNK};

use crate::support::VirtualHost;

/// Checks the references of `batch`, fed `chunk`: the text it builds on demand holds each
/// record not marked [`NOT_IN_CHUNK`] as the chunk's bytes from its start with a `"` before
/// each of its quote offsets, and the others back to back as `json` keeps them.
fn check_references(batch: &mut Batch, chunk: &[u8]) {
    let n = batch.len();
    assert_eq!(batch.chunk_starts.len(), n, "one chunk start a record");
    assert_eq!(
        batch.quote_at.len(),
        if n > 0 { n + 1 } else { 0 },
        "quote_at has n + 1 entries"
    );
    let full = batch
        .materialize(chunk)
        .expect("the chunk it was fed")
        .to_vec();
    assert_eq!(full.len(), batch.text_len());
    let mut cut = 0;
    for i in 0..n {
        let text = &full[batch.starts[i] as usize..batch.ends[i] as usize];
        assert!(std::str::from_utf8(text).is_ok(), "hit text is not UTF-8");
        let quotes = &batch.quotes[batch.quote_at[i] as usize..batch.quote_at[i + 1] as usize];
        if batch.chunk_starts[i] == NOT_IN_CHUNK {
            assert!(quotes.is_empty(), "quotes for a record not in the chunk");
            assert_eq!(
                &batch.json[cut..cut + text.len()],
                text,
                "record {i} kept in json"
            );
            cut += text.len();
            continue;
        }
        let mut rebuilt = Vec::new();
        let mut at = batch.chunk_starts[i] as usize;
        for &q in quotes {
            rebuilt.extend_from_slice(&chunk[at..q as usize]);
            rebuilt.push(b'"');
            at = q as usize;
        }
        let end = batch.chunk_starts[i] as usize + text.len() - quotes.len();
        rebuilt.extend_from_slice(&chunk[at..end]);
        assert_eq!(rebuilt, text, "record {i} rebuilt from the chunk");
    }
}

/// Reads the input as a stream of small numbers; zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.byte() as usize % items.len()]
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// What happened to an attempt, as the host knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Request sent, no response yet.
    Requested,
    /// 200 accepted, body being read.
    Reading,
    /// Non-200 response, error body asked for.
    ErrorBody,
    /// Over (answered, ended, failed, aborted).
    Over,
}

/// How an attempt ended, for the immediate-connect exceptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndKind {
    Redirect,
    Unauthorized,
    Other,
}

struct Attempt {
    id: AttemptId,
    slot: usize,
    phase: Phase,
}

#[derive(Default, Clone, Copy)]
struct SlotTrack {
    /// When the slot's last attempt ended, and how.
    ended: Option<(u64, EndKind)>,
    /// The last `Waiting` status: (time, announced wait in ms).
    waiting: Option<(u64, u64)>,
    /// The slot's last connect was an immediate retry with a fresh token.
    last_refresh: bool,
    /// An attempt of the slot is in flight.
    busy: bool,
}

struct NoHits(u64);

impl HitSink for NoHits {
    fn hit(&mut self, _slot: SlotId, text: &[u8], _info: &RecordInfo) {
        assert!(std::str::from_utf8(text).is_ok(), "hit text is not UTF-8");
        self.0 += 1;
    }
}

struct Host {
    client: Client,
    now: u64,
    delay: u64,
    connections: usize,
    attempts: Vec<Attempt>,
    slots: Vec<SlotTrack>,
    closed: bool,
    hits: NoHits,
    /// The last outputs with their times, for failure messages.
    log: std::collections::VecDeque<(u64, Output)>,
}

const STATUSES: &[u16] = &[
    200, 200, 200, 200, 204, 301, 302, 307, 308, 400, 401, 401, 403, 404, 409, 410, 413, 429, 500,
    502, 503, 504,
];

const CHUNKS: &[&[u8]] = &[
    b"{\"hitIdHigh\":1,\"hitIdLow\":1}\r\n",
    b"{\"hitIdHigh\":1,\"hitIdLow\":2,\"x\":\"\xc3\xa9\"}\r\n",
    b"{\"hitIdHigh\":1,\"hitIdLow\":1}\r\n{\"hitIdHigh\":2,\"hitIdLow\":3}\n",
    b"{\"hitIdHigh\":9,\"hitI",
    b"dLow\":9}\r",
    b"\n",
    b"\r\n\r\n",
    b"not json\r\n",
    b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff",
    b"{\"hitIdLow\":\"12\",\"hitIdHigh\":-1}\r\n",
];

impl Host {
    fn at(&self) -> Instant {
        Instant::from_millis(self.now)
    }

    /// Marks attempt `k` as over (no-op when its answer already ended it).
    fn end_attempt(&mut self, k: usize, kind: EndKind) {
        if matches!(self.attempts[k].phase, Phase::Over | Phase::ErrorBody) {
            return;
        }
        self.attempts[k].phase = Phase::Over;
        let slot = self.attempts[k].slot;
        self.slots[slot].busy = false;
        self.slots[slot].ended = Some((self.now, kind));
    }

    fn find(&self, id: AttemptId) -> usize {
        self.attempts
            .iter()
            .position(|a| a.id == id)
            .unwrap_or_else(|| panic!("output names unknown {id}: {:?}", self.log))
    }

    /// Carries out the client's outputs, checking each.
    fn drain(&mut self) {
        loop {
            let out = self.client.poll_output();
            if self.log.len() == 32 {
                self.log.pop_front();
            }
            self.log.push_back((self.now, out.clone()));
            match out {
                Output::Connect(c) => {
                    assert!(!self.closed, "connect after close: {:?}", self.log);
                    let i = c.slot.index();
                    assert!(i < self.connections, "slot {i} out of range");
                    let t = self.slots[i];
                    assert!(
                        !t.busy,
                        "second attempt in flight for slot {i}: {:?}",
                        self.log
                    );
                    let immediate_ok = match t.ended {
                        Some((_, EndKind::Redirect)) => !c.refresh_token,
                        Some((_, EndKind::Unauthorized)) => c.refresh_token && !t.last_refresh,
                        _ => false,
                    };
                    if let (Some((lost, wait)), false) = (t.waiting, immediate_ok) {
                        assert!(
                            self.now >= lost + self.delay && self.now >= lost + wait,
                            "slot {i} reconnects {} ms after a loss (delay {}, announced {wait}): {:?}",
                            self.now - lost,
                            self.delay,
                            self.log
                        );
                    }
                    if let (Some((ended, _)), false) = (t.ended, immediate_ok) {
                        assert!(
                            self.now >= ended + self.delay,
                            "slot {i} reconnects {} ms after its attempt ended (delay {}): {:?}",
                            self.now - ended,
                            self.delay,
                            self.log
                        );
                    }
                    let busy = self.slots.iter().filter(|s| s.busy).count();
                    assert!(
                        busy < self.connections,
                        "more than {} attempts",
                        self.connections
                    );
                    self.slots[i].busy = true;
                    self.slots[i].last_refresh = c.refresh_token;
                    self.slots[i].waiting = None;
                    self.attempts.push(Attempt {
                        id: c.attempt,
                        slot: i,
                        phase: Phase::Requested,
                    });
                }
                Output::ReadBody { attempt, slot } => {
                    assert!(!self.closed, "read after close");
                    let k = self.find(attempt);
                    assert_eq!(self.attempts[k].slot, slot.index());
                    assert_eq!(self.attempts[k].phase, Phase::Reading, "read without a 200");
                }
                Output::ReadErrorBody { attempt, limit, .. } => {
                    assert!(!self.closed, "error body read after close");
                    let k = self.find(attempt);
                    assert_eq!(
                        self.attempts[k].phase,
                        Phase::ErrorBody,
                        "error body unasked"
                    );
                    let body = b"{\"error_description\":\"why\"}";
                    let body = &body[..body.len().min(limit)];
                    let now = self.at();
                    // Handed over at once, as a host does after reading it.
                    self.client.handle_error_body(attempt, body, now);
                }
                Output::Abort { attempt, .. } => {
                    let k = self.find(attempt);
                    self.end_attempt(k, EndKind::Other);
                }
                Output::Event(e) => {
                    if let Event::Status(s) = &e {
                        if s.state == SlotState::Waiting {
                            let wait = s.retry_in.map_or(0, |d| d.as_millis() as u64);
                            assert!(
                                wait >= self.delay,
                                "announced wait {wait} ms < reconnect delay {}",
                                self.delay
                            );
                            self.slots[s.slot.index()].waiting = Some((self.now, wait));
                        }
                    }
                }
                Output::Wait(t) => {
                    if self.closed {
                        assert_eq!(t, None, "a timer after close");
                    }
                    break;
                }
            }
        }
    }

    /// An attempt in one of `phases`, chosen by the input.
    fn choose(&self, input: &mut Bytes, phases: &[Phase]) -> Option<usize> {
        let live: Vec<usize> = (0..self.attempts.len())
            .filter(|&k| phases.contains(&self.attempts[k].phase))
            .collect();
        (!live.is_empty()).then(|| live[input.byte() as usize % live.len()])
    }

    /// Fires the timers due by `end` on time, then lets the clock reach `end`.
    fn advance_to(&mut self, end: u64) {
        self.fire_due_timers(end);
        self.now = self.now.max(end);
    }

    fn step(&mut self, input: &mut Bytes) {
        let op = input.byte() % 16;
        match op {
            0 | 1 => {
                let ms = input.byte() as u64 * 10;
                self.advance_to(self.now + ms);
            }
            2 => {
                let ms = input.byte() as u64 * 100;
                self.advance_to(self.now + ms);
            }
            3 => {
                let target = self.now + self.delay + input.pick(&[0u64, 1, 2]) - 1;
                self.advance_to(target);
            }
            4 => {
                if let Some(t) = self.client.poll_timeout().map(Instant::as_millis) {
                    self.advance_to(t.max(self.now));
                }
            }
            5..=7 => {
                let Some(k) = self.choose(input, &[Phase::Requested]) else {
                    return;
                };
                let status = input.pick(STATUSES);
                let location = match input.byte() % 4 {
                    0 => None,
                    1 => Some("https://livestream.example/api/1/stream/other".to_string()),
                    2 => Some("https://evil.example/steal".to_string()),
                    _ => Some("/api/1/stream/ep?x=1".to_string()),
                };
                let retry_after = match input.byte() % 4 {
                    0 => Some("5".to_string()),
                    1 => Some("100000".to_string()),
                    2 => Some("Wed, 21 Oct 2015 07:28:00 GMT".to_string()),
                    _ => None,
                };
                let redirect = (300..400).contains(&status) && location.is_some();
                let head = ResponseHead {
                    status,
                    location,
                    retry_after,
                    ..ResponseHead::default()
                };
                let id = self.attempts[k].id;
                if status == 200 {
                    self.attempts[k].phase = Phase::Reading;
                } else {
                    let kind = if redirect {
                        EndKind::Redirect
                    } else if status == 401 {
                        EndKind::Unauthorized
                    } else {
                        EndKind::Other
                    };
                    // The request is answered: it no longer holds the slot's connection
                    // (the error body, if asked for, is read at once in the drain).
                    self.end_attempt(k, kind);
                    self.attempts[k].phase = Phase::ErrorBody;
                }
                let now = self.at();
                self.client.handle_response(id, head, now);
                self.drain();
                if self.attempts[k].phase == Phase::ErrorBody {
                    self.attempts[k].phase = Phase::Over;
                }
            }
            8..=10 => {
                let Some(k) = self.choose(input, &[Phase::Reading]) else {
                    return;
                };
                let mut chunk = Vec::new();
                for _ in 0..1 + input.byte() % 4 {
                    chunk.extend_from_slice(input.pick(CHUNKS));
                }
                let (id, now) = (self.attempts[k].id, self.at());
                let mut batch = Batch::default();
                batch.reference_input(&chunk);
                self.client.handle_data(id, &chunk, now, &mut batch);
                batch.finish();
                check_references(&mut batch, &chunk);
                self.hits.0 += batch.len() as u64;
                self.drain();
            }
            11 => {
                let Some(k) = self.choose(input, &[Phase::Reading]) else {
                    return;
                };
                let (id, now) = (self.attempts[k].id, self.at());
                self.end_attempt(k, EndKind::Other);
                self.client.handle_end(id, now);
                self.drain();
            }
            12 => {
                let Some(k) = self.choose(input, &[Phase::Requested, Phase::Reading]) else {
                    return;
                };
                let (id, now) = (self.attempts[k].id, self.at());
                self.end_attempt(k, EndKind::Other);
                if input.byte().is_multiple_of(2) {
                    self.client.handle_failure(id, "network error", now);
                } else {
                    self.client.handle_token_error(id, "provider threw", now);
                }
                self.drain();
            }
            13 => {
                // A stale answer about an attempt that is over: must be ignored.
                let Some(k) = self.choose(input, &[Phase::Over]) else {
                    return;
                };
                let (id, now) = (self.attempts[k].id, self.at());
                match input.byte() % 4 {
                    0 => self.client.handle_response(
                        id,
                        ResponseHead {
                            status: 200,
                            ..ResponseHead::default()
                        },
                        now,
                    ),
                    1 => self.client.handle_data(id, CHUNKS[0], now, &mut self.hits),
                    2 => self.client.handle_end(id, now),
                    _ => self.client.handle_failure(id, "late", now),
                }
                self.drain();
            }
            14 => {
                // A host that fires the timer early or twice.
                self.fire_at(self.now);
            }
            _ => {
                if input.byte().is_multiple_of(4) {
                    let now = self.at();
                    self.client.close(now);
                    self.closed = true;
                    // The close's own outputs (aborts, `Closed` statuses) come now.
                    self.drain_close();
                }
            }
        }
    }

    /// Drains right after `close`: aborts and status events are expected; the timer must be
    /// cleared; then nothing more ever.
    fn drain_close(&mut self) {
        loop {
            match self.client.poll_output() {
                Output::Abort { attempt, .. } => {
                    let k = self.find(attempt);
                    self.end_attempt(k, EndKind::Other);
                }
                Output::Event(_) => {}
                Output::Wait(t) => {
                    assert_eq!(t, None, "a timer after close");
                    break;
                }
                other => panic!("{other:?} during close"),
            }
        }
        assert_eq!(self.client.poll_timeout(), None, "a timer after close");
    }
}

impl VirtualHost for Host {
    fn client(&mut self) -> &mut Client {
        &mut self.client
    }
    fn clock(&mut self) -> &mut u64 {
        &mut self.now
    }
    fn drain(&mut self) {
        Host::drain(self);
    }
}

/// Target (c): a client with options from the first bytes, then host steps from the rest.
pub fn client(data: &[u8]) {
    let mut input = Bytes(data);
    let connections = 1 + input.byte() as usize % 4;
    let delay = input.pick(&[10u64, 10, 50, 1000, 60_000]);
    let jitter = input.pick(&[0u64, 5, 1000]);
    let max_delay = delay * input.pick(&[1u64, 4, 16]);
    let idle = input.pick(&[0u64, 10, 5000, 120_000]);
    let token = input.pick(&[
        TokenSource::None,
        TokenSource::Fixed,
        TokenSource::Refreshable,
    ]);
    let options = Options {
        url: Some("https://livestream.example/api/1/stream/ep".to_string()),
        token,
        max_connections: Some(8),
        connections: Some(connections as u64),
        reconnect_delay: Some(Duration::from_millis(delay)),
        reconnect_jitter: Some(Duration::from_millis(jitter)),
        max_reconnect_delay: Some(Duration::from_millis(max_delay)),
        idle_timeout: Some(Duration::from_millis(idle)),
        max_record_bytes: Some(1000),
        dedup_window: Some(4),
        ..Options::default()
    };
    let config = Config::new(options).expect("the fuzzer's options are valid");
    let seed = u64::from(input.byte());
    let mut host = Host {
        client: Client::new(config, seed),
        now: 1_000_000,
        delay,
        connections,
        attempts: Vec::new(),
        slots: vec![SlotTrack::default(); connections],
        closed: false,
        hits: NoHits(0),
        log: std::collections::VecDeque::new(),
    };
    let now = host.at();
    host.client.start(now);
    host.drain();
    let mut steps = 0;
    while !input.done() && steps < 2000 {
        host.step(&mut input);
        steps += 1;
    }
    // Time runs on: a closed or failed client stays silent, a running one keeps its rules.
    host.advance_to(host.now + 2 * max_delay + 1000);
    if host.closed {
        assert_eq!(host.client.poll_timeout(), None);
    }
}
