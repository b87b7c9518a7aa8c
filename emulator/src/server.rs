//! The HTTP/1.1 server: routing, the Live Stream endpoint, the admin API, static files.

use crate::body::{self, full, BodySender, Item, ResBody};
use crate::cli::{Fault, Options};
use crate::ims::{Check, Ims};
use crate::net::{Activity, TrackedIo};
use crate::rng::Rng;
use crate::script::{BodyScript, CannedResponse, Script, Then};
use crate::static_files;
use crate::stream::{Admission, Counters, Policy, Refusal, Reset, SlotUse, Stream};
use crate::util::{error_json, parse_query, query_get};
use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};

/// Records batched into one chunk at most.
const BATCH: usize = 256;
/// Closed connections remembered for `/admin/stats`.
const KEEP_CLOSED: usize = 1000;
/// Streams kept at once; beyond it the least recently used idle stream is forgotten.
const MAX_STREAMS: usize = 256;
/// Records remembered per slot for re-sending on resume (the cap of `--resend`).
const MAX_RESEND: usize = 1000;
/// Largest request body read (admin scripts, IMS forms); larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Whether `name` is a usable endpoint name.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A running emulator. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    app: Arc<App>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The seed in use (drawn from the clock when `--seed` was not given).
    pub fn seed(&self) -> u64 {
        self.app.seed
    }

    /// Stops accepting, ends every live stream and waits for the accept loop to finish.
    pub async fn shutdown(self) {
        self.app.kill_all("shutdown");
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Binds `opts.listen` and serves until [`Server::shutdown`].
pub async fn start(opts: Options) -> io::Result<Server> {
    opts.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seed = opts.seed.unwrap_or(wall.as_nanos() as u64);
    let app = Arc::new(App {
        seed,
        epoch_s: opts.epoch.map(|e| e as f64),
        started: Instant::now(),
        state: Mutex::new(State::default()),
        ims: opts.ims_client_id.clone().map(|id| {
            Ims::new(
                id,
                opts.ims_client_secret.clone().unwrap_or_default(),
                Duration::from_secs(opts.token_ttl_secs),
            )
        }),
        clients_refused: AtomicU64::new(0),
        idle_closed: AtomicU64::new(0),
        opts,
    });
    let (tx, mut rx) = watch::channel(false);
    let app2 = app.clone();
    let clients = Arc::new(Semaphore::new(app.opts.max_clients));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (tcp, remote) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of file descriptors, typically: wait for some to free.
                            app2.log(format_args!("accept failed: {e}"));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = clients.clone().try_acquire_owned() else {
                        app2.clients_refused.fetch_add(1, Ordering::Relaxed);
                        refuse_client(tcp, &refusals, app2.opts.max_clients);
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let app3 = app2.clone();
                    let stop = rx.clone();
                    tokio::spawn(async move {
                        serve_client(app3, tcp, remote, stop).await;
                        drop(permit);
                    });
                }
                _ = async { let _ = rx.wait_for(|s| *s).await; } => break,
            }
        }
    });
    Ok(Server {
        addr,
        app,
        shutdown: tx,
        task,
    })
}

/// Refusals of connections beyond `--max-clients` written at once; beyond that a new
/// connection is closed without an answer.
const MAX_REFUSALS: usize = 64;

/// Answers a connection beyond `--max-clients` with a 503 and closes it.
fn refuse_client(tcp: tokio::net::TcpStream, refusals: &Arc<Semaphore>, max: usize) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return; // dropping the socket closes it
    };
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let body = error_json(
            "unavailable",
            &format!("the emulator serves at most {max} connections at once (--max-clients); try again later"),
        );
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
            body.len()
        );
        let mut tcp = tcp;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            tcp.write_all(head.as_bytes()).await?;
            tcp.write_all(body.as_bytes()).await?;
            tcp.shutdown().await
        })
        .await;
        drop(permit);
    });
}

/// Serves one TCP connection: HTTP/1.1 with a header read timeout, closed when idle for
/// `--idle-timeout-secs` with no request in progress, or at shutdown.
async fn serve_client(
    app: Arc<App>,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let act = Activity::new();
    let io = TokioIo::new(TrackedIo::new(tcp, act.clone()));
    let act2 = act.clone();
    let app2 = app.clone();
    let svc = service_fn(move |req| {
        let app = app2.clone();
        let act = act2.clone();
        async move {
            let busy = act.begin();
            let res = app.handle(req, remote, &act).await;
            Ok::<_, Infallible>(res.map(|b| body::guarded(b, busy)))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs_f64(app.opts.header_timeout_secs))
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let idle = Duration::from_secs_f64(app.opts.idle_timeout_secs);
    let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut conn => break,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            _ = tokio::time::sleep(tick) => {
                if !act.busy() && act.idle_ms() >= idle.as_millis() as u64 {
                    app.log(format_args!("{remote} idle for {} s: closed", idle.as_secs_f64()));
                    app.idle_closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// Tells a connection task to end, and why.
struct Kill {
    reason: Mutex<Option<&'static str>>,
    notify: Notify,
}

impl Kill {
    fn new() -> Arc<Kill> {
        Arc::new(Kill {
            reason: Mutex::new(None),
            notify: Notify::new(),
        })
    }
    fn fire(&self, reason: &'static str) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        self.notify.notify_one();
    }
    fn reason(&self) -> &'static str {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or("killed")
    }
}

/// A chaos fault as recorded in the stats.
#[derive(Clone, Debug, Serialize, PartialEq)]
struct FaultEvent {
    /// Index of the record (in this connection's sequence of records) the fault preceded.
    record: u64,
    kind: Fault,
}

/// One connection as reported by `/admin/stats`.
#[derive(Clone, Debug, Serialize)]
struct ConnInfo {
    id: u64,
    stream: String,
    slot: usize,
    #[serde(rename = "maxConnections")]
    max_connections: u8,
    remote: String,
    opened_ms: u64,
    closed_ms: Option<u64>,
    close_reason: Option<String>,
    records_sent: u64,
    bytes_sent: u64,
    resumed: bool,
    resent: usize,
    reset: Option<&'static str>,
    smoothing_bucket_secs: Option<u32>,
    scripted: bool,
    faults: Vec<FaultEvent>,
    /// Queued frames not yet known to be written: (frame number, records, bytes).
    #[serde(skip)]
    pending: VecDeque<(u64, u64, u64)>,
    /// The TCP connection's activity (None once the connection ended and was settled).
    #[serde(skip)]
    act: Option<Arc<Activity>>,
    /// Frames the TCP connection had yielded before this response.
    #[serde(skip)]
    base_frame: u64,
}

impl ConnInfo {
    /// Moves the frames hyper has written to the socket into `records_sent` and
    /// `bytes_sent`, which count only what was written, never what hyper may still
    /// discard (a chaos or admin drop makes hyper drop its unwritten buffer).
    fn reconcile(&mut self) {
        let Some(act) = &self.act else {
            return;
        };
        let written = act.flushed_frames().saturating_sub(self.base_frame);
        while let Some(&(frame, r, b)) = self.pending.front() {
            if frame > written {
                break;
            }
            self.pending.pop_front();
            self.records_sent += r;
            self.bytes_sent += b;
        }
    }
}

#[derive(Default)]
struct State {
    streams: HashMap<String, Stream>,
    scripts: HashMap<String, Script>,
    counters: HashMap<String, Counters>,
    conns: BTreeMap<u64, ConnInfo>,
    kills: HashMap<u64, (String, usize, Arc<Kill>)>,
    requests: u64,
    status_counts: BTreeMap<u16, u64>,
    early_refused: u64,
    concurrent_peak: usize,
    next_conn: u64,
}

struct App {
    opts: Options,
    seed: u64,
    epoch_s: Option<f64>,
    started: Instant,
    state: Mutex<State>,
    /// The IMS token endpoint, when `--ims-client-id` is set.
    ims: Option<Ims>,
    /// Connections refused because of `--max-clients`.
    clients_refused: AtomicU64,
    /// Connections closed because they were idle.
    idle_closed: AtomicU64,
}

/// Validated query parameters of a stream request.
struct Params {
    max: u8,
    smoothing: Option<u32>,
    reset: Option<Reset>,
}

fn json_response(status: u16, error: &str, description: &str) -> Response<ResBody> {
    let mut r = Response::new(full(error_json(error, description)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn value_response(status: u16, v: &Value) -> Response<ResBody> {
    let mut r = Response::new(full(format!("{v}\n")));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn default_error(status: u16) -> &'static str {
    match status {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        409 => "conflict",
        429 => "too_many_requests",
        500 => "server_error",
        503 => "unavailable",
        505 => "http_version_not_supported",
        300..=399 => "redirect",
        _ => "error",
    }
}

fn with_retry_after(mut r: Response<ResBody>, secs: Option<f64>) -> Response<ResBody> {
    if let Some(s) = secs {
        let s = s.ceil().max(1.0) as u64;
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// Paths that never get the public CORS headers: the admin API and IMS.
fn is_private_path(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/") || path == "/ims" || path.starts_with("/ims/")
}

/// A 204 answer to a CORS preflight for everyone (`*`).
fn preflight(methods: &'static str, headers: &'static str) -> Response<ResBody> {
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(headers),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

/// Whether `origin` (lower-case) matches a `--admin-cors-origin` pattern (`:*` = any port).
pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    match pattern.strip_suffix(":*") {
        Some(base) => origin.strip_prefix(base).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix(':')
                    .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        }),
        None => pattern == origin,
    }
}

/// Whether a `Host` header names this machine by an IP literal or `localhost` (a DNS
/// name could be rebound to 127.0.0.1 by a hostile page).
fn host_is_literal(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING).iter().any(|v| {
        v.to_str().unwrap_or("").split(',').any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        })
    })
}

fn parse_params(q: &[(String, String)]) -> Result<Params, String> {
    let max = match query_get(q, "maxConnections") {
        None => 1,
        Some(v) => match v.parse::<u8>() {
            Ok(n @ 1..=8) => n,
            _ => {
                return Err(format!(
                    "maxConnections must be an integer from 1 to 8, got {v:?}"
                ))
            }
        },
    };
    let smoothing_on = match query_get(q, "smoothing") {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(v) => return Err(format!("smoothing must be 1 or 0, got {v:?}")),
    };
    let bucket = match query_get(q, "smoothingBucketSize") {
        None => 270,
        Some(v) => match v.parse::<u32>() {
            Ok(n @ 1..=7200) => n,
            _ => {
                return Err(format!(
                    "smoothingBucketSize must be an integer from 1 to 7200 (seconds), got {v:?}"
                ))
            }
        },
    };
    let reset = match query_get(q, "reset") {
        None => None,
        Some("smallest") => Some(Reset::Smallest),
        Some("largest") => Some(Reset::Largest),
        Some(v) => {
            return Err(format!(
                "reset must be \"smallest\" or \"largest\", got {v:?}"
            ))
        }
    };
    Ok(Params {
        max,
        smoothing: smoothing_on.then_some(bucket),
        reset,
    })
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl App {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn log(&self, msg: std::fmt::Arguments<'_>) {
        if !self.opts.quiet {
            eprintln!("[{:>10.3}s] {msg}", self.started.elapsed().as_secs_f64());
        }
    }

    /// The hit rate of a stream: its script's `rate`, else `--rate`.
    fn rate(&self, st: &State, name: &str) -> f64 {
        st.scripts
            .get(name)
            .and_then(|s| s.rate)
            .unwrap_or(self.opts.rate)
    }

    /// Slot timings of a stream: its script's overrides, else the flags.
    fn policy(&self, st: &State, name: &str) -> Policy {
        let sc = st.scripts.get(name);
        Policy {
            hold: sc
                .and_then(|s| s.slot_hold_secs)
                .unwrap_or(self.opts.slot_hold_secs),
            resume: sc
                .and_then(|s| s.resume_secs)
                .unwrap_or(self.opts.resume_secs),
            resend: sc
                .and_then(|s| s.resend)
                .unwrap_or(self.opts.resend)
                .min(MAX_RESEND),
        }
    }

    /// The request's `Origin` when it is allowed to call the admin API cross-origin
    /// (`--admin-cors-origin`), as the value of `Access-Control-Allow-Origin`.
    fn allowed_admin_origin(&self, h: &HeaderMap, path: &str) -> Option<HeaderValue> {
        if !path.starts_with("/admin") {
            return None;
        }
        let origin = h.get(header::ORIGIN)?;
        let o = origin.to_str().ok()?.to_ascii_lowercase();
        self.opts
            .admin_cors_origins
            .iter()
            .any(|p| origin_matches(p, &o))
            .then(|| origin.clone())
    }

    /// A preflight to the admin API or IMS: CORS headers only for an allowed origin.
    fn private_preflight(&self, path: &str, allowed: bool) -> Response<ResBody> {
        if allowed {
            return preflight(
                "GET, POST, PUT, DELETE, OPTIONS",
                "authorization, content-type",
            );
        }
        json_response(
            403,
            "forbidden",
            &format!(
                "{path} does not answer cross-origin requests from browsers (the admin API can allow an origin with --admin-cors-origin; IMS is server-to-server)"
            ),
        )
    }

    /// Refuses admin requests a browser page of another origin could send without a
    /// preflight (a simple POST, an image GET), DNS-rebinding requests, and, when
    /// `LIVESTREAM_EMULATOR_ADMIN_TOKEN` is set, requests without that bearer token.
    #[allow(clippy::result_large_err)]
    fn admin_gate(&self, h: &HeaderMap, cors_allowed: bool) -> Result<(), Response<ResBody>> {
        if let Some(want) = &self.opts.admin_token {
            let got = h
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim());
            let ok = got.is_some_and(|t| {
                t.len() == want.len()
                    && t.bytes()
                        .zip(want.bytes())
                        .fold(0u8, |a, (x, y)| a | (x ^ y))
                        == 0
            });
            if !ok {
                let mut r = json_response(
                    401,
                    "unauthorized",
                    "the admin API needs Authorization: Bearer <the LIVESTREAM_EMULATOR_ADMIN_TOKEN value>",
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"livestream-emulator admin\""),
                );
                return Err(r);
            }
        }
        if cors_allowed {
            return Ok(());
        }
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Some(origin) = h.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
            let same = origin == format!("http://{}", host.to_ascii_lowercase());
            if !(same && host_is_literal(host)) {
                return Err(json_response(
                    403,
                    "forbidden",
                    &format!(
                        "admin requests from the browser origin {origin:?} are refused (allow one with --admin-cors-origin)"
                    ),
                ));
            }
        }
        let site = h
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        if site != "same-origin" && site != "none" {
            return Err(json_response(
                403,
                "forbidden",
                &format!("admin requests from another site (Sec-Fetch-Site: {site}) are refused"),
            ));
        }
        Ok(())
    }

    fn kill_all(&self, reason: &'static str) {
        let st = lock(&self.state);
        for (_, _, k) in st.kills.values() {
            k.fire(reason);
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
        act: &Arc<Activity>,
    ) -> Response<ResBody> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let private = is_private_path(&path);
        // The admin API and IMS never answer other origins, unless --admin-cors-origin
        // names that origin (admin only).
        let cors_origin = if private {
            self.allowed_admin_origin(req.headers(), &path)
        } else {
            None
        };
        let mut res = if method == Method::OPTIONS {
            if private {
                self.private_preflight(&path, cors_origin.is_some())
            } else {
                preflight(
                    "GET, HEAD, OPTIONS",
                    "authorization, x-api-key, content-type",
                )
            }
        } else if path == "/healthz" {
            let mut r = Response::new(full("ok"));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        } else if path == "/admin" || path.starts_with("/admin/") {
            match self.admin_gate(req.headers(), cors_origin.is_some()) {
                Ok(()) => self.admin(req).await,
                Err(r) => r,
            }
        } else if path == "/ims" || path.starts_with("/ims/") {
            self.ims_request(req).await
        } else if let Some(name) = path.strip_prefix("/api/1/stream/") {
            let name = name.to_string();
            let r = self.stream_request(req, &name, remote, act);
            let status = r.status().as_u16();
            let mut st = lock(&self.state);
            st.requests += 1;
            *st.status_counts.entry(status).or_default() += 1;
            let known = st.counters.contains_key(&name) || st.streams.contains_key(&name);
            if valid_stream_name(&name) && (known || st.counters.len() < 4 * MAX_STREAMS) {
                let c = st.counters.entry(name.clone()).or_default();
                c.requests += 1;
                *c.status_counts.entry(status).or_default() += 1;
            }
            drop(st);
            if status != 200 {
                self.log(format_args!(
                    "{remote} {method} {} -> {status}",
                    uri_for_log(&path, r.headers())
                ));
            }
            r
        } else if path == "/api" || path.starts_with("/api/") {
            json_response(
                404,
                "not_found",
                &format!("no API at {path}; the stream is /api/1/stream/{{name}}"),
            )
        } else {
            let www = self.opts.www.as_deref();
            match static_files::serve(www, &self.opts.mounts, &method, &path).await {
                Some(r) => r,
                None => json_response(404, "not_found", &format!("nothing is served at {path}")),
            }
        };
        let h = res.headers_mut();
        if !private {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("Retry-After, Location, Content-Encoding"),
            );
        } else if let Some(origin) = cors_origin {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        if private {
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        if !h.contains_key(header::X_CONTENT_TYPE_OPTIONS) {
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
        }
        if !h.contains_key(header::CACHE_CONTROL) {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        res
    }

    fn stream_request(
        self: &Arc<Self>,
        req: Request<Incoming>,
        name: &str,
        remote: SocketAddr,
        act: &Arc<Activity>,
    ) -> Response<ResBody> {
        if req.method() != Method::GET {
            let mut r = json_response(
                405,
                "method_not_allowed",
                &format!("the stream answers GET only, not {}", req.method()),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, OPTIONS"));
            return r;
        }
        if req.version() != Version::HTTP_11 {
            return json_response(
                505,
                "http_version_not_supported",
                &format!("the stream needs HTTP/1.1, not {:?}", req.version()),
            );
        }
        if !valid_stream_name(name)
            || (!self.opts.streams.is_empty() && !self.opts.streams.iter().any(|s| s == name))
        {
            return json_response(
                404,
                "not_found",
                &format!("no Live Stream endpoint named {name:?}"),
            );
        }
        let canned = lock(&self.state)
            .scripts
            .get_mut(name)
            .and_then(|s| s.responses.pop_front());
        if let Some(c) = canned {
            return canned_response(&c);
        }
        let q = parse_query(req.uri().query());
        if self.opts.redirect && query_get(&q, "_lb").is_none() {
            let query = req.uri().query().filter(|q| !q.is_empty());
            let location = match query {
                Some(qs) => format!("/api/1/stream/{name}?{qs}&_lb=1"),
                None => format!("/api/1/stream/{name}?_lb=1"),
            };
            let mut r = json_response(302, "redirect", &format!("use {location}"));
            *r.status_mut() = StatusCode::FOUND;
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return r;
        }
        let h = req.headers();
        let bearer = h
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty());
        let auth_error = match (bearer, &self.opts.token, &self.ims) {
            (None, _, _) => Some("an Authorization: Bearer <access token> header is required"),
            (Some(t), _, Some(ims)) => match ims.check(t, Instant::now()) {
                Check::Valid => None,
                Check::Expired => Some(
                    "the access token has expired: get a new one from IMS (POST /ims/token/v3)",
                ),
                Check::Unknown => Some(
                    "the access token is unknown: it was not issued by this emulator's IMS (POST /ims/token/v3)",
                ),
            },
            (Some(t), Some(want), None) if t != want => {
                Some("the access token is invalid or expired")
            }
            _ => None,
        };
        if let Some(why) = auth_error {
            let mut r = json_response(401, "unauthorized", why);
            let challenge = if bearer.is_some() {
                "Bearer realm=\"livestream-emulator\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"livestream-emulator\""
            };
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            return r;
        }
        let want_key = self
            .opts
            .api_key
            .as_ref()
            .or(self.opts.ims_client_id.as_ref());
        if let Some(want) = want_key {
            match h.get("x-api-key").and_then(|v| v.to_str().ok()) {
                None => return json_response(403, "forbidden", "an x-api-key header is required"),
                Some(k) if k != want => {
                    return json_response(403, "forbidden", "the x-api-key is not valid")
                }
                _ => {}
            }
        }
        if !accepts_gzip(h) {
            return json_response(
                406,
                "not_acceptable",
                "the stream is always gzip-compressed: send Accept-Encoding: gzip",
            );
        }
        let params = match parse_params(&q) {
            Ok(p) => p,
            Err(e) => return json_response(400, "invalid_request", &e),
        };
        self.admit(name, params, remote, act)
    }

    fn admit(
        self: &Arc<Self>,
        name: &str,
        params: Params,
        remote: SocketAddr,
        act: &Arc<Activity>,
    ) -> Response<ResBody> {
        let now = Instant::now();
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let no_traffic = st
            .scripts
            .get(name)
            .and_then(|s| s.no_traffic)
            .unwrap_or(self.opts.no_traffic);
        if no_traffic {
            return json_response(
                503,
                "unavailable",
                "no hits have been received for this report suite yet",
            );
        }
        let rate = self.rate(st, name);
        let policy = self.policy(st, name);
        let epoch = self.epoch_s.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
        });
        if !st.streams.contains_key(name) && st.streams.len() >= MAX_STREAMS {
            // Forget the idle stream (no live or held slot) that was used least recently.
            let idle = st
                .streams
                .iter_mut()
                .filter_map(|(n, s)| {
                    s.expire(now);
                    (s.usage() == (0, 0)).then(|| (s.last_active, n.clone()))
                })
                .min();
            match idle {
                Some((_, n)) => {
                    st.streams.remove(&n);
                    st.counters.remove(&n);
                }
                None => {
                    return json_response(
                        503,
                        "unavailable",
                        &format!("the emulator serves at most {MAX_STREAMS} streams with open connections at once"),
                    )
                }
            }
        }
        if !st.streams.contains_key(name) {
            st.streams.insert(
                name.to_string(),
                Stream::new(
                    name,
                    self.seed,
                    &self.opts.report_suite,
                    epoch,
                    self.opts.backlog,
                    now,
                ),
            );
            // Every stream's share of the retained-records budget shrinks.
            let cap = self.opts.max_retained_records / st.streams.len();
            for s in st.streams.values_mut() {
                s.set_cap(cap);
            }
        }
        let stream = st
            .streams
            .get_mut(name)
            .expect("the stream was just inserted");
        stream.advance(now, rate);
        let id = st.next_conn + 1;
        let admission = match stream.admit(id, params.max, params.reset, policy, now) {
            Ok(a) => a,
            Err(refusal) => {
                return self.refuse(st, name, refusal);
            }
        };
        st.next_conn = id;
        let ordinal = stream.admitted;
        let max = stream.max_conn;
        let Admission {
            slot,
            cursor,
            resend,
            resumed,
            reset_applied,
        } = admission;
        let body_script = st.scripts.get_mut(name).and_then(|s| s.body.take());
        let kill = Kill::new();
        st.kills.insert(id, (name.to_string(), slot, kill.clone()));
        st.concurrent_peak = st.concurrent_peak.max(st.kills.len());
        st.conns.insert(
            id,
            ConnInfo {
                id,
                stream: name.to_string(),
                slot,
                max_connections: max,
                remote: remote.to_string(),
                opened_ms: self.now_ms(),
                closed_ms: None,
                close_reason: None,
                records_sent: 0,
                bytes_sent: 0,
                resumed,
                resent: resend.len(),
                reset: reset_applied.map(|r| match r {
                    Reset::Smallest => "smallest",
                    Reset::Largest => "largest",
                }),
                smoothing_bucket_secs: params.smoothing,
                scripted: body_script.is_some(),
                faults: Vec::new(),
                pending: VecDeque::new(),
                act: Some(act.clone()),
                base_frame: act.yielded_frames(),
            },
        );
        while st.conns.len() > KEEP_CLOSED + st.kills.len() {
            let oldest_closed = st
                .conns
                .iter()
                .find(|(_, c)| c.closed_ms.is_some())
                .map(|(k, _)| *k);
            match oldest_closed {
                Some(k) => st.conns.remove(&k),
                None => break,
            };
        }
        drop(guard);

        let gzip = body_script.as_ref().is_none_or(|b| b.gzip);
        self.log(format_args!(
            "{remote} GET /api/1/stream/{name} -> 200 #{id} slot {slot}/{max}{}{}{}{}",
            if resumed { ", resumed" } else { "" },
            if resend.is_empty() {
                String::new()
            } else {
                format!(", re-sending {}", resend.len())
            },
            reset_applied.map_or(String::new(), |r| format!(", reset={r:?}")),
            if body_script.is_some() {
                ", scripted body"
            } else {
                ""
            },
        ));
        let (tx, rx) = body::channel(act.clone());
        let chaos = self
            .opts
            .chaos
            .then(|| Rng::derive(self.seed, &format!("chaos:{name}"), ordinal));
        let conn = Conn {
            app: self.clone(),
            id,
            stream: name.to_string(),
            slot,
            tx,
            kill,
            gz: GzEncoder::new(Vec::new(), Compression::fast()),
            last_send: Instant::now(),
            processed: 0,
            chaos,
            act: act.clone(),
            frames: 0,
        };
        let smoothing = params.smoothing;
        tokio::spawn(async move {
            conn.run(body_script, cursor, resend, smoothing).await;
        });
        let mut r = Response::new(rx.boxed_unsync());
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    }

    fn refuse(&self, st: &mut State, name: &str, refusal: Refusal) -> Response<ResBody> {
        match refusal {
            Refusal::Differs {
                requested,
                current,
                live,
                held,
            } => json_response(
                409,
                "conflict",
                &format!(
                    "maxConnections={requested} differs from the value {current} used by the open connections of stream {name:?} ({live} live, {held} held after a disconnect); every connection must use the same value"
                ),
            ),
            Refusal::Full {
                max,
                live,
                held,
                frees_in,
            } => {
                let early = held > 0;
                let status = if early { self.opts.early_status } else { 409 };
                let description = match frees_in {
                    Some(f) => format!(
                        "maxConnections={max} reached for stream {name:?}: {live} connection(s) open and {held} slot(s) still held after a disconnect; the next held slot frees in {f:.1} s (reconnect after a loss no sooner than that, see KA-16598)"
                    ),
                    None => format!(
                        "maxConnections={max} reached for stream {name:?}: {live} connection(s) open, 0 held; close one or raise maxConnections (the same value on every connection)"
                    ),
                };
                if early {
                    st.early_refused += 1;
                    st.counters.entry(name.to_string()).or_default().early_refused += 1;
                }
                let error = if status == 503 { "unavailable" } else { "conflict" };
                with_retry_after(json_response(status, error, &description), frees_in)
            }
        }
    }
}

fn uri_for_log(path: &str, h: &HeaderMap) -> String {
    match h.get(header::LOCATION).and_then(|l| l.to_str().ok()) {
        Some(l) => format!("{path} (Location: {l})"),
        None => path.to_string(),
    }
}

fn canned_response(c: &CannedResponse) -> Response<ResBody> {
    let error = c.error.as_deref().unwrap_or(default_error(c.status));
    let description = c
        .error_description
        .clone()
        .unwrap_or_else(|| format!("scripted {} response", c.status));
    let mut r = json_response(c.status, error, &description);
    if let Some(s) = c.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    if let Some(l) = c
        .location
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        r.headers_mut().insert(header::LOCATION, l);
    }
    r
}

/// Reads a request body of at most [`MAX_BODY_BYTES`] within `timeout`. The error is the
/// answer to send: 413 (too large, told by `Content-Length` before anything is read, or
/// found while reading), 408 (too slow) or 400 (broken body).
async fn read_body(req: Request<Incoming>, timeout: Duration) -> Result<Bytes, Response<ResBody>> {
    let too_large = || {
        json_response(
            413,
            "payload_too_large",
            &format!("the request body is larger than the limit of {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY_BYTES);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(json_response(
            408,
            "request_timeout",
            &format!(
                "the request body did not arrive within {} s",
                timeout.as_secs_f64()
            ),
        )),
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(json_response(
            400,
            "invalid_request",
            &format!("could not read the body: {e}"),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// IMS

impl App {
    /// `POST /ims/token/v3` (404 when IMS is off or for other paths under `/ims/`).
    async fn ims_request(&self, req: Request<Incoming>) -> Response<ResBody> {
        let path = req.uri().path().to_string();
        let Some(ims) = &self.ims else {
            return json_response(
                404,
                "not_found",
                "the IMS token endpoint is off: start the emulator with --ims-client-id (and the secret in LIVESTREAM_EMULATOR_IMS_SECRET)",
            );
        };
        if path != "/ims/token/v3" {
            return json_response(
                404,
                "not_found",
                &format!("no IMS endpoint {path}; tokens come from POST /ims/token/v3"),
            );
        }
        if req.method() != Method::POST {
            let mut r = json_response(
                405,
                "method_not_allowed",
                &format!("/ims/token/v3 answers POST only, not {}", req.method()),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let query = req.uri().query().map(str::to_string);
        let body = match read_body(req, self.body_timeout()).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let a = ims.token(
            content_type.as_deref(),
            query.as_deref(),
            &body,
            Instant::now(),
        );
        if a.status == 200 {
            self.log(format_args!("ims: token issued"));
        } else {
            self.log(format_args!("ims: token request refused ({})", a.status));
        }
        let mut r = Response::new(full(a.body));
        *r.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_REQUEST);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=utf-8"),
        );
        r
    }

    /// How long a request body may take to arrive.
    fn body_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.opts.header_timeout_secs)
    }
}

// ---------------------------------------------------------------------------------------
// Admin API

impl App {
    async fn admin(&self, req: Request<Incoming>) -> Response<ResBody> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let q = parse_query(req.uri().query());
        let filter = query_get(&q, "stream").map(str::to_string);
        let allow = |m: &'static str| {
            let mut r = json_response(
                405,
                "method_not_allowed",
                &format!("{path} answers {m} only, not {method}"),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(m));
            r
        };
        match path.as_str() {
            "/admin/stats" => {
                if method != Method::GET {
                    return allow("GET");
                }
                value_response(200, &self.stats(filter.as_deref()))
            }
            "/admin/drop" => {
                if method != Method::POST {
                    return allow("POST");
                }
                let n = self.drop_live(filter.as_deref());
                self.log(format_args!(
                    "admin: dropped {n} connection(s){}",
                    filter.map_or(String::new(), |s| format!(" of stream {s:?}"))
                ));
                value_response(200, &json!({ "dropped": n }))
            }
            "/admin/reset" => {
                if method != Method::POST {
                    return allow("POST");
                }
                let mut st = lock(&self.state);
                for (_, _, k) in st.kills.values() {
                    k.fire("reset");
                }
                let next_conn = st.next_conn;
                *st = State {
                    next_conn,
                    ..State::default()
                };
                drop(st);
                if let Some(ims) = &self.ims {
                    ims.reset_stats();
                }
                self.log(format_args!("admin: reset"));
                value_response(200, &json!({ "reset": true }))
            }
            p => {
                let Some(name) = p.strip_prefix("/admin/streams/") else {
                    return json_response(
                        404,
                        "not_found",
                        &format!("no admin endpoint {p}; see emulator/README.md"),
                    );
                };
                if !valid_stream_name(name) {
                    return json_response(
                        400,
                        "invalid_request",
                        &format!("{name:?} is not a stream name (letters, digits, '-', '_', '.')"),
                    );
                }
                let name = name.to_string();
                match method {
                    Method::PUT => {
                        let bytes = match read_body(req, self.body_timeout()).await {
                            Ok(b) => b,
                            Err(r) => return r,
                        };
                        match Script::parse(&bytes) {
                            Ok(script) => {
                                let echo = serde_json::to_value(&script).unwrap_or(Value::Null);
                                let mut st = lock(&self.state);
                                if !st.scripts.contains_key(&name)
                                    && st.scripts.len() >= MAX_STREAMS
                                {
                                    return json_response(
                                        503,
                                        "unavailable",
                                        &format!("the emulator keeps at most {MAX_STREAMS} stream scripts; DELETE /admin/streams/{{name}} one first (or POST /admin/reset)"),
                                    );
                                }
                                st.scripts.insert(name.clone(), script);
                                drop(st);
                                self.log(format_args!("admin: script for {name:?}: {echo}"));
                                value_response(200, &json!({ "stream": name, "script": echo }))
                            }
                            Err(e) => json_response(400, "invalid_request", &e),
                        }
                    }
                    Method::GET => {
                        let st = lock(&self.state);
                        let script = st
                            .scripts
                            .get(&name)
                            .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
                            .unwrap_or(Value::Null);
                        value_response(200, &json!({ "stream": name, "script": script }))
                    }
                    Method::DELETE => {
                        let existed = lock(&self.state).scripts.remove(&name).is_some();
                        value_response(200, &json!({ "stream": name, "deleted": existed }))
                    }
                    _ => allow("GET, PUT, DELETE"),
                }
            }
        }
    }

    /// Drops live connections at once: their slots become held now (as the real service
    /// would see a lost client), then their tasks abort the response bodies.
    fn drop_live(&self, filter: Option<&str>) -> usize {
        let now = Instant::now();
        let now_ms = self.now_ms();
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let victims: Vec<(u64, String, usize, Arc<Kill>)> = st
            .kills
            .iter()
            .filter(|(_, (s, _, _))| filter.is_none_or(|f| f == s))
            .map(|(id, (s, slot, k))| (*id, s.clone(), *slot, k.clone()))
            .collect();
        for (id, name, slot, kill) in &victims {
            let hold = self.policy(st, name).hold;
            if let Some(stream) = st.streams.get_mut(name) {
                stream.release(*slot, *id, hold, now);
            }
            if let Some(c) = st.conns.get_mut(id) {
                c.closed_ms.get_or_insert(now_ms);
                c.close_reason.get_or_insert_with(|| "admin_drop".into());
            }
            kill.fire("admin_drop");
        }
        victims.len()
    }

    fn stats(&self, filter: Option<&str>) -> Value {
        let now = Instant::now();
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let mut streams = Map::new();
        let mut names: Vec<&String> = st.streams.keys().chain(st.counters.keys()).collect();
        names.sort();
        names.dedup();
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| filter.is_none_or(|f| f == n.as_str()))
            .cloned()
            .collect();
        for name in &names {
            let counters = st.counters.get(name).cloned().unwrap_or_default();
            let mut v = json!({
                "live": 0, "held": 0, "peak_live": 0,
                "requests": counters.requests,
                "status_counts": status_map(&counters.status_counts),
                "early_reconnects_refused": counters.early_refused,
            });
            if let Some(s) = st.streams.get_mut(name) {
                s.expire(now);
                let (live, held) = s.usage();
                let slots: Vec<Value> = s
                    .slots
                    .iter()
                    .map(|sl| match sl.usage {
                        SlotUse::Free => json!({"state": "free"}),
                        SlotUse::Live(c) => json!({"state": "live", "connection": c}),
                        SlotUse::Held { until, conn } => json!({
                            "state": "held", "connection": conn,
                            "frees_in_ms": until.saturating_duration_since(now).as_millis() as u64,
                        }),
                    })
                    .collect();
                v["live"] = json!(live);
                v["held"] = json!(held);
                v["peak_live"] = json!(s.peak_live);
                v["maxConnections"] = json!(s.max_conn);
                v["generated"] = json!(s.next_seq);
                v["retained"] = json!(s.log.len());
                v["retain_cap"] = json!(s.cap());
                v["slots"] = json!(slots);
            }
            streams.insert(name.clone(), v);
        }
        for c in st.conns.values_mut() {
            c.reconcile();
        }
        let connections: Vec<&ConnInfo> = st
            .conns
            .values()
            .filter(|c| filter.is_none_or(|f| f == c.stream))
            .collect();
        let (requests, status_counts, early, peak) = match filter {
            None => (
                st.requests,
                st.status_counts.clone(),
                st.early_refused,
                st.concurrent_peak,
            ),
            Some(f) => {
                let c = st.counters.get(f).cloned().unwrap_or_default();
                let peak = st.streams.get(f).map_or(0, |s| s.peak_live);
                (c.requests, c.status_counts, c.early_refused, peak)
            }
        };
        json!({
            "now_ms": self.now_ms(),
            "seed": self.seed,
            "streams": streams,
            "connections": connections,
            "requests": requests,
            "status_counts": status_map(&status_counts),
            "early_reconnects_refused": early,
            "concurrent_peak": peak,
            "ims": self.ims.as_ref().map(|i| i.stats()),
            "clients_refused": self.clients_refused.load(Ordering::Relaxed),
            "idle_closed": self.idle_closed.load(Ordering::Relaxed),
        })
    }
}

fn status_map(m: &BTreeMap<u16, u64>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
}

// ---------------------------------------------------------------------------------------
// One streaming connection

/// Why a connection ended.
enum End {
    /// The client went away (hyper dropped the body).
    ClientClosed,
    /// Admin drop, admin reset, shutdown, or the stream vanished.
    Killed(&'static str),
    /// A chaos fault ended it mid-record.
    ChaosDrop,
    /// A scripted body ended cleanly.
    ScriptDone,
}

struct Conn {
    app: Arc<App>,
    id: u64,
    stream: String,
    slot: usize,
    tx: BodySender,
    kill: Arc<Kill>,
    gz: GzEncoder<Vec<u8>>,
    last_send: Instant,
    /// Records processed so far (the index chaos faults are recorded against).
    processed: u64,
    chaos: Option<Rng>,
    /// The TCP connection's activity: whether the socket is closed.
    act: Arc<Activity>,
    /// Data frames this response has queued so far.
    frames: u64,
}

const MALFORMED: &[&str] = &[
    r#"{"hitIdHigh":12,"#,
    "not json",
    r#"{"hitIdHigh":2948027281753079808,"pageName":"cut"#,
    "[1,2,3]",
];

impl Conn {
    async fn run(
        mut self,
        script: Option<BodyScript>,
        cursor: u64,
        resend: Vec<Arc<crate::stream::Entry>>,
        smoothing: Option<u32>,
    ) {
        let end = match script {
            Some(b) => self.run_script(b).await,
            None => self.run_generated(cursor, resend, smoothing).await,
        };
        let reason = match end {
            End::ClientClosed => "client_closed",
            End::Killed(r) => r,
            End::ChaosDrop => "chaos_drop",
            End::ScriptDone => "script_done",
        };
        if matches!(end, End::Killed(_)) {
            let _ = self.tx.abort.try_send(());
        }
        self.settle().await;
        let now = Instant::now();
        let now_ms = self.app.now_ms();
        let mut guard = lock(&self.app.state);
        let st = &mut *guard;
        st.kills.remove(&self.id);
        let hold = self.app.policy(st, &self.stream).hold;
        if let Some(s) = st.streams.get_mut(&self.stream) {
            s.release(self.slot, self.id, hold, now);
        }
        let (records, bytes) = match st.conns.get_mut(&self.id) {
            Some(c) => {
                c.closed_ms.get_or_insert(now_ms);
                c.close_reason.get_or_insert_with(|| reason.to_string());
                (c.records_sent, c.bytes_sent)
            }
            None => (0, 0),
        };
        drop(guard);
        self.app.log(format_args!(
            "#{} {}/slot {} closed: {reason} after {records} records, {bytes} bytes; slot held {hold} s",
            self.id, self.stream, self.slot
        ));
        // Dropping `self.tx` here ends the body: cleanly unless aborted above/in-band.
    }

    fn end_reason(&self) -> End {
        End::Killed(self.kill.reason())
    }

    /// Sends bytes as one chunk, waiting for room in the body channel.
    async fn push(&mut self, bytes: Bytes) -> Result<(), End> {
        if bytes.is_empty() {
            return Ok(());
        }
        let n = bytes.len() as u64;
        tokio::select! {
            r = self.tx.data.send(Item::Data(bytes)) => r.map_err(|_| End::ClientClosed)?,
            _ = self.kill.notify.notified() => return Err(self.end_reason()),
        }
        self.last_send = Instant::now();
        self.frames += 1;
        let frame = self.frames;
        if let Some(c) = lock(&self.app.state).conns.get_mut(&self.id) {
            c.pending.push_back((frame, 0, n));
            c.reconcile();
        }
        Ok(())
    }

    /// Brings this connection's written counts up to date; true when every queued frame
    /// is known to be written.
    fn reconcile(&self) -> bool {
        lock(&self.app.state)
            .conns
            .get_mut(&self.id)
            .is_none_or(|c| {
                c.reconcile();
                c.pending.is_empty()
            })
    }

    /// Attributes `n` records to the last queued frame.
    fn count_records(&self, n: u64) {
        if let Some(c) = lock(&self.app.state).conns.get_mut(&self.id) {
            match c.pending.back_mut() {
                Some(last) if last.0 == self.frames => last.1 += n,
                _ => c.pending.push_back((self.frames, n, 0)),
            }
            c.reconcile();
        }
    }

    /// Waits until hyper has written every queued frame to the socket (or `limit` passed).
    /// hyper discards its unwritten buffer when a body fails, so without this what a
    /// client sees before a chaos drop would depend on timing (and `--seed` runs would
    /// differ).
    async fn wait_written(&mut self, limit: Duration) -> Result<(), End> {
        let deadline = Instant::now() + limit;
        loop {
            if self.reconcile() || Instant::now() >= deadline {
                return Ok(());
            }
            self.sleep_until(Instant::now() + Duration::from_millis(5))
                .await?;
        }
    }

    /// After the response ended: waits (briefly) for the socket to close, so the last
    /// frames hyper managed to write are counted, then counts them.
    async fn settle(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.reconcile() && !self.act.is_closed() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some(c) = lock(&self.app.state).conns.get_mut(&self.id) {
            c.reconcile();
            c.act = None;
        }
    }

    /// Sleeps until `t`, unless the connection ends first.
    async fn sleep_until(&mut self, t: Instant) -> Result<(), End> {
        tokio::select! {
            _ = tokio::time::sleep_until(t.into()) => Ok(()),
            _ = self.kill.notify.notified() => Err(self.end_reason()),
            _ = self.tx.data.closed() => Err(End::ClientClosed),
        }
    }

    fn encode(&mut self, data: &[u8]) {
        // Writing into a Vec cannot fail.
        let _ = self.gz.write_all(data);
    }

    /// Sync-flushes the gzip stream, so everything written so far is decodable by the
    /// client now, and returns the bytes.
    fn flushed(&mut self) -> Bytes {
        let _ = self.gz.flush();
        Bytes::from(std::mem::take(self.gz.get_mut()))
    }

    /// Flushes and sends what is buffered, then records `seqs` as delivered.
    async fn flush_send(&mut self, seqs: &mut Vec<u64>) -> Result<(), End> {
        let bytes = self.flushed();
        self.push(bytes).await?;
        if !seqs.is_empty() {
            let mut guard = lock(&self.app.state);
            let st = &mut *guard;
            let keep = self.app.policy(st, &self.stream).resend.max(1);
            if let Some(s) = st.streams.get_mut(&self.stream) {
                s.delivered(self.slot, self.id, seqs, keep.max(16));
            }
            let n = seqs.len() as u64;
            seqs.clear();
            drop(guard);
            self.count_records(n);
        }
        Ok(())
    }

    fn roll_fault(&mut self) -> Option<Fault> {
        let rng = self.chaos.as_mut()?;
        if rng.chance(self.app.opts.chaos_rate) {
            Some(*rng.pick(&self.app.opts.chaos_faults))
        } else {
            None
        }
    }

    fn note_fault(&self, kind: Fault) {
        if let Some(c) = lock(&self.app.state).conns.get_mut(&self.id) {
            c.faults.push(FaultEvent {
                record: self.processed,
                kind,
            });
        }
        self.app.log(format_args!(
            "#{} chaos: {kind:?} before record {}",
            self.id, self.processed
        ));
    }

    async fn run_generated(
        &mut self,
        mut cursor: u64,
        resend: Vec<Arc<crate::stream::Entry>>,
        smoothing: Option<u32>,
    ) -> End {
        let mut first = resend;
        // Send the gzip header at once, so the client sees the response start even before
        // the first record (the real service's headers and first bytes arrive together).
        let header = self.flushed();
        if let Err(e) = self.push(header).await {
            return e;
        }
        loop {
            let now = Instant::now();
            let (batch, next_due) = {
                let mut guard = lock(&self.app.state);
                let rate = self.app.rate(&guard, &self.stream);
                let Some(s) = guard.streams.get_mut(&self.stream) else {
                    return End::Killed("reset");
                };
                if s.slots.get(self.slot).map(|sl| sl.usage) != Some(SlotUse::Live(self.id)) {
                    drop(guard);
                    return self.end_reason();
                }
                s.advance(now, rate);
                let (recs, c) = s.take(self.slot, cursor, now, smoothing, BATCH);
                cursor = c;
                (recs, s.next_due())
            };
            let full_batch = batch.len() >= BATCH;
            let mut records = std::mem::take(&mut first);
            records.extend(batch);
            if !records.is_empty() {
                if let Err(e) = self.send_records(records).await {
                    return e;
                }
            } else if let Some(k) = self.app.opts.keepalive_secs {
                if self.last_send.elapsed().as_secs_f64() >= k {
                    self.encode(b"\r\n");
                    let bytes = self.flushed();
                    if let Err(e) = self.push(bytes).await {
                        return e;
                    }
                }
            }
            if full_batch {
                continue;
            }
            let now = Instant::now();
            let mut wake = now + Duration::from_secs(1);
            if let Some(d) = next_due {
                wake = wake.min(d.max(now + Duration::from_millis(2)));
            }
            if smoothing.is_some() {
                wake = wake.min(now + Duration::from_millis(50));
            }
            if let Some(k) = self.app.opts.keepalive_secs {
                wake = wake.min(self.last_send + Duration::from_secs_f64(k));
            }
            if let Err(e) = self.sleep_until(wake.max(now)).await {
                return e;
            }
        }
    }

    async fn send_records(&mut self, records: Vec<Arc<crate::stream::Entry>>) -> Result<(), End> {
        let mut seqs = Vec::new();
        for e in records {
            if let Some(fault) = self.roll_fault() {
                self.note_fault(fault);
                self.flush_send(&mut seqs).await?;
                match fault {
                    Fault::Drop => {
                        let cut = (e.line.len() / 2).max(1);
                        self.encode(&e.line.as_bytes()[..cut]);
                        let bytes = self.flushed();
                        self.push(bytes).await?;
                        self.wait_written(Duration::from_secs(30)).await?;
                        let _ = self.tx.data.send(Item::Abort).await;
                        return Err(End::ChaosDrop);
                    }
                    Fault::Stall => {
                        let secs = self.app.opts.chaos_stall_secs;
                        self.sleep_until(Instant::now() + Duration::from_secs_f64(secs))
                            .await?;
                    }
                    Fault::Trickle => {
                        if e.empty_before {
                            self.encode(b"\r\n");
                        }
                        self.encode(e.line.as_bytes());
                        self.encode(b"\r\n");
                        let bytes = self.flushed();
                        let per_byte = (self.app.opts.chaos_stall_secs / bytes.len().max(1) as f64)
                            .clamp(0.001, 0.2);
                        for i in 0..bytes.len() {
                            self.push(bytes.slice(i..i + 1)).await?;
                            self.sleep_until(Instant::now() + Duration::from_secs_f64(per_byte))
                                .await?;
                        }
                        seqs.push(e.seq);
                        self.processed += 1;
                        self.flush_send(&mut seqs).await?;
                        continue;
                    }
                    Fault::Malformed => {
                        let rng = self.chaos.as_mut().expect("chaos is on");
                        let line = *rng.pick(MALFORMED);
                        self.encode(line.as_bytes());
                        self.encode(b"\r\n");
                    }
                    Fault::Oversized => {
                        let rng = self.chaos.as_mut().expect("chaos is on");
                        let (hi, lo) = (rng.adobe_id(), rng.adobe_id());
                        let head = format!(
                            r#"{{"reportSuite":"{}","hitIdHigh":{hi},"hitIdLow":{lo},"pageName":"Oversized record","padding":""#,
                            self.app.opts.report_suite
                        );
                        self.encode(head.as_bytes());
                        let pad = [b'x'; 8192];
                        for _ in 0..256 {
                            self.encode(&pad);
                        }
                        self.encode(b"\"}\r\n");
                        let bytes = self.flushed();
                        self.push(bytes).await?;
                    }
                }
            }
            if e.empty_before {
                self.encode(b"\r\n");
            }
            self.encode(e.line.as_bytes());
            self.encode(b"\r\n");
            seqs.push(e.seq);
            self.processed += 1;
            if self.gz.get_ref().len() > 64 * 1024 {
                self.flush_send(&mut seqs).await?;
            }
        }
        self.flush_send(&mut seqs).await
    }

    /// Sets `records_sent` of a scripted body from the bytes written so far.
    fn count_script_lines(&mut self, b: &BodyScript, ends: &[u64]) {
        if let Some(c) = lock(&self.app.state).conns.get_mut(&self.id) {
            c.reconcile();
            c.records_sent = if c.pending.is_empty() {
                b.lines.len() as u64
            } else if b.gzip {
                0
            } else {
                ends.iter().filter(|e| **e <= c.bytes_sent).count() as u64
            };
        }
    }

    async fn run_script(&mut self, b: BodyScript) -> End {
        let mut raw = Vec::new();
        for l in &b.lines {
            raw.extend_from_slice(l.as_bytes());
            raw.extend_from_slice(b"\r\n");
        }
        let encoded = if b.gzip {
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            let _ = gz.write_all(&raw);
            match b.then {
                Then::Close => gz.finish().unwrap_or_default(),
                Then::Hold => {
                    let _ = gz.flush();
                    std::mem::take(gz.get_mut())
                }
            }
        } else {
            raw
        };
        let encoded = Bytes::from(encoded);
        // Where each line ends in the raw body.
        let ends: Vec<u64> = b
            .lines
            .iter()
            .scan(0u64, |off, l| {
                *off += l.len() as u64 + 2;
                Some(*off)
            })
            .collect();
        let size = b.chunk_size.unwrap_or(encoded.len().max(1));
        let mut off = 0;
        while off < encoded.len() {
            let end = (off + size).min(encoded.len());
            if let Err(e) = self.push(encoded.slice(off..end)).await {
                self.settle().await;
                self.count_script_lines(&b, &ends);
                return e;
            }
            off = end;
            if b.chunk_delay_ms > 0 && off < encoded.len() {
                let t = Instant::now() + Duration::from_millis(b.chunk_delay_ms);
                if let Err(e) = self.sleep_until(t).await {
                    self.settle().await;
                    self.count_script_lines(&b, &ends);
                    return e;
                }
            }
        }
        // Count the lines once written: exactly (by their end offsets) for a raw body; a
        // gzip body's lines count once all of it is written.
        if let Err(e) = self.wait_written(Duration::from_secs(30)).await {
            self.settle().await;
            self.count_script_lines(&b, &ends);
            return e;
        }
        self.count_script_lines(&b, &ends);
        match b.then {
            Then::Close => End::ScriptDone,
            Then::Hold => loop {
                if let Err(e) = self
                    .sleep_until(Instant::now() + Duration::from_secs(3600))
                    .await
                {
                    return e;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_origins_match_exactly_or_by_port_wildcard() {
        let p = "http://127.0.0.1:*";
        assert!(origin_matches(p, "http://127.0.0.1:8000"));
        assert!(origin_matches(p, "http://127.0.0.1"));
        assert!(!origin_matches(p, "http://127.0.0.1.evil.example"));
        assert!(!origin_matches(p, "http://127.0.0.1:80.evil.example"));
        assert!(!origin_matches(p, "https://127.0.0.1:8000"));
        assert!(origin_matches("http://a.test:1", "http://a.test:1"));
        assert!(!origin_matches("http://a.test:1", "http://a.test:12"));
    }

    #[test]
    fn only_ip_literals_and_localhost_count_as_this_machine() {
        for h in [
            "127.0.0.1:8787",
            "localhost:1",
            "LOCALHOST",
            "[::1]:8787",
            "10.0.0.5",
        ] {
            assert!(host_is_literal(h), "{h}");
        }
        for h in ["evil.example:8787", "127.0.0.1.nip.io:80", "[::1", ""] {
            assert!(!host_is_literal(h), "{h}");
        }
    }
}
