//! PromQL over Argus's store, for the Prometheus query API that Grafana and Prometheus's tools
//! call. Queries are parsed by `promql-parser`; selectors become store matchers (Argus's
//! `name` tag is PromQL's `__name__`, and dotted names and keys select as they are); and the
//! evaluation reads the store's fixed-step values through [`argus_tsdb::SeriesSource`].
//!
//! What PromQL means over Argus's data (see the README's PromQL section):
//! - the store keeps one value per step, at the step's end; an instant selector at time `t`
//!   takes the value of the step holding `t` (a lookback of one step);
//! - counters are stored as per-second rates (Atlas's normalisation), so `rate(c[w])` is the
//!   mean of the stored rates in the window, `increase` that times the window, `irate` the
//!   last one, and a bare counter selector already reads as a rate;
//! - windows `(t - w, t]` hold the stored steps that end in them, with no extrapolation.

mod eval;
mod select;

pub use eval::{Evaluation, QueryRange, Series, Value};
pub use select::{NAME_LABEL, labels_of, matcher_of, series_matcher, shown_value};

use promql_parser::parser::Expr;

/// Why a query failed, as the Prometheus API classifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A query that does not parse, or a parameter that is wrong: 400.
    BadData,
    /// A query that cannot be evaluated (a limit, a duplicate series in a match): 422.
    Execution,
    /// The query's deadline passed: 503.
    Timeout,
}

impl ErrorKind {
    /// The `errorType` of Prometheus's error envelope.
    pub fn name(&self) -> &'static str {
        match self {
            ErrorKind::BadData => "bad_data",
            ErrorKind::Execution => "execution",
            ErrorKind::Timeout => "timeout",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn bad_data(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::BadData,
            message: message.into(),
        }
    }

    pub fn execution(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Execution,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Parses a PromQL expression; a query that does not parse is `bad_data` with the parser's
/// words, which say where.
pub fn parse(query: &str) -> Result<Expr, Error> {
    if query.trim().is_empty() {
        return Err(Error::bad_data("invalid parameter \"query\": empty query"));
    }
    promql_parser::parser::parse(query)
        .map_err(|e| Error::bad_data(format!("invalid parameter \"query\": {e}")))
}

/// An RFC 3339 time (`2026-01-01T00:00:00Z`, `2026-01-01T01:00:00.5+01:00`) in
/// milliseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// Prometheus's text of a sample value: the shortest decimal that reads back the same, with
/// no exponent; `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_prometheus_prints_them() {
        assert_eq!(format_value(2.0), "2");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(-1.5), "-1.5");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:04Z"), Some(4000));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:04.5+01:00"), Some(4500));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn a_query_that_does_not_parse_is_bad_data_saying_where() {
        let e = parse("sum(rate(x[5m])").unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadData);
        assert!(
            e.message.starts_with("invalid parameter \"query\": "),
            "{e}"
        );
        assert_eq!(parse(" ").unwrap_err().kind, ErrorKind::BadData);
        assert!(parse("1+1").is_ok());
    }
}
