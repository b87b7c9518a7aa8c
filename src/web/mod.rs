//! The wasm-bindgen boundary: the `Engine` that the JavaScript host drives.
//!
//! The host (js/live-stream.js, the public `LiveStream` class) owns everything that is I/O or
//! JavaScript by nature: `fetch`, the body reader loop, one timer, the callbacks, `AbortSignal`,
//! async iteration, tab sharing. The engine owns every decision, through the sans-IO
//! [`Client`]: it says what to do next ([`Engine::drain`]), judges what came back, and lays
//! out each chunk's hits in wasm memory for the host to read without further calls.
//!
//! A chunk costs two calls into wasm: [`Engine::input`] (only when the input buffer must
//! grow; the host copies the chunk into wasm memory itself) and [`Engine::feed`], whose
//! result says how many hits are ready and whether outputs are waiting. The host then reads
//! the batch through [`Engine::layout`] (pointers into wasm memory, read once per chunk) and
//! calls [`Engine::drain`] only when outputs are waiting.
//!
//! Why not web-sys, gloo-timers or serde-wasm-bindgen here: the host that uses the Web APIs
//! is JavaScript (a read loop in JavaScript costs one boundary call per chunk instead of ~20
//! when Rust drives a `ReadableStream` reader through bindings); options are read field by
//! field against the core's schema so every message names the option; the few objects going
//! out are built directly, which keeps serde out of the .wasm.
//!
//! - `interop`: every conversion between JavaScript values and the core's types.
//! - `js`: property access that never throws, value descriptions for messages.
//! - `bench` (cargo feature `bench` only): framing-only and core-only benchmark classes.

#[cfg(feature = "bench")]
mod bench;
mod interop;
mod js;

use wasm_bindgen::prelude::*;

use crate::core::{AttemptId, Client, ClientState, Config, Instant, ResponseHead};
use crate::crossing::{Batch, LAYOUT_WORDS};

/// One client: the core, the batch being built, the input buffer. Internal to the package:
/// users hold the JavaScript `LiveStream`.
#[wasm_bindgen]
pub struct Engine {
    client: Client,
    batch: Batch,
    input: Vec<u8>,
    layout: Box<[u32; LAYOUT_WORDS]>,
    /// The host's monotonic time never runs backwards for the core.
    last_now: u64,
}

/// The wasm instance's memory, for the host to read batches without copying calls.
#[wasm_bindgen(js_name = wasmMemory)]
pub fn wasm_memory() -> JsValue {
    wasm_bindgen::memory()
}

/// The core's option schema (`OPTIONS`): `[{name, kind, default, meaning, min?, max?,
/// values?}]`, so forms and documentation read defaults and ranges from the one definition.
#[wasm_bindgen(js_name = optionSchema)]
pub fn option_schema() -> js_sys::Array {
    interop::option_schema()
}

/// Panics on purpose: lets the package's tests check that a panic is contained (every open
/// request aborted, one fatal `internal_error`, new clients still work).
#[wasm_bindgen(js_name = __testPanic)]
pub fn test_panic(message: &str) {
    panic!("{message}");
}

#[wasm_bindgen]
impl Engine {
    /// Checks the core's options in `options` (see the core's `OPTIONS`), refusing unknown
    /// names other than `host_options`. Throws a `TypeError` or `RangeError` naming the
    /// option, the value and what is allowed.
    #[wasm_bindgen(constructor)]
    pub fn new(
        options: JsValue,
        host_options: Vec<String>,
        base_url: Option<String>,
        seed: f64,
    ) -> Result<Engine, JsValue> {
        install_panic_hook();
        let parsed = interop::parse_options(&options, &host_options, base_url.as_deref())
            .map_err(interop::OptionError::into_js)?;
        let config = Config::new(parsed).map_err(|e| interop::OptionError::from(e).into_js())?;
        Ok(Engine {
            client: Client::new(config, seed as u64),
            batch: Batch::default(),
            input: Vec::new(),
            layout: Box::new([0; LAYOUT_WORDS]),
            last_now: 0,
        })
    }

    fn now(&mut self, now: f64) -> Instant {
        let ms = if now.is_finite() && now > 0.0 {
            now as u64
        } else {
            0
        };
        self.last_now = self.last_now.max(ms);
        Instant::from_millis(self.last_now)
    }

    /// Opens the connections; with `last_loss` (a hand-over), no sooner than the reconnect
    /// delay after that instant.
    pub fn start(&mut self, now: f64, last_loss: Option<f64>) {
        let now = self.now(now);
        let last_loss = last_loss.map(|t| Instant::from_millis(t.max(0.0) as u64));
        self.client.start_after(now, last_loss);
    }

    /// Remembers hit ids delivered by the previous holder of the stream (a hand-over), pairs
    /// of `high[i]`, `low[i]`, so the resumed stream does not deliver them again.
    #[wasm_bindgen(js_name = rememberHits)]
    pub fn remember_hits(&mut self, high: &[u64], low: &[u64]) {
        let keys = high
            .iter()
            .zip(low)
            .map(|(&high, &low)| crate::core::record::HitKey { high, low });
        self.client.remember_hits(keys);
    }

    /// Closes every slot (the outputs say which requests to abort).
    pub fn close(&mut self, now: f64) {
        let now = self.now(now);
        self.client.close(now);
    }

    /// Frees the de-duplication memory and buffers of a finished client.
    pub fn release(&mut self) {
        self.client.release_buffers();
        self.batch = Batch::default();
        self.input = Vec::new();
    }

    /// Every output queued, as `{type, …}` objects; the last is always `{type: "wait", at}`.
    pub fn drain(&mut self) -> js_sys::Array {
        let list = js_sys::Array::new();
        loop {
            let out = self.client.poll_output();
            list.push(&interop::output(&out));
            if let crate::core::Output::Wait(_) = out {
                return list;
            }
        }
    }

    /// The request headers as `[[name, value], …]` for `token` (none: no `Authorization`).
    /// Throws the reason when the token is unusable.
    pub fn headers(&self, token: Option<String>) -> Result<js_sys::Array, JsValue> {
        self.client
            .request_headers(token.as_deref())
            .map(|h| interop::headers(&h))
            .map_err(|e| JsValue::from_str(&e.to_string()))
    }

    /// The response head of `attempt`.
    #[allow(clippy::too_many_arguments)]
    pub fn response(
        &mut self,
        attempt: f64,
        status: u16,
        location: Option<String>,
        retry_after: Option<String>,
        date: Option<String>,
        final_url: Option<String>,
        wall_clock_ms: f64,
        now: f64,
    ) {
        let now = self.now(now);
        let head = ResponseHead {
            status,
            location,
            retry_after,
            date,
            wall_clock_ms: Some(wall_clock_ms.max(0.0) as u64),
            final_url,
        };
        self.client.handle_response(attempt_id(attempt), head, now);
    }

    /// The first bytes of a non-200 body of `attempt`.
    #[wasm_bindgen(js_name = errorBody)]
    pub fn error_body(&mut self, attempt: f64, body: &[u8], now: f64) {
        let now = self.now(now);
        self.client
            .handle_error_body(attempt_id(attempt), body, now);
    }

    /// A pointer to an input buffer of at least `len` bytes in wasm memory, where the host
    /// copies the next chunk before [`Engine::feed`]. Valid until the next call into wasm.
    pub fn input(&mut self, len: usize) -> *mut u8 {
        if self.input.len() < len {
            self.input.resize(len, 0);
        }
        self.input.as_mut_ptr()
    }

    /// Feeds the first `len` bytes of the input buffer as a body chunk of `attempt`. Returns
    /// the number of new hits laid out for [`Engine::layout`], plus 2^31 when outputs are
    /// waiting (call [`Engine::drain`]). With `reference` (a host that keeps the chunk), the
    /// layout also says where each record lies in the chunk (`Batch::reference_input`).
    /// With `escape` (a host that only parses the records into objects), the text is one
    /// all-ASCII array (`Batch::escape_non_ascii`).
    pub fn feed(
        &mut self,
        attempt: f64,
        len: usize,
        now: f64,
        reference: bool,
        escape: bool,
    ) -> u32 {
        let now = self.now(now);
        self.batch.clear();
        let len = len.min(self.input.len());
        if reference {
            self.batch.reference_input(&self.input[..len]);
        } else if escape {
            self.batch.escape_non_ascii();
        }
        let Engine {
            client,
            batch,
            input,
            ..
        } = self;
        client.handle_data(attempt_id(attempt), &input[..len], now, batch);
        self.batch.finish();
        self.fill_layout();
        let pending = if self.client.has_pending_output() {
            1 << 31
        } else {
            0
        };
        self.batch.len() as u32 | pending
    }

    /// Where the last batch lies in wasm memory: `[textPtr, textLen, columnsPtr, columnsLen, n,
    /// latin1At, wideAt, quotes, fullTextLen]`: `Batch::json` (the text; with `reference`
    /// only the records that are not slices of the chunk, back to back), then from the next
    /// multiple of 8 the columns as `Batch::pack_columns` lays them out (57 bytes a hit,
    /// then the references when asked for, `quotes` being the length of the last array), so
    /// one copy from `textPtr` to the columns' end carries both out; `fullTextLen` is the
    /// length of the whole text (with `reference`, of what [`Engine::materialize`] builds).
    /// The pointer stays the same for the engine's life, the values change with each
    /// [`Engine::feed`].
    pub fn layout(&self) -> *const u32 {
        self.layout.as_ptr()
    }

    /// After a [`Engine::feed`] with `reference`, before the next one: builds the batch's
    /// whole text (three regions, ids quoted; `fullTextLen` bytes) from the chunk still in
    /// the input buffer, and returns where it lies in wasm memory (0 when it cannot be
    /// built). The feed does not write it: most `onBatch` consumers never read it.
    pub fn materialize(&mut self) -> *const u8 {
        match self.batch.materialize(&self.input) {
            Some(text) => text.as_ptr(),
            None => std::ptr::null(),
        }
    }

    /// The 200 body of `attempt` ended.
    pub fn end(&mut self, attempt: f64, now: f64) {
        let now = self.now(now);
        self.client.handle_end(attempt_id(attempt), now);
    }

    /// `attempt` failed (network error, broken body); `message` says how.
    pub fn failure(&mut self, attempt: f64, message: &str, now: f64) {
        let now = self.now(now);
        self.client
            .handle_failure(attempt_id(attempt), message, now);
    }

    /// No usable token could be had for `attempt`.
    #[wasm_bindgen(js_name = tokenError)]
    pub fn token_error(&mut self, attempt: f64, message: &str, now: f64) {
        let now = self.now(now);
        self.client
            .handle_token_error(attempt_id(attempt), message, now);
    }

    /// The timer the last `wait` asked for fired.
    pub fn timeout(&mut self, now: f64) {
        let now = self.now(now);
        self.client.handle_timeout(now);
    }

    /// The `stats` object (`wall_now`: Unix ms at `now`).
    pub fn stats(&mut self, now: f64, wall_now: f64) -> JsValue {
        let now = self.now(now);
        interop::stats(&self.client.stats(), now, wall_now)
    }

    /// `"idle"`, `"running"`, `"closed"` or `"failed"`.
    pub fn state(&self) -> String {
        let s: ClientState = self.client.state();
        s.as_str().to_string()
    }

    /// The reconnect delay in ms (the host's hand-over rule uses it).
    #[wasm_bindgen(js_name = reconnectDelayMs)]
    pub fn reconnect_delay_ms(&self) -> f64 {
        crate::core::time::millis(self.client.config().reconnect_delay) as f64
    }

    /// The size of the duplicate filter (a follower keeps as many recent ids for a hand-over).
    #[wasm_bindgen(js_name = dedupWindow)]
    pub fn dedup_window(&self) -> f64 {
        self.client.config().dedup_window as f64
    }

    /// The request URL and parameters that identify the stream (tabs share a connection only
    /// when this is equal).
    #[wasm_bindgen(js_name = streamKey)]
    pub fn stream_key(&self) -> String {
        let c = self.client.config();
        format!(
            "{} connections={} apiKey={}",
            c.request_url(true),
            c.connections,
            c.api_key.as_deref().unwrap_or("")
        )
    }
}

impl Engine {
    fn fill_layout(&mut self) {
        // The text, then the key columns in the same buffer: one copy out for JavaScript,
        // which decodes the text only when a consumer asks for records (js/hit-batch.js).
        let (text_len, columns_at) = self.batch.append_columns();
        let b = &self.batch;
        let ptr = b.json.as_ptr() as u32;
        let l = &mut self.layout;
        l[0] = ptr;
        l[1] = text_len as u32;
        l[2] = ptr + columns_at as u32;
        l[3] = (b.json.len() - columns_at) as u32;
        l[4] = b.len() as u32;
        l[5] = b.regions[0];
        l[6] = b.regions[1];
        l[7] = b.quotes.len() as u32;
        l[8] = b.text_len() as u32;
    }
}

/// Prints a panic's message to the console once (the host then contains the failure).
fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| std::panic::set_hook(Box::new(console_error_panic_hook::hook)));
}

fn attempt_id(n: f64) -> AttemptId {
    AttemptId::from_raw(if n.is_finite() && n > 0.0 {
        n as u64
    } else {
        0
    })
}
