//! What every conversion produces: samples for the store and a reason for everything it
//! refused; and the step from there to the store and an [`Outcome`].

use argus_tsdb::{Sample, Writer};

use argus_proto::v1::Accounting;

use crate::cluster::Membership;
use crate::cluster::log::{receipt, split};
use crate::metrics::ServerMetrics;
use crate::outcome::{Kind, Outcome};
use crate::resend::AgentRegistry;
use crate::validation::{Refusals, RejectReason, Rejection};

/// What a conversion produced: samples for the store and every refusal.
#[derive(Debug, Default)]
pub struct Converted {
    pub samples: Vec<Sample>,
    pub refusals: Refusals,
}

impl Converted {
    pub fn reject(&mut self, r: Rejection) {
        self.refusals.add(r);
    }

    pub fn rejected_count(&self) -> usize {
        self.refusals.total() as usize
    }

    /// Appends the samples to the store, adding what it refuses (outside the retention
    /// window) to the refusals, and says what became of them: taken (every refusal counted
    /// in `metrics`), or retry later when the store cannot make the batch durable (nothing
    /// stored, nothing counted). `origin` goes into the log with the batch (see
    /// `Store::try_append_batch`). The writer must be the one the samples' series were
    /// resolved under. The samples stay, for the stream's next batch to reuse.
    pub fn store(&mut self, w: &Writer<'_>, origin: &[u8], metrics: &ServerMetrics) -> Outcome {
        let appended = match w.try_append_batch(&self.samples, origin) {
            Ok(a) => a,
            Err(e) => return Outcome::retry_later(e),
        };
        for (_, err) in appended.rejected {
            self.reject(Rejection::new(
                RejectReason::OutOfRetention,
                err.to_string(),
            ));
        }
        let refusals = std::mem::take(&mut self.refusals);
        Outcome::taken(Kind::Samples, appended.stored, refusals, metrics)
    }

    /// Takes the samples the way this node takes writes: into the store on a single node
    /// ([`Converted::store`]); in a cluster, into the partitions' log, taken once JetStream
    /// has acknowledged every message. The series are named by their tags while `w` is
    /// held, and the hold is let go before waiting for JetStream, so a stalled log never
    /// holds up the store's maintenance. Call on a blocking thread of the runtime.
    pub fn commit(
        &mut self,
        w: Writer<'_>,
        origin: &[u8],
        metrics: &ServerMetrics,
        cluster: Option<&Membership>,
    ) -> Outcome {
        match cluster {
            None => self.store(&w, origin, metrics),
            Some(cluster) => self.publish(w, origin, metrics, cluster, None),
        }
    }

    /// Takes an agent's batch `seq` as [`Converted::commit`] does, with its counts for the
    /// agent's loss book (`report` is the account the batch came with): on a single node
    /// in the batch's origin in the log; in a cluster in the batch's receipt
    /// (`cluster/books.rs`), published once JetStream holds the samples, since a resend's
    /// messages must get the same names and so cannot carry counts.
    pub fn commit_agent_batch(
        &mut self,
        w: Writer<'_>,
        (agent, seq): (&str, u64),
        report: Option<&Accounting>,
        metrics: &ServerMetrics,
        cluster: Option<&Membership>,
    ) -> Outcome {
        // What the store would refuse is refused first, so the counts are the outcome's.
        self.refuse_outside_window(w.store());
        match cluster {
            None => {
                let refused: Vec<_> = self.refusals.by_reason().collect();
                let stored = self.samples.len() as u64;
                let origin = AgentRegistry::origin_counted(agent, seq, stored, &refused);
                self.store(&w, &origin, metrics)
            }
            Some(cluster) => {
                let origin = AgentRegistry::origin(agent, seq);
                self.publish(w, &origin, metrics, cluster, Some((agent, seq, report)))
            }
        }
    }

    /// [`Converted::commit`] in a cluster; with an agent's batch, its receipt after the
    /// samples.
    fn publish(
        &mut self,
        w: Writer<'_>,
        origin: &[u8],
        metrics: &ServerMetrics,
        cluster: &Membership,
        receipt_of: Option<(&str, u64, Option<&Accounting>)>,
    ) -> Outcome {
        let log = match cluster.log() {
            Ok(log) => log,
            Err(why) => return Outcome::retry_later(why),
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Outcome::retry_later("no runtime to publish to the cluster's log from");
        };
        // The store's own window check, made here: what it would refuse is never logged.
        self.refuse_outside_window(w.store());
        let samples = &self.samples;
        let messages = split(w.store(), samples, origin, log.partitions);
        let taken = samples.len();
        drop(w);
        let published = runtime.block_on(log.publish(messages));
        // The receipt follows the samples whether they were new or a resend of a batch
        // the log holds whole (its receipt may not have made it then): JetStream keeps one.
        if let (Ok(_), Some((agent, seq, report))) = (&published, receipt_of) {
            let refused: Vec<_> = self.refusals.by_reason().collect();
            let receipt = receipt((agent, seq), taken as u64, &refused, report, log.partitions);
            if let Err(why) = runtime.block_on(log.publish(vec![receipt])) {
                return Outcome::retry_later(why);
            }
        }
        match published {
            // An agent's resend of a batch the log holds whole (it went through another
            // gateway, or this one before a restart).
            Ok(true) if !origin.is_empty() => Outcome::Duplicate,
            Ok(_) => {
                let refusals = std::mem::take(&mut self.refusals);
                Outcome::taken(Kind::Samples, taken, refusals, metrics)
            }
            Err(why) => Outcome::retry_later(why),
        }
    }

    /// Refuses, as the store would, the samples outside the window it accepts now, so that
    /// what is logged is what will be stored (and an origin's counts are the outcome's).
    pub fn refuse_outside_window(&mut self, store: &argus_tsdb::Store) {
        let (min_ms, max_ms) = store.accept_window();
        let in_window = |s: &Sample| (min_ms..=max_ms).contains(&s.ts_ms);
        if self.samples.iter().all(in_window) {
            return;
        }
        for s in self.samples.iter().filter(|s| !in_window(s)) {
            let err = argus_tsdb::Error::OutOfRetention {
                ts_ms: s.ts_ms,
                min_ms,
                max_ms,
            };
            self.refusals.add(Rejection::new(
                RejectReason::OutOfRetention,
                err.to_string(),
            ));
        }
        self.samples.retain(in_window);
    }

    /// The first refusals, for a response.
    pub fn reasons(&self) -> Vec<String> {
        self.refusals.reasons()
    }
}
