//! Live queries over raw events (Mantis's half of Argus). A subscription is an MQL query
//! with its running [`Engine`] and a bounded queue of result rows for its consumer (an SSE
//! or WebSocket client, or `argus live`).
//!
//! Events reach a subscription two ways. From an agent, already sampled and filtered there
//! (the event carries the ids of the subscriptions it matched, and only the fields they
//! need): the server trusts that evaluation and goes straight to windows and aggregates.
//! From the server's own intake (`POST /api/v1/events/{stream}`, OTLP logs): the server
//! samples and evaluates the same predicate core itself. Either way windows, grouping,
//! aggregation, having, order and limit run here, per subscription, over every source.
//!
//! A slow consumer never slows ingest: rows go into its queue with `try_send`; when the
//! queue is full the row is dropped and counted, and the consumer is told how many.
//!
//! In a cluster, a subscription made on another node is held here as a forwarding copy
//! (`cluster/live.rs`): agents on this node get it pushed down like any other, and what
//! passes its predicate here is handed to its [`Forward`] for the node that runs its
//! engine, instead of into an engine of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use argus_mql::predicate::Path;
use argus_mql::{self as mql, Engine, ParseError, Query, Sampler};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::event::Event;

/// Rows a subscription's queue holds for its consumer before rows are dropped.
pub const QUEUE_ROWS: usize = 1024;
/// Live subscriptions the server keeps at once.
pub const MAX_SUBSCRIPTIONS: usize = 1000;
/// In event-time mode, open windows close once no event has come for this long (there is
/// no later event to move the clock past them).
pub const IDLE_FLUSH_MS: i64 = 1000;
/// How often time windows are closed on the wall clock.
pub const TICK_MS: u64 = 100;

/// The language a live query is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    Mql,
    /// The Stack Language over events (`argus_query::events`).
    Asl,
}

impl Language {
    /// The language a query is written in when its client does not say: MQL queries start
    /// with `select`; anything else is read as the Stack Language.
    pub fn detect(text: &str) -> Language {
        let t = text.trim_start();
        let head = t.get(..6).unwrap_or("");
        let after = t[head.len()..].chars().next();
        if head.eq_ignore_ascii_case("select") && after.is_none_or(char::is_whitespace) {
            Language::Mql
        } else {
            Language::Asl
        }
    }

    /// `mql` or `asl`; anything else is `None`.
    pub fn named(name: &str) -> Option<Language> {
        match name.to_ascii_lowercase().as_str() {
            "mql" => Some(Language::Mql),
            "asl" | "atlas" => Some(Language::Asl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Language::Mql => "mql",
            Language::Asl => "asl",
        }
    }
}

/// What a live query runs: MQL's engine, or a Stack Language expression over events.
enum LiveEngine {
    Mql(Box<Engine>),
    Asl(Box<argus_query::events::EventEngine>),
}

impl LiveEngine {
    fn push_matched(&mut self, event: &Value, now_ms: i64) -> Vec<Value> {
        match self {
            // MQL's windows keep the event; the Stack Language keeps accumulators.
            LiveEngine::Mql(e) => e.push_matched(event.clone(), now_ms),
            LiveEngine::Asl(e) => e.push_matched(event, now_ms),
        }
    }

    fn tick(&mut self, now_ms: i64) -> Vec<Value> {
        match self {
            LiveEngine::Mql(e) => e.tick(now_ms),
            LiveEngine::Asl(e) => e.tick(now_ms),
        }
    }

    fn flush(&mut self, now_ms: i64) -> Vec<Value> {
        match self {
            LiveEngine::Mql(e) => e.flush(now_ms),
            LiveEngine::Asl(e) => e.flush(now_ms),
        }
    }

    fn done(&self) -> bool {
        match self {
            LiveEngine::Mql(e) => e.done(),
            LiveEngine::Asl(_) => false,
        }
    }

    /// (dropped at caps, late).
    fn dropped(&self) -> (u64, u64) {
        match self {
            LiveEngine::Mql(e) => (e.dropped, e.late),
            LiveEngine::Asl(e) => (e.dropped, e.late),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("invalid MQL query: {0}")]
    Parse(#[from] ParseError),
    #[error("invalid Stack Language expression over events: {0}")]
    Asl(String),
    #[error("invalid step: {0}")]
    Step(String),
    #[error("invalid time field {field:?}: {reason}")]
    TimeField { field: String, reason: String },
    #[error("too many live subscriptions: {MAX_SUBSCRIPTIONS} are running")]
    TooMany,
    #[error("too many live subscriptions from {peer}: {limit} are running (--live-max-per-client)")]
    TooManyForClient {
        peer: std::net::IpAddr,
        limit: usize,
    },
}

/// Where a forwarding copy sends each event that passed here: (stream, event, whether it
/// was sampled and filtered already).
pub type Forward = Box<dyn Fn(&str, &Value, bool) + Send + Sync>;

/// One live query.
pub struct Subscription {
    pub id: u64,
    /// The query as MQL's model holds it (for a Stack Language expression, its stream and
    /// typed predicate: what agents evaluate), with the text as written.
    pub query: Query,
    pub language: Language,
    /// The step of a stepped Stack Language expression (`:sample`, data expressions).
    pub step_ms: Option<i64>,
    /// What the consumer is told of the query beyond its text (kind, columns, step).
    pub shape: Value,
    /// Who asked (the client's user agent or `client` parameter), for the listing.
    pub client: String,
    /// The client's address, which the per-client limit counts by.
    pub peer: Option<std::net::IpAddr>,
    pub started_ms: i64,
    /// Windows follow this event field (ms) instead of the arrival time.
    pub time_field: Option<Path>,
    /// What an agent must send of a matching event; `None`: all of it.
    pub fields: Option<Vec<Path>>,
    engine: Mutex<LiveEngine>,
    /// Sampling for events the server evaluates itself (agents sample their own).
    sampler: Mutex<Sampler>,
    rows_tx: mpsc::Sender<Value>,
    /// Events that passed sampling and the predicate (here or at an agent).
    pub matched: AtomicU64,
    /// Rows put in the consumer's queue.
    pub rows: AtomicU64,
    /// Rows dropped because the consumer's queue was full.
    pub dropped: AtomicU64,
    last_event_ms: AtomicI64,
    /// Nothing more can come out (limit reached).
    pub ended: AtomicBool,
    /// For a copy of another node's subscription: where its events go, and its origin
    /// (`node/id`).
    forward: Option<(Forward, String)>,
}

impl Subscription {
    pub fn reads(&self, stream: &str) -> bool {
        self.query.reads(stream)
    }

    /// Events dropped inside the engine: windows or group tables at their caps, or arriving
    /// after their window closed.
    pub fn engine_dropped(&self) -> (u64, u64) {
        self.engine.lock().dropped()
    }

    fn event_time(&self, event: &Value, arrival_ms: i64) -> i64 {
        match &self.time_field {
            Some(path) => path
                .get(event)
                .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
                .unwrap_or(arrival_ms),
            None => arrival_ms,
        }
    }

    /// An event of `stream` for this subscription; `evaluated` when an agent already
    /// sampled and filtered it. A query that joins streams samples and filters here, after
    /// the join (agents send such a query every event of its streams).
    fn offer(&self, stream: &str, event: &Value, evaluated: bool, now_ms: i64) {
        if self.ended.load(Ordering::Relaxed) {
            return;
        }
        if let Some((forward, _)) = &self.forward {
            // The origin runs the engine (and a join's predicate, after the join).
            if !self.query.filters_at_source() {
                forward(stream, event, false);
            } else if evaluated
                || (self.sampler.lock().pass(event, now_ms) && self.query.filter.matches(event))
            {
                self.matched.fetch_add(1, Ordering::Relaxed);
                forward(stream, event, true);
            }
            return;
        }
        if !self.query.filters_at_source() {
            self.last_event_ms.store(now_ms, Ordering::Relaxed);
            let t = self.event_time(event, now_ms);
            let rows = {
                let mut guard = self.engine.lock();
                let LiveEngine::Mql(engine) = &mut *guard else {
                    return;
                };
                let before = engine.passed;
                let rows = engine.push_from(stream, event, t);
                self.matched
                    .fetch_add(engine.passed - before, Ordering::Relaxed);
                if engine.done() {
                    self.ended.store(true, Ordering::Relaxed);
                }
                rows
            };
            self.emit(rows);
            return;
        }
        let passes = evaluated
            || (self.sampler.lock().pass(event, now_ms) && self.query.filter.matches(event));
        if !passes {
            return;
        }
        self.matched.fetch_add(1, Ordering::Relaxed);
        self.last_event_ms.store(now_ms, Ordering::Relaxed);
        let t = self.event_time(event, now_ms);
        let rows = {
            let mut engine = self.engine.lock();
            let rows = engine.push_matched(event, t);
            if engine.done() {
                self.ended.store(true, Ordering::Relaxed);
            }
            rows
        };
        self.emit(rows);
    }

    /// Time passes: windows that ended close.
    fn tick(&self, now_ms: i64) {
        if self.ended.load(Ordering::Relaxed) || self.forward.is_some() {
            return;
        }
        let rows = {
            let mut engine = self.engine.lock();
            if self.time_field.is_some() {
                let idle = now_ms - self.last_event_ms.load(Ordering::Relaxed);
                if idle < IDLE_FLUSH_MS {
                    return;
                }
                engine.flush(now_ms)
            } else {
                engine.tick(now_ms)
            }
        };
        self.emit(rows);
    }

    fn emit(&self, rows: Vec<Value>) {
        for row in rows {
            match self.rows_tx.try_send(row) {
                Ok(()) => {
                    self.rows.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// The subscription as `GET /api/v1/live/subscriptions` lists it.
    pub fn to_json(&self) -> Value {
        let (window_dropped, late) = self.engine_dropped();
        json!({
            "id": self.id,
            "query": self.query.text,
            "language": self.language.name(),
            "streams": self.query.streams(),
            "client": self.client,
            "started": self.started_ms,
            "matched": self.matched.load(Ordering::Relaxed),
            "rows": self.rows.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
            "droppedInWindows": window_dropped,
            "late": late,
            "ended": self.ended.load(Ordering::Relaxed),
            "forwardedTo": self.forward.as_ref().map(|(_, origin)| origin),
        })
    }

    /// Whether this is a copy of another node's subscription.
    pub fn is_forwarding(&self) -> bool {
        self.forward.is_some()
    }
}

/// Every live subscription. Readers take a snapshot (an `Arc` of the map), so delivering
/// events never waits on a subscribe or a cancel.
pub struct LiveHub {
    subs: RwLock<Arc<BTreeMap<u64, Arc<Subscription>>>>,
    /// Subscriptions one client address may hold at once.
    max_per_client: usize,
    next_id: AtomicU64,
    /// Bumped on every change; agents' control streams watch it.
    version: watch::Sender<u64>,
    /// The server's one clock (the store's): subscriptions start, windows close and events
    /// arrive on it.
    clock: argus_tsdb::Clock,
}

impl LiveHub {
    /// A hub on `clock` that lets one client address hold at most `max_per_client`
    /// subscriptions.
    pub fn new(clock: argus_tsdb::Clock, max_per_client: usize) -> Self {
        LiveHub {
            max_per_client: max_per_client.max(1),
            clock,
            ..LiveHub::default()
        }
    }

    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }
}

impl Default for LiveHub {
    fn default() -> Self {
        LiveHub {
            subs: RwLock::new(Arc::new(BTreeMap::new())),
            max_per_client: usize::MAX,
            next_id: AtomicU64::new(1),
            version: watch::channel(0).0,
            clock: argus_tsdb::system_clock(),
        }
    }
}

/// A consumer's hold on its subscription: rows come out of `rows`; dropping the handle
/// cancels the subscription.
pub struct LiveHandle {
    hub: Arc<LiveHub>,
    pub sub: Arc<Subscription>,
    pub rows: mpsc::Receiver<Value>,
}

impl Drop for LiveHandle {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.sub.id);
    }
}

impl LiveHub {
    pub fn snapshot(&self) -> Arc<BTreeMap<u64, Arc<Subscription>>> {
        self.subs.read().clone()
    }

    /// A receiver that changes whenever a subscription starts or ends.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Parses and starts a query. A query that cannot run is refused here, with the parse
    /// error; it never reaches an agent.
    pub fn subscribe(
        self: &Arc<Self>,
        text: &str,
        time_field: Option<&str>,
        client: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<LiveHandle, SubscribeError> {
        self.start(&LiveSpec::mql(text, time_field), client, peer, None)
    }

    /// Starts a query in either language.
    pub fn subscribe_spec(
        self: &Arc<Self>,
        spec: &LiveSpec,
        client: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<LiveHandle, SubscribeError> {
        self.start(spec, client, peer, None)
    }

    /// Holds a copy of subscription `origin` (`node/id`) of another node: pushed down to
    /// this node's agents, what passes here going to `forward`.
    pub fn subscribe_forwarding(
        self: &Arc<Self>,
        spec: &LiveSpec,
        origin: String,
        forward: Forward,
    ) -> Result<LiveHandle, SubscribeError> {
        let client = format!("cluster node {origin}");
        self.start(spec, &client, None, Some((forward, origin)))
    }

    /// Events forwarded by another node for subscription `id` of this one: each offered as
    /// if it had arrived here.
    pub fn offer_forwarded(&self, id: u64, stream: &str, events: &[Value], evaluated: bool) {
        let subs = self.snapshot();
        let Some(sub) = subs
            .get(&id)
            .filter(|s| s.reads(stream) && !s.is_forwarding())
        else {
            return;
        };
        let now = self.now_ms();
        for event in events {
            sub.offer(stream, event, evaluated, now);
        }
    }

    fn start(
        self: &Arc<Self>,
        spec: &LiveSpec,
        client: &str,
        peer: Option<std::net::IpAddr>,
        forward: Option<(Forward, String)>,
    ) -> Result<LiveHandle, SubscribeError> {
        let time_field = match spec.time_field.as_deref().filter(|f| !f.is_empty()) {
            None => None,
            Some(f) => Some(parse_field(f)?),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let (query, fields, engine, step_ms, shape) = match spec.language {
            Language::Mql => {
                let query = mql::parse(&spec.text)?;
                let fields = query.needed_paths();
                let mut engine = Engine::new(query.clone(), id ^ now as u64);
                if time_field.is_none() {
                    engine.start_at(now);
                }
                let shape = json!({"language": "mql"});
                (
                    query,
                    fields,
                    LiveEngine::Mql(Box::new(engine)),
                    None,
                    shape,
                )
            }
            Language::Asl => {
                let expr = argus_query::events::parse(&spec.text)
                    .map_err(|e| SubscribeError::Asl(e.to_string()))?;
                let step_ms =
                    argus_query::events::check_step(spec.step_ms).map_err(SubscribeError::Step)?;
                let shape = expr.describe(step_ms);
                let stepped = expr.is_stepped().then_some(step_ms);
                let query = expr.to_mql();
                let fields = expr.fields();
                let mut engine = argus_query::events::EventEngine::new(expr, step_ms);
                if time_field.is_none() {
                    engine.start_at(now);
                }
                (
                    query,
                    fields,
                    LiveEngine::Asl(Box::new(engine)),
                    stepped,
                    shape,
                )
            }
        };
        let fields = fields.map(|mut paths| {
            if let Some(t) = &time_field {
                paths.push(t.clone());
                paths.sort();
                paths.dedup();
            }
            paths
        });
        let (rows_tx, rows) = mpsc::channel(QUEUE_ROWS);
        let sub = Arc::new(Subscription {
            id,
            sampler: Mutex::new(Sampler::new(
                query.sample.clone(),
                id.rotate_left(17) ^ now as u64,
            )),
            query,
            language: spec.language,
            step_ms,
            shape,
            client: client.chars().take(200).collect(),
            peer,
            started_ms: now,
            time_field,
            fields,
            engine: Mutex::new(engine),
            rows_tx,
            matched: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_event_ms: AtomicI64::new(now),
            ended: AtomicBool::new(false),
            forward,
        });
        {
            let mut subs = self.subs.write();
            if subs.len() >= MAX_SUBSCRIPTIONS {
                return Err(SubscribeError::TooMany);
            }
            if let Some(peer) = peer
                && subs.values().filter(|s| s.peer == Some(peer)).count() >= self.max_per_client
            {
                return Err(SubscribeError::TooManyForClient {
                    peer,
                    limit: self.max_per_client,
                });
            }
            let mut next = (**subs).clone();
            next.insert(id, sub.clone());
            *subs = Arc::new(next);
        }
        self.version.send_modify(|v| *v += 1);
        tracing::info!(id, query = %sub.query.text, "live query started");
        Ok(LiveHandle {
            hub: self.clone(),
            sub,
            rows,
        })
    }

    pub fn unsubscribe(&self, id: u64) {
        let removed = {
            let mut subs = self.subs.write();
            let mut next = (**subs).clone();
            let removed = next.remove(&id);
            *subs = Arc::new(next);
            removed
        };
        if let Some(sub) = removed {
            self.version.send_modify(|v| *v += 1);
            tracing::info!(
                id,
                matched = sub.matched.load(Ordering::Relaxed),
                dropped = sub.dropped.load(Ordering::Relaxed),
                "live query ended"
            );
        }
    }

    /// Events of `stream` arrived at `now_ms`.
    pub fn deliver(&self, stream: &str, events: &[Event], now_ms: i64) {
        let subs = self.snapshot();
        if subs.is_empty() || !subs.values().any(|s| s.reads(stream)) {
            return;
        }
        for event in events {
            if event.subscriptions.is_empty() {
                for sub in subs.values().filter(|s| s.reads(stream)) {
                    sub.offer(stream, &event.value, false, now_ms);
                }
            } else {
                for id in &event.subscriptions {
                    if let Some(sub) = subs.get(id).filter(|s| s.reads(stream)) {
                        sub.offer(stream, &event.value, true, now_ms);
                    }
                }
            }
        }
    }

    /// Closes the windows that ended, on every subscription.
    pub fn tick(&self, now_ms: i64) {
        for sub in self.snapshot().values() {
            sub.tick(now_ms);
        }
    }

    /// Runs [`LiveHub::tick`] every [`TICK_MS`] until the process ends.
    pub async fn run_ticker(self: Arc<Self>) {
        let mut every = tokio::time::interval(std::time::Duration::from_millis(TICK_MS));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let hub = self.clone();
            // Window closes can aggregate many events: off the async threads.
            let _ = tokio::task::spawn_blocking(move || hub.tick(hub.now_ms())).await;
        }
    }

    pub fn list(&self) -> Value {
        Value::Array(self.snapshot().values().map(|s| s.to_json()).collect())
    }
}

/// A live query as a client asks for it.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveSpec {
    pub text: String,
    pub language: Language,
    /// The step of a stepped Stack Language expression (ignored otherwise).
    pub step_ms: i64,
    /// Windows (steps) follow this event field instead of the arrival time.
    pub time_field: Option<String>,
}

impl LiveSpec {
    pub fn mql(text: &str, time_field: Option<&str>) -> LiveSpec {
        LiveSpec {
            text: text.to_string(),
            language: Language::Mql,
            step_ms: 0,
            time_field: time_field.map(str::to_string),
        }
    }
}

/// A field path as users write it: `ts`, `e['a']['b']`.
pub fn parse_field(text: &str) -> Result<Path, SubscribeError> {
    mql::parse_path(text).map_err(|e| SubscribeError::TimeField {
        field: text.to_string(),
        reason: e.to_string(),
    })
}
