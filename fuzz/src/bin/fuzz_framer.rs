//! Fuzz target (a): the framer, plain and gzip, random chunking (see `livestream_fuzz`).

fn main() {
    std::process::exit(livestream_fuzz::driver::main(
        livestream_fuzz::driver::Target {
            name: "framer",
            run: livestream_fuzz::targets::framer,
            generate: livestream_fuzz::gen::framer_input,
            keep_prefix: livestream_fuzz::targets::FRAMER_HEADER,
        },
    ));
}
