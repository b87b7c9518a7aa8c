//! The few JavaScript APIs the shell touches, declared by hand.
//!
//! Every binding is structural (a property read or method call by name), so a Node `Response`,
//! a browser `Response` and a look-alike from an injected `fetch` all work. Globals are looked
//! up on `globalThis` at run time rather than bound statically, so one `.wasm` runs in a
//! window, a worker, Node and Deno.

use js_sys::{Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

#[wasm_bindgen]
extern "C" {
    /// A fetch `Response` (or anything shaped like one).
    pub type Response;
    /// HTTP status (0 when the object has none).
    #[wasm_bindgen(method, getter)]
    pub fn status(this: &Response) -> JsValue;
    /// The URL the response came from (after redirects the platform followed).
    #[wasm_bindgen(method, getter)]
    pub fn url(this: &Response) -> JsValue;
    /// True when the platform followed a redirect.
    #[wasm_bindgen(method, getter)]
    pub fn redirected(this: &Response) -> JsValue;
    /// The response headers.
    #[wasm_bindgen(method, getter)]
    pub fn headers(this: &Response) -> JsValue;
    /// The body stream, or null.
    #[wasm_bindgen(method, getter)]
    pub fn body(this: &Response) -> JsValue;

    /// A `Headers` object.
    pub type Headers;
    /// `headers.get(name)`: the value, or null.
    #[wasm_bindgen(method, catch)]
    pub fn get(this: &Headers, name: &str) -> Result<JsValue, JsValue>;

    /// A `ReadableStream` of `Uint8Array` chunks.
    pub type ReadableStream;
    /// Locks the stream to a default reader.
    #[wasm_bindgen(method, catch, js_name = getReader)]
    pub fn get_reader(this: &ReadableStream) -> Result<Reader, JsValue>;
    /// Cancels the stream (when no reader was taken).
    #[wasm_bindgen(method, catch)]
    pub fn cancel(this: &ReadableStream) -> Result<Promise, JsValue>;

    /// A `ReadableStreamDefaultReader`.
    #[derive(Clone)]
    pub type Reader;
    /// The next chunk: a promise of `{ done, value }`.
    #[wasm_bindgen(method, catch)]
    pub fn read(this: &Reader) -> Result<Promise, JsValue>;
    /// Cancels the stream; a pending `read()` resolves with `done`.
    #[wasm_bindgen(method, catch, js_name = cancel)]
    pub fn cancel_reader(this: &Reader) -> Result<Promise, JsValue>;

    /// The `{ done, value }` of a `read()`.
    pub type ReadResult;
    /// True at the end of the stream.
    #[wasm_bindgen(method, getter)]
    pub fn done(this: &ReadResult) -> JsValue;
    /// The chunk.
    #[wasm_bindgen(method, getter)]
    pub fn value(this: &ReadResult) -> JsValue;

    /// An `AbortController`.
    #[derive(Clone)]
    pub type AbortController;
    /// `new AbortController()`.
    #[wasm_bindgen(constructor, catch)]
    pub fn new() -> Result<AbortController, JsValue>;
    /// Its signal.
    #[wasm_bindgen(method, getter)]
    pub fn signal(this: &AbortController) -> JsValue;
    /// Aborts the request and its body.
    #[wasm_bindgen(method, catch)]
    pub fn abort(this: &AbortController) -> Result<(), JsValue>;

    /// The WHATWG `URL` class.
    #[wasm_bindgen(js_name = URL)]
    pub type Url;
    /// `new URL(url, base)`.
    #[wasm_bindgen(constructor, catch, js_class = URL)]
    pub fn new(url: &str, base: &str) -> Result<Url, JsValue>;
    /// The serialized URL.
    #[wasm_bindgen(method, getter)]
    pub fn href(this: &Url) -> String;

    /// Anything with a `now()` method (`performance`).
    pub type Clock;
    /// Milliseconds on a monotonic clock.
    #[wasm_bindgen(method)]
    pub fn now(this: &Clock) -> f64;

    /// `console.error`.
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    pub fn console_error(message: &str, detail: &JsValue);
}

/// `globalThis[name]`, or undefined.
pub fn global_get(name: &str) -> JsValue {
    Reflect::get(&js_sys::global(), &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

/// True when `globalThis[name]` is neither undefined nor null.
pub fn global_has(name: &str) -> bool {
    let v = global_get(name);
    !v.is_undefined() && !v.is_null()
}

/// `obj[key] = value` on a fresh plain object (cannot fail).
pub fn set(obj: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

/// `obj[key]`, undefined when absent or when a getter throws.
pub fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// A readable text for a thrown value: `Error: message` for errors, `String(value)` otherwise.
pub fn error_text(err: &JsValue) -> String {
    if let Some(e) = err.dyn_ref::<js_sys::Error>() {
        let name = String::from(e.name());
        let message = String::from(e.message());
        let text = if message.is_empty() {
            name
        } else {
            format!("{name}: {message}")
        };
        // Node's fetch says only "fetch failed"; the reason (ECONNREFUSED…) is the cause.
        let cause = e.cause();
        return match cause.dyn_ref::<js_sys::Error>() {
            Some(c) => format!("{text} ({})", String::from(c.message())),
            None => text,
        };
    }
    if let Some(s) = err.as_string() {
        return s;
    }
    describe(err)
}

/// Describes a JavaScript value for an error message: strings quoted, numbers as JavaScript
/// prints them, other things by kind.
pub fn describe(v: &JsValue) -> String {
    if let Some(s) = v.as_string() {
        let short: String = s.chars().take(80).collect();
        let ellipsis = if short.len() < s.len() { "…" } else { "" };
        return format!("{short:?}{ellipsis}");
    }
    if v.as_f64().is_some() {
        return js_sys::Number::unchecked_from_js_ref(v)
            .to_string_with_radix(10)
            .map(String::from)
            .unwrap_or_default();
    }
    if let Some(b) = v.as_bool() {
        return b.to_string();
    }
    if v.is_undefined() {
        return "undefined".into();
    }
    if v.is_null() {
        return "null".into();
    }
    if v.is_function() {
        return "a function".into();
    }
    if v.is_bigint() {
        return "a bigint".into();
    }
    if v.is_symbol() {
        return "a symbol".into();
    }
    if js_sys::Array::is_array(v) {
        return "an array".into();
    }
    "an object".into()
}

/// The kind of a value, for "expected a number, not …" messages.
pub fn kind(v: &JsValue) -> &'static str {
    if v.is_string() {
        "a string"
    } else if v.as_f64().is_some() {
        "a number"
    } else if v.as_bool().is_some() {
        "a boolean"
    } else if v.is_function() {
        "a function"
    } else if v.is_bigint() {
        "a bigint"
    } else if v.is_symbol() {
        "a symbol"
    } else if js_sys::Array::is_array(v) {
        "an array"
    } else {
        "an object"
    }
}
