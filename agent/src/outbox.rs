//! What the agent has to send: the series catalog (every series the agent has seen, by a
//! dense index that doubles as its id on the wire) and the outbox, a bounded buffer of
//! batches waiting to be sent or acknowledged. When the buffer is full the oldest batches
//! are dropped and counted, so a server that is away for long costs bounded memory and the
//! newest data survives.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ahash::AHashMap;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::health::Health;

/// A series' tags, sorted by key.
pub type Tags = Arc<[(String, String)]>;

/// Most series the agent tracks; beyond, new series are dropped and counted.
pub const MAX_SERIES: usize = 1_000_000;

/// Every series the agent has sent, by index, within a budget of memory.
pub struct Catalog {
    by_tags: Mutex<AHashMap<Tags, u32>>,
    list: RwLock<Vec<CatalogEntry>>,
    /// Memory the series hold, as [`series_cost`] counts it, against `budget`.
    bytes: AtomicUsize,
    budget: usize,
}

/// Why a series was not catalogued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its tags break the rules (the server would refuse it): counted as invalid input.
    Invalid(argus_proto::rules::TagError),
    /// The catalog holds all the series it may: counted as too many series.
    Full,
}

impl Refusal {
    /// Counts the refusal in `health` by its reason.
    pub fn count(&self, health: &Health) {
        let counter = match self {
            Refusal::Invalid(_) => &health.invalid_input,
            Refusal::Full => &health.dropped_too_many_series,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Invalid(e) => write!(f, "{e}"),
            Refusal::Full => f.write_str("too many series (--memory-limit)"),
        }
    }
}

/// A catalogued series: its tags and the bytes its definition takes on the wire.
struct CatalogEntry {
    tags: Tags,
    wire_bytes: u32,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::with_budget(usize::MAX)
    }
}

/// Memory one series costs the agent, roughly: its tags here and in the registry's cache
/// of meter names (each string twice, with the allocator's overhead), the maps' entries and
/// its meter. Measured: 100,000 StatsD series of four tags take about 95 MB of RSS, 950 B
/// each; this counts 830 B for them, the rest is the reserve's.
pub fn series_cost(tags: &[(String, String)]) -> usize {
    300 + tags
        .iter()
        .map(|(k, v)| 2 * (k.len() + v.len()) + 96)
        .sum::<usize>()
}

/// Bytes a series' definition takes in a protobuf `SeriesDef`, at most.
fn definition_bytes(tags: &[(String, String)]) -> usize {
    8 + tags
        .iter()
        .map(|(k, v)| k.len() + v.len() + 8)
        .sum::<usize>()
}

/// Bytes a sample takes in a protobuf `SampleGroup` (its id and value), at most.
pub const SAMPLE_WIRE_BYTES: usize = 14;

impl Catalog {
    /// A catalog whose series may hold `budget` bytes (as [`series_cost`] counts them).
    pub fn with_budget(budget: usize) -> Self {
        Catalog {
            by_tags: Mutex::new(AHashMap::new()),
            list: RwLock::new(Vec::new()),
            bytes: AtomicUsize::new(0),
            budget,
        }
    }

    /// The index of a series, added if new. Refused when its tags break the rules the
    /// server applies (it would refuse the series), or when the catalog is full (by count
    /// or by its memory budget).
    pub fn intern(&self, mut tags: Vec<(String, String)>) -> Result<u32, Refusal> {
        tags.sort();
        tags.dedup_by(|a, b| a.0 == b.0);
        let tags: Tags = tags.into();
        let mut map = self.by_tags.lock();
        if let Some(&i) = map.get(&tags) {
            return Ok(i);
        }
        let pairs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        argus_proto::rules::check_tags(&pairs).map_err(Refusal::Invalid)?;
        let cost = series_cost(&tags);
        let mut list = self.list.write();
        if list.len() >= MAX_SERIES || self.bytes.load(Ordering::Relaxed) + cost > self.budget {
            return Err(Refusal::Full);
        }
        let i = list.len() as u32;
        list.push(CatalogEntry {
            wire_bytes: definition_bytes(&tags).min(u32::MAX as usize) as u32,
            tags: tags.clone(),
        });
        map.insert(tags, i);
        self.bytes.fetch_add(cost, Ordering::Relaxed);
        Ok(i)
    }

    pub fn tags(&self, i: u32) -> Option<Tags> {
        self.list.read().get(i as usize).map(|e| e.tags.clone())
    }

    /// Memory the catalogued series hold, as [`series_cost`] counts it.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Bytes each sample may take in a batch: the sample and, on a stream that has not had
    /// it yet, its series' definition.
    fn samples_wire_bytes(&self, samples: &[Sample]) -> Vec<usize> {
        let list = self.list.read();
        samples
            .iter()
            .map(|s| {
                SAMPLE_WIRE_BYTES
                    + list
                        .get(s.series as usize)
                        .map_or(0, |e| e.wire_bytes as usize)
            })
            .collect()
    }
}

/// Bytes one batch may take on the wire: batches in flight are held encoded (and
/// compressed) until acknowledged, so large ones cost the agent memory for nothing.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// The largest message a server takes when it does not say (tonic's default is 4 MiB,
/// Argus's 16 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

/// One sample of a catalogued series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub series: u32,
    pub ts_ms: i64,
    pub value: f64,
}

/// One raw event (a JSON object).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub ts_ms: i64,
    pub json: Vec<u8>,
    /// The live subscriptions it matched.
    pub subscriptions: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Metrics,
    Events,
}

/// A batch waiting for its acknowledgement.
#[derive(Debug)]
pub enum Payload {
    Metrics(Vec<Sample>),
    Events { stream: String, events: Vec<Event> },
}

impl Payload {
    /// The stream the batch belongs to in the loss report: `metrics`, or the event stream.
    fn stream(&self) -> &str {
        match self {
            Payload::Metrics(_) => "metrics",
            Payload::Events { stream, .. } => stream,
        }
    }

    fn items(&self) -> usize {
        match self {
            Payload::Metrics(s) => s.len(),
            Payload::Events { events, .. } => events.len(),
        }
    }

    /// Memory the batch holds, roughly.
    fn bytes(&self) -> usize {
        64 + match self {
            Payload::Metrics(s) => s.len() * std::mem::size_of::<Sample>(),
            Payload::Events { stream, events } => {
                stream.len()
                    + events
                        .iter()
                        .map(|e| e.json.len() + 32 + 8 * e.subscriptions.len())
                        .sum::<usize>()
            }
        }
    }
}

/// Bytes an event takes in a protobuf `EventBatch`, at most.
fn event_wire_bytes(e: &Event) -> usize {
    e.json.len() + 24 + 10 * e.subscriptions.len()
}

/// Cuts items of these `sizes` into consecutive ranges of at most `target` bytes each (an
/// item larger than `target` alone in its range).
fn cut(sizes: &[usize], target: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, &size) in sizes.iter().enumerate() {
        if bytes + size > target && i > start {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

#[derive(Debug)]
pub struct Entry {
    pub seq: u64,
    pub payload: Payload,
    bytes: usize,
    /// Sent on the current connection and not acknowledged yet.
    pub in_flight: bool,
    /// Sent at least once: if it is dropped now, the server may have it.
    sent_once: bool,
}

struct Queue {
    entries: VecDeque<Entry>,
    next_seq: u64,
    /// What was made and what became of it, by stream, for the loss report.
    counts: BTreeMap<String, StreamCounts>,
    /// Batches dropped here that may be at or above the oldest one still waiting (the
    /// report's holes); pruned as the oldest waiting batch moves on.
    dropped_seqs: BTreeSet<u64>,
    /// The latest batches dropped after they were sent: (seq, stream, items, reason).
    dropped_after_send: VecDeque<(u64, String, u64, &'static str)>,
}

/// Batches dropped after sending that a report lists; older ones fall off (the server may
/// then count one it applied as dropped too).
const DROPPED_AFTER_SEND_LISTED: usize = 4096;

/// One stream's batches as the agent made and dropped them.
#[derive(Clone, Debug, Default)]
struct StreamCounts {
    created_items: u64,
    created_batches: u64,
    by_input: BTreeMap<&'static str, u64>,
    /// By reason: (items, batches).
    dropped: BTreeMap<&'static str, (u64, u64)>,
}

impl Queue {
    fn new() -> Self {
        Queue {
            entries: VecDeque::new(),
            next_seq: 1,
            counts: BTreeMap::new(),
            dropped_seqs: BTreeSet::new(),
            dropped_after_send: VecDeque::new(),
        }
    }

    /// Counts a batch dropped here for `reason`.
    fn dropped(&mut self, e: &Entry, reason: &'static str) {
        let c = self
            .counts
            .entry(e.payload.stream().to_string())
            .or_default();
        let d = c.dropped.entry(reason).or_default();
        d.0 += e.payload.items() as u64;
        d.1 += 1;
        self.dropped_seqs.insert(e.seq);
        if e.sent_once {
            self.dropped_after_send.push_back((
                e.seq,
                e.payload.stream().to_string(),
                e.payload.items() as u64,
                reason,
            ));
            if self.dropped_after_send.len() > DROPPED_AFTER_SEND_LISTED {
                self.dropped_after_send.pop_front();
            }
        }
    }

    /// The account of this queue's batches now (see `Accounting` in the protocol).
    fn report(&mut self) -> argus_proto::v1::Accounting {
        let pending_from = self.entries.front().map_or(self.next_seq, |e| e.seq);
        self.dropped_seqs = self.dropped_seqs.split_off(&pending_from);
        let mut pending: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for e in &self.entries {
            let p = pending.entry(e.payload.stream()).or_default();
            p.0 += e.payload.items() as u64;
            p.1 += 1;
        }
        argus_proto::v1::Accounting {
            pending_from,
            next_seq: self.next_seq,
            holes: self.dropped_seqs.iter().copied().collect(),
            dropped_after_send: self
                .dropped_after_send
                .iter()
                .map(
                    |(seq, stream, items, reason)| argus_proto::v1::DroppedBatch {
                        seq: *seq,
                        stream: stream.clone(),
                        items: *items,
                        reason: reason.to_string(),
                    },
                )
                .collect(),
            streams: self
                .counts
                .iter()
                .map(|(stream, c)| {
                    let (pending_items, pending_batches) =
                        pending.get(stream.as_str()).copied().unwrap_or_default();
                    argus_proto::v1::StreamAccount {
                        stream: stream.clone(),
                        created_items: c.created_items,
                        created_batches: c.created_batches,
                        pending_items,
                        pending_batches,
                        dropped: c
                            .dropped
                            .iter()
                            .map(|(reason, (items, batches))| argus_proto::v1::Dropped {
                                reason: reason.to_string(),
                                items: *items,
                                batches: *batches,
                            })
                            .collect(),
                        inputs: c
                            .by_input
                            .iter()
                            .map(|(input, items)| argus_proto::v1::InputCount {
                                input: input.to_string(),
                                items: *items,
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}

struct Inner {
    metrics: Queue,
    events: Queue,
    bytes: usize,
}

pub struct Outbox {
    inner: Mutex<Inner>,
    budget: usize,
    health: Arc<Health>,
    catalog: Arc<Catalog>,
    /// The largest message the server takes (it says so in its Welcome): batches are cut
    /// to half of it (at most [`MAX_BATCH_BYTES`]), so that one with every definition, as
    /// estimated, still fits.
    max_message_bytes: AtomicUsize,
    /// Woken when there is something new to send.
    pub ready: Notify,
}

impl Outbox {
    pub fn new(budget: usize, health: Arc<Health>, catalog: Arc<Catalog>) -> Self {
        Outbox {
            inner: Mutex::new(Inner {
                metrics: Queue::new(),
                events: Queue::new(),
                bytes: 0,
            }),
            budget,
            health,
            catalog,
            max_message_bytes: AtomicUsize::new(DEFAULT_MAX_MESSAGE_BYTES),
            ready: Notify::new(),
        }
    }

    /// The server's limit on a message, from its Welcome (0: it did not say).
    pub fn set_max_message_bytes(&self, bytes: usize) {
        let bytes = if bytes == 0 {
            DEFAULT_MAX_MESSAGE_BYTES
        } else {
            bytes
        };
        self.max_message_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes.load(Ordering::Relaxed)
    }

    /// Queues a payload from `input` (`step`, `publish`, `scrape`, `events`: named in the
    /// loss report) as batches that each fit half the server's message limit (every
    /// definition included, as after a reconnect), dropping the oldest batches (and
    /// counting what they held) while the buffer would be over its budget.
    pub fn push(&self, input: &'static str, payload: Payload) {
        let target = (self.max_message_bytes() / 2).clamp(1, MAX_BATCH_BYTES);
        match payload {
            Payload::Metrics(samples) => {
                let sizes = self.catalog.samples_wire_bytes(&samples);
                let ranges = cut(&sizes, target);
                if ranges.len() <= 1 {
                    self.push_one(input, Payload::Metrics(samples));
                    return;
                }
                for range in ranges {
                    self.push_one(input, Payload::Metrics(samples[range].to_vec()));
                }
            }
            Payload::Events { stream, events } => {
                let sizes: Vec<usize> = events.iter().map(event_wire_bytes).collect();
                if sizes.iter().sum::<usize>() <= target {
                    self.push_one(input, Payload::Events { stream, events });
                    return;
                }
                for range in cut(&sizes, target) {
                    self.push_one(
                        input,
                        Payload::Events {
                            stream: stream.clone(),
                            events: events[range].to_vec(),
                        },
                    );
                }
            }
        }
    }

    fn push_one(&self, input: &'static str, payload: Payload) {
        if payload.items() == 0 {
            return;
        }
        let bytes = payload.bytes();
        let kind = match payload {
            Payload::Metrics(_) => Kind::Metrics,
            Payload::Events { .. } => Kind::Events,
        };
        {
            let mut inner = self.inner.lock();
            while inner.bytes + bytes > self.budget {
                // The oldest of the two queues goes first: seqs are per queue, so compare the
                // fronts by age of arrival, which the queue order gives per kind; prefer the
                // kind being pushed, then the other.
                let queue = if !inner.metrics.entries.is_empty()
                    && (kind == Kind::Metrics || inner.events.entries.is_empty())
                {
                    &mut inner.metrics
                } else {
                    &mut inner.events
                };
                let Some(v) = queue.entries.pop_front() else {
                    break;
                };
                queue.dropped(&v, "buffer_full");
                inner.bytes -= v.bytes;
                match v.payload {
                    Payload::Metrics(s) => {
                        self.health
                            .dropped_samples_buffer_full
                            .fetch_add(s.len() as u64, Ordering::Relaxed);
                    }
                    Payload::Events { events, .. } => {
                        self.health
                            .dropped_events_buffer_full
                            .fetch_add(events.len() as u64, Ordering::Relaxed);
                    }
                }
            }
            let queue = match kind {
                Kind::Metrics => &mut inner.metrics,
                Kind::Events => &mut inner.events,
            };
            let seq = queue.next_seq;
            queue.next_seq += 1;
            let counts = queue
                .counts
                .entry(payload.stream().to_string())
                .or_default();
            counts.created_items += payload.items() as u64;
            counts.created_batches += 1;
            *counts.by_input.entry(input).or_default() += payload.items() as u64;
            queue.entries.push_back(Entry {
                seq,
                payload,
                bytes,
                in_flight: false,
                sent_once: false,
            });
            inner.bytes += bytes;
            self.health
                .buffer_bytes
                .store(inner.bytes as u64, Ordering::Relaxed);
        }
        self.ready.notify_one();
    }

    /// Calls `f` on up to `max` batches of `kind` not yet sent on this connection, oldest
    /// first, and marks them in flight. `f` encodes them for the wire, or gives `None` for
    /// one the server cannot take (over its message limit), which is dropped and counted.
    pub fn take_unsent<T>(
        &self,
        kind: Kind,
        max: usize,
        mut f: impl FnMut(&Entry) -> Option<T>,
    ) -> Vec<T> {
        let mut inner = self.inner.lock();
        let queue = match kind {
            Kind::Metrics => &mut inner.metrics,
            Kind::Events => &mut inner.events,
        };
        let mut out = Vec::new();
        let mut too_large = Vec::new();
        for e in queue.entries.iter_mut().filter(|e| !e.in_flight).take(max) {
            match f(e) {
                Some(t) => out.push(t),
                None => too_large.push(e.seq),
            }
            e.in_flight = true;
            e.sent_once = true;
        }
        drop(inner);
        for seq in too_large {
            self.drop_too_large(kind, seq);
        }
        out
    }

    /// Drops batch `seq` of `kind`: the server cannot take it. Counted by what it held.
    pub fn drop_too_large(&self, kind: Kind, seq: u64) {
        let mut inner = self.inner.lock();
        let queue = match kind {
            Kind::Metrics => &mut inner.metrics,
            Kind::Events => &mut inner.events,
        };
        let Some(pos) = queue.entries.iter().position(|e| e.seq == seq) else {
            return;
        };
        let Some(e) = queue.entries.remove(pos) else {
            return;
        };
        queue.dropped(&e, "too_large");
        inner.bytes -= e.bytes;
        let counter = match kind {
            Kind::Metrics => &self.health.dropped_samples_too_large,
            Kind::Events => &self.health.dropped_events_too_large,
        };
        counter.fetch_add(e.payload.items() as u64, Ordering::Relaxed);
        self.health
            .buffer_bytes
            .store(inner.bytes as u64, Ordering::Relaxed);
    }

    /// The oldest batch of `kind` sent on this connection and not acknowledged.
    pub fn oldest_in_flight(&self, kind: Kind) -> Option<u64> {
        let inner = self.inner.lock();
        let queue = match kind {
            Kind::Metrics => &inner.metrics,
            Kind::Events => &inner.events,
        };
        queue.entries.iter().find(|e| e.in_flight).map(|e| e.seq)
    }

    /// Batches of `kind` in flight now.
    pub fn in_flight(&self, kind: Kind) -> usize {
        let inner = self.inner.lock();
        let queue = match kind {
            Kind::Metrics => &inner.metrics,
            Kind::Events => &inner.events,
        };
        queue.entries.iter().filter(|e| e.in_flight).count()
    }

    /// The server has the batch: forget it. Returns how many items it held.
    pub fn ack(&self, kind: Kind, seq: u64) -> usize {
        let mut inner = self.inner.lock();
        let queue = match kind {
            Kind::Metrics => &mut inner.metrics,
            Kind::Events => &mut inner.events,
        };
        let Some(pos) = queue.entries.iter().position(|e| e.seq == seq) else {
            return 0; // dropped meanwhile (buffer full), or a stale ack
        };
        let Some(e) = queue.entries.remove(pos) else {
            return 0;
        };
        inner.bytes -= e.bytes;
        self.health
            .buffer_bytes
            .store(inner.bytes as u64, Ordering::Relaxed);
        e.payload.items()
    }

    /// A connection ended: nothing is in flight any more, everything unacknowledged will be
    /// sent again on the next one.
    pub fn connection_lost(&self) {
        let mut inner = self.inner.lock();
        let Inner {
            metrics, events, ..
        } = &mut *inner;
        for e in metrics.entries.iter_mut().chain(events.entries.iter_mut()) {
            e.in_flight = false;
        }
    }

    /// Batches waiting, of both kinds.
    /// The account of the batches of `kind` now, sent with each batch for the server's
    /// loss report.
    pub fn report(&self, kind: Kind) -> argus_proto::v1::Accounting {
        let mut inner = self.inner.lock();
        match kind {
            Kind::Metrics => inner.metrics.report(),
            Kind::Events => inner.events.report(),
        }
    }

    pub fn pending(&self) -> usize {
        let inner = self.inner.lock();
        inner.metrics.entries.len() + inner.events.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(n: usize) -> Payload {
        Payload::Metrics(
            (0..n)
                .map(|i| Sample {
                    series: i as u32,
                    ts_ms: 0,
                    value: 1.0,
                })
                .collect(),
        )
    }

    #[test]
    fn full_buffer_drops_oldest_and_counts() {
        let health = Arc::new(Health::default());
        let out = Outbox::new(
            2 * (64 + 16 * 24) + 10,
            health.clone(),
            Arc::new(Catalog::default()),
        );
        out.push("step", samples(16)); // seq 1
        out.push("step", samples(16)); // seq 2
        out.push("step", samples(16)); // seq 3: seq 1 goes
        assert_eq!(
            health.dropped_samples_buffer_full.load(Ordering::Relaxed),
            16
        );
        let seqs = out.take_unsent(Kind::Metrics, 10, |e| Some(e.seq));
        assert_eq!(seqs, [2, 3]);
        assert_eq!(out.ack(Kind::Metrics, 2), 16);
        out.connection_lost();
        assert_eq!(out.take_unsent(Kind::Metrics, 10, |e| Some(e.seq)), [3]);
    }

    #[test]
    fn batches_are_cut_to_half_the_servers_limit_with_every_definition() {
        let catalog = Arc::new(Catalog::default());
        let ids: Vec<u32> = (0..1_000)
            .map(|i| {
                catalog
                    .intern(vec![
                        ("name".into(), format!("flood.metric.{i:06}")),
                        ("nf.node".into(), "i-0123456789".into()),
                    ])
                    .unwrap()
            })
            .collect();
        let health = Arc::new(Health::default());
        let out = Outbox::new(64 << 20, health.clone(), catalog.clone());
        out.set_max_message_bytes(16 * 1024);
        let samples = ids
            .iter()
            .map(|&series| Sample {
                series,
                ts_ms: 60_000,
                value: 1.0,
            })
            .collect();
        out.push("step", Payload::Metrics(samples));
        let sizes = out.take_unsent(Kind::Metrics, usize::MAX, |e| {
            let Payload::Metrics(s) = &e.payload else {
                return None;
            };
            Some(catalog.samples_wire_bytes(s).iter().sum::<usize>())
        });
        assert!(sizes.len() > 8, "{sizes:?}");
        assert!(sizes.iter().all(|&b| b <= 8 * 1024), "{sizes:?}");
        // A batch the server cannot take is dropped and counted, not sent again.
        out.connection_lost();
        let sent = out.take_unsent(Kind::Metrics, 1, |_| None::<()>);
        assert!(sent.is_empty());
        assert!(health.dropped_samples_too_large.load(Ordering::Relaxed) > 0);
        assert_eq!(out.pending(), sizes.len() - 1);
    }

    #[test]
    fn the_catalog_refuses_series_past_its_memory_budget() {
        let one = series_cost(&[("name".into(), "m.000".into())]);
        let c = Catalog::with_budget(3 * one);
        for i in 0..3 {
            assert!(c.intern(vec![("name".into(), format!("m.{i:03}"))]).is_ok());
        }
        assert_eq!(
            c.intern(vec![("name".into(), "m.999".into())]),
            Err(Refusal::Full)
        );
        // a known series is still found
        assert_eq!(c.intern(vec![("name".into(), "m.001".into())]), Ok(1));
        assert_eq!(c.bytes(), 3 * one);
    }

    #[test]
    fn cuts_never_exceed_the_target_unless_one_item_does() {
        assert_eq!(cut(&[3, 3, 3, 3], 6), [0..2, 2..4]);
        assert_eq!(cut(&[10, 1, 1], 6), [0..1, 1..3]);
        assert_eq!(cut(&[], 6), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(cut(&[1, 1], 100), vec![0..2]);
    }

    #[test]
    fn catalog_interns_sorted_tags() {
        let c = Catalog::default();
        let a = c.intern(vec![
            ("name".into(), "m1".into()),
            ("bb".into(), "1".into()),
        ]);
        let b = c.intern(vec![
            ("bb".into(), "1".into()),
            ("name".into(), "m1".into()),
        ]);
        assert_eq!(a, b);
        assert_eq!(c.tags(0).unwrap()[0].0, "bb");
        // What the server would refuse is refused here.
        let one_char_key = c.intern(vec![("name".into(), "m1".into()), ("k".into(), "v".into())]);
        assert!(
            matches!(&one_char_key, Err(Refusal::Invalid(e)) if e.message.contains("key 'k'")),
            "{one_char_key:?}"
        );
    }
}
