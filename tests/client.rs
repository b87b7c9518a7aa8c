//! Scenario and property tests of the sans-IO client, in virtual time.

mod support;

use livestream_wasm::core::{ErrorCode, Event, Options, ResponseHead, SlotState, TokenSource};
use proptest::prelude::*;
use support::gzip::gzip_member;
use support::{ms, no_jitter, options, record, redirect, retry_after, Harness, URL};

const DELAY: u64 = 60_000;
const JITTER: u64 = 15_000;

#[test]
fn first_connect_sends_parameters_and_reset_only_once() {
    let mut h = Harness::started(Options {
        reset: Some("largest".into()),
        max_connections: Some(2),
        connections: Some(1),
        ..options()
    });
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
    let mut h = Harness::started(options());
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
    let infos: Vec<_> = h.sink.got.iter().map(|(_, _, i)| *i).collect();
    assert_eq!(
        infos
            .iter()
            .map(|i| i.hit_key.unwrap().high)
            .collect::<Vec<_>>(),
        vec![2948027281753079808, u64::MAX]
    );
    assert_eq!(
        infos.iter().map(|i| i.time_gmt).collect::<Vec<_>>(),
        vec![Some(1372782179.0), Some(1372782179.0)]
    );
    for text in &h.sink.wire {
        assert!(text.starts_with('{') && text.ends_with('}'), "{text}");
    }
}

#[test]
fn a_record_split_over_chunks_arrives_whole() {
    let mut h = Harness::started(options());
    h.respond(0, 200);
    let body = format!("{}\r\n{}\r\n", record(1, 2), record(3, 4));
    for b in body.as_bytes() {
        h.data(0, std::slice::from_ref(b));
    }
    assert_eq!(h.hits().len(), 2);
}

#[test]
fn end_of_stream_waits_at_least_the_delay_then_reconnects() {
    let mut h = Harness::started(options());
    h.respond(0, 200);
    h.now = 5_000;
    h.end(0);
    let s = h.last_status(0);
    assert_eq!(s.state, SlotState::Waiting);
    let wait = h.retry_in_ms(0).unwrap();
    assert!((DELAY..=DELAY + JITTER).contains(&wait), "{wait}");
    assert!(
        s.reason.contains("the server ended the stream"),
        "{}",
        s.reason
    );
    assert_eq!(h.timeout(), Some(5_000 + wait));
    h.advance(wait - 1);
    assert_eq!(h.connects.len(), 1, "no reconnect before the wait is over");
    h.advance(1);
    assert_eq!(h.connects.len(), 2);
    assert_eq!(h.connects[1].0, 5_000 + wait);
    assert_eq!(h.client.stats().reconnects, 1);
}

#[test]
fn a_waiting_slot_gives_its_cause_without_the_schedule() {
    // A host that shows its own countdown (the relay's /status, the demo's relay card) uses
    // `cause`; `reason` (the status event's words) also says when the next attempt is.
    let mut h = Harness::started(options());
    h.respond(0, 200);
    let open = h.client.stats().slots[0].clone();
    assert_eq!(open.cause, open.reason, "no schedule while open");
    h.now = 5_000;
    h.end(0);
    let slot = h.client.stats().slots[0].clone();
    assert_eq!(slot.state, SlotState::Waiting);
    assert_eq!(slot.cause, "the server ended the stream");
    assert!(
        slot.reason
            .starts_with("the server ended the stream; next attempt in "),
        "{}",
        slot.reason
    );
    assert_eq!(slot.reason, h.last_status(0).reason);
    assert_eq!(slot.cause, h.last_status(0).cause);
    let wait = h.retry_in_ms(0).unwrap();
    h.advance(wait);
    let again = h.client.stats().slots[0].clone();
    assert_eq!(again.state, SlotState::Connecting);
    assert_eq!(again.cause, again.reason);
}

#[test]
fn conflict_shows_error_description_and_backs_off() {
    let mut h = Harness::started(options());
    h.respond_body(
        0,
        ResponseHead {
            status: 409,
            ..Default::default()
        },
        r#"{"error":"conflict","error_description":"2 connections open, maxConnections=1"}"#,
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
    let mut h = Harness::started(no_jitter());
    let mut waits = Vec::new();
    for _ in 0..7 {
        h.respond(0, 503);
        waits.push(h.retry_in_ms(0).unwrap());
        h.fire_next_timer();
    }
    assert_eq!(
        waits,
        vec![60_000, 120_000, 240_000, 240_000, 240_000, 240_000, 240_000],
        "the default cap (4 min) keeps every wait inside the service's resume window"
    );
}

#[test]
fn a_long_lived_connection_resets_the_growth() {
    let mut h = Harness::started(no_jitter());
    h.respond(0, 503);
    h.fire_next_timer();
    h.respond(0, 503);
    assert_eq!(h.retry_in_ms(0), Some(120_000));
    h.fire_next_timer();
    h.respond(0, 200);
    h.advance(30_000);
    h.end(0);
    assert_eq!(h.retry_in_ms(0), Some(240_000), "30 s open is not stable");
    h.fire_next_timer();
    h.respond(0, 200);
    h.advance(125_000);
    h.fail(0, "reset by peer");
    assert_eq!(
        h.retry_in_ms(0),
        Some(60_000),
        "2 min open resets the growth"
    );
}

#[test]
fn retry_after_wins_when_longer() {
    let mut h = Harness::started(no_jitter());
    h.respond_with(0, retry_after(503, "200"));
    assert_eq!(h.retry_in_ms(0), Some(200_000));
    h.fire_next_timer();
    h.respond_with(0, retry_after(409, "5"));
    assert_eq!(
        h.retry_in_ms(0),
        Some(120_000),
        "a shorter Retry-After never shortens the wait"
    );
}

#[test]
fn retry_after_is_honoured_up_to_the_cap() {
    // 10^12 seconds would park the connection for ever; it is bounded by maxReconnectDelayMs.
    let mut h = Harness::started(no_jitter());
    h.respond_with(0, retry_after(503, "1000000000000"));
    assert_eq!(h.last_status(0).retry_in, ms(240_000));
    let mut h = Harness::started(Options {
        max_reconnect_delay: ms(3_600_000),
        ..no_jitter()
    });
    h.respond_with(0, retry_after(503, "1800"));
    assert_eq!(
        h.last_status(0).retry_in,
        ms(1_800_000),
        "a larger cap lets it through"
    );
}

#[test]
fn a_connection_that_delivered_records_is_a_success() {
    // A flaky link that delivers for a few seconds at a time must not grow the wait past the
    // resume window (issue 13 item 4: it once reached 512 s and lost 22 259 records).
    let mut h = Harness::started(Options {
        reconnect_delay: ms(500),
        ..no_jitter()
    });
    for round in 0..12u64 {
        h.respond(0, 200);
        h.data(0, format!("{}\r\n", record(round, 1)).as_bytes());
        h.advance(3_000);
        h.fail(0, "reset by peer");
        assert_eq!(h.last_status(0).retry_in, ms(500), "round {round}");
        h.fire_next_timer();
    }
    // Attempts that fail still grow the wait.
    h.respond(0, 200);
    h.end(0);
    assert_eq!(h.last_status(0).retry_in, ms(1_000));
    h.fire_next_timer();
    h.respond(0, 200);
    h.end(0);
    assert_eq!(h.last_status(0).retry_in, ms(2_000));
}

#[test]
fn a_401_says_what_the_configured_token_source_can_do() {
    for (source, words, immediate) in [
        (TokenSource::None, "no token is configured", false),
        (
            TokenSource::Fixed,
            "a fixed token string cannot be refreshed",
            false,
        ),
        (TokenSource::Refreshable, "Adobe", true),
    ] {
        let mut h = Harness::started(Options {
            token: source,
            ..options()
        });
        h.respond(0, 401);
        assert_eq!(h.connects.len() == 2, immediate, "{source:?}");
        if !immediate {
            let r = &h.last_status(0).reason;
            assert!(r.contains(words), "{source:?}: {r}");
            assert_eq!(h.state(0), SlotState::Waiting);
            assert!(
                !r.contains("pass a function") || source == TokenSource::Fixed,
                "{r}"
            );
        }
    }
}

#[test]
fn redirects_keep_credentials_at_home() {
    // Another origin, and a downgrade to http on the same host: fatal, naming the Location.
    for target in [
        "https://evil.example/api/1/stream/ep",
        "http://livestream.example/api/1/stream/ep",
    ] {
        let mut h = Harness::started(options());
        h.respond_with(0, redirect(302, target));
        assert_eq!(
            h.connects.len(),
            1,
            "{target}: no request carries the token there"
        );
        assert_eq!(h.state(0), SlotState::Failed);
        let e = h.errors()[0];
        assert_eq!(e.code, ErrorCode::CrossOriginRedirect);
        assert!(e.fatal && e.message.contains(target), "{}", e.message);
        assert_eq!(h.wait, None, "a failed client needs no timer");
    }
    // An origin the user allowed is followed; a downgrade stays refused even when listed.
    let mut h = Harness::started(Options {
        redirect_origins: vec![
            "https://LB1.example:443".into(),
            "http://lb2.example".into(),
        ],
        ..options()
    });
    h.respond_with(0, redirect(302, "https://lb1.example/api/1/stream/ep"));
    assert_eq!(h.connects.len(), 2);
    assert_eq!(h.last_connect().url, "https://lb1.example/api/1/stream/ep");
    h.respond_with(0, redirect(302, "http://lb2.example/api/1/stream/ep"));
    assert_eq!(
        h.state(0),
        SlotState::Failed,
        "https -> http is never followed"
    );
}

#[test]
fn a_hand_over_waits_the_delay_from_the_previous_holders_loss() {
    let mut h = Harness::new(Options {
        reconnect_delay: ms(60_000),
        max_connections: Some(2),
        ..no_jitter()
    });
    h.now = 100_000;
    // The old holder lost its connection 20 s ago: 40 s to go.
    let lost = livestream_wasm::core::Instant::from_millis(80_000);
    h.client.start_after(h.at(), Some(lost));
    h.drain();
    assert!(h.connects.is_empty());
    let s = h.last_status(1);
    assert_eq!((s.state, s.retry_in), (SlotState::Waiting, ms(40_000)));
    assert!(s.reason.contains("KA-16598"), "{}", s.reason);
    assert_eq!(h.wait.map(|t| t.as_millis()), Some(140_000));
    h.advance(39_999);
    assert!(h.connects.is_empty());
    h.advance(1);
    assert_eq!(h.connects.len(), 2);
    // A loss long ago (or none known): connect at once.
    let mut h = Harness::new(options());
    h.now = 500_000;
    h.client.start_after(
        h.at(),
        Some(livestream_wasm::core::Instant::from_millis(100_000)),
    );
    h.drain();
    assert_eq!(h.connects.len(), 1);
}

#[test]
fn first_401_retries_at_once_with_a_fresh_token_then_backs_off() {
    let mut h = Harness::started(Options {
        token: TokenSource::Refreshable,
        ..options()
    });
    h.respond(0, 401);
    assert_eq!(h.connects.len(), 2);
    assert!(h.last_connect().refresh_token);
    assert_eq!(h.connects[1].0, 0, "immediate");
    h.respond(0, 401);
    assert_eq!(h.connects.len(), 2);
    assert_eq!(h.state(0), SlotState::Waiting);
    assert!(
        h.last_status(0)
            .reason
            .contains("fresh token from the token source was refused too"),
        "{}",
        h.last_status(0).reason
    );
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
    let mut h = Harness::started(Options {
        max_connections: Some(3),
        ..options()
    });
    assert_eq!(h.connects.len(), 3);
    h.respond(1, 404);
    for slot in 0..3 {
        assert_eq!(h.state(slot), SlotState::Failed);
    }
    let fatal: Vec<_> = h.errors().into_iter().filter(|e| e.fatal).collect();
    assert_eq!(fatal.len(), 1);
    assert_eq!(fatal[0].code, ErrorCode::NotFound);
    assert!(fatal[0].message.contains("90 days"));
    let aborted: Vec<_> = h.aborts.iter().map(|a| a.1).collect();
    assert_eq!(aborted, vec![h.attempt(0), h.attempt(2)]);
    assert_eq!(h.timeout(), None);
    assert_eq!(
        h.wait, None,
        "the host is told to cancel its timer (a Node process can exit)"
    );
    let n = h.connects.len();
    h.advance(3_600_000);
    assert_eq!(h.connects.len(), n);
    assert!(h.client.is_finished());
}

#[test]
fn every_fatal_status_is_fatal() {
    for status in [400, 403, 404, 405, 406, 505, 410] {
        let mut h = Harness::started(options());
        h.respond(0, status);
        assert_eq!(h.state(0), SlotState::Failed, "{status}");
    }
    for status in [409, 429, 500, 502, 503, 504] {
        let mut h = Harness::started(options());
        h.respond(0, status);
        assert_eq!(h.state(0), SlotState::Waiting, "{status}");
    }
}

#[test]
fn redirects_are_followed_at_once_and_bounded() {
    let mut h = Harness::started(options());
    h.respond_with(0, redirect(302, "/lb1/api/1/stream/ep?maxConnections=1"));
    assert_eq!(h.connects.len(), 2);
    assert_eq!(
        h.last_connect().url,
        "https://livestream.example/lb1/api/1/stream/ep?maxConnections=1"
    );
    assert_eq!(h.connects[1].0, 0);
    for _ in 0..5 {
        h.respond_with(0, redirect(307, "/again"));
    }
    assert_eq!(h.state(0), SlotState::Waiting);
    assert_eq!(h.errors().last().unwrap().code, ErrorCode::TooManyRedirects);
    h.fire_next_timer();
    assert_eq!(
        h.last_connect().url,
        format!("{URL}?maxConnections=1"),
        "reconnects go to the configured URL"
    );
    // A redirect without a Location.
    h.respond(0, 302);
    assert_eq!(h.errors().last().unwrap().code, ErrorCode::BadRedirect);
}

#[test]
fn cross_origin_redirect_in_a_browser_is_fatal_and_explained() {
    let mut h = Harness::started(options());
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
    let mut h = Harness::started(Options {
        idle_timeout: ms(30_000),
        ..options()
    });
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
    h.client.handle_failure(stale, "AbortError", h.at());
    h.drain();
    assert_eq!(h.errors().len(), 1);
}

#[test]
fn idle_timeout_also_covers_waiting_for_headers() {
    let mut h = Harness::started(Options {
        idle_timeout: ms(30_000),
        ..options()
    });
    h.advance(30_000);
    assert_eq!(h.state(0), SlotState::Waiting);
    assert!(h.last_status(0).reason.contains("no response"));
}

#[test]
fn close_aborts_emits_closed_once_and_silences_everything() {
    let mut h = Harness::started(Options {
        max_connections: Some(2),
        ..options()
    });
    h.respond(0, 200);
    let before = h.events.len();
    h.client.close(h.at());
    h.drain();
    assert_eq!(h.aborts.len(), 2);
    let closed: Vec<_> = h.events[before..].iter().collect();
    assert_eq!(closed.len(), 2);
    assert!(closed
        .iter()
        .all(|e| matches!(e, Event::Status(s) if s.state == SlotState::Closed)));
    h.client.close(h.at());
    h.data(0, format!("{}\r\n", record(1, 1)).as_bytes());
    h.advance(3_600_000);
    assert_eq!(h.events.len(), before + 2, "nothing after close");
    assert_eq!(h.timeout(), None);
    h.client.start(h.at());
    h.drain();
    assert_eq!(
        h.state(0),
        SlotState::Closed,
        "start after close does nothing"
    );
}

#[test]
fn bad_records_are_reported_and_the_next_one_delivered() {
    let mut h = Harness::started(Options {
        max_record_bytes: Some(1000),
        ..options()
    });
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
    let mut h = Harness::started(options());
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
    let mut h = Harness::started(options());
    h.respond(0, 200);
    h.data(0, b"{\"a\":1}\r\n{\"a\":1}\r\n");
    assert_eq!(h.hits(), vec!["{\"a\":1}", "{\"a\":1}"]);
}

#[test]
fn gzip_body_is_inflated_in_the_core() {
    let text = format!("{}\r\n{}\r\n", record(5, 6), record(7, 8));
    let gz = gzip_member(text.as_bytes(), 6, 0);
    let mut h = Harness::started(options());
    h.respond(0, 200);
    for chunk in gz.chunks(7) {
        h.data(0, chunk);
    }
    assert_eq!(h.hits().len(), 2);
}

#[test]
fn corrupt_gzip_is_a_loss() {
    let mut h = Harness::started(options());
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
    let mut h = Harness::started(options());
    let id = h.attempt(0);
    h.client
        .handle_token_error(id, "provider rejected: offline", h.at());
    h.drain();
    assert_eq!(h.state(0), SlotState::Waiting);
    let e = h.errors()[0];
    assert_eq!(e.code, ErrorCode::TokenError);
    assert!(e.message.contains("offline"));
    assert!(h.client.request_headers(Some("")).is_err());
    assert_eq!(
        h.client.request_headers(Some("Bearer abc")).unwrap()[0],
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
            max_connections: Some(u64::from(max_conn)),
            token: TokenSource::Refreshable,
            reconnect_delay: ms(delay),
            idle_timeout: ms(90_000),
            dedup_window: Some(50),
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
                    h.client.handle_token_error(id, "no token", h.at());
                    h.drain();
                }
                Op::Close => {
                    h.client.close(h.at());
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
                        losses.push((drain, t, s.slot.index()));
                        prop_assert!(s.retry_in.map(|d| d.as_millis() as u64).unwrap() >= delay);
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
                if let (Some(lost), false) = (last_loss[c.slot.index()], continued) {
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
                prop_assert_eq!(h.timeout(), None);
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
            let w = h.retry_in_ms(0).unwrap();
            prop_assert!((DELAY..=240_000 + JITTER).contains(&w), "{}", w);
            h.fire_next_timer();
        }
    }
}

#[test]
fn remembered_hits_are_not_delivered_again_after_a_hand_over() {
    use livestream_wasm::core::record::HitKey;
    let mut h = Harness::new(options());
    h.client
        .remember_hits([HitKey { high: 1, low: 2 }, HitKey { high: 3, low: 4 }]);
    h.start();
    h.respond(0, 200);
    let body = format!(
        "{}\r\n{}\r\n{}\r\n",
        record(1, 2),
        record(3, 4),
        record(5, 6)
    );
    h.data(0, body.as_bytes());
    assert_eq!(h.hits().len(), 1);
    assert_eq!(h.client.stats().duplicates, 2);
}
