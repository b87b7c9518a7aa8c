//! The record scanner as it was before its speed work (`src/core/record.rs` at commit
//! 43319a7), frozen: an oracle for the record fuzz target, which checks that today's
//! scanner gives exactly the same answer for every input: the same accept/reject decision,
//! the same error kind, offset and message, the same text and [`RecordInfo`] fields (and
//! the same [`top_level_string`]). serde_json checks the JSON meaning; this checks that an
//! optimisation changed nothing a user can see, messages and byte offsets included.
//!
//! Only `write_with_quoted_ids` (not part of the scan) and the unit tests were left out.
//! Do not edit it to follow a deliberate change of behaviour in the scanner: drop the
//! comparison for that part instead, or freeze a new copy.

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
    // Most records are pure ASCII: one word-wise check settles their validity; the full
    // UTF-8 check runs only for the others.
    let ascii = is_ascii(record);
    let (b, replaced): (&'a [u8], bool) = match ascii || std::str::from_utf8(record).is_ok() {
        true => (record, false),
        false => {
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
    match scan_object(b, replaced) {
        Ok((start, end, mut info)) => Ok(Scanned {
            text: &b[start..end],
            info: {
                info.ascii = ascii;
                info
            },
        }),
        Err(f) => Err(error_for(b, f)),
    }
}

/// The string value of the top-level member `key` of the JSON object `text` (the last one, as
/// `JSON.parse` would keep), decoded: escapes resolved, surrogate pairs joined, a lone
/// surrogate as U+FFFD. None when `text` is not a JSON object or the member is not a string.
/// The scanner of records reads it, so error bodies (a 409's `error_description`) and records
/// share one JSON reader.
pub fn top_level_string(text: &[u8], key: &str) -> Option<String> {
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
        let (name_end, _) = string(text, i + 1).ok()?;
        let name = decode_string(&text[i + 1..name_end]);
        let v = member_name(text, i).ok()?;
        let after = match scalar_or_open(text, v).ok()? {
            j if j == v => container(text, v, 1).ok()?,
            j => j,
        };
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

/// Which field a top-level key names. Most keys are ruled out by their length and first
/// byte before any comparison.
#[inline(always)]
fn classify(key: &[u8]) -> Field {
    let (Some(&first), len) = (key.first(), key.len()) else {
        return Field::Other;
    };
    if !(7..=15).contains(&len) || !matches!(first, b'h' | b'v' | b'm' | b't' | b'r') {
        return Field::Other;
    }
    match key {
        b"hitIdHigh" => Field::Id(0),
        b"hitIdLow" => Field::Id(1),
        b"visIdHigh" => Field::Id(2),
        b"visIdLow" => Field::Id(3),
        b"mcVisIdHigh" => Field::Id(4),
        b"mcVisIdLow" => Field::Id(5),
        b"timeGMT" => Field::TimeGmt,
        b"receivedTimeGMT" => Field::ReceivedTimeGmt,
        _ => Field::Other,
    }
}

/// Classifies a key written with escapes (`"hitId\u0048igh"` is `hitIdHigh` to JSON.parse).
/// Only short all-ASCII names can match; anything else is [`Field::Other`].
fn classify_escaped(raw: &[u8]) -> Field {
    let mut buf = [0u8; 16];
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
        if n == buf.len() {
            return Field::Other;
        }
        buf[n] = c;
        n += 1;
    }
    classify(&buf[..n])
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
/// the closing quote and whether the string had escapes. The common case (no escape) is
/// inlined; escapes and errors go to [`string_slow`].
#[inline(always)]
fn string(b: &[u8], start: usize) -> Scan<(usize, bool)> {
    let i = find_special(b, start);
    if at(b, i) == b'"' {
        Ok((i, false))
    } else {
        string_slow(b, start, i)
    }
}

/// The rest of a string from `i`: a backslash, a control character or the end.
#[inline(never)]
fn string_slow(b: &[u8], start: usize, mut i: usize) -> Scan<(usize, bool)> {
    loop {
        match at(b, i) {
            b'"' => return Ok((i, true)),
            b'\\' => i = find_special(b, escape(b, i)?),
            _ if i >= b.len() => return Err(Fail::Unterminated(start - 1)),
            _ => return Err(Fail::Control(i)),
        }
    }
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
                return Err(Fail::Plain(
                    start,
                    "leading zeros are not allowed in numbers",
                ));
            }
        }
        b'1'..=b'9' => i = digits(b, i + 1),
        _ => {
            return Err(Fail::Expected(
                i,
                "a digit after '-' (Infinity and NaN are not JSON)",
            ))
        }
    }
    match at(b, i) {
        b'.' | b'e' | b'E' => number_tail(b, i).map(|end| (end, false)),
        _ => Ok((i, true)),
    }
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
fn scalar_or_open(b: &[u8], i: usize) -> Scan<usize> {
    match at(b, i) {
        b'"' => Ok(string(b, i + 1)?.0 + 1),
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

/// Expects a member name and its ':' (with whitespace around) at `i`; returns the index
/// of the value.
#[inline(always)]
fn member_name(b: &[u8], i: usize) -> Scan<usize> {
    if at(b, i) != b'"' {
        return Err(Fail::Expected(i, "a member name (a string)"));
    }
    let (end, _) = string(b, i + 1)?;
    let i = skip_ws(b, end + 1);
    if at(b, i) != b':' {
        return Err(Fail::Expected(i, "':' after a member name"));
    }
    Ok(skip_ws(b, i + 1))
}

/// Validates the object or array at `i`, which sits inside `base` levels; returns the
/// index after it. Iterative, with the open containers kept as a bit stack (1 = array),
/// so deep input cannot overflow the call stack.
fn container(b: &[u8], mut i: usize, base: usize) -> Scan<usize> {
    let mut stack: u128 = 0;
    let mut depth: usize = 0;
    'open: loop {
        // `b[i]` is '{' or '['.
        let is_arr = at(b, i) == b'[';
        if base + depth + 1 > MAX_DEPTH {
            return Err(Fail::TooDeep(i));
        }
        if is_arr {
            stack |= 1 << depth;
        } else {
            stack &= !(1 << depth);
        }
        depth += 1;
        i = skip_ws(b, i + 1);
        if at(b, i) == if is_arr { b']' } else { b'}' } {
            i += 1;
            depth -= 1;
        } else {
            if !is_arr {
                i = member_name(b, i)?;
            }
            let j = scalar_or_open(b, i)?;
            if j == i {
                continue 'open;
            }
            i = j;
        }
        // A value just ended inside the container at `depth`.
        while depth > 0 {
            i = skip_ws(b, i);
            let is_arr = (stack >> (depth - 1)) & 1 == 1;
            match at(b, i) {
                b',' => {
                    i = skip_ws(b, i + 1);
                    if !is_arr {
                        i = member_name(b, i)?;
                    }
                    let j = scalar_or_open(b, i)?;
                    if j == i {
                        continue 'open;
                    }
                    i = j;
                }
                b']' if is_arr => {
                    i += 1;
                    depth -= 1;
                }
                b'}' if !is_arr => {
                    i += 1;
                    depth -= 1;
                }
                _ => {
                    return Err(Fail::Expected(
                        i,
                        if is_arr {
                            "',' or ']' after an array element"
                        } else {
                            "',' or '}' after an object member"
                        },
                    ))
                }
            }
        }
        return Ok(i);
    }
}

/// The record's own object: like [`container`] for one level, plus reading the top-level
/// fields that matter. Returns the object's start and end (whitespace trimmed) and the info.
fn scan_object(b: &[u8], replaced: bool) -> Scan<(usize, usize, RecordInfo)> {
    let start = skip_ws(b, 0);
    if at(b, start) != b'{' {
        return Err(if start >= b.len() {
            Fail::Empty
        } else {
            Fail::NotObject(start)
        });
    }
    // Per id field, the value of its last occurrence when usable, and the span (relative to
    // `start`) of that last occurrence when it is a bare number.
    let mut ids: [Option<u64>; 6] = [None; 6];
    let mut spans: [Option<(u32, u32)>; 6] = [None; 6];
    let mut info = RecordInfo {
        replaced_invalid_utf8: replaced,
        ..RecordInfo::default()
    };
    let mut i = skip_ws(b, start + 1);
    if at(b, i) == b'}' {
        i += 1;
    } else {
        loop {
            if at(b, i) != b'"' {
                return Err(Fail::Expected(i, "a member name (a string)"));
            }
            let (key_end, escaped) = string(b, i + 1)?;
            let key = &b[i + 1..key_end];
            i = skip_ws(b, key_end + 1);
            if at(b, i) != b':' {
                return Err(Fail::Expected(i, "':' after a member name"));
            }
            i = skip_ws(b, i + 1);
            let field = if escaped {
                classify_escaped(key)
            } else {
                classify(key)
            };
            let c = at(b, i);
            match field {
                Field::Id(k) if c.is_ascii_digit() => {
                    let (end, integer) = number(b, i)?;
                    // A fraction, an exponent or more than u64::MAX: kept as given, no id.
                    let v = if integer { parse_u64(&b[i..end]) } else { None };
                    ids[k] = v;
                    spans[k] = v.map(|_| ((i - start) as u32, (end - start) as u32));
                    i = end;
                }
                Field::Id(k) if c == b'"' => {
                    let (end, escaped) = string(b, i + 1)?;
                    // Only a canonical decimal string is an id (so pre-quoted streams
                    // de-duplicate); "007", "\u0031", "" or "x" are kept as given, no id.
                    let digits = &b[i + 1..end];
                    ids[k] = if escaped || (digits.len() > 1 && digits[0] == b'0') {
                        None
                    } else if digits.iter().all(u8::is_ascii_digit) {
                        parse_u64(digits)
                    } else {
                        None
                    };
                    spans[k] = None;
                    i = end + 1;
                }
                Field::TimeGmt | Field::ReceivedTimeGmt if c == b'-' || c.is_ascii_digit() => {
                    let (end, integer) = number(b, i)?;
                    let v = Some(number_to_f64(&b[i..end], integer));
                    if field == Field::TimeGmt {
                        info.time_gmt = v;
                    } else {
                        info.received_time_gmt = v;
                    }
                    i = end;
                }
                _ => {
                    // Any other value: one call site for the generic validator.
                    let j = scalar_or_open(b, i)?;
                    i = if j == i { container(b, i, 1)? } else { j };
                    match field {
                        Field::Other => {}
                        // null (absent), negative, bool, object, array: no id.
                        Field::Id(k) => {
                            ids[k] = None;
                            spans[k] = None;
                        }
                        Field::TimeGmt => info.time_gmt = None,
                        Field::ReceivedTimeGmt => info.received_time_gmt = None,
                    }
                }
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

/// True when every byte of `b` is ASCII. Sixteen bytes per step as two u64 words (wasm32's
/// `usize` is 32 bits, so the standard library's word-wise check reads half as much per step).
#[inline]
fn is_ascii(b: &[u8]) -> bool {
    let mut pairs = b.chunks_exact(16);
    let mut high = 0u64;
    for p in &mut pairs {
        let (a, c) = p.split_at(8);
        high |= u64::from_le_bytes(a.try_into().unwrap_or([0; 8]))
            | u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
    }
    for &c in pairs.remainder() {
        high |= c as u64;
    }
    high & HI == 0
}

/// Index of the first '"', '\\' or control character at or after `i` (or the length).
/// SWAR, 8 bytes at a time: 64-bit integer ops are native in wasm32 too.
#[inline(always)]
fn find_special(b: &[u8], mut i: usize) -> usize {
    while i + 8 <= b.len() {
        let w = u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let q = w ^ (LO * b'"' as u64);
        let s = w ^ (LO * b'\\' as u64);
        let m = ((q.wrapping_sub(LO) & !q)
            | (s.wrapping_sub(LO) & !s)
            | (w.wrapping_sub(LO * 0x20) & !w))
            & HI;
        if m != 0 {
            // The lowest flagged byte is a true hit (borrows only run upwards).
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !matches!(b[i], b'"' | b'\\' | 0..=0x1f) {
        i += 1;
    }
    i
}

/// Parses ASCII digits as u64; None when empty or above u64::MAX. Nineteen digits cannot
/// overflow, so only a twentieth is checked.
#[inline]
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let (head, last) = digits.split_at(digits.len().min(19));
    let v = head.iter().fold(0u64, |v, &d| v * 10 + (d - b'0') as u64);
    match last.first() {
        None => Some(v),
        Some(&d) => v.checked_mul(10)?.checked_add((d - b'0') as u64),
    }
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
