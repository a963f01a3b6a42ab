//! Restart time of a durable store: `--series` series with `--hours` of 60 s data, snapshotted
//! every hour as the server does on its interval, then `--tail-minutes` more in the log (what
//! a crash just before the next snapshot leaves to replay). The store is dropped as a crash
//! would leave it and reopened; prints the time to open and what recovery found.
//!
//! ```text
//! cargo run --release -p argus-tsdb --example restart -- [--series 1000000] [--hours 6] \
//!     [--tail-minutes 15] [--dir /tmp/argus-restart]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use argus_tsdb::{Durability, Sample, Store, StoreConfig, TagMap};

const STEP: i64 = 60_000;
const T0: i64 = 1_700_000_000_000 / 3_600_000 * 3_600_000;

fn main() {
    let mut series = 1_000_000usize;
    let mut hours = 6i64;
    let mut tail_minutes = 15i64;
    let mut dir = std::env::temp_dir().join(format!("argus-restart-{}", std::process::id()));
    let (mut keep, mut reopen_only) = (false, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} takes a value"));
        match a.as_str() {
            "--series" => series = value().parse().expect("--series N"),
            "--hours" => hours = value().parse().expect("--hours N"),
            "--tail-minutes" => tail_minutes = value().parse().expect("--tail-minutes N"),
            "--dir" => dir = value().into(),
            // Leave the directory for `--reopen-only` runs (profiling the restart alone).
            "--keep" => keep = true,
            "--reopen-only" => reopen_only = true,
            other => panic!("unknown option {other}"),
        }
    }
    let now = Arc::new(AtomicI64::new(T0));
    if reopen_only {
        now.store(T0 + (hours * 60 + tail_minutes) * STEP, Ordering::Relaxed);
        let clock: argus_tsdb::Clock = Arc::new(move || now.load(Ordering::Relaxed));
        let cfg = StoreConfig::new(STEP, (hours + 1) * 3_600_000);
        let t = Instant::now();
        let (store, recovery) =
            Store::open(cfg, clock, Durability::new(&dir), &mut |_| {}).expect("reopening");
        println!("restart: {:.2?} ({recovery})", t.elapsed());
        assert_eq!(store.series_count(), series);
        return;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let clock_now = now.clone();
    let clock: argus_tsdb::Clock = Arc::new(move || clock_now.load(Ordering::Relaxed));
    let cfg = StoreConfig::new(STEP, (hours + 1) * 3_600_000);
    let (store, _) = Store::open(cfg, clock.clone(), Durability::new(&dir), &mut |_| {})
        .expect("opening the store");

    let started = Instant::now();
    let ids: Vec<u32> = (0..series)
        .map(|i| {
            store.writer().resolve(&TagMap::from_pairs([
                ("name", format!("restart.metric{}", i % 50)),
                ("nf.app", format!("app{}", i % 100)),
                ("nf.node", format!("i-{:07}", i / 20)),
                ("id", format!("{}", i % 20)),
                (
                    "atlas.dstype",
                    if i % 2 == 0 { "gauge" } else { "counter" }.to_string(),
                ),
            ]))
        })
        .collect();
    let mut batch: Vec<Sample> = Vec::with_capacity(series);
    let mut write_step = |step: i64| {
        let ts = T0 + step * STEP;
        now.store(ts, Ordering::Relaxed);
        batch.clear();
        batch.extend(ids.iter().enumerate().map(|(i, &id)| Sample {
            id,
            ts_ms: ts,
            value: if i % 2 == 0 {
                ((i as i64 * 31 + step * 7) % 10_000) as f64 / 100.0
            } else {
                (step * (i as i64 % 97 + 1)) as f64
            },
        }));
        store
            .writer()
            .try_append_batch(&batch, b"")
            .expect("appending");
        if step % 15 == 0 {
            store.maintain();
        }
    };
    let steps = hours * 60;
    let mut last_snapshot = None;
    for step in 1..=steps {
        write_step(step);
        if step % 60 == 0 {
            let t = Instant::now();
            let start = store.begin_snapshot().expect("starting a snapshot");
            let r = store
                .write_snapshot(start, b"")
                .expect("writing a snapshot");
            last_snapshot = Some((r, t.elapsed()));
        }
    }
    for step in steps + 1..=steps + tail_minutes {
        write_step(step);
    }
    store.sync_wal().expect("syncing the log");
    let filled = started.elapsed();
    let memory = store.memory();
    drop(store);
    let wal_bytes: u64 = std::fs::read_dir(dir.join("wal"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);

    let t = Instant::now();
    let (store, recovery) =
        Store::open(cfg, clock, Durability::new(&dir), &mut |_| {}).expect("reopening");
    let reopened = t.elapsed();
    println!(
        "{series} series, {hours} h of 60 s steps + {tail_minutes} min in the log: filled in {filled:.1?}"
    );
    if let Some((r, took)) = last_snapshot {
        println!(
            "last snapshot: {} series, {:.1} MiB, written in {took:.2?}",
            r.series,
            r.bytes as f64 / (1 << 20) as f64
        );
    }
    println!(
        "store before the crash: {} series, {:.1} MiB sealed; log left to replay: {:.1} MiB",
        memory.n_series,
        memory.sealed_bytes as f64 / (1 << 20) as f64,
        wal_bytes as f64 / (1 << 20) as f64
    );
    println!("restart: {reopened:.2?} ({recovery})");
    assert_eq!(store.series_count(), series);
    assert!(recovery.is_clean());
    drop(store);
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
