//! Replays the fuzz corpus of the SpectatorD listener (`agent/fuzz/corpus/spectatord`) as an
//! ordinary test, so every input the fuzzer kept is checked on stable Rust in CI.

use std::path::Path;

#[test]
fn spectatord_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/spectatord");
    argus_tests::replay_corpus(&dir, argus_agent::spectatord::fuzz_datagram, 20);
}
