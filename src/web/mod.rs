//! The wasm-bindgen shell: the `LiveStream` class of the npm package.
//!
//! It is deliberately thin. It owns what only JavaScript can do (fetch, the body reader,
//! `AbortController`, one timer, the user's callbacks) and feeds what happens into the
//! sans-IO [`Client`](crate::core::Client), which decides everything else: when to
//! connect, what a status means, how long to wait, what a record is.
//!
//! - `options`: reading and checking the constructor's options object.
//! - `driver`: the attempts, the timer and the delivery of events.
//! - `convert`: events and stats as plain JavaScript objects; `HitBatch` (js/hit-batch.js).
//! - `js`: the JavaScript APIs used, declared structurally.
//! - `types`: the TypeScript declarations of the public surface.
//! - `bench` (cargo feature `bench` only): framing-only and core-only benchmark classes.

#[cfg(feature = "bench")]
mod bench;
mod convert;
mod driver;
mod js;
mod options;
mod types;

use std::rc::Rc;

use wasm_bindgen::prelude::*;

use crate::core::Client;
use driver::Shared;
pub use types::{ClientState, LiveStreamOptions, StatsObject};

/// A Live Stream client: keeps `connections` requests to one stream open, waits at least
/// `reconnectDelayMs` after any loss before reconnecting, and hands over de-duplicated hits
/// with exact 64-bit ids. See the README for the options and callbacks.
#[wasm_bindgen]
pub struct LiveStream {
    shared: Rc<Shared>,
}

#[wasm_bindgen]
impl LiveStream {
    /// Checks the options and prepares the client; nothing is requested before `start()`.
    /// Throws a `TypeError` (unknown option, wrong type) or a `RangeError` (bad value) whose
    /// message names the option, the value and what is allowed.
    #[wasm_bindgen(constructor)]
    pub fn new(options: &LiveStreamOptions) -> Result<LiveStream, JsValue> {
        driver::install_panic_hook();
        let _in = driver::InShell::enter();
        if driver::panicked() {
            return Err(driver::dead_error());
        }
        let parsed = options::parse(options).map_err(options::OptionError::into_js)?;
        let seed = parsed.seed.unwrap_or_else(random_seed);
        let client = Client::new(parsed.config, seed);
        Ok(LiveStream {
            shared: Shared::new(client, parsed.token, parsed.fetch, parsed.callbacks),
        })
    }

    /// Opens the connections. Calling it again, or after `close()`, does nothing.
    pub fn start(&self) -> Result<(), JsValue> {
        if self.shared.is_closed() {
            return if driver::panicked() {
                Err(driver::dead_error())
            } else {
                Ok(())
            };
        }
        self.shared.start()
    }

    /// Aborts every request and cancels the timer. Emits at most one final `closed` status
    /// per connection while it runs; no callback fires after it returns. Idempotent.
    pub fn close(&self) -> Result<(), JsValue> {
        self.shared.close()
    }

    /// Counters and the state of each connection, as a fresh plain object.
    #[wasm_bindgen(getter)]
    pub fn stats(&self) -> Result<StatsObject, JsValue> {
        self.shared.stats().map(JsCast::unchecked_into)
    }

    /// `"idle"` before `start()`, `"running"`, `"failed"` after a fatal error, `"closed"`
    /// after `close()`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> Result<ClientState, JsValue> {
        self.shared
            .state()
            .map(|s| JsValue::from_str(s).unchecked_into())
    }
}

/// A seed for the reconnect jitter when none is given.
fn random_seed() -> u64 {
    let hi = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    let lo = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    (hi << 32) | lo
}
