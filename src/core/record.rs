//! One record: validate, pull out the key fields, rewrite ids as strings.
//!
//! This is the hot path of the whole product: every byte of the stream goes through
//! [`rewrite_record`] once. It is a hand-written single-pass JSON validator that
//! - fully validates the record as one JSON object (RFC 8259), so JavaScript's `JSON.parse`
//!   on the output cannot throw;
//! - reads the few fields the client needs (hit and visitor ids, times) on the way;
//! - writes the record out with the six top-level 64-bit id fields turned into JSON strings,
//!   because `JSON.parse` would round them to the nearest double (see `livestream-api.md`).
//!
//! Speed comes from: one `str::from_utf8` check up front (after which the scanner only looks
//! for ASCII structure), string bodies skipped eight bytes at a time (SWAR), and the output
//! written as a few bulk copies between the (at most six) edits.

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
    /// (hitIdHigh, hitIdLow); Some only when both are present (not null): the dedup key.
    pub hit_key: Option<HitKey>,
    /// (visIdHigh, visIdLow) when both are present.
    pub vis_id: Option<(u64, u64)>,
    /// Top-level `timeGMT` when it is a number (Unix seconds).
    pub time_gmt: Option<f64>,
    /// Top-level `receivedTimeGMT` when it is a number (Unix seconds).
    pub received_time_gmt: Option<f64>,
    /// The record had invalid UTF-8, written out with U+FFFD.
    pub replaced_invalid_utf8: bool,
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
    /// One of the six id fields holds something other than an unsigned 64-bit integer.
    BadId,
}

/// Why a record is malformed; Display is a specific message a user can act on, e.g.
/// "invalid JSON at byte 57: expected ',' or '}' after an object member" or
/// "hitIdLow is not an unsigned 64-bit integer: -12" or "not a JSON object: starts with 'n'".
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

/// Validates `record` as exactly one JSON object (RFC 8259; surrounding whitespace allowed)
/// and appends it to `out` as valid UTF-8 JSON text in which each of the six top-level id
/// fields that holds an unsigned integer is written as a JSON string of the same digits
/// (`"hitIdHigh":2948027281753079808` -> `"hitIdHigh":"2948027281753079808"`). Everything
/// else is copied byte for byte (unknown fields kept; nested objects untouched, even nested
/// keys named hitIdHigh); only the whitespace around the object is left out. Invalid UTF-8
/// is replaced by U+FFFD (and flagged). An id that is already a string of decimal digits
/// fitting u64 is kept and read; an id that is null is kept as null and counts as absent;
/// any other id value (negative, fraction, exponent, > u64::MAX, non-digit string,
/// object…) makes the record malformed.
/// On error, `out` may hold a partial write: the caller truncates it to its previous length.
pub fn rewrite_record(record: &[u8], out: &mut Vec<u8>) -> Result<RecordInfo, RecordError> {
    match std::str::from_utf8(record) {
        Ok(_) => Scanner::new(record).run(out, false),
        Err(_) => {
            let text = String::from_utf8_lossy(record);
            Scanner::new(text.as_bytes()).run(out, true)
        }
    }
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

#[inline]
fn classify(key: &[u8]) -> Field {
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

/// A scanned JSON number.
struct Number {
    start: usize,
    end: usize,
    negative: bool,
    /// No fraction and no exponent.
    integer: bool,
}

/// Marker that scanning stopped at an error; the details are in [`Scanner::fail`]. Keeping
/// the hot functions' error type zero-sized keeps their results in registers.
struct Stop;

type Scan<T> = Result<T, Stop>;

/// The first problem found, with byte offsets; turned into a message only on failure.
#[derive(Clone, Copy, Debug)]
enum Fail {
    /// "expected {what}, found {the byte at}".
    Expected(usize, &'static str),
    /// A fixed message at an offset.
    Plain(usize, &'static str),
    /// An unescaped control character in a string.
    Control(usize, u8),
    /// A backslash followed by something that is not an escape.
    BadEscape(usize),
    /// `\uXXXX` (at the offset) without a following low surrogate escape.
    HighSurrogate(usize, u32),
    /// `\uXXXX` low surrogate without a high one before it.
    LowSurrogate(usize, u32),
    /// The string that starts at the offset has no closing quote.
    Unterminated(usize),
    /// Nesting beyond [`MAX_DEPTH`] at the offset.
    TooDeep(usize),
    /// Id field number `k` holds the value in `start..end`.
    BadId(usize, usize, usize),
    /// The first non-space byte (at the offset) is not '{'.
    NotObject(usize),
    /// Nothing but whitespace.
    Empty,
}

/// The single-pass validator over one record's (valid UTF-8) bytes.
struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
    fail: Fail,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

impl<'a> Scanner<'a> {
    fn new(b: &'a [u8]) -> Self {
        Scanner {
            b,
            pos: 0,
            fail: Fail::Empty,
        }
    }

    /// The byte at `i`, or 0 past the end (0 is invalid everywhere in JSON text outside
    /// strings, so it acts as a sentinel; errors tell the end apart by position).
    #[inline(always)]
    fn at(&self, i: usize) -> u8 {
        match self.b.get(i) {
            Some(&c) => c,
            None => 0,
        }
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        loop {
            let c = self.at(self.pos);
            if c > b' ' || !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                return;
            }
            self.pos += 1;
        }
    }

    /// Records the failure and returns the marker.
    #[cold]
    #[inline(never)]
    fn stop(&mut self, fail: Fail) -> Stop {
        self.fail = fail;
        Stop
    }

    /// Validates, extracts and rewrites; on failure builds the message.
    fn run(mut self, out: &mut Vec<u8>, replaced: bool) -> Result<RecordInfo, RecordError> {
        match self.top(out, replaced) {
            Ok(info) => Ok(info),
            Err(Stop) => Err(self.error()),
        }
    }

    /// The record's own object: like [`Scanner::container`] for one level, plus reading
    /// and rewriting the top-level fields that matter.
    fn top(&mut self, out: &mut Vec<u8>, replaced: bool) -> Scan<RecordInfo> {
        let b = self.b;
        self.skip_ws();
        let start = self.pos;
        if self.at(start) != b'{' {
            return Err(self.stop(if start >= b.len() {
                Fail::Empty
            } else {
                Fail::NotObject(start)
            }));
        }
        self.pos += 1;
        out.reserve(b.len() - start + 2 * ID_FIELDS.len());
        let mut copied = start;
        let mut ids: [Option<u64>; 6] = [None; 6];
        let mut info = RecordInfo {
            replaced_invalid_utf8: replaced,
            ..RecordInfo::default()
        };

        self.skip_ws();
        if self.at(self.pos) == b'}' {
            self.pos += 1;
        } else {
            loop {
                if self.at(self.pos) != b'"' {
                    return Err(self.stop(Fail::Expected(self.pos, "a member name (a string)")));
                }
                let key_start = self.pos + 1;
                let (key_end, escaped) = self.string(key_start)?;
                let key = &b[key_start..key_end];
                self.skip_ws();
                if self.at(self.pos) != b':' {
                    return Err(self.stop(Fail::Expected(self.pos, "':' after a member name")));
                }
                self.pos += 1;
                self.skip_ws();
                let field = if escaped {
                    classify_escaped(key)
                } else {
                    classify(key)
                };
                match field {
                    Field::Other => self.value(1)?,
                    Field::Id(k) => {
                        let vstart = self.pos;
                        match self.at(vstart) {
                            b'0'..=b'9' => {
                                let n = self.number()?;
                                let v = if n.integer {
                                    parse_u64(&b[n.start..n.end])
                                } else {
                                    None
                                };
                                let Some(v) = v else {
                                    return Err(self.stop(Fail::BadId(k, n.start, n.end)));
                                };
                                out.extend_from_slice(&b[copied..n.start]);
                                out.push(b'"');
                                out.extend_from_slice(&b[n.start..n.end]);
                                out.push(b'"');
                                copied = n.end;
                                ids[k] = Some(v);
                            }
                            b'"' => {
                                let (end, escaped) = self.string(vstart + 1)?;
                                let digits = &b[vstart + 1..end];
                                let v = if escaped || !digits.iter().all(u8::is_ascii_digit) {
                                    None
                                } else {
                                    parse_u64(digits)
                                };
                                let Some(v) = v else {
                                    return Err(self.stop(Fail::BadId(k, vstart, end + 1)));
                                };
                                ids[k] = Some(v);
                            }
                            b'n' => {
                                self.value(1)?;
                                ids[k] = None;
                            }
                            _ => {
                                self.value(1)?;
                                return Err(self.stop(Fail::BadId(k, vstart, self.pos)));
                            }
                        }
                    }
                    Field::TimeGmt | Field::ReceivedTimeGmt => {
                        let c = self.at(self.pos);
                        let v = if c == b'-' || c.is_ascii_digit() {
                            let n = self.number()?;
                            Some(number_to_f64(&b[n.start..n.end], &n))
                        } else {
                            self.value(1)?;
                            None
                        };
                        if field == Field::TimeGmt {
                            info.time_gmt = v;
                        } else {
                            info.received_time_gmt = v;
                        }
                    }
                }
                self.skip_ws();
                match self.at(self.pos) {
                    b',' => {
                        self.pos += 1;
                        self.skip_ws();
                    }
                    b'}' => {
                        self.pos += 1;
                        break;
                    }
                    _ => {
                        return Err(self.stop(Fail::Expected(
                            self.pos,
                            "',' or '}' after an object member",
                        )))
                    }
                }
            }
        }
        let end = self.pos;
        self.skip_ws();
        if self.pos < b.len() {
            return Err(self.stop(Fail::Plain(
                self.pos,
                "unexpected text after the end of the JSON object (one record must be one object)",
            )));
        }
        out.extend_from_slice(&b[copied..end]);
        if let (Some(high), Some(low)) = (ids[0], ids[1]) {
            info.hit_key = Some(HitKey { high, low });
        }
        if let (Some(h), Some(l)) = (ids[2], ids[3]) {
            info.vis_id = Some((h, l));
        }
        Ok(info)
    }

    /// Scans a string body starting at `start` (just after the opening quote). Returns the
    /// index of the closing quote and whether the string had escapes; `pos` moves past it.
    #[inline]
    fn string(&mut self, start: usize) -> Scan<(usize, bool)> {
        let b = self.b;
        let mut i = start;
        let mut escaped = false;
        loop {
            // SWAR: find the next '"', '\\' or control character, 8 bytes at a time.
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
                    i += (m.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            while i < b.len() && !matches!(b[i], b'"' | b'\\' | 0..=0x1f) {
                i += 1;
            }
            match self.at(i) {
                b'"' => {
                    self.pos = i + 1;
                    return Ok((i, escaped));
                }
                b'\\' => {
                    escaped = true;
                    i = self.escape(i)?;
                }
                _ if i >= b.len() => return Err(self.stop(Fail::Unterminated(start - 1))),
                c => return Err(self.stop(Fail::Control(i, c))),
            }
        }
    }

    /// Validates the escape at `i` (a backslash); returns the index after it.
    fn escape(&mut self, i: usize) -> Scan<usize> {
        match self.at(i + 1) {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(i + 2),
            b'u' => {
                let Some(cp) = self.b.get(i + 2..).and_then(hex4) else {
                    return Err(
                        self.stop(Fail::Plain(i, "\\u must be followed by four hex digits"))
                    );
                };
                match cp {
                    0xd800..=0xdbff => {
                        let low = if self.at(i + 6) == b'\\' && self.at(i + 7) == b'u' {
                            self.b.get(i + 8..).and_then(hex4)
                        } else {
                            None
                        };
                        match low {
                            Some(0xdc00..=0xdfff) => Ok(i + 12),
                            _ => Err(self.stop(Fail::HighSurrogate(i, cp))),
                        }
                    }
                    0xdc00..=0xdfff => Err(self.stop(Fail::LowSurrogate(i, cp))),
                    _ => Ok(i + 6),
                }
            }
            _ if i + 1 >= self.b.len() => Err(self.stop(Fail::Unterminated(i))),
            _ => Err(self.stop(Fail::BadEscape(i))),
        }
    }

    /// Scans a number at `pos` (a '-' or digit) per the JSON grammar.
    #[inline]
    fn number(&mut self) -> Scan<Number> {
        let start = self.pos;
        let mut i = start;
        let negative = self.at(i) == b'-';
        if negative {
            i += 1;
        }
        match self.at(i) {
            b'0' => {
                i += 1;
                if self.at(i).is_ascii_digit() {
                    return Err(self.stop(Fail::Plain(
                        start,
                        "leading zeros are not allowed in numbers",
                    )));
                }
            }
            b'1'..=b'9' => {
                i += 1;
                while self.at(i).is_ascii_digit() {
                    i += 1;
                }
            }
            _ => {
                return Err(self.stop(Fail::Expected(
                    i,
                    "a digit after '-' (Infinity and NaN are not JSON)",
                )))
            }
        }
        let mut integer = true;
        if self.at(i) == b'.' {
            i += 1;
            if !self.at(i).is_ascii_digit() {
                return Err(self.stop(Fail::Expected(i, "a digit after the decimal point")));
            }
            while self.at(i).is_ascii_digit() {
                i += 1;
            }
            integer = false;
        }
        if matches!(self.at(i), b'e' | b'E') {
            i += 1;
            if matches!(self.at(i), b'+' | b'-') {
                i += 1;
            }
            if !self.at(i).is_ascii_digit() {
                return Err(self.stop(Fail::Expected(i, "a digit in the exponent")));
            }
            while self.at(i).is_ascii_digit() {
                i += 1;
            }
            integer = false;
        }
        self.pos = i;
        Ok(Number {
            start,
            end: i,
            negative,
            integer,
        })
    }

    /// Checks the literal `word` at `pos`.
    #[inline]
    fn literal(&mut self, word: &'static [u8], message: &'static str) -> Scan<()> {
        if self.b.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.stop(Fail::Plain(self.pos, message)))
        }
    }

    /// Validates a scalar at `pos`; returns true (without consuming) when a container
    /// starts there instead.
    #[inline]
    fn scalar_or_open(&mut self) -> Scan<bool> {
        match self.at(self.pos) {
            b'"' => {
                self.string(self.pos + 1)?;
            }
            b'{' | b'[' => return Ok(true),
            b'-' | b'0'..=b'9' => {
                self.number()?;
            }
            b't' => self.literal(b"true", "invalid literal (expected 'true')")?,
            b'f' => self.literal(b"false", "invalid literal (expected 'false')")?,
            b'n' => self.literal(b"null", "invalid literal (expected 'null')")?,
            _ => return Err(self.stop(Fail::Expected(self.pos, "a value"))),
        }
        Ok(false)
    }

    /// Validates any value at `pos`, nested inside `depth` levels.
    #[inline]
    fn value(&mut self, depth: usize) -> Scan<()> {
        if self.scalar_or_open()? {
            self.container(depth)
        } else {
            Ok(())
        }
    }

    /// Expects a member name and its ':' (with whitespace) inside a nested object.
    #[inline]
    fn member_name(&mut self) -> Scan<()> {
        if self.at(self.pos) != b'"' {
            return Err(self.stop(Fail::Expected(self.pos, "a member name (a string)")));
        }
        self.string(self.pos + 1)?;
        self.skip_ws();
        if self.at(self.pos) != b':' {
            return Err(self.stop(Fail::Expected(self.pos, "':' after a member name")));
        }
        self.pos += 1;
        self.skip_ws();
        Ok(())
    }

    /// Validates the object or array at `pos`, which sits inside `base` levels. Iterative,
    /// with the open containers kept as a bit stack (1 = array), so deep input cannot
    /// overflow the call stack.
    fn container(&mut self, base: usize) -> Scan<()> {
        let mut stack: u128 = 0;
        let mut depth: usize = 0;
        'open: loop {
            let is_arr = self.at(self.pos) == b'[';
            if base + depth + 1 > MAX_DEPTH {
                return Err(self.stop(Fail::TooDeep(self.pos)));
            }
            if is_arr {
                stack |= 1 << depth;
            } else {
                stack &= !(1 << depth);
            }
            depth += 1;
            self.pos += 1;
            self.skip_ws();
            if self.at(self.pos) == if is_arr { b']' } else { b'}' } {
                self.pos += 1;
                depth -= 1;
            } else {
                if !is_arr {
                    self.member_name()?;
                }
                if self.scalar_or_open()? {
                    continue 'open;
                }
            }
            // A value just ended inside the container at `depth`.
            while depth > 0 {
                self.skip_ws();
                let is_arr = (stack >> (depth - 1)) & 1 == 1;
                match self.at(self.pos) {
                    b',' => {
                        self.pos += 1;
                        self.skip_ws();
                        if !is_arr {
                            self.member_name()?;
                        }
                        if self.scalar_or_open()? {
                            continue 'open;
                        }
                    }
                    b']' if is_arr => {
                        self.pos += 1;
                        depth -= 1;
                    }
                    b'}' if !is_arr => {
                        self.pos += 1;
                        depth -= 1;
                    }
                    _ => {
                        return Err(self.stop(Fail::Expected(
                            self.pos,
                            if is_arr {
                                "',' or ']' after an array element"
                            } else {
                                "',' or '}' after an object member"
                            },
                        )))
                    }
                }
            }
            return Ok(());
        }
    }

    // ----- messages (cold) -----

    /// Turns the recorded failure into the user-facing error.
    #[cold]
    fn error(&self) -> RecordError {
        let syntax = |at: usize, message: String| RecordError {
            kind: RecordErrorKind::Syntax,
            offset: Some(at),
            message,
        };
        match self.fail {
            Fail::Expected(at, what) => {
                let mut m = format!("expected {what}, found {}", self.found(at));
                if what == "a value" && matches!(self.at(at), b'N' | b'I') {
                    m.push_str(" (NaN and Infinity are not JSON)");
                }
                syntax(at, m)
            }
            Fail::Plain(at, what) => syntax(at, what.to_string()),
            Fail::Control(at, c) => syntax(
                at,
                format!("control character U+{c:04X} in a string must be escaped (\\n, \\t, \\u00XX)"),
            ),
            Fail::BadEscape(at) => syntax(
                at,
                format!(
                    "invalid escape '\\{}' (allowed: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)",
                    self.found_char(at + 1)
                ),
            ),
            Fail::HighSurrogate(at, cp) => syntax(
                at,
                format!("high surrogate \\u{cp:04X} must be followed by a low surrogate escape (\\uDC00 to \\uDFFF)"),
            ),
            Fail::LowSurrogate(at, cp) => syntax(
                at,
                format!("low surrogate \\u{cp:04X} without a high surrogate before it"),
            ),
            Fail::Unterminated(at) => syntax(at, "unterminated string".into()),
            Fail::TooDeep(at) => syntax(at, format!("nesting deeper than {MAX_DEPTH} levels")),
            Fail::BadId(k, start, end) => {
                let raw = String::from_utf8_lossy(&self.b[start..end.min(self.b.len())]);
                let shown: String = if raw.chars().count() > 40 {
                    raw.chars().take(40).chain("…".chars()).collect()
                } else {
                    raw.into_owned()
                };
                RecordError {
                    kind: RecordErrorKind::BadId,
                    offset: None,
                    message: format!("{} is not an unsigned 64-bit integer: {shown}", ID_FIELDS[k]),
                }
            }
            Fail::NotObject(at) => RecordError {
                kind: RecordErrorKind::NotAnObject,
                offset: None,
                message: format!("not a JSON object: starts with {}", self.found(at)),
            },
            Fail::Empty => RecordError {
                kind: RecordErrorKind::Empty,
                offset: None,
                message: "empty record".into(),
            },
        }
    }

    /// The character at `i` for a message: `'x'`, `U+000A`, or "the end of the record".
    fn found(&self, i: usize) -> String {
        if i >= self.b.len() {
            return "the end of the record".into();
        }
        let c = self.found_char(i);
        if c.is_control() {
            format!("U+{:04X}", c as u32)
        } else {
            format!("'{c}'")
        }
    }

    fn found_char(&self, i: usize) -> char {
        let end = (i + 4).min(self.b.len());
        String::from_utf8_lossy(&self.b[i.min(end)..end])
            .chars()
            .next()
            .unwrap_or('\u{fffd}')
    }
}

/// Parses ASCII digits as u64; None when empty or above u64::MAX.
#[inline]
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    if digits.len() < 20 {
        // At most 19 digits cannot overflow.
        return Some(digits.iter().fold(0u64, |v, &d| v * 10 + (d - b'0') as u64));
    }
    digits.iter().try_fold(0u64, |v, &d| {
        v.checked_mul(10)?.checked_add((d - b'0') as u64)
    })
}

/// The value of a scanned JSON number: integers up to 15 digits exactly and fast,
/// everything else through the standard (correctly rounded) parser.
#[inline]
fn number_to_f64(text: &[u8], n: &Number) -> f64 {
    let digits = if n.negative { &text[1..] } else { text };
    if n.integer && digits.len() <= 15 {
        let v = digits.iter().fold(0u64, |v, &d| v * 10 + (d - b'0') as u64) as f64;
        return if n.negative { -v } else { v };
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(s: &str) -> Result<(String, RecordInfo), RecordError> {
        let mut out = Vec::new();
        let info = rewrite_record(s.as_bytes(), &mut out)?;
        Ok((String::from_utf8(out).unwrap(), info))
    }

    fn err(s: &[u8]) -> String {
        let mut out = Vec::new();
        match rewrite_record(s, &mut out) {
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
            }
        );
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
        let (out, info) = rw(r#"{"hitIdHigh":1,"hitIdLow":2,"hitIdHigh":3}"#).unwrap();
        assert_eq!(out, r#"{"hitIdHigh":"1","hitIdLow":"2","hitIdHigh":"3"}"#);
        assert_eq!(info.hit_key, Some(HitKey { high: 3, low: 2 }));
    }

    #[test]
    fn times() {
        let (_, i) = rw(r#"{"timeGMT":-5,"receivedTimeGMT":1.5e3}"#).unwrap();
        assert_eq!(i.time_gmt, Some(-5.0));
        assert_eq!(i.received_time_gmt, Some(1500.0));
        let (_, i) = rw(r#"{"timeGMT":"1372782179","receivedTimeGMT":12345678901234567}"#).unwrap();
        assert_eq!(i.time_gmt, None);
        assert_eq!(i.received_time_gmt, Some(12345678901234567.0));
        let (_, i) = rw(r#"{"x":{"timeGMT":5}}"#).unwrap();
        assert_eq!(i.time_gmt, None);
    }

    #[test]
    fn invalid_utf8_replaced_and_flagged() {
        let mut out = Vec::new();
        let info = rewrite_record(b"{\"a\":\"x\xffy\xc3\",\"hitIdLow\":9}", &mut out).unwrap();
        assert!(info.replaced_invalid_utf8);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"a\":\"x\u{fffd}y\u{fffd}\",\"hitIdLow\":\"9\"}"
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
            (b"{\"a\":\"\\ud800\"}", "high surrogate \\uD800 must be followed by a low surrogate"),
            (b"{\"a\":\"\\ud800\\u0041\"}", "must be followed by a low surrogate"),
            (b"{\"a\":\"\\udc00\"}", "low surrogate \\uDC00 without a high surrogate"),
            (b"{\"a\":\"x\ty\"}", "invalid JSON at byte 7: control character U+0009 in a string must be escaped"),
            (b"{\"a\":\"x\x00\"}", "control character U+0000"),
            (b"{\"a\":\"abc", "invalid JSON at byte 5: unterminated string"),
            (b"{\"a\":\"abc\\", "unterminated string"),
            (b"{\"a\":[1,2}", "expected ',' or ']' after an array element, found '}'"),
            (b"{\"a\":{\"b\":1]}", "expected ',' or '}' after an object member, found ']'"),
            (b"{\"a\":[1,]}", "expected a value, found ']'"),
            (b"{\"a\":[", "expected a value, found the end of the record"),
            (b"{\"hitIdLow\":-12}", "hitIdLow is not an unsigned 64-bit integer: -12"),
            (b"{\"hitIdHigh\":1.5}", "hitIdHigh is not an unsigned 64-bit integer: 1.5"),
            (b"{\"visIdHigh\":1e3}", "visIdHigh is not an unsigned 64-bit integer: 1e3"),
            (b"{\"visIdLow\":18446744073709551616}", "visIdLow is not an unsigned 64-bit integer: 18446744073709551616"),
            (b"{\"mcVisIdHigh\":\"12a\"}", "mcVisIdHigh is not an unsigned 64-bit integer: \"12a\""),
            (b"{\"mcVisIdLow\":\"\"}", "mcVisIdLow is not an unsigned 64-bit integer: \"\""),
            (b"{\"hitIdLow\":\"-1\"}", "hitIdLow is not an unsigned 64-bit integer: \"-1\""),
            (b"{\"hitIdLow\":\"99999999999999999999\"}", "hitIdLow is not an unsigned 64-bit integer"),
            (b"{\"hitIdLow\":{\"a\":1}}", "hitIdLow is not an unsigned 64-bit integer: {\"a\":1}"),
            (b"{\"hitIdLow\":[1]}", "hitIdLow is not an unsigned 64-bit integer: [1]"),
            (b"{\"hitIdLow\":true}", "hitIdLow is not an unsigned 64-bit integer: true"),
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
        let mut out = Vec::new();
        let kind =
            |s: &str, out: &mut Vec<u8>| rewrite_record(s.as_bytes(), out).unwrap_err().kind();
        assert_eq!(kind("", &mut out), RecordErrorKind::Empty);
        assert_eq!(kind("1", &mut out), RecordErrorKind::NotAnObject);
        assert_eq!(kind("{", &mut out), RecordErrorKind::Syntax);
        assert_eq!(kind("{\"hitIdLow\":-1}", &mut out), RecordErrorKind::BadId);
        let e = rewrite_record(b"{\"a\":x}", &mut out).unwrap_err();
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
    fn out_is_appended() {
        let mut out = b"prefix".to_vec();
        rewrite_record(b"{\"hitIdLow\":5}", &mut out).unwrap();
        assert_eq!(out, b"prefix{\"hitIdLow\":\"5\"}");
    }
}
