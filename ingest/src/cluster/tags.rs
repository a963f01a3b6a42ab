//! The tags and cardinality APIs across the cluster. Every series lives in exactly one
//! partition, so the series counts of tag keys and values from disjoint sets of partitions
//! add up exactly; a store node answers for the partitions dealt to it
//! (`GET /api/v1/cluster/tags`), and the query node adds the counts.

use std::collections::BTreeMap;

use argus_tsdb::{Cardinality, Matcher, SeriesSource, Store};
use serde::{Deserialize, Serialize};

use super::query::{Ask, PartitionCache, PartitionSource};

/// What a tags request asks about the series matching `q` (all if `None`).
#[derive(Clone, Debug, Default)]
pub struct TagsRequest {
    /// The query as the client wrote it (ASL), passed on as it is.
    pub q: Option<String>,
    /// Only the values of this key.
    pub key: Option<String>,
    /// Only the keys, with their series counts (values left empty).
    pub keys_only: bool,
    /// PromQL series selectors (`match[]`): only the series one of them selects.
    pub selectors: Vec<String>,
    /// Instead of tags, each metric name with the types it is stored as: entries
    /// `(name, atlas.dstype, series)` (for the Prometheus API's metadata).
    pub name_types: bool,
}

/// Series counts per (key, value) over some partitions; `value` is empty when only keys
/// were asked.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TagCounts {
    pub series: u64,
    pub tags: Vec<(String, String, u64)>,
}

impl TagsRequest {
    /// From a store node's query string; what is wrong, named.
    pub fn from_params(params: &[(String, String)]) -> Result<TagsRequest, String> {
        let get = |k: &str| {
            params
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| v.clone())
        };
        Ok(TagsRequest {
            q: get("q").filter(|q| !q.trim().is_empty()),
            key: get("key"),
            keys_only: matches!(get("keys_only").as_deref(), Some("1" | "true")),
            selectors: params
                .iter()
                .filter(|(k, _)| k == "match[]")
                .map(|(_, v)| v.clone())
                .collect(),
            name_types: matches!(get("name_types").as_deref(), Some("1" | "true")),
        })
    }

    fn to_query(&self) -> String {
        let mut out = String::new();
        if let Some(q) = &self.q {
            out.push_str("&q=");
            out.push_str(&crate::live_client::encode_component(q));
        }
        if let Some(k) = &self.key {
            out.push_str("&key=");
            out.push_str(&crate::live_client::encode_component(k));
        }
        if self.keys_only {
            out.push_str("&keys_only=1");
        }
        for selector in &self.selectors {
            out.push_str("&match[]=");
            out.push_str(&crate::live_client::encode_component(selector));
        }
        if self.name_types {
            out.push_str("&name_types=1");
        }
        out
    }

    /// The series the request is about: its query's, and one of its selectors'.
    fn matcher(&self) -> Result<Matcher, String> {
        let mut matcher = match &self.q {
            Some(q) => argus_query::tag_query(q).map_err(|e| e.to_string())?,
            None => Matcher::True,
        };
        let mut any: Option<Matcher> = None;
        for text in &self.selectors {
            let m = argus_promql::series_matcher(text).map_err(|e| e.message)?;
            any = Some(match any {
                None => m,
                Some(a) => a.or(m),
            });
        }
        if let Some(any) = any {
            matcher = matcher.and(any);
        }
        Ok(matcher)
    }

    /// The counts over `partitions` of `store`'s series.
    pub fn count(
        &self,
        (store, cache): (&Store, &PartitionCache),
        partitions: &[u32],
        of: u32,
    ) -> Result<TagCounts, String> {
        let matcher = self.matcher()?;
        let mut keep = vec![false; of as usize];
        for &p in partitions {
            if let Some(slot) = keep.get_mut(p as usize) {
                *slot = true;
            }
        }
        let source = PartitionSource {
            inner: store,
            keep: Some(keep),
            partitions: of,
            cache: Some((store, cache)),
        };
        let ids = source.select(&matcher);
        let mut tags = Vec::new();
        if self.name_types {
            tags = name_types(store, &ids);
        } else if let Some(key) = &self.key {
            for (value, n) in store.tag_values_of(key, &ids) {
                tags.push((key.clone(), value, n));
            }
        } else {
            for (key, n) in store.tag_keys_of(&ids) {
                if self.keys_only {
                    tags.push((key, String::new(), n));
                    continue;
                }
                for (value, n) in store.tag_values_of(&key, &ids) {
                    tags.push((key.clone(), value, n));
                }
            }
        }
        Ok(TagCounts {
            series: ids.len(),
            tags,
        })
    }
}

/// Each metric name of the series `ids` with how its series are stored (`atlas.dstype`'s
/// words: `gauge`, `rate`, `counter`, `sum`) and how many: `(name, dstype, series)`, sorted.
pub fn name_types(store: &Store, ids: &argus_tsdb::Postings) -> Vec<(String, String, u64)> {
    let mut counts: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    store.visit_tags(ids, &mut |id, tags| {
        if let (Some(name), Some(dstype)) = (tags.get("name"), store.dstype(id)) {
            *counts.entry((name.to_string(), dstype.name())).or_insert(0) += 1;
        }
    });
    counts
        .into_iter()
        .map(|((name, dstype), n)| (name, dstype.to_string(), n))
        .collect()
}

impl Ask for TagsRequest {
    type Part = TagCounts;

    fn path(&self, partitions: &[u32], of: u32) -> String {
        let list: Vec<String> = partitions.iter().map(u32::to_string).collect();
        format!(
            "/api/v1/cluster/tags?partitions={}&of={of}{}",
            list.join(","),
            self.to_query()
        )
    }

    fn local(
        &self,
        store: (&Store, &PartitionCache),
        partitions: &[u32],
        of: u32,
    ) -> Result<TagCounts, String> {
        self.count(store, partitions, of)
    }

    fn decode(&self, body: &[u8]) -> Result<TagCounts, String> {
        serde_json::from_slice(body).map_err(|e| format!("an unreadable tags answer: {e}"))
    }
}

/// The parts added up: total series, and per (key, value) the series count, sorted.
pub fn merge(parts: Vec<TagCounts>) -> (u64, BTreeMap<(String, String), u64>) {
    let mut series = 0;
    let mut out = BTreeMap::new();
    for part in parts {
        series += part.series;
        for (k, v, n) in part.tags {
            *out.entry((k, v)).or_insert(0) += n;
        }
    }
    (series, out)
}

/// What [`Store::cardinality`] says of one store, from the counts of every (key, value): the
/// `top` names and keys, ordered the same way.
pub fn cardinality(series: u64, tags: &BTreeMap<(String, String), u64>, top: usize) -> Cardinality {
    let mut names: Vec<(String, u64)> = tags
        .iter()
        .filter(|((k, _), _)| k == "name")
        .map(|((_, v), n)| (v.clone(), *n))
        .collect();
    names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    names.truncate(top);
    let mut keys: Vec<(String, u64, usize)> = Vec::new();
    for ((k, _), n) in tags {
        match keys.last_mut() {
            Some((key, series, values)) if key == k => {
                *series += n;
                *values += 1;
            }
            _ => keys.push((k.clone(), *n, 1)),
        }
    }
    keys.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then(b.2.cmp(&a.2))
            .then_with(|| a.0.cmp(&b.0))
    });
    keys.truncate(top);
    Cardinality {
        series,
        names,
        keys,
    }
}
