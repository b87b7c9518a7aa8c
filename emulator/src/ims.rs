//! An emulated Adobe IMS token endpoint (OAuth server-to-server): `POST /ims/token/v3`.
//!
//! Enabled by `--ims-client-id` (the secret comes only from the environment variable
//! `LIVESTREAM_EMULATOR_IMS_SECRET`, never from a flag: a command line shows in `ps`). It
//! answers `client_credentials` form posts like IMS does and remembers the tokens it
//! issued, so the stream endpoint can accept only those, until they expire. That lets a
//! client (or the relay) be tested for token renewal without Adobe credentials.
//!
//! Tokens are 256 random bits from the operating system, so they cannot be guessed. The
//! store is bounded: expired tokens are kept [`EXPIRED_GRACE`] longer (so a late request
//! can be told "expired" rather than "unknown"), then forgotten, and at most
//! [`MAX_TOKENS`] are kept (the ones closest to expiry are forgotten first).

use crate::util::{error_json, percent_decode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most tokens remembered at once (about 100 bytes each).
pub const MAX_TOKENS: usize = 10_000;
/// How long an expired token is still recognised as "expired" (then it is "unknown").
pub const EXPIRED_GRACE: Duration = Duration::from_secs(600);
/// The environment variable holding the IMS client secret.
pub const SECRET_ENV: &str = "LIVESTREAM_EMULATOR_IMS_SECRET";

/// Counters of the IMS endpoint, shown in `/admin/stats` under `"ims"`.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ImsStats {
    /// Tokens issued by `POST /ims/token/v3`.
    pub tokens_issued: u64,
    /// Token requests refused (bad method, content type, fields, client id or secret).
    pub token_requests_refused: u64,
    /// Stream requests refused because their token had expired.
    pub stream_refused_expired: u64,
    /// Stream requests refused because their token was never issued (or long forgotten).
    pub stream_refused_unknown: u64,
    /// Tokens currently remembered (valid or recently expired).
    pub tokens_remembered: usize,
}

/// What the store says about a bearer token.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Issued and not expired.
    Valid,
    /// Issued, but its lifetime is over.
    Expired,
    /// Never issued by this emulator (or forgotten long after it expired).
    Unknown,
}

/// The IMS endpoint's configuration and its token store.
pub struct Ims {
    client_id: String,
    client_secret: String,
    ttl: Duration,
    max_tokens: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    tokens: HashMap<String, Instant>,
    stats: ImsStats,
}

/// A token request's answer: status and JSON body.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The JSON body (a token, or `{"error","error_description"}`).
    pub body: String,
}

fn refuse(status: u16, error: &str, description: &str) -> Answer {
    Answer {
        status,
        body: error_json(error, description),
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 random bytes from the operating system, hex-encoded. Falls back to std's randomly
/// keyed SipHash (itself seeded from the OS) where `/dev/urandom` cannot be read.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !ok {
        use std::hash::{BuildHasher, Hasher};
        let state = std::collections::hash_map::RandomState::new();
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut h = state.build_hasher();
            h.write_usize(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Ims {
    /// An endpoint accepting exactly this client id and secret, issuing tokens valid `ttl`.
    pub fn new(client_id: String, client_secret: String, ttl: Duration) -> Ims {
        Ims {
            client_id,
            client_secret,
            ttl,
            max_tokens: MAX_TOKENS,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The same endpoint remembering at most `n` tokens (tests use a small cap).
    pub fn with_max_tokens(mut self, n: usize) -> Ims {
        self.max_tokens = n.max(1);
        self
    }

    /// The client id (it doubles as the `x-api-key` of stream requests).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters, for `/admin/stats`.
    pub fn stats(&self) -> ImsStats {
        let inner = self.inner();
        ImsStats {
            tokens_remembered: inner.tokens.len(),
            ..inner.stats
        }
    }

    /// Zeroes the counters (admin reset). Issued tokens stay valid: they are credentials a
    /// client holds, not stream state.
    pub fn reset_stats(&self) {
        self.inner().stats = ImsStats::default();
    }

    /// Answers a token request. `content_type` is the request's header, `query` its query
    /// string, `body` the form (already size-limited by the caller).
    pub fn token(
        &self,
        content_type: Option<&str>,
        query: Option<&str>,
        body: &[u8],
        now: Instant,
    ) -> Answer {
        let answer = self.token_inner(content_type, query, body, now);
        if answer.status != 200 {
            self.inner().stats.token_requests_refused += 1;
        }
        answer
    }

    fn token_inner(
        &self,
        content_type: Option<&str>,
        query: Option<&str>,
        body: &[u8],
        now: Instant,
    ) -> Answer {
        if query.is_some_and(|q| !q.is_empty()) {
            return refuse(
                400,
                "invalid_request",
                "parameters in the query string are refused (query strings get logged): send grant_type, client_id, client_secret and scope in the application/x-www-form-urlencoded body",
            );
        }
        let form_type = content_type
            .and_then(|c| c.split(';').next())
            .map(str::trim)
            .is_some_and(|c| c.eq_ignore_ascii_case("application/x-www-form-urlencoded"));
        if !form_type {
            return refuse(
                400,
                "invalid_request",
                &format!(
                    "Content-Type must be application/x-www-form-urlencoded, got {:?}",
                    content_type.unwrap_or("(none)")
                ),
            );
        }
        let Ok(text) = std::str::from_utf8(body) else {
            return refuse(400, "invalid_request", "the form body is not UTF-8");
        };
        let mut fields: HashMap<String, String> = HashMap::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = String::from_utf8_lossy(&percent_decode(k, true)).into_owned();
            let v = String::from_utf8_lossy(&percent_decode(v, true)).into_owned();
            if fields.contains_key(&k) {
                return refuse(
                    400,
                    "invalid_request",
                    &format!("the form field {k:?} appears more than once"),
                );
            }
            fields.insert(k, v);
        }
        let field = |name: &str| {
            fields
                .get(name)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        let Some(grant) = field("grant_type") else {
            return refuse(400, "invalid_request", "missing grant_type parameter");
        };
        if grant != "client_credentials" {
            return refuse(
                400,
                "unsupported_grant_type",
                &format!("grant_type must be client_credentials, got {grant:?}"),
            );
        }
        let Some(id) = field("client_id") else {
            return refuse(400, "invalid_request", "missing client_id parameter");
        };
        if !constant_time_eq(id.as_bytes(), self.client_id.as_bytes()) {
            return refuse(400, "invalid_client", "invalid client_id parameter");
        }
        let Some(secret) = field("client_secret") else {
            return refuse(401, "invalid_client", "missing client_secret parameter");
        };
        if !constant_time_eq(secret.as_bytes(), self.client_secret.as_bytes()) {
            return refuse(401, "invalid_client", "invalid client_secret parameter");
        }
        let Some(scope) = field("scope") else {
            return refuse(
                400,
                "invalid_scope",
                "missing scope parameter (comma-separated, e.g. openid,AdobeID,read_organizations)",
            );
        };
        let bad_scope = scope.split(',').map(str::trim).find(|s| {
            s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'))
        });
        if let Some(s) = bad_scope {
            return refuse(
                400,
                "invalid_scope",
                &format!("scope must be comma-separated names (letters, digits, _ . - :), got the item {s:?}"),
            );
        }
        let token = format!("emu-ims-{}", random_hex());
        let mut inner = self.inner();
        // Forget tokens expired for longer than the grace period, then keep within the cap.
        inner.tokens.retain(|_, exp| *exp + EXPIRED_GRACE > now);
        while inner.tokens.len() >= self.max_tokens {
            let oldest = inner
                .tokens
                .iter()
                .min_by_key(|(_, exp)| **exp)
                .map(|(t, _)| t.clone());
            match oldest {
                Some(t) => inner.tokens.remove(&t),
                None => break,
            };
        }
        inner.tokens.insert(token.clone(), now + self.ttl);
        inner.stats.tokens_issued += 1;
        drop(inner);
        Answer {
            status: 200,
            body: serde_json::json!({
                "access_token": token,
                "token_type": "bearer",
                "expires_in": self.ttl.as_secs(),
            })
            .to_string(),
        }
    }

    /// Whether a stream request's bearer token is one of ours and still valid; counts
    /// refusals.
    pub fn check(&self, token: &str, now: Instant) -> Check {
        let mut inner = self.inner();
        let check = match inner.tokens.get(token) {
            Some(exp) if *exp > now => Check::Valid,
            Some(_) => Check::Expired,
            None => Check::Unknown,
        };
        match check {
            Check::Valid => {}
            Check::Expired => inner.stats.stream_refused_expired += 1,
            Check::Unknown => inner.stats.stream_refused_unknown += 1,
        }
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    fn ims(ttl: u64) -> Ims {
        Ims::new("id".into(), "s3cret".into(), Duration::from_secs(ttl))
    }

    fn issue(ims: &Ims, now: Instant) -> String {
        let a = ims.token(
            FORM,
            None,
            b"grant_type=client_credentials&client_id=id&client_secret=s3cret&scope=openid,AdobeID",
            now,
        );
        assert_eq!(a.status, 200, "{}", a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    #[test]
    fn tokens_are_random_and_expire() {
        let ims = ims(10);
        let t0 = Instant::now();
        let a = issue(&ims, t0);
        let b = issue(&ims, t0);
        assert_ne!(a, b);
        assert!(a.len() > 64);
        assert_eq!(ims.check(&a, t0 + Duration::from_secs(9)), Check::Valid);
        assert_eq!(ims.check(&a, t0 + Duration::from_secs(10)), Check::Expired);
        assert_eq!(ims.check("emu-ims-00", t0), Check::Unknown);
        let s = ims.stats();
        assert_eq!((s.tokens_issued, s.stream_refused_expired), (2, 1));
        assert_eq!(s.stream_refused_unknown, 1);
    }

    #[test]
    fn the_store_is_bounded() {
        let ims = ims(1).with_max_tokens(50);
        let t0 = Instant::now();
        let first = issue(&ims, t0);
        // Long expired tokens are forgotten (then "unknown").
        let later = t0 + Duration::from_secs(1) + EXPIRED_GRACE;
        issue(&ims, later);
        assert_eq!(ims.check(&first, later), Check::Unknown);
        for _ in 0..55 {
            issue(&ims, later);
        }
        assert_eq!(ims.stats().tokens_remembered, 50);
    }

    #[test]
    fn bad_requests_are_refused_like_ims() {
        let ims = ims(10);
        let now = Instant::now();
        for (ct, q, body, status, error) in [
            (
                None,
                None,
                "grant_type=client_credentials",
                400,
                "invalid_request",
            ),
            (FORM, Some("client_id=id"), "", 400, "invalid_request"),
            (FORM, None, "client_id=id", 400, "invalid_request"),
            (
                FORM,
                None,
                "grant_type=password",
                400,
                "unsupported_grant_type",
            ),
            (
                FORM,
                None,
                "grant_type=client_credentials&client_id=x&client_secret=s3cret&scope=a",
                400,
                "invalid_client",
            ),
            (
                FORM,
                None,
                "grant_type=client_credentials&client_id=id&client_secret=nope&scope=a",
                401,
                "invalid_client",
            ),
            (
                FORM,
                None,
                "grant_type=client_credentials&client_id=id&client_secret=s3cret",
                400,
                "invalid_scope",
            ),
            (
                FORM,
                None,
                "grant_type=client_credentials&client_id=id&client_id=id",
                400,
                "invalid_request",
            ),
        ] {
            let a = ims.token(ct, q, body.as_bytes(), now);
            assert_eq!(a.status, status, "{body}: {}", a.body);
            let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
            assert_eq!(v["error"], error, "{body}");
            assert!(v["error_description"].as_str().unwrap().len() > 5);
        }
        assert_eq!(ims.stats().token_requests_refused, 8);
        assert_eq!(ims.stats().tokens_issued, 0);
    }
}
