//! Fuzz target (b): the record scanner, differential against serde_json (see
//! `livestream_fuzz`).

fn main() {
    livestream_fuzz::driver::run(livestream_fuzz::RECORD)
}
