//! Upstream access tokens: a fixed one (LIVESTREAM_TOKEN, for the emulator), or OAuth
//! server-to-server tokens from Adobe IMS (`POST {ims}/ims/token/v3`), renewed before they
//! expire and again when Live Stream refuses one (401).
//!
//! The client secret lives only in [`Ims`], is sent only in the form body of the token
//! request, and appears in no log, error message or `Debug` output.

use serde_json::Value;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::metrics::RelayMetrics;

/// Largest IMS answer read (a token answer is ~1–2 KB).
const MAX_IMS_BODY: usize = 64 * 1024;
/// A token is renewed once this share of its lifetime has passed.
const RENEW_AT: f64 = 0.9;

/// Where upstream tokens come from.
#[derive(Clone, Debug)]
pub enum Tokens {
    /// The same token for every request.
    Fixed(Arc<str>),
    /// Tokens from Adobe IMS.
    Ims(Arc<Ims>),
}

impl Tokens {
    /// A token for the next upstream request; `refused`: the token Live Stream just
    /// refused (401), which must not be handed out again.
    pub async fn get(&self, refused: Option<&str>) -> Result<String, String> {
        match self {
            Tokens::Fixed(t) => Ok(t.to_string()),
            Tokens::Ims(ims) => ims.token(refused).await,
        }
    }
}

struct Held {
    token: String,
    renew_at: Instant,
}

/// An OAuth server-to-server credential and the token currently held for it.
pub struct Ims {
    http: reqwest::Client,
    endpoint: String,
    client_id: String,
    secret: String,
    scope: Option<String>,
    held: Mutex<Option<Held>>,
    metrics: Arc<RelayMetrics>,
}

impl std::fmt::Debug for Ims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ims")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                o.push(b as char)
            }
            b' ' => o.push('+'),
            _ => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

impl Ims {
    /// A credential for `{ims_url}/ims/token/v3`.
    pub fn new(
        http: reqwest::Client,
        ims_url: &str,
        client_id: String,
        secret: String,
        scope: Option<String>,
        metrics: Arc<RelayMetrics>,
    ) -> Ims {
        Ims {
            http,
            endpoint: format!("{}/ims/token/v3", ims_url.trim_end_matches('/')),
            client_id,
            secret,
            scope,
            held: Mutex::new(None),
            metrics,
        }
    }

    /// The current token, fetching a new one when none is held, when it is due for renewal,
    /// or when it is the one just `refused`. One IMS request at a time: slots refused at
    /// the same moment share the one new token.
    pub async fn token(&self, refused: Option<&str>) -> Result<String, String> {
        let mut held = self.held.lock().await;
        if let Some(h) = held.as_ref() {
            if Instant::now() < h.renew_at && refused != Some(h.token.as_str()) {
                return Ok(h.token.clone());
            }
        }
        match self.fetch().await {
            Ok((token, ttl)) => {
                self.metrics.token_renewals.fetch_add(1, Relaxed);
                let now = Instant::now();
                *held = Some(Held {
                    token: token.clone(),
                    renew_at: now + ttl.mul_f64(RENEW_AT),
                });
                Ok(token)
            }
            Err(e) => {
                self.metrics.token_failures.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    /// When the held token is due for renewal (None: no token held).
    async fn renew_at(&self) -> Option<Instant> {
        self.held.lock().await.as_ref().map(|h| h.renew_at)
    }

    /// Renews the token at 90 % of its lifetime for as long as the relay runs, so that a
    /// reconnect never waits for IMS; after a failure it tries again in 10 s.
    pub async fn keep_fresh(self: Arc<Self>, quiet: bool) {
        loop {
            let at = self
                .renew_at()
                .await
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(10));
            tokio::time::sleep_until(at).await;
            if let Err(e) = self.token(None).await {
                if !quiet {
                    eprintln!("livestream-relay: token renewal failed: {e}");
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }

    async fn fetch(&self) -> Result<(String, Duration), String> {
        let mut body = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            form_encode(&self.client_id),
            form_encode(&self.secret)
        );
        if let Some(s) = &self.scope {
            body.push_str("&scope=");
            body.push_str(&form_encode(s));
        }
        let what = format!("IMS token request to {}", self.endpoint);
        let mut resp = self
            .http
            .post(&self.endpoint)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{what} failed: {}", error_chain(&e)))?;
        let status = resp.status().as_u16();
        let mut bytes = Vec::new();
        while let Some(c) = resp
            .chunk()
            .await
            .map_err(|e| format!("{what}: reading the answer failed: {}", error_chain(&e)))?
        {
            if bytes.len() + c.len() > MAX_IMS_BODY {
                return Err(format!("{what}: answer larger than {MAX_IMS_BODY} bytes"));
            }
            bytes.extend_from_slice(&c);
        }
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status != 200 {
            let detail = ["error_description", "error"]
                .iter()
                .find_map(|k| v[k].as_str())
                .unwrap_or("no error description");
            let hint = match status {
                400 | 401 | 403 => " (check --client-id, --scope and LIVESTREAM_CLIENT_SECRET)",
                _ => "",
            };
            return Err(format!("{what}: HTTP {status}: {detail}{hint}"));
        }
        let token = v["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("{what}: the answer has no access_token"))?;
        let ttl = match &v["expires_in"] {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .filter(|s| s.is_finite() && *s > 0.0)
        .ok_or_else(|| format!("{what}: the answer has no valid expires_in"))?;
        Ok((token.to_string(), Duration::from_secs_f64(ttl.min(1e7))))
    }
}

/// An error and its causes, `a: b: c` (reqwest's top-level message alone is vague).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::form_encode;

    #[test]
    fn form_values_are_escaped() {
        assert_eq!(form_encode("a b&c=d+é"), "a+b%26c%3Dd%2B%C3%A9");
        assert_eq!(form_encode("openid,AdobeID"), "openid%2CAdobeID");
    }
}
