//! Limits on what one query may cost, applied where it reads the store: series scanned,
//! time (a deadline), and the client's presence (a query whose client has gone away stops
//! at its next chunk of series instead of finishing for no one). Lines and datapoints are
//! the graph API's own limits (`--graph-max-lines`, `--graph-max-datapoints`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argus_tsdb::{
    Error, Matcher, Postings, ReadRequest, Result, SeriesId, SeriesSource, Store, Tags,
};

/// Series read between two checks of the deadline and the client.
const CHECK_EVERY: u64 = 1024;

/// Set when the request that runs a query is dropped (its client went away).
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// A guard that sets the flag when dropped: hold it in the request's future.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.0.clone())
    }
}

pub struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Which of `argus_queries_stopped_total`'s reasons (`metrics::QUERY_STOP_REASONS`) ended
/// a query, if one of the limits did.
pub fn stop_reason(e: &argus_query::Error, cancel: &Cancel) -> Option<usize> {
    match e {
        argus_query::Error::Store(Error::TooLarge { .. }) => Some(0),
        argus_query::Error::Store(Error::Stopped(_)) if cancel.is_set() => Some(2),
        argus_query::Error::Store(Error::Stopped(_)) => Some(1),
        argus_query::Error::MemoryLimit { .. } => Some(3),
        _ => None,
    }
}

/// The store as one query sees it: every read counted and checked.
pub struct Guarded<'a> {
    store: &'a Store,
    deadline: Instant,
    timeout: Duration,
    max_series: u64,
    cancel: Cancel,
    scanned: AtomicU64,
}

impl<'a> Guarded<'a> {
    pub fn new(store: &'a Store, timeout: Duration, max_series: u64, cancel: Cancel) -> Self {
        Guarded {
            store,
            deadline: Instant::now() + timeout,
            timeout,
            max_series,
            cancel,
            scanned: AtomicU64::new(0),
        }
    }

    fn check(&self) -> Result<()> {
        if self.cancel.is_set() {
            return Err(Error::Stopped("the client went away".into()));
        }
        if Instant::now() > self.deadline {
            return Err(Error::Stopped(format!(
                "over the time limit of {} ms (--query-timeout)",
                self.timeout.as_millis()
            )));
        }
        Ok(())
    }

    /// Counts `n` more series read, refusing past the limit.
    fn scan(&self, n: u64) -> Result<()> {
        let total = self.scanned.fetch_add(n, Ordering::Relaxed) + n;
        if total > self.max_series {
            return Err(Error::TooLarge {
                what: "series read by one query (--query-max-series)",
                requested: total as usize,
                limit: self.max_series as usize,
            });
        }
        Ok(())
    }
}

impl SeriesSource for Guarded<'_> {
    fn step_ms(&self) -> i64 {
        self.store.step_ms()
    }

    fn select(&self, m: &Matcher) -> Postings {
        self.store.select(m)
    }

    fn visit_tags(&self, ids: &Postings, f: &mut dyn FnMut(SeriesId, &dyn Tags)) {
        // Tags cannot fail; a query over too many series fails at its values.
        self.store.visit_tags(ids, f)
    }

    fn visit_values(
        &self,
        ids: &Postings,
        req: &ReadRequest,
        f: &mut dyn FnMut(SeriesId, &[f64]),
    ) -> Result<()> {
        self.check()?;
        self.scan(ids.len())?;
        if ids.len() <= CHECK_EVERY {
            return self.store.visit_values(ids, req, f);
        }
        let mut chunk = Postings::new();
        for id in ids {
            chunk.insert(id);
            if chunk.len() == CHECK_EVERY {
                self.store.visit_values(&chunk, req, f)?;
                chunk.clear();
                self.check()?;
            }
        }
        self.store.visit_values(&chunk, req, f)
    }

    fn partition(&self, ids: &Postings, n: usize) -> Vec<Postings> {
        self.store.partition(ids, n)
    }

    fn keep_going(&self) -> Result<()> {
        self.check()
    }
}

/// The setting an operator raises when a query is refused for `e`, if a limit of theirs
/// refused it: named in the message, on a single node and from a cluster's store nodes.
pub fn limit_setting(e: &argus_query::Error) -> Option<&'static str> {
    match e {
        argus_query::Error::MemoryLimit { .. } => Some("--query-max-memory"),
        argus_query::Error::TooMany { what: "lines", .. } => Some("--graph-max-lines"),
        argus_query::Error::TooMany {
            what: "datapoints", ..
        } => Some("--graph-max-datapoints"),
        _ => None,
    }
}

/// `e` as a client reads it, with the setting that refused it (see [`limit_setting`]).
pub fn with_limit_setting(e: &argus_query::Error) -> String {
    match limit_setting(e) {
        Some(setting) => format!("{e} ({setting})"),
        None => e.to_string(),
    }
}
