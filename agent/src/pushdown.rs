//! Live queries pushed down by the server (Mantis's idea): the server sends, over the
//! control stream, the subscriptions on the streams this agent serves — a predicate in the
//! core's canonical text, the fields the server needs, the sampling. Each event is checked
//! against them as it arrives; one that matches goes to the server once, with the ids of the
//! subscriptions it matched and only the union of the fields they need. An event nobody
//! asked for is counted and dropped here: it never costs the network anything.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use argus_mql::ast::{Sample, Strategy};
use argus_mql::partial::Fields;
use argus_mql::predicate::{Path, Predicate, Segment};
use argus_mql::{Sampler, parse_condition};
use argus_proto::v1;
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};

use crate::health::Health;

/// One subscription, ready to evaluate.
struct LiveFilter {
    id: u64,
    predicate: Predicate,
    /// `None`: the whole event.
    fields: Option<Vec<Path>>,
    /// STICKY sampling's key fields.
    keys: Vec<Path>,
    sampler: Mutex<Sampler>,
}

/// The subscriptions of one stream, and the top-level fields they read to decide (their
/// predicates and sampling keys): only those are parsed out of each event.
struct StreamFilters {
    filters: Vec<Arc<LiveFilter>>,
    read: Fields,
    /// Every needed field is among `read`: a matching event is projected from the partial
    /// parse, with no second parse.
    projection_from_read: bool,
}

/// The subscriptions by stream.
#[derive(Default)]
pub struct Pushdown {
    by_stream: RwLock<Arc<HashMap<String, StreamFilters>>>,
}

/// Fields to read for time (`timestamp`) besides what the subscriptions read.
const TIMESTAMP: &str = "timestamp";

/// What to send of an event that matched.
pub struct Selected {
    pub subscriptions: Vec<u64>,
    pub json: Vec<u8>,
    /// The event's `timestamp` field, when it has one.
    pub ts_ms: Option<i64>,
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
        let mut lists: HashMap<String, Vec<Arc<LiveFilter>>> = HashMap::new();
        for sub in &set.subscriptions {
            let predicate = match parse_condition(&sub.predicate) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!(
                        "subscription {}: predicate {:?}: {e}",
                        sub.id, sub.predicate
                    ));
                    continue;
                }
            };
            let fields = (!sub.whole_event).then(|| {
                sub.fields
                    .iter()
                    .filter_map(path_from_wire)
                    .collect::<Vec<_>>()
            });
            let sample = sub.sampling.as_ref().map(sample_from_wire);
            let filter = Arc::new(LiveFilter {
                id: sub.id,
                predicate,
                fields,
                keys: sample.as_ref().map(|s| s.keys.clone()).unwrap_or_default(),
                sampler: Mutex::new(Sampler::new(sample, seed ^ sub.id.rotate_left(29))),
            });
            for stream in &sub.streams {
                lists
                    .entry(stream.clone())
                    .or_default()
                    .push(filter.clone());
            }
        }
        let by_stream = lists
            .into_iter()
            .map(|(stream, filters)| {
                let mut paths = vec![Path::key(TIMESTAMP)];
                for f in &filters {
                    f.predicate.paths(&mut paths);
                    paths.extend(f.keys.iter().cloned());
                }
                let read = Fields::of_paths(&paths);
                let projection_from_read = match read.keys() {
                    None => true,
                    Some(keys) => filters.iter().all(|f| {
                        f.fields.as_ref().is_some_and(|fields| {
                            fields.iter().all(|p| match p.0.first() {
                                Some(Segment::Key(k)) => keys.contains(k),
                                _ => false,
                            })
                        })
                    }),
                };
                let entry = StreamFilters {
                    filters,
                    read,
                    projection_from_read,
                };
                (stream, entry)
            })
            .collect();
        *self.by_stream.write() = Arc::new(by_stream);
        problems
    }

    /// Subscriptions running here, over all streams.
    pub fn count(&self) -> usize {
        let by_stream = self.by_stream.read();
        let mut ids: Vec<u64> = by_stream
            .values()
            .flat_map(|s| s.filters.iter().map(|f| f.id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// Evaluates every subscription of `stream` on one event (its JSON text): `None` when
    /// none matched. Only the fields the subscriptions read are parsed (the rest is checked
    /// and skipped); a matching event is parsed whole only when it must be sent whole or
    /// its projection needs more. Not a JSON object: an error.
    pub fn select(
        &self,
        stream: &str,
        raw: &[u8],
        now_ms: i64,
    ) -> Result<Option<Selected>, serde_json::Error> {
        let by_stream = self.by_stream.read().clone();
        let Some(entry) = by_stream.get(stream) else {
            check_object(&Fields::of_paths([]).parse(raw)?)?;
            return Ok(None);
        };
        // One event value per thread, rewritten in place from event to event: the kept
        // fields are mostly the same keys, so reading an event allocates next to nothing.
        thread_local! {
            static EVENT: RefCell<Value> = const { RefCell::new(Value::Null) };
        }
        EVENT.with_borrow_mut(|read| {
            entry.read.parse_into(raw, read)?;
            check_object(read)?;
            let mut matched: Vec<&LiveFilter> = Vec::new();
            for f in &entry.filters {
                if f.sampler.lock().pass(read, now_ms) && f.predicate.matches(read) {
                    matched.push(f);
                }
            }
            if matched.is_empty() {
                return Ok(None);
            }
            let subscriptions = matched.iter().map(|f| f.id).collect();
            let ts_ms = read.get(TIMESTAMP).and_then(Value::as_i64);
            let json = if matched.iter().any(|f| f.fields.is_none()) {
                raw.to_vec()
            } else {
                let whole;
                let source: &Value = if entry.projection_from_read {
                    read
                } else {
                    whole = serde_json::from_slice::<Value>(raw)?;
                    &whole
                };
                let mut out = Map::new();
                for f in &matched {
                    for path in f.fields.iter().flatten() {
                        copy_path(source, path, &mut out);
                    }
                }
                serde_json::to_vec(&Value::Object(out))?
            };
            Ok(Some(Selected {
                subscriptions,
                json,
                ts_ms,
            }))
        })
    }
}

fn check_object(v: &Value) -> Result<(), serde_json::Error> {
    if v.is_object() {
        Ok(())
    } else {
        Err(serde::de::Error::custom("expected a JSON object"))
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
        let ev = json!({"status": 503, "path": "/a", "region": "eu", "body": "big"});
        let raw = serde_json::to_vec(&ev).unwrap();
        let sel = pd.select("requests", &raw, 0).unwrap().expect("matched");
        assert_eq!(sel.subscriptions, [7, 9]);
        let sent: Value = serde_json::from_slice(&sel.json).unwrap();
        assert_eq!(sent, json!({"status": 503, "path": "/a", "region": "eu"}));
        let miss = br#"{"status": 200, "region": "us"}"#;
        assert!(pd.select("requests", miss, 0).unwrap().is_none());
        assert!(pd.select("other", &raw, 0).unwrap().is_none());
        assert!(pd.select("requests", b"[1]", 0).is_err());
        assert!(pd.select("other", b"{bad", 0).is_err());
        pd.replace(&set(vec![]), 1);
        assert!(pd.select("requests", &raw, 0).unwrap().is_none());
        assert_eq!(pd.count(), 0);
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
        let raw = br#"{"a": {"b": 1, "c": 2}, "d": 3}"#;
        let sel = pd.select("s", raw, 0).unwrap().unwrap();
        let sent: Value = serde_json::from_slice(&sel.json).unwrap();
        assert_eq!(sent, json!({"a": {"b": 1}}));
    }
}
