//! `argus eval`: evaluates a Stack Language expression with no server, over series read from
//! a JSON file, and prints exactly what the graph API returns for the same data.
//!
//! The file: `{"step": <ms>, "series": [{"tags": {...}, "start": <ms>, "values": [<number or
//! "NaN">, ...]}]}`. Value `i` of a series is at `start + i * step`; values are stored as
//! given (no rate conversion), on the file's step.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use argus_query::{GraphRequest, Limits, evaluate_with_limits};
use argus_tsdb::{DsType, Store, StoreConfig, TagMap};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputFile {
    step: i64,
    series: Vec<InputSeries>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    tags: std::collections::BTreeMap<String, String>,
    start: i64,
    values: Vec<InputValue>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InputValue {
    Number(f64),
    Text(String),
}

impl InputValue {
    fn value(&self) -> Option<f64> {
        match self {
            InputValue::Number(v) => Some(*v),
            InputValue::Text(t) => match t.as_str() {
                "NaN" => Some(f64::NAN),
                "Infinity" => Some(f64::INFINITY),
                "-Infinity" => Some(f64::NEG_INFINITY),
                other => other.parse().ok(),
            },
        }
    }
}

/// Largest number of values the command loads, so a mistaken file fails clearly instead of
/// exhausting memory.
const MAX_VALUES: usize = 50_000_000;

/// Loads the file into an in-memory store whose clock stands at the end of the data.
pub fn load(path: &Path) -> anyhow::Result<(Store, i64)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let input: InputFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "parsing {} (expected {{\"step\": ms, \"series\": [...]}})",
            path.display()
        )
    })?;
    if input.step <= 0 || input.step > 86_400_000 {
        bail!(
            "{}: step must be between 1 ms and one day, got {}",
            path.display(),
            input.step
        );
    }
    let total: usize = input.series.iter().map(|s| s.values.len()).sum();
    if total > MAX_VALUES {
        bail!(
            "{}: {total} values is more than {MAX_VALUES}",
            path.display()
        );
    }
    let step = input.step;
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for s in &input.series {
        if !s.values.is_empty() {
            let end = s
                .start
                .checked_add((s.values.len() as i64 - 1).saturating_mul(step))
                .context("a series ends past the year 292 million")?;
            first = first.min(s.start);
            last = last.max(end);
        }
    }
    if first > last {
        first = 0;
        last = 0;
    }
    let now = last;
    let retention = last.saturating_sub(first).saturating_add(2 * step);
    let store = Store::with_clock(StoreConfig::new(step, retention), Arc::new(move || now));
    for (n, s) in input.series.iter().enumerate() {
        if s.tags.is_empty() {
            bail!("{}: series {n} has no tags", path.display());
        }
        let tags: TagMap = s.tags.iter().collect();
        let id = store.writer().resolve_as(&tags, DsType::Gauge);
        for (i, v) in s.values.iter().enumerate() {
            let Some(value) = v.value() else {
                bail!("{}: series {n}, value {i}: not a number", path.display());
            };
            if value.is_nan() {
                continue;
            }
            store
                .writer()
                .append(id, s.start + i as i64 * step, value)
                .with_context(|| format!("{}: series {n}, value {i}", path.display()))?;
        }
    }
    Ok((store, now))
}

/// Evaluates `params` (graph API parameters, `q` included) over the file; returns the body
/// the graph API would send.
pub fn run(path: &Path, params: &[(String, String)]) -> anyhow::Result<Vec<u8>> {
    let (store, now) = load(path)?;
    let req = GraphRequest::from_params(params, now, store.config().step_ms)?;
    let result = evaluate_with_limits(&req, &store, &Limits::default())?;
    Ok(result.render(&req))
}

/// How `argus mql` times events.
#[derive(Clone, Debug)]
pub enum MqlClock {
    /// A virtual clock from 0, advancing this many ms before each event.
    Interval(i64),
    /// The event's own time (epoch ms) in this field.
    Field(String),
}

/// `argus mql`: runs a query over NDJSON events as a finite stream; the result rows, in
/// order. With `stream_field`, that top-level string field (removed) names each event's
/// stream. A line that is not a JSON object, or a query that does not parse, is an error
/// that names where.
pub fn run_mql(
    query: &str,
    input: &[u8],
    clock: MqlClock,
    stream_field: Option<&str>,
    seed: u64,
) -> anyhow::Result<Vec<serde_json::Value>> {
    use argus_mql::cases::run_offline;
    let q = argus_mql::parse(query).map_err(|e| anyhow::anyhow!("invalid MQL query: {e}"))?;
    let events = read_events(input, stream_field)?;
    Ok(run_offline(&q, &events, offline_clock(clock)?, seed))
}

/// `argus eval --events`: runs a Stack Language expression over NDJSON events as a finite
/// stream, on the same clock as `argus mql`; the rows (per event for a query or `:table`,
/// per step for `:sample` and data expressions), in order. Steps are `step_ms` long.
pub fn run_events(
    expr: &str,
    input: &[u8],
    clock: MqlClock,
    stream_field: Option<&str>,
    step_ms: i64,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let q = argus_query::events::parse(expr)
        .map_err(|e| anyhow::anyhow!("invalid Stack Language expression over events: {e}"))?;
    let step_ms =
        argus_query::events::check_step(step_ms).map_err(|e| anyhow::anyhow!("--step: {e}"))?;
    let events = read_events(input, stream_field)?;
    Ok(argus_query::events::run_offline(
        &q,
        &events,
        &offline_clock(clock)?,
        step_ms,
    ))
}

fn offline_clock(clock: MqlClock) -> anyhow::Result<argus_mql::cases::Clock> {
    use argus_mql::cases::Clock;
    Ok(match clock {
        MqlClock::Interval(n) => {
            if n < 0 {
                bail!("--interval-ms {n}: must not be negative");
            }
            Clock::Interval { ms: n }
        }
        MqlClock::Field(f) => Clock::EventTime {
            field: crate::live::parse_field(&f)
                .map_err(|e| anyhow::anyhow!("--time-field: {e}"))?,
        },
    })
}

/// NDJSON events, one JSON object per line (blank lines skipped); with `stream_field`, that
/// top-level string field (removed) names each event's stream. A line that is not a JSON
/// object is an error naming it.
fn read_events(
    input: &[u8],
    stream_field: Option<&str>,
) -> anyhow::Result<Vec<argus_mql::cases::Input>> {
    use argus_mql::cases::Input;
    let mut events = Vec::new();
    for (i, line) in input.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(mut event)) => {
                let stream = match stream_field.and_then(|f| event.remove(f)) {
                    None => None,
                    Some(serde_json::Value::String(s)) => Some(s),
                    Some(other) => bail!(
                        "input line {}: the stream field must be a string, got {other}",
                        i + 1
                    ),
                };
                events.push(Input {
                    stream,
                    event: serde_json::Value::Object(event),
                });
            }
            Ok(_) => bail!("input line {}: expected a JSON object", i + 1),
            Err(e) => bail!("input line {}: invalid JSON: {e}", i + 1),
        }
    }
    Ok(events)
}
