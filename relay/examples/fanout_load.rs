//! Load generator of `bench/relay-fanout.mjs`: opens many downstream Live Stream clients
//! against a relay and measures what each receives.
//!
//! `fanout_load ADDR PATH CLIENTS VERIFIERS WARMUP_SECS MEASURE_SECS`
//!
//! Every client sends `Accept-Encoding: gzip` and counts the bytes it reads. The first
//! VERIFIERS clients also de-chunk and inflate their stream and count records (CRLF), so
//! records per second are exact for them; decoding every client would cost this machine
//! far more than the relay under test. Prints `measure-start` and `measure-end` lines (the
//! bench samples the relay's CPU between them), then one JSON line with the results.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Counts the records (LF-terminated lines) written into it.
struct LineCounter(Arc<AtomicU64>);

impl Write for LineCounter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = b.iter().filter(|&&c| c == b'\n').count();
        self.0.fetch_add(n as u64, Relaxed);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streaming decoder of HTTP/1.1 chunked transfer encoding.
#[derive(Default)]
struct Dechunk {
    size_line: Vec<u8>,
    left: usize,
    crlf: usize,
}

impl Dechunk {
    fn feed(&mut self, mut b: &[u8], out: &mut Vec<u8>) {
        while !b.is_empty() {
            if self.crlf > 0 {
                let n = self.crlf.min(b.len());
                self.crlf -= n;
                b = &b[n..];
            } else if self.left > 0 {
                let n = self.left.min(b.len());
                out.extend_from_slice(&b[..n]);
                self.left -= n;
                b = &b[n..];
                if self.left == 0 {
                    self.crlf = 2;
                }
            } else {
                let c = b[0];
                b = &b[1..];
                if c == b'\n' {
                    let line = String::from_utf8_lossy(&self.size_line);
                    self.left = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                    self.size_line.clear();
                } else {
                    self.size_line.push(c);
                }
            }
        }
    }
}

struct Client {
    bytes: AtomicU64,
    records: Arc<AtomicU64>,
    alive: AtomicBool,
}

async fn run_client(
    addr: String,
    path: String,
    verify: bool,
    c: Arc<Client>,
) -> Result<(), String> {
    let mut tcp = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept-Encoding: gzip\r\n\r\n");
    tcp.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let body_start = loop {
        let n = tcp.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the response head".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(String::from_utf8_lossy(&head[..head.len().min(200)]).into_owned());
    }
    c.alive.store(true, Relaxed);
    let mut dechunk = Dechunk::default();
    let mut plain = Vec::new();
    let mut gz = verify.then(|| flate2::write::MultiGzDecoder::new(LineCounter(c.records.clone())));
    let mut first = head.split_off(body_start);
    loop {
        let data: &[u8] = if first.is_empty() {
            let n = tcp.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                c.alive.store(false, Relaxed);
                return Ok(());
            }
            &buf[..n]
        } else {
            &first
        };
        c.bytes.fetch_add(data.len() as u64, Relaxed);
        if let Some(gz) = gz.as_mut() {
            plain.clear();
            dechunk.feed(data, &mut plain);
            gz.write_all(&plain).map_err(|e| format!("gzip: {e}"))?;
        }
        first.clear();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 {
        eprintln!("usage: fanout_load ADDR PATH CLIENTS VERIFIERS WARMUP_SECS MEASURE_SECS");
        std::process::exit(2);
    }
    let (addr, path) = (a[1].clone(), a[2].clone());
    let n: usize = a[3].parse().expect("CLIENTS");
    let verifiers: usize = a[4].parse().expect("VERIFIERS");
    let warmup: f64 = a[5].parse().expect("WARMUP_SECS");
    let measure: f64 = a[6].parse().expect("MEASURE_SECS");
    let clients: Vec<Arc<Client>> = (0..n)
        .map(|_| {
            Arc::new(Client {
                bytes: AtomicU64::new(0),
                records: Arc::new(AtomicU64::new(0)),
                alive: AtomicBool::new(false),
            })
        })
        .collect();
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    for (i, c) in clients.iter().enumerate() {
        let (addr, path, c, errors) = (addr.clone(), path.clone(), c.clone(), errors.clone());
        tokio::spawn(async move {
            if let Err(e) = run_client(addr, path, i < verifiers, c).await {
                errors.lock().unwrap().push(e);
            }
        });
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while clients.iter().filter(|c| c.alive.load(Relaxed)).count() < n && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    let snap = |f: &dyn Fn(&Client) -> u64| clients.iter().map(|c| f(c)).collect::<Vec<u64>>();
    println!("measure-start");
    let t0 = Instant::now();
    let (b0, r0) = (
        snap(&|c| c.bytes.load(Relaxed)),
        snap(&|c| c.records.load(Relaxed)),
    );
    tokio::time::sleep(Duration::from_secs_f64(measure)).await;
    let (b1, r1) = (
        snap(&|c| c.bytes.load(Relaxed)),
        snap(&|c| c.records.load(Relaxed)),
    );
    let secs = t0.elapsed().as_secs_f64();
    println!("measure-end");
    let mut bps: Vec<f64> = b0
        .iter()
        .zip(&b1)
        .map(|(a, b)| (b - a) as f64 / secs)
        .collect();
    bps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rps: Vec<f64> = r0
        .iter()
        .zip(&r1)
        .take(verifiers)
        .map(|(a, b)| (b - a) as f64 / secs)
        .collect();
    let alive = clients.iter().filter(|c| c.alive.load(Relaxed)).count();
    let errors = errors.lock().unwrap().clone();
    let out = serde_json::json!({
        "clients": n,
        "alive": alive,
        "errors": errors.len(),
        "first_error": errors.first(),
        "seconds": secs,
        "bytes_per_s": {"min": bps.first(), "median": bps.get(bps.len() / 2), "max": bps.last()},
        "verifier_records_per_s": rps,
    });
    println!("{out}");
    std::process::exit(0);
}
