//! The store: a catalog (interned tags, identity map, tag index) behind one lock, and series
//! values in shards behind their own locks, so appends to existing series never touch the
//! catalog and queries hold any lock only for a bounded chunk of series.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::error::{Error, Result};
use crate::index::{IndexBatch, Postings, TagIndex};
use crate::matcher::Matcher;
use crate::normalize::{DsType, Merge, step_index_of};
use crate::read::{ReadRequest, SeriesId, SeriesSource};
use crate::series::{Layout, SeriesData};
use crate::tags::{Interner, Sym, TagMap, TagSet, TagSetRef, TagTable, Tags, hash_tags};
use crate::wal::{Prepared, WalWriter};

mod durable;
mod export;
pub use durable::{Durability, Recovery, SnapshotReport, SnapshotStart, fuzzing};

/// Number of value shards; a power of two so the shard of an id is a mask.
const SHARDS: usize = 16;
/// Batches at least this large are applied by several threads, shards split between them.
const PARALLEL_APPLY_SAMPLES: usize = 65_536;
/// How many samples ahead a batch write prefetches each series' head.
const PREFETCH_AHEAD: usize = 8;
/// How many series ahead a scan prefetches each series' slot, and then its values (the slot
/// must have arrived to know where the values are).
const SCAN_SLOT_AHEAD: usize = 6;
const SCAN_VALUES_AHEAD: usize = 3;
const SLOT_BYTES: usize = size_of::<Option<SeriesData>>();
/// Series handled per lock acquisition when scanning, which bounds how long a query can hold
/// a lock that ingest wants.
const SCAN_CHUNK: usize = 512;
/// Upper bound on stored steps one read may touch per series, so a bad request cannot make
/// the store allocate without limit.
const MAX_READ_STEPS: usize = 10_000_000;

/// Milliseconds since the epoch; injectable so tests control time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

/// Shape of the store: the step, how many steps a block holds, how many blocks one sealed
/// unit may merge, how long data is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    pub step_ms: i64,
    pub block_steps: u32,
    pub unit_blocks: u32,
    pub retention_ms: i64,
}

/// Steps one sealed unit may hold: long enough that headers and partial blocks cost little.
const UNIT_STEPS: u32 = 240;

impl StoreConfig {
    /// Blocks of 15 minutes (1 to 60 steps): the head, a token per step, stays small. Sealed
    /// blocks merge into units of up to 240 steps (4 h at 60 s), which compress well.
    pub fn new(step_ms: i64, retention_ms: i64) -> Self {
        let step_ms = step_ms.max(1);
        let block_steps = (900_000 / step_ms).clamp(1, 60) as u32;
        StoreConfig {
            step_ms,
            block_steps,
            unit_blocks: (UNIT_STEPS / block_steps).max(1),
            retention_ms: retention_ms.max(step_ms),
        }
    }

    pub(crate) fn layout(&self) -> Layout {
        Layout {
            block_steps: self.block_steps,
            unit_blocks: self.unit_blocks,
        }
    }

    pub fn block_ms(&self) -> i64 {
        self.step_ms * i64::from(self.block_steps)
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::new(60_000, 6 * 3_600_000)
    }
}

/// One sample for a known series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub id: SeriesId,
    pub ts_ms: i64,
    pub value: f64,
}

/// What happened to a batch of samples: how many were stored, and which were not and why.
#[derive(Debug, Default)]
pub struct AppendOutcome {
    pub stored: usize,
    /// (index in the batch, reason)
    pub rejected: Vec<(usize, Error)>,
}

/// Caps on series creation: past one, a new series is refused ([`Error::SeriesLimit`])
/// while existing series keep ingesting. `u64::MAX` is no cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesLimits {
    pub max_series: u64,
    /// Series sharing one `name` tag value.
    pub max_series_per_name: u64,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        SeriesLimits {
            max_series: u64::MAX,
            max_series_per_name: u64::MAX,
        }
    }
}

/// Where the series are: the operator's view when cardinality explodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cardinality {
    pub series: u64,
    /// `name` values with the most series: (value, series).
    pub names: Vec<(String, u64)>,
    /// Tag keys on the most series: (key, series, distinct values).
    pub keys: Vec<(String, u64, usize)>,
}

/// Memory held by the store, by part (heap estimates from capacities).
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryStats {
    pub n_series: usize,
    pub head_and_sealed_bytes: usize,
    pub sealed_bytes: usize,
    pub sealed_samples: usize,
    pub series_struct_bytes: usize,
    pub tag_bytes: usize,
    pub index_bytes: usize,
    pub interner_bytes: usize,
}

/// How a set of series is stored (see [`Store::storage_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    pub n_series: usize,
    pub sealed_bytes: usize,
    pub sealed_blocks: usize,
    /// Steps covered by sealed blocks, written or not.
    pub sealed_slots: usize,
    /// Non-NaN values in sealed blocks.
    pub sealed_values: usize,
    /// Steps written in head blocks (not yet sealed).
    pub head_slots: usize,
}

/// What one maintenance pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub heads_sealed: usize,
    pub series_dropped: usize,
}

#[derive(Default)]
struct Catalog {
    interner: Interner,
    /// Ids by the hash of their tag set (series whose hashes collide are both kept). Only
    /// the id is stored, 4 bytes where a map from hash to id took 16: growing the table
    /// works each hash out again from the tag table.
    by_hash: hashbrown::HashTable<SeriesId>,
    tags: TagTable,
    free: Vec<SeriesId>,
    /// Ids removed by the latest maintenance pass, free from the next one: a query that
    /// selected a removed series before its id was reused would read the new series'
    /// values under the old tags.
    released: Vec<SeriesId>,
    index: TagIndex,
}

/// Series being loaded (a snapshot), indexed once all are installed rather than one by one.
#[derive(Default)]
pub(super) struct LoadBatch {
    index: IndexBatch,
    /// Each series' tag hash and id, for the table of ids by hash.
    hashes: Vec<(u64, SeriesId)>,
}

impl Catalog {
    /// Indexes the series of a load, by tag and by hash.
    fn finish_load(&mut self, mut batch: LoadBatch) {
        let Catalog {
            interner,
            index,
            tags,
            by_hash,
            ..
        } = self;
        index.insert_batch(batch.index, tags, interner);
        // In the order of their slots in the table (hashbrown probes from a hash's low
        // bits): a million inserts at random places cost a cache miss each. Done during the
        // load, they made the loading thread slower than the parser feeding it.
        batch.hashes.sort_unstable_by_key(|&(hash, _)| hash as u32);
        for (hash, id) in batch.hashes {
            by_hash.insert_unique(hash, id, |&other| {
                Catalog::stored_hash(tags, interner, other)
            });
        }
    }
}

/// Lengthens `v` to at least `len` with `None`s, growing its capacity by an eighth at a
/// time rather than doubling it: these tables hold an entry per series (96 bytes each in
/// the shards), and doubling left up to half of them allocated and unused.
pub(crate) fn grow_to<T>(v: &mut Vec<Option<T>>, len: usize) {
    if v.len() >= len {
        return;
    }
    if len > v.capacity() {
        let target = len.max(v.capacity() + v.capacity() / 8).max(64);
        v.reserve_exact(target - v.len());
    }
    v.resize_with(len, || None);
}

impl Catalog {
    /// Whether series `id` has exactly the `len` tags `pairs`, in key order.
    fn same_tags<'t>(
        &self,
        id: SeriesId,
        len: usize,
        pairs: impl Iterator<Item = (&'t str, &'t str)>,
    ) -> bool {
        match self.tags.get(id) {
            Some(stored) => {
                stored.len() == len
                    && stored.iter().zip(pairs).all(|((k, v), (tk, tv))| {
                        self.interner.resolve(k) == tk && self.interner.resolve(v) == tv
                    })
            }
            None => false,
        }
    }

    fn find(&self, hash: u64, tags: &TagMap) -> Option<SeriesId> {
        self.find_pairs(hash, tags.len(), || tags.iter())
    }

    fn find_pairs<'t, I: Iterator<Item = (&'t str, &'t str)>>(
        &self,
        hash: u64,
        len: usize,
        pairs: impl Fn() -> I,
    ) -> Option<SeriesId> {
        self.by_hash
            .find(hash, |&id| self.same_tags(id, len, pairs()))
            .copied()
    }

    /// Room for `more` series in the table of ids by hash, so that loading many does not
    /// grow it (each growth works every hash out again from the tags).
    pub(crate) fn reserve_series(&mut self, more: usize) {
        let Catalog {
            interner,
            tags,
            by_hash,
            ..
        } = self;
        by_hash.reserve(more, |&id| Catalog::stored_hash(tags, interner, id));
    }

    /// The hash of series `id`'s stored tags (0 for an id without tags).
    fn stored_hash(tags: &TagTable, interner: &Interner, id: SeriesId) -> u64 {
        tags.get(id).map_or(0, |set| {
            hash_tags(
                set.iter()
                    .map(|(k, v)| (interner.resolve(k), interner.resolve(v))),
            )
        })
    }

    fn tags_ref(&self, id: SeriesId) -> Option<TagSetRef<'_>> {
        let pairs = self.tags.get(id)?;
        Some(TagSetRef {
            pairs,
            interner: &self.interner,
        })
    }
}

#[derive(Default)]
struct Shard {
    series: Vec<Option<SeriesData>>,
    /// The log sequence number of the last logged batch applied to this shard: a snapshot
    /// of the shard holds exactly the batches up to it, so replay skips those.
    applied_lsn: u64,
}

impl Shard {
    fn get(&self, id: SeriesId) -> Option<&SeriesData> {
        self.series.get(id as usize / SHARDS)?.as_ref()
    }

    fn get_mut(&mut self, id: SeriesId) -> Option<&mut SeriesData> {
        self.series.get_mut(id as usize / SHARDS)?.as_mut()
    }
}

/// The in-memory dimensional time-series store. Queries read it directly; writes go through
/// a [`Writer`].
pub struct Store {
    cfg: StoreConfig,
    clock: Clock,
    /// Held shared by every [`Writer`] and exclusively by maintenance while it removes
    /// series, so no series is removed, and no id reused, between a writer resolving an id
    /// and writing to it. Lock order: writers, catalog, log, shard.
    writers: RwLock<()>,
    catalog: RwLock<Catalog>,
    shards: Box<[RwLock<Shard>]>,
    samples_stored: AtomicU64,
    /// Counts maintenance passes; a write stamps its series with the current count, so a
    /// pass can tell the series written since the previous one.
    maintenance_pass: AtomicU32,
    /// See [`Store::keep_unwritten_series`].
    keep_unwritten_passes: AtomicU32,
    series_created: AtomicU64,
    series_dropped: AtomicU64,
    /// The write-ahead log, when the store is durable. Its lock orders every logged batch:
    /// a batch is written to the log and applied to the shards under it, so each shard sees
    /// batches in log order. Lock order: catalog, then log, then shard.
    wal: Option<Mutex<WalWriter>>,
    durability: Option<Durability>,
    limits: RwLock<SeriesLimits>,
}

impl Store {
    pub fn new(cfg: StoreConfig) -> Self {
        Self::with_clock(cfg, system_clock())
    }

    pub fn with_clock(cfg: StoreConfig, clock: Clock) -> Self {
        Store {
            cfg,
            clock,
            writers: RwLock::new(()),
            catalog: RwLock::new(Catalog::default()),
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            samples_stored: AtomicU64::new(0),
            maintenance_pass: AtomicU32::new(0),
            keep_unwritten_passes: AtomicU32::new(0),
            series_created: AtomicU64::new(0),
            series_dropped: AtomicU64::new(0),
            wal: None,
            durability: None,
            limits: RwLock::new(SeriesLimits::default()),
        }
    }

    pub fn config(&self) -> StoreConfig {
        self.cfg
    }

    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// The clock the store reads: what every other part of a server that times things
    /// (event counts, live subscriptions) reads too, so one clock rules them all.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    fn shard(&self, id: SeriesId) -> &RwLock<Shard> {
        &self.shards[id as usize & (SHARDS - 1)]
    }

    /// The id of the series with exactly these tags, if it exists.
    pub fn lookup(&self, tags: &TagMap) -> Option<SeriesId> {
        let hash = hash_tags(tags.iter());
        self.catalog.read().find(hash, tags)
    }

    /// A hold for writing: ids it resolves keep naming their series until it is dropped
    /// (see [`Writer`]). Take one per request or batch, not per sample, and never two on one
    /// thread: a second waits behind maintenance, which waits for the first.
    pub fn writer(&self) -> Writer<'_> {
        Writer {
            store: self,
            _hold: self.writers.read(),
        }
    }

    /// Sets the caps on series creation (see [`SeriesLimits`]).
    pub fn set_limits(&self, limits: SeriesLimits) {
        *self.limits.write() = limits;
    }

    /// Lets go of pins taken with [`Writer::pin`]; each id must have been pinned (and so
    /// still names the series it was pinned as).
    pub fn unpin(&self, ids: &[SeriesId]) {
        for &id in ids {
            if let Some(data) = self.shard(id).write().get_mut(id)
                && data.pins != u16::MAX
            {
                data.pins = data.pins.saturating_sub(1);
            }
        }
    }

    fn resolve_limited(&self, tags: &TagMap, dstype: DsType, limited: bool) -> Result<SeriesId> {
        let hash = hash_tags(tags.iter());
        if let Some(id) = self.catalog.read().find(hash, tags) {
            return Ok(id);
        }
        let mut cat = self.catalog.write();
        if let Some(id) = cat.find(hash, tags) {
            return Ok(id);
        }
        if limited {
            let limits = *self.limits.read();
            let count = cat.index.len();
            if count >= limits.max_series {
                return Err(Error::SeriesLimit {
                    what: "series in total".into(),
                    count,
                    limit: limits.max_series,
                    setting: "--max-series",
                });
            }
            if limits.max_series_per_name != u64::MAX {
                let name = tags.get("name").unwrap_or("");
                let count = cat.index.count("name", name, &cat.interner);
                if count >= limits.max_series_per_name {
                    return Err(Error::SeriesLimit {
                        what: format!("series named {name:?}"),
                        count,
                        limit: limits.max_series_per_name,
                        setting: "--max-series-per-metric",
                    });
                }
            }
        }
        cat.tags.check_room(tags.len())?;
        let id = match cat.free.pop() {
            Some(id) => id,
            None => cat.tags.len() as SeriesId,
        };
        if let Some(wal) = &self.wal {
            // Queued under the catalog lock, so that it precedes in the log every batch
            // that can name the new id.
            wal.lock().push_pending(durable::KIND_SERIES, |out| {
                durable::encode_series(out, id, tags, dstype)
            });
        }
        let mut data = SeriesData::new(dstype);
        // Created counts as written, for `keep_unwritten_series`.
        data.written_in_pass = self.maintenance_pass.load(Ordering::Relaxed);
        self.install(&mut cat, id, hash, tags, data)?;
        Ok(id)
    }

    /// Keeps a series that holds nothing for `passes` maintenance passes after it was
    /// created or last written (0, the default: removed at the next pass). A cluster's
    /// gateway names every series it takes, most of which other nodes store: removed at
    /// every pass, they would be created again on the next write, and every id a
    /// converter cached would go stale with them.
    pub fn keep_unwritten_series(&self, passes: u32) {
        self.keep_unwritten_passes.store(passes, Ordering::Relaxed);
    }

    /// The `top` names and tag keys with the most series.
    pub fn cardinality(&self, top: usize) -> Cardinality {
        let cat = self.catalog.read();
        let mut names: Vec<(String, u64)> = cat
            .index
            .values_within("name", &cat.interner, None)
            .into_iter()
            .map(|(v, n)| (v.to_string(), n))
            .collect();
        names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        names.truncate(top);
        let mut keys: Vec<(String, u64, usize)> = cat
            .index
            .keys_within(None)
            .map(|(k, n)| {
                (
                    cat.interner.resolve(k).to_string(),
                    n,
                    cat.index.distinct_values(k),
                )
            })
            .collect();
        keys.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then(b.2.cmp(&a.2))
                .then_with(|| a.0.cmp(&b.0))
        });
        keys.truncate(top);
        Cardinality {
            series: cat.index.len(),
            names,
            keys,
        }
    }

    /// Puts a series with `tags` and `data` at `id` (a free slot).
    fn install(
        &self,
        cat: &mut Catalog,
        id: SeriesId,
        hash: u64,
        tags: &TagMap,
        data: SeriesData,
    ) -> Result<()> {
        let set: TagSet = tags
            .iter()
            .map(|(k, v)| (cat.interner.intern(k), cat.interner.intern(v)))
            .collect();
        self.install_set(cat, id, hash, &set, data, None)
    }

    fn install_set(
        &self,
        cat: &mut Catalog,
        id: SeriesId,
        hash: u64,
        set: &[(Sym, Sym)],
        data: SeriesData,
        deferred: Option<&mut LoadBatch>,
    ) -> Result<()> {
        cat.tags.insert(id, set)?;
        let Catalog {
            interner, index, ..
        } = &mut *cat;
        match deferred {
            Some(batch) => {
                batch.index.add(id);
                batch.hashes.push((hash, id));
            }
            None => {
                index.insert(id, set, interner);
                let Catalog {
                    interner,
                    tags,
                    by_hash,
                    ..
                } = &mut *cat;
                by_hash.insert_unique(hash, id, |&other| {
                    Catalog::stored_hash(tags, interner, other)
                });
            }
        }
        // Lock order is always catalog, then shard.
        let mut shard = self.shard(id).write();
        let local = id as usize / SHARDS;
        grow_to(&mut shard.series, local + 1);
        shard.series[local] = Some(data);
        self.series_created.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes series `id` from the catalog and its shard, unless it holds data, had a
    /// sample at or after `unless_sampled_since` or is pinned (`i64::MAX` removes it
    /// whatever it holds); its id is released, free from the next maintenance pass. False
    /// when nothing was removed.
    fn remove(&self, cat: &mut Catalog, id: SeriesId, unless_sampled_since: i64) -> bool {
        let mut shard = self.shard(id).write();
        if shard.get(id).is_some_and(|d| {
            unless_sampled_since != i64::MAX
                && (!d.is_empty() || d.norm.last_sample_ms() >= unless_sampled_since || d.pins > 0)
        }) {
            return false;
        }
        if let Some(slot) = shard.series.get_mut(id as usize / SHARDS) {
            *slot = None;
        }
        drop(shard);
        let Some(set) = cat.tags.remove(id) else {
            return false;
        };
        let hash = hash_tags(
            set.iter()
                .map(|&(k, v)| (cat.interner.resolve(k), cat.interner.resolve(v))),
        );
        let Catalog {
            interner,
            index,
            by_hash,
            released,
            ..
        } = &mut *cat;
        index.remove(id, &set, interner);
        if let Ok(entry) = by_hash.find_entry(hash, |&x| x == id) {
            entry.remove();
        }
        released.push(id);
        self.series_dropped.fetch_add(1, Ordering::Release);
        true
    }

    /// The window of timestamps the store accepts now: `[now - retention, now + retention]`.
    pub fn accept_window(&self) -> (i64, i64) {
        let now = self.now_ms();
        (now - self.cfg.retention_ms, now + self.cfg.retention_ms)
    }

    /// See [`Writer::try_append_batch`]; the caller holds a [`Writer`].
    fn try_append_batch(&self, samples: &[Sample], origin: &[u8]) -> Result<AppendOutcome> {
        let Some(wal) = &self.wal else {
            return Ok(self.apply(samples, 0, None));
        };
        // Everything that grows with the batch happens outside the log's lock: encoding the
        // record (and most of its CRC) and sorting the batch by shard.
        let mut record = Prepared::new(
            RECORD_BUF.with(|b| b.take()),
            durable::KIND_SAMPLES,
            |out| durable::encode_samples(out, origin, samples),
        );
        let plan = Plan::new(samples);
        let window = self.accept_window();
        let pass = self.maintenance_pass.load(Ordering::Relaxed);
        let mut guards = Vec::with_capacity(SHARDS);
        let lsn;
        {
            let mut log = wal.lock();
            lsn = log.peek_lsn();
            let written = log.write_prepared(&mut record, lsn);
            RECORD_BUF.with(|b| b.replace(record.buf));
            written?;
            log.take_lsn();
            // The shards this batch touches are taken before the log is let go, so a later
            // batch reaches each shard after this one (log order per shard); it then
            // follows this one shard by shard instead of waiting for all of it.
            for shard_no in 0..SHARDS {
                if !plan.mine(shard_no).is_empty() {
                    guards.push((shard_no, self.shards[shard_no].write()));
                }
            }
        }
        let mut outcome = AppendOutcome::default();
        for (shard_no, mut shard) in guards {
            self.apply_shard(
                &mut shard,
                plan.mine(shard_no),
                samples,
                lsn,
                window,
                pass,
                &mut outcome,
            );
        }
        Ok(self.finish(outcome))
    }

    /// Applies a batch with log sequence number `lsn` to the shards, one at a time, skipping
    /// those whose entry in `skip_through` says they already hold it (replay after a
    /// snapshot).
    fn apply(
        &self,
        samples: &[Sample],
        lsn: u64,
        skip_through: Option<&[u64; SHARDS]>,
    ) -> AppendOutcome {
        let plan = Plan::new(samples);
        let window = self.accept_window();
        let pass = self.maintenance_pass.load(Ordering::Relaxed);
        let apply_shards = |shard_nos: &mut dyn Iterator<Item = usize>| {
            let mut outcome = AppendOutcome::default();
            for shard_no in shard_nos {
                let mine = plan.mine(shard_no);
                if mine.is_empty() || skip_through.is_some_and(|s| s[shard_no] >= lsn) {
                    continue;
                }
                self.apply_shard(
                    &mut self.shards[shard_no].write(),
                    mine,
                    samples,
                    lsn,
                    window,
                    pass,
                    &mut outcome,
                );
            }
            outcome
        };
        let threads = crate::parallel::scan_cores().min(4);
        if samples.len() < PARALLEL_APPLY_SAMPLES || threads < 2 {
            return self.finish(apply_shards(&mut (0..SHARDS)));
        }
        // A large batch (a replayed log record holds up to a million samples): the shards
        // are independent, so each thread takes every `threads`-th one.
        let outcomes: Vec<AppendOutcome> = std::thread::scope(|scope| {
            let apply_shards = &apply_shards;
            let handles: Vec<_> = (1..threads)
                .map(|t| scope.spawn(move || apply_shards(&mut (t..SHARDS).step_by(threads))))
                .collect();
            let mut outcomes = vec![apply_shards(&mut (0..SHARDS).step_by(threads))];
            // A worker that panicked has lost nothing durable: its samples are still in
            // the log; the panic is passed on as the sequential path would have raised it.
            outcomes.extend(
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
            );
            outcomes
        });
        let mut outcome = AppendOutcome::default();
        for o in outcomes {
            outcome.stored += o.stored;
            outcome.rejected.extend(o.rejected);
        }
        self.finish(outcome)
    }

    fn finish(&self, mut outcome: AppendOutcome) -> AppendOutcome {
        outcome.rejected.sort_by_key(|r| r.0);
        self.samples_stored
            .fetch_add(outcome.stored as u64, Ordering::Relaxed);
        outcome
    }

    /// Writes the samples `mine` (indexes into `samples`, all of this shard) in order.
    #[allow(clippy::too_many_arguments)]
    fn apply_shard(
        &self,
        shard: &mut Shard,
        mine: &[u32],
        samples: &[Sample],
        lsn: u64,
        (min_ms, max_ms): (i64, i64),
        pass: u32,
        outcome: &mut AppendOutcome,
    ) {
        let step = self.cfg.step_ms;
        let layout = self.cfg.layout();
        shard.applied_lsn = shard.applied_lsn.max(lsn);
        for (k, &i) in mine.iter().enumerate() {
            // A few samples ahead, so the fetch lands by the time the write needs it.
            if let Some(&ahead) = mine.get(k + PREFETCH_AHEAD)
                && let Some(data) = shard.get(samples[ahead as usize].id)
            {
                data.prefetch_head();
            }
            let i = i as usize;
            let s = &samples[i];
            if s.ts_ms < min_ms || s.ts_ms > max_ms {
                outcome.rejected.push((
                    i,
                    Error::OutOfRetention {
                        ts_ms: s.ts_ms,
                        min_ms,
                        max_ms,
                    },
                ));
                continue;
            }
            let Some(data) = shard.get_mut(s.id) else {
                outcome
                    .rejected
                    .push((i, Error::UnknownSeries { id: s.id }));
                continue;
            };
            data.written_in_pass = pass;
            write_sample(data, s.ts_ms, s.value, step, layout);
            outcome.stored += 1;
        }
    }

    /// Seals heads whose block ended a while ago and drops data older than the retention
    /// window, removing series that have nothing left. Run periodically.
    pub fn maintain(&self) -> MaintenanceReport {
        let now = self.now_ms();
        let step = self.cfg.step_ms;
        let bs = self.cfg.block_steps;
        let layout = self.cfg.layout();
        let min_step = (now - self.cfg.retention_ms).div_euclid(step);
        let min_block = min_step.div_euclid(i64::from(bs)).max(0) as u32;
        let min_ms = now - self.cfg.retention_ms;
        // Late samples for a block are accepted until two steps (at least two minutes) after
        // it ends; a head is sealed after that, the rare later write re-encodes the block.
        let grace_ms = (2 * step).max(120_000);
        // A series written since the previous pass keeps its head even when the block is
        // old: a replayed backlog (an agent back after an outage, a backfill) is still
        // filling it, and sealing under it would turn each further sample into a re-encode.
        let busy_pass = self.maintenance_pass.fetch_add(1, Ordering::Relaxed);
        let keep_unwritten = self.keep_unwritten_passes.load(Ordering::Relaxed);
        let mut report = MaintenanceReport::default();
        let mut empty = Vec::new();
        for (shard_no, lock) in self.shards.iter().enumerate() {
            let mut shard = lock.write();
            for (local, slot) in shard.series.iter_mut().enumerate() {
                let Some(data) = slot else { continue };
                if let Some(head) = data.head_block() {
                    let head_end = (i64::from(head) + 1) * self.cfg.block_ms();
                    if head_end + grace_ms < now && data.written_in_pass != busy_pass {
                        data.seal_head(layout);
                        report.heads_sealed += 1;
                    }
                }
                // A counter or rate between its first sample and its first value holds only
                // normalizer state: dropping it would lose that sample.
                if data.expire_before(min_block, layout)
                    && data.norm.last_sample_ms() < min_ms
                    && busy_pass.wrapping_sub(data.written_in_pass) >= keep_unwritten
                {
                    empty.push((local * SHARDS + shard_no) as SeriesId);
                }
            }
        }
        // Ids released by the previous pass may be reused from now on.
        if !self.catalog.read().released.is_empty() {
            let mut cat = self.catalog.write();
            let Catalog { free, released, .. } = &mut *cat;
            free.append(released);
        }
        if !empty.is_empty() {
            // No writer may hold an id of a series removed here: wait for the writers
            // (ingest queues behind this for as long as the longest write in flight).
            let _no_writers = self.writers.write();
            let mut cat = self.catalog.write();
            for id in empty {
                // A sample may have arrived since the scan; only drop what is still empty.
                if self.remove(&mut cat, id, min_ms) {
                    report.series_dropped += 1;
                }
            }
        }
        report
    }

    /// Seals every head now (used before measuring compressed size, and at shutdown).
    pub fn seal_all(&self) {
        for lock in self.shards.iter() {
            let mut shard = lock.write();
            for data in shard.series.iter_mut().flatten() {
                data.seal_head(self.cfg.layout());
            }
        }
    }

    pub fn series_count(&self) -> usize {
        self.catalog.read().index.len() as usize
    }

    /// Series dropped since start. Their ids are reused, so a cache of ids by tags must be
    /// cleared when this changes.
    pub fn series_dropped(&self) -> u64 {
        self.series_dropped.load(Ordering::Acquire)
    }

    pub fn samples_stored(&self) -> u64 {
        self.samples_stored.load(Ordering::Relaxed)
    }

    /// The tags of one series.
    pub fn tags(&self, id: SeriesId) -> Option<TagMap> {
        self.catalog.read().tags_ref(id).map(|t| t.to_map())
    }

    /// How samples of series `id` land on steps, if the series exists.
    pub fn dstype(&self, id: SeriesId) -> Option<DsType> {
        self.shard(id).read().get(id).map(|data| data.dstype)
    }

    /// Tag keys with the number of series having each, sorted by key, over the series
    /// matching `within` (all series if `None`).
    pub fn tag_keys(&self, within: Option<&Matcher>) -> Vec<(String, u64)> {
        let cat = self.catalog.read();
        let filter = within.map(|m| cat.index.select(m, &cat.interner));
        Self::keys_among(&cat, filter.as_ref())
    }

    /// Values of `key` with the number of series having each, sorted by value.
    pub fn tag_values(&self, key: &str, within: Option<&Matcher>) -> Vec<(String, u64)> {
        let cat = self.catalog.read();
        let filter = within.map(|m| cat.index.select(m, &cat.interner));
        Self::values_among(&cat, key, filter.as_ref())
    }

    /// [`Store::tag_keys`] over the series `ids` (a cluster node's share of the partitions).
    pub fn tag_keys_of(&self, ids: &Postings) -> Vec<(String, u64)> {
        Self::keys_among(&self.catalog.read(), Some(ids))
    }

    /// [`Store::tag_values`] over the series `ids`.
    pub fn tag_values_of(&self, key: &str, ids: &Postings) -> Vec<(String, u64)> {
        Self::values_among(&self.catalog.read(), key, Some(ids))
    }

    fn keys_among(cat: &Catalog, filter: Option<&Postings>) -> Vec<(String, u64)> {
        let mut keys: Vec<(String, u64)> = cat
            .index
            .keys_within(filter)
            .map(|(k, n)| (cat.interner.resolve(k).to_string(), n))
            .collect();
        keys.sort();
        keys
    }

    fn values_among(cat: &Catalog, key: &str, filter: Option<&Postings>) -> Vec<(String, u64)> {
        cat.index
            .values_within(key, &cat.interner, filter)
            .into_iter()
            .map(|(v, n)| (v.to_string(), n))
            .collect()
    }

    /// How the values of `ids` (all series if `None`) are stored. Decodes every sealed block
    /// to count its values: an operator's report, not a hot path.
    pub fn storage_stats(&self, ids: Option<&Postings>) -> StorageStats {
        let all;
        let ids = match ids {
            Some(ids) => ids,
            None => {
                all = self.select(&Matcher::True);
                &all
            }
        };
        let mut st = StorageStats::default();
        for id in ids {
            if let Some(d) = self.shard(id).read().get(id) {
                let (bytes, blocks) = d.sealed_stats();
                st.n_series += 1;
                st.sealed_bytes += bytes;
                st.sealed_blocks += blocks;
                st.sealed_slots += blocks * self.cfg.block_steps as usize;
                st.sealed_values += d.sealed_values(self.cfg.layout());
                st.head_slots += d.head_len();
            }
        }
        st
    }

    /// Memory held, by part.
    pub fn memory(&self) -> MemoryStats {
        let mut m = MemoryStats::default();
        for lock in self.shards.iter() {
            let shard = lock.read();
            m.series_struct_bytes += shard.series.capacity() * size_of::<Option<SeriesData>>();
            for d in shard.series.iter().flatten() {
                m.n_series += 1;
                m.head_and_sealed_bytes += d.heap_bytes();
                let (b, n) = d.sealed_stats();
                m.sealed_bytes += b;
                m.sealed_samples += n * self.cfg.block_steps as usize;
            }
        }
        let cat = self.catalog.read();
        m.tag_bytes = cat.tags.heap_bytes() + cat.by_hash.capacity() * 5;
        m.index_bytes = cat.index.heap_bytes();
        m.interner_bytes = cat.interner.heap_bytes();
        m
    }

    fn check_request(&self, req: &ReadRequest) -> Result<usize> {
        let stored = self.cfg.step_ms;
        if req.step_ms <= 0 || req.step_ms % stored != 0 {
            return Err(Error::InvalidStep {
                step_ms: req.step_ms,
                stored_step_ms: stored,
            });
        }
        if req.end_ms < req.start_ms
            || req.start_ms % req.step_ms != 0
            || req.end_ms % req.step_ms != 0
        {
            return Err(Error::InvalidRange {
                start_ms: req.start_ms,
                end_ms: req.end_ms,
            });
        }
        let raw = req.len().saturating_mul((req.step_ms / stored) as usize);
        if raw > MAX_READ_STEPS {
            return Err(Error::TooLarge {
                what: "stored steps per series in one read",
                requested: raw,
                limit: MAX_READ_STEPS,
            });
        }
        Ok(raw)
    }
}

/// A writer's hold on the store. While one lives, maintenance removes no series, so every
/// id the writer resolves names the same series until it is dropped: hold one across
/// resolving series and appending their samples. An id kept past the hold (a stream's table
/// of series) must be pinned ([`Writer::pin`]), or checked again under the next hold: it is
/// still good when [`Writer::removals`] has not changed.
pub struct Writer<'a> {
    store: &'a Store,
    _hold: RwLockReadGuard<'a, ()>,
}

impl<'a> Writer<'a> {
    pub fn store(&self) -> &'a Store {
        self.store
    }

    /// How many series maintenance has removed since the store started; it cannot change
    /// while this hold lives. Ids cached under an earlier hold are good if it is the same.
    pub fn removals(&self) -> u64 {
        self.store.series_dropped()
    }

    /// The id of the series with exactly these tags, created if new. A new series is in the
    /// index, and so visible to queries, before this returns. Its `atlas.dstype` tag (rate
    /// when absent) says how samples land on steps. Ignores the series limits.
    pub fn resolve(&self, tags: &TagMap) -> SeriesId {
        let dstype = tags
            .get(DsType::TAG)
            .and_then(DsType::parse)
            .unwrap_or(DsType::Rate);
        self.resolve_as(tags, dstype)
    }

    /// Like [`Writer::resolve_as`], from borrowed tags sorted by key: an existing series is
    /// found without allocating (the cluster's log names every series in every message).
    pub fn resolve_sorted(&self, pairs: &[(&str, &str)], dstype: DsType) -> SeriesId {
        let hash = hash_tags(pairs.iter().copied());
        let found = self
            .store
            .catalog
            .read()
            .find_pairs(hash, pairs.len(), || pairs.iter().copied());
        match found {
            Some(id) => id,
            None => self.resolve_as(&TagMap::from_pairs(pairs.iter().copied()), dstype),
        }
    }

    /// Like [`Writer::resolve`], with the dstype of a new series given rather than read from
    /// its tags (values loaded as they are, whatever the tags say). Ignores the series
    /// limits: for the server's own series.
    pub fn resolve_as(&self, tags: &TagMap, dstype: DsType) -> SeriesId {
        self.store
            .resolve_limited(tags, dstype, false)
            .unwrap_or_else(|_| unreachable!("unlimited resolution cannot fail"))
    }

    /// The id of the series with exactly these tags, created if new and within the
    /// [`SeriesLimits`]; the dstype of a new series is read from its tags, as
    /// [`Writer::resolve`] does, unless given.
    pub fn try_resolve(&self, tags: &TagMap, dstype: Option<DsType>) -> Result<SeriesId> {
        let dstype = dstype.unwrap_or_else(|| {
            tags.get(DsType::TAG)
                .and_then(DsType::parse)
                .unwrap_or(DsType::Rate)
        });
        self.store.resolve_limited(tags, dstype, true)
    }

    /// Keeps these series (ids resolved under this hold) from being removed until
    /// [`Store::unpin`], however long they stay empty: for ids kept past the hold.
    pub fn pin(&self, ids: &[SeriesId]) {
        for &id in ids {
            if let Some(data) = self.store.shard(id).write().get_mut(id) {
                data.pins = data.pins.saturating_add(1);
            }
        }
    }

    /// Appends one sample.
    pub fn append(&self, id: SeriesId, ts_ms: i64, value: f64) -> Result<()> {
        let mut out = self.append_batch(&[Sample { id, ts_ms, value }]);
        match out.rejected.pop() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Appends a batch, taking each shard's lock once. Samples of one series are applied in
    /// batch order (which matters for rates and counters). When the store is durable and
    /// the log cannot be written, every sample is rejected with [`Error::Unavailable`].
    pub fn append_batch(&self, samples: &[Sample]) -> AppendOutcome {
        match self.try_append_batch(samples, &[]) {
            Ok(outcome) => outcome,
            Err(e) => {
                let message = match e {
                    Error::Unavailable(m) => m,
                    other => other.to_string(),
                };
                AppendOutcome {
                    stored: 0,
                    rejected: (0..samples.len())
                        .map(|i| (i, Error::Unavailable(message.clone())))
                        .collect(),
                }
            }
        }
    }

    /// Appends a batch, first to the write-ahead log when the store is durable: when this
    /// returns `Ok`, the batch survives a crash of the process. `origin` is kept with the
    /// batch in the log and handed back by recovery (a sender's batch id, so resends after
    /// a restart are still recognised). `Err` ([`Error::Unavailable`]) means nothing was
    /// applied and the same call may succeed later.
    pub fn try_append_batch(&self, samples: &[Sample], origin: &[u8]) -> Result<AppendOutcome> {
        self.store.try_append_batch(samples, origin)
    }
}

thread_local! {
    /// The buffer a thread encodes its log records in, kept between batches.
    static RECORD_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A batch sorted by shard in one counting pass (stable, so each series keeps its order).
struct Plan {
    starts: [u32; SHARDS + 1],
    order: Vec<u32>,
}

impl Plan {
    fn new(samples: &[Sample]) -> Plan {
        let mut starts = [0u32; SHARDS + 1];
        for s in samples {
            starts[(s.id as usize & (SHARDS - 1)) + 1] += 1;
        }
        for i in 0..SHARDS {
            starts[i + 1] += starts[i];
        }
        let mut next = starts;
        let mut order = vec![0u32; samples.len()];
        for (i, s) in samples.iter().enumerate() {
            let shard = s.id as usize & (SHARDS - 1);
            order[next[shard] as usize] = i as u32;
            next[shard] += 1;
        }
        Plan { starts, order }
    }

    /// The batch indexes of shard `shard_no`'s samples, in batch order.
    fn mine(&self, shard_no: usize) -> &[u32] {
        &self.order[self.starts[shard_no] as usize..self.starts[shard_no + 1] as usize]
    }
}

/// Routes one raw sample through its series' normalization into the step slots.
#[inline]
fn write_sample(data: &mut SeriesData, ts_ms: i64, value: f64, step_ms: i64, layout: Layout) {
    match data.dstype {
        DsType::Gauge => data.write(step_index_of(ts_ms, step_ms), value, Merge::Max, layout),
        DsType::Sum => data.write(step_index_of(ts_ms, step_ms), value, Merge::Add, layout),
        DsType::Rate => {
            let mut norm = data.norm;
            norm.rate(ts_ms, value, step_ms, step_ms, &mut |b, v| {
                data.write(b / step_ms, v, Merge::Max, layout)
            });
            data.norm = norm;
        }
        DsType::Counter => {
            let mut norm = data.norm;
            norm.counter(ts_ms, value, step_ms, &mut |b, v| {
                data.write(b / step_ms, v, Merge::Max, layout)
            });
            data.norm = norm;
        }
    }
}

impl SeriesSource for Store {
    fn step_ms(&self) -> i64 {
        self.cfg.step_ms
    }

    /// Splits by shard: each part holds whole shards, so parallel readers never share a
    /// lock.
    fn partition(&self, ids: &Postings, n: usize) -> Vec<Postings> {
        let n = n.clamp(1, SHARDS);
        let mut parts = vec![Postings::new(); n];
        for id in ids {
            parts[(id as usize & (SHARDS - 1)) % n].insert(id);
        }
        parts
    }

    fn select(&self, m: &Matcher) -> Postings {
        let cat = self.catalog.read();
        cat.index.select(m, &cat.interner)
    }

    fn visit_tags(&self, ids: &Postings, f: &mut dyn FnMut(SeriesId, &dyn Tags)) {
        let mut iter = ids.iter().peekable();
        while iter.peek().is_some() {
            let cat = self.catalog.read();
            for id in iter.by_ref().take(SCAN_CHUNK) {
                if let Some(tags) = cat.tags_ref(id) {
                    f(id, &tags);
                }
            }
        }
    }

    fn visit_values(
        &self,
        ids: &Postings,
        req: &ReadRequest,
        f: &mut dyn FnMut(SeriesId, &[f64]),
    ) -> Result<()> {
        let raw_len = self.check_request(req)?;
        let stored = self.cfg.step_ms;
        let multiple = (req.step_ms / stored) as usize;
        let first_step = req.start_ms / stored;
        let mut raw = vec![f64::NAN; raw_len];
        let mut out = vec![f64::NAN; req.len()];
        let layout = self.cfg.layout();
        let mut scratch = vec![f64::NAN; layout.max_unit_steps()];
        // Where each shard's slots were when the scan began. Only prefetches use these, and
        // a prefetch of a slot that has moved since is a wasted hint, nothing worse.
        let slot_bases: Vec<(*const Option<SeriesData>, usize)> = self
            .shards
            .iter()
            .map(|shard| {
                let shard = shard.read();
                (shard.series.as_ptr(), shard.series.len())
            })
            .collect();
        let prefetch_slot = |id: SeriesId| {
            let (base, len) = slot_bases[id as usize & (SHARDS - 1)];
            let at = id as usize / SHARDS;
            if at < len {
                let slot = base.wrapping_add(at);
                crate::prefetch::line(slot);
                crate::prefetch::line(slot.cast::<u8>().wrapping_add(SLOT_BYTES - 1));
            }
        };
        let prefetch_values = |id: SeriesId| {
            if let Some(data) = self.shard(id).read().get(id) {
                data.prefetch_values();
            }
        };
        // The series to read are known in advance, but each one's slot, sealed units and
        // head are three misses in a row that the CPU cannot overlap with the decoding of
        // the series before: each is fetched a few series ahead of its turn.
        let mut slots_ahead = ids.iter();
        let mut values_ahead = ids.iter();
        slots_ahead
            .by_ref()
            .take(SCAN_SLOT_AHEAD)
            .for_each(prefetch_slot);
        values_ahead
            .by_ref()
            .take(SCAN_VALUES_AHEAD)
            .for_each(prefetch_values);
        // Ascending ids walk the series' memory in allocation order, which the hardware
        // prefetcher likes: measured faster than grouping by shard to take fewer locks.
        for id in ids {
            if let Some(ahead) = slots_ahead.next() {
                prefetch_slot(ahead);
            }
            if let Some(ahead) = values_ahead.next() {
                prefetch_values(ahead);
            }
            {
                let shard = self.shard(id).read();
                let Some(data) = shard.get(id) else { continue };
                data.read_steps(first_step, &mut raw, layout, &mut scratch)?;
            }
            if multiple == 1 {
                f(id, &raw);
            } else {
                for (o, chunk) in out.iter_mut().zip(raw.chunks_exact(multiple)) {
                    *o = req.cf.apply(chunk);
                }
                f(id, &out);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tag sets whose 64-bit hashes collide are both found, and removing one keeps the
    /// other (the table holds ids only, told apart by their stored tags).
    #[test]
    fn series_with_colliding_hashes_are_told_apart() {
        let store = Store::new(StoreConfig::default());
        let a = TagMap::from_pairs([("name", "a"), ("nf.app", "x")]);
        let b = TagMap::from_pairs([("name", "b"), ("nf.app", "x")]);
        let same_hash = 42;
        {
            let mut cat = store.catalog.write();
            store
                .install(&mut cat, 0, same_hash, &a, SeriesData::new(DsType::Gauge))
                .unwrap();
            store
                .install(&mut cat, 1, same_hash, &b, SeriesData::new(DsType::Gauge))
                .unwrap();
            assert_eq!(cat.find(same_hash, &a), Some(0));
            assert_eq!(cat.find(same_hash, &b), Some(1));
            assert_eq!(cat.find(hash_tags(a.iter()), &a), None);
        }
        // Removal works the hash out from the stored tags, so remove through the table the
        // way `remove` does, by id.
        let mut cat = store.catalog.write();
        let Catalog { by_hash, .. } = &mut *cat;
        by_hash.find_entry(same_hash, |&x| x == 0).unwrap().remove();
        assert_eq!(cat.find(same_hash, &a), None);
        assert_eq!(cat.find(same_hash, &b), Some(1));
    }

    /// A batch large enough to be applied by several threads stores and refuses exactly
    /// what one thread would, refusals in batch order.
    #[test]
    fn a_large_batch_applied_in_parallel_matches_the_sequential_outcome() {
        let store = Store::new(StoreConfig::default());
        let writer = store.writer();
        let ids: Vec<SeriesId> = (0..1_000)
            .map(|i| {
                writer.resolve(&TagMap::from_pairs([
                    ("name", "par".to_string()),
                    ("i", i.to_string()),
                    ("atlas.dstype", "gauge".to_string()),
                ]))
            })
            .collect();
        let now = store.now_ms() / 60_000 * 60_000;
        let n = PARALLEL_APPLY_SAMPLES * 2;
        let samples: Vec<Sample> = (0..n)
            .map(|k| Sample {
                // Every 1000th sample names an id that does not exist, every 777th is too old.
                id: if k % 1000 == 999 {
                    5_000_000
                } else {
                    ids[k % 1_000]
                },
                ts_ms: if k % 777 == 0 {
                    0
                } else {
                    now - (k / 1_000) as i64 * 60_000
                },
                value: k as f64,
            })
            .collect();
        let outcome = store.apply(&samples, 0, None);
        let refused: Vec<usize> = (0..n).filter(|k| k % 1000 == 999 || k % 777 == 0).collect();
        assert_eq!(outcome.stored, n - refused.len());
        assert_eq!(
            outcome.rejected.iter().map(|r| r.0).collect::<Vec<_>>(),
            refused
        );
        // Each value landed in its series and step.
        let k = 12_345;
        let req = ReadRequest {
            start_ms: samples[k].ts_ms,
            end_ms: samples[k].ts_ms,
            step_ms: 60_000,
            cf: crate::read::Consolidation::Avg,
        };
        let mut got = Vec::new();
        store
            .visit_values(&Postings::from_iter([samples[k].id]), &req, &mut |_, v| {
                got = v.to_vec()
            })
            .unwrap();
        assert_eq!(got, vec![k as f64]);
    }

    /// Growing the table rehashes every id from its stored tags: all stay findable.
    #[test]
    fn ids_stay_findable_as_the_table_grows() {
        let store = Store::new(StoreConfig::default());
        let maps: Vec<TagMap> = (0..5_000)
            .map(|i| TagMap::from_pairs([("name", "m".to_string()), ("id", i.to_string())]))
            .collect();
        let writer = store.writer();
        let ids: Vec<SeriesId> = maps.iter().map(|m| writer.resolve(m)).collect();
        for (m, id) in maps.iter().zip(&ids) {
            assert_eq!(store.lookup(m), Some(*id));
        }
    }
}
