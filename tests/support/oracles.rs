//! Oracles of the record path, independent of the code under test: what a framer sink saw,
//! the framing rules applied to a whole body at once, a chunked feeder, and the surrogate
//! fix that lets serde_json judge JSON text the way `JSON.parse` does.

use livestream_wasm::core::framer::{FrameSink, Framer};

/// What a framer sink saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    /// A record's bytes.
    Record(Vec<u8>),
    /// An oversized record's length.
    Oversized(u64),
    /// A gzip error message.
    GzipError(String),
}

/// A sink that records every [`Ev`] in order.
#[derive(Default)]
pub struct Events(pub Vec<Ev>);

impl FrameSink for Events {
    fn record(&mut self, record: &[u8]) {
        self.0.push(Ev::Record(record.to_vec()));
    }
    fn oversized(&mut self, bytes: u64) {
        self.0.push(Ev::Oversized(bytes));
    }
    fn gzip_error(&mut self, message: &str) {
        self.0.push(Ev::GzipError(message.to_string()));
    }
}

fn blank(b: &[u8]) -> bool {
    b.iter().all(|c| b" \t\r".contains(c))
}

/// The framing rules applied to a whole (plain) body at once, with records longer than
/// `max` reported as oversized: the events, and the leftover length `finish` must report.
pub fn reference_framing(body: &[u8], max: usize) -> (Vec<Ev>, u64) {
    let mut evs = Vec::new();
    let mut lines: Vec<&[u8]> = body.split(|&c| c == b'\n').collect();
    let tail = lines.pop().unwrap_or_default();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > max {
            evs.push(Ev::Oversized(line.len() as u64));
        } else if !blank(line) {
            evs.push(Ev::Record(line.to_vec()));
        }
    }
    let left = if blank(tail) { 0 } else { tail.len() as u64 };
    (evs, left)
}

/// Pushes `body` into `framer` in chunks of the sizes `sizes` yields in turn (each clamped
/// to 1..=what is left; it must not run out before the body does), calling `after_push`
/// after every push. Does not call `finish`.
pub fn push_chunks<S: FrameSink>(
    framer: &mut Framer,
    body: &[u8],
    sizes: impl IntoIterator<Item = usize>,
    sink: &mut S,
    mut after_push: impl FnMut(&Framer),
) {
    let mut sizes = sizes.into_iter();
    let mut rest = body;
    while !rest.is_empty() {
        let n = sizes
            .next()
            .expect("chunk sizes for the whole body")
            .clamp(1, rest.len());
        framer.push(&rest[..n], sink);
        rest = &rest[n..];
        after_push(framer);
    }
}

/// The framer's memory bound while a body streams in: its buffer never holds more than the
/// record cap `max` + 1 bytes of capacity.
pub fn assert_within_cap(framer: &Framer, max: usize) {
    assert!(
        framer.buffered_capacity() <= max + 1,
        "buffer capacity {} > cap {max} + 1",
        framer.buffered_capacity()
    );
}

/// serde_json rejects lone surrogate escapes (`"\ud83d"`), which are valid JSON text and
/// which `JSON.parse` (the reference) accepts; so the differential checks compare against
/// serde_json on a copy where every surrogate escape is replaced by `\u0041` (same length,
/// so byte positions still match; same validity otherwise). Escaped backslashes are
/// skipped, so `\\ud83d` is left alone.
pub fn neutralize_surrogates(text: &[u8]) -> Vec<u8> {
    let mut out = text.to_vec();
    let mut i = 0;
    while i + 1 < out.len() {
        if out[i] != b'\\' {
            i += 1;
            continue;
        }
        if out[i + 1] == b'u' && i + 6 <= out.len() {
            let hex = std::str::from_utf8(&out[i + 2..i + 6]).ok();
            if let Some(cp) = hex.and_then(|h| u32::from_str_radix(h, 16).ok()) {
                if (0xd800..=0xdfff).contains(&cp) {
                    out[i + 2..i + 6].copy_from_slice(b"0041");
                }
            }
        }
        i += 2;
    }
    out
}
