//! The cluster's write path, from a gateway to the store nodes, through JetStream.
//!
//! A gateway splits each converted batch into self-contained messages, one per partition
//! (a series' partition is a stable hash of its tags), each naming its series by their tags
//! and dstype, so no reader depends on an earlier message. It publishes them to
//! `argus.in.p.<P>`, subjects spread over several replicated streams so their Raft leaders
//! land on different NATS servers, with a message id that makes a resend inside JetStream's
//! duplicate window a no-op, and says the batch was taken only when JetStream acknowledged
//! every message. Store nodes read the streams in order and apply each message once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use argus_tsdb::{DsType, Postings, Sample, SeriesId, SeriesSource, Store};
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use tokio_stream::StreamExt;

use super::books::{PartitionBooks, RECEIPT_HEADER};
use super::message::{self, MessageBuilder};
pub use super::placement::{mix, partition_of};

/// Subjects of the partitions: `argus.in.p.<P>`.
pub const SUBJECT_PREFIX: &str = "argus.in.p.";
/// Streams: `ARGUS_IN_<k>`, holding the partitions `P` with `P % streams == k`.
const STREAM_PREFIX: &str = "ARGUS_IN_";
/// Streams of a new cluster: enough that their Raft leaders spread over a three-server NATS
/// cluster, and no more. A write costs every stream it touches a replication round (fsyncs
/// and Raft messages on three servers), and NATS's CPU follows those rounds far more than
/// messages or bytes: six streams cost 29% more NATS CPU than three on the peer benchmark.
const NEW_CLUSTER_STREAMS: u32 = 3;
/// A message is cut before it grows past this: NATS refuses payloads over 1 MiB.
const MESSAGE_BUDGET: usize = 768 * 1024;
/// How long a write keeps trying through a NATS election before it is refused as
/// retryable. Elections measured here take 5 to 6 s.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);
/// Messages of a partition applied in one trip to a blocking thread, when that many have
/// arrived (a replay, or a busy partition).
const APPLY_BATCH: usize = 64;
/// How long JetStream has to acknowledge one publish.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// An applier that has heard nothing for this long asks the stream for its partition's
/// first message after the last one applied. A consumer that lived on a NATS server that
/// died hears nothing, and async-nats notices only after two missed idle heartbeats
/// (40-60 s).
const STALL_CHECK: Duration = Duration::from_secs(5);
/// How long a message the stream held past what was applied may take to arrive before the
/// consumer counts as stalled: a delivery takes milliseconds.
const STALL_GRACE: Duration = Duration::from_secs(2);
/// Resends inside this window are recognised by their message id.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How many streams a new cluster of `partitions` partitions has (recorded in the cluster's
/// settings when it is created).
pub fn stream_count(partitions: u32) -> u32 {
    partitions.clamp(1, NEW_CLUSTER_STREAMS)
}

/// The streams of a cluster created before its stream count was recorded.
pub fn streams_before_recorded(partitions: u32) -> u32 {
    partitions.clamp(1, 6)
}

pub fn stream_name(k: u32) -> String {
    format!("{STREAM_PREFIX}{k}")
}

fn subject(partition: u32) -> String {
    format!("{SUBJECT_PREFIX}{partition}")
}

/// A message ready to publish.
#[derive(Debug)]
pub struct Outgoing {
    pub partition: u32,
    /// JetStream's `Nats-Msg-Id`: the same for a resend of the same batch.
    pub id: String,
    pub payload: Bytes,
    /// A batch's receipt (`books.rs`), not samples.
    pub receipt: bool,
}

/// One partition's message being built, and the batch's series it names so far.
#[derive(Default)]
struct Building {
    message: MessageBuilder,
    members: Vec<u32>,
    chunk: u32,
}

/// Splits samples (their series resolved in `store`, whose writer hold the caller keeps)
/// into messages per partition, in batch order within each partition. `origin` names the
/// batch when its sender numbers them (an agent's id and sequence); otherwise a message is
/// named by its content, so a client's retry of the same request is recognised too.
pub fn split(store: &Store, samples: &[Sample], origin: &[u8], partitions: u32) -> Vec<Outgoing> {
    // The batch's series in order of first appearance, each sample's slot among them.
    let mut slot_of: ahash::AHashMap<SeriesId, u32> = ahash::AHashMap::new();
    let mut ids: Vec<SeriesId> = Vec::new();
    let sample_slots: Vec<u32> = samples
        .iter()
        .map(|s| {
            *slot_of.entry(s.id).or_insert_with(|| {
                ids.push(s.id);
                (ids.len() - 1) as u32
            })
        })
        .collect();
    // Each series encoded once, with its partition: (partition, bytes in `encoded`).
    let dstypes: Vec<DsType> = ids
        .iter()
        .map(|&id| store.dstype(id).unwrap_or(DsType::Rate))
        .collect();
    let mut encoded = Vec::new();
    let mut series: Vec<Option<(u32, std::ops::Range<usize>)>> = vec![None; ids.len()];
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    let postings = Postings::from_sorted_iter(sorted).unwrap_or_default();
    store.visit_tags(&postings, &mut |id, tags| {
        if let Some(&slot) = slot_of.get(&id) {
            let start = encoded.len();
            message::put_series(&mut encoded, tags, dstypes[slot as usize]);
            series[slot as usize] = Some((partition_of(tags, partitions), start..encoded.len()));
        }
    });
    // Per slot, its index in its partition's message being built.
    let mut local = vec![u32::MAX; ids.len()];
    let mut building: Vec<Building> = (0..partitions).map(|_| Building::default()).collect();
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for (s, &slot) in samples.iter().zip(&sample_slots) {
        // A series maintenance removed since the batch was converted.
        let Some((partition, bytes)) = &series[slot as usize] else {
            continue;
        };
        let b = &mut building[*partition as usize];
        let index = match local[slot as usize] {
            u32::MAX => {
                let i = b.message.add_series(&encoded[bytes.clone()]);
                local[slot as usize] = i;
                b.members.push(slot);
                i
            }
            i => i,
        };
        b.message.add_sample(index, s.ts_ms, s.value);
        if b.message.len() >= MESSAGE_BUDGET {
            for member in b.members.drain(..) {
                local[member as usize] = u32::MAX;
            }
            let full = std::mem::take(&mut b.message);
            let payload = full.finish_compressed(&mut scratch);
            out.push(finish(*partition, b.chunk, payload, origin));
            b.chunk += 1;
        }
    }
    for (partition, b) in building.into_iter().enumerate() {
        if !b.message.is_empty() {
            let payload = b.message.finish_compressed(&mut scratch);
            out.push(finish(partition as u32, b.chunk, payload, origin));
        }
    }
    out
}

fn finish(partition: u32, chunk: u32, payload: Vec<u8>, origin: &[u8]) -> Outgoing {
    let id = if origin.is_empty() {
        let hash = xxhash_rust::xxh3::xxh3_64(&payload);
        format!("c{hash:016x}{:x}.{partition}.{chunk}", payload.len())
    } else {
        let hex: String = origin.iter().map(|b| format!("{b:02x}")).collect();
        format!("a{hex}.{partition}.{chunk}")
    };
    Outgoing {
        partition,
        id,
        payload: Bytes::from(payload),
        receipt: false,
    }
}

/// The receipt of an agent's batch (`books.rs`), ready to publish after its samples.
pub fn receipt(
    batch: (&str, u64),
    stored: u64,
    refused: &[(crate::validation::RejectReason, u64)],
    report: Option<&argus_proto::v1::Accounting>,
    partitions: u32,
) -> Outgoing {
    let (partition, id, payload) =
        super::books::receipt(batch, stored, refused, report, partitions);
    Outgoing {
        partition,
        id,
        payload: Bytes::from(payload),
        receipt: true,
    }
}

/// What a partition's applier keeps from one message to the next: a buffer, and the
/// series it has seen by the bytes that name them, so a known series costs a hash and a
/// lookup, not a parse and a search of the store's catalog.
#[derive(Default)]
pub struct Applier {
    samples: Vec<Sample>,
    /// 128-bit hashes of series bytes (collisions out of reach) to ids; forgotten when
    /// the store removes series, since removed ids are reused.
    known: ahash::AHashMap<u128, SeriesId>,
    removals: u64,
}

/// A message's series and samples, decoded, resolved in `store` and appended; the samples
/// stored.
pub fn decode_into(store: &Store, payload: &[u8], applier: &mut Applier) -> anyhow::Result<usize> {
    DECOMPRESSED.with_borrow_mut(|scratch| {
        let body = message::body(payload, scratch).map_err(anyhow::Error::msg)?;
        apply_body(store, body, applier)
    })
}

thread_local! {
    /// A decompressed message, the buffer kept for the next one on this thread.
    static DECOMPRESSED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn apply_body(store: &Store, body: &[u8], applier: &mut Applier) -> anyhow::Result<usize> {
    let mut r = message::Reader::new(body).map_err(anyhow::Error::msg)?;
    let n_series = r.count("series", 2).map_err(anyhow::Error::msg)?;
    let writer = store.writer();
    if applier.removals != writer.removals() {
        applier.known.clear();
        applier.removals = writer.removals();
    }
    let mut ids = Vec::with_capacity(n_series);
    let mut pairs = Vec::new();
    for _ in 0..n_series {
        let bytes = r.series_bytes().map_err(anyhow::Error::msg)?;
        let key = xxhash_rust::xxh3::xxh3_128(bytes);
        let id = match applier.known.get(&key) {
            Some(&id) => id,
            None => {
                let dstype =
                    message::Reader::series_of(bytes, &mut pairs).map_err(anyhow::Error::msg)?;
                let id = writer.resolve_sorted(&pairs, dstype);
                applier.known.insert(key, id);
                id
            }
        };
        ids.push(id);
    }
    let n = r.count("samples", 10).map_err(anyhow::Error::msg)?;
    let samples = &mut applier.samples;
    samples.clear();
    samples.reserve(n);
    let mut previous_ts = 0;
    for _ in 0..n {
        let (series, ts_ms, value) = r.sample(previous_ts).map_err(anyhow::Error::msg)?;
        previous_ts = ts_ms;
        let Some(&id) = ids.get(series as usize) else {
            anyhow::bail!(
                "a sample in a partition message names series {series} of {}",
                ids.len()
            );
        };
        samples.push(Sample { id, ts_ms, value });
    }
    r.end().map_err(anyhow::Error::msg)?;
    let outcome = writer.append_batch(samples);
    drop(writer);
    if !outcome.rejected.is_empty() {
        tracing::debug!(
            rejected = outcome.rejected.len(),
            "samples of a partition message fell outside the retention window"
        );
    }
    Ok(outcome.stored)
}

/// One partition as this node applies it; shared with `/api/v1/cluster` and `/metrics`.
#[derive(Debug, Default)]
pub struct PartitionProgress {
    /// The last stream sequence of this partition this node applied.
    pub applied: AtomicU64,
    /// Messages of the partition not yet applied, as of the last one delivered.
    pub pending: AtomicU64,
    /// Whether this node applies the partition now.
    pub applying: AtomicBool,
    /// Whether it has applied everything the stream held of the partition (and still
    /// applies it): it may answer queries for it.
    pub caught_up: AtomicBool,
    /// Messages and samples applied by this process, and how long the last catch-up took
    /// (from taking the partition to having applied all the stream held), in ms.
    pub messages: AtomicU64,
    pub samples: AtomicU64,
    pub catch_up_ms: AtomicU64,
    /// Held while a message is applied and its sequence recorded, and while a snapshot
    /// reads the partition: a snapshot holds exactly the messages up to its sequence.
    pub apply_lock: parking_lot::Mutex<()>,
    /// The snapshot this node restored the partition from (its sequence and series; 0:
    /// none), and how long restoring took, in ms.
    pub restored_sequence: AtomicU64,
    pub restored_series: AtomicU64,
    pub restore_ms: AtomicU64,
    /// The sequence of the last snapshot of the partition this node wrote (0: none).
    pub snapshot_sequence: AtomicU64,
    /// The loss books of what this node applied of the partition (`books.rs`).
    pub books: parking_lot::Mutex<PartitionBooks>,
}

/// The Object Store bucket of the partitions' snapshots, one object per partition.
pub const SNAPSHOT_BUCKET: &str = "argus_snapshots";
/// What a partition snapshot starts with, before the partition count, the partition, its
/// sequence (all little-endian) and the store's exported series.
const SNAPSHOT_MAGIC: &[u8; 8] = b"ARGUSPSN";
/// The same, with the partition's loss books (`[u64 length][books]`) before the series.
const SNAPSHOT_MAGIC_BOOKS: &[u8; 8] = b"ARGUSPSB";

fn snapshot_name(partition: u32) -> String {
    format!("partition-{partition}")
}

/// A partition snapshot's bytes: its header, its loss books, then `series` as the store
/// exported them.
fn snapshot_bytes(
    partitions: u32,
    partition: u32,
    sequence: u64,
    books: &[u8],
    series: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + books.len() + series.len());
    out.extend_from_slice(SNAPSHOT_MAGIC_BOOKS);
    out.extend_from_slice(&partitions.to_le_bytes());
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&(books.len() as u64).to_le_bytes());
    out.extend_from_slice(books);
    out.extend_from_slice(series);
    out
}

/// What a partition snapshot holds: its sequence, loss books (empty in a snapshot written
/// before they were kept) and exported series.
struct SnapshotParts<'a> {
    sequence: u64,
    books: &'a [u8],
    series: &'a [u8],
}

/// A snapshot's parts, checked to be `partition`'s of `partitions`.
fn read_snapshot(
    bytes: &[u8],
    partitions: u32,
    partition: u32,
) -> anyhow::Result<SnapshotParts<'_>> {
    let magic = bytes.get(..8);
    anyhow::ensure!(
        bytes.len() >= 24 && (magic == Some(SNAPSHOT_MAGIC) || magic == Some(SNAPSHOT_MAGIC_BOOKS)),
        "not a partition snapshot ({} bytes)",
        bytes.len()
    );
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
    let (of, which) = (word(8), word(12));
    anyhow::ensure!(
        (of, which) == (partitions, partition),
        "the snapshot is of partition {which} of {of}, not {partition} of {partitions}"
    );
    let sequence = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or_default());
    if magic == Some(SNAPSHOT_MAGIC) {
        return Ok(SnapshotParts {
            sequence,
            books: &[],
            series: &bytes[24..],
        });
    }
    let books_len = bytes
        .get(24..32)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        .ok_or_else(|| anyhow::anyhow!("the snapshot ends in its header"))?;
    let books_end = usize::try_from(books_len)
        .ok()
        .and_then(|n| n.checked_add(32))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the snapshot names {books_len} bytes of loss books; it has {}",
                bytes.len() - 32
            )
        })?;
    Ok(SnapshotParts {
        sequence,
        books: &bytes[32..books_end],
        series: &bytes[books_end..],
    })
}

/// One stream as NATS describes it.
#[derive(Clone, Debug)]
pub struct StreamState {
    pub leader: Option<String>,
    pub last_sequence: u64,
    pub messages: u64,
    pub bytes: u64,
}

/// The partitioned log as a node uses it: publishing (a gateway) and applying the
/// partitions it holds (a store).
pub struct PartitionLog {
    /// For streams and consumers (its timeout is the caller's).
    js: jetstream::Context,
    /// For publishing: a short acknowledgement timeout, so a publish to a stream whose
    /// leader is gone is retried soon.
    publisher: jetstream::Context,
    pub partitions: u32,
    pub streams: u32,
    pub progress: Vec<Arc<PartitionProgress>>,
    /// Messages published and acknowledged, and those JetStream called duplicates.
    pub published: AtomicU64,
    pub duplicates: AtomicU64,
    /// The task applying each partition this node holds.
    appliers: parking_lot::Mutex<HashMap<u32, tokio::task::AbortHandle>>,
    /// The partitions' snapshots.
    snapshots: jetstream::object_store::ObjectStore,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl PartitionLog {
    /// Opens the `streams` streams of `partitions` partitions, creating those missing:
    /// `replicas` copies each, kept for `max_age` (the store's retention: a replaying node
    /// rebuilds all of it).
    pub async fn open(
        js: jetstream::Context,
        (partitions, streams): (u32, u32),
        replicas: usize,
        max_age: Duration,
    ) -> anyhow::Result<PartitionLog> {
        let n = streams.clamp(1, partitions.max(1));
        for k in 0..n {
            let subjects = (0..partitions)
                .filter(|p| p % n == k)
                .map(subject)
                .collect();
            let config = stream::Config {
                name: stream_name(k),
                subjects,
                num_replicas: replicas,
                max_age,
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            };
            js.get_or_create_stream(config)
                .await
                .with_context(|| format!("opening the stream {}", stream_name(k)))?;
        }
        let snapshots = snapshot_bucket(&js, replicas).await?;
        Ok(PartitionLog {
            snapshots,
            publisher: jetstream::ContextBuilder::new()
                .timeout(ACK_TIMEOUT)
                .build(js.client()),
            js,
            partitions,
            streams: n,
            progress: (0..partitions).map(|_| Arc::default()).collect(),
            published: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            appliers: Default::default(),
        })
    }

    /// Writes a snapshot of `partition` (the series of `store` in it, with its applied
    /// sequence) to the Object Store, if the partition has applied anything since the last
    /// one and has caught up. Returns (sequence, series, bytes) when it wrote one.
    pub async fn snapshot(
        &self,
        partition: u32,
        store: &Arc<Store>,
        cache: &Arc<super::placement::PartitionCache>,
    ) -> anyhow::Result<Option<(u64, u64, usize)>> {
        let progress = self.progress[partition as usize].clone();
        if !progress.caught_up.load(Ordering::Acquire)
            || progress.applied.load(Ordering::Acquire)
                <= progress.snapshot_sequence.load(Ordering::Acquire)
        {
            return Ok(None);
        }
        let (store, cache, of) = (store.clone(), cache.clone(), self.partitions);
        let (sequence, series, bytes) = tokio::task::spawn_blocking(move || {
            let mut keep = vec![false; of as usize];
            keep[partition as usize] = true;
            // Nothing is applied to the partition while it is read.
            let _applying = progress.apply_lock.lock();
            let sequence = progress.applied.load(Ordering::Acquire);
            let all = store.select(&argus_tsdb::Matcher::True);
            let ids = cache.keep(&store, &*store, &all, &keep);
            let exported = store.export_series(&ids);
            let books = progress.books.lock().encode();
            (
                sequence,
                ids.len(),
                snapshot_bytes(of, partition, sequence, &books, &exported),
            )
        })
        .await
        .context("snapshotting a partition")?;
        let size = bytes.len();
        self.snapshots
            .put(snapshot_name(partition).as_str(), &mut bytes.as_slice())
            .await
            .with_context(|| format!("writing the snapshot of partition {partition}"))?;
        self.progress[partition as usize]
            .snapshot_sequence
            .fetch_max(sequence, Ordering::AcqRel);
        Ok(Some((sequence, series, size)))
    }

    /// The loss books of `partitions`, as a store node answers for them
    /// (`books::encode_answer`).
    pub fn books_of(&self, partitions: &[u32]) -> Vec<u8> {
        let encoded: Vec<(u32, Vec<u8>)> = partitions
            .iter()
            .filter_map(|&p| {
                let progress = self.progress.get(p as usize)?;
                Some((p, progress.books.lock().encode()))
            })
            .collect();
        let mut out = Vec::new();
        super::books::encode_answer(encoded.iter().map(|(p, b)| (*p, b.as_slice())), &mut out);
        out
    }

    /// The NATS connection the log publishes on.
    pub fn client(&self) -> async_nats::Client {
        self.js.client()
    }

    /// Publishes every message and waits until JetStream has acknowledged each, retrying
    /// those that failed (same ids, so a message that did land is not stored twice) until
    /// [`PUBLISH_DEADLINE`]. `Err` says why the write could not be taken; it may have been
    /// partly logged, and the client's retry completes it exactly once. `Ok` says whether
    /// JetStream already had every message (a resend of a batch it holds whole).
    pub async fn publish(&self, messages: Vec<Outgoing>) -> Result<bool, String> {
        let deadline = Instant::now() + PUBLISH_DEADLINE;
        let all = messages.len();
        let mut duplicates = 0;
        // A message sent again after its acknowledgement timed out may have landed the
        // first time: JetStream then calls the retry a duplicate, and it is ours.
        let mut pending: Vec<(Outgoing, bool)> = messages.into_iter().map(|m| (m, false)).collect();
        let client = self.js.client();
        loop {
            // While NATS is unreachable the client would queue a publish and send it on
            // reconnecting, after the write was refused: nothing is sent until it is back.
            if client.connection_state() != async_nats::connection::State::Connected {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "the cluster's log (NATS JetStream) is unreachable: no NATS server \
                         answered for {} s",
                        PUBLISH_DEADLINE.as_secs()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let mut acks = Vec::with_capacity(pending.len());
            for (m, _) in &pending {
                let mut publish = jetstream::message::PublishMessage::build()
                    .payload(m.payload.clone())
                    .message_id(&m.id);
                if m.receipt {
                    publish = publish.header(super::books::RECEIPT_HEADER, "1");
                }
                acks.push(
                    self.publisher
                        .send_publish(subject(m.partition), publish)
                        .await,
                );
            }
            let mut failed = Vec::new();
            let mut last_error = String::new();
            for ((m, retried), ack) in pending.into_iter().zip(acks) {
                let result = match ack {
                    Ok(future) => future.await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok(ack) => {
                        self.published.fetch_add(1, Ordering::Relaxed);
                        if ack.duplicate && !retried {
                            duplicates += 1;
                            self.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        last_error = format!("partition {}: {e}", m.partition);
                        failed.push((m, true));
                    }
                }
            }
            if failed.is_empty() {
                return Ok(all > 0 && duplicates == all);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the cluster's log (NATS JetStream) did not take {} of this write's \
                     messages within {} s: {last_error}",
                    failed.len(),
                    PUBLISH_DEADLINE.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            pending = failed;
        }
    }

    /// Applies exactly the partitions `held` into `store`: each one once, in stream order,
    /// resuming after the last sequence this process applied (its data is still in the
    /// store), from the first the stream holds for a partition new to it.
    pub fn hold(
        &self,
        held: &std::collections::BTreeSet<u32>,
        store: &Arc<Store>,
        cache: &Arc<super::placement::PartitionCache>,
    ) {
        let mut appliers = self.appliers.lock();
        let mut let_go = Vec::new();
        appliers.retain(|p, task| {
            let keep = held.contains(p);
            if !keep {
                let progress = &self.progress[*p as usize];
                progress.applying.store(false, Ordering::Release);
                progress.caught_up.store(false, Ordering::Release);
                task.abort();
                let_go.push(*p);
            }
            keep
        });
        if !let_go.is_empty() {
            self.forget(let_go, store, cache);
        }
        for &p in held {
            if p >= self.partitions || appliers.contains_key(&p) {
                continue;
            }
            let progress = self.progress[p as usize].clone();
            progress.applying.store(true, Ordering::Release);
            let task = tokio::spawn(apply_partition(
                self.js.clone(),
                (p, self.partitions),
                stream_name(p % self.streams),
                progress,
                store.clone(),
                self.snapshots.clone(),
            ));
            appliers.insert(p, task.abort_handle());
        }
    }

    /// Removes the series of partitions this node no longer holds from its store, and its
    /// progress with them: if the partitions come back, they start again from their
    /// snapshot. A message being applied when the applier was stopped finishes first (the
    /// apply lock), and nothing applies them meanwhile.
    fn forget(
        &self,
        partitions: Vec<u32>,
        store: &Arc<Store>,
        cache: &Arc<super::placement::PartitionCache>,
    ) {
        let progress: Vec<Arc<PartitionProgress>> = partitions
            .iter()
            .map(|&p| self.progress[p as usize].clone())
            .collect();
        let (store, cache, of) = (store.clone(), cache.clone(), self.partitions);
        tokio::task::spawn_blocking(move || {
            let mut keep = vec![false; of as usize];
            let locks: Vec<_> = progress.iter().map(|p| p.apply_lock.lock()).collect();
            for (&p, progress) in partitions.iter().zip(&progress) {
                // Held again meanwhile: its applier goes on from what the store holds.
                if progress.applying.load(Ordering::Acquire) {
                    continue;
                }
                keep[p as usize] = true;
                progress.applied.store(0, Ordering::Release);
                *progress.books.lock() = PartitionBooks::default();
                progress.snapshot_sequence.store(0, Ordering::Release);
            }
            if !keep.contains(&true) {
                return;
            }
            let all = store.select(&argus_tsdb::Matcher::True);
            let ids = cache.keep(&store, &*store, &all, &keep);
            match store.remove_series(&ids) {
                Ok(n) => {
                    tracing::info!(?partitions, series = n, "let go of partitions handed over")
                }
                Err(e) => {
                    tracing::warn!(?partitions, error = %e, "partitions handed over kept in memory")
                }
            }
            drop(locks);
        });
    }

    /// The partitions this node applies and has caught up with: those it may answer for.
    pub fn serving(&self) -> Vec<u32> {
        (0..self.partitions)
            .filter(|&p| {
                let progress = &self.progress[p as usize];
                progress.applying.load(Ordering::Acquire)
                    && progress.caught_up.load(Ordering::Acquire)
            })
            .collect()
    }

    /// The partitions this node applies.
    pub fn held(&self) -> Vec<u32> {
        let mut held: Vec<u32> = self.appliers.lock().keys().copied().collect();
        held.sort_unstable();
        held
    }

    /// Whether every partition this node applies has caught up.
    pub fn caught_up(&self) -> bool {
        self.progress
            .iter()
            .all(|p| !p.applying.load(Ordering::Acquire) || p.caught_up.load(Ordering::Acquire))
    }

    /// What NATS says of each stream: its Raft leader (a NATS server's name), last
    /// sequence, messages and bytes; `None` for a stream it could not describe now.
    pub async fn describe_streams(&self) -> Vec<Option<StreamState>> {
        let mut out = Vec::with_capacity(self.streams as usize);
        for k in 0..self.streams {
            let info = match self.js.get_stream(stream_name(k)).await {
                Ok(stream) => Some(stream.cached_info().clone()),
                Err(_) => None,
            };
            out.push(info.map(|i| StreamState {
                leader: i.cluster.and_then(|c| c.leader),
                last_sequence: i.state.last_sequence,
                messages: i.state.messages,
                bytes: i.state.bytes,
            }));
        }
        out
    }
}

/// Applies one partition into the store until aborted, resuming after the last applied
/// sequence whenever the consumer has to be made again (NATS restarted, the stream moved).
async fn apply_partition(
    js: jetstream::Context,
    (partition, partitions): (u32, u32),
    stream_name: String,
    progress: Arc<PartitionProgress>,
    store: Arc<Store>,
    snapshots: jetstream::object_store::ObjectStore,
) {
    let mut applier = Applier::default();
    let taken = Instant::now();
    // A partition new to this process starts from its snapshot, if there is one, and
    // replays only what the stream holds after it.
    // Read under the apply lock: a let-go of this partition still removing its series
    // (`forget`) finishes first.
    let fresh = {
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            let _applying = progress.apply_lock.lock();
            progress.applied.load(Ordering::Acquire) == 0
        })
        .await
        .unwrap_or(false)
    };
    if fresh {
        match restore(&snapshots, (partition, partitions), &progress, &store).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(
                partition,
                error = %format!("{e:#}"),
                "the partition's snapshot could not be restored; replaying its whole stream"
            ),
        }
    }
    let caught_up = |progress: &PartitionProgress| {
        if progress.applying.load(Ordering::Acquire)
            && !progress.caught_up.swap(true, Ordering::AcqRel)
        {
            progress
                .catch_up_ms
                .store(taken.elapsed().as_millis() as u64, Ordering::Release);
        }
    };
    loop {
        let result = async {
            let stream = js
                .get_stream(&stream_name)
                .await
                .with_context(|| format!("opening the stream {stream_name}"))?;
            let applied = progress.applied.load(Ordering::Acquire);
            let deliver_policy = if applied == 0 {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: applied + 1,
                }
            };
            let mut consumer = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: subject(partition),
                    deliver_policy,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("reading partition {partition}"))?;
            // Nothing to replay: caught up at once (no message would say so).
            if let Ok(info) = consumer.info().await
                && info.num_pending == 0
            {
                progress.pending.store(0, Ordering::Release);
                caught_up(&progress);
            }
            let mut messages = consumer
                .messages()
                .await
                .with_context(|| format!("reading partition {partition}"))?;
            // The first message the stream held past what was applied, as of the last quiet
            // check: still unapplied at the next quiet check, the consumer is stalled.
            let mut unapplied_seen: Option<u64> = None;
            loop {
                let quiet = if unapplied_seen.is_some() {
                    STALL_GRACE
                } else {
                    STALL_CHECK
                };
                let first = match tokio::time::timeout(quiet, messages.next()).await {
                    Ok(Some(first)) => first,
                    Ok(None) => break,
                    Err(_quiet) => {
                        let applied = progress.applied.load(Ordering::Acquire);
                        if let Some(first) = unapplied_seen
                            && first > applied
                        {
                            anyhow::bail!(
                                "partition {partition}: nothing delivered for {} s while the stream holds message {first} (applied up to {applied}); making the consumer again",
                                (STALL_CHECK + STALL_GRACE).as_secs()
                            );
                        }
                        // A check that fails (the stream electing a leader) says nothing
                        // of this consumer: it is kept.
                        match first_unapplied(&stream, partition, applied).await {
                            Ok(first) => unapplied_seen = first,
                            Err(e) => tracing::debug!(partition, error = %format!("{e:#}"), "no answer to a stall check"),
                        }
                        continue;
                    }
                };
                unapplied_seen = None;
                // What has arrived is applied in one go, up to APPLY_BATCH messages: one
                // trip to a blocking thread per batch, not per message.
                let mut batch = vec![first];
                while batch.len() < APPLY_BATCH {
                    match tokio::time::timeout(Duration::ZERO, messages.next()).await {
                        Ok(Some(next)) => batch.push(next),
                        _ => break,
                    }
                }
                let mut work = Vec::with_capacity(batch.len());
                let mut pending = 0;
                for message in batch {
                    let message =
                        message.with_context(|| format!("reading partition {partition}"))?;
                    let (seq, left) = match message.info() {
                        Ok(info) => (info.stream_sequence, info.pending),
                        Err(e) => anyhow::bail!("a message of partition {partition} has no sequence: {e}"),
                    };
                    pending = left;
                    if seq > progress.applied.load(Ordering::Acquire) {
                        let header = |name: &str| {
                            message
                                .headers
                                .as_ref()
                                .and_then(|h| h.get(name))
                                .map(|v| v.as_str().to_string())
                        };
                        let receipt = header(RECEIPT_HEADER).is_some();
                        let id = header("Nats-Msg-Id").unwrap_or_default();
                        work.push((seq, message.payload.clone(), id, receipt));
                    }
                }
                let (st, done) = (store.clone(), progress.clone());
                let mut buf = std::mem::take(&mut applier);
                // Each message and its sequence are recorded together on the blocking
                // thread, which an abort cannot stop halfway: a resumed applier starts
                // after exactly what was applied.
                let (buf, failed) = tokio::task::spawn_blocking(move || {
                    let mut failed = Vec::new();
                    for (seq, payload, id, receipt) in work {
                        let _applying = done.apply_lock.lock();
                        let applied = if receipt {
                            done.books
                                .lock()
                                .take_receipt(&payload)
                                .map(|()| 0)
                                .map_err(anyhow::Error::msg)
                        } else {
                            decode_into(&st, &payload, &mut buf)
                        };
                        done.applied.store(seq, Ordering::Release);
                        done.messages.fetch_add(1, Ordering::Relaxed);
                        match applied {
                            Ok(n) => {
                                done.samples.fetch_add(n as u64, Ordering::Relaxed);
                                if !receipt {
                                    done.books.lock().applied(&id, n as u64);
                                }
                            }
                            Err(e) => failed.push((seq, e)),
                        }
                    }
                    (buf, failed)
                })
                .await
                .context("applying partition messages")?;
                applier = buf;
                for (seq, e) in failed {
                    // A message no Argus wrote: skipped, never retried forever.
                    tracing::error!(partition, seq, error = %format!("{e:#}"), "skipping a message");
                }
                progress.pending.store(pending, Ordering::Release);
                if pending == 0 {
                    caught_up(&progress);
                }
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(partition, error = %format!("{e:#}"), "applying the partition stopped; resuming");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The sequence of the first message `stream` holds of `partition` after `applied`, if
/// any. A quiet, healthy partition has none, and the answer is a few bytes; only a message
/// not applied yet comes back whole.
async fn first_unapplied(
    stream: &stream::Stream,
    partition: u32,
    applied: u64,
) -> anyhow::Result<Option<u64>> {
    let asked = stream
        .raw_message_builder()
        .sequence(applied + 1)
        .next_by_subject(subject(partition))
        .send()
        .await;
    match asked {
        Ok(message) => Ok(Some(message.sequence)),
        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e).with_context(|| {
            format!("asking for partition {partition}'s messages after {applied}")
        }),
    }
}

/// Restores `partition` from its snapshot into `store`, if the bucket holds one: its series
/// and values, and its sequence as the one applied.
async fn restore(
    snapshots: &jetstream::object_store::ObjectStore,
    (partition, partitions): (u32, u32),
    progress: &Arc<PartitionProgress>,
    store: &Arc<Store>,
) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let started = Instant::now();
    let mut object = match snapshots.get(snapshot_name(partition)).await {
        Ok(object) => object,
        Err(e) if e.kind() == jetstream::object_store::GetErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context("reading the partition's snapshot"),
    };
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .context("reading the partition's snapshot")?;
    let (store, done) = (store.clone(), progress.clone());
    tokio::task::spawn_blocking(move || {
        let SnapshotParts {
            sequence,
            books,
            series,
        } = read_snapshot(&bytes, partitions, partition)?;
        let mut restored_books = PartitionBooks::default();
        restored_books
            .merge_encoded(books)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("restoring the partition's snapshot")?;
        let taken = store
            .import_series(series)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("restoring the partition's snapshot")?;
        let _applying = done.apply_lock.lock();
        *done.books.lock() = restored_books;
        done.applied.store(sequence, Ordering::Release);
        done.restored_sequence.store(sequence, Ordering::Release);
        done.restored_series.store(taken as u64, Ordering::Release);
        done.snapshot_sequence.fetch_max(sequence, Ordering::AcqRel);
        anyhow::Ok(())
    })
    .await
    .context("restoring the partition's snapshot")??;
    progress
        .restore_ms
        .store(started.elapsed().as_millis() as u64, Ordering::Release);
    Ok(())
}

/// Opens the snapshots' Object Store bucket, creating it if missing.
async fn snapshot_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> anyhow::Result<jetstream::object_store::ObjectStore> {
    if let Ok(bucket) = js.get_object_store(SNAPSHOT_BUCKET).await {
        return Ok(bucket);
    }
    let created = js
        .create_object_store(jetstream::object_store::Config {
            bucket: SNAPSHOT_BUCKET.to_string(),
            num_replicas: replicas,
            ..Default::default()
        })
        .await;
    match created {
        Ok(bucket) => Ok(bucket),
        // Another node created it meanwhile.
        Err(e) => js
            .get_object_store(SNAPSHOT_BUCKET)
            .await
            .with_context(|| format!("creating the bucket {SNAPSHOT_BUCKET}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argus_tsdb::{StoreConfig, TagMap};

    #[test]
    fn partitions_are_stable_and_spread() {
        let tags = TagMap::from_pairs([("name", "cpu"), ("node", "i-1")]);
        assert_eq!(partition_of(&tags, 64), partition_of(&tags.clone(), 64));
        let mut seen = vec![0u32; 64];
        for i in 0..6_400 {
            let tags =
                TagMap::from_pairs([("name", "cpu".to_string()), ("node", format!("i-{i}"))]);
            seen[partition_of(&tags, 64) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (50..=150).contains(&n)), "{seen:?}");
        // Tag boundaries count.
        let a = TagMap::from_pairs([("name", "ab"), ("x", "c")]);
        let b = TagMap::from_pairs([("name", "a"), ("x", "bc")]);
        assert_ne!(
            (0..8)
                .map(|p| partition_of(&a, 1000 + p))
                .collect::<Vec<_>>(),
            (0..8)
                .map(|p| partition_of(&b, 1000 + p))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn split_messages_rebuild_the_same_store_elsewhere() {
        let now = 1_700_000_000_000;
        let clock: argus_tsdb::Clock = Arc::new(move || now);
        let cfg = StoreConfig::new(60_000, 6 * 3_600_000);
        let gateway = Store::with_clock(cfg, clock.clone());
        let w = gateway.writer();
        let mut samples = Vec::new();
        for i in 0..500 {
            let tags = TagMap::from_pairs([
                ("name", "requests".to_string()),
                ("node", format!("i-{}", i % 50)),
                ("atlas.dstype", "gauge".to_string()),
            ]);
            samples.push(Sample {
                id: w.resolve(&tags),
                ts_ms: now - 60_000 * (i / 50) as i64,
                value: i as f64,
            });
        }
        let messages = split(&gateway, &samples, b"agent-1/7", 8);
        drop(w);
        assert!(messages.len() <= 8 && messages.len() > 1);
        let ids: std::collections::HashSet<_> = messages.iter().map(|m| &m.id).collect();
        assert_eq!(ids.len(), messages.len(), "ids are unique per message");
        // Every message is self-contained: applied in any order, the same series and sums.
        let store = Store::with_clock(cfg, clock);
        let mut applier = Applier::default();
        for m in messages.iter().rev() {
            decode_into(&store, &m.payload, &mut applier).unwrap();
        }
        assert_eq!(store.series_count(), 50);
        assert_eq!(store.samples_stored(), 500);
        for m in &messages {
            let (series, _) = read_message(&m.payload);
            for (tags, dstype) in series {
                assert_eq!(partition_of(&tags, 8), m.partition);
                assert_eq!(dstype, DsType::Gauge);
            }
        }
        // The same batch splits the same way (a resend has the same ids); without an
        // origin, ids come from the content.
        let again = split(&gateway, &samples, b"agent-1/7", 8);
        assert_eq!(
            again.iter().map(|m| &m.id).collect::<Vec<_>>(),
            messages.iter().map(|m| &m.id).collect::<Vec<_>>()
        );
        let by_content = split(&gateway, &samples, b"", 8);
        assert!(by_content[0].id.starts_with('c'));
        assert_eq!(by_content[0].id, split(&gateway, &samples, b"", 8)[0].id);
    }

    #[test]
    fn large_partitions_are_cut_under_the_nats_payload_limit() {
        let store = Store::new(StoreConfig::default());
        let w = store.writer();
        let id = w.resolve(&TagMap::from_pairs([("name", "x")]));
        let now = store.now_ms();
        let samples: Vec<Sample> = (0..100_000)
            .map(|i| Sample {
                id,
                ts_ms: now - i,
                value: 1.0,
            })
            .collect();
        let messages = split(&store, &samples, b"", 4);
        assert!(messages.len() >= 2);
        assert!(messages.iter().all(|m| m.payload.len() < 1 << 20));
        let total: usize = messages.iter().map(|m| read_message(&m.payload).1).sum();
        assert_eq!(total, 100_000);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let store = Store::new(StoreConfig::default());
        let mut scratch = Applier::default();
        let err = decode_into(&store, b"\xff\xff\xff", &mut scratch).unwrap_err();
        assert!(format!("{err:#}").contains("partition message"), "{err:#}");
        let mut bad = message::MessageBuilder::default();
        bad.add_sample(3, 1, 1.0);
        let err = decode_into(&store, &bad.finish(), &mut scratch).unwrap_err();
        assert!(
            format!("{err:#}").contains("names series 3 of 0"),
            "{err:#}"
        );
    }

    #[test]
    fn an_applier_forgets_its_series_when_the_store_removes_some() {
        let now = 1_700_000_000_000;
        let clock: argus_tsdb::Clock = Arc::new(move || now);
        let cfg = StoreConfig::new(60_000, 6 * 3_600_000);
        let gateway = Store::with_clock(cfg, clock.clone());
        let batch = |ts: i64| -> Vec<Sample> {
            let w = gateway.writer();
            (0..10)
                .map(|i| Sample {
                    id: w.resolve(&TagMap::from_pairs([
                        ("name", "x".to_string()),
                        ("node", format!("i-{i}")),
                    ])),
                    ts_ms: ts,
                    value: 1.0,
                })
                .collect()
        };
        let store = Store::with_clock(cfg, clock);
        let mut applier = Applier::default();
        let apply = |samples: &[Sample], applier: &mut Applier| {
            for m in split(&gateway, samples, b"", 4) {
                decode_into(&store, &m.payload, applier).unwrap();
            }
        };
        apply(&batch(now - 120_000), &mut applier);
        assert_eq!(store.samples_stored(), 10);
        // The partitions move away and back: the applier's ids are stale, and known so.
        store
            .remove_series(&store.select(&argus_tsdb::Matcher::True))
            .unwrap();
        store.maintain();
        store.maintain();
        apply(&batch(now - 60_000), &mut applier);
        assert_eq!(store.series_count(), 10);
        assert_eq!(store.samples_stored(), 20);
    }

    /// A message's series (tags and dstype) and its sample count.
    fn read_message(payload: &[u8]) -> (Vec<(TagMap, DsType)>, usize) {
        let mut scratch = Vec::new();
        let mut r = message::Reader::new(message::body(payload, &mut scratch).unwrap()).unwrap();
        let mut series = Vec::new();
        let mut pairs = Vec::new();
        for _ in 0..r.count("series", 2).unwrap() {
            let dstype = r.series(&mut pairs).unwrap();
            series.push((TagMap::from_pairs(pairs.iter().copied()), dstype));
        }
        let n = r.count("samples", 10).unwrap();
        let mut ts = 0;
        for _ in 0..n {
            ts = r.sample(ts).unwrap().1;
        }
        r.end().unwrap();
        (series, n)
    }
}
