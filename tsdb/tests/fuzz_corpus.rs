//! Replays the fuzz corpora of the store's file readers (`tsdb/fuzz/corpus/{wal,snapshot}`)
//! as ordinary tests, so every input the fuzzer kept is checked on stable Rust in CI. The
//! seeds are real files written by a store (`make_seeds`, ignored: run it to refresh them).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use argus_tsdb::{Durability, Sample, Store, StoreConfig, TagMap};

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name)
}

fn replay(name: &str, entry: fn(&[u8]), at_least: usize) {
    argus_tests::replay_corpus(&corpus_dir(name), entry, at_least);
}

#[test]
fn wal_corpus_replays() {
    replay("wal", argus_tsdb::fuzzing::wal_segment, 5);
}

#[test]
fn snapshot_corpus_replays() {
    replay("snapshot", argus_tsdb::fuzzing::snapshot, 3);
}

/// Writes real segments and snapshots (a few series of every dstype, a dropped and reused
/// id, several batches) into the corpora.
#[test]
#[ignore]
fn make_seeds() {
    let dir = std::env::temp_dir().join(format!("argus-fuzz-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let t0 = 1_700_000_000_000i64 / 60_000 * 60_000;
    let now = Arc::new(AtomicI64::new(t0 - 3 * 3_600_000));
    let clock_now = now.clone();
    let (store, _) = Store::open(
        StoreConfig::new(60_000, 6 * 3_600_000),
        Arc::new(move || clock_now.load(Ordering::Relaxed)),
        Durability {
            segment_bytes: 2048,
            ..Durability::new(&dir)
        },
        &mut |_| {},
    )
    .unwrap();
    for step in 0..200i64 {
        now.store(t0 - 3 * 3_600_000 + step * 60_000, Ordering::Relaxed);
        let batch: Vec<Sample> = (0..8)
            .map(|i| {
                let dstype = ["gauge", "sum", "rate", "counter"][i % 4];
                let tags = TagMap::from_pairs([
                    ("name".to_string(), format!("seed.m{}", i % 3)),
                    ("node".to_string(), format!("i-{i}")),
                    ("atlas.dstype".to_string(), dstype.to_string()),
                ]);
                Sample {
                    id: store.writer().resolve(&tags),
                    ts_ms: now.load(Ordering::Relaxed),
                    value: if i == 7 {
                        f64::NAN
                    } else {
                        (step * (i as i64 + 1)) as f64 / 10.0
                    },
                }
            })
            .collect();
        store
            .writer()
            .try_append_batch(&batch, format!("agent:{step}").as_bytes())
            .unwrap();
        if step % 15 == 0 {
            store.maintain();
        }
        if step % 60 == 59 {
            let start = store.begin_snapshot().unwrap();
            store.write_snapshot(start, b"extra").unwrap();
        }
    }
    drop(store);
    for (sub, ext, corpus, from) in [
        ("wal", "wal", "wal", 24),
        ("snapshots", "snap", "snapshot", 0),
    ] {
        for f in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = f.unwrap().path();
            if path.extension().is_some_and(|e| e == ext) {
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                std::fs::copy(&path, corpus_dir(corpus).join(format!("seed-{name}"))).unwrap();
                // The same records in the fuzz entry's reframing input, past the checksums.
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(
                    corpus_dir(corpus).join(format!("seed-unframed-{name}")),
                    argus_tsdb::fuzzing::unframe(&bytes, from),
                )
                .unwrap();
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
