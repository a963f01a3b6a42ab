//! What the agent has to send: the series catalog (every series the agent has seen, by a
//! dense index that doubles as its id on the wire) and the outbox, a bounded buffer of
//! batches waiting to be sent or acknowledged. When the buffer is full the oldest batches
//! are dropped and counted, so a server that is away for long costs bounded memory and the
//! newest data survives.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ahash::AHashMap;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::health::Health;

/// A series' tags, sorted by key.
pub type Tags = Arc<[(String, String)]>;

/// Most series the agent tracks; beyond, new series are dropped and counted.
pub const MAX_SERIES: usize = 1_000_000;

/// Every series the agent has sent, by index.
#[derive(Default)]
pub struct Catalog {
    by_tags: Mutex<AHashMap<Tags, u32>>,
    list: RwLock<Vec<Tags>>,
}

impl Catalog {
    /// The index of a series, added if new; `None` when the catalog is full.
    pub fn intern(&self, mut tags: Vec<(String, String)>) -> Option<u32> {
        tags.sort();
        tags.dedup_by(|a, b| a.0 == b.0);
        let tags: Tags = tags.into();
        let mut map = self.by_tags.lock();
        if let Some(&i) = map.get(&tags) {
            return Some(i);
        }
        let mut list = self.list.write();
        if list.len() >= MAX_SERIES {
            return None;
        }
        let i = list.len() as u32;
        list.push(tags.clone());
        map.insert(tags, i);
        Some(i)
    }

    pub fn tags(&self, i: u32) -> Option<Tags> {
        self.list.read().get(i as usize).cloned()
    }
}

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

#[derive(Debug)]
pub struct Entry {
    pub seq: u64,
    pub payload: Payload,
    bytes: usize,
    /// Sent on the current connection and not acknowledged yet.
    pub in_flight: bool,
}

struct Queue {
    entries: VecDeque<Entry>,
    next_seq: u64,
}

impl Queue {
    fn new() -> Self {
        Queue {
            entries: VecDeque::new(),
            next_seq: 1,
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
    /// Woken when there is something new to send.
    pub ready: Notify,
}

impl Outbox {
    pub fn new(budget: usize, health: Arc<Health>) -> Self {
        Outbox {
            inner: Mutex::new(Inner {
                metrics: Queue::new(),
                events: Queue::new(),
                bytes: 0,
            }),
            budget,
            health,
            ready: Notify::new(),
        }
    }

    /// Queues a batch, dropping the oldest batches (and counting what they held) while the
    /// buffer would be over its budget.
    pub fn push(&self, payload: Payload) {
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
                let victim = if !inner.metrics.entries.is_empty()
                    && (kind == Kind::Metrics || inner.events.entries.is_empty())
                {
                    inner.metrics.entries.pop_front()
                } else {
                    inner.events.entries.pop_front()
                };
                let Some(v) = victim else { break };
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
            queue.entries.push_back(Entry {
                seq,
                payload,
                bytes,
                in_flight: false,
            });
            inner.bytes += bytes;
            self.health
                .buffer_bytes
                .store(inner.bytes as u64, Ordering::Relaxed);
        }
        self.ready.notify_one();
    }

    /// Calls `f` on up to `max` batches of `kind` not yet sent on this connection, oldest
    /// first, and marks them in flight. `f` encodes them for the wire.
    pub fn take_unsent<T>(&self, kind: Kind, max: usize, mut f: impl FnMut(&Entry) -> T) -> Vec<T> {
        let mut inner = self.inner.lock();
        let queue = match kind {
            Kind::Metrics => &mut inner.metrics,
            Kind::Events => &mut inner.events,
        };
        let mut out = Vec::new();
        for e in queue.entries.iter_mut().filter(|e| !e.in_flight).take(max) {
            out.push(f(e));
            e.in_flight = true;
        }
        out
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
        let out = Outbox::new(2 * (64 + 16 * 24) + 10, health.clone());
        out.push(samples(16)); // seq 1
        out.push(samples(16)); // seq 2
        out.push(samples(16)); // seq 3: seq 1 goes
        assert_eq!(
            health.dropped_samples_buffer_full.load(Ordering::Relaxed),
            16
        );
        let seqs = out.take_unsent(Kind::Metrics, 10, |e| e.seq);
        assert_eq!(seqs, [2, 3]);
        assert_eq!(out.ack(Kind::Metrics, 2), 16);
        out.connection_lost();
        assert_eq!(out.take_unsent(Kind::Metrics, 10, |e| e.seq), [3]);
    }

    #[test]
    fn catalog_interns_sorted_tags() {
        let c = Catalog::default();
        let a = c.intern(vec![("b".into(), "1".into()), ("a".into(), "2".into())]);
        let b = c.intern(vec![("a".into(), "2".into()), ("b".into(), "1".into())]);
        assert_eq!(a, b);
        assert_eq!(c.tags(0).unwrap()[0].0, "a");
    }
}
