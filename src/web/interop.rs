//! Every conversion between JavaScript values and the core's types, in one place: the options
//! object in; outputs, statuses, errors and stats out as plain objects.
//!
//! Optional fields (`httpStatus`, `retryInMs`, `connection`, `nextAttemptInMs`) are left out
//! when absent, never set to `undefined` or `null`.

use js_sys::{Array, Object};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::js::{self, set};
use crate::core::config::{check_option_name, option_spec, validate_token, Kind, OPTIONS};
use crate::core::policy::resolve_location;
use crate::core::{
    ConfigError, Duration, ErrorEvent, Event, Instant, Options, Output, SlotState, Stats,
    StatusEvent, TokenSource,
};

/// A constructor error: which JavaScript error class to throw, and the core's message.
pub enum OptionError {
    /// A value of the wrong type, an unknown or missing option.
    Type(ConfigError),
    /// A value of the right type outside what is allowed.
    Range(ConfigError),
}

impl OptionError {
    /// The JavaScript error to throw.
    pub fn into_js(self) -> JsValue {
        match self {
            OptionError::Type(e) => js_sys::TypeError::new(&e.to_string()).into(),
            OptionError::Range(e) => js_sys::RangeError::new(&e.to_string()).into(),
        }
    }
}

impl From<ConfigError> for OptionError {
    fn from(e: ConfigError) -> Self {
        if e.value == "missing" {
            OptionError::Type(e)
        } else {
            OptionError::Range(e)
        }
    }
}

fn type_error(option: &str, value: &JsValue, expected: &str) -> OptionError {
    OptionError::Type(ConfigError::new(
        option,
        js::describe(value),
        format!("{expected}, not {}", js::kind(value)),
    ))
}

/// `options[name]`, or None when absent, undefined or null.
fn read(options: &JsValue, name: &str) -> Option<JsValue> {
    let v = js::get(options, name);
    (!v.is_undefined() && !v.is_null()).then_some(v)
}

fn string(options: &JsValue, name: &str) -> Result<Option<String>, OptionError> {
    match read(options, name) {
        None => Ok(None),
        Some(v) => v
            .as_string()
            .map(Some)
            .ok_or_else(|| type_error(name, &v, "a string")),
    }
}

fn boolean(options: &JsValue, name: &str) -> Result<Option<bool>, OptionError> {
    match read(options, name) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| type_error(name, &v, "true or false")),
    }
}

/// A whole number of `name`'s kind: a JavaScript number that is a non-negative integer (the
/// range itself is checked by the core, with the same words).
fn integer(options: &JsValue, name: &str) -> Result<Option<u64>, OptionError> {
    let Some(v) = read(options, name) else {
        return Ok(None);
    };
    let expected = option_spec(name).map(|s| s.expected()).unwrap_or_default();
    let Some(n) = v.as_f64() else {
        return Err(type_error(name, &v, &expected));
    };
    if !(n.is_finite() && n.fract() == 0.0 && (0.0..=9_007_199_254_740_991.0).contains(&n)) {
        return Err(OptionError::Range(ConfigError::new(
            name,
            js::describe(&v),
            expected,
        )));
    }
    Ok(Some(n as u64))
}

fn millis(options: &JsValue, name: &str) -> Result<Option<Duration>, OptionError> {
    Ok(integer(options, name)?.map(Duration::from_millis))
}

fn origins(options: &JsValue, name: &str) -> Result<Vec<String>, OptionError> {
    let Some(v) = read(options, name) else {
        return Ok(Vec::new());
    };
    let expected = option_spec(name).map(|s| s.expected()).unwrap_or_default();
    let Some(list) = v.dyn_ref::<Array>() else {
        return Err(type_error(name, &v, &expected));
    };
    list.iter()
        .map(|item| {
            item.as_string()
                .ok_or_else(|| type_error(name, &item, &expected))
        })
        .collect()
}

/// Reads the core's options from the user's options object. `host_options` are the names the
/// JavaScript host handles itself (callbacks, `fetch`, `signal`, …): together with the core's
/// they are every name accepted, so a typo is refused with a suggestion. A relative `url` is
/// resolved against `base_url` (the page's location) by the core's one URL resolver.
pub fn parse_options(
    options: &JsValue,
    host_options: &[String],
    base_url: Option<&str>,
) -> Result<Options, OptionError> {
    if !options.is_object() || options.is_function() {
        return Err(OptionError::Type(ConfigError::new(
            "options",
            js::describe(options),
            "an object such as { url, token, onHits }",
        )));
    }
    let mut known: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
    known.extend(host_options.iter().map(String::as_str));
    for key in Object::keys(options.unchecked_ref::<Object>()).iter() {
        let name = key.as_string().unwrap_or_default();
        check_option_name(&name, &known).map_err(OptionError::Type)?;
    }
    let url = match read(options, "url") {
        None => None,
        Some(v) => {
            let raw = v
                .as_string()
                .ok_or_else(|| type_error("url", &v, "a string"))?;
            let relative = !raw.trim_start().to_ascii_lowercase().starts_with("http");
            Some(match base_url {
                Some(base) if relative => resolve_location(base, raw.trim()).unwrap_or(raw),
                _ => raw,
            })
        }
    };
    let token = match read(options, "token") {
        None => TokenSource::None,
        Some(v) => {
            if let Some(s) = v.as_string() {
                validate_token(&s).map_err(OptionError::Range)?;
                TokenSource::Fixed
            } else if v.is_function() {
                TokenSource::Refreshable
            } else {
                return Err(type_error(
                    "token",
                    &v,
                    "a string or a function returning one (or a promise of one)",
                ));
            }
        }
    };
    let mut o = Options {
        url,
        token,
        api_key: string(options, "apiKey")?,
        smoothing: boolean(options, "smoothing")?,
        reset: string(options, "reset")?,
        redirect_origins: origins(options, "redirectOrigins")?,
        ..Options::default()
    };
    for spec in OPTIONS {
        if let Kind::Integer { .. } = spec.kind {
            let name = spec.name;
            match name {
                "maxConnections" => o.max_connections = integer(options, name)?,
                "connections" => o.connections = integer(options, name)?,
                "smoothingBucketSize" => o.smoothing_bucket_size = integer(options, name)?,
                "reconnectDelayMs" => o.reconnect_delay = millis(options, name)?,
                "reconnectJitterMs" => o.reconnect_jitter = millis(options, name)?,
                "maxReconnectDelayMs" => o.max_reconnect_delay = millis(options, name)?,
                "idleTimeoutMs" => o.idle_timeout = millis(options, name)?,
                "maxRecordBytes" => o.max_record_bytes = integer(options, name)?,
                "dedupWindow" => o.dedup_window = integer(options, name)?,
                // A new integer option must be read here: the web test of the options
                // schema fails until it is.
                _ => {
                    return Err(OptionError::Type(ConfigError::new(
                        name,
                        "given",
                        "an option this build cannot read yet",
                    )))
                }
            }
        }
    }
    Ok(o)
}

/// The option schema as plain objects (see `optionSchema` in src/web/mod.rs).
pub fn option_schema() -> Array {
    OPTIONS
        .iter()
        .map(|spec| {
            let o = Object::new();
            set(&o, "name", &JsValue::from_str(spec.name));
            let kind = match spec.kind {
                Kind::Url => "url",
                Kind::Text => "string",
                Kind::Bool => "boolean",
                Kind::Choice(values) => {
                    let list: Array = values.iter().map(|v| JsValue::from_str(v)).collect();
                    set(&o, "values", &list);
                    "choice"
                }
                Kind::Integer { min, max, .. } => {
                    set(&o, "min", &num(min as f64));
                    set(&o, "max", &num(max as f64));
                    "integer"
                }
                Kind::Origins => "origins",
                Kind::Token => "token",
            };
            set(&o, "kind", &JsValue::from_str(kind));
            set(&o, "default", &JsValue::from_str(spec.default));
            set(&o, "allowed", &JsValue::from_str(&spec.expected()));
            set(&o, "meaning", &JsValue::from_str(spec.meaning));
            JsValue::from(o)
        })
        .collect()
}

fn num(v: impl Into<f64>) -> JsValue {
    JsValue::from_f64(v.into())
}

fn ms(d: Duration) -> JsValue {
    num(crate::core::time::millis(d) as f64)
}

fn object(kind: &str) -> Object {
    let o = Object::new();
    set(&o, "type", &JsValue::from_str(kind));
    o
}

/// One output as `{type, …}` for the host (js/live-stream.js): `connect {attempt, connection,
/// url, refresh}`, `read {attempt}`, `readError {attempt, limit}`, `abort {attempt}`,
/// `status {status}`, `error {error}`, `wait {at}` (`at` null: no timer).
pub fn output(out: &Output) -> JsValue {
    let o = match out {
        Output::Connect(req) => {
            let o = object("connect");
            set(&o, "attempt", &num(req.attempt.get() as f64));
            set(&o, "connection", &num(req.slot.index() as u32));
            set(&o, "url", &JsValue::from_str(&req.url));
            set(&o, "refresh", &JsValue::from_bool(req.refresh_token));
            o
        }
        Output::ReadBody { attempt, .. } => {
            let o = object("read");
            set(&o, "attempt", &num(attempt.get() as f64));
            o
        }
        Output::ReadErrorBody { attempt, limit, .. } => {
            let o = object("readError");
            set(&o, "attempt", &num(attempt.get() as f64));
            set(&o, "limit", &num(*limit as u32));
            o
        }
        Output::Abort { attempt, .. } => {
            let o = object("abort");
            set(&o, "attempt", &num(attempt.get() as f64));
            o
        }
        Output::Event(Event::Status(s)) => {
            let o = object("status");
            set(&o, "status", &status(s));
            o
        }
        Output::Event(Event::Error(e)) => {
            let o = object("error");
            set(&o, "error", &error(e));
            o
        }
        Output::Wait(at) => {
            let o = object("wait");
            let at = at.map_or(JsValue::NULL, |t| num(t.as_millis() as f64));
            set(&o, "at", &at);
            o
        }
    };
    o.into()
}

/// `{ connection, state, httpStatus?, retryInMs?, reason, cause }`.
pub fn status(e: &StatusEvent) -> JsValue {
    let o = Object::new();
    set(&o, "connection", &num(e.slot.index() as u32));
    set(&o, "state", &JsValue::from_str(e.state.as_str()));
    if let Some(s) = e.http_status {
        set(&o, "httpStatus", &num(s));
    }
    if let Some(d) = e.retry_in {
        set(&o, "retryInMs", &ms(d));
    }
    set(&o, "reason", &JsValue::from_str(&e.reason));
    set(&o, "cause", &JsValue::from_str(&e.cause));
    o.into()
}

/// `{ code, message, connection?, httpStatus?, fatal }`.
pub fn error(e: &ErrorEvent) -> JsValue {
    let o = Object::new();
    set(&o, "code", &JsValue::from_str(e.code.as_str()));
    set(&o, "message", &JsValue::from_str(&e.message));
    if let Some(s) = e.slot {
        set(&o, "connection", &num(s.index() as u32));
    }
    if let Some(s) = e.http_status {
        set(&o, "httpStatus", &num(s));
    }
    set(&o, "fatal", &JsValue::from_bool(e.fatal));
    o.into()
}

/// The `stats` object. `now` is the host's monotonic time and `wall_now` the Unix time in ms
/// at the same moment, to turn the core's instants into Unix timestamps.
pub fn stats(s: &Stats, now: Instant, wall_now: f64) -> JsValue {
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
    for slot in &s.slots {
        let so = Object::new();
        set(&so, "connection", &num(slot.slot.index() as u32));
        set(&so, "state", &JsValue::from_str(slot.state.as_str()));
        let since = wall_now - (now - slot.since).as_millis() as f64;
        set(&so, "since", &num(since.round()));
        if let Some(st) = slot.http_status {
            set(&so, "httpStatus", &num(st));
        }
        if slot.state == SlotState::Waiting {
            if let Some(at) = slot.next_attempt_at {
                set(&so, "nextAttemptInMs", &ms(at - now));
            }
        }
        set(&so, "reason", &JsValue::from_str(&slot.reason));
        set(&so, "cause", &JsValue::from_str(&slot.cause));
        set(&so, "hits", &num(slot.hits as f64));
        set(&so, "bytes", &num(slot.bytes as f64));
        set(&so, "connects", &num(slot.connects as f64));
        slots.push(&so);
    }
    set(&o, "slots", &slots);
    o.into()
}

/// Headers as `[[name, value], …]`, ready for `fetch`.
pub fn headers(list: &[(&'static str, String)]) -> Array {
    list.iter()
        .map(|(k, v)| {
            let pair = Array::new();
            pair.push(&JsValue::from_str(k));
            pair.push(&JsValue::from_str(v));
            JsValue::from(pair)
        })
        .collect()
}
