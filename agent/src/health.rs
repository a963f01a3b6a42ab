//! The agent's own health, counted as it happens and published with everything else as
//! `argus.agent.*` series every step (Vector's "internal events" idea): what was sent, what
//! was dropped and why, how full the buffer is, how often the connection was lost.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    pub samples_sent: AtomicU64,
    pub events_sent: AtomicU64,
    /// Dropped because the buffer was full (the oldest go first).
    pub dropped_samples_buffer_full: AtomicU64,
    pub dropped_events_buffer_full: AtomicU64,
    /// Refused by the server (reasons in the agent's log).
    pub rejected_by_server: AtomicU64,
    /// Input the agent could not read (a bad StatsD line, a non-JSON event, ...).
    pub invalid_input: AtomicU64,
    /// New series refused because the catalog is full (by count or by its memory budget).
    pub dropped_too_many_series: AtomicU64,
    /// Updates of new series refused because the step already had `--max-series-per-step`
    /// series.
    pub dropped_series_per_step: AtomicU64,
    /// Dropped because one batch would have been over the server's message limit.
    pub dropped_samples_too_large: AtomicU64,
    pub dropped_events_too_large: AtomicU64,
    /// The largest message sent to the server, in bytes (before compression).
    pub batch_bytes_max: AtomicU64,
    /// Memory the series catalog holds, as it counts it.
    pub series_bytes: AtomicU64,
    pub reconnects: AtomicU64,
    pub buffer_bytes: AtomicU64,
    pub statsd_packets: AtomicU64,
    /// StatsD packets the kernel dropped because the receive buffer was full (its count,
    /// read every step).
    pub statsd_kernel_drops: AtomicU64,
    pub scrapes_failed: AtomicU64,
    /// Scrapes that returned a body, the connections they opened (fewer than scrapes: the
    /// connection is kept alive), and the body bytes as they travelled (gzip) and decoded.
    pub scrapes: AtomicU64,
    pub scrape_connections: AtomicU64,
    pub scrape_bytes_wire: AtomicU64,
    pub scrape_bytes_decoded: AtomicU64,
    /// Raw events taken in (HTTP intake, tailed files).
    pub events_received: AtomicU64,
    /// Events that matched a live subscription and were queued for the server, and their
    /// bytes as queued (only the fields the subscriptions need).
    pub events_selected: AtomicU64,
    pub event_bytes_selected: AtomicU64,
    /// Events no live subscription asked for: never sent.
    pub events_unwanted: AtomicU64,
    /// Event bytes written to the event stream (JSON, before gRPC compression; a resend
    /// counts again).
    pub event_bytes_sent: AtomicU64,
    /// Live subscriptions running here now.
    pub live_subscriptions: AtomicU64,
    /// The step the agent aggregates over, in ms (the server's once connected).
    pub step_ms: AtomicU64,
    /// SpectatorD's datagrams, lines taken, and lines refused by reason.
    pub spectatord: std::sync::Arc<SpectatordCounts>,
}

/// SpectatorD's datagrams, lines taken, and lines refused by reason (indexed as
/// `spectatord::Malformed`, tagged as [`SPECTATORD_REFUSALS`]).
#[derive(Debug, Default)]
pub struct SpectatordCounts {
    pub packets: AtomicU64,
    pub lines: AtomicU64,
    pub malformed: [AtomicU64; SPECTATORD_REFUSALS.len()],
}

/// The tags of each count of refused SpectatorD lines, in `spectatord::Malformed`'s order.
pub const SPECTATORD_REFUSALS: [&[(&str, &str)]; 7] = [
    &[("id", "spectatord_lines"), ("reason", "not_utf8")],
    &[("id", "spectatord_lines"), ("reason", "unknown_type")],
    &[("id", "spectatord_lines"), ("reason", "bad_option")],
    &[("id", "spectatord_lines"), ("reason", "missing_separator")],
    &[("id", "spectatord_lines"), ("reason", "missing_name")],
    &[("id", "spectatord_lines"), ("reason", "bad_tag")],
    &[("id", "spectatord_lines"), ("reason", "bad_value")],
];

/// One counter of the health, as a series: name, tags, and whether it is a gauge.
pub struct HealthSeries {
    pub name: &'static str,
    pub tags: &'static [(&'static str, &'static str)],
    pub gauge: bool,
    pub value: u64,
}

impl Health {
    /// Every counter with its value now.
    pub fn series(&self) -> Vec<HealthSeries> {
        let c = |name, tags, v: &AtomicU64| HealthSeries {
            name,
            tags,
            gauge: false,
            value: v.load(Ordering::Relaxed),
        };
        let mut out = vec![
            c("argus.agent.sent", &[("id", "samples")], &self.samples_sent),
            c("argus.agent.sent", &[("id", "events")], &self.events_sent),
            c(
                "argus.agent.dropped",
                &[("id", "samples"), ("reason", "buffer_full")],
                &self.dropped_samples_buffer_full,
            ),
            c(
                "argus.agent.dropped",
                &[("id", "events"), ("reason", "buffer_full")],
                &self.dropped_events_buffer_full,
            ),
            c(
                "argus.agent.dropped",
                &[("id", "samples"), ("reason", "rejected")],
                &self.rejected_by_server,
            ),
            c(
                "argus.agent.dropped",
                &[("id", "input"), ("reason", "invalid")],
                &self.invalid_input,
            ),
            c(
                "argus.agent.dropped",
                &[("id", "statsd_packets"), ("reason", "receive_buffer_full")],
                &self.statsd_kernel_drops,
            ),
            c(
                "argus.agent.dropped",
                &[("id", "series"), ("reason", "too_many_series")],
                &self.dropped_too_many_series,
            ),
            c(
                "argus.agent.dropped",
                &[("id", "samples"), ("reason", "series_per_step")],
                &self.dropped_series_per_step,
            ),
            c(
                "argus.agent.dropped",
                &[("id", "samples"), ("reason", "too_large")],
                &self.dropped_samples_too_large,
            ),
            c(
                "argus.agent.dropped",
                &[("id", "events"), ("reason", "too_large")],
                &self.dropped_events_too_large,
            ),
            c(
                "argus.agent.events",
                &[("id", "received")],
                &self.events_received,
            ),
            c(
                "argus.agent.events",
                &[("id", "selected")],
                &self.events_selected,
            ),
            c(
                "argus.agent.events",
                &[("id", "unwanted")],
                &self.events_unwanted,
            ),
            c(
                "argus.agent.event.bytes",
                &[("id", "selected")],
                &self.event_bytes_selected,
            ),
            c(
                "argus.agent.event.bytes",
                &[("id", "sent")],
                &self.event_bytes_sent,
            ),
            HealthSeries {
                name: "argus.agent.live.subscriptions",
                tags: &[],
                gauge: true,
                value: self.live_subscriptions.load(Ordering::Relaxed),
            },
            HealthSeries {
                name: "argus.agent.step.ms",
                tags: &[],
                gauge: true,
                value: self.step_ms.load(Ordering::Relaxed),
            },
            c("argus.agent.reconnects", &[], &self.reconnects),
            c("argus.agent.statsd.packets", &[], &self.statsd_packets),
            c("argus.agent.scrape.failures", &[], &self.scrapes_failed),
            c("argus.agent.scrape.count", &[], &self.scrapes),
            c(
                "argus.agent.scrape.connections",
                &[],
                &self.scrape_connections,
            ),
            c(
                "argus.agent.scrape.bytes",
                &[("id", "wire")],
                &self.scrape_bytes_wire,
            ),
            c(
                "argus.agent.scrape.bytes",
                &[("id", "decoded")],
                &self.scrape_bytes_decoded,
            ),
            HealthSeries {
                name: "argus.agent.buffer.bytes",
                tags: &[],
                gauge: true,
                value: self.buffer_bytes.load(Ordering::Relaxed),
            },
            HealthSeries {
                name: "argus.agent.series.bytes",
                tags: &[],
                gauge: true,
                value: self.series_bytes.load(Ordering::Relaxed),
            },
            HealthSeries {
                name: "argus.agent.batch.bytes.max",
                tags: &[],
                gauge: true,
                value: self.batch_bytes_max.load(Ordering::Relaxed),
            },
            c(
                "argus.agent.spectatord.packets",
                &[],
                &self.spectatord.packets,
            ),
            c("argus.agent.spectatord.lines", &[], &self.spectatord.lines),
        ];
        for (tags, count) in SPECTATORD_REFUSALS.iter().zip(&self.spectatord.malformed) {
            out.push(c("argus.agent.dropped", tags, count));
        }
        out
    }

    /// The counters as a JSON object, for the intake's `/v1/health`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        for s in self.series() {
            let mut key = s.name.trim_start_matches("argus.agent.").to_string();
            for (k, v) in s.tags {
                key.push_str(&format!(".{k}={v}"));
            }
            obj.insert(key, s.value.into());
        }
        serde_json::Value::Object(obj)
    }
}
