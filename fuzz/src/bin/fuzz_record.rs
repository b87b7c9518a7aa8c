//! Fuzz target (b): the record scanner, differential against serde_json (see
//! `livestream_fuzz`).

fn main() {
    std::process::exit(livestream_fuzz::driver::main(
        livestream_fuzz::driver::Target {
            name: "record",
            run: livestream_fuzz::targets::record,
            generate: livestream_fuzz::gen::record_input,
            keep_prefix: 0,
        },
    ));
}
