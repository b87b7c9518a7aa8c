//! The I/O around the sans-IO [`Client`]: one async task per connect attempt, one timer, the
//! callbacks.
//!
//! Every input goes through [`Shared::drive`]: borrow the client, feed it, carry out its
//! actions (spawn attempts, abort requests), reschedule the timer, take its events, release
//! the borrow, and only then call the user's callbacks. A callback may therefore call any
//! method of the stream, `close()` included.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use gloo_timers::callback::Timeout;
use js_sys::{Function, Object, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::convert;
use super::js::{self, set};
use super::options::{Callbacks, TokenSource};
use crate::core::{
    Action, Client, ConnectRequest, Event, Millis, ResponseHead, SlotState, StatusEvent,
};

/// The largest piece of a body chunk fed to the core at once (one batch each).
const SLICE_BYTES: usize = 256 * 1024;

/// The most of a non-200 body read for its error message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Set by the panic hook when the shell or the core panicked: the wasm state cannot be
/// trusted any more (a panic aborts mid-operation), so every client stops and every later
/// call throws.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// How many frames of shell code are on the stack, so that the panic hook can tell a panic
/// of this crate from one of other Rust code in the same module (e.g. a test's callback).
static SHELL_DEPTH: AtomicUsize = AtomicUsize::new(0);

/// Marks shell code as running for its lifetime.
pub struct InShell(());

impl InShell {
    /// Enters shell code.
    pub fn enter() -> InShell {
        SHELL_DEPTH.fetch_add(1, Ordering::Relaxed);
        InShell(())
    }
}

impl Drop for InShell {
    fn drop(&mut self) {
        SHELL_DEPTH.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs user code (a callback, the token function, an injected fetch) outside the shell's
/// panic accounting.
fn user_code<R>(f: impl FnOnce() -> R) -> R {
    let depth = SHELL_DEPTH.swap(0, Ordering::Relaxed);
    let r = f();
    SHELL_DEPTH.store(depth, Ordering::Relaxed);
    r
}

/// Polls a future as shell code.
struct Guarded(Pin<Box<dyn Future<Output = ()>>>);

impl Future for Guarded {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let _in = InShell::enter();
        self.0.as_mut().poll(cx)
    }
}

/// Installs the panic hook once: remember a panic of shell code, then print any panic
/// (console_error_panic_hook).
pub fn install_panic_hook() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if !INSTALLED.swap(true, Ordering::Relaxed) {
        std::panic::set_hook(Box::new(|info| {
            if SHELL_DEPTH.load(Ordering::Relaxed) > 0 {
                PANICKED.store(true, Ordering::Relaxed);
            }
            console_error_panic_hook::hook(info);
        }));
    }
}

/// The error every call throws once the module panicked.
pub fn dead_error() -> JsValue {
    js_sys::Error::new(
        "livestream-wasm stopped after an internal error (a Rust panic, printed to the console); \
         this LiveStream can no longer be used: reload the module or the page",
    )
    .into()
}

/// True after a panic.
pub fn panicked() -> bool {
    PANICKED.load(Ordering::Relaxed)
}

/// One request in flight.
struct Attempt {
    id: u64,
    controller: Option<js::AbortController>,
    reader: Option<js::Reader>,
    aborted: bool,
}

/// What the borrow of the client guards.
struct State {
    client: Client,
    attempts: Vec<Attempt>,
    /// The one pending timer and the monotonic time it is for.
    timer: Option<(Millis, Timeout)>,
    last_now: Millis,
}

/// What never changes after construction.
struct Env {
    fetch: Function,
    token: TokenSource,
    /// Node/Deno: follow redirects in the core (re-sending auth) and ask for gzip.
    manual_redirects: bool,
    clock: Option<js::Clock>,
    /// Swallows the rejection of fire-and-forget promises (cancel).
    ignore: Closure<dyn FnMut(JsValue)>,
}

/// The state of one `LiveStream`, shared by the JS object, its attempt tasks and its timer.
pub struct Shared {
    state: RefCell<State>,
    callbacks: RefCell<Callbacks>,
    closed: Cell<bool>,
    env: Env,
}

/// Events taken from the client, with what must be done once its borrow is released.
#[derive(Default)]
struct Work {
    events: Vec<Event>,
    connects: Vec<ConnectRequest>,
    aborts: Vec<(Option<js::AbortController>, Option<js::Reader>)>,
}

impl Shared {
    /// A stream around `client`.
    pub fn new(
        client: Client,
        token: TokenSource,
        fetch: Option<Function>,
        callbacks: Callbacks,
    ) -> Rc<Self> {
        let global_fetch = js::global_get("fetch");
        let fetch = fetch.unwrap_or_else(|| global_fetch.unchecked_into());
        // A page has `document`, a worker `WorkerGlobalScope`; both refuse manual redirects
        // (opaque) and set Accept-Encoding themselves.
        let manual_redirects = !js::global_has("document") && !js::global_has("WorkerGlobalScope");
        let perf = js::global_get("performance");
        let clock = js::get(&perf, "now")
            .is_function()
            .then(|| perf.unchecked_into());
        Rc::new(Shared {
            state: RefCell::new(State {
                client,
                attempts: Vec::new(),
                timer: None,
                last_now: 0,
            }),
            callbacks: RefCell::new(callbacks),
            closed: Cell::new(false),
            env: Env {
                fetch,
                token,
                manual_redirects,
                clock,
                ignore: Closure::new(|_: JsValue| {}),
            },
        })
    }

    /// True once `close()` ran.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    fn raw_now(&self) -> f64 {
        match &self.env.clock {
            Some(c) => c.now(),
            None => js_sys::Date::now(),
        }
    }

    /// Feeds the client with `f`, carries out what it asks, then delivers its events.
    pub fn drive<R>(
        self: &Rc<Self>,
        f: impl FnOnce(&mut Client, Millis) -> R,
    ) -> Result<R, JsValue> {
        let _in = InShell::enter();
        if panicked() {
            return Err(dead_error());
        }
        let (result, work) = {
            let Ok(mut st) = self.state.try_borrow_mut() else {
                return Err(dead_error());
            };
            let now = (self.raw_now().max(0.0) as Millis).max(st.last_now);
            st.last_now = now;
            let result = f(&mut st.client, now);
            let work = self.collect(&mut st, now);
            (result, work)
        };
        self.carry_out(work);
        Ok(result)
    }

    /// Drains actions and events and reschedules the timer, under the borrow.
    fn collect(self: &Rc<Self>, st: &mut State, now: Millis) -> Work {
        let mut work = Work::default();
        while let Some(action) = st.client.poll_action() {
            match action {
                Action::Connect(req) => {
                    st.attempts.push(Attempt {
                        id: req.id,
                        controller: js::AbortController::new().ok(),
                        reader: None,
                        aborted: false,
                    });
                    work.connects.push(req);
                }
                Action::Abort { id, .. } => {
                    if let Some(a) = st.attempts.iter_mut().find(|a| a.id == id && !a.aborted) {
                        a.aborted = true;
                        work.aborts.push((a.controller.clone(), a.reader.clone()));
                    }
                }
            }
        }
        while let Some(event) = st.client.poll_event() {
            work.events.push(event);
        }
        // Re-arm only when the deadline comes sooner than the armed timer (or none is armed).
        // A later deadline is picked up when the armed timer fires (`on_timer` re-arms): the
        // idle deadline moves with every chunk, and re-arming each time would cost a
        // clearTimeout, a setTimeout and a closure per chunk.
        if let Some(at) = st.client.poll_timeout() {
            let sooner = match &st.timer {
                Some((armed, _)) => at < *armed,
                None => true,
            };
            if sooner {
                // setTimeout takes an i32; a longer wait fires early and is re-armed.
                let wait = at.saturating_sub(now).min(i32::MAX as u64) as u32;
                let me = Rc::clone(self);
                st.timer = Some((at, Timeout::new(wait, move || me.on_timer())));
            }
        }
        work
    }

    fn carry_out(self: &Rc<Self>, work: Work) {
        for (controller, reader) in work.aborts {
            self.abort(controller.as_ref(), reader.as_ref());
        }
        for req in work.connects {
            wasm_bindgen_futures::spawn_local(Guarded(Box::pin(Rc::clone(self).attempt(req))));
        }
        self.deliver(work.events);
    }

    fn abort(&self, controller: Option<&js::AbortController>, reader: Option<&js::Reader>) {
        if let Some(c) = controller {
            let _ = c.abort();
        }
        if let Some(r) = reader {
            // Also ends a body whose fetch ignores the signal (an injected one).
            if let Ok(p) = r.cancel_reader() {
                let _ = p.catch(&self.env.ignore);
            }
        }
    }

    fn on_timer(self: &Rc<Self>) {
        if let Ok(mut st) = self.state.try_borrow_mut() {
            st.timer = None;
        }
        let _ = self.drive(|c, now| c.handle_timeout(now));
    }

    /// Starts the client.
    pub fn start(self: &Rc<Self>) -> Result<(), JsValue> {
        self.drive(|c, now| {
            c.start(now);
        })
    }

    /// Closes the client: aborts every request, cancels the timer, delivers the final
    /// `closed` statuses, and drops the callbacks so nothing fires afterwards.
    pub fn close(self: &Rc<Self>) -> Result<(), JsValue> {
        let _in = InShell::enter();
        if panicked() {
            return Err(dead_error());
        }
        if self.closed.replace(true) {
            return Ok(());
        }
        let callbacks = std::mem::take(&mut *self.callbacks.borrow_mut());
        let work = {
            let Ok(mut st) = self.state.try_borrow_mut() else {
                return Err(dead_error());
            };
            let now = (self.raw_now().max(0.0) as Millis).max(st.last_now);
            st.client.close(now);
            // Free the dedup memory and buffers now, not when the object is collected.
            st.client.release_buffers();
            let mut work = self.collect(&mut st, now);
            st.timer = None;
            for a in st.attempts.iter_mut().filter(|a| !a.aborted) {
                a.aborted = true;
                work.aborts.push((a.controller.clone(), a.reader.clone()));
            }
            work
        };
        for (controller, reader) in work.aborts {
            self.abort(controller.as_ref(), reader.as_ref());
        }
        for event in work.events {
            if let Event::Status(s) = event {
                self.emit_status(&callbacks, &s);
            }
        }
        Ok(())
    }

    /// The `stats` object.
    pub fn stats(&self) -> Result<JsValue, JsValue> {
        let _in = InShell::enter();
        if panicked() {
            return Err(dead_error());
        }
        let st = self.state.try_borrow().map_err(|_| dead_error())?;
        let now = (self.raw_now().max(0.0) as Millis).max(st.last_now);
        Ok(convert::stats(&st.client.stats(), now, js_sys::Date::now()))
    }

    /// `"idle"`, `"running"`, `"closed"` or `"failed"`.
    pub fn state(&self) -> Result<&'static str, JsValue> {
        let _in = InShell::enter();
        if panicked() {
            return Err(dead_error());
        }
        if self.closed.get() {
            return Ok("closed");
        }
        let st = self.state.try_borrow().map_err(|_| dead_error())?;
        let slots = st.client.stats().slots;
        Ok(if slots.iter().any(|s| s.state == SlotState::Failed) {
            "failed"
        } else if slots.iter().all(|s| s.state == SlotState::Idle) {
            "idle"
        } else {
            "running"
        })
    }

    // ---- delivery -------------------------------------------------------------------------

    /// Calls `onStatus`, if set, with `s`.
    fn emit_status(&self, callbacks: &Callbacks, s: &StatusEvent) {
        if let Some(f) = &callbacks.on_status {
            self.call(
                callbacks,
                f,
                "onStatus",
                &convert::status(s),
                None,
                Some(s.slot),
            );
        }
    }

    fn deliver(&self, events: Vec<Event>) {
        for event in events {
            if self.closed.get() || panicked() {
                return;
            }
            // A cheap clone of the (reference-counted) functions: a callback may close the
            // stream, which empties `self.callbacks`.
            let callbacks = self.callbacks.borrow().clone();
            match event {
                Event::Hits(batch) => {
                    let info = convert::hit_info(batch.slot);
                    if let Some(f) = &callbacks.on_hits {
                        let hits = convert::hits(&batch);
                        self.call(
                            &callbacks,
                            f,
                            "onHits",
                            &hits,
                            Some(&info),
                            Some(batch.slot),
                        );
                    }
                    if let Some(f) = &callbacks.on_batch {
                        if !self.closed.get() {
                            let b = convert::hit_batch(&batch);
                            self.call(&callbacks, f, "onBatch", &b, Some(&info), Some(batch.slot));
                        }
                    }
                    // Everything was copied out: the core reuses the buffers.
                    if let Ok(mut st) = self.state.try_borrow_mut() {
                        st.client.recycle(batch);
                    }
                }
                Event::Status(s) => self.emit_status(&callbacks, &s),
                Event::Error(e) => {
                    if let Some(f) = &callbacks.on_error {
                        self.call(&callbacks, f, "onError", &convert::error(&e), None, e.slot);
                    }
                }
            }
        }
    }

    /// Calls a user callback; what it throws goes to `onError` as `callback_error`, or to
    /// the console when that is impossible. The stream goes on either way.
    fn call(
        &self,
        callbacks: &Callbacks,
        f: &Function,
        name: &str,
        a: &JsValue,
        b: Option<&JsValue>,
        slot: Option<usize>,
    ) {
        let result = user_code(|| match b {
            Some(b) => f.call2(&JsValue::UNDEFINED, a, b),
            None => f.call1(&JsValue::UNDEFINED, a),
        });
        let Err(thrown) = result else { return };
        let message = format!(
            "the {name} callback threw: {}; the stream goes on",
            js::error_text(&thrown)
        );
        let reported = match &callbacks.on_error {
            Some(on_error) if name != "onError" && !self.closed.get() => {
                let e = convert::error_object("callback_error", &message, slot, None, false);
                match user_code(|| on_error.call1(&JsValue::UNDEFINED, &e)) {
                    Ok(_) => true,
                    Err(again) => {
                        js::console_error(
                            "livestream-wasm: the onError callback threw while reporting a callback error:",
                            &again,
                        );
                        false
                    }
                }
            }
            _ => false,
        };
        if !reported {
            js::console_error(&format!("livestream-wasm: {message}"), &thrown);
        }
    }

    // ---- one connect attempt --------------------------------------------------------------

    /// True when attempt `id` was aborted (or the stream closed): stop quietly.
    fn stale(&self, id: u64) -> bool {
        if self.closed.get() || panicked() {
            return true;
        }
        match self.state.try_borrow() {
            Ok(st) => st
                .attempts
                .iter()
                .find(|a| a.id == id)
                .map_or(true, |a| a.aborted),
            Err(_) => true,
        }
    }

    fn finish(&self, id: u64) {
        if let Ok(mut st) = self.state.try_borrow_mut() {
            st.attempts.retain(|a| a.id != id);
        }
    }

    fn set_reader(&self, id: u64, reader: &js::Reader) {
        if let Ok(mut st) = self.state.try_borrow_mut() {
            if let Some(a) = st.attempts.iter_mut().find(|a| a.id == id) {
                a.reader = Some(reader.clone());
            }
        }
    }

    async fn attempt(self: Rc<Self>, req: ConnectRequest) {
        let id = req.id;
        self.run_attempt(&req).await;
        self.finish(id);
    }

    async fn run_attempt(self: &Rc<Self>, req: &ConnectRequest) {
        let id = req.id;
        // 1. The token.
        let token = match &self.env.token {
            TokenSource::None => None,
            TokenSource::Fixed(t) => Some(t.clone()),
            TokenSource::Provider(f) => {
                if self.stale(id) {
                    return;
                }
                match self.ask_token(f, req).await {
                    Ok(t) => Some(t),
                    Err(message) => {
                        if !self.stale(id) {
                            let _ = self.drive(|c, now| c.handle_token_error(id, &message, now));
                        }
                        return;
                    }
                }
            }
        };
        if self.stale(id) {
            return;
        }
        let headers = {
            let Ok(st) = self.state.try_borrow() else {
                return;
            };
            match &token {
                Some(t) => st.client.request_headers(t),
                None => Ok(st
                    .client
                    .config()
                    .request_headers("-")
                    .into_iter()
                    .filter(|(k, _)| *k != "Authorization")
                    .collect()),
            }
        };
        let headers = match headers {
            Ok(h) => h,
            Err(message) => {
                let _ = self.drive(|c, now| c.handle_token_error(id, &message, now));
                return;
            }
        };

        // 2. The request.
        let init = self.request_init(id, &headers);
        let called = user_code(|| {
            self.env
                .fetch
                .call2(&js_sys::global(), &JsValue::from_str(&req.url), &init)
        });
        let response = match called {
            Ok(p) => JsFuture::from(Promise::resolve(&p)).await,
            Err(e) => Err(e),
        };
        if self.stale(id) {
            if let Ok(r) = response {
                self.discard_body(&r.unchecked_into());
            }
            return;
        }
        let response: js::Response = match response {
            Ok(r) if r.is_object() => r.unchecked_into(),
            Ok(other) => {
                let message = format!(
                    "fetch resolved to {} instead of a Response",
                    js::describe(&other)
                );
                let _ = self.drive(|c, now| c.handle_failure(id, &message, now));
                return;
            }
            Err(e) => {
                let message = js::error_text(&e);
                let _ = self.drive(|c, now| c.handle_failure(id, &message, now));
                return;
            }
        };

        // 3. The response.
        let status = response.status().as_f64().unwrap_or(0.0);
        let status = if (0.0..=999.0).contains(&status) {
            status as u16
        } else {
            0
        };
        let final_url = if response.redirected().as_bool().unwrap_or(false) {
            response.url().as_string()
        } else {
            None
        };
        let headers: js::Headers = response.headers().unchecked_into();
        let header = |name: &str| {
            if headers.is_object() {
                headers.get(name).ok().and_then(|v| v.as_string())
            } else {
                None
            }
        };
        let mut head = ResponseHead {
            status,
            location: header("location"),
            retry_after: header("retry-after"),
            date: header("date"),
            wall_clock_ms: Some(js_sys::Date::now().max(0.0) as u64),
            final_url,
            body: String::new(),
        };
        if status != 200 {
            head.body = self.read_error_body(id, &response).await;
            if self.stale(id) {
                return;
            }
            let _ = self.drive(|c, now| c.handle_response(id, head, now));
            return;
        }
        let slot = req.slot;
        let open = self.drive(|c, now| {
            c.handle_response(id, head, now);
            c.stats()
                .slots
                .get(slot)
                .is_some_and(|s| s.state == SlotState::Open)
        });
        if !matches!(open, Ok(true)) {
            self.discard_body(&response);
            return;
        }
        self.read_body(id, &response).await;
    }

    async fn ask_token(&self, f: &Function, req: &ConnectRequest) -> Result<String, String> {
        let info = Object::new();
        set(&info, "connection", &JsValue::from_f64(req.slot as f64));
        set(&info, "refresh", &JsValue::from_bool(req.refresh_token));
        let value = match user_code(|| f.call1(&JsValue::UNDEFINED, &info)) {
            Ok(v) => JsFuture::from(Promise::resolve(&v))
                .await
                .map_err(|e| format!("the token function rejected: {}", js::error_text(&e)))?,
            Err(e) => return Err(format!("the token function threw: {}", js::error_text(&e))),
        };
        value.as_string().ok_or_else(|| {
            format!(
                "the token function returned {} instead of a string",
                js::describe(&value)
            )
        })
    }

    fn request_init(&self, id: u64, headers: &[(&'static str, String)]) -> JsValue {
        let h = Object::new();
        for (name, value) in headers {
            // Browsers set Accept-Encoding themselves and refuse it from script.
            if *name == "Accept-Encoding" && !self.env.manual_redirects {
                continue;
            }
            set(&h, name, &JsValue::from_str(value));
        }
        let init = Object::new();
        set(&init, "method", &JsValue::from_str("GET"));
        set(&init, "headers", &h);
        let redirect = if self.env.manual_redirects {
            "manual"
        } else {
            "follow"
        };
        set(&init, "redirect", &JsValue::from_str(redirect));
        set(&init, "cache", &JsValue::from_str("no-store"));
        if let Ok(st) = self.state.try_borrow() {
            if let Some(c) = st
                .attempts
                .iter()
                .find(|a| a.id == id)
                .and_then(|a| a.controller.as_ref())
            {
                set(&init, "signal", &c.signal());
            }
        }
        init.into()
    }

    fn reader_of(&self, response: &js::Response) -> Option<js::Reader> {
        let body = response.body();
        if !body.is_object() {
            return None;
        }
        body.unchecked_into::<js::ReadableStream>()
            .get_reader()
            .ok()
    }

    fn discard_body(&self, response: &js::Response) {
        let body = response.body();
        if body.is_object() {
            if let Ok(p) = body.unchecked_into::<js::ReadableStream>().cancel() {
                let _ = p.catch(&self.env.ignore);
            }
        }
    }

    /// Reads up to [`ERROR_BODY_LIMIT`] bytes of a non-200 body as text.
    async fn read_error_body(&self, id: u64, response: &js::Response) -> String {
        let Some(reader) = self.reader_of(response) else {
            return String::new();
        };
        self.set_reader(id, &reader);
        let mut bytes = Vec::new();
        let mut complete = false;
        while bytes.len() < ERROR_BODY_LIMIT {
            let Ok(read) = reader.read() else { break };
            let Ok(result) = JsFuture::from(read).await else {
                break;
            };
            let result: js::ReadResult = result.unchecked_into();
            if result.done().as_bool().unwrap_or(true) || self.stale(id) {
                complete = true;
                break;
            }
            let Ok(chunk) = result.value().dyn_into::<Uint8Array>() else {
                break;
            };
            let take = (ERROR_BODY_LIMIT - bytes.len()).min(chunk.length() as usize);
            let start = bytes.len();
            bytes.resize(start + take, 0);
            chunk.subarray(0, take as u32).copy_to(&mut bytes[start..]);
        }
        if !complete {
            if let Ok(p) = reader.cancel_reader() {
                let _ = p.catch(&self.env.ignore);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Feeds the body of a 200 to the client chunk by chunk until it ends, fails or is
    /// aborted.
    async fn read_body(self: &Rc<Self>, id: u64, response: &js::Response) {
        let Some(reader) = self.reader_of(response) else {
            let _ = self.drive(|c, now| c.handle_end(id, now));
            return;
        };
        self.set_reader(id, &reader);
        // One buffer per connection, reused: each chunk is copied into wasm memory once.
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let read = match reader.read() {
                Ok(p) => JsFuture::from(p).await,
                Err(e) => Err(e),
            };
            if self.stale(id) {
                return;
            }
            let result: js::ReadResult = match read {
                Ok(r) => r.unchecked_into(),
                Err(e) => {
                    let message = js::error_text(&e);
                    let _ = self.drive(|c, now| c.handle_failure(id, &message, now));
                    return;
                }
            };
            if result.done().as_bool().unwrap_or(true) {
                let _ = self.drive(|c, now| c.handle_end(id, now));
                return;
            }
            let chunk = match result.value().dyn_into::<Uint8Array>() {
                Ok(c) => c,
                Err(v) => {
                    let message = format!(
                        "the response body yielded {} instead of a Uint8Array",
                        js::describe(&v)
                    );
                    if let Ok(p) = reader.cancel_reader() {
                        let _ = p.catch(&self.env.ignore);
                    }
                    let _ = self.drive(|c, now| c.handle_failure(id, &message, now));
                    return;
                }
            };
            // A large chunk (Chromium hands up to 2 MiB when the reader lags) is fed in
            // slices, a batch each: wasm memory and the batches stay small and in cache.
            let len = chunk.length() as usize;
            let mut at = 0;
            while at < len {
                let n = (len - at).min(SLICE_BYTES);
                if buf.len() < n {
                    buf.resize(n, 0);
                }
                if at == 0 && n == len {
                    chunk.copy_to(&mut buf[..n]);
                } else {
                    chunk
                        .subarray(at as u32, (at + n) as u32)
                        .copy_to(&mut buf[..n]);
                }
                at += n;
                if self
                    .drive(|c, now| c.handle_data(id, &buf[..n], now))
                    .is_err()
                    || self.stale(id)
                {
                    return;
                }
            }
        }
    }
}
