//! Tags: string interning and the canonical, sorted tag set that is a series' identity.

use std::sync::Arc;

use ahash::AHashMap;

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
pub(crate) type TagSet = Box<[(Sym, Sym)]>;

/// A stored tag set borrowed together with the interner that can spell it.
pub struct TagSetRef<'a> {
    pub(crate) pairs: &'a [(Sym, Sym)],
    pub(crate) interner: &'a Interner,
}

impl Tags for TagSetRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| self.interner.resolve(*k) == key)
            .map(|(_, v)| self.interner.resolve(*v))
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self.pairs.iter() {
            f(self.interner.resolve(*k), self.interner.resolve(*v));
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
    fn tag_map_sorted_and_last_wins() {
        let m = TagMap::from_pairs([("b", "1"), ("a", "2"), ("b", "3")]);
        let pairs: Vec<_> = m.iter().collect();
        assert_eq!(pairs, vec![("a", "2"), ("b", "3")]);
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
