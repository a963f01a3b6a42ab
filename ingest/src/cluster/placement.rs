//! Where a series lives: its partition, a stable hash of its tags, and the partitions of a
//! store's series remembered so that queries and snapshots need not hash them again.

use argus_tsdb::{Postings, SeriesSource, Store, Tags};

/// The partition of a series: FNV-1a over its sorted tags, finished with a mixer so that
/// nearby hashes spread over all partitions. Stable across nodes, builds and restarts.
pub fn partition_of(tags: &dyn Tags, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator no tag can contain, so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    tags.for_each(&mut |k, v| {
        eat(k.as_bytes());
        eat(v.as_bytes());
    });
    (mix(h) % u64::from(partitions.max(1))) as u32
}

/// The 64-bit finalizer of MurmurHash3.
pub fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The partition of each series of a store node's store, learnt once: a query over some of
/// the partitions would otherwise hash the tags of every series it matches. Forgotten
/// whenever maintenance removes series, since a removed series' id is later reused.
#[derive(Default)]
pub struct PartitionCache {
    known: parking_lot::RwLock<KnownPartitions>,
}

#[derive(Default)]
struct KnownPartitions {
    /// The partition count and the store's removal count the entries hold for.
    of: u32,
    removals: u64,
    /// Per series id, its partition; `UNKNOWN` if not learnt yet.
    partition: Vec<u32>,
}

const UNKNOWN: u32 = u32::MAX;

impl PartitionCache {
    /// Those of `ids` (series of `store`, read through `source`) in the partitions `keep`.
    pub fn keep(
        &self,
        store: &Store,
        source: &dyn SeriesSource,
        ids: &Postings,
        keep: &[bool],
    ) -> Postings {
        let of = keep.len() as u32;
        let removals = store.series_dropped();
        let mut kept = Vec::new();
        let mut unknown = Vec::new();
        {
            let known = self.known.read();
            let valid = known.of == of && known.removals == removals;
            for id in ids {
                match known.partition.get(id as usize) {
                    Some(&p) if valid && p != UNKNOWN => {
                        if keep[p as usize] {
                            kept.push(id);
                        }
                    }
                    _ => unknown.push(id),
                }
            }
        }
        if !unknown.is_empty() {
            let unknown: Postings = unknown.into_iter().collect();
            let mut learnt = Vec::with_capacity(unknown.len() as usize);
            source.visit_tags(&unknown, &mut |id, tags| {
                let p = partition_of(tags, of);
                learnt.push((id, p));
                if keep[p as usize] {
                    kept.push(id);
                }
            });
            let mut known = self.known.write();
            if known.of != of || known.removals != removals {
                *known = KnownPartitions {
                    of,
                    removals,
                    partition: Vec::new(),
                };
            }
            // Learnt under an older removal count: not kept.
            if store.series_dropped() == removals {
                for (id, p) in learnt {
                    let i = id as usize;
                    if known.partition.len() <= i {
                        known.partition.resize(i + 1, UNKNOWN);
                    }
                    known.partition[i] = p;
                }
            }
            kept.sort_unstable();
        }
        Postings::from_sorted_iter(kept.iter().copied())
            .unwrap_or_else(|_| kept.into_iter().collect())
    }
}
