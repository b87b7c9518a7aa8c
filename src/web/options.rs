//! Reading the options object of `new LiveStream(options)`.
//!
//! Every own key is checked against the known names first (a typo must not be ignored), then
//! each known option is type-checked here and range-checked by [`Config::new`], so the
//! messages are the core's. A type error throws a `TypeError`, a bad value a `RangeError`.

use js_sys::{Function, Object};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::js;
use crate::core::config::{check_option_name, validate_token};
use crate::core::{Config, ConfigError, Options};

/// Where access tokens come from.
pub enum TokenSource {
    /// No token: no `Authorization` header (a same-origin relay adds it).
    None,
    /// A fixed token, validated, without `Bearer `.
    Fixed(String),
    /// A function called before each connect (and after a 401).
    Provider(Function),
}

/// The user's callbacks; each is optional.
#[derive(Clone, Default)]
pub struct Callbacks {
    /// `onHits(hits, info)`.
    pub on_hits: Option<Function>,
    /// `onBatch(batch, info)`.
    pub on_batch: Option<Function>,
    /// `onStatus(status)`.
    pub on_status: Option<Function>,
    /// `onError(error)`.
    pub on_error: Option<Function>,
}

/// Everything the constructor read.
pub struct Parsed {
    /// The validated core configuration.
    pub config: Config,
    /// The token source.
    pub token: TokenSource,
    /// The injected fetch, if any.
    pub fetch: Option<Function>,
    /// Callbacks.
    pub callbacks: Callbacks,
    /// Seed of the reconnect jitter, if fixed.
    pub seed: Option<u64>,
}

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

fn number(options: &JsValue, name: &str) -> Result<Option<f64>, OptionError> {
    match read(options, name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| type_error(name, &v, "a number")),
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

fn function(options: &JsValue, name: &str) -> Result<Option<Function>, OptionError> {
    match read(options, name) {
        None => Ok(None),
        Some(v) => v
            .dyn_into::<Function>()
            .map(Some)
            .map_err(|v| type_error(name, &v, "a function")),
    }
}

/// Makes a relative `url` absolute against `location.href` where there is a location (a
/// page or a worker); elsewhere it stays as given and the core refuses it.
fn resolve_url(url: String) -> String {
    if url.contains("://") {
        return url;
    }
    let href = js::get(&js::global_get("location"), "href");
    match href.as_string() {
        Some(base) => js::Url::new(&url, &base).map(|u| u.href()).unwrap_or(url),
        None => url,
    }
}

/// Reads and validates `options`.
pub fn parse(options: &JsValue) -> Result<Parsed, OptionError> {
    if !options.is_object() || options.is_function() {
        return Err(OptionError::Type(ConfigError::new(
            "options",
            js::describe(options),
            "an object such as { url, token, onHits }",
        )));
    }
    for key in Object::keys(options.unchecked_ref::<Object>()).iter() {
        let name = key.as_string().unwrap_or_default();
        check_option_name(&name).map_err(OptionError::Type)?;
    }

    let url = match read(options, "url") {
        None => None,
        Some(v) => Some(resolve_url(
            v.as_string()
                .ok_or_else(|| type_error("url", &v, "a string"))?,
        )),
    };
    let token = match read(options, "token") {
        None => TokenSource::None,
        Some(v) => {
            if let Some(s) = v.as_string() {
                TokenSource::Fixed(validate_token(&s).map_err(OptionError::Range)?)
            } else if let Some(f) = v.dyn_ref::<Function>() {
                TokenSource::Provider(f.clone())
            } else {
                return Err(type_error(
                    "token",
                    &v,
                    "a string or a function returning one (or a promise of one)",
                ));
            }
        }
    };
    let opts = Options {
        url,
        api_key: string(options, "apiKey")?,
        max_connections: number(options, "maxConnections")?,
        connections: number(options, "connections")?,
        smoothing: boolean(options, "smoothing")?,
        smoothing_bucket_size: number(options, "smoothingBucketSize")?,
        reset: string(options, "reset")?,
        reconnect_delay_ms: number(options, "reconnectDelayMs")?,
        reconnect_jitter_ms: number(options, "reconnectJitterMs")?,
        max_reconnect_delay_ms: number(options, "maxReconnectDelayMs")?,
        idle_timeout_ms: number(options, "idleTimeoutMs")?,
        max_record_bytes: number(options, "maxRecordBytes")?,
        dedup_window: number(options, "dedupWindow")?,
    };
    let fetch = function(options, "fetch")?;
    let callbacks = Callbacks {
        on_hits: function(options, "onHits")?,
        on_batch: function(options, "onBatch")?,
        on_status: function(options, "onStatus")?,
        on_error: function(options, "onError")?,
    };
    let seed = match number(options, "seed")? {
        None => None,
        Some(s)
            if s.is_finite()
                && s.fract() == 0.0
                && (0.0..=9_007_199_254_740_991.0).contains(&s) =>
        {
            Some(s as u64)
        }
        Some(s) => {
            return Err(OptionError::Range(ConfigError::new(
                "seed",
                js::describe(&JsValue::from_f64(s)),
                "an integer from 0 to 2^53-1 (fixes the reconnect jitter, for tests)",
            )))
        }
    };
    let config = Config::new(opts)?;
    if fetch.is_none() && !js::global_get("fetch").is_function() {
        return Err(OptionError::Type(ConfigError::new(
            "fetch",
            "missing",
            "a fetch function: this environment has no global fetch",
        )));
    }
    Ok(Parsed {
        config,
        token,
        fetch,
        callbacks,
        seed,
    })
}
