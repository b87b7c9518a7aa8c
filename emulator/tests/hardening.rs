//! Hostile and careless input (issue 13, items 3 and 9): admin values out of range, the
//! admin API from other origins, huge bodies, idle and slow sockets, too many connections,
//! too many streams, and exact `records_sent` when a chaos drop meets a slow reader.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes; returns what arrived, or None if still open at `limit`.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The resident memory of this process, in KiB (the emulator runs in-process).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_values_out_of_range_are_400_and_the_emulator_stays_responsive() {
    let emu = Emu::start(&["--rate", "50"]).await;
    for (json, needle) in [
        (
            r#"{"rate":1e17}"#,
            "rate must be a number from 0 to 10000, got 100000000000000000",
        ),
        (
            r#"{"rate":-1}"#,
            "rate must be a number from 0 to 10000, got -1",
        ),
        (
            r#"{"slot_hold_secs":1e300}"#,
            "slot_hold_secs must be a number from 0 to 3600",
        ),
        (
            r#"{"resend":100000}"#,
            "resend must be from 0 to 1000, got 100000",
        ),
        (
            r#"{"body":{"lines":[],"chunk_size":0}}"#,
            "chunk_size must be from 1 to",
        ),
    ] {
        let (status, v) = emu.admin("PUT", "/admin/streams/x", Some(json)).await;
        assert_eq!(status, 400, "{json}: {v}");
        let d = v["error_description"].as_str().unwrap();
        assert!(d.contains(needle), "{json}: {d}");
    }
    // Nothing was installed, and the stream still works, fast.
    assert!(emu.admin("GET", "/admin/streams/x", None).await.1["script"].is_null());
    let mut recs = emu.get("/api/1/stream/x").await.gzip_records();
    recs.record().await;
    // The highest rate allowed keeps the emulator answering while it streams.
    let (status, _) = emu
        .admin("PUT", "/admin/streams/fast", Some(r#"{"rate":10000}"#))
        .await;
    assert_eq!(status, 200);
    let mut fast = emu.get("/api/1/stream/fast").await.gzip_records();
    fast.take(2000).await;
    let t = Instant::now();
    let r = emu.send("GET", "/healthz", &[], b"").await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_answers_no_other_origin() {
    let emu = Emu::start(&["--rate", "50", "--slot-hold-secs", "30"]).await;
    let mut live = emu.get("/api/1/stream/kept").await.gzip_records();
    live.record().await;
    let evil = ("Origin", "http://evil.example");
    // A preflight from another origin gets no CORS headers at all.
    let r = emu
        .send(
            "OPTIONS",
            "/admin/reset",
            &[evil, ("Access-Control-Request-Method", "POST")],
            b"",
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(
        !r.headers
            .iter()
            .any(|(k, _)| k.starts_with("access-control-")),
        "{:?}",
        r.headers
    );
    // Simple requests (no preflight needed) from another origin are refused too.
    for (method, path) in [
        ("POST", "/admin/reset"),
        ("POST", "/admin/drop"),
        ("DELETE", "/admin/streams/kept"),
    ] {
        let r = emu.send(method, path, &[evil], b"").await;
        assert_eq!(r.status, 403, "{method} {path}");
        assert_eq!(r.header("access-control-allow-origin"), None);
        assert!(error_description(r).await.contains("evil.example"));
    }
    let r = emu
        .send(
            "GET",
            "/admin/stats",
            &[("Sec-Fetch-Site", "cross-site")],
            b"",
        )
        .await;
    assert_eq!(r.status, 403);
    // DNS rebinding: "same origin" under a DNS name is refused for admin calls.
    let port = emu.addr.port();
    let host = format!("rebound.example:{port}");
    let origin = format!("http://rebound.example:{port}");
    let r = send_raw_host(&emu, "POST", "/admin/reset", &host, &[("Origin", &origin)]).await;
    assert_eq!(r, 403);
    // Nothing was reset or dropped.
    let s = emu.stats().await;
    assert_eq!(s["streams"]["kept"]["live"], 1);
    // A page of the emulator's own origin, and tools without an Origin, may.
    let own = format!("http://127.0.0.1:{port}");
    let r = emu
        .send(
            "GET",
            "/admin/stats",
            &[("Origin", &own), ("Sec-Fetch-Site", "same-origin")],
            b"",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    // The stream keeps its public CORS.
    let r = emu
        .send(
            "OPTIONS",
            "/api/1/stream/kept",
            &[evil, ("Access-Control-Request-Method", "GET")],
            b"",
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    emu.stop().await;
}

/// Sends a request with a chosen Host header; returns the status.
async fn send_raw_host(
    emu: &Emu,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> u16 {
    let mut tcp = TcpStream::connect(emu.addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let resp = read_until_closed(&mut tcp, T).await.expect("an answer");
    let text = String::from_utf8_lossy(&resp);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cors_origin_allows_exactly_that_origin() {
    let emu = Emu::start(&["--admin-cors-origin", "http://127.0.0.1:*"]).await;
    let ok = ("Origin", "http://127.0.0.1:9999");
    let r = emu
        .send(
            "OPTIONS",
            "/admin/streams/x",
            &[ok, ("Access-Control-Request-Method", "PUT")],
            b"",
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://127.0.0.1:9999")
    );
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("PUT"));
    let r = emu
        .send(
            "GET",
            "/admin/stats",
            &[ok, ("Sec-Fetch-Site", "same-site")],
            b"",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://127.0.0.1:9999")
    );
    assert_eq!(r.header("vary"), Some("Origin"));
    for other in [
        "http://localhost:9999",
        "http://127.0.0.1.evil.example",
        "https://127.0.0.1:1",
    ] {
        let r = emu
            .send("GET", "/admin/stats", &[("Origin", other)], b"")
            .await;
        assert_eq!(r.status, 403, "{other}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{other}");
    }
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_guards_the_admin_api_when_set() {
    let emu = Emu::start_with(&[], |o| o.admin_token = Some("adm1n".into())).await;
    let r = emu.send("POST", "/admin/reset", &[], b"").await;
    assert_eq!(r.status, 401);
    assert!(error_description(r)
        .await
        .contains("LIVESTREAM_EMULATOR_ADMIN_TOKEN"));
    let r = emu
        .send(
            "GET",
            "/admin/stats",
            &[("Authorization", "Bearer wrong")],
            b"",
        )
        .await;
    assert_eq!(r.status, 401);
    let r = emu
        .send(
            "GET",
            "/admin/stats",
            &[("Authorization", "Bearer adm1n")],
            b"",
        )
        .await;
    assert_eq!(r.status, 200);
    // The stream is not affected.
    assert_eq!(emu.get("/api/1/stream/demo").await.status, 200);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_bodies_are_413_quickly_without_growing_memory() {
    let emu = Emu::start_with(&["--ims-client-id", "id"], |o| {
        o.ims_client_secret = Some("secret".into())
    })
    .await;
    let before = rss_kib();
    // Announced as 1 GiB: refused before reading it.
    let t = Instant::now();
    let mut tcp = TcpStream::connect(emu.addr).await.unwrap();
    tcp.write_all(
        b"PUT /admin/streams/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{\"rate\":",
    )
    .await
    .unwrap();
    let resp = read_until_closed(&mut tcp, T)
        .await
        .expect("an answer, then close");
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("65536"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(2));
    // Chunked, no length: 64 MiB pushed as fast as possible; cut at 64 KiB.
    for path in ["/admin/streams/y", "/ims/token/v3"] {
        let mut tcp = TcpStream::connect(emu.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let head = if path.starts_with("/admin") {
            head.replace("POST", "PUT")
        } else {
            head
        };
        tcp.write_all(head.as_bytes()).await.unwrap();
        let chunk = [b'a'; 65536];
        let (mut rd, mut wr) = tcp.into_split();
        let writer = tokio::spawn(async move {
            for _ in 0..1024 {
                if wr.write_all(b"10000\r\n").await.is_err()
                    || wr.write_all(&chunk).await.is_err()
                    || wr.write_all(b"\r\n").await.is_err()
                {
                    break;
                }
            }
        });
        let mut resp = vec![0u8; 4096];
        let n = tokio::time::timeout(T, rd.read(&mut resp))
            .await
            .expect("an answer in time")
            .unwrap();
        let text = String::from_utf8_lossy(&resp[..n]).into_owned();
        assert!(text.starts_with("HTTP/1.1 413"), "{path}: {text}");
        writer.abort();
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 32 * 1024, "resident memory grew by {grown} KiB");
    assert!(emu.admin("GET", "/admin/streams/x", None).await.1["script"].is_null());
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_sockets_are_closed_but_quiet_streams_are_not() {
    let emu = Emu::start(&[
        "--idle-timeout-secs",
        "0.5",
        "--header-timeout-secs",
        "2",
        "--rate",
        "0",
    ])
    .await;
    // A connection that never sends anything.
    let t = Instant::now();
    let mut silent = TcpStream::connect(emu.addr).await.unwrap();
    assert!(read_until_closed(&mut silent, Duration::from_secs(5))
        .await
        .is_some());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // A keep-alive connection idle after its request.
    let mut kept = TcpStream::connect(emu.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let got = read_until_closed(&mut kept, Duration::from_secs(5))
        .await
        .expect("closed");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // A request head trickled a byte at a time: each byte resets the idle clock, the
    // header timeout (2 s) cuts it.
    let mut slow = TcpStream::connect(emu.addr).await.unwrap();
    let t = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed = false;
    for b in head {
        if slow.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            let _ = r;
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow head was cut");
    let took = t.elapsed();
    assert!(
        took > Duration::from_millis(1500) && took < Duration::from_secs(5),
        "cut by the header timeout, not the idle one: {took:?}"
    );
    // An open stream with nothing to send stays open.
    let mut quiet = emu.get("/api/1/stream/quiet").await;
    let _ = quiet.next_chunk(T).await; // the gzip header
    assert_eq!(
        quiet.next_chunk(Duration::from_millis(1500)).await,
        Err(BodyError::Timeout),
        "still open after three idle timeouts"
    );
    let s = emu.stats().await;
    assert_eq!(s["streams"]["quiet"]["live"], 1);
    assert!(
        s["idle_closed"].as_u64().unwrap() >= 2,
        "{}",
        s["idle_closed"]
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_clients_get_a_503() {
    let emu = Emu::start(&["--max-clients", "3"]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(emu.addr).await.unwrap();
        // One request each, so the connection is surely accepted and counted.
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(c);
    }
    let mut extra = TcpStream::connect(emu.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let got = read_until_closed(&mut extra, T)
        .await
        .expect("answered and closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("--max-clients"), "{text}");
    drop(held);
    // Once the held connections are gone, requests are served again.
    let deadline = Instant::now() + T;
    let stats = loop {
        let r = emu.send("GET", "/admin/stats", &[], b"").await;
        if r.status == 200 {
            let b = r.body().await.unwrap();
            break serde_json::from_slice::<serde_json::Value>(&b).unwrap();
        }
        assert!(Instant::now() < deadline, "still refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(stats["clients_refused"].as_u64() >= Some(1), "{stats}");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_records_and_scripts_are_bounded_across_streams() {
    let emu = Emu::start(&["--rate", "400", "--max-retained-records", "500"]).await;
    let mut conns = Vec::new();
    for i in 0..5 {
        let mut r = emu.get(&format!("/api/1/stream/s{i}")).await.gzip_records();
        r.take(150).await;
        conns.push(r);
    }
    for r in &mut conns {
        r.take(150).await;
    }
    let s = emu.stats().await;
    let streams = s["streams"].as_object().unwrap();
    let retained: u64 = streams
        .values()
        .map(|v| v["retained"].as_u64().unwrap())
        .sum();
    assert!(retained <= 500, "{retained} records retained");
    assert!(streams.values().all(|v| v["retain_cap"] == 100));
    assert!(streams
        .values()
        .all(|v| v["generated"].as_u64().unwrap() >= 300));
    // Scripts: at most 256 names.
    for i in 0..256 {
        let (st, v) = emu
            .admin(
                "PUT",
                &format!("/admin/streams/p{i}"),
                Some(r#"{"rate":1}"#),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = emu
        .admin("PUT", "/admin/streams/one-too-many", Some(r#"{"rate":1}"#))
        .await;
    assert_eq!(st, 503);
    assert!(v["error_description"].as_str().unwrap().contains("256"));
    // Replacing an existing one is fine.
    assert_eq!(
        emu.admin("PUT", "/admin/streams/p0", Some("{}")).await.0,
        200
    );
    emu.stop().await;
}

/// A chaos drop while the reader lags: what `records_sent` says must be exactly the
/// complete records the client decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sent_is_exact_when_a_chaos_drop_meets_a_slow_reader() {
    let emu = Emu::start(&[
        "--seed",
        "3",
        "--rate",
        "10000",
        "--chaos",
        "--chaos-faults",
        "drop",
        "--chaos-rate",
        "0.0002",
        "--slot-hold-secs",
        "0",
    ])
    .await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut tcp = sock.connect(emu.addr).await.unwrap();
    tcp.write_all(
        b"GET /api/1/stream/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nAccept-Encoding: gzip\r\n\r\n",
    )
    .await
    .unwrap();
    // Don't read for a while: the emulator's and hyper's buffers fill up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let raw = read_until_closed(&mut tcp, Duration::from_secs(60))
        .await
        .expect("the drop ends the connection");
    // Decode: skip the head, de-chunk, gunzip what arrived.
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(raw.starts_with(b"HTTP/1.1 200"));
    let mut body = Vec::new();
    let mut rest = &raw[split..];
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap(), 16).unwrap();
        let start = eol + 2;
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
        if start + size + 2 > rest.len() {
            break;
        }
        rest = &rest[start + size + 2..];
    }
    let mut dec = flate2::write::GzDecoder::new(Vec::new());
    let _ = std::io::Write::write_all(&mut dec, &body);
    let _ = std::io::Write::flush(&mut dec);
    let text = dec.get_ref().clone();
    let records = text
        .split(|b| *b == b'\n')
        .filter(|l| l.len() > 1 && l.ends_with(b"\r"))
        .count() as u64;
    let s = emu
        .wait_stats("the connection to close", |s| {
            s["connections"][0]["closed_ms"].is_u64()
        })
        .await;
    let c = &s["connections"][0];
    assert_eq!(c["close_reason"], "chaos_drop", "{c}");
    assert!(
        records > 1000,
        "a sizeable stream before the drop: {records}"
    );
    assert_eq!(c["records_sent"].as_u64(), Some(records), "{c}");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_carry_strict_security_headers() {
    use livestream_emulator::sha256::{base64, sha256};
    let base = std::env::temp_dir().join(format!("emu-csp-{}", std::process::id()));
    let www = base.join("www");
    let pkg = base.join("pkg");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(&pkg).unwrap();
    let map = "\n    {\"imports\": {\"x\": \"/pkg/x.js\"}}\n  ";
    std::fs::write(
        www.join("index.html"),
        format!("<!doctype html><script type=\"importmap\">{map}</script><script type=\"module\" src=\"app.js\"></script>"),
    )
    .unwrap();
    std::fs::write(pkg.join("x_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let mount = format!("/pkg={}", pkg.to_str().unwrap());
    let emu = Emu::start(&["--www", www.to_str().unwrap(), "--mount", &mount]).await;
    let hash = format!("'sha256-{}'", base64(&sha256(map.as_bytes())));
    for path in ["/", "/pkg/x_bg.wasm", "/missing.js"] {
        let r = emu.send("GET", path, &[], b"").await;
        let csp = r
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP"));
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            csp.contains("connect-src 'self' http: https:"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        if path == "/" {
            assert!(
                csp.contains(&hash),
                "the import map is allowed by its hash: {csp}"
            );
        }
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
    }
    emu.stop().await;
    let _ = std::fs::remove_dir_all(&base);
}
