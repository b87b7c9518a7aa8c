//! Input generators for the random driver: structured inputs that reach deep into each
//! target quickly (records near the cap, ids of every kind), plus byte-level mutations.

use crate::rng::Rng;
use livestream_wasm::core::record::ID_FIELDS;

/// Bytes that matter to the framer and the scanner.
const SPECIAL: &[u8] = b"{}[]:,\"\\ \t\r\n0123456789.eE+-tfnulrsaxu\x01\x1f\x8b\x7f\xc3\xa9\xff";

/// Applies 1 to 4 random byte-level mutations (flip, insert, delete, duplicate a range,
/// replace with a special byte).
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, keep_prefix: usize) {
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        let at = keep_prefix.min(len) + rng.below(len.saturating_sub(keep_prefix) + 1);
        match rng.below(6) {
            0 if at < len => data[at] ^= 1 << rng.below(8),
            1 => data.insert(at, rng.pick(SPECIAL)),
            2 if at < len => {
                let n = 1 + rng.below((len - at).min(16));
                data.drain(at..at + n);
            }
            3 if at < len => {
                let n = 1 + rng.below((len - at).min(64));
                let copy = data[at..at + n].to_vec();
                let to = rng.below(data.len() + 1);
                data.splice(to..to, copy);
            }
            4 if at < len => data[at] = rng.pick(SPECIAL),
            _ => data.insert(at, rng.next_u64() as u8),
        }
    }
}

fn json_string(rng: &mut Rng, out: &mut String) {
    const PIECES: &[&str] = &[
        "a",
        "b",
        "é",
        "€",
        "😀",
        "\\\"",
        "\\\\",
        "\\/",
        "\\n",
        "\\t",
        "\\u00e9",
        "\\ud83d",
        "\\ude00",
        "\\ud83d\\ude00",
        " ",
        "hitIdHigh",
        "\\u0000",
        "abcdefghijklmnopq",
        "ランニング",
        "Zürich",
    ];
    out.push('"');
    for _ in 0..rng.below(6) {
        out.push_str(rng.pick(PIECES));
    }
    out.push('"');
}

fn json_number(rng: &mut Rng, out: &mut String) {
    const NUMS: &[&str] = &[
        "0",
        "-0",
        "1",
        "-1",
        "1.5",
        "1e3",
        "1E+2",
        "-2.5e-3",
        "1372782179",
        "1372782179.25",
        "18446744073709551615",
        "18446744073709551616",
        "9007199254740993",
        "1e308",
        "4.9e-324",
        "123456789012345678901234567890",
        "999999999999999",
        "-1000000000000000",
        "12345678",
        "1234567890123456",
    ];
    if rng.one_in(2) {
        out.push_str(rng.pick(NUMS));
    } else {
        out.push_str(&(rng.next_u64() >> rng.below(64)).to_string());
    }
}

/// A random JSON value, nested at most `depth` more levels.
pub fn json_value(rng: &mut Rng, depth: usize, out: &mut String) {
    let k = if depth == 0 {
        rng.below(5)
    } else {
        rng.below(7)
    };
    match k {
        0 => out.push_str(rng.pick(&["null", "true", "false"])),
        1 | 2 => json_number(rng, out),
        3 | 4 => json_string(rng, out),
        5 => {
            out.push('[');
            for i in 0..rng.below(4) {
                if i > 0 {
                    out.push(',');
                }
                json_value(rng, depth - 1, out);
            }
            out.push(']');
        }
        _ => {
            out.push('{');
            for i in 0..rng.below(4) {
                if i > 0 {
                    out.push(',');
                }
                json_string(rng, out);
                out.push(':');
                json_value(rng, depth - 1, out);
            }
            out.push('}');
        }
    }
}

/// An id value of any kind: usable (bare or canonical string) or not.
fn id_value(rng: &mut Rng, out: &mut String) {
    let v = rng.next_u64() >> rng.below(64);
    match rng.below(12) {
        0..=3 => out.push_str(&v.to_string()),
        4 => out.push_str(&format!("\"{v}\"")),
        5 => out.push_str(&format!("\"0{v}\"")),
        6 => out.push_str(&format!("-{v}")),
        7 => out.push_str(&format!("{v}.0")),
        8 => out.push_str(&format!("{v}e1")),
        9 => out.push_str(&format!("{}", u64::MAX as u128 + 1 + v as u128)),
        10 => out.push_str(&format!("\"\\u003{}{v}\"", v % 10)),
        _ => json_value(rng, 1, out),
    }
}

/// A record: a JSON object with id fields (repeated, escaped names, any values), time
/// fields, other members and whitespace; sometimes mutated at the byte level.
pub fn record_input(rng: &mut Rng) -> Vec<u8> {
    // Member names: the six id fields (ID_FIELDS), then an escaped id name, the time fields
    // and two others; one drawn uniformly from the eleven.
    const OTHER_NAMES: &[&str] = &[
        "hitId\\u0048igh",
        "timeGMT",
        "receivedTimeGMT",
        "pageName",
        "x",
    ];
    const WS: &[&str] = &["", "", " ", "\t", "\r\n"];
    let ws = rng.pick(WS);
    let mut s = String::new();
    s.push_str(ws);
    s.push('{');
    for i in 0..rng.below(10) {
        if i > 0 {
            s.push_str(ws);
            s.push(',');
        }
        s.push_str(ws);
        let name = match rng.below(ID_FIELDS.len() + OTHER_NAMES.len()) {
            i if i < ID_FIELDS.len() => ID_FIELDS[i],
            i => OTHER_NAMES[i - ID_FIELDS.len()],
        };
        s.push('"');
        s.push_str(name);
        s.push('"');
        s.push_str(ws);
        s.push(':');
        s.push_str(ws);
        if name.contains("Id") {
            id_value(rng, &mut s);
        } else if name.contains("GMT") && rng.one_in(2) {
            json_number(rng, &mut s);
        } else {
            json_value(rng, 3, &mut s);
        }
    }
    s.push_str(ws);
    s.push('}');
    s.push_str(ws);
    let mut b = s.into_bytes();
    if rng.one_in(4) {
        // A UTF-8 edge case (valid or not) right after a quote, most likely inside a string.
        let quotes: Vec<usize> = (0..b.len()).filter(|&i| b[i] == b'"').collect();
        if !quotes.is_empty() {
            let at = quotes[rng.below(quotes.len())] + 1;
            b.splice(at..at, rng.pick(UTF8_EDGES).iter().copied());
        }
    }
    if rng.one_in(2) {
        mutate(rng, &mut b, 0);
    }
    b
}

/// Byte sequences at the edges of UTF-8: the shortest and longest valid sequence of each
/// length and around the surrogates, and overlong, surrogate, too large, truncated and
/// stray bytes.
const UTF8_EDGES: &[&[u8]] = &[
    b"\xc2\x80",
    b"\xdf\xbf",
    b"\xe0\xa0\x80",
    b"\xed\x9f\xbf",
    b"\xee\x80\x80",
    b"\xef\xbf\xbf",
    b"\xf0\x90\x80\x80",
    b"\xf4\x8f\xbf\xbf",
    b"\xc0\xaf",
    b"\xc1\xbf",
    b"\xe0\x9f\xbf",
    b"\xed\xa0\x80",
    b"\xf0\x8f\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\x80",
    b"\xbf",
    b"\xc3",
];

/// A framer input (see [`crate::targets::FRAMER_HEADER`]): a cap, a chunking, and a body
/// of lines near the cap, blank lines, CRLF/LF/CR variants and a partial last line.
pub fn framer_input(rng: &mut Rng) -> Vec<u8> {
    let max: u32 = match rng.below(4) {
        0 => 1 + rng.below(16) as u32,
        1 => 1 + rng.below(300) as u32,
        2 => 1 + rng.below(5000) as u32,
        _ => 65_000 + rng.below(5000) as u32,
    };
    let mut data = vec![rng.next_u64() as u8];
    data.extend_from_slice(&(max - 1).to_le_bytes()[..3]);
    data.extend_from_slice(&rng.next_u64().to_le_bytes());
    let lines = if max > 60_000 {
        1 + rng.below(3)
    } else {
        rng.below(40)
    };
    for _ in 0..lines {
        let len = match rng.below(5) {
            0 => rng.below(8),
            1 | 2 => (max as usize + rng.below(5)).saturating_sub(2),
            _ => rng.below(max as usize + 2),
        };
        let fill = rng.pick(b"a \r{\xc3");
        let start = data.len();
        data.resize(start + len, fill);
        if len > 0 && rng.one_in(3) {
            data[start + rng.below(len)] = rng.pick(b"\r \tx");
        }
        let ends: [&[u8]; 5] = [b"\r\n", b"\n", b"\r\n", b"\r\r\n", b"\n\n"];
        let end: &[u8] = ends[rng.below(ends.len())];
        data.extend_from_slice(end);
    }
    if rng.one_in(3) {
        let start = data.len();
        data.resize(start + rng.below(max as usize + 3), b'z');
    }
    if rng.one_in(4) {
        mutate(rng, &mut data, crate::targets::FRAMER_HEADER);
    }
    data
}

/// A client-target input: option bytes, then host steps (every byte string is valid; the
/// generator only picks lengths and leans towards the interesting operations).
pub fn client_input(rng: &mut Rng) -> Vec<u8> {
    let mut data: Vec<u8> = (0..7).map(|_| rng.next_u64() as u8).collect();
    for _ in 0..rng.below(300) {
        // Operation byte (see client.rs: 0-4 time, 5-7 respond, 8-10 data, 11 end,
        // 12 failure, 13 stale answer, 14 early timer, 15 close) and its arguments.
        let op = match rng.below(10) {
            0..=2 => 5 + rng.below(3),
            3 | 4 => 3 + rng.below(2),
            5 | 6 => 8 + rng.below(3),
            _ => rng.below(16),
        } as u8;
        data.push(op);
        for _ in 0..3 {
            data.push(rng.next_u64() as u8);
        }
    }
    data
}
