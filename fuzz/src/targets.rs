//! The fuzz targets: each takes one byte string and panics when an invariant breaks.

use std::collections::BTreeMap;

use livestream_wasm::core::framer::{Framer, KEEP_CAPACITY};
use livestream_wasm::core::record::{
    scan_record, write_with_quoted_ids, HitKey, RecordScanner, ID_FIELDS,
};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::rng::Rng;
use crate::support::gzip::gzip_member;
use crate::support::oracles::{
    assert_within_cap, neutralize_surrogates, push_chunks, reference_framing, Events,
};

// ----- (a) the framer ------------------------------------------------------------------

/// The framer's input layout: byte 0 flags (bit 0 gzip, bit 1 two gzip members, bits 2-4
/// chunking style, bits 5-7 deflate level), bytes 1-3 the cap (little endian, mod
/// 200 000, + 1), bytes 4-11 the chunking seed, then the body.
pub const FRAMER_HEADER: usize = 12;

/// Target (a): frames the body (plain or gzip, chunked as the header says) and checks the
/// records, oversized reports and leftover against [`reference_framing`], and the buffer
/// capacity bound after every push (`<= cap + 1`) and after the body (`<= KEEP_CAPACITY`).
pub fn framer(data: &[u8]) {
    if data.len() < FRAMER_HEADER {
        return;
    }
    let flags = data[0];
    let max = (u32::from_le_bytes([data[1], data[2], data[3], 0]) % 200_000 + 1) as usize;
    let mut rng = Rng::new(u64::from_le_bytes(data[4..12].try_into().unwrap()));
    let mut body = data[FRAMER_HEADER..].to_vec();
    let gzip = flags & 1 != 0;
    if !gzip && body.starts_with(&[0x1f, 0x8b]) {
        // A plain body that starts like gzip is sniffed as gzip by design.
        body[0] = b'x';
    }
    let (want, want_left) = reference_framing(&body, max);
    let wire = if gzip {
        let level = flags >> 5;
        if flags & 2 != 0 && body.len() > 1 {
            let cut = rng.below(body.len());
            let mut w = gzip_member(&body[..cut], level, 0);
            w.extend(gzip_member(&body[cut..], level, 0));
            w
        } else {
            gzip_member(&body, level, 0)
        }
    } else {
        body.clone()
    };
    let style = (flags >> 2) & 7;
    let mut f = Framer::new(max);
    let mut sink = Events::default();
    let sizes = std::iter::repeat_with(|| match style {
        0 => 1,
        1 => 1 + rng.below(16),
        2 => 1 + rng.below(max + 3),
        3 => 1 + rng.below(70_000),
        // The rest at once.
        4 => usize::MAX,
        _ => {
            let top = 1 + rng.below(4096);
            1 + rng.below(top)
        }
    });
    push_chunks(&mut f, &wire, sizes, &mut sink, |f| {
        assert_within_cap(f, max)
    });
    if gzip {
        assert!(
            !f.gzip_member_incomplete(),
            "complete gzip body seen as cut"
        );
    }
    let left = f.finish();
    assert!(
        f.buffered_capacity() <= KEEP_CAPACITY,
        "{} bytes of buffer kept after the body",
        f.buffered_capacity()
    );
    assert_eq!(sink.0, want, "records differ (cap {max}, gzip {gzip})");
    assert_eq!(left, want_left, "leftover differs (cap {max}, gzip {gzip})");
}

// ----- (b) the record scanner ----------------------------------------------------------

/// The id a raw JSON value yields under the module's rule, and whether it is a bare
/// number (which gets quoted).
pub fn expected_id(raw: &str) -> (Option<u64>, bool) {
    let b = raw.as_bytes();
    if !b.is_empty() && b.iter().all(u8::is_ascii_digit) {
        return (raw.parse().ok(), raw.parse::<u64>().is_ok());
    }
    if b.len() >= 2 && b[0] == b'"' && b[b.len() - 1] == b'"' {
        let inner = &raw[1..raw.len() - 1];
        let canonical = !inner.is_empty()
            && inner.bytes().all(|c| c.is_ascii_digit())
            && (inner == "0" || !inner.starts_with('0'));
        return (if canonical { inner.parse().ok() } else { None }, false);
    }
    (None, false)
}

/// Target (b): scans `data` as one record and checks it against serde_json: accepted
/// exactly when serde_json accepts an object (on the U+FFFD-repaired text with surrogate
/// escapes neutralized; numbers beyond f64 and nesting beyond serde_json's limit are
/// skipped), the text is the trimmed record, the key fields follow the id rule (last
/// occurrence of a key wins), and the quoted output parses with each usable bare id
/// turned into a string of the same digits and everything else unchanged.
pub fn record(data: &[u8]) {
    // A stream's scanner, which predicts names from the records before, gives exactly what
    // the plain scan gives: after a typical record, and after this one (every name predicted).
    let mut scratch = Vec::new();
    let plain = scan_record(data, &mut scratch);
    let mut scanner = RecordScanner::default();
    let typical = br#"{"hitIdHigh":1,"hitIdLow":2,"visIdHigh":3,"visIdLow":4,"timeGMT":5,"receivedTimeGMT":6,"pageName":"p","a":{"b":[1]},"x":"y"}"#;
    assert!(scanner.scan(typical).is_ok());
    for pass in 0..2 {
        assert_eq!(
            scanner.scan(data),
            plain,
            "the stream's scanner, pass {pass}"
        );
    }
    let lossy = String::from_utf8_lossy(data).into_owned();
    let reference = neutralize_surrogates(lossy.as_bytes());
    let serde = serde_json::from_slice::<Value>(&reference);
    if let Err(e) = &serde {
        let m = e.to_string();
        if m.contains("number out of range") || m.contains("recursion limit") {
            return;
        }
    }
    let serde_ok = serde.as_ref().is_ok_and(Value::is_object);
    let mut repaired = Vec::new();
    let ours = scan_record(data, &mut repaired);
    match (&ours, serde_ok) {
        (Ok(_), true) | (Err(_), false) => {}
        (Ok(_), false) => panic!("accepted, serde_json says {:?}", serde.err()),
        (Err(e), true) => panic!("rejected ({e}), serde_json accepts it"),
    }
    let Ok(scanned) = ours else { return };
    let trimmed = lossy.trim_matches(|c| " \t\r\n".contains(c));
    assert_eq!(
        scanned.text,
        trimmed.as_bytes(),
        "text is not the trimmed record"
    );
    assert_eq!(
        scanned.info.replaced_invalid_utf8,
        std::str::from_utf8(data).is_err()
    );

    // Raw top-level values, last occurrence wins (a BTreeMap insert, like JSON.parse).
    let raw: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(&neutralize_surrogates(trimmed.as_bytes()))
            .expect("serde_json reads the object's raw members");
    let id = |k: usize| raw.get(ID_FIELDS[k]).map(|r| expected_id(r.get()));
    let usable = |k: usize| id(k).and_then(|(v, _)| v);
    let want_hit = usable(0)
        .zip(usable(1))
        .map(|(high, low)| HitKey { high, low });
    assert_eq!(scanned.info.hit_key, want_hit, "hit_key");
    assert_eq!(scanned.info.vis_id, usable(2).zip(usable(3)), "vis_id");
    let bare: Vec<&str> = (0..6)
        .filter(|&k| matches!(id(k), Some((Some(_), true))))
        .map(|k| raw[ID_FIELDS[k]].get())
        .collect();
    let spans = scanned.info.bare_id_spans();
    assert_eq!(spans.len(), bare.len(), "bare id spans");
    assert!(
        spans.windows(2).all(|w| w[0].1 <= w[1].0),
        "spans sorted, disjoint"
    );
    for &(a, b) in spans {
        let digits = &scanned.text[a as usize..b as usize];
        assert!(
            bare.iter().any(|d| d.as_bytes() == digits),
            "span {a}..{b} is not a usable bare id"
        );
    }
    for (k, field) in [(0, "timeGMT"), (1, "receivedTimeGMT")] {
        let got = if k == 0 {
            scanned.info.time_gmt
        } else {
            scanned.info.received_time_gmt
        };
        let want = raw.get(field).and_then(|r| {
            let t = r.get();
            (t.starts_with('-') || t.starts_with(|c: char| c.is_ascii_digit()))
                .then(|| t.parse::<f64>().unwrap())
        });
        match (got, want) {
            (Some(g), Some(w)) if g == w => {}
            (Some(g), Some(w)) if w.is_finite() && w.abs() >= f64::MIN_POSITIVE => {
                assert!(((g - w) / w).abs() < 1e-14, "{field}: {g} vs {w}")
            }
            (Some(g), Some(w)) => {
                assert!(
                    g.abs() < 2.0 * f64::MIN_POSITIVE || g == w,
                    "{field}: {g} vs {w}"
                )
            }
            (g, w) => assert_eq!(g.is_some(), w.is_some(), "{field}: {g:?} vs {w:?}"),
        }
    }

    let mut out = Vec::new();
    write_with_quoted_ids(scanned.text, &scanned.info, &mut out);
    let got: Value =
        serde_json::from_slice(&neutralize_surrogates(&out)).expect("quoted output parses");
    let orig = serde.expect("accepted above");
    let (got, orig) = (got.as_object().unwrap(), orig.as_object().unwrap());
    assert_eq!(got.len(), orig.len(), "members");
    for (key, v) in orig {
        match ID_FIELDS.iter().position(|f| f == key) {
            Some(k) if matches!(id(k), Some((Some(_), true))) => {
                let digits = raw[ID_FIELDS[k]].get();
                assert_eq!(got[key], Value::String(digits.to_string()), "{key} quoted");
            }
            _ => assert_eq!(&got[key], v, "{key} unchanged"),
        }
    }
}
