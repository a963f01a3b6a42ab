//! Prometheus remote write 1.0: a `WriteRequest` read straight from its protobuf bytes
//! (nothing allocated for a series the cache knows), labels to Atlas tags, metric types from
//! metadata.

use ahash::AHashMap;
use argus_proto::remote_write::{MetricType, STALE_NAN_BITS};
use argus_tsdb::{DsType, Sample, SeriesId, TagMap, Writer};
use parking_lot::RwLock;

use super::converted::Converted;
use crate::validation::{RejectReason, Rejection, clip, sanitize, sanitize_key, validate_tags};

/// What the server remembers between remote-write requests: metric types from metadata,
/// and the store id of every label set seen, so that a known series costs a hash and a
/// lookup instead of building and checking its tags again.
pub struct RemoteWriteState {
    types: RwLock<AHashMap<String, MetricType>>,
    cache: RwLock<SeriesCache>,
    /// The label hash's seed, new in each process: a client cannot choose label sets
    /// whose hashes crowd one place in the cache's table.
    seed: u64,
}

impl Default for RemoteWriteState {
    fn default() -> Self {
        use std::hash::BuildHasher;
        RemoteWriteState {
            types: RwLock::default(),
            cache: RwLock::default(),
            seed: std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64),
        }
    }
}

#[derive(Default)]
struct SeriesCache {
    /// The store's `series_dropped` count when the cache was filled; ids are reused after a
    /// drop, so a change clears the cache.
    epoch: u64,
    /// By 64 bits of the hash of a series' label bytes: 32 more bits of it to check, and
    /// the series' id. 96 bits make a false match between 4 million series about a 10^-16
    /// chance. Two label sets that share the first 64 bits take turns in the entry, each
    /// resolved by its tags when it misses.
    ids: IdTable,
    /// By the whole hash: series refused (few).
    refused: AHashMap<u128, Rejection>,
}

/// The cache's table: open addressing with linear probing over 16-byte entries and no
/// separate control bytes, so where a key's entry lies is known from the key alone and a
/// request's lookups can fetch their entries ahead (on the peer load each lookup was a
/// cache miss, a quarter of the conversion's own time). The key is already a hash, so it
/// is not hashed again. Entries are never removed one by one, only all at once.
#[derive(Default)]
struct IdTable {
    entries: Vec<IdEntry>,
    len: usize,
}

#[derive(Clone, Copy)]
struct IdEntry {
    key: u64,
    check: u32,
    /// [`IdTable::EMPTY`] for a free entry (no store id is that large).
    id: SeriesId,
}

impl IdTable {
    const EMPTY: SeriesId = SeriesId::MAX;
    const FREE: IdEntry = IdEntry {
        key: 0,
        check: 0,
        id: Self::EMPTY,
    };
    /// Entries a lookup fetches ahead of the one it reads: a lookup that hits the cache
    /// takes a few nanoseconds, a fetch from memory about a hundred.
    const AHEAD: usize = 32;

    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        self.entries.fill(Self::FREE);
        self.len = 0;
    }

    fn home(&self, key: u64) -> usize {
        // The key's place scaled onto the table (a multiply, not a division): the key is
        // already a hash, its high bits as random as its low, and the capacity grows by
        // half, not to a power of two.
        ((u128::from(key) * self.entries.len() as u128) >> 64) as usize
    }

    /// The entry after `i`, wrapping at the end of the table.
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.entries.len() {
            0
        } else {
            i + 1
        }
    }

    /// Asks the CPU to fetch the entry where a lookup of `key` starts.
    fn prefetch(&self, key: u64) {
        if !self.entries.is_empty() {
            argus_tsdb::prefetch::line(&self.entries[self.home(key)]);
        }
    }

    fn get(&self, key: u64) -> Option<(u32, SeriesId)> {
        if self.entries.is_empty() {
            return None;
        }
        let mut i = self.home(key);
        loop {
            let e = self.entries[i];
            if e.id == Self::EMPTY {
                return None;
            }
            if e.key == key {
                return Some((e.check, e.id));
            }
            i = self.next(i);
        }
    }

    /// Sets the entry of `key`, replacing the one there (see [`SeriesCache::ids`]).
    fn insert(&mut self, key: u64, check: u32, id: SeriesId) {
        // At most seven eighths full, as hashbrown's tables; grown by half, 16 bytes an
        // entry make that 18-28 bytes per series (doubling made it 18-37). Lookups of known
        // series (nearly all of them) still probe about 4.5 entries on average, a cache
        // line or two; only a new series probes far.
        if (self.len + 1) * 8 > self.entries.len() * 7 {
            self.grow();
        }
        let mut i = self.home(key);
        loop {
            let e = self.entries[i];
            if e.id == Self::EMPTY {
                self.len += 1;
            } else if e.key != key {
                i = self.next(i);
                continue;
            }
            self.entries[i] = IdEntry { key, check, id };
            return;
        }
    }

    fn grow(&mut self) {
        let capacity = (self.entries.len() + self.entries.len() / 2).max(1024);
        let old = std::mem::replace(&mut self.entries, vec![Self::FREE; capacity]);
        self.len = 0;
        for e in old.into_iter().filter(|e| e.id != Self::EMPTY) {
            self.insert(e.key, e.check, e.id);
        }
    }
}

/// A label hash as the cache's key and check.
fn cache_key(hash: u128) -> (u64, u32) {
    (hash as u64, (hash >> 96) as u32)
}

impl SeriesCache {
    /// What is known of the series with this label hash: its id, or why it was refused.
    fn get(&self, hash: u128) -> Option<Result<SeriesId, &Rejection>> {
        let (key, check) = cache_key(hash);
        match self.ids.get(key) {
            Some((c, id)) if c == check => Some(Ok(id)),
            _ => self.refused.get(&hash).map(Err),
        }
    }

    fn insert(&mut self, hash: u128, resolved: Result<SeriesId, Rejection>) {
        match resolved {
            // The one id the table cannot hold is simply not cached.
            Ok(IdTable::EMPTY) => {}
            Ok(id) => {
                let (key, check) = cache_key(hash);
                self.ids.insert(key, check, id);
            }
            Err(r) => {
                self.refused.insert(hash, r);
            }
        }
    }
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

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, WireError> {
        // Keys and most lengths are one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.long_varint()
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Result<u64, WireError> {
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

    #[inline(always)]
    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()? as usize;
        let end = past(self.pos, len, self.buf.len())?;
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

/// 128 bits of hash (XXH3 under `seed`) of a series' raw label fields, hashed where they
/// lie when they are contiguous (as Prometheus writes them), part by part otherwise. Two
/// encodings of one label set may hash apart; both then resolve to the same series by
/// their tags.
fn label_hash(seed: u64, ts: &[u8], region: Option<(usize, usize)>, parts: &[&[u8]]) -> u128 {
    match region {
        Some((lo, hi)) => xxhash_rust::xxh3::xxh3_128_with_seed(&ts[lo..hi], seed),
        None => {
            let mut h = xxhash_rust::xxh3::Xxh3::with_seed(seed);
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

/// Conversion buffers, kept for the next request.
static SCRATCH: crate::memory::Pool<Scratch> = crate::memory::Pool::new();

/// The fields of the remote-write messages: (number, wire type, name).
const WRITE_REQUEST: &[(u64, u8, &str)] = &[(1, 2, "timeseries"), (3, 2, "metadata")];
const TIME_SERIES: &[(u64, u8, &str)] = &[(1, 2, "labels"), (2, 2, "samples")];
const LABEL: &[(u64, u8, &str)] = &[(1, 2, "name"), (2, 2, "value")];
const SAMPLE: &[(u64, u8, &str)] = &[(1, 1, "value"), (2, 0, "timestamp")];
const METADATA: &[(u64, u8, &str)] = &[(1, 0, "type"), (2, 2, "metric_family_name")];

/// The key byte of `TimeSeries.labels` (field 1, length-delimited).
const LABEL_FIELD_KEY: u8 = 1 << 3 | 2;

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
        let mut scratch = SCRATCH.take();
        let result = self.parse(body, &mut scratch).and_then(|()| {
            self.check_epoch(writer);
            self.convert_series(writer, body, &mut scratch, &mut out)
        });
        scratch.series.clear();
        scratch.samples.clear();
        scratch.ids.clear();
        scratch.refusals.clear();
        SCRATCH.give(scratch);
        result?;
        Ok(out)
    }

    /// Walks the request once: each series' labels are hashed and its samples read while
    /// its bytes are in the cache (a second walk over a request of hundreds of kilobytes
    /// missed the cache on every series), and metadata is taken where it comes: it is only
    /// needed to resolve new series, after the walk.
    fn parse(&self, body: &[u8], scratch: &mut Scratch) -> Result<(), WireError> {
        let mut w = Wire::new(body);
        while !w.done() {
            match w.key()? {
                (1, 2) => {
                    let ts = w.bytes()?;
                    let bytes = w.pos - ts.len()..w.pos;
                    let series = parse_series(self.seed, ts, bytes, &mut scratch.samples)?;
                    scratch.series.push(series);
                }
                (3, 2) => self.metadata(w.bytes()?)?,
                other => w.skip_other(other, "WriteRequest", WRITE_REQUEST)?,
            }
        }
        Ok(())
    }

    /// Clears the series cache when it may be wrong or has grown too large. Cached ids are
    /// good while no series has been removed since they were cached; none can be while
    /// `writer` is held.
    fn check_epoch(&self, writer: &Writer<'_>) {
        let dropped = writer.removals();
        let cache = self.cache.read();
        if cache.epoch != dropped || cache.ids.len() + cache.refused.len() > MAX_CACHED_SERIES {
            drop(cache);
            let mut cache = self.cache.write();
            cache.ids.clear();
            cache.refused.clear();
            cache.epoch = dropped;
        }
    }

    /// Looks up every parsed series under one lock of the cache, then resolves the ones
    /// it does not know and emits the samples.
    fn convert_series(
        &self,
        w: &Writer<'_>,
        body: &[u8],
        scratch: &mut Scratch,
        out: &mut Converted,
    ) -> Result<(), WireError> {
        let mut misses = false;
        {
            let cache = self.cache.read();
            for (i, p) in scratch.series.iter().enumerate() {
                if let Some(ahead) = scratch.series.get(i + IdTable::AHEAD) {
                    cache.ids.prefetch(cache_key(ahead.hash).0);
                }
                let id = match cache.get(p.hash) {
                    Some(Ok(id)) => u64::from(id),
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
            let mut cache = self.cache.write();
            for (hash, resolved) in fresh {
                cache.insert(hash, resolved);
            }
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

/// Reads one TimeSeries message (`bytes` of the request): the hash of its labels under
/// `seed`, and its samples appended to `samples`.
fn parse_series(
    seed: u64,
    ts: &[u8],
    bytes: std::ops::Range<usize>,
    samples: &mut Vec<(i64, f64)>,
) -> Result<RawSeries, WireError> {
    let first_sample = samples.len();
    // Prometheus writes a series' labels first and back to back: that run is taken in a
    // tight loop, the rest of the message field by field.
    let run_end = label_run_end(ts)?;
    let mut w = Wire {
        buf: ts,
        pos: run_end,
    };
    // The byte range of the label fields, while nothing else comes between them.
    let mut region = (run_end > 0).then_some((0, run_end));
    let mut contiguous = true;
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
            (2, 2) => samples.push(parse_sample(w.bytes()?)?),
            other => w.skip_other(other, "TimeSeries", TIME_SERIES)?,
        }
    }
    let hash = match region {
        Some(r) if contiguous => label_hash(seed, ts, Some(r), &[]),
        _ => label_hash(seed, ts, None, &label_parts(ts)?),
    };
    Ok(RawSeries {
        hash,
        bytes,
        samples: first_sample..samples.len(),
    })
}

/// Where the run of label fields at the start of a TimeSeries message ends. The position
/// is kept in a register, not in a [`Wire`] (whose every step is a store and a load).
fn label_run_end(ts: &[u8]) -> Result<usize, WireError> {
    let mut pos = 0;
    while ts.get(pos) == Some(&LABEL_FIELD_KEY) {
        let len = match ts.get(pos + 1) {
            Some(&b) if b < 0x80 => {
                pos += 2;
                usize::from(b)
            }
            _ => {
                let mut w = Wire {
                    buf: ts,
                    pos: pos + 1,
                };
                let len = w.long_varint()? as usize;
                pos = w.pos;
                len
            }
        };
        pos = past(pos, len, ts.len())?;
    }
    Ok(pos)
}

/// The end of `len` bytes from `pos`, in a buffer of `total`.
#[inline(always)]
fn past(pos: usize, len: usize, total: usize) -> Result<usize, WireError> {
    match pos.checked_add(len) {
        Some(end) if end <= total => Ok(end),
        _ => Err(runs_past_the_end(pos, len, total)),
    }
}

#[cold]
#[inline(never)]
fn runs_past_the_end(pos: usize, len: usize, total: usize) -> WireError {
    WireError(format!(
        "length {len} at byte {pos} runs past the end ({total} bytes)"
    ))
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
    if let Some(sample) = prometheus_sample(bytes) {
        return Ok(sample);
    }
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

/// A Sample as Prometheus writes it, read straight: the value's key and eight bytes, the
/// timestamp's key and a varint that ends the message. `None` for anything else, which
/// the field-by-field reader then takes (or names the error in).
#[inline(always)]
fn prometheus_sample(bytes: &[u8]) -> Option<(i64, f64)> {
    let (&[0x09, b0, b1, b2, b3, b4, b5, b6, b7, 0x10], varint) = bytes.split_first_chunk()? else {
        return None;
    };
    let value = f64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
    // At most nine bytes: 63 bits, so no varint that overflows gets here.
    if varint.is_empty() || varint.len() > 9 {
        return None;
    }
    let mut ts = 0u64;
    for (i, &b) in varint.iter().enumerate() {
        ts |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            // The varint must end the message.
            return (i + 1 == varint.len()).then_some((ts as i64, value));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use argus_tsdb::Store;

    fn types(pairs: &[(&str, MetricType)]) -> AHashMap<String, MetricType> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn label_hashes_that_share_their_first_64_bits_do_not_share_an_id() {
        let mut cache = SeriesCache::default();
        let a: u128 = 0x1111_2222_3333_4444_5555_6666_7777_8888;
        let b = a ^ (1 << 100); // the same key, another check
        cache.insert(a, Ok(7));
        assert!(matches!(cache.get(a), Some(Ok(7))));
        assert!(cache.get(b).is_none(), "b must be resolved by its tags");
        cache.insert(b, Ok(9));
        assert!(matches!(cache.get(b), Some(Ok(9))));
        assert!(cache.get(a).is_none(), "the two take turns in the entry");
        let refused = a ^ 1;
        cache.insert(
            refused,
            Err(Rejection::new(RejectReason::InvalidCharacters, "bad")),
        );
        assert!(matches!(cache.get(refused), Some(Err(r)) if r.message == "bad"));
    }

    #[test]
    fn the_id_table_finds_every_key_through_growth_and_collisions() {
        let mut t = IdTable::default();
        assert_eq!(t.get(5), None);
        // Keys that share their high bits all start probing at the same entry.
        let keys: Vec<u64> = (0..5_000u64)
            .map(|i| {
                if i % 2 == 0 {
                    i
                } else {
                    i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                }
            })
            .collect();
        for (i, &k) in keys.iter().enumerate() {
            t.insert(k, i as u32 ^ 0xabc, i as SeriesId);
            t.prefetch(k);
        }
        assert_eq!(t.len(), keys.len());
        assert!(t.len() * 8 <= t.entries.len() * 7);
        // 1,024 grown by half five times: 5,000 entries do not fit in 5,184 at 7/8.
        assert_eq!(t.entries.len(), 7_776);
        // The last entry's probe wraps to the first: a key that starts there still finds
        // its entry past the end.
        t.insert(u64::MAX, 5, 5_000);
        t.insert(u64::MAX - 1, 6, 5_001);
        assert_eq!(t.get(u64::MAX - 1), Some((6, 5_001)));
        assert_eq!(t.get(u64::MAX), Some((5, 5_000)));
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(
                t.get(k),
                Some((i as u32 ^ 0xabc, i as SeriesId)),
                "key {k:#x}"
            );
        }
        assert_eq!(t.get(1 << 63), None);
        // Setting a key again replaces its entry.
        t.insert(keys[7], 1, 99);
        assert_eq!((t.get(keys[7]), t.len()), (Some((1, 99)), keys.len() + 2));
        t.clear();
        assert_eq!((t.get(keys[7]), t.len()), (None, 0));
        t.insert(keys[7], 2, 3);
        assert_eq!(t.get(keys[7]), Some((2, 3)));
        // The id that marks a free entry is never cached.
        let mut cache = SeriesCache::default();
        cache.insert(77, Ok(IdTable::EMPTY));
        assert!(cache.get(77).is_none());
    }

    #[test]
    fn each_state_hashes_labels_under_its_own_seed() {
        let (a, b) = (RemoteWriteState::default(), RemoteWriteState::default());
        assert_ne!(a.seed, b.seed);
        let labels = b"\x0a\x0b\x0a\x08__name__\x12\x01x";
        let whole = Some((0, labels.len()));
        assert_eq!(
            label_hash(a.seed, labels, whole, &[]),
            label_hash(a.seed, labels, whole, &[])
        );
        assert_ne!(
            label_hash(a.seed, labels, whole, &[]),
            label_hash(b.seed, labels, whole, &[])
        );
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
    fn varints_of_every_length_read_whole_and_stop_where_they_end() {
        let mut values = vec![0u64, 1, 127, 128, 300, 16_383, 16_384, u64::MAX, 1 << 63];
        values.extend((0..64).map(|b| 1u64 << b));
        values.extend((1..64).map(|b| (1u64 << b) - 1));
        values.push(1_765_000_000_000); // a timestamp in milliseconds: six bytes
        for v in values {
            let mut bytes = Vec::new();
            let mut n = v;
            while n >= 0x80 {
                bytes.push(n as u8 | 0x80);
                n >>= 7;
            }
            bytes.push(n as u8);
            let len = bytes.len();
            // Alone, then with bytes after it that must not be read.
            for pad in [0, 1, 9] {
                let mut buf = bytes.clone();
                buf.extend(std::iter::repeat_n(0xff, pad));
                let mut w = Wire::new(&buf);
                assert_eq!(w.varint().unwrap(), v, "{v:#x} padded by {pad}");
                assert_eq!(w.pos, len, "{v:#x} padded by {pad}");
            }
        }
        // Eleven continuation bytes are too long, eight and then the end are truncated.
        assert!(
            Wire::new(&[0x80; 11])
                .varint()
                .unwrap_err()
                .0
                .contains("too long")
        );
        assert!(
            Wire::new(&[0x80; 8])
                .varint()
                .unwrap_err()
                .0
                .contains("truncated")
        );
    }

    #[test]
    fn the_run_of_labels_ends_at_the_first_other_field_or_fails_at_its_end() {
        let label = |len: usize| {
            let mut f = vec![LABEL_FIELD_KEY];
            let mut n = len;
            while n >= 0x80 {
                f.push(n as u8 | 0x80);
                n >>= 7;
            }
            f.push(n as u8);
            f.extend(std::iter::repeat_n(b'x', len));
            f
        };
        let mut ts = [label(3), label(200), label(0)].concat();
        let run = ts.len();
        assert_eq!(run, 5 + 203 + 2);
        assert_eq!(label_run_end(&ts).unwrap(), run);
        ts.extend([0x12, 0x00]); // a sample field after the labels
        assert_eq!(label_run_end(&ts).unwrap(), run);
        assert_eq!(label_run_end(&[]).unwrap(), 0);
        assert_eq!(label_run_end(&[0x12, 0x00]).unwrap(), 0);
        // A length past the end, in one byte and in two; a length cut short.
        let err = label_run_end(&[0x0a, 0x05, b'a']).unwrap_err().0;
        assert!(err.contains("length 5 at byte 2"), "{err}");
        let err = label_run_end(&label(200)[..100]).unwrap_err().0;
        assert!(err.contains("length 200 at byte 3"), "{err}");
        let err = label_run_end(&[0x0a, 0x80]).unwrap_err().0;
        assert!(err.contains("truncated varint"), "{err}");
    }

    #[test]
    fn samples_read_straight_read_as_field_by_field() {
        let sample = |value: f64, ts: i64| {
            let mut b = vec![0x09];
            b.extend(value.to_le_bytes());
            b.push(0x10);
            let mut n = ts as u64;
            while n >= 0x80 {
                b.push(n as u8 | 0x80);
                n >>= 7;
            }
            b.push(n as u8);
            b
        };
        for (v, ts) in [
            (1.5, 1_765_000_000_000),
            (f64::NAN, 0),
            (-0.0, 127),
            (3.0, 128),
            (2.0, i64::MAX),
            (4.0, -1),
        ] {
            let bytes = sample(v, ts);
            let slow = {
                let mut w = Wire::new(&bytes[10..]);
                w.varint().unwrap() as i64
            };
            assert_eq!(slow, ts);
            let got = parse_sample(&bytes).unwrap();
            assert_eq!((got.0, got.1.to_bits()), (ts, v.to_bits()), "{v} at {ts}");
            // Negative timestamps take ten bytes: only the field-by-field reader has them.
            assert_eq!(prometheus_sample(&bytes).is_some(), ts >= 0);
        }
        // Fields in the other order, a trailing field, a truncated varint: the slow path.
        let mut swapped = vec![0x10, 0x05, 0x09];
        swapped.extend(2.5f64.to_le_bytes());
        assert_eq!(prometheus_sample(&swapped), None);
        assert_eq!(parse_sample(&swapped).unwrap(), (5, 2.5));
        let mut trailing = sample(1.0, 300);
        trailing.extend([0x10, 0x07]);
        assert_eq!(prometheus_sample(&trailing), None);
        assert_eq!(parse_sample(&trailing).unwrap(), (7, 1.0));
        let mut cut = sample(1.0, 300);
        cut.pop();
        assert_eq!(prometheus_sample(&cut), None);
        assert!(parse_sample(&cut).unwrap_err().0.contains("truncated"));
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
}
