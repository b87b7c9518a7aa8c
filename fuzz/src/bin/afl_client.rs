//! AFL++ entry point of the client target (`cargo afl build --profile fuzz -p livestream-fuzz
//! --features afl --bin afl_client`; see the crate docs).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        livestream_fuzz::client::client(data);
    });
}
