//! The tag index: roaring-bitmap postings per key=value and per key, with each key's values
//! kept sorted so prefix, range and regex matchers scan only the values they can match.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use ahash::AHashMap;
use roaring::{MultiOps, RoaringBitmap};

use crate::matcher::{CmpOp, Matcher};
use crate::tags::{Interner, Sym};

/// Postings: the set of series ids that have some property.
pub type Postings = RoaringBitmap;

#[derive(Default)]
struct KeyPostings {
    /// Series that have the key at all (`:has`).
    all: Postings,
    /// Series per value, values in string order.
    values: BTreeMap<Arc<str>, Postings>,
}

/// Inverted index from tags to series ids. Updated in place as series come and go, so a new
/// series is queryable as soon as its first sample is stored (Atlas rebuilds periodically).
#[derive(Default)]
pub struct TagIndex {
    all: Postings,
    keys: AHashMap<Sym, KeyPostings>,
}

/// Index entries gathered for [`TagIndex::insert_batch`]: the ids of each key=value pair.
#[derive(Default)]
pub(crate) struct IndexBatch {
    ids: Vec<u32>,
    pairs: AHashMap<(Sym, Sym), Vec<u32>>,
}

impl IndexBatch {
    pub(crate) fn add(&mut self, id: u32, tags: &[(Sym, Sym)]) {
        self.ids.push(id);
        for &pair in tags {
            self.pairs.entry(pair).or_default().push(id);
        }
    }
}

/// A bitmap of `ids` (sorted here).
fn postings_of(mut ids: Vec<u32>) -> Postings {
    ids.sort_unstable();
    ids.dedup();
    // Sorted and deduplicated: cannot fail.
    Postings::from_sorted_iter(ids).unwrap_or_default()
}

impl TagIndex {
    /// Adds a batch of series at once (a snapshot being loaded): one lookup of each value's
    /// postings and one union per key=value pair, instead of one per series and tag (a
    /// string-compared tree walk each, most of a million-series restart).
    pub(crate) fn insert_batch(&mut self, batch: IndexBatch, interner: &Interner) {
        self.all |= postings_of(batch.ids);
        let mut by_key: AHashMap<Sym, Vec<u32>> = AHashMap::new();
        for ((k, v), ids) in batch.pairs {
            by_key.entry(k).or_default().extend_from_slice(&ids);
            let key = self.keys.entry(k).or_default();
            *key.values.entry(interner.resolve_shared(v)).or_default() |= postings_of(ids);
        }
        for (k, ids) in by_key {
            self.keys.entry(k).or_default().all |= postings_of(ids);
        }
    }

    pub(crate) fn insert(&mut self, id: u32, tags: &[(Sym, Sym)], interner: &Interner) {
        self.all.insert(id);
        for &(k, v) in tags {
            let key = self.keys.entry(k).or_default();
            key.all.insert(id);
            let value = interner.resolve_shared(v);
            key.values.entry(value).or_default().insert(id);
        }
    }

    pub(crate) fn remove(&mut self, id: u32, tags: &[(Sym, Sym)], interner: &Interner) {
        self.all.remove(id);
        for &(k, v) in tags {
            let Some(key) = self.keys.get_mut(&k) else {
                continue;
            };
            key.all.remove(id);
            let value = interner.resolve(v);
            if let Some(p) = key.values.get_mut(value) {
                p.remove(id);
                if p.is_empty() {
                    key.values.remove(value);
                }
            }
            if key.all.is_empty() {
                self.keys.remove(&k);
            }
        }
    }

    pub fn len(&self) -> u64 {
        self.all.len()
    }

    fn key(&self, key: &str, interner: &Interner) -> Option<&KeyPostings> {
        interner.lookup(key).and_then(|k| self.keys.get(&k))
    }

    /// The series matching `m`.
    pub(crate) fn select(&self, m: &Matcher, interner: &Interner) -> Postings {
        match m {
            Matcher::True => self.all.clone(),
            Matcher::False => Postings::new(),
            Matcher::Eq { key, value } => self
                .key(key, interner)
                .and_then(|k| k.values.get(value.as_str()))
                .cloned()
                .unwrap_or_default(),
            Matcher::In { key, values } => match self.key(key, interner) {
                Some(k) => values
                    .iter()
                    .filter_map(|v| k.values.get(v.as_str()))
                    .union(),
                None => Postings::new(),
            },
            Matcher::Has { key } => self
                .key(key, interner)
                .map(|k| k.all.clone())
                .unwrap_or_default(),
            Matcher::Cmp { key, op, value } => match self.key(key, interner) {
                Some(k) => {
                    let v = value.as_str();
                    let range: (Bound<&str>, Bound<&str>) = match op {
                        CmpOp::Lt => (Bound::Unbounded, Bound::Excluded(v)),
                        CmpOp::Le => (Bound::Unbounded, Bound::Included(v)),
                        CmpOp::Gt => (Bound::Excluded(v), Bound::Unbounded),
                        CmpOp::Ge => (Bound::Included(v), Bound::Unbounded),
                    };
                    k.values.range::<str, _>(range).map(|(_, p)| p).union()
                }
                None => Postings::new(),
            },
            Matcher::Values { key, pred } => match self.key(key, interner) {
                Some(k) => k
                    .values
                    .range::<str, _>((Bound::Included(pred.prefix.as_str()), Bound::Unbounded))
                    .take_while(|(v, _)| v.starts_with(pred.prefix.as_str()))
                    .filter(|(v, _)| (pred.test)(v))
                    .map(|(_, p)| p)
                    .union(),
                None => Postings::new(),
            },
            Matcher::And(a, b) => {
                let mut left = self.select(a, interner);
                if !left.is_empty() {
                    left &= self.select(b, interner);
                }
                left
            }
            Matcher::Or(a, b) => {
                let mut left = self.select(a, interner);
                left |= self.select(b, interner);
                left
            }
            Matcher::Not(a) => &self.all - self.select(a, interner),
        }
    }

    /// Tag keys (as syms) present on at least one series of `within` (all series if `None`).
    pub(crate) fn keys_within<'a>(
        &'a self,
        within: Option<&'a Postings>,
    ) -> impl Iterator<Item = (Sym, u64)> + 'a {
        self.keys.iter().filter_map(move |(&k, p)| {
            let n = match within {
                Some(w) => p.all.intersection_len(w),
                None => p.all.len(),
            };
            (n > 0).then_some((k, n))
        })
    }

    /// Values of `key` in string order with their series counts, restricted to `within`.
    pub(crate) fn values_within<'a>(
        &'a self,
        key: &str,
        interner: &Interner,
        within: Option<&'a Postings>,
    ) -> Vec<(&'a str, u64)> {
        let Some(k) = self.key(key, interner) else {
            return Vec::new();
        };
        k.values
            .iter()
            .filter_map(|(v, p)| {
                let n = match within {
                    Some(w) => p.intersection_len(w),
                    None => p.len(),
                };
                (n > 0).then_some((&**v, n))
            })
            .collect()
    }

    /// Series with `key` = `value`.
    pub(crate) fn count(&self, key: &str, value: &str, interner: &Interner) -> u64 {
        self.key(key, interner)
            .and_then(|k| k.values.get(value))
            .map_or(0, |p| p.len())
    }

    /// Distinct values of the key `sym`.
    pub(crate) fn distinct_values(&self, sym: Sym) -> usize {
        self.keys.get(&sym).map_or(0, |k| k.values.len())
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        let mut n = self.all.serialized_size();
        for k in self.keys.values() {
            n += k.all.serialized_size() + 48;
            for (v, p) in &k.values {
                n += p.serialized_size() + v.len() + 64;
            }
        }
        n
    }
}
