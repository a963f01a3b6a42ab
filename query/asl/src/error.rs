//! Errors of the query crate: syntax, interpretation, graph parameters, limits, the store.

/// Everything a query can be refused for. Positions are byte offsets into the expression.
/// All variants except [`Error::Store`] are the caller's fault (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `:word` that no vocabulary defines.
    #[error("unknown word ':{name}' at position {pos}")]
    UnknownWord { name: String, pos: usize },

    /// A word exists but none of its overloads accepts the items on top of the stack.
    #[error(
        "no matches for word ':{name}' with stack {stack} at position {pos}, candidates: {candidates}"
    )]
    NoMatch {
        name: String,
        /// Item types, bottom to top, e.g. `[String,Query]`.
        stack: String,
        /// Signatures of the overloads that were tried.
        candidates: String,
        pos: usize,
    },

    /// A `)` with no `(` before it.
    #[error("unmatched closing parenthesis at position {pos}")]
    UnmatchedClose { pos: usize },

    /// A `(` that is never closed.
    #[error("unmatched opening parenthesis at position {pos}")]
    UnmatchedOpen { pos: usize },

    /// A `/*` that is never closed.
    #[error("unclosed comment starting at position {pos}")]
    UnclosedComment { pos: usize },

    /// A pattern given to `:re` or `:reic` that does not compile.
    #[error("invalid regex '{pattern}' for word ':{word}' at position {pos}: {reason}")]
    BadRegex {
        word: String,
        pattern: String,
        pos: usize,
        reason: String,
    },

    /// A word got items of the right type with values it cannot use.
    #[error("invalid parameters for word ':{word}' at position {pos}: {reason}")]
    InvalidParameters {
        word: String,
        pos: usize,
        reason: String,
    },

    /// Nesting or copying beyond what any sensible expression needs.
    #[error("expression too complex at position {pos}: {reason}")]
    TooComplex { pos: usize, reason: String },

    /// An item left on the stack that cannot be drawn as lines.
    #[error(
        "cannot graph {kind} '{item}': only queries and time series expressions can be graphed"
    )]
    NotTimeSeries { kind: &'static str, item: String },

    /// `:table` or `:sample` asked of stored series.
    #[error(
        "'{item}' is an event expression: it runs over live events (GET /api/v1/live?q=..., \
         argus live, argus eval --events), not over stored series"
    )]
    EventOnly { item: String },

    /// A graph request parameter (`s`, `e`, `step`, `format`, `q`) that cannot be used.
    #[error("invalid parameter {name}={value:?}: {reason}")]
    InvalidParam {
        name: &'static str,
        value: String,
        reason: String,
    },

    /// A request over a configured limit (lines, datapoints).
    #[error("too many {what}: {requested} > limit {limit}")]
    TooMany {
        what: &'static str,
        requested: usize,
        limit: usize,
    },

    /// The evaluation would hold more memory than the request's limit.
    #[error(
        "the query needs more than its limit of {limit} bytes of memory (at least {requested})"
    )]
    MemoryLimit { requested: usize, limit: usize },

    /// An expression that parsed but cannot be evaluated on the data it met (e.g. a binary
    /// operation that matches several lines to one).
    #[error("{0}")]
    Evaluation(String),

    /// The store refused or failed a read.
    #[error("store: {0}")]
    Store(#[from] argus_tsdb::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
