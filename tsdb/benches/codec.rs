//! Encode and decode throughput of the block value codec, per kind of series, on seeded
//! synthetic data shaped like the peer dataset (60-value blocks).

use std::hint::black_box;

use argus_tsdb::codec;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BLOCK: usize = 60;
const BLOCKS: usize = 1000;

/// xorshift64*: deterministic and dependency-free; quality is irrelevant here.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Approximately standard normal (Irwin-Hall with 12 terms).
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
    }
}

/// `BLOCKS` blocks of one kind, laid out back to back.
fn series(kind: &str, seed: u64) -> Vec<f64> {
    let mut r = Rng(seed | 1);
    let mut out = Vec::with_capacity(BLOCK * BLOCKS);
    for b in 0..BLOCKS {
        match kind {
            "counter_rate" => {
                // Poisson-like increments per minute around a per-block mean, as rates.
                let lambda = (r.normal() * 1.5 + 4.0).exp().min(20_000.0);
                for i in 0..BLOCK {
                    let k = (lambda + lambda.sqrt() * r.normal()).round().max(0.0);
                    out.push(if b == 0 && i == 0 { f64::NAN } else { k / 60.0 });
                }
            }
            "int_gauge" => {
                let mut x = 50.0 + (r.next() % 350) as f64;
                for _ in 0..BLOCK {
                    x = (x + (r.next() % 5) as f64 - 2.0).max(1.0);
                    out.push(x);
                }
            }
            "gauge_0.01" => {
                let mut x = 5.0 + r.unit() * 55.0;
                for _ in 0..BLOCK {
                    x = (x + 1.5 * r.normal()).clamp(0.0, 100.0);
                    out.push((x * 100.0).round() / 100.0);
                }
            }
            "noise" => {
                let mut x = (3.0 + 0.8 * r.normal()).exp();
                for _ in 0..BLOCK {
                    x *= (0.05 * r.normal()).exp();
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
