//! Series handed from one store to another with their values: a cluster node's snapshot of
//! one partition, which the partition's next owner restores before replaying the log after
//! it; and series let go of, once their partition has moved. The layout is the snapshot's (`docs/format/snapshot.md`) under a magic of its own:
//! framed, checksummed records; a header (magic, version, step and block layout), series
//! sections as a snapshot's (their ids are the exporter's and are not kept), and an end
//! record with the series count.

use std::collections::HashMap;

use super::durable::next_record;
use super::{Catalog, SHARDS, SeriesId, Store};
use crate::bytes::Reader;
use crate::error::{Error, Result};
use crate::index::Postings;
use crate::series::SeriesData;
use crate::tags::{TagSet, hash_tags};
use crate::wal::frame;

const EXPORT_MAGIC: &[u8; 8] = b"ARGUSEXP";
const EXPORT_VERSION: u32 = 1;
const RECORD_HEADER: u8 = 32;
const RECORD_SERIES: u8 = 33;
const RECORD_END: u8 = 34;
/// Series per section, as in snapshots.
const SECTION_SERIES_MAX: usize = 4096;

impl Store {
    /// The series `ids` with everything stored of them, as bytes [`Store::import_series`]
    /// takes. Each shard's series are read under its locks; ids no longer present are left
    /// out.
    pub fn export_series(&self, ids: &Postings) -> Vec<u8> {
        let mut out = Vec::new();
        let cfg = self.cfg;
        frame(&mut out, RECORD_HEADER, |p| {
            p.extend_from_slice(EXPORT_MAGIC);
            p.extend_from_slice(&EXPORT_VERSION.to_le_bytes());
            p.extend_from_slice(&cfg.step_ms.to_le_bytes());
            p.extend_from_slice(&cfg.block_steps.to_le_bytes());
            p.extend_from_slice(&cfg.unit_blocks.to_le_bytes());
        });
        let mut by_shard: Vec<Vec<SeriesId>> = vec![Vec::new(); SHARDS];
        for id in ids {
            by_shard[id as usize % SHARDS].push(id);
        }
        let mut local = HashMap::new();
        let mut total = 0u64;
        for (shard_no, ids) in by_shard.iter().enumerate() {
            for chunk in ids.chunks(SECTION_SERIES_MAX) {
                let cat = self.catalog.read();
                let shard = self.shards[shard_no].read();
                let present: Vec<SeriesId> = chunk
                    .iter()
                    .copied()
                    .filter(|&id| shard.get(id).is_some() && cat.tags.contains(id))
                    .collect();
                if present.is_empty() {
                    continue;
                }
                total += present.len() as u64;
                frame(&mut out, RECORD_SERIES, |p| {
                    super::durable::encode_section(
                        p, &cat, &shard, shard_no, 0, &present, &mut local,
                    )
                });
            }
        }
        frame(&mut out, RECORD_END, |p| {
            p.extend_from_slice(&total.to_le_bytes())
        });
        out
    }

    /// Takes series another store exported ([`Store::export_series`]): a series new to this
    /// store is created with its values; one it holds already gets the exported values in
    /// place of its own. Returns the series taken. Damaged or foreign bytes are an error
    /// that says what and where; series taken before it stay. Only for stores without a
    /// write-ahead log (a cluster's store nodes, whose log is the cluster's).
    pub fn import_series(&self, bytes: &[u8]) -> Result<usize> {
        if self.wal.is_some() {
            return Err(Error::Unavailable(
                "series are imported only into a store without a write-ahead log".into(),
            ));
        }
        let mut pos = 0;
        let next = |pos: &mut usize| next_record(bytes, pos, "exported series: the record");
        let (kind, header) = next(&mut pos)?;
        if kind != RECORD_HEADER {
            return Err(Error::Corrupt(
                "exported series: no header record first".into(),
            ));
        }
        let mut r = Reader::new(header, "exported series header");
        if r.take(8, "magic")? != EXPORT_MAGIC {
            return Err(Error::Corrupt("not exported series (bad magic)".into()));
        }
        let version = r.u32("version")?;
        if version != EXPORT_VERSION {
            return Err(Error::Corrupt(format!(
                "exported series of version {version}; this build reads {EXPORT_VERSION}"
            )));
        }
        let (step_ms, block_steps, unit_blocks) =
            (r.i64("step")?, r.u32("block steps")?, r.u32("unit blocks")?);
        let cfg = self.cfg;
        if (step_ms, block_steps, unit_blocks) != (cfg.step_ms, cfg.block_steps, cfg.unit_blocks) {
            return Err(Error::Corrupt(format!(
                "exported series have step {step_ms} ms and blocks of {block_steps} steps \
                 ({unit_blocks} per unit); this store has {} ms, {} ({})",
                cfg.step_ms, cfg.block_steps, cfg.unit_blocks
            )));
        }
        let mut taken = 0usize;
        loop {
            let (kind, payload) = next(&mut pos)?;
            match kind {
                RECORD_SERIES => taken += self.import_section(payload)?,
                RECORD_END => {
                    let mut r = Reader::new(payload, "exported series end");
                    let count = r.u64("series count")?;
                    if count != taken as u64 {
                        return Err(Error::Corrupt(format!(
                            "exported series: the end record counts {count} series, the \
                             sections held {taken}"
                        )));
                    }
                    return Ok(taken);
                }
                other => {
                    return Err(Error::Corrupt(format!(
                        "exported series: a record of kind {other} at byte {pos}"
                    )));
                }
            }
        }
    }

    /// Removes the series `ids` whatever they hold: a cluster node letting go of a
    /// partition it handed over. Their ids are released as maintenance releases those it
    /// removes. Returns how many were removed. Only for stores without a write-ahead log,
    /// whose recovery would bring them back.
    pub fn remove_series(&self, ids: &Postings) -> Result<usize> {
        if self.wal.is_some() {
            return Err(Error::Unavailable(
                "series are removed only from a store without a write-ahead log".into(),
            ));
        }
        let mut removed = 0;
        for chunk in ids.iter().collect::<Vec<_>>().chunks(SECTION_SERIES_MAX) {
            // As maintenance does: no writer may hold an id removed here (a gateway between
            // naming a batch's series and reading their tags back). A chunk at a time, so
            // that writers wait only briefly.
            let _no_writers = self.writers.write();
            let mut cat = self.catalog.write();
            for &id in chunk {
                if self.remove(&mut cat, id, i64::MAX) {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn import_section(&self, payload: &[u8]) -> Result<usize> {
        let mut r = Reader::new(payload, "exported series section");
        let _shard = r.u32("shard")?;
        let _lsn = r.u64("lsn")?;
        let mut cat = self.catalog.write();
        let n_strings = r.len("string count")?;
        let mut syms = Vec::with_capacity(n_strings);
        for _ in 0..n_strings {
            syms.push(cat.interner.intern(r.str("string")?));
        }
        let n = r.len("series count")?;
        for _ in 0..n {
            let _exporters_id = r.varint("series id")?;
            let n_tags = r.len("tag count")?;
            let mut set = Vec::with_capacity(n_tags);
            for _ in 0..n_tags {
                let mut sym = || -> Result<_> {
                    let i = r.varint("tag string")?;
                    syms.get(i as usize).copied().ok_or_else(|| {
                        Error::Corrupt(format!("exported series: string index {i} out of range"))
                    })
                };
                set.push((sym()?, sym()?));
            }
            let data = SeriesData::decode_state(&mut r, self.cfg.layout())?;
            self.take_series(&mut cat, set, data)?;
        }
        if !r.is_empty() {
            return Err(Error::Corrupt(
                "exported series: bytes after the last series of a section".into(),
            ));
        }
        Ok(n)
    }

    /// Installs an imported series, or puts its values in place of those of the series with
    /// the same tags.
    fn take_series(&self, cat: &mut Catalog, set: TagSet, data: SeriesData) -> Result<()> {
        let pairs = || {
            set.iter()
                .map(|&(k, v)| (cat.interner.resolve(k), cat.interner.resolve(v)))
        };
        let hash = hash_tags(pairs());
        if let Some(id) = cat.find_pairs(hash, set.len(), pairs) {
            let mut shard = self.shard(id).write();
            let local = id as usize / SHARDS;
            super::grow_to(&mut shard.series, local + 1);
            shard.series[local] = Some(data);
            return Ok(());
        }
        let id = match cat.free.pop() {
            Some(id) => id,
            None => cat.tags.len() as SeriesId,
        };
        self.install_set(cat, id, hash, &set, data, None)
    }
}
