//! Integration tests: a real emulator on 127.0.0.1:0 and a byte-exact HTTP/1.1 client.

mod common;

use common::*;
use livestream_wasm::core::record::ID_FIELDS;
use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_200_is_chunked_gzip_crlf_records_with_exact_ids() {
    let emu = Emu::start(&["--rate", "200", "--seed", "5"]).await;
    let r = emu.get("/api/1/stream/demo").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let mut recs = r.gzip_records();
    let lines = recs.take(60).await;
    let mut keys = HashSet::new();
    let mut above_2_53 = 0;
    for l in &lines {
        let v: Value = serde_json::from_str(l).expect("a record is JSON");
        assert!(v.is_object());
        for f in ID_FIELDS {
            let exact = raw_u64(l, f).unwrap_or_else(|| panic!("{f} is a bare number in {l}"));
            assert_eq!(v[f].as_u64(), Some(exact), "{f}");
        }
        for f in [
            "reportSuite",
            "timeGMT",
            "receivedTimeGMT",
            "pageName",
            "pageURL",
            "referrer",
            "geoCountry",
            "geoCity",
            "browser",
            "operatingSystem",
            "ip",
            "evars",
            "props",
            "events",
            "products",
            "bot",
            "truncated",
            "visIdType",
        ] {
            assert!(v.get(f).is_some(), "{f} missing in {l}");
        }
        let k = hit_key(l);
        assert!(keys.insert(k), "duplicate hit id {k:?} in a fresh stream");
        if k.0 > 1 << 53 {
            above_2_53 += 1;
        }
    }
    assert!(above_2_53 > 40, "ids mostly above 2^53: {above_2_53}");
    // Every LF of the decoded stream belongs to a CRLF.
    for (i, b) in recs.raw.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && recs.raw[i - 1] == b'\r', "bare LF at {i}");
        }
    }
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_302_then_follow_with_auth() {
    let emu = Emu::start(&["--redirect", "--rate", "100"]).await;
    let r = emu.get("/api/1/stream/demo?maxConnections=2").await;
    assert_eq!(r.status, 302);
    let loc = r.header("location").expect("Location").to_string();
    assert_eq!(loc, "/api/1/stream/demo?maxConnections=2&_lb=1");
    // The redirected request must carry Authorization again.
    let r = emu.send("GET", &loc, &[GZIP], b"").await;
    assert_eq!(r.status, 401);
    let r = emu.get(&loc).await;
    assert_eq!(r.status, 200);
    let mut recs = r.gzip_records();
    recs.record().await;
    let s = emu.stats().await;
    assert_eq!(s["connections"][0]["maxConnections"], 2);
    // Without a query the marker is the whole query.
    let r = emu.get("/api/1/stream/other").await;
    assert_eq!(r.header("location"), Some("/api/1/stream/other?_lb=1"));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_with_a_description() {
    let emu = Emu::start(&[]).await;
    for (q, needle) in [
        ("maxConnections=0", "maxConnections"),
        ("maxConnections=9", "maxConnections"),
        ("maxConnections=1.5", "maxConnections"),
        ("smoothing=1&smoothingBucketSize=0", "smoothingBucketSize"),
        ("smoothingBucketSize=7201", "smoothingBucketSize"),
        ("smoothing=yes", "smoothing"),
        ("reset=middle", "reset"),
    ] {
        let r = emu.get(&format!("/api/1/stream/demo?{q}")).await;
        assert_eq!(r.status, 400, "{q}");
        let d = error_description(r).await;
        assert!(d.contains(needle), "{q}: {d}");
    }
    let s = emu.stats().await;
    assert_eq!(s["status_counts"]["400"], 7);
    assert_eq!(s["connections"].as_array().unwrap().len(), 0);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_401_and_api_key_403() {
    let emu = Emu::start(&["--token", "s3cret", "--api-key", "client-id"]).await;
    let key = ("x-api-key", "client-id");
    for headers in [
        vec![GZIP, key],
        vec![GZIP, key, ("Authorization", "Basic dTpw")],
        vec![GZIP, key, ("Authorization", "Bearer wrong")],
        vec![GZIP, key, ("Authorization", "Bearer ")],
    ] {
        let r = emu.send("GET", "/api/1/stream/demo", &headers, b"").await;
        assert_eq!(r.status, 401, "{headers:?}");
        assert!(r.header("www-authenticate").is_some());
        let body = r.body().await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("\"error\":\"unauthorized\""));
    }
    let good = ("Authorization", "Bearer s3cret");
    let r = emu
        .send("GET", "/api/1/stream/demo", &[GZIP, good], b"")
        .await;
    assert_eq!(r.status, 403);
    let r = emu
        .send(
            "GET",
            "/api/1/stream/demo",
            &[GZIP, good, ("x-api-key", "nope")],
            b"",
        )
        .await;
    assert_eq!(r.status, 403);
    let r = emu
        .send("GET", "/api/1/stream/demo", &[GZIP, good, key], b"")
        .await;
    assert_eq!(r.status, 200);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_405_versions_505_names_404() {
    let emu = Emu::start(&["--stream", "known"]).await;
    for m in ["POST", "PUT", "DELETE", "HEAD"] {
        let r = emu.send(m, "/api/1/stream/known", STD, b"").await;
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("GET, OPTIONS"));
    }
    let r = Request {
        version: "HTTP/1.0",
        headers: STD,
        ..Request::new("GET", "/api/1/stream/known")
    }
    .send(emu.addr)
    .await;
    assert_eq!(r.status, 505);
    let r = emu.get("/api/1/stream/unknown").await;
    assert_eq!(r.status, 404);
    assert!(error_description(r).await.contains("unknown"));
    let r = emu.get("/api/1/stream/").await;
    assert_eq!(r.status, 404);
    let r = emu.get("/api/2/stream/known").await;
    assert_eq!(r.status, 404);
    assert!(error_description(r).await.contains("/api/1/stream/{name}"));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_gzip_406() {
    let emu = Emu::start(&[]).await;
    for ae in [
        None,
        Some("identity"),
        Some("gzip;q=0, identity"),
        Some("br, deflate"),
    ] {
        let mut h = vec![AUTH];
        if let Some(v) = ae {
            h.push(("Accept-Encoding", v));
        }
        let r = emu.send("GET", "/api/1/stream/demo", &h, b"").await;
        assert_eq!(r.status, 406, "{ae:?}");
        assert!(error_description(r).await.contains("gzip"));
    }
    let r = emu
        .send(
            "GET",
            "/api/1/stream/demo",
            &[AUTH, ("Accept-Encoding", "deflate, GZIP;q=0.5")],
            b"",
        )
        .await;
    assert_eq!(r.status, 200);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_409_when_max_connections_differs() {
    let emu = Emu::start(&[]).await;
    let a = emu.get("/api/1/stream/demo?maxConnections=2").await;
    assert_eq!(a.status, 200);
    let b = emu.get("/api/1/stream/demo?maxConnections=1").await;
    assert_eq!(b.status, 409);
    let d = error_description(b).await;
    assert!(
        d.contains("maxConnections=1 differs from the value 2"),
        "{d}"
    );
    // The same value is fine.
    let c = emu.get("/api/1/stream/demo?maxConnections=2").await;
    assert_eq!(c.status, 200);
    drop((a, c));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_409_when_too_many() {
    let emu = Emu::start(&[]).await;
    let a = emu.get("/api/1/stream/demo").await;
    assert_eq!(a.status, 200);
    let b = emu.get("/api/1/stream/demo?maxConnections=1").await;
    assert_eq!(b.status, 409);
    assert_eq!(
        b.header("retry-after"),
        None,
        "no held slot: no meaningful Retry-After"
    );
    let d = error_description(b).await;
    assert!(d.contains("1 connection(s) open"), "{d}");
    // Other streams are independent.
    let c = emu.get("/api/1/stream/other").await;
    assert_eq!(c.status, 200);
    let s = emu.stats().await;
    assert_eq!(s["status_counts"]["409"], 1);
    assert_eq!(s["streams"]["demo"]["live"], 1);
    assert_eq!(s["concurrent_peak"], 2);
    drop((a, c));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_traffic_503() {
    let emu = Emu::start(&["--no-traffic"]).await;
    let r = emu.get("/api/1/stream/demo").await;
    assert_eq!(r.status, 503);
    let d = error_description(r).await;
    assert!(d.contains("no hits have been received"), "{d}");
    emu.stop().await;

    // The same through a script, and back.
    let emu = Emu::start(&[]).await;
    let (st, _) = emu
        .admin("PUT", "/admin/streams/demo", Some(r#"{"no_traffic":true}"#))
        .await;
    assert_eq!(st, 200);
    assert_eq!(emu.get("/api/1/stream/demo").await.status, 503);
    assert_eq!(emu.get("/api/1/stream/other").await.status, 200);
    emu.admin("DELETE", "/admin/streams/demo", None).await;
    assert_eq!(emu.get("/api/1/stream/demo").await.status, 200);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_slot_refuses_early_reconnect_then_admits() {
    let hold = 1.5;
    let emu = Emu::start(&["--rate", "100", "--slot-hold-secs", "1.5"]).await;
    let mut recs = emu.get("/api/1/stream/demo").await.gzip_records();
    recs.take(3).await;
    drop(recs); // the client goes away
    let s = emu
        .wait_stats("the server to notice the drop", |s| {
            s["connections"][0]["closed_ms"].is_u64()
        })
        .await;
    assert_eq!(s["connections"][0]["close_reason"], "client_closed");
    let closed_ms = s["connections"][0]["closed_ms"].as_u64().unwrap();

    let r = emu.get("/api/1/stream/demo").await;
    assert_eq!(r.status, 409, "a reconnect inside the hold is refused");
    let ra: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&ra), "{ra}");
    let d = error_description(r).await;
    assert!(d.contains("held"), "{d}");
    let s = emu.stats().await;
    assert!(s["early_reconnects_refused"].as_u64().unwrap() >= 1);
    assert_eq!(s["streams"]["demo"]["held"], 1);

    // Keep trying politely: it succeeds once the hold is over, never before.
    let start = Instant::now();
    let ok = loop {
        let r = emu.get("/api/1/stream/demo").await;
        if r.status == 200 {
            break r;
        }
        assert_eq!(r.status, 409);
        assert!(start.elapsed() < T, "never admitted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut recs = ok.gzip_records();
    recs.record().await;
    let s = emu.stats().await;
    let opened = s["connections"][1]["opened_ms"].as_u64().unwrap();
    assert!(
        opened >= closed_ms + (hold * 1000.0) as u64 - 5,
        "admitted {opened} ms, dropped {closed_ms} ms"
    );
    assert_eq!(s["connections"][1]["resumed"], true);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_status_503_variant() {
    let emu = Emu::start(&["--slot-hold-secs", "30", "--early-status", "503"]).await;
    let r = emu.get("/api/1/stream/demo").await;
    assert_eq!(r.status, 200);
    let (_, v) = emu.admin("POST", "/admin/drop", None).await;
    assert_eq!(v["dropped"], 1);
    let r2 = emu.get("/api/1/stream/demo").await;
    assert_eq!(r2.status, 503);
    let ra: u64 = r2.header("retry-after").unwrap().parse().unwrap();
    assert!((25..=30).contains(&ra), "{ra}");
    drop(r);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_resends_the_last_records_then_continues() {
    let emu = Emu::start(&["--rate", "100", "--slot-hold-secs", "0", "--resend", "3"]).await;
    let mut a = emu.get("/api/1/stream/demo").await.gzip_records();
    let mut seen = a.take(10).await;
    // Quiesce: stop generation, read everything delivered, then drop from the server side.
    emu.admin("PUT", "/admin/streams/demo", Some(r#"{"rate":0}"#))
        .await;
    loop {
        let s = emu.stats().await;
        let sent = s["connections"][0]["records_sent"].as_u64().unwrap() as usize;
        if seen.len() >= sent {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if emu.stats().await["connections"][0]["records_sent"] == sent {
                break;
            }
            continue;
        }
        seen.push(a.record().await);
    }
    emu.admin("POST", "/admin/drop", None).await;
    assert_eq!(a.until_end().await.len(), 0);
    assert_eq!(a.ended, Some(Err(BodyError::Abrupt)), "a drop is abrupt");

    emu.admin("PUT", "/admin/streams/demo", Some(r#"{"rate":100}"#))
        .await;
    let mut b = emu.get("/api/1/stream/demo").await.gzip_records();
    let again = b.take(8).await;
    let old: Vec<(u64, u64)> = seen.iter().map(|l| hit_key(l)).collect();
    let new: Vec<(u64, u64)> = again.iter().map(|l| hit_key(l)).collect();
    assert_eq!(
        &new[..3],
        &old[old.len() - 3..],
        "the last 3 records come again"
    );
    for k in &new[3..] {
        assert!(!old.contains(k), "then only new records");
    }
    let s = emu.stats().await;
    assert_eq!(s["connections"][1]["resumed"], true);
    assert_eq!(s["connections"][1]["resent"], 3);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_smallest_replays_the_backlog() {
    let emu = Emu::start(&["--rate", "200", "--slot-hold-secs", "0"]).await;
    let mut a = emu.get("/api/1/stream/demo").await.gzip_records();
    let first = a.take(20).await;
    emu.admin("POST", "/admin/drop", None).await;
    drop(a);
    let mut b = emu
        .get("/api/1/stream/demo?reset=smallest")
        .await
        .gzip_records();
    // The oldest retained record may predate the first connection by a record or two.
    let replay: Vec<(u64, u64)> = b.take(25).await.iter().map(|l| hit_key(l)).collect();
    let first: Vec<(u64, u64)> = first.iter().map(|l| hit_key(l)).collect();
    let at = replay
        .iter()
        .position(|k| *k == first[0])
        .expect("the first connection's first record is replayed");
    assert!(at <= 2, "replay starts at the oldest retained record: {at}");
    assert!(
        replay[at..].iter().zip(&first).all(|(a, b)| a == b),
        "same order"
    );
    let s = emu.stats().await;
    assert_eq!(s["connections"][1]["reset"], "smallest");
    assert_eq!(s["connections"][1]["resumed"], false);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_are_partitioned_over_connections() {
    let emu = Emu::start(&["--rate", "300"]).await;
    let mut a = emu
        .get("/api/1/stream/demo?maxConnections=2")
        .await
        .gzip_records();
    let mut b = emu
        .get("/api/1/stream/demo?maxConnections=2")
        .await
        .gzip_records();
    let vis = |l: &String| {
        (
            raw_u64(l, "visIdHigh").unwrap(),
            raw_u64(l, "visIdLow").unwrap(),
        )
    };
    let va: HashSet<_> = a.take(60).await.iter().map(vis).collect();
    let vb: HashSet<_> = b.take(60).await.iter().map(vis).collect();
    assert!(va.is_disjoint(&vb), "a visitor's hits go to one connection");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoothing_is_accepted_and_delivers() {
    let emu = Emu::start(&["--rate", "100"]).await;
    let mut r = emu
        .get("/api/1/stream/demo?smoothing=1&smoothingBucketSize=1")
        .await
        .gzip_records();
    r.take(5).await;
    assert_eq!(
        emu.stats().await["connections"][0]["smoothing_bucket_secs"],
        1
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_body_and_canned_responses() {
    let emu = Emu::start(&[]).await;
    let script = r#"{
        "responses": [
            {"status": 409, "error_description": "scripted conflict", "retry_after": 2},
            {"status": 404},
            {"status": 302, "location": "/elsewhere"}
        ],
        "body": {"lines": ["{\"hitIdHigh\":18446744073709551615,\"hitIdLow\":1}", "not json", "", "{\"a\":\"ü東\"}"],
                 "chunk_size": 7, "then": "close"}
    }"#;
    let (st, v) = emu.admin("PUT", "/admin/streams/demo", Some(script)).await;
    assert_eq!(st, 200, "{v}");
    let (_, got) = emu.admin("GET", "/admin/streams/demo", None).await;
    assert_eq!(got["script"]["responses"].as_array().unwrap().len(), 3);

    let r = emu.get("/api/1/stream/demo").await;
    assert_eq!(r.status, 409);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(error_description(r).await, "scripted conflict");
    let r = emu.get("/api/1/stream/demo").await;
    assert_eq!(r.status, 404);
    let r = emu.get("/api/1/stream/demo").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/elsewhere"));

    let mut r = emu.get("/api/1/stream/demo").await;
    assert_eq!(r.status, 200);
    let mut chunks = Vec::new();
    while let Some(c) = r.next_chunk(T).await.expect("clean end") {
        chunks.push(c);
    }
    assert!(chunks.len() > 3);
    assert!(
        chunks[..chunks.len() - 1].iter().all(|c| c.len() == 7),
        "chunk_size bytes of gzip per chunk"
    );
    let gz: Vec<u8> = chunks.concat();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
    assert_eq!(
        text,
        "{\"hitIdHigh\":18446744073709551615,\"hitIdLow\":1}\r\nnot json\r\n\r\n{\"a\":\"ü東\"}\r\n"
    );
    emu.wait_stats("the scripted connection to close", |s| {
        s["connections"][0]["close_reason"] == "script_done"
    })
    .await;
    assert_eq!(emu.stats().await["connections"][0]["records_sent"], 4);
    // The script is used up: the next 200 is generated again (the held slot is freed first).
    emu.admin(
        "PUT",
        "/admin/streams/demo",
        Some(r#"{"slot_hold_secs":0}"#),
    )
    .await;
    emu.admin("POST", "/admin/reset", None).await;
    let mut r = emu.get("/api/1/stream/demo").await.gzip_records();
    assert!(r.record().await.contains("reportSuite"));

    // Bad scripts are refused with a reason.
    let (st, v) = emu
        .admin(
            "PUT",
            "/admin/streams/demo",
            Some(r#"{"body":{"lines":[],"chunk_size":0}}"#),
        )
        .await;
    assert_eq!(st, 400);
    assert!(v["error_description"]
        .as_str()
        .unwrap()
        .contains("chunk_size"));
    let (st, v) = emu.admin("PUT", "/admin/streams/demo", Some("{nope")).await;
    assert_eq!(st, 400);
    assert!(v["error_description"]
        .as_str()
        .unwrap()
        .contains("invalid script"));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_body_raw_and_hold() {
    let emu = Emu::start(&[]).await;
    emu.admin(
        "PUT",
        "/admin/streams/demo",
        Some(r#"{"body":{"lines":["{\"x\":1}","{\"x\":2}"],"gzip":false,"chunk_size":1,"chunk_delay_ms":1,"then":"hold"}}"#),
    )
    .await;
    let mut r = emu.get("/api/1/stream/demo").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
    let mut got = Vec::new();
    while got.len() < 18 {
        let c = r.next_chunk(T).await.unwrap().unwrap();
        assert_eq!(c.len(), 1);
        got.extend(c);
    }
    assert_eq!(got, b"{\"x\":1}\r\n{\"x\":2}\r\n");
    // Held open: nothing more, no end.
    assert_eq!(
        r.next_chunk(Duration::from_millis(300)).await,
        Err(BodyError::Timeout)
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_crlf_when_idle() {
    let emu = Emu::start(&["--rate", "0", "--keepalive-secs", "0.2"]).await;
    let mut r = emu.get("/api/1/stream/demo").await.gzip_records();
    for _ in 0..2 {
        assert_eq!(r.next(T).await.as_deref(), Some(""));
    }
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_headers() {
    let emu = Emu::start(&[]).await;
    let r = emu
        .send(
            "OPTIONS",
            "/api/1/stream/demo",
            &[
                ("Origin", "http://localhost:5173"),
                ("Access-Control-Request-Method", "GET"),
            ],
            b"",
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, HEAD, OPTIONS")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization, x-api-key, content-type")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    // The admin API is not for other origins (see tests/hardening.rs).
    let r = emu.send("GET", "/admin/stats", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    for path in ["/api/1/stream/demo", "/healthz", "/nope"] {
        let r = emu.send("GET", path, &[], b"").await;
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{path}");
        assert_eq!(
            r.header("access-control-expose-headers"),
            Some("Retry-After, Location, Content-Encoding"),
            "{path}"
        );
    }
    let r = emu.send("GET", "/healthz", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body().await.unwrap(), b"ok");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_with_types_and_no_traversal() {
    let base = std::env::temp_dir().join(format!("emu-static-{}", std::process::id()));
    let www = base.join("www");
    let pkg = base.join("pkg");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(www.join("index.html"), "<h1>demo</h1>").unwrap();
    std::fs::write(www.join("app.mjs"), "export {}").unwrap();
    std::fs::write(www.join("sub/index.html"), "sub").unwrap();
    std::fs::write(pkg.join("x_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(pkg.join("x.d.ts"), "export {}").unwrap();
    std::fs::write(base.join("secret.txt"), "SECRET").unwrap();
    let www_s = www.to_str().unwrap().to_string();
    let mount = format!("/pkg={}", pkg.to_str().unwrap());
    let emu = Emu::start(&["--www", &www_s, "--mount", &mount]).await;

    for (path, status, ty, body) in [
        (
            "/",
            200,
            Some("text/html; charset=utf-8"),
            Some(&b"<h1>demo</h1>"[..]),
        ),
        (
            "/app.mjs",
            200,
            Some("text/javascript; charset=utf-8"),
            None,
        ),
        (
            "/sub/",
            200,
            Some("text/html; charset=utf-8"),
            Some(&b"sub"[..]),
        ),
        ("/pkg/x_bg.wasm", 200, Some("application/wasm"), None),
        ("/pkg/x.d.ts", 200, Some("text/plain; charset=utf-8"), None),
        ("/missing.js", 404, None, None),
        ("/sub", 301, None, None),
        ("/pkg", 301, None, None),
    ] {
        let r = emu.send("GET", path, &[], b"").await;
        assert_eq!(r.status, status, "{path}");
        if let Some(t) = ty {
            assert_eq!(r.header("content-type"), Some(t), "{path}");
            assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        }
        if let Some(b) = body {
            assert_eq!(r.body().await.unwrap(), b, "{path}");
        }
    }
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/pkg/../../secret.txt",
        "/pkg/%2E%2E%5Csecret.txt",
        "/..\\secret.txt",
    ] {
        let r = emu.send("GET", path, &[], b"").await;
        assert!(
            r.status == 403 || r.status == 404 || r.status == 400,
            "{path}: {}",
            r.status
        );
        let b = r.body().await.unwrap();
        assert!(
            !String::from_utf8_lossy(&b).contains("SECRET"),
            "{path} leaked"
        );
    }
    let r = emu.send("POST", "/app.mjs", &[], b"").await;
    assert_eq!(r.status, 405);
    emu.stop().await;
    let _ = std::fs::remove_dir_all(&base);
}

/// One run of the chaos scenario: two connections in sequence, each read until the chaos
/// ends it. Returns the decoded bytes and the fault list of each.
async fn chaos_run(seed: &str) -> Vec<(Vec<u8>, Value)> {
    let emu = Emu::start(&[
        "--seed",
        seed,
        "--epoch",
        "1700000000",
        "--rate",
        "300",
        "--chaos",
        "--chaos-rate",
        "0.3",
        "--chaos-stall-secs",
        "0.05",
        "--slot-hold-secs",
        "0",
    ])
    .await;
    let mut out = Vec::new();
    for i in 0..2 {
        let mut r = emu.get("/api/1/stream/demo").await.gzip_records();
        let lines = r.until_end().await;
        assert!(lines.len() < 2000);
        assert_eq!(
            r.ended,
            Some(Err(BodyError::Abrupt)),
            "ended by a chaos drop"
        );
        let s = emu
            .wait_stats("the connection to close", |s| {
                s["connections"][i]["closed_ms"].is_u64()
            })
            .await;
        assert_eq!(s["connections"][i]["close_reason"], "chaos_drop");
        out.push((r.raw, s["connections"][i]["faults"].clone()));
    }
    emu.stop().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_is_reproducible_under_a_seed() {
    let a = chaos_run("7").await;
    let b = chaos_run("7").await;
    for i in 0..2 {
        assert_eq!(a[i].1, b[i].1, "same faults for connection {i}");
        assert!(a[i].0 == b[i].0, "same decoded bytes for connection {i}");
    }
    let kinds: HashSet<String> = a
        .iter()
        .flat_map(|(_, f)| f.as_array().unwrap().iter().map(|x| x["kind"].to_string()))
        .collect();
    assert!(kinds.contains("\"drop\""));
    let text = String::from_utf8_lossy(&a[0].0).into_owned() + &String::from_utf8_lossy(&a[1].0);
    if kinds.contains("\"malformed\"") {
        let bad = text
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .filter(|l| !serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object()))
            .count();
        assert!(bad >= 1);
    }
    if kinds.contains("\"oversized\"") {
        assert!(text.split("\r\n").any(|l| l.len() > 2_000_000));
    }
    let c = chaos_run("8").await;
    assert!(
        c[0].0 != a[0].0 || c[0].1 != a[0].1,
        "another seed, other faults"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_drop_stats_reset() {
    let emu = Emu::start(&["--rate", "100", "--slot-hold-secs", "5"]).await;
    let mut a = emu.get("/api/1/stream/a").await.gzip_records();
    let mut b = emu.get("/api/1/stream/b").await.gzip_records();
    a.record().await;
    b.record().await;
    let s = emu.stats().await;
    assert_eq!(s["streams"]["a"]["live"], 1);
    assert_eq!(s["streams"]["b"]["live"], 1);
    assert_eq!(s["connections"].as_array().unwrap().len(), 2);
    assert_eq!(s["requests"], 2);
    assert_eq!(s["status_counts"]["200"], 2);
    assert!(s["now_ms"].is_u64());

    let (st, v) = emu.admin("POST", "/admin/drop?stream=a", None).await;
    assert_eq!((st, v["dropped"].as_u64()), (200, Some(1)));
    a.until_end().await;
    assert_eq!(a.ended, Some(Err(BodyError::Abrupt)));
    let s = emu.stats().await;
    assert_eq!(s["streams"]["a"]["live"], 0);
    assert_eq!(s["streams"]["a"]["held"], 1);
    assert_eq!(s["streams"]["b"]["live"], 1);
    let sa = emu.admin("GET", "/admin/stats?stream=a", None).await.1;
    assert_eq!(sa["connections"].as_array().unwrap().len(), 1);
    assert_eq!(sa["connections"][0]["close_reason"], "admin_drop");
    assert!(sa["streams"].get("b").is_none());
    // The held slot refuses a reconnect and counts it.
    assert_eq!(emu.get("/api/1/stream/a").await.status, 409);
    assert_eq!(emu.stats().await["early_reconnects_refused"], 1);

    let (st, _) = emu.admin("POST", "/admin/reset", None).await;
    assert_eq!(st, 200);
    b.until_end().await;
    assert_eq!(b.ended, Some(Err(BodyError::Abrupt)));
    let s = emu.stats().await;
    assert_eq!(s["requests"], 0);
    assert_eq!(s["connections"].as_array().unwrap().len(), 0);
    assert!(s["streams"].as_object().unwrap().is_empty());
    // Held slots are forgotten too.
    assert_eq!(emu.get("/api/1/stream/a").await.status, 200);

    assert_eq!(emu.admin("GET", "/admin/drop", None).await.0, 405);
    assert_eq!(emu.admin("GET", "/admin/nope", None).await.0, 404);
    emu.stop().await;
}

#[test]
fn binary_prints_the_address_line_and_exits_on_sigterm() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_livestream-emulator"))
        .args(["--listen", "127.0.0.1:0", "--quiet", "--seed", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the binary");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim_end()
        .strip_prefix("livestream-emulator listening on http://")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(
        &mut tcp,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut tcp, &mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("ok"),
        "{resp}"
    );
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let bad = Command::new(env!("CARGO_BIN_EXE_livestream-emulator"))
        .args(["--listen", "127.0.0.1:0", "--chaos-rate", "2"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--chaos-rate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_are_forgotten_beyond_the_cap() {
    let emu = Emu::start(&["--slot-hold-secs", "0", "--rate", "1"]).await;
    let mut keep = emu.get("/api/1/stream/keep").await;
    assert_eq!(keep.status, 200);
    for i in 0..260 {
        let r = emu.get(&format!("/api/1/stream/s{i}")).await;
        assert_eq!(r.status, 200, "s{i}");
        // A scripted hold is not needed: closing at once makes the stream idle.
        drop(r);
        emu.admin("POST", &format!("/admin/drop?stream=s{i}"), None)
            .await;
    }
    let s = emu.stats().await;
    let streams = s["streams"].as_object().unwrap();
    assert!(streams.len() <= 256 + 1, "{}", streams.len());
    assert_eq!(
        streams["keep"]["live"], 1,
        "a stream in use is never forgotten"
    );
    assert!(keep.next_chunk(Duration::from_millis(10)).await != Err(BodyError::Abrupt));
    emu.stop().await;
}
