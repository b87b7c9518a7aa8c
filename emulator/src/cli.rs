//! Command-line options of the emulator (also used by tests that start it in-process).

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The kinds of fault `--chaos` can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// End the connection abruptly in the middle of a record.
    Drop,
    /// Send nothing for `--chaos-stall-secs`.
    Stall,
    /// Send one record's encoded bytes one byte at a time, spread over `--chaos-stall-secs`.
    Trickle,
    /// Send a line that is not a complete JSON object.
    Malformed,
    /// Send a valid record of about 2 MB.
    Oversized,
}

/// A local emulator of the Adobe Analytics Live Stream API.
///
/// Serves `GET /api/1/stream/{name}` like the real service (chunked, gzip, CRLF-separated
/// JSON records, the documented status codes, held slots after a drop, resume with
/// duplicates), an admin API under `/admin/`, and optional static files.
#[derive(Parser, Clone, Debug)]
#[command(name = "livestream-emulator", version, about, long_about = None)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,

    /// Require exactly this bearer token (otherwise any non-empty bearer token is accepted).
    #[arg(long)]
    pub token: Option<String>,

    /// Require this `x-api-key` header value (missing or different: 403).
    #[arg(long)]
    pub api_key: Option<String>,

    /// Seed for records and chaos; the same seed and request sequence give the same output.
    /// Without it a seed is drawn from the clock and printed.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Unix time (seconds) at which every stream's clock starts (timeGMT/receivedTimeGMT
    /// follow it). Default: the real time when the stream is first requested. Fix it (with
    /// --seed) for byte-identical records across runs.
    #[arg(long)]
    pub epoch: Option<u64>,

    /// Mean hits per second per stream (varies ±50 % with occasional bursts); 0 = no hits.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,

    /// The reportSuite written into records.
    #[arg(long, default_value = "examplecomprod")]
    pub report_suite: String,

    /// Only these stream (endpoint) names exist; others get 404. Repeatable. Default: any name.
    #[arg(long = "stream", value_name = "NAME")]
    pub streams: Vec<String>,

    /// How long a dropped client's slot stays held (seconds, KA-16598). Reconnects sooner are
    /// refused with 409 (or --early-status).
    #[arg(long, default_value_t = 60.0)]
    pub slot_hold_secs: f64,

    /// A reconnect within this many seconds of a drop resumes after the last record delivered
    /// to that slot (re-sending the last --resend records).
    #[arg(long, default_value_t = 300.0)]
    pub resume_secs: f64,

    /// How many already delivered records a resumed connection sends again (duplicates).
    #[arg(long, default_value_t = 3)]
    pub resend: usize,

    /// Status for a reconnect refused because a slot is still held: 409 or 503.
    #[arg(long, default_value_t = 409, value_parser = parse_early_status)]
    pub early_status: u16,

    /// Answer every stream request with 503 "no hits have been received … yet".
    #[arg(long)]
    pub no_traffic: bool,

    /// Answer stream requests without the `_lb` marker with a same-origin 302 to
    /// `/api/1/stream/{name}?{query}&_lb=1`.
    #[arg(long)]
    pub redirect: bool,

    /// Send a bare CRLF after this many seconds without data (default: never).
    #[arg(long)]
    pub keepalive_secs: Option<f64>,

    /// Inject faults (drop mid-record, stall, trickle, malformed, oversized), reproducibly
    /// under --seed.
    #[arg(long)]
    pub chaos: bool,

    /// Probability, per record sent, that a fault is injected before it (with --chaos).
    #[arg(long, default_value_t = 0.01)]
    pub chaos_rate: f64,

    /// Duration of a stall and of a trickled record, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub chaos_stall_secs: f64,

    /// Which faults --chaos may inject (comma-separated). Default: all.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Fault::Drop, Fault::Stall, Fault::Trickle, Fault::Malformed, Fault::Oversized])]
    pub chaos_faults: Vec<Fault>,

    /// Records retained per stream (for resume and reset=smallest); older ones are forgotten.
    #[arg(long, default_value_t = 10_000)]
    pub backlog: usize,

    /// Serve static files from this directory at `/` (index.html for directories).
    #[arg(long)]
    pub www: Option<PathBuf>,

    /// Serve an extra directory under a URL prefix, e.g. `/pkg=./pkg`. Repeatable.
    #[arg(long = "mount", value_name = "/PREFIX=DIR", value_parser = parse_mount)]
    pub mounts: Vec<(String, PathBuf)>,

    /// Do not log requests and connection events to stderr.
    #[arg(long, short)]
    pub quiet: bool,

    /// Enable the emulated Adobe IMS token endpoint `POST /ims/token/v3` with this client
    /// id; the secret comes from the environment variable LIVESTREAM_EMULATOR_IMS_SECRET
    /// (never a flag: command lines show in `ps`). The stream then accepts only tokens it
    /// issued and that have not expired, and requires `x-api-key` to be this client id
    /// (unless --api-key says otherwise).
    #[arg(long, value_name = "ID")]
    pub ims_client_id: Option<String>,

    /// The IMS client secret. Not a flag: filled from LIVESTREAM_EMULATOR_IMS_SECRET by
    /// [`Options::with_env`]; tests that start the emulator in-process set it directly.
    #[arg(skip)]
    pub ims_client_secret: Option<String>,

    /// Lifetime of issued IMS tokens in seconds (the `expires_in` of the answer).
    #[arg(long, default_value_t = 86_399, value_name = "N")]
    pub token_ttl_secs: u64,

    /// A token the admin API requires as `Authorization: Bearer <token>`. Not a flag: filled
    /// from LIVESTREAM_EMULATOR_ADMIN_TOKEN by [`Options::with_env`]. None: no admin token.
    #[arg(skip)]
    pub admin_token: Option<String>,

    /// A browser origin allowed to call the admin API cross-origin (CORS), e.g.
    /// `http://127.0.0.1:8000`; a port of `*` allows every port of that scheme and host
    /// (`http://127.0.0.1:*`). Repeatable. Default: none (the admin API sends no CORS
    /// headers and refuses requests from other origins).
    #[arg(long = "admin-cors-origin", value_name = "ORIGIN", value_parser = parse_origin)]
    pub admin_cors_origins: Vec<String>,

    /// Most TCP connections served at once; more are answered 503 and closed.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_clients: usize,

    /// Seconds a client has to send a complete request head (and a new connection its
    /// first request).
    #[arg(long, default_value_t = 10.0, value_name = "S")]
    pub header_timeout_secs: f64,

    /// Seconds a keep-alive connection may stay idle (no request in progress, nothing read
    /// or written) before it is closed. Open stream responses are never idle-closed. (A
    /// connection waiting for its next request is also closed after --header-timeout-secs.)
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    pub idle_timeout_secs: f64,

    /// Records retained across all streams together (each stream keeps at most --backlog,
    /// and at most this divided by the number of streams).
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    pub max_retained_records: usize,
}

/// Environment variable of the IMS client secret.
pub const IMS_SECRET_ENV: &str = crate::ims::SECRET_ENV;
/// Environment variable of the admin token.
pub const ADMIN_TOKEN_ENV: &str = "LIVESTREAM_EMULATOR_ADMIN_TOKEN";
/// Highest `--rate` (and script `rate`), hits per second per stream.
pub const MAX_RATE: f64 = 10_000.0;
/// Highest `--slot-hold-secs` / `slot_hold_secs`.
pub const MAX_HOLD_SECS: f64 = 3_600.0;
/// Highest `--resume-secs` / `resume_secs`.
pub const MAX_RESUME_SECS: f64 = 86_400.0;
/// Highest `--backlog`.
pub const MAX_BACKLOG: usize = 1_000_000;
/// Longest `--token-ttl-secs` (one year).
pub const MAX_TOKEN_TTL_SECS: u64 = 31_536_000;

fn parse_origin(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| format!("an origin is http(s)://HOST[:PORT], got {s:?}"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Err(format!(
            "an origin is http(s)://HOST[:PORT] without a path, got {s:?}"
        ));
    }
    Ok(s.to_ascii_lowercase())
}

fn parse_early_status(s: &str) -> Result<u16, String> {
    match s {
        "409" => Ok(409),
        "503" => Ok(503),
        _ => Err(format!("must be 409 or 503, got {s:?}")),
    }
}

fn parse_mount(s: &str) -> Result<(String, PathBuf), String> {
    let (prefix, dir) = s
        .split_once('=')
        .ok_or_else(|| format!("expected /PREFIX=DIR, got {s:?}"))?;
    if !prefix.starts_with('/') || dir.is_empty() {
        return Err(format!(
            "expected /PREFIX=DIR with a prefix starting with '/', got {s:?}"
        ));
    }
    let prefix = format!("{}/", prefix.trim_end_matches('/'));
    Ok((prefix, PathBuf::from(dir)))
}

impl Options {
    /// Fills the secrets that are never flags from the environment:
    /// `LIVESTREAM_EMULATOR_IMS_SECRET` and `LIVESTREAM_EMULATOR_ADMIN_TOKEN` (empty values
    /// count as unset).
    pub fn with_env(mut self) -> Options {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if self.ims_client_secret.is_none() {
            self.ims_client_secret = var(IMS_SECRET_ENV);
        }
        if self.admin_token.is_none() {
            self.admin_token = var(ADMIN_TOKEN_ENV);
        }
        self
    }

    /// Checks value ranges clap cannot express; the message names the flag and the value.
    pub fn validate(&self) -> Result<(), String> {
        let non_neg = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!("--{name} must be a finite number >= 0, got {v}"))
            }
        };
        let range = |name: &str, v: f64, max: f64| {
            if v.is_finite() && (0.0..=max).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "--{name} must be a number from 0 to {max}, got {v}"
                ))
            }
        };
        range("rate", self.rate, MAX_RATE)?;
        range("slot-hold-secs", self.slot_hold_secs, MAX_HOLD_SECS)?;
        range("resume-secs", self.resume_secs, MAX_RESUME_SECS)?;
        range("chaos-stall-secs", self.chaos_stall_secs, 600.0)?;
        non_neg("header-timeout-secs", self.header_timeout_secs)?;
        non_neg("idle-timeout-secs", self.idle_timeout_secs)?;
        if self.header_timeout_secs <= 0.0 || self.idle_timeout_secs <= 0.0 {
            return Err(format!(
                "--header-timeout-secs and --idle-timeout-secs must be > 0, got {} and {}",
                self.header_timeout_secs, self.idle_timeout_secs
            ));
        }
        if self.resend > 1000 {
            return Err(format!(
                "--resend must be from 0 to 1000, got {}",
                self.resend
            ));
        }
        if self.max_clients == 0 {
            return Err("--max-clients must be at least 1".into());
        }
        if self.max_retained_records == 0 {
            return Err("--max-retained-records must be at least 1".into());
        }
        if !(1..=MAX_TOKEN_TTL_SECS).contains(&self.token_ttl_secs) {
            return Err(format!(
                "--token-ttl-secs must be from 1 to {MAX_TOKEN_TTL_SECS}, got {}",
                self.token_ttl_secs
            ));
        }
        if let Some(id) = &self.ims_client_id {
            if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "--ims-client-id must be 1 to 256 visible ASCII characters, got {id:?}"
                ));
            }
            if self.ims_client_secret.as_deref().is_none_or(str::is_empty) {
                return Err(format!(
                    "--ims-client-id needs the client secret in the environment variable {IMS_SECRET_ENV}"
                ));
            }
            if self.token.is_some() {
                return Err(
                    "--token and --ims-client-id exclude each other: with IMS the stream accepts the tokens IMS issued".into(),
                );
            }
        }
        if let Some(k) = self.keepalive_secs {
            if !(k.is_finite() && k > 0.0) {
                return Err(format!("--keepalive-secs must be > 0, got {k}"));
            }
        }
        if !(0.0..=1.0).contains(&self.chaos_rate) {
            return Err(format!(
                "--chaos-rate is a probability per record, 0..=1, got {}",
                self.chaos_rate
            ));
        }
        if self.chaos && self.chaos_faults.is_empty() {
            return Err("--chaos-faults must name at least one fault".into());
        }
        if self.backlog == 0 || self.backlog > MAX_BACKLOG {
            return Err(format!(
                "--backlog must be from 1 to {MAX_BACKLOG}, got {}",
                self.backlog
            ));
        }
        for name in &self.streams {
            if !crate::server::valid_stream_name(name) {
                return Err(format!(
                    "--stream {name:?}: names use letters, digits, '-', '_' and '.'"
                ));
            }
        }
        if let Some(w) = &self.www {
            if !w.is_dir() {
                return Err(format!("--www {}: not a directory", w.display()));
            }
        }
        for (p, d) in &self.mounts {
            if !d.is_dir() {
                return Err(format!("--mount {p}={}: not a directory", d.display()));
            }
        }
        Ok(())
    }
}
