//! The agent protocol (`argus.v1`): metric batches against each stream's series table, and
//! event batches.

use std::sync::Arc;

use argus_proto::v1;
use argus_tsdb::{Sample, SeriesId, Store, TagMap, Writer};

use super::converted::Converted;
use crate::event::Event;
use crate::validation::{Refusals, RejectReason, Rejection, validate_tags};

/// One stream's series table: the agent's local ids to store ids (or why a series was
/// refused). The table outlives any one [`Writer`], so every id in it is pinned: the store
/// keeps those series, however long they stay empty, until the stream ends.
pub struct StreamSeries {
    store: Arc<Store>,
    ids: Vec<Option<Result<SeriesId, Rejection>>>,
    /// The last batch's sample buffer, reused: batches are large and alike.
    spare: Vec<Sample>,
}

impl Drop for StreamSeries {
    fn drop(&mut self) {
        let pinned: Vec<SeriesId> = self.ids.iter().flatten().flatten().copied().collect();
        self.store.unpin(&pinned);
    }
}

/// Local series ids above this are refused: they index a table per stream.
pub const MAX_LOCAL_ID: u32 = 10_000_000;

impl StreamSeries {
    pub fn new(store: Arc<Store>) -> Self {
        StreamSeries {
            store,
            ids: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Converts a metric batch: new definitions are resolved (tags checked with Atlas's
    /// rules; `atlas.dstype` picks the normalization, rate by default) and pinned, then
    /// every sample is mapped to its series. `w` is a writer of this stream's store.
    pub fn convert(&mut self, w: &Writer<'_>, batch: &v1::MetricBatch) -> Converted {
        debug_assert!(std::ptr::eq(w.store(), &*self.store));
        let mut out = Converted::default();
        let mut unpin = Vec::new();
        for def in &batch.definitions {
            if def.id > MAX_LOCAL_ID {
                out.reject(Rejection::new(
                    RejectReason::InvalidTagValue,
                    format!("series id {} is over the limit of {MAX_LOCAL_ID}", def.id),
                ));
                continue;
            }
            let tags: TagMap = def
                .tags
                .iter()
                .map(|t| (t.key.clone(), t.value.clone()))
                .collect();
            let resolved = validate_tags(&tags).and_then(|()| {
                w.try_resolve(&tags, None)
                    .map_err(|e| Rejection::from_store(e, &tags))
            });
            if let Ok(id) = resolved {
                w.pin(&[id]);
            }
            let i = def.id as usize;
            if self.ids.len() <= i {
                self.ids.resize(i + 1, None);
            }
            // A local id defined again (the agent's series table was reset) lets go of
            // the series it named.
            if let Some(Ok(old)) = self.ids[i].replace(resolved) {
                unpin.push(old);
            }
        }
        self.store.unpin(&unpin);
        let n: usize = batch.groups.iter().map(|g| g.series.len()).sum();
        out.samples = std::mem::take(&mut self.spare);
        out.samples.clear();
        out.samples.reserve(n);
        for group in &batch.groups {
            if group.series.len() != group.values.len() {
                out.reject(Rejection::new(
                    RejectReason::InvalidValue,
                    format!(
                        "sample group at {} has {} series but {} values",
                        group.timestamp_ms,
                        group.series.len(),
                        group.values.len()
                    ),
                ));
                continue;
            }
            for (&local, &value) in group.series.iter().zip(&group.values) {
                match self.ids.get(local as usize) {
                    Some(Some(Ok(id))) => out.samples.push(Sample {
                        id: *id,
                        ts_ms: group.timestamp_ms,
                        value,
                    }),
                    Some(Some(Err(r))) => {
                        let r = r.clone();
                        out.reject(r);
                    }
                    _ => out.reject(Rejection::new(
                        RejectReason::InvalidTagValue,
                        format!("sample for series {local}, which this stream never defined"),
                    )),
                }
            }
        }
        out
    }
}

impl StreamSeries {
    /// Hands a stored batch's sample buffer back for the next batch.
    pub fn recycle(&mut self, samples: Vec<Sample>) {
        self.spare = samples;
    }
}

/// Events of an agent's event batch.
pub fn agent_events(batch: &v1::EventBatch) -> (Vec<Event>, Refusals) {
    let mut events = Vec::with_capacity(batch.events.len());
    let mut rejected = Refusals::default();
    for (i, e) in batch.events.iter().enumerate() {
        if e.json.len() > argus_proto::rules::MAX_EVENT_BYTES {
            rejected.add(Rejection::new(
                RejectReason::InvalidValue,
                format!("event {i}: {} bytes is over the limit", e.json.len()),
            ));
        } else {
            match serde_json::from_slice::<serde_json::Value>(&e.json) {
                Ok(value @ serde_json::Value::Object(_)) => events.push(Event {
                    ts_ms: e.timestamp_ms,
                    value,
                    bytes: e.json.len(),
                    subscriptions: e.subscriptions.clone(),
                }),
                _ => rejected.add(Rejection::new(
                    RejectReason::InvalidValue,
                    format!("event {i}: not a JSON object"),
                )),
            }
        }
    }
    (events, rejected)
}
