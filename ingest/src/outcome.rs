//! What became of one ingest request or batch, whatever its protocol: the one outcome type
//! that every path builds (on a blocking thread, where the work is done) and that each
//! protocol renders in one place: an `Ack` (`grpc/agent.rs`), an HTTP response
//! (`http/response.rs`) or an OTLP partial success (`grpc/otlp.rs`).
//!
//! Building a taken outcome counts its refusals in the server's metrics, so no path can take
//! data and forget to count what it refused.

use crate::metrics::ServerMetrics;
use crate::validation::Refusals;

/// What an outcome took: samples for the store, or raw events for the live queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Samples,
    Events,
}

#[derive(Debug)]
pub enum Outcome {
    /// Taken: `stored` samples stored (or events delivered), every other one refused, with
    /// its reason.
    Taken {
        kind: Kind,
        stored: usize,
        refusals: Refusals,
    },
    /// A batch an agent sent again after it was stored: nothing done, nothing counted.
    Duplicate,
    /// Nothing taken; the same request may succeed later (the store cannot make writes
    /// durable now, or the server is shutting down).
    RetryLater(String),
}

impl Outcome {
    /// Items taken and refused, every refusal counted in `metrics` now.
    pub fn taken(kind: Kind, stored: usize, refusals: Refusals, metrics: &ServerMetrics) -> Self {
        match kind {
            Kind::Samples => metrics.count_samples(&refusals),
            Kind::Events => metrics.count_events(refusals.total()),
        }
        Outcome::Taken {
            kind,
            stored,
            refusals,
        }
    }

    /// Nothing taken because of `why`; worth retrying.
    pub fn retry_later(why: impl std::fmt::Display) -> Self {
        Outcome::RetryLater(why.to_string())
    }

    pub fn stored(&self) -> usize {
        match self {
            Outcome::Taken { stored, .. } => *stored,
            _ => 0,
        }
    }

    pub fn refused(&self) -> u64 {
        match self {
            Outcome::Taken { refusals, .. } => refusals.total(),
            _ => 0,
        }
    }

    /// The first reasons (at most [`Refusals::LISTED`]).
    pub fn reasons(&self) -> Vec<String> {
        match self {
            Outcome::Taken { refusals, .. } => refusals.reasons(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{RejectReason, Rejection};

    #[test]
    fn building_a_taken_outcome_counts_every_refusal() {
        let metrics = ServerMetrics::default();
        let mut refusals = Refusals::default();
        refusals.add_n(Rejection::new(RejectReason::MissingName, "no name"), 5_000);
        let outcome = Outcome::taken(Kind::Samples, 3, refusals, &metrics);
        assert_eq!((outcome.stored(), outcome.refused()), (3, 5_000));
        assert_eq!(outcome.reasons(), ["no name"]);
        assert_eq!(metrics.rejected(RejectReason::MissingName), 5_000);
        let mut events = Refusals::default();
        events.add_n(Rejection::new(RejectReason::InvalidValue, "not JSON"), 7);
        let _ = Outcome::taken(Kind::Events, 0, events, &metrics);
        assert_eq!(metrics.events_rejected(), 7);
        assert_eq!(metrics.rejected(RejectReason::InvalidValue), 0);
    }
}
