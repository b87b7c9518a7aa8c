//! The one module that drives the sans-IO core: reqwest for HTTP, tokio for timers, one task
//! per attempt. The core decides everything (when to connect, to which URL, how to read a
//! status, when to wait and how long); this module only carries it out and feeds back what
//! happened, with `now` in milliseconds since the driver started.

use bytes::Bytes;
use livestream_wasm::core::{Action, Client, Event, ResponseHead};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::hub::Hub;
use crate::metrics::{SlotView, StreamMetrics, UpstreamView};
use crate::tokens::{error_chain, Tokens};

/// Largest error body read from a non-200 upstream response (for `error_description`).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// How often the slot view for `/metrics` is refreshed while nothing else changes.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);

/// What an attempt task reports back to the driver.
enum Input {
    Token { id: u64, token: String },
    TokenError { id: u64, message: String },
    Response { id: u64, head: ResponseHead },
    Data { id: u64, data: Bytes },
    End { id: u64 },
    Failure { id: u64, message: String },
}

/// One upstream stream's driver.
pub struct Upstream {
    /// Slot and URL of attempts waiting for their token.
    urls: HashMap<u64, (usize, String)>,
    /// The token each slot sent last (so that a 401 makes IMS issue a new one).
    sent_tokens: HashMap<usize, String>,
    /// The core client for this stream.
    pub client: Client,
    /// Where tokens come from.
    pub tokens: Tokens,
    /// The HTTP client (rustls, no redirects, no decompression).
    pub http: reqwest::Client,
    /// Where records go.
    pub hub: Arc<Hub>,
    /// Counters.
    pub metrics: Arc<StreamMetrics>,
    /// No log lines on stderr.
    pub quiet: bool,
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
    ) -> Upstream {
        Upstream {
            urls: HashMap::new(),
            sent_tokens: HashMap::new(),
            client,
            tokens,
            http,
            hub,
            metrics,
            quiet,
        }
    }
}

impl Upstream {
    /// Runs until `shutdown` turns true: then closes the core (aborting every request, so
    /// that Live Stream sees the connection end and frees the slot) and the hub (ending every
    /// downstream stream cleanly).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let base = Instant::now();
        let now = move || base.elapsed().as_millis() as u64;
        let (tx, mut rx) = mpsc::channel::<Input>(64);
        let mut tasks: HashMap<u64, JoinHandle<()>> = HashMap::new();
        let mut last_snapshot = Instant::now();
        self.client.start(now());
        loop {
            let changed = self.carry_out(&tx, &mut tasks);
            if changed || last_snapshot.elapsed() >= SNAPSHOT_EVERY {
                self.snapshot();
                last_snapshot = Instant::now();
            }
            if *shutdown.borrow() {
                break;
            }
            let wake = self
                .client
                .poll_timeout()
                .map(|t| base + Duration::from_millis(t));
            tokio::select! {
                Some(input) = rx.recv() => self.feed(input, now(), &tx, &mut tasks),
                _ = tokio::time::sleep_until(wake.unwrap_or(base)), if wake.is_some() => {
                    self.client.handle_timeout(now());
                }
                _ = tokio::time::sleep(SNAPSHOT_EVERY) => {}
                r = shutdown.changed() => if r.is_err() { break },
            }
        }
        self.client.close(now());
        self.carry_out(&tx, &mut tasks);
        for (_, t) in tasks.drain() {
            t.abort();
        }
        self.snapshot();
        self.hub.close();
    }

    /// Carries out what the core asks and delivers what it produced; true when a slot
    /// changed state.
    fn carry_out(
        &mut self,
        tx: &mpsc::Sender<Input>,
        tasks: &mut HashMap<u64, JoinHandle<()>>,
    ) -> bool {
        let mut changed = false;
        loop {
            let mut progressed = false;
            while let Some(action) = self.client.poll_action() {
                progressed = true;
                match action {
                    Action::Connect(req) => {
                        tasks.retain(|_, t| !t.is_finished());
                        self.urls.retain(|id, _| tasks.contains_key(id));
                        let refused = req
                            .refresh_token
                            .then(|| self.sent_tokens.get(&req.slot).cloned())
                            .flatten();
                        self.urls.insert(req.id, (req.slot, req.url));
                        let (tokens, tx, id) = (self.tokens.clone(), tx.clone(), req.id);
                        let task = tokio::spawn(async move {
                            let input = match tokens.get(refused.as_deref()).await {
                                Ok(token) => Input::Token { id, token },
                                Err(message) => Input::TokenError { id, message },
                            };
                            let _ = tx.send(input).await;
                        });
                        tasks.insert(id, task);
                    }
                    Action::Abort { id, .. } => {
                        self.urls.remove(&id);
                        if let Some(t) = tasks.remove(&id) {
                            t.abort();
                        }
                    }
                }
            }
            while let Some(event) = self.client.poll_event() {
                progressed = true;
                match event {
                    Event::Hits(batch) => {
                        let mut raw = Vec::with_capacity(batch.json.len() + 2 * batch.len());
                        let mut ends = Vec::with_capacity(batch.len());
                        for i in 0..batch.len() {
                            wire_record(batch.record(i), &mut raw);
                            raw.extend_from_slice(b"\r\n");
                            ends.push(raw.len() as u32);
                        }
                        self.metrics
                            .records_in
                            .fetch_add(ends.len() as u64, Relaxed);
                        self.hub.publish(raw, ends);
                        self.client.recycle(batch);
                    }
                    Event::Status(s) => {
                        changed = true;
                        if !self.quiet {
                            let code = s.http_status.map(|c| format!(" ({c})")).unwrap_or_default();
                            eprintln!(
                                "livestream-relay: {} slot {} {}{code}: {}",
                                self.metrics.name,
                                s.slot,
                                s.state.as_str(),
                                s.reason
                            );
                        }
                    }
                    Event::Error(e) => {
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
                }
            }
            if !progressed {
                return changed;
            }
        }
    }

    /// Publishes the core's slot states and counters for `/metrics`, `/status`, `/healthz`.
    fn snapshot(&self) {
        let st = self.client.stats();
        let mut u = self.metrics.upstream.lock().expect("metrics lock");
        let failed = u.failed.take();
        *u = UpstreamView {
            slots: st
                .slots
                .iter()
                .map(|s| SlotView {
                    state: s.state.as_str(),
                    http_status: s.http_status,
                    reason: s.reason.clone(),
                    retry_in_ms: s.next_attempt_at.map(|t| t.saturating_sub(s.since)),
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

    /// Hands one report from an attempt task to the core.
    fn feed(
        &mut self,
        input: Input,
        now: u64,
        tx: &mpsc::Sender<Input>,
        tasks: &mut HashMap<u64, JoinHandle<()>>,
    ) {
        match input {
            Input::Token { id, token } => match self.client.request_headers(&token) {
                Ok(headers) => {
                    let Some((slot, url)) = self.urls.remove(&id) else {
                        return;
                    };
                    self.sent_tokens.insert(slot, token);
                    let task =
                        tokio::spawn(request(self.http.clone(), id, url, headers, tx.clone()));
                    if let Some(old) = tasks.insert(id, task) {
                        old.abort();
                    }
                }
                Err(e) => {
                    self.metrics.upstream_errors.fetch_add(1, Relaxed);
                    self.client.handle_token_error(id, &e, now);
                }
            },
            Input::TokenError { id, message } => {
                self.metrics.upstream_errors.fetch_add(1, Relaxed);
                self.client.handle_token_error(id, &message, now);
            }
            Input::Response { id, head } => {
                self.metrics.saw_status(head.status);
                self.client.handle_response(id, head, now);
            }
            Input::Data { id, data } => {
                self.metrics.bytes_in.fetch_add(data.len() as u64, Relaxed);
                self.client.handle_data(id, &data, now);
            }
            Input::End { id } => self.client.handle_end(id, now),
            Input::Failure { id, message } => {
                self.metrics.upstream_errors.fetch_add(1, Relaxed);
                self.client.handle_failure(id, &message, now);
            }
        }
    }
}

/// One upstream request: send it, report the head, stream the body. Cancelled by aborting
/// the task (dropping the response closes the connection, so Live Stream frees the slot).
async fn request(
    http: reqwest::Client,
    id: u64,
    url: String,
    headers: Vec<(&'static str, String)>,
    tx: mpsc::Sender<Input>,
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
    let mut head = ResponseHead {
        status: resp.status().as_u16(),
        location: header("location"),
        retry_after: header("retry-after"),
        date: header("date"),
        wall_clock_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64),
        final_url: None,
        body: String::new(),
    };
    if head.status != 200 {
        let mut body = Vec::new();
        while body.len() < MAX_ERROR_BODY {
            match resp.chunk().await {
                Ok(Some(c)) => body.extend_from_slice(&c),
                _ => break,
            }
        }
        body.truncate(MAX_ERROR_BODY);
        head.body = String::from_utf8_lossy(&body).into_owned();
        let _ = tx.send(Input::Response { id, head }).await;
        return;
    }
    if tx.send(Input::Response { id, head }).await.is_err() {
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

/// The six 64-bit id fields, which Live Stream writes as bare JSON numbers.
const ID_FIELDS: [&str; 6] = [
    "hitIdHigh",
    "hitIdLow",
    "visIdHigh",
    "visIdLow",
    "mcVisIdHigh",
    "mcVisIdLow",
];

/// Appends a record as Live Stream writes it: the core's validated text with the id fields
/// as bare numbers again (the core quotes them for JavaScript).
fn wire_record(text: &str, out: &mut Vec<u8>) {
    let b = text.as_bytes();
    let mut i = 0;
    let mut depth = 0u32;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1]);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                if depth == 1 {
                    if let Some(n) = bare_id_at(&b[i..]) {
                        out.extend_from_slice(&b[i..i + n.0]);
                        out.extend_from_slice(&b[i + n.0 + 1..i + n.1 - 1]);
                        i += n.1;
                        continue;
                    }
                }
                in_str = true;
            }
            _ => {}
        }
        out.push(c);
        i += 1;
    }
}

/// At a top-level key: when it is `"<id field>":"<digits>"`, the length of `"<field>":` and
/// of the whole pair.
fn bare_id_at(s: &[u8]) -> Option<(usize, usize)> {
    for f in ID_FIELDS {
        let key_len = f.len() + 3;
        if s.len() > key_len + 1
            && s[1..].starts_with(f.as_bytes())
            && s[f.len() + 1] == b'"'
            && s[f.len() + 2] == b':'
            && s[key_len] == b'"'
        {
            let digits = s[key_len + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if digits > 0 && s.get(key_len + 1 + digits) == Some(&b'"') {
                return Some((key_len, key_len + digits + 2));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::wire_record;

    #[test]
    fn ids_become_bare_again_and_nothing_else_changes() {
        let core = r#"{"hitIdHigh":"18446744073709551615","pageName":"\"hitIdLow\":\"1\"","x":{"visIdHigh":"2"},"visIdLow":"7","mcVisIdLow":null}"#;
        let mut out = Vec::new();
        wire_record(core, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"hitIdHigh":18446744073709551615,"pageName":"\"hitIdLow\":\"1\"","x":{"visIdHigh":"2"},"visIdLow":7,"mcVisIdLow":null}"#
        );
    }
}
