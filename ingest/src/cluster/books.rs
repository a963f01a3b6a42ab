//! Loss accounting in a cluster, kept where the samples are: in the log and the store
//! nodes applying it, so that no node's crash loses a count.
//!
//! A gateway that took an agent's batch (JetStream acknowledged every message of it)
//! publishes the batch's receipt: its sequence number, the items it logged and those it
//! refused by reason, and the agent's latest account of its batches. Receipts go to one
//! partition per agent (a hash of its id), so one book holds each agent's batches, as a
//! single node's does. Every store node applying a partition keeps its [`PartitionBooks`]:
//! the receipts of the agents whose partition it is, and the samples it applied of each
//! agent's messages, known by their message ids. Both are rebuilt exactly when the
//! partition is replayed, and are in the partition's snapshot with its series.
//!
//! `GET /api/v1/loss` asks one node serving each partition for its books and merges them:
//! the receipts give the single-node report (sent, applied, dropped by place and reason,
//! pending, gaps), and what the receipts say was logged but the store nodes have not
//! applied is moved from applied to `unapplied`: a store node catching up after a restart
//! or a NATS election shows there, not as loss. It stays there if they never apply it.

use std::collections::BTreeMap;

use argus_proto::v1::Accounting;
use prost::Message as _;
use prost::bytes::Buf as _;
use prost::encoding::{decode_varint, encode_varint};

use crate::resend::{AgentLoss, AgentRegistry};
use crate::validation::RejectReason;

/// The header that marks a message as a batch's receipt, not samples.
pub const RECEIPT_HEADER: &str = "Argus-Receipt";

/// The partition an agent's receipts go to.
pub fn receipt_partition(agent: &str, partitions: u32) -> u32 {
    let h = super::placement::mix(xxhash_rust::xxh3::xxh3_64(agent.as_bytes()));
    (h % u64::from(partitions.max(1))) as u32
}

/// The receipt of an agent's batch `seq`: `stored` items logged, `refused` refused by
/// reason, with the agent's account sent with it. Its partition, message id (a resend of
/// the batch gets the same, so JetStream keeps one) and payload.
pub fn receipt(
    (agent, seq): (&str, u64),
    stored: u64,
    refused: &[(RejectReason, u64)],
    report: Option<&Accounting>,
    partitions: u32,
) -> (u32, String, Vec<u8>) {
    let origin = AgentRegistry::origin_counted(agent, seq, stored, refused);
    let mut payload = Vec::with_capacity(origin.len() + 64);
    encode_varint(origin.len() as u64, &mut payload);
    payload.extend_from_slice(&origin);
    if let Some(report) = report {
        report.encode(&mut payload).unwrap_or_default();
    }
    let name: String = AgentRegistry::origin(agent, seq)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (
        receipt_partition(agent, partitions),
        format!("r{name}"),
        payload,
    )
}

/// The agent whose batch a message id names (`a<origin in hex>.<partition>.<chunk>`), if
/// it names an agent's batch.
fn agent_of_message(id: &str) -> Option<String> {
    let hex = id.strip_prefix('a')?.split('.').next()?;
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    // `[kind][seq u64][agent]`.
    String::from_utf8(bytes.get(9..)?.to_vec()).ok()
}

/// One partition's loss books on a store node.
#[derive(Default)]
pub struct PartitionBooks {
    /// The agents whose receipts this partition holds: their batches and accounts.
    receipts: AgentRegistry,
    /// Per agent, the samples applied from its messages in this partition.
    applied: BTreeMap<String, u64>,
}

impl std::fmt::Debug for PartitionBooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionBooks")
            .field("agents_applied", &self.applied.len())
            .finish_non_exhaustive()
    }
}

impl PartitionBooks {
    /// Books a receipt read from the log.
    pub fn take_receipt(&mut self, mut payload: &[u8]) -> Result<(), String> {
        let len = decode_varint(&mut payload).map_err(|e| format!("a receipt: {e}"))? as usize;
        let origin = payload
            .get(..len)
            .ok_or_else(|| format!("a receipt of {} bytes names {len}", payload.len()))?;
        let report = Accounting::decode(&payload[len..])
            .map_err(|e| format!("the account in a receipt: {e}"))?;
        self.receipts.restore_origin(origin);
        if let Some(agent) = AgentRegistry::origin_agent(origin)
            && report != Accounting::default()
        {
            self.receipts.note_report(agent, false, report);
        }
        Ok(())
    }

    /// Counts `samples` applied from the message named `id`.
    pub fn applied(&mut self, id: &str, samples: u64) {
        if let Some(agent) = agent_of_message(id) {
            *self.applied.entry(agent).or_default() += samples;
        }
    }

    /// `[varint len][receipts as a snapshot keeps them][varint n]([varint len][agent]
    /// [varint len][account])*[varint n]([varint len][agent][varint samples])*`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let put = |out: &mut Vec<u8>, bytes: &[u8]| {
            encode_varint(bytes.len() as u64, out);
            out.extend_from_slice(bytes);
        };
        put(&mut out, &self.receipts.encode_stored());
        let reports = self.receipts.metric_reports();
        encode_varint(reports.len() as u64, &mut out);
        for (agent, report) in &reports {
            put(&mut out, agent.as_bytes());
            put(&mut out, &report.encode_to_vec());
        }
        encode_varint(self.applied.len() as u64, &mut out);
        for (agent, n) in &self.applied {
            put(&mut out, agent.as_bytes());
            encode_varint(*n, &mut out);
        }
        out
    }

    /// Adds books [`PartitionBooks::encode`] wrote to these.
    pub fn merge_encoded(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        fn take<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], String> {
            let len = decode_varint(bytes).map_err(|e| e.to_string())? as usize;
            let out = bytes
                .get(..len)
                .ok_or_else(|| format!("{len} bytes named, {} left", bytes.len()))?;
            bytes.advance(len);
            Ok(out)
        }
        let damaged = |e: String| format!("damaged loss books: {e}");
        self.receipts
            .restore_stored(take(&mut bytes).map_err(damaged)?);
        let reports = decode_varint(&mut bytes).map_err(|e| damaged(e.to_string()))?;
        for _ in 0..reports {
            let agent = std::str::from_utf8(take(&mut bytes).map_err(damaged)?)
                .map_err(|e| damaged(e.to_string()))?;
            let report = Accounting::decode(take(&mut bytes).map_err(damaged)?)
                .map_err(|e| damaged(e.to_string()))?;
            self.receipts.note_report(agent, false, report);
        }
        let agents = decode_varint(&mut bytes).map_err(|e| damaged(e.to_string()))?;
        for _ in 0..agents {
            let agent = std::str::from_utf8(take(&mut bytes).map_err(damaged)?)
                .map_err(|e| damaged(e.to_string()))?
                .to_string();
            let n = decode_varint(&mut bytes).map_err(|e| damaged(e.to_string()))?;
            *self.applied.entry(agent).or_default() += n;
        }
        Ok(())
    }

    /// The loss of every agent these books have an account of: the receipts' report, with
    /// what they logged that the store nodes have not applied moved from applied to
    /// unapplied.
    pub fn loss(&self) -> Vec<AgentLoss> {
        let mut agents = self.receipts.loss();
        for a in &mut agents {
            let logged = self.receipts.stored_items(&a.agent);
            let applied = self.applied.get(&a.agent).copied().unwrap_or(0);
            let missing = logged.saturating_sub(applied);
            if let Some(s) = a.streams.iter_mut().find(|s| s.stream == "metrics") {
                s.applied = s.applied.saturating_sub(missing);
                s.unapplied = missing;
            }
        }
        agents
    }
}

/// A store node's answer: `[varint partition][varint len][books]*`.
pub fn encode_answer<'a>(books: impl Iterator<Item = (u32, &'a [u8])>, out: &mut Vec<u8>) {
    for (p, bytes) in books {
        encode_varint(u64::from(p), out);
        encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
}

/// Each partition's encoded books in a store node's answer.
pub fn decode_answer(mut body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (Ok(_partition), Ok(len)) = (decode_varint(&mut body), decode_varint(&mut body)) else {
            return Err("damaged loss books".into());
        };
        let books = body
            .get(..len as usize)
            .ok_or("damaged loss books: cut short")?;
        out.push(books.to_vec());
        body.advance(len as usize);
    }
    Ok(out)
}

/// The loss of every agent, from every partition's encoded books.
pub fn merged_loss(parts: &[Vec<u8>]) -> Result<Vec<AgentLoss>, String> {
    let mut all = PartitionBooks::default();
    for books in parts {
        all.merge_encoded(books)?;
    }
    Ok(all.loss())
}

#[cfg(test)]
mod tests {
    use super::*;
    use argus_proto::v1::StreamAccount;

    fn account(next_seq: u64, created: u64) -> Accounting {
        Accounting {
            pending_from: next_seq,
            next_seq,
            streams: vec![StreamAccount {
                stream: "metrics".into(),
                created_items: created,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn take(books: &mut PartitionBooks, m: &(u32, String, Vec<u8>)) {
        books.take_receipt(&m.2).expect("a receipt");
    }

    #[test]
    fn receipts_and_applied_samples_make_the_single_node_report() {
        let agent = "host-1/abc";
        let (r1, r2) = (
            receipt((agent, 1), 10, &[], None, 8),
            receipt(
                (agent, 2),
                5,
                &[(RejectReason::OutOfRetention, 3)],
                Some(&account(3, 18)),
                8,
            ),
        );
        assert_eq!(r1.0, receipt_partition(agent, 8));
        assert!(r1.1.starts_with('r') && r1.1 != r2.1);
        // The receipts in one partition, the samples in two others.
        let mut home = PartitionBooks::default();
        take(&mut home, &r1);
        take(&mut home, &r2);
        // A replay of a receipt books nothing twice.
        take(&mut home, &r2);
        let data_id = |seq: u64, p: u32| {
            let hex: String = AgentRegistry::origin(agent, seq)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("a{hex}.{p}.0")
        };
        assert_eq!(agent_of_message(&data_id(1, 3)).as_deref(), Some(agent));
        assert_eq!(agent_of_message("c0123.1.0"), None);
        assert_eq!(agent_of_message("azz.1.0"), None);
        let (mut p3, mut p5) = (PartitionBooks::default(), PartitionBooks::default());
        p3.applied(&data_id(1, 3), 6);
        p5.applied(&data_id(1, 5), 4);
        p3.applied(&data_id(2, 3), 5);

        // Merged the way a query node merges them, through their encoding.
        let merged = |parts: &[&PartitionBooks]| {
            let encoded: Vec<Vec<u8>> = parts.iter().map(|p| p.encode()).collect();
            merged_loss(&encoded).expect("books")
        };
        let loss = merged(&[&home, &p3, &p5]);
        assert_eq!(loss.len(), 1);
        let s = &loss[0].streams[0];
        assert_eq!((s.sent, s.applied, s.pending), (18, 15, 0));
        assert_eq!(s.dropped.get("server:out_of_retention"), Some(&3));
        assert_eq!(s.unexplained, Some(0));
        assert_eq!(loss[0].gaps, Some(0));

        // A partition's messages not applied (yet): out of applied, unapplied.
        let loss = merged(&[&home, &p3]);
        let s = &loss[0].streams[0];
        assert_eq!((s.applied, s.unapplied, s.unexplained), (11, 4, Some(0)));
    }

    #[test]
    fn damaged_receipts_and_books_are_refused_with_a_reason() {
        let mut books = PartitionBooks::default();
        assert!(books.take_receipt(&[200]).is_err());
        assert!(books.take_receipt(&[5, 1, 2]).is_err());
        let good = {
            let mut b = PartitionBooks::default();
            b.applied("a6d0100000000000000616263.0.0", 3);
            b.encode()
        };
        for cut in 0..good.len() {
            let _ = PartitionBooks::default().merge_encoded(&good[..cut]);
        }
        // Garbage of every length: refused or read, never a panic.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let mut b = PartitionBooks::default();
            let _ = b.merge_encoded(&bytes);
            let _ = b.take_receipt(&bytes);
            let _ = decode_answer(&bytes);
            let _ = b.loss();
        }
        let mut all = PartitionBooks::default();
        all.merge_encoded(&good).expect("whole books");
        assert_eq!(all.applied.get("abc"), Some(&3));
        assert!(decode_answer(&[1, 9, 0]).is_err());
        let mut answer = Vec::new();
        encode_answer([(3, good.as_slice())].into_iter(), &mut answer);
        assert_eq!(decode_answer(&answer), Ok(vec![good.clone()]));
    }
}
