//! Scenario and property tests of the sans-IO client, in virtual time.

mod support;

use livestream_wasm::core::{ErrorCode, Event, Options, ResponseHead, SlotState};
use proptest::prelude::*;
use support::{crc32, options, record, Harness, URL};

const DELAY: u64 = 60_000;
const JITTER: u64 = 15_000;

#[test]
fn first_connect_sends_parameters_and_reset_only_once() {
    let mut h = Harness::new(Options {
        reset: Some("largest".into()),
        max_connections: Some(2.0),
        connections: Some(1.0),
        ..options()
    });
    h.start();
    assert_eq!(h.connects.len(), 1);
    assert_eq!(
        h.last_connect().url,
        format!("{URL}?maxConnections=2&reset=largest")
    );
    assert_eq!(h.last_status(0).state, SlotState::Connecting);
    h.respond(0, 503);
    h.fire_next_timer();
    // Never opened yet: a retry of the first connection still asks for the reset.
    assert_eq!(
        h.last_connect().url,
        format!("{URL}?maxConnections=2&reset=largest")
    );
    h.respond(0, 200);
    h.end(0);
    h.fire_next_timer();
    assert_eq!(h.last_connect().url, format!("{URL}?maxConnections=2"));
}

#[test]
fn records_are_delivered_with_exact_ids_once() {
    let mut h = Harness::new(options());
    h.start();
    h.respond(0, 200);
    assert_eq!(h.state(0), SlotState::Open);
    let body = format!(
        "{}\r\n\r\n{}\r\n{}\r\n",
        record(2948027281753079808, 4948646782672799561),
        record(u64::MAX, 1),
        record(2948027281753079808, 4948646782672799561)
    );
    h.data(0, body.as_bytes());
    let hits = h.hits();
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(
        hits[0].contains(r#""hitIdHigh":"2948027281753079808","hitIdLow":"4948646782672799561""#)
    );
    assert!(hits[1].contains(r#""hitIdHigh":"18446744073709551615""#));
    assert!(
        hits[1].contains(r#""newField":[1,2,{"x":null}]"#),
        "unknown fields kept"
    );
    let stats = h.client.stats();
    assert_eq!((stats.hits, stats.duplicates), (2, 1));
    let Event::Hits(batch) = h
        .events
        .iter()
        .find(|e| matches!(e, Event::Hits(_)))
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(batch.hit_id_high, vec![2948027281753079808, u64::MAX]);
    assert_eq!(batch.time_gmt, vec![1372782179.0, 1372782179.0]);
    let json = std::str::from_utf8(&batch.json).unwrap();
    // Three JSON arrays back to back: ASCII records (all of them here), Latin-1, wide.
    let [l, w] = batch.regions;
    let ascii = &json[..l];
    assert!(ascii.starts_with("[{") && ascii.ends_with("}]"), "{ascii}");
    assert_eq!((&json[l..w], &json[w..]), ("[]", "[]"));
    for i in 0..batch.len() {
        assert!(batch.record(i).starts_with('{') && batch.record(i).ends_with('}'));
    }
}

#[test]
fn a_record_split_over_chunks_arrives_whole() {
    let mut h = Harness::new(options());
    h.start();
    h.respond(0, 200);
    let body = format!("{}\r\n{}\r\n", record(1, 2), record(3, 4));
    for b in body.as_bytes() {
        h.data(0, std::slice::from_ref(b));
    }
    assert_eq!(h.hits().len(), 2);
}

#[test]
fn end_of_stream_waits_at_least_the_delay_then_reconnects() {
    let mut h = Harness::new(options());
    h.start();
    h.respond(0, 200);
    h.now = 5_000;
    h.end(0);
    let s = h.last_status(0);
    assert_eq!(s.state, SlotState::Waiting);
    let wait = s.retry_in_ms.unwrap();
    assert!((DELAY..=DELAY + JITTER).contains(&wait), "{wait}");
    assert!(
        s.reason.contains("the server ended the stream"),
        "{}",
        s.reason
    );
    assert_eq!(h.client.poll_timeout(), Some(5_000 + wait));
    h.advance(wait - 1);
    assert_eq!(h.connects.len(), 1, "no reconnect before the wait is over");
    h.advance(1);
    assert_eq!(h.connects.len(), 2);
    assert_eq!(h.connects[1].0, 5_000 + wait);
    assert_eq!(h.client.stats().reconnects, 1);
}

#[test]
fn conflict_shows_error_description_and_backs_off() {
    let mut h = Harness::new(options());
    h.start();
    h.respond_with(
        0,
        ResponseHead {
            status: 409,
            body:
                r#"{"error":"conflict","error_description":"2 connections open, maxConnections=1"}"#
                    .into(),
            ..Default::default()
        },
    );
    let e = h.errors()[0];
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(!e.fatal);
    assert_eq!(e.http_status, Some(409));
    assert!(
        e.message.contains("2 connections open, maxConnections=1"),
        "{}",
        e.message
    );
    assert!(e.message.contains("KA-16598"));
    assert_eq!(h.last_status(0).http_status, Some(409));
}

#[test]
fn repeated_failures_grow_the_wait_up_to_the_cap() {
    let mut h = Harness::new(Options {
        reconnect_jitter_ms: Some(0.0),
        ..options()
    });
    h.start();
    let mut waits = Vec::new();
    for _ in 0..7 {
        h.respond(0, 503);
        waits.push(h.last_status(0).retry_in_ms.unwrap());
        h.fire_next_timer();
    }
    assert_eq!(
        waits,
        vec![60_000, 120_000, 240_000, 480_000, 600_000, 600_000, 600_000]
    );
}

#[test]
fn a_long_lived_connection_resets_the_growth() {
    let mut h = Harness::new(Options {
        reconnect_jitter_ms: Some(0.0),
        ..options()
    });
    h.start();
    h.respond(0, 503);
    h.fire_next_timer();
    h.respond(0, 503);
    assert_eq!(h.last_status(0).retry_in_ms, Some(120_000));
    h.fire_next_timer();
    h.respond(0, 200);
    h.advance(30_000);
    h.end(0);
    assert_eq!(
        h.last_status(0).retry_in_ms,
        Some(240_000),
        "30 s open is not stable"
    );
    h.fire_next_timer();
    h.respond(0, 200);
    h.advance(125_000);
    h.fail(0, "reset by peer");
    assert_eq!(
        h.last_status(0).retry_in_ms,
        Some(60_000),
        "2 min open resets the growth"
    );
}

#[test]
fn retry_after_wins_when_longer() {
    let mut h = Harness::new(Options {
        reconnect_jitter_ms: Some(0.0),
        ..options()
    });
    h.start();
    h.respond_with(
        0,
        ResponseHead {
            status: 503,
            retry_after: Some("300".into()),
            ..Default::default()
        },
    );
    assert_eq!(h.last_status(0).retry_in_ms, Some(300_000));
    h.fire_next_timer();
    h.respond_with(
        0,
        ResponseHead {
            status: 409,
            retry_after: Some("5".into()),
            ..Default::default()
        },
    );
    assert_eq!(
        h.last_status(0).retry_in_ms,
        Some(120_000),
        "a shorter Retry-After never shortens the wait"
    );
}

#[test]
fn first_401_retries_at_once_with_a_fresh_token_then_backs_off() {
    let mut h = Harness::new(options());
    h.start();
    h.respond(0, 401);
    assert_eq!(h.connects.len(), 2);
    assert!(h.last_connect().refresh_token);
    assert_eq!(h.connects[1].0, 0, "immediate");
    h.respond(0, 401);
    assert_eq!(h.connects.len(), 2);
    assert_eq!(h.state(0), SlotState::Waiting);
    assert!(h.last_status(0).reason.contains("pass a function as token"));
    h.fire_next_timer();
    assert!(!h.last_connect().refresh_token);
    h.respond(0, 200);
    h.end(0);
    h.fire_next_timer();
    h.respond(0, 401);
    assert!(
        h.last_connect().refresh_token,
        "a 401 after a success gets the immediate retry again"
    );
}

#[test]
fn fatal_status_fails_every_slot_and_stops() {
    let mut h = Harness::new(Options {
        max_connections: Some(3.0),
        ..options()
    });
    h.start();
    assert_eq!(h.connects.len(), 3);
    h.respond(1, 404);
    for slot in 0..3 {
        assert_eq!(h.state(slot), SlotState::Failed);
    }
    let fatal: Vec<_> = h.errors().into_iter().filter(|e| e.fatal).collect();
    assert_eq!(fatal.len(), 1);
    assert_eq!(fatal[0].code, ErrorCode::NotFound);
    assert!(fatal[0].message.contains("90 days"));
    let aborted: Vec<u64> = h.aborts.iter().map(|a| a.1).collect();
    assert_eq!(aborted, vec![h.attempt(0), h.attempt(2)]);
    assert_eq!(h.client.poll_timeout(), None);
    let n = h.connects.len();
    h.advance(3_600_000);
    assert_eq!(h.connects.len(), n);
    assert!(h.client.is_finished());
}

#[test]
fn every_fatal_status_is_fatal() {
    for status in [400, 403, 404, 405, 406, 505, 410] {
        let mut h = Harness::new(options());
        h.start();
        h.respond(0, status);
        assert_eq!(h.state(0), SlotState::Failed, "{status}");
    }
    for status in [409, 429, 500, 502, 503, 504] {
        let mut h = Harness::new(options());
        h.start();
        h.respond(0, status);
        assert_eq!(h.state(0), SlotState::Waiting, "{status}");
    }
}

#[test]
fn redirects_are_followed_at_once_and_bounded() {
    let mut h = Harness::new(options());
    h.start();
    h.respond_with(
        0,
        ResponseHead {
            status: 302,
            location: Some("/lb1/api/1/stream/ep?maxConnections=1".into()),
            ..Default::default()
        },
    );
    assert_eq!(h.connects.len(), 2);
    assert_eq!(
        h.last_connect().url,
        "https://livestream.example/lb1/api/1/stream/ep?maxConnections=1"
    );
    assert_eq!(h.connects[1].0, 0);
    for _ in 0..5 {
        h.respond_with(
            0,
            ResponseHead {
                status: 307,
                location: Some("/again".into()),
                ..Default::default()
            },
        );
    }
    assert_eq!(h.state(0), SlotState::Waiting);
    assert_eq!(h.errors().last().unwrap().code, ErrorCode::TooManyRedirects);
    h.fire_next_timer();
    assert_eq!(
        h.last_connect().url,
        format!("{URL}?maxConnections=1"),
        "reconnects go to the configured URL"
    );
    h.respond_with(
        0,
        ResponseHead {
            status: 302,
            ..Default::default()
        },
    );
    assert_eq!(h.errors().last().unwrap().code, ErrorCode::BadRedirect);
}

#[test]
fn cross_origin_redirect_in_a_browser_is_fatal_and_explained() {
    let mut h = Harness::new(options());
    h.start();
    h.respond_with(
        0,
        ResponseHead {
            status: 401,
            final_url: Some("https://other.example/x".into()),
            ..Default::default()
        },
    );
    assert_eq!(h.state(0), SlotState::Failed);
    let e = h.errors()[0];
    assert_eq!(e.code, ErrorCode::CrossOriginRedirect);
    assert!(
        e.message.contains("Authorization") && e.message.contains("relay"),
        "{}",
        e.message
    );
}

#[test]
fn idle_timeout_turns_silence_into_a_loss_and_keepalives_count() {
    let mut h = Harness::new(Options {
        idle_timeout_ms: Some(30_000.0),
        ..options()
    });
    h.start();
    h.respond(0, 200);
    h.advance(20_000);
    h.data(0, b"\r\n");
    h.advance(20_000);
    assert_eq!(h.state(0), SlotState::Open, "a CRLF keep-alive is activity");
    h.advance(10_000);
    assert_eq!(h.state(0), SlotState::Waiting);
    assert_eq!(
        h.aborts.len(),
        1,
        "the shell is told to abort the silent request"
    );
    assert_eq!(h.errors().last().unwrap().code, ErrorCode::IdleTimeout);
    // The late failure of the aborted request is ignored.
    let stale = h.aborts[0].1;
    h.client.handle_failure(stale, "AbortError", h.now);
    h.drain();
    assert_eq!(h.errors().len(), 1);
}

#[test]
fn idle_timeout_also_covers_waiting_for_headers() {
    let mut h = Harness::new(Options {
        idle_timeout_ms: Some(30_000.0),
        ..options()
    });
    h.start();
    h.advance(30_000);
    assert_eq!(h.state(0), SlotState::Waiting);
    assert!(h.last_status(0).reason.contains("no response"));
}

#[test]
fn close_aborts_emits_closed_once_and_silences_everything() {
    let mut h = Harness::new(Options {
        max_connections: Some(2.0),
        ..options()
    });
    h.start();
    h.respond(0, 200);
    let before = h.events.len();
    h.client.close(h.now);
    h.drain();
    assert_eq!(h.aborts.len(), 2);
    let closed: Vec<_> = h.events[before..].iter().collect();
    assert_eq!(closed.len(), 2);
    assert!(closed
        .iter()
        .all(|e| matches!(e, Event::Status(s) if s.state == SlotState::Closed)));
    h.client.close(h.now);
    h.data(0, format!("{}\r\n", record(1, 1)).as_bytes());
    h.advance(3_600_000);
    assert_eq!(h.events.len(), before + 2, "nothing after close");
    assert_eq!(h.client.poll_timeout(), None);
    assert!(!h.client.start(h.now));
}

#[test]
fn bad_records_are_reported_and_the_next_one_delivered() {
    let mut h = Harness::new(Options {
        max_record_bytes: Some(1000.0),
        ..options()
    });
    h.start();
    h.respond(0, 200);
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(5000));
    let body = format!(
        "not json\r\n{}\r\n{big}\r\n{{\"hitIdHigh\":1,\"hitIdLow\":2,}}\r\n{}\r\n",
        record(1, 1),
        record(2, 2),
    );
    h.data(0, body.as_bytes());
    h.data(
        0,
        b"{\"pageName\":\"caf\xE9\",\"hitIdHigh\":9,\"hitIdLow\":9}\n\n",
    );
    h.data(0, &record(3, 3).as_bytes()[..40]);
    h.end(0);
    let hits = h.hits();
    assert_eq!(hits.len(), 3, "{hits:?}");
    assert!(hits[2].contains("caf\u{FFFD}"));
    let codes: Vec<ErrorCode> = h.errors().iter().map(|e| e.code).collect();
    assert_eq!(
        codes,
        vec![
            ErrorCode::MalformedRecord,
            ErrorCode::OversizedRecord,
            ErrorCode::MalformedRecord,
            ErrorCode::InvalidUtf8,
            ErrorCode::TruncatedRecord,
            ErrorCode::StreamEnded
        ]
    );
    let s = h.client.stats();
    assert_eq!(
        (s.malformed, s.oversized, s.invalid_utf8, s.truncated),
        (2, 1, 1, 1)
    );
    assert!(h.errors()[0].message.contains("not json"));
    assert!(
        h.errors()[1].message.contains("5008 bytes"),
        "{}",
        h.errors()[1].message
    );
}

#[test]
fn duplicates_across_a_reconnect_are_dropped() {
    let mut h = Harness::new(options());
    h.start();
    h.respond(0, 200);
    let first: String = (0..10).map(|i| format!("{}\r\n", record(100, i))).collect();
    h.data(0, first.as_bytes());
    h.fail(0, "reset");
    h.fire_next_timer();
    h.respond(0, 200);
    let resent: String = (7..13).map(|i| format!("{}\r\n", record(100, i))).collect();
    h.data(0, resent.as_bytes());
    assert_eq!(h.hits().len(), 13);
    assert_eq!(h.client.stats().duplicates, 3);
}

#[test]
fn records_without_ids_are_delivered_and_not_deduplicated() {
    let mut h = Harness::new(options());
    h.start();
    h.respond(0, 200);
    h.data(0, b"{\"a\":1}\r\n{\"a\":1}\r\n");
    assert_eq!(h.hits(), vec!["{\"a\":1}", "{\"a\":1}"]);
}

#[test]
fn gzip_body_is_inflated_in_the_core() {
    use miniz_oxide::deflate::compress_to_vec;
    let text = format!("{}\r\n{}\r\n", record(5, 6), record(7, 8));
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    gz.extend(compress_to_vec(text.as_bytes(), 6));
    gz.extend(crc32(text.as_bytes()).to_le_bytes());
    gz.extend((text.len() as u32).to_le_bytes());
    let mut h = Harness::new(options());
    h.start();
    h.respond(0, 200);
    for chunk in gz.chunks(7) {
        h.data(0, chunk);
    }
    assert_eq!(h.hits().len(), 2);
}

#[test]
fn corrupt_gzip_is_a_loss() {
    let mut h = Harness::new(options());
    h.start();
    h.respond(0, 200);
    h.data(
        0,
        &[
            0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
    );
    assert_eq!(h.state(0), SlotState::Waiting);
    assert_eq!(h.errors().last().unwrap().code, ErrorCode::GzipError);
    assert_eq!(h.aborts.len(), 1);
}

#[test]
fn token_errors_are_retried_later() {
    let mut h = Harness::new(options());
    h.start();
    let id = h.attempt(0);
    h.client
        .handle_token_error(id, "provider rejected: offline", h.now);
    h.drain();
    assert_eq!(h.state(0), SlotState::Waiting);
    let e = h.errors()[0];
    assert_eq!(e.code, ErrorCode::TokenError);
    assert!(e.message.contains("offline"));
    assert!(h.client.request_headers("").is_err());
    assert_eq!(
        h.client.request_headers("Bearer abc").unwrap()[0],
        ("Authorization", "Bearer abc".to_string())
    );
}

// ---- properties -------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    Respond(usize, u16, Option<u32>),
    Data(usize, u8),
    End(usize),
    Fail(usize),
    TokenError(usize),
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    let status = prop::sample::select(vec![
        200u16, 200, 200, 302, 401, 401, 409, 409, 429, 500, 503, 503, 404, 204,
    ]);
    prop_oneof![
        4 => (0u64..200_000).prop_map(Op::Advance),
        4 => (0usize..4, status, prop::option::of(0u32..400)).prop_map(|(s, st, ra)| Op::Respond(s, st, ra)),
        2 => (0usize..4, 0u8..4).prop_map(|(s, d)| Op::Data(s, d)),
        2 => (0usize..4).prop_map(Op::End),
        2 => (0usize..4).prop_map(Op::Fail),
        1 => (0usize..4).prop_map(Op::TokenError),
        1 => Just(Op::Close),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// KA-16598 as a property: whatever happens, a slot never connects sooner than
    /// reconnectDelayMs after a loss (a redirect hop and the first fresh-token retry after
    /// a 401 continue the attempt), never has two requests at once, and nothing is
    /// requested after close or a fatal error.
    #[test]
    fn no_early_reconnects_and_bounded_slots(
        ops in prop::collection::vec(op(), 1..120),
        max_conn in 1u8..=4,
        delay in prop::sample::select(vec![100u64, 1_000, 60_000]),
        seed in any::<u64>(),
    ) {
        let mut h = Harness::with_seed(Options {
            max_connections: Some(f64::from(max_conn)),
            reconnect_delay_ms: Some(delay as f64),
            idle_timeout_ms: Some(90_000.0),
            dedup_window: Some(50.0),
            ..options()
        }, seed);
        h.start();
        let slots = usize::from(max_conn);
        let mut seen_events = 0;
        let mut seen_connects = 0;
        let mut last_loss: Vec<Option<u64>> = vec![None; slots];
        let mut n = 0u64;
        for op in ops {
            match op {
                Op::Advance(ms) => h.advance(ms),
                Op::Respond(s, status, ra) if s < slots && h.state(s) == SlotState::Connecting => {
                    h.respond_with(s, ResponseHead {
                        status,
                        location: (status == 302).then(|| "/redirected".to_string()),
                        retry_after: ra.map(|r| r.to_string()),
                        ..Default::default()
                    });
                }
                Op::Data(s, kind) if s < slots => {
                    n += 1;
                    let text = match kind {
                        0 => format!("{}\r\n", record(n % 97, n % 89)),
                        1 => "\r\n".to_string(),
                        2 => "garbage\r\n{\"hitIdHigh\":".to_string(),
                        _ => format!("{}\r\n{}\r\n", record(1, n % 60), record(2, n % 70)),
                    };
                    h.data(s, text.as_bytes());
                }
                Op::End(s) if s < slots => h.end(s),
                Op::Fail(s) if s < slots => h.fail(s, "reset"),
                Op::TokenError(s) if s < slots => {
                    let id = h.attempt(s);
                    h.client.handle_token_error(id, "no token", h.now);
                    h.drain();
                }
                Op::Close => {
                    h.client.close(h.now);
                    h.drain();
                }
                _ => {}
            }
            // Losses are the Waiting statuses; connects must respect them, in the order the
            // shell saw them.
            let mut losses: Vec<(u64, u64, usize)> = Vec::new();
            for (k, e) in h.events.iter().enumerate().skip(seen_events) {
                if let Event::Status(s) = e {
                    if s.state == SlotState::Waiting {
                        let (drain, t) = h.event_marks[k];
                        losses.push((drain, t, s.slot));
                        prop_assert!(s.retry_in_ms.unwrap() >= delay);
                    }
                }
            }
            seen_events = h.events.len();
            let mut pending = losses.into_iter().peekable();
            for k in seen_connects..h.connects.len() {
                let (t, c) = &h.connects[k];
                let drain = h.connect_marks[k];
                while let Some(&(d, lt, slot)) = pending.peek() {
                    if d >= drain {
                        break;
                    }
                    last_loss[slot] = Some(lt);
                    pending.next();
                }
                let continued = c.refresh_token || c.url.contains("/redirected");
                if let (Some(lost), false) = (last_loss[c.slot], continued) {
                    prop_assert!(*t >= lost + delay, "slot {} reconnected at {} after a loss at {}", c.slot, t, lost);
                }
            }
            for (_, lt, slot) in pending {
                last_loss[slot] = Some(lt);
            }
            seen_connects = h.connects.len();
            let stats = h.client.stats();
            let busy = stats.slots.iter().filter(|s| matches!(s.state, SlotState::Connecting | SlotState::Open)).count();
            prop_assert!(busy <= slots);
            prop_assert!(h.client.dedup_len() <= 50);
            if h.client.is_finished() {
                prop_assert_eq!(h.client.poll_timeout(), None);
            }
        }
        // After the end, nothing more is requested.
        if h.client.is_finished() {
            let before = h.connects.len();
            h.advance(10_000_000);
            prop_assert_eq!(h.connects.len(), before);
        }
    }

    /// The jittered wait stays within [delay, cap + jitter] for any seed and failure count.
    #[test]
    fn waits_stay_in_bounds(seed in any::<u64>(), failures in 1usize..12) {
        let mut h = Harness::with_seed(options(), seed);
        h.start();
        for _ in 0..failures {
            h.respond(0, 503);
            let w = h.last_status(0).retry_in_ms.unwrap();
            prop_assert!((DELAY..=600_000 + JITTER).contains(&w), "{}", w);
            h.fire_next_timer();
        }
    }
}

#[test]
fn batch_splits_records_by_text_class_and_keeps_stream_order() {
    let mut h = Harness::new(options());
    h.start();
    h.respond(0, 200);
    let rec = |i: u64, text: &str| format!(r#"{{"hitIdHigh":{i},"hitIdLow":{i},"t":"{text}"}}"#);
    let texts = [
        "ascii",
        "\u{4e2d}\u{6587}",
        "caf\u{e9} \u{ff}",
        "emoji \u{1f600}",
        "\u{100}",
        "plain",
        "\u{c0}\u{e9}",
        "\u{80}",
    ];
    let body: String = texts
        .iter()
        .enumerate()
        .map(|(i, t)| rec(i as u64 + 1, t) + "\r\n")
        .collect();
    h.data(0, body.as_bytes());
    let Some(Event::Hits(batch)) = h.events.iter().find(|e| matches!(e, Event::Hits(_))) else {
        panic!("no hits")
    };
    assert_eq!(batch.len(), texts.len());
    assert_eq!(batch.region_lens(), [2, 3, 3]);
    let json = std::str::from_utf8(&batch.json).unwrap();
    let [l, w] = batch.regions;
    let parse = |s: &str| serde_json::from_str::<Vec<serde_json::Value>>(s).unwrap();
    let regions = [parse(&json[..l]), parse(&json[l..w]), parse(&json[w..])];
    let max = |v: &serde_json::Value| v["t"].as_str().unwrap().chars().map(|c| c as u32).max();
    assert!(regions[0].iter().all(|v| max(v) < Some(0x80)));
    assert!(regions[1]
        .iter()
        .all(|v| (0x80..0x100).contains(&max(v).unwrap())));
    assert!(regions[2].iter().all(|v| max(v) > Some(0xff)));
    // Stream order: record(i) and the region of starts[i] both give hit i.
    let mut next = [0; 3];
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(
            batch.record(i),
            rec(i as u64 + 1, t).replace(
                &format!(r#""hitIdHigh":{0},"hitIdLow":{0}"#, i + 1),
                &format!(r#""hitIdHigh":"{0}","hitIdLow":"{0}""#, i + 1),
            )
        );
        let s = batch.starts[i] as usize;
        let k = if s < l {
            0
        } else if s < w {
            1
        } else {
            2
        };
        assert_eq!(regions[k][next[k]]["t"], *t);
        next[k] += 1;
        assert_eq!(batch.hit_id_high[i], i as u64 + 1);
    }
}

#[test]
fn recycled_batches_are_reused_and_close_releases_buffers() {
    let mut h = Harness::new(options());
    h.start();
    h.respond(0, 200);
    let body = format!("{}\r\n{}\r\n", record(1, 1), record(2, 2));
    h.data(0, body.as_bytes());
    let at = h
        .events
        .iter()
        .position(|e| matches!(e, Event::Hits(_)))
        .unwrap();
    let Event::Hits(batch) = h.events.remove(at) else {
        unreachable!()
    };
    let cap = batch.json.capacity();
    h.client.recycle(batch);
    h.events.clear();
    let body = format!("{}\r\n", record(3, 3));
    h.data(0, body.as_bytes());
    let Some(Event::Hits(next)) = h.events.iter().find(|e| matches!(e, Event::Hits(_))) else {
        panic!("no hits")
    };
    assert!(next.json.capacity() >= cap, "the recycled buffer is reused");
    assert_eq!(next.len(), 1);
    assert_eq!(next.hit_id_high, vec![3]);
    assert_eq!(h.client.dedup_len(), 3);
    h.client.release_buffers();
    assert_eq!(h.client.dedup_len(), 3, "nothing is released while running");
    h.client.close(h.now);
    h.client.release_buffers();
    assert_eq!(h.client.dedup_len(), 0);
}
