//! Entries for the fuzz targets of the server's decoders of outside input (`ingest/fuzz`)
//! and their corpus replay (`ingest/tests/fuzz_corpus.rs`): Atlas publish JSON (plain and
//! gzip), the aggregator's update payload (plain and gzip) and Prometheus remote write (the protobuf walk, plain and snappy-framed). Each
//! decodes `data` and stores what it accepts into a fresh in-memory store; nothing may
//! panic, and allocations stay proportional to `data` (or to the limit given).

use std::sync::Arc;

use argus_tsdb::{Store, StoreConfig};

use crate::convert::RemoteWriteState;
use crate::convert::publish::{Mode, decode_body, parse_payload, store_datapoints};
use crate::metrics::ServerMetrics;

const NOW: i64 = 1_700_000_000_000;
const RETENTION: i64 = 6 * 3_600_000;
/// The decompressed-size limit the entries use, as `--max-body-bytes` would.
const LIMIT: usize = 1 << 20;

fn store() -> Store {
    Store::with_clock(StoreConfig::new(60_000, RETENTION), Arc::new(|| NOW))
}

/// An Atlas publish payload, as publish and as backfill, then as a gzip body.
pub fn publish_json(data: &[u8]) {
    let store = store();
    for mode in [Mode::Publish, Mode::Backfill] {
        if let Ok(parsed) = parse_payload(data, mode, NOW, 60_000, RETENTION) {
            let _ = store_datapoints(store.writer(), parsed, &ServerMetrics::default(), None);
        }
    }
    if let Ok(body) = decode_body(data, Some("gzip"), LIMIT)
        && let Ok(parsed) = parse_payload(&body, Mode::Publish, NOW, 60_000, RETENTION)
    {
        let _ = store_datapoints(store.writer(), parsed, &ServerMetrics::default(), None);
    }
}

/// The aggregator's update payload (`POST /api/v4/update`), plain then as a gzip body.
pub fn aggregator_update(data: &[u8]) {
    let store = store();
    if let Ok(parsed) = crate::convert::aggregator::parse_update(data, NOW, 60_000) {
        let _ = store_datapoints(store.writer(), parsed, &ServerMetrics::default(), None);
    }
    if let Ok(body) = decode_body(data, Some("gzip"), LIMIT)
        && let Ok(parsed) = crate::convert::aggregator::parse_update(&body, NOW, 60_000)
    {
        let _ = store_datapoints(store.writer(), parsed, &ServerMetrics::default(), None);
    }
}

/// A remote-write `WriteRequest`, twice (the second time through the known-series cache),
/// then as a snappy-compressed body checked against the limit as the HTTP handler does.
pub fn remote_write(data: &[u8]) {
    let store = store();
    let state = RemoteWriteState::default();
    for _ in 0..2 {
        let writer = store.writer();
        if let Ok(mut conv) = state.convert(&writer, data) {
            let _ = conv.store(&writer, &[], &ServerMetrics::default());
        }
    }
    if let Ok(len) = snap::raw::decompress_len(data)
        && len <= LIMIT
    {
        let mut raw = vec![0u8; len];
        let writer = store.writer();
        if snap::raw::Decoder::new().decompress(data, &mut raw).is_ok()
            && let Ok(mut conv) = state.convert(&writer, &raw)
        {
            let _ = conv.store(&writer, &[], &ServerMetrics::default());
        }
    }
}
