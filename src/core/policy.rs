//! What each HTTP status or failure means for the client: read, follow, refresh the token,
//! wait and retry, or stop. The wording of the messages comes from Adobe's status table
//! (see `livestream-api.md`) so that a user knows what to do.

use std::fmt;

/// Defines [`ErrorCode`], its `code` strings and [`ErrorCode::ALL`] from one list, so a code
/// cannot be added to one and forgotten in another.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident => $code:literal,)*) => {
        /// The kind of a problem, as the `code` of an `onError` event.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            /// The `code` string of the public APIs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// Every code, in documentation order: the one list hosts and documents are
            /// checked against.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];
        }
    };
}

error_codes! {
    /// 400: a parameter is invalid.
    BadRequest => "bad_request",
    /// 401: token missing, wrong or expired.
    Unauthorized => "unauthorized",
    /// 403: the credentials may not read this stream.
    Forbidden => "forbidden",
    /// 404: no such stream, or disabled after 90 days unused.
    NotFound => "not_found",
    /// 405: not a GET.
    MethodNotAllowed => "method_not_allowed",
    /// 406: no `Accept-Encoding: gzip`.
    NotAcceptable => "not_acceptable",
    /// 409: more clients than maxConnections, or different maxConnections values.
    Conflict => "conflict",
    /// 429: too many requests.
    TooManyRequests => "too_many_requests",
    /// 500, 502, 504 and other 5xx: the service failed.
    ServerError => "server_error",
    /// 503: no hits yet for the report suite, or the old slot is still held.
    Unavailable => "unavailable",
    /// 505: not HTTP/1.1.
    HttpVersionNotSupported => "http_version_not_supported",
    /// Any other status the API does not document.
    UnexpectedStatus => "unexpected_status",
    /// More redirects in a row than allowed.
    TooManyRedirects => "too_many_redirects",
    /// A redirect without a usable `Location`.
    BadRedirect => "bad_redirect",
    /// A browser followed a redirect to another origin, which strips `Authorization`.
    CrossOriginRedirect => "cross_origin_redirect",
    /// The request failed before a response (DNS, TCP, TLS, CORS, reset).
    NetworkError => "network_error",
    /// No byte for `idleTimeoutMs`.
    IdleTimeout => "idle_timeout",
    /// The server ended the response body.
    StreamEnded => "stream_ended",
    /// The token provider threw, rejected or returned an unusable token.
    TokenError => "token_error",
    /// A record that is not one valid JSON object (or has a bad id).
    MalformedRecord => "malformed_record",
    /// A record over `maxRecordBytes`.
    OversizedRecord => "oversized_record",
    /// A record with invalid UTF-8 (delivered with U+FFFD).
    InvalidUtf8 => "invalid_utf8",
    /// An incomplete record left when a connection ended (discarded).
    TruncatedRecord => "truncated_record",
    /// A gzip body that cannot be inflated.
    GzipError => "gzip_error",
    /// A user callback threw or its promise rejected (reported by the host; the stream goes on).
    CallbackError => "callback_error",
    /// A bug inside the client (a Rust panic); the host stopped every client it affects.
    InternalError => "internal_error",
    /// A pull consumer fell behind its bounded buffer; new hits were dropped and counted.
    ConsumerOverflow => "consumer_overflow",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with a response status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 200: read the body for as long as it lives.
    Read,
    /// 3xx: follow `Location`, sending the auth headers again.
    Follow,
    /// 401: get a fresh token, then retry.
    RefreshToken,
    /// Wait, then retry.
    Retry,
    /// Stop the whole client: retrying cannot help.
    Fatal,
}

/// The verdict and error code for an HTTP status.
pub fn classify(status: u16) -> (Verdict, ErrorCode) {
    use ErrorCode::*;
    match status {
        200 => (Verdict::Read, UnexpectedStatus),
        301 | 302 | 303 | 307 | 308 => (Verdict::Follow, BadRedirect),
        400 => (Verdict::Fatal, BadRequest),
        401 => (Verdict::RefreshToken, Unauthorized),
        403 => (Verdict::Fatal, Forbidden),
        404 => (Verdict::Fatal, NotFound),
        405 => (Verdict::Fatal, MethodNotAllowed),
        406 => (Verdict::Fatal, NotAcceptable),
        408 => (Verdict::Retry, UnexpectedStatus),
        409 => (Verdict::Retry, Conflict),
        429 => (Verdict::Retry, TooManyRequests),
        503 => (Verdict::Retry, Unavailable),
        505 => (Verdict::Fatal, HttpVersionNotSupported),
        s if (500..600).contains(&s) => (Verdict::Retry, ServerError),
        s if (400..500).contains(&s) => (Verdict::Fatal, UnexpectedStatus),
        // 1xx/2xx other than 200 and odd 3xx: not the stream, but nothing says it is permanent.
        _ => (Verdict::Retry, UnexpectedStatus),
    }
}

/// A message a user can act on for a non-200 status; `detail` is the server's
/// `error_description` when it sent one.
pub fn describe_status(status: u16, detail: Option<&str>) -> String {
    let base = match status {
        400 => "bad request (400): a parameter is invalid, e.g. maxConnections outside 1..8 or smoothingBucketSize outside 1..7200; fix the options".to_string(),
        401 => "unauthorized (401): the access token is missing, wrong or expired; the client asks for a fresh token and retries".to_string(),
        403 => "forbidden (403): the credentials may not read this stream; check that the API client has the Analytics scope and access to the report suite".to_string(),
        404 => "not found (404): no stream at this URL; check the endpoint name (Adobe disables a stream after 90 days without use)".to_string(),
        405 => "method not allowed (405): Live Stream answers GET only; a proxy or relay changed the method".to_string(),
        406 => "not acceptable (406): the request lacked Accept-Encoding: gzip; a proxy or relay removed it".to_string(),
        409 => "conflict (409): more clients than maxConnections, or clients sending different maxConnections values; waiting before retrying so the old slot can be freed (KA-16598)".to_string(),
        429 => "too many requests (429): waiting before retrying".to_string(),
        500 => "server error (500): Live Stream failed; waiting before retrying".to_string(),
        502 | 504 => format!("gateway error ({status}) between you and Live Stream; waiting before retrying"),
        503 => "unavailable (503): no hits received for this report suite yet, or the previous connection's slot is still held; waiting before retrying (KA-16598)".to_string(),
        505 => "HTTP version not supported (505): Live Stream needs HTTP/1.1; a proxy or relay changed the protocol".to_string(),
        s @ 500..=599 => format!("server error ({s}); waiting before retrying"),
        s @ 400..=499 => format!("unexpected client error ({s}) not documented by Live Stream; stopping, since retrying the same request cannot help"),
        s => format!("unexpected status {s} instead of a stream; waiting before retrying"),
    };
    match detail {
        Some(d) if !d.trim().is_empty() => format!("{base}. Server said: {}", d.trim()),
        _ => base,
    }
}

/// `error_description` (or `error`) of a JSON error body, read by the record scanner's JSON
/// reader (top-level members only; escapes and surrogate pairs decoded).
pub fn error_description(body: &str) -> Option<String> {
    ["error_description", "error"]
        .iter()
        .find_map(|key| super::record::top_level_string(body.as_bytes(), key))
}

/// The longest `Retry-After` read at all: one day. The client honours it only up to
/// `maxReconnectDelayMs` (see [`crate::core::Client`]).
pub const MAX_RETRY_AFTER_MS: u64 = 86_400_000;

/// Reads `Retry-After` (delay-seconds or an HTTP-date) as a wait in ms. `server_date` is the
/// response's `Date` header and `wall_clock_ms` the local Unix time; an HTTP-date is measured
/// against the server's clock when known, so clock skew does not matter.
pub fn retry_after_ms(
    value: &str,
    server_date: Option<&str>,
    wall_clock_ms: Option<u64>,
) -> Option<u64> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = v.parse().unwrap_or(u64::MAX);
        return Some(secs.saturating_mul(1000).min(MAX_RETRY_AFTER_MS));
    }
    let target = parse_http_date(v)?;
    let now = server_date
        .and_then(parse_http_date)
        .or_else(|| wall_clock_ms.map(|ms| (ms / 1000) as i64))?;
    Some(
        ((target - now).max(0) as u64)
            .saturating_mul(1000)
            .min(MAX_RETRY_AFTER_MS),
    )
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// The pieces of an absolute http(s) URL this crate needs: enough to resolve a redirect and
/// compare origins, without a full URL library (which would triple the .wasm).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// `http` or `https`, lower case.
    pub scheme: String,
    /// Host and optional port, lower case.
    pub authority: String,
    /// The path, starting with `/` (or empty).
    pub path: &'a str,
    /// The query without `?` (may be empty).
    pub query: &'a str,
}

impl<'a> UrlParts<'a> {
    /// Parses an absolute http(s) URL (fragment already removed); None when it is not one.
    pub fn parse(url: &'a str) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = rest[..end].to_ascii_lowercase();
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        let rest = &rest[end..];
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        Some(UrlParts {
            scheme,
            authority,
            path,
            query,
        })
    }

    /// `scheme://authority`, with the default port dropped, for same-origin checks.
    pub fn origin(&self) -> String {
        let default = if self.scheme == "https" {
            ":443"
        } else {
            ":80"
        };
        let host = self
            .authority
            .strip_suffix(default)
            .unwrap_or(&self.authority);
        format!("{}://{}", self.scheme, host)
    }
}

/// True when both absolute URLs have the same origin.
pub fn same_origin(a: &str, b: &str) -> bool {
    match (UrlParts::parse(a), UrlParts::parse(b)) {
        (Some(a), Some(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// Resolves a `Location` header against the URL that was requested (RFC 3986 for the forms
/// servers send: absolute, scheme-relative, absolute-path, and relative-path).
pub fn resolve_location(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    let location = location.split('#').next().unwrap_or_default();
    if location.is_empty() || location.chars().any(|c| c.is_control() || c == ' ') {
        return None;
    }
    if UrlParts::parse(location).is_some() {
        return Some(location.to_string());
    }
    if location.contains("://") {
        return None; // another scheme: not something we can follow
    }
    let b = UrlParts::parse(base)?;
    if let Some(rest) = location.strip_prefix("//") {
        let url = format!("{}://{}", b.scheme, rest);
        return UrlParts::parse(&url).is_some().then_some(url);
    }
    if location.starts_with('/') {
        return Some(format!("{}://{}{}", b.scheme, b.authority, location));
    }
    if let Some(q) = location.strip_prefix('?') {
        return Some(format!("{}://{}{}?{}", b.scheme, b.authority, b.path, q));
    }
    let dir = match b.path.rfind('/') {
        Some(i) => &b.path[..=i],
        None => "/",
    };
    let (rel_path, rel_query) = match location.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (location, None),
    };
    let mut segments: Vec<&str> = Vec::new();
    let joined = format!("{dir}{rel_path}");
    for seg in joined.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut url = format!("{}://{}/{}", b.scheme, b.authority, segments.join("/"));
    if rel_path.ends_with("/..") || rel_path.ends_with("/.") || rel_path == ".." || rel_path == "."
    {
        url.push('/');
    }
    if let Some(q) = rel_query {
        url.push('?');
        url.push_str(q);
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        assert_eq!(classify(200).0, Verdict::Read);
        for s in [301, 302, 303, 307, 308] {
            assert_eq!(classify(s).0, Verdict::Follow, "{s}");
        }
        assert_eq!(
            classify(401),
            (Verdict::RefreshToken, ErrorCode::Unauthorized)
        );
        for (s, c) in [
            (409, ErrorCode::Conflict),
            (429, ErrorCode::TooManyRequests),
            (500, ErrorCode::ServerError),
            (502, ErrorCode::ServerError),
            (503, ErrorCode::Unavailable),
            (504, ErrorCode::ServerError),
        ] {
            assert_eq!(classify(s), (Verdict::Retry, c), "{s}");
        }
        for (s, c) in [
            (400, ErrorCode::BadRequest),
            (403, ErrorCode::Forbidden),
            (404, ErrorCode::NotFound),
            (405, ErrorCode::MethodNotAllowed),
            (406, ErrorCode::NotAcceptable),
            (505, ErrorCode::HttpVersionNotSupported),
            (418, ErrorCode::UnexpectedStatus),
        ] {
            assert_eq!(classify(s), (Verdict::Fatal, c), "{s}");
        }
        assert_eq!(classify(204).0, Verdict::Retry);
    }

    #[test]
    fn messages_are_actionable_and_carry_the_server_detail() {
        let m = describe_status(409, Some("maxConnections exceeded"));
        assert!(m.starts_with("conflict (409)"), "{m}");
        assert!(m.ends_with("Server said: maxConnections exceeded"), "{m}");
        assert!(describe_status(404, None).contains("90 days"));
        assert!(describe_status(406, None).contains("Accept-Encoding: gzip"));
    }

    #[test]
    fn error_description_is_found() {
        assert_eq!(
            error_description(r#"{"error":"conflict","error_description":"too \"many\" \u00e9"}"#),
            Some("too \"many\" é".to_string())
        );
        assert_eq!(error_description(r#"{"error": "x"}"#), Some("x".into()));
        assert_eq!(error_description("<html>"), None);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(retry_after_ms("120", None, None), Some(120_000));
        assert_eq!(
            retry_after_ms("99999999999", None, None),
            Some(MAX_RETRY_AFTER_MS)
        );
        assert_eq!(
            retry_after_ms(
                "Sun, 06 Nov 1994 08:50:37 GMT",
                Some("Sun, 06 Nov 1994 08:49:37 GMT"),
                None
            ),
            Some(60_000)
        );
        assert_eq!(
            retry_after_ms("Sun, 06 Nov 1994 08:49:47 GMT", None, Some(784_111_777_000)),
            Some(10_000)
        );
        assert_eq!(retry_after_ms("soon", None, Some(0)), None);
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
    }

    #[test]
    fn locations_resolve() {
        let base = "https://h.example/api/1/stream/ep?maxConnections=1";
        assert_eq!(
            resolve_location(base, "/lb/api/1/stream/ep?a=1").unwrap(),
            "https://h.example/lb/api/1/stream/ep?a=1"
        );
        assert_eq!(resolve_location(base, "http://o/x").unwrap(), "http://o/x");
        assert_eq!(resolve_location(base, "//o2/y").unwrap(), "https://o2/y");
        assert_eq!(
            resolve_location(base, "ep2?z").unwrap(),
            "https://h.example/api/1/stream/ep2?z"
        );
        assert_eq!(
            resolve_location(base, "../x").unwrap(),
            "https://h.example/api/1/x"
        );
        assert_eq!(
            resolve_location(base, "?q=2").unwrap(),
            "https://h.example/api/1/stream/ep?q=2"
        );
        assert_eq!(resolve_location(base, ""), None);
        assert_eq!(resolve_location(base, "javascript://x"), None);
    }

    #[test]
    fn origins() {
        assert!(same_origin("https://a/x", "https://A:443/y"));
        assert!(!same_origin("https://a/x", "http://a/x"));
        assert!(!same_origin("https://a/x", "https://b/x"));
        assert!(!same_origin("http://127.0.0.1:1/x", "http://127.0.0.1:2/x"));
    }
}
