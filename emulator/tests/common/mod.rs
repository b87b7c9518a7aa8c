//! Test helpers: start the emulator in-process, and a small byte-exact HTTP/1.1 client
//! (raw TCP, our own chunked decoder, streaming gzip), so tests see exactly what a client
//! on the wire sees: chunk sizes, abrupt ends, the gzip stream as sent.

#![allow(dead_code)]

use clap::Parser;
use livestream_emulator::{start, Options, Server};
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Generous: the machine is small and shared.
pub const T: Duration = Duration::from_secs(20);

pub const AUTH: (&str, &str) = ("Authorization", "Bearer test-token");
pub const GZIP: (&str, &str) = ("Accept-Encoding", "gzip");
pub const STD: &[(&str, &str)] = &[AUTH, GZIP];

pub struct Emu {
    pub addr: SocketAddr,
    server: Option<Server>,
}

impl Emu {
    /// Starts an emulator on 127.0.0.1:0 with these extra flags (and --quiet).
    pub async fn start(args: &[&str]) -> Emu {
        Emu::start_with(args, |_| {}).await
    }

    /// Like [`Emu::start`], then `edit` adjusts the options (for the fields that are not
    /// flags, such as the IMS secret).
    pub async fn start_with(args: &[&str], edit: impl FnOnce(&mut Options)) -> Emu {
        let mut argv = vec!["livestream-emulator", "--listen", "127.0.0.1:0", "--quiet"];
        argv.extend_from_slice(args);
        let mut opts = Options::try_parse_from(argv).expect("valid test flags");
        edit(&mut opts);
        let server = start(opts).await.expect("emulator starts");
        Emu {
            addr: server.addr(),
            server: Some(server),
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// Sends a request and returns once the response head has arrived.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        send_raw(self.addr, method, path, "HTTP/1.1", headers, body).await
    }

    /// GET with the standard stream headers.
    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, STD, b"").await
    }

    /// An admin call returning (status, JSON body).
    pub async fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let headers: &[(&str, &str)] = if body.is_some() {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        let r = self
            .send(method, path, headers, body.unwrap_or("").as_bytes())
            .await;
        let status = r.status;
        let bytes = r.body().await.expect("admin body");
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("admin {path}: {e}: {}", String::from_utf8_lossy(&bytes)));
        (status, v)
    }

    pub async fn stats(&self) -> Value {
        self.admin("GET", "/admin/stats", None).await.1
    }

    /// Polls `/admin/stats` until `pred` holds (panics after the generous timeout).
    pub async fn wait_stats(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let s = self.stats().await;
            if pred(&s) {
                return s;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; stats: {s:#}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn send_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    version: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut tcp = tokio::time::timeout(T, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut req = format!("{method} {path} {version}\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write request");
    tcp.write_all(body).await.expect("write body");
    let mut reader = BufReader::new(tcp);
    let mut status_line = String::new();
    tokio::time::timeout(T, reader.read_line(&mut status_line))
        .await
        .expect("status line in time")
        .expect("read status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut hs = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').expect("header has a colon");
        hs.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let chunked = hs
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let len = hs
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok());
    let no_body = method == "HEAD" || status == 204 || status == 304;
    Resp {
        status,
        headers: hs,
        reader,
        chunked,
        remaining: if no_body { Some(0) } else { len },
        done: false,
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunked: bool,
    remaining: Option<usize>,
    done: bool,
}

/// How reading a body ended badly.
#[derive(Debug, PartialEq)]
pub enum BodyError {
    /// The connection closed in the middle of the body (no terminating chunk).
    Abrupt,
    /// Nothing arrived within the timeout.
    Timeout,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next chunk of the body as sent (chunked) or the next read (otherwise);
    /// Ok(None) at a clean end.
    pub async fn next_chunk(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, BodyError> {
        if self.done {
            return Ok(None);
        }
        match tokio::time::timeout(timeout, self.read_chunk()).await {
            Err(_) => Err(BodyError::Timeout),
            Ok(r) => {
                if !matches!(r, Ok(Some(_))) {
                    self.done = true;
                }
                r
            }
        }
    }

    async fn read_chunk(&mut self) -> Result<Option<Vec<u8>>, BodyError> {
        if self.chunked {
            let mut line = String::new();
            match self.reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return Err(BodyError::Abrupt),
                Ok(_) => {}
            }
            let size = usize::from_str_radix(line.trim_end(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                let mut trailer = String::new();
                let _ = self.reader.read_line(&mut trailer).await;
                return Ok(None);
            }
            let mut data = vec![0; size + 2];
            if self.reader.read_exact(&mut data).await.is_err() {
                return Err(BodyError::Abrupt);
            }
            assert_eq!(&data[size..], b"\r\n", "chunk not followed by CRLF");
            data.truncate(size);
            Ok(Some(data))
        } else if let Some(rem) = self.remaining {
            if rem == 0 {
                return Ok(None);
            }
            let mut data = vec![0; rem];
            if self.reader.read_exact(&mut data).await.is_err() {
                return Err(BodyError::Abrupt);
            }
            self.remaining = Some(0);
            Ok(Some(data))
        } else {
            let mut data = vec![0; 16384];
            match self.reader.read(&mut data).await {
                Ok(0) => Ok(None),
                Ok(n) => {
                    data.truncate(n);
                    Ok(Some(data))
                }
                Err(_) => Err(BodyError::Abrupt),
            }
        }
    }

    /// The whole body (must end within the timeout).
    pub async fn body(mut self) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        while let Some(c) = self.next_chunk(T).await? {
            out.extend(c);
        }
        Ok(out)
    }

    /// The body as a sequence of CRLF-separated gzip-decoded records.
    pub fn records(self) -> Records {
        Records {
            resp: self,
            dec: flate2::write::GzDecoder::new(Vec::new()),
            buf: Vec::new(),
            raw: Vec::new(),
            ended: None,
        }
    }
}

/// Reads records from a gzip, CRLF-separated stream as they arrive.
pub struct Records {
    pub resp: Resp,
    dec: flate2::write::GzDecoder<Vec<u8>>,
    buf: Vec<u8>,
    /// Every decoded byte so far.
    pub raw: Vec<u8>,
    /// How the body ended, once it has: Ok(()) clean, Err(e) otherwise.
    pub ended: Option<Result<(), BodyError>>,
}

impl Records {
    /// The next record (without CRLF; "" for an empty record), or None when the body
    /// ended (see `ended`).
    pub async fn next(&mut self, timeout: Duration) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).take(pos).collect();
                assert!(!line.contains(&b'\n'), "bare LF inside a record");
                return Some(String::from_utf8(line).expect("records are UTF-8"));
            }
            if self.ended.is_some() {
                return None;
            }
            match self.resp.next_chunk(timeout).await {
                Ok(Some(c)) => {
                    self.dec.write_all(&c).expect("valid gzip");
                    self.dec.flush().expect("gzip flush");
                    let out = std::mem::take(self.dec.get_mut());
                    self.raw.extend_from_slice(&out);
                    self.buf.extend(out);
                }
                Ok(None) => self.ended = Some(Ok(())),
                Err(e) => self.ended = Some(Err(e)),
            }
        }
    }

    /// The next non-empty record, panicking if none comes in time.
    pub async fn record(&mut self) -> String {
        loop {
            match self.next(T).await {
                Some(l) if l.is_empty() => continue,
                Some(l) => return l,
                None => panic!("stream ended: {:?}", self.ended),
            }
        }
    }

    /// Reads `n` non-empty records.
    pub async fn take(&mut self, n: usize) -> Vec<String> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.record().await);
        }
        v
    }

    /// Everything until the body ends; returns the records.
    pub async fn until_end(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(l) = self.next(T).await {
            v.push(l);
        }
        v
    }
}

/// The u64 after `"field":` in a raw JSON line, parsed from the digits themselves (never
/// through f64).
pub fn raw_u64(line: &str, field: &str) -> Option<u64> {
    let key = format!("\"{field}\":");
    let start = line.find(&key)? + key.len();
    let digits: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The (hitIdHigh, hitIdLow) key of a record.
pub fn hit_key(line: &str) -> (u64, u64) {
    (
        raw_u64(line, "hitIdHigh").expect("hitIdHigh"),
        raw_u64(line, "hitIdLow").expect("hitIdLow"),
    )
}

/// The error_description of a JSON error body.
pub async fn error_description(r: Resp) -> String {
    let b = r.body().await.expect("error body");
    let v: Value = serde_json::from_slice(&b).expect("JSON error body");
    assert!(v["error"].is_string(), "error field: {v}");
    v["error_description"]
        .as_str()
        .expect("error_description")
        .to_string()
}
