//! Validated client options, and the request they describe.
//!
//! Every option of the public `LiveStream` API (see the README) is checked here, so the rules
//! live in one place and every shell gives the same errors. A bad value is a [`ConfigError`]
//! that names the option, the value and what is allowed.

use std::fmt;

use super::time::{millis, Duration};

/// How the host gets access tokens. The core never sees a token's value until the host asks
/// for the request headers, but it must know whether a refused token can be replaced: the
/// messages and the reaction to a 401 depend on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenSource {
    /// No token: no `Authorization` header (a relay in front adds it).
    #[default]
    None,
    /// One fixed token; a 401 cannot be cured by asking again.
    Fixed,
    /// A provider (a function, IMS) that is asked before each connect and for a fresh token
    /// right after a 401.
    Refreshable,
}

/// Options as a host read them, typed, before validation of ranges and combinations.
/// `None` means "the default" (see [`OPTIONS`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    /// Absolute stream URL, e.g. `https://livestream.adobe.net/api/1/stream/my-endpoint`.
    pub url: Option<String>,
    /// Where tokens come from.
    pub token: TokenSource,
    /// Sent as `x-api-key` when present.
    pub api_key: Option<String>,
    /// `maxConnections` query parameter, 1..=8, sent on every request.
    pub max_connections: Option<u64>,
    /// How many connection slots this client opens, 1..=maxConnections.
    pub connections: Option<u64>,
    /// Server-side smoothing (`smoothing=1`).
    pub smoothing: Option<bool>,
    /// `smoothingBucketSize` in seconds, 1..=7200; only with smoothing.
    pub smoothing_bucket_size: Option<u64>,
    /// `reset=smallest|largest`, sent on a slot's first connection only.
    pub reset: Option<String>,
    /// Minimum wait after any loss before the next attempt.
    pub reconnect_delay: Option<Duration>,
    /// Random extra wait added on top of each reconnect delay (never subtracted).
    pub reconnect_jitter: Option<Duration>,
    /// Cap of the growing wait after repeated failures (and of a `Retry-After`).
    pub max_reconnect_delay: Option<Duration>,
    /// Silence (no byte at all) after which a connection counts as lost; zero turns it off.
    pub idle_timeout: Option<Duration>,
    /// Largest record accepted, in decoded bytes without the line terminator.
    pub max_record_bytes: Option<u64>,
    /// How many recent hit ids are remembered to drop duplicates; 0 turns it off.
    pub dedup_window: Option<u64>,
    /// Origins besides the stream's own that may receive the credentials on a redirect.
    pub redirect_origins: Vec<String>,
}

/// Where a new stream starts reading (`reset` query parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// The oldest retained data.
    Smallest,
    /// The newest data.
    Largest,
}

impl Reset {
    /// The query parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reset::Smallest => "smallest",
            Reset::Largest => "largest",
        }
    }
}

/// A validated configuration. Construct with [`Config::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The stream URL as given, without fragment; the managed query parameters are added per request.
    pub url: String,
    /// Where tokens come from.
    pub token: TokenSource,
    /// `x-api-key` value.
    pub api_key: Option<String>,
    /// `maxConnections`, 1..=8.
    pub max_connections: u8,
    /// Slots this client opens, 1..=max_connections.
    pub connections: u8,
    /// `smoothingBucketSize` when smoothing is on (None: smoothing off).
    pub smoothing: Option<Option<u32>>,
    /// `reset` on first connections.
    pub reset: Option<Reset>,
    /// Minimum wait after any loss.
    pub reconnect_delay: Duration,
    /// Upper bound of the random extra wait.
    pub reconnect_jitter: Duration,
    /// Cap of the exponential growth and of `Retry-After` (>= reconnect_delay).
    pub max_reconnect_delay: Duration,
    /// Idle timeout; None when off.
    pub idle_timeout: Option<Duration>,
    /// Record size cap, bytes.
    pub max_record_bytes: usize,
    /// Dedup window, hits; 0 = off.
    pub dedup_window: usize,
    /// Origins (`scheme://host[:port]`, lower case) that may receive credentials on a
    /// redirect, the stream's own first.
    pub credential_origins: Vec<String>,
}

/// Default minimum wait after a loss: KA-16598 asks for about 60 s.
pub const DEFAULT_RECONNECT_DELAY_MS: u64 = 60_000;
/// Default cap of the growing wait: 4 minutes, so that the longest wait (cap + at most 15 s of
/// jitter) stays inside the "few minutes" within which Live Stream resumes where a client left
/// off; a longer gap loses records for good.
pub const DEFAULT_MAX_RECONNECT_DELAY_MS: u64 = 240_000;
/// Default idle timeout: 10 minutes of total silence. Longer than Adobe's worst documented
/// latency (5 min) with margin, so a quiet report suite is not cut needlessly; short enough
/// that a half-open connection (NAT or proxy dropped it silently) is noticed.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 600_000;
/// Default record cap: 1 MiB, ~800 times a typical 1.2 KB hit.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;
/// Default dedup window: the last 100 000 hit ids (~3 MB), far more than a resume re-sends.
pub const DEFAULT_DEDUP_WINDOW: usize = 100_000;
/// Largest default jitter: a quarter of the delay, but never more than this.
pub const MAX_DEFAULT_JITTER_MS: u64 = 15_000;

/// Query parameters the client manages itself; a URL that already has them is refused.
pub const MANAGED_PARAMS: [&str; 4] = [
    "maxConnections",
    "smoothing",
    "smoothingBucketSize",
    "reset",
];

/// What values an option takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An absolute http(s) URL.
    Url,
    /// A string of printable ASCII.
    Text,
    /// `true` or `false`.
    Bool,
    /// One of the listed strings.
    Choice(&'static [&'static str]),
    /// A whole number in `min..=max`, with a unit for messages (`" ms"`, `" bytes"`).
    Integer {
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
        /// Unit, with a leading space, or empty.
        unit: &'static str,
        /// Extra words about the range, e.g. `", 0 turns it off"`.
        note: &'static str,
    },
    /// A list of origins (`https://host[:port]`).
    Origins,
    /// How tokens are given; the host decides the accepted forms.
    Token,
}

/// One option of the client: its name (as the JavaScript API and the README spell it), what
/// it takes, its default and what it means. [`OPTIONS`] is the one definition every host and
/// document is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionSpec {
    /// The option's name, camelCase.
    pub name: &'static str,
    /// What values it takes.
    pub kind: Kind,
    /// The default, in words (README).
    pub default: &'static str,
    /// What it does, in one sentence (README).
    pub meaning: &'static str,
}

impl OptionSpec {
    /// What is allowed, in words, for error messages and the README.
    pub fn expected(&self) -> String {
        match self.kind {
            Kind::Url => "an absolute http(s) URL such as https://livestream.adobe.net/api/1/stream/{endpoint-name}".into(),
            Kind::Text => "a non-empty string of printable ASCII without spaces".into(),
            Kind::Bool => "true or false".into(),
            Kind::Choice(values) => {
                let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
                format!("{} or undefined", quoted.join(", "))
            }
            Kind::Integer { min, max, unit, note } => {
                format!("an integer from {min} to {max}{unit}{note}")
            }
            Kind::Origins => "a list of origins such as https://host[:port]".into(),
            Kind::Token => "a string, or a function that returns one".into(),
        }
    }
}

const fn int(min: u64, max: u64, unit: &'static str, note: &'static str) -> Kind {
    Kind::Integer {
        min,
        max,
        unit,
        note,
    }
}

/// Every option of the core, in README order. Hosts add their own (callbacks, `fetch`, …).
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "url",
        kind: Kind::Url,
        default: "required",
        meaning: "the stream, `…/api/1/stream/{endpoint-name}`; relative in a page; must not carry the parameters below",
    },
    OptionSpec {
        name: "token",
        kind: Kind::Token,
        default: "none",
        meaning: "OAuth access token (a leading `Bearer ` is dropped); leave it out only behind a relay that adds it",
    },
    OptionSpec {
        name: "apiKey",
        kind: Kind::Text,
        default: "none",
        meaning: "sent as `x-api-key` (Adobe requires it: the client id)",
    },
    OptionSpec {
        name: "maxConnections",
        kind: int(1, 8, "", ""),
        default: "1",
        meaning: "sent on every request; every client of the stream must send the same value",
    },
    OptionSpec {
        name: "connections",
        kind: int(1, 8, "", " (at most maxConnections)"),
        default: "maxConnections",
        meaning: "connection slots this client opens",
    },
    OptionSpec {
        name: "smoothing",
        kind: Kind::Bool,
        default: "false",
        meaning: "server-side smoothing (`smoothing=1`)",
    },
    OptionSpec {
        name: "smoothingBucketSize",
        kind: int(1, 7200, " seconds", ""),
        default: "service default (270)",
        meaning: "only with `smoothing: true`",
    },
    OptionSpec {
        name: "reset",
        kind: Kind::Choice(&["smallest", "largest"]),
        default: "none",
        meaning: "where a new stream starts; sent on a slot's first connection only, never on reconnects (they resume)",
    },
    OptionSpec {
        name: "reconnectDelayMs",
        kind: int(10, 3_600_000, " ms", ""),
        default: "60000",
        meaning: "minimum wait after any loss; below ~60 000 the real service answers 409/503 (small values are for relays, the emulator and tests)",
    },
    OptionSpec {
        name: "reconnectJitterMs",
        kind: int(0, 3_600_000, " ms", ""),
        default: "reconnectDelayMs / 4, at most 15000",
        meaning: "random extra wait, only ever added",
    },
    OptionSpec {
        name: "maxReconnectDelayMs",
        kind: int(10, 86_400_000, " ms", " (at least reconnectDelayMs)"),
        default: "240000",
        meaning: "cap of the doubling wait after attempts that fail, and of a `Retry-After` (jitter comes on top)",
    },
    OptionSpec {
        name: "idleTimeoutMs",
        kind: int(0, 86_400_000, " ms", " (0 turns it off, otherwise at least 10)"),
        default: "600000",
        meaning: "silence (not a single byte; CRLF keep-alives count) after which a connection is presumed dead; also bounds the wait for response headers",
    },
    OptionSpec {
        name: "maxRecordBytes",
        kind: int(64, 256 << 20, " bytes", ""),
        default: "1048576",
        meaning: "larger records are skipped and reported; memory stays bounded by it",
    },
    OptionSpec {
        name: "dedupWindow",
        kind: int(0, 10_000_000, " hits", ", 0 turns it off"),
        default: "100000",
        meaning: "how many recent hit ids are remembered to drop duplicates",
    },
    OptionSpec {
        name: "redirectOrigins",
        kind: Kind::Origins,
        default: "none",
        meaning: "origins besides the stream's own that may receive the token and API key on a redirect (never over a downgrade to http)",
    },
];

/// The spec of the option called `name`.
pub fn option_spec(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.name == name)
}

fn spec(name: &str) -> &'static OptionSpec {
    option_spec(name).unwrap_or(&OPTIONS[0])
}

/// A bad option: which one, the value given, and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The option's name as the JavaScript API spells it.
    pub option: String,
    /// The offending value, as text.
    pub value: String,
    /// What is allowed, in words.
    pub expected: String,
}

impl ConfigError {
    /// Builds an error for `option`.
    pub fn new(option: &str, value: impl Into<String>, expected: impl Into<String>) -> Self {
        ConfigError {
            option: option.to_string(),
            value: value.into(),
            expected: expected.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid option {}: {} ({})",
            self.option, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// Refuses an option name that is not in `known` (a host passes the core's [`OPTIONS`] names
/// plus its own), suggesting the closest known one: a typo must not be silently ignored.
pub fn check_option_name(name: &str, known: &[&str]) -> Result<(), ConfigError> {
    if known.contains(&name) {
        return Ok(());
    }
    let best = known
        .iter()
        .map(|k| {
            (
                edit_distance(&name.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                *k,
            )
        })
        .min()
        .filter(|(d, _)| *d <= 3);
    let expected = match best {
        Some((_, k)) => format!("unknown option; did you mean {k}?"),
        None => format!("unknown option; known options: {}", known.join(", ")),
    };
    Err(ConfigError::new(name, "given", expected))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Checks an access token and returns it without a leading `Bearer ` (which users often
/// copy along from other tools).
pub fn validate_token(token: &str) -> Result<String, ConfigError> {
    let trimmed = token.trim();
    let bare = match trimmed.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => trimmed[7..].trim_start(),
        _ => trimmed,
    };
    if bare.is_empty() {
        return Err(ConfigError::new(
            "token",
            "an empty string",
            "a non-empty access token, or a function that returns one",
        ));
    }
    if let Some(c) = bare.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
        return Err(ConfigError::new(
            "token",
            format!("a string containing {:?}", c),
            "printable ASCII only (an OAuth access token)",
        ));
    }
    Ok(bare.to_string())
}

/// Checks a whole number against the range of option `name` in [`OPTIONS`].
pub fn check_integer(name: &str, value: u64) -> Result<u64, ConfigError> {
    let spec = spec(name);
    match spec.kind {
        Kind::Integer { min, max, .. } if value < min || value > max => {
            Err(ConfigError::new(name, value.to_string(), spec.expected()))
        }
        _ => Ok(value),
    }
}

fn integer(name: &str, value: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    value.map_or(Ok(default), |v| check_integer(name, v))
}

fn duration(name: &str, value: Option<Duration>, default: u64) -> Result<u64, ConfigError> {
    integer(name, value.map(millis), default)
}

/// Checks an origin for `redirectOrigins` and returns it as `scheme://host[:port]`, lower case.
fn validate_origin(origin: &str) -> Result<String, ConfigError> {
    let bad = || {
        ConfigError::new(
            "redirectOrigins",
            format!("{origin:?}"),
            spec("redirectOrigins").expected(),
        )
    };
    let parts = crate::core::policy::UrlParts::parse(origin.trim()).ok_or_else(bad)?;
    if !(parts.path.is_empty() || parts.path == "/") || !parts.query.is_empty() {
        return Err(bad());
    }
    Ok(parts.origin())
}

impl Config {
    /// Validates `o`, applying defaults; the first bad option is the error.
    pub fn new(o: Options) -> Result<Config, ConfigError> {
        let url = validate_url(o.url.as_deref())?;
        let api_key = match o.api_key {
            None => None,
            Some(k) => {
                let k = k.trim().to_string();
                if k.is_empty() || !k.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(ConfigError::new(
                        "apiKey",
                        format!("{k:?}"),
                        spec("apiKey").expected(),
                    ));
                }
                Some(k)
            }
        };
        let max_connections = integer("maxConnections", o.max_connections, 1)? as u8;
        let connections = integer("connections", o.connections, u64::from(max_connections))?;
        if connections > u64::from(max_connections) {
            return Err(ConfigError::new(
                "connections",
                connections.to_string(),
                format!("an integer from 1 to maxConnections ({max_connections})"),
            ));
        }
        let connections = connections as u8;
        let smoothing_on = o.smoothing.unwrap_or(false);
        let bucket = match o.smoothing_bucket_size {
            None => None,
            Some(v) => {
                let b = check_integer("smoothingBucketSize", v)? as u32;
                if !smoothing_on {
                    return Err(ConfigError::new(
                        "smoothingBucketSize",
                        b.to_string(),
                        "only allowed together with smoothing: true",
                    ));
                }
                Some(b)
            }
        };
        let smoothing = smoothing_on.then_some(bucket);
        let reset = match o.reset.as_deref() {
            None => None,
            Some("smallest") => Some(Reset::Smallest),
            Some("largest") => Some(Reset::Largest),
            Some(other) => {
                return Err(ConfigError::new(
                    "reset",
                    format!("{other:?}"),
                    spec("reset").expected(),
                ))
            }
        };
        let delay = duration(
            "reconnectDelayMs",
            o.reconnect_delay,
            DEFAULT_RECONNECT_DELAY_MS,
        )?;
        let jitter = duration(
            "reconnectJitterMs",
            o.reconnect_jitter,
            (delay / 4).min(MAX_DEFAULT_JITTER_MS),
        )?;
        let max_delay = duration(
            "maxReconnectDelayMs",
            o.max_reconnect_delay,
            DEFAULT_MAX_RECONNECT_DELAY_MS.max(delay),
        )?;
        if max_delay < delay {
            return Err(ConfigError::new(
                "maxReconnectDelayMs",
                max_delay.to_string(),
                format!("an integer from reconnectDelayMs ({delay}) to 86400000 ms"),
            ));
        }
        let idle = duration("idleTimeoutMs", o.idle_timeout, DEFAULT_IDLE_TIMEOUT_MS)?;
        if idle != 0 && idle < 10 {
            return Err(ConfigError::new(
                "idleTimeoutMs",
                idle.to_string(),
                spec("idleTimeoutMs").expected(),
            ));
        }
        let max_record_bytes = integer(
            "maxRecordBytes",
            o.max_record_bytes,
            DEFAULT_MAX_RECORD_BYTES as u64,
        )? as usize;
        let dedup_window =
            integer("dedupWindow", o.dedup_window, DEFAULT_DEDUP_WINDOW as u64)? as usize;
        let own = crate::core::policy::UrlParts::parse(&url)
            .map(|p| p.origin())
            .unwrap_or_default();
        let mut credential_origins = vec![own];
        for origin in &o.redirect_origins {
            let origin = validate_origin(origin)?;
            if !credential_origins.contains(&origin) {
                credential_origins.push(origin);
            }
        }
        Ok(Config {
            url,
            token: o.token,
            api_key,
            max_connections,
            connections,
            smoothing,
            reset,
            reconnect_delay: Duration::from_millis(delay),
            reconnect_jitter: Duration::from_millis(jitter),
            max_reconnect_delay: Duration::from_millis(max_delay),
            idle_timeout: (idle != 0).then(|| Duration::from_millis(idle)),
            max_record_bytes,
            dedup_window,
            credential_origins,
        })
    }

    /// The URL of a request: the configured URL (or `base`, after a redirect) plus the
    /// managed parameters. `first` adds `reset`, which only the first connection sends.
    pub fn request_url(&self, first: bool) -> String {
        let mut url = self.url.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        let mut push = |k: &str, v: &str| {
            url.push(sep);
            url.push_str(k);
            url.push('=');
            url.push_str(v);
            sep = '&';
        };
        push("maxConnections", &self.max_connections.to_string());
        if let Some(bucket) = self.smoothing {
            push("smoothing", "1");
            if let Some(b) = bucket {
                push("smoothingBucketSize", &b.to_string());
            }
        }
        if first {
            if let Some(r) = self.reset {
                push("reset", r.as_str());
            }
        }
        url
    }

    /// The headers of a request: `Authorization` with the validated bare `token` when there
    /// is one, `x-api-key`, and `Accept-Encoding` (listed for hosts that may set it; browsers
    /// set it themselves and refuse it from script).
    pub fn request_headers(&self, token: Option<&str>) -> Vec<(&'static str, String)> {
        let mut h = Vec::with_capacity(3);
        if let Some(t) = token {
            h.push(("Authorization", format!("Bearer {t}")));
        }
        if let Some(k) = &self.api_key {
            h.push(("x-api-key", k.clone()));
        }
        h.push(("Accept-Encoding", "gzip".to_string()));
        h
    }

    /// True when a redirect to `url` may carry the credentials: its origin is the stream's
    /// own or one of `redirectOrigins`, and it is not a downgrade from https to http.
    pub fn may_send_credentials_to(&self, url: &str) -> bool {
        let Some(target) = crate::core::policy::UrlParts::parse(url) else {
            return false;
        };
        let downgrade =
            self.url.to_ascii_lowercase().starts_with("https:") && target.scheme == "http";
        !downgrade && self.credential_origins.contains(&target.origin())
    }
}

fn validate_url(url: Option<&str>) -> Result<String, ConfigError> {
    let expected = spec("url").expected();
    let Some(raw) = url else {
        return Err(ConfigError::new("url", "missing", expected));
    };
    let trimmed = raw.trim();
    let without_fragment = trimmed.split('#').next().unwrap_or_default();
    let parsed = crate::core::policy::UrlParts::parse(without_fragment)
        .ok_or_else(|| ConfigError::new("url", format!("{raw:?}"), expected.clone()))?;
    if without_fragment
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ConfigError::new(
            "url",
            format!("{raw:?}"),
            "a URL without spaces or control characters (percent-encode them)",
        ));
    }
    for pair in parsed.query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split('=').next().unwrap_or_default();
        if MANAGED_PARAMS.contains(&key) {
            return Err(ConfigError::new(
                "url",
                format!("{raw:?}"),
                format!(
                    "a URL without the query parameter {key}: set the option {key} instead (the client sends it on every request)"
                ),
            ));
        }
    }
    Ok(without_fragment.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Options {
        Options {
            url: Some("https://livestream.adobe.net/api/1/stream/ep".into()),
            ..Options::default()
        }
    }

    #[test]
    fn defaults_follow_ka_16598() {
        let c = Config::new(base()).unwrap();
        assert_eq!(c.reconnect_delay, Duration::from_secs(60));
        assert_eq!(c.reconnect_jitter, Duration::from_secs(15));
        assert_eq!(c.max_reconnect_delay, Duration::from_secs(240));
        assert_eq!(c.max_connections, 1);
        assert_eq!(c.connections, 1);
        assert_eq!(
            c.idle_timeout,
            Some(Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS))
        );
        assert_eq!(c.dedup_window, DEFAULT_DEDUP_WINDOW);
    }

    #[test]
    fn connections_default_to_max_connections() {
        let c = Config::new(Options {
            max_connections: Some(3),
            ..base()
        })
        .unwrap();
        assert_eq!(c.connections, 3);
    }

    #[test]
    fn bad_values_name_option_value_and_range() {
        let cases: Vec<(Options, &str, &str)> = vec![
            (
                Options {
                    max_connections: Some(9),
                    ..base()
                },
                "maxConnections",
                "9",
            ),
            (
                Options {
                    max_connections: Some(0),
                    ..base()
                },
                "maxConnections",
                "0",
            ),
            (
                Options {
                    max_connections: Some(2),
                    connections: Some(3),
                    ..base()
                },
                "connections",
                "3",
            ),
            (
                Options {
                    smoothing: Some(true),
                    smoothing_bucket_size: Some(7201),
                    ..base()
                },
                "smoothingBucketSize",
                "7201",
            ),
            (
                Options {
                    smoothing_bucket_size: Some(30),
                    ..base()
                },
                "smoothingBucketSize",
                "30",
            ),
            (
                Options {
                    reset: Some("oldest".into()),
                    ..base()
                },
                "reset",
                "\"oldest\"",
            ),
            (
                Options {
                    reconnect_delay: Some(Duration::from_millis(9)),
                    ..base()
                },
                "reconnectDelayMs",
                "9",
            ),
            (
                Options {
                    reconnect_delay: Some(Duration::from_millis(1000)),
                    max_reconnect_delay: Some(Duration::from_millis(500)),
                    ..base()
                },
                "maxReconnectDelayMs",
                "500",
            ),
            (
                Options {
                    idle_timeout: Some(Duration::from_millis(5)),
                    ..base()
                },
                "idleTimeoutMs",
                "5",
            ),
            (
                Options {
                    max_record_bytes: Some(1),
                    ..base()
                },
                "maxRecordBytes",
                "1",
            ),
            (
                Options {
                    dedup_window: Some(10_000_001),
                    ..base()
                },
                "dedupWindow",
                "10000001",
            ),
            (
                Options {
                    redirect_origins: vec!["https://h/path".into()],
                    ..base()
                },
                "redirectOrigins",
                "\"https://h/path\"",
            ),
            (
                Options {
                    url: None,
                    ..base()
                },
                "url",
                "missing",
            ),
            (
                Options {
                    url: Some("livestream.adobe.net/x".into()),
                    ..base()
                },
                "url",
                "\"livestream.adobe.net/x\"",
            ),
            (
                Options {
                    url: Some("ftp://h/x".into()),
                    ..base()
                },
                "url",
                "\"ftp://h/x\"",
            ),
            (
                Options {
                    api_key: Some("a b".into()),
                    ..base()
                },
                "apiKey",
                "\"a b\"",
            ),
        ];
        for (o, option, value) in cases {
            let e = Config::new(o).unwrap_err();
            assert_eq!(e.option, option, "{e}");
            assert_eq!(e.value, value, "{e}");
            let text = e.to_string();
            assert!(text.contains(option) && text.contains(value), "{text}");
        }
    }

    #[test]
    fn range_is_in_the_message() {
        let e = Config::new(Options {
            max_connections: Some(9),
            ..base()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid option maxConnections: 9 (an integer from 1 to 8)"
        );
    }

    #[test]
    fn url_with_managed_parameter_is_refused() {
        let e = Config::new(Options {
            url: Some("https://h/api/1/stream/ep?maxConnections=2".into()),
            ..base()
        })
        .unwrap_err();
        assert!(e.expected.contains("set the option maxConnections"), "{e}");
    }

    #[test]
    fn request_url_has_parameters_and_reset_only_first() {
        let c = Config::new(Options {
            url: Some("https://h/api/1/stream/ep?x=1#frag".into()),
            max_connections: Some(2),
            smoothing: Some(true),
            smoothing_bucket_size: Some(30),
            reset: Some("smallest".into()),
            ..base()
        })
        .unwrap();
        assert_eq!(
            c.request_url(true),
            "https://h/api/1/stream/ep?x=1&maxConnections=2&smoothing=1&smoothingBucketSize=30&reset=smallest"
        );
        assert_eq!(
            c.request_url(false),
            "https://h/api/1/stream/ep?x=1&maxConnections=2&smoothing=1&smoothingBucketSize=30"
        );
        let plain = Config::new(base()).unwrap();
        assert_eq!(
            plain.request_url(true),
            "https://livestream.adobe.net/api/1/stream/ep?maxConnections=1"
        );
    }

    #[test]
    fn headers_carry_token_and_key() {
        let c = Config::new(Options {
            api_key: Some("cid".into()),
            ..base()
        })
        .unwrap();
        assert_eq!(
            c.request_headers(Some("tok")),
            vec![
                ("Authorization", "Bearer tok".to_string()),
                ("x-api-key", "cid".to_string()),
                ("Accept-Encoding", "gzip".to_string())
            ]
        );
    }

    #[test]
    fn tokens_are_checked_and_bearer_prefix_dropped() {
        assert_eq!(validate_token("abc").unwrap(), "abc");
        assert_eq!(validate_token("Bearer abc").unwrap(), "abc");
        assert_eq!(validate_token(" bearer  abc ").unwrap(), "abc");
        assert_eq!(validate_token("").unwrap_err().option, "token");
        assert!(validate_token("a\r\nx-evil: 1").is_err());
    }

    #[test]
    fn unknown_option_suggests_the_close_one() {
        let known: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
        assert!(check_option_name("maxConnections", &known).is_ok());
        let e = check_option_name("maxConnection", &known).unwrap_err();
        assert!(
            e.to_string().contains("did you mean maxConnections?"),
            "{e}"
        );
        let e = check_option_name("zzzzzzzzzzzz", &known).unwrap_err();
        assert!(e.to_string().contains("known options"), "{e}");
    }

    #[test]
    fn every_option_has_a_spec_and_ranges_match_the_checks() {
        for o in OPTIONS {
            assert!(!o.meaning.is_empty() && !o.default.is_empty(), "{}", o.name);
            if let Kind::Integer { min, max, .. } = o.kind {
                assert!(check_integer(o.name, min).is_ok(), "{}", o.name);
                assert!(check_integer(o.name, max).is_ok(), "{}", o.name);
                if min > 0 {
                    let e = check_integer(o.name, min - 1).unwrap_err();
                    assert!(e.to_string().contains(&max.to_string()), "{e}");
                }
                assert!(check_integer(o.name, max + 1).is_err(), "{}", o.name);
            }
        }
        let names: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "option names are unique");
    }

    #[test]
    fn credentials_go_only_to_allowed_origins() {
        let c = Config::new(Options {
            redirect_origins: vec!["https://lb.example".into()],
            ..base()
        })
        .unwrap();
        assert!(c.may_send_credentials_to("https://livestream.adobe.net/other"));
        assert!(c.may_send_credentials_to("https://LB.example:443/x"));
        assert!(!c.may_send_credentials_to("http://livestream.adobe.net/other"));
        assert!(!c.may_send_credentials_to("https://evil.example/x"));
        assert!(!c.may_send_credentials_to("not a url"));
    }

    #[test]
    fn the_schema_defaults_are_the_constants() {
        // OPTIONS carries defaults as README text; the constants are what Config::new applies.
        let default = |name: &str| option_spec(name).unwrap().default;
        assert_eq!(
            default("reconnectDelayMs"),
            DEFAULT_RECONNECT_DELAY_MS.to_string()
        );
        assert_eq!(
            default("maxReconnectDelayMs"),
            DEFAULT_MAX_RECONNECT_DELAY_MS.to_string()
        );
        assert_eq!(
            default("idleTimeoutMs"),
            DEFAULT_IDLE_TIMEOUT_MS.to_string()
        );
        assert_eq!(
            default("maxRecordBytes"),
            DEFAULT_MAX_RECORD_BYTES.to_string()
        );
        assert_eq!(default("dedupWindow"), DEFAULT_DEDUP_WINDOW.to_string());
        assert!(default("reconnectJitterMs").contains(&MAX_DEFAULT_JITTER_MS.to_string()));
        let c = Config::new(base()).unwrap();
        assert_eq!(c.max_connections.to_string(), default("maxConnections"));
    }
}
