//! Scraping Prometheus endpoints of local services: an HTTP/1.1 GET every interval on a
//! connection kept alive between scrapes (TLS for `https://` targets, gzip accepted, the
//! whole scrape bounded by a timeout), the text exposition format parsed, each sample queued
//! with the scrape's timestamp.
//! Counters (by `# TYPE`, or else by the `_total`, `_count`, `_sum`, `_bucket` names) go
//! as `atlas.dstype=counter` so the server stores their per-second rate; the rest as
//! gauges. `__name__` is `name`; characters Atlas does not allow become `_`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use argus_proto::http_client::{self, Endpoint};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;

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

/// Longest a scrape may take (connecting included), as Prometheus's default; a shorter
/// interval bounds it instead.
const MAX_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// One target's client: where it is, its TLS settings, and the connection kept between
/// scrapes.
struct Client {
    endpoint: Endpoint,
    path: String,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    conn: Option<SendRequest<Empty<Bytes>>>,
    timeout_header: String,
}

impl Client {
    fn new(target: &ScrapeTarget, timeout: Duration) -> anyhow::Result<Client> {
        let endpoint = Endpoint::parse(&target.url)?;
        let tls = match endpoint.tls {
            true => Some(http_client::tls_config(target.ca.as_deref())?),
            false => None,
        };
        let path = match endpoint.path.as_str() {
            "" => "/metrics".to_string(),
            p => p.to_string(),
        };
        Ok(Client {
            endpoint,
            path,
            tls,
            conn: None,
            timeout_header: format!("{}", timeout.as_secs_f64()),
        })
    }

    /// `GET` the target: the body when the status is 200. A connection that failed is
    /// dropped, so the next scrape opens a new one.
    async fn fetch(&mut self, health: &Health) -> anyhow::Result<Vec<u8>> {
        let result = self.try_fetch(health).await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn try_fetch(&mut self, health: &Health) -> anyhow::Result<Vec<u8>> {
        let reusable = match &mut self.conn {
            Some(conn) => conn.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            self.conn = Some(http_client::connect(&self.endpoint, self.tls.as_ref()).await?);
            health.scrape_connections.fetch_add(1, Ordering::Relaxed);
        }
        let req = http_client::get(
            &self.endpoint,
            &self.path,
            &[
                (
                    hyper::header::ACCEPT,
                    "text/plain;version=0.0.4;q=1,*/*;q=0.1",
                ),
                (hyper::header::ACCEPT_ENCODING, "gzip"),
                (hyper::header::USER_AGENT, "argus-agent"),
                (
                    hyper::header::HeaderName::from_static("x-prometheus-scrape-timeout-seconds"),
                    &self.timeout_header,
                ),
            ],
        )?;
        let conn = self.conn.as_mut().context("no connection")?;
        let resp = conn
            .send_request(req)
            .await
            .context("sending the request")?;
        let status = resp.status();
        if status != hyper::StatusCode::OK {
            bail!("status {status}");
        }
        let (body, wire) = http_client::read_body(resp, MAX_RESPONSE).await?;
        health
            .scrape_bytes_wire
            .fetch_add(wire as u64, Ordering::Relaxed);
        health
            .scrape_bytes_decoded
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(body)
    }
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
    let timeout = interval.min(MAX_SCRAPE_TIMEOUT);
    let mut client = match Client::new(&target, timeout) {
        Ok(c) => c,
        Err(e) => {
            // Checked with the settings; reached only if the CA file changed since.
            tracing::error!(target = %target.url, error = %format!("{e:#}"), "cannot scrape");
            return;
        }
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let body = match tokio::time::timeout(timeout, client.fetch(&health)).await {
            Ok(Ok(b)) => {
                health.scrapes.fetch_add(1, Ordering::Relaxed);
                String::from_utf8_lossy(&b).into_owned()
            }
            Ok(Err(e)) => {
                health.scrapes_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target = %target.url, error = %format!("{e:#}"), "scrape failed");
                continue;
            }
            Err(_) => {
                // The request may still be in flight on this connection: start afresh.
                client.conn = None;
                health.scrapes_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target = %target.url, ?timeout, "scrape timed out");
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
        outbox.push("scrape", Payload::Metrics(samples));
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
