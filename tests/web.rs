//! Tests of the wasm shell (`LiveStream`) in Node and in headless Chromium, against the real
//! emulator and against injected `fetch` functions whose bodies are deterministic streams.
//!
//! Run (scripts/test.sh does this, with an emulator started first):
//! ```text
//! LIVESTREAM_TEST_SERVER=http://127.0.0.1:PORT WASM_BINDGEN_USE_NODE_EXPERIMENTAL=1 \
//!   wasm-pack test --node --mode no-install -- --test web
//! LIVESTREAM_TEST_SERVER=http://127.0.0.1:PORT WASM_BINDGEN_USE_BROWSER=1 \
//!   CHROMEDRIVER=/usr/bin/chromedriver wasm-pack test --headless --chrome --mode no-install -- --test web
//! ```
//! The server URL is compiled in (`option_env!`); every emulator test fails with a clear
//! message when it is missing.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use gloo_timers::future::TimeoutFuture;
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use livestream_wasm::web::{LiveStream, LiveStreamOptions};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

/// The largest hit id half, and one that `JSON.parse` would round.
const MAX_ID: &str = "18446744073709551615";
const BIG_ID: &str = "2948027281753079808";

fn server() -> &'static str {
    match option_env!("LIVESTREAM_TEST_SERVER") {
        Some(url) if !url.is_empty() => url.trim_end_matches('/'),
        _ => panic!(
            "LIVESTREAM_TEST_SERVER is not set: build these tests with \
             LIVESTREAM_TEST_SERVER=http://127.0.0.1:PORT pointing at a running \
             livestream-emulator (scripts/test.sh starts one)"
        ),
    }
}

// ---- small JS helpers -----------------------------------------------------------------------

fn get(v: &JsValue, key: &str) -> JsValue {
    if !v.is_object() && !v.is_function() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(v, &JsValue::from_str(key)).unwrap()
}

fn set(o: &Object, key: &str, v: impl Into<JsValue>) {
    Reflect::set(o, &JsValue::from_str(key), &v.into()).unwrap();
}

fn s(v: &JsValue, key: &str) -> String {
    get(v, key).as_string().unwrap_or_default()
}

fn n(v: &JsValue, key: &str) -> f64 {
    get(v, key).as_f64().unwrap_or(f64::NAN)
}

fn now_ms() -> f64 {
    let perf = get(&js_sys::global(), "performance");
    let f: Function = get(&perf, "now").unchecked_into();
    f.call0(&perf).unwrap().as_f64().unwrap()
}

fn js_fn(args: &str, body: &str) -> Function {
    Function::new_with_args(args, body)
}

async fn sleep(ms: u32) {
    TimeoutFuture::new(ms).await;
}

async fn await_js(v: JsValue) -> JsValue {
    JsFuture::from(Promise::resolve(&v))
        .await
        .expect("promise rejected")
}

/// Waits until `cond` holds, failing with `what` after `ms`.
async fn wait_for(ms: u32, what: &str, cond: impl Fn() -> bool) {
    let start = now_ms();
    while !cond() {
        assert!(
            now_ms() - start < ms as f64,
            "timed out after {ms} ms waiting for {what}"
        );
        sleep(10).await;
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", (js_sys::Math::random() * 1e12) as u64)
}

fn global_fetch() -> Function {
    get(&js_sys::global(), "fetch").unchecked_into()
}

async fn http(method: &str, url: &str, body: Option<&str>) -> JsValue {
    let init = Object::new();
    set(&init, "method", method);
    if let Some(b) = body {
        set(&init, "body", b);
        let h = Object::new();
        set(&h, "content-type", "application/json");
        set(&init, "headers", h);
    }
    let res = await_js(
        global_fetch()
            .call2(&JsValue::UNDEFINED, &url.into(), &init)
            .unwrap(),
    )
    .await;
    let status = n(&res, "status");
    let json: Function = get(&res, "json").unchecked_into();
    let v = await_js(json.call0(&res).unwrap()).await;
    assert_eq!(
        status,
        200.0,
        "{method} {url}: {}",
        js_sys::JSON::stringify(&v).unwrap()
    );
    v
}

/// Installs an emulator script for stream `name`.
async fn script(name: &str, json: &str) {
    http(
        "PUT",
        &format!("{}/admin/streams/{name}", server()),
        Some(json),
    )
    .await;
}

/// The emulator's stats of one stream.
async fn emulator_stats(name: &str) -> JsValue {
    http(
        "GET",
        &format!("{}/admin/stats?stream={name}", server()),
        None,
    )
    .await
}

fn stream_url(name: &str) -> String {
    format!("{}/api/1/stream/{name}", server())
}

/// A fake fetch serving `specs` in turn (the last one repeats). A spec is
/// `{status?, body?: Uint8Array, chunkSize?, chunks?: Uint8Array[], chunkDelayMs?, hold?,
/// headers?, reject?}`: the body is enqueued `chunkSize` bytes per read (or as the given
/// `chunks`), `chunkDelayMs` apart; `hold` keeps it open after the last byte. The
/// function records `calls` and counts `aborted` signals and `cancelled` bodies in `state`.
fn fake_fetch(specs: &Array) -> Function {
    let make = js_fn(
        "specs",
        r#"
        const state = { calls: [], aborted: 0, cancelled: 0 };
        const f = (url, init) => {
          const spec = specs[Math.min(state.calls.length, specs.length - 1)];
          state.calls.push({ url, init });
          if (spec.reject) return Promise.reject(new TypeError(spec.reject));
          const chunks = spec.chunks ? spec.chunks.slice() : null;
          const bytes = chunks ? new Uint8Array(0) : spec.body || new Uint8Array(0);
          const size = spec.chunkSize || Math.max(bytes.length, 1);
          let sent = 0;
          const signal = init && init.signal;
          let pos = 0;
          const body = new ReadableStream({
            start(c) {
              if (signal) signal.addEventListener("abort", () => {
                state.aborted++;
                try { c.error(new DOMException("The operation was aborted.", "AbortError")); } catch (e) {}
              });
            },
            pull(c) {
              const more = chunks ? chunks.length > 0 : pos < bytes.length;
              if (more) {
                const send = () => {
                  if (chunks) c.enqueue(chunks.shift());
                  else { c.enqueue(bytes.slice(pos, pos + size)); pos += size; }
                  sent++;
                };
                if (spec.chunkDelayMs && sent > 0) return new Promise((r) => setTimeout(r, spec.chunkDelayMs)).then(send);
                send();
                return;
              }
              if (spec.hold) return new Promise(() => {});
              c.close();
            },
            cancel() { state.cancelled++; },
          }, { highWaterMark: 0 });
          return Promise.resolve(new Response(body, { status: spec.status || 200, headers: spec.headers || {} }));
        };
        f.state = state;
        return f;
        "#,
    );
    make.call1(&JsValue::UNDEFINED, specs)
        .unwrap()
        .unchecked_into()
}

fn spec(status: u16, body: &[u8], chunk: u32, hold: bool) -> JsValue {
    let o = Object::new();
    set(&o, "status", status);
    set(&o, "body", Uint8Array::from(body));
    set(&o, "chunkSize", chunk);
    set(&o, "hold", hold);
    o.into()
}

fn fetch_state(f: &Function) -> JsValue {
    get(f, "state")
}

async fn gzip(text: &str) -> Vec<u8> {
    let f = js_fn(
        "text",
        "return new Response(new Blob([text]).stream().pipeThrough(new CompressionStream('gzip')))\
         .arrayBuffer().then(b => new Uint8Array(b));",
    );
    let v = await_js(f.call1(&JsValue::UNDEFINED, &text.into()).unwrap()).await;
    v.unchecked_into::<Uint8Array>().to_vec()
}

fn record(high: &str, low: &str, page: &str) -> String {
    format!(
        r#"{{"reportSuite":"rs","hitIdHigh":{high},"hitIdLow":{low},"visIdHigh":{high},"visIdLow":1,"timeGMT":1372782179,"receivedTimeGMT":1372782180,"pageName":"{page}","evars":{{"evars":{{"eVar1":"x"}}}},"newField":[1,2]}}"#
    )
}

fn crlf(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\r\n")).collect()
}

// ---- recording callbacks --------------------------------------------------------------------

#[derive(Default)]
struct Log {
    hits: Vec<JsValue>,
    batches: Vec<JsValue>,
    statuses: Vec<(f64, JsValue)>,
    errors: Vec<JsValue>,
}

impl Log {
    fn states(&self) -> Vec<String> {
        self.statuses.iter().map(|(_, st)| s(st, "state")).collect()
    }
    fn error_codes(&self) -> Vec<String> {
        self.errors.iter().map(|e| s(e, "code")).collect()
    }
    fn total(&self) -> usize {
        self.hits.len() + self.batches.len() + self.statuses.len() + self.errors.len()
    }
}

type Shared = Rc<RefCell<Log>>;

/// Options for `url` with recording callbacks (onHits, onBatch, onStatus, onError).
fn options(url: &str, log: &Shared) -> Object {
    let o = Object::new();
    set(&o, "url", url);
    set(&o, "token", "test-token");
    set(&o, "reconnectDelayMs", 200);
    set(&o, "reconnectJitterMs", 0);
    set(&o, "seed", 7);
    let l = log.clone();
    let on_hits =
        Closure::<dyn FnMut(JsValue, JsValue)>::new(move |hits: JsValue, info: JsValue| {
            assert!(get(&info, "connection").as_f64().is_some());
            for h in Array::from(&hits).iter() {
                l.borrow_mut().hits.push(h);
            }
        });
    set(&o, "onHits", on_hits.into_js_value());
    let l = log.clone();
    let on_batch =
        Closure::<dyn FnMut(JsValue, JsValue)>::new(move |b: JsValue, _info: JsValue| {
            l.borrow_mut().batches.push(b);
        });
    set(&o, "onBatch", on_batch.into_js_value());
    let l = log.clone();
    let on_status = Closure::<dyn FnMut(JsValue)>::new(move |st: JsValue| {
        l.borrow_mut().statuses.push((now_ms(), st));
    });
    set(&o, "onStatus", on_status.into_js_value());
    let l = log.clone();
    let on_error = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
        l.borrow_mut().errors.push(e);
    });
    set(&o, "onError", on_error.into_js_value());
    o
}

fn stream(o: &Object) -> LiveStream {
    LiveStream::new(o.unchecked_ref::<LiveStreamOptions>()).expect("valid options")
}

fn hit_ids(log: &Shared) -> Vec<(String, String)> {
    log.borrow()
        .hits
        .iter()
        .map(|h| (s(h, "hitIdHigh"), s(h, "hitIdLow")))
        .collect()
}

fn batch_ids(log: &Shared) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for b in &log.borrow().batches {
        let id: Function = get(b, "id").unchecked_into();
        for i in 0..n(b, "length") as u32 {
            let v = id.call1(b, &i.into()).unwrap();
            out.push((s(&v, "hitIdHigh"), s(&v, "hitIdLow")));
        }
    }
    out
}

// ---- tests ----------------------------------------------------------------------------------

/// Options with a valid `url` and one more `key`.
fn url_and(key: &str, value: impl Into<JsValue>) -> Object {
    let o = Object::new();
    set(&o, "url", "https://h/api/1/stream/x");
    set(&o, key, value);
    o
}

#[wasm_bindgen_test]
fn constructor_errors_name_option_value_and_range() {
    let cases: Vec<(Object, &str, &[&str])> = vec![
        (Object::new(), "TypeError", &["url", "missing"]),
        (
            url_and("maxConnections", 9),
            "RangeError",
            &["maxConnections", "9", "1 to 8"],
        ),
        (
            url_and("maxConection", 2),
            "TypeError",
            &["maxConection", "did you mean maxConnections"],
        ),
        (
            url_and("reconnectDelayMs", "60000"),
            "TypeError",
            &["reconnectDelayMs", "\"60000\"", "a number, not a string"],
        ),
        (
            url_and("token", 42),
            "TypeError",
            &["token", "42", "a string or a function"],
        ),
        (url_and("token", "  "), "RangeError", &["token", "empty"]),
        (
            url_and("onHits", "nope"),
            "TypeError",
            &["onHits", "\"nope\"", "a function"],
        ),
        (
            url_and("idleTimeoutMs", 5),
            "RangeError",
            &["idleTimeoutMs", "5", "10 to"],
        ),
    ];
    for (o, class, needles) in cases {
        let err = match LiveStream::new(o.unchecked_ref::<LiveStreamOptions>()) {
            Ok(_) => panic!("accepted {:?}", js_sys::JSON::stringify(&o)),
            Err(e) => e,
        };
        let name = get(&get(&err, "constructor"), "name").as_string().unwrap();
        let message = s(&err, "message");
        assert_eq!(name, class, "{message}");
        for needle in needles {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
    }
    // Not started: no request, state idle.
    let log = Shared::default();
    let ls = stream(&options("https://h/api/1/stream/x", &log));
    assert_eq!(ls.state().unwrap().as_string().unwrap(), "idle");
    ls.close().unwrap();
    ls.close().unwrap();
    assert_eq!(ls.state().unwrap().as_string().unwrap(), "closed");
}

#[wasm_bindgen_test]
async fn injected_one_byte_chunks_deliver_each_record_once_with_exact_ids() {
    let lines = vec![
        record(BIG_ID, "4948646782672799561", "caf\u{e9} \u{65e5}\u{672c}"),
        String::new(),
        record(MAX_ID, MAX_ID, "max"),
        record(BIG_ID, "4948646782672799561", "duplicate"),
        r#"{"pageName":"no ids"}"#.to_string(),
    ];
    let body = crlf(&lines);
    let f = fake_fetch(&Array::of1(&spec(200, body.as_bytes(), 1, true)));
    let log = Shared::default();
    let o = options("https://example.test/api/1/stream/x", &log);
    set(&o, "fetch", f.clone());
    let ls = stream(&o);
    ls.start().unwrap();
    wait_for(5000, "3 hits", || log.borrow().hits.len() >= 3).await;
    sleep(50).await;
    assert_eq!(
        hit_ids(&log),
        vec![
            (BIG_ID.into(), "4948646782672799561".into()),
            (MAX_ID.into(), MAX_ID.into()),
            (String::new(), String::new()),
        ]
    );
    let first = log.borrow().hits[0].clone();
    assert_eq!(s(&first, "pageName"), "caf\u{e9} \u{65e5}\u{672c}");
    assert_eq!(s(&first, "visIdHigh"), BIG_ID);
    assert_eq!(n(&first, "timeGMT"), 1372782179.0);
    assert_eq!(
        Array::from(&get(&first, "newField")).length(),
        2,
        "unknown fields are kept"
    );
    // onBatch saw the same hits, with exact typed arrays.
    let ids = batch_ids(&log);
    assert_eq!(ids[..2], hit_ids(&log)[..2]);
    let max_batch = log
        .borrow()
        .batches
        .iter()
        .find(|b| {
            let id: Function = get(b, "id").unchecked_into();
            s(&id.call1(b, &0.into()).unwrap(), "hitIdLow") == MAX_ID
        })
        .cloned()
        .expect("a batch with the max id");
    let high = get(&max_batch, "hitIdHigh");
    let at0 = Reflect::get_u32(&high, 0).unwrap();
    assert_eq!(js_sys::BigInt::from(at0).to_string(10).unwrap(), MAX_ID);
    let got: Function = get(&max_batch, "get").unchecked_into();
    assert_eq!(
        s(&got.call1(&max_batch, &0.into()).unwrap(), "pageName"),
        "max"
    );
    let stats = ls.stats().unwrap();
    assert_eq!(n(&stats, "hits"), 3.0);
    assert_eq!(n(&stats, "duplicates"), 1.0);
    assert_eq!(n(&stats, "bytes"), body.len() as f64);
    assert_eq!(log.borrow().states(), ["connecting", "open"]);
    // The request carried the token and the managed parameters.
    let call = Array::from(&get(&fetch_state(&f), "calls")).get(0);
    assert!(
        s(&call, "url").ends_with("/api/1/stream/x?maxConnections=1"),
        "{}",
        s(&call, "url")
    );
    let headers = get(&get(&call, "init"), "headers");
    assert_eq!(s(&headers, "Authorization"), "Bearer test-token");
    assert_eq!(s(&get(&call, "init"), "cache"), "no-store");

    // close(): one `closed` status inside close(), the body aborted, then silence.
    let before = log.borrow().total();
    ls.close().unwrap();
    assert_eq!(log.borrow().total(), before + 1);
    assert_eq!(log.borrow().states().last().unwrap(), "closed");
    let st = fetch_state(&f);
    assert!(
        n(&st, "aborted") + n(&st, "cancelled") >= 1.0,
        "the body was not aborted"
    );
    sleep(300).await;
    assert_eq!(
        log.borrow().total(),
        before + 1,
        "a callback fired after close()"
    );
    assert_eq!(ls.state().unwrap().as_string().unwrap(), "closed");
}

#[wasm_bindgen_test]
async fn injected_gzip_body_is_inflated() {
    let lines: Vec<String> = (0..50)
        .map(|i| {
            record(
                &format!("{}", 1_000_000_000_000_000_000u64 + i),
                MAX_ID,
                &format!("p{i}"),
            )
        })
        .collect();
    let gz = gzip(&crlf(&lines)).await;
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    let f = fake_fetch(&Array::of1(&spec(200, &gz, 7, true)));
    let log = Shared::default();
    let o = options("https://example.test/api/1/stream/gz", &log);
    set(&o, "fetch", f);
    let ls = stream(&o);
    ls.start().unwrap();
    wait_for(5000, "50 hits", || log.borrow().hits.len() >= 50).await;
    let ids = hit_ids(&log);
    for (i, (high, low)) in ids.iter().enumerate() {
        assert_eq!(
            high,
            &format!("{}", 1_000_000_000_000_000_000u64 + i as u64)
        );
        assert_eq!(low, MAX_ID);
    }
    assert!(
        log.borrow().errors.is_empty(),
        "{:?}",
        log.borrow().error_codes()
    );
    ls.close().unwrap();
}

#[wasm_bindgen_test]
async fn malformed_record_is_reported_and_the_next_is_delivered() {
    let lines = vec![
        record(BIG_ID, "1", "before"),
        r#"{"hitIdHigh":12,"#.to_string(),
        record(BIG_ID, "2", "after"),
    ];
    let f = fake_fetch(&Array::of1(&spec(200, crlf(&lines).as_bytes(), 5, true)));
    let log = Shared::default();
    let o = options("https://example.test/api/1/stream/m", &log);
    set(&o, "fetch", f);
    let ls = stream(&o);
    ls.start().unwrap();
    wait_for(5000, "2 hits", || log.borrow().hits.len() >= 2).await;
    let pages: Vec<String> = log.borrow().hits.iter().map(|h| s(h, "pageName")).collect();
    assert_eq!(pages, ["before", "after"]);
    let log_ref = log.borrow();
    let err = log_ref
        .errors
        .iter()
        .find(|e| s(e, "code") == "malformed_record")
        .expect("malformed_record");
    assert_eq!(get(err, "fatal").as_bool(), Some(false));
    assert_eq!(n(err, "connection"), 0.0);
    assert!(
        s(err, "message").contains("hitIdHigh"),
        "{}",
        s(err, "message")
    );
    drop(log_ref);
    assert_eq!(n(&ls.stats().unwrap(), "malformed"), 1.0);
    assert_eq!(
        log.borrow().states(),
        ["connecting", "open"],
        "the connection stayed open"
    );
    ls.close().unwrap();
}

#[wasm_bindgen_test]
async fn idle_timeout_follows_activity_then_turns_silence_into_a_loss() {
    // CRLF keep-alives every 100 ms for ~1 s keep a 350 ms idle timeout from firing (the
    // shell's timer must follow the moving deadline); then a record, then silence: the
    // connection is lost, the request aborted, and the client waits.
    let chunks = Array::new();
    for _ in 0..10 {
        chunks.push(&Uint8Array::from(&b"\r\n"[..]));
    }
    chunks.push(&Uint8Array::from(
        crlf(&[record(BIG_ID, "5", "last")]).as_bytes(),
    ));
    let s0 = spec(200, b"", 1, true);
    set(s0.unchecked_ref(), "chunks", chunks);
    set(s0.unchecked_ref(), "chunkDelayMs", 100);
    let f = fake_fetch(&Array::of1(&s0));
    let log = Shared::default();
    let o = options("https://example.test/api/1/stream/idle", &log);
    set(&o, "fetch", f.clone());
    set(&o, "idleTimeoutMs", 350);
    set(&o, "reconnectDelayMs", 60_000);
    let ls = stream(&o);
    let t0 = now_ms();
    ls.start().unwrap();
    wait_for(5000, "the record", || log.borrow().hits.len() == 1).await;
    assert_eq!(
        log.borrow().states(),
        ["connecting", "open"],
        "keep-alives are activity"
    );
    assert!(
        now_ms() - t0 >= 900.0,
        "the record came after ~1 s of keep-alives"
    );
    wait_for(5000, "waiting after silence", || {
        log.borrow().states().last().map(String::as_str) == Some("waiting")
    })
    .await;
    assert_eq!(log.borrow().error_codes(), ["idle_timeout"]);
    let st = fetch_state(&f);
    let aborted = n(&st, "aborted") + n(&st, "cancelled");
    assert!(aborted >= 1.0, "the silent request is aborted");
    ls.close().unwrap();
}

#[wasm_bindgen_test]
async fn token_function_before_each_connect_and_after_401_errors_retry() {
    // 1st connect: the token function throws -> token_error, wait, retry.
    // 2nd connect: token "Bearer t2" -> 401 -> asked again at once with refresh=true.
    // 3rd connect: token t3 -> 200.
    let specs = Array::of2(
        &spec(
            401,
            br#"{"error":"unauthorized","error_description":"expired"}"#,
            64,
            false,
        ),
        &spec(200, crlf(&[record(BIG_ID, "3", "ok")]).as_bytes(), 64, true),
    );
    let f = fake_fetch(&specs);
    let log = Shared::default();
    let o = options("https://example.test/api/1/stream/t", &log);
    set(&o, "fetch", f.clone());
    set(&o, "reconnectDelayMs", 50);
    let asked: Rc<RefCell<Vec<(f64, bool)>>> = Rc::default();
    let a = asked.clone();
    let token =
        Closure::<dyn FnMut(JsValue) -> Result<JsValue, JsValue>>::new(move |req: JsValue| {
            let k = a.borrow().len();
            a.borrow_mut().push((
                n(&req, "connection"),
                get(&req, "refresh").as_bool().unwrap(),
            ));
            match k {
                0 => Err(js_sys::Error::new("vault unreachable").into()),
                1 => Ok(Promise::resolve(&JsValue::from_str("Bearer t2")).into()),
                _ => Ok(format!("t{}", k + 1).into()),
            }
        });
    set(&o, "token", token.into_js_value());
    let ls = stream(&o);
    ls.start().unwrap();
    wait_for(5000, "a hit", || !log.borrow().hits.is_empty()).await;
    assert_eq!(
        *asked.borrow(),
        vec![(0.0, false), (0.0, false), (0.0, true)]
    );
    assert_eq!(log.borrow().error_codes(), ["token_error", "unauthorized"]);
    assert!(s(&log.borrow().errors[0], "message").contains("vault unreachable"));
    let calls = Array::from(&get(&fetch_state(&f), "calls"));
    assert_eq!(calls.length(), 2, "no request without a token");
    let auth = |i: u32| {
        s(
            &get(&get(&calls.get(i), "init"), "headers"),
            "Authorization",
        )
    };
    assert_eq!(auth(0), "Bearer t2");
    assert_eq!(auth(1), "Bearer t3");
    assert_eq!(
        log.borrow().states(),
        ["connecting", "waiting", "connecting", "connecting", "open"]
    );
    ls.close().unwrap();
}

#[wasm_bindgen_test]
async fn callback_errors_are_reported_and_the_stream_goes_on() {
    let lines: Vec<String> = (0..3)
        .map(|i| record(BIG_ID, &i.to_string(), "p"))
        .collect();
    let f = fake_fetch(&Array::of1(&spec(200, crlf(&lines).as_bytes(), 1, true)));
    let log = Shared::default();
    let o = options("https://example.test/api/1/stream/cb", &log);
    set(&o, "fetch", f);
    let l = log.clone();
    let on_hits =
        Closure::<dyn FnMut(JsValue) -> Result<(), JsValue>>::new(move |hits: JsValue| {
            for h in Array::from(&hits).iter() {
                l.borrow_mut().hits.push(h);
            }
            Err(js_sys::Error::new("boom").into())
        });
    set(&o, "onHits", on_hits.into_js_value());
    let ls = stream(&o);
    ls.start().unwrap();
    wait_for(5000, "3 hits", || log.borrow().hits.len() >= 3).await;
    let errors = log.borrow().errors.clone();
    assert!(!errors.is_empty());
    for e in &errors {
        assert_eq!(s(e, "code"), "callback_error");
        assert!(s(e, "message").contains("onHits") && s(e, "message").contains("boom"));
        assert_eq!(get(e, "fatal").as_bool(), Some(false));
    }
    assert_eq!(ls.state().unwrap().as_string().unwrap(), "running");
    ls.close().unwrap();
}

#[wasm_bindgen_test]
async fn close_inside_a_callback_stops_everything() {
    let lines: Vec<String> = (0..5)
        .map(|i| record(BIG_ID, &i.to_string(), "p"))
        .collect();
    let f = fake_fetch(&Array::of1(&spec(200, crlf(&lines).as_bytes(), 1, true)));
    let log = Shared::default();
    let o = options("https://example.test/api/1/stream/reentrant", &log);
    set(&o, "fetch", f.clone());
    let slot: Rc<RefCell<Option<Rc<LiveStream>>>> = Rc::default();
    let (l, sl) = (log.clone(), slot.clone());
    let on_hits = Closure::<dyn FnMut(JsValue)>::new(move |hits: JsValue| {
        for h in Array::from(&hits).iter() {
            l.borrow_mut().hits.push(h);
        }
        let ls = sl.borrow().clone().unwrap();
        ls.close().unwrap();
        ls.close().unwrap();
    });
    set(&o, "onHits", on_hits.into_js_value());
    let ls = Rc::new(stream(&o));
    *slot.borrow_mut() = Some(ls.clone());
    ls.start().unwrap();
    wait_for(5000, "closed", || {
        log.borrow().states().last().map(String::as_str) == Some("closed")
    })
    .await;
    sleep(200).await;
    let log = log.borrow();
    assert_eq!(log.hits.len(), 1, "hits after close()");
    assert!(
        log.batches.is_empty(),
        "onBatch after close() inside onHits"
    );
    assert_eq!(log.states(), ["connecting", "open", "closed"]);
    let st = fetch_state(&f);
    assert!(n(&st, "aborted") + n(&st, "cancelled") >= 1.0);
}

// ---- against the emulator --------------------------------------------------------------------

#[wasm_bindgen_test]
async fn emulator_one_byte_chunks_exact_ids_and_close_is_seen_by_the_server() {
    let name = unique("web-exact");
    let lines = [
        record(BIG_ID, "4948646782672799561", "a"),
        String::new(),
        record(MAX_ID, MAX_ID, "b"),
        record(BIG_ID, "4948646782672799561", "a again"),
    ];
    let script_json = format!(
        r#"{{"rate":0,"body":{{"lines":{},"chunk_size":1,"gzip":true,"then":"hold"}}}}"#,
        js_sys::JSON::stringify(
            &lines
                .iter()
                .map(|l| JsValue::from_str(l))
                .collect::<Array>()
        )
        .unwrap()
        .as_string()
        .unwrap()
    );
    script(&name, &script_json).await;
    let log = Shared::default();
    let ls = stream(&options(&stream_url(&name), &log));
    ls.start().unwrap();
    wait_for(10_000, "2 hits", || log.borrow().hits.len() >= 2).await;
    sleep(100).await;
    assert_eq!(
        hit_ids(&log),
        vec![
            (BIG_ID.into(), "4948646782672799561".into()),
            (MAX_ID.into(), MAX_ID.into())
        ]
    );
    assert_eq!(batch_ids(&log), hit_ids(&log));
    assert_eq!(n(&ls.stats().unwrap(), "duplicates"), 1.0);
    let st = emulator_stats(&name).await;
    assert_eq!(n(&get(&get(&st, "streams"), &name), "live"), 1.0);

    let before = log.borrow().total();
    ls.close().unwrap();
    assert_eq!(
        log.borrow().total(),
        before + 1,
        "exactly the closed status inside close()"
    );
    // The server sees the connection closed.
    let mut closed = false;
    for _ in 0..100 {
        let st = emulator_stats(&name).await;
        let conns = Array::from(&get(&st, "connections"));
        if n(&get(&get(&st, "streams"), &name), "live") == 0.0
            && conns.length() == 1
            && !get(&conns.get(0), "closed_ms").is_null()
        {
            assert_eq!(s(&conns.get(0), "close_reason"), "client_closed");
            closed = true;
            break;
        }
        sleep(20).await;
    }
    assert!(closed, "the emulator did not see the connection close");
    assert_eq!(
        log.borrow().total(),
        before + 1,
        "a callback fired after close()"
    );
}

#[wasm_bindgen_test]
async fn emulator_409_waits_at_least_the_delay_then_reconnects() {
    let name = unique("web-409");
    script(
        &name,
        &format!(
            r#"{{"rate":0,"responses":[{{"status":409,"error_description":"too many clients"}}],
                 "body":{{"lines":[{}],"then":"hold"}}}}"#,
            js_sys::JSON::stringify(&record(BIG_ID, "9", "after 409").into())
                .unwrap()
                .as_string()
                .unwrap()
        ),
    )
    .await;
    let log = Shared::default();
    let o = options(&stream_url(&name), &log);
    set(&o, "reconnectDelayMs", 250);
    let ls = stream(&o);
    ls.start().unwrap();
    wait_for(10_000, "a hit after the 409", || {
        !log.borrow().hits.is_empty()
    })
    .await;
    let log_ref = log.borrow();
    assert_eq!(
        log_ref.states(),
        ["connecting", "waiting", "connecting", "open"]
    );
    let (t_wait, waiting) = &log_ref.statuses[1];
    let (t_next, _) = &log_ref.statuses[2];
    assert_eq!(n(waiting, "httpStatus"), 409.0);
    let retry = n(waiting, "retryInMs");
    assert!(retry >= 250.0, "retryInMs {retry}");
    assert!(
        s(waiting, "reason").contains("too many clients"),
        "{}",
        s(waiting, "reason")
    );
    assert!(
        t_next - t_wait >= retry - 2.0,
        "reconnected after {} ms < {retry}",
        t_next - t_wait
    );
    let err = &log_ref.errors[0];
    assert_eq!(s(err, "code"), "conflict");
    assert_eq!(n(err, "httpStatus"), 409.0);
    assert_eq!(get(err, "fatal").as_bool(), Some(false));
    assert_eq!(s(&log_ref.hits[0], "pageName"), "after 409");
    drop(log_ref);
    assert_eq!(n(&ls.stats().unwrap(), "reconnects"), 1.0);
    ls.close().unwrap();
}

#[wasm_bindgen_test]
async fn emulator_404_fails_and_requests_nothing_more() {
    let name = unique("web-404");
    script(&name, r#"{"rate":0,"responses":[{"status":404}]}"#).await;
    let log = Shared::default();
    let o = options(&stream_url(&name), &log);
    set(&o, "reconnectDelayMs", 50);
    let counting = js_fn(
        "real",
        "const f = (u, i) => { f.count++; return real(u, i); }; f.count = 0; return f;",
    )
    .call1(&JsValue::UNDEFINED, &global_fetch())
    .unwrap();
    set(&o, "fetch", counting.clone());
    let ls = stream(&o);
    ls.start().unwrap();
    wait_for(10_000, "failed", || {
        log.borrow().states().contains(&"failed".to_string())
    })
    .await;
    sleep(400).await;
    assert_eq!(n(&counting, "count"), 1.0);
    let st = emulator_stats(&name).await;
    assert_eq!(n(&get(&get(&st, "streams"), &name), "requests"), 1.0);
    let log_ref = log.borrow();
    assert_eq!(log_ref.states(), ["connecting", "failed"]);
    assert_eq!(n(&log_ref.statuses[1].1, "httpStatus"), 404.0);
    let err = &log_ref.errors[0];
    assert_eq!(s(err, "code"), "not_found");
    assert_eq!(get(err, "fatal").as_bool(), Some(true));
    assert!(
        s(err, "message").contains("90 days"),
        "{}",
        s(err, "message")
    );
    drop(log_ref);
    assert_eq!(ls.state().unwrap().as_string().unwrap(), "failed");
    ls.close().unwrap();
}

#[wasm_bindgen_test]
async fn emulator_token_function_is_asked_again_after_401() {
    let name = unique("web-401");
    script(
        &name,
        &format!(
            r#"{{"rate":0,"responses":[{{"status":401}}],"body":{{"lines":[{}],"then":"hold"}}}}"#,
            js_sys::JSON::stringify(&record(MAX_ID, "1", "fresh").into())
                .unwrap()
                .as_string()
                .unwrap()
        ),
    )
    .await;
    let log = Shared::default();
    let o = options(&stream_url(&name), &log);
    let asked: Rc<RefCell<Vec<bool>>> = Rc::default();
    let a = asked.clone();
    let token = Closure::<dyn FnMut(JsValue) -> JsValue>::new(move |req: JsValue| {
        a.borrow_mut().push(get(&req, "refresh").as_bool().unwrap());
        let t = JsValue::from(format!("token-{}", a.borrow().len()));
        Promise::resolve(&t).into()
    });
    set(&o, "token", token.into_js_value());
    let ls = stream(&o);
    ls.start().unwrap();
    wait_for(10_000, "a hit after the 401", || {
        !log.borrow().hits.is_empty()
    })
    .await;
    assert_eq!(*asked.borrow(), [false, true]);
    assert_eq!(log.borrow().error_codes(), ["unauthorized"]);
    assert_eq!(hit_ids(&log), [(MAX_ID.to_string(), "1".to_string())]);
    ls.close().unwrap();
}

#[wasm_bindgen_test]
async fn emulator_redirect_is_followed() {
    let name = unique("web-302");
    let target = format!("/api/1/stream/{name}?maxConnections=1&_lb=1");
    script(
        &name,
        &format!(
            r#"{{"rate":0,"responses":[{{"status":302,"location":"{target}"}}],"body":{{"lines":[{}],"then":"hold"}}}}"#,
            js_sys::JSON::stringify(&record(BIG_ID, "302", "moved").into()).unwrap().as_string().unwrap()
        ),
    )
    .await;
    let log = Shared::default();
    let ls = stream(&options(&stream_url(&name), &log));
    ls.start().unwrap();
    wait_for(10_000, "a hit after the redirect", || {
        !log.borrow().hits.is_empty()
    })
    .await;
    assert_eq!(hit_ids(&log), [(BIG_ID.to_string(), "302".to_string())]);
    assert!(
        log.borrow().errors.is_empty(),
        "{:?}",
        log.borrow().error_codes()
    );
    assert_eq!(log.borrow().states().last().unwrap(), "open");
    ls.close().unwrap();
}

#[wasm_bindgen_test]
async fn one_large_chunk_of_mixed_text_keeps_stream_order_in_every_form() {
    // Records above and below U+00FF interleaved, in one chunk larger than the shell's
    // slice, so it arrives as several batches each with both regions.
    let pages = [
        "plain",
        "\u{65e5}\u{672c}",
        "caf\u{e9}",
        "\u{1f600}",
        "\u{ff}",
        "x\u{100}",
    ];
    let total = 2000u64;
    let lines: Vec<String> = (0..total)
        .map(|i| {
            let page = format!("{} {i}", pages[i as usize % pages.len()]);
            record(&(i + 1).to_string(), &(u64::MAX - i).to_string(), &page)
        })
        .collect();
    let body = crlf(&lines);
    assert!(body.len() > 300 * 1024);
    let f = fake_fetch(&Array::of1(&spec(
        200,
        body.as_bytes(),
        body.len() as u32,
        true,
    )));
    let log = Shared::default();
    let o = options("https://example.test/api/1/stream/x", &log);
    set(&o, "fetch", f);
    let ls = stream(&o);
    ls.start().unwrap();
    wait_for(5000, "all hits", || log.borrow().hits.len() as u64 >= total).await;
    ls.close().unwrap();
    let want: Vec<(String, String)> = (0..total)
        .map(|i| ((i + 1).to_string(), (u64::MAX - i).to_string()))
        .collect();
    assert_eq!(hit_ids(&log), want, "onHits order");
    assert_eq!(batch_ids(&log), want, "onBatch order");
    let log = log.borrow();
    assert!(log.batches.len() >= 2, "the chunk was fed in slices");
    for (i, h) in log.hits.iter().enumerate() {
        let page = format!("{} {i}", pages[i % pages.len()]);
        assert_eq!(s(h, "pageName"), page);
    }
    // toArray() and get(i) of each batch give the same hits in the same order.
    let mut k = 0;
    for b in &log.batches {
        let to_array: Function = get(b, "toArray").unchecked_into();
        let all = Array::from(&to_array.call0(b).unwrap());
        let got: Function = get(b, "get").unchecked_into();
        for i in 0..all.length() {
            let page = format!("{} {k}", pages[k % pages.len()]);
            assert_eq!(s(&all.get(i), "pageName"), page);
            assert_eq!(s(&got.call1(b, &i.into()).unwrap(), "pageName"), page);
            assert_eq!(
                s(&all.get(i), "hitIdLow"),
                (u64::MAX - k as u64).to_string()
            );
            k += 1;
        }
    }
    assert_eq!(k as u64, total);
}
