//! Predicate evaluation as an agent does it for a live query: a three-clause `where` over
//! small realistic request events (ten fields, ~300 bytes of JSON), of which ~1% match.
//! - `evaluate/parsed`: `Predicate::matches` on events already parsed to `serde_json::Value`;
//! - `evaluate/bytes`: parse each event's JSON bytes, then evaluate (the agent's real cost);
//! - `evaluate/partial`: parse only the fields the predicate reads
//!   (`mql::partial::Fields`), then evaluate the same predicate;
//! - `evaluate/partial_reused`: the same into one event value reused from event to event
//!   (`Fields::parse_into`), which is what the agent does.
//!
//! Throughput is in events (elements) per second on one core.
//!     cargo bench -p argus-query --bench predicate -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use argus_mql::parse;
use argus_mql::partial::Fields;
use argus_mql::predicate::Predicate;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

const EVENTS: usize = 10_000;
const WHERE: &str = "status >= 500 and region == 'us-east-1' and path ==~ /\\/api\\/.*/";

fn pick<'a>(rng: &mut fastrand::Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.usize(..xs.len())]
}

/// Request events: 4% are 5xx, half in us-east-1, two thirds on /api/: about 1.3% match.
fn events() -> Vec<Value> {
    // Seeded: the same events every run.
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    (0..EVENTS)
        .map(|i| {
            let status = match rng.u64(..) % 100 {
                0..=3 => [500, 502, 503, 504][(rng.u64(..) % 4) as usize],
                4..=9 => 404,
                10..=14 => 301,
                _ => 200,
            };
            let path = match rng.u64(..) % 3 {
                0 => format!("/static/app.{}.js", rng.u64(..) % 100),
                _ => format!(
                    "/api/v{}/{}/{}",
                    1 + rng.u64(..) % 2,
                    pick(&mut rng, &["users", "orders", "titles", "search"]),
                    rng.u64(..) % 100_000
                ),
            };
            json!({
                "ts": 1_767_225_600_000_i64 + i as i64 * 7,
                "status": status,
                "region": pick(&mut rng, &["us-east-1", "us-west-2"]),
                "path": path,
                "method": pick(&mut rng, &["GET", "GET", "GET", "POST", "PUT"]),
                "latency_ms": (rng.u64(..) % 250_000) as f64 / 1000.0,
                "bytes": rng.u64(..) % 100_000,
                "host": format!("i-{:012x}", rng.u64(..) % (1 << 48)),
                "app": pick(&mut rng, &["www", "api", "edge", "playback"]),
                "user_agent": pick(&mut rng, &[
                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
                    "okhttp/4.12.0",
                    "curl/8.5.0",
                ]),
            })
        })
        .collect()
}

fn count_parsed(p: &Predicate, events: &[Value]) -> usize {
    events.iter().filter(|e| p.matches(e)).count()
}

fn count_bytes(p: &Predicate, lines: &[Vec<u8>]) -> usize {
    lines
        .iter()
        .filter(|l| {
            serde_json::from_slice::<Value>(l)
                .map(|e| p.matches(&e))
                .unwrap_or(false)
        })
        .count()
}

fn count_partial(p: &Predicate, fields: &Fields, lines: &[Vec<u8>]) -> usize {
    lines
        .iter()
        .filter(|l| fields.parse(l).map(|e| p.matches(&e)).unwrap_or(false))
        .count()
}

fn count_partial_reused(p: &Predicate, fields: &Fields, lines: &[Vec<u8>]) -> usize {
    let mut event = Value::Null;
    lines
        .iter()
        .filter(|l| fields.parse_into(l, &mut event).is_ok() && p.matches(&event))
        .count()
}

fn bench_predicate(c: &mut Criterion) {
    let p = parse(&format!("select * from requests where {WHERE}"))
        .expect("the bench query parses")
        .filter;
    let events = events();
    let lines: Vec<Vec<u8>> = events
        .iter()
        .map(|e| serde_json::to_vec(e).expect("events serialize"))
        .collect();
    let matched = count_parsed(&p, &events);
    let fields = Fields::of_predicate(&p);
    assert_eq!(count_bytes(&p, &lines), matched);
    assert_eq!(count_partial(&p, &fields, &lines), matched);
    assert_eq!(count_partial_reused(&p, &fields, &lines), matched);
    let bytes: usize = lines.iter().map(Vec::len).sum();
    eprintln!(
        "predicate bench: {EVENTS} events, {:.0} bytes each on average, {matched} match ({:.2}%)",
        bytes as f64 / EVENTS as f64,
        100.0 * matched as f64 / EVENTS as f64
    );

    let mut g = c.benchmark_group("evaluate");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("parsed", |b| {
        b.iter(|| count_parsed(black_box(&p), black_box(&events)))
    });
    g.bench_function("bytes", |b| {
        b.iter(|| count_bytes(black_box(&p), black_box(&lines)))
    });
    g.bench_function("partial", |b| {
        b.iter(|| count_partial(black_box(&p), black_box(&fields), black_box(&lines)))
    });
    g.bench_function("partial_reused", |b| {
        b.iter(|| count_partial_reused(black_box(&p), black_box(&fields), black_box(&lines)))
    });
    g.finish();
}

criterion_group!(benches, bench_predicate);
criterion_main!(benches);
