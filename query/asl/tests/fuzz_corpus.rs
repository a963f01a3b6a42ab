//! Replays the parser fuzz corpus (`query/fuzz/corpus/asl`) as an ordinary test, so every
//! input the fuzzer ever kept is checked on stable Rust in CI.

use std::path::Path;

#[test]
fn asl_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/asl");
    argus_tests::replay_corpus(&dir, argus_query::fuzzing::check_expression, 50);
}
