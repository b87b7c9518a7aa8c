//! A small static file server for the demo: `--www DIR` at `/`, `--mount /prefix=DIR`.
//!
//! Paths are percent-decoded and then split into segments; any `..` segment, backslash or
//! NUL is refused (403), so no request can name a file outside the served directories.
//! Symbolic links inside a served directory are followed (node_modules layouts use them).
//!
//! Every static answer carries strict security headers ([`security_headers`]): a
//! Content-Security-Policy that allows scripts only from this origin plus the exact inline
//! scripts of the served page (by their SHA-256, computed when the page is served, so
//! the demo's `<script type="importmap">` keeps working without `'unsafe-inline'`),
//! `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: no-referrer`.

use crate::body::{full, ResBody};
use crate::sha256::{base64, sha256};
use crate::util::{error_json, percent_decode};
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
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

/// The CSP `'sha256-…'` sources of the inline scripts (`<script>` without `src`) of an
/// HTML page, hashed over their exact text as browsers do.
pub fn inline_script_hashes(html: &[u8]) -> Vec<String> {
    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(p) = find(&lower[i..], b"<script") {
        let start = i + p;
        let Some(gt) = find(&lower[start..], b">") else {
            break;
        };
        let tag = &lower[start + 7..start + gt];
        let body = start + gt + 1;
        let Some(len) = find(&lower[body..], b"</script") else {
            break;
        };
        let has_src = tag
            .split(|b| b.is_ascii_whitespace())
            .any(|a| a == b"src" || a.starts_with(b"src="));
        let starts_tag = tag
            .first()
            .is_none_or(|b| b.is_ascii_whitespace() || *b == b'/');
        if starts_tag && !has_src {
            let hash = base64(&sha256(&html[body..body + len]));
            let source = format!("'sha256-{hash}'");
            if !out.contains(&source) {
                out.push(source);
            }
        }
        i = body + len + 8;
    }
    out
}

/// The Content-Security-Policy of static answers. Scripts: this origin, WebAssembly
/// compilation (`'wasm-unsafe-eval'`, which allows compiling wasm, not `eval` of JS) and
/// the given inline script hashes; no `'unsafe-inline'`. `connect-src` allows this origin
/// and any http(s) URL, because the demo connects to a stream URL the user types (another
/// emulator, a relay, the real service); scripts cannot be injected, so that does not
/// open a way out for injected code.
pub fn content_security_policy(script_hashes: &[String]) -> String {
    let mut script_src = String::from("'self' 'wasm-unsafe-eval'");
    for h in script_hashes {
        script_src.push(' ');
        script_src.push_str(h);
    }
    format!(
        "default-src 'self'; script-src {script_src}; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

/// Adds the security headers of static answers (see the module docs).
pub fn security_headers(h: &mut HeaderMap, script_hashes: &[String]) {
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(script_hashes)) {
        h.insert("content-security-policy", v);
    }
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

/// Serves `path` from the mounts (longest prefix first) or `www`; None when no root
/// matches (the caller answers 404). Every answer carries [`security_headers`].
pub async fn serve(
    www: Option<&Path>,
    mounts: &[(String, PathBuf)],
    method: &Method,
    path: &str,
) -> Option<Response<ResBody>> {
    let mut r = serve_inner(www, mounts, method, path).await?;
    if !r.headers().contains_key("content-security-policy") {
        security_headers(r.headers_mut(), &[]);
    }
    Some(r)
}

async fn serve_inner(
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
            let is_html = content_type(&file).starts_with("text/html");
            let hashes = if is_html {
                inline_script_hashes(&bytes)
            } else {
                Vec::new()
            };
            let body = if method == Method::HEAD {
                full("")
            } else {
                full(bytes)
            };
            let mut r = Response::new(body);
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&file)));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            security_headers(h, &hashes);
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
    fn inline_scripts_are_hashed_and_external_ones_are_not() {
        let html = br#"<html><head><script type="importmap">
    {"imports": {}}
  </script><script type="module" src="app.js"></script><SCRIPT>x()</SCRIPT><scripts></scripts></head>"#;
        let hashes = inline_script_hashes(html);
        let want = |s: &[u8]| format!("'sha256-{}'", base64(&sha256(s)));
        assert_eq!(
            hashes,
            vec![want(b"\n    {\"imports\": {}}\n  "), want(b"x()")]
        );
        let csp = content_security_policy(&hashes);
        assert!(csp.contains(&want(b"x()")));
        assert!(!csp.contains("unsafe-inline"));
        assert!(csp.contains("frame-ancestors 'none'"));
    }

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
