//! The relay against the emulator, end to end: what downstream clients receive, what the
//! upstream side looks like from the emulator, tokens, slow clients, replay, shutdown,
//! access control, health and metrics.

mod common;

use common::*;
use livestream_relay::Secrets;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

fn keys(records: &[String]) -> Vec<(u64, u64)> {
    records.iter().map(|r| hit_key(r)).collect()
}

fn assert_unique(k: &[(u64, u64)]) {
    let set: HashSet<_> = k.iter().collect();
    assert_eq!(set.len(), k.len(), "a record was delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_pass_through_byte_exact_with_bare_ids() {
    let emu = Emu::start(&["--seed", "1"]).await;
    let lines = [
        r#"{"reportSuite":"rs","hitIdHigh":18446744073709551615,"hitIdLow":18446744073709551614,"visIdHigh":9007199254740993,"visIdLow":1,"pageName":"ünïcode ✓ 日本","extra":{"hitIdHigh":"5"},"n":[1.5e3,-0]}"#,
        "",
        r#"{"hitIdHigh":18446744073709551615,"hitIdLow":18446744073709551614,"pageName":"duplicate"}"#,
        "not json",
        r#"{"hitIdHigh":9007199254740993,"hitIdLow":9007199254740992,"mcVisIdHigh":12345678901234567890,"mcVisIdLow":0}"#,
        r#"{"pageName":"no ids at all"}"#,
    ];
    let script = json!({"body": {"lines": lines, "then": "hold"}});
    emu.admin("PUT", "/admin/streams/exact", Some(&script.to_string()))
        .await;
    let relay = RelayUnderTest::start(
        &[
            "--upstream",
            &emu.url("exact"),
            "--reconnect-delay-ms",
            "200",
        ],
        fixed_token(),
    )
    .await;
    let mut gz = relay.stream("exact", true).await;
    let mut plain = relay.stream("exact", false).await;
    assert_eq!(gz.resp.header("content-encoding"), Some("gzip"));
    assert_eq!(plain.resp.header("content-encoding"), None);
    let want = vec![lines[0], lines[4], lines[5]];
    assert_eq!(gz.take(3).await, want);
    assert_eq!(plain.take(3).await, want);
    assert_eq!(
        raw_u64(lines[0], "hitIdHigh"),
        raw_u64(want[0], "hitIdHigh")
    );
    relay.stop().await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gets_every_record_once_in_order() {
    let emu = Emu::start(&["--seed", "2", "--rate", "300"]).await;
    let relay = RelayUnderTest::start(
        &[
            "--upstream",
            &emu.url("demo"),
            "--replay",
            "100000",
            "--reconnect-delay-ms",
            "200",
        ],
        fixed_token(),
    )
    .await;
    const N: usize = 300;
    let mut clients = Vec::new();
    for i in 0..6 {
        // gzip and identity clients, joining at different moments.
        clients.push(relay.stream("demo", i != 3).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let url = format!("http://{}/api/1/stream/demo", relay.addr);
    let curl = tokio::process::Command::new("curl")
        .args(["--compressed", "-sN", "-m", "4", &url])
        .output();
    let mut lists = Vec::new();
    for c in &mut clients {
        lists.push(keys(&c.take(N).await));
    }
    for l in &lists {
        assert_unique(l);
        assert_eq!(l, &lists[0], "clients saw different records or orders");
    }
    match curl.await {
        Ok(out) => {
            let text = String::from_utf8(out.stdout).expect("curl output is UTF-8");
            let got: Vec<(u64, u64)> = text.split("\r\n").take(N).map(hit_key).collect();
            assert_eq!(got, lists[0], "curl --compressed reads the same stream");
        }
        Err(e) => eprintln!("curl not available, skipped: {e}"),
    }
    let stats = emu.stats().await;
    assert_eq!(stats["streams"]["demo"]["peak_live"], 1);
    assert_eq!(stats["requests"], 1, "one upstream request for 7 clients");
    relay.stop().await;
    emu.stop().await;
}

/// A tiny deterministic generator for the churn test.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_churn_never_changes_the_upstream_schedule() {
    let emu = Emu::start(&["--seed", "3", "--rate", "200", "--slot-hold-secs", "0.3"]).await;
    const DELAY: u64 = 600;
    let relay = RelayUnderTest::start(
        &[
            "--upstream",
            &emu.url("demo"),
            "--max-connections",
            "2",
            "--reconnect-delay-ms",
            &DELAY.to_string(),
            "--reconnect-jitter-ms",
            "0",
            "--replay",
            "20",
        ],
        fixed_token(),
    )
    .await;
    emu.wait_stats("2 upstream slots live", |s| {
        s["streams"]["demo"]["live"] == 2
    })
    .await;
    let addr = relay.addr;
    let mut churners = Vec::new();
    for t in 0..16u64 {
        churners.push(tokio::spawn(async move {
            let mut rng = Lcg(t + 1);
            let end = tokio::time::Instant::now() + Duration::from_millis(2500);
            let mut opened = 0;
            while tokio::time::Instant::now() < end {
                let gzip: &[(&str, &str)] = if rng.next(2) == 0 {
                    &[("Accept-Encoding", "gzip")]
                } else {
                    &[]
                };
                // Every downstream request asks for what would be a conflict upstream.
                let path = format!("/api/1/stream/demo?maxConnections={}", 1 + rng.next(8));
                let r = send(addr, "GET", &path, gzip, b"").await;
                assert_eq!(r.status, 200, "downstream never gets 409");
                opened += 1;
                let mut recs = r.records();
                for _ in 0..rng.next(30) {
                    if recs.next(Duration::from_millis(200)).await.is_none() {
                        break;
                    }
                }
                drop(recs);
                tokio::time::sleep(Duration::from_millis(rng.next(100))).await;
            }
            opened
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = emu.stats().await["now_ms"].as_u64().unwrap();
    let (_, dropped) = emu.admin("POST", "/admin/drop", None).await;
    assert_eq!(dropped["dropped"], 2);
    let mut opened = 0;
    for c in churners {
        opened += c.await.expect("churner");
    }
    assert!(opened > 30, "only {opened} downstream connections");
    let s = emu
        .wait_stats("both slots back", |s| s["streams"]["demo"]["live"] == 2)
        .await;
    assert_eq!(s["concurrent_peak"], 2, "at most --connections upstream");
    assert_eq!(s["early_reconnects_refused"], 0);
    assert_eq!(s["status_counts"], json!({"200": 4}), "{s:#}");
    let conns = s["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 4);
    for c in &conns[2..] {
        let at = c["opened_ms"].as_u64().unwrap();
        assert!(
            at >= before + DELAY,
            "upstream reconnect at {at} ms, drop at >= {before} ms, delay {DELAY} ms"
        );
    }
    relay.stop().await;
    emu.stop().await;
}

async fn wait_caught_up(emu: &Emu, relay: &RelayUnderTest) -> u64 {
    // Pause generation, then wait until the relay has every record the emulator sent.
    emu.admin("PUT", "/admin/streams/demo", Some(r#"{"rate": 0}"#))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = emu.stats().await;
    let sent = new_records_sent(&s);
    relay
        .wait_metric("livestream_relay_records_in_total{stream=\"demo\"}", |v| {
            v as u64 >= sent
        })
        .await;
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_renewed_before_expiry_and_after_401_without_losing_records() {
    let emu = Emu::start_with(
        &[
            "--seed",
            "4",
            "--rate",
            "150",
            "--token-ttl-secs",
            "2",
            "--slot-hold-secs",
            "0",
            "--ims-client-id",
            "relay-test",
        ],
        |o| o.ims_client_secret = Some("s3cret".into()),
    )
    .await;
    let ims = format!("http://{}", emu.addr);
    let secrets = Secrets {
        client_secret: Some("s3cret".into()),
        ..Default::default()
    };
    let relay = RelayUnderTest::start(
        &[
            "--upstream",
            &emu.url("demo"),
            "--client-id",
            "relay-test",
            "--scope",
            "openid,AdobeID,read_organizations",
            "--ims-url",
            &ims,
            "--reconnect-delay-ms",
            "300",
            "--reconnect-jitter-ms",
            "0",
            "--replay",
            "100000",
        ],
        secrets,
    )
    .await;
    let mut client = relay.stream("demo", true).await;
    emu.wait_stats("live", |s| s["streams"]["demo"]["live"] == 1)
        .await;
    // Past the first token's lifetime: the relay renewed it on its own (at 90 %).
    tokio::time::sleep(Duration::from_millis(2300)).await;
    emu.admin("POST", "/admin/drop", None).await;
    emu.wait_stats("reconnected", |s| s["status_counts"]["200"] == 2)
        .await;
    // A 401 (as after a revoked token): the relay asks IMS again and retries at once.
    emu.admin(
        "PUT",
        "/admin/streams/demo",
        Some(r#"{"responses": [{"status": 401}]}"#),
    )
    .await;
    emu.admin("POST", "/admin/drop", None).await;
    let s = emu
        .wait_stats("reconnected after 401", |s| s["status_counts"]["200"] == 3)
        .await;
    assert_eq!(s["status_counts"]["401"], 1, "{s:#}");
    assert_eq!(
        s["ims"]["stream_refused_expired"], 0,
        "never sent an expired token"
    );
    assert!(s["ims"]["tokens_issued"].as_u64().unwrap() >= 3, "{s:#}");
    assert!(
        relay.metric("livestream_relay_token_renewals_total").await >= 3.0,
        "renewed before expiry and after the 401"
    );
    assert_eq!(
        relay
            .metric("livestream_relay_upstream_responses_total{stream=\"demo\",code=\"401\"}")
            .await,
        1.0
    );
    let sent = wait_caught_up(&emu, &relay).await;
    let got = keys(&client.take(sent as usize).await);
    assert_unique(&got);
    assert!(client.next(Duration::from_millis(300)).await.is_none());
    relay.stop().await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_and_the_others_keep_everything() {
    let emu = Emu::start(&["--seed", "5", "--rate", "300"]).await;
    let relay = RelayUnderTest::start(
        &[
            "--upstream",
            &emu.url("demo"),
            "--client-queue",
            "16",
            "--client-sndbuf",
            "65536",
            "--replay",
            "100000",
        ],
        fixed_token(),
    )
    .await;
    let mut fast = relay.stream("demo", true).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(relay.addr).await.unwrap();
    // Identity encoding (the biggest), and never read: its queue overflows.
    let slow = Request::new("GET", "/api/1/stream/demo")
        .send_on(tcp, relay.addr)
        .await;
    assert_eq!(slow.status, 200);
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + T;
    while relay
        .metric("livestream_relay_clients_cut_total{stream=\"demo\"}")
        .await
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow client not cut"
        );
        for _ in 0..20 {
            got.push(hit_key(&fast.record().await));
        }
    }
    assert_eq!(
        relay
            .metric("livestream_relay_clients{stream=\"demo\"}")
            .await,
        1.0
    );
    assert_eq!(
        slow.body().await.unwrap_err(),
        BodyError::Abrupt,
        "a cut client sees an abrupt end, not a clean one"
    );
    // The other client has every record the emulator sent, once.
    let sent = wait_caught_up(&emu, &relay).await as usize;
    got.extend(keys(&fast.take(sent - got.len()).await));
    assert_unique(&got);
    assert!(fast.next(Duration::from_millis(300)).await.is_none());
    relay.stop().await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_client_gets_the_last_n_records_then_live() {
    let emu = Emu::start(&["--seed", "6", "--rate", "300"]).await;
    let relay = RelayUnderTest::start(
        &["--upstream", &emu.url("demo"), "--replay", "50"],
        fixed_token(),
    )
    .await;
    let mut early = relay.stream("demo", true).await;
    relay
        .wait_metric("livestream_relay_records_in_total{stream=\"demo\"}", |v| {
            v >= 120.0
        })
        .await;
    let replayed = relay
        .metric("livestream_relay_replayed_records_total{stream=\"demo\"}")
        .await;
    let mut late = relay.stream("demo", false).await;
    let late_keys = keys(&late.take(80).await);
    let early_keys = keys(&early.take(400).await);
    assert_unique(&early_keys);
    let at = contiguous_in(&late_keys, &early_keys);
    assert!(at >= 70, "replay started at record {at}, too early");
    assert_eq!(
        relay
            .metric("livestream_relay_replayed_records_total{stream=\"demo\"}")
            .await
            - replayed,
        50.0
    );
    relay.stop().await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_frees_the_upstream_slot_and_ends_streams_cleanly() {
    let emu = Emu::start(&["--seed", "7", "--rate", "100", "--slot-hold-secs", "0"]).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_livestream-relay"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--quiet",
            "--upstream",
            &emu.url("demo"),
        ])
        .env("LIVESTREAM_TOKEN", "test-token")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("relay binary starts");
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
        .await
        .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("livestream-relay listening on http://")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .parse()
        .unwrap();
    let r = send(
        addr,
        "GET",
        "/api/1/stream/demo",
        &[("Accept-Encoding", "gzip")],
        b"",
    )
    .await;
    let mut recs = r.records();
    recs.take(5).await;
    emu.wait_stats("live", |s| s["streams"]["demo"]["live"] == 1)
        .await;
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(T, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    let s = emu
        .wait_stats("slot freed", |s| s["streams"]["demo"]["live"] == 0)
        .await;
    assert_eq!(s["streams"]["demo"]["slots"][0]["state"], "free", "{s:#}");
    assert_eq!(s["connections"][0]["close_reason"], "client_closed");
    while recs.next(T).await.is_some() {}
    assert_eq!(recs.ended, Some(Ok(())), "downstream stream ended cleanly");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_is_refused_without_the_token_or_from_other_origins() {
    let err = RelayUnderTest::try_start(
        &[
            "--upstream",
            "http://127.0.0.1:9/api/1/stream/x",
            "--listen",
            "0.0.0.0:0",
        ],
        fixed_token(),
    )
    .await
    .err()
    .expect("non-loopback without a relay token is refused");
    assert!(
        err.contains("LIVESTREAM_RELAY_TOKEN") && err.contains("--insecure-open"),
        "{err}"
    );
    let err = RelayUnderTest::try_start(
        &["--upstream", "http://127.0.0.1:9/api/1/stream/x"],
        Secrets::default(),
    )
    .await
    .err()
    .expect("no upstream token");
    assert!(err.contains("LIVESTREAM_TOKEN"), "{err}");
    let err = RelayUnderTest::try_start(
        &[
            "--upstream",
            "http://127.0.0.1:9/api/1/stream/x",
            "--max-connections",
            "9",
        ],
        fixed_token(),
    )
    .await
    .err()
    .expect("the core validates the options");
    assert!(
        err.contains("maxConnections") && err.contains("--max-connections"),
        "{err}"
    );

    let emu = Emu::start(&["--seed", "8", "--rate", "50"]).await;
    let www = std::env::temp_dir().join(format!("relay-www-{}", std::process::id()));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(
        www.join("index.html"),
        "<script type=\"importmap\">{}</script><script type=\"module\" src=\"app.js\"></script>",
    )
    .unwrap();
    let secrets = Secrets {
        relay_token: Some("downstream-secret".into()),
        ..fixed_token()
    };
    let relay = RelayUnderTest::start(
        &[
            "--upstream",
            &emu.url("demo"),
            "--allow-origin",
            "http://good.example",
            "--www",
            www.to_str().unwrap(),
        ],
        secrets,
    )
    .await;
    const OK: (&str, &str) = ("Authorization", "Bearer downstream-secret");
    for path in ["/api/1/stream/demo", "/metrics", "/status"] {
        let r = relay.get(path, &[]).await;
        assert_eq!(r.status, 401, "{path} without a token");
        assert!(r.header("www-authenticate").is_some());
        let r = relay
            .get(path, &[("Authorization", "Bearer downstream-secreT")])
            .await;
        assert_eq!(r.status, 401, "{path} with a wrong token");
    }
    let r = relay.get("/api/1/stream/demo", &[OK]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = relay
        .get(
            "/api/1/stream/demo",
            &[OK, ("Origin", "http://evil.example")],
        )
        .await;
    assert_eq!(r.status, 403);
    let body = String::from_utf8(r.body().await.unwrap()).unwrap();
    assert!(
        body.contains("--allow-origin http://evil.example"),
        "{body}"
    );
    let r = relay
        .get(
            "/api/1/stream/demo",
            &[OK, ("Origin", "http://good.example")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://good.example")
    );
    let same = format!("http://{}", relay.addr);
    let r = relay.get("/status", &[OK, ("Origin", &same)]).await;
    assert_eq!(r.status, 200, "same origin needs nothing");
    let addr = relay.addr;
    let pre = |origin: &'static str| async move {
        let h = [
            ("Origin", origin),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ];
        send(addr, "OPTIONS", "/api/1/stream/demo", &h, b"").await
    };
    let r = pre("http://good.example").await;
    assert_eq!(r.status, 204);
    assert!(r
        .header("access-control-allow-headers")
        .unwrap()
        .contains("authorization"));
    assert_eq!(pre("http://evil.example").await.status, 403);
    // Static files: open, with strict headers; nothing outside the directory.
    let r = relay.get("/", &[]).await;
    assert_eq!(r.status, 200);
    let csp = r.header("content-security-policy").unwrap().to_string();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("'sha256-"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(relay.get("/%2e%2e/etc/passwd", &[]).await.status, 403);
    assert_eq!(relay.get("/%2e%2e%2fCargo.toml", &[]).await.status, 403);
    assert_eq!(relay.get("/missing.js", &[]).await.status, 404);
    relay.stop().await;
    emu.stop().await;
    std::fs::remove_dir_all(&www).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_clients_get_503() {
    let emu = Emu::start(&["--seed", "10", "--rate", "50"]).await;
    let relay = RelayUnderTest::start(
        &["--upstream", &emu.url("demo"), "--max-clients", "2"],
        fixed_token(),
    )
    .await;
    let mut a = relay.stream("demo", true).await;
    let _b = relay.stream("demo", false).await;
    let r = relay.get("/api/1/stream/demo", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("5"));
    let body = String::from_utf8(r.body().await.unwrap()).unwrap();
    assert!(body.contains("--max-clients"), "{body}");
    a.take(3).await;
    relay.stop().await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_tell_the_upstream_state() {
    let emu = Emu::start(&["--seed", "9", "--rate", "100", "--stream", "demo"]).await;
    let relay = RelayUnderTest::start(
        &[
            "--upstream",
            &emu.url("demo"),
            "--upstream",
            &emu.url("gone"),
            "--reconnect-delay-ms",
            "200",
        ],
        fixed_token(),
    )
    .await;
    let mut c = relay.stream("demo", true).await;
    c.take(20).await;
    let deadline = tokio::time::Instant::now() + T;
    let (code, text) = loop {
        let (code, text) = relay.text("/healthz", &[]).await;
        if code == 503 || tokio::time::Instant::now() > deadline {
            break (code, text);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, 503, "{text}");
    assert!(
        text.contains("upstream gone failed") && text.contains("404"),
        "{text}"
    );
    let (_, m) = relay.text("/metrics", &[]).await;
    for want in [
        "livestream_relay_upstream_slot_state{stream=\"demo\",slot=\"0\",state=\"open\"} 1",
        "livestream_relay_upstream_slot_state{stream=\"gone\",slot=\"0\",state=\"failed\"} 1",
        "livestream_relay_upstream_failed{stream=\"gone\"} 1",
        "livestream_relay_upstream_responses_total{stream=\"gone\",code=\"404\"} 1",
        "livestream_relay_upstream_responses_total{stream=\"demo\",code=\"200\"} 1",
        "livestream_relay_upstream_responses_total{stream=\"demo\",code=\"409\"} 0",
        "livestream_relay_clients{stream=\"demo\"} 1",
        "livestream_relay_clients_cut_total{stream=\"demo\"} 0",
        "livestream_relay_token_renewals_total 0",
        "livestream_relay_up 0",
        "# TYPE livestream_relay_records_in_total counter",
    ] {
        assert!(m.contains(want), "missing {want:?} in\n{m}");
    }
    assert!(
        relay
            .metric("livestream_relay_records_in_total{stream=\"demo\"}")
            .await
            >= 20.0
    );
    assert!(
        relay
            .metric("livestream_relay_bytes_in_total{stream=\"demo\"}")
            .await
            > 1000.0
    );
    let (code, status) = relay.text("/status", &[]).await;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["healthy"], false);
    assert_eq!(v["streams"][0]["slots"][0]["state"], "open");
    assert_eq!(v["streams"][1]["slots"][0]["httpStatus"], 404);
    relay.stop().await;
    emu.stop().await;
}
