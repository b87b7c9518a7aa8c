//! Command-line options of the relay, and the secrets it reads from the environment.
//!
//! Upstream options mirror the JavaScript `LiveStream` options one for one and are validated
//! by the same core ([`livestream_wasm::core::Config`]), so a bad value gets the same message
//! in both hosts. Secrets never come from flags (they would show in `ps` and shell history).

// The field docs below are also the `--help` text, where a URL must stay bare.
#![allow(rustdoc::bare_urls)]

use clap::Parser;
use livestream_wasm::core::config::{option_spec, Kind};
use std::net::SocketAddr;
use std::path::PathBuf;

/// One polite upstream Live Stream connection per slot, fanned out to any number of clients.
///
/// Holds the Adobe token server-side (from IMS, or a fixed one), follows every KA-16598 rule
/// upstream whatever the downstream clients do, and serves `GET /api/1/stream/{name}` in
/// Live Stream's own wire format (chunked, gzip, CRLF records, bare 64-bit ids).
///
/// Secrets come from the environment only: LIVESTREAM_CLIENT_SECRET (IMS),
/// LIVESTREAM_TOKEN (a fixed upstream token instead of IMS), LIVESTREAM_API_KEY (x-api-key
/// when it is not the client id), LIVESTREAM_RELAY_TOKEN (bearer token downstream clients
/// must send).
#[derive(Parser, Clone, Debug)]
#[command(name = "livestream-relay", version, about, long_about)]
pub struct Cli {
    /// A Live Stream endpoint URL, e.g. https://livestream.adobe.net/api/1/stream/NAME.
    /// Repeatable; each is served downstream at /api/1/stream/NAME (its last path segment).
    #[arg(long = "upstream", value_name = "URL", required = true)]
    pub upstreams: Vec<String>,

    /// `maxConnections` sent upstream.
    #[arg(long, help = core_help("maxConnections"))]
    pub max_connections: Option<u64>,

    /// Upstream slots this relay opens per endpoint.
    #[arg(long, help = core_help("connections"))]
    pub connections: Option<u64>,

    /// Minimum wait after any upstream loss, as KA-16598 asks.
    #[arg(long, help = core_help("reconnectDelayMs"))]
    pub reconnect_delay_ms: Option<u64>,

    /// Random extra wait on top of each reconnect delay.
    #[arg(long, help = core_help("reconnectJitterMs"))]
    pub reconnect_jitter_ms: Option<u64>,

    /// Cap of the growing wait after repeated failures.
    #[arg(long, help = core_help("maxReconnectDelayMs"))]
    pub max_reconnect_delay_ms: Option<u64>,

    /// Silence after which an upstream connection counts as lost.
    #[arg(long, help = core_help("idleTimeoutMs"))]
    pub idle_timeout_ms: Option<u64>,

    /// Largest record accepted.
    #[arg(long, help = core_help("maxRecordBytes"))]
    pub max_record_bytes: Option<u64>,

    /// Recent hit ids remembered to drop duplicates.
    #[arg(long, help = core_help("dedupWindow"))]
    pub dedup_window: Option<u64>,

    /// Ask Live Stream for server-side smoothing.
    #[arg(long, help = core_help("smoothing"))]
    pub smoothing: bool,

    /// `smoothingBucketSize` (only with --smoothing).
    #[arg(long, help = core_help("smoothingBucketSize"))]
    pub smoothing_bucket_size: Option<u64>,

    /// Where a new stream starts (first connection only).
    #[arg(long, help = core_help("reset"))]
    pub reset: Option<String>,

    /// An origin besides the upstream's own that may receive the token and API key on a
    /// redirect, e.g. https://livestream-2.adobe.net. Repeatable.
    #[arg(long = "redirect-origin", value_name = "ORIGIN", help = core_help("redirectOrigins"))]
    pub redirect_origins: Vec<String>,

    /// Adobe IMS base URL; tokens come from POST {ims}/ims/token/v3.
    #[arg(long, default_value = "https://ims-na1.adobelogin.com")]
    pub ims_url: String,

    /// OAuth server-to-server client id (also the x-api-key). Its secret comes from
    /// LIVESTREAM_CLIENT_SECRET.
    #[arg(long)]
    pub client_id: Option<String>,

    /// OAuth scopes, comma-separated, as on the credential's page in the Developer Console.
    #[arg(long)]
    pub scope: Option<String>,

    /// Address to listen on for downstream clients; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8788")]
    pub listen: SocketAddr,

    /// Allow a non-loopback --listen without LIVESTREAM_RELAY_TOKEN (anyone who can reach
    /// the port reads the stream).
    #[arg(long)]
    pub insecure_open: bool,

    /// An origin allowed to read the stream cross-origin (CORS), e.g. https://dash.example.com.
    /// Repeatable. Same-origin pages need nothing.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,

    /// Serve static files (the demo page) from this directory at `/`.
    #[arg(long)]
    pub www: Option<PathBuf>,

    /// Serve an extra directory under a URL prefix, e.g. `/pkg=./pkg`. Repeatable.
    #[arg(long = "mount", value_name = "/PREFIX=DIR", value_parser = parse_mount)]
    pub mounts: Vec<(String, PathBuf)>,

    /// Records each new downstream client receives first (the most recent ones).
    #[arg(long, default_value_t = 5000)]
    pub replay: usize,

    /// Live segments a downstream client may fall behind before it is cut (~3 s at the
    /// default --flush-ms). The last this many segments stay in memory, shared by all
    /// clients, so this also bounds the relay's memory (a segment holds at most 256 KiB of
    /// records and their compressed form).
    #[arg(long, default_value_t = 64)]
    pub client_queue: usize,

    /// Most downstream TCP connections served at once; more are answered 503 and closed
    /// (keep it below the descriptor limit, `ulimit -n`).
    #[arg(long, default_value_t = 10_000)]
    pub max_clients: usize,

    /// Kernel send buffer per downstream socket, bytes (bounds kernel memory per client and
    /// how much a stalled client can absorb before its queue counts; 0 = the OS default).
    #[arg(long, default_value_t = 256 * 1024)]
    pub client_sndbuf: usize,

    /// Records are gathered for at most this long (ms) into one segment, which is
    /// compressed once and written once per client; 0 publishes every upstream chunk as it
    /// comes. Fewer, larger segments mean fewer writes per client and better compression.
    #[arg(long, default_value_t = 50)]
    pub flush_ms: u64,

    /// gzip level of the downstream stream, 0..9 (compressed once for all clients).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub gzip_level: u32,

    /// Benchmark baseline only: compress separately for every client, as a naive relay would.
    #[arg(long, hide = true)]
    pub naive_per_client_gzip: bool,

    /// Do not log to stderr.
    #[arg(long, short)]
    pub quiet: bool,

    /// Fleet mode: several relays share one upstream connection per slot through this Redis
    /// (or Valkey), `redis://HOST:PORT[/DB]` (see relay/README.md, "Fleet mode").
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// Fleet mode: lifetime of a slot lease; the owner renews it every third of it and stops
    /// its upstream connection once it could not renew for this long (minus a margin).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(300..=600_000))]
    pub lease_ttl_ms: u64,

    /// Fleet mode: prefix of every Redis key (relays of one fleet share it).
    #[arg(long, default_value = "livestream-relay")]
    pub fleet_prefix: String,

    /// Fleet mode: entries (batches of records) kept in each stream's Redis Stream
    /// (`XADD … MAXLEN ~ N`).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..=10_000_000))]
    pub fleet_stream_max: u64,
}

/// The `--help` text of a flag that mirrors a core option, made from the core's schema
/// (`livestream_wasm::core::config::OPTIONS`): its meaning, what it takes and its default, so
/// no default or range is written twice (the JavaScript API and the README use the same).
fn core_help(option: &str) -> String {
    let Some(spec) = option_spec(option) else {
        // Only reachable through a typo in this file; the tests build the help.
        panic!("{option} is not an option of the core's schema");
    };
    let mut meaning = spec.meaning.replace('`', "");
    if let Some(first) = meaning.get(..1) {
        meaning = first.to_uppercase() + &meaning[1..];
    }
    match spec.kind {
        // A switch here: present means true.
        Kind::Bool => format!("{meaning}. Off by default (JS option {})", spec.name),
        _ => format!(
            "{meaning}. Takes {}; default {} (JS option {})",
            // A flag is left out rather than set to `undefined`.
            spec.expected().trim_end_matches(" or undefined"),
            spec.default,
            spec.name
        ),
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
    Ok((
        format!("{}/", prefix.trim_end_matches('/')),
        PathBuf::from(dir),
    ))
}

/// Secrets, read from the environment by the binary (tests pass them directly).
#[derive(Clone, Default)]
pub struct Secrets {
    /// LIVESTREAM_CLIENT_SECRET: the IMS client secret.
    pub client_secret: Option<String>,
    /// LIVESTREAM_TOKEN: a fixed upstream access token (instead of IMS).
    pub token: Option<String>,
    /// LIVESTREAM_API_KEY: x-api-key, when it is not the client id.
    pub api_key: Option<String>,
    /// LIVESTREAM_RELAY_TOKEN: the bearer token downstream clients must present.
    pub relay_token: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Secrets")
            .field("client_secret", &set(&self.client_secret))
            .field("token", &set(&self.token))
            .field("api_key", &set(&self.api_key))
            .field("relay_token", &set(&self.relay_token))
            .finish()
    }
}

impl Secrets {
    /// Reads the four LIVESTREAM_* variables; empty values count as unset.
    pub fn from_env() -> Secrets {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Secrets {
            client_secret: var("LIVESTREAM_CLIENT_SECRET"),
            token: var("LIVESTREAM_TOKEN"),
            api_key: var("LIVESTREAM_API_KEY"),
            relay_token: var("LIVESTREAM_RELAY_TOKEN"),
        }
    }
}

/// The downstream name of an upstream URL: its last non-empty path segment.
pub fn stream_name(url: &str) -> Option<String> {
    let no_frag = url.split('#').next()?;
    let path = no_frag.split('?').next()?;
    let after_scheme = path.split_once("://").map_or(path, |(_, rest)| rest);
    let (_, path) = after_scheme.split_once('/')?;
    let name = path.trim_end_matches('/').rsplit('/').next()?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags that mirror a core option, as (flag, option).
    const MIRRORED: [(&str, &str); 12] = [
        ("max-connections", "maxConnections"),
        ("connections", "connections"),
        ("reconnect-delay-ms", "reconnectDelayMs"),
        ("reconnect-jitter-ms", "reconnectJitterMs"),
        ("max-reconnect-delay-ms", "maxReconnectDelayMs"),
        ("idle-timeout-ms", "idleTimeoutMs"),
        ("max-record-bytes", "maxRecordBytes"),
        ("dedup-window", "dedupWindow"),
        ("smoothing", "smoothing"),
        ("smoothing-bucket-size", "smoothingBucketSize"),
        ("reset", "reset"),
        ("redirect-origin", "redirectOrigins"),
    ];

    #[test]
    fn flags_that_mirror_core_options_take_their_help_from_the_schema() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for (flag, option) in MIRRORED {
            let spec = option_spec(option).unwrap();
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .unwrap_or_else(|| panic!("--{flag} is missing"));
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert_eq!(help, core_help(option), "--{flag}");
            let default = match spec.kind {
                Kind::Bool => "Off by default".to_string(),
                _ => format!("default {}", spec.default),
            };
            assert!(
                help.contains(&format!("{default} (JS option {option})")),
                "--{flag}: {help}"
            );
        }
        // Every core option a relay operator can set is mirrored (url is --upstream; the
        // token and API key come from the environment, never from flags).
        let not_flags = ["url", "token", "apiKey"];
        for spec in livestream_wasm::core::config::OPTIONS {
            assert!(
                not_flags.contains(&spec.name) || MIRRORED.iter().any(|(_, o)| *o == spec.name),
                "core option {} has no relay flag",
                spec.name
            );
        }
    }

    #[test]
    fn the_readme_table_shows_the_schema_defaults() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("relay/README.md");
        for (flag, option) in MIRRORED {
            let spec = option_spec(option).unwrap();
            let row = readme
                .lines()
                .find(|l| {
                    l.strip_prefix(&format!("| `--{flag}"))
                        .is_some_and(|rest| rest.starts_with([' ', '`']))
                })
                .unwrap_or_else(|| panic!("relay/README.md has no row for --{flag}"));
            let cells = row.replace("\\|", "/");
            let default = cells
                .split('|')
                .nth(2)
                .unwrap_or("")
                .trim()
                .replace('`', "");
            let want = match spec.kind {
                Kind::Bool => "off",
                _ => spec.default,
            };
            assert_eq!(default, want, "relay/README.md, --{flag}");
        }
    }

    #[test]
    fn names_are_last_segments() {
        assert_eq!(
            stream_name("https://livestream.adobe.net/api/1/stream/my-end_point.1?x=1#f")
                .as_deref(),
            Some("my-end_point.1")
        );
        assert_eq!(stream_name("http://h/a/b/").as_deref(), Some("b"));
        assert_eq!(stream_name("http://h"), None);
        assert_eq!(stream_name("http://h/a/b%20c"), None);
    }

    #[test]
    fn secrets_never_debug_print() {
        let s = Secrets {
            client_secret: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
