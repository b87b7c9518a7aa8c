//! Small helpers for JavaScript values: property access that never throws, and descriptions
//! of values for error messages (numbers printed by JavaScript itself, so the .wasm carries no
//! float formatting).

use js_sys::{Object, Reflect};
use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;

/// `obj[key] = value` on a fresh plain object (cannot fail).
pub fn set(obj: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

/// `obj[key]`, undefined when absent or when a getter throws.
pub fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
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
