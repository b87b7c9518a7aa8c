//! livestream-relay: the native second host of the livestream-wasm core.
//!
//! One polite upstream Live Stream connection per slot (every KA-16598 rule, through the same
//! sans-IO core as the browser package), tokens from Adobe IMS kept server-side, and a
//! downstream `GET /api/1/stream/{name}` in Live Stream's own wire format for any number of
//! clients, compressed once for all of them. See `relay/README.md`.
//!
//! Tests and embedders start it in-process with [`start`]; the binary adds signal handling
//! and reads the secrets from the environment.

#![warn(missing_docs)]

pub mod cli;
pub mod fleet;
pub mod hub;
pub mod metrics;
pub mod server;
pub mod tokens;
pub mod upstream;

pub use cli::{Cli, Secrets};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use livestream_wasm::core::{Client, Config, Options, TokenSource};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};

use hub::Hub;
use metrics::{RelayMetrics, StreamMetrics};
use server::Downstream;
use tokens::{Ims, Tokens};
use upstream::Upstream;

/// How often the lag watchdog looks for downstream clients too far behind.
const LAG_CHECK: Duration = Duration::from_millis(100);

/// How long downstream connections get to finish after shutdown began.
const DRAIN: Duration = Duration::from_secs(3);

/// A running relay.
pub struct Relay {
    addr: SocketAddr,
    metrics: Arc<RelayMetrics>,
    shutdown: watch::Sender<bool>,
    upstreams: Vec<JoinHandle<()>>,
    server: JoinHandle<()>,
    renewer: Option<JoinHandle<()>>,
    watchdogs: Vec<JoinHandle<()>>,
    /// Fleet mode: the Redis writers, stopped once everything else finished.
    writers: Vec<JoinHandle<()>>,
}

/// The command-line flag of a core option, for error messages.
fn flag_of(option: &str) -> &'static str {
    match option {
        "url" => "--upstream",
        "apiKey" => "--client-id / LIVESTREAM_API_KEY",
        "maxConnections" => "--max-connections",
        "connections" => "--connections",
        "smoothing" => "--smoothing",
        "smoothingBucketSize" => "--smoothing-bucket-size",
        "reset" => "--reset",
        "reconnectDelayMs" => "--reconnect-delay-ms",
        "reconnectJitterMs" => "--reconnect-jitter-ms",
        "maxReconnectDelayMs" => "--max-reconnect-delay-ms",
        "idleTimeoutMs" => "--idle-timeout-ms",
        "maxRecordBytes" => "--max-record-bytes",
        "dedupWindow" => "--dedup-window",
        "token" => "LIVESTREAM_TOKEN",
        "redirectOrigins" => "--redirect-origin",
        _ => "an option",
    }
}

/// The core configuration of one `--upstream`; a bad value is the core's own message,
/// with the relay's flag for it.
pub fn upstream_config(
    cli: &Cli,
    url: &str,
    api_key: Option<&str>,
    token: TokenSource,
) -> Result<Config, String> {
    let ms = |v: Option<u64>| v.map(Duration::from_millis);
    let options = Options {
        url: Some(url.to_string()),
        token,
        api_key: api_key.map(str::to_string),
        max_connections: cli.max_connections,
        connections: cli.connections,
        smoothing: Some(cli.smoothing),
        smoothing_bucket_size: cli.smoothing_bucket_size,
        reset: cli.reset.clone(),
        reconnect_delay: ms(cli.reconnect_delay_ms),
        reconnect_jitter: ms(cli.reconnect_jitter_ms),
        max_reconnect_delay: ms(cli.max_reconnect_delay_ms),
        idle_timeout: ms(cli.idle_timeout_ms),
        max_record_bytes: cli.max_record_bytes,
        dedup_window: cli.dedup_window,
        redirect_origins: cli.redirect_origins.clone(),
    };
    Config::new(options).map_err(|e| format!("{e} [{}]", flag_of(&e.option)))
}

/// Checks the command line and secrets, binds `--listen` and starts every upstream driver
/// and the downstream server.
pub async fn start(cli: Cli, secrets: Secrets) -> Result<Relay, String> {
    if !cli.listen.ip().is_loopback() && secrets.relay_token.is_none() && !cli.insecure_open {
        return Err(format!(
            "refusing to listen on {} (not a loopback address) without LIVESTREAM_RELAY_TOKEN: anyone who can reach it would read the stream; set the token, or pass --insecure-open if that is really meant",
            cli.listen
        ));
    }
    for o in &cli.allow_origins {
        let ok = (o.starts_with("http://") || o.starts_with("https://"))
            && !o.ends_with('/')
            && o.split("://")
                .nth(1)
                .is_some_and(|h| !h.is_empty() && !h.contains('/'));
        if !ok {
            return Err(format!(
                "--allow-origin {o:?}: expected an origin such as https://dash.example.com (scheme and host, no path, no trailing slash)"
            ));
        }
    }
    for dir in cli.www.iter().chain(cli.mounts.iter().map(|(_, d)| d)) {
        if !dir.is_dir() {
            return Err(format!("{}: not a directory", dir.display()));
        }
    }
    let api_key = secrets.api_key.clone().or_else(|| cli.client_id.clone());
    let token_kind = if secrets.token.is_some() {
        TokenSource::Fixed
    } else {
        TokenSource::Refreshable
    };
    let mut configs = Vec::new();
    for url in &cli.upstreams {
        let config = upstream_config(&cli, url, api_key.as_deref(), token_kind)?;
        let name = cli::stream_name(url).ok_or_else(|| {
            format!("--upstream {url}: the last path segment (the endpoint name) must be letters, digits, '-', '_' or '.'")
        })?;
        if configs.iter().any(|(n, _)| n == &name) {
            return Err(format!(
                "--upstream {url}: another upstream is already served as /api/1/stream/{name}"
            ));
        }
        configs.push((name, config));
    }
    let token_source = if secrets.token.is_some() {
        "fixed"
    } else {
        "ims"
    };
    let streams: Vec<Arc<StreamMetrics>> = configs
        .iter()
        .map(|(n, _)| Arc::new(StreamMetrics::new(n)))
        .collect();
    if let Some(url) = &cli.redis {
        fleet::check_url(url)?;
    }
    let fleet_opts = cli.redis.as_ref().map(|url| fleet::FleetOptions {
        url: url.clone(),
        prefix: cli.fleet_prefix.clone(),
        lease_ttl: Duration::from_millis(cli.lease_ttl_ms),
        stream_max: cli.fleet_stream_max,
        replay: cli.replay,
        flush: Duration::from_millis(cli.flush_ms),
        quiet: cli.quiet,
    });
    let mut relay_metrics = RelayMetrics::new(streams.clone(), token_source);
    relay_metrics.fleet_id = fleet_opts.as_ref().map(|_| fleet::relay_id());
    let metrics = Arc::new(relay_metrics);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .http1_only()
        .user_agent(concat!("livestream-relay/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTPS client: {e}"))?;
    let (tokens, ims) = match (&secrets.token, &cli.client_id, &secrets.client_secret) {
        (Some(t), _, _) => {
            livestream_wasm::core::config::validate_token(t)
                .map_err(|e| format!("LIVESTREAM_TOKEN: {e}"))?;
            (Tokens::Fixed(t.as_str().into()), None)
        }
        (None, Some(id), Some(secret)) => {
            let ims = Arc::new(Ims::new(
                http.clone(),
                &cli.ims_url,
                id.clone(),
                secret.clone(),
                cli.scope.clone(),
                metrics.clone(),
            ));
            (Tokens::Ims(ims.clone()), Some(ims))
        }
        (None, Some(_), None) => {
            return Err("--client-id is set but LIVESTREAM_CLIENT_SECRET is not: the IMS client secret comes from the environment only".into())
        }
        (None, None, _) => {
            return Err("no upstream token: set --client-id (with LIVESTREAM_CLIENT_SECRET and --scope) for tokens from Adobe IMS, or LIVESTREAM_TOKEN for a fixed token".into())
        }
    };
    let listener = TcpListener::bind(cli.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut hubs = HashMap::new();
    let mut upstreams = Vec::new();
    let mut watchdogs = Vec::new();
    let mut writers = Vec::new();
    for (i, (name, config)) in configs.into_iter().enumerate() {
        let sm = streams[i].clone();
        let hub = Arc::new(Hub::new(
            cli.replay,
            cli.client_queue,
            cli.gzip_level,
            sm.clone(),
        ));
        hubs.insert(name.clone(), (hub.clone(), sm.clone()));
        let watchdog = hub.clone();
        watchdogs.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(LAG_CHECK);
            loop {
                tick.tick().await;
                watchdog.cut_laggards();
            }
        }));
        if let (Some(opts), Some(id)) = (&fleet_opts, &metrics.fleet_id) {
            let parts = fleet::DriverParts {
                config,
                tokens: tokens.clone(),
                http: http.clone(),
            };
            let (tasks, writer) = fleet::start_stream(
                opts,
                id,
                &name,
                hub,
                sm,
                metrics.clone(),
                parts,
                shutdown_rx.clone(),
            );
            upstreams.extend(tasks);
            writers.push(writer);
            continue;
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (i as u64) << 32;
        let up = Upstream::new(
            Client::new(config, seed),
            tokens.clone(),
            http.clone(),
            hub,
            sm,
            cli.quiet,
            Duration::from_millis(cli.flush_ms),
        );
        let rx = shutdown_rx.clone();
        upstreams.push(tokio::spawn(async move {
            up.run(rx).await;
        }));
    }
    let renewer = ims.map(|ims| tokio::spawn(ims.keep_fresh(cli.quiet)));
    let downstream = Arc::new(Downstream {
        hubs,
        metrics: metrics.clone(),
        relay_token: secrets.relay_token.clone(),
        allow_origins: cli.allow_origins.clone(),
        www: cli.www.clone(),
        mounts: cli.mounts.clone(),
        naive: cli.naive_per_client_gzip,
        gzip_level: cli.gzip_level,
    });
    let limits = Limits {
        sndbuf: cli.client_sndbuf,
        max_clients: cli.max_clients,
    };
    let server = tokio::spawn(serve(listener, downstream, limits, shutdown_rx));
    Ok(Relay {
        addr,
        metrics,
        shutdown,
        upstreams,
        server,
        renewer,
        watchdogs,
        writers,
    })
}

/// Resolves once shutdown began (or the relay is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Per-connection limits of the downstream server.
struct Limits {
    sndbuf: usize,
    max_clients: usize,
}

async fn serve(
    listener: TcpListener,
    ds: Arc<Downstream>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((tcp, _)) = r else {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                if conns.len() >= limits.max_clients {
                    // Over the limit: a short answer, then the socket closes.
                    conns.spawn(async move {
                        let mut tcp = tcp;
                        let body = r#"{"error":"unavailable","error_description":"too many downstream clients; the relay's --max-clients is reached"}"#;
                        let msg = format!("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nRetry-After: 5\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            tokio::io::AsyncWriteExt::write_all(&mut tcp, msg.as_bytes()),
                        )
                        .await;
                    });
                    continue;
                }
                if limits.sndbuf > 0 {
                    let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(limits.sndbuf);
                }
                let ds = ds.clone();
                let mut stop = shutdown.clone();
                let cut = Arc::new(Notify::new());
                conns.spawn(async move {
                    let cut2 = cut.clone();
                    let svc = service_fn(move |req| {
                        let (ds, cut) = (ds.clone(), cut2.clone());
                        async move { Ok::<_, std::convert::Infallible>(ds.handle(req, cut).await) }
                    });
                    let conn = http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30))
                        .serve_connection(TokioIo::new(tcp), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        // Too far behind: drop the connection (the client sees an abrupt end).
                        _ = cut.notified() => {}
                        _ = stopped(&mut stop) => {
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(DRAIN, conn).await;
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN + Duration::from_secs(1), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
    }
}

impl Relay {
    /// The address downstream clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters and state (what `/metrics` renders).
    pub fn metrics(&self) -> &Arc<RelayMetrics> {
        &self.metrics
    }

    /// Closes every upstream connection (so Live Stream frees the slots), ends every
    /// downstream stream cleanly, and stops the server.
    pub async fn shutdown(self) {
        self.metrics.shutting_down.store(true, Relaxed);
        let _ = self.shutdown.send(true);
        for u in self.upstreams {
            let _ = u.await;
        }
        let _ = self.server.await;
        if let Some(r) = self.renewer {
            r.abort();
        }
        for w in self.watchdogs {
            w.abort();
        }
        for w in self.writers {
            w.abort();
        }
    }
}
