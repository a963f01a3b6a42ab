//! Replays the PromQL fuzz corpus (`query/fuzz/corpus/promql`) as an ordinary test, so every
//! input the fuzzer ever kept is checked on stable Rust in CI.

use std::path::Path;

#[test]
fn promql_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/promql");
    argus_tests::replay_corpus(&dir, argus_promql::fuzzing::check_query, 2_000);
}
