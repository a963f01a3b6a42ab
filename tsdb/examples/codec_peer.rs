//! Measures the block codec on the peer benchmark dataset (`bench/peers/gen.py --out DIR`):
//! bytes per sample for each kind of series, with 60-value blocks, plus a round-trip check
//! and decode throughput.
//!
//! Usage: `cargo run -p argus-tsdb --release --example codec_peer -- DIR [BLOCK_STEPS]`

use std::time::Instant;

use argus_tsdb::codec;

/// Kinds in report order: (metric name, what the store keeps for it).
const KINDS: [(&str, &str); 4] = [
    ("http.requests", "counter as rate"),
    ("sys.cpu.utilization", "gauge, 0.01 steps"),
    ("jvm.threads", "integer gauge"),
    ("http.latency", "full-precision gauge"),
];

fn main() {
    if let Err(e) = run() {
        eprintln!("codec_peer: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: codec_peer DATASET_DIR [BLOCK_STEPS]")?;
    let block: usize = match args.next() {
        Some(b) => b.parse().map_err(|e| format!("block steps {b:?}: {e}"))?,
        None => 60,
    };
    if block == 0 {
        return Err("block steps must be positive".into());
    }
    let read = |f: &str| {
        std::fs::read(format!("{dir}/{f}")).map_err(|e| format!("reading {dir}/{f}: {e}"))
    };
    let manifest = String::from_utf8(read("manifest.json")?).map_err(|e| e.to_string())?;
    let points = json_int(&manifest, "points_per_series")?;
    let step_s = json_int(&manifest, "step_s")? as f64;
    let series_text = String::from_utf8(read("series.jsonl")?).map_err(|e| e.to_string())?;
    let names: Vec<&str> = series_text
        .lines()
        .map(|l| tag_value(l, "name").ok_or_else(|| format!("no name tag in {l:?}")))
        .collect::<Result<_, _>>()?;
    let raw = read("values.f64")?;
    if raw.len() != names.len() * points * 8 {
        return Err(format!(
            "values.f64 has {} bytes, expected {} series x {points} points x 8",
            raw.len(),
            names.len()
        ));
    }

    println!(
        "{} series x {points} points, step {step_s} s, blocks of {block} values",
        names.len()
    );
    println!(
        "{:<22} {:<22} {:>10} {:>12} {:>9} {:>12}",
        "kind", "stored as", "samples", "bytes", "B/sample", "decode M/s"
    );
    let (mut all_samples, mut all_bytes) = (0usize, 0usize);
    let mut row = vec![0f64; points];
    for (name, what) in KINDS {
        let mut values = Vec::new();
        for (s, _) in names.iter().enumerate().filter(|(_, n)| **n == name) {
            for (i, v) in row.iter_mut().enumerate() {
                let at = (s * points + i) * 8;
                let mut b = [0u8; 8];
                b.copy_from_slice(&raw[at..at + 8]);
                *v = f64::from_le_bytes(b);
            }
            if name == "http.requests" {
                // The store keeps counters as per-second rates; the first has no predecessor.
                for i in (1..points).rev() {
                    row[i] = (row[i] - row[i - 1]) / step_s;
                }
                row[0] = f64::NAN;
            }
            values.extend_from_slice(&row);
        }
        if values.is_empty() {
            continue;
        }
        let mut enc = Vec::new();
        let mut lens = Vec::new();
        for series in values.chunks(points) {
            for b in series.chunks(block) {
                codec::encode(b, &mut enc);
                lens.push(b.len());
            }
        }
        let mut dec = vec![0f64; values.len()];
        let t = Instant::now();
        let reps = 5;
        for _ in 0..reps {
            let (mut at, mut pos) = (0, 0);
            for &len in &lens {
                pos += codec::decode(&enc[pos..], &mut dec[at..at + len])
                    .map_err(|e| format!("{name}: decode failed: {e}"))?;
                at += len;
            }
            if pos != enc.len() {
                return Err(format!(
                    "{name}: decode consumed {pos} of {} bytes",
                    enc.len()
                ));
            }
        }
        let rate = (values.len() * reps) as f64 / t.elapsed().as_secs_f64() / 1e6;
        if let Some(i) = (0..values.len()).find(|&i| values[i].to_bits() != dec[i].to_bits()) {
            return Err(format!(
                "{name}: value {i} decoded as {:?}, was {:?}",
                dec[i], values[i]
            ));
        }
        println!(
            "{name:<22} {what:<22} {:>10} {:>12} {:>9.3} {rate:>12.0}",
            values.len(),
            enc.len(),
            enc.len() as f64 / values.len() as f64
        );
        all_samples += values.len();
        all_bytes += enc.len();
    }
    println!(
        "{:<22} {:<22} {all_samples:>10} {all_bytes:>12} {:>9.3}",
        "overall",
        "",
        all_bytes as f64 / all_samples as f64
    );
    Ok(())
}

/// The integer after `"key": ` in the manifest (pretty-printed JSON, no nesting needed).
fn json_int(text: &str, key: &str) -> Result<usize, String> {
    let pat = format!("\"{key}\":");
    let at = text
        .find(&pat)
        .ok_or_else(|| format!("manifest has no {key}"))?
        + pat.len();
    let digits: String = text[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().map_err(|e| format!("manifest {key}: {e}"))
}

/// The value of tag `key` in one `series.jsonl` line (`"key": "value"`, as json.dumps
/// writes it; tag values contain no escapes).
fn tag_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\": \"");
    let start = line.find(&pat)? + pat.len();
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}
