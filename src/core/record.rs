//! One record: validate it and read its key fields ([`scan_record`]); optionally turn its
//! top-level ids into strings for JavaScript ([`write_with_quoted_ids`]).
//!
//! This is the hot path of the whole product: every byte of the stream goes through
//! [`scan_record`] once. It is a hand-written single-pass JSON validator that
//! - fully validates the record as one JSON object (RFC 8259), accepting exactly what
//!   JavaScript's `JSON.parse` accepts as an object (so `JSON.parse` on the text cannot
//!   throw, and no hit `JSON.parse` could read is dropped): lone surrogate escapes such as
//!   `"\ud83d"` (half an emoji) are valid JSON text and are delivered as they are. The one
//!   deliberate difference: nesting deeper than [`MAX_DEPTH`] is rejected (it bounds the
//!   work per byte; serde_json has the same limit). serde_json, used as the reference in
//!   the tests, rejects lone surrogates: there `JSON.parse` is the reference;
//! - reads the few fields the client needs (hit and visitor ids, times) on the way, and
//!   notes where the bare-number ids are, so a JavaScript consumer can quote them (since
//!   `JSON.parse` would round them to the nearest double, see `livestream-api.md`) while a
//!   native consumer forwards the text untouched.
//!
//! The id rule (the six [`ID_FIELDS`], top level only; nested keys of the same names are
//! ordinary data). A value is a *usable id* when it is
//! - a bare JSON number that is an unsigned decimal integer fitting u64
//!   (`0..=18446744073709551615`), or
//! - a *canonical decimal string* of such a number: digits only, no escapes, no leading zero
//!   (`"0"` itself is fine), so streams whose ids were already quoted still de-duplicate.
//!
//! Any other value (a negative, a fraction, an exponent, a number above u64::MAX, another
//! string such as `"007"` or `"\u0031"`, a bool, an object, an array) is *not* an error: the
//! record is delivered with that value exactly as given (not quoted, not changed), and the
//! field counts as absent, like `null`. For a repeated key the last occurrence decides, as
//! in `JSON.parse`. `hit_key` is set only when both `hitIdHigh` and `hitIdLow` are usable
//! (otherwise the hit has no dedup key and is always delivered); `vis_id` likewise.
//! Only usable bare-number ids are listed in [`RecordInfo::bare_id_spans`].
//!
//! Speed comes from: a single pass over the record (no separate UTF-8 check: non-ASCII bytes
//! can only be valid inside strings, so the string scanner checks their UTF-8 where it meets
//! them, and only a record that fails is checked and repaired as a whole), string bodies
//! skipped eight bytes at a time and id digits read eight at a time (SWAR on u64, native in
//! wasm32 too), compact JSON's `":` and `,"` tested as two bytes at once (whitespace takes
//! the long way), top-level keys told apart by their length, first byte and two words, the
//! wanted fields read out of line so the loop over ordinary members stays small, no copy of
//! the record at all in the scan, and the quoted output written as a few bulk copies between
//! the (at most six) edits. Measure changes in wasm: the native and the wasm code of this
//! loop do not always move together.

use std::fmt;

/// The unique key of a hit: (hitIdHigh, hitIdLow).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HitKey {
    /// `hitIdHigh`.
    pub high: u64,
    /// `hitIdLow`.
    pub low: u64,
}

/// What the client needs from a record besides its text.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RecordInfo {
    /// (hitIdHigh, hitIdLow); Some only when both are usable ids (see the module docs): the
    /// dedup key.
    pub hit_key: Option<HitKey>,
    /// (visIdHigh, visIdLow) when both are usable ids.
    pub vis_id: Option<(u64, u64)>,
    /// Top-level `timeGMT` when it is a number (Unix seconds).
    pub time_gmt: Option<f64>,
    /// Top-level `receivedTimeGMT` when it is a number (Unix seconds).
    pub received_time_gmt: Option<f64>,
    /// The record had invalid UTF-8, replaced by U+FFFD in [`Scanned::text`].
    pub replaced_invalid_utf8: bool,
    /// Every byte of the record is ASCII (known from the UTF-8 check, so a host that
    /// treats ASCII text specially need not look at the bytes again).
    pub ascii: bool,
    /// Byte ranges (start, end), within [`Scanned::text`], of the top-level id values that
    /// are bare JSON numbers fitting u64, sorted by position; only the first
    /// [`RecordInfo::bare_id_count`] are meaningful (see [`RecordInfo::bare_id_spans`]).
    pub bare_ids: [(u32, u32); 6],
    /// How many entries of [`RecordInfo::bare_ids`] are in use (at most 6).
    pub bare_id_count: u8,
}

impl RecordInfo {
    /// The byte ranges, within the scanned text, of the top-level id values written as
    /// bare JSON numbers (the ones a JavaScript consumer must turn into strings), sorted.
    /// For a repeated key only its last occurrence is listed, as `JSON.parse` keeps only it.
    #[inline]
    pub fn bare_id_spans(&self) -> &[(u32, u32)] {
        &self.bare_ids[..self.bare_id_count as usize]
    }
}

/// A record that passed [`scan_record`]: its JSON text and key fields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scanned<'a> {
    /// The record as valid UTF-8 JSON text, surrounding whitespace trimmed: a slice of the
    /// record, or of the `repaired` buffer when invalid UTF-8 had to be replaced by U+FFFD.
    pub text: &'a [u8],
    /// The key fields read on the way.
    pub info: RecordInfo,
}

/// What kind of problem made a record malformed (for counting and error codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordErrorKind {
    /// The record is empty or only whitespace.
    Empty,
    /// The record is valid-looking text but not a JSON object (`null`, `[…]`, `"…"`, …).
    NotAnObject,
    /// The JSON text is invalid (syntax, escapes, numbers, nesting depth, trailing text).
    Syntax,
}

/// Why a record is malformed; Display is a specific message a user can act on, e.g.
/// "invalid JSON at byte 57: expected ',' or '}' after an object member" or
/// "not a JSON object: starts with 'n'".
#[derive(Clone, Debug, PartialEq)]
pub struct RecordError {
    kind: RecordErrorKind,
    /// Byte offset in the record (after U+FFFD replacement, if any) for syntax errors.
    offset: Option<usize>,
    message: String,
}

impl RecordError {
    /// What kind of problem it is.
    pub fn kind(&self) -> RecordErrorKind {
        self.kind
    }

    /// Byte offset of a syntax error within the record, when there is one.
    pub fn offset(&self) -> Option<usize> {
        self.offset
    }

    /// The message without the "invalid JSON at byte N: " prefix.
    pub fn detail(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(at) => write!(f, "invalid JSON at byte {at}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for RecordError {}

/// The six top-level id fields that are exact u64 and are handed to JS as decimal strings.
pub const ID_FIELDS: [&str; 6] = [
    "hitIdHigh",
    "hitIdLow",
    "visIdHigh",
    "visIdLow",
    "mcVisIdHigh",
    "mcVisIdLow",
];

/// Deepest nesting accepted (the record's own object is level 1); deeper is malformed.
/// It bounds the work per byte and mirrors common JSON parsers' limits.
pub const MAX_DEPTH: usize = 128;

/// Validates `record` as exactly one JSON object (RFC 8259; surrounding whitespace allowed;
/// anything `JSON.parse` accepts as an object is accepted, except nesting deeper than
/// [`MAX_DEPTH`]) and reads its key fields (see the module docs for the id rules). Nothing is copied when the record is valid UTF-8: the
/// returned text is a slice of `record`. Otherwise `repaired` is overwritten with the record
/// in which each invalid sequence is replaced by U+FFFD (as `String::from_utf8_lossy`
/// does), the text is a slice of it, and [`RecordInfo::replaced_invalid_utf8`] is set.
pub fn scan_record<'a>(
    record: &'a [u8],
    repaired: &'a mut Vec<u8>,
) -> Result<Scanned<'a>, RecordError> {
    scan_record_in(record, repaired, None)
}

/// [`scan_record`] for the records of a stream, with its scratch memory. In a stream the
/// records share one shape (the same top-level names in the same order), so the scanner
/// remembers the names of the records before it by position and compares the next record's
/// with them instead of scanning and classifying each (~17 % of the scan natively, on
/// Live Stream records). The results are exactly those of [`scan_record`].
#[derive(Clone, Default)]
pub struct RecordScanner {
    /// Scratch for records whose invalid UTF-8 had to be replaced.
    repaired: Vec<u8>,
    /// The names of the records so far.
    shape: KeyShape,
}

impl RecordScanner {
    /// [`scan_record`] of the next record of the stream (see [`RecordScanner`]).
    pub fn scan<'a>(&'a mut self, record: &'a [u8]) -> Result<Scanned<'a>, RecordError> {
        scan_record_in(record, &mut self.repaired, Some(&mut self.shape))
    }
}

/// [`scan_record`], with names predicted and learned when a shape is given.
fn scan_record_in<'a>(
    record: &'a [u8],
    repaired: &'a mut Vec<u8>,
    mut shape: Option<&mut KeyShape>,
) -> Result<Scanned<'a>, RecordError> {
    // One pass over the record as it is: the scanner checks the UTF-8 of the non-ASCII bytes
    // it meets inside strings (the only place where valid JSON has any), so a record it
    // accepts is valid UTF-8, and it notes whether there was any non-ASCII byte at all.
    // Whenever it stops on something (invalid UTF-8 or a syntax error) and the record is not
    // valid UTF-8, the record is repaired and scanned again: an error's offset is then
    // within the repaired text, as the message says.
    if record.len() <= u32::MAX as usize {
        let mut seen = Seen::default();
        match scan_object(record, false, &mut seen, shape.as_deref_mut()) {
            Ok((start, end, mut info)) => {
                info.ascii = !seen.non_ascii;
                return Ok(Scanned {
                    text: &record[start..end],
                    info,
                });
            }
            Err(f) if !matches!(f, Fail::Utf8) && std::str::from_utf8(record).is_ok() => {
                return Err(error_for(record, f))
            }
            Err(_) => {}
        }
    }
    let (b, replaced): (&'a [u8], bool) = match std::str::from_utf8(record) {
        Ok(_) => (record, false),
        Err(_) => {
            repaired.clear();
            repaired.reserve(record.len() + 8);
            for chunk in record.utf8_chunks() {
                repaired.extend_from_slice(chunk.valid().as_bytes());
                if !chunk.invalid().is_empty() {
                    repaired.extend_from_slice("\u{fffd}".as_bytes());
                }
            }
            let repaired: &'a Vec<u8> = repaired;
            (repaired, true)
        }
    };
    if b.len() > u32::MAX as usize {
        // Spans are u32; maxRecordBytes is capped far below this.
        return Err(RecordError {
            kind: RecordErrorKind::Syntax,
            offset: None,
            message: format!("record of {} bytes is larger than 4 GiB", b.len()),
        });
    }
    // Valid UTF-8 here, so the scan cannot stop on it.
    let mut seen = Seen::default();
    match scan_object(b, replaced, &mut seen, shape) {
        Ok((start, end, mut info)) => Ok(Scanned {
            text: &b[start..end],
            info: {
                info.ascii = !replaced && !seen.non_ascii;
                info
            },
        }),
        Err(f) => Err(error_for(b, f)),
    }
}

/// Appends `text` (a [`Scanned::text`]) to `out` with a `"` before and after each span of
/// [`RecordInfo::bare_id_spans`]: the six top-level ids become JSON strings of the same
/// digits (`"hitIdHigh":2948027281753079808` -> `"hitIdHigh":"2948027281753079808"`), which
/// a JavaScript consumer needs because `JSON.parse` rounds numbers above 2^53. Everything
/// else is copied byte for byte (a few bulk copies). A JSON-level transformation: the
/// output is valid JSON whenever `text` is.
#[inline]
pub fn write_with_quoted_ids(text: &[u8], info: &RecordInfo, out: &mut Vec<u8>) {
    write_with_quoted_ids_by(text, info, out, |part, out| out.extend_from_slice(part));
}

/// [`write_with_quoted_ids`] with the text around the ids (not the ids: ASCII digits) written
/// by `write`, e.g. transformed on the way, in the same pass.
#[inline]
pub fn write_with_quoted_ids_by(
    text: &[u8],
    info: &RecordInfo,
    out: &mut Vec<u8>,
    mut write: impl FnMut(&[u8], &mut Vec<u8>),
) {
    let spans = info.bare_id_spans();
    out.reserve(text.len() + 2 * spans.len());
    let mut copied = 0;
    for &(start, end) in spans {
        let (start, end) = (start as usize, end as usize);
        write(&text[copied..start], out);
        out.push(b'"');
        out.extend_from_slice(&text[start..end]);
        out.push(b'"');
        copied = end;
    }
    write(&text[copied..], out);
}

/// The string value of the top-level member `key` of the JSON object `text` (the last one, as
/// `JSON.parse` would keep), decoded: escapes resolved, surrogate pairs joined, a lone
/// surrogate as U+FFFD. None when `text` is not a JSON object or the member is not a string.
/// The scanner of records reads it, so error bodies (a 409's `error_description`) and records
/// share one JSON reader.
pub fn top_level_string(text: &[u8], key: &str) -> Option<String> {
    // Its text need not be UTF-8: strings with invalid UTF-8 are skipped, not errors.
    let seen = &mut Seen {
        lenient: true,
        ..Seen::default()
    };
    let mut i = skip_ws(text, 0);
    if at(text, i) != b'{' {
        return None;
    }
    i = skip_ws(text, i + 1);
    let mut found = None;
    if at(text, i) == b'}' {
        return None;
    }
    loop {
        if at(text, i) != b'"' {
            return None;
        }
        let (name_end, _) = string(text, i + 1, seen).ok()?;
        let name = decode_string(&text[i + 1..name_end]);
        let v = member_name(text, i, seen).ok()?;
        let after = any_value(text, v, seen).ok()?;
        if name.as_deref() == Some(key) {
            found = match at(text, v) {
                b'"' => decode_string(&text[v + 1..after - 1]),
                _ => None,
            };
        }
        i = skip_ws(text, after);
        match at(text, i) {
            b',' => i = skip_ws(text, i + 1),
            b'}' => return found,
            _ => return None,
        }
    }
}

/// Decodes the body of a validated JSON string (between the quotes).
fn decode_string(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains('\\') {
        return Some(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    let mut plain = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        out.push_str(&text[plain..i]);
        let c = *b.get(i + 1)?;
        i += 2;
        match c {
            b'n' => out.push('\n'),
            b't' => out.push('\t'),
            b'r' => out.push('\r'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'u' => {
                let hi = hex4(b.get(i..)?)?;
                i += 4;
                let ch = if (0xD800..0xDC00).contains(&hi) && b.get(i..i + 2) == Some(b"\\u") {
                    match b.get(i + 2..).and_then(hex4) {
                        Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                            i += 6;
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                        }
                        _ => None,
                    }
                } else {
                    char::from_u32(hi)
                };
                out.push(ch.unwrap_or('\u{FFFD}'));
            }
            other => out.push(other as char),
        }
        plain = i;
    }
    out.push_str(&text[plain..]);
    Some(out)
}

/// Which top-level member a key names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Other,
    /// Index into [`ID_FIELDS`].
    Id(usize),
    TimeGmt,
    ReceivedTimeGmt,
}

/// Which field the top-level key `b[start..end]` names (`b[end]` is its closing quote and
/// `b[start - 1]` its opening one). Most keys are ruled out by their length and first byte;
/// the others are compared as two words, the first eight bytes from `start` and the eight
/// bytes that end at `end`, with the one name their hash picks.
#[inline(always)]
fn classify(b: &[u8], start: usize, end: usize) -> Field {
    let len = end - start;
    if !(7..=15).contains(&len) || !matches!(at(b, start), b'h' | b'v' | b'm' | b't' | b'r') {
        return Field::Other;
    }
    // Within `b`: `start >= 1`, and the quote at `end` follows a key of at least 7 bytes.
    let (Some(head), Some(tail)) = (b.get(start..start + 8), b.get(end - 8..end)) else {
        return Field::Other;
    };
    let head = u64::from_le_bytes(head.try_into().unwrap());
    let tail = u64::from_le_bytes(tail.try_into().unwrap());
    let name = &NAMES[(head.wrapping_mul(NAME_HASH) >> 61) as usize];
    if head == name.head && tail == name.tail && len == name.len {
        name.field
    } else {
        Field::Other
    }
}

/// A wanted top-level name as [`classify`] compares it.
#[derive(Clone, Copy)]
struct Name {
    head: u64,
    tail: u64,
    len: usize,
    field: Field,
}

/// Picks each wanted name's slot in [`NAMES`] from its head word (a multiplicative hash
/// that gives the eight names eight different slots; checked when `NAMES` is built).
const NAME_HASH: u64 = 0x03b2_7030_e7f5_24f3;

/// The eight wanted names, each in the slot its head word hashes to.
const NAMES: [Name; 8] = {
    const fn word(b: &[u8], at: usize) -> u64 {
        let mut w = 0u64;
        let mut k = 0;
        while k < 8 {
            w |= (b[at + k] as u64) << (8 * k);
            k += 1;
        }
        w
    }
    let quoted: [(&[u8], Field); 8] = [
        (b"\"hitIdHigh\"", Field::Id(0)),
        (b"\"hitIdLow\"", Field::Id(1)),
        (b"\"visIdHigh\"", Field::Id(2)),
        (b"\"visIdLow\"", Field::Id(3)),
        (b"\"mcVisIdHigh\"", Field::Id(4)),
        (b"\"mcVisIdLow\"", Field::Id(5)),
        (b"\"timeGMT\"", Field::TimeGmt),
        (b"\"receivedTimeGMT\"", Field::ReceivedTimeGmt),
    ];
    let mut names = [Name {
        head: 0,
        tail: 0,
        len: 0,
        field: Field::Other,
    }; 8];
    let mut k = 0;
    while k < quoted.len() {
        let (q, field) = quoted[k];
        let len = q.len() - 2;
        let head = word(q, 1);
        let slot = (head.wrapping_mul(NAME_HASH) >> 61) as usize;
        assert!(names[slot].len == 0, "NAME_HASH: two names share a slot");
        names[slot] = Name {
            head,
            tail: word(q, len + 1 - 8),
            len,
            field,
        };
        k += 1;
    }
    names
};

/// Classifies a key written with escapes (`"hitId\u0048igh"` is `hitIdHigh` to JSON.parse).
/// Only short all-ASCII names can match; anything else is [`Field::Other`].
fn classify_escaped(raw: &[u8]) -> Field {
    // The decoded name between quotes, as classify reads it.
    let mut buf = [b'"'; 18];
    let mut n = 0;
    let mut i = 0;
    while i < raw.len() {
        let c = if raw[i] == b'\\' {
            let e = raw[i + 1];
            i += 2;
            match e {
                b'u' => {
                    let cp = hex4(&raw[i..i + 4]).unwrap_or(0xffff);
                    i += 4;
                    if cp >= 0x80 {
                        return Field::Other;
                    }
                    cp as u8
                }
                b'"' | b'\\' | b'/' => e,
                // \b \f \n \r \t: control characters, never part of a field name we want.
                _ => return Field::Other,
            }
        } else {
            i += 1;
            raw[i - 1]
        };
        if n == 16 {
            return Field::Other;
        }
        buf[1 + n] = c;
        n += 1;
    }
    classify(&buf[..n + 2], 1, n + 1)
}

/// Value of four hex digits, or None.
#[inline]
fn hex4(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b.get(..4)? {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = v << 4 | d as u32;
    }
    Some(v)
}

/// The first problem found, with byte offsets; turned into a message only on failure
/// (see [`error_for`]), so the hot path carries no strings.
#[derive(Clone, Copy, Debug)]
enum Fail {
    /// "expected {what}, found {the byte at}".
    Expected(usize, &'static str),
    /// A fixed message at an offset.
    Plain(usize, &'static str),
    /// An unescaped control character in a string at the offset.
    Control(usize),
    /// A backslash (at the offset) followed by something that is not an escape.
    BadEscape(usize),
    /// The string that starts at the offset has no closing quote.
    Unterminated(usize),
    /// Nesting beyond [`MAX_DEPTH`] at the offset.
    TooDeep(usize),
    /// The first non-space byte (at the offset) is not '{'.
    NotObject(usize),
    /// Nothing but whitespace.
    Empty,
    /// Invalid UTF-8 in a string: the record is repaired and scanned again (never reported).
    Utf8,
}

/// What the string scanner notes on the way, besides where each string ends.
struct Seen {
    /// A non-ASCII byte was met (in a string: elsewhere it is a syntax error anyway).
    non_ascii: bool,
    /// Skip non-ASCII bytes without checking their UTF-8 ([`top_level_string`], whose text
    /// need not be UTF-8); otherwise invalid UTF-8 stops the scan with [`Fail::Utf8`].
    lenient: bool,
    /// Whether the last string [`string_slow`] finished had escapes.
    escaped: bool,
    /// Why the last string [`string_slow`] gave up on was invalid.
    fail: Fail,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            non_ascii: false,
            lenient: false,
            escaped: false,
            fail: Fail::Empty,
        }
    }
}

type Scan<T> = Result<T, Fail>;

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

// The scanner is a set of free functions over (bytes, index) that return the index after
// what they scanned. The hot ones are always inlined into the two loops (the record's own
// object in `scan` and nested values in `container`), so the index lives in a register.

/// The byte at `i`, or 0 past the end (0 is invalid everywhere in JSON text outside
/// strings, so it acts as a sentinel; errors tell the end apart by position).
#[inline(always)]
fn at(b: &[u8], i: usize) -> u8 {
    match b.get(i) {
        Some(&c) => c,
        None => 0,
    }
}

#[inline(always)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    loop {
        let c = at(b, i);
        if c > b' ' || !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            return i;
        }
        i += 1;
    }
}

/// Scans a string body from `start` (just after the opening quote). Returns the index of
/// the closing quote and whether the string had escapes. The common case (plain ASCII) is
/// inlined; escapes, non-ASCII text and errors go to [`string_slow`].
#[inline(always)]
fn string(b: &[u8], start: usize, seen: &mut Seen) -> Scan<(usize, bool)> {
    let i = find_special(b, start);
    if at(b, i) == b'"' {
        return Ok((i, false));
    }
    // The slow path's answer comes back as one index, the rest through `seen`, so the
    // fast path's result never has to go through memory.
    match string_slow(b, start, i, seen) {
        usize::MAX => Err(seen.fail),
        end => Ok((end, seen.escaped)),
    }
}

/// The rest of a string from `i`: a backslash, a non-ASCII byte, a control character or
/// the end. Returns the index of the closing quote and sets [`Seen::escaped`], or returns
/// `usize::MAX` with the problem in [`Seen::fail`].
#[inline(never)]
fn string_slow(b: &[u8], start: usize, i: usize, seen: &mut Seen) -> usize {
    match string_rest(b, start, i, seen) {
        Ok((end, escaped)) => {
            seen.escaped = escaped;
            end
        }
        Err(fail) => {
            seen.fail = fail;
            usize::MAX
        }
    }
}

/// [`string_slow`] with a plain result.
#[inline(always)]
fn string_rest(b: &[u8], start: usize, mut i: usize, seen: &mut Seen) -> Scan<(usize, bool)> {
    let mut escaped = false;
    loop {
        match at(b, i) {
            b'"' => return Ok((i, escaped)),
            b'\\' => {
                escaped = true;
                i = escape(b, i)?;
            }
            0x80.. => {
                seen.non_ascii = true;
                i = match utf8_char(b, i) {
                    Some(next) => next,
                    None if seen.lenient => i + 1,
                    None => return Err(Fail::Utf8),
                };
            }
            _ if i >= b.len() => return Err(Fail::Unterminated(start - 1)),
            _ => return Err(Fail::Control(i)),
        }
        i = find_special(b, i);
    }
}

/// The index after the UTF-8 sequence that starts at the non-ASCII byte `b[i]`, or None
/// when it is not one `str::from_utf8` accepts (overlong forms, surrogates, values above
/// U+10FFFF, stray continuation bytes and cut sequences are not).
fn utf8_char(b: &[u8], i: usize) -> Option<usize> {
    // The range of the second byte and the length, by the first byte (Unicode table 3-7).
    let (second, len) = match b[i] {
        0xC2..=0xDF => (0x80..=0xBF, 2),
        0xE0 => (0xA0..=0xBF, 3),
        0xE1..=0xEC | 0xEE..=0xEF => (0x80..=0xBF, 3),
        0xED => (0x80..=0x9F, 3),
        0xF0 => (0x90..=0xBF, 4),
        0xF1..=0xF3 => (0x80..=0xBF, 4),
        0xF4 => (0x80..=0x8F, 4),
        _ => return None,
    };
    let rest = b.get(i + 1..i + len)?;
    let ok = second.contains(&rest[0]) && rest[1..].iter().all(|&c| (0x80..=0xBF).contains(&c));
    ok.then_some(i + len)
}

/// Validates the escape at `i` (a backslash); returns the index after it.
fn escape(b: &[u8], i: usize) -> Scan<usize> {
    match at(b, i + 1) {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(i + 2),
        // Any four hex digits: a lone surrogate (half of an emoji cut by a producer) is
        // valid JSON text (RFC 8259 section 8.2) and JSON.parse accepts it; so do we.
        b'u' if b.get(i + 2..).and_then(hex4).is_some() => Ok(i + 6),
        b'u' => Err(Fail::Plain(i, "\\u must be followed by four hex digits")),
        _ if i + 1 >= b.len() => Err(Fail::Unterminated(i)),
        _ => Err(Fail::BadEscape(i)),
    }
}

/// Index after the run of ASCII digits at `i`.
#[inline(always)]
fn digits(b: &[u8], mut i: usize) -> usize {
    while at(b, i).is_ascii_digit() {
        i += 1;
    }
    i
}

/// The message of a number with a leading zero (`01`), wherever a number is scanned.
const LEADING_ZERO: &str = "leading zeros are not allowed in numbers";
/// What a '-' must be followed by, wherever a number is scanned.
const DIGIT_AFTER_MINUS: &str = "a digit after '-' (Infinity and NaN are not JSON)";

/// Scans a number at `start` (a '-' or digit) per the JSON grammar. Returns its end and
/// whether it is an integer (no fraction, no exponent).
#[inline(always)]
fn number(b: &[u8], start: usize) -> Scan<(usize, bool)> {
    let mut i = start;
    if at(b, i) == b'-' {
        i += 1;
    }
    match at(b, i) {
        b'0' => {
            i += 1;
            if at(b, i).is_ascii_digit() {
                return Err(Fail::Plain(start, LEADING_ZERO));
            }
        }
        b'1'..=b'9' => i = digits(b, i + 1),
        _ => return Err(Fail::Expected(i, DIGIT_AFTER_MINUS)),
    }
    match at(b, i) {
        b'.' | b'e' | b'E' => number_tail(b, i).map(|end| (end, false)),
        _ => Ok((i, true)),
    }
}

/// A number whose digits start at `i` (a digit; `start` is where the number starts, at a
/// '-' when there is one), like [`number`]. Returns its end and, when it is an integer (no
/// fraction, no exponent) whose digits fit u64, their value.
#[inline(always)]
fn unsigned_number(b: &[u8], start: usize, i: usize) -> Scan<(usize, Option<u64>)> {
    let (end, v) = if at(b, i) == b'0' {
        if at(b, i + 1).is_ascii_digit() {
            return Err(Fail::Plain(start, LEADING_ZERO));
        }
        (i + 1, Some(0))
    } else {
        digit_run(b, i)
    };
    match at(b, end) {
        b'.' | b'e' | b'E' => Ok((number_tail(b, end)?, None)),
        _ => Ok((end, v)),
    }
}

/// Powers of ten as u64 (10^0 ..= 10^8).
const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The run of ASCII digits at `start` (a digit other than a leading zero): its end, and its
/// value when that fits u64 (at most 20 digits). Read eight digits at a time (SWAR): two
/// whole words stay below 10^16, and a third ends any id (19 or 20 digits) with one
/// overflow test, so the length of an id costs no branch of its own.
#[inline(always)]
fn digit_run(b: &[u8], start: usize) -> (usize, Option<u64>) {
    // With 24 bytes in reach (nearly always inside a record), the three words are read and
    // converted independently, so their latencies overlap instead of adding up (~3 % of the
    // record scan in wasm).
    if let Some(w) = b.get(start..start + 24) {
        let word = |k: usize| u64::from_le_bytes(w[k..k + 8].try_into().unwrap());
        let (n0, d0) = leading_digits(word(0));
        let (n1, d1) = leading_digits(word(8));
        let (n2, d2) = leading_digits(word(16));
        if n0 < 8 {
            return (start + n0, Some(d0));
        }
        let v = d0 * POW10_U64[n1] + d1;
        if n1 < 8 {
            return (start + 8 + n1, Some(v));
        }
        if n2 < 8 {
            return (
                start + 16 + n2,
                fits_after_16(v, n2, d2).then(|| v * POW10_U64[n2] + d2),
            );
        }
    }
    // Near the end of the record, or 24 digits or more: word by word.
    let mut i = start;
    let mut v = 0u64;
    let mut fits = true;
    for word in 0..3 {
        let Some(w) = b.get(i..i + 8) else { break };
        let (n, d) = leading_digits(u64::from_le_bytes(w.try_into().unwrap()));
        if word == 2 {
            fits = fits_after_16(v, n, d);
        }
        v = v.wrapping_mul(POW10_U64[n]).wrapping_add(d);
        i += n;
        if n < 8 {
            return (i, fits.then_some(v));
        }
    }
    // Near the end of the record, or past 24 digits: one at a time, checked.
    while let Some(&c) = b.get(i) {
        if !c.is_ascii_digit() {
            break;
        }
        let d = (c - b'0') as u64;
        fits &= v < u64::MAX / 10 || (v == u64::MAX / 10 && d <= u64::MAX % 10);
        v = v.wrapping_mul(10).wrapping_add(d);
        i += 1;
    }
    (i, fits.then_some(v))
}

/// Whether `v * 10^n + d` fits u64, for the value `v` of sixteen digits followed by `n`
/// more (< 8) whose value is `d`: for n <= 3 always, for n == 4 when it is at most
/// u64::MAX = 1844674407370955_1615.
#[inline(always)]
fn fits_after_16(v: u64, n: usize, d: u64) -> bool {
    const HEAD: u64 = u64::MAX / 10_000;
    n <= 3 || (n == 4 && (v < HEAD || (v == HEAD && d <= u64::MAX % 10_000)))
}

/// How many ASCII digits the word `w` (eight bytes of the record, little endian) starts
/// with, and their value.
#[inline(always)]
fn leading_digits(w: u64) -> (usize, u64) {
    // The high bit of each byte that is not a digit: below '0' borrows, above '9' carries
    // into bit 7, non-ASCII has it already; both only reach higher bytes, past the first
    // non-digit.
    let not_digit = (w.wrapping_sub(LO * b'0' as u64) | w.wrapping_add(LO * 0x46) | w) & HI;
    let n = (not_digit.trailing_zeros() / 8) as usize;
    // The n digits moved to the top bytes (zeros below them), then combined pairwise.
    let top = if n == 0 { 0 } else { w << (64 - 8 * n) };
    let d = top & (LO * 0x0f);
    let d = (d * 10 + (d >> 8)) & 0x00ff_00ff_00ff_00ff;
    let d = (d * 100 + (d >> 16)) & 0x0000_ffff_0000_ffff;
    (n, (d.wrapping_mul(10_000) + (d >> 32)) & 0xffff_ffff)
}

/// The fraction and exponent of a number from `i`.
#[inline(never)]
fn number_tail(b: &[u8], mut i: usize) -> Scan<usize> {
    if at(b, i) == b'.' {
        i += 1;
        if !at(b, i).is_ascii_digit() {
            return Err(Fail::Expected(i, "a digit after the decimal point"));
        }
        i = digits(b, i);
    }
    if matches!(at(b, i), b'e' | b'E') {
        i += 1;
        if matches!(at(b, i), b'+' | b'-') {
            i += 1;
        }
        if !at(b, i).is_ascii_digit() {
            return Err(Fail::Expected(i, "a digit in the exponent"));
        }
        i = digits(b, i);
    }
    Ok(i)
}

/// Validates a scalar at `i` and returns the index after it; returns `i` itself (nothing
/// consumed) when a container starts there instead.
#[inline(always)]
fn scalar_or_open(b: &[u8], i: usize, seen: &mut Seen) -> Scan<usize> {
    match at(b, i) {
        b'"' => Ok(string(b, i + 1, seen)?.0 + 1),
        b'{' | b'[' => Ok(i),
        b'-' | b'0'..=b'9' => Ok(number(b, i)?.0),
        b't' if b.get(i..i + 4) == Some(b"true") => Ok(i + 4),
        b'f' if b.get(i..i + 5) == Some(b"false") => Ok(i + 5),
        b'n' if b.get(i..i + 4) == Some(b"null") => Ok(i + 4),
        b't' => Err(Fail::Plain(i, "invalid literal (expected 'true')")),
        b'f' => Err(Fail::Plain(i, "invalid literal (expected 'false')")),
        b'n' => Err(Fail::Plain(i, "invalid literal (expected 'null')")),
        _ => Err(Fail::Expected(i, "a value")),
    }
}

/// Validates any value at `i`, which sits in the record's object, and returns the index
/// after it (out of line: for the rare paths).
#[inline(never)]
fn any_value(b: &[u8], i: usize, seen: &mut Seen) -> Scan<usize> {
    let j = scalar_or_open(b, i, seen)?;
    if j == i {
        container(b, i, 1, seen)
    } else {
        Ok(j)
    }
}

/// Expects a member name and its ':' (with whitespace around) at `i`; returns the index
/// of the value.
#[inline(always)]
fn member_name(b: &[u8], i: usize, seen: &mut Seen) -> Scan<usize> {
    if at(b, i) != b'"' {
        return Err(Fail::Expected(i, "a member name (a string)"));
    }
    let (end, _) = string(b, i + 1, seen)?;
    value_after_name(b, end + 1)
}

/// From just after a member name's closing quote: the index of the value after the ':'.
/// Compact JSON (`"name":value`) takes one two-byte test; whitespace takes the long way.
#[inline(always)]
fn value_after_name(b: &[u8], i: usize) -> Scan<usize> {
    match b.get(i..i + 2) {
        Some(&[b':', c]) if c > b' ' => Ok(i + 1),
        _ => {
            let i = skip_ws(b, i);
            if at(b, i) != b':' {
                return Err(Fail::Expected(i, "':' after a member name"));
            }
            Ok(skip_ws(b, i + 1))
        }
    }
}

/// Validates the object or array at `i`, which sits inside `base` levels; returns the
/// index after it. Iterative, with the open containers kept as a bit stack (1 = array),
/// so deep input cannot overflow the call stack. The stack is two u64 words, not a u128:
/// a u128 shift is a call to a compiler helper in wasm.
fn container(b: &[u8], mut i: usize, base: usize, seen: &mut Seen) -> Scan<usize> {
    // Bit d (of word d / 64): the container at depth d + 1 is an array; depth < MAX_DEPTH.
    let mut stack = [0u64; 2];
    let mut depth: usize = 0;
    // Whether the innermost open container is an array.
    let mut in_arr = false;
    // One loop, one place that validates a value: each turn starts at a member (in an
    // object: its name first) or an element of the container at `depth`, or at the
    // container itself when `depth` is 0.
    loop {
        if depth > 0 && !in_arr {
            i = member_name(b, i, seen)?;
        }
        let j = scalar_or_open(b, i, seen)?;
        if j == i {
            // `b[i]` is '{' or '['.
            in_arr = at(b, i) == b'[';
            if base + depth + 1 > MAX_DEPTH {
                return Err(Fail::TooDeep(i));
            }
            if in_arr {
                stack[(depth >> 6) & 1] |= 1 << (depth & 63);
            } else {
                stack[(depth >> 6) & 1] &= !(1 << (depth & 63));
            }
            depth += 1;
            i = skip_ws(b, i + 1);
            if at(b, i) != if in_arr { b']' } else { b'}' } {
                continue;
            }
            i += 1;
            depth -= 1;
        } else {
            i = j;
        }
        // A value just ended inside the container at `depth`: find the next one, closing
        // containers on the way.
        loop {
            if depth == 0 {
                return Ok(i);
            }
            let d = depth - 1;
            in_arr = (stack[(d >> 6) & 1] >> (d & 63)) & 1 == 1;
            // The next member or element right after a ',' (compact JSON), else the long way.
            if matches!(b.get(i..i + 2), Some(&[b',', c]) if c > b' ') {
                i += 1;
                break;
            }
            i = skip_ws(b, i);
            match at(b, i) {
                b',' => {
                    i = skip_ws(b, i + 1);
                    break;
                }
                b']' if in_arr => {
                    i += 1;
                    depth -= 1;
                }
                b'}' if !in_arr => {
                    i += 1;
                    depth -= 1;
                }
                _ => {
                    return Err(Fail::Expected(
                        i,
                        if in_arr {
                            "',' or ']' after an array element"
                        } else {
                            "',' or '}' after an object member"
                        },
                    ))
                }
            }
        }
    }
}

/// The wanted top-level fields read so far (for a repeated key, the last occurrence).
#[derive(Default)]
struct Fields {
    /// Per id field, the value of its last occurrence when usable.
    ids: [Option<u64>; 6],
    /// Per id field, the span (relative to the object's start) of its last occurrence when
    /// that is a usable bare number.
    spans: [Option<(u32, u32)>; 6],
    time_gmt: Option<f64>,
    received_time_gmt: Option<f64>,
}

impl Fields {
    /// Validates the value at `i` of a member whose key is the wanted `field` (not
    /// [`Field::Other`]), reads it, and returns the index after it. `start` is where the
    /// object starts. Out of line: a few members per record, and the member loop stays small.
    #[inline(never)]
    fn read(
        &mut self,
        b: &[u8],
        start: usize,
        i: usize,
        field: Field,
        seen: &mut Seen,
    ) -> Scan<usize> {
        let c = at(b, i);
        match field {
            Field::Id(k) if c.is_ascii_digit() => {
                // A fraction, an exponent or more than u64::MAX: kept as given, no id.
                let (end, v) = unsigned_number(b, i, i)?;
                self.ids[k] = v;
                self.spans[k] = v.map(|_| ((i - start) as u32, (end - start) as u32));
                Ok(end)
            }
            Field::Id(k) if c == b'"' => {
                let (end, escaped) = string(b, i + 1, seen)?;
                // Only a canonical decimal string is an id (so pre-quoted streams
                // de-duplicate); "007", "\u0031", "" or "x" are kept as given, no id.
                self.ids[k] = match at(b, i + 1) {
                    b'0' if end == i + 2 => Some(0),
                    b'1'..=b'9' if !escaped => match digit_run(b, i + 1) {
                        (run_end, v) if run_end == end => v,
                        _ => None,
                    },
                    _ => None,
                };
                self.spans[k] = None;
                Ok(end + 1)
            }
            Field::TimeGmt | Field::ReceivedTimeGmt if c == b'-' || c.is_ascii_digit() => {
                let digits = i + (c == b'-') as usize;
                if !at(b, digits).is_ascii_digit() {
                    return Err(Fail::Expected(digits, DIGIT_AFTER_MINUS));
                }
                let (end, int) = unsigned_number(b, i, digits)?;
                let v = Some(match int {
                    // Up to 15 digits: exact as f64 (what number_to_f64 does for them).
                    Some(v) if end - digits <= 15 => match c {
                        b'-' => -(v as f64),
                        _ => v as f64,
                    },
                    // Longer integers, fractions and exponents.
                    _ => number_to_f64(&b[i..end], false),
                });
                if field == Field::TimeGmt {
                    self.time_gmt = v;
                } else {
                    self.received_time_gmt = v;
                }
                Ok(end)
            }
            _ => {
                // null (absent), negative, bool, object, array: validated, and no id or time.
                let end = any_value(b, i, seen)?;
                match field {
                    Field::Id(k) => {
                        self.ids[k] = None;
                        self.spans[k] = None;
                    }
                    Field::TimeGmt => self.time_gmt = None,
                    _ => self.received_time_gmt = None,
                }
                Ok(end)
            }
        }
    }
}

/// Most top-level keys [`KeyShape`] remembers.
const SHAPE_KEYS: usize = 128;

/// The top-level member names of the records scanned so far, by position (see
/// [`RecordScanner`]); at most [`SHAPE_KEYS`] of them, under 10 KiB.
#[derive(Clone, Default)]
struct KeyShape {
    keys: Vec<ShapeKey>,
}

/// One remembered member name as it appears in the text, `"name":` (at most 24 bytes,
/// all ASCII, no escapes), in three little-endian words and the masks of its bytes.
#[derive(Clone, Copy)]
struct ShapeKey {
    words: [u64; 3],
    masks: [u64; 3],
    len: usize,
    field: Field,
}

impl KeyShape {
    /// Remembers `text` (`"name":`) as the name of member `member`, when it can be one and
    /// the names before it are known.
    fn learn(&mut self, member: usize, text: &[u8], field: Field) {
        let Some(key) = ShapeKey::new(text, field) else {
            return;
        };
        if member < self.keys.len() {
            self.keys[member] = key;
        } else if member == self.keys.len() {
            self.keys.push(key);
        }
    }
}

impl ShapeKey {
    /// The key for the name text `text` (`"name":`), or None when it cannot be one.
    fn new(text: &[u8], field: Field) -> Option<ShapeKey> {
        if text.len() > 24 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 24];
        bytes[..text.len()].copy_from_slice(text);
        let mut key = ShapeKey {
            words: [0; 3],
            masks: [0; 3],
            len: text.len(),
            field,
        };
        for k in 0..3 {
            key.words[k] = u64::from_le_bytes(bytes[8 * k..8 * k + 8].try_into().unwrap());
            let n = text.len().saturating_sub(8 * k).min(8);
            key.masks[k] = if n == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * n)) - 1
            };
        }
        Some(key)
    }

    /// True when `b` has this name text at `i` (24 bytes must be in reach).
    #[inline(always)]
    fn matches(&self, w: &[u8; 24]) -> bool {
        let word = |k: usize| u64::from_le_bytes(w[8 * k..8 * k + 8].try_into().unwrap());
        ((word(0) ^ self.words[0]) & self.masks[0])
            | ((word(1) ^ self.words[1]) & self.masks[1])
            | ((word(2) ^ self.words[2]) & self.masks[2])
            == 0
    }
}

/// The record's own object: like [`container`] for one level, plus reading the top-level
/// fields that matter. Returns the object's start and end (whitespace trimmed) and the info.
/// With a `shape`, names it remembers at their position are compared rather than scanned,
/// and it learns this record's.
fn scan_object(
    b: &[u8],
    replaced: bool,
    seen: &mut Seen,
    mut shape: Option<&mut KeyShape>,
) -> Scan<(usize, usize, RecordInfo)> {
    let start = skip_ws(b, 0);
    if at(b, start) != b'{' {
        return Err(if start >= b.len() {
            Fail::Empty
        } else {
            Fail::NotObject(start)
        });
    }
    let mut fields = Fields::default();
    let mut i = skip_ws(b, start + 1);
    // Position of the member among the record's.
    let mut member = 0;
    if at(b, i) == b'}' {
        i += 1;
    } else {
        loop {
            let predicted = match (
                shape.as_deref().and_then(|s| s.keys.get(member)),
                b.get(i..i + 24),
            ) {
                (Some(&key), Some(w)) if key.matches(w.try_into().unwrap()) => Some(key),
                _ => None,
            };
            let field = if let Some(key) = predicted {
                // The same name text as a record before: valid, and its field is known.
                i += key.len;
                if at(b, i) <= b' ' {
                    i = skip_ws(b, i);
                }
                key.field
            } else {
                if at(b, i) != b'"' {
                    return Err(Fail::Expected(i, "a member name (a string)"));
                }
                let key_start = i + 1;
                let (key_end, escaped) = string(b, key_start, seen)?;
                i = value_after_name(b, key_end + 1)?;
                let field = if escaped {
                    classify_escaped(&b[key_start..key_end])
                } else {
                    classify(b, key_start, key_end)
                };
                // Learn the name as written when it is `"name":` with nothing in between.
                if let Some(shape) = shape.as_deref_mut() {
                    if !escaped && member < SHAPE_KEYS && b.get(key_end + 1) == Some(&b':') {
                        shape.learn(member, &b[key_start - 1..key_end + 2], field);
                    }
                }
                field
            };
            member += 1;
            i = if field == Field::Other {
                // Most members: the generic validator, inlined here.
                let j = scalar_or_open(b, i, seen)?;
                if j == i {
                    container(b, i, 1, seen)?
                } else {
                    j
                }
            } else {
                fields.read(b, start, i, field, seen)?
            };
            // The next member: `,"` right after the value in compact JSON.
            if b.get(i..i + 2) == Some(b",\"") {
                i += 1;
                continue;
            }
            i = skip_ws(b, i);
            match at(b, i) {
                b',' => i = skip_ws(b, i + 1),
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return Err(Fail::Expected(i, "',' or '}' after an object member")),
            }
        }
    }
    let end = i;
    let i = skip_ws(b, i);
    if i < b.len() {
        return Err(Fail::Plain(
            i,
            "unexpected text after the end of the JSON object (one record must be one object)",
        ));
    }
    let Fields {
        ids,
        spans,
        time_gmt,
        received_time_gmt,
    } = fields;
    let mut info = RecordInfo {
        replaced_invalid_utf8: replaced,
        time_gmt,
        received_time_gmt,
        ..RecordInfo::default()
    };
    if let (Some(high), Some(low)) = (ids[0], ids[1]) {
        info.hit_key = Some(HitKey { high, low });
    }
    if let (Some(h), Some(l)) = (ids[2], ids[3]) {
        info.vis_id = Some((h, l));
    }
    let mut n = 0;
    for span in spans.into_iter().flatten() {
        // Insertion sort by position: at most six entries, usually already in order.
        let mut j = n;
        while j > 0 && info.bare_ids[j - 1].0 > span.0 {
            info.bare_ids[j] = info.bare_ids[j - 1];
            j -= 1;
        }
        info.bare_ids[j] = span;
        n += 1;
    }
    info.bare_id_count = n as u8;
    Ok((start, end, info))
}

// ----- messages (cold) -----

/// Turns a failure into the user-facing error.
#[cold]
fn error_for(b: &[u8], fail: Fail) -> RecordError {
    let syntax = |at: usize, message: String| RecordError {
        kind: RecordErrorKind::Syntax,
        offset: Some(at),
        message,
    };
    match fail {
        Fail::Expected(at, what) => {
            let mut m = format!("expected {what}, found {}", found(b, at));
            if what == "a value" && matches!(b.get(at), Some(b'N' | b'I')) {
                m.push_str(" (NaN and Infinity are not JSON)");
            }
            syntax(at, m)
        }
        Fail::Plain(at, what) => syntax(at, what.to_string()),
        Fail::Control(at) => syntax(
            at,
            format!(
                "control character U+{:04X} in a string must be escaped (\\n, \\t, \\u00XX)",
                b[at]
            ),
        ),
        Fail::BadEscape(at) => syntax(
            at,
            format!(
                "invalid escape '\\{}' (allowed: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)",
                found_char(b, at + 1)
            ),
        ),
        Fail::Unterminated(at) => syntax(at, "unterminated string".into()),
        Fail::TooDeep(at) => syntax(at, format!("nesting deeper than {MAX_DEPTH} levels")),
        Fail::NotObject(at) => RecordError {
            kind: RecordErrorKind::NotAnObject,
            offset: None,
            message: format!("not a JSON object: starts with {}", found(b, at)),
        },
        Fail::Empty => RecordError {
            kind: RecordErrorKind::Empty,
            offset: None,
            message: "empty record".into(),
        },
        // scan_record repairs the text instead; kept for completeness.
        Fail::Utf8 => RecordError {
            kind: RecordErrorKind::Syntax,
            offset: None,
            message: "invalid UTF-8".into(),
        },
    }
}

/// The character at `i` for a message: `'x'`, `U+000A`, or "the end of the record".
fn found(b: &[u8], i: usize) -> String {
    if i >= b.len() {
        return "the end of the record".into();
    }
    let c = found_char(b, i);
    if c.is_control() {
        format!("U+{:04X}", c as u32)
    } else {
        format!("'{c}'")
    }
}

fn found_char(b: &[u8], i: usize) -> char {
    let end = (i + 4).min(b.len());
    String::from_utf8_lossy(&b[i.min(end)..end])
        .chars()
        .next()
        .unwrap_or('\u{fffd}')
}

/// The high bit of each byte of `w` that is '"', '\\', a control character or non-ASCII.
#[inline(always)]
fn special_bytes(w: u64) -> u64 {
    // For an ASCII byte c, each sum has its high bit set when c is not special: c + 0x60
    // when c >= 0x20, (c ^ '"') + 0x7f when c != '"', likewise for '\\'; none carries into
    // the next byte. A non-ASCII byte is flagged by its own high bit, and whatever it
    // carries only reaches higher bytes, so the lowest flagged byte is a true hit.
    let plain = w.wrapping_add(LO * 0x60)
        & (w ^ (LO * b'"' as u64)).wrapping_add(LO * 0x7f)
        & (w ^ (LO * b'\\' as u64)).wrapping_add(LO * 0x7f)
        & !w;
    !plain & HI
}

/// Index of the first '"', '\\', control character or non-ASCII byte at or after `i` (or
/// the length). SWAR, 8 bytes at a time: 64-bit integer ops are native in wasm32 too.
#[inline(always)]
fn find_special(b: &[u8], mut i: usize) -> usize {
    // The first word outside the loop: most strings end in it.
    if let Some(w) = b.get(i..i + 8) {
        let m = special_bytes(u64::from_le_bytes(w.try_into().unwrap()));
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i + 8 <= b.len() {
        let m = special_bytes(u64::from_le_bytes(b[i..i + 8].try_into().unwrap()));
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !matches!(b[i], b'"' | b'\\' | 0..=0x1f | 0x80..) {
        i += 1;
    }
    i
}

/// Exact powers of ten representable as f64 (10^0 ..= 10^22).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The value of a scanned (valid) JSON number, for the time fields.
///
/// Integers up to 15 digits (every real `timeGMT`) take a fast exact path. Other numbers
/// with at most 19 significant digits and a decimal exponent within ±22 are still exact
/// and correctly rounded (Clinger's fast path: one exact integer and one exact power of
/// ten, one rounding). Beyond that the relative error stays below 1e-14: good enough for
/// a time stamp, and it keeps core's `f64::from_str` (about 15 KB of gzipped wasm) out of
/// the build.
#[inline]
fn number_to_f64(text: &[u8], integer: bool) -> f64 {
    let negative = text[0] == b'-';
    let body = if negative { &text[1..] } else { text };
    if integer && body.len() <= 15 {
        let v = body.iter().fold(0u64, |v, &d| v * 10 + (d - b'0') as u64) as f64;
        return if negative { -v } else { v };
    }
    let v = decimal_to_f64(body);
    if negative {
        -v
    } else {
        v
    }
}

/// Unsigned JSON number text (digits, optional fraction, optional exponent) to f64.
#[inline(never)]
fn decimal_to_f64(text: &[u8]) -> f64 {
    let mut mantissa: u64 = 0;
    let mut digits = 0u32; // significant digits kept in `mantissa`
    let mut exp10: i64 = 0;
    let mut i = 0;
    let mut in_fraction = false;
    while i < text.len() {
        match text[i] {
            d @ b'0'..=b'9' => {
                if digits < 19 {
                    if mantissa != 0 || d != b'0' {
                        digits += 1;
                    }
                    mantissa = mantissa * 10 + (d - b'0') as u64;
                    if in_fraction {
                        exp10 -= 1;
                    }
                } else if !in_fraction {
                    // Dropped integer digit: scale instead.
                    exp10 += 1;
                }
            }
            b'.' => in_fraction = true,
            _ => break, // 'e' or 'E'
        }
        i += 1;
    }
    if i < text.len() {
        // Exponent: sign and digits (saturated; anything this large is 0 or infinity).
        i += 1;
        let neg = text.get(i) == Some(&b'-');
        if matches!(text.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let e = text[i..]
            .iter()
            .fold(0i64, |e, &d| (e * 10 + (d - b'0') as i64).min(1_000_000));
        exp10 += if neg { -e } else { e };
    }
    if mantissa == 0 {
        return 0.0;
    }
    let m = mantissa as f64;
    if mantissa < 1 << 53 && (-22..=22).contains(&exp10) {
        // Exact operands, one rounding.
        return if exp10 >= 0 {
            m * POW10[exp10 as usize]
        } else {
            m / POW10[(-exp10) as usize]
        };
    }
    let mut v = m;
    let mut e = exp10;
    while e > 22 {
        v *= 1e22;
        e -= 22;
        if v.is_infinite() {
            return v;
        }
    }
    while e < -22 {
        v /= 1e22;
        e += 22;
        if v == 0.0 {
            return v;
        }
    }
    if e >= 0 {
        v * POW10[e as usize]
    } else {
        v / POW10[(-e) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scan + quote, as the web shell does.
    fn rw(s: &str) -> Result<(String, RecordInfo), RecordError> {
        let mut out = Vec::new();
        let mut repaired = Vec::new();
        let scanned = scan_record(s.as_bytes(), &mut repaired)?;
        write_with_quoted_ids(scanned.text, &scanned.info, &mut out);
        Ok((String::from_utf8(out).unwrap(), scanned.info))
    }

    fn err(s: &[u8]) -> String {
        match scan_record(s, &mut Vec::new()) {
            Ok(_) => panic!("accepted: {}", String::from_utf8_lossy(s)),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn sample_record() {
        let rec = r#"{"reportSuite":"examplecomprod","hitIdHigh":2948027281753079808,"hitIdLow":4948646782672799561,"visIdHigh":1944017885723175213,"visIdLow":2512895455560210216,"timeGMT":1372782179,"receivedTimeGMT":1372782180,"evars":{"evars":{"campaign":"DFA:1","eVar1":"Summer"}},"events":{"event1":[{"count":1,"exponent":0,"unique":""}]},"products":[{"revenue":1799,"units":15,"evars":{},"events":{}}],"truncated":false,"visIdType":3}"#;
        let (out, info) = rw(rec).unwrap();
        assert_eq!(
            out,
            rec.replace(":2948027281753079808", ":\"2948027281753079808\"")
                .replace(":4948646782672799561", ":\"4948646782672799561\"")
                .replace(":1944017885723175213", ":\"1944017885723175213\"")
                .replace(":2512895455560210216", ":\"2512895455560210216\"")
        );
        assert_eq!(
            info,
            RecordInfo {
                hit_key: Some(HitKey {
                    high: 2948027281753079808,
                    low: 4948646782672799561
                }),
                vis_id: Some((1944017885723175213, 2512895455560210216)),
                time_gmt: Some(1372782179.0),
                received_time_gmt: Some(1372782180.0),
                replaced_invalid_utf8: false,
                ascii: true,
                bare_ids: [(44, 63), (75, 94), (107, 126), (138, 157), (0, 0), (0, 0)],
                bare_id_count: 4,
            }
        );
        // The text itself is the record, untouched.
        let mut repaired = Vec::new();
        let s = scan_record(rec.as_bytes(), &mut repaired).unwrap();
        assert_eq!(s.text, rec.as_bytes());
        for &(a, b) in s.info.bare_id_spans() {
            let digits = &rec[a as usize..b as usize];
            assert!(digits.bytes().all(|c| c.is_ascii_digit()), "{digits}");
        }
        assert!(repaired.is_empty());
    }

    #[test]
    fn u64_extremes_and_mc_ids() {
        let (out, info) = rw(
            r#" {"hitIdHigh":0,"hitIdLow":18446744073709551615,"mcVisIdHigh":5,"mcVisIdLow":6} "#,
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"hitIdHigh":"0","hitIdLow":"18446744073709551615","mcVisIdHigh":"5","mcVisIdLow":"6"}"#
        );
        assert_eq!(
            info.hit_key,
            Some(HitKey {
                high: 0,
                low: u64::MAX
            })
        );
        assert_eq!(info.vis_id, None);
    }

    #[test]
    fn nested_ids_untouched_and_whitespace_kept() {
        let rec = r#"{ "a" : { "hitIdHigh" : 12345678901234567890 } , "hitIdLow" : 7 , "x":[1,{"visIdLow":2}] }"#;
        let (out, info) = rw(rec).unwrap();
        assert_eq!(
            out,
            r#"{ "a" : { "hitIdHigh" : 12345678901234567890 } , "hitIdLow" : "7" , "x":[1,{"visIdLow":2}] }"#
        );
        assert_eq!(info.hit_key, None);
    }

    #[test]
    fn string_ids_kept_and_read_null_absent() {
        let (out, info) = rw(r#"{"hitIdHigh":"123","hitIdLow":"18446744073709551615","visIdHigh":null,"visIdLow":1}"#).unwrap();
        assert_eq!(
            out,
            r#"{"hitIdHigh":"123","hitIdLow":"18446744073709551615","visIdHigh":null,"visIdLow":"1"}"#
        );
        assert_eq!(
            info.hit_key,
            Some(HitKey {
                high: 123,
                low: u64::MAX
            })
        );
        assert_eq!(info.vis_id, None);
        let (_, info) = rw(r#"{"hitIdHigh":1,"hitIdLow":null}"#).unwrap();
        assert_eq!(info.hit_key, None);
    }

    #[test]
    fn escaped_key_names_count() {
        let (out, info) = rw(r#"{"hitId\u0048igh":1,"hitIdLow":2}"#).unwrap();
        assert_eq!(out, r#"{"hitId\u0048igh":"1","hitIdLow":"2"}"#);
        assert_eq!(info.hit_key, Some(HitKey { high: 1, low: 2 }));
    }

    #[test]
    fn duplicate_keys_last_wins() {
        // Only the last occurrence counts (JSON.parse keeps only it): the first stays bare.
        let (out, info) = rw(r#"{"hitIdHigh":1,"hitIdLow":2,"hitIdHigh":3}"#).unwrap();
        assert_eq!(out, r#"{"hitIdHigh":1,"hitIdLow":"2","hitIdHigh":"3"}"#);
        assert_eq!(info.hit_key, Some(HitKey { high: 3, low: 2 }));
        assert_eq!(info.bare_id_spans(), &[(26, 27), (40, 41)]);
        // A usable id followed by an unusable one: no id, nothing quoted.
        let (out, info) = rw(r#"{"hitIdHigh":1,"hitIdLow":2,"hitIdHigh":-3}"#).unwrap();
        assert_eq!(out, r#"{"hitIdHigh":1,"hitIdLow":"2","hitIdHigh":-3}"#);
        assert_eq!(info.hit_key, None);
        // An unusable one followed by a usable one: the id.
        let (out, info) = rw(r#"{"hitIdHigh":1.5,"hitIdLow":2,"hitIdHigh":"4"}"#).unwrap();
        assert_eq!(out, r#"{"hitIdHigh":1.5,"hitIdLow":"2","hitIdHigh":"4"}"#);
        assert_eq!(info.hit_key, Some(HitKey { high: 4, low: 2 }));
        // null last: absent.
        let (_, info) = rw(r#"{"hitIdHigh":1,"hitIdLow":2,"hitIdHigh":null}"#).unwrap();
        assert_eq!(info.hit_key, None);
        assert_eq!(info.bare_id_spans().len(), 1);
    }

    /// Bare and quoted ids of 1 to 22 digits at every offset of an eight-byte word, followed
    /// by more members or right at the end of the record (where the digits are read one at
    /// a time), around u64::MAX: the value is read exactly when it fits, and a fraction or
    /// an exponent right after the digits makes it no id.
    #[test]
    fn ids_of_every_length_and_position() {
        let mut digits: Vec<String> = (1..=22)
            .flat_map(|n| ["9".repeat(n), "1234567890".repeat(3)[..n].to_string()])
            .collect();
        digits.extend(
            [
                "10000000000000000000",
                "18446744073709551609",
                "18446744073709551614",
                "18446744073709551615",
                "18446744073709551616",
                "18446744073709551619",
                "18446744073709551620",
                "18446744073709552000",
                "19000000000000000000",
            ]
            .map(String::from),
        );
        for d in &digits {
            let want: Option<u64> = d.parse().ok();
            for pad in 0..9 {
                let key = "k".repeat(pad + 1);
                let mut repaired = Vec::new();
                for (rec, bare, first) in [
                    (
                        format!(r#"{{"{key}":1,"hitIdHigh":{d},"hitIdLow":7}}"#),
                        true,
                        true,
                    ),
                    (
                        format!(r#"{{"{key}":1,"hitIdLow":7,"hitIdHigh":{d}}}"#),
                        true,
                        false,
                    ),
                    (
                        format!(r#"{{"{key}":1,"hitIdLow":7,"hitIdHigh":{d} }}"#),
                        true,
                        false,
                    ),
                    (
                        format!(r#"{{"{key}":1,"hitIdLow":7,"hitIdHigh":"{d}"}}"#),
                        false,
                        false,
                    ),
                    (
                        format!(r#"{{"{key}":1,"hitIdHigh":"{d}","hitIdLow":7}}"#),
                        false,
                        true,
                    ),
                ] {
                    let s = scan_record(rec.as_bytes(), &mut repaired).unwrap();
                    assert_eq!(s.info.hit_key.map(|k| k.high), want, "{rec}");
                    let quoted: Vec<&[u8]> = s
                        .info
                        .bare_id_spans()
                        .iter()
                        .map(|&(a, b)| &s.text[a as usize..b as usize])
                        .collect();
                    let want_quoted: Vec<&[u8]> = match (bare && want.is_some(), first) {
                        (false, _) => vec![b"7"],
                        (true, true) => vec![d.as_bytes(), b"7"],
                        (true, false) => vec![b"7", d.as_bytes()],
                    };
                    assert_eq!(quoted, want_quoted, "{rec}");
                }
                for tail in [".5", "e1", "E+2", ".0e-1"] {
                    let rec = format!(r#"{{"{key}":1,"hitIdLow":7,"hitIdHigh":{d}{tail}}}"#);
                    let s = scan_record(rec.as_bytes(), &mut repaired).unwrap();
                    assert_eq!((s.info.hit_key, s.info.bare_id_count), (None, 1), "{rec}");
                }
                for bad in ["0", ".", "e", "-", "a"] {
                    let rec = format!(r#"{{"{key}":1,"hitIdHigh":0{d}{bad},"hitIdLow":7}}"#);
                    let at = 19 + pad;
                    let want = format!("byte {at}: leading zeros are not allowed");
                    assert!(err(rec.as_bytes()).contains(&want), "{rec}");
                }
            }
        }
    }

    /// Time fields of 1 to 22 digits, signed or not, at every offset of a word and at the
    /// end of the record: exact up to 15 digits, close beyond.
    #[test]
    fn times_of_every_length_and_position() {
        for n in 1..=22 {
            for sign in ["", "-"] {
                let t = format!("{sign}{}", &"9876543210".repeat(3)[..n]);
                let want: f64 = t.parse().unwrap();
                for pad in 0..9 {
                    let key = "k".repeat(pad + 1);
                    for rec in [
                        format!(r#"{{"{key}":1,"timeGMT":{t},"x":2}}"#),
                        format!(r#"{{"{key}":1,"timeGMT":{t}}}"#),
                    ] {
                        let got = scan_record(rec.as_bytes(), &mut Vec::new())
                            .unwrap()
                            .info
                            .time_gmt
                            .unwrap();
                        if n <= 15 {
                            assert_eq!(got.to_bits(), want.to_bits(), "{rec}");
                        } else {
                            assert!(((got - want) / want).abs() < 1e-14, "{rec}: {got}");
                        }
                    }
                }
            }
        }
        let t = |rec: &str| scan_record(rec.as_bytes(), &mut Vec::new()).map(|s| s.info.time_gmt);
        assert_eq!(
            t(r#"{"timeGMT":-0}"#).unwrap().map(f64::to_bits),
            Some((-0.0f64).to_bits())
        );
        assert!(err(br#"{"timeGMT":-01}"#).contains("byte 11: leading zeros"));
        assert!(err(br#"{"timeGMT":-x}"#).contains("byte 12: expected a digit after '-'"));
        assert!(err(br#"{"timeGMT":-}"#).contains("byte 12: expected a digit after '-'"));
        assert!(err(br#"{"timeGMT":1."#).contains("byte 13: expected a digit after the decimal"));
    }

    /// Every token boundary of a compact record (where the scanner tests two bytes at once):
    /// whitespace there changes nothing but the text, and a stray byte there is an error at
    /// exactly its offset, with the message of the token expected there.
    #[test]
    fn whitespace_and_junk_at_every_token_boundary() {
        let rec = r#"{"hitIdHigh":12,"a":{"b":[1,"x",{"c":true},[]],"d":{}},"hitIdLow":"34","timeGMT":5,"e":[null,-1.5e3,{"f":"g"}],"visIdHigh":7,"visIdLow":8}"#;
        let base = scan_record(rec.as_bytes(), &mut Vec::new()).unwrap().info;
        assert_eq!(base.hit_key, Some(HitKey { high: 12, low: 34 }));
        let mut in_string = false;
        let mut boundaries = vec![];
        for (p, c) in rec.bytes().enumerate() {
            if c == b'"' {
                in_string = !in_string;
            }
            if !in_string
                && p > 0
                && (b"{[:,".contains(&rec.as_bytes()[p - 1]) || b"}]:,".contains(&c))
            {
                boundaries.push(p);
            }
        }
        assert!(boundaries.len() > 40);
        for &p in &boundaries {
            for ws in [" ", "\t", "\r\n "] {
                let spaced = format!("{}{ws}{}", &rec[..p], &rec[p..]);
                let mut repaired = Vec::new();
                let s = scan_record(spaced.as_bytes(), &mut repaired).unwrap();
                assert_eq!(s.text, spaced.as_bytes());
                let shift = |(a, b): (u32, u32)| {
                    let n = if a as usize >= p { ws.len() as u32 } else { 0 };
                    (a + n, b + n)
                };
                let mut want = base;
                want.bare_ids = base.bare_ids.map(shift);
                want.bare_ids[base.bare_id_count as usize..].fill((0, 0));
                assert_eq!(s.info, want, "{spaced}");
            }
            let junk = format!("{}x{}", &rec[..p], &rec[p..]);
            let e = scan_record(junk.as_bytes(), &mut Vec::new()).unwrap_err();
            assert_eq!(e.offset(), Some(p), "{junk}: {e}");
            assert!(e.detail().starts_with("expected "), "{junk}: {e}");
            assert!(e.detail().ends_with("found 'x'"), "{junk}: {e}");
        }
    }

    /// The wanted names and nothing else: each one, and each one with any byte changed,
    /// dropped or added, as a key in a record (in plain text and escaped).
    #[test]
    fn names_classified_exactly() {
        let wanted = [
            ("hitIdHigh", Field::Id(0)),
            ("hitIdLow", Field::Id(1)),
            ("visIdHigh", Field::Id(2)),
            ("visIdLow", Field::Id(3)),
            ("mcVisIdHigh", Field::Id(4)),
            ("mcVisIdLow", Field::Id(5)),
            ("timeGMT", Field::TimeGmt),
            ("receivedTimeGMT", Field::ReceivedTimeGmt),
        ];
        let field = |name: &[u8]| {
            let mut rec = b"{\"".to_vec();
            rec.extend_from_slice(name);
            rec.extend_from_slice(b"\":1}");
            let plain = classify(&rec, 2, 2 + name.len());
            let escaped: String = name.iter().map(|&c| format!("\\u{c:04x}")).collect();
            assert!(plain == classify_escaped(escaped.as_bytes()), "{name:?}");
            plain
        };
        for (name, want) in wanted {
            assert!(field(name.as_bytes()) == want, "{name}");
            let n = name.as_bytes();
            for k in 0..=n.len() {
                for c in [b'a', b'h', b'"', b'T', 0] {
                    let mut changed = n.to_vec();
                    if k < n.len() {
                        changed[k] = if changed[k] == c { c ^ 1 } else { c };
                        assert!(field(&changed) == Field::Other, "{changed:?}");
                        let mut dropped = n.to_vec();
                        dropped.remove(k);
                        assert!(field(&dropped) == Field::Other, "{dropped:?}");
                    }
                    let mut added = n.to_vec();
                    added.insert(k, c);
                    assert!(field(&added) == Field::Other, "{added:?}");
                }
            }
        }
        // Keys that pass the length and first-byte test.
        for other in [
            "hitSource",
            "visIdType",
            "visitNumber",
            "referrer",
            "truncated",
        ] {
            assert!(field(other.as_bytes()) == Field::Other, "{other}");
        }
    }

    #[test]
    fn times() {
        let (_, i) = rw(r#"{"timeGMT":-5,"receivedTimeGMT":1.5e3}"#).unwrap();
        assert_eq!(i.time_gmt, Some(-5.0));
        assert_eq!(i.received_time_gmt, Some(1500.0));
        let (_, i) = rw(r#"{"timeGMT":"1372782179","receivedTimeGMT":12345678901234567}"#).unwrap();
        assert_eq!(i.time_gmt, None);
        assert_eq!(i.received_time_gmt, Some(12345678901234567.0));
        let (_, i) = rw(r#"{"timeGMT":1e400,"receivedTimeGMT":-1e-400}"#).unwrap();
        assert_eq!(i.time_gmt, Some(f64::INFINITY));
        assert_eq!(i.received_time_gmt, Some(-0.0));
        let (_, i) = rw(r#"{"timeGMT":1372782179.5,"receivedTimeGMT":1.372782179E9}"#).unwrap();
        assert_eq!(i.time_gmt, Some(1372782179.5));
        assert_eq!(i.received_time_gmt, Some(1372782179.0));
        let (_, i) = rw(r#"{"x":{"timeGMT":5}}"#).unwrap();
        assert_eq!(i.time_gmt, None);
    }

    #[test]
    fn the_ascii_flag_says_whether_every_byte_is_ascii() {
        let mut repaired = Vec::new();
        let ascii = scan_record(br#"{"a":"plain"}"#, &mut repaired).unwrap();
        assert!(ascii.info.ascii);
        let latin1 = scan_record("{\"a\":\"Zürich\"}".as_bytes(), &mut repaired).unwrap();
        assert!(!latin1.info.ascii);
        let invalid = scan_record(b"{\"a\":\"\xff\"}", &mut repaired).unwrap();
        assert!(!invalid.info.ascii && invalid.info.replaced_invalid_utf8);
        // One non-ASCII character at every offset of strings around the word sizes, in a
        // value and in a key, near the end of the record and far from it.
        for len in 0..40 {
            let plain = "x".repeat(len);
            for rec in [
                format!("{{\"a\":\"{plain}\"}}"),
                format!("{{\"{plain}\":1,\"b\":\"{plain}\",\"c\":true}}"),
            ] {
                assert!(
                    scan_record(rec.as_bytes(), &mut repaired)
                        .unwrap()
                        .info
                        .ascii
                );
                for at in 0..len {
                    for c in ["é", "€", "😀", "\u{7f}"] {
                        let mut s = plain.clone();
                        s.insert_str(at, c);
                        let rec = rec.replacen(&plain, &s, 1);
                        let info = scan_record(rec.as_bytes(), &mut repaired).unwrap().info;
                        assert_eq!(info.ascii, c == "\u{7f}", "{rec}");
                        assert!(!info.replaced_invalid_utf8);
                    }
                }
            }
        }
        // Outside strings a non-ASCII byte is a syntax error, at its offset.
        assert!(err("{\"a\":1é}".as_bytes()).contains("byte 6: expected ',' or '}'"));
        assert!(err("{é:1}".as_bytes()).contains("byte 1: expected a member name"));
    }

    /// The scanner's UTF-8 check inside strings accepts exactly what `str::from_utf8` does:
    /// every sequence of one to three bytes starting with a non-ASCII byte (the first three
    /// bytes of any four-byte one too), and the four-byte ones at the edges, at every offset
    /// of an eight-byte word, in the middle of a string and cut by its end.
    #[test]
    fn utf8_in_strings_is_checked_like_from_utf8() {
        let mut repaired = Vec::new();
        let mut check = |seq: &[u8]| {
            for pad in [0, 3, 7, 8] {
                for tail in [&b"ab"[..], b""] {
                    let mut rec = b"{\"k\":\"".to_vec();
                    rec.extend(std::iter::repeat(b'p').take(pad));
                    rec.extend_from_slice(seq);
                    rec.extend_from_slice(tail);
                    rec.extend_from_slice(b"\"}");
                    let valid = std::str::from_utf8(&rec).is_ok();
                    let want = String::from_utf8_lossy(&rec).into_owned();
                    let s = scan_record(&rec, &mut repaired);
                    match s {
                        Ok(s) => {
                            assert_eq!(s.info.replaced_invalid_utf8, !valid, "{seq:x?}");
                            assert_eq!(s.text, want.as_bytes(), "{seq:x?}");
                            assert!(!s.info.ascii);
                        }
                        Err(e) => panic!("{seq:x?}: {e}"),
                    }
                }
            }
        };
        for a in 0x80..=0xffu8 {
            check(&[a]);
            for b in 0..=0xffu8 {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    continue;
                }
                check(&[a, b]);
                if a >= 0xe0 && (0x80..0xc0).contains(&b) {
                    for c in [0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff] {
                        check(&[a, b, c]);
                        check(&[a, b, c, 0x80]);
                        check(&[a, b, c, 0xbf]);
                        check(&[a, b, c, 0xc0]);
                    }
                }
            }
        }
    }

    #[test]
    fn invalid_utf8_replaced_and_flagged() {
        let mut repaired = b"old".to_vec();
        let s = scan_record(b" {\"a\":\"x\xffy\xc3\",\"hitIdLow\":9} ", &mut repaired).unwrap();
        assert!(s.info.replaced_invalid_utf8);
        let mut out = Vec::new();
        write_with_quoted_ids(s.text, &s.info, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"a\":\"x\u{fffd}y\u{fffd}\",\"hitIdLow\":\"9\"}"
        );
        assert_eq!(
            repaired,
            " {\"a\":\"x\u{fffd}y\u{fffd}\",\"hitIdLow\":9} ".as_bytes()
        );
        let (_, info) = rw("{\"a\":\"é😀\"}").unwrap();
        assert!(!info.replaced_invalid_utf8);
    }

    #[test]
    fn empty_object_and_all_literals() {
        assert_eq!(rw("{}").unwrap().0, "{}");
        assert_eq!(rw(" { } ").unwrap().0, "{ }");
        let rec = r#"{"a":[],"b":[true,false,null,-0,0.5,1E+2,-1e-7,"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"],"c":{}}"#;
        assert_eq!(rw(rec).unwrap().0, rec);
    }

    #[test]
    fn error_messages() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty record"),
            (b"   ", "empty record"),
            (b"null", "not a JSON object: starts with 'n'"),
            (b"[1]", "not a JSON object: starts with '['"),
            (b"{\"a\":1", "invalid JSON at byte 6: expected ',' or '}' after an object member, found the end of the record"),
            (b"{\"a\":1 x", "invalid JSON at byte 7: expected ',' or '}' after an object member, found 'x'"),
            (b"{\"a\":1}x", "invalid JSON at byte 7: unexpected text after the end of the JSON object"),
            (b"{\"a\":1}{}", "unexpected text after the end"),
            (b"{\"a\":1,}", "invalid JSON at byte 7: expected a member name (a string), found '}'"),
            (b"{a:1}", "expected a member name (a string), found 'a'"),
            (b"{\"a\" 1}", "expected ':' after a member name, found '1'"),
            (b"{\"a\":}", "expected a value, found '}'"),
            (b"{\"a\":NaN}", "NaN and Infinity are not JSON"),
            (b"{\"a\":-Infinity}", "expected a digit after '-'"),
            (b"{\"a\":01}", "invalid JSON at byte 5: leading zeros are not allowed"),
            (b"{\"a\":1.}", "expected a digit after the decimal point"),
            (b"{\"a\":.5}", "expected a value, found '.'"),
            (b"{\"a\":1e}", "expected a digit in the exponent"),
            (b"{\"a\":+1}", "expected a value, found '+'"),
            (b"{\"a\":tru}", "invalid literal (expected 'true')"),
            (b"{\"a\":nul}", "invalid literal (expected 'null')"),
            (b"{\"a\":\"x\\q\"}", "invalid escape '\\q'"),
            (b"{\"a\":\"\\u12g4\"}", "\\u must be followed by four hex digits"),
            (b"{\"a\":\"x\ty\"}", "invalid JSON at byte 7: control character U+0009 in a string must be escaped"),
            (b"{\"a\":\"x\x00\"}", "control character U+0000"),
            (b"{\"a\":\"abc", "invalid JSON at byte 5: unterminated string"),
            (b"{\"a\":\"abc\\", "unterminated string"),
            (b"{\"a\":[1,2}", "expected ',' or ']' after an array element, found '}'"),
            (b"{\"a\":{\"b\":1]}", "expected ',' or '}' after an object member, found ']'"),
            (b"{\"a\":[1,]}", "expected a value, found ']'"),
            (b"{\"a\":[", "expected a value, found the end of the record"),
            (b"{\"hitIdLow\":01}", "leading zeros are not allowed"),
        ];
        for (input, want) in cases {
            let got = err(input);
            assert!(
                got.contains(want),
                "{:?}: got {got:?}, want {want:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn error_kinds() {
        let kind = |s: &str| {
            scan_record(s.as_bytes(), &mut Vec::new())
                .unwrap_err()
                .kind()
        };
        assert_eq!(kind(""), RecordErrorKind::Empty);
        assert_eq!(kind("1"), RecordErrorKind::NotAnObject);
        assert_eq!(kind("{"), RecordErrorKind::Syntax);
        let e = scan_record(b"{\"a\":x}", &mut Vec::new()).unwrap_err();
        assert_eq!(e.offset(), Some(5));
        assert_eq!(e.detail(), "expected a value, found 'x'");
    }

    #[test]
    fn depth_cap() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        let rec = format!("{{\"a\":{ok}}}");
        assert!(rw(&rec).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let rec = format!("{{\"a\":{deep}}}");
        assert!(err(rec.as_bytes()).contains("nesting deeper than 128 levels"));
        // Far deeper input fails the same way without exhausting the stack.
        let deep = "{\"a\":".repeat(100_000);
        assert!(err(deep.as_bytes()).contains("nesting deeper"));
    }

    /// Arrays and objects mixed at every depth up to the cap (the open containers are bits
    /// in two words): each container is closed by its own bracket, and the wrong one at any
    /// depth is an error at its offset that names the right one.
    #[test]
    fn mixed_nesting_at_every_depth() {
        for levels in [1, 2, 63, 64, 65, 66, 100, MAX_DEPTH - 1] {
            let kinds: Vec<bool> = (0..levels).map(|k| (k * 7 + 3) % 5 < 2).collect();
            let mut open = String::from("{\"r\":");
            for &arr in &kinds {
                open.push_str(if arr { "[" } else { "{\"a\":" });
            }
            open.push('1');
            let closers: Vec<char> = kinds
                .iter()
                .rev()
                .map(|&a| if a { ']' } else { '}' })
                .collect();
            let rec = format!("{open}{}}}", closers.iter().collect::<String>());
            assert!(
                scan_record(rec.as_bytes(), &mut Vec::new()).is_ok(),
                "{levels}"
            );
            for wrong in 0..levels {
                let mut c = closers.clone();
                c[wrong] = if c[wrong] == ']' { '}' } else { ']' };
                let bad = format!("{open}{}}}", c.iter().collect::<String>());
                let at = open.len() + wrong;
                let want = if closers[wrong] == ']' {
                    "',' or ']' after an array element"
                } else {
                    "',' or '}' after an object member"
                };
                let e = err(bad.as_bytes());
                assert!(
                    e.contains(&format!("byte {at}: expected {want}")),
                    "{levels}/{wrong}: {e}"
                );
            }
        }
    }

    #[test]
    fn long_strings_with_specials_at_every_offset() {
        for len in 0..40 {
            for special in ["\\n", "\\\"", "é", "\\u00e9"] {
                for at in 0..=len {
                    let mut s = "a".repeat(len);
                    s.insert_str(at, special);
                    let rec = format!("{{\"k\":\"{s}\",\"hitIdLow\":1}}");
                    let (out, _) = rw(&rec).unwrap();
                    assert_eq!(out, rec.replace(":1}", ":\"1\"}"));
                }
                let mut bad = format!("{{\"k\":\"{}\"}}", "a".repeat(len)).into_bytes();
                let at = 6 + len / 2;
                bad.insert(at, 0x1f);
                assert!(err(&bad).contains(&format!("byte {at}: control character U+001F")));
            }
        }
    }

    #[test]
    fn decimal_to_f64_matches_std() {
        let exact = [
            "0",
            "0.0",
            "1",
            "1.5",
            "1372782179.25",
            "1372782179123.5",
            "1e3",
            "1E+3",
            "25e-1",
            "0.1",
            "0.3",
            "123456789012345678",
            "9007199254740993",
            "1.7976931348623157e308",
            "2.5e-10",
            "4.9e-300",
            "12345678901234567890123",
            "0.000001",
            "3.14159265358979",
        ];
        for t in exact {
            let want: f64 = t.parse().unwrap();
            let got = decimal_to_f64(t.as_bytes());
            let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(ulps <= 4, "{t}: {got} vs {want} ({ulps} ulps)");
        }
        // Within the fast path the result is exact.
        for t in [
            "1.5",
            "1372782179.25",
            "0.1",
            "0.3",
            "25e-1",
            "123456789.123456",
        ] {
            assert_eq!(
                decimal_to_f64(t.as_bytes()),
                t.parse::<f64>().unwrap(),
                "{t}"
            );
        }
        assert_eq!(decimal_to_f64(b"1e400"), f64::INFINITY);
        assert_eq!(decimal_to_f64(b"1e-400"), 0.0);
        assert_eq!(number_to_f64(b"-2.5", false), -2.5);
        assert_eq!(number_to_f64(b"-0", true), 0.0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Any JSON number: no panic, and close to the correctly rounded value.
        #[test]
        fn number_to_f64_is_close(
            int in "-?(0|[1-9][0-9]{0,25})",
            frac in "(\\.[0-9]{1,25})?",
            exp in "([eE][+-]?[0-9]{1,4})?",
        ) {
            let text = format!("{int}{frac}{exp}");
            let want: f64 = text.parse().unwrap();
            let got = number_to_f64(text.as_bytes(), frac.is_empty() && exp.is_empty());
            if want.is_infinite() || want.abs() < f64::MIN_POSITIVE {
                proptest::prop_assert!(
                    got == want || got.abs() < 2.0 * f64::MIN_POSITIVE,
                    "{}: {} vs {}", text, got, want
                );
            } else {
                let rel = ((got - want) / want).abs();
                proptest::prop_assert!(rel < 1e-14, "{}: {} vs {} ({})", text, got, want, rel);
            }
            // Through a whole record too.
            let rec = format!("{{\"timeGMT\":{text}}}");
            let info = scan_record(rec.as_bytes(), &mut Vec::new()).unwrap().info;
            proptest::prop_assert_eq!(info.time_gmt.map(f64::to_bits), Some(got.to_bits()));
        }
    }

    /// The members a stream's records are made of in
    /// [`a_stream_scanner_gives_what_the_plain_scan_gives`]: names the scanner predicts, wants
    /// or must not learn (escaped, non-ASCII, too long, a space before the ':'), and values of
    /// every kind, some invalid.
    const MEMBERS: [&str; 16] = [
        r#""hitIdHigh":18446744073709551615"#,
        r#""hitIdLow":"12""#,
        r#""visIdHigh":3"#,
        r#""visIdLow": 4"#,
        r#""timeGMT":1732859959"#,
        r#""receivedTimeGMT":-1.5e3"#,
        r#""pageName":"caf\u00e9""#,
        r#""hitId\u0048igh":7"#,
        r#""g\u00e9o":"ünï""#,
        r#""aVeryLongMemberNameBeyondTwentyFour":true"#,
        r#""evars" :{"evars":{"eVar1":"x"}}"#,
        r#""events":{}"#,
        r#""products":[1,[],{"a":null}]"#,
        r#""bad":tru"#,
        r#""bad2":"\x""#,
        r#""n":-0"#,
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        /// A stream of records made of the same members in varying orders (so the names the
        /// scanner learned sometimes match and sometimes not), with invalid UTF-8 and cut
        /// records among them: every result is exactly the plain scan's.
        #[test]
        fn a_stream_scanner_gives_what_the_plain_scan_gives(
            records in proptest::collection::vec(
                (proptest::collection::vec(0usize..MEMBERS.len(), 0..12), 0u8..6),
                1..30,
            ),
        ) {
            let mut scanner = RecordScanner::default();
            for (members, form) in records {
                let body: Vec<&str> = members.iter().map(|&k| MEMBERS[k]).collect();
                let mut record = format!("{{{}}}", body.join(",")).into_bytes();
                match form {
                    0 => record.insert(record.len() / 2, 0xff),
                    1 => record.truncate(record.len() * 2 / 3),
                    2 => record.extend_from_slice(b" \r"),
                    _ => {}
                }
                let mut scratch = Vec::new();
                let plain = scan_record(&record, &mut scratch);
                let shaped = scanner.scan(&record);
                proptest::prop_assert_eq!(shaped, plain, "{}", String::from_utf8_lossy(&record));
            }
        }
    }

    #[test]
    fn a_stream_scanner_learns_and_relearns_names() {
        let mut scanner = RecordScanner::default();
        let a = br#"{"hitIdHigh":1,"hitIdLow":2,"pageName":"x"}"#;
        let b = br#"{"hitIdLow":3,"hitIdHigh":4,"pageName":"y"}"#;
        for record in [&a[..], a, b, b, a] {
            let mut scratch = Vec::new();
            assert_eq!(scanner.scan(record), scan_record(record, &mut scratch));
        }
        assert_eq!(scanner.shape.keys.len(), 3);
        assert_eq!(scanner.shape.keys[0].len, r#""hitIdHigh":"#.len());
        let key = ShapeKey::new(br#""hitIdLow":"#, Field::Id(1)).unwrap();
        let mut window = [b'x'; 24];
        window[..11].copy_from_slice(br#""hitIdLow":"#);
        assert!(key.matches(&window));
        window[10] = b' ';
        assert!(!key.matches(&window), "the ':' is part of the name text");
        assert!(ShapeKey::new("\"é\":".as_bytes(), Field::Other).is_none());
        assert!(ShapeKey::new(&[b'a'; 25], Field::Other).is_none());
        // What a stream's scanner can hold at most.
        assert!(SHAPE_KEYS * std::mem::size_of::<ShapeKey>() < 10 << 10);
        let wide: Vec<String> = (0..200).map(|k| format!("\"m{k}\":{k}")).collect();
        let wide = format!("{{{}}}", wide.join(","));
        for _ in 0..2 {
            assert!(scanner.scan(wide.as_bytes()).is_ok());
        }
        assert_eq!(scanner.shape.keys.len(), SHAPE_KEYS);
    }

    #[test]
    fn out_is_appended() {
        let mut out = b"prefix".to_vec();
        let mut repaired = Vec::new();
        let s = scan_record(b"{\"hitIdLow\":5}", &mut repaired).unwrap();
        write_with_quoted_ids(s.text, &s.info, &mut out);
        assert_eq!(out, b"prefix{\"hitIdLow\":\"5\"}");
    }

    #[test]
    fn lone_surrogate_escapes_are_valid_json_text() {
        for rec in [
            r#"{"a":"\ud83d"}"#,
            r#"{"a":"cut \ud83d","hitIdLow":1}"#,
            r#"{"a":"\udc00 alone"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\ude00\ud83d"}"#,
            r#"{"a":["\uDBFF"],"b":{"\ud800":1}}"#,
        ] {
            let (out, _) = rw(rec).unwrap();
            assert_eq!(out.replace("\"1\"", "1"), rec, "delivered as is");
        }
        // Still four hex digits required.
        assert!(err(br#"{"a":"\ud83"}"#).contains("\\u must be followed by four hex digits"));
    }

    #[test]
    fn unusable_ids_are_kept_as_given_and_give_no_key() {
        let cases = [
            r#"-12"#,
            r#"1.5"#,
            r#"1e3"#,
            r#"0.0"#,
            r#"18446744073709551616"#,
            r#"99999999999999999999999"#,
            r#""12a""#,
            r#""""#,
            r#""-1""#,
            r#""007""#,
            r#""00""#,
            r#""\u0031""#,
            r#""99999999999999999999""#,
            r#""18446744073709551616""#,
            r#"true"#,
            r#"false"#,
            r#"null"#,
            r#"{"a":1}"#,
            r#"[1]"#,
        ];
        for v in cases {
            for (bad, field) in ID_FIELDS.iter().enumerate() {
                let rec = format!(
                    r#"{{"hitIdHigh":1,"hitIdLow":2,"visIdHigh":3,"visIdLow":4,"{field}":{v}}}"#
                );
                let (out, info) = rw(&rec).unwrap();
                assert_eq!(info.hit_key.is_none(), bad < 2, "{rec}");
                assert_eq!(info.vis_id.is_none(), (2..4).contains(&bad), "{rec}");
                // Only the other usable ids are quoted; the value itself is untouched.
                let want_quoted = (0..4).filter(|&k| k != bad).count();
                assert_eq!(info.bare_id_spans().len(), want_quoted, "{rec}");
                assert!(
                    out.ends_with(&format!(r#""{field}":{v}}}"#)),
                    "{rec} -> {out}"
                );
            }
        }
        // Canonical decimal strings are ids.
        let (out, info) = rw(r#"{"hitIdHigh":"0","hitIdLow":"18446744073709551615"}"#).unwrap();
        assert_eq!(
            out,
            r#"{"hitIdHigh":"0","hitIdLow":"18446744073709551615"}"#
        );
        assert_eq!(
            info.hit_key,
            Some(HitKey {
                high: 0,
                low: u64::MAX
            })
        );
        assert!(info.bare_id_spans().is_empty());
    }

    #[test]
    fn quoted_output_of_repaired_text() {
        // Spans refer to the repaired text, which is longer than the record.
        let rec = b"{\"s\":\"\xff\xfe\",\"hitIdHigh\":12,\"hitIdLow\":34}";
        let mut repaired = Vec::new();
        let s = scan_record(rec, &mut repaired).unwrap();
        let mut out = Vec::new();
        write_with_quoted_ids(s.text, &s.info, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"s\":\"\u{fffd}\u{fffd}\",\"hitIdHigh\":\"12\",\"hitIdLow\":\"34\"}"
        );
    }

    #[test]
    fn top_level_strings_are_decoded_with_surrogate_pairs() {
        let body = br#"{"x":{"error_description":"nested"},"error":"conflict","error_description":"too \"many\" \u00e9 \ud83d\ude00 \ud83d","n":[1,{"a":"}"}]}"#;
        assert_eq!(
            top_level_string(body, "error_description").as_deref(),
            Some("too \"many\" \u{e9} \u{1f600} \u{fffd}")
        );
        assert_eq!(top_level_string(body, "error").as_deref(), Some("conflict"));
        assert_eq!(top_level_string(body, "x"), None, "not a string");
        assert_eq!(
            top_level_string(b"{\"a\":\"1\",\"a\":\"2\"}", "a").as_deref(),
            Some("2")
        );
        assert_eq!(top_level_string(b"not json", "a"), None);
        assert_eq!(
            top_level_string(b"{\"a\":\"1\"", "a"),
            None,
            "unterminated object"
        );
        assert_eq!(top_level_string(b"{}", "a"), None);
    }
}
