//! Durability: what the write-ahead log's records hold, snapshots of the whole store, and
//! recovery at start (newest readable snapshot, then the log after it). Layouts are drawn in
//! `docs/format/wal.md` and `docs/format/snapshot.md`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Catalog, LoadBatch, SHARDS, Sample, SeriesId, Store, StoreConfig};
use crate::bytes::{Reader, put_bytes, put_varint, unzigzag, zigzag};
use crate::error::{Error, Result};
use crate::normalize::DsType;
use crate::series::SeriesData;
use crate::tags::{Sym, TagMap, hash_tags};
use crate::wal::{
    self, SEGMENT_HEADER_LEN, WalStats, WalSync, WalWriter, frame, io_error, record_at, sync_dir,
};

/// Log record: a new series (id, dstype, tags).
pub(super) const KIND_SERIES: u8 = 1;
/// Log record: a batch of samples (lsn, origin, samples).
pub(super) const KIND_SAMPLES: u8 = 2;

const SNAPSHOT_MAGIC: &[u8; 8] = b"ARGUSSNP";
const SNAPSHOT_VERSION: u32 = 1;
const SECTION_HEADER: u8 = 16;
const SECTION_SERIES: u8 = 17;
const SECTION_EXTRA: u8 = 18;
const SECTION_END: u8 = 19;
/// Series per snapshot section: sections stay a few MB, far under the record limit.
const SECTION_SERIES_MAX: usize = 4096;
/// Snapshots kept; the log is kept back to the older one, so a damaged newest snapshot
/// falls back to the one before it plus the log.
const SNAPSHOTS_KEPT: usize = 2;

/// Where and how a durable store keeps its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Durability {
    pub dir: PathBuf,
    pub sync: WalSync,
    /// A segment is closed and the next started once it holds this many bytes.
    pub segment_bytes: u64,
}

impl Durability {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Durability {
            dir: dir.into(),
            sync: WalSync::Periodic,
            segment_bytes: 64 << 20,
        }
    }

    fn wal_dir(&self) -> PathBuf {
        self.dir.join("wal")
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }
}

/// What recovery found and did; printed by the server at start.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The snapshot loaded, and its series.
    pub snapshot: Option<(PathBuf, usize)>,
    /// How long loading the snapshot took (the rest of `elapsed` is mostly the log).
    pub snapshot_load: Duration,
    /// Snapshots that could not be read (renamed to `*.corrupt`), with the reason.
    pub snapshots_rejected: Vec<String>,
    pub wal_segments: usize,
    pub wal_records: u64,
    pub series_defined: u64,
    pub samples_replayed: u64,
    /// Logged samples now older than the retention window.
    pub samples_expired: u64,
    /// Logged samples whose series' definition was lost to damage.
    pub samples_unattributed: u64,
    /// Damage in the log: which segment, which bytes, what was done.
    pub damage: Vec<String>,
    /// What the owner stored beside the last snapshot (see [`Store::write_snapshot`]).
    pub extra: Option<Vec<u8>>,
    pub series: usize,
    pub elapsed: Duration,
}

impl Recovery {
    /// True when nothing was damaged or rejected.
    pub fn is_clean(&self) -> bool {
        self.snapshots_rejected.is_empty() && self.damage.is_empty()
    }
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.snapshot {
            Some((path, n)) => write!(
                f,
                "snapshot {} ({n} series, loaded in {:.2?})",
                path.display(),
                self.snapshot_load
            )?,
            None => write!(f, "no snapshot")?,
        }
        write!(
            f,
            ", {} log segments ({} records: {} series defined, {} samples replayed, {} expired, \
             {} unattributed); {} series in {:.2?}",
            self.wal_segments,
            self.wal_records,
            self.series_defined,
            self.samples_replayed,
            self.samples_expired,
            self.samples_unattributed,
            self.series,
            self.elapsed
        )?;
        if !self.is_clean() {
            write!(
                f,
                "; DAMAGE: {} snapshot(s) rejected, {} damaged log region(s)",
                self.snapshots_rejected.len(),
                self.damage.len()
            )?;
        }
        Ok(())
    }
}

/// A snapshot begun: the log segment it replays from.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotStart {
    wal_segment: u64,
}

/// What writing a snapshot did.
#[derive(Debug)]
pub struct SnapshotReport {
    pub path: PathBuf,
    pub series: usize,
    pub bytes: u64,
    pub elapsed: Duration,
    pub snapshots_removed: usize,
    pub wal_segments_removed: usize,
}

pub(super) fn encode_series(out: &mut Vec<u8>, id: SeriesId, tags: &TagMap, dstype: DsType) {
    out.extend_from_slice(&id.to_le_bytes());
    out.push(dstype.code());
    put_varint(out, tags.len() as u64);
    for (k, v) in tags.iter() {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
}

/// A batch record's payload after its lsn (which [`crate::wal::Prepared`] stamps).
pub(super) fn encode_samples(out: &mut Vec<u8>, origin: &[u8], samples: &[Sample]) {
    out.reserve(samples.len() * 12 + origin.len() + 24);
    put_bytes(out, origin);
    put_varint(out, samples.len() as u64);
    let mut prev_ts = 0i64;
    for s in samples {
        put_varint(out, u64::from(s.id));
        put_varint(out, zigzag(s.ts_ms.wrapping_sub(prev_ts)));
        prev_ts = s.ts_ms;
        out.extend_from_slice(&s.value.to_bits().to_le_bytes());
    }
}

/// A batch record read back: its lsn and origin; the samples go into a reused buffer.
fn decode_samples<'a>(payload: &'a [u8], out: &mut Vec<Sample>) -> Result<(u64, &'a [u8])> {
    let mut r = Reader::new(payload, "sample batch record");
    let lsn = r.u64("lsn")?;
    let origin = r.bytes("origin")?;
    let n = r.len("sample count")?;
    out.clear();
    let mut ts = 0i64;
    for _ in 0..n {
        let id = u32::try_from(r.varint("series id")?)
            .map_err(|_| Error::Corrupt("sample batch record: series id over 32 bits".into()))?;
        ts = ts.wrapping_add(unzigzag(r.varint("timestamp")?));
        let value = r.f64("value")?;
        out.push(Sample {
            id,
            ts_ms: ts,
            value,
        });
    }
    Ok((lsn, origin))
}

fn decode_series(payload: &[u8]) -> Result<(SeriesId, DsType, TagMap)> {
    let mut r = Reader::new(payload, "series record");
    let id = r.u32("series id")?;
    let code = r.u8("dstype")?;
    let dstype = DsType::from_code(code)
        .ok_or_else(|| Error::Corrupt(format!("series record: unknown dstype code {code}")))?;
    let n = r.len("tag count")?;
    let mut tags = TagMap::new();
    for _ in 0..n {
        let k = r.str("tag key")?;
        let v = r.str("tag value")?;
        tags.insert(k.to_string(), v.to_string());
    }
    Ok((id, dstype, tags))
}

fn snapshot_path(dir: &Path, wal_segment: u64) -> PathBuf {
    dir.join(format!("{wal_segment:020}.snap"))
}

/// Snapshots in `dir`, newest first, with the log segment each replays from.
fn list_snapshots(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = wal::numbered_files(dir, ".snap")?;
    out.reverse();
    Ok(out)
}

/// Maps a file read-only. Files under the data directory are written only by this process,
/// always as new files (segments are appended to only after recovery has read them, and a
/// snapshot is renamed into place whole), so the mapping does not change under us.
#[allow(unsafe_code)]
fn map_file(path: &Path) -> std::io::Result<memmap2::Mmap> {
    let file = File::open(path)?;
    // SAFETY: see above; nothing truncates or rewrites a file while it is mapped (the torn
    // tail of a segment is cut only after its mapping is dropped).
    unsafe { memmap2::Mmap::map(&file) }
}

/// Ids a damaged log may skip past the ids in use (see [`Store::reconcile_series`]).
const MAX_ID_SKIP: usize = 1 << 16;

/// The largest series id a snapshot of `len` bytes can plausibly hold: ids are reused, so a
/// store's ids stay near its series count, and every series costs a snapshot at least a few
/// bytes. A larger id is damage, and taking it would allocate for every id below it.
fn max_id(len: usize) -> u64 {
    4 * len as u64 + 1024
}

/// The series count a snapshot's end section states, walking the sections from `pos`; 0
/// when there is no readable end (the load that follows says what is wrong).
fn snapshot_series(buf: &[u8], mut pos: usize) -> u64 {
    while let Some((kind, payload, end)) = record_at(buf, pos) {
        if kind == SECTION_END {
            return Reader::new(payload, "snapshot end")
                .u64("series count")
                .unwrap_or(0);
        }
        pos = end;
    }
    0
}

/// What loading a snapshot gives recovery: the lsn each shard holds, the largest, the series
/// count and the owner's extra bytes.
struct Loaded {
    skip: [u64; SHARDS],
    max_lsn: u64,
    series: usize,
    extra: Option<Vec<u8>>,
}

/// The state recovery carries from the snapshot into the log replay.
struct Replay<'a> {
    skip_through: [u64; SHARDS],
    max_lsn: u64,
    samples: Vec<Sample>,
    recovery: &'a mut Recovery,
    on_origin: &'a mut dyn FnMut(&[u8]),
}

impl Store {
    /// Opens a durable store in `durability.dir`: loads the newest snapshot that reads back
    /// whole (falling back to older ones), replays the write-ahead log after it, and starts
    /// a new log segment. Damage is reported in the [`Recovery`], never fatal: a torn log
    /// tail is cut at the last good record, damaged records are skipped, and a damaged
    /// snapshot is renamed `*.corrupt`. `on_origin` receives the origin of every replayed
    /// batch (see [`Store::try_append_batch`]). Fails only when the directory cannot be
    /// used at all.
    pub fn open(
        cfg: StoreConfig,
        clock: super::Clock,
        durability: Durability,
        on_origin: &mut dyn FnMut(&[u8]),
    ) -> Result<(Store, Recovery)> {
        let started = Instant::now();
        let wal_dir = durability.wal_dir();
        let snap_dir = durability.snapshot_dir();
        for dir in [&wal_dir, &snap_dir] {
            std::fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))?;
        }
        let mut recovery = Recovery::default();
        // A snapshot being written when the process died.
        for entry in std::fs::read_dir(&snap_dir)
            .map_err(|e| io_error("listing", &snap_dir, e))?
            .flatten()
        {
            if entry.path().extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }

        let mut loaded = None;
        let snapshots = list_snapshots(&snap_dir).map_err(|e| io_error("listing", &snap_dir, e))?;
        for (segment, path) in snapshots {
            let store = Store::with_clock(cfg, clock.clone());
            match store.load_snapshot(&path) {
                Ok(Loaded {
                    skip,
                    max_lsn,
                    series,
                    extra,
                }) => {
                    recovery.snapshot = Some((path, series));
                    recovery.snapshot_load = started.elapsed();
                    recovery.extra = extra;
                    loaded = Some((store, segment, skip, max_lsn));
                    break;
                }
                Err(e) => {
                    recovery
                        .snapshots_rejected
                        .push(format!("{}: {e}", path.display()));
                    let _ = std::fs::rename(&path, path.with_extension("snap.corrupt"));
                }
            }
        }
        let (mut store, from_segment, skip_through, max_lsn) =
            loaded.unwrap_or_else(|| (Store::with_clock(cfg, clock), 0, [0; SHARDS], 0));

        let mut replay = Replay {
            skip_through,
            max_lsn,
            samples: Vec::new(),
            recovery: &mut recovery,
            on_origin,
        };
        let segments =
            wal::list_segments(&wal_dir).map_err(|e| io_error("listing", &wal_dir, e))?;
        let mut expected = from_segment;
        let mut next_segment = from_segment;
        for (number, path) in segments {
            next_segment = next_segment.max(number + 1);
            if number < from_segment {
                continue;
            }
            if number > expected {
                replay.recovery.damage.push(format!(
                    "log segments {expected} to {} are missing: samples logged there are lost",
                    number - 1
                ));
            }
            expected = number + 1;
            replay.recovery.wal_segments += 1;
            store.replay_segment(number, &path, &mut replay);
        }
        let next_lsn = replay.max_lsn + 1;
        store.rebuild_free_list();
        let writer = WalWriter::create(
            &wal_dir,
            next_segment,
            next_lsn,
            durability.sync,
            durability.segment_bytes,
        )?;
        store.wal = Some(parking_lot::Mutex::new(writer));
        store.durability = Some(durability);
        recovery.series = store.series_count();
        recovery.elapsed = started.elapsed();
        Ok((store, recovery))
    }

    fn replay_segment(&self, number: u64, path: &Path, replay: &mut Replay<'_>) {
        let map = match map_file(path) {
            Ok(m) => m,
            Err(e) => {
                replay.recovery.damage.push(format!(
                    "log segment {}: cannot be read ({e}); skipped",
                    path.display()
                ));
                return;
            }
        };
        if map.len() < SEGMENT_HEADER_LEN {
            // Created but never written: the process died while starting it.
            drop(map);
            let _ = std::fs::remove_file(path);
            return;
        }
        if let Err(reason) = wal::check_segment_header(&map, number) {
            replay.recovery.damage.push(format!(
                "log segment {}: header: {reason}; reading its records anyway",
                path.display()
            ));
        }
        let scan = wal::scan_records(&map, SEGMENT_HEADER_LEN, &mut |kind, payload| {
            self.replay_record(kind, payload, replay)
        });
        replay.recovery.wal_records += scan.records;
        for d in scan.damage {
            replay
                .recovery
                .damage
                .push(format!("log segment {}: {d}", path.display()));
        }
        drop(map);
        if let Some(cut) = scan.torn_at {
            // Cut the tail so the damage is reported once, not at every start.
            let cut_file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(cut as u64).and_then(|()| f.sync_all()));
            if let Err(e) = cut_file {
                replay.recovery.damage.push(format!(
                    "log segment {}: could not cut the damaged tail: {e}",
                    path.display()
                ));
            }
        }
    }

    fn replay_record(&self, kind: u8, payload: &[u8], replay: &mut Replay<'_>) -> Result<()> {
        match kind {
            KIND_SERIES => {
                let (id, dstype, tags) = decode_series(payload)?;
                self.reconcile_series(id, &tags, dstype)?;
                replay.recovery.series_defined += 1;
            }
            KIND_SAMPLES => {
                let mut samples = std::mem::take(&mut replay.samples);
                let (lsn, origin) = decode_samples(payload, &mut samples)?;
                replay.max_lsn = replay.max_lsn.max(lsn);
                if !origin.is_empty() {
                    (replay.on_origin)(origin);
                }
                let outcome = self.apply(&samples, lsn, Some(&replay.skip_through));
                replay.recovery.samples_replayed += outcome.stored as u64;
                for (_, e) in &outcome.rejected {
                    match e {
                        Error::OutOfRetention { .. } => replay.recovery.samples_expired += 1,
                        _ => replay.recovery.samples_unattributed += 1,
                    }
                }
                replay.samples = samples;
            }
            other => return Err(Error::Corrupt(format!("unknown record kind {other}"))),
        }
        Ok(())
    }

    /// Makes series `id` the one with `tags`, as the log says it was created: a series the
    /// snapshot holds under another id, or another series at this id, was dropped before
    /// the crash (its id reused), so it goes.
    fn reconcile_series(&self, id: SeriesId, tags: &TagMap, dstype: DsType) -> Result<()> {
        let hash = hash_tags(tags.iter());
        let mut cat = self.catalog.write();
        // Ids are handed out in order (or reused), so a logged id is at most the ids in use
        // plus what lost records could have skipped; a larger one is damage, and taking it
        // would allocate for every id below it.
        if id as usize > cat.tags.len() + MAX_ID_SKIP {
            return Err(Error::Corrupt(format!(
                "series record for id {id}, far beyond the {} ids in use",
                cat.tags.len()
            )));
        }
        match cat.find(hash, tags) {
            Some(existing) if existing == id => return Ok(()),
            Some(existing) => {
                self.remove(&mut cat, existing, i64::MAX);
            }
            None => {}
        }
        if cat.tags.contains(id) {
            self.remove(&mut cat, id, i64::MAX);
        }
        self.install(&mut cat, id, hash, tags, SeriesData::new(dstype))
    }

    fn rebuild_free_list(&self) {
        let mut cat = self.catalog.write();
        let mut free: Vec<SeriesId> = cat.tags.free_ids().collect();
        free.reverse();
        cat.free = free;
        cat.released.clear();
    }

    /// Forces the log to disk if anything was written since the last sync (the periodic
    /// sync policy's timer calls this). The disk write happens outside the log's lock.
    pub fn sync_wal(&self) -> Result<()> {
        let Some(wal) = &self.wal else { return Ok(()) };
        let handle = wal.lock().take_unsynced();
        match handle {
            None => Ok(()),
            Some(Ok(file)) => file
                .sync_data()
                .map_err(|e| Error::Unavailable(format!("syncing the write-ahead log: {e}"))),
            Some(Err(e)) => Err(Error::Unavailable(format!(
                "syncing the write-ahead log: {e}"
            ))),
        }
    }

    /// The log's counters, when the store is durable.
    pub fn wal_stats(&self) -> Option<WalStats> {
        self.wal.as_ref().map(|w| w.lock().stats)
    }

    pub fn is_durable(&self) -> bool {
        self.wal.is_some()
    }

    /// Starts a snapshot: closes the current log segment and starts the next, from which
    /// recovery will replay. Cheap; the owner may capture its own state (see `extra` in
    /// [`Store::write_snapshot`]) right after, while nothing it logs can interleave.
    pub fn begin_snapshot(&self) -> Result<SnapshotStart> {
        let wal = self
            .wal
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the store is in memory only".into()))?;
        let wal_segment = wal.lock().rotate()?;
        Ok(SnapshotStart { wal_segment })
    }

    /// Writes the snapshot begun by `start`, with `extra` (the owner's state, handed back by
    /// recovery) beside the series: to a temporary file, synced, then renamed into place,
    /// so a crash or a full disk never damages an existing snapshot. Ingest goes on while
    /// it runs; each shard is captured under its locks, with the last log record it holds.
    /// Then removes snapshots beyond the newest two and the log behind the older of them.
    pub fn write_snapshot(&self, start: SnapshotStart, extra: &[u8]) -> Result<SnapshotReport> {
        let started = Instant::now();
        let durability = self
            .durability
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the store is in memory only".into()))?;
        let dir = durability.snapshot_dir();
        let path = snapshot_path(&dir, start.wal_segment);
        let tmp = path.with_extension("snap.tmp");
        let written = self.write_snapshot_file(&tmp, start, extra);
        let (series, bytes) = match written {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_error("writing snapshot", &tmp, e));
            }
        };
        std::fs::rename(&tmp, &path)
            .and_then(|()| sync_dir(&dir))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                io_error("renaming snapshot into place", &path, e)
            })?;
        let (snapshots_removed, wal_segments_removed) = prune(durability);
        Ok(SnapshotReport {
            path,
            series,
            bytes,
            elapsed: started.elapsed(),
            snapshots_removed,
            wal_segments_removed,
        })
    }

    fn write_snapshot_file(
        &self,
        tmp: &Path,
        start: SnapshotStart,
        extra: &[u8],
    ) -> std::io::Result<(usize, u64)> {
        let file = File::create(tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut buf = Vec::new();
        let cfg = self.cfg;
        frame(&mut buf, SECTION_HEADER, |p| {
            p.extend_from_slice(SNAPSHOT_MAGIC);
            p.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
            p.extend_from_slice(&cfg.step_ms.to_le_bytes());
            p.extend_from_slice(&cfg.block_steps.to_le_bytes());
            p.extend_from_slice(&cfg.unit_blocks.to_le_bytes());
            p.extend_from_slice(&start.wal_segment.to_le_bytes());
            p.extend_from_slice(&self.now_ms().to_le_bytes());
            p.extend_from_slice(&(SHARDS as u32).to_le_bytes());
        });
        out.write_all(&buf)?;
        let mut sections = 1u64;
        let mut series = 0usize;
        let mut local: HashMap<Sym, u32> = HashMap::new();
        for shard_no in 0..SHARDS {
            buf.clear();
            {
                let cat = self.catalog.read();
                let shard = self.shards[shard_no].read();
                let lsn = shard.applied_lsn;
                let mut ids = shard
                    .series
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.is_some())
                    .map(|(local_no, _)| (local_no * SHARDS + shard_no) as SeriesId)
                    .peekable();
                // Every shard gets a section, empty or not, to carry its lsn.
                let mut first = true;
                while first || ids.peek().is_some() {
                    first = false;
                    let chunk: Vec<SeriesId> = ids.by_ref().take(SECTION_SERIES_MAX).collect();
                    series += chunk.len();
                    frame(&mut buf, SECTION_SERIES, |p| {
                        encode_section(p, &cat, &shard, shard_no, lsn, &chunk, &mut local)
                    });
                    sections += 1;
                }
            }
            out.write_all(&buf)?;
        }
        buf.clear();
        frame(&mut buf, SECTION_EXTRA, |p| p.extend_from_slice(extra));
        frame(&mut buf, SECTION_END, |p| {
            p.extend_from_slice(&(series as u64).to_le_bytes());
            p.extend_from_slice(&(sections + 2).to_le_bytes());
        });
        out.write_all(&buf)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        Ok((series, bytes))
    }

    /// Loads a snapshot into this (empty) store.
    fn load_snapshot(&self, path: &Path) -> Result<Loaded> {
        let map = map_file(path).map_err(|e| Error::Corrupt(format!("cannot be read: {e}")))?;
        self.load_snapshot_bytes(&map)
    }

    /// Loads a snapshot's bytes into this (empty) store.
    fn load_snapshot_bytes(&self, buf: &[u8]) -> Result<Loaded> {
        let mut pos = 0;
        let section = |pos: &mut usize| next_record(buf, pos, "section");
        let (kind, header) = section(&mut pos)?;
        if kind != SECTION_HEADER {
            return Err(Error::Corrupt(
                "does not start with a snapshot header".into(),
            ));
        }
        let mut r = Reader::new(header, "snapshot header");
        if r.take(8, "magic")? != SNAPSHOT_MAGIC {
            return Err(Error::Corrupt("not a snapshot (bad magic)".into()));
        }
        let version = r.u32("version")?;
        if version != SNAPSHOT_VERSION {
            return Err(Error::Corrupt(format!(
                "format version {version}, this build reads {SNAPSHOT_VERSION}"
            )));
        }
        let (step_ms, block_steps, unit_blocks) =
            (r.i64("step")?, r.u32("block steps")?, r.u32("unit blocks")?);
        if (step_ms, block_steps, unit_blocks)
            != (self.cfg.step_ms, self.cfg.block_steps, self.cfg.unit_blocks)
        {
            return Err(Error::Corrupt(format!(
                "written with step {step_ms} ms and blocks of {block_steps} steps; the store \
                 is configured with step {} ms and blocks of {} steps",
                self.cfg.step_ms, self.cfg.block_steps
            )));
        }
        let _wal_segment = r.u64("log segment")?;
        let _created_ms = r.i64("creation time")?;
        let shards = r.u32("shard count")?;
        if shards as usize != SHARDS {
            return Err(Error::Corrupt(format!(
                "{shards} shards, this build has {SHARDS}"
            )));
        }
        let mut skip = [0u64; SHARDS];
        let mut seen_shard = [false; SHARDS];
        let mut extra = None;
        let mut series = 0usize;
        let mut sections = 1u64;
        // The series are indexed at the end, all at once.
        let mut batch = LoadBatch::default();
        // Room for every series the snapshot says it holds (its end section, found by a
        // walk over the frames first), so the table of ids never grows while loading.
        let total = snapshot_series(buf, pos).min(max_id(buf.len()));
        self.catalog
            .write()
            .reserve_series(usize::try_from(total).unwrap_or(0));
        // The frames first (cheap), then the series sections: one thread parses and
        // decodes each (no catalog needed) while this one installs the one before.
        let mut series_sections = Vec::new();
        let end = loop {
            let (kind, payload) = section(&mut pos)?;
            sections += 1;
            match kind {
                SECTION_SERIES => series_sections.push(payload),
                SECTION_EXTRA => extra = Some(payload.to_vec()),
                SECTION_END => break payload,
                other => {
                    return Err(Error::Corrupt(format!("unknown section kind {other}")));
                }
            }
        };
        let (max_id, layout) = (max_id(buf.len()), self.cfg.layout());
        std::thread::scope(|scope| -> Result<()> {
            let (parsed_tx, parsed_rx) = std::sync::mpsc::sync_channel(2);
            let parser = scope.spawn(move || {
                for payload in series_sections {
                    let parsed = parse_section(payload, max_id, layout);
                    let failed = parsed.is_err();
                    // The installer stopped (an error): nothing more to parse.
                    if parsed_tx.send(parsed).is_err() || failed {
                        return;
                    }
                }
            });
            for parsed in parsed_rx {
                let (shard_no, lsn, n) = self.install_section(parsed?, &mut batch)?;
                skip[shard_no] = lsn;
                seen_shard[shard_no] = true;
                series += n;
            }
            parser
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            Ok(())
        })?;
        let mut r = Reader::new(end, "snapshot end");
        let (n, s) = (r.u64("series count")?, r.u64("section count")?);
        if n != series as u64 || s != sections || pos != buf.len() {
            return Err(Error::Corrupt(format!(
                "end section says {n} series in {s} sections, found {series} in \
                 {sections} ({} bytes after it)",
                buf.len() - pos
            )));
        }
        if let Some(missing) = seen_shard.iter().position(|s| !s) {
            return Err(Error::Corrupt(format!("shard {missing} has no section")));
        }
        self.catalog.write().finish_load(batch);
        let max_lsn = skip.iter().copied().max().unwrap_or(0);
        Ok(Loaded {
            skip,
            max_lsn,
            series,
            extra,
        })
    }

    /// Installs one parsed series section: (shard, its lsn, series in it).
    fn install_section(
        &self,
        section: ParsedSection<'_>,
        batch: &mut LoadBatch,
    ) -> Result<(usize, u64, usize)> {
        let ParsedSection {
            shard_no,
            lsn,
            strings,
            series,
            tags,
        } = section;
        let mut cat = self.catalog.write();
        let syms: Vec<Sym> = strings.iter().map(|s| cat.interner.intern(s)).collect();
        // One tag buffer for the section: the tag table copies each set.
        let mut set = Vec::new();
        let n = series.len();
        for s in series {
            if cat.tags.contains(s.id) {
                return Err(Error::Corrupt(format!("series {} appears twice", s.id)));
            }
            set.clear();
            set.extend(
                tags[s.tags.clone()]
                    .iter()
                    .map(|&(k, v)| (syms[k as usize], syms[v as usize])),
            );
            // Hashed here rather than by the parser: the parser's share of a load is the
            // larger one.
            let hash = hash_tags(
                tags[s.tags.clone()]
                    .iter()
                    .map(|&(k, v)| (strings[k as usize], strings[v as usize])),
            );
            self.install_set(&mut cat, s.id, hash, &set, s.data, Some(batch))?;
        }
        drop(cat);
        self.shards[shard_no].write().applied_lsn = lsn;
        Ok((shard_no, lsn, n))
    }
}

/// One series of a parsed section: its id, its tags (a range of the section's pairs of
/// string indexes), its values.
struct ParsedSeries {
    id: SeriesId,
    tags: std::ops::Range<usize>,
    data: SeriesData,
}

/// A snapshot section read, checked and decoded, not yet installed: the work that needs no
/// catalog, done on another thread while the previous section is installed.
struct ParsedSection<'a> {
    shard_no: usize,
    lsn: u64,
    strings: Vec<&'a str>,
    series: Vec<ParsedSeries>,
    tags: Vec<(u32, u32)>,
}

/// Reads one series section (`encode_section`'s layout), checking what a bad value would
/// break; `max_id` bounds the ids a file of its size can plausibly hold.
fn parse_section(
    payload: &[u8],
    max_id: u64,
    layout: crate::series::Layout,
) -> Result<ParsedSection<'_>> {
    let mut r = Reader::new(payload, "snapshot series section");
    let shard_no = r.u32("shard")? as usize;
    if shard_no >= SHARDS {
        return Err(Error::Corrupt(format!("shard {shard_no} out of range")));
    }
    let lsn = r.u64("lsn")?;
    let n_strings = r.len("string count")?;
    let mut strings = Vec::with_capacity(n_strings);
    for _ in 0..n_strings {
        strings.push(r.str("string")?);
    }
    let string = |i: u64| -> Result<u32> {
        if (i as usize) < strings.len() {
            Ok(i as u32)
        } else {
            Err(Error::Corrupt(format!("string index {i} out of range")))
        }
    };
    let n = r.len("series count")?;
    let mut series = Vec::with_capacity(n);
    let mut tags = Vec::new();
    for _ in 0..n {
        let id = u32::try_from(r.varint("series id")?)
            .map_err(|_| Error::Corrupt("series id over 32 bits".into()))?;
        if id as usize % SHARDS != shard_no {
            return Err(Error::Corrupt(format!("series {id} in shard {shard_no}")));
        }
        if u64::from(id) > max_id {
            return Err(Error::Corrupt(format!(
                "series id {id} is implausibly large for the file's size"
            )));
        }
        let n_tags = r.len("tag count")?;
        let first = tags.len();
        for _ in 0..n_tags {
            tags.push((
                string(r.varint("tag key")?)?,
                string(r.varint("tag value")?)?,
            ));
        }
        let data = SeriesData::decode_state(&mut r, layout)?;
        series.push(ParsedSeries {
            id,
            tags: first..tags.len(),
            data,
        });
    }
    if !r.is_empty() {
        return Err(Error::Corrupt(
            "bytes after the last series of a section".into(),
        ));
    }
    Ok(ParsedSection {
        shard_no,
        lsn,
        strings,
        series,
        tags,
    })
}

/// The framed record at `*pos` of `buf` (its kind and payload), moving `pos` past it; a
/// truncated or damaged one is an error naming `what` and where.
pub(super) fn next_record<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    what: &str,
) -> Result<(u8, &'a [u8])> {
    let (kind, payload, end) = record_at(buf, *pos).ok_or_else(|| {
        Error::Corrupt(format!(
            "{what} at byte {pos} is truncated or fails its checksum",
            pos = *pos
        ))
    })?;
    *pos = end;
    Ok((kind, payload))
}

/// One snapshot section: `shard u32 | lsn u64 | strings | series`, tags as indexes into the
/// section's own string table (each distinct string once per section).
pub(super) fn encode_section(
    p: &mut Vec<u8>,
    cat: &Catalog,
    shard: &super::Shard,
    shard_no: usize,
    lsn: u64,
    ids: &[SeriesId],
    local: &mut HashMap<Sym, u32>,
) {
    local.clear();
    let mut strings: Vec<Sym> = Vec::new();
    let mut body = Vec::with_capacity(ids.len() * 64);
    put_varint(&mut body, ids.len() as u64);
    let mut index = |sym: Sym, strings: &mut Vec<Sym>| -> u32 {
        *local.entry(sym).or_insert_with(|| {
            strings.push(sym);
            strings.len() as u32 - 1
        })
    };
    for &id in ids {
        put_varint(&mut body, u64::from(id));
        let set = cat.tags.get(id);
        put_varint(&mut body, set.map_or(0, |s| s.len()) as u64);
        for (k, v) in set.iter().flat_map(|s| s.iter()) {
            put_varint(&mut body, u64::from(index(k, &mut strings)));
            put_varint(&mut body, u64::from(index(v, &mut strings)));
        }
        if let Some(data) = shard.get(id) {
            data.encode_state(&mut body);
        }
    }
    p.extend_from_slice(&(shard_no as u32).to_le_bytes());
    p.extend_from_slice(&lsn.to_le_bytes());
    put_varint(p, strings.len() as u64);
    for s in strings {
        put_bytes(p, cat.interner.resolve(s).as_bytes());
    }
    p.extend_from_slice(&body);
}

/// Removes snapshots beyond the newest [`SNAPSHOTS_KEPT`] and the log segments the oldest
/// kept one no longer needs. Returns (snapshots, segments) removed.
fn prune(durability: &Durability) -> (usize, usize) {
    let Ok(snapshots) = list_snapshots(&durability.snapshot_dir()) else {
        return (0, 0);
    };
    let mut removed = (0, 0);
    for (_, path) in snapshots.iter().skip(SNAPSHOTS_KEPT) {
        if std::fs::remove_file(path).is_ok() {
            removed.0 += 1;
        }
    }
    if snapshots.len() >= SNAPSHOTS_KEPT {
        let keep_from = snapshots[SNAPSHOTS_KEPT - 1].0;
        let wal_dir = durability.wal_dir();
        for (number, path) in wal::list_segments(&wal_dir).unwrap_or_default() {
            if number < keep_from && std::fs::remove_file(&path).is_ok() {
                removed.1 += 1;
            }
        }
    }
    removed
}

/// Entries for the fuzz targets and their corpus replay (`tsdb/fuzz`, `tests/fuzz_corpus.rs`):
/// the store's own file readers, which a damaged disk can fill with anything. Each reads
/// `data` into a fresh store and then reads every value back; nothing may panic, and
/// allocations stay proportional to `data`.
pub mod fuzzing {
    use std::sync::Arc;

    use super::*;

    fn store() -> Store {
        // A fixed clock: what is kept must not depend on when the input runs.
        Store::with_clock(
            StoreConfig::new(60_000, 6 * 3_600_000),
            Arc::new(|| 1_700_000_000_000),
        )
    }

    fn read_everything(store: &Store) {
        use crate::read::{Consolidation, ReadRequest, SeriesSource};
        let ids = store.select(&crate::Matcher::True);
        let req = ReadRequest {
            start_ms: 1_700_000_000_000 / 60_000 * 60_000 - 7 * 3_600_000,
            end_ms: 1_700_000_000_000 / 60_000 * 60_000 + 3_600_000,
            step_ms: 60_000,
            cf: Consolidation::Avg,
        };
        let _ = store.visit_values(&ids, &req, &mut |_, _| {});
        store.visit_tags(&ids, &mut |_, _| {});
        store.maintain();
    }

    /// Frames `data` read as `[kind u8][len u16 LE][payload]…` into records with valid
    /// checksums, so that the fuzzer reaches the decoders behind the CRC (random bytes
    /// almost never carry a valid one).
    pub fn reframe(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut pos = 0;
        while pos + 3 <= data.len() {
            let kind = data[pos];
            let len = usize::from(u16::from_le_bytes([data[pos + 1], data[pos + 2]]));
            let end = (pos + 3 + len).min(data.len());
            wal::frame(&mut out, kind, |p| p.extend_from_slice(&data[pos + 3..end]));
            pos = end;
        }
        out
    }

    /// The inverse of [`reframe`], for making seeds from real files: each record as
    /// `[kind][len u16][payload]` (records longer than `u16::MAX` are left out).
    pub fn unframe(file: &[u8], from: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pos = from;
        while let Some((kind, payload, end)) = record_at(file, pos) {
            if let Ok(len) = u16::try_from(payload.len()) {
                out.push(kind);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(payload);
            }
            pos = end;
        }
        out
    }

    /// A write-ahead log segment (header optional), then the same bytes reframed.
    pub fn wal_segment(data: &[u8]) {
        wal_bytes(data);
        let mut segment = wal::segment_header(0).to_vec();
        segment.extend_from_slice(&reframe(data));
        wal_bytes(&segment);
    }

    fn wal_bytes(data: &[u8]) {
        let store = store();
        let mut recovery = Recovery::default();
        let mut origins = 0usize;
        let mut on_origin = |_: &[u8]| origins += 1;
        let mut replay = Replay {
            skip_through: [0; SHARDS],
            max_lsn: 0,
            samples: Vec::new(),
            recovery: &mut recovery,
            on_origin: &mut on_origin,
        };
        let from = if data.starts_with(wal::SEGMENT_MAGIC) {
            SEGMENT_HEADER_LEN
        } else {
            0
        };
        let _ = wal::check_segment_header(data, 0);
        wal::scan_records(data, from.min(data.len()), &mut |kind, payload| {
            store.replay_record(kind, payload, &mut replay)
        });
        store.rebuild_free_list();
        read_everything(&store);
    }

    /// A snapshot file, then the same bytes reframed.
    pub fn snapshot(data: &[u8]) {
        snapshot_bytes(data);
        snapshot_bytes(&reframe(data));
    }

    fn snapshot_bytes(data: &[u8]) {
        let store = store();
        if store.load_snapshot_bytes(data).is_ok() {
            store.rebuild_free_list();
            read_everything(&store);
        }
    }
}
