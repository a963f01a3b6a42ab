//! The read interface the query crate evaluates against, and Atlas's consolidation.

use crate::error::Result;
use crate::index::Postings;
use crate::matcher::Matcher;
use crate::tags::Tags;

/// Dense id of a stored series. Ids of expired series are reused.
pub type SeriesId = u32;

/// How stored steps combine into one output step when the output step is a multiple of the
/// stored step (Atlas's `:cf-*`). All ignore NaN and give NaN only when every input is NaN;
/// `Avg` divides by the full count of stored steps, so a missing step counts as zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Consolidation {
    #[default]
    Avg,
    Sum,
    Min,
    Max,
}

impl Consolidation {
    pub fn name(self) -> &'static str {
        match self {
            Consolidation::Avg => "avg",
            Consolidation::Sum => "sum",
            Consolidation::Min => "min",
            Consolidation::Max => "max",
        }
    }

    /// Consolidates one group of stored values.
    #[inline]
    pub fn apply(self, values: &[f64]) -> f64 {
        let mut count = 0usize;
        let mut acc = match self {
            Consolidation::Avg | Consolidation::Sum => 0.0,
            Consolidation::Min => f64::INFINITY,
            Consolidation::Max => f64::NEG_INFINITY,
        };
        for &v in values {
            if v.is_nan() {
                continue;
            }
            count += 1;
            acc = match self {
                Consolidation::Avg | Consolidation::Sum => acc + v,
                Consolidation::Min => acc.min(v),
                Consolidation::Max => acc.max(v),
            };
        }
        if count == 0 {
            return f64::NAN;
        }
        match self {
            Consolidation::Avg => acc / values.len() as f64,
            _ => acc,
        }
    }
}

/// A time range on an output step grid: values for `start_ms, start_ms + step_ms, ...,
/// end_ms`, both ends included. `start_ms` and `end_ms` are multiples of `step_ms`, which is
/// a multiple of the stored step. Output step `t` consolidates the stored steps
/// `t, t + stored, ..., t + step - stored` (Atlas's buffer alignment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
    pub cf: Consolidation,
}

impl ReadRequest {
    /// Number of output values.
    pub fn len(&self) -> usize {
        ((self.end_ms - self.start_ms) / self.step_ms + 1).max(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the query crate needs from a store. Implemented by [`crate::Store`]; tests may feed a
/// fake. Callbacks run with store locks held for a bounded chunk of series, so they must be
/// quick and must not call back into the store.
pub trait SeriesSource: Send + Sync {
    /// The stored step.
    fn step_ms(&self) -> i64;

    /// Ids of the series matching `m`.
    fn select(&self, m: &Matcher) -> Postings;

    /// Calls `f` with the tags of each series of `ids` that still exists, in ascending id order.
    fn visit_tags(&self, ids: &Postings, f: &mut dyn FnMut(SeriesId, &dyn Tags));

    /// Calls `f` with the values of each series of `ids` over `req`, in an order of the
    /// store's choosing (callers must not rely on id order).
    fn visit_values(
        &self,
        ids: &Postings,
        req: &ReadRequest,
        f: &mut dyn FnMut(SeriesId, &[f64]),
    ) -> Result<()>;

    /// Whether the reader should go on. A source with limits (a deadline, a client that may
    /// leave) answers `Err` once one is reached, so that long work between reads stops
    /// too; the store itself never stops a reader.
    fn keep_going(&self) -> Result<()> {
        Ok(())
    }

    /// Splits `ids` into at most `n` sets that separate threads can read at once without
    /// contending on the store's locks. By default, contiguous ranges.
    fn partition(&self, ids: &Postings, n: usize) -> Vec<Postings> {
        let n = n.max(1);
        let per = (ids.len() as usize).div_ceil(n).max(1);
        let all: Vec<SeriesId> = ids.iter().collect();
        all.chunks(per)
            .map(|c| c.iter().copied().collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consolidation_follows_atlas() {
        let n = f64::NAN;
        assert_eq!(Consolidation::Avg.apply(&[1.0, n, 3.0, n]), 1.0);
        assert_eq!(Consolidation::Sum.apply(&[1.0, n, 3.0]), 4.0);
        assert_eq!(Consolidation::Min.apply(&[5.0, n, 3.0]), 3.0);
        assert_eq!(Consolidation::Max.apply(&[5.0, n, 3.0]), 5.0);
        assert!(Consolidation::Avg.apply(&[n, n]).is_nan());
        assert!(Consolidation::Max.apply(&[n]).is_nan());
    }
}
