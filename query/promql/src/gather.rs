//! Selectors read from elsewhere: in a cluster each store node holds the series of its
//! partitions, so the node a query reaches gathers each selector's series over the window it
//! reads from the nodes holding them ([`Gather`]) and evaluates over what came back
//! ([`Gathered`]), giving the answers one store holding every series would give.

use argus_tsdb::{Matcher, Postings, ReadRequest, SeriesId, SeriesSource, TagMap, Tags};

use crate::eval::Series;
use crate::partial::{Partial, PushedAggregate};

/// Where an evaluation's selectors read their series when they are not all in its own store.
pub trait Gather: Send + Sync {
    /// The series `selector` (a PromQL vector selector, without offset or `@`) matches, with
    /// their stored values of the steps ending at `first_ms`, `first_ms + step`, ...,
    /// `last_ms`.
    fn series(
        &self,
        selector: &str,
        first_ms: i64,
        last_ms: i64,
    ) -> Result<Vec<(TagMap, Vec<f64>)>, String>;

    /// The store nodes' parts of an aggregation they can evaluate where the series are
    /// (see [`crate::partial`]); `None` when this gather cannot ask for that, and the series
    /// are gathered instead.
    fn aggregate(&self, _pushed: &PushedAggregate) -> Option<Result<Vec<Partial>, String>> {
        None
    }

    /// The store nodes' own top (or bottom) k series of a `topk`/`bottomk` they can
    /// evaluate where the series are, together; `None` when this gather cannot ask for that.
    fn top(&self, _pushed: &PushedAggregate) -> Option<Result<Vec<Series>, String>> {
        None
    }
}

/// The series one selector gathered, as a store to read: every series is selected (the
/// store nodes matched them), and each has the values of the gathered window.
pub(crate) struct Gathered {
    pub step_ms: i64,
    pub series: Vec<(TagMap, Vec<f64>)>,
}

impl Gathered {
    pub fn ids(&self) -> Postings {
        (0..self.series.len() as SeriesId).collect()
    }
}

impl SeriesSource for Gathered {
    fn step_ms(&self) -> i64 {
        self.step_ms
    }

    fn select(&self, _: &Matcher) -> Postings {
        self.ids()
    }

    fn visit_tags(&self, ids: &Postings, f: &mut dyn FnMut(SeriesId, &dyn Tags)) {
        for id in ids {
            if let Some((tags, _)) = self.series.get(id as usize) {
                f(id, tags);
            }
        }
    }

    /// The gathered values: `req` is the window they were gathered for.
    fn visit_values(
        &self,
        ids: &Postings,
        _: &ReadRequest,
        f: &mut dyn FnMut(SeriesId, &[f64]),
    ) -> argus_tsdb::Result<()> {
        for id in ids {
            if let Some((_, values)) = self.series.get(id as usize) {
                f(id, values);
            }
        }
        Ok(())
    }
}
