//! Replays the MQL fuzz corpus (`query/fuzz/corpus/mql`) as an ordinary test, so every input
//! the fuzzer ever kept (and the seeds: every case-file query, hostile inputs) is checked on
//! stable Rust in CI. Also a stable-Rust fuzz driver, `#[ignore]`d: random bytes, token
//! soups and mutations of the corpus.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use argus_mql::fuzzing::check_query;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/mql")
}

#[test]
fn mql_corpus_replays() {
    argus_tests::replay_corpus(&corpus_dir(), check_query, 1000);
}

const TOKENS: &[&str] = &[
    "select ",
    "SELECT ",
    "*",
    " from ",
    "s",
    "stream",
    " where ",
    " window ",
    "|3|",
    "1",
    "0.5",
    "2 1",
    " group by ",
    " having ",
    " order by ",
    " desc",
    " asc",
    " limit ",
    "2",
    " sample ",
    "{'strategy':'RANDOM','threshold':5000}",
    "{'strategy':'STICKY','keys':['b'],'threshold':5000,'extrapolate':true}",
    "{'strategy':'RPS','threshold':1}",
    " as ",
    "'x'",
    "distinct ",
    " and ",
    " or ",
    "not ",
    "&&",
    "||",
    "!",
    "(",
    ")",
    ",",
    "true",
    "false",
    "null",
    "tick()",
    "count(",
    "sum(",
    "min(",
    "max(",
    "average(",
    "list(",
    "p50(",
    "p995(",
    "e['a']",
    "e['e']['a'][*]",
    "['b']",
    "[0]",
    "[-1]",
    "[*]",
    "e[^'a']",
    "a",
    "b",
    "ts",
    "status",
    "path",
    "==",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "=",
    "==~",
    "==+",
    "/x.*/",
    "/(/",
    "'/api/.*'",
    "500",
    "-1",
    "1e3",
    "'x'",
    "\"y\"",
    "e['COUNT(a)']",
    " ",
    "\n",
    "'",
    "\\",
    "é",
];

fn pick<'a>(rng: &mut fastrand::Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.usize(..xs.len())]
}

const FIELDS: &[&str] = &[
    "a",
    "b",
    "ts",
    "status",
    "user",
    "n",
    "e['e']['a'][0]",
    "e['nested']['x']['y']",
    "e['a'][-1]",
    "COUNT(a)",
    "e['tags'][0]['k']",
    "missing",
];
const ANY_FIELDS: &[&str] = &["e['tags'][*]['k']", "e['b'][*]", "e['e']['a'][*]"];
const LITERALS: &[&str] = &[
    "1", "2.5", "-1", "'x'", "\"y\"", "true", "false", "null", "500", "'1'",
];

fn condition(rng: &mut fastrand::Rng, depth: usize) -> String {
    match if depth > 2 { 0 } else { rng.usize(..5) } {
        0 | 1 => {
            let left = if rng.usize(..5) == 0 {
                pick(rng, ANY_FIELDS)
            } else {
                pick(rng, FIELDS)
            };
            match rng.usize(..4) {
                0 => format!(
                    "{left} ==~ /{}/",
                    pick(rng, &["x.*", "5\\d\\d", "(?i)X|y", ".*", "\\/api\\/.*"])
                ),
                1 => format!("{left} ==+ 'x'"),
                _ => {
                    let op = pick(rng, &["==", "=", "!=", "<>", "<", "<=", ">", ">="]);
                    let right = if rng.usize(..4) == 0 {
                        pick(rng, FIELDS)
                    } else {
                        pick(rng, LITERALS)
                    };
                    format!("{left} {op} {right}")
                }
            }
        }
        2 => format!("not ({})", condition(rng, depth + 1)),
        3 => format!(
            "({} and {})",
            condition(rng, depth + 1),
            condition(rng, depth + 1)
        ),
        _ => format!(
            "{} or {}",
            condition(rng, depth + 1),
            condition(rng, depth + 1)
        ),
    }
}

/// A query that mostly parses: every clause, in random combinations.
fn generated(rng: &mut fastrand::Rng) -> Vec<u8> {
    let aggregate = rng.usize(..2) == 0;
    let mut items = Vec::new();
    for _ in 0..1 + rng.usize(..3) {
        let field = pick(rng, FIELDS);
        items.push(if aggregate && rng.usize(..3) > 0 {
            let f = pick(
                rng,
                &[
                    "count", "sum", "min", "max", "average", "list", "p50", "p99", "p995", "COUNT",
                ],
            );
            let arg = match rng.usize(..4) {
                0 => "*".to_string(),
                1 => format!("distinct {field}"),
                _ => field.to_string(),
            };
            let alias = if rng.usize(..4) == 0 { " as 'x'" } else { "" };
            format!("{f}({arg}){alias}")
        } else {
            pick(rng, &[field, field, "'lit'", "2", "tick()", "e[^'a']"]).to_string()
        });
    }
    let select = if !aggregate && rng.usize(..6) == 0 {
        "*".to_string()
    } else {
        items.join(", ")
    };
    let mut q = format!(
        "select {select} from {}",
        pick(rng, &["s", "stream", "s, t"])
    );
    if rng.usize(..2) == 0 {
        q += pick(
            rng,
            &[
                " window 1",
                " window 0.5",
                " window 2 1",
                " window 1 3",
                " window |2|",
                " window |1|",
            ],
        );
    }
    if rng.usize(..3) > 0 {
        q += &format!(" where {}", condition(rng, 0));
    }
    if aggregate && rng.usize(..2) == 0 {
        q += &format!(
            " group by {}",
            pick(rng, &["b", "a, b", "e['nested']['x']", "missing"])
        );
    }
    if aggregate && rng.usize(..4) == 0 {
        q += &format!(" having {}", condition(rng, 1));
    }
    if rng.usize(..3) == 0 {
        q += &format!(
            " order by {}{}",
            pick(rng, FIELDS),
            pick(rng, &["", " desc", " asc"])
        );
    }
    if rng.usize(..3) == 0 {
        q += &format!(" limit {}", rng.usize(..4));
    }
    if rng.usize(..4) == 0 {
        q += pick(
            rng,
            &[
                " sample {'strategy':'RANDOM','threshold':5000}",
                " sample {'strategy':'STICKY','keys':['user','n'],'threshold':5000,'extrapolate':true}",
                " sample {'strategy':'RPS','threshold':1}",
            ],
        );
    }
    q.into_bytes()
}

fn mutate(rng: &mut fastrand::Rng, input: &[u8], corpus: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.usize(..4) {
        let at = rng.usize(..out.len() + 1);
        match rng.usize(..6) {
            0 if !out.is_empty() => {
                let end = (at + 1 + rng.usize(..8)).min(out.len());
                out.drain(at.min(end)..end);
            }
            1 => {
                let t = TOKENS[rng.usize(..TOKENS.len())].as_bytes();
                out.splice(at..at, t.iter().copied());
            }
            2 if at < out.len() => out[at] = rng.u8(..),
            3 if at < out.len() => out[at] ^= 1 << rng.usize(..8),
            4 => {
                // Splice in a piece of another input.
                let other = &corpus[rng.usize(..corpus.len())].1;
                if !other.is_empty() {
                    let from = rng.usize(..other.len());
                    let to = (from + 1 + rng.usize(..40)).min(other.len());
                    out.splice(at..at, other[from..to].iter().copied());
                }
            }
            _ => {
                let n = rng.usize(..6);
                let bytes: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
                out.splice(at..at, bytes);
            }
        }
    }
    out.truncate(4096);
    out
}

/// The stable-Rust fuzz driver: `MQL_FUZZ_RUNS` inputs (default 100,000): random bytes,
/// token soups, corpus mutations, generated queries (every clause in random combinations)
/// and their mutations, seeded by `MQL_FUZZ_SEED`. Run with
/// `cargo test --release -p argus-query --test mql_fuzz_corpus -- --ignored --nocapture`.
#[test]
#[ignore]
fn mql_random_inputs() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let runs = env("MQL_FUZZ_RUNS", 100_000);
    let seed = env("MQL_FUZZ_SEED", 0x5eed);
    let corpus = argus_tests::corpus(&corpus_dir());
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let (mut parsed, mut slowest) = (0u64, Duration::ZERO);
    for i in 0..runs {
        let input: Vec<u8> = match i % 5 {
            3 => generated(&mut rng),
            4 => {
                let base = generated(&mut rng);
                mutate(&mut rng, &base, &corpus)
            }
            0 => (0..rng.usize(..64)).map(|_| rng.u8(..)).collect(),
            1 => b"select "
                .iter()
                .copied()
                .chain(
                    (0..1 + rng.usize(..24))
                        .flat_map(|_| TOKENS[rng.usize(..TOKENS.len())].bytes()),
                )
                .collect(),
            _ => {
                let base = corpus[rng.usize(..corpus.len())].1.clone();
                mutate(&mut rng, &base, &corpus)
            }
        };
        let one = Instant::now();
        let outcome = std::panic::catch_unwind(|| check_query(&input));
        if outcome.is_err() {
            panic!("input {i} panicked: {:?}", String::from_utf8_lossy(&input));
        }
        slowest = slowest.max(one.elapsed());
        if std::str::from_utf8(&input).is_ok_and(|t| argus_mql::parse(t).is_ok()) {
            parsed += 1;
        }
    }
    println!(
        "seed {seed}: {runs} inputs in {:.1?} ({parsed} parsed as queries), slowest {slowest:.1?}, no panic",
        started.elapsed()
    );
}
