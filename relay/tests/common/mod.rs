//! Test helpers: the emulator and the relay in-process on 127.0.0.1:0, and a small raw
//! HTTP/1.1 client (our own chunked decoder, streaming multi-member gzip), so tests see what
//! a Live Stream client on the wire sees.

#![allow(dead_code)]

use clap::Parser;
use livestream_relay::{Cli, Relay, Secrets};
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Generous: the machine is small and shared.
pub const T: Duration = Duration::from_secs(20);

/// The emulator, in-process.
pub struct Emu {
    pub addr: SocketAddr,
    server: Option<livestream_emulator::Server>,
}

impl Emu {
    /// Starts an emulator with these flags (plus --quiet); `ims` = (client id, secret).
    pub async fn start(args: &[&str], ims: Option<(&str, &str)>) -> Emu {
        let mut argv = vec!["livestream-emulator", "--listen", "127.0.0.1:0", "--quiet"];
        argv.extend_from_slice(args);
        if let Some((id, _)) = ims {
            argv.extend_from_slice(&["--ims-client-id", id]);
        }
        let mut opts = livestream_emulator::Options::try_parse_from(argv).expect("emulator flags");
        if let Some((_, secret)) = ims {
            opts.ims_client_secret = Some(secret.to_string());
        }
        let server = livestream_emulator::start(opts)
            .await
            .expect("emulator starts");
        Emu {
            addr: server.addr(),
            server: Some(server),
        }
    }

    /// The stream URL of endpoint `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/api/1/stream/{name}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    pub async fn admin(&self, method: &str, path: &str, body: &str) -> Value {
        let h: &[(&str, &str)] = &[("Content-Type", "application/json")];
        let r = send(self.addr, method, path, h, body.as_bytes()).await;
        let b = r.body().await.expect("admin body");
        serde_json::from_slice(&b).expect("admin JSON")
    }

    pub async fn stats(&self) -> Value {
        self.admin("GET", "/admin/stats", "").await
    }

    /// Polls `/admin/stats` until `pred` holds.
    pub async fn wait_stats(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let s = self.stats().await;
            if pred(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; emulator stats: {s:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The relay, in-process.
pub struct RelayUnderTest {
    pub addr: SocketAddr,
    relay: Option<Relay>,
}

impl RelayUnderTest {
    /// Starts a relay with these flags (plus --listen 127.0.0.1:0 --quiet).
    pub async fn start(args: &[&str], secrets: Secrets) -> RelayUnderTest {
        Self::try_start(args, secrets).await.expect("relay starts")
    }

    pub async fn try_start(args: &[&str], secrets: Secrets) -> Result<RelayUnderTest, String> {
        let mut argv = vec!["livestream-relay", "--quiet"];
        if !args.contains(&"--listen") {
            argv.extend_from_slice(&["--listen", "127.0.0.1:0"]);
        }
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let relay = livestream_relay::start(cli, secrets).await?;
        Ok(RelayUnderTest {
            addr: relay.addr(),
            relay: Some(relay),
        })
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.relay.take() {
            r.shutdown().await;
        }
    }

    /// A GET with these headers.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        send(self.addr, "GET", path, headers, b"").await
    }

    /// The body of a GET as text, with its status.
    pub async fn text(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let r = self.get(path, headers).await;
        let s = r.status;
        (
            s,
            String::from_utf8(r.body().await.expect("body")).expect("UTF-8"),
        )
    }

    /// The value of a Prometheus sample (`name{labels}` exactly as rendered).
    pub async fn metric(&self, sample: &str) -> f64 {
        let (_, m) = self.text("/metrics", &[]).await;
        m.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample} in\n{m}"))
    }

    /// Polls a metric until `pred` holds.
    pub async fn wait_metric(&self, sample: &str, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let v = self.metric(sample).await;
            if pred(v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {sample}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens a stream as a Live Stream client would (gzip unless `gzip` is false).
    pub async fn stream(&self, name: &str, gzip: bool) -> Records {
        let h: &[(&str, &str)] = if gzip {
            &[("Accept-Encoding", "gzip")]
        } else {
            &[]
        };
        let r = self
            .get(
                &format!("/api/1/stream/{name}?maxConnections=3&reset=smallest"),
                h,
            )
            .await;
        assert_eq!(r.status, 200, "stream status");
        r.records()
    }
}

/// Sends a request and returns once the response head has arrived.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let tcp = tokio::time::timeout(T, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    send_on(tcp, addr, method, path, headers, body).await
}

/// Like [`send`], on a socket the caller prepared (e.g. with a small receive buffer).
pub async fn send_on(
    mut tcp: TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
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
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').expect("header has a colon");
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let remaining = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok());
    let remaining = if status == 204 { Some(0) } else { remaining };
    Resp {
        status,
        headers,
        reader,
        chunked,
        remaining,
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

/// How a body ended badly.
#[derive(Debug, PartialEq)]
pub enum BodyError {
    /// The connection closed without the terminating chunk.
    Abrupt,
    /// Nothing arrived in time.
    Timeout,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next chunk as sent; Ok(None) at a clean end.
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
        } else {
            let rem = self.remaining.unwrap_or(usize::MAX);
            if rem == 0 {
                return Ok(None);
            }
            let mut data = vec![0; rem.min(65536)];
            match self.reader.read(&mut data).await {
                Ok(0) if self.remaining.is_none() => Ok(None),
                Ok(0) | Err(_) => Err(BodyError::Abrupt),
                Ok(n) => {
                    data.truncate(n);
                    self.remaining = self.remaining.map(|r| r - n);
                    Ok(Some(data))
                }
            }
        }
    }

    /// The whole body.
    pub async fn body(mut self) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        while let Some(c) = self.next_chunk(T).await? {
            out.extend(c);
        }
        Ok(out)
    }

    /// The body as CRLF-separated records (gzip decoded when the response says so).
    pub fn records(self) -> Records {
        let gzip = self.header("content-encoding") == Some("gzip");
        Records {
            resp: self,
            dec: gzip.then(|| flate2::write::MultiGzDecoder::new(Vec::new())),
            buf: Vec::new(),
            ended: None,
        }
    }
}

/// Records of a stream, as they arrive.
pub struct Records {
    pub resp: Resp,
    dec: Option<flate2::write::MultiGzDecoder<Vec<u8>>>,
    buf: Vec<u8>,
    /// How the body ended, once it has.
    pub ended: Option<Result<(), BodyError>>,
}

impl Records {
    /// The next record (without CRLF), or None when the body ended (see `ended`) or
    /// nothing came within `timeout`.
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
                Ok(Some(c)) => match &mut self.dec {
                    Some(dec) => {
                        dec.write_all(&c).expect("valid gzip");
                        dec.flush().expect("gzip flush");
                        self.buf.append(dec.get_mut());
                    }
                    None => self.buf.extend(c),
                },
                Ok(None) => {
                    if let Some(dec) = self.dec.take() {
                        let rest = dec.finish().expect("gzip stream complete at the end");
                        self.buf.extend(rest);
                        self.dec = None;
                    }
                    self.ended = Some(Ok(()));
                }
                Err(BodyError::Timeout) => return None,
                Err(e) => self.ended = Some(Err(e)),
            }
        }
    }

    /// The next record, panicking if none comes in time.
    pub async fn record(&mut self) -> String {
        match self.next(T).await {
            Some(l) => l,
            None => panic!("stream ended or stalled: {:?}", self.ended),
        }
    }

    /// Reads `n` records.
    pub async fn take(&mut self, n: usize) -> Vec<String> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.record().await);
        }
        v
    }
}

/// The u64 after `"field":` in a raw JSON line, parsed from the digits (never via f64);
/// None when the value is not bare digits (e.g. a quoted id).
pub fn raw_u64(line: &str, field: &str) -> Option<u64> {
    let key = format!("\"{field}\":");
    let start = line.find(&key)? + key.len();
    let digits: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The (hitIdHigh, hitIdLow) key of a record; panics unless both are bare numbers.
pub fn hit_key(line: &str) -> (u64, u64) {
    (
        raw_u64(line, "hitIdHigh").unwrap_or_else(|| panic!("bare hitIdHigh in {line}")),
        raw_u64(line, "hitIdLow").unwrap_or_else(|| panic!("bare hitIdLow in {line}")),
    )
}

/// Secrets with a fixed upstream token.
pub fn fixed_token() -> Secrets {
    Secrets {
        token: Some("test-token".into()),
        ..Default::default()
    }
}

/// Asserts that `part` occurs in `whole` as one contiguous run; returns where.
pub fn contiguous_in(part: &[(u64, u64)], whole: &[(u64, u64)]) -> usize {
    assert!(!part.is_empty(), "empty part");
    let at = whole
        .iter()
        .position(|k| *k == part[0])
        .unwrap_or_else(|| panic!("first record {:?} not in the reference", part[0]));
    let n = part.len().min(whole.len() - at);
    assert_eq!(
        &part[..n],
        &whole[at..at + n],
        "not the same run of records"
    );
    at
}
