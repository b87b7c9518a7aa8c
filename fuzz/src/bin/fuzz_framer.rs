//! Fuzz target (a): the framer, plain and gzip, random chunking (see `livestream_fuzz`).

fn main() {
    livestream_fuzz::driver::run(livestream_fuzz::FRAMER)
}
