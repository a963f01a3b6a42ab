//! Scraping Prometheus endpoints of local services: a plain HTTP/1.0 GET every interval,
//! the text exposition format parsed, each sample queued with the scrape's timestamp.
//! Counters (by `# TYPE`, or else by the `_total`, `_count`, `_sum`, `_bucket` names) go
//! as `atlas.dstype=counter` so the server stores their per-second rate; the rest as
//! gauges. `__name__` is `name`; characters Atlas does not allow become `_`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{ScrapeTarget, sanitize};
use crate::health::Health;
use crate::outbox::{Catalog, Outbox, Payload, Sample};

/// Largest response read from a target.
const MAX_RESPONSE: usize = 32 << 20;

/// One sample of the text format.
#[derive(Debug, PartialEq)]
pub struct TextSample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the text exposition format; returns the samples and the `# TYPE` of each family.
/// Malformed lines are skipped and counted.
pub fn parse_text(text: &str) -> (Vec<TextSample>, HashMap<String, String>, usize) {
    let mut samples = Vec::new();
    let mut types = HashMap::new();
    let mut bad = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut f = rest.split_ascii_whitespace();
            if let (Some(name), Some(kind)) = (f.next(), f.next()) {
                types.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        match parse_sample(line) {
            Some(s) => samples.push(s),
            None => bad += 1,
        }
    }
    (samples, types, bad)
}

fn parse_sample(line: &str) -> Option<TextSample> {
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        rest = &rest[1..];
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim();
            rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.push((key.to_string(), value));
            rest = &rest[end + 1..];
        }
    }
    let value_text = rest.split_ascii_whitespace().next()?;
    let value = match value_text {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(TextSample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn is_counter(name: &str, types: &HashMap<String, String>) -> bool {
    if let Some(t) = types.get(name) {
        return t == "counter";
    }
    for suffix in ["_total", "_count", "_sum", "_bucket"] {
        if let Some(family) = name.strip_suffix(suffix) {
            return match types.get(family).map(String::as_str) {
                Some("histogram" | "summary" | "counter") | None => true,
                Some(_) => false,
            };
        }
    }
    false
}

/// `GET url` over plain HTTP/1.0; the body when the status is 200.
async fn fetch(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// targets")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let mut conn = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    conn.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/plain\r\nUser-Agent: argus-agent\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    (&mut conn)
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut buf)
        .await?;
    if buf.len() > MAX_RESPONSE {
        bail!("response over {MAX_RESPONSE} bytes");
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    let status = head.split_ascii_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("status {status}");
    }
    Ok(body.to_string())
}

/// Scrapes `target` every `interval` until the task is dropped.
pub async fn run(
    target: ScrapeTarget,
    interval: Duration,
    common: Vec<(String, String)>,
    catalog: Arc<Catalog>,
    outbox: Arc<Outbox>,
    health: Arc<Health>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let body = match tokio::time::timeout(interval, fetch(&target.url)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                health.scrapes_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target = %target.url, error = %e, "scrape failed");
                continue;
            }
            Err(_) => {
                health.scrapes_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target = %target.url, "scrape timed out");
                continue;
            }
        };
        let now = crate::intake::now_ms();
        let (parsed, types, bad) = parse_text(&body);
        health
            .invalid_input
            .fetch_add(bad as u64, Ordering::Relaxed);
        let mut samples = Vec::with_capacity(parsed.len());
        for s in parsed {
            let mut tags = common.clone();
            tags.extend(target.tags.iter().cloned());
            for (k, v) in &s.labels {
                if v.is_empty() {
                    continue;
                }
                let mut key = sanitize(k);
                if key.chars().count() == 1 {
                    key.push('_');
                }
                tags.push((key, sanitize(v)));
            }
            tags.push(("name".to_string(), sanitize(&s.name)));
            let dstype = if is_counter(&s.name, &types) {
                "counter"
            } else {
                "gauge"
            };
            tags.push(("atlas.dstype".to_string(), dstype.to_string()));
            match catalog.intern(tags) {
                Ok(series) => samples.push(Sample {
                    series,
                    ts_ms: now,
                    value: s.value,
                }),
                Err(refusal) => refusal.count(&health),
            }
        }
        outbox.push(Payload::Metrics(samples));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let text = "# HELP node_cpu_seconds_total Seconds.\n# TYPE node_cpu_seconds_total counter\n\
                    node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 1234.5\n\
                    node_load1 0.25\n\
                    weird{path=\"a\\\"b\",x=\"\"} 1 1700000000000\n\
                    broken{ 1\n\
                    up NaN\n";
        let (samples, types, bad) = parse_text(text);
        assert_eq!(bad, 1);
        assert_eq!(samples.len(), 4);
        assert_eq!(
            samples[0].labels,
            [("cpu".into(), "0".into()), ("mode".into(), "idle".into())]
        );
        assert_eq!(samples[2].labels[0].1, "a\"b");
        assert!(samples[3].value.is_nan());
        assert!(is_counter("node_cpu_seconds_total", &types));
        assert!(!is_counter("node_load1", &types));
        assert!(is_counter("http_requests_total", &HashMap::new()));
    }
}
