//! Per-stream scripts installed through `PUT /admin/streams/{name}`.
//!
//! A script overrides the emulator's normal behaviour for one stream so tests (and the
//! demo) can produce exact situations: a queue of canned error responses, a body of exact
//! lines with exact chunking, a different hit rate, or different slot timings.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The behaviour overrides of one stream. Every field is optional; absent fields keep the
/// command-line behaviour. Unknown fields are rejected (a typo must not be silently ignored).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Canned answers, consumed one per stream request (GET) before normal behaviour resumes.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub responses: VecDeque<CannedResponse>,
    /// Exact body lines for the next 200 of this stream (consumed by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyScript>,
    /// Mean hits per second for this stream (overrides `--rate`; 0 pauses generation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Answer this stream's requests with 503 "no hits received yet" (overrides `--no-traffic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_traffic: Option<bool>,
    /// Overrides `--slot-hold-secs` for this stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_hold_secs: Option<f64>,
    /// Overrides `--resume-secs` for this stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_secs: Option<f64>,
    /// Overrides `--resend` for this stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend: Option<usize>,
}

/// One canned (non-200) answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CannedResponse {
    /// HTTP status, 300..=599.
    pub status: u16,
    /// The JSON `error` code; defaults to the one the emulator uses for that status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The JSON `error_description`; defaults to a generic sentence naming the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// Seconds for a `Retry-After` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// `Location` header; required for 301, 302, 303, 307 and 308, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// What happens after the scripted lines were sent.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Then {
    /// End the body cleanly (gzip trailer, terminating chunk): the client sees a clean end.
    #[default]
    Close,
    /// Keep the connection open and send nothing more (until the client leaves or an admin
    /// drop/reset).
    Hold,
}

/// An exact body for the next 200.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BodyScript {
    /// Lines to send, each followed by CRLF. `""` is an empty record.
    pub lines: Vec<String>,
    /// Bytes per HTTP chunk of the encoded (gzip, if on) body; absent = one chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<usize>,
    /// Pause between chunks, in milliseconds (0..=60000).
    #[serde(default)]
    pub chunk_delay_ms: u64,
    /// Gzip-encode the body (and send `Content-Encoding: gzip`); false sends it raw.
    #[serde(default = "yes")]
    pub gzip: bool,
    /// What happens after the lines.
    #[serde(default)]
    pub then: Then,
}

fn yes() -> bool {
    true
}

const REDIRECTS: &[u16] = &[301, 302, 303, 307, 308];

impl Script {
    /// Parses and validates a script; the error is a sentence naming the bad field.
    pub fn parse(json: &[u8]) -> Result<Script, String> {
        let script: Script =
            serde_json::from_slice(json).map_err(|e| format!("invalid script: {e}"))?;
        script.validate()?;
        Ok(script)
    }

    fn validate(&self) -> Result<(), String> {
        for (i, r) in self.responses.iter().enumerate() {
            if !(300..=599).contains(&r.status) {
                return Err(format!(
                    "responses[{i}].status must be 300..=599 (use \"body\" to script a 200), got {}",
                    r.status
                ));
            }
            let redirect = REDIRECTS.contains(&r.status);
            match (&r.location, redirect) {
                (None, true) => {
                    return Err(format!(
                        "responses[{i}]: status {} needs a \"location\"",
                        r.status
                    ))
                }
                (Some(_), false) => {
                    return Err(format!(
                        "responses[{i}]: \"location\" only goes with 301/302/303/307/308, not {}",
                        r.status
                    ))
                }
                _ => {}
            }
            if let Some(l) = &r.location {
                if l.is_empty() || l.contains(['\r', '\n']) {
                    return Err(format!(
                        "responses[{i}].location must be a non-empty single-line URL"
                    ));
                }
            }
            if r.retry_after.is_some_and(|s| s > 86_400) {
                return Err(format!(
                    "responses[{i}].retry_after must be <= 86400 seconds"
                ));
            }
        }
        if let Some(b) = &self.body {
            if b.chunk_size == Some(0) {
                return Err("body.chunk_size must be at least 1".into());
            }
            if b.chunk_delay_ms > 60_000 {
                return Err("body.chunk_delay_ms must be <= 60000".into());
            }
        }
        let non_neg = |name: &str, v: Option<f64>| match v {
            Some(x) if !(x.is_finite() && x >= 0.0) => {
                Err(format!("{name} must be a finite number >= 0, got {x}"))
            }
            _ => Ok(()),
        };
        non_neg("rate", self.rate)?;
        non_neg("slot_hold_secs", self.slot_hold_secs)?;
        non_neg("resume_secs", self.resume_secs)?;
        if self.resend.is_some_and(|n| n > 1000) {
            return Err("resend must be <= 1000".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_script() {
        let s = Script::parse(
            br#"{"responses":[{"status":409,"error_description":"busy","retry_after":2},{"status":404}],
                 "body":{"lines":["{}","not json",""],"chunk_size":1,"then":"hold"},
                 "rate":50,"no_traffic":false,"slot_hold_secs":0.2}"#,
        )
        .unwrap();
        assert_eq!(s.responses.len(), 2);
        let b = s.body.unwrap();
        assert!(b.gzip);
        assert_eq!(b.then, Then::Hold);
    }

    #[test]
    fn rejects_bad_scripts_with_a_reason() {
        for (json, needle) in [
            (r#"{"rate":-1}"#, "rate"),
            (r#"{"responses":[{"status":200}]}"#, "300..=599"),
            (r#"{"responses":[{"status":302}]}"#, "location"),
            (
                r#"{"responses":[{"status":409,"location":"/x"}]}"#,
                "location",
            ),
            (r#"{"body":{"lines":[],"chunk_size":0}}"#, "chunk_size"),
            (r#"{"bogus":1}"#, "bogus"),
            (r#"{"body":{"lines":[],"then":"later"}}"#, "later"),
        ] {
            let e = Script::parse(json.as_bytes()).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }
}
