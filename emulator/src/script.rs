//! Per-stream scripts installed through `PUT /admin/streams/{name}`.
//!
//! A script overrides the emulator's normal behaviour for one stream so tests (and the
//! demo) can produce exact situations: a queue of canned error responses, a body of exact
//! lines with exact chunking, a different hit rate, or different slot timings.

use crate::cli::{MAX_HOLD_SECS, MAX_RATE, MAX_RESUME_SECS};
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
/// Most canned responses in one script.
pub const MAX_RESPONSES: usize = 1000;
/// Most lines of a scripted body (the 64 KiB request limit bounds their bytes).
pub const MAX_LINES: usize = 10_000;
/// Largest `body.chunk_size`.
pub const MAX_CHUNK: usize = 1 << 20;
/// Longest `error` of a canned response.
pub const MAX_ERROR_LEN: usize = 200;
/// Longest `error_description` or `location` of a canned response.
pub const MAX_TEXT_LEN: usize = 2000;

impl Script {
    /// Parses and validates a script; the error is a sentence naming the bad field.
    pub fn parse(json: &[u8]) -> Result<Script, String> {
        let script: Script =
            serde_json::from_slice(json).map_err(|e| format!("invalid script: {e}"))?;
        script.validate()?;
        Ok(script)
    }

    fn validate(&self) -> Result<(), String> {
        if self.responses.len() > MAX_RESPONSES {
            return Err(format!(
                "responses must hold from 0 to {MAX_RESPONSES} entries, got {}",
                self.responses.len()
            ));
        }
        for (i, r) in self.responses.iter().enumerate() {
            for (name, v, max) in [
                ("error", &r.error, MAX_ERROR_LEN),
                ("error_description", &r.error_description, MAX_TEXT_LEN),
                ("location", &r.location, MAX_TEXT_LEN),
            ] {
                if let Some(v) = v {
                    if v.len() > max {
                        return Err(format!(
                            "responses[{i}].{name} must be from 0 to {max} bytes long, got {}",
                            v.len()
                        ));
                    }
                }
            }
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
            if let Some(s) = r.retry_after.filter(|s| *s > 86_400) {
                return Err(format!(
                    "responses[{i}].retry_after must be from 0 to 86400 seconds, got {s}"
                ));
            }
        }
        if let Some(b) = &self.body {
            if b.lines.len() > MAX_LINES {
                return Err(format!(
                    "body.lines must hold from 0 to {MAX_LINES} lines, got {}",
                    b.lines.len()
                ));
            }
            if let Some(n) = b.chunk_size.filter(|n| !(1..=MAX_CHUNK).contains(n)) {
                return Err(format!(
                    "body.chunk_size must be from 1 to {MAX_CHUNK} bytes, got {n}"
                ));
            }
            if b.chunk_delay_ms > 60_000 {
                return Err(format!(
                    "body.chunk_delay_ms must be from 0 to 60000, got {}",
                    b.chunk_delay_ms
                ));
            }
        }
        let range = |name: &str, v: Option<f64>, max: f64| match v {
            Some(x) if !(x.is_finite() && (0.0..=max).contains(&x)) => {
                Err(format!("{name} must be a number from 0 to {max}, got {x}"))
            }
            _ => Ok(()),
        };
        range("rate", self.rate, MAX_RATE)?;
        range("slot_hold_secs", self.slot_hold_secs, MAX_HOLD_SECS)?;
        range("resume_secs", self.resume_secs, MAX_RESUME_SECS)?;
        if let Some(n) = self.resend.filter(|n| *n > 1000) {
            return Err(format!("resend must be from 0 to 1000, got {n}"));
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
            (
                r#"{"rate":1e17}"#,
                "rate must be a number from 0 to 10000, got 100000000000000000",
            ),
            (
                r#"{"slot_hold_secs":1e9}"#,
                "slot_hold_secs must be a number from 0 to 3600",
            ),
            (r#"{"resume_secs":1e9}"#, "resume_secs"),
            (
                r#"{"resend":5000}"#,
                "resend must be from 0 to 1000, got 5000",
            ),
            (
                r#"{"body":{"lines":[],"chunk_size":9999999}}"#,
                "chunk_size must be from 1 to",
            ),
        ] {
            let e = Script::parse(json.as_bytes()).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
        let long = format!(
            r#"{{"responses":[{{"status":404,"error":"{}"}}]}}"#,
            "x".repeat(201)
        );
        let e = Script::parse(long.as_bytes()).unwrap_err();
        assert!(
            e.contains("responses[0].error must be from 0 to 200 bytes long, got 201"),
            "{e}"
        );
    }
}
