//! The downstream HTTP/1.1 server: `GET /api/1/stream/{name}` in Live Stream's wire format,
//! `/healthz`, `/metrics`, `/status`, CORS, bearer auth and static files.

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, ACCEPT_ENCODING, AUTHORIZATION, HOST, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;

use crate::hub::{gzip_trailer, ClientWatch, Hub, Segment, GZIP_HEADER};
use crate::metrics::{RelayMetrics, StreamMetrics};

/// A response body: a whole buffer or a stream of chunks.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// What every request handler needs.
pub struct Downstream {
    /// Hubs by downstream stream name.
    pub hubs: HashMap<String, (Arc<Hub>, Arc<StreamMetrics>)>,
    /// Counters and upstream state.
    pub metrics: Arc<RelayMetrics>,
    /// LIVESTREAM_RELAY_TOKEN, when set.
    pub relay_token: Option<String>,
    /// `--allow-origin` values.
    pub allow_origins: Vec<String>,
    /// `--www` directory.
    pub www: Option<PathBuf>,
    /// `--mount` prefixes (ending in `/`) and directories.
    pub mounts: Vec<(String, PathBuf)>,
    /// `--naive-per-client-gzip` (benchmark baseline).
    pub naive: bool,
    /// gzip level, for the naive mode's per-client encoders.
    pub gzip_level: u32,
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_str(content_type).unwrap());
    r
}

/// A JSON error in Live Stream's own shape: `{"error", "error_description"}`.
fn error(status: StatusCode, code: &str, description: &str) -> Response<Body> {
    let body = json!({"error": code, "error_description": description}).to_string();
    full(status, "application/json", body)
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= u64::from(x ^ y);
    }
    diff == 0
}

/// True when `Accept-Encoding` accepts gzip (`gzip` or `*`, not with `q=0`).
pub fn accepts_gzip(value: Option<&HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    v.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q_zero = it.any(|p| {
            let p = p.trim().replace(' ', "");
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f64>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (coding == "gzip" || coding == "x-gzip" || coding == "*") && !q_zero
    })
}

enum Encoding {
    /// Everyone's shared deflate stream; `start`/`end`: the stream positions (running
    /// CRC-32, length) of this client's first and last byte, for its trailer.
    Shared {
        start: (u32, u64),
        end: (u32, u64),
        header_sent: bool,
    },
    /// No compression (the client did not accept gzip).
    Identity,
    /// The benchmark baseline: one gzip stream of its own per client.
    Naive(Box<GzEncoder<Vec<u8>>>),
}

/// One downstream client's feed: replay segments, then live ones.
struct Feed {
    replay: std::vec::IntoIter<Arc<Segment>>,
    live: tokio::sync::broadcast::Receiver<Arc<Segment>>,
    enc: Encoding,
    metrics: Arc<StreamMetrics>,
    watch: Arc<ClientWatch>,
    done: bool,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.metrics.clients_now.fetch_sub(1, Relaxed);
    }
}

impl Feed {
    fn frame(&mut self, seg: &Segment) -> Bytes {
        match &mut self.enc {
            Encoding::Shared {
                end, header_sent, ..
            } => {
                *end = seg.after;
                if *header_sent {
                    seg.deflate.clone()
                } else {
                    *header_sent = true;
                    let mut b = Vec::with_capacity(GZIP_HEADER.len() + seg.deflate.len());
                    b.extend_from_slice(&GZIP_HEADER);
                    b.extend_from_slice(&seg.deflate);
                    Bytes::from(b)
                }
            }
            Encoding::Identity => seg.raw.clone(),
            Encoding::Naive(enc) => {
                enc.write_all(&seg.raw)
                    .expect("writing to a Vec cannot fail");
                enc.flush().expect("writing to a Vec cannot fail");
                Bytes::from(std::mem::take(enc.get_mut()))
            }
        }
    }

    async fn next(&mut self) -> Option<Result<Frame<Bytes>, io::Error>> {
        if self.done {
            return None;
        }
        if let Some(seg) = self.replay.next() {
            return Some(Ok(Frame::data(self.frame(&seg))));
        }
        match self.live.recv().await {
            Ok(seg) => {
                self.watch.received.store(seg.seq, Relaxed);
                Some(Ok(Frame::data(self.frame(&seg))))
            }
            Err(RecvError::Lagged(n)) => {
                self.done = true;
                if self.watch.mark_cut() {
                    self.metrics.clients_cut.fetch_add(1, Relaxed);
                }
                Some(Err(io::Error::other(format!(
                    "downstream client fell {n} segments behind; cut"
                ))))
            }
            Err(RecvError::Closed) => {
                self.done = true;
                match std::mem::replace(&mut self.enc, Encoding::Identity) {
                    Encoding::Naive(enc) => {
                        let tail = enc.finish().expect("writing to a Vec cannot fail");
                        Some(Ok(Frame::data(Bytes::from(tail))))
                    }
                    Encoding::Shared {
                        start,
                        end,
                        header_sent,
                    } => {
                        let mut b = Vec::new();
                        if !header_sent {
                            b.extend_from_slice(&GZIP_HEADER);
                        }
                        b.extend_from_slice(&gzip_trailer(start, end));
                        Some(Ok(Frame::data(Bytes::from(b))))
                    }
                    Encoding::Identity => None,
                }
            }
        }
    }
}

impl Downstream {
    /// Answers one request; `cut` ends the request's connection (a client too far behind).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        cut: Arc<Notify>,
    ) -> Response<Body> {
        let path = req.uri().path().to_string();
        let mut resp = self.route(&req, &path, cut).await;
        let h = resp.headers_mut();
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        h.entry("cache-control")
            .or_insert(HeaderValue::from_static("no-store"));
        resp
    }

    /// Checks the Origin of a data request. Ok(Some(origin)) when CORS headers must be
    /// added; Ok(None) for same-origin and non-browser clients; Err(403) otherwise.
    fn check_origin(&self, req: &Request<Incoming>) -> Result<Option<String>, Box<Response<Body>>> {
        let Some(origin) = req.headers().get(ORIGIN).and_then(|o| o.to_str().ok()) else {
            return Ok(None);
        };
        if self.allow_origins.iter().any(|a| a == origin) {
            return Ok(Some(origin.to_string()));
        }
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
        if same {
            return Ok(None);
        }
        Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            &format!(
                "requests from origin {origin} are not allowed; start the relay with --allow-origin {origin}, or serve the page from the relay's own origin"
            ),
        )))
    }

    fn check_auth(&self, req: &Request<Incoming>) -> Result<(), Box<Response<Body>>> {
        let Some(want) = &self.relay_token else {
            return Ok(());
        };
        let got = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        match got {
            Some(t) if constant_time_eq(t.as_bytes(), want.as_bytes()) => Ok(()),
            _ => {
                let mut r = error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this relay needs Authorization: Bearer <the relay's LIVESTREAM_RELAY_TOKEN>",
                );
                r.headers_mut().insert(
                    "www-authenticate",
                    HeaderValue::from_static("Bearer realm=\"livestream-relay\""),
                );
                Err(Box::new(r))
            }
        }
    }

    async fn route(&self, req: &Request<Incoming>, path: &str, cut: Arc<Notify>) -> Response<Body> {
        let is_data = path.starts_with("/api/") || path == "/status" || path == "/metrics";
        if req.method() == Method::OPTIONS {
            return self.preflight(req, is_data);
        }
        if path == "/healthz" {
            let (ok, why) = self.metrics.health();
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return full(status, "text/plain; charset=utf-8", format!("{why}\n"));
        }
        if !is_data {
            return self.serve_static(req, path).await;
        }
        if req.method() != Method::GET {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{} is not allowed here; use GET", req.method()),
            );
            r.headers_mut()
                .insert("allow", HeaderValue::from_static("GET, OPTIONS"));
            return r;
        }
        let cors = match self.check_origin(req) {
            Ok(c) => c,
            Err(r) => return *r,
        };
        let mut resp = match self.check_auth(req) {
            Err(r) => *r,
            Ok(()) => match path {
                "/metrics" => full(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.prometheus(),
                ),
                "/status" => full(
                    StatusCode::OK,
                    "application/json",
                    self.metrics.status_json().to_string(),
                ),
                _ => self.stream(req, path, cut),
            },
        };
        if let Some(origin) = cors {
            let h = resp.headers_mut();
            h.insert(
                "access-control-allow-origin",
                HeaderValue::from_str(&origin).unwrap(),
            );
            h.insert("vary", HeaderValue::from_static("Origin"));
            h.insert(
                "access-control-expose-headers",
                HeaderValue::from_static("Retry-After, Content-Encoding"),
            );
        }
        resp
    }

    fn preflight(&self, req: &Request<Incoming>, is_data: bool) -> Response<Body> {
        let origin = req
            .headers()
            .get(ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("");
        if !is_data || !self.allow_origins.iter().any(|a| a == origin) {
            return error(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                &format!(
                    "cross-origin requests from {origin:?} to {} are not allowed; start the relay with --allow-origin ORIGIN",
                    req.uri().path()
                ),
            );
        }
        let mut r = full(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
        let h = r.headers_mut();
        h.insert(
            "access-control-allow-origin",
            HeaderValue::from_str(origin).unwrap(),
        );
        h.insert("vary", HeaderValue::from_static("Origin"));
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, OPTIONS"),
        );
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("authorization, x-api-key"),
        );
        h.insert("access-control-max-age", HeaderValue::from_static("600"));
        r
    }

    fn stream(&self, req: &Request<Incoming>, path: &str, cut: Arc<Notify>) -> Response<Body> {
        let name = path.strip_prefix("/api/1/stream/").unwrap_or("");
        let Some((hub, metrics)) = self.hubs.get(name) else {
            let mut names: Vec<&str> = self.hubs.keys().map(String::as_str).collect();
            names.sort();
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!(
                    "no stream at {path}; this relay serves /api/1/stream/{{{}}}",
                    names.join(",")
                ),
            );
        };
        let Some(join) = hub.join() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the relay is shutting down",
            );
        };
        metrics.clients_now.fetch_add(1, Relaxed);
        metrics.clients_total.fetch_add(1, Relaxed);
        metrics
            .replayed_records
            .fetch_add(join.replayed as u64, Relaxed);
        let gzip = accepts_gzip(req.headers().get(ACCEPT_ENCODING));
        let enc = match (gzip, self.naive) {
            (false, _) => Encoding::Identity,
            (true, false) => Encoding::Shared {
                start: join.start,
                end: join.start,
                header_sent: false,
            },
            (true, true) => Encoding::Naive(Box::new(GzEncoder::new(
                Vec::new(),
                Compression::new(self.gzip_level),
            ))),
        };
        let watch = hub.watch(&join, cut);
        let feed = Feed {
            replay: join.replay.into_iter(),
            live: join.live,
            enc,
            metrics: metrics.clone(),
            watch,
            done: false,
        };
        let stream = futures_util::stream::unfold(feed, |mut feed| async move {
            let item = feed.next().await?;
            Some((item, feed))
        });
        let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())));
        let h = r.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        if gzip {
            h.insert("content-encoding", HeaderValue::from_static("gzip"));
        }
        h.insert("vary", HeaderValue::from_static("Accept-Encoding"));
        r
    }

    async fn serve_static(&self, req: &Request<Incoming>, path: &str) -> Response<Body> {
        let not_found = || error(StatusCode::NOT_FOUND, "not_found", "no such file");
        let (prefix, dir) = match self
            .mounts
            .iter()
            .filter(|(p, _)| path.starts_with(p.as_str()) || path == p.trim_end_matches('/'))
            .max_by_key(|(p, _)| p.len())
        {
            Some((p, d)) => (p.as_str(), d),
            None => match &self.www {
                Some(d) => ("/", d),
                None => return not_found(),
            },
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "static files are GET or HEAD",
            );
            r.headers_mut()
                .insert("allow", HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if path == prefix.trim_end_matches('/') {
            let mut r = full(StatusCode::MOVED_PERMANENTLY, "text/plain", Bytes::new());
            r.headers_mut()
                .insert("location", HeaderValue::from_str(prefix).unwrap());
            return r;
        }
        let Some(rel) = decode_path(&path[prefix.len()..]) else {
            return error(StatusCode::FORBIDDEN, "forbidden", "path not allowed");
        };
        let mut file = dir.join(&rel);
        if rel.as_os_str().is_empty() || path.ends_with('/') {
            file = file.join("index.html");
        } else if tokio::fs::metadata(&file)
            .await
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            let mut r = full(StatusCode::MOVED_PERMANENTLY, "text/plain", Bytes::new());
            r.headers_mut().insert(
                "location",
                HeaderValue::from_str(&format!("{path}/")).unwrap(),
            );
            return r;
        }
        let Ok(bytes) = tokio::fs::read(&file).await else {
            return not_found();
        };
        let ctype = content_type(&file);
        let csp = (ctype.starts_with("text/html")).then(|| csp_for(&bytes));
        let body = if req.method() == Method::HEAD {
            Bytes::new()
        } else {
            Bytes::from(bytes)
        };
        let mut r = full(StatusCode::OK, ctype, body);
        let h = r.headers_mut();
        h.insert("cache-control", HeaderValue::from_static("no-cache"));
        if let Some(csp) = csp {
            h.insert(
                "content-security-policy",
                HeaderValue::from_str(&csp).unwrap(),
            );
        }
        r
    }
}

/// Percent-decodes a URL path and refuses anything that could leave the served directory.
fn decode_path(p: &str) -> Option<PathBuf> {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    if s.contains(['\\', ':', '\0']) {
        return None;
    }
    let path = PathBuf::from(s.trim_start_matches('/'));
    path.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then_some(path)
}

fn content_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" | "map" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "ts" | "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                o.push(A[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

/// A strict Content-Security-Policy for one HTML page: scripts from the same origin only,
/// plus the exact inline scripts the page contains (its import map), by hash.
fn csp_for(html: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let text = String::from_utf8_lossy(html);
    let mut hashes = String::new();
    let mut rest = &text[..];
    while let Some(open) = rest.find("<script") {
        let after = &rest[open..];
        let Some(tag_end) = after.find('>') else {
            break;
        };
        let tag = &after[..tag_end];
        let body_start = &after[tag_end + 1..];
        let Some(close) = body_start.find("</script>") else {
            break;
        };
        if !tag.contains(" src=") {
            let digest = Sha256::digest(&body_start.as_bytes()[..close]);
            hashes.push_str(&format!(" 'sha256-{}'", base64(&digest)));
        }
        rest = &body_start[close..];
    }
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'{hashes}; style-src 'self'; img-src 'self' data:; connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_acceptance() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(accepts_gzip(Some(&h("gzip, deflate, br"))));
        assert!(accepts_gzip(Some(&h("*"))));
        assert!(!accepts_gzip(Some(&h("gzip;q=0, br"))));
        assert!(!accepts_gzip(Some(&h("identity"))));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn paths_cannot_escape() {
        assert_eq!(decode_path("a/b.js"), Some(PathBuf::from("a/b.js")));
        assert_eq!(decode_path("%2e%2e/x"), None);
        assert_eq!(decode_path("a/../x"), None);
        assert_eq!(decode_path("a%5cb"), None);
        assert_eq!(decode_path("%zz"), None);
    }

    #[test]
    fn csp_hashes_inline_scripts_only() {
        let csp = csp_for(
            b"<script type=\"importmap\">{}</script><script type=\"module\" src=\"a.js\"></script>",
        );
        // sha256("{}") in base64
        assert!(
            csp.contains("'sha256-RBNvo1WzZ4oRRq0W9+hknpT7T8If536DEMBg9hyq/4o='"),
            "{csp}"
        );
        assert_eq!(csp.matches("sha256-").count(), 1);
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
