//! A gzip builder for tests, independent of the framer: a bit-by-bit CRC-32 and a
//! hand-built RFC 1952 container around miniz_oxide's deflate.
//!
//! It needs nothing but std and miniz_oxide, so the framer's own unit tests
//! (src/core/framer.rs) include this file too, besides the integration tests and the fuzz
//! crate (through tests/support/mod.rs).

/// Bit-by-bit CRC-32 (IEEE): an independent reference for the framer's table-driven one and
/// for building gzip trailers.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// One gzip member around `data`, deflated at `level`; `flags` picks the optional header
/// fields FHCRC (2), FEXTRA (4), FNAME (8) and FCOMMENT (16) (0: a plain 10-byte header).
pub fn gzip_member(data: &[u8], level: u8, flags: u8) -> Vec<u8> {
    let mut v = vec![0x1f, 0x8b, 8, flags, 0x78, 0x56, 0x34, 0x12, 0, 3];
    if flags & 4 != 0 {
        v.extend(6u16.to_le_bytes());
        v.extend(b"AB\x02\x00hi");
    }
    if flags & 8 != 0 {
        v.extend(b"records.json\x00");
    }
    if flags & 16 != 0 {
        v.extend("a comment, é\x00".as_bytes());
    }
    if flags & 2 != 0 {
        let h = crc32(&v) as u16;
        v.extend(h.to_le_bytes());
    }
    v.extend(miniz_oxide::deflate::compress_to_vec(data, level));
    v.extend(crc32(data).to_le_bytes());
    v.extend((data.len() as u32).to_le_bytes());
    v
}
