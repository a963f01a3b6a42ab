//! Live queries pushed down by the server (Mantis's idea): the server sends, over the
//! control stream, the subscriptions on the streams this agent serves — a predicate in the
//! core's canonical text, the fields the server needs, the sampling. Each event is checked
//! against them as it arrives; one that matches goes to the server once, with the ids of the
//! subscriptions it matched and only the union of the fields they need. An event nobody
//! asked for is counted and dropped here: it never costs the network anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use argus_proto::v1;
use argus_query::mql::ast::{Sample, Strategy};
use argus_query::mql::{Sampler, parse_condition};
use argus_query::predicate::{Path, Predicate, Segment};
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};

use crate::health::Health;

/// One subscription, ready to evaluate.
struct LiveFilter {
    id: u64,
    predicate: Predicate,
    /// `None`: the whole event.
    fields: Option<Vec<Path>>,
    sampler: Mutex<Sampler>,
}

/// The subscriptions by stream.
#[derive(Default)]
pub struct Pushdown {
    by_stream: RwLock<Arc<HashMap<String, Vec<Arc<LiveFilter>>>>>,
}

/// What to send of an event that matched.
pub struct Selected {
    pub subscriptions: Vec<u64>,
    pub json: Vec<u8>,
}

fn path_from_wire(p: &v1::FieldPath) -> Option<Path> {
    let segments = p
        .segments
        .iter()
        .map(|s| match &s.kind {
            Some(v1::path_segment::Kind::Key(k)) => Some(Segment::Key(k.clone())),
            Some(v1::path_segment::Kind::Index(i)) => Some(Segment::Index(*i)),
            Some(v1::path_segment::Kind::Any(_)) => Some(Segment::Any),
            None => None,
        })
        .collect::<Option<Vec<_>>>()?;
    (!segments.is_empty()).then_some(Path(segments))
}

fn sample_from_wire(s: &v1::Sampling) -> Sample {
    let strategy = match v1::sampling::Strategy::try_from(s.strategy) {
        Ok(v1::sampling::Strategy::Random) => Strategy::Random,
        Ok(v1::sampling::Strategy::Sticky) => Strategy::Sticky,
        Ok(v1::sampling::Strategy::Rps) => Strategy::Rps,
        _ => Strategy::All,
    };
    Sample {
        strategy,
        threshold: s.threshold,
        factor: s.factor,
        salt: s.salt,
        keys: s.keys.iter().filter_map(path_from_wire).collect(),
        extrapolate: false,
    }
}

impl Pushdown {
    /// Replaces the whole set with the server's. A subscription the agent cannot read (a
    /// predicate that does not parse: a newer server?) is skipped and reported; the others
    /// run.
    pub fn replace(&self, set: &v1::Subscriptions, seed: u64) -> Vec<String> {
        let mut problems = Vec::new();
        let mut by_stream: HashMap<String, Vec<Arc<LiveFilter>>> = HashMap::new();
        for sub in &set.subscriptions {
            let predicate = match parse_condition(&sub.predicate) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("subscription {}: predicate {:?}: {e}", sub.id, sub.predicate));
                    continue;
                }
            };
            let fields = (!sub.whole_event)
                .then(|| sub.fields.iter().filter_map(path_from_wire).collect::<Vec<_>>());
            let filter = Arc::new(LiveFilter {
                id: sub.id,
                predicate,
                fields,
                sampler: Mutex::new(Sampler::new(
                    sub.sampling.as_ref().map(sample_from_wire),
                    seed ^ sub.id.rotate_left(29),
                )),
            });
            for stream in &sub.streams {
                by_stream.entry(stream.clone()).or_default().push(filter.clone());
            }
        }
        *self.by_stream.write() = Arc::new(by_stream);
        problems
    }

    /// Subscriptions running here, over all streams.
    pub fn count(&self) -> usize {
        let by_stream = self.by_stream.read();
        let mut ids: Vec<u64> = by_stream.values().flatten().map(|f| f.id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// Whether anyone is asking for `stream`: when not, its events need no parsing at all.
    pub fn wanted(&self, stream: &str) -> bool {
        self.by_stream.read().contains_key(stream)
    }

    /// Evaluates every subscription of `stream` on one event: `None` when none matched.
    pub fn select(&self, stream: &str, event: &Value, raw: &[u8], now_ms: i64) -> Option<Selected> {
        let by_stream = self.by_stream.read().clone();
        let filters = by_stream.get(stream)?;
        let mut matched: Vec<&LiveFilter> = Vec::new();
        for f in filters {
            if f.sampler.lock().pass(event, now_ms) && f.predicate.matches(event) {
                matched.push(f);
            }
        }
        if matched.is_empty() {
            return None;
        }
        let subscriptions = matched.iter().map(|f| f.id).collect();
        let json = if matched.iter().any(|f| f.fields.is_none()) {
            raw.to_vec()
        } else {
            let mut out = Map::new();
            for f in &matched {
                for path in f.fields.iter().flatten() {
                    copy_path(event, path, &mut out);
                }
            }
            serde_json::to_vec(&Value::Object(out)).unwrap_or_else(|_| raw.to_vec())
        };
        Some(Selected {
            subscriptions,
            json,
        })
    }
}

/// Copies the value at `path` (map keys only; a path into a list takes the whole list)
/// from `event` into `out`, building the maps on the way.
fn copy_path(event: &Value, path: &Path, out: &mut Map<String, Value>) {
    let keys: Vec<&str> = path
        .0
        .iter()
        .map_while(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            _ => None,
        })
        .collect();
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut src = event;
    let mut dst = out;
    for k in parents {
        let Some(next) = src.get(*k) else {
            return;
        };
        if !next.is_object() {
            // Not a map on the way: the whole value is what the path reads.
            dst.insert((*k).to_string(), next.clone());
            return;
        }
        src = next;
        let slot = dst
            .entry((*k).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        match slot {
            Value::Object(m) => dst = m,
            // Already copied whole by a shorter path.
            _ => return,
        }
    }
    if let Some(v) = src.get(*last) {
        dst.insert((*last).to_string(), v.clone());
    }
}

/// Counts what happened to an event at the agent.
pub fn count(health: &Health, selected: bool, bytes: usize) {
    health.events_received.fetch_add(1, Ordering::Relaxed);
    if selected {
        health.events_selected.fetch_add(1, Ordering::Relaxed);
        health
            .event_bytes_selected
            .fetch_add(bytes as u64, Ordering::Relaxed);
    } else {
        health.events_unwanted.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(k: &str) -> v1::FieldPath {
        v1::FieldPath {
            segments: vec![v1::PathSegment {
                kind: Some(v1::path_segment::Kind::Key(k.into())),
            }],
        }
    }

    fn set(subs: Vec<v1::Subscription>) -> v1::Subscriptions {
        v1::Subscriptions {
            subscriptions: subs,
        }
    }

    #[test]
    fn matches_once_with_ids_and_only_needed_fields() {
        let pd = Pushdown::default();
        let problems = pd.replace(
            &set(vec![
                v1::Subscription {
                    id: 7,
                    streams: vec!["requests".into()],
                    predicate: "e['status'] >= 500".into(),
                    fields: vec![key("path"), key("status")],
                    ..Default::default()
                },
                v1::Subscription {
                    id: 9,
                    streams: vec!["requests".into()],
                    predicate: "e['region'] == 'eu'".into(),
                    fields: vec![key("region")],
                    ..Default::default()
                },
            ]),
            1,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(pd.wanted("requests") && !pd.wanted("other"));
        let ev = json!({"status": 503, "path": "/a", "region": "eu", "body": "big"});
        let raw = serde_json::to_vec(&ev).unwrap();
        let sel = pd.select("requests", &ev, &raw, 0).expect("matched");
        assert_eq!(sel.subscriptions, [7, 9]);
        let sent: Value = serde_json::from_slice(&sel.json).unwrap();
        assert_eq!(sent, json!({"status": 503, "path": "/a", "region": "eu"}));
        let miss = json!({"status": 200, "region": "us"});
        assert!(pd.select("requests", &miss, b"{}", 0).is_none());
        assert!(pd.select("other", &ev, &raw, 0).is_none());
        pd.replace(&set(vec![]), 1);
        assert!(!pd.wanted("requests"));
    }

    #[test]
    fn nested_fields_keep_their_shape_and_bad_predicates_are_reported() {
        let pd = Pushdown::default();
        let nested = v1::FieldPath {
            segments: vec![
                v1::PathSegment {
                    kind: Some(v1::path_segment::Kind::Key("a".into())),
                },
                v1::PathSegment {
                    kind: Some(v1::path_segment::Kind::Key("b".into())),
                },
            ],
        };
        let problems = pd.replace(
            &set(vec![
                v1::Subscription {
                    id: 1,
                    streams: vec!["s".into()],
                    predicate: "true".into(),
                    fields: vec![nested],
                    ..Default::default()
                },
                v1::Subscription {
                    id: 2,
                    streams: vec!["s".into()],
                    predicate: "e['x'] ==".into(),
                    ..Default::default()
                },
            ]),
            1,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        let ev = json!({"a": {"b": 1, "c": 2}, "d": 3});
        let sel = pd.select("s", &ev, b"", 0).unwrap();
        let sent: Value = serde_json::from_slice(&sel.json).unwrap();
        assert_eq!(sent, json!({"a": {"b": 1}}));
    }
}
