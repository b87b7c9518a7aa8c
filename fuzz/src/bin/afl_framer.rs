//! AFL++ entry point of the framer target (`cargo afl build --profile fuzz -p livestream-fuzz
//! --features afl --bin afl_framer`; see the crate docs).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        livestream_fuzz::targets::framer(data);
    });
}
