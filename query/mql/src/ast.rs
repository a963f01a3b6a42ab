//! A parsed MQL query.

use serde_json::Value;

use crate::predicate::{Path, Predicate};

/// The stream a query without `from` reads, as in Mantis.
pub const DEFAULT_STREAM: &str = "defaultStream";

#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// The query as written.
    pub text: String,
    pub select: Select,
    /// Stream names; [`DEFAULT_STREAM`] when the query has no `from`.
    pub from: Vec<String>,
    /// `join <streams> N seconds on <key>`, in order: each enriches the events that came
    /// through the ones before.
    pub joins: Vec<Join>,
    pub window: Option<Window>,
    /// `where`; `Predicate::True` when absent.
    pub filter: Predicate,
    pub group_by: Vec<Path>,
    pub having: Option<Predicate>,
    pub order_by: Option<OrderBy>,
    pub limit: Option<u64>,
    pub sample: Option<Sample>,
}

/// `join b 10 seconds on e['node']`: an inner join of the events so far (the primary side)
/// with the events of `streams` (the joining side) that carry the same key within the
/// window. Each primary event comes out at most once, merged with the first joining event of
/// its key whose time is within `within_ms` of its own, before or after; its own fields win.
/// An event whose key is missing or null joins nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct Join {
    pub streams: Vec<String>,
    pub within_ms: i64,
    pub key: Path,
}

impl Query {
    /// Every stream the query reads: `from`, then the joined streams, each once.
    pub fn streams(&self) -> Vec<String> {
        let mut out = self.from.clone();
        for j in &self.joins {
            for s in &j.streams {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
        }
        out
    }

    /// Whether the query reads `stream`.
    pub fn reads(&self, stream: &str) -> bool {
        self.from.iter().any(|s| s == stream)
            || self
                .joins
                .iter()
                .any(|j| j.streams.iter().any(|s| s == stream))
    }

    /// Whether `where` and sampling can run where the events are (at an agent, on each
    /// stream alone). Not with a join: they read the joined event, which exists only once
    /// both sides have met on the server.
    pub fn filters_at_source(&self) -> bool {
        self.joins.is_empty()
    }

    /// Whether the select list aggregates (then results come per window, or at the end).
    pub fn is_aggregate(&self) -> bool {
        match &self.select {
            Select::Star => false,
            Select::Items(items) => items
                .iter()
                .any(|i| matches!(i.expr, SelectExpr::Aggregate { .. })),
        }
    }

    /// Every path an event must carry for the rest of the query to run on the server:
    /// the union of what select, where, group by, order by, sampling and join keys read
    /// (from every stream, joined ones too); `None` when
    /// the whole event is needed (`select *`, a prefix selection).
    pub fn needed_paths(&self) -> Option<Vec<Path>> {
        let mut out = Vec::new();
        match &self.select {
            Select::Star => return None,
            Select::Items(items) => {
                for item in items {
                    match &item.expr {
                        SelectExpr::Path(p) => out.push(p.clone()),
                        SelectExpr::Prefix(_) => return None,
                        SelectExpr::Aggregate {
                            arg: AggArg::Path { path, .. },
                            ..
                        } => out.push(path.clone()),
                        SelectExpr::Aggregate { .. }
                        | SelectExpr::Literal(_)
                        | SelectExpr::Tick => {}
                    }
                }
            }
        }
        self.filter.paths(&mut out);
        out.extend(self.group_by.iter().cloned());
        if let Some(o) = &self.order_by
            && !self.is_aggregate()
        {
            out.push(o.path.clone());
        }
        if let Some(s) = &self.sample {
            out.extend(s.keys.iter().cloned());
        }
        out.extend(self.joins.iter().map(|j| j.key.clone()));
        // A `[*]` path needs the whole list it fans out over.
        for p in &mut out {
            if let Some(i) =
                p.0.iter()
                    .position(|s| *s == crate::predicate::Segment::Any)
            {
                p.0.truncate(i);
            }
        }
        out.sort();
        out.dedup();
        // A path under another one already sent adds nothing.
        let kept: Vec<Path> = out
            .iter()
            .filter(|p| !out.iter().any(|q| q != *p && p.0.starts_with(&q.0)))
            .cloned()
            .collect();
        Some(kept)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Select {
    /// `select *`: events as they are.
    Star,
    Items(Vec<SelectItem>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SelectItem {
    pub expr: SelectExpr,
    /// `as 'name'`: the output column's name.
    pub alias: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SelectExpr {
    Path(Path),
    /// `e[^'res']`: every top-level key starting with the prefix.
    Prefix(String),
    /// A string, number, boolean or null literal.
    Literal(Value),
    /// `tick()`: the time the row is made, in ms.
    Tick,
    Aggregate {
        func: AggFunc,
        arg: AggArg,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AggFunc {
    Count,
    Sum,
    Min,
    Max,
    Average,
    List,
    /// `p50`, `p99`, `p995` (99.5): the percentile's rank in percent.
    Percentile(f64),
}

impl AggFunc {
    /// The upper-case name used in output columns (`COUNT`, `P99`).
    pub fn name(&self) -> String {
        match self {
            AggFunc::Count => "COUNT".into(),
            AggFunc::Sum => "SUM".into(),
            AggFunc::Min => "MIN".into(),
            AggFunc::Max => "MAX".into(),
            AggFunc::Average => "AVERAGE".into(),
            AggFunc::List => "LIST".into(),
            AggFunc::Percentile(p) => {
                let digits = format!("{p}").replace('.', "");
                format!("P{digits}")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum AggArg {
    /// `count(*)`: every event.
    Star,
    Path {
        path: Path,
        distinct: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// `window N`: consecutive windows of N ms.
    Tumbling { span_ms: i64 },
    /// `window N M`: windows of N ms starting every M ms.
    Sliding { span_ms: i64, shift_ms: i64 },
    /// `window |N|`: every N events.
    Count { events: u64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrderBy {
    pub path: Path,
    pub descending: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Pass when a random number mod `factor` is below `threshold`.
    Random,
    /// Pass when a hash of the `keys` values (and the salt) mod `factor` is below
    /// `threshold`: the same key values always pass or always not.
    Sticky,
    /// Pass at most `threshold` events per second.
    Rps,
    /// No strategy, an unknown one, or a threshold at or above the factor: everything passes.
    All,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub strategy: Strategy,
    pub threshold: u64,
    pub factor: u64,
    pub salt: u64,
    pub keys: Vec<Path>,
    /// Multiply `COUNT(...)` and `SUM(...)` outputs by factor / threshold.
    pub extrapolate: bool,
}
