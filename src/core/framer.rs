//! Bytes of one response body in, complete records out.
//!
//! The Live Stream body is a sequence of JSON records separated by CRLF (LF alone is accepted
//! too), always gzip-compressed on the wire. A browser's `fetch` usually inflates the body
//! before script sees it, but Node's fetch with a custom dispatcher, a relay or a test may
//! hand over the raw gzip bytes; so the framer sniffs the first two bytes (`1f 8b`) and
//! inflates in the core when needed.
//!
//! Design points:
//! - Chunks may have any size and cut anywhere (inside a CRLF, inside a UTF-8 sequence,
//!   inside the gzip header); a record comes out whole and exactly once.
//! - Fast path: when nothing is buffered, the records of a chunk are handed out as slices
//!   of the chunk itself, with no copy. Only the tail of a chunk (a record cut by the chunk
//!   boundary) is buffered.
//! - Memory is bounded: the record buffer never holds more than `max_record_bytes + 1`
//!   bytes (the `+ 1` is a CR that may turn out to belong to a CRLF terminator), and its
//!   *capacity* never exceeds that either (every growth is explicit and clamped, whatever
//!   the chunking); a longer record is skipped up to its LF and reported with its full
//!   length. After a record that needed more than [`KEEP_CAPACITY`] bytes of buffer, or an
//!   oversized one, the buffer is freed, so one huge record does not pin its memory. Gzip output is
//!   produced in blocks of [`INFLATE_BLOCK`] bytes, so a gzip bomb costs time, not memory.

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

/// Size of one block of inflated output; the inflater never produces more at once, which
/// bounds memory whatever the compression ratio of the body.
pub const INFLATE_BLOCK: usize = 32 * 1024;

/// Buffer capacity kept between records: enough for ordinary records cut by a chunk
/// boundary (about 1 KB each) without reallocating; anything larger is freed once the
/// record that needed it is done.
pub const KEEP_CAPACITY: usize = 64 * 1024;

/// Receives what the [`Framer`] finds in a body.
pub trait FrameSink {
    /// One complete, non-empty record, without its terminator (CRLF or LF), decoded
    /// (inflated if the body was gzip). Lines that are empty or only spaces/tabs/CR are not records.
    fn record(&mut self, record: &[u8]);
    /// A record longer than the cap was skipped up to its terminator; `bytes` is its length.
    fn oversized(&mut self, bytes: u64);
    /// The body looked like gzip (starts 1f 8b) but cannot be inflated; the rest of this
    /// body is ignored until `reset`. `message` says what was wrong (header, data, CRC).
    fn gzip_error(&mut self, message: &str);
}

/// Splits one response body into records: CRLF/LF framing, empty-record skipping, the size
/// cap, and transparent gzip inflation. Sans-IO: it only reacts to [`Framer::push`].
pub struct Framer {
    /// The line splitter that works on decoded bytes.
    lines: LineSplitter,
    /// What the body turned out to be so far.
    mode: Mode,
    /// Gzip decoder; allocated on the first gzip body and kept across resets so a
    /// reconnect does not allocate the ~40 KiB of inflate state again.
    gunzip: Option<Box<Gunzip>>,
}

/// What kind of body is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Nothing seen yet.
    Start,
    /// Only the byte `1f` seen: gzip if the next byte is `8b`.
    SniffedOne,
    /// Plain (identity-encoded) records.
    Plain,
    /// Gzip: bytes go through [`Gunzip`].
    Gzip,
    /// Gzip that could not be inflated: ignore the rest of the body.
    Failed,
}

impl Framer {
    /// `max_record_bytes`: cap on one record's decoded bytes without its line terminator.
    pub fn new(max_record_bytes: usize) -> Self {
        Framer {
            lines: LineSplitter::new(max_record_bytes),
            mode: Mode::Start,
            gunzip: None,
        }
    }

    /// Forget everything of the previous body (partial record, gzip state): a new connection.
    pub fn reset(&mut self) {
        self.lines.clear();
        self.mode = Mode::Start;
        if let Some(g) = self.gunzip.as_mut() {
            g.reset();
        }
    }

    /// Feed one chunk of the body, of any size (1 byte, or several MB); calls the sink.
    pub fn push<S: FrameSink>(&mut self, chunk: &[u8], sink: &mut S) {
        if chunk.is_empty() {
            return;
        }
        match self.mode {
            Mode::Plain => self.lines.feed(chunk, sink),
            Mode::Gzip => self.push_gzip(chunk, sink),
            Mode::Failed => {}
            Mode::Start => {
                if chunk[0] != 0x1f {
                    self.mode = Mode::Plain;
                    self.lines.feed(chunk, sink);
                } else if chunk.len() == 1 {
                    self.mode = Mode::SniffedOne;
                } else if chunk[1] == 0x8b {
                    self.start_gzip();
                    self.push_gzip(chunk, sink);
                } else {
                    self.mode = Mode::Plain;
                    self.lines.feed(chunk, sink);
                }
            }
            Mode::SniffedOne => {
                if chunk[0] == 0x8b {
                    self.start_gzip();
                    self.push_gzip(&[0x1f], sink);
                    self.push_gzip(chunk, sink);
                } else {
                    self.mode = Mode::Plain;
                    self.lines.feed(&[0x1f], sink);
                    self.lines.feed(chunk, sink);
                }
            }
        }
    }

    /// The body ended: the incomplete record left over (if any) is discarded, never
    /// delivered; returns how many bytes it had (0 when the body ended on a record boundary,
    /// or when the leftover is blank: only spaces, tabs and CRs).
    /// An oversized record still being skipped counts too. A gzip body cut mid-stream is
    /// not reported to the sink: the caller reports truncation (ask
    /// [`Framer::gzip_member_incomplete`] *before* calling this to tell a gzip body cut
    /// on a record boundary). Afterwards the framer is as after [`Framer::reset`].
    pub fn finish(&mut self) -> u64 {
        let left = match self.mode {
            // A lone `1f` byte is an incomplete (plain) record.
            Mode::SniffedOne => 1,
            Mode::Failed => 0,
            _ => self.lines.pending_bytes(),
        };
        self.reset();
        left
    }

    /// True when the body is gzip and ends now inside a member (header, data or trailer not
    /// complete), i.e. the body was cut even if the decoded text ended on a record boundary.
    /// Call it before [`Framer::finish`], which resets the state.
    pub fn gzip_member_incomplete(&self) -> bool {
        self.mode == Mode::Gzip && self.gunzip.as_ref().is_some_and(|g| g.mid_member())
    }

    /// True when the current body was recognised as gzip (and has not failed).
    pub fn is_gzip(&self) -> bool {
        self.mode == Mode::Gzip
    }

    /// Capacity in bytes of the internal record buffer (for memory-bound tests): it never
    /// exceeds `max_record_bytes + 1`, and is at most [`KEEP_CAPACITY`] between records.
    #[doc(hidden)]
    pub fn buffered_capacity(&self) -> usize {
        self.lines.buf.capacity()
    }

    fn start_gzip(&mut self) {
        self.mode = Mode::Gzip;
        match self.gunzip.as_mut() {
            Some(g) => g.reset(),
            None => self.gunzip = Some(Box::new(Gunzip::new())),
        }
    }

    fn push_gzip<S: FrameSink>(&mut self, chunk: &[u8], sink: &mut S) {
        let Some(g) = self.gunzip.as_mut() else {
            return;
        };
        if let Err(message) = g.push(chunk, &mut self.lines, sink) {
            self.mode = Mode::Failed;
            self.lines.clear();
            sink.gzip_error(&message);
        }
    }
}

/// Splits decoded bytes at LF, strips one CR before it, applies the size cap.
struct LineSplitter {
    /// The cap on a record without its terminator.
    max: usize,
    /// Start of a record cut by a chunk boundary; at most `max + 1` bytes.
    buf: Vec<u8>,
    /// True while an oversized record is being skipped up to its LF.
    skipping: bool,
    /// Bytes of the oversized record seen so far (a final CR included).
    skip_len: u64,
    /// Whether the last byte seen while skipping was a CR.
    skip_last_cr: bool,
    /// Whether every byte skipped so far was blank (then an unterminated tail is no record).
    skip_blank: bool,
}

impl LineSplitter {
    fn new(max: usize) -> Self {
        LineSplitter {
            max,
            buf: Vec::new(),
            skipping: false,
            skip_len: 0,
            skip_last_cr: false,
            skip_blank: false,
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.release_if_large();
        self.skipping = false;
        self.skip_len = 0;
        self.skip_last_cr = false;
        self.skip_blank = false;
    }

    /// Bytes of the unterminated record held now (0 for blank leftovers).
    fn pending_bytes(&self) -> u64 {
        if self.skipping {
            if self.skip_blank {
                0
            } else {
                self.skip_len
            }
        } else if is_blank(&self.buf) {
            0
        } else {
            self.buf.len() as u64
        }
    }

    /// Most bytes the buffer may hold: the cap plus a CR of a CRLF terminator.
    #[inline]
    fn buf_limit(&self) -> usize {
        self.max.saturating_add(1)
    }

    fn feed<S: FrameSink>(&mut self, mut data: &[u8], sink: &mut S) {
        // Finish the record started in an earlier chunk (buffered or being skipped).
        if self.skipping || !self.buf.is_empty() {
            let Some(i) = find_byte(data, b'\n') else {
                self.append(data);
                return;
            };
            if self.skipping {
                let cr = if i > 0 {
                    data[i - 1] == b'\r'
                } else {
                    self.skip_last_cr
                };
                let len = self.skip_len + i as u64 - cr as u64;
                self.skipping = false;
                self.skip_len = 0;
                self.skip_last_cr = false;
                sink.oversized(len);
            } else if self.buf.len() + i > self.buf_limit() {
                // Too long even if the last byte is a CR: report without copying.
                let mut len = (self.buf.len() + i) as u64;
                let last = if i > 0 {
                    data[i - 1]
                } else {
                    self.buf[self.buf.len() - 1]
                };
                if last == b'\r' {
                    len -= 1;
                }
                self.buf.clear();
                self.release_if_large();
                sink.oversized(len);
            } else {
                self.reserve_for(i);
                self.buf.extend_from_slice(&data[..i]);
                emit_line(&self.buf, self.max, sink);
                self.buf.clear();
                self.release_if_large();
            }
            data = &data[i + 1..];
        }
        // Fast path: whole records are slices of the chunk.
        while let Some(i) = find_byte(data, b'\n') {
            emit_line(&data[..i], self.max, sink);
            data = &data[i + 1..];
        }
        self.append(data);
    }

    /// Keeps `data` (which holds no LF) as the start of the current record, or counts it
    /// when the record is (or becomes) oversized.
    fn append(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.skipping {
            self.skip_len += data.len() as u64;
            self.skip_last_cr = data[data.len() - 1] == b'\r';
            self.skip_blank = self.skip_blank && is_blank(data);
            return;
        }
        let need = self.buf.len() + data.len();
        if need > self.buf_limit() {
            self.skipping = true;
            self.skip_len = need as u64;
            self.skip_last_cr = data[data.len() - 1] == b'\r';
            self.skip_blank = is_blank(&self.buf) && is_blank(data);
            self.buf.clear();
            self.release_if_large();
            return;
        }
        self.reserve_for(data.len());
        self.buf.extend_from_slice(data);
    }

    /// Makes room for `extra` more bytes, where `buf.len() + extra <= buf_limit()`: grows
    /// geometrically but never past the limit, so capacity stays <= max + 1 (a plain
    /// `extend_from_slice` would double a full buffer: 256 MiB -> 512 MiB).
    #[inline]
    fn reserve_for(&mut self, extra: usize) {
        let need = self.buf.len() + extra;
        debug_assert!(need <= self.buf_limit());
        if need > self.buf.capacity() {
            let target = need
                .max(self.buf.capacity().saturating_mul(2))
                .max(256)
                .min(self.buf_limit());
            self.buf.reserve_exact(target - self.buf.len());
        }
    }

    /// Frees the (empty) buffer when a large record made it grow beyond [`KEEP_CAPACITY`].
    #[inline]
    fn release_if_large(&mut self) {
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
    }
}

/// Hands one line (without its LF) to the sink: strips a CR, applies the cap, skips blanks.
#[inline]
fn emit_line<S: FrameSink>(line: &[u8], max: usize, sink: &mut S) {
    let line = match line.split_last() {
        Some((b'\r', rest)) => rest,
        _ => line,
    };
    if line.len() > max {
        sink.oversized(line.len() as u64);
    } else if !is_blank(line) {
        sink.record(line);
    }
}

/// True when `line` holds only spaces, tabs and CRs (or nothing).
#[inline]
fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&c| matches!(c, b' ' | b'\t' | b'\r'))
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Index of the first `needle` in `hay`. SWAR on 64-bit words, 16 bytes per step: wasm32
/// has native 64-bit integer ops, while the `memchr` crate's portable fallback works on
/// `usize` (32 bits there).
#[inline]
pub(crate) fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    let rep = LO * needle as u64;
    let mut i = 0;
    while i + 16 <= hay.len() {
        let a = u64::from_le_bytes(hay[i..i + 8].try_into().unwrap()) ^ rep;
        let b = u64::from_le_bytes(hay[i + 8..i + 16].try_into().unwrap()) ^ rep;
        let za = a.wrapping_sub(LO) & !a & HI;
        let zb = b.wrapping_sub(LO) & !b & HI;
        if za | zb != 0 {
            // The lowest flagged byte is always a true match (borrows only run upwards).
            return Some(if za != 0 {
                i + (za.trailing_zeros() / 8) as usize
            } else {
                i + 8 + (zb.trailing_zeros() / 8) as usize
            });
        }
        i += 16;
    }
    hay[i..].iter().position(|&c| c == needle).map(|p| i + p)
}

// ---------------------------------------------------------------------------------------
// Gzip (RFC 1952)

const FTEXT: u8 = 1;
const FHCRC: u8 = 2;
const FEXTRA: u8 = 4;
const FNAME: u8 = 8;
const FCOMMENT: u8 = 16;
const _: u8 = FTEXT; // FTEXT is only a hint; listed for completeness.

/// Where the gzip decoder is within the current member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The 10 fixed header bytes; `hdr_len` of them collected.
    Fixed,
    /// The 2-byte XLEN of FEXTRA.
    ExtraLen,
    /// FEXTRA payload, `remaining` bytes left.
    Extra,
    /// Zero-terminated file name.
    Name,
    /// Zero-terminated comment.
    Comment,
    /// The 2-byte header CRC.
    HeaderCrc,
    /// Raw deflate data.
    Deflate,
    /// CRC32 + ISIZE, `trailer_len` of 8 collected.
    Trailer,
}

/// Streaming gzip decoder: header, raw deflate via miniz_oxide, checked trailer,
/// concatenated members.
struct Gunzip {
    inflate: Box<InflateState>,
    out: Box<[u8]>,
    crc_table: Box<Crc32>,
    stage: Stage,
    /// Collected fixed header (10 bytes) or XLEN/HCRC (2 bytes) or trailer (8 bytes).
    small: [u8; 10],
    small_len: usize,
    flags: u8,
    remaining: usize,
    /// Running CRC32 of the header (for FHCRC).
    header_crc: u32,
    /// Running CRC32 and size of the member's output.
    crc: u32,
    size: u32,
    /// Whether any byte of the current member was seen (false between members).
    started: bool,
}

impl Gunzip {
    fn new() -> Self {
        Gunzip {
            inflate: InflateState::new_boxed(DataFormat::Raw),
            out: vec![0u8; INFLATE_BLOCK].into_boxed_slice(),
            crc_table: Box::new(Crc32::new()),
            stage: Stage::Fixed,
            small: [0; 10],
            small_len: 0,
            flags: 0,
            remaining: 0,
            header_crc: 0,
            crc: 0,
            size: 0,
            started: false,
        }
    }

    fn reset(&mut self) {
        self.start_member();
        self.started = false;
    }

    fn start_member(&mut self) {
        self.stage = Stage::Fixed;
        self.small_len = 0;
        self.flags = 0;
        self.remaining = 0;
        self.header_crc = 0;
        self.crc = 0;
        self.size = 0;
        self.started = false;
        self.inflate.reset(DataFormat::Raw);
    }

    fn mid_member(&self) -> bool {
        self.started
    }

    /// Collects up to `want` bytes into `small`; true when complete.
    fn collect(&mut self, input: &mut &[u8], want: usize) -> bool {
        let take = (want - self.small_len).min(input.len());
        self.small[self.small_len..self.small_len + take].copy_from_slice(&input[..take]);
        self.small_len += take;
        *input = &input[take..];
        self.small_len == want
    }

    /// Stage after the fixed header / an optional field: the next optional field present.
    fn next_header_stage(&self, after: Stage) -> Stage {
        let order = [
            (Stage::ExtraLen, FEXTRA),
            (Stage::Name, FNAME),
            (Stage::Comment, FCOMMENT),
            (Stage::HeaderCrc, FHCRC),
        ];
        let start = match after {
            Stage::Fixed => 0,
            Stage::Extra => 1,
            Stage::Name => 2,
            Stage::Comment => 3,
            _ => 4,
        };
        order[start..]
            .iter()
            .find(|(_, f)| self.flags & f != 0)
            .map_or(Stage::Deflate, |(s, _)| *s)
    }

    fn push<S: FrameSink>(
        &mut self,
        mut input: &[u8],
        lines: &mut LineSplitter,
        sink: &mut S,
    ) -> Result<(), String> {
        while !input.is_empty() {
            self.started = true;
            match self.stage {
                Stage::Fixed => {
                    let before = input;
                    let done = self.collect(&mut input, 10);
                    self.header_crc = self
                        .crc_table
                        .update(self.header_crc, &before[..before.len() - input.len()]);
                    if self.small_len >= 2 && (self.small[0] != 0x1f || self.small[1] != 0x8b) {
                        return Err(format!(
                            "gzip header: expected the magic bytes 1f 8b, found {:02x} {:02x}",
                            self.small[0], self.small[1]
                        ));
                    }
                    if !done {
                        continue;
                    }
                    if self.small[2] != 8 {
                        return Err(format!(
                            "gzip header: unsupported compression method {} (only 8, deflate)",
                            self.small[2]
                        ));
                    }
                    self.flags = self.small[3];
                    if self.flags & 0xe0 != 0 {
                        return Err(format!(
                            "gzip header: reserved flag bits set (FLG = {:#04x})",
                            self.flags
                        ));
                    }
                    self.small_len = 0;
                    self.stage = self.next_header_stage(Stage::Fixed);
                }
                Stage::ExtraLen => {
                    let before = input;
                    let done = self.collect(&mut input, 2);
                    self.header_crc = self
                        .crc_table
                        .update(self.header_crc, &before[..before.len() - input.len()]);
                    if done {
                        self.remaining =
                            u16::from_le_bytes([self.small[0], self.small[1]]) as usize;
                        self.small_len = 0;
                        self.stage = Stage::Extra;
                    }
                }
                Stage::Extra => {
                    let take = self.remaining.min(input.len());
                    self.header_crc = self.crc_table.update(self.header_crc, &input[..take]);
                    input = &input[take..];
                    self.remaining -= take;
                    if self.remaining == 0 {
                        self.stage = self.next_header_stage(Stage::Extra);
                    }
                }
                Stage::Name | Stage::Comment => {
                    let end = find_byte(input, 0);
                    let take = end.map_or(input.len(), |i| i + 1);
                    self.header_crc = self.crc_table.update(self.header_crc, &input[..take]);
                    input = &input[take..];
                    if end.is_some() {
                        self.stage = self.next_header_stage(self.stage);
                    }
                }
                Stage::HeaderCrc => {
                    if self.collect(&mut input, 2) {
                        let want = u16::from_le_bytes([self.small[0], self.small[1]]);
                        let got = self.header_crc as u16;
                        if want != got {
                            return Err(format!(
                                "gzip header: header CRC mismatch (stored {want:#06x}, computed {got:#06x})"
                            ));
                        }
                        self.small_len = 0;
                        self.stage = Stage::Deflate;
                    }
                }
                Stage::Deflate => {
                    input = self.inflate_some(input, lines, sink)?;
                }
                Stage::Trailer => {
                    if self.collect(&mut input, 8) {
                        let t = &self.small;
                        let want_crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
                        let want_size = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
                        if want_crc != self.crc {
                            return Err(format!(
                                "gzip trailer: CRC32 mismatch (stored {want_crc:#010x}, computed {:#010x}): the data is corrupt",
                                self.crc
                            ));
                        }
                        if want_size != self.size {
                            return Err(format!(
                                "gzip trailer: length mismatch (stored {want_size}, inflated {} mod 2^32)",
                                self.size
                            ));
                        }
                        // A further member may follow (concatenated gzip).
                        self.start_member();
                    }
                }
            }
        }
        Ok(())
    }

    /// Inflates from `input` until it is used up or the member's deflate data ends; hands
    /// each output block to `lines`. Returns the unused input.
    fn inflate_some<'a, S: FrameSink>(
        &mut self,
        mut input: &'a [u8],
        lines: &mut LineSplitter,
        sink: &mut S,
    ) -> Result<&'a [u8], String> {
        loop {
            let r = inflate(&mut self.inflate, input, &mut self.out, MZFlush::None);
            input = &input[r.bytes_consumed..];
            if r.bytes_written > 0 {
                let block = &self.out[..r.bytes_written];
                self.crc = self.crc_table.update(self.crc, block);
                self.size = self.size.wrapping_add(r.bytes_written as u32);
                lines.feed(block, sink);
            }
            match r.status {
                Ok(MZStatus::StreamEnd) => {
                    self.stage = Stage::Trailer;
                    self.small_len = 0;
                    return Ok(input);
                }
                Ok(_) => {
                    // More output may be pending when the block was filled.
                    if input.is_empty() && r.bytes_written < self.out.len() {
                        return Ok(input);
                    }
                }
                Err(MZError::Buf) => {
                    // No progress possible without more input.
                    if input.is_empty() || (r.bytes_consumed == 0 && r.bytes_written == 0) {
                        return Ok(input);
                    }
                }
                Err(e) => {
                    return Err(format!(
                        "gzip data: the deflate stream is invalid ({e:?}) after {} inflated bytes",
                        self.size
                    ));
                }
            }
        }
    }
}

/// CRC-32 (IEEE, reflected, as gzip uses), slicing-by-8. The table (8 KiB) is computed at
/// run time when the first gzip body arrives, which keeps it out of the .wasm file.
pub(crate) struct Crc32 {
    table: [[u32; 256]; 8],
}

impl Crc32 {
    pub(crate) fn new() -> Self {
        let mut table = [[0u32; 256]; 8];
        for (i, entry) in table[0].iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *entry = c;
        }
        for k in 1..8 {
            for i in 0..256 {
                let prev = table[k - 1][i];
                table[k][i] = (prev >> 8) ^ table[0][(prev & 0xff) as usize];
            }
        }
        Crc32 { table }
    }

    /// Continues the CRC `crc` (0 to start) over `data`.
    pub(crate) fn update(&self, crc: u32, data: &[u8]) -> u32 {
        let t = &self.table;
        let mut c = !crc;
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let lo = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) ^ c;
            let hi = u32::from_le_bytes([w[4], w[5], w[6], w[7]]);
            c = t[7][(lo & 0xff) as usize]
                ^ t[6][((lo >> 8) & 0xff) as usize]
                ^ t[5][((lo >> 16) & 0xff) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][(hi & 0xff) as usize]
                ^ t[2][((hi >> 8) & 0xff) as usize]
                ^ t[1][((hi >> 16) & 0xff) as usize]
                ^ t[0][(hi >> 24) as usize];
        }
        for &b in words.remainder() {
            c = (c >> 8) ^ t[0][((c ^ b as u32) & 0xff) as usize];
        }
        !c
    }
}

// The tests' independent CRC-32 and gzip builder: one file, shared with the integration
// tests and the fuzz crate (tests/support/gzip.rs needs nothing but std and miniz_oxide).
#[cfg(test)]
#[path = "../../tests/support/gzip.rs"]
mod test_gzip;

#[cfg(test)]
mod tests {
    use super::test_gzip::{crc32, gzip_member};
    use super::*;

    #[derive(Default, Debug, PartialEq)]
    struct Collect {
        records: Vec<Vec<u8>>,
        oversized: Vec<u64>,
        errors: Vec<String>,
    }
    impl FrameSink for Collect {
        fn record(&mut self, record: &[u8]) {
            self.records.push(record.to_vec());
        }
        fn oversized(&mut self, bytes: u64) {
            self.oversized.push(bytes);
        }
        fn gzip_error(&mut self, message: &str) {
            self.errors.push(message.to_string());
        }
    }

    fn run(max: usize, chunks: &[&[u8]]) -> (Collect, u64) {
        let mut f = Framer::new(max);
        let mut c = Collect::default();
        for ch in chunks {
            f.push(ch, &mut c);
        }
        let left = f.finish();
        (c, left)
    }

    fn recs(c: &Collect) -> Vec<&str> {
        c.records
            .iter()
            .map(|r| std::str::from_utf8(r).unwrap())
            .collect()
    }

    /// One plain gzip member (10-byte header) around `data`, at level 6.
    fn gzip(data: &[u8]) -> Vec<u8> {
        gzip_member(data, 6, 0)
    }

    #[test]
    fn find_byte_matches_naive() {
        let mut hay: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37) | 0x80).collect();
        assert_eq!(find_byte(&hay, b'\n'), None);
        for pos in 0..hay.len() {
            let saved = hay[pos];
            hay[pos] = b'\n';
            assert_eq!(find_byte(&hay, b'\n'), Some(pos), "at {pos}");
            // A second match later must not win.
            if pos + 3 < hay.len() {
                hay[pos + 3] = b'\n';
                assert_eq!(find_byte(&hay, b'\n'), Some(pos));
                hay[pos + 3] = saved;
            }
            hay[pos] = saved;
        }
        // Bytes that differ from the needle by one (borrow edge cases).
        let hay = [0x0bu8, 0x09, 0x0b, 0x8a, 0x0a];
        assert_eq!(find_byte(&hay, b'\n'), Some(4));
    }

    #[test]
    fn crc32_known_vector_and_reference() {
        let c = Crc32::new();
        assert_eq!(c.update(0, b"123456789"), 0xcbf4_3926);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7919 % 251) as u8).collect();
        for split in [0, 1, 7, 8, 9, 500, 999, 1000] {
            let a = c.update(0, &data[..split]);
            assert_eq!(c.update(a, &data[split..]), crc32(&data), "split {split}");
        }
    }

    #[test]
    fn crlf_lf_and_empty_records() {
        let (c, left) = run(
            100,
            &[b"{\"a\":1}\r\n\r\n{\"b\":2}\n \t\r\n\n{\"c\":3}\r\n"],
        );
        assert_eq!(recs(&c), ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
        assert_eq!(left, 0);
        assert!(c.oversized.is_empty());
    }

    #[test]
    fn one_byte_chunks_and_crlf_split() {
        let body = b"{\"a\":\"\xc3\xa9\"}\r\n{\"b\":2}\r\n";
        let chunks: Vec<&[u8]> = body.chunks(1).collect();
        let (c, left) = run(100, &chunks);
        assert_eq!(recs(&c), ["{\"a\":\"é\"}", "{\"b\":2}"]);
        assert_eq!(left, 0);
    }

    #[test]
    fn lone_cr_inside_record_is_kept() {
        let (c, _) = run(100, &[b"a\rb\r\n"]);
        assert_eq!(c.records, [b"a\rb".to_vec()]);
    }

    #[test]
    fn finish_reports_partial_record() {
        let (c, left) = run(100, &[b"{\"a\":1}\r\n{\"b\""]);
        assert_eq!(c.records.len(), 1);
        assert_eq!(left, 4);
        // Blank leftovers are no record.
        let (_, left) = run(100, &[b"{\"a\":1}\r\n\r"]);
        assert_eq!(left, 0);
        let (_, left) = run(100, &[b"\x1f"]);
        assert_eq!(left, 1);
        // Blank and past the cap, or oversized and not blank.
        let (c, left) = run(3, &[b"  ", b"\t\t \r"]);
        assert_eq!((left, c.oversized.len()), (0, 0));
        let (_, left) = run(3, &[b"  ", b"\t\tx "]);
        assert_eq!(left, 6);
    }

    #[test]
    fn oversized_skipped_with_length_and_next_intact() {
        let big = vec![b'x'; 50];
        let mut body = big.clone();
        body.extend(b"\r\n{\"ok\":1}\r\n");
        for chunk in [1, 3, 10, 64, 1000] {
            let chunks: Vec<&[u8]> = body.chunks(chunk).collect();
            let (c, left) = run(10, &chunks);
            assert_eq!(c.oversized, [50], "chunk {chunk}");
            assert_eq!(recs(&c), ["{\"ok\":1}"], "chunk {chunk}");
            assert_eq!(left, 0);
        }
    }

    #[test]
    fn cap_is_exclusive_of_terminator() {
        // Exactly max bytes + CRLF is a record; max + 1 is not.
        for chunk in [1, 2, 5, 100] {
            let body = b"0123456789\r\n01234567890\r\n0123456789\n";
            let chunks: Vec<&[u8]> = body.chunks(chunk).collect();
            let (c, _) = run(10, &chunks);
            assert_eq!(recs(&c), ["0123456789", "0123456789"], "chunk {chunk}");
            assert_eq!(c.oversized, [11], "chunk {chunk}");
        }
    }

    #[test]
    fn oversized_at_end_counts_in_finish() {
        let (c, left) = run(4, &[b"abc\nabcdefgh", b"ijk"]);
        assert_eq!(recs(&c), ["abc"]);
        assert!(c.oversized.is_empty());
        assert_eq!(left, 11);
    }

    #[test]
    fn buffer_stays_bounded() {
        let mut f = Framer::new(1000);
        let mut c = Collect::default();
        for _ in 0..10_000 {
            f.push(b"0123456789abcdefghij", &mut c);
            assert!(f.buffered_capacity() <= 1001);
        }
        f.push(b"\n", &mut c);
        assert_eq!(c.oversized, [200_000]);
    }

    #[test]
    fn gzip_simple_and_sniff_one_byte() {
        let body = gzip(b"{\"a\":1}\r\n{\"b\":2}\r\n");
        let (c, left) = run(100, &[&body[..1], &body[1..]]);
        assert_eq!(recs(&c), ["{\"a\":1}", "{\"b\":2}"]);
        assert!(c.errors.is_empty());
        assert_eq!(left, 0);
    }

    #[test]
    fn plain_body_starting_with_1f_is_plain() {
        let (c, left) = run(100, &[b"\x1f", b"x\n"]);
        assert_eq!(c.records, [b"\x1fx".to_vec()]);
        assert_eq!(left, 0);
    }

    #[test]
    fn gzip_header_fields() {
        let data = b"{\"h\":1}\n";
        let mut v = vec![
            0x1f,
            0x8b,
            8,
            FEXTRA | FNAME | FCOMMENT | FHCRC,
            1,
            2,
            3,
            4,
            0,
            3,
        ];
        v.extend(5u16.to_le_bytes());
        v.extend(b"ab\x00cd");
        v.extend(b"name.json\x00");
        v.extend(b"a comment\x00");
        let hcrc = crc32(&v) as u16;
        v.extend(hcrc.to_le_bytes());
        v.extend(miniz_oxide::deflate::compress_to_vec(data, 1));
        v.extend(crc32(data).to_le_bytes());
        v.extend((data.len() as u32).to_le_bytes());
        let chunks: Vec<&[u8]> = v.chunks(1).collect();
        let (c, _) = run(100, &chunks);
        assert_eq!(recs(&c), ["{\"h\":1}"]);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        // A wrong header CRC is an error.
        let mut bad = v.clone();
        let at = 10 + 2 + 5 + 10 + 10;
        bad[at] ^= 1;
        let (c, _) = run(100, &[&bad]);
        assert!(c.errors[0].contains("header CRC"), "{:?}", c.errors);
    }

    #[test]
    fn gzip_errors() {
        let body = gzip(b"{\"a\":1}\n");
        // Bad method.
        let mut bad = body.clone();
        bad[2] = 7;
        let (c, _) = run(100, &[&bad]);
        assert!(
            c.errors[0].contains("compression method 7"),
            "{:?}",
            c.errors
        );
        // Bad CRC: the record itself was already delivered; the error follows.
        let mut bad = body.clone();
        let n = bad.len();
        bad[n - 8] ^= 0xff;
        let (c, _) = run(100, &[&bad]);
        assert!(c.errors[0].contains("CRC32 mismatch"), "{:?}", c.errors);
        // Bad size.
        let mut bad = body.clone();
        bad[n - 4] ^= 0xff;
        let (c, _) = run(100, &[&bad]);
        assert!(c.errors[0].contains("length mismatch"), "{:?}", c.errors);
        // Corrupt deflate data: a reserved block type (11).
        let mut bad = body[..10].to_vec();
        bad.extend([0xff, 0xff, 0xff]);
        let (c, _) = run(100, &[&bad]);
        assert!(
            c.errors[0].contains("deflate stream is invalid"),
            "{:?}",
            c.errors
        );
        // Garbage after a member.
        let mut bad = body.clone();
        bad.extend(b"xy");
        let (c, _) = run(100, &[&bad]);
        assert!(c.errors[0].contains("magic bytes"), "{:?}", c.errors);
        // Reserved flags.
        let mut bad = body.clone();
        bad[3] = 0x20;
        let (c, _) = run(100, &[&bad]);
        assert!(c.errors[0].contains("reserved flag"), "{:?}", c.errors);
    }

    #[test]
    fn gzip_error_ignores_rest_until_reset() {
        let mut bad = gzip(b"{\"a\":1}\n");
        bad[2] = 9;
        let mut f = Framer::new(100);
        let mut c = Collect::default();
        f.push(&bad, &mut c);
        f.push(b"{\"b\":1}\n", &mut c);
        assert_eq!(c.errors.len(), 1);
        assert!(c.records.is_empty());
        assert_eq!(f.finish(), 0);
        f.push(b"{\"c\":1}\n", &mut c);
        assert_eq!(recs(&c), ["{\"c\":1}"]);
    }

    #[test]
    fn gzip_concatenated_members_and_truncation() {
        let mut body = gzip(b"{\"a\":1}\r\n{\"b\":");
        body.extend(gzip(b"2}\r\n"));
        let (c, left) = run(100, &[&body]);
        assert_eq!(recs(&c), ["{\"a\":1}", "{\"b\":2}"]);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(left, 0);
        // Cut inside the trailer: records delivered, member incomplete, no error.
        let mut f = Framer::new(100);
        let mut c = Collect::default();
        let one = gzip(b"{\"a\":1}\r\n");
        f.push(&one[..one.len() - 3], &mut c);
        assert!(f.gzip_member_incomplete());
        assert_eq!(f.finish(), 0);
        assert!(c.errors.is_empty());
        assert_eq!(c.records.len(), 1);
        // A complete member is not incomplete.
        f.push(&one, &mut c);
        assert!(!f.gzip_member_incomplete());
    }

    #[test]
    fn gzip_bomb_stays_bounded() {
        // 16 MiB of 'x' without a newline, then a newline and a record.
        let mut data = vec![b'x'; 16 << 20];
        data.extend(b"\n{\"z\":1}\n");
        let body = gzip(&data);
        assert!(body.len() < 200_000);
        let mut f = Framer::new(1 << 16);
        let mut c = Collect::default();
        for ch in body.chunks(4096) {
            f.push(ch, &mut c);
            assert!(f.buffered_capacity() <= (1 << 16) + 1);
        }
        assert_eq!(c.oversized, [16 << 20]);
        assert_eq!(recs(&c), ["{\"z\":1}"]);
        assert!(c.errors.is_empty());
    }

    #[test]
    fn reset_forgets_partial_record() {
        let mut f = Framer::new(100);
        let mut c = Collect::default();
        f.push(b"{\"partial\":", &mut c);
        f.reset();
        f.push(b"{\"a\":1}\n", &mut c);
        assert_eq!(recs(&c), ["{\"a\":1}"]);
    }
}
