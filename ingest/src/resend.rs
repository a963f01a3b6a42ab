//! Resend detection: which batches of each agent are already stored, so that a batch an
//! agent sends again (its ack was lost, or it reconnected) is recognised and stored once,
//! and the format in which that knowledge survives a restart (in the log's batch origins and
//! in snapshots).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::bytes::Buf;
use prost::encoding::{decode_varint, encode_varint};

/// Sequence numbers of one agent already stored: all up to `floor`, and those above it in
/// `above`. Bounded: the window keeps the newest `MAX_ABOVE`.
#[derive(Default)]
struct SeenSeqs {
    floor: u64,
    above: BTreeSet<u64>,
    /// Being stored right now (by a stream that may have lost its connection meanwhile).
    pending: HashSet<u64>,
    last_used: Option<Instant>,
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

    /// Remembers a batch found in the log at recovery as stored.
    pub fn restore_origin(&self, origin: &[u8]) {
        if origin.len() < 9 || origin[0] != ORIGIN_AGENT_METRICS {
            return;
        }
        let seq = u64::from_le_bytes(origin[1..9].try_into().unwrap_or_default());
        let Ok(agent) = std::str::from_utf8(&origin[9..]) else {
            return;
        };
        let mut m = self.metrics.lock();
        let s = m.entry(agent.to_string()).or_default();
        s.last_used = Some(Instant::now());
        s.insert(seq);
    }

    /// The stored metrics batches of every agent, for a snapshot:
    /// `[varint agents]` then per agent `[varint len][id][varint floor][varint n][varint seq]*`.
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
