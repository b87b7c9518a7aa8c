//! AFL++ entry point of the record target (`cargo afl build --profile fuzz -p livestream-fuzz
//! --features afl --bin afl_record`; see the crate docs).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        livestream_fuzz::targets::record(data);
    });
}
