//! The one module that drives the sans-IO core: reqwest for HTTP, tokio for timers, one task
//! per attempt. The core decides everything (when to connect, to which URL, whether to read
//! a body, how to judge a status, when to wait and how long); this module only carries out
//! each [`Output`] and feeds back what happened, with `now` in milliseconds since the driver
//! started.

use bytes::Bytes;
use livestream_wasm::core::{
    AttemptId, Client, Event, HitSink, Instant, Output, RecordInfo, ResponseHead, SlotId, SlotState,
};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::fleet::OwnerLink;
use crate::hub::Hub;
use crate::metrics::{SlotView, StreamMetrics, UpstreamView};
use crate::tokens::{error_chain, Tokens};

/// A pending segment this big is published at once, whatever `--flush-ms` says.
const MAX_SEGMENT_BYTES: usize = 256 * 1024;

/// How often the slot view for `/metrics` is refreshed while nothing else changes.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);

/// What an attempt task reports back to the driver.
enum Input {
    Token { id: AttemptId, token: String },
    TokenError { id: AttemptId, message: String },
    Response { id: AttemptId, head: ResponseHead },
    ErrorBody { id: AttemptId, body: Vec<u8> },
    Data { id: AttemptId, data: Bytes },
    End { id: AttemptId },
    Failure { id: AttemptId, message: String },
}

/// What the core decided about a response whose head the attempt task reported.
enum Next {
    Body,
    ErrorBody(usize),
}

/// One attempt in flight: its task, and where to send the core's decision about its body.
struct InFlight {
    slot: SlotId,
    url: String,
    task: JoinHandle<()>,
    next: Option<oneshot::Sender<Next>>,
}

/// Collects the hits of one `handle_data` call as Live Stream wire text.
struct Collect {
    raw: Vec<u8>,
    ends: Vec<u32>,
}

impl HitSink for Collect {
    fn hit(&mut self, _slot: SlotId, text: &[u8], _info: &RecordInfo) {
        // The core hands each record as received, ids bare: forward it as is.
        self.raw.extend_from_slice(text);
        self.raw.extend_from_slice(b"\r\n");
        self.ends.push(self.raw.len() as u32);
    }
}

/// One upstream stream's driver.
pub struct Upstream {
    client: Client,
    tokens: Tokens,
    http: reqwest::Client,
    hub: Arc<Hub>,
    metrics: Arc<StreamMetrics>,
    quiet: bool,
    attempts: HashMap<AttemptId, InFlight>,
    /// The token each slot sent last (so that after a 401 IMS is asked for a new one).
    sent_tokens: HashMap<SlotId, String>,
    base: tokio::time::Instant,
    /// Records not yet published, and since when the oldest waits.
    pending: Collect,
    pending_since: Option<tokio::time::Instant>,
    flush: Duration,
    /// Fleet mode: this driver runs one slot for the relay that holds its lease; records go
    /// to the Redis Stream (fenced), not to the hub.
    owner: Option<OwnerLink>,
    /// Fleet mode: counters already added to the stream's view (deltas are added).
    reported: (u64, u64, u64, u64, u64),
    /// A request of this driver is under way or open (fleet mode: a loss must be recorded).
    connected: bool,
}

impl Upstream {
    /// A driver for `client`; nothing happens before [`Upstream::run`].
    pub fn new(
        client: Client,
        tokens: Tokens,
        http: reqwest::Client,
        hub: Arc<Hub>,
        metrics: Arc<StreamMetrics>,
        quiet: bool,
        flush: Duration,
    ) -> Upstream {
        Upstream {
            pending: Collect {
                raw: Vec::new(),
                ends: Vec::new(),
            },
            pending_since: None,
            flush,
            client,
            tokens,
            http,
            hub,
            metrics,
            quiet,
            attempts: HashMap::new(),
            sent_tokens: HashMap::new(),
            base: tokio::time::Instant::now(),
            owner: None,
            reported: (0, 0, 0, 0, 0),
            connected: false,
        }
    }

    /// Fleet mode: the driver of one slot owned by this relay (`client` has one slot);
    /// records go through `owner` to the Redis Stream.
    pub(crate) fn owned(mut self, owner: OwnerLink) -> Upstream {
        self.owner = Some(owner);
        self
    }

    /// Fleet mode: false once the lease may have expired; the driver then stops at once
    /// (it must never keep reading as a stale owner).
    fn lease_valid(&self) -> bool {
        self.owner.as_ref().is_none_or(|o| o.lease.valid())
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.base.elapsed().as_millis() as u64)
    }

    /// Runs until `shutdown` turns true: then closes the core (aborting every request, so
    /// that Live Stream sees the connection end and frees the slot) and the hub (ending every
    /// downstream stream cleanly).
    ///
    /// Fleet mode: also stops as soon as the lease may have expired; returns whether an
    /// upstream request was under way or open when it stopped (a loss to record).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> bool {
        let (tx, mut rx) = mpsc::channel::<Input>(64);
        let mut last_snapshot = tokio::time::Instant::now();
        self.base = tokio::time::Instant::now();
        match self.owner.as_ref().and_then(|o| o.last_loss_wall_ms) {
            // A hand-over: no sooner than reconnectDelayMs after the last loss (KA-16598).
            // The core's clock starts at 0 here, so the timeline is shifted back by the time
            // since the loss, which then sits at 0.
            Some(loss) => {
                let ago = wall_ms().saturating_sub(loss);
                let delay = self.client.config().reconnect_delay.as_millis() as u64;
                match self.base.checked_sub(Duration::from_millis(ago)) {
                    Some(base) if ago < delay => {
                        self.base = base;
                        let now = self.now();
                        self.client.start_after(now, Some(Instant::ZERO));
                    }
                    _ => self.client.start(self.now()),
                }
            }
            None => self.client.start(self.now()),
        }
        loop {
            if !self.lease_valid() {
                break;
            }
            let (wake, changed) = self.carry_out(&tx);
            if changed || last_snapshot.elapsed() >= SNAPSHOT_EVERY {
                self.snapshot();
                last_snapshot = tokio::time::Instant::now();
            }
            if *shutdown.borrow() {
                break;
            }
            let wake = wake.map(|t| self.base + Duration::from_millis(t.as_millis()));
            let flush_at = self.pending_since.map(|t| t + self.flush);
            let lease_end = self.owner.as_ref().map(|o| o.lease.deadline());
            tokio::select! {
                // Fleet mode: re-checked at the top of the loop (a renewal may have moved it).
                _ = tokio::time::sleep_until(lease_end.unwrap_or(self.base)), if lease_end.is_some() => {}
                _ = tokio::time::sleep_until(flush_at.unwrap_or(self.base)), if flush_at.is_some() => {
                    self.publish();
                }
                Some(input) = rx.recv() => {
                    // After a pause (SIGSTOP, a long GC-like stall) data may be waiting while
                    // the lease already expired: never read it as a stale owner.
                    if !self.lease_valid() {
                        break;
                    }
                    self.feed(input, &tx)
                }
                _ = tokio::time::sleep_until(wake.unwrap_or(self.base)), if wake.is_some() => {
                    let now = self.now();
                    self.client.handle_timeout(now);
                }
                _ = tokio::time::sleep(SNAPSHOT_EVERY) => {}
                r = shutdown.changed() => if r.is_err() { break },
            }
        }
        let now = self.now();
        self.client.close(now);
        self.carry_out(&tx);
        for (_, a) in self.attempts.drain() {
            a.task.abort();
        }
        self.publish();
        self.snapshot();
        if self.owner.is_none() {
            self.hub.close();
        }
        self.connected
    }

    /// Carries out every queued output of the core; returns its `Wait` instant and whether a
    /// slot changed state.
    fn carry_out(&mut self, tx: &mpsc::Sender<Input>) -> (Option<Instant>, bool) {
        let mut changed = false;
        loop {
            match self.client.poll_output() {
                Output::Connect(req) => {
                    self.attempts.retain(|_, a| !a.task.is_finished());
                    let refused = req
                        .refresh_token
                        .then(|| self.sent_tokens.get(&req.slot).cloned())
                        .flatten();
                    let (tokens, tx2, id) = (self.tokens.clone(), tx.clone(), req.attempt);
                    self.connected = true;
                    let mark = self.owner.as_ref().map(|o| o.mark_connecting());
                    let task = tokio::spawn(async move {
                        // Fleet mode: the fleet learns of the connection before Live Stream
                        // does, so a later owner never mistakes it for an old loss.
                        if let Some(mark) = mark {
                            if let Err(message) = mark.await {
                                let _ = tx2.send(Input::TokenError { id, message }).await;
                                return;
                            }
                        }
                        let input = match tokens.get(refused.as_deref()).await {
                            Ok(token) => Input::Token { id, token },
                            Err(message) => Input::TokenError { id, message },
                        };
                        let _ = tx2.send(input).await;
                    });
                    self.attempts.insert(
                        id,
                        InFlight {
                            slot: req.slot,
                            url: req.url,
                            task,
                            next: None,
                        },
                    );
                }
                Output::ReadBody { attempt, .. } => self.decide(attempt, Next::Body),
                Output::ReadErrorBody { attempt, limit, .. } => {
                    self.decide(attempt, Next::ErrorBody(limit))
                }
                Output::Abort { attempt, .. } => {
                    if let Some(a) = self.attempts.remove(&attempt) {
                        a.task.abort();
                    }
                }
                Output::Event(Event::Status(s)) => {
                    changed = true;
                    let live = matches!(s.state, SlotState::Connecting | SlotState::Open);
                    if self.connected && !live {
                        self.connected = false;
                        if let Some(o) = &self.owner {
                            o.record_loss(wall_ms());
                        }
                    }
                    if let Some(o) = &self.owner {
                        o.log_status(s.state.as_str(), s.http_status);
                    }
                    if !self.quiet {
                        let code = s.http_status.map(|c| format!(" ({c})")).unwrap_or_default();
                        eprintln!(
                            "livestream-relay: {} slot {} {}{code}: {}",
                            self.metrics.name,
                            s.slot.index(),
                            s.state.as_str(),
                            s.reason
                        );
                    }
                }
                Output::Event(Event::Error(e)) => {
                    if e.fatal {
                        changed = true;
                        self.metrics.upstream.lock().expect("metrics lock").failed =
                            Some(e.message.clone());
                    }
                    if !self.quiet {
                        eprintln!(
                            "livestream-relay: {} {}{}: {}",
                            self.metrics.name,
                            if e.fatal { "fatal " } else { "" },
                            e.code.as_str(),
                            e.message
                        );
                    }
                }
                Output::Wait(t) => return (t, changed),
            }
        }
    }

    /// Passes the core's decision about a response body to the attempt's task.
    fn decide(&mut self, attempt: AttemptId, next: Next) {
        if let Some(tx) = self.attempts.get_mut(&attempt).and_then(|a| a.next.take()) {
            let _ = tx.send(next);
        }
    }

    /// Hands one report from an attempt task to the core.
    fn feed(&mut self, input: Input, tx: &mpsc::Sender<Input>) {
        let now = self.now();
        match input {
            Input::Token { id, token } => {
                let Some(a) = self.attempts.get_mut(&id) else {
                    return;
                };
                match self.client.request_headers(Some(&token)) {
                    Ok(headers) => {
                        self.sent_tokens.insert(a.slot, token);
                        let (next_tx, next_rx) = oneshot::channel();
                        a.next = Some(next_tx);
                        a.task = tokio::spawn(request(
                            self.http.clone(),
                            id,
                            a.url.clone(),
                            headers,
                            tx.clone(),
                            next_rx,
                        ));
                    }
                    Err(e) => {
                        self.metrics.upstream_errors.fetch_add(1, Relaxed);
                        self.client.handle_token_error(id, &e.to_string(), now);
                    }
                }
            }
            Input::TokenError { id, message } => {
                self.metrics.upstream_errors.fetch_add(1, Relaxed);
                self.client.handle_token_error(id, &message, now);
            }
            Input::Response { id, head } => {
                self.metrics.saw_status(head.status);
                self.client.handle_response(id, head, now);
            }
            Input::ErrorBody { id, body } => self.client.handle_error_body(id, &body, now),
            Input::Data { id, data } => {
                self.metrics.bytes_in.fetch_add(data.len() as u64, Relaxed);
                let before = self.pending.ends.len();
                self.client.handle_data(id, &data, now, &mut self.pending);
                let added = self.pending.ends.len() - before;
                if added > 0 {
                    self.pending_since
                        .get_or_insert_with(tokio::time::Instant::now);
                }
                if self.pending.raw.len() >= MAX_SEGMENT_BYTES || self.flush.is_zero() {
                    self.publish();
                }
            }
            Input::End { id } => self.client.handle_end(id, now),
            Input::Failure { id, message } => {
                self.metrics.upstream_errors.fetch_add(1, Relaxed);
                self.client.handle_failure(id, &message, now);
            }
        }
    }

    /// Hands the pending records to the hub as one segment (compressed once for everyone).
    fn publish(&mut self) {
        self.pending_since = None;
        if self.pending.ends.is_empty() {
            return;
        }
        let raw = std::mem::replace(
            &mut self.pending.raw,
            Vec::with_capacity(MAX_SEGMENT_BYTES / 4),
        );
        let ends = std::mem::take(&mut self.pending.ends);
        self.metrics
            .records_in
            .fetch_add(ends.len() as u64, Relaxed);
        match &self.owner {
            Some(o) => o.append(raw, ends),
            None => self.hub.publish(raw, ends),
        }
    }

    /// Publishes the core's slot states and counters for `/metrics`, `/status`, `/healthz`.
    fn snapshot(&mut self) {
        let st = self.client.stats();
        let now = self.now();
        let mut u = self.metrics.upstream.lock().expect("metrics lock");
        if let Some(o) = &self.owner {
            // One slot of the stream's view; counters as deltas (one driver per ownership).
            let s = &st.slots[0];
            let view = SlotView {
                state: s.state.as_str(),
                http_status: s.http_status,
                reason: s.cause.clone(),
                retry_in_ms: s.next_attempt_at.map(|t| (t - now).as_millis() as u64),
            };
            if u.slots.len() <= o.slot {
                u.slots.resize(o.slot + 1, SlotView::default());
            }
            u.slots[o.slot] = view;
            let c = (
                st.reconnects,
                st.connects,
                st.duplicates,
                st.malformed,
                st.oversized,
            );
            let r = self.reported;
            u.reconnects += c.0 - r.0;
            u.connects += c.1 - r.1;
            u.duplicates += c.2 - r.2;
            u.malformed += c.3 - r.3;
            u.oversized += c.4 - r.4;
            drop(u);
            self.reported = c;
            return;
        }
        let failed = u.failed.take();
        *u = UpstreamView {
            slots: st
                .slots
                .iter()
                .map(|s| SlotView {
                    state: s.state.as_str(),
                    http_status: s.http_status,
                    reason: s.cause.clone(),
                    retry_in_ms: s.next_attempt_at.map(|t| (t - now).as_millis() as u64),
                })
                .collect(),
            failed,
            reconnects: st.reconnects,
            connects: st.connects,
            duplicates: st.duplicates,
            malformed: st.malformed,
            oversized: st.oversized,
        };
    }
}

/// Unix time in milliseconds (what the fleet records in Redis).
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One upstream request: send it, report the head, then read the body as the core decides
/// (all of a 200, a little of anything else). Cancelled by aborting the task: dropping the
/// response closes the connection, so Live Stream frees the slot.
async fn request(
    http: reqwest::Client,
    id: AttemptId,
    url: String,
    headers: Vec<(&'static str, String)>,
    tx: mpsc::Sender<Input>,
    next: oneshot::Receiver<Next>,
) {
    let mut req = http.get(&url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let message = error_chain(&e);
            let _ = tx.send(Input::Failure { id, message }).await;
            return;
        }
    };
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let head = ResponseHead {
        status: resp.status().as_u16(),
        location: header("location"),
        retry_after: header("retry-after"),
        date: header("date"),
        wall_clock_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64),
        final_url: None,
    };
    if tx.send(Input::Response { id, head }).await.is_err() {
        return;
    }
    // The core answers ReadBody, ReadErrorBody or Abort (which aborts this task).
    let Ok(next) = next.await else {
        return;
    };
    if let Next::ErrorBody(limit) = next {
        let mut body = Vec::new();
        while body.len() < limit {
            match resp.chunk().await {
                Ok(Some(c)) => body.extend_from_slice(&c),
                _ => break,
            }
        }
        body.truncate(limit);
        let _ = tx.send(Input::ErrorBody { id, body }).await;
        return;
    }
    loop {
        let input = match resp.chunk().await {
            Ok(Some(data)) => Input::Data { id, data },
            Ok(None) => Input::End { id },
            Err(e) => Input::Failure {
                id,
                message: error_chain(&e),
            },
        };
        let last = !matches!(input, Input::Data { .. });
        if tx.send(input).await.is_err() || last {
            return;
        }
    }
}
