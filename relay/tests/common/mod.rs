//! Test helpers of the relay's suite: the relay in-process on 127.0.0.1:0. The emulator
//! in-process ([`Emu`]), the raw HTTP/1.1 client (our own chunked decoder, streaming
//! multi-member gzip) and the record reader are shared with the emulator's suite and come
//! from `livestream-testkit`.

#![allow(dead_code)]

use clap::Parser;
use livestream_relay::{Cli, Relay, Secrets};
pub use livestream_testkit::*;
use std::net::SocketAddr;
use std::time::Duration;

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
