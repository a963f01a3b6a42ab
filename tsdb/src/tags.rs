//! Tags: string interning and the canonical, sorted tag set that is a series' identity.

use std::sync::Arc;

use ahash::AHashMap;

use crate::bytes::{get_varint, put_varint};
use crate::error::{Error, Result};

/// A handle to an interned string. Handles never change meaning while the store lives.
pub type Sym = u32;

/// Stores each distinct tag key or value once. Strings are never removed: a churn of unique
/// values grows the interner (the cardinality limits of the ingest layer bound that growth).
#[derive(Default)]
pub struct Interner {
    ids: AHashMap<Arc<str>, Sym>,
    strings: Vec<Arc<str>>,
}

impl Interner {
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.strings.len() as Sym;
        let shared: Arc<str> = Arc::from(s);
        self.strings.push(shared.clone());
        self.ids.insert(shared, id);
        id
    }

    pub fn lookup(&self, s: &str) -> Option<Sym> {
        self.ids.get(s).copied()
    }

    pub fn resolve(&self, sym: Sym) -> &str {
        &self.strings[sym as usize]
    }

    /// The shared allocation behind `sym`, so other structures can hold the string for free.
    pub fn resolve_shared(&self, sym: Sym) -> Arc<str> {
        self.strings[sym as usize].clone()
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// Heap bytes held by the interned strings and the lookup table (an estimate).
    pub fn heap_bytes(&self) -> usize {
        let strings: usize = self.strings.iter().map(|s| s.len() + 16).sum();
        strings + self.strings.capacity() * 16 + self.ids.capacity() * 24
    }
}

/// An owned tag map with string keys and values, kept sorted by key. This is how tags enter
/// the store and how they are handed back to callers that need to keep them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagMap(Vec<(String, String)>);

impl TagMap {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// A copy with room for `extra` more tags, so that inserting them does not grow it.
    pub fn clone_with_room(&self, extra: usize) -> Self {
        let mut pairs = Vec::with_capacity(self.0.len().saturating_add(extra));
        pairs.extend(self.0.iter().cloned());
        Self(pairs)
    }

    /// Builds a map from pairs; a key given twice keeps its last value.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut map = Self::new();
        for (k, v) in pairs {
            map.insert(k.into(), v.into());
        }
        map
    }

    pub fn insert(&mut self, key: String, value: String) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.0.remove(i).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for TagMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_pairs(iter)
    }
}

/// Read access to one series' tags, whoever stores them.
pub trait Tags {
    fn get(&self, key: &str) -> Option<&str>;
    fn for_each(&self, f: &mut dyn FnMut(&str, &str));

    fn to_map(&self) -> TagMap {
        let mut pairs = Vec::new();
        self.for_each(&mut |k, v| pairs.push((k.to_string(), v.to_string())));
        TagMap(pairs)
    }
}

impl Tags for TagMap {
    fn get(&self, key: &str) -> Option<&str> {
        TagMap::get(self, key)
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self.iter() {
            f(k, v);
        }
    }
}

/// A series' tags as interned pairs, sorted by key string: the canonical identity of a series.
pub(crate) type TagSet = Vec<(Sym, Sym)>;

/// Every series' tag set, packed into one buffer by id: a set is `[varint pairs]`, then
/// `[varint key][varint value]` per pair. Symbols are small numbers, so a set of nine pairs
/// takes about 30 bytes and 4 for its start, where a boxed slice of pairs took 72 plus 16
/// for the box and the allocator's header (the biggest per-series cost after the values).
/// Removed sets leave holes, compacted once they are a quarter of the buffer.
#[derive(Default)]
pub(crate) struct TagTable {
    bytes: Vec<u8>,
    /// Where each id's set starts in `bytes`; [`TagTable::FREE`] for an id without one.
    starts: Vec<u32>,
    /// Bytes of removed sets still in `bytes`.
    dead: usize,
}

impl TagTable {
    const FREE: u32 = u32::MAX;
    /// Most bytes the sets may take.
    const MAX_BYTES: usize = u32::MAX as usize - 1;

    /// Ids the table has room for (one past the highest id ever given a set).
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    pub(crate) fn contains(&self, id: u32) -> bool {
        self.starts
            .get(id as usize)
            .is_some_and(|&s| s != Self::FREE)
    }

    /// Ids below [`TagTable::len`] that have no set.
    pub(crate) fn free_ids(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.starts.len() as u32).filter(|&id| !self.contains(id))
    }

    pub(crate) fn get(&self, id: u32) -> Option<PackedSet<'_>> {
        let start = *self.starts.get(id as usize)?;
        if start == Self::FREE {
            return None;
        }
        let mut pos = start as usize;
        let len = get_varint(&self.bytes, &mut pos).unwrap_or(0) as usize;
        Some(PackedSet {
            bytes: &self.bytes[pos.min(self.bytes.len())..],
            len,
        })
    }

    /// Whether a set of `pairs` pairs still fits; the table is full when its sets would
    /// need more than 4 GiB (starts are 32-bit).
    pub(crate) fn check_room(&self, pairs: usize) -> Result<()> {
        // At most five bytes per symbol and per count.
        let live = self.bytes.len() - self.dead;
        if live + 5 * (2 * pairs + 1) > Self::MAX_BYTES {
            return Err(Error::SeriesLimit {
                what: "bytes of tag sets".into(),
                count: live as u64,
                limit: Self::MAX_BYTES as u64,
                setting: "the store's tag table",
            });
        }
        Ok(())
    }

    /// Gives `id` (which has no set) the set `pairs`.
    pub(crate) fn insert(&mut self, id: u32, pairs: &[(Sym, Sym)]) -> Result<()> {
        self.check_room(pairs.len())?;
        if self.bytes.len() + 5 * (2 * pairs.len() + 1) > Self::MAX_BYTES {
            self.compact();
        }
        if id as usize >= self.starts.len() {
            let len = id as usize + 1;
            if len > self.starts.capacity() {
                // By an eighth at a time, like the series tables: one entry per series.
                let target = len.max(self.starts.capacity() + self.starts.capacity() / 8);
                self.starts
                    .reserve_exact(target.max(64) - self.starts.len());
            }
            self.starts.resize(len, Self::FREE);
        }
        let need = 5 * (2 * pairs.len() + 1);
        if self.bytes.len() + need > self.bytes.capacity() {
            let target = (self.bytes.capacity() + self.bytes.capacity() / 8).max(4096);
            self.bytes
                .reserve_exact(target.max(self.bytes.len() + need) - self.bytes.len());
        }
        self.starts[id as usize] = self.bytes.len() as u32;
        put_varint(&mut self.bytes, pairs.len() as u64);
        for &(k, v) in pairs {
            put_varint(&mut self.bytes, u64::from(k));
            put_varint(&mut self.bytes, u64::from(v));
        }
        Ok(())
    }

    /// Takes `id`'s set away, returning it.
    pub(crate) fn remove(&mut self, id: u32) -> Option<TagSet> {
        let set = self.get(id)?;
        let pairs: TagSet = set.iter().collect();
        let start = self.starts[id as usize] as usize;
        let end = self.bytes.len() - set.bytes.len() + set.byte_len();
        self.dead += end - start;
        self.starts[id as usize] = Self::FREE;
        if self.dead > 64 * 1024 && self.dead > self.bytes.len() / 4 {
            self.compact();
        }
        Some(pairs)
    }

    /// Rewrites the buffer without the holes removed sets left.
    fn compact(&mut self) {
        let mut packed = Vec::with_capacity(self.bytes.len() - self.dead);
        for start in self.starts.iter_mut().filter(|s| **s != Self::FREE) {
            let from = *start as usize;
            let mut pos = from;
            let len = get_varint(&self.bytes, &mut pos).unwrap_or(0) as usize;
            let set = PackedSet {
                bytes: &self.bytes[pos.min(self.bytes.len())..],
                len,
            };
            *start = packed.len() as u32;
            packed.extend_from_slice(&self.bytes[from..pos + set.byte_len()]);
        }
        self.bytes = packed;
        self.dead = 0;
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.starts.capacity() * 4
    }
}

/// One set as the tag table holds it: `len` pairs of varints.
#[derive(Clone, Copy)]
pub(crate) struct PackedSet<'a> {
    /// From the first pair on (to the end of the table's buffer).
    bytes: &'a [u8],
    len: usize,
}

impl<'a> PackedSet<'a> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Sym, Sym)> + 'a {
        let bytes = self.bytes;
        let mut pos = 0;
        (0..self.len).map(move |_| {
            // The table wrote these bytes itself; a short read cannot happen, and would
            // only yield symbol 0, never a panic.
            let k = get_varint(bytes, &mut pos).unwrap_or(0) as Sym;
            let v = get_varint(bytes, &mut pos).unwrap_or(0) as Sym;
            (k, v)
        })
    }

    /// Bytes the pairs take.
    fn byte_len(&self) -> usize {
        let mut pos = 0;
        for _ in 0..2 * self.len {
            if get_varint(self.bytes, &mut pos).is_none() {
                break;
            }
        }
        pos
    }
}

/// A stored tag set borrowed together with the interner that can spell it.
pub struct TagSetRef<'a> {
    pub(crate) pairs: PackedSet<'a>,
    pub(crate) interner: &'a Interner,
}

impl Tags for TagSetRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|&(k, _)| self.interner.resolve(k) == key)
            .map(|(_, v)| self.interner.resolve(v))
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self.pairs.iter() {
            f(self.interner.resolve(k), self.interner.resolve(v));
        }
    }
}

/// Hash of a tag map over its strings in key order; the same for a `TagMap` and for the
/// stored `TagSet` it interns to, so lookups never have to intern first.
pub(crate) fn hash_tags<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Fixed seeds: the hash must be stable for the life of the process, nothing more.
    let mut h = ahash::RandomState::with_seeds(0x5eed, 0xa7, 0x1a5, 0x9e37).build_hasher();
    for (k, v) in pairs {
        h.write(k.as_bytes());
        h.write_u8(0xff);
        h.write(v.as_bytes());
        h.write_u8(0xfe);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_with_room_is_the_same_map_and_takes_more_without_growing() {
        let base = TagMap::from_pairs([("name", "x"), ("app", "a")]);
        let mut copy = base.clone_with_room(2);
        assert_eq!(copy, base);
        let room = copy.0.capacity();
        assert!(room >= 4);
        copy.insert("node".into(), "n1".into());
        copy.insert("zone".into(), "z".into());
        assert_eq!(copy.0.capacity(), room);
        assert_eq!(copy.get("node"), Some("n1"));
        assert_eq!(copy.len(), 4);
    }

    #[test]
    fn tag_map_sorted_and_last_wins() {
        let m = TagMap::from_pairs([("b", "1"), ("a", "2"), ("b", "3")]);
        let pairs: Vec<_> = m.iter().collect();
        assert_eq!(pairs, vec![("a", "2"), ("b", "3")]);
    }

    #[test]
    fn tag_table_packs_sets_and_compacts_what_removal_leaves() {
        let mut table = TagTable::default();
        let set = |id: u32| -> TagSet { vec![(0, id), (1, id * 1000), (300, 70_000 + id)] };
        for id in 0..20_000 {
            table.insert(id, &set(id)).unwrap();
        }
        // Symbols of one to four bytes: under 15 bytes a set, where the pairs took 24.
        assert!(table.bytes.len() < 20_000 * 15, "{}", table.bytes.len());
        assert_eq!(table.get(7).unwrap().iter().collect::<TagSet>(), set(7));
        for id in (0..20_000).filter(|id| id % 3 != 0) {
            assert_eq!(table.remove(id), Some(set(id)));
        }
        assert_eq!(table.remove(1), None);
        // Two thirds removed: the buffer was compacted, and every kept set reads back.
        let before = 20_000 * 15;
        assert!(table.bytes.len() < before * 2 / 3, "{}", table.bytes.len());
        for id in 0..20_000 {
            let got = table.get(id).map(|s| s.iter().collect::<TagSet>());
            assert_eq!(got, (id % 3 == 0).then(|| set(id)), "id {id}");
        }
        assert_eq!(table.free_ids().count(), 20_000 - 6_667);
        assert!(table.contains(3) && !table.contains(4) && !table.contains(20_000));
        // An id far past the end, and an empty set.
        table.insert(30_000, &[]).unwrap();
        assert_eq!(table.get(30_000).unwrap().len(), 0);
        assert_eq!(table.len(), 30_001);
    }

    #[test]
    fn interner_dedups() {
        let mut i = Interner::default();
        let a = i.intern("nf.app");
        assert_eq!(i.intern("nf.app"), a);
        assert_ne!(i.intern("name"), a);
        assert_eq!(i.resolve(a), "nf.app");
        assert_eq!(i.lookup("missing"), None);
    }
}
