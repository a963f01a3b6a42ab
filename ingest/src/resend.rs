//! Resend detection: which batches of each agent are already stored, so that a batch an
//! agent sends again (its ack was lost, or it reconnected) is recognised and stored once,
//! and the format in which that knowledge survives a restart (in the log's batch origins and
//! in snapshots).
//!
//! With it, each agent's loss book: what the server applied and refused of its batches, by
//! stream, next to the agent's own account of what it made, dropped and still holds (sent
//! with every batch). A metric batch's counts travel in its origin, so the book survives a
//! crash exactly as the samples do. See [`AgentRegistry::loss`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::bytes::Buf;
use prost::encoding::{decode_varint, encode_varint};

use crate::validation::RejectReason;

/// Sequence numbers of one agent already stored: all up to `floor`, and those above it in
/// `above`. Bounded: the window keeps the newest `MAX_ABOVE`.
#[derive(Default)]
struct SeenSeqs {
    floor: u64,
    above: BTreeSet<u64>,
    /// Being stored right now (by a stream that may have lost its connection meanwhile).
    pending: HashSet<u64>,
    last_used: Option<Instant>,
    book: Book,
}

/// One agent's batches of one kind as the server took them, and the agent's latest account.
#[derive(Default)]
struct Book {
    /// By stream: items applied and refused here.
    streams: BTreeMap<String, Applied>,
    /// The latest applied batches (seq → stream, items stored, items refused), so the
    /// report can tell which of the batches the agent still counts as waiting the server
    /// already has.
    recent: BTreeMap<u64, (String, u64, u64)>,
    report: Option<argus_proto::v1::Accounting>,
    /// Whether the server has seen this agent's batches of this kind from the first: event
    /// books start empty after a restart (events are live, not logged), and are then only
    /// counted, not compared.
    from_first: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Applied {
    batches: u64,
    items: u64,
    /// By reason label: items refused.
    refused: BTreeMap<&'static str, u64>,
}

/// Batches a book remembers item counts of; older ones are settled at the agent long since.
const RECENT: usize = 10_000;
/// The most holes, batches dropped after sending and streams an account is read with.
const MAX_LISTED: usize = 65_536;

impl Book {
    fn applied(&mut self, seq: u64, stream: &str, stored: u64, refused: &[(RejectReason, u64)]) {
        if seq == 1 {
            self.from_first = true;
        }
        let a = self.streams.entry(stream.to_string()).or_default();
        a.batches += 1;
        a.items += stored;
        let mut refused_items = 0;
        for (reason, n) in refused {
            *a.refused.entry(reason.label()).or_default() += n;
            refused_items += n;
        }
        if self.report.as_ref().is_none_or(|r| seq >= r.pending_from) {
            self.recent
                .insert(seq, (stream.to_string(), stored, refused_items));
        }
        while self.recent.len() > RECENT {
            self.recent.pop_first();
        }
    }

    /// Keeps the newest account (by the batches it covers, then by how far they settled).
    fn report(&mut self, report: argus_proto::v1::Accounting) {
        let newer = self
            .report
            .as_ref()
            .is_none_or(|r| (report.next_seq, report.pending_from) >= (r.next_seq, r.pending_from));
        if newer {
            // Batches below the account's oldest waiting one are settled at the agent: the
            // report no longer needs their counts (this keeps `recent` to the batches in
            // flight, a few per agent).
            self.recent = self.recent.split_off(&report.pending_from);
            self.report = Some(report);
        }
    }
}

const MAX_ABOVE: usize = 100_000;
/// Agents unheard of for this long are forgotten.
const AGENT_IDLE: Duration = Duration::from_secs(6 * 3600);

impl SeenSeqs {
    fn contains(&self, seq: u64) -> bool {
        seq <= self.floor && self.floor > 0 || self.above.contains(&seq)
    }

    /// Marks every sequence number up to `floor` as seen.
    fn raise_floor(&mut self, floor: u64) {
        if floor > self.floor {
            self.floor = floor;
            self.above.retain(|&x| x > floor);
            while self.above.first() == Some(&(self.floor + 1)) {
                self.floor += 1;
                self.above.pop_first();
            }
        }
    }

    fn insert(&mut self, seq: u64) {
        if seq <= self.floor && self.floor > 0 {
            return;
        }
        self.above.insert(seq);
        // Advance the floor over the contiguous run.
        while self.above.first() == Some(&(self.floor + 1)) {
            self.floor += 1;
            self.above.pop_first();
        }
        while self.above.len() > MAX_ABOVE {
            if let Some(first) = self.above.pop_first() {
                self.floor = self.floor.max(first);
            }
        }
    }
}

/// One stream of one agent in the loss report: what the agent made and dropped, what the
/// server applied and refused, what is still on its way, and what nothing explains.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct StreamLoss {
    pub agent: String,
    pub kind: &'static str,
    pub stream: String,
    /// Items the agent put in batches, and by input.
    pub sent: u64,
    pub inputs: BTreeMap<String, u64>,
    pub applied: u64,
    /// Dropped, by `agent:<reason>` and `server:<reason>`.
    pub dropped: BTreeMap<String, u64>,
    /// In batches the agent holds and the server has not applied yet.
    pub pending: u64,
    /// Items the agent counts as dropped (after sending them) that the server applied all
    /// the same: their acknowledgement was lost. Counted as applied, not dropped.
    pub dropped_but_applied: u64,
    /// In a cluster: taken into the log (JetStream acknowledged them) but not applied yet
    /// by the store nodes that answered (one catching up). Always 0 on a single node.
    pub unapplied: u64,
    /// sent − applied − dropped − pending − unapplied: 0 when every item is accounted for.
    /// `None` when
    /// the server has not seen this agent's batches from the first (event streams after a
    /// restart).
    pub unexplained: Option<i64>,
}

/// One agent and kind of batch in the loss report: its streams and its batch numbers.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct AgentLoss {
    pub agent: String,
    pub kind: &'static str,
    pub streams: Vec<StreamLoss>,
    /// Batches the agent counts as settled that the server never applied and the agent
    /// never dropped. `None` as for `unexplained`.
    pub gaps: Option<u64>,
    /// Nothing waiting: the numbers are final until the agent makes more.
    pub settled: bool,
}

/// What the server remembers of agents, so a resent batch is recognised.
#[derive(Default)]
pub struct AgentRegistry {
    metrics: Mutex<HashMap<String, SeenSeqs>>,
    events: Mutex<HashMap<String, SeenSeqs>>,
    /// Held (shared) from claiming a metrics batch until its claim is finished, and
    /// (exclusive) while a snapshot begins and [`AgentRegistry::encode_stored`] runs: so
    /// every batch the log holds before the snapshot's first segment is in what the
    /// snapshot keeps, and every later one is in the log after it.
    pub snapshot_gate: parking_lot::RwLock<()>,
}

/// Tags an origin in the log as an agent's metrics batch.
const ORIGIN_AGENT_METRICS: u8 = b'm';
/// The same with the batch's counts: `[M][seq u64][varint stored][varint n]
/// ([varint reason][varint items])*n[agent]`.
const ORIGIN_AGENT_METRICS_COUNTED: u8 = b'M';
/// Marks the loss books after the seen batches in a snapshot's agent section.
const BOOKS_SECTION: u8 = b'B';

impl AgentRegistry {
    /// The origin logged with an agent's metrics batch: what recovery needs to recognise
    /// its resend after a restart.
    pub fn origin(agent: &str, seq: u64) -> Vec<u8> {
        let mut o = Vec::with_capacity(agent.len() + 9);
        o.push(ORIGIN_AGENT_METRICS);
        o.extend_from_slice(&seq.to_le_bytes());
        o.extend_from_slice(agent.as_bytes());
        o
    }

    /// The origin of a metrics batch with what will become of its items: `stored` of them
    /// stored and `refused` refused by reason (everything the store would refuse already
    /// refused), so that recovery rebuilds the loss book with the samples.
    pub fn origin_counted(
        agent: &str,
        seq: u64,
        stored: u64,
        refused: &[(RejectReason, u64)],
    ) -> Vec<u8> {
        let mut o = Vec::with_capacity(agent.len() + 24);
        o.push(ORIGIN_AGENT_METRICS_COUNTED);
        o.extend_from_slice(&seq.to_le_bytes());
        encode_varint(stored, &mut o);
        encode_varint(refused.len() as u64, &mut o);
        for (reason, n) in refused {
            encode_varint(reason.index() as u64, &mut o);
            encode_varint(*n, &mut o);
        }
        o.extend_from_slice(agent.as_bytes());
        o
    }

    /// Remembers a batch found in the log at recovery as stored, and books its counts.
    pub fn restore_origin(&self, origin: &[u8]) {
        let Some((agent, seq, counts)) = parse_origin(origin) else {
            return;
        };
        let mut m = self.metrics.lock();
        let s = m.entry(agent.to_string()).or_default();
        s.last_used = Some(Instant::now());
        if let Some((stored, refused)) = counts
            && !s.contains(seq)
        {
            s.book.applied(seq, "metrics", stored, &refused);
        }
        s.insert(seq);
    }

    /// The agent an origin names, if it is an agent's batch.
    pub fn origin_agent(origin: &[u8]) -> Option<&str> {
        parse_origin(origin).map(|(agent, _, _)| agent)
    }

    /// Books a metrics batch the server took: `stored` items stored, `refused` refused.
    pub fn book_metrics(
        &self,
        agent: &str,
        seq: u64,
        stored: u64,
        refused: &[(RejectReason, u64)],
    ) {
        if let Some(s) = self.metrics.lock().get_mut(agent) {
            s.book.applied(seq, "metrics", stored, refused);
        }
    }

    /// Books an event batch of `stream` the server took.
    pub fn book_events(
        &self,
        agent: &str,
        seq: u64,
        stream: &str,
        stored: u64,
        refused: &[(RejectReason, u64)],
    ) {
        if let Some(s) = self.events.lock().get_mut(agent) {
            s.book.applied(seq, stream, stored, refused);
        }
    }

    /// Keeps the agent's latest account of its batches of one kind (`events` or not).
    pub fn note_report(&self, agent: &str, events: bool, mut report: argus_proto::v1::Accounting) {
        // An agent lists a few thousand at most: an account past these bounds is not one
        // an agent made, and must not make every report slow.
        report.holes.truncate(MAX_LISTED);
        report.dropped_after_send.truncate(MAX_LISTED);
        report.streams.truncate(MAX_LISTED);
        let map = if events { &self.events } else { &self.metrics };
        let mut m = map.lock();
        let s = m.entry(agent.to_string()).or_default();
        s.last_used = Some(Instant::now());
        s.book.report(report);
    }

    /// Every agent's latest account of its metrics batches.
    pub fn metric_reports(&self) -> Vec<(String, argus_proto::v1::Accounting)> {
        let m = self.metrics.lock();
        m.iter()
            .filter_map(|(agent, s)| Some((agent.clone(), s.book.report.clone()?)))
            .collect()
    }

    /// Items of an agent's metrics batches this registry booked as stored, in all.
    pub fn stored_items(&self, agent: &str) -> u64 {
        self.metrics
            .lock()
            .get(agent)
            .map_or(0, |s| s.book.streams.values().map(|a| a.items).sum())
    }

    /// The loss report: for each agent and kind with an account, every stream's items
    /// from the agent's side and the server's, and the batch numbers nobody accounts for.
    pub fn loss(&self) -> Vec<AgentLoss> {
        let mut out = Vec::new();
        for (kind, map) in [("metrics", &self.metrics), ("events", &self.events)] {
            let m = map.lock();
            let mut agents: Vec<&String> = m.keys().collect();
            agents.sort();
            for agent in agents {
                let s = &m[agent];
                if let Some(loss) = s.loss(agent, kind) {
                    out.push(loss);
                }
            }
        }
        out
    }

    /// The stored metrics batches of every agent, for a snapshot:
    /// `[varint agents]` then per agent `[varint len][id][varint floor][varint n][varint seq]*`;
    /// then `B` and the loss books: `[varint agents]` per agent `[varint len][id][flags]
    /// [varint streams]([varint len][stream][varint batches][varint items][varint n]
    /// ([varint reason][varint items])*)*[varint recent]([varint seq][varint len][stream]
    /// [varint stored][varint refused])*`.
    pub fn encode_stored(&self) -> Vec<u8> {
        let m = self.metrics.lock();
        let mut out = Vec::new();
        encode_varint(m.len() as u64, &mut out);
        for (agent, s) in m.iter() {
            encode_varint(agent.len() as u64, &mut out);
            out.extend_from_slice(agent.as_bytes());
            encode_varint(s.floor, &mut out);
            encode_varint(s.above.len() as u64, &mut out);
            for &seq in &s.above {
                encode_varint(seq, &mut out);
            }
        }
        out.push(BOOKS_SECTION);
        encode_varint(m.len() as u64, &mut out);
        for (agent, s) in m.iter() {
            let put_str = |out: &mut Vec<u8>, text: &str| {
                encode_varint(text.len() as u64, out);
                out.extend_from_slice(text.as_bytes());
            };
            put_str(&mut out, agent);
            out.push(u8::from(s.book.from_first));
            encode_varint(s.book.streams.len() as u64, &mut out);
            for (stream, a) in &s.book.streams {
                put_str(&mut out, stream);
                encode_varint(a.batches, &mut out);
                encode_varint(a.items, &mut out);
                encode_varint(a.refused.len() as u64, &mut out);
                for (label, n) in &a.refused {
                    let index = RejectReason::ALL
                        .iter()
                        .position(|r| r.label() == *label)
                        .unwrap_or(0);
                    encode_varint(index as u64, &mut out);
                    encode_varint(*n, &mut out);
                }
            }
            encode_varint(s.book.recent.len() as u64, &mut out);
            for (seq, (stream, stored, refused)) in &s.book.recent {
                encode_varint(*seq, &mut out);
                put_str(&mut out, stream);
                encode_varint(*stored, &mut out);
                encode_varint(*refused, &mut out);
            }
        }
        out
    }

    /// Adds what [`AgentRegistry::encode_stored`] wrote (from a snapshot) to what is known.
    /// Damaged bytes end the reading; what was read stays.
    pub fn restore_stored(&self, mut bytes: &[u8]) {
        let mut m = self.metrics.lock();
        let Ok(agents) = decode_varint(&mut bytes) else {
            return;
        };
        for _ in 0..agents {
            let Ok(len) = decode_varint(&mut bytes) else {
                return;
            };
            let Some(id) = bytes
                .get(..len as usize)
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_string)
            else {
                return;
            };
            bytes.advance(len as usize);
            let (Ok(floor), Ok(n)) = (decode_varint(&mut bytes), decode_varint(&mut bytes)) else {
                return;
            };
            let s = m.entry(id).or_default();
            s.last_used = Some(Instant::now());
            s.raise_floor(floor);
            for _ in 0..n {
                let Ok(seq) = decode_varint(&mut bytes) else {
                    return;
                };
                s.insert(seq);
            }
        }
        // The loss books, in snapshots that have them.
        if bytes.first() != Some(&BOOKS_SECTION) {
            return;
        }
        bytes.advance(1);
        let _ = restore_books(&mut m, &mut bytes);
    }

    /// Claims a metrics batch of `agent` for storing: `None` when it was stored already or
    /// another stream is storing it now (see [`Claim`]).
    pub fn claim_metrics<'a>(&'a self, agent: &'a str, seq: u64) -> Option<Claim<'a>> {
        Claim::take(&self.metrics, agent, seq)
    }

    /// The same for an event batch.
    pub fn claim_events<'a>(&'a self, agent: &'a str, seq: u64) -> Option<Claim<'a>> {
        Claim::take(&self.events, agent, seq)
    }

    /// Claims a batch for storing: false when it was stored already or another stream is
    /// storing it now (a resend that overtook the original after a reconnect). Checking and
    /// claiming under one lock is what makes a resend never stored twice.
    fn claim(map: &Mutex<HashMap<String, SeenSeqs>>, agent: &str, seq: u64) -> bool {
        let mut m = map.lock();
        let now = Instant::now();
        if m.len() > 10_000 {
            m.retain(|_, s| {
                !s.pending.is_empty() || s.last_used.is_some_and(|t| now - t < AGENT_IDLE)
            });
        }
        let s = m.entry(agent.to_string()).or_default();
        s.last_used = Some(now);
        !s.contains(seq) && s.pending.insert(seq)
    }

    /// Ends a claim: the batch is remembered as stored, or released for a resend.
    fn finish(map: &Mutex<HashMap<String, SeenSeqs>>, agent: &str, seq: u64, stored: bool) {
        if let Some(s) = map.lock().get_mut(agent) {
            s.pending.remove(&seq);
            if stored {
                s.insert(seq);
            }
        }
    }
}

/// Stored items and refusals by reason, as an origin counts them.
type OriginCounts = (u64, Vec<(RejectReason, u64)>);

/// An agent batch's origin: the agent, the batch's sequence number and, in the counted
/// form, its counts; `None` for any other origin or damaged bytes.
fn parse_origin(origin: &[u8]) -> Option<(&str, u64, Option<OriginCounts>)> {
    let seq = u64::from_le_bytes(origin.get(1..9)?.try_into().ok()?);
    let mut rest = &origin[9..];
    let counts = match origin[0] {
        ORIGIN_AGENT_METRICS => None,
        ORIGIN_AGENT_METRICS_COUNTED => {
            let stored = decode_varint(&mut rest).ok()?;
            let n = decode_varint(&mut rest).ok()?;
            let mut refused = Vec::new();
            for _ in 0..n.min(RejectReason::ALL.len() as u64) {
                let reason = decode_varint(&mut rest).ok()?;
                let items = decode_varint(&mut rest).ok()?;
                refused.push((*RejectReason::ALL.get(reason as usize)?, items));
            }
            Some((stored, refused))
        }
        _ => return None,
    };
    Some((std::str::from_utf8(rest).ok()?, seq, counts))
}

/// Reads the loss books of a snapshot into `m`; `None` where the bytes end or are damaged
/// (what was read stays).
fn restore_books(m: &mut HashMap<String, SeenSeqs>, bytes: &mut &[u8]) -> Option<()> {
    fn string(bytes: &mut &[u8]) -> Option<String> {
        let len = decode_varint(bytes).ok()? as usize;
        let text = std::str::from_utf8(bytes.get(..len)?).ok()?.to_string();
        bytes.advance(len);
        Some(text)
    }
    let agents = decode_varint(bytes).ok()?;
    for _ in 0..agents {
        let agent = string(bytes)?;
        let from_first = *bytes.first()? == 1;
        bytes.advance(1);
        let mut book = Book {
            from_first,
            ..Book::default()
        };
        for _ in 0..decode_varint(bytes).ok()? {
            let stream = string(bytes)?;
            let mut a = Applied {
                batches: decode_varint(bytes).ok()?,
                items: decode_varint(bytes).ok()?,
                ..Applied::default()
            };
            for _ in 0..decode_varint(bytes).ok()? {
                let reason = RejectReason::ALL.get(decode_varint(bytes).ok()? as usize)?;
                *a.refused.entry(reason.label()).or_default() += decode_varint(bytes).ok()?;
            }
            book.streams.insert(stream, a);
        }
        for _ in 0..decode_varint(bytes).ok()? {
            let seq = decode_varint(bytes).ok()?;
            let stream = string(bytes)?;
            let stored = decode_varint(bytes).ok()?;
            let refused = decode_varint(bytes).ok()?;
            book.recent.insert(seq, (stream, stored, refused));
        }
        m.entry(agent).or_default().book = book;
    }
    Some(())
}

impl SeenSeqs {
    /// The loss of one agent and kind, from its latest account and this book.
    fn loss(&self, agent: &str, kind: &'static str) -> Option<AgentLoss> {
        let report = self.book.report.as_ref()?;
        // Metric books are kept through restarts with the samples: a batch this server
        // never had is missing, whenever it was sent. Event books start again empty.
        let comparable = kind == "metrics" || self.book.from_first;
        let holes: BTreeSet<u64> = report.holes.iter().copied().collect();
        // Items the agent counts as waiting (or had not made yet) that the server has.
        let mut applied_but_pending: BTreeMap<&str, u64> = BTreeMap::new();
        // (stored, refused) of batches made after the account: left out of both sides
        // until the next account covers them.
        let mut applied_after: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (seq, (stream, stored, refused)) in self.book.recent.range(report.pending_from..) {
            if *seq >= report.next_seq {
                let a = applied_after.entry(stream.as_str()).or_default();
                a.0 += stored;
                a.1 += refused;
            } else if !holes.contains(seq) {
                *applied_but_pending.entry(stream.as_str()).or_default() += stored + refused;
            }
        }
        // Batches the agent dropped after sending them that the server applied all the
        // same (their acknowledgement was lost): applied, not dropped.
        let mut not_dropped: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
        let mut not_dropped_above = 0u64;
        for d in &report.dropped_after_send {
            if self.contains(d.seq) {
                let n = not_dropped
                    .entry((d.stream.as_str(), d.reason.as_str()))
                    .or_default();
                n.0 += d.items;
                n.1 += 1;
                if d.seq >= report.pending_from {
                    not_dropped_above += 1;
                }
            }
        }
        let mut streams = Vec::new();
        let mut dropped_batches = 0u64;
        let mut settled = true;
        let mut names: BTreeSet<&str> = report.streams.iter().map(|s| s.stream.as_str()).collect();
        names.extend(self.book.streams.keys().map(String::as_str));
        for name in names {
            let account = report.streams.iter().find(|s| s.stream == name);
            let applied = self.book.streams.get(name).cloned().unwrap_or_default();
            let (stored_after, refused_after) =
                applied_after.get(name).copied().unwrap_or_default();
            let mut dropped = BTreeMap::new();
            let mut dropped_items = 0u64;
            let mut dropped_but_applied = 0u64;
            if let Some(a) = account {
                for d in &a.dropped {
                    let (items, batches) = not_dropped
                        .get(&(name, d.reason.as_str()))
                        .copied()
                        .unwrap_or_default();
                    dropped_but_applied += items.min(d.items);
                    let items = d.items.saturating_sub(items);
                    if items > 0 {
                        dropped.insert(format!("agent:{}", d.reason), items);
                    }
                    dropped_items += items;
                    dropped_batches += d.batches.saturating_sub(batches);
                }
            }
            for (label, n) in &applied.refused {
                dropped.insert(format!("server:{label}"), *n);
                dropped_items += n;
            }
            let applied_items = applied.items.saturating_sub(stored_after);
            let dropped_items = dropped_items.saturating_sub(refused_after);
            let pending = account
                .map_or(0, |a| a.pending_items)
                .saturating_sub(applied_but_pending.get(name).copied().unwrap_or(0));
            if pending > 0 {
                settled = false;
            }
            let sent = account.map_or(0, |a| a.created_items);
            streams.push(StreamLoss {
                agent: agent.to_string(),
                kind,
                stream: name.to_string(),
                sent,
                inputs: account
                    .map(|a| {
                        a.inputs
                            .iter()
                            .map(|i| (i.input.clone(), i.items))
                            .collect()
                    })
                    .unwrap_or_default(),
                applied: applied_items,
                dropped,
                pending,
                dropped_but_applied,
                unapplied: 0,
                // Wide arithmetic: an agent's account can say anything.
                unexplained: comparable.then(|| {
                    let rest = i128::from(sent)
                        - i128::from(applied_items)
                        - i128::from(dropped_items)
                        - i128::from(pending);
                    rest.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
                }),
            });
        }
        // Batch numbers below `pending_from` are settled at the agent: each was applied
        // here or dropped there; any other is a gap.
        let settled_below = report.pending_from.saturating_sub(1);
        let seen_below = if self.floor >= settled_below {
            settled_below
        } else {
            self.floor + self.above.range(self.floor + 1..=settled_below).count() as u64
        };
        // Holes are the dropped batches at or above `pending_from`; those the server has
        // are already out of `dropped_batches`.
        let dropped_below =
            (dropped_batches + not_dropped_above).saturating_sub(holes.len() as u64);
        let gaps = comparable.then(|| {
            settled_below
                .saturating_sub(seen_below)
                .saturating_sub(dropped_below)
        });
        Some(AgentLoss {
            agent: agent.to_string(),
            kind,
            streams,
            gaps,
            settled,
        })
    }
}

/// A claimed batch, released unless it was stored (a panic while storing must not leave
/// its resends refused forever).
pub struct Claim<'a> {
    map: &'a Mutex<HashMap<String, SeenSeqs>>,
    agent: &'a str,
    seq: u64,
    stored: bool,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        AgentRegistry::finish(self.map, self.agent, self.seq, self.stored);
    }
}

impl<'a> Claim<'a> {
    /// The batch is stored: its resends are duplicates from now on.
    pub fn stored(&mut self) {
        self.stored = true;
    }

    fn take(map: &'a Mutex<HashMap<String, SeenSeqs>>, agent: &'a str, seq: u64) -> Option<Self> {
        AgentRegistry::claim(map, agent, seq).then_some(Claim {
            map,
            agent,
            seq,
            stored: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_claimed_once_until_released() {
        let map = Mutex::new(HashMap::new());
        let first = Claim::take(&map, "a", 7).expect("free");
        // A resend overtaking the original while it is being stored is refused.
        assert!(Claim::take(&map, "a", 7).is_none());
        assert!(
            Claim::take(&map, "b", 7).is_some(),
            "sequences are per agent"
        );
        drop(first); // not stored: released for the resend
        let mut again = Claim::take(&map, "a", 7).expect("released");
        again.stored();
        drop(again);
        assert!(Claim::take(&map, "a", 7).is_none(), "stored once");
    }

    #[test]
    fn sequence_window() {
        let mut s = SeenSeqs::default();
        assert!(!s.contains(1));
        s.insert(1);
        s.insert(2);
        s.insert(5);
        assert!(s.contains(1) && s.contains(2) && s.contains(5));
        assert!(!s.contains(3) && !s.contains(4) && !s.contains(6));
        assert_eq!(s.floor, 2);
        s.insert(3);
        s.insert(4);
        assert_eq!(s.floor, 5);
        assert!(s.above.is_empty());
    }
}

#[cfg(test)]
mod book_tests {
    use super::*;
    use argus_proto::v1::{Accounting, Dropped, DroppedBatch, StreamAccount};

    fn account(pending_from: u64, next_seq: u64, created: u64, dropped: u64) -> Accounting {
        Accounting {
            pending_from,
            next_seq,
            holes: vec![],
            streams: vec![StreamAccount {
                stream: "metrics".into(),
                created_items: created,
                created_batches: next_seq - 1,
                pending_items: 0,
                pending_batches: 0,
                dropped: vec![Dropped {
                    reason: "buffer_full".into(),
                    items: dropped,
                    batches: 1,
                }],
                inputs: vec![],
            }],
            dropped_after_send: vec![],
        }
    }

    /// Batches 1, 2 and 4 applied (one sample of 2 refused), 3 dropped at the agent: all
    /// accounted for, through a snapshot and a log replay.
    #[test]
    fn books_account_for_every_item_and_survive_a_snapshot_and_the_log() {
        let reg = AgentRegistry::default();
        for (seq, stored, refused) in [(1, 10, 0), (2, 9, 1)] {
            let refused = if refused > 0 {
                vec![(RejectReason::OutOfRetention, refused)]
            } else {
                vec![]
            };
            reg.claim_metrics("a/1", seq).expect("free").stored();
            reg.book_metrics("a/1", seq, stored, &refused);
        }
        let snapshot = reg.encode_stored();
        // Batch 4 after the snapshot, in the log only.
        let origin = AgentRegistry::origin_counted("a/1", 4, 10, &[]);
        reg.claim_metrics("a/1", 4).expect("free").stored();
        reg.book_metrics("a/1", 4, 10, &[]);
        reg.note_report("a/1", false, account(5, 5, 40, 10));
        let check = |reg: &AgentRegistry| {
            let loss = reg.loss();
            assert_eq!(loss.len(), 1);
            let s = &loss[0].streams[0];
            assert_eq!((s.sent, s.applied, s.pending), (40, 29, 0));
            assert_eq!(s.dropped["agent:buffer_full"], 10);
            assert_eq!(s.dropped["server:out_of_retention"], 1);
            assert_eq!(s.unexplained, Some(0));
            assert_eq!(loss[0].gaps, Some(0));
        };
        check(&reg);

        let restored = AgentRegistry::default();
        restored.restore_stored(&snapshot);
        restored.restore_origin(&origin);
        // A resend of a batch the log held is not booked twice.
        restored.restore_origin(&origin);
        restored.note_report("a/1", false, account(5, 5, 40, 10));
        check(&restored);

        // Without batch 4 the report finds its 10 items and the batch missing.
        let lost = AgentRegistry::default();
        lost.restore_stored(&snapshot);
        lost.note_report("a/1", false, account(5, 5, 40, 10));
        let loss = lost.loss();
        assert_eq!(loss[0].streams[0].unexplained, Some(10));
        assert_eq!(loss[0].gaps, Some(1));
    }

    /// A batch the agent dropped after sending, which the server had applied: applied.
    #[test]
    fn a_batch_dropped_after_sending_that_arrived_counts_as_applied() {
        let reg = AgentRegistry::default();
        reg.claim_metrics("a/1", 1).expect("free").stored();
        reg.book_metrics("a/1", 1, 5, &[]);
        let mut report = account(2, 2, 5, 5);
        report.dropped_after_send = vec![DroppedBatch {
            seq: 1,
            stream: "metrics".into(),
            items: 5,
            reason: "buffer_full".into(),
        }];
        reg.note_report("a/1", false, report);
        let loss = reg.loss();
        let s = &loss[0].streams[0];
        assert_eq!((s.applied, s.dropped_but_applied), (5, 5));
        assert!(s.dropped.is_empty(), "{:?}", s.dropped);
        assert_eq!(s.unexplained, Some(0));
        assert_eq!(loss[0].gaps, Some(0));
    }
}
