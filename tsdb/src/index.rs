//! The tag index: roaring-bitmap postings per key=value and per key, with each key's values
//! kept sorted so prefix, range and regex matchers scan only the values they can match.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use ahash::AHashMap;
use roaring::{MultiOps, RoaringBitmap};

use crate::matcher::{CmpOp, Matcher};
use crate::tags::{Interner, Sym, TagTable};

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

/// Series gathered for [`TagIndex::insert_batch`], indexed from their sets in the tag table
/// once all are there.
#[derive(Default)]
pub(crate) struct IndexBatch {
    ids: Vec<u32>,
}

impl IndexBatch {
    pub(crate) fn add(&mut self, id: u32) {
        self.ids.push(id);
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
    /// Adds a batch of series at once (a snapshot being loaded), their sets read from
    /// `tags`: one lookup of each value's postings and one union per key=value pair, instead
    /// of one per series and tag (a string-compared tree walk each). Each core gathers and
    /// sorts the ids of its share of the series by pair (most of the work, which the loading
    /// thread did alone before); a key's postings are the union of its values'.
    pub(crate) fn insert_batch(&mut self, batch: IndexBatch, tags: &TagTable, interner: &Interner) {
        let threads = crate::parallel::scan_cores().clamp(1, 8);
        let per_part = batch.ids.len() / threads + 1;
        let parts = crate::parallel::scan_parts(batch.ids.chunks(per_part), |ids| {
            let mut pairs: AHashMap<(Sym, Sym), Vec<u32>> = AHashMap::new();
            for &id in ids {
                for pair in tags.get(id).iter().flat_map(|set| set.iter()) {
                    pairs.entry(pair).or_default().push(id);
                }
            }
            let pairs: AHashMap<(Sym, Sym), Postings> = pairs
                .into_iter()
                .map(|(pair, ids)| (pair, postings_of(ids)))
                .collect();
            (postings_of(ids.to_vec()), pairs)
        });
        // Sorting plain ids cannot panic: a failed thread is a bug worth its panic.
        let mut parts = parts
            .into_iter()
            .map(|part| part.expect("an index builder panicked"));
        let Some((all, mut pairs)) = parts.next() else {
            return;
        };
        self.all |= all;
        for (all, more) in parts {
            self.all |= all;
            for (pair, postings) in more {
                *pairs.entry(pair).or_default() |= postings;
            }
        }
        let mut touched = Vec::new();
        for ((k, v), postings) in pairs {
            touched.push(k);
            let key = self.keys.entry(k).or_default();
            *key.values.entry(interner.resolve_shared(v)).or_default() |= postings;
        }
        touched.sort_unstable();
        touched.dedup();
        for k in touched {
            let key = self.keys.get_mut(&k).expect("touched above");
            key.all = key.values.values().union();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A key's ids, then each of its values' ids.
    type KeyContents = (Sym, Vec<u32>, Vec<(String, Vec<u32>)>);

    /// Postings of the whole index, comparable: every key's `all` and every value's.
    fn contents(index: &TagIndex) -> (Vec<u32>, Vec<KeyContents>) {
        let mut keys: Vec<_> = index
            .keys
            .iter()
            .map(|(&k, p)| {
                let values = p
                    .values
                    .iter()
                    .map(|(v, ids)| (v.to_string(), ids.iter().collect()))
                    .collect();
                (k, p.all.iter().collect(), values)
            })
            .collect();
        keys.sort_by_key(|k| k.0);
        (index.all.iter().collect(), keys)
    }

    /// A batch gives the index that inserting its series one by one gives, also on top of
    /// series indexed before it, whatever the order of its ids.
    #[test]
    fn a_batch_indexes_what_single_inserts_do() {
        let mut interner = Interner::default();
        let mut tags = TagTable::default();
        let mut one_by_one = TagIndex::default();
        let mut batched = TagIndex::default();
        let mut batch = IndexBatch::default();
        // Ids in shard order, as a snapshot's sections give them; some without tags.
        let ids: Vec<u32> = (0..16).flat_map(|s| (s..5_000).step_by(16)).collect();
        for (n, &id) in ids.iter().enumerate() {
            let set: Vec<(Sym, Sym)> = [
                ("name", format!("m{}", id % 7)),
                ("node", format!("i-{}", id / 3)),
                ("zone", format!("z{}", id % 5)),
            ]
            .iter()
            .take(id as usize % 4)
            .map(|(k, v)| (interner.intern(k), interner.intern(v)))
            .collect();
            tags.insert(id, &set).unwrap();
            one_by_one.insert(id, &set, &interner);
            if n < 1_000 {
                batched.insert(id, &set, &interner);
            } else {
                batch.add(id);
            }
        }
        batched.insert_batch(batch, &tags, &interner);
        assert_eq!(contents(&batched), contents(&one_by_one));
        // An empty batch changes nothing.
        batched.insert_batch(IndexBatch::default(), &tags, &interner);
        assert_eq!(contents(&batched), contents(&one_by_one));
    }
}
