//! Wire formats to store types, in one place: the agent protocol (`argus.v1`), Prometheus
//! remote write, OTLP metrics and OTLP logs. Each turns what arrives into series (tags and
//! how samples land on steps) and samples, or into events, with a reason for everything it
//! refuses. Nothing here knows HTTP or gRPC transport.

use ahash::AHashMap;
use argus_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use argus_proto::otlp::metrics::v1::{AggregationTemporality, metric, number_data_point};
use argus_proto::remote_write::{MetricType, STALE_NAN_BITS};
use argus_proto::v1;
use std::sync::Arc;

use argus_tsdb::{DsType, Sample, SeriesId, Store, TagMap, Writer};
use parking_lot::RwLock;

use crate::events::Event;
use crate::validation::{Refusals, RejectReason, Rejection, clip, validate_tags};

/// What a conversion produced: samples for the store and every refusal.
#[derive(Debug, Default)]
pub struct Converted {
    pub samples: Vec<Sample>,
    pub refusals: Refusals,
}

impl Converted {
    pub fn reject(&mut self, r: Rejection) {
        self.refusals.add(r);
    }

    pub fn rejected_count(&self) -> usize {
        self.refusals.total() as usize
    }

    /// Appends the samples to the store, adding what it refuses (outside the retention
    /// window) to the refusals. Returns the number stored, or the store's retryable error
    /// (nothing stored) when it cannot make the batch durable; `origin` goes into the log
    /// with the batch (see `Store::try_append_batch`).
    /// The writer must be the one the samples' series were resolved under.
    pub fn store(&mut self, w: &Writer<'_>, origin: &[u8]) -> Result<usize, argus_tsdb::Error> {
        let outcome = w.try_append_batch(&self.samples, origin)?;
        for (_, err) in outcome.rejected {
            self.reject(Rejection::new(
                RejectReason::OutOfRetention,
                err.to_string(),
            ));
        }
        Ok(outcome.stored)
    }

    /// The first refusals, for a response.
    pub fn reasons(&self) -> Vec<String> {
        self.refusals.reasons()
    }
}

pub use argus_proto::rules::sanitize;

/// A key made acceptable to Atlas's rules where it can be without losing meaning: bad
/// characters become `_` and a one-character key gets a `_` appended (Atlas keys have at
/// least two characters).
fn sanitize_key(k: &str) -> String {
    let mut key = sanitize(k).into_owned();
    if key.chars().count() == 1 {
        key.push('_');
    }
    key
}

// ------------------------------------------------------------------------------------------
// The agent protocol.

/// One stream's series table: the agent's local ids to store ids (or why a series was
/// refused). The table outlives any one [`Writer`], so every id in it is pinned: the store
/// keeps those series, however long they stay empty, until the stream ends.
pub struct StreamSeries {
    store: Arc<Store>,
    ids: Vec<Option<Result<SeriesId, Rejection>>>,
    /// The last batch's sample buffer, reused: batches are large and alike.
    spare: Vec<Sample>,
}

impl Drop for StreamSeries {
    fn drop(&mut self) {
        let pinned: Vec<SeriesId> = self.ids.iter().flatten().flatten().copied().collect();
        self.store.unpin(&pinned);
    }
}

/// Local series ids above this are refused: they index a table per stream.
pub const MAX_LOCAL_ID: u32 = 10_000_000;

impl StreamSeries {
    pub fn new(store: Arc<Store>) -> Self {
        StreamSeries {
            store,
            ids: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Converts a metric batch: new definitions are resolved (tags checked with Atlas's
    /// rules; `atlas.dstype` picks the normalization, rate by default) and pinned, then
    /// every sample is mapped to its series. `w` is a writer of this stream's store.
    pub fn convert(&mut self, w: &Writer<'_>, batch: &v1::MetricBatch) -> Converted {
        debug_assert!(std::ptr::eq(w.store(), &*self.store));
        let mut out = Converted::default();
        let mut unpin = Vec::new();
        for def in &batch.definitions {
            if def.id > MAX_LOCAL_ID {
                out.reject(Rejection::new(
                    RejectReason::InvalidTagValue,
                    format!("series id {} is over the limit of {MAX_LOCAL_ID}", def.id),
                ));
                continue;
            }
            let tags: TagMap = def
                .tags
                .iter()
                .map(|t| (t.key.clone(), t.value.clone()))
                .collect();
            let resolved = validate_tags(&tags).and_then(|()| {
                w.try_resolve(&tags, None)
                    .map_err(|e| Rejection::from_store(e, &tags))
            });
            if let Ok(id) = resolved {
                w.pin(&[id]);
            }
            let i = def.id as usize;
            if self.ids.len() <= i {
                self.ids.resize(i + 1, None);
            }
            // A local id defined again (the agent's series table was reset) lets go of
            // the series it named.
            if let Some(Ok(old)) = self.ids[i].replace(resolved) {
                unpin.push(old);
            }
        }
        self.store.unpin(&unpin);
        let n: usize = batch.groups.iter().map(|g| g.series.len()).sum();
        out.samples = std::mem::take(&mut self.spare);
        out.samples.clear();
        out.samples.reserve(n);
        for group in &batch.groups {
            if group.series.len() != group.values.len() {
                out.reject(Rejection::new(
                    RejectReason::InvalidValue,
                    format!(
                        "sample group at {} has {} series but {} values",
                        group.timestamp_ms,
                        group.series.len(),
                        group.values.len()
                    ),
                ));
                continue;
            }
            for (&local, &value) in group.series.iter().zip(&group.values) {
                match self.ids.get(local as usize) {
                    Some(Some(Ok(id))) => out.samples.push(Sample {
                        id: *id,
                        ts_ms: group.timestamp_ms,
                        value,
                    }),
                    Some(Some(Err(r))) => {
                        let r = r.clone();
                        out.reject(r);
                    }
                    _ => out.reject(Rejection::new(
                        RejectReason::InvalidTagValue,
                        format!("sample for series {local}, which this stream never defined"),
                    )),
                }
            }
        }
        out
    }
}

impl StreamSeries {
    /// Hands a stored batch's sample buffer back for the next batch.
    pub fn recycle(&mut self, samples: Vec<Sample>) {
        self.spare = samples;
    }
}

/// Events of an agent's event batch.
pub fn agent_events(batch: &v1::EventBatch) -> (Vec<Event>, Refusals) {
    let mut events = Vec::with_capacity(batch.events.len());
    let mut rejected = Refusals::default();
    for (i, e) in batch.events.iter().enumerate() {
        if e.json.len() > crate::events::MAX_EVENT_BYTES {
            rejected.add(Rejection::new(
                RejectReason::InvalidValue,
                format!("event {i}: {} bytes is over the limit", e.json.len()),
            ));
        } else {
            match serde_json::from_slice::<serde_json::Value>(&e.json) {
                Ok(value @ serde_json::Value::Object(_)) => events.push(Event {
                    ts_ms: e.timestamp_ms,
                    value,
                    bytes: e.json.len(),
                    subscriptions: e.subscriptions.clone(),
                }),
                _ => rejected.add(Rejection::new(
                    RejectReason::InvalidValue,
                    format!("event {i}: not a JSON object"),
                )),
            }
        }
    }
    (events, rejected)
}

// ------------------------------------------------------------------------------------------
// Prometheus remote write.

/// What the server remembers between remote-write requests: metric types from metadata,
/// and the store id of every label set seen, so that a known series costs a hash and a
/// lookup instead of building and checking its tags again.
#[derive(Default)]
pub struct RemoteWriteState {
    types: RwLock<AHashMap<String, MetricType>>,
    cache: RwLock<SeriesCache>,
}

#[derive(Default)]
struct SeriesCache {
    /// The store's `series_dropped` count when the cache was filled; ids are reused after a
    /// drop, so a change clears the cache.
    epoch: u64,
    ids: AHashMap<u128, Result<SeriesId, Rejection>>,
}

/// Entries the series cache holds at most before it is cleared and refilled.
const MAX_CACHED_SERIES: usize = 4_000_000;

/// Reads protobuf wire format without allocating: just what a `WriteRequest` needs.
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

#[derive(Debug)]
pub struct WireError(pub String);

impl<'a> Wire<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Wire { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| WireError(format!("truncated varint at byte {}", self.pos)))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError(format!("varint too long at byte {}", self.pos)))
    }

    /// The next field's number and wire type.
    fn key(&mut self) -> Result<(u64, u8), WireError> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }

    /// Skips a field the reader does not use, after checking that it can belong to
    /// `message`, whose fields are `fields` (number, wire type, name): bytes that are not
    /// this message (a field numbered 0, a known field of another wire type) fail here
    /// rather than being skipped as unknown. Called only for what the known arms did not
    /// take, so the common path pays nothing.
    fn skip_other(
        &mut self,
        (number, wire_type): (u64, u8),
        message: &str,
        fields: &[(u64, u8, &str)],
    ) -> Result<(), WireError> {
        if number == 0 {
            return Err(WireError(format!(
                "field number 0 before byte {}: not a {message}",
                self.pos
            )));
        }
        if let Some((_, want, name)) = fields.iter().find(|f| f.0 == number)
            && *want != wire_type
        {
            return Err(WireError(format!(
                "{message}.{name} (field {number}) before byte {} has wire type {wire_type}, \
                 expected {want}: not a {message}",
                self.pos
            )));
        }
        self.skip(wire_type)
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()? as usize;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                WireError(format!(
                    "length {len} at byte {} runs past the end ({} bytes)",
                    self.pos,
                    self.buf.len()
                ))
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn fixed64(&mut self) -> Result<u64, WireError> {
        let b = self
            .buf
            .get(self.pos..self.pos + 8)
            .ok_or_else(|| WireError(format!("truncated fixed64 at byte {}", self.pos)))?;
        self.pos += 8;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        Ok(u64::from_le_bytes(w))
    }

    fn skip(&mut self, wire_type: u8) -> Result<(), WireError> {
        match wire_type {
            0 => self.varint().map(|_| ()),
            1 => self.fixed64().map(|_| ()),
            2 => self.bytes().map(|_| ()),
            5 => {
                if self.pos + 4 > self.buf.len() {
                    return Err(WireError(format!("truncated fixed32 at byte {}", self.pos)));
                }
                self.pos += 4;
                Ok(())
            }
            t => Err(WireError(format!(
                "unsupported wire type {t} at byte {}",
                self.pos
            ))),
        }
    }
}

fn utf8<'a>(b: &'a [u8], what: &str) -> Result<&'a str, WireError> {
    std::str::from_utf8(b).map_err(|e| WireError(format!("{what} is not UTF-8: {e}")))
}

/// The series a Prometheus label set becomes: `__name__` is `name`, empty labels are absent,
/// characters Atlas does not allow become `_`, and the dstype follows the metric type
/// (counters, from metadata or else from the `_total`, `_count`, `_sum`, `_bucket` naming
/// convention, become per-second rates; everything else is a gauge).
pub fn prometheus_series(
    labels: &[(&str, &str)],
    types: &AHashMap<String, MetricType>,
) -> Result<(TagMap, DsType), Rejection> {
    let mut tags = TagMap::new();
    let mut name = None;
    for &(k, v) in labels {
        if v.is_empty() {
            continue;
        }
        if k == "__name__" {
            name = Some(v);
            tags.insert("name".to_string(), sanitize(v).into_owned());
        } else {
            tags.insert(sanitize_key(k), sanitize(v).into_owned());
        }
    }
    let Some(name) = name else {
        return Err(Rejection::new(
            RejectReason::MissingName,
            format!(
                "series without __name__: {{{}}}",
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={}", clip(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    validate_tags(&tags)?;
    let family_type = |family: &str| types.get(family).copied();
    let counter = match family_type(name) {
        Some(MetricType::Counter) => true,
        Some(_) => false,
        None => {
            let suffixed = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s));
            match suffixed.and_then(family_type) {
                Some(MetricType::Histogram | MetricType::Summary | MetricType::Gaugehistogram) => {
                    true
                }
                Some(_) => false,
                None => name.ends_with("_total") || suffixed.is_some(),
            }
        }
    };
    Ok((
        tags,
        if counter {
            DsType::Counter
        } else {
            DsType::Gauge
        },
    ))
}

/// 128 bits of hash (XXH3) of a series' raw label fields, hashed where they lie when they
/// are contiguous (as Prometheus writes them), part by part otherwise. Two encodings of one
/// label set may hash apart; both then resolve to the same series by their tags.
fn label_hash(ts: &[u8], region: Option<(usize, usize)>, parts: &[&[u8]]) -> u128 {
    match region {
        Some((lo, hi)) => xxhash_rust::xxh3::xxh3_128(&ts[lo..hi]),
        None => {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            for p in parts {
                h.update(&(p.len() as u32).to_le_bytes());
                h.update(p);
            }
            h.digest128()
        }
    }
}

/// One series of a request, parsed but not yet resolved: where its bytes lie in the
/// request, the hash of its labels, and its samples in [`Scratch::samples`].
struct RawSeries {
    hash: u128,
    bytes: std::ops::Range<usize>,
    samples: std::ops::Range<usize>,
}

/// Per-thread buffers for remote-write requests, reused: a request of 2,000 series would
/// otherwise allocate (and, past glibc's mmap threshold, map and fault in) several hundred
/// kilobytes of short-lived tables every time.
#[derive(Default)]
struct Scratch {
    series: Vec<RawSeries>,
    samples: Vec<(i64, f64)>,
    /// Per series: its store id, or `MISS`, or `REFUSED_BASE + i` for `refusals[i]`.
    ids: Vec<u64>,
    refusals: Vec<Rejection>,
}

const MISS: u64 = u64::MAX;
const REFUSED_BASE: u64 = 1 << 40;

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// The fields of the remote-write messages: (number, wire type, name).
const WRITE_REQUEST: &[(u64, u8, &str)] = &[(1, 2, "timeseries"), (3, 2, "metadata")];
const TIME_SERIES: &[(u64, u8, &str)] = &[(1, 2, "labels"), (2, 2, "samples")];
const LABEL: &[(u64, u8, &str)] = &[(1, 2, "name"), (2, 2, "value")];
const SAMPLE: &[(u64, u8, &str)] = &[(1, 1, "value"), (2, 0, "timestamp")];
const METADATA: &[(u64, u8, &str)] = &[(1, 0, "type"), (2, 2, "metric_family_name")];

/// The label fields of one TimeSeries message.
fn label_parts(ts: &[u8]) -> Result<Vec<&[u8]>, WireError> {
    let mut parts = Vec::with_capacity(16);
    let mut w = Wire::new(ts);
    while !w.done() {
        match w.key()? {
            (1, 2) => parts.push(w.bytes()?),
            other => w.skip_other(other, "TimeSeries", TIME_SERIES)?,
        }
    }
    Ok(parts)
}

impl RemoteWriteState {
    /// Converts a decompressed `WriteRequest`. Metadata updates the metric types first.
    /// Malformed protobuf fails the whole request (nothing is stored); a series that breaks
    /// Atlas's tag rules is refused with its reason and the rest is stored.
    pub fn convert(&self, writer: &Writer<'_>, body: &[u8]) -> Result<Converted, WireError> {
        let mut out = Converted::default();
        let mut series: Vec<std::ops::Range<usize>> = Vec::new();
        let mut w = Wire::new(body);
        while !w.done() {
            match w.key()? {
                (1, 2) => {
                    let len = w.bytes()?.len();
                    series.push(w.pos - len..w.pos);
                }
                (3, 2) => self.metadata(w.bytes()?)?,
                other => w.skip_other(other, "WriteRequest", WRITE_REQUEST)?,
            }
        }
        // Cached ids are good while no series has been removed since they were cached;
        // none can be while `w` is held.
        let dropped = writer.removals();
        {
            let cache = self.cache.read();
            if cache.epoch != dropped || cache.ids.len() > MAX_CACHED_SERIES {
                drop(cache);
                let mut cache = self.cache.write();
                cache.ids.clear();
                cache.epoch = dropped;
            }
        }
        SCRATCH.with(|cell| {
            let mut scratch = cell.take();
            let result = self.convert_series(writer, body, &series, &mut scratch, &mut out);
            scratch.series.clear();
            scratch.samples.clear();
            scratch.ids.clear();
            scratch.refusals.clear();
            cell.replace(scratch);
            result
        })?;
        Ok(out)
    }

    /// Parses every series first, so that the cache is read under one lock per request,
    /// then resolves the ones it does not know and emits the samples.
    fn convert_series(
        &self,
        w: &Writer<'_>,
        body: &[u8],
        series: &[std::ops::Range<usize>],
        scratch: &mut Scratch,
        out: &mut Converted,
    ) -> Result<(), WireError> {
        for range in series {
            let ts = &body[range.clone()];
            let first_sample = scratch.samples.len();
            // The byte range of the label fields, while nothing else comes between them.
            let mut region: Option<(usize, usize)> = None;
            let mut contiguous = true;
            let mut w = Wire::new(ts);
            while !w.done() {
                let field_start = w.pos;
                match w.key()? {
                    (1, 2) => {
                        w.bytes()?;
                        region = match region {
                            None => Some((field_start, w.pos)),
                            Some((lo, hi)) if hi == field_start => Some((lo, w.pos)),
                            Some(r) => {
                                contiguous = false;
                                Some(r)
                            }
                        };
                    }
                    (2, 2) => scratch.samples.push(parse_sample(w.bytes()?)?),
                    other => w.skip_other(other, "TimeSeries", TIME_SERIES)?,
                }
            }
            let hash = match region {
                Some(r) if contiguous => label_hash(ts, Some(r), &[]),
                _ => label_hash(ts, None, &label_parts(ts)?),
            };
            scratch.series.push(RawSeries {
                hash,
                bytes: range.clone(),
                samples: first_sample..scratch.samples.len(),
            });
        }
        let mut misses = false;
        {
            let cache = self.cache.read();
            for p in &scratch.series {
                let id = match cache.ids.get(&p.hash) {
                    Some(Ok(id)) => u64::from(*id),
                    Some(Err(r)) => {
                        scratch.refusals.push(r.clone());
                        REFUSED_BASE + scratch.refusals.len() as u64 - 1
                    }
                    None => {
                        misses = true;
                        MISS
                    }
                };
                scratch.ids.push(id);
            }
        }
        if misses {
            let types = self.types.read();
            let mut fresh = Vec::new();
            for (p, id) in scratch.series.iter().zip(scratch.ids.iter_mut()) {
                if *id != MISS {
                    continue;
                }
                let parts = label_parts(&body[p.bytes.clone()])?;
                let mut labels = Vec::with_capacity(parts.len());
                for part in parts {
                    labels.push(parse_label(part)?);
                }
                let resolved = prometheus_series(&labels, &types).and_then(|(tags, dstype)| {
                    w.try_resolve(&tags, Some(dstype))
                        .map_err(|e| Rejection::from_store(e, &tags))
                });
                *id = match &resolved {
                    Ok(sid) => u64::from(*sid),
                    Err(r) => {
                        scratch.refusals.push(r.clone());
                        REFUSED_BASE + scratch.refusals.len() as u64 - 1
                    }
                };
                // A series refused by a cap may be taken once the cap allows: not cached.
                if !matches!(&resolved, Err(r) if r.reason == RejectReason::SeriesLimit) {
                    fresh.push((p.hash, resolved));
                }
            }
            drop(types);
            self.cache.write().ids.extend(fresh);
        }
        out.samples.reserve(scratch.samples.len());
        for (p, &id) in scratch.series.iter().zip(&scratch.ids) {
            if id >= REFUSED_BASE {
                let r = &scratch.refusals[(id - REFUSED_BASE) as usize];
                out.refusals.add_n(r.clone(), p.samples.len() as u64);
                continue;
            }
            let id = id as SeriesId;
            for &(ts_ms, value) in &scratch.samples[p.samples.clone()] {
                if value.to_bits() == STALE_NAN_BITS {
                    continue; // the series ended; nothing to store
                }
                out.samples.push(Sample { id, ts_ms, value });
            }
        }
        Ok(())
    }

    fn metadata(&self, bytes: &[u8]) -> Result<(), WireError> {
        let mut w = Wire::new(bytes);
        let (mut kind, mut family) = (0u64, "");
        while !w.done() {
            match w.key()? {
                (1, 0) => kind = w.varint()?,
                (2, 2) => family = utf8(w.bytes()?, "metric family name")?,
                other => w.skip_other(other, "MetricMetadata", METADATA)?,
            }
        }
        let Ok(kind) = MetricType::try_from(kind as i32) else {
            return Ok(());
        };
        if family.is_empty() {
            return Ok(());
        }
        let mut types = self.types.write();
        if types.len() < 100_000 || types.contains_key(family) {
            types.insert(family.to_string(), kind);
        }
        Ok(())
    }
}

fn parse_label(bytes: &[u8]) -> Result<(&str, &str), WireError> {
    let mut w = Wire::new(bytes);
    let (mut name, mut value) = ("", "");
    while !w.done() {
        match w.key()? {
            (1, 2) => name = utf8(w.bytes()?, "label name")?,
            (2, 2) => value = utf8(w.bytes()?, "label value")?,
            other => w.skip_other(other, "Label", LABEL)?,
        }
    }
    Ok((name, value))
}

fn parse_sample(bytes: &[u8]) -> Result<(i64, f64), WireError> {
    let mut w = Wire::new(bytes);
    let (mut ts, mut value) = (0i64, 0.0f64);
    while !w.done() {
        match w.key()? {
            (1, 1) => value = f64::from_bits(w.fixed64()?),
            (2, 0) => ts = w.varint()? as i64,
            other => w.skip_other(other, "Sample", SAMPLE)?,
        }
    }
    Ok((ts, value))
}

// ------------------------------------------------------------------------------------------
// OTLP.

/// A value of an OTLP attribute as a tag value or JSON.
fn any_value_text(v: &AnyValue) -> Option<String> {
    Some(match v.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        // Arrays, maps and bytes do not make tags; string-table indexes are for profiles.
        _ => return None,
    })
}

fn any_value_json(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match v.value.as_ref() {
        None => J::Null,
        Some(any_value::Value::StringValue(s)) => J::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => J::Bool(*b),
        Some(any_value::Value::IntValue(i)) => J::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(J::Null, J::Number)
        }
        Some(any_value::Value::ArrayValue(a)) => {
            J::Array(a.values.iter().map(any_value_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => J::Object(attributes_json(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => J::String(hex(b)),
        Some(any_value::Value::StringValueStrindex(_)) => J::Null,
    }
}

fn attributes_json(kvs: &[KeyValue]) -> serde_json::Map<String, serde_json::Value> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value
                    .as_ref()
                    .map_or(serde_json::Value::Null, any_value_json),
            )
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Resource attributes that become tags, and the tag each becomes (Atlas's names for the
/// application and the host). Others (`service.instance.id`, SDK details) would only add
/// cardinality.
const RESOURCE_TAGS: [(&str, &str); 2] = [("service.name", "nf.app"), ("host.name", "nf.node")];

fn resource_tags(attrs: &[KeyValue]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (from, to) in RESOURCE_TAGS {
        if let Some(v) = attrs
            .iter()
            .find(|kv| kv.key == from)
            .and_then(|kv| kv.value.as_ref())
            .and_then(any_value_text)
            && !v.is_empty()
        {
            out.push((to.to_string(), sanitize(&v).into_owned()));
        }
    }
    out
}

fn point_tags(
    name: &str,
    base: &[(String, String)],
    attrs: &[KeyValue],
    extra: &[(&str, String)],
) -> TagMap {
    let mut tags = TagMap::new();
    for (k, v) in base {
        tags.insert(k.clone(), v.clone());
    }
    for kv in attrs {
        if let Some(v) = kv.value.as_ref().and_then(any_value_text)
            && !v.is_empty()
        {
            tags.insert(sanitize_key(&kv.key), sanitize(&v).into_owned());
        }
    }
    for (k, v) in extra {
        tags.insert(k.to_string(), v.clone());
    }
    tags.insert("name".to_string(), sanitize(name).into_owned());
    tags
}

/// One measurement before it meets the store.
struct Point {
    tags: TagMap,
    dstype: DsType,
    ts_ms: i64,
    value: f64,
}

fn nanos_to_ms(n: u64) -> i64 {
    (n / 1_000_000) as i64
}

/// A delta as the per-second rate of the step it lands in: the delta's count divided by the
/// step, added to whatever else landed in that step (dstype `sum`). Conserves the count
/// exactly whatever the export interval and its jitter, where time-weighting by the
/// point's own interval would spread or lose it (the SDK's first delta covers only the
/// moments since the first measurement).
fn delta_per_step(value: f64, step_ms: i64) -> (DsType, f64) {
    (DsType::Sum, value / (step_ms as f64 / 1000.0))
}

/// Converts an OTLP metrics export.
///
/// - Gauge → a gauge. Sum, monotonic: cumulative → a counter (stored as its per-second
///   rate, as Atlas's `counter`), delta → the per-second rate of the step it lands in
///   (added up within a step, so no count is lost to jitter). Sum, not monotonic →
///   cumulative is a gauge, delta is summed per step.
/// - Histogram → Atlas's distribution statistics: `statistic=count` and
///   `statistic=totalAmount` (rates), `statistic=max` and `statistic=min` (gauges), and
///   one `statistic=bucket` series per bucket: the rate of values at or below its `le`
///   (cumulative, as Prometheus's `le` buckets, so one query reads both).
///   Exponential histograms → count, totalAmount, max, min. Summary → count, totalAmount
///   and `statistic=percentile` gauges tagged `percentile` (0 to 100).
/// - Tags: the point's attributes, plus `nf.app` from `service.name` and `nf.node` from
///   `host.name`; the name is the metric's. Characters Atlas does not allow become `_`.
pub fn otlp_metrics(
    w: &Writer<'_>,
    req: &argus_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest,
) -> Converted {
    let step_ms = w.store().config().step_ms;
    let mut points: Vec<Point> = Vec::new();
    let mut out = Converted::default();
    for rm in &req.resource_metrics {
        let base = rm
            .resource
            .as_ref()
            .map(|r| resource_tags(&r.attributes))
            .unwrap_or_default();
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let Some(data) = &m.data else { continue };
                convert_metric(&m.name, &base, data, step_ms, &mut points);
            }
        }
    }
    let mut last: Option<(TagMap, Result<SeriesId, Rejection>)> = None;
    for p in points {
        let id = match &last {
            Some((tags, id)) if *tags == p.tags => id.clone(),
            _ => {
                let id = validate_tags(&p.tags).and_then(|()| {
                    w.try_resolve(&p.tags, Some(p.dstype))
                        .map_err(|e| Rejection::from_store(e, &p.tags))
                });
                last = Some((p.tags, id.clone()));
                id
            }
        };
        match id {
            Ok(id) => out.samples.push(Sample {
                id,
                ts_ms: p.ts_ms,
                value: p.value,
            }),
            Err(r) => out.reject(r),
        }
    }
    out
}

/// One histogram point's series: Atlas's distribution statistics.
struct Distribution<'a> {
    name: &'a str,
    base: &'a [(String, String)],
    attributes: &'a [KeyValue],
    delta: bool,
    step_ms: i64,
    time: u64,
    out: &'a mut Vec<Point>,
}

impl Distribution<'_> {
    fn push(&mut self, extra: &[(&str, &str)], dstype: DsType, value: f64) {
        let extra: Vec<(&str, String)> = extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.out.push(Point {
            tags: point_tags(self.name, self.base, self.attributes, &extra),
            dstype,
            ts_ms: nanos_to_ms(self.time),
            value,
        });
    }

    /// A count or an amount: a rate, from a cumulative counter or from a delta.
    fn counter(&mut self, extra: &[(&str, &str)], value: f64) {
        let (dstype, value) = if self.delta {
            delta_per_step(value, self.step_ms)
        } else {
            (DsType::Counter, value)
        };
        self.push(extra, dstype, value);
    }

    fn stats(&mut self, count: u64, sum: Option<f64>, max: Option<f64>, min: Option<f64>) {
        self.counter(&[("statistic", "count")], count as f64);
        if let Some(sum) = sum {
            self.counter(&[("statistic", "totalAmount")], sum);
        }
        if let Some(max) = max {
            self.push(&[("statistic", "max")], DsType::Gauge, max);
        }
        if let Some(min) = min {
            self.push(&[("statistic", "min")], DsType::Gauge, min);
        }
    }
}

fn convert_metric(
    name: &str,
    base: &[(String, String)],
    data: &metric::Data,
    step_ms: i64,
    out: &mut Vec<Point>,
) {
    let number = |v: &Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsDouble(d)) => Some(*d),
        Some(number_data_point::Value::AsInt(i)) => Some(*i as f64),
        None => None,
    };
    let mut push = |tags: TagMap, dstype: DsType, time: u64, value: f64| {
        out.push(Point {
            tags,
            dstype,
            ts_ms: nanos_to_ms(time),
            value,
        })
    };
    // A point flagged "no recorded value" carries nothing.
    let recorded = |flags: u32| flags & 1 == 0;
    match data {
        metric::Data::Gauge(g) => {
            for p in g.data_points.iter().filter(|p| recorded(p.flags)) {
                if let Some(v) = number(&p.value) {
                    push(
                        point_tags(name, base, &p.attributes, &[]),
                        DsType::Gauge,
                        p.time_unix_nano,
                        v,
                    );
                }
            }
        }
        metric::Data::Sum(s) => {
            let delta = s.aggregation_temporality() == AggregationTemporality::Delta;
            for p in s.data_points.iter().filter(|p| recorded(p.flags)) {
                let Some(v) = number(&p.value) else { continue };
                let tags = point_tags(name, base, &p.attributes, &[]);
                let (dstype, value) = match (s.is_monotonic, delta) {
                    (true, false) => (DsType::Counter, v),
                    (true, true) => delta_per_step(v, step_ms),
                    (false, false) => (DsType::Gauge, v),
                    (false, true) => (DsType::Sum, v),
                };
                push(tags, dstype, p.time_unix_nano, value);
            }
        }
        metric::Data::Histogram(h) => {
            let delta = h.aggregation_temporality() == AggregationTemporality::Delta;
            for p in h.data_points.iter().filter(|p| recorded(p.flags)) {
                let mut dist = Distribution {
                    name,
                    base,
                    attributes: &p.attributes,
                    delta,
                    step_ms,
                    time: p.time_unix_nano,
                    out: &mut *out,
                };
                dist.stats(p.count, p.sum, p.max, p.min);
                // Buckets cumulative, as `le` means in Prometheus: one query reads both.
                let mut below = 0u64;
                for (i, &c) in p.bucket_counts.iter().enumerate() {
                    below += c;
                    let le = p.explicit_bounds.get(i).map_or_else(
                        || "Inf".to_string(),
                        |b| sanitize(&b.to_string()).into_owned(),
                    );
                    dist.counter(&[("statistic", "bucket"), ("le", &le)], below as f64);
                }
            }
        }
        metric::Data::ExponentialHistogram(h) => {
            let delta = h.aggregation_temporality() == AggregationTemporality::Delta;
            for p in h.data_points.iter().filter(|p| recorded(p.flags)) {
                Distribution {
                    name,
                    base,
                    attributes: &p.attributes,
                    delta,
                    step_ms,
                    time: p.time_unix_nano,
                    out: &mut *out,
                }
                .stats(p.count, p.sum, p.max, p.min);
            }
        }
        metric::Data::Summary(s) => {
            for p in s.data_points.iter().filter(|p| recorded(p.flags)) {
                let t = p.time_unix_nano;
                let stat = |s: &str| vec![("statistic", s.to_string())];
                push(
                    point_tags(name, base, &p.attributes, &stat("count")),
                    DsType::Counter,
                    t,
                    p.count as f64,
                );
                push(
                    point_tags(name, base, &p.attributes, &stat("totalAmount")),
                    DsType::Counter,
                    t,
                    p.sum,
                );
                for q in &p.quantile_values {
                    let pct = sanitize(&(q.quantile * 100.0).to_string()).into_owned();
                    let extra = [("statistic", "percentile".to_string()), ("percentile", pct)];
                    push(
                        point_tags(name, base, &p.attributes, &extra),
                        DsType::Gauge,
                        t,
                        q.value,
                    );
                }
            }
        }
    }
}

/// The event stream OTLP log records go to, unless a record or its resource names another
/// in the attribute `argus.stream`.
pub const LOGS_STREAM: &str = "logs";

/// Converts an OTLP logs export into events, grouped by stream. Each log record becomes a
/// JSON object: `timestamp` (ms), `severity`, `severityNumber`, `body`, `attributes`,
/// `resource` (the resource's attributes), and `traceId` / `spanId` when set.
pub fn otlp_logs(
    req: &argus_proto::otlp::collector::logs::v1::ExportLogsServiceRequest,
    now_ms: i64,
) -> Vec<(String, Vec<Event>)> {
    let mut by_stream: Vec<(String, Vec<Event>)> = Vec::new();
    let stream_of = |attrs: &[KeyValue]| {
        attrs
            .iter()
            .find(|kv| kv.key == "argus.stream")
            .and_then(|kv| kv.value.as_ref())
            .and_then(any_value_text)
    };
    for rl in &req.resource_logs {
        let resource_attrs = rl
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let resource_stream = stream_of(resource_attrs);
        for sl in &rl.scope_logs {
            for rec in &sl.log_records {
                let stream = stream_of(&rec.attributes)
                    .or_else(|| resource_stream.clone())
                    .unwrap_or_else(|| LOGS_STREAM.to_string());
                let time = if rec.time_unix_nano > 0 {
                    rec.time_unix_nano
                } else {
                    rec.observed_time_unix_nano
                };
                let ts_ms = if time > 0 { nanos_to_ms(time) } else { now_ms };
                let mut obj = serde_json::Map::new();
                obj.insert("timestamp".into(), ts_ms.into());
                obj.insert("severity".into(), rec.severity_text.clone().into());
                obj.insert("severityNumber".into(), rec.severity_number.into());
                obj.insert(
                    "body".into(),
                    rec.body
                        .as_ref()
                        .map_or(serde_json::Value::Null, any_value_json),
                );
                obj.insert("attributes".into(), attributes_json(&rec.attributes).into());
                obj.insert("resource".into(), attributes_json(resource_attrs).into());
                if !rec.trace_id.is_empty() {
                    obj.insert("traceId".into(), hex(&rec.trace_id).into());
                }
                if !rec.span_id.is_empty() {
                    obj.insert("spanId".into(), hex(&rec.span_id).into());
                }
                let value = serde_json::Value::Object(obj);
                let bytes = serde_json::to_vec(&value).map_or(0, |j| j.len());
                let event = Event::new(ts_ms, value, bytes);
                match by_stream.iter_mut().find(|(s, _)| *s == stream) {
                    Some((_, list)) => list.push(event),
                    None => by_stream.push((stream, vec![event])),
                }
            }
        }
    }
    by_stream
}

// ------------------------------------------------------------------------------------------
// Live subscriptions, as agents receive them.

/// The subscriptions on the streams an agent serves (`*` in its streams: any stream), as
/// its control stream carries them: the predicate in the core's canonical text, the fields
/// to send, the sampling.
pub fn agent_subscriptions(
    subs: &std::collections::BTreeMap<u64, std::sync::Arc<crate::live::Subscription>>,
    agent_streams: &[String],
) -> v1::Subscriptions {
    let serves = |stream: &String| agent_streams.iter().any(|s| s == "*" || s == stream);
    let subscriptions = subs
        .values()
        .filter(|s| !s.ended.load(std::sync::atomic::Ordering::Relaxed))
        .filter(|s| s.query.streams().iter().any(serves))
        .map(|s| v1::Subscription {
            id: s.id,
            streams: s.query.streams().into_iter().filter(serves).collect(),
            // A join's where and sampling read the joined event: the server runs them.
            predicate: if s.query.filters_at_source() {
                s.query.filter.to_string()
            } else {
                argus_mql::predicate::Predicate::True.to_string()
            },
            fields: s.fields.iter().flatten().map(field_path).collect(),
            whole_event: s.fields.is_none(),
            sampling: s
                .query
                .sample
                .as_ref()
                .filter(|_| s.query.filters_at_source())
                .map(|sample| v1::Sampling {
                    strategy: match sample.strategy {
                        argus_mql::ast::Strategy::Random => v1::sampling::Strategy::Random,
                        argus_mql::ast::Strategy::Sticky => v1::sampling::Strategy::Sticky,
                        argus_mql::ast::Strategy::Rps => v1::sampling::Strategy::Rps,
                        argus_mql::ast::Strategy::All => v1::sampling::Strategy::Unspecified,
                    } as i32,
                    threshold: sample.threshold,
                    factor: sample.factor,
                    salt: sample.salt,
                    keys: sample.keys.iter().map(field_path).collect(),
                }),
        })
        .collect();
    v1::Subscriptions { subscriptions }
}

fn field_path(path: &argus_mql::predicate::Path) -> v1::FieldPath {
    use argus_mql::predicate::Segment;
    v1::FieldPath {
        segments: path
            .0
            .iter()
            .map(|seg| v1::PathSegment {
                kind: Some(match seg {
                    Segment::Key(k) => v1::path_segment::Kind::Key(k.clone()),
                    Segment::Index(i) => v1::path_segment::Kind::Index(*i),
                    Segment::Any => v1::path_segment::Kind::Any(true),
                }),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_subscription_asks_agents_for_every_event_of_both_streams() {
        let hub = std::sync::Arc::new(crate::live::LiveHub::default());
        let _plain = hub
            .subscribe("select a from s where a > 1", None, "t", None)
            .unwrap();
        let _join = hub
            .subscribe(
                "select a, region from s join hosts 5 seconds on host where region == 'eu' \
                 sample {'strategy': 'RANDOM', 'threshold': 10}",
                None,
                "t",
                None,
            )
            .unwrap();
        let subs = agent_subscriptions(&hub.snapshot(), &["*".to_string()]).subscriptions;
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[0].predicate, "e['a'] > 1");
        let join = &subs[1];
        assert_eq!(join.streams, ["s", "hosts"]);
        assert_eq!(join.predicate, "true");
        assert!(join.sampling.is_none());
        let fields: Vec<String> = join
            .fields
            .iter()
            .map(|f| format!("{:?}", f.segments[0].kind))
            .collect();
        assert_eq!(fields.len(), 3, "{fields:?}");
        assert!(fields.iter().any(|f| f.contains("host")), "{fields:?}");
        // An agent serving only the joined stream still gets the subscription.
        let subs = agent_subscriptions(&hub.snapshot(), &["hosts".to_string()]).subscriptions;
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].streams, ["hosts"]);
    }

    fn types(pairs: &[(&str, MetricType)]) -> AHashMap<String, MetricType> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn prometheus_labels_become_atlas_tags() {
        let (tags, ds) = prometheus_series(
            &[
                ("__name__", "node_cpu_seconds_total"),
                ("cpu", "0"),
                ("mode", "idle"),
                ("empty", ""),
                ("path", "/var/log"),
                ("a", "x y"),
            ],
            &types(&[]),
        )
        .unwrap();
        assert_eq!(ds, DsType::Counter);
        let got: Vec<(&str, &str)> = tags.iter().collect();
        assert_eq!(
            got,
            [
                ("a_", "x_y"),
                ("cpu", "0"),
                ("mode", "idle"),
                ("name", "node_cpu_seconds_total"),
                ("path", "_var_log"),
            ]
        );
        let gauge = |name: &str, t: &[(&str, MetricType)]| {
            prometheus_series(&[("__name__", name)], &types(t))
                .unwrap()
                .1
        };
        assert_eq!(gauge("node_load1", &[]), DsType::Gauge);
        assert_eq!(gauge("x_bucket", &[]), DsType::Counter);
        assert_eq!(
            gauge("requests", &[("requests", MetricType::Counter)]),
            DsType::Counter
        );
        assert_eq!(
            gauge("odd_total", &[("odd_total", MetricType::Gauge)]),
            DsType::Gauge
        );
        assert_eq!(
            gauge("rpc_count", &[("rpc", MetricType::Summary)]),
            DsType::Counter
        );
        assert_eq!(gauge("rpc", &[("rpc", MetricType::Summary)]), DsType::Gauge);
        let missing = prometheus_series(&[("job", "x")], &types(&[])).unwrap_err();
        assert_eq!(missing.reason, RejectReason::MissingName);
        let long = "v".repeat(200);
        let too_long = prometheus_series(&[("__name__", "x"), ("k", &long)], &types(&[]));
        assert_eq!(too_long.unwrap_err().reason, RejectReason::ValueLength);
    }

    #[test]
    fn wire_errors_name_the_place() {
        let state = RemoteWriteState::default();
        let store = Store::new(argus_tsdb::StoreConfig::default());
        for bad in [
            &[0x0a, 0x10, 0x01][..],
            &[0x0a][..],
            &[0x0b][..],
            &[0xff; 11][..],
        ] {
            let err = state.convert(&store.writer(), bad).unwrap_err();
            assert!(err.0.contains("byte"), "{}", err.0);
        }
        assert_eq!(
            state.convert(&store.writer(), &[]).unwrap().samples.len(),
            0
        );
    }

    #[test]
    fn otlp_delta_histogram_becomes_per_step_rates_with_cumulative_buckets() {
        use argus_proto::otlp::metrics::v1::{Histogram, HistogramDataPoint};
        let point = HistogramDataPoint {
            time_unix_nano: 120_500_000_000,
            count: 6,
            sum: Some(300.0),
            max: Some(90.0),
            bucket_counts: vec![1, 2, 3],
            explicit_bounds: vec![10.0, 50.0],
            ..Default::default()
        };
        let data = metric::Data::Histogram(Histogram {
            data_points: vec![point],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        });
        let mut points = Vec::new();
        convert_metric("latency", &[], &data, 2_000, &mut points);
        let got: Vec<(String, DsType, i64, f64)> = points
            .iter()
            .map(|p| {
                let tag = |k: &str| p.tags.get(k).unwrap_or("").to_string();
                (tag("statistic") + &tag("le"), p.dstype, p.ts_ms, p.value)
            })
            .collect();
        let rate = |stat: &str, v: f64| (stat.to_string(), DsType::Sum, 120_500, v);
        assert_eq!(
            got,
            [
                rate("count", 3.0),
                rate("totalAmount", 150.0),
                ("max".to_string(), DsType::Gauge, 120_500, 90.0),
                rate("bucket10", 0.5),
                rate("bucket50", 1.5),
                rate("bucketInf", 3.0),
            ]
        );
    }
}
