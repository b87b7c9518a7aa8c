//! Property and integration tests of the record path: framer -> scan_record (+ the id
//! quoting of write_with_quoted_ids) -> dedup.
//!
//! The oracles are independent of the code under test: a few-line reference framer that
//! works on the whole body at once, a bit-by-bit CRC-32 with a hand-built gzip container
//! around miniz_oxide's deflate, serde_json for JSON validity and values, and a
//! `HashSet` + `VecDeque` model for de-duplication. The framing and gzip oracles live in
//! tests/support, where the fuzz targets use them too.

mod support;

use livestream_wasm::core::dedup::Dedup;
use livestream_wasm::core::framer::{FrameSink, Framer, KEEP_CAPACITY};
use livestream_wasm::core::record::{
    scan_record, write_with_quoted_ids, HitKey, RecordError, RecordErrorKind, RecordInfo, ID_FIELDS,
};
use proptest::prelude::*;
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use support::gzip::gzip_member;
use support::oracles::{
    assert_within_cap, neutralize_surrogates, push_chunks, reference_framing, Ev, Events,
};

// ----- helpers ---------------------------------------------------------------------------

/// Feeds `body` in chunks of the given sizes (cycled), checking the memory bound after
/// every push. Returns the events and what `finish` said.
fn feed(framer: &mut Framer, body: &[u8], sizes: &[usize], max: usize) -> (Vec<Ev>, u64) {
    let mut sink = Events::default();
    push_chunks(
        framer,
        body,
        sizes.iter().copied().cycle(),
        &mut sink,
        |f| assert_within_cap(f, max),
    );
    let left = framer.finish();
    (sink.0, left)
}

/// A gzip body of `data` cut into members at the given positions.
fn gzip_body(data: &[u8], cuts: &[usize], level: u8, flags: &[u8]) -> Vec<u8> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &c) in cuts.iter().chain(std::iter::once(&data.len())).enumerate() {
        out.extend(gzip_member(&data[start..c], level, flags[i % flags.len()]));
        start = c;
    }
    out
}

// ----- strategies ------------------------------------------------------------------------

/// Pieces a line is made of: ASCII, blanks, a lone CR, multi-byte UTF-8, a 1f byte.
fn atom() -> impl Strategy<Value = &'static [u8]> {
    prop::sample::select(vec![
        &b"a"[..],
        b"{\"k\":1}",
        b"xyz0123",
        b" ",
        b"\t",
        b"\r",
        "é".as_bytes(),
        "€".as_bytes(),
        "😀".as_bytes(),
        b"\x1f\x8b",
    ])
}

/// A line: content plus CRLF or LF.
fn line() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(atom(), 0..12), any::<bool>()).prop_map(|(atoms, crlf)| {
        let mut l = atoms.concat();
        l.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        l
    })
}

/// A body: lines and an optional unterminated tail.
fn body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(line(), 0..30),
        prop::collection::vec(atom(), 0..4),
    )
        .prop_map(|(lines, tail)| {
            let mut b = lines.concat();
            b.extend(tail.concat());
            b
        })
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![1]),
        prop::collection::vec(1usize..8, 1..10),
        prop::collection::vec(1usize..200, 1..10),
    ]
}

fn cap() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), 1usize..10, 10usize..40, Just(100_000)]
}

// ----- framing properties ----------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any split of a plain body gives the records of the unsplit body, in order, once.
    #[test]
    fn plain_any_split_same_records(body in body(), sizes in chunk_sizes(), max in cap()) {
        prop_assume!(!body.starts_with(b"\x1f\x8b"));
        let want = reference_framing(&body, max);
        let mut f = Framer::new(max);
        prop_assert_eq!(feed(&mut f, &body, &sizes, max), want.clone());
        // Whole body in one chunk, and 1-byte chunks, on the same (reused) framer.
        prop_assert_eq!(feed(&mut f, &body, &[usize::MAX], max), want.clone());
        prop_assert_eq!(feed(&mut f, &body, &[1], max), want);
    }

    /// The same body gzip'd (in 1..4 members, any header fields, any level) and split
    /// anywhere gives the same records.
    #[test]
    fn gzip_any_split_same_records(
        body in body(),
        sizes in chunk_sizes(),
        max in cap(),
        cuts in prop::collection::vec(any::<usize>(), 0..3),
        level in 0u8..=9,
        flags in prop::collection::vec(prop::sample::select(vec![0u8, 2, 4, 8, 16, 30]), 1..4),
    ) {
        let want = reference_framing(&body, max);
        let gz = gzip_body(&body, &cuts, level, &flags);
        let mut f = Framer::new(max);
        prop_assert_eq!(feed(&mut f, &gz, &sizes, max), want.clone());
        prop_assert_eq!(feed(&mut f, &gz, &[1], max), want);
    }

    /// A gzip body cut short delivers a prefix of the records, never a gzip error, and
    /// says the member is incomplete.
    #[test]
    fn gzip_truncated_is_a_prefix(body in body(), cut in any::<usize>(), sizes in chunk_sizes()) {
        let gz = gzip_member(&body, 6, 0);
        // From 2 bytes on it is known to be gzip.
        let cut = 2 + cut % (gz.len() - 2);
        let (want, _) = reference_framing(&body, 1000);
        let mut f = Framer::new(1000);
        let mut sink = Events::default();
        push_chunks(&mut f, &gz[..cut], sizes.iter().copied().cycle(), &mut sink, |_| {});
        prop_assert!(f.gzip_member_incomplete());
        f.finish();
        prop_assert!(sink.0.len() <= want.len());
        prop_assert_eq!(&sink.0[..], &want[..sink.0.len()]);
    }

    /// Flipping one bit of a gzip body never panics, gives at most one gzip error and
    /// nothing after it; a flip in the method byte or the trailer is always caught. (Records
    /// inflated before the CRC check may be corrupt: a stream cannot wait for the trailer.)
    #[test]
    fn gzip_corruption_is_contained(body in body(), at in any::<usize>(), bit in 0u8..8) {
        let mut gz = gzip_member(&body, 6, 0);
        let at = at % gz.len();
        gz[at] ^= 1 << bit;
        let mut f = Framer::new(1000);
        let (evs, _) = feed(&mut f, &gz, &[7], 1000);
        let errors = evs.iter().filter(|e| matches!(e, Ev::GzipError(_))).count();
        prop_assert!(errors <= 1);
        if errors == 1 {
            prop_assert!(matches!(evs.last(), Some(Ev::GzipError(_))));
        }
        // Bytes 0-1 flipped make a plain body; MTIME/XFL/OS are free; a flipped flag may
        // swallow data as a name. The method byte and the trailer are always checked.
        if at == 2 || at >= gz.len() - 8 {
            prop_assert_eq!(errors, 1, "flip at {} not caught: {:?}", at, evs);
        }
    }
}

#[test]
fn gzip_from_the_gzip_tool() {
    // `printf '{"a":1}\r\n\r\n{"b":"é"}\r\n' | gzip -9 -c` (with a file name) — produced by
    // the real tool, so the container is not only checked against our own builder.
    let gz: &[u8] = &[
        0x1f, 0x8b, 0x08, 0x08, 0xf0, 0xd2, 0x0b, 0x6b, 0x02, 0x03, 0x72, 0x2e, 0x6a, 0x73, 0x6f,
        0x6e, 0x00, 0xab, 0x56, 0x4a, 0x54, 0xb2, 0x32, 0xac, 0xe5, 0xe5, 0xe2, 0xe5, 0xaa, 0x56,
        0x4a, 0x52, 0xb2, 0x52, 0x3a, 0xbc, 0x52, 0x09, 0xc8, 0x03, 0x00, 0xa4, 0x8b, 0x11, 0x9e,
        0x17, 0x00, 0x00, 0x00,
    ];
    let mut f = Framer::new(100);
    let (evs, left) = feed(&mut f, gz, &[1], 100);
    assert_eq!(
        evs,
        [
            Ev::Record(b"{\"a\":1}".to_vec()),
            Ev::Record("{\"b\":\"é\"}".as_bytes().to_vec())
        ]
    );
    assert_eq!(left, 0);
}

/// Issue 13 item 8: a record of exactly the cap whose CRLF comes in a later chunk used to
/// double the buffer (1 MiB -> 2 MiB). The capacity must stay within cap + 1 after every
/// push, whatever the chunking, and drop back to at most KEEP_CAPACITY once a large record
/// is done.
#[test]
fn exact_max_records_do_not_grow_the_buffer_past_the_cap() {
    for max in [64usize, 255, 256, 1000, 4096, KEEP_CAPACITY + 3000] {
        for len in [max - 1, max, max + 1] {
            let mut body = vec![b'x'; len];
            body.extend(b"\r\n{\"next\":1}\r\n");
            let mut want = vec![if len > max {
                Ev::Oversized(len as u64)
            } else {
                Ev::Record(vec![b'x'; len])
            }];
            want.push(Ev::Record(b"{\"next\":1}".to_vec()));
            // Cuts right before, inside and after the CRLF, and a few inside the record.
            let mut cut_sets: Vec<Vec<usize>> = vec![
                vec![len],
                vec![len, 1],
                vec![len + 1],
                vec![len + 2],
                vec![len - 1, 1, 1],
                vec![len / 2, len - len / 2],
                vec![len / 3, len / 3, len - 2 * (len / 3), 1],
                vec![1, len - 1, 1],
            ];
            if max < 2000 {
                cut_sets.push(vec![1]);
                cut_sets.push(vec![7]);
            }
            for cuts in &cut_sets {
                let mut f = Framer::new(max);
                let mut sink = Events::default();
                let sizes = cuts.iter().copied().chain(std::iter::repeat(1_000_000));
                push_chunks(&mut f, &body, sizes, &mut sink, |f| {
                    assert!(
                        f.buffered_capacity() <= max + 1,
                        "max {max}, record {len}, cuts {cuts:?}: capacity {} after a push",
                        f.buffered_capacity()
                    )
                });
                assert_eq!(sink.0, want, "max {max}, record {len}, cuts {cuts:?}");
                assert!(
                    f.buffered_capacity() <= KEEP_CAPACITY,
                    "max {max}, record {len}, cuts {cuts:?}: {} kept after the record",
                    f.buffered_capacity()
                );
                assert_eq!(f.finish(), 0);
            }
        }
    }
}

/// A huge record cut by chunk boundaries, then small ones: the memory is given back.
#[test]
fn buffer_memory_is_given_back_after_a_large_record() {
    let max = 1 << 20;
    let mut f = Framer::new(max);
    let mut sink = Events::default();
    let big = vec![b'y'; 900_000];
    for c in big.chunks(65_536) {
        f.push(c, &mut sink);
    }
    assert!(f.buffered_capacity() >= 900_000);
    assert!(f.buffered_capacity() <= max + 1);
    f.push(b"\r\n{\"a\":1}\r\n{\"b\"", &mut sink);
    assert_eq!(sink.0.len(), 2);
    assert!(
        f.buffered_capacity() <= KEEP_CAPACITY,
        "{}",
        f.buffered_capacity()
    );
    // An oversized record is skipped without keeping its buffer either.
    let mut f = Framer::new(200_000);
    f.push(&vec![b'z'; 150_000], &mut sink);
    assert!(f.buffered_capacity() >= 150_000);
    f.push(&vec![b'z'; 100_000], &mut sink);
    assert_eq!(f.buffered_capacity(), 0);
    f.push(b"\n", &mut sink);
    assert_eq!(sink.0.last(), Some(&Ev::Oversized(250_000)));
}

#[test]
fn oversized_then_next_record_intact_any_split() {
    let mut body = vec![b'{'; 5000];
    body.extend(b"\r\n{\"next\":1}\r\n");
    let want = vec![Ev::Oversized(5000), Ev::Record(b"{\"next\":1}".to_vec())];
    for sizes in [
        vec![1],
        vec![3, 4999],
        vec![4999, 1, 1],
        vec![5000],
        vec![5001],
        vec![64],
    ] {
        let mut f = Framer::new(100);
        assert_eq!(
            feed(&mut f, &body, &sizes, 100),
            (want.clone(), 0),
            "{sizes:?}"
        );
        let gz = gzip_member(&body, 9, 0);
        assert_eq!(
            feed(&mut f, &gz, &sizes, 100),
            (want.clone(), 0),
            "gzip {sizes:?}"
        );
    }
}

// ----- scan_record properties -------------------------------------------------------------

/// Scans `record` and appends it to `out` with its ids quoted (what the web shell does).
fn rewrite(record: &[u8], out: &mut Vec<u8>) -> Result<RecordInfo, RecordError> {
    let mut repaired = Vec::new();
    let s = scan_record(record, &mut repaired)?;
    write_with_quoted_ids(s.text, &s.info, out);
    Ok(s.info)
}

/// Changes one byte of `text` at `at` (mod its length + 1): deletes it (`op` 0), inserts
/// `byte` before it (1) or replaces it (2); a delete or replace past the end does nothing.
fn change_one_byte(text: &mut Vec<u8>, op: u8, at: usize, byte: u8) {
    let at = at % (text.len() + 1);
    match op {
        0 if at < text.len() => {
            text.remove(at);
        }
        1 => text.insert(at, byte),
        _ if at < text.len() => text[at] = byte,
        _ => {}
    }
}

/// A random JSON value with keys that are never id names (so any object is valid).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e15f64..1e15).prop_map(Value::from),
        "[a-zé€😀\"\\\\/\n\t\u{1}\u{7f} ]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{0,6}|hitIdHigh|visIdLow", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The parts of a generated record: ids (None = absent, Some(None) = null).
#[derive(Clone, Debug)]
struct Rec {
    ids: [Option<Option<u64>>; 6],
    time: Option<u64>,
    extra: Vec<(String, Value)>,
    string_ids: bool,
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        prop::array::uniform6(prop::option::weighted(
            0.9,
            prop::option::weighted(0.95, any::<u64>()),
        )),
        prop::option::of(1_300_000_000u64..2_000_000_000),
        prop::collection::btree_map("[a-zA-Z]{1,10}", json_value(), 0..6)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>()),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(ids, time, extra, string_ids)| Rec {
            ids,
            time,
            extra,
            string_ids,
        })
}

/// The record's text, fields in a fixed order (ids first, then time, then the rest).
fn rec_text(r: &Rec) -> String {
    let mut parts = Vec::new();
    for (name, id) in ID_FIELDS.iter().zip(r.ids) {
        match id {
            None => {}
            Some(None) => parts.push(format!("\"{name}\":null")),
            Some(Some(v)) if r.string_ids => parts.push(format!("\"{name}\":\"{v}\"")),
            Some(Some(v)) => parts.push(format!("\"{name}\":{v}")),
        }
    }
    if let Some(t) = r.time {
        parts.push(format!("\"timeGMT\":{t}"));
    }
    for (k, v) in &r.extra {
        // Never an id name or timeGMT, so the extra field does not shadow one.
        parts.push(format!("\"x{k}\":{v}"));
    }
    format!("{{{}}}", parts.join(","))
}

fn key_of(r: &Rec) -> Option<HitKey> {
    match (r.ids[0], r.ids[1]) {
        (Some(Some(high)), Some(Some(low))) => Some(HitKey { high, low }),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The output parses; ids are strings of exactly the u64's digits; everything else is
    /// equal to the input's value; the info matches.
    #[test]
    fn rewrite_round_trips(r in rec(), ws in "[ \t]{0,2}") {
        let text = format!("{ws}{}{ws}", rec_text(&r));
        let mut out = b"keep".to_vec();
        let info = rewrite(text.as_bytes(), &mut out).unwrap();
        prop_assert_eq!(&out[..4], b"keep");
        let got: Value = serde_json::from_slice(&out[4..]).unwrap();
        let orig: Value = serde_json::from_str(&text).unwrap();
        let (got, orig) = (got.as_object().unwrap(), orig.as_object().unwrap());
        prop_assert_eq!(got.len(), orig.len());
        for (k, v) in orig {
            match ID_FIELDS.iter().position(|f| f == k) {
                Some(i) => match r.ids[i] {
                    Some(Some(id)) => prop_assert_eq!(&got[k], &Value::String(id.to_string())),
                    _ => prop_assert_eq!(&got[k], &Value::Null),
                },
                None => prop_assert_eq!(&got[k], v),
            }
        }
        prop_assert_eq!(info.hit_key, key_of(&r));
        let vis = match (r.ids[2], r.ids[3]) {
            (Some(Some(h)), Some(Some(l))) => Some((h, l)),
            _ => None,
        };
        prop_assert_eq!(info.vis_id, vis);
        prop_assert_eq!(info.time_gmt, r.time.map(|t| t as f64));
        prop_assert!(!info.replaced_invalid_utf8);
    }

    /// Differential check of the validator against serde_json on valid objects with one
    /// byte changed (deleted, inserted or replaced by an ASCII byte).
    #[test]
    fn validator_agrees_with_serde_json(
        v in prop::collection::btree_map("[a-z]{0,6}", json_value(), 0..6),
        op in 0u8..3,
        at in any::<usize>(),
        byte in prop::sample::select(b"{}[]:,\"\\ 0123456789.eE+-tfnulrsax\t\n\x01".to_vec()),
    ) {
        let mut text = serde_json::to_vec(&Value::Object(v.into_iter().collect())).unwrap();
        change_one_byte(&mut text, op, at, byte);
        prop_assume!(std::str::from_utf8(&text).is_ok());
        let serde = serde_json::from_slice::<Value>(&text);
        if let Err(e) = &serde {
            // serde_json rejects finite-syntax numbers that overflow f64; JSON does not.
            prop_assume!(!e.to_string().contains("number out of range"));
        }
        let serde_ok = serde.map(|v| v.is_object()).unwrap_or(false);
        let mut out = Vec::new();
        let ours = rewrite(&text, &mut out);
        prop_assert_eq!(
            ours.is_ok(),
            serde_ok,
            "text {:?}: ours {:?}",
            String::from_utf8_lossy(&text),
            ours
        );
        if ours.is_ok() {
            // The output is the same JSON (there are no top-level ids here).
            let a: Value = serde_json::from_slice(&out).unwrap();
            let b: Value = serde_json::from_slice(&text).unwrap();
            prop_assert_eq!(a, b);
        }
    }

    /// Invalid UTF-8 anywhere is replaced as `String::from_utf8_lossy` does, and flagged.
    #[test]
    fn invalid_utf8_is_replaced(
        s in "[a-zé€😀 ]{0,20}",
        at in any::<usize>(),
        junk in prop::collection::vec(0x80u8..=0xff, 1..4),
    ) {
        let mut value = s.into_bytes();
        let at = at % (value.len() + 1);
        value.splice(at..at, junk);
        let mut text = b"{\"hitIdLow\":7,\"s\":\"".to_vec();
        text.extend_from_slice(&value);
        text.extend_from_slice(b"\"}");
        let mut out = Vec::new();
        let info = rewrite(&text, &mut out).unwrap();
        let valid = std::str::from_utf8(&value).is_ok();
        prop_assert_eq!(info.replaced_invalid_utf8, !valid);
        let want = format!(
            "{{\"hitIdLow\":\"7\",\"s\":\"{}\"}}",
            String::from_utf8_lossy(&value)
        );
        prop_assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}

/// An id value as it may appear in a stream, and the id it yields under the module's rule
/// (`Some` only for a usable id), and whether it is a bare number that gets quoted.
fn id_value() -> impl Strategy<Value = (String, Option<u64>, bool)> {
    prop_oneof![
        4 => any::<u64>().prop_map(|v| (v.to_string(), Some(v), true)),
        1 => (0u64..1000).prop_map(|v| (v.to_string(), Some(v), true)),
        2 => any::<u64>().prop_map(|v| (format!("\"{v}\""), Some(v), false)),
        1 => any::<u64>().prop_map(|v| (format!("\"0{v}\""), None, false)),
        1 => any::<u64>().prop_map(|v| (format!("-{v}"), None, false)),
        1 => any::<u64>().prop_map(|v| (format!("{v}.0"), None, false)),
        1 => any::<u64>().prop_map(|v| (format!("{v}e0"), None, false)),
        1 => (1u128..1 << 70).prop_map(|d| ((u64::MAX as u128 + d).to_string(), None, false)),
        1 => (1u64..1000).prop_map(|v| (format!("\"\\u0031{v}\""), None, false)),
        1 => prop::sample::select(vec![
            "null", "true", "false", "{}", "[1]", "\"\"", "\"x\"", "\"\\ud83d\"", "-0", "0.5",
            "\"-1\"", "\" 1\"", "{\"hitIdHigh\":1}",
        ])
        .prop_map(|v| (v.to_string(), None, false)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Issue 13 item 11: records with any id values (usable or not, repeated keys, lone
    /// surrogates in strings), possibly with one byte mutated. Accepted exactly when
    /// serde_json (surrogates neutralized; JSON.parse is the reference) accepts an object;
    /// when unmutated, the key fields follow the id rule (last occurrence wins) and the
    /// quoted output equals the input with exactly the usable bare ids turned into strings.
    #[test]
    fn any_id_values_follow_the_rule_and_agree_with_serde_json(
        members in prop::collection::vec(
            prop_oneof![
                3 => (0usize..6, id_value()).prop_map(|(k, v)| (Some(k), v.0, v.1, v.2)),
                1 => ("[a-z]{1,4}", json_value()).prop_map(|(k, v)| (None, format!("\"{k}\":{v}"), None, false)),
                1 => Just((None, "\"s\":\"half \\ud83d, other half \\ude00\"".to_string(), None, false)),
            ],
            0..10,
        ),
        ws in prop::sample::select(vec!["", " ", "\t", " \r\n "]),
        mutate in prop::option::weighted(0.3, (0u8..3, any::<usize>(), prop::sample::select(b"{}[]:,\"\\ 019.eE+-tfnu\t\x01".to_vec()))),
    ) {
        let mut parts = Vec::new();
        let mut last: [Option<(Option<u64>, bool)>; 6] = [None; 6];
        for (field, raw, id, bare) in &members {
            match field {
                Some(k) => {
                    parts.push(format!("\"{}\"{ws}:{ws}{raw}", ID_FIELDS[*k]));
                    last[*k] = Some((*id, *bare));
                }
                None => parts.push(raw.clone()),
            }
        }
        let mut text = format!("{ws}{{{ws}{}{ws}}}{ws}", parts.join(&format!("{ws},{ws}"))).into_bytes();
        if let Some((op, at, byte)) = mutate {
            change_one_byte(&mut text, op, at, byte);
        }
        // A mutation may cut a UTF-8 sequence: the scanner repairs it (U+FFFD, flagged) as
        // a browser's decoder would, so the reference sees the repaired text too.
        let lossy = String::from_utf8_lossy(&text).into_owned();
        let serde = serde_json::from_slice::<Value>(&neutralize_surrogates(lossy.as_bytes()));
        if let Err(e) = &serde {
            prop_assume!(!e.to_string().contains("number out of range"));
        }
        let serde_ok = serde.as_ref().map(|v| v.is_object()).unwrap_or(false);
        let mut repaired = Vec::new();
        let ours = scan_record(&text, &mut repaired);
        prop_assert_eq!(ours.is_ok(), serde_ok, "{:?}: {:?} / serde {:?}", String::from_utf8_lossy(&text), ours.as_ref().err(), serde.as_ref().err());
        let Ok(scanned) = ours else { return Ok(()) };
        // The text is the record, trimmed, as given.
        let trimmed = lossy.trim_matches(|c| " \t\r\n".contains(c));
        prop_assert_eq!(scanned.text, trimmed.as_bytes());
        let mut out = Vec::new();
        write_with_quoted_ids(scanned.text, &scanned.info, &mut out);
        let got: Value = serde_json::from_slice(&neutralize_surrogates(&out)).unwrap();
        let orig = serde.unwrap();
        let (got, orig) = (got.as_object().unwrap(), orig.as_object().unwrap());
        prop_assert_eq!(got.len(), orig.len());
        let spans: Vec<String> = scanned.info.bare_id_spans().iter()
            .map(|&(a, b)| String::from_utf8(scanned.text[a as usize..b as usize].to_vec()).unwrap())
            .collect();
        for (k, v) in orig {
            match (ID_FIELDS.iter().position(|f| f == k), &got[k]) {
                // A quoted id: the digits of an accepted bare u64.
                (Some(_), Value::String(digits)) if !v.is_string() => {
                    prop_assert!(digits.parse::<u64>().is_ok(), "{}", digits);
                    prop_assert!(spans.contains(digits), "{} not in {:?}", digits, spans);
                    let want = v.as_u64().map(|n| n.to_string());
                    prop_assert_eq!(want.as_ref(), Some(digits));
                }
                (_, g) => prop_assert_eq!(g, v),
            }
        }
        if mutate.is_none() {
            let id = |k: usize| last[k].and_then(|(id, _)| id);
            let want_hit = match (id(0), id(1)) {
                (Some(high), Some(low)) => Some(HitKey { high, low }),
                _ => None,
            };
            prop_assert_eq!(scanned.info.hit_key, want_hit);
            prop_assert_eq!(scanned.info.vis_id, id(2).zip(id(3)));
            let bare = last.iter().filter(|l| matches!(l, Some((Some(_), true)))).count();
            prop_assert_eq!(scanned.info.bare_id_spans().len(), bare);
        }
    }
}

#[test]
fn malformed_records_have_specific_messages() {
    let cases: &[(&str, RecordErrorKind, &str)] = &[
        ("{\"a\":1", RecordErrorKind::Syntax, "invalid JSON at byte 6: expected ',' or '}' after an object member, found the end of the record"),
        ("{\"a\":1}}", RecordErrorKind::Syntax, "invalid JSON at byte 7: unexpected text after the end of the JSON object"),
        ("{\"a\":\"\\x\"}", RecordErrorKind::Syntax, "invalid JSON at byte 6: invalid escape '\\x'"),
        ("{\"a\":\"\u{7}\"}", RecordErrorKind::Syntax, "invalid JSON at byte 6: control character U+0007 in a string must be escaped"),
        ("{\"a\":NaN}", RecordErrorKind::Syntax, "invalid JSON at byte 5: expected a value, found 'N' (NaN and Infinity are not JSON)"),
        ("{\"a\":007}", RecordErrorKind::Syntax, "invalid JSON at byte 5: leading zeros are not allowed in numbers"),
        ("null", RecordErrorKind::NotAnObject, "not a JSON object: starts with 'n'"),
        ("\"x\"", RecordErrorKind::NotAnObject, "not a JSON object: starts with '\"'"),
    ];
    for (text, kind, want) in cases {
        let mut out = Vec::new();
        let e = rewrite(text.as_bytes(), &mut out).unwrap_err();
        assert_eq!(e.kind(), *kind, "{text}");
        assert!(e.to_string().starts_with(want), "{text}: {e}");
    }
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    let e = rewrite(deep.as_bytes(), &mut Vec::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid JSON at byte 132: nesting deeper than 128 levels"
    );
}

// ----- the three together -----------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A stream of records (some duplicated, some malformed, some empty lines), plain or
    /// gzip, split anywhere: every good record comes out once with exact ids, duplicates
    /// are flagged exactly as the model says, malformed ones are errors and do not disturb
    /// the next record.
    #[test]
    fn pipeline(
        recs in prop::collection::vec(rec(), 1..25),
        dup_picks in prop::collection::vec((any::<usize>(), any::<usize>()), 0..8),
        bad_at in prop::collection::vec(any::<usize>(), 0..3),
        window in 1usize..6,
        sizes in chunk_sizes(),
        gz in any::<bool>(),
    ) {
        // Lines: the records, plus duplicates of earlier ones re-sent later, plus bad lines.
        let mut lines: Vec<Option<Rec>> = recs.iter().cloned().map(Some).collect();
        for (from, to) in dup_picks {
            let r = lines[from % lines.len()].clone();
            let to = to % (lines.len() + 1);
            lines.insert(to, r);
        }
        for at in bad_at {
            let at = at % (lines.len() + 1);
            lines.insert(at, None);
        }
        let mut body = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            match l {
                Some(r) => body.extend(rec_text(r).as_bytes()),
                None => body.extend(b"{\"hitIdLow\":-1,\"broken\":"),
            }
            body.extend(b"\r\n");
            if i % 4 == 0 {
                body.extend(b"\r\n");
            }
        }
        let body = if gz { gzip_member(&body, 6, 8) } else { body };

        struct Pipe {
            dedup: Dedup,
            out: Vec<u8>,
            delivered: Vec<(Option<HitKey>, Value)>,
            duplicates: usize,
            malformed: Vec<String>,
        }
        impl FrameSink for Pipe {
            fn record(&mut self, record: &[u8]) {
                let start = self.out.len();
                match rewrite(record, &mut self.out) {
                    Ok(info) => {
                        if let Some(k) = info.hit_key {
                            if !self.dedup.insert(k) {
                                self.duplicates += 1;
                                self.out.truncate(start);
                                return;
                            }
                        }
                        let v = serde_json::from_slice(&self.out[start..]).unwrap();
                        self.delivered.push((info.hit_key, v));
                    }
                    Err(e) => {
                        self.out.truncate(start);
                        self.malformed.push(e.to_string());
                    }
                }
            }
            fn oversized(&mut self, _: u64) {
                panic!("no record is oversized here");
            }
            fn gzip_error(&mut self, m: &str) {
                panic!("{m}");
            }
        }
        let mut pipe = Pipe {
            dedup: Dedup::new(window, 0x5eed),
            out: Vec::new(),
            delivered: Vec::new(),
            duplicates: 0,
            malformed: Vec::new(),
        };
        let mut f = Framer::new(1 << 20);
        push_chunks(&mut f, &body, sizes.iter().copied().cycle(), &mut pipe, |_| {});
        prop_assert_eq!(f.finish(), 0);

        // The model.
        let mut order: VecDeque<HitKey> = VecDeque::new();
        let mut seen: HashSet<HitKey> = HashSet::new();
        let mut want = Vec::new();
        let mut dups = 0;
        let mut bad = 0;
        for l in &lines {
            let Some(r) = l else {
                bad += 1;
                continue;
            };
            if let Some(key) = key_of(r) {
                if seen.contains(&key) {
                    dups += 1;
                    continue;
                }
                if order.len() == window {
                    seen.remove(&order.pop_front().unwrap());
                }
                order.push_back(key);
                seen.insert(key);
            }
            want.push(r.clone());
        }
        prop_assert_eq!(pipe.malformed.len(), bad);
        for m in &pipe.malformed {
            prop_assert!(m.contains("expected a value, found the end of the record"), "{}", m);
        }
        prop_assert_eq!(pipe.duplicates, dups);
        prop_assert_eq!(pipe.delivered.len(), want.len());
        prop_assert!(pipe.dedup.len() <= window);
        for ((key, v), r) in pipe.delivered.iter().zip(&want) {
            // serde_json's default float parsing is not exact: compare parsed with parsed.
            let orig: Value = serde_json::from_str(&rec_text(r)).unwrap();
            prop_assert_eq!(*key, key_of(r));
            for (name, id) in ID_FIELDS.iter().zip(r.ids) {
                match id {
                    None => prop_assert!(v.get(*name).is_none()),
                    Some(None) => prop_assert_eq!(&v[*name], &Value::Null),
                    Some(Some(id)) => prop_assert_eq!(&v[*name], &Value::String(id.to_string())),
                }
            }
            for (k, _) in &r.extra {
                let k = format!("x{k}");
                prop_assert_eq!(&v[&k], &orig[&k]);
            }
        }
    }
}

#[test]
fn dedup_bounded_detects_within_and_forgets_beyond_window() {
    let window = 1000;
    let mut d = Dedup::new(window, 0x5eed);
    let key = |i: u64| HitKey {
        high: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        low: i,
    };
    for i in 0..5000u64 {
        assert!(d.insert(key(i)));
        assert!(d.len() <= window);
        // Everything of the last `window` keys is a duplicate…
        if i >= 999 {
            assert!(!d.insert(key(i - 999)));
        }
    }
    // …and what is older is forgotten.
    assert!(d.insert(key(0)));
    assert_eq!(d.len(), window);
    let (ring, slots) = d.allocated();
    assert!(ring <= window && slots <= 2048, "{ring} {slots}");
}
