//! A small static file server for the demo: `--www DIR` at `/`, `--mount /prefix=DIR`.
//!
//! Paths are percent-decoded and then split into segments; any `..` segment, backslash or
//! NUL is refused (403), so no request can name a file outside the served directories.
//! Symbolic links inside a served directory are followed (node_modules layouts use them).

use crate::body::{full, ResBody};
use crate::util::{error_json, percent_decode};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use hyper::{Method, Response, StatusCode};
use std::path::{Path, PathBuf};

/// The content type for a file name.
pub fn content_type(path: &Path) -> &'static str {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if name.ends_with(".d.ts") || name.ends_with(".ts") {
        return "text/plain; charset=utf-8";
    }
    match name.rsplit_once('.').map(|(_, e)| e) {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json" | "map") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("ico") => "image/x-icon",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn json_response(status: StatusCode, error: &str, description: &str) -> Response<ResBody> {
    let mut r = Response::new(full(error_json(error, description)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Serves `path` from the mounts (longest prefix first) or `www`; None when no root
/// matches (the caller answers 404).
pub async fn serve(
    www: Option<&Path>,
    mounts: &[(String, PathBuf)],
    method: &Method,
    path: &str,
) -> Option<Response<ResBody>> {
    let mut roots: Vec<(&str, &Path)> = mounts
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_path()))
        .collect();
    roots.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    if let Some(w) = www {
        roots.push(("/", w));
    }
    for (prefix, dir) in roots {
        if path == prefix.trim_end_matches('/') && prefix != "/" {
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
            r.headers_mut()
                .insert(LOCATION, HeaderValue::from_str(prefix).ok()?);
            return Some(r);
        }
        if let Some(rest) = path.strip_prefix(prefix) {
            return Some(serve_from(dir, rest, path, method).await);
        }
    }
    None
}

async fn serve_from(
    root: &Path,
    rest: &str,
    full_path: &str,
    method: &Method,
) -> Response<ResBody> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "static files answer GET and HEAD only",
        );
        r.headers_mut()
            .insert("allow", HeaderValue::from_static("GET, HEAD, OPTIONS"));
        return r;
    }
    let Ok(decoded) = String::from_utf8(percent_decode(rest, false)) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "path is not UTF-8",
        );
    };
    let mut file = root.to_path_buf();
    for seg in decoded.split('/') {
        if seg == ".." || seg.contains(['\\', '\0']) || seg.contains(':') {
            return json_response(
                StatusCode::FORBIDDEN,
                "forbidden",
                "path escapes the served directory",
            );
        }
        if !seg.is_empty() && seg != "." {
            file.push(seg);
        }
    }
    if file.is_dir() {
        if !full_path.ends_with('/') {
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
            if let Ok(v) = HeaderValue::from_str(&format!("{full_path}/")) {
                r.headers_mut().insert(LOCATION, v);
            }
            return r;
        }
        file.push("index.html");
    }
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let len = bytes.len();
            let body = if method == Method::HEAD {
                full("")
            } else {
                full(bytes)
            };
            let mut r = Response::new(body);
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&file)));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if method == Method::HEAD {
                h.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(len));
            }
            r
        }
        Err(_) => json_response(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no file at {full_path}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        for (f, t) in [
            ("a.html", "text/html; charset=utf-8"),
            ("a.mjs", "text/javascript; charset=utf-8"),
            ("x_bg.wasm", "application/wasm"),
            ("a.d.ts", "text/plain; charset=utf-8"),
            ("a.js.map", "application/json"),
            ("A.PNG", "image/png"),
        ] {
            assert_eq!(content_type(Path::new(f)), t, "{f}");
        }
    }
}
