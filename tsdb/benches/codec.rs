//! Encode and decode throughput of the block value codec, per kind of series, on seeded
//! synthetic data shaped like the peer dataset (60-value blocks).

use std::hint::black_box;

use argus_tsdb::codec;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BLOCK: usize = 60;
const BLOCKS: usize = 1000;

/// Approximately standard normal (Irwin-Hall with 12 terms) from the seeded generator.
fn normal(r: &mut fastrand::Rng) -> f64 {
    (0..12).map(|_| r.f64()).sum::<f64>() - 6.0
}

/// `BLOCKS` blocks of one kind, laid out back to back.
fn series(kind: &str, seed: u64) -> Vec<f64> {
    let mut r = fastrand::Rng::with_seed(seed);
    let mut out = Vec::with_capacity(BLOCK * BLOCKS);
    for b in 0..BLOCKS {
        match kind {
            "counter_rate" => {
                // Poisson-like increments per minute around a per-block mean, as rates.
                let lambda = (normal(&mut r) * 1.5 + 4.0).exp().min(20_000.0);
                for i in 0..BLOCK {
                    let k = (lambda + lambda.sqrt() * normal(&mut r)).round().max(0.0);
                    out.push(if b == 0 && i == 0 { f64::NAN } else { k / 60.0 });
                }
            }
            "int_gauge" => {
                let mut x = 50.0 + (r.u64(..) % 350) as f64;
                for _ in 0..BLOCK {
                    x = (x + (r.u64(..) % 5) as f64 - 2.0).max(1.0);
                    out.push(x);
                }
            }
            "gauge_0.01" => {
                let mut x = 5.0 + r.f64() * 55.0;
                for _ in 0..BLOCK {
                    x = (x + 1.5 * normal(&mut r)).clamp(0.0, 100.0);
                    out.push((x * 100.0).round() / 100.0);
                }
            }
            "noise" => {
                let mut x = (3.0 + 0.8 * normal(&mut r)).exp();
                for _ in 0..BLOCK {
                    x *= (0.05 * normal(&mut r)).exp();
                    out.push(x);
                }
            }
            "constant" => out.extend(std::iter::repeat_n(42.5, BLOCK)),
            _ => out.extend(std::iter::repeat_n(f64::NAN, BLOCK)),
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let kinds = [
        "counter_rate",
        "int_gauge",
        "gauge_0.01",
        "noise",
        "constant",
        "all_nan",
    ];
    for (seed, kind) in kinds.into_iter().enumerate() {
        let values = series(kind, seed as u64 * 7919 + 1);
        let mut enc = Vec::new();
        for b in values.chunks(BLOCK) {
            codec::encode(b, &mut enc);
        }
        eprintln!(
            "{kind}: {:.3} bytes/sample",
            enc.len() as f64 / values.len() as f64
        );
        let mut g = c.benchmark_group(format!("codec/{kind}"));
        g.throughput(Throughput::Elements(values.len() as u64));
        g.bench_function("encode", |b| {
            let mut out = Vec::with_capacity(enc.len());
            b.iter(|| {
                out.clear();
                for blk in black_box(&values).chunks(BLOCK) {
                    codec::encode(blk, &mut out);
                }
                out.len()
            })
        });
        g.bench_function("decode", |b| {
            let mut out = vec![0f64; BLOCK];
            b.iter(|| {
                let (mut pos, mut sum) = (0, 0f64);
                for _ in 0..BLOCKS {
                    pos += codec::decode(&black_box(&enc)[pos..], &mut out).expect("decodes");
                    sum += out[BLOCK - 1];
                }
                sum
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
