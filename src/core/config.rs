//! Validated client options, and the request they describe.
//!
//! Every option of the public `LiveStream` API (see the README) is checked here, so the rules
//! live in one place and every shell gives the same errors. A bad value is a [`ConfigError`]
//! that names the option, the value and what is allowed.

use std::fmt;

/// Options as a user wrote them, before validation. Numbers are `f64` because that is what
/// JavaScript hands over; validation rejects fractions and out-of-range values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    /// Absolute stream URL, e.g. `https://livestream.adobe.net/api/1/stream/my-endpoint`.
    pub url: Option<String>,
    /// Sent as `x-api-key` when present.
    pub api_key: Option<String>,
    /// `maxConnections` query parameter, 1..=8, sent on every request.
    pub max_connections: Option<f64>,
    /// How many connection slots this client opens, 1..=maxConnections.
    pub connections: Option<f64>,
    /// Server-side smoothing (`smoothing=1`).
    pub smoothing: Option<bool>,
    /// `smoothingBucketSize` in seconds, 1..=7200; only with smoothing.
    pub smoothing_bucket_size: Option<f64>,
    /// `reset=smallest|largest`, sent on a slot's first connection only.
    pub reset: Option<String>,
    /// Minimum wait after any loss before the next attempt.
    pub reconnect_delay_ms: Option<f64>,
    /// Random extra wait added on top of each reconnect delay (never subtracted).
    pub reconnect_jitter_ms: Option<f64>,
    /// Cap of the growing wait after repeated failures.
    pub max_reconnect_delay_ms: Option<f64>,
    /// Silence (no byte at all) after which a connection counts as lost; 0 turns it off.
    pub idle_timeout_ms: Option<f64>,
    /// Largest record accepted, in decoded bytes without the line terminator.
    pub max_record_bytes: Option<f64>,
    /// How many recent hit ids are remembered to drop duplicates; 0 turns it off.
    pub dedup_window: Option<f64>,
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
    /// Minimum wait after any loss, ms.
    pub reconnect_delay_ms: u64,
    /// Upper bound of the random extra wait, ms.
    pub reconnect_jitter_ms: u64,
    /// Cap of the exponential growth, ms (>= reconnect_delay_ms).
    pub max_reconnect_delay_ms: u64,
    /// Idle timeout, ms; None when off.
    pub idle_timeout_ms: Option<u64>,
    /// Record size cap, bytes.
    pub max_record_bytes: usize,
    /// Dedup window, hits; 0 = off.
    pub dedup_window: usize,
}

/// Default minimum wait after a loss: KA-16598 asks for about 60 s.
pub const DEFAULT_RECONNECT_DELAY_MS: u64 = 60_000;
/// Default cap of the growing wait: 10 minutes.
pub const DEFAULT_MAX_RECONNECT_DELAY_MS: u64 = 600_000;
/// Default idle timeout: 10 minutes of total silence. Longer than Adobe's worst documented
/// latency (5 min) with margin, so a quiet report suite is not cut needlessly; short enough
/// that a half-open connection (NAT or proxy dropped it silently) is noticed.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 600_000;
/// Default record cap: 1 MiB, ~800 times a typical 1.2 KB hit.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;
/// Default dedup window: the last 100 000 hit ids (~3 MB), far more than a resume re-sends.
pub const DEFAULT_DEDUP_WINDOW: usize = 100_000;

/// Query parameters the client manages itself; a URL that already has them is refused.
pub const MANAGED_PARAMS: [&str; 4] = [
    "maxConnections",
    "smoothing",
    "smoothingBucketSize",
    "reset",
];

/// Every option name the JavaScript API accepts (shell-only ones included), for the
/// "unknown option" check.
pub const OPTION_NAMES: [&str; 20] = [
    "url",
    "token",
    "apiKey",
    "maxConnections",
    "connections",
    "smoothing",
    "smoothingBucketSize",
    "reset",
    "reconnectDelayMs",
    "reconnectJitterMs",
    "maxReconnectDelayMs",
    "idleTimeoutMs",
    "maxRecordBytes",
    "dedupWindow",
    "fetch",
    "onHits",
    "onBatch",
    "onStatus",
    "onError",
    "seed",
];

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

/// Refuses an option name the API does not know, suggesting the closest known one.
pub fn check_option_name(name: &str) -> Result<(), ConfigError> {
    if OPTION_NAMES.contains(&name) {
        return Ok(());
    }
    let best = OPTION_NAMES
        .iter()
        .map(|known| {
            (
                edit_distance(&name.to_ascii_lowercase(), &known.to_ascii_lowercase()),
                known,
            )
        })
        .min()
        .filter(|(d, _)| *d <= 3);
    let expected = match best {
        Some((_, known)) => format!("unknown option; did you mean {known}?"),
        None => format!("unknown option; known options: {}", OPTION_NAMES.join(", ")),
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

fn integer(option: &str, value: f64, min: u64, max: u64, unit: &str) -> Result<u64, ConfigError> {
    let expected = || format!("an integer from {min} to {max}{unit}");
    if !value.is_finite() || value.fract() != 0.0 {
        return Err(ConfigError::new(option, fmt_number(value), expected()));
    }
    if value < min as f64 || value > max as f64 {
        return Err(ConfigError::new(option, fmt_number(value), expected()));
    }
    Ok(value as u64)
}

fn fmt_number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e21 {
        format!("{}", v as i128)
    } else {
        format!("{v}")
    }
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
                        "a non-empty client id of printable ASCII without spaces",
                    ));
                }
                Some(k)
            }
        };
        let max_connections = match o.max_connections {
            None => 1,
            Some(v) => integer("maxConnections", v, 1, 8, "")? as u8,
        };
        let connections = match o.connections {
            None => max_connections,
            Some(v) => integer(
                "connections",
                v,
                1,
                u64::from(max_connections),
                " (at most maxConnections)",
            )? as u8,
        };
        let smoothing_on = o.smoothing.unwrap_or(false);
        let bucket = match o.smoothing_bucket_size {
            None => None,
            Some(v) => {
                let b = integer("smoothingBucketSize", v, 1, 7200, " seconds")? as u32;
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
                    "\"smallest\", \"largest\" or undefined",
                ))
            }
        };
        let reconnect_delay_ms = match o.reconnect_delay_ms {
            None => DEFAULT_RECONNECT_DELAY_MS,
            Some(v) => integer("reconnectDelayMs", v, 10, 3_600_000, " ms")?,
        };
        let reconnect_jitter_ms = match o.reconnect_jitter_ms {
            None => (reconnect_delay_ms / 4).min(15_000),
            Some(v) => integer("reconnectJitterMs", v, 0, 3_600_000, " ms")?,
        };
        let max_reconnect_delay_ms = match o.max_reconnect_delay_ms {
            None => DEFAULT_MAX_RECONNECT_DELAY_MS.max(reconnect_delay_ms),
            Some(v) => integer(
                "maxReconnectDelayMs",
                v,
                reconnect_delay_ms,
                86_400_000,
                " ms (at least reconnectDelayMs)",
            )?,
        };
        let idle_timeout_ms = match o.idle_timeout_ms {
            None => Some(DEFAULT_IDLE_TIMEOUT_MS),
            Some(v) => (v != 0.0)
                .then(|| {
                    integer(
                        "idleTimeoutMs",
                        v,
                        10,
                        86_400_000,
                        " ms, or 0 to turn it off",
                    )
                })
                .transpose()?,
        };
        let max_record_bytes = match o.max_record_bytes {
            None => DEFAULT_MAX_RECORD_BYTES,
            Some(v) => integer("maxRecordBytes", v, 64, 256 << 20, " bytes")? as usize,
        };
        let dedup_window = match o.dedup_window {
            None => DEFAULT_DEDUP_WINDOW,
            Some(v) => integer("dedupWindow", v, 0, 10_000_000, " hits, 0 turns it off")? as usize,
        };
        Ok(Config {
            url,
            api_key,
            max_connections,
            connections,
            smoothing,
            reset,
            reconnect_delay_ms,
            reconnect_jitter_ms,
            max_reconnect_delay_ms,
            idle_timeout_ms,
            max_record_bytes,
            dedup_window,
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

    /// The headers of a request, given a validated bare token. `Accept-Encoding` is listed
    /// for shells that may set it (browsers set it themselves and refuse it from script).
    pub fn request_headers(&self, token: &str) -> Vec<(&'static str, String)> {
        let mut h = vec![("Authorization", format!("Bearer {token}"))];
        if let Some(k) = &self.api_key {
            h.push(("x-api-key", k.clone()));
        }
        h.push(("Accept-Encoding", "gzip".to_string()));
        h
    }
}

fn validate_url(url: Option<&str>) -> Result<String, ConfigError> {
    let expected =
        "an absolute http(s) URL such as https://livestream.adobe.net/api/1/stream/<endpoint-name>";
    let Some(raw) = url else {
        return Err(ConfigError::new("url", "missing", expected));
    };
    let trimmed = raw.trim();
    let without_fragment = trimmed.split('#').next().unwrap_or_default();
    let parsed = crate::core::policy::UrlParts::parse(without_fragment)
        .ok_or_else(|| ConfigError::new("url", format!("{raw:?}"), expected))?;
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
        assert_eq!(c.reconnect_delay_ms, 60_000);
        assert_eq!(c.reconnect_jitter_ms, 15_000);
        assert_eq!(c.max_reconnect_delay_ms, 600_000);
        assert_eq!(c.max_connections, 1);
        assert_eq!(c.connections, 1);
        assert_eq!(c.idle_timeout_ms, Some(DEFAULT_IDLE_TIMEOUT_MS));
        assert_eq!(c.dedup_window, DEFAULT_DEDUP_WINDOW);
    }

    #[test]
    fn connections_default_to_max_connections() {
        let c = Config::new(Options {
            max_connections: Some(3.0),
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
                    max_connections: Some(9.0),
                    ..base()
                },
                "maxConnections",
                "9",
            ),
            (
                Options {
                    max_connections: Some(0.0),
                    ..base()
                },
                "maxConnections",
                "0",
            ),
            (
                Options {
                    max_connections: Some(1.5),
                    ..base()
                },
                "maxConnections",
                "1.5",
            ),
            (
                Options {
                    max_connections: Some(f64::NAN),
                    ..base()
                },
                "maxConnections",
                "NaN",
            ),
            (
                Options {
                    max_connections: Some(2.0),
                    connections: Some(3.0),
                    ..base()
                },
                "connections",
                "3",
            ),
            (
                Options {
                    smoothing: Some(true),
                    smoothing_bucket_size: Some(7201.0),
                    ..base()
                },
                "smoothingBucketSize",
                "7201",
            ),
            (
                Options {
                    smoothing_bucket_size: Some(30.0),
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
                    reconnect_delay_ms: Some(-1.0),
                    ..base()
                },
                "reconnectDelayMs",
                "-1",
            ),
            (
                Options {
                    reconnect_delay_ms: Some(1000.0),
                    max_reconnect_delay_ms: Some(500.0),
                    ..base()
                },
                "maxReconnectDelayMs",
                "500",
            ),
            (
                Options {
                    idle_timeout_ms: Some(5.0),
                    ..base()
                },
                "idleTimeoutMs",
                "5",
            ),
            (
                Options {
                    max_record_bytes: Some(1.0),
                    ..base()
                },
                "maxRecordBytes",
                "1",
            ),
            (
                Options {
                    dedup_window: Some(-3.0),
                    ..base()
                },
                "dedupWindow",
                "-3",
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
            max_connections: Some(9.0),
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
            max_connections: Some(2.0),
            smoothing: Some(true),
            smoothing_bucket_size: Some(30.0),
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
            c.request_headers("tok"),
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
        assert!(check_option_name("maxConnections").is_ok());
        let e = check_option_name("maxConnection").unwrap_err();
        assert!(
            e.to_string().contains("did you mean maxConnections?"),
            "{e}"
        );
        let e = check_option_name("zzzzzzzzzzzz").unwrap_err();
        assert!(e.to_string().contains("known options"), "{e}");
    }
}
