//! Fuzz targets for the core, and a seeded random driver that runs them without any extra
//! tool (`cargo run --profile fuzz -p livestream-fuzz --bin fuzz_framer -- --seconds 5`).
//!
//! Each target is a function of one byte string that panics when an invariant breaks, so
//! the same function can be driven by the built-in random driver ([`driver`]), replayed
//! from a reproducer file, or handed to a coverage-guided fuzzer.
//!
//! - [`targets::framer`]: the framer, plain and gzip, chunked at random; same records as
//!   the whole body framed at once; the buffer never grows past the cap.
//! - [`targets::record`]: the record scanner against serde_json: accept/reject agreement,
//!   key fields, and the quoted output.

pub mod driver;
pub mod gen;
pub mod rng;
pub mod targets;

#[cfg(test)]
mod tests {
    use crate::{driver, gen, rng::Rng, targets};

    /// The committed seed inputs pass (the driver also checks them before each run).
    #[test]
    fn corpus_passes() {
        let framer = driver::corpus("framer");
        let record = driver::corpus("record");
        assert!(framer.len() >= 3 && record.len() >= 5, "corpus missing");
        framer.iter().for_each(|d| targets::framer(d));
        record.iter().for_each(|d| targets::record(d));
    }

    /// A few hundred generated inputs of each target pass (a smoke run in `cargo test`).
    #[test]
    fn generated_inputs_pass() {
        let mut rng = Rng::new(7);
        for _ in 0..150 {
            targets::framer(&gen::framer_input(&mut rng));
            targets::record(&gen::record_input(&mut rng));
        }
    }

    /// The reference helpers themselves.
    #[test]
    fn helpers() {
        assert_eq!(targets::crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(
            targets::neutralize_surrogates(br#""\ud83d \\ud83d \u00e9""#),
            br#""\u0041 \\ud83d \u00e9""#
        );
        assert_eq!(targets::expected_id("12"), (Some(12), true));
        assert_eq!(targets::expected_id("\"12\""), (Some(12), false));
        assert_eq!(targets::expected_id("\"012\""), (None, false));
        assert_eq!(targets::expected_id("\"0\""), (Some(0), false));
        assert_eq!(targets::expected_id("18446744073709551616"), (None, false));
        assert_eq!(targets::expected_id("-1"), (None, false));
    }
}
