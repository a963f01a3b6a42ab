//! Errors of the store.

/// Everything the store can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bytes that should hold an encoded block (or a file) are not valid.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A sample falls outside the window the store keeps.
    #[error("timestamp {ts_ms} is outside the retention window [{min_ms}, {max_ms}]")]
    OutOfRetention {
        ts_ms: i64,
        min_ms: i64,
        max_ms: i64,
    },
    /// A read asked for a step the store cannot produce.
    #[error(
        "invalid step {step_ms} ms: must be a positive multiple of the stored step {stored_step_ms} ms"
    )]
    InvalidStep { step_ms: i64, stored_step_ms: i64 },
    /// A sample names a series id the store does not have.
    #[error("unknown series id {id}")]
    UnknownSeries { id: u32 },
    /// A request is larger than the store allows.
    #[error("too large: {requested} {what} requested, the limit is {limit}")]
    TooLarge {
        what: &'static str,
        requested: usize,
        limit: usize,
    },
    /// A read asked for an empty or reversed time range.
    #[error("invalid time range: start {start_ms} must not be after end {end_ms}")]
    InvalidRange { start_ms: i64, end_ms: i64 },
    /// A new series would go over a configured cap; existing series keep ingesting.
    #[error(
        "series limit reached: {count} {what}, the limit is {limit} ({setting}); new series are \
         refused, existing ones keep ingesting"
    )]
    SeriesLimit {
        what: String,
        count: u64,
        limit: u64,
        setting: &'static str,
    },
    /// A read stopped before its end: its deadline passed or its client went away.
    #[error("query stopped: {0}")]
    Stopped(String),
    /// The store could not make a write durable (a full disk, an I/O error); nothing of the
    /// write was applied, and the same write may succeed later.
    #[error("storage unavailable, retry later: {0}")]
    Unavailable(String),
}

impl Error {
    /// Whether the same request may succeed later (the caller should say "retry").
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

pub type Result<T> = std::result::Result<T, Error>;
