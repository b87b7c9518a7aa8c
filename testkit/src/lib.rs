//! Test support shared by the integration tests of `livestream-emulator` and
//! `livestream-relay` (one copy instead of one per suite):
//!
//! - [`Emu`]: the emulator in-process on 127.0.0.1:0, through its library, with its admin
//!   API at hand;
//! - [`Request`], [`send`] and [`Resp`]: a small byte-exact HTTP/1.1 client on raw TCP with
//!   its own chunked decoder, so tests see what a client on the wire sees (chunk sizes,
//!   abrupt ends, the gzip stream as sent);
//! - [`Records`]: the records of a stream as they arrive (gzip decoded as it streams);
//! - [`raw_u64`] and [`hit_key`]: exact ids read from the record's text, never through f64.
//!
//! What only one suite needs (the relay under test, error bodies, …) stays in that suite's
//! `tests/common/mod.rs`, which re-exports this crate.

use clap::Parser;
use livestream_emulator::{Options, Server};
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The timeout of every wait that is not about timing itself. Generous: the machine is
/// small and shared.
pub const T: Duration = Duration::from_secs(20);

/// A bearer token header, as a Live Stream client sends (the emulator without IMS takes any
/// token; the relay's tests configure this one as its fixed upstream token).
pub const AUTH: (&str, &str) = ("Authorization", "Bearer test-token");
/// The Accept-Encoding header a Live Stream client must send (without it: 406).
pub const GZIP: (&str, &str) = ("Accept-Encoding", "gzip");
/// The headers of a well-formed stream request: [`AUTH`] and [`GZIP`].
pub const STD: &[(&str, &str)] = &[AUTH, GZIP];

/// The emulator, in-process on 127.0.0.1:0 (`--quiet`). Both suites start it through its
/// library, so a test can set options that are not flags and needs no binary.
pub struct Emu {
    /// Where it listens.
    pub addr: SocketAddr,
    server: Option<Server>,
}

impl Emu {
    /// Starts an emulator with these extra flags.
    pub async fn start(args: &[&str]) -> Emu {
        Emu::start_with(args, |_| {}).await
    }

    /// Like [`Emu::start`], then `edit` adjusts the options (for the fields that are not
    /// flags, such as the IMS client secret or the admin token).
    pub async fn start_with(args: &[&str], edit: impl FnOnce(&mut Options)) -> Emu {
        let mut argv = vec!["livestream-emulator", "--listen", "127.0.0.1:0", "--quiet"];
        argv.extend_from_slice(args);
        let mut opts = Options::try_parse_from(argv).expect("valid emulator flags");
        edit(&mut opts);
        let server = livestream_emulator::start(opts)
            .await
            .expect("emulator starts");
        Emu {
            addr: server.addr(),
            server: Some(server),
        }
    }

    /// The stream URL of endpoint `name` (what a client under test is pointed at).
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/api/1/stream/{name}", self.addr)
    }

    /// Shuts the emulator down and waits until it has.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// Sends a request to the emulator (see [`send`]).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        send(self.addr, method, path, headers, body).await
    }

    /// A GET with the standard stream headers ([`STD`]).
    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, STD, b"").await
    }

    /// An admin call returning (status, JSON body); a body is sent as application/json.
    /// Panics when the answer is not JSON.
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

    /// The emulator's `/admin/stats`.
    pub async fn stats(&self) -> Value {
        self.admin("GET", "/admin/stats", None).await.1
    }

    /// Polls `/admin/stats` until `pred` holds and returns those stats; panics after [`T`]
    /// with `what` and the last stats.
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

/// One request as written on the wire: the request line, `Host`, `headers` as given, and a
/// `Content-Length` when there is a body or the method is PUT or POST; then `body`.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The method, sent as is.
    pub method: &'a str,
    /// The request target, sent as is.
    pub path: &'a str,
    /// The protocol of the request line: "HTTP/1.1" unless a test wants another.
    pub version: &'a str,
    /// Header lines, sent as is and in this order.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body (empty: none).
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// An HTTP/1.1 request without headers or body.
    pub fn new(method: &'a str, path: &'a str) -> Request<'a> {
        Request {
            method,
            path,
            version: "HTTP/1.1",
            headers: &[],
            body: b"",
        }
    }

    /// Sends the request on a new connection to `addr`; returns once the response head
    /// has arrived.
    pub async fn send(self, addr: SocketAddr) -> Resp {
        let tcp = tokio::time::timeout(T, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        self.send_on(tcp, addr).await
    }

    /// Like [`Request::send`], on a socket the caller prepared (e.g. with a small receive
    /// buffer); `addr` is the `Host`.
    pub async fn send_on(self, mut tcp: TcpStream, addr: SocketAddr) -> Resp {
        let Request {
            method,
            path,
            version,
            headers,
            body,
        } = self;
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
        Resp::read_head(BufReader::new(tcp), method).await
    }
}

/// Sends an HTTP/1.1 request on a new connection; returns once the response head has
/// arrived (see [`Request`] for what is written).
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    Request {
        headers,
        body,
        ..Request::new(method, path)
    }
    .send(addr)
    .await
}

/// A response whose head has arrived; its body is read on demand, as sent.
pub struct Resp {
    /// The status code.
    pub status: u16,
    /// The header fields in order, names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunked: bool,
    /// Body bytes still to come when the length is known (Content-Length, or none at all
    /// for HEAD, 204 and 304); None: until the connection closes.
    remaining: Option<usize>,
    done: bool,
}

/// How reading a body ended badly.
#[derive(Debug, PartialEq)]
pub enum BodyError {
    /// The connection closed in the middle of the body (no terminating chunk, or short of
    /// the Content-Length).
    Abrupt,
    /// Nothing arrived within the timeout.
    Timeout,
}

impl Resp {
    /// Reads the status line and the header fields of the answer to a `method` request.
    async fn read_head(mut reader: BufReader<TcpStream>, method: &str) -> Resp {
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
        let mut resp = Resp {
            status,
            headers,
            reader,
            chunked: false,
            remaining: None,
            done: false,
        };
        resp.chunked = resp
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"));
        let no_body = method == "HEAD" || status == 204 || status == 304;
        resp.remaining = if no_body {
            Some(0)
        } else {
            resp.header("content-length").and_then(|v| v.parse().ok())
        };
        resp
    }

    /// The value of header `name`, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next chunk of the body as sent (chunked), or the next read (otherwise); Ok(None)
    /// at a clean end. After a clean or abrupt end it keeps answering Ok(None); after a
    /// timeout (nothing of a next chunk arrived within `timeout`), reading may go on.
    ///
    /// Only the wait for the next chunk to begin is bounded by `timeout`: `fill_buf` consumes
    /// nothing, so giving up there loses nothing. A chunk that has begun is read whole (within
    /// [`T`]): `read_chunk` cancelled half-way would drop the size line and the data it had
    /// consumed, and the next call would read from the middle of a chunk.
    pub async fn next_chunk(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, BodyError> {
        if self.done {
            return Ok(None);
        }
        let empty = !self.chunked && self.remaining == Some(0);
        if !empty
            && tokio::time::timeout(timeout, self.reader.fill_buf())
                .await
                .is_err()
        {
            return Err(BodyError::Timeout);
        }
        let r = tokio::time::timeout(T, self.read_chunk())
            .await
            .unwrap_or(Err(BodyError::Abrupt));
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
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

    /// The whole body (each piece must come within [`T`]).
    pub async fn body(mut self) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        while let Some(c) = self.next_chunk(T).await? {
            out.extend(c);
        }
        Ok(out)
    }

    /// The body as CRLF-separated records, as a client of the relay reads it: gzip decoded
    /// when `Content-Encoding` says so (any number of gzip members, and the gzip stream
    /// must be complete at a clean end), identity otherwise. [`Records::record`] and
    /// [`Records::take`] return every record, empty ones too.
    pub fn records(self) -> Records {
        let dec = if self.header("content-encoding") == Some("gzip") {
            Decoder::MultiGzip(flate2::write::MultiGzDecoder::new(Vec::new()))
        } else {
            Decoder::Identity
        };
        Records::new(self, dec, false)
    }

    /// The body as CRLF-separated records, as the emulator's tests read a Live Stream
    /// stream: gzip whatever the headers say, exactly one gzip member (more, or bytes that
    /// are not gzip, panic); a clean end is not checked against the end of the gzip stream.
    /// [`Records::record`] and [`Records::take`] pass over the empty (keep-alive) records;
    /// [`Records::next`] still returns them.
    pub fn gzip_records(self) -> Records {
        Records::new(
            self,
            Decoder::Gzip(flate2::write::GzDecoder::new(Vec::new())),
            true,
        )
    }
}

/// How [`Records`] decodes the body.
enum Decoder {
    Identity,
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    MultiGzip(flate2::write::MultiGzDecoder<Vec<u8>>),
}

/// The records of a response body (CRLF-separated), read as they arrive; made by
/// [`Resp::records`] or [`Resp::gzip_records`].
pub struct Records {
    /// The response being read.
    pub resp: Resp,
    dec: Decoder,
    buf: Vec<u8>,
    /// Every decoded byte so far (to check the framing itself, e.g. no bare LF).
    pub raw: Vec<u8>,
    /// How the body ended, once it has: Ok(()) clean, Err(e) otherwise.
    pub ended: Option<Result<(), BodyError>>,
    skip_empty: bool,
}

impl Records {
    fn new(resp: Resp, dec: Decoder, skip_empty: bool) -> Records {
        Records {
            resp,
            dec,
            buf: Vec::new(),
            raw: Vec::new(),
            ended: None,
            skip_empty,
        }
    }

    /// The next record (without CRLF; "" for an empty record), or None when the body ended
    /// (see `ended`) or nothing came within `timeout` (`ended` stays None: reading may go
    /// on).
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
                Ok(Some(c)) => self.decode(&c),
                Ok(None) => {
                    if let Decoder::MultiGzip(dec) = &mut self.dec {
                        dec.try_finish().expect("gzip stream complete at the end");
                        let rest = std::mem::take(dec.get_mut());
                        self.raw.extend_from_slice(&rest);
                        self.buf.extend(rest);
                    }
                    self.ended = Some(Ok(()));
                }
                Err(BodyError::Timeout) => return None,
                Err(e) => self.ended = Some(Err(e)),
            }
        }
    }

    /// Decodes a piece of the body onto the buffer of records.
    fn decode(&mut self, piece: &[u8]) {
        let out = match &mut self.dec {
            Decoder::Identity => piece.to_vec(),
            Decoder::Gzip(dec) => {
                dec.write_all(piece).expect("valid gzip");
                dec.flush().expect("gzip flush");
                std::mem::take(dec.get_mut())
            }
            Decoder::MultiGzip(dec) => {
                dec.write_all(piece).expect("valid gzip");
                dec.flush().expect("gzip flush");
                std::mem::take(dec.get_mut())
            }
        };
        self.raw.extend_from_slice(&out);
        self.buf.extend(out);
    }

    /// The next record (passing over empty ones for [`Resp::gzip_records`]), panicking
    /// if none comes within [`T`].
    pub async fn record(&mut self) -> String {
        loop {
            match self.next(T).await {
                Some(l) if l.is_empty() && self.skip_empty => continue,
                Some(l) => return l,
                None => panic!("stream ended or stalled: {:?}", self.ended),
            }
        }
    }

    /// Reads `n` records with [`Records::record`].
    pub async fn take(&mut self, n: usize) -> Vec<String> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.record().await);
        }
        v
    }

    /// Every record until the body ends (empty ones included); when nothing comes for
    /// [`T`] it stops there and `ended` says Err(Timeout).
    pub async fn until_end(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(l) = self.next(T).await {
            v.push(l);
        }
        self.ended.get_or_insert(Err(BodyError::Timeout));
        v
    }
}

/// Records the emulator's connections sent for the first time, from its `/admin/stats`
/// JSON: per connection `records_sent` minus `resent`. A resumed connection writes its
/// `resent` records first, so one that closed before writing them all sent no new ones
/// (saturating, not underflowing).
pub fn new_records_sent(stats: &Value) -> u64 {
    stats["connections"]
        .as_array()
        .expect("connections in the emulator's stats")
        .iter()
        .map(|c| {
            let sent = c["records_sent"].as_u64().unwrap_or(0);
            sent.saturating_sub(c["resent"].as_u64().unwrap_or(0))
        })
        .sum()
}

/// The u64 after `"field":` in a raw JSON line, parsed from the digits themselves (never
/// through f64, which would round ids above 2^53); None when the value is not bare digits
/// (e.g. a quoted id).
pub fn raw_u64(line: &str, field: &str) -> Option<u64> {
    let key = format!("\"{field}\":");
    let start = line.find(&key)? + key.len();
    let digits: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The (hitIdHigh, hitIdLow) key of a record, which identifies a hit; panics unless both
/// are bare numbers.
pub fn hit_key(line: &str) -> (u64, u64) {
    (
        raw_u64(line, "hitIdHigh").unwrap_or_else(|| panic!("bare hitIdHigh in {line}")),
        raw_u64(line, "hitIdLow").unwrap_or_else(|| panic!("bare hitIdLow in {line}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Nothing within the timeout: Timeout, and reading goes on. A chunk whose size line
    /// and first bytes come within the timeout and the rest after it: returned whole (a
    /// timeout there would lose what was consumed, and the next call would read from the
    /// middle of the chunk).
    #[tokio::test]
    async fn a_chunk_split_around_the_timeout_is_returned_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut req = BufReader::new(&mut s);
            loop {
                let mut line = String::new();
                req.read_line(&mut line).await.expect("request");
                if line.trim_end().is_empty() {
                    break;
                }
            }
            let pause = Duration::from_millis(300);
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await
                .expect("write");
            tokio::time::sleep(pause).await;
            s.write_all(b"5\r\nab").await.expect("write");
            tokio::time::sleep(pause).await;
            s.write_all(b"cde\r\n0\r\n\r\n").await.expect("write");
        });
        let mut r = send(addr, "GET", "/", &[], b"").await;
        let short = Duration::from_millis(100);
        assert_eq!(r.next_chunk(short).await, Err(BodyError::Timeout));
        let mut timeouts = 0;
        let chunk = loop {
            match r.next_chunk(short).await {
                Err(BodyError::Timeout) => timeouts += 1,
                other => break other,
            }
        };
        assert_eq!(chunk, Ok(Some(b"abcde".to_vec())));
        assert!(timeouts <= 3, "{timeouts}");
        assert_eq!(r.next_chunk(T).await, Ok(None));
        server.await.expect("server");
    }
}
