//! Fuzz target (c): the client state machine (see `livestream_fuzz::client`).

fn main() {
    std::process::exit(livestream_fuzz::driver::main(
        livestream_fuzz::driver::Target {
            name: "client",
            run: livestream_fuzz::client::client,
            generate: livestream_fuzz::gen::client_input,
            keep_prefix: 7,
        },
    ));
}
