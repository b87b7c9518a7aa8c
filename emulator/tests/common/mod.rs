//! Test helpers of the emulator's suite. The emulator in-process ([`Emu`]), the byte-exact
//! HTTP/1.1 client and the record reader are shared with the relay's suite and come from
//! `livestream-testkit`; what only this suite needs is here.

#![allow(dead_code)]

pub use livestream_testkit::*;
use serde_json::Value;

/// The error_description of a JSON error body.
pub async fn error_description(r: Resp) -> String {
    let b = r.body().await.expect("error body");
    let v: Value = serde_json::from_slice(&b).expect("JSON error body");
    assert!(v["error"].is_string(), "error field: {v}");
    v["error_description"]
        .as_str()
        .expect("error_description")
        .to_string()
}
