//! PromQL over Argus's store, for the Prometheus query API that Grafana and Prometheus's tools
//! call. Queries are parsed by `promql-parser`; selectors become store matchers (Argus's
//! `name` tag is PromQL's `__name__`, and dotted names and keys select as they are); and the
//! evaluation reads the store's fixed-step values through [`argus_tsdb::SeriesSource`].
//!
//! What PromQL means over Argus's data (see the README's PromQL section):
//! - the store keeps one value per step, at the step's end; an instant selector at time `t`
//!   takes the value of the last step ending at or before `t`, or of the step before it (a
//!   lookback of one step);
//! - counters are stored as per-second rates (Atlas's normalisation), so `increase(c[w])` is
//!   what the stored rates in the window add up to (each times the step), `rate` that over
//!   `w`, `irate` the last one, and a bare counter selector already reads as a rate;
//! - windows `(t - w, t]` hold the stored steps that end in them (open at the left, as
//!   Prometheus 3), with no extrapolation.

mod eval;
pub mod fuzzing;
mod gather;
mod partial;
mod select;
mod streamed;

pub use eval::{Evaluation, QueryRange, Series, Value};
pub use gather::Gather;
pub use partial::{
    Partial, PushedAggregate, decode_series, encode_series, evaluate_partial, evaluate_top,
};
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

/// Most operators and parentheses a query may have. Each can deepen the syntax tree by a
/// level, and evaluating, printing and dropping the tree take a stack frame per level: a
/// query of `1+1+…` with 100,000 terms would otherwise overflow the thread's stack and take
/// the server down. Real queries have tens.
pub const MAX_NESTING: usize = 1_000;

/// An upper bound on a query's nesting depth: its operators, opening parentheses and
/// set/`atan2` keywords, outside string literals.
fn nesting_bound(query: &str) -> usize {
    let mut count = 0;
    outside_strings(query, &mut |c| {
        if matches!(
            c,
            '(' | '+' | '-' | '*' | '/' | '%' | '^' | '<' | '>' | '=' | '!'
        ) {
            count += 1;
        }
    });
    count
        + query
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .filter(|w| matches!(*w, "and" | "or" | "unless" | "atan2"))
            .count()
}

/// Calls `f` with each character of `text` outside string literals (`"…"`, `'…'`, `` `…` ``,
/// the first two with backslash escapes); returns the quote of a string left open.
fn outside_strings(text: &str, f: &mut dyn FnMut(char)) -> Option<char> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q != '`' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            other => f(other),
        }
    }
    quote
}

/// Parses a PromQL expression; a query that does not parse is `bad_data` with the parser's
/// words, which say where.
pub fn parse(query: &str) -> Result<Expr, Error> {
    if query.trim().is_empty() {
        return Err(Error::bad_data("invalid parameter \"query\": empty query"));
    }
    let nesting = nesting_bound(query);
    if nesting > MAX_NESTING {
        return Err(Error::bad_data(format!(
            "invalid parameter \"query\": the query has {nesting} operators and parentheses, \
             more than {MAX_NESTING}: it nests too deeply to evaluate"
        )));
    }
    promql_parser::parser::parse(query).map_err(|e| {
        // Finding the position parses the query's prefixes some hundred times: bounded, so a
        // long query of garbage costs the server little.
        if query.len() > MAX_POSITIONED_QUERY {
            return Error::bad_data(format!("invalid parameter \"query\": parse error: {e}"));
        }
        let (line, column, near) = error_position(query);
        Error::bad_data(format!(
            "invalid parameter \"query\": {line}:{column}: parse error{near}: {e}"
        ))
    })
}

/// The longest query whose parse errors say where (bytes).
const MAX_POSITIONED_QUERY: usize = 4_096;

/// Where a query that does not parse goes wrong, as Prometheus says it (`line:column`, both
/// from 1), with the text there. The parser does not report positions, so this finds the
/// longest prefix that some short completion (a value, a name, a closing of what is open)
/// still makes a query: the error is at the character after it.
fn error_position(query: &str) -> (usize, usize, String) {
    const FILLS: [&str; 13] = [
        "", "1", " 1", "x", " x", "\"a\"", "=\"a\"", "a=\"a\"", "5m", "m", " by (a)", "[5m]",
        "x[5m]",
    ];
    const TAILS: [&str; 3] = ["", " (x)", "(x)"];
    let viable = |prefix: &str| {
        FILLS.iter().any(|fill| {
            let open = format!("{prefix}{fill}");
            let closed = format!("{open}{}", closers(&open));
            TAILS
                .iter()
                .any(|tail| promql_parser::parser::parse(&format!("{closed}{tail}")).is_ok())
        })
    };
    // Character boundaries; the empty prefix is viable. Binary search for the longest
    // viable prefix (viability only shrinks as the prefix grows).
    let bounds: Vec<usize> = query
        .char_indices()
        .map(|(i, _)| i)
        .chain([query.len()])
        .collect();
    let (mut lo, mut hi) = (0, bounds.len() - 1);
    if viable(query) {
        lo = hi;
    } else {
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            if viable(&query[..bounds[mid]]) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    let at = bounds[lo];
    let before = &query[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let near = match query[at..].chars().next() {
        Some(c) => format!(" at {:?}", c.to_string()),
        None => " at the end of the query".to_string(),
    };
    (line, column, near)
}

/// What closes the strings and brackets left open at the end of `text`.
fn closers(text: &str) -> String {
    let mut open = Vec::new();
    let quote = outside_strings(text, &mut |c| match c {
        '(' => open.push(')'),
        '{' => open.push('}'),
        '[' => open.push(']'),
        ')' | '}' | ']' => {
            open.pop();
        }
        _ => {}
    });
    quote.into_iter().chain(open.into_iter().rev()).collect()
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
        // Where, as Prometheus says it: line:column, and the text there.
        for (query, at) in [
            ("x{a=}", "1:5: parse error at \"}\""),
            ("rate(x[5m)", "1:10: parse error at \")\""),
            ("sum(\n  rate(x[5m]) by)", "2:15: parse error at \"b\""),
            ("1 +", "1:4: parse error at the end of the query"),
        ] {
            let e = parse(query).unwrap_err();
            assert!(e.message.contains(at), "{query:?}: {e}");
        }
        assert!(parse("1+1").is_ok());
        // Nesting is bounded before parsing; strings do not count.
        let deep = format!("1{}", "+1".repeat(MAX_NESTING + 1));
        match parse(&deep) {
            Err(e) => assert!(e.message.contains("nests too deeply"), "{e}"),
            Ok(_) => panic!("a query deeper than the limit parsed"),
        }
        assert!(parse(&format!("1{}", "+1".repeat(MAX_NESTING))).is_ok());
        assert!(parse(&format!("x{{a=\"{}\"}}", "(-".repeat(5_000))).is_ok());
        assert_eq!(
            nesting_bound("sum by (a) (rate(x{b=~\"c+\"}[5m])) or y > 1"),
            6
        );
    }
}
