//! What every conversion produces: samples for the store and a reason for everything it
//! refused; and the step from there to the store and an [`Outcome`].

use argus_tsdb::{Sample, Writer};

use crate::metrics::ServerMetrics;
use crate::outcome::{Kind, Outcome};
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

    /// The first refusals, for a response.
    pub fn reasons(&self) -> Vec<String> {
        self.refusals.reasons()
    }
}
