//! How hits cross from wasm memory into JavaScript: the web host's [`HitSink`].
//!
//! This is JavaScript-specific (V8's string forms, ids as strings for `JSON.parse`), so it is
//! not part of the core; it is plain Rust, though, so it is tested natively.
//!
//! For each chunk the encoder builds one [`Batch`]: the records as JSON text with the six
//! top-level ids quoted (so `JSON.parse` cannot round them), grouped in three JSON arrays
//! back to back — all-ASCII records, Latin-1 records, wider ones — plus typed columns of the
//! key fields for consumers that only count and aggregate. JavaScript then decodes each group
//! with one `TextDecoder` call and parses it with one `JSON.parse`, and every record keeps V8's
//! fastest string form (one Latin-1 character would make a whole decoded string slower; only
//! the last group is made of two-byte strings). A host that only parses the records into
//! objects asks for one all-ASCII array instead ([`Batch::escape_non_ascii`]); one that keeps
//! the chunk asks for references and gets the text only on demand
//! ([`Batch::reference_input`]).

use crate::core::record::{write_with_quoted_ids, write_with_quoted_ids_by};
use crate::core::{HitSink, RecordInfo, SlotId};

/// Bit in [`Batch::flags`]: the record has both hitIdHigh and hitIdLow.
pub const HAS_HIT_ID: u8 = 1;
/// Bit in [`Batch::flags`]: the record has both visIdHigh and visIdLow.
pub const HAS_VIS_ID: u8 = 2;

/// Words of the layout from which the web host reads where each batch lies in wasm memory
/// (`Engine::layout` in src/web: text, columns, counts, regions, full text length);
/// js/live-stream.js reads as many (checked by tests/schema.rs).
pub const LAYOUT_WORDS: usize = 9;

/// [`Batch::chunk_starts`] of a record whose text is not a slice of the fed chunk.
pub const NOT_IN_CHUNK: u32 = u32::MAX;

/// A batch whose text buffer grew beyond this gives its memory back after delivery.
const KEEP_BATCH_BYTES: usize = 4 << 20;

/// What range of characters a UTF-8 text uses, which decides V8's string form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextClass {
    /// All ASCII: decodes at memcpy speed into a one-byte string.
    Ascii = 0,
    /// Characters up to U+00FF: still a one-byte string.
    Latin1 = 1,
    /// A character above U+00FF: a two-byte string.
    Wide = 2,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The [`TextClass`] of the UTF-8 text `b`. Above U+00FF means a lead byte of 0xC4 or more
/// (U+0100 is `C4 80`). Eight bytes at a time: for each byte, `(b & 0x7f) + 0x3c` reaches
/// bit 7 exactly when `b & 0x7f >= 0x44`; together with bit 7 of `b` that is `b >= 0xc4`.
#[inline]
pub fn text_class(b: &[u8]) -> TextClass {
    let mut words = b.chunks_exact(8);
    let (mut high, mut wide) = (0u64, 0u64);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        high |= w;
        wide |= ((w & !HI).wrapping_add(0x3c * LO)) & w;
    }
    for &c in words.remainder() {
        high |= c as u64;
        wide |= (c >= 0xc4) as u64 * HI;
    }
    if wide & HI != 0 {
        TextClass::Wide
    } else if high & HI != 0 {
        TextClass::Latin1
    } else {
        TextClass::Ascii
    }
}

/// The [`TextClass`] of a record's text; the scanner already knows when it is all ASCII
/// (most are).
#[inline]
fn record_class(text: &[u8], info: &RecordInfo) -> TextClass {
    if info.ascii {
        TextClass::Ascii
    } else {
        text_class(text)
    }
}

/// Writes the valid UTF-8 `text` to `out` with every non-ASCII character as a JSON `\u`
/// escape (two for a character above U+FFFF: its UTF-16 surrogate pair). In JSON text,
/// non-ASCII characters only occur inside strings, where the escape means the same
/// character: the output is the same JSON, all ASCII.
pub fn write_ascii_escaped(text: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut plain = 0;
    let mut i = 0;
    loop {
        // Past the ASCII run, eight bytes at a time: most of a record is ASCII.
        while let Some(w) = text.get(i..i + 8) {
            let high = u64::from_le_bytes(w.try_into().unwrap_or([0; 8])) & HI;
            if high != 0 {
                i += (high.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        while i < text.len() && text[i] < 0x80 {
            i += 1;
        }
        let Some(&c) = text.get(i) else { break };
        out.extend_from_slice(&text[plain..i]);
        let (cp, len) = match c {
            0xC0..=0xDF => (u32::from(c & 0x1f), 2),
            0xE0..=0xEF => (u32::from(c & 0x0f), 3),
            _ => (u32::from(c & 0x07), 4),
        };
        let end = (i + len).min(text.len());
        let cp = text[i + 1..end]
            .iter()
            .fold(cp, |cp, &b| (cp << 6) | u32::from(b & 0x3f));
        let mut unit = |u: u32| {
            out.extend_from_slice(b"\\u");
            for shift in [12, 8, 4, 0] {
                out.push(HEX[(u >> shift) as usize & 0xf]);
            }
        };
        if cp >= 0x1_0000 {
            let v = cp - 0x1_0000;
            unit(0xD800 | (v >> 10));
            unit(0xDC00 | (v & 0x3ff));
        } else {
            unit(cp);
        }
        i = end;
        plain = end;
    }
    out.extend_from_slice(&text[plain..]);
}

/// The new hits of one chunk, ready to cross into JavaScript.
///
/// Its text ([`Batch::text`]) is three JSON arrays back to back, `[r,…][r,…][r,…]`, each in
/// stream order: `text[..regions[0]]` holds the records that are all ASCII,
/// `text[regions[0]..regions[1]]` those with characters up to U+00FF, `text[regions[1]..]`
/// the others. `starts[i]` tells which region hit `i` is in, so stream order can be restored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Slot the chunk came from.
    pub slot: u32,
    /// The batch's text, `[ASCII records][Latin-1 records][wide records]`, valid UTF-8, ids
    /// quoted. With [`Batch::reference_input`] the text is not written while the chunk is
    /// fed (most consumers never read it, and writing it was ~8–14 % of their time): `json`
    /// then holds only the records that are not slices of the chunk ([`NOT_IN_CHUNK`]), in
    /// stream order, back to back, and [`Batch::materialize`] builds the text on demand.
    pub json: Vec<u8>,
    /// Byte offsets in the text where the second and the third region start.
    pub regions: [u32; 2],
    /// Byte offset of each record in the text, in stream order.
    pub starts: Vec<u32>,
    /// Byte offset just past each record in the text.
    pub ends: Vec<u32>,
    /// hitIdHigh (0 when absent; see `flags`).
    pub hit_id_high: Vec<u64>,
    /// hitIdLow (0 when absent).
    pub hit_id_low: Vec<u64>,
    /// visIdHigh (0 when absent).
    pub vis_id_high: Vec<u64>,
    /// visIdLow (0 when absent).
    pub vis_id_low: Vec<u64>,
    /// timeGMT in Unix seconds (NaN when absent).
    pub time_gmt: Vec<f64>,
    /// receivedTimeGMT in Unix seconds (NaN when absent).
    pub received_time_gmt: Vec<f64>,
    /// [`HAS_HIT_ID`] | [`HAS_VIS_ID`] per record.
    pub flags: Vec<u8>,
    /// Per record, with [`Batch::reference_input`]: the byte offset of the record in the fed
    /// chunk, or [`NOT_IN_CHUNK`] when its text is not a slice of that chunk (it began in an
    /// earlier chunk, was inflated from gzip, or had invalid UTF-8 repaired). Empty otherwise.
    pub chunk_starts: Vec<u32>,
    /// Per record, with [`Batch::reference_input`]: where its entries in `quotes` begin
    /// (`n + 1` entries, the last one the end). Empty otherwise.
    pub quote_at: Vec<u32>,
    /// Offsets in the fed chunk before which a `"` goes to turn the record's bare ids into
    /// strings (two per id, sorted): the chunk's bytes with these quotes are the record's
    /// text in `json`.
    pub quotes: Vec<u32>,
    /// The chunk being fed as (address, length), while the host asks for references.
    input: Option<(usize, usize)>,
    /// Set by [`Batch::escape_non_ascii`] for the chunk being fed.
    escape: bool,
    /// With references: how long each region's content (records and the commas between
    /// them) is, as if its text were written.
    region_bytes: [usize; 3],
    /// The length of the whole text (set by [`Batch::finish`]).
    text_len: usize,
    /// With references: the text [`Batch::materialize`] built, or empty.
    materialized: Vec<u8>,
    /// Scratch while building: the Latin-1 and the wide records' text and indices.
    spill: [Spill; 2],
    /// True between the first hit of a chunk and [`Batch::finish`].
    open: bool,
}

/// The records of one region while a batch is built (see [`Batch`]).
#[derive(Clone, Debug, Default, PartialEq)]
struct Spill {
    text: Vec<u8>,
    index: Vec<u32>,
}

impl Batch {
    /// Empties the batch for the next chunk, giving back memory a huge chunk needed.
    pub fn clear(&mut self) {
        if self.json.capacity().max(self.materialized.capacity()) > KEEP_BATCH_BYTES {
            *self = Batch::default();
            return;
        }
        self.json.clear();
        self.materialized.clear();
        self.region_bytes = [0; 3];
        self.text_len = 0;
        self.regions = [0; 2];
        for r in &mut self.spill {
            r.text.clear();
            r.index.clear();
        }
        self.starts.clear();
        self.ends.clear();
        self.hit_id_high.clear();
        self.hit_id_low.clear();
        self.vis_id_high.clear();
        self.vis_id_low.clear();
        self.time_gmt.clear();
        self.received_time_gmt.clear();
        self.flags.clear();
        self.chunk_starts.clear();
        self.quote_at.clear();
        self.quotes.clear();
        self.input = None;
        self.escape = false;
        self.open = false;
    }

    /// Asks the batch to write every record of the chunk about to be fed into the ASCII
    /// region, non-ASCII characters as `\u` escapes ([`write_ascii_escaped`]), for a host
    /// that only parses the records into objects and never shows their text: the text is
    /// then one all-ASCII array, the fastest to decode and parse (`[…][][]`). Call after
    /// [`Batch::clear`], before feeding; ignored with [`Batch::reference_input`].
    pub fn escape_non_ascii(&mut self) {
        self.escape = true;
    }

    /// Asks the batch to also say, for the chunk `input` about to be fed, where each record
    /// lies in it and where its ids need quotes ([`Batch::chunk_starts`], [`Batch::quote_at`],
    /// [`Batch::quotes`]). A host that keeps the chunk can then give a consumer the records
    /// long after this batch's memory is reused, without copying the text out now; the
    /// text itself is only built when asked for ([`Batch::materialize`]). Call after
    /// [`Batch::clear`], before feeding `input`.
    pub fn reference_input(&mut self, input: &[u8]) {
        self.input = Some((input.as_ptr() as usize, input.len()));
    }

    /// Closes the ASCII region and appends the other two: `[…]` + `[…]` + `[…]`. Call once
    /// after the chunk, before reading the batch; does nothing for an empty batch.
    pub fn finish(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        if self.input.is_some() {
            self.quote_at.push(self.quotes.len() as u32);
            // The text as `materialize` will lay it out: `[` content `]` for each region.
            let [ascii, latin1, wide] = self.region_bytes;
            self.regions[0] = (ascii + 2) as u32;
            self.regions[1] = self.regions[0] + (latin1 + 2) as u32;
            self.text_len = self.regions[1] as usize + wide + 2;
        } else {
            self.json.push(b']');
            for k in 0..2 {
                self.regions[k] = self.json.len() as u32;
                let r = &mut self.spill[k];
                self.json.push(b'[');
                self.json.extend_from_slice(&r.text);
                self.json.push(b']');
                r.text.clear();
            }
            self.text_len = self.json.len();
        }
        // The other two regions' records, placed from their region's content on.
        for k in 0..2 {
            let base = self.regions[k] + 1;
            for &i in &self.spill[k].index {
                self.starts[i as usize] += base;
                self.ends[i as usize] += base;
            }
        }
    }

    /// The length of the batch's text once finished (with references: of the text
    /// [`Batch::materialize`] builds).
    pub fn text_len(&self) -> usize {
        self.text_len
    }

    /// The batch's text (see [`Batch::json`]) once finished: `json`'s text without
    /// references, the text [`Batch::materialize`] built with them (empty before).
    pub fn text(&self) -> &[u8] {
        if self.input.is_some() {
            &self.materialized
        } else {
            &self.json[..self.text_len.min(self.json.len())]
        }
    }

    /// With references, once finished: builds the batch's text from the chunk it was fed and
    /// the records that are not slices of it, and returns it: byte for byte what the batch
    /// would hold without references. `input` is the memory the chunk was fed from (the
    /// chunk [`Batch::reference_input`] was given, and maybe more after it), unchanged
    /// since; None when it does not start there. Built once per batch. Without references:
    /// the text as it is.
    pub fn materialize(&mut self, input: &[u8]) -> Option<&[u8]> {
        let Some((addr, len)) = self.input else {
            return Some(self.text());
        };
        if input.as_ptr() as usize != addr || input.len() < len {
            return None;
        }
        if self.materialized.len() != self.text_len {
            self.build_text(&input[..len]);
        }
        Some(&self.materialized)
    }

    /// [`Batch::materialize`]'s work: every byte between records is a `,` except the
    /// regions' brackets, and each record is its chunk bytes with the quotes put back, or
    /// the next record of `json`.
    fn build_text(&mut self, input: &[u8]) {
        let out = &mut self.materialized;
        out.clear();
        if self.text_len == 0 {
            return;
        }
        out.resize(self.text_len, b',');
        for at in [0, self.regions[0] as usize, self.regions[1] as usize] {
            out[at] = b'[';
        }
        for end in [
            self.regions[0] as usize,
            self.regions[1] as usize,
            self.text_len,
        ] {
            out[end - 1] = b']';
        }
        let mut cut = 0;
        for i in 0..self.starts.len() {
            let (start, end) = (self.starts[i] as usize, self.ends[i] as usize);
            let dest = &mut out[start..end];
            if self.chunk_starts[i] == NOT_IN_CHUNK {
                dest.copy_from_slice(&self.json[cut..cut + dest.len()]);
                cut += dest.len();
                continue;
            }
            let quotes = &self.quotes[self.quote_at[i] as usize..self.quote_at[i + 1] as usize];
            let mut from = self.chunk_starts[i] as usize;
            let mut o = 0;
            for &q in quotes {
                let q = q as usize;
                dest[o..o + q - from].copy_from_slice(&input[from..q]);
                o += q - from;
                dest[o] = b'"';
                o += 1;
                from = q;
            }
            let rest = dest.len() - o;
            dest[o..].copy_from_slice(&input[from..from + rest]);
        }
    }

    /// Number of records in each region of `json`: all ASCII, Latin-1, wide.
    pub fn region_lens(&self) -> [usize; 3] {
        let (l, w) = (self.spill[0].index.len(), self.spill[1].index.len());
        [self.len() - l - w, l, w]
    }

    /// Number of hits.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// True when there are no hits.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Appends the key columns to `out` in the layout JavaScript reads them with one copy:
    /// `hitIdHigh, hitIdLow, visIdHigh, visIdLow` (u64), `timeGMT, receivedTimeGMT` (f64),
    /// then `starts, ends` (u32) and `flags` (u8), all little-endian; with `n` hits the
    /// offsets are `0, 8n, 16n, 24n, 32n, 40n, 48n, 52n, 56n`. With
    /// [`Batch::reference_input`], `chunk_starts` (n), `quote_at` (n + 1) and `quotes` (u32)
    /// follow from `r = 57n` rounded up to a multiple of 4: at `r, r + 4n, r + 8n + 4`. One
    /// copy out of wasm memory and views on it cost far less in a browser than a copy per
    /// column.
    pub fn pack_columns(&self, out: &mut Vec<u8>) {
        out.clear();
        self.append_packed_columns(out);
    }

    /// Appends the packed columns (see [`Batch::pack_columns`]) to `json` (the text, or with
    /// references the records that are not slices of the chunk), at the next multiple of 8
    /// so that typed arrays can view them in a copy of `json`. Returns `json`'s length before
    /// and where the columns start: one copy of `json` then carries both out of wasm memory. `json` holds them until the next [`Batch::clear`]; call after
    /// [`Batch::finish`].
    pub fn append_columns(&mut self) -> (usize, usize) {
        let text_len = self.json.len();
        let at = text_len.next_multiple_of(8);
        let mut json = std::mem::take(&mut self.json);
        json.resize(at, 0);
        self.append_packed_columns(&mut json);
        self.json = json;
        (text_len, at)
    }

    fn append_packed_columns(&self, out: &mut Vec<u8>) {
        let n = self.len();
        let references = if self.input.is_some() {
            3 + 4 * (2 * n + 1 + self.quotes.len())
        } else {
            0
        };
        out.reserve(57 * n + references);
        for col in [
            &self.hit_id_high,
            &self.hit_id_low,
            &self.vis_id_high,
            &self.vis_id_low,
        ] {
            for v in col.iter() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        for col in [&self.time_gmt, &self.received_time_gmt] {
            for v in col.iter() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        for col in [&self.starts, &self.ends] {
            for v in col.iter() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.flags);
        if self.input.is_some() {
            // The references, from the next multiple of 4 after the flags.
            out.resize(out.len().next_multiple_of(4), 0);
            for col in [&self.chunk_starts, &self.quote_at, &self.quotes] {
                for v in col.iter() {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }

    /// With references: places the record `text` in its region without writing it, notes
    /// where it lies in the fed chunk (at `input`, `input_len` bytes long) and where its ids
    /// need quotes, or, when `text` is not a slice of the chunk ([`NOT_IN_CHUNK`]), keeps
    /// its text in `json`.
    fn reference(&mut self, text: &[u8], info: &RecordInfo, input: usize, input_len: usize) {
        let class = record_class(text, info);
        let quoted_len = text.len() + 2 * info.bare_id_spans().len();
        let k = class as usize;
        let content = &mut self.region_bytes[k];
        if *content > 0 {
            *content += 1;
        }
        // The ASCII region's `[` is at 0; the others are rebased by `finish`.
        let start = *content + (k == 0) as usize;
        *content += quoted_len;
        if k > 0 {
            self.spill[k - 1].index.push(self.starts.len() as u32);
        }
        self.starts.push(start as u32);
        self.ends.push((start + quoted_len) as u32);
        self.quote_at.push(self.quotes.len() as u32);
        // Addresses are only compared, never dereferenced: the core hands a record that
        // began and ended in this chunk as a slice of it.
        let at = (text.as_ptr() as usize).wrapping_sub(input);
        let inside = at <= input_len && text.len() <= input_len - at;
        if !inside || info.replaced_invalid_utf8 || input_len > NOT_IN_CHUNK as usize {
            self.chunk_starts.push(NOT_IN_CHUNK);
            write_with_quoted_ids(text, info, &mut self.json);
            return;
        }
        self.chunk_starts.push(at as u32);
        for &(start, end) in info.bare_id_spans() {
            self.quotes.push(at as u32 + start);
            self.quotes.push(at as u32 + end);
        }
    }

    /// Writes the record `text` into its region of the text, ids quoted.
    fn write(&mut self, text: &[u8], info: &RecordInfo) {
        let mark = self.json.len();
        // The ASCII region so far is `[` alone, or `[r,…,r`.
        if mark > 1 {
            self.json.push(b',');
        }
        let start = self.json.len();
        let class = if self.escape && !info.ascii {
            write_with_quoted_ids_by(text, info, &mut self.json, write_ascii_escaped);
            TextClass::Ascii
        } else {
            write_with_quoted_ids(text, info, &mut self.json);
            record_class(text, info)
        };
        if class != TextClass::Ascii {
            let r = &mut self.spill[class as usize - 1];
            if !r.text.is_empty() {
                r.text.push(b',');
            }
            let at = r.text.len();
            r.text.extend_from_slice(&self.json[start..]);
            self.json.truncate(mark);
            r.index.push(self.starts.len() as u32);
            self.starts.push(at as u32);
            self.ends.push(r.text.len() as u32);
        } else {
            self.starts.push(start as u32);
            self.ends.push(self.json.len() as u32);
        }
    }

    /// The text of hit `i` (a JSON object, ids quoted), once finished (with references:
    /// once materialized; empty before).
    pub fn record(&self, i: usize) -> &str {
        let bytes = self
            .text()
            .get(self.starts[i] as usize..self.ends[i] as usize)
            .unwrap_or_default();
        // The batch is built from validated UTF-8 only.
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

impl HitSink for Batch {
    fn hit(&mut self, slot: SlotId, text: &[u8], info: &RecordInfo) {
        if !self.open {
            self.open = true;
            self.slot = slot.index() as u32;
            if self.input.is_none() {
                self.json.push(b'[');
            }
        }
        match self.input {
            Some((input, input_len)) => self.reference(text, info, input, input_len),
            None => self.write(text, info),
        }
        let (hh, hl) = info.hit_key.map_or((0, 0), |k| (k.high, k.low));
        let (vh, vl) = info.vis_id.unwrap_or((0, 0));
        self.hit_id_high.push(hh);
        self.hit_id_low.push(hl);
        self.vis_id_high.push(vh);
        self.vis_id_low.push(vl);
        self.time_gmt.push(info.time_gmt.unwrap_or(f64::NAN));
        self.received_time_gmt
            .push(info.received_time_gmt.unwrap_or(f64::NAN));
        let mut f = 0;
        if info.hit_key.is_some() {
            f |= HAS_HIT_ID;
        }
        if info.vis_id.is_some() {
            f |= HAS_VIS_ID;
        }
        self.flags.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::scan_record;

    fn feed(batch: &mut Batch, records: &[&str]) {
        let mut scratch = Vec::new();
        for r in records {
            let s = scan_record(r.as_bytes(), &mut scratch).expect("valid record");
            let info = s.info;
            let text = s.text.to_vec();
            batch.hit(SlotId::new(1), &text, &info);
        }
        batch.finish();
    }

    #[test]
    fn text_class_matches_char_scan() {
        let samples = [
            "",
            "a",
            "plain ascii text of some length",
            "caf\u{e9} \u{ff}\u{ff}",
            "\u{100}",
            "0123456\u{100}",
            "01234567\u{17f}",
            "\u{ff}\u{fe}\u{80}\u{c4}\u{e9}xyz",
            "emoji \u{1f600} here",
            "\u{4e2d}\u{6587}",
            "\u{fffd}",
            "latin1 \u{c0}\u{c4}\u{ff} only, and more than eight bytes",
        ];
        for s in samples {
            for (cut, _) in s.char_indices().chain([(s.len(), ' ')]) {
                let t = &s[cut..];
                let want = if t.chars().any(|c| c as u32 > 0xff) {
                    TextClass::Wide
                } else if !t.is_ascii() {
                    TextClass::Latin1
                } else {
                    TextClass::Ascii
                };
                assert_eq!(text_class(t.as_bytes()), want, "{t:?}");
            }
        }
    }

    #[test]
    fn text_classes() {
        assert_eq!(
            text_class(b"plain ascii text, long enough"),
            TextClass::Ascii
        );
        assert_eq!(
            text_class("caf\u{e9} and more".as_bytes()),
            TextClass::Latin1
        );
        assert_eq!(text_class("\u{100}".as_bytes()), TextClass::Wide);
        assert_eq!(
            text_class("Москва, long enough".as_bytes()),
            TextClass::Wide
        );
        assert_eq!(text_class("東京".as_bytes()), TextClass::Wide);
    }

    #[test]
    fn regions_split_by_text_class_and_stream_order_is_kept() {
        let mut b = Batch::default();
        let recs = [
            r#"{"hitIdHigh":1,"hitIdLow":18446744073709551615,"p":"a"}"#,
            r#"{"hitIdHigh":2,"hitIdLow":2,"p":"caf\u00e9 é"}"#,
            r#"{"hitIdHigh":3,"hitIdLow":3,"p":"東京"}"#,
            r#"{"hitIdHigh":4,"hitIdLow":4,"p":"b","timeGMT":1372782179}"#,
        ];
        feed(&mut b, &recs);
        assert_eq!(b.len(), 4);
        assert_eq!(b.region_lens(), [2, 1, 1]);
        let json = std::str::from_utf8(&b.json).unwrap();
        let [l, w] = b.regions.map(|x| x as usize);
        for part in [&json[..l], &json[l..w], &json[w..]] {
            let v: serde_json::Value = serde_json::from_str(part).expect(part);
            assert!(v.is_array(), "{part}");
        }
        assert!(b.record(0).contains(r#""hitIdLow":"18446744073709551615""#));
        assert!(b.record(2).contains("東京"));
        assert_eq!(b.hit_id_high, vec![1, 2, 3, 4]);
        assert_eq!(b.slot, 1);
        assert!(b.time_gmt[0].is_nan());
        assert_eq!(b.time_gmt[3], 1372782179.0);
        assert_eq!(b.flags[0], HAS_HIT_ID);
        for i in 0..4 {
            let v: serde_json::Value = serde_json::from_str(b.record(i)).unwrap();
            assert_eq!(
                v["hitIdHigh"],
                serde_json::Value::String((i + 1).to_string())
            );
        }
    }

    #[test]
    fn a_huge_batch_gives_its_memory_back() {
        let mut b = Batch::default();
        let big = format!(
            r#"{{"hitIdHigh":1,"hitIdLow":1,"p":"{}"}}"#,
            "x".repeat(5 << 20)
        );
        feed(&mut b, &[&big]);
        assert!(b.json.capacity() > KEEP_BATCH_BYTES);
        b.clear();
        assert!(b.json.capacity() <= KEEP_BATCH_BYTES);
        feed(&mut b, &[r#"{"a":1}"#]);
        assert_eq!(b.len(), 1);
        assert_eq!(b.record(0), r#"{"a":1}"#);
        b.clear();
        assert!(b.is_empty());
        b.finish();
        assert!(b.json.is_empty(), "an empty batch stays empty");
    }

    #[test]
    fn appended_columns_follow_the_text_at_a_multiple_of_8() {
        for records in [
            &[
                r#"{"hitIdHigh":1,"hitIdLow":2,"timeGMT":5}"#,
                r#"{"a":"café é"}"#,
            ][..],
            &[r#"{"hitIdHigh":18446744073709551615,"hitIdLow":3}"#][..],
            &[r#"{"a":1}"#, r#"{"b":"東京"}"#, r#"{"c":22}"#][..],
        ] {
            let mut b = Batch::default();
            feed(&mut b, records);
            let text = b.json.clone();
            let mut packed = Vec::new();
            b.pack_columns(&mut packed);
            let (text_len, at) = b.append_columns();
            assert_eq!(text_len, text.len());
            assert_eq!(at % 8, 0);
            assert!(at >= text_len && at < text_len + 8);
            assert_eq!(&b.json[..text_len], &text[..], "the text is untouched");
            assert_eq!(&b.json[at..], &packed[..], "the columns follow it");
            for i in 0..b.len() {
                let again: serde_json::Value = serde_json::from_str(b.record(i)).unwrap();
                assert!(again.is_object());
            }
            b.clear();
            assert!(b.json.is_empty());
        }
    }

    #[test]
    fn packed_columns_follow_the_documented_offsets() {
        let mut b = Batch::default();
        feed(
            &mut b,
            &[
                r#"{"hitIdHigh":1,"hitIdLow":2,"visIdHigh":3,"visIdLow":4,"timeGMT":5,"receivedTimeGMT":6}"#,
                r#"{"a":1}"#,
            ],
        );
        let mut out = Vec::new();
        b.pack_columns(&mut out);
        let n = 2;
        assert_eq!(out.len(), 57 * n);
        let u64_at = |off: usize| u64::from_le_bytes(out[off..off + 8].try_into().unwrap());
        let f64_at = |off: usize| f64::from_le_bytes(out[off..off + 8].try_into().unwrap());
        let u32_at = |off: usize| u32::from_le_bytes(out[off..off + 4].try_into().unwrap());
        assert_eq!(
            [u64_at(0), u64_at(8 * n), u64_at(16 * n), u64_at(24 * n)],
            [1, 2, 3, 4]
        );
        assert_eq!([f64_at(32 * n), f64_at(40 * n)], [5.0, 6.0]);
        assert!(f64_at(32 * n + 8).is_nan());
        assert_eq!(u32_at(48 * n), b.starts[0]);
        assert_eq!(u32_at(52 * n + 4), b.ends[1]);
        assert_eq!(&out[56 * n..], &b.flags[..]);
    }

    /// A client with one slot open and reading a 200 body, as a host would have it.
    fn reading_client() -> (crate::core::Client, crate::core::AttemptId) {
        use crate::core::{Client, Config, Instant, Options, Output, ResponseHead};
        let config = Config::new(Options {
            url: Some("https://localhost/stream".into()),
            ..Options::default()
        })
        .unwrap();
        let mut client = Client::new(config, 1);
        client.start(Instant::ZERO);
        let mut attempt = None;
        loop {
            match client.poll_output() {
                Output::Connect(req) => attempt = Some(req.attempt),
                Output::Wait(_) => break,
                _ => {}
            }
        }
        let attempt = attempt.expect("a connect");
        let head = ResponseHead {
            status: 200,
            ..ResponseHead::default()
        };
        client.handle_response(attempt, head, Instant::ZERO);
        (client, attempt)
    }

    /// `chunk[start..end]` with a `"` inserted before each offset in `quotes`: what a host
    /// rebuilds from a referenced record.
    fn quoted(chunk: &[u8], start: usize, end: usize, quotes: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = start;
        for &q in quotes {
            out.extend_from_slice(&chunk[at..q as usize]);
            out.push(b'"');
            at = q as usize;
        }
        out.extend_from_slice(&chunk[at..end]);
        out
    }

    #[test]
    fn referenced_records_rebuild_the_quoted_text_at_every_cut() {
        let body = concat!(
            "{\"hitIdHigh\":2948027281753079808,\"hitIdLow\":6917529027641081856,\"visIdHigh\":7,\"visIdLow\":8,\"pageName\":\"home\"}\r\n",
            "{\"hitIdHigh\":\"3\",\"hitIdLow\":4,\"geoCity\":\"Zürich\"}\n",
            "  {\"hitIdLow\":6,\"hitIdHigh\":5,\"hitIdHigh\":55,\"n\":{\"hitIdHigh\":9}, \"t\":\"東京 🙂\"}  \r\n",
            "\n{\"a\":1}\n",
            "{\"hitIdHigh\":10,\"hitIdLow\":11,\"bad\":\"\u{0}\"}\n",
        )
        .replace('\u{0}', "\u{fffd}");
        let mut body = body.into_bytes();
        // An invalid byte in the last record: repaired, so never a slice of the chunk.
        let bad = body.len() - 5;
        body[bad] = 0xff;
        body.truncate(bad + 1);
        body.extend_from_slice(b"\"}\n");
        for cut in 0..=body.len() {
            let (mut client, attempt) = reading_client();
            let mut texts = Vec::new();
            let mut referenced = 0;
            for part in [&body[..cut], &body[cut..]] {
                let mut b = Batch::default();
                b.reference_input(part);
                client.handle_data(attempt, part, crate::core::Instant::ZERO, &mut b);
                b.finish();
                let n = b.len();
                assert_eq!(b.chunk_starts.len(), n);
                assert_eq!(b.quote_at.len(), if n > 0 { n + 1 } else { 0 });
                assert!(b.text().is_empty(), "the text is only built when asked for");
                let other = [0u8; 4];
                assert!(b.materialize(&other).is_none(), "not the chunk it was fed");
                assert_eq!(b.materialize(part).map(|t| t.len()), Some(b.text_len()));
                let mut cut_records = Vec::new();
                for i in 0..n {
                    let record = b.record(i).as_bytes();
                    let q = &b.quotes[b.quote_at[i] as usize..b.quote_at[i + 1] as usize];
                    if b.chunk_starts[i] == NOT_IN_CHUNK {
                        assert!(q.is_empty());
                        cut_records.extend_from_slice(record);
                    } else {
                        let start = b.chunk_starts[i] as usize;
                        let end = start + record.len() - q.len();
                        assert!(end <= part.len());
                        assert_eq!(quoted(part, start, end, q), record, "cut {cut}, hit {i}");
                        referenced += 1;
                    }
                    texts.push(record.to_vec());
                }
                assert_eq!(
                    b.json, cut_records,
                    "json keeps the records not in the chunk, in order"
                );
                let mut packed = Vec::new();
                b.pack_columns(&mut packed);
                let r = (57 * n).next_multiple_of(4);
                if n > 0 {
                    let u32_at =
                        |off: usize| u32::from_le_bytes(packed[off..off + 4].try_into().unwrap());
                    assert_eq!(u32_at(r), b.chunk_starts[0]);
                    assert_eq!(u32_at(r + 4 * n), 0);
                    assert_eq!(u32_at(r + 8 * n), b.quotes.len() as u32);
                    assert_eq!(packed.len(), r + 4 * (2 * n + 1 + b.quotes.len()));
                }
            }
            assert_eq!(texts.len(), 5, "cut {cut}");
            // Every valid record whose line (LF included) lies in one part is referenced; the
            // one the cut falls in and the repaired one are not.
            let mut expected = 0;
            let mut line_start = 0;
            for (k, &c) in body.iter().enumerate() {
                if c == b'\n' {
                    let blank = body[line_start..k].iter().all(|c| c.is_ascii_whitespace());
                    let repaired = body[line_start..k].contains(&0xff);
                    if !blank && !repaired && (cut <= line_start || cut > k) {
                        expected += 1;
                    }
                    line_start = k + 1;
                }
            }
            assert_eq!(referenced, expected, "cut {cut}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// Any body of mixed records, cut anywhere: with references the batches hold the same
        /// records as without, and every referenced one is its chunk's bytes with the quotes.
        #[test]
        fn references_change_nothing_and_rebuild_every_record(
            kinds in proptest::collection::vec(0u8..10, 1..40),
            cuts in proptest::collection::vec(1usize..3000, 1..40),
        ) {
            let mut body = Vec::new();
            for (i, k) in kinds.iter().enumerate() {
                let big = u64::MAX - i as u64;
                let line: Vec<u8> = match k {
                    0 => format!("{{\"hitIdHigh\":{big},\"hitIdLow\":{i},\"p\":\"plain\"}}").into(),
                    1 => format!("{{\"hitIdHigh\":\"{i}\",\"hitIdLow\":{big},\"c\":\"Z\u{fc}rich\"}}").into(),
                    2 => format!("{{\"hitIdHigh\":1,\"hitIdLow\":{i},\"hitIdHigh\":{big},\"t\":\"\u{6771} \u{1f600}\"}}").into(),
                    3 => format!("  {{ \"visIdHigh\" : {i} , \"visIdLow\":{big} }} \t").into(),
                    4 => {
                        let mut v: Vec<u8> = format!("{{\"hitIdHigh\":{i},\"hitIdLow\":7,\"b\":\"x").into();
                        v.push(0xff);
                        v.extend_from_slice(b"\"}");
                        v
                    }
                    5 => format!("{{\"hitIdHigh\":{i},\"hitIdLow\":8,\"pad\":\"{}\"}}", "p".repeat(i * 97 % 4000)).into(),
                    6 => b"not json".to_vec(),
                    7 => b"   ".to_vec(),
                    8 => format!("{{\"a\":[1,{{\"hitIdHigh\":{big}}}],\"e\":\"\\u00e9\"}}").into(),
                    _ => format!("{{\"hitIdLow\":{i},\"hitIdHigh\":9,\"y\":\"\u{ff}\"}}").into(),
                };
                body.extend_from_slice(&line);
                body.extend_from_slice(if i % 2 == 0 { b"\r\n" } else { b"\n" });
            }
            let run = |reference: bool| {
                let (mut client, attempt) = reading_client();
                let mut texts = Vec::new();
                let mut batches = Vec::new();
                let (mut at, mut k) = (0, 0);
                // One batch reused, as the engine does.
                let mut b = Batch::default();
                while at < body.len() {
                    let end = (at + cuts[k % cuts.len()]).min(body.len());
                    let part = &body[at..end];
                    b.clear();
                    if reference {
                        b.reference_input(part);
                    }
                    client.handle_data(attempt, part, crate::core::Instant::ZERO, &mut b);
                    b.finish();
                    let text = b.materialize(part).map(|t| t.to_vec());
                    proptest::prop_assert_eq!(text.as_ref().map(|t| t.len()), Some(b.text_len()));
                    // The whole text, the regions and every column but the references are
                    // the same with references as without.
                    batches.push((text, b.regions, b.starts.clone(), b.ends.clone(),
                        b.hit_id_high.clone(), b.hit_id_low.clone(), b.time_gmt.iter().map(|t| t.to_bits()).collect::<Vec<_>>(), b.flags.clone()));
                    for i in 0..b.len() {
                        let record = b.record(i).as_bytes().to_vec();
                        if reference && b.chunk_starts[i] != NOT_IN_CHUNK {
                            let q = &b.quotes[b.quote_at[i] as usize..b.quote_at[i + 1] as usize];
                            let start = b.chunk_starts[i] as usize;
                            let end = start + record.len() - q.len();
                            proptest::prop_assert_eq!(quoted(part, start, end, q), record.clone());
                        }
                        texts.push(record);
                    }
                    at = end;
                    k += 1;
                }
                Ok((texts, batches))
            };
            let plain = run(false)?;
            let referenced = run(true)?;
            proptest::prop_assert_eq!(plain, referenced);
        }
    }

    proptest::proptest! {
        /// Any JSON value with any text, escaped: all ASCII, and the same value.
        #[test]
        fn escaping_keeps_the_value_and_leaves_only_ascii(
            strings in proptest::collection::vec(".*", 1..6),
        ) {
            let value = serde_json::json!({ "a": strings, "b": { "k": strings.concat() } });
            let text = serde_json::to_vec(&value).unwrap();
            let mut out = Vec::new();
            write_ascii_escaped(&text, &mut out);
            proptest::prop_assert!(out.is_ascii());
            let back: serde_json::Value = serde_json::from_slice(&out).unwrap();
            proptest::prop_assert_eq!(back, value);
        }
    }

    #[test]
    fn escaping_writes_utf16_units() {
        let mut out = Vec::new();
        write_ascii_escaped(
            "\"caf\u{e9} \u{100}\u{6771} \u{1f600}\u{10ffff}\"".as_bytes(),
            &mut out,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#""caf\u00e9 \u0100\u6771 \ud83d\ude00\udbff\udfff""#
        );
    }

    #[test]
    fn escaped_batches_are_one_ascii_array_of_the_same_records() {
        let recs = [
            r#"{"hitIdHigh":1,"hitIdLow":18446744073709551615,"p":"a"}"#,
            r#"{"hitIdHigh":2,"hitIdLow":2,"p":"caf\u00e9 é"}"#,
            r#"{"hitIdHigh":3,"hitIdLow":3,"p":"東京 🙂"}"#,
            r#"{"hitIdHigh":4,"hitIdLow":4,"p":"ÿ","timeGMT":1372782179}"#,
        ];
        let mut plain = Batch::default();
        feed(&mut plain, &recs);
        let mut escaped = Batch::default();
        escaped.escape_non_ascii();
        feed(&mut escaped, &recs);
        assert_eq!(escaped.region_lens(), [4, 0, 0]);
        let text = escaped.text();
        assert!(text.is_ascii());
        let [l, w] = escaped.regions.map(|x| x as usize);
        assert_eq!((&text[l..w], &text[w..]), (&b"[]"[..], &b"[]"[..]));
        let all: serde_json::Value = serde_json::from_slice(&text[..l]).unwrap();
        for i in 0..4 {
            let want: serde_json::Value = serde_json::from_str(plain.record(i)).unwrap();
            assert_eq!(all[i], want, "record {i}");
            let alone: serde_json::Value = serde_json::from_str(escaped.record(i)).unwrap();
            assert_eq!(alone, want, "record {i} by its offsets");
        }
        assert_eq!(escaped.hit_id_low, plain.hit_id_low);
        assert_eq!(escaped.flags, plain.flags);
        escaped.clear();
        feed(&mut escaped, &recs);
        assert_eq!(escaped.region_lens(), [1, 2, 1], "clear() ends escaping");
    }

    #[test]
    fn without_references_the_columns_are_unchanged() {
        let mut b = Batch::default();
        feed(&mut b, &[r#"{"hitIdHigh":1,"hitIdLow":2}"#]);
        assert!(b.chunk_starts.is_empty() && b.quote_at.is_empty() && b.quotes.is_empty());
        let mut out = Vec::new();
        b.pack_columns(&mut out);
        assert_eq!(out.len(), 57);
    }
}
