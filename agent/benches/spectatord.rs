//! SpectatorD lines into the agent's meters, as a service's Spectator client sends them:
//! 1,000 meters (counters, gauges, timers and percentile timers, four tags each) updated in
//! datagrams of one line (the clients' default) and of 20 lines (a client's buffer).
//! Throughput is in lines per second on one core; the agent's whole cost under 100,000
//! lines/s (its receive loop, the step's batches) is measured by `agent_load.py`.
//!     cargo bench -p argus-agent --bench spectatord -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;
use std::sync::Arc;

use argus_agent::outbox::Catalog;
use argus_agent::registry::Registry;
use argus_agent::spectatord::{Distinct, LineCounts, Listener};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// 10,000 lines over 1,000 meters: 40% counters, 20% gauges, 30% timers, 10% percentile
/// timers, each with the tags a service sets.
fn lines() -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..10_000)
        .map(|_| {
            let meter = rng.usize(..1000);
            let tags = format!(
                "nf.process=api,status={},method={},path=/api/v{}",
                [200, 404, 500][meter % 3],
                ["GET", "POST"][meter % 2],
                meter % 40
            );
            match meter % 10 {
                0..=3 => format!("c:server.requests{meter},{tags}:1"),
                4..=5 => format!("g,60:server.queue{meter},{tags}:{}", rng.u32(..1000)),
                6..=8 => format!("t:server.latency{meter},{tags}:0.{:03}", rng.u32(1..999)),
                _ => format!("T:server.platency{meter},{tags}:0.{:03}", rng.u32(1..999)),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let lines = lines();
    let catalog = Arc::new(Catalog::default());
    let registry = Arc::new(Registry::new(catalog, Vec::new()));
    let mut listener = Listener::new(
        registry.clone(),
        Arc::new(Distinct::default()),
        Arc::new(LineCounts::default()),
    );
    let single: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
    let batched: Vec<Vec<u8>> = lines
        .chunks(20)
        .map(|c| c.join("\n").into_bytes())
        .collect();
    let now = 1_700_000_000_000;
    // Every meter known, as in a running agent.
    for d in &single {
        listener.datagram(d, now);
    }
    let mut g = c.benchmark_group("spectatord");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("a_line_per_datagram", |b| {
        b.iter(|| {
            for d in &single {
                listener.datagram(black_box(d), now);
            }
        })
    });
    g.bench_function("20_lines_per_datagram", |b| {
        b.iter(|| {
            for d in &batched {
                listener.datagram(black_box(d), now);
            }
        })
    });
    g.bench_function("flush_a_step", |b| {
        b.iter(|| {
            for d in &batched {
                listener.datagram(d, now);
            }
            black_box(registry.flush(now + 60_000, 60.0))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
