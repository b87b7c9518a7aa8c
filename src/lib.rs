//! livestream-wasm: a polite Adobe Analytics Live Stream client.
//!
//! The crate has two layers:
//! - [`core`]: sans-IO logic (framing, exact 64-bit ids, de-duplication, status
//!   policy, reconnect timing). No I/O, no clock, no JavaScript types; time is injected, so
//!   it runs and is tested natively and can drive a native relay as well as the browser.
//! - [`crossing`]: how a chunk's hits are laid out in wasm memory for JavaScript (V8 string
//!   forms, ids quoted); plain Rust, tested natively.
//! - `web` (only on `wasm32`): the wasm-bindgen boundary (`Engine`): options in, outputs,
//!   statuses and stats out. The JavaScript host around it (js/live-stream.js) owns `fetch`,
//!   the body reader, the timer and the callbacks, and is the public `LiveStream` class.
//!
//! The behaviour follows Adobe's KA-16598: connect once, keep reading, and after any loss
//! wait about 60 s before connecting again, so the load balancer can free the old slot.

pub mod core;
pub mod crossing;

#[cfg(target_arch = "wasm32")]
pub mod web;
