//! Live queries across the cluster. A node announces its own subscriptions in a key-value
//! bucket (`<node>.<id>` → the query), renewed while they run and expiring when the node
//! dies; every other node holds a forwarding copy of each, so the agents connected to it
//! get the predicate pushed down, and what matches there travels on a core NATS subject
//! (`argus.live.<node>.<id>`) to the node that runs the query's engine. Core NATS is
//! at-most-once, as Mantis's live streams are: an event lost in transit is not resent, and
//! a slow node drops (and counts) rather than slowing anyone's ingest.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::live::{Language, LiveHandle, LiveHub, LiveSpec};

/// The bucket of running subscriptions.
pub const LIVE_BUCKET: &str = "argus_live";
/// An announcement not renewed for this long is gone (its node died).
pub const ANNOUNCEMENT_TTL: Duration = Duration::from_secs(30);
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often the copies are checked against the bucket (announcements that expired).
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// Events a copy queues for sending before it drops them.
const FORWARD_QUEUE: usize = 8192;
/// Events per message on the subject, and the bytes a message is cut at.
const BATCH_EVENTS: usize = 512;
const BATCH_BYTES: usize = 256 * 1024;

fn subject_prefix(node: &str) -> String {
    format!("argus.live.{node}.")
}

/// A subscription as the bucket holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Announcement {
    query: String,
    time_field: Option<String>,
    /// `asl` for a Stack Language expression over events; absent (as nodes before it
    /// wrote) for MQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    language: Option<String>,
    /// The step of a stepped Stack Language expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step_ms: Option<i64>,
}

impl Announcement {
    fn spec(&self) -> Option<LiveSpec> {
        let language = match self.language.as_deref() {
            None => Language::Mql,
            Some(name) => Language::named(name)?,
        };
        Some(LiveSpec {
            text: self.query.clone(),
            language,
            step_ms: self.step_ms.unwrap_or(argus_query::events::MIN_STEP_MS),
            time_field: self.time_field.clone(),
        })
    }
}

/// Events for one subscription, as they travel between nodes.
#[derive(Serialize, Deserialize)]
struct Forwarded {
    stream: String,
    /// Sampled and filtered already (the origin goes straight to its engine).
    evaluated: bool,
    events: Vec<Value>,
}

/// Counters of the bridge, for `/metrics`.
#[derive(Debug, Default)]
pub struct LiveBridgeStats {
    /// Events sent to other nodes' subscriptions, and dropped because the queue to them
    /// was full.
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    /// Events received for this node's subscriptions.
    pub received: AtomicU64,
}

/// Starts the bridge's tasks: announcing this node's subscriptions, holding copies of the
/// others', and taking events forwarded to this node.
pub async fn start(
    node: String,
    hub: Arc<LiveHub>,
    client: async_nats::Client,
    bucket: kv::Store,
    stats: Arc<LiveBridgeStats>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let inbox = client
        .subscribe(format!("{}>", subject_prefix(&node)))
        .await
        .context("subscribing to this node's live subject")?;
    tokio::spawn(receive(inbox, hub.clone(), stats.clone()));
    tokio::spawn(announce(node.clone(), hub.clone(), bucket.clone()));
    tokio::spawn(hold_copies(node, hub, client, bucket, stats));
    Ok(())
}

/// Keeps the bucket's entries of this node equal to its own running subscriptions.
async fn announce(node: String, hub: Arc<LiveHub>, bucket: kv::Store) {
    let mut changes = hub.watch();
    let mut announced: HashMap<String, Announcement> = HashMap::new();
    let mut renewed = tokio::time::Instant::now();
    loop {
        let mine: HashMap<String, Announcement> = hub
            .snapshot()
            .values()
            .filter(|s| !s.is_forwarding() && !s.ended.load(Ordering::Relaxed))
            .map(|s| {
                (
                    format!("{node}.{}", s.id),
                    Announcement {
                        query: s.query.text.clone(),
                        time_field: s.time_field.as_ref().map(|p| p.to_string()),
                        language: (s.language != Language::Mql)
                            .then(|| s.language.name().to_string()),
                        step_ms: s.step_ms,
                    },
                )
            })
            .collect();
        let renew = renewed.elapsed() >= RENEW_EVERY;
        for (key, a) in &mine {
            if renew || announced.get(key) != Some(a) {
                let bytes = serde_json::to_vec(a).expect("a plain struct encodes");
                if let Err(e) = bucket.put(key, bytes.into()).await {
                    tracing::warn!(key, error = %e, "announcing a live query failed");
                    announced.remove(key);
                    continue;
                }
                announced.insert(key.clone(), a.clone());
            }
        }
        let gone: Vec<String> = announced
            .keys()
            .filter(|k| !mine.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if bucket.delete(&key).await.is_ok() {
                announced.remove(&key);
            }
        }
        if renew {
            renewed = tokio::time::Instant::now();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
    }
}

/// Holds a forwarding copy of every other node's announced subscription.
async fn hold_copies(
    node: String,
    hub: Arc<LiveHub>,
    client: async_nats::Client,
    bucket: kv::Store,
    stats: Arc<LiveBridgeStats>,
) {
    let own = format!("{node}.");
    let mut copies: HashMap<String, (Announcement, LiveHandle)> = HashMap::new();
    loop {
        let mut watch = match bucket.watch_with_history(">").await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "watching the live queries failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
        loop {
            tokio::select! {
                entry = watch.next() => {
                    let Some(Ok(entry)) = entry else { break };
                    if entry.key.starts_with(&own) {
                        continue;
                    }
                    match entry.operation {
                        kv::Operation::Put => {
                            let Ok(a) = serde_json::from_slice::<Announcement>(&entry.value) else {
                                continue;
                            };
                            if copies.get(&entry.key).is_some_and(|(held, _)| *held == a) {
                                continue;
                            }
                            if let Some(handle) = copy(&hub, &client, &entry.key, &a, &stats) {
                                copies.insert(entry.key.clone(), (a, handle));
                            }
                        }
                        kv::Operation::Delete | kv::Operation::Purge => {
                            copies.remove(&entry.key);
                        }
                    }
                }
                _ = reconcile.tick() => {
                    // Announcements that expired (their node died) leave no delete behind.
                    if let Ok(keys) = bucket.keys().await {
                        let live: HashSet<String> = keys.filter_map(|k| k.ok()).collect().await;
                        copies.retain(|key, _| live.contains(key));
                    }
                }
            }
        }
    }
}

/// A forwarding copy of the announced subscription `key` (`node.id`), or `None` when this
/// node cannot run it (logged).
fn copy(
    hub: &Arc<LiveHub>,
    client: &async_nats::Client,
    key: &str,
    a: &Announcement,
    stats: &Arc<LiveBridgeStats>,
) -> Option<LiveHandle> {
    let (origin_node, origin_id) = key.rsplit_once('.')?;
    let subject = format!("{}{origin_id}", subject_prefix(origin_node));
    let (tx, rx) = mpsc::channel::<(String, Value, bool)>(FORWARD_QUEUE);
    let counters = stats.clone();
    let forward: crate::live::Forward = Box::new(move |stream, event, evaluated| {
        if tx
            .try_send((stream.to_string(), event.clone(), evaluated))
            .is_err()
        {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    });
    let Some(spec) = a.spec() else {
        tracing::warn!(key, language = ?a.language, "another node's live query is in a language this node does not know");
        return None;
    };
    match hub.subscribe_forwarding(&spec, format!("{origin_node}/{origin_id}"), forward) {
        Ok(handle) => {
            tokio::spawn(send(client.clone(), subject, rx, stats.clone()));
            Some(handle)
        }
        Err(e) => {
            tracing::warn!(key, error = %e, "cannot hold another node's live query");
            None
        }
    }
}

/// Sends what a copy queued, in batches, until the copy is dropped.
async fn send(
    client: async_nats::Client,
    subject: String,
    mut rx: mpsc::Receiver<(String, Value, bool)>,
    stats: Arc<LiveBridgeStats>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH_EVENTS {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // One message per run of events of the same stream and evaluation, cut by size.
        let mut start = 0;
        while start < batch.len() {
            let (stream, evaluated) = (batch[start].0.clone(), batch[start].2);
            let mut events = Vec::new();
            let mut bytes = 0;
            while start < batch.len()
                && batch[start].0 == stream
                && batch[start].2 == evaluated
                && bytes < BATCH_BYTES
            {
                let event = std::mem::take(&mut batch[start].1);
                bytes += event.to_string().len();
                events.push(event);
                start += 1;
            }
            let n = events.len() as u64;
            let message = Forwarded {
                stream,
                evaluated,
                events,
            };
            let payload = Bytes::from(serde_json::to_vec(&message).unwrap_or_default());
            match client.publish(subject.clone(), payload).await {
                Ok(()) => stats.forwarded.fetch_add(n, Ordering::Relaxed),
                Err(_) => stats.dropped.fetch_add(n, Ordering::Relaxed),
            };
        }
    }
}

/// Takes the events other nodes forward to this node's subscriptions.
async fn receive(
    mut inbox: async_nats::Subscriber,
    hub: Arc<LiveHub>,
    stats: Arc<LiveBridgeStats>,
) {
    while let Some(message) = inbox.next().await {
        let Some(id) = message
            .subject
            .rsplit('.')
            .next()
            .and_then(|id| id.parse::<u64>().ok())
        else {
            continue;
        };
        let Ok(forwarded) = serde_json::from_slice::<Forwarded>(&message.payload) else {
            tracing::warn!(subject = %message.subject, "a forwarded live message is not Argus's");
            continue;
        };
        stats
            .received
            .fetch_add(forwarded.events.len() as u64, Ordering::Relaxed);
        let hub = hub.clone();
        // Windows and aggregates are CPU work: off the async threads.
        let _ = tokio::task::spawn_blocking(move || {
            hub.offer_forwarded(
                id,
                &forwarded.stream,
                &forwarded.events,
                forwarded.evaluated,
            )
        })
        .await;
    }
}
