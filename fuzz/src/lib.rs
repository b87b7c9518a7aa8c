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
//! - [`client::client`]: the client state machine under a host whose every move comes from
//!   the input: the reconnect delay after a loss, the connection limit, silence after close.
//!
//! The oracles and host helpers that the core's integration tests use too (the reference
//! framer and chunked feeder, the gzip builder, the surrogate fix for serde_json, the
//! virtual clock's timer loop) are the core's `tests/support/mod.rs`, compiled here as
//! [`support`]: one copy serves both, without a crate or a feature of its own.

//!
//! Coverage-guided fuzzing (optional). cargo-fuzz needs a nightly toolchain; AFL++ works on
//! stable but takes minutes to install (measured here: `apt-get install afl++` 16 s, `cargo
//! install cargo-afl` 4.5 min including its runtime, first instrumented build 2 min), so
//! `npm run fuzz` uses the random driver. With AFL++ installed:
//!
//! ```text
//! cargo afl build --profile fuzz -p livestream-fuzz --features afl --bin afl_record
//! AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 cargo afl fuzz \
//!     -i fuzz/corpus/record -o fuzz/afl-out -V 60 target/fuzz/afl_record
//! ```
//!
//! A crash lands in `fuzz/afl-out/default/crashes/`; replay it with the random driver's
//! `--replay FILE`.

pub mod client;
pub mod driver;
pub mod gen;
pub mod rng;
#[path = "../../tests/support/mod.rs"]
pub mod support;
pub mod targets;

/// Target (a) as the random driver runs it (`fuzz_framer`).
pub const FRAMER: driver::Target = driver::Target {
    name: "framer",
    run: targets::framer,
    generate: gen::framer_input,
    keep_prefix: targets::FRAMER_HEADER,
};

/// Target (b) as the random driver runs it (`fuzz_record`).
pub const RECORD: driver::Target = driver::Target {
    name: "record",
    run: targets::record,
    generate: gen::record_input,
    keep_prefix: 0,
};

/// Target (c) as the random driver runs it (`fuzz_client`); mutations keep the seven bytes
/// that pick the client's options and seed.
pub const CLIENT: driver::Target = driver::Target {
    name: "client",
    run: client::client,
    generate: gen::client_input,
    keep_prefix: 7,
};

#[cfg(test)]
mod tests {
    use crate::{driver, gen, rng::Rng, support, targets};

    /// The committed seed inputs pass (the driver also checks them before each run).
    #[test]
    fn corpus_passes() {
        let framer = driver::corpus("framer");
        let record = driver::corpus("record");
        assert!(framer.len() >= 3 && record.len() >= 5, "corpus missing");
        framer.iter().for_each(|d| targets::framer(d));
        record.iter().for_each(|d| targets::record(d));
        driver::corpus("client")
            .iter()
            .for_each(|d| crate::client::client(d));
    }

    /// A few hundred generated inputs of each target pass (a smoke run in `cargo test`).
    #[test]
    fn generated_inputs_pass() {
        let mut rng = Rng::new(7);
        for _ in 0..150 {
            targets::framer(&gen::framer_input(&mut rng));
            targets::record(&gen::record_input(&mut rng));
            crate::client::client(&gen::client_input(&mut rng));
        }
    }

    /// The reference helpers themselves.
    #[test]
    fn helpers() {
        assert_eq!(support::gzip::crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(
            support::oracles::neutralize_surrogates(br#""\ud83d \\ud83d \u00e9""#),
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
