//! Replays the parser fuzz corpus (`query/fuzz/corpus/asl`) as an ordinary test, so every
//! input the fuzzer ever kept is checked on stable Rust in CI.

use std::path::Path;

#[test]
fn asl_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/asl");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus directory exists") {
        let path = entry.expect("a readable directory entry").path();
        let data = std::fs::read(&path).expect("a readable corpus file");
        let started = std::time::Instant::now();
        argus_query::fuzzing::check_expression(&data);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{} took {:?}",
            path.display(),
            started.elapsed()
        );
        n += 1;
    }
    assert!(n >= 50, "only {n} corpus inputs in {}", dir.display());
}
