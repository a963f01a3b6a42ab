//! The server's own telemetry, typed, rendered at `GET /metrics` in Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use argus_tsdb::Store;
use parking_lot::Mutex;

use crate::validation::RejectReason;

#[derive(Default)]
pub struct ServerMetrics {
    rejected: [AtomicU64; RejectReason::ALL.len()],
    /// Raw events refused (not JSON objects, too large, bad stream names).
    events_rejected: AtomicU64,
    http: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Queries stopped by a limit, by which: series, time, client gone.
    pub queries_stopped: [AtomicU64; 4],
}

/// The reasons of `argus_queries_stopped_total`, in `ServerMetrics::queries_stopped` order.
pub const QUERY_STOP_REASONS: [&str; 4] = ["max_series", "timeout", "client_gone", "max_memory"];

impl ServerMetrics {
    pub fn reject(&self, reason: RejectReason, n: u64) {
        self.rejected[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts every refused sample of a request, by reason.
    /// (Ingest paths count through `Outcome::taken`.)
    pub fn count_samples(&self, refusals: &crate::validation::Refusals) {
        for (reason, n) in refusals.by_reason() {
            self.reject(reason, n);
        }
    }

    /// Counts refused raw events.
    pub fn count_events(&self, n: u64) {
        self.events_rejected.fetch_add(n, Ordering::Relaxed);
    }

    pub fn events_rejected(&self) -> u64 {
        self.events_rejected.load(Ordering::Relaxed)
    }

    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// Counts one HTTP request by route template (never the raw path, which is unbounded).
    pub fn http_request(&self, route: &'static str, status: u16) {
        *self.http.lock().entry((route, status)).or_default() += 1;
    }

    pub fn render(&self, store: &Store, connections: &crate::connections::Connections) -> String {
        let mut out = String::with_capacity(4096);
        let mem = store.memory();
        let _ = writeln!(
            out,
            "# HELP argus_series Series held in memory.\n# TYPE argus_series gauge"
        );
        let _ = writeln!(out, "argus_series {}", store.series_count());
        let _ = writeln!(
            out,
            "# HELP argus_series_removed_total Series removed by maintenance, left with nothing inside the retention.\n# TYPE argus_series_removed_total counter"
        );
        let _ = writeln!(out, "argus_series_removed_total {}", store.series_dropped());
        let _ = writeln!(
            out,
            "# HELP argus_samples_stored_total Samples accepted into the store.\n# TYPE argus_samples_stored_total counter"
        );
        let _ = writeln!(out, "argus_samples_stored_total {}", store.samples_stored());
        let _ = writeln!(
            out,
            "# HELP argus_queries_stopped_total Graph queries stopped by a limit, by reason.\n# TYPE argus_queries_stopped_total counter"
        );
        for (reason, n) in QUERY_STOP_REASONS.iter().zip(&self.queries_stopped) {
            let _ = writeln!(
                out,
                "argus_queries_stopped_total{{reason=\"{reason}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP argus_connections_open Connections open, by listener.\n# TYPE argus_connections_open gauge"
        );
        for cap in [&connections.http, &connections.grpc] {
            let _ = writeln!(
                out,
                "argus_connections_open{{listener=\"{}\"}} {}",
                cap.listener,
                cap.open()
            );
        }
        let _ = writeln!(
            out,
            "# HELP argus_connections_refused_total Connections refused because the listener held --max-connections, by listener.\n# TYPE argus_connections_refused_total counter"
        );
        for cap in [&connections.http, &connections.grpc] {
            let _ = writeln!(
                out,
                "argus_connections_refused_total{{listener=\"{}\"}} {}",
                cap.listener,
                cap.refused()
            );
        }
        if let Some(w) = store.wal_stats() {
            for (name, help, kind, value) in [
                (
                    "argus_wal_segment",
                    "Number of the write-ahead log segment being written.",
                    "gauge",
                    w.segment,
                ),
                (
                    "argus_wal_bytes_written_total",
                    "Bytes appended to the write-ahead log since start.",
                    "counter",
                    w.bytes_written,
                ),
                (
                    "argus_wal_writes_total",
                    "Writes to the write-ahead log since start.",
                    "counter",
                    w.records_written,
                ),
                (
                    "argus_wal_write_errors_total",
                    "Writes to the write-ahead log that failed (disk full, I/O errors); each refused its batch with a retryable error.",
                    "counter",
                    w.write_errors,
                ),
                (
                    "argus_wal_syncs_total",
                    "Times the write-ahead log was forced to disk.",
                    "counter",
                    w.syncs,
                ),
            ] {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP argus_events_rejected_total Raw events refused (not JSON objects, too large, bad stream names).\n# TYPE argus_events_rejected_total counter\nargus_events_rejected_total {}",
            self.events_rejected()
        );
        let _ = writeln!(
            out,
            "# HELP argus_samples_rejected_total Datapoints refused, by reason.\n# TYPE argus_samples_rejected_total counter"
        );
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "argus_samples_rejected_total{{reason=\"{}\"}} {}",
                r.label(),
                self.rejected[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP argus_memory_bytes Estimated heap bytes held by the store, by part.\n# TYPE argus_memory_bytes gauge"
        );
        for (part, n) in [
            ("values", mem.head_and_sealed_bytes),
            ("series", mem.series_struct_bytes),
            ("tags", mem.tag_bytes),
            ("index", mem.index_bytes),
            ("strings", mem.interner_bytes),
        ] {
            let _ = writeln!(out, "argus_memory_bytes{{part=\"{part}\"}} {n}");
        }
        if let Some((in_use, free)) = crate::memory::allocator_bytes() {
            let _ = writeln!(
                out,
                "# HELP argus_allocator_bytes The allocator's heap: bytes in use, and free but held.\n# TYPE argus_allocator_bytes gauge"
            );
            let _ = writeln!(out, "argus_allocator_bytes{{state=\"in_use\"}} {in_use}");
            let _ = writeln!(out, "argus_allocator_bytes{{state=\"free\"}} {free}");
        }
        let _ = writeln!(
            out,
            "# HELP argus_http_requests_total HTTP requests, by route and status.\n# TYPE argus_http_requests_total counter"
        );
        for ((route, status), n) in self.http.lock().iter() {
            let _ = writeln!(
                out,
                "argus_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out
    }
}
