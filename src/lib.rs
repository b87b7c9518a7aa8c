//! livestream-wasm: a polite Adobe Analytics Live Stream client.
//!
//! The crate has two layers:
//! - [`core`](crate::core): sans-IO logic (framing, exact 64-bit ids, de-duplication, status
//!   policy, reconnect timing). No I/O, no clock, no JavaScript types; time is injected, so
//!   it runs and is tested natively and can drive a native relay as well as the browser.
//! - `web` (only on `wasm32`): the wasm-bindgen shell that owns `fetch`, the stream reader,
//!   timers and callbacks, and exposes the `LiveStream` class to JavaScript.
//!
//! The behaviour follows Adobe's KA-16598: connect once, keep reading, and after any loss
//! wait about 60 s before connecting again, so the load balancer can free the old slot.

pub mod core;

#[cfg(target_arch = "wasm32")]
pub mod web;
