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
    /// Checks value ranges clap cannot express; the message names the flag and the value.
    pub fn validate(&self) -> Result<(), String> {
        let non_neg = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!("--{name} must be a finite number >= 0, got {v}"))
            }
        };
        non_neg("rate", self.rate)?;
        non_neg("slot-hold-secs", self.slot_hold_secs)?;
        non_neg("resume-secs", self.resume_secs)?;
        non_neg("chaos-stall-secs", self.chaos_stall_secs)?;
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
        if self.backlog == 0 {
            return Err("--backlog must be at least 1".into());
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
