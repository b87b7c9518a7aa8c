//! The core's events and stats as the plain JavaScript objects of the public API.
//!
//! Optional fields (`httpStatus`, `retryInMs`, `connection`, `nextAttemptInMs`) are left out
//! when absent, never set to `undefined` or `null`, everywhere.

use js_sys::{Array, Object};
use wasm_bindgen::prelude::*;

use super::js::set;
use crate::core::{Batch, ErrorEvent, Millis, SlotState, Stats, StatusEvent};

#[wasm_bindgen(module = "/js/hit-batch.js")]
extern "C" {
    /// The `HitBatch` class of `onBatch` (js/hit-batch.js).
    pub type HitBatch;

    #[wasm_bindgen(constructor)]
    #[allow(clippy::too_many_arguments)]
    fn new(
        connection: u32,
        text: &[u8],
        latin1_at: u32,
        wide_at: u32,
        starts: &[u32],
        ends: &[u32],
        hit_id_high: &[u64],
        hit_id_low: &[u64],
        vis_id_high: &[u64],
        vis_id_low: &[u64],
        time_gmt: &[f64],
        received_time_gmt: &[f64],
        flags: &[u8],
    ) -> HitBatch;

    /// Decodes and parses each record of a batch (js/hit-batch.js).
    #[wasm_bindgen(js_name = hitsFromText)]
    fn hits_from_text(
        text: &[u8],
        starts: &[u32],
        ends: &[u32],
        latin1_at: u32,
        wide_at: u32,
    ) -> Array;
}

fn num(v: impl Into<f64>) -> JsValue {
    JsValue::from_f64(v.into())
}

/// `{ connection }`, the second argument of `onHits` and `onBatch`.
pub fn hit_info(slot: usize) -> JsValue {
    let o = Object::new();
    set(&o, "connection", &num(slot as u32));
    o.into()
}

/// The hits of a batch as plain objects, ids as exact decimal strings.
pub fn hits(batch: &Batch) -> JsValue {
    let [latin1_at, wide_at] = batch.regions;
    hits_from_text(
        &batch.json,
        &batch.starts,
        &batch.ends,
        latin1_at as u32,
        wide_at as u32,
    )
    .into()
}

/// The batch as a `HitBatch` (typed arrays of the key fields, records parsed on demand).
pub fn hit_batch(batch: &Batch) -> JsValue {
    HitBatch::new(
        batch.slot as u32,
        &batch.json,
        batch.regions[0] as u32,
        batch.regions[1] as u32,
        &batch.starts,
        &batch.ends,
        &batch.hit_id_high,
        &batch.hit_id_low,
        &batch.vis_id_high,
        &batch.vis_id_low,
        &batch.time_gmt,
        &batch.received_time_gmt,
        &batch.flags,
    )
    .into()
}

/// `{ connection, state, httpStatus?, retryInMs?, reason }`.
pub fn status(e: &StatusEvent) -> JsValue {
    let o = Object::new();
    set(&o, "connection", &num(e.slot as u32));
    set(&o, "state", &JsValue::from_str(e.state.as_str()));
    if let Some(s) = e.http_status {
        set(&o, "httpStatus", &num(s));
    }
    if let Some(ms) = e.retry_in_ms {
        set(&o, "retryInMs", &num(ms as f64));
    }
    set(&o, "reason", &JsValue::from_str(&e.reason));
    o.into()
}

/// `{ code, message, connection?, httpStatus?, fatal }`.
pub fn error(e: &ErrorEvent) -> JsValue {
    error_object(e.code.as_str(), &e.message, e.slot, e.http_status, e.fatal)
}

/// An error object from its parts (also used for the shell's own `callback_error`).
pub fn error_object(
    code: &str,
    message: &str,
    slot: Option<usize>,
    http_status: Option<u16>,
    fatal: bool,
) -> JsValue {
    let o = Object::new();
    set(&o, "code", &JsValue::from_str(code));
    set(&o, "message", &JsValue::from_str(message));
    if let Some(s) = slot {
        set(&o, "connection", &num(s as u32));
    }
    if let Some(s) = http_status {
        set(&o, "httpStatus", &num(s));
    }
    set(&o, "fatal", &JsValue::from_bool(fatal));
    o.into()
}

/// The `stats` object. `now` is the shell's monotonic time and `wall_now` the Unix time in
/// ms at the same moment, to turn the core's monotonic `since` into a Unix timestamp.
pub fn stats(s: &Stats, now: Millis, wall_now: f64) -> JsValue {
    let o = Object::new();
    set(&o, "hits", &num(s.hits as f64));
    set(&o, "bytes", &num(s.bytes as f64));
    set(&o, "duplicates", &num(s.duplicates as f64));
    set(&o, "malformed", &num(s.malformed as f64));
    set(&o, "oversized", &num(s.oversized as f64));
    set(&o, "invalidUtf8", &num(s.invalid_utf8 as f64));
    set(&o, "truncated", &num(s.truncated as f64));
    set(&o, "reconnects", &num(s.reconnects as f64));
    set(&o, "connects", &num(s.connects as f64));
    let slots = Array::new();
    for (i, slot) in s.slots.iter().enumerate() {
        let so = Object::new();
        set(&so, "connection", &num(i as u32));
        set(&so, "state", &JsValue::from_str(slot.state.as_str()));
        let since = wall_now - now.saturating_sub(slot.since) as f64;
        set(&so, "since", &num(since.round()));
        if let Some(st) = slot.http_status {
            set(&so, "httpStatus", &num(st));
        }
        if slot.state == SlotState::Waiting {
            if let Some(at) = slot.next_attempt_at {
                set(&so, "nextAttemptInMs", &num(at.saturating_sub(now) as f64));
            }
        }
        set(&so, "reason", &JsValue::from_str(&slot.reason));
        set(&so, "hits", &num(slot.hits as f64));
        set(&so, "bytes", &num(slot.bytes as f64));
        set(&so, "connects", &num(slot.connects as f64));
        slots.push(&so);
    }
    set(&o, "slots", &slots);
    o.into()
}
