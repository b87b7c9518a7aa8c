//! Fuzz target (c): the client state machine (see `livestream_fuzz::client`).

fn main() {
    livestream_fuzz::driver::run(livestream_fuzz::CLIENT)
}
