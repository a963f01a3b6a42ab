//! The Stack Language over live events (Atlas's event vocabulary and its data expressions
//! over events). An expression compiles to an [`EventQuery`]: the stream it reads, a typed
//! predicate in the core that MQL compiles to too (so agents evaluate it exactly as they
//! evaluate MQL's `where`), the fields an agent must send, and what comes out:
//!
//! - a query alone: each matching event, whole (Atlas's `EventExpr.Raw`);
//! - `q,(,c1,c2,),:table`: a row per matching event, `[v1, v2]`, null where one is missing;
//! - `q,(,k,),(,p,),:sample`: per step and group, the count of matching events and the
//!   projection of the step's first event (`samples: [[p]]`);
//! - `q,:sum|:count|:max|:min` and their `:by`: a series per group, per step. `:sum` is a
//!   rate per second (the step's total over its seconds; negative values dropped), `:count`
//!   the events per step, `:max` and `:min` the extremes. The field aggregated is named by
//!   `value,<field>,:eq` (removed from the filter, kept in the tags); without it each
//!   event is 1. `:by` drops events lacking a key.
//!
//! The stream is named by `name,<stream>,:eq` among the top-level `:and` clauses (removed
//! from the filter, kept in the tags), as a metric is named in Atlas; without it the
//! expression reads MQL's default stream.
//!
//! Stepped results come out as each step closes (steps are aligned on the Unix epoch, as
//! Atlas's are), as one row per step: `{"timestamp": <step start, ms>, "step": <ms>,
//! "series": [{"label", "tags", "value"[, "samples"]}]}`, series in label order; a step
//! with no data gives no row, a group with no data no series.

use std::collections::BTreeMap;

use ahash::AHashMap;
use argus_mql::ast::{Query as MqlQuery, Select};
use argus_mql::cases::{Clock, Input};
use argus_mql::predicate::{Path, Predicate};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::{AggrOp, DataExpr, DataKind, EventExpr, Item, Query, TimeSeriesExpr};

/// Groups one step may hold (Atlas's `atlas.lwc.events.max-groups`); events of further
/// groups are dropped and counted.
pub const MAX_GROUPS: usize = 10_000;
/// Times (ms) are clamped to ±2^52, so step arithmetic on hostile event times never
/// overflows (as MQL's windows are).
const MAX_TIME_MS: i64 = 1 << 52;
/// Steps shorter than this are refused (the live path closes steps every 100 ms).
pub const MIN_STEP_MS: i64 = 1_000;
/// Steps longer than a day are refused.
pub const MAX_STEP_MS: i64 = 86_400_000;

/// The per-step aggregate of a data expression over events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOp {
    Sum,
    Count,
    Max,
    Min,
}

/// What an event expression produces.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// Each matching event, whole.
    Raw,
    /// A row per matching event: these columns' values, in order.
    Table { columns: Vec<String> },
    /// Per step and group: the count, and the first event's projection.
    Sample {
        by: Vec<String>,
        projection: Vec<String>,
        tags: BTreeMap<String, String>,
    },
    /// Per step and group (one group without `:by`): the aggregate of `value` (1 per
    /// event without it).
    Series {
        op: EventOp,
        value: Option<String>,
        by: Vec<String>,
        tags: BTreeMap<String, String>,
    },
}

/// A Stack Language expression over events, compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct EventQuery {
    /// The expression as written.
    pub text: String,
    pub stream: String,
    /// Typed (see the module's documentation), without the stream and value clauses.
    pub predicate: Predicate,
    pub kind: EventKind,
}

fn invalid(expr: &str, reason: impl Into<String>) -> Error {
    Error::InvalidParam {
        name: "q",
        value: expr.to_string(),
        reason: reason.into(),
    }
}

/// What an expression over events may be, for errors.
const EXPECTED: &str = "over events an expression is a query (the matching events), \
    q,(,columns,),:table, q,(,keys,),(,columns,),:sample, or q,:sum|:count|:max|:min, \
    optionally grouped with (,keys,),:by";

/// Compiles an expression over events. Anything else (math over event series, `:avg`,
/// style, several expressions) is an error that says what is accepted.
pub fn parse(text: &str) -> Result<EventQuery> {
    let stack = crate::run(text)?;
    let [item] = stack.as_slice() else {
        return Err(invalid(
            text,
            format!(
                "expected one expression, the stack holds {}; {EXPECTED}",
                stack.len()
            ),
        ));
    };
    let (query, shape) = match item {
        Item::Query(q) => (q.clone(), Shape::Raw),
        Item::Event(EventExpr::Table { query, columns }) => {
            (query.clone(), Shape::Table(columns.clone()))
        }
        Item::Event(EventExpr::Sample {
            query,
            by,
            projection,
        }) => (query.clone(), Shape::Sample(by.clone(), projection.clone())),
        Item::Expr(TimeSeriesExpr::Data(DataExpr {
            kind,
            cf: None,
            offset_ms: 0,
        })) => {
            let (af, by) = match kind {
                DataKind::Aggregate(af) => (af, Vec::new()),
                DataKind::GroupBy { af, keys } => (af, keys.clone()),
                DataKind::All(_) => {
                    return Err(invalid(text, format!(":all does not apply; {EXPECTED}")));
                }
            };
            let op = match af.op {
                AggrOp::Sum => EventOp::Sum,
                AggrOp::Count => EventOp::Count,
                AggrOp::Max => EventOp::Max,
                AggrOp::Min => EventOp::Min,
                AggrOp::Avg => {
                    return Err(invalid(text, format!(":avg does not apply; {EXPECTED}")));
                }
            };
            (af.query.clone(), Shape::Series(op, by))
        }
        other => {
            return Err(invalid(
                text,
                format!("{} '{other}' does not apply; {EXPECTED}", other.type_name()),
            ));
        }
    };
    compile(text, &query, shape)
}

enum Shape {
    Raw,
    Table(Vec<String>),
    Sample(Vec<String>, Vec<String>),
    Series(EventOp, Vec<String>),
}

fn compile(text: &str, query: &Query, shape: Shape) -> Result<EventQuery> {
    let tags: BTreeMap<String, String> = query
        .exact_tags()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let series = matches!(shape, Shape::Series(..));
    let mut stream = None;
    let mut value = None;
    let mut rest = Query::True;
    for clause in query.conjuncts() {
        match clause {
            Query::Equal { key, value: v } if key == "name" => {
                if stream.replace(v.clone()).is_some_and(|s| s != *v) {
                    return Err(invalid(
                        text,
                        "the stream is named twice (name,<stream>,:eq)",
                    ));
                }
            }
            Query::Equal { key, value: v } if series && key == "value" => {
                if value.replace(v.clone()).is_some_and(|s| s != *v) {
                    return Err(invalid(
                        text,
                        "the value field is named twice (value,<field>,:eq)",
                    ));
                }
            }
            other => rest = rest.and(other.clone()),
        }
    }
    if rest.reads_key("name") {
        return Err(invalid(
            text,
            "over events, name names the stream: give it once, as name,<stream>,:eq joined \
             to the rest with :and",
        ));
    }
    let stream = stream.unwrap_or_else(|| argus_mql::DEFAULT_STREAM.to_string());
    let kind = match shape {
        Shape::Raw => EventKind::Raw,
        Shape::Table(columns) => EventKind::Table { columns },
        Shape::Sample(by, projection) => EventKind::Sample {
            by,
            projection,
            tags,
        },
        Shape::Series(op, by) => EventKind::Series {
            op,
            value,
            by,
            tags,
        },
    };
    Ok(EventQuery {
        text: text.to_string(),
        stream,
        predicate: rest.to_event_predicate(),
        kind,
    })
}

impl EventQuery {
    /// Whether results come per step (`:sample`, data expressions) rather than per event.
    pub fn is_stepped(&self) -> bool {
        matches!(
            self.kind,
            EventKind::Sample { .. } | EventKind::Series { .. }
        )
    }

    /// What an agent must send of a matching event: the columns, the group keys, the value
    /// and the projection; `None` for the whole event. The predicate's fields are not among
    /// them: the agent has evaluated it.
    pub fn fields(&self) -> Option<Vec<Path>> {
        let names: Vec<&String> = match &self.kind {
            EventKind::Raw => return None,
            EventKind::Table { columns } => columns.iter().collect(),
            EventKind::Sample { by, projection, .. } => by.iter().chain(projection).collect(),
            EventKind::Series { value, by, .. } => by.iter().chain(value).collect(),
        };
        let mut paths: Vec<Path> = names.into_iter().map(|k| Path::key(k.as_str())).collect();
        paths.sort();
        paths.dedup();
        Some(paths)
    }

    /// The query as MQL's model holds it, for what both languages share: the stream, the
    /// predicate pushed down to agents, the listing. Its text is the Stack Language's.
    pub fn to_mql(&self) -> MqlQuery {
        MqlQuery {
            text: self.text.clone(),
            select: Select::Star,
            from: vec![self.stream.clone()],
            joins: Vec::new(),
            window: None,
            filter: self.predicate.clone(),
            group_by: Vec::new(),
            having: None,
            order_by: None,
            limit: None,
            sample: None,
        }
    }

    /// What a consumer is told of the expression when it subscribes.
    pub fn describe(&self, step_ms: i64) -> Value {
        let mut out = Map::new();
        out.insert("language".into(), "asl".into());
        let kind = match &self.kind {
            EventKind::Raw => "events",
            EventKind::Table { columns } => {
                out.insert("columns".into(), columns.clone().into());
                "table"
            }
            EventKind::Sample { by, projection, .. } => {
                out.insert("by".into(), by.clone().into());
                out.insert("columns".into(), projection.clone().into());
                "sample"
            }
            EventKind::Series { by, .. } => {
                out.insert("by".into(), by.clone().into());
                "series"
            }
        };
        out.insert("kind".into(), kind.into());
        if self.is_stepped() {
            out.insert("step".into(), step_ms.into());
        }
        Value::Object(out)
    }
}

/// Checks a step for event expressions: whole milliseconds from 1 s to a day.
pub fn check_step(step_ms: i64) -> std::result::Result<i64, String> {
    if (MIN_STEP_MS..=MAX_STEP_MS).contains(&step_ms) {
        Ok(step_ms)
    } else {
        Err(format!(
            "a step over events must be from 1s to 1d, got {step_ms} ms"
        ))
    }
}

/// One group's accumulation within a step.
struct Acc {
    /// Events that contributed (for `:sum`, `:count`, `:max`, `:min`: those with a usable
    /// value).
    n: u64,
    sum: f64,
    max: f64,
    min: f64,
    sample: Option<Vec<Value>>,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            n: 0,
            sum: 0.0,
            max: f64::NEG_INFINITY,
            min: f64::INFINITY,
            sample: None,
        }
    }
}

/// A field's value as a number, as Atlas reads an event's value: numbers as they are,
/// strings that parse as numbers, booleans as 1 and 0; anything else is not a value.
fn numeric(v: Option<&Value>) -> Option<f64> {
    let x = match v? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => return None,
    };
    x.is_finite().then_some(x)
}

/// A group key's value as tag text: strings as they are, numbers and booleans as their
/// JSON text; null, missing, lists and maps put the event in no group.
fn key_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A JSON number: an integer when the value is one, else a double (never NaN here).
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

/// An event expression's running state, driven by its caller's clock as MQL's engine is:
/// [`EventEngine::push`] (or `push_matched` for events an agent filtered),
/// [`EventEngine::tick`] as time passes, [`EventEngine::flush`] when an event-time stream
/// goes idle, [`EventEngine::finish`] at the end of a finite stream.
pub struct EventEngine {
    query: EventQuery,
    step_ms: i64,
    /// Open steps by start: per group key, its accumulation (and the key order of arrival).
    steps: BTreeMap<i64, AHashMap<Vec<String>, Acc>>,
    /// Steps starting before this are closed: an event for one is late.
    closed_before: i64,
    /// Events dropped because a step held [`MAX_GROUPS`] groups.
    pub dropped: u64,
    /// Events for a step already closed (event time, out of order by more than a step).
    pub late: u64,
    /// Events that passed the predicate here ([`EventEngine::push`]).
    pub passed: u64,
}

impl EventEngine {
    /// An engine over `step_ms` steps (checked with [`check_step`] by callers that take it
    /// from users; clamped here to at least 1 ms).
    pub fn new(query: EventQuery, step_ms: i64) -> EventEngine {
        EventEngine {
            query,
            step_ms: step_ms.max(1),
            steps: BTreeMap::new(),
            closed_before: -MAX_TIME_MS,
            dropped: 0,
            late: 0,
            passed: 0,
        }
    }

    pub fn query(&self) -> &EventQuery {
        &self.query
    }

    pub fn step_ms(&self) -> i64 {
        self.step_ms
    }

    /// Events before `origin_ms`'s step are late (a subscription's start).
    pub fn start_at(&mut self, origin_ms: i64) {
        let t = origin_ms.clamp(-MAX_TIME_MS, MAX_TIME_MS);
        self.closed_before = t - t.rem_euclid(self.step_ms);
    }

    /// Events held in open steps' groups (what is pending).
    pub fn pending(&self) -> usize {
        self.steps.values().map(|g| g.len()).sum()
    }

    /// An event at `now_ms`: the predicate first.
    pub fn push(&mut self, event: &Value, now_ms: i64) -> Vec<Value> {
        if !self.query.predicate.matches(event) {
            return self.tick(now_ms);
        }
        self.passed += 1;
        self.push_matched(event, now_ms)
    }

    /// An event that passed the predicate (at an agent, or here) at `now_ms`: its arrival
    /// time, or its own in event-time mode. Steps that ended by then close first.
    pub fn push_matched(&mut self, event: &Value, now_ms: i64) -> Vec<Value> {
        match &self.query.kind {
            EventKind::Raw => vec![event.clone()],
            EventKind::Table { columns } => vec![Value::Array(
                columns
                    .iter()
                    .map(|c| event.get(c).cloned().unwrap_or(Value::Null))
                    .collect(),
            )],
            _ => {
                let out = self.tick(now_ms);
                self.accumulate(event, now_ms.clamp(-MAX_TIME_MS, MAX_TIME_MS));
                out
            }
        }
    }

    fn accumulate(&mut self, event: &Value, t: i64) {
        let start = t - t.rem_euclid(self.step_ms);
        if start < self.closed_before {
            self.late += 1;
            return;
        }
        let (by, value_field, op, projection) = match &self.query.kind {
            EventKind::Sample { by, projection, .. } => (by, None, None, Some(projection)),
            EventKind::Series { op, value, by, .. } => (by, value.as_ref(), Some(*op), None),
            EventKind::Raw | EventKind::Table { .. } => return,
        };
        let mut key = Vec::with_capacity(by.len());
        for k in by {
            match key_text(event.get(k)) {
                Some(v) => key.push(v),
                None => return,
            }
        }
        let x = match value_field {
            Some(f) => match numeric(event.get(f)) {
                Some(x) => x,
                None => return,
            },
            None => 1.0,
        };
        if op == Some(EventOp::Sum) && x < 0.0 {
            return;
        }
        let groups = self.steps.entry(start).or_default();
        let full = groups.len() >= MAX_GROUPS;
        let acc = match groups.get_mut(&key) {
            Some(acc) => acc,
            None if full => {
                self.dropped += 1;
                return;
            }
            None => groups.entry(key).or_insert_with(Acc::new),
        };
        acc.n += 1;
        acc.sum += x;
        acc.max = acc.max.max(x);
        acc.min = acc.min.min(x);
        if let Some(projection) = projection
            && acc.sample.is_none()
        {
            acc.sample = Some(
                projection
                    .iter()
                    .map(|c| event.get(c).cloned().unwrap_or(Value::Null))
                    .collect(),
            );
        }
    }

    /// Time has reached `now_ms`: every step that ended by then closes, and an event for
    /// one of them is late from now on.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Value> {
        if !self.query.is_stepped() {
            return Vec::new();
        }
        let t = now_ms.clamp(-MAX_TIME_MS, MAX_TIME_MS);
        let out = self.close(t, false);
        self.closed_before = self.closed_before.max(t - t.rem_euclid(self.step_ms));
        out
    }

    /// Closes every open step without ending the stream (an event-time stream gone idle).
    pub fn flush(&mut self, _now_ms: i64) -> Vec<Value> {
        self.close(MAX_TIME_MS, true)
    }

    /// The end of a finite stream: every open step closes.
    pub fn finish(&mut self, now_ms: i64) -> Vec<Value> {
        self.flush(now_ms)
    }

    /// Closes the steps that ended by `now` (all of them when `all`), oldest first.
    fn close(&mut self, now: i64, all: bool) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some((&start, _)) = self.steps.first_key_value() {
            if !all && start + self.step_ms > now {
                break;
            }
            let Some((start, groups)) = self.steps.pop_first() else {
                break;
            };
            self.closed_before = self.closed_before.max(start + self.step_ms);
            if let Some(row) = self.step_row(start, groups) {
                out.push(row);
            }
        }
        out
    }

    fn step_row(&self, start: i64, groups: AHashMap<Vec<String>, Acc>) -> Option<Value> {
        let (by, tags, op) = match &self.query.kind {
            EventKind::Sample { by, tags, .. } => (by, tags, None),
            EventKind::Series { by, tags, op, .. } => (by, tags, Some(*op)),
            _ => return None,
        };
        let seconds = self.step_ms as f64 / 1000.0;
        let mut series: Vec<(String, Value)> = groups
            .into_iter()
            .filter(|(_, acc)| acc.n > 0)
            .map(|(key, acc)| {
                let mut line_tags = tags.clone();
                for (k, v) in by.iter().zip(&key) {
                    line_tags.insert(k.clone(), v.clone());
                }
                let label = if by.is_empty() {
                    tags_label(&line_tags)
                } else {
                    let parts: Vec<String> = by
                        .iter()
                        .zip(&key)
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    format!("({})", parts.join(" "))
                };
                let value = match op {
                    None | Some(EventOp::Count) => Value::from(acc.n),
                    Some(EventOp::Sum) => number(acc.sum / seconds),
                    Some(EventOp::Max) => number(acc.max),
                    Some(EventOp::Min) => number(acc.min),
                };
                let mut line = Map::new();
                line.insert("label".into(), label.clone().into());
                line.insert(
                    "tags".into(),
                    Value::Object(line_tags.into_iter().map(|(k, v)| (k, v.into())).collect()),
                );
                line.insert("value".into(), value);
                if let Some(sample) = acc.sample {
                    line.insert("samples".into(), Value::Array(vec![Value::Array(sample)]));
                }
                (label, Value::Object(line))
            })
            .collect();
        if series.is_empty() {
            return None;
        }
        series.sort_by(|a, b| a.0.cmp(&b.0));
        let mut row = Map::new();
        row.insert("timestamp".into(), start.into());
        row.insert("step".into(), self.step_ms.into());
        row.insert(
            "series".into(),
            Value::Array(series.into_iter().map(|(_, s)| s).collect()),
        );
        Some(Value::Object(row))
    }
}

/// `k=v, k2=v2` over sorted keys, Atlas's default legend (`NO TAGS` for none).
fn tags_label(tags: &BTreeMap<String, String>) -> String {
    if tags.is_empty() {
        return "NO TAGS".into();
    }
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs an expression over events as a finite stream, on the clock MQL's offline run uses
/// ([`argus_mql::cases::Clock`]): what `argus eval --events` prints and the cases expect.
/// Events of other streams than the expression's are skipped.
pub fn run_offline(
    query: &EventQuery,
    events: &[Input],
    clock: &Clock,
    step_ms: i64,
) -> Vec<Value> {
    let mut engine = EventEngine::new(query.clone(), step_ms);
    let mut now = 0i64;
    let mut rows = Vec::new();
    for input in events {
        if input.stream.as_deref().is_some_and(|s| s != query.stream) {
            continue;
        }
        let t = match clock {
            Clock::Interval { ms } => {
                now = now.saturating_add(*ms);
                now
            }
            Clock::EventTime { field } => {
                let t = field
                    .get(&input.event)
                    .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
                    .unwrap_or(now);
                now = now.max(t);
                t
            }
        };
        rows.extend(engine.push(&input.event, t));
    }
    rows.extend(engine.finish(now));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(text: &str) -> EventQuery {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn run(text: &str, events: &[Value], step_ms: i64) -> Vec<Value> {
        let inputs: Vec<Input> = events.iter().cloned().map(Input::primary).collect();
        let clock = Clock::EventTime {
            field: Path::key("t"),
        };
        run_offline(&q(text), &inputs, &clock, step_ms)
    }

    #[test]
    fn the_stream_and_the_value_field_are_named_by_clauses() {
        let e = q("name,requests,:eq,status,500,:ge,:and,(,path,latency,),:table");
        assert_eq!(e.stream, "requests");
        assert_eq!(
            e.fields(),
            Some(vec![Path::key("latency"), Path::key("path")])
        );
        let e = q("name,requests,:eq,value,latency,:eq,:and,:sum,(,path,),:by");
        assert_eq!(e.stream, "requests");
        let EventKind::Series {
            op,
            value,
            by,
            tags,
        } = &e.kind
        else {
            panic!("{e:?}")
        };
        assert_eq!(
            (*op, value.as_deref(), by.as_slice()),
            (EventOp::Sum, Some("latency"), &["path".to_string()][..])
        );
        assert_eq!(tags["value"], "latency");
        assert_eq!(e.predicate, Predicate::True);
        assert_eq!(q("status,500,:ge").stream, argus_mql::DEFAULT_STREAM);
        // Outside a data expression, value is a field like any other.
        assert_ne!(q("value,1,:eq").predicate, Predicate::True);
    }

    #[test]
    fn what_does_not_run_over_events_is_refused_saying_what_does() {
        for (text, want) in [
            ("name,a,:eq,name,b,:eq,:and", "named twice"),
            ("name,a,:eq,name,b,:eq,:or", "name names the stream"),
            ("name,a,:re", "name names the stream"),
            ("name,a,:eq,:avg", ":avg does not apply"),
            ("name,a,:eq,:all", ":all does not apply"),
            ("name,a,:eq,:sum,2,:mul", "over events an expression is"),
            ("name,a,:eq,b,c,:eq", "the stack holds 2"),
            ("name,a,:eq,(,),:table", "columns cannot be empty"),
            ("name,a,:eq,(,),(,m,),:sample", "sampleBy cannot be empty"),
            ("name,a,:eq,:sum,1m,:offset", "over events an expression is"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn comparisons_are_typed_over_events() {
        let ge = q("status,500,:ge").predicate;
        assert!(ge.matches(&json!({"status": 503})));
        assert!(ge.matches(&json!({"status": 1000})), "numbers by number");
        assert!(ge.matches(&json!({"status": "503"})));
        assert!(!ge.matches(&json!({"status": "1000"})), "strings by string");
        assert!(!ge.matches(&json!({"status": 404})));
        assert!(!ge.matches(&json!({})));
        let eq = q("status,200,:eq").predicate;
        assert!(eq.matches(&json!({"status": 200})));
        assert!(eq.matches(&json!({"status": 200.0})));
        assert!(eq.matches(&json!({"status": "200"})));
        assert!(!eq.matches(&json!({"status": "200.0"})));
        let ok = q("ok,true,:eq").predicate;
        assert!(ok.matches(&json!({"ok": true})) && ok.matches(&json!({"ok": "true"})));
        let within = q("status,(,200,204,),:in").predicate;
        assert!(
            within.matches(&json!({"status": 204})) && within.matches(&json!({"status": "200"}))
        );
        assert!(!within.matches(&json!({"status": 201})));
        let re = q("status,5,:re").predicate;
        assert!(re.matches(&json!({"status": 503})) && !re.matches(&json!({"status": 404})));
        // The same words over stored series keep string order.
        let stored = crate::tag_predicate("status,500,:ge").unwrap();
        assert!(!stored.matches(&json!({"status": "1000"})));
        // The typed predicate travels to agents as an MQL condition and reads back the same.
        for text in [
            "status,500,:ge,path,/a,:eq,:and",
            "x,-1.25,:lt,y,(,1,b,),:in,:or,:not",
            "ok,true,:eq,a,:has,:and",
        ] {
            let p = q(text).predicate;
            let read = argus_mql::parse_condition(&p.to_string()).unwrap();
            for e in [
                json!({"status": 503, "path": "/a", "x": -2, "y": 1, "ok": true, "a": 0}),
                json!({"status": "503", "path": "/b", "x": "-1.5", "y": "b", "ok": "true"}),
                json!({"status": 200, "x": 0, "y": "1", "ok": false}),
                json!({}),
            ] {
                assert_eq!(read.matches(&e), p.matches(&e), "{p} on {e}");
            }
        }
    }

    #[test]
    fn tables_give_the_columns_in_order_once_per_event() {
        let rows = run(
            "name,requests,:eq,status,500,:ge,:and,(,path,latency,),:table",
            &[
                json!({"t": 1, "status": 503, "path": "/a", "latency": 12}),
                json!({"t": 2, "status": 200, "path": "/b", "latency": 3}),
                json!({"t": 3, "status": "500", "path": "/c"}),
            ],
            1000,
        );
        assert_eq!(rows, [json!(["/a", 12]), json!(["/c", null])]);
    }

    #[test]
    fn counts_per_group_per_step() {
        let events: Vec<Value> = (0..30)
            .map(|i| json!({"t": i * 1000, "path": format!("/{}", i % 3), "n": i}))
            .chain([json!({"t": 29_500})])
            .collect();
        let rows = run("name,s,:eq,:count,(,path,),:by", &events, 10_000);
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(
            rows[0],
            json!({"timestamp": 0, "step": 10_000, "series": [
                {"label": "(path=/0)", "tags": {"name": "s", "path": "/0"}, "value": 4},
                {"label": "(path=/1)", "tags": {"name": "s", "path": "/1"}, "value": 3},
                {"label": "(path=/2)", "tags": {"name": "s", "path": "/2"}, "value": 3},
            ]})
        );
        assert_eq!(rows[2]["timestamp"], 20_000);
        // :sum is a rate per second over the step: (20 + ... + 29) / 10 s, split by path.
        let rows = run("value,n,:eq,:sum", &events, 10_000);
        assert_eq!(rows[2]["series"][0]["value"], json!(24.5));
        assert_eq!(rows[2]["series"][0]["label"], "value=n");
        let rows = run("value,n,:eq,:max,(,path,),:by", &events, 10_000);
        assert_eq!(rows[1]["series"][0]["value"], json!(18));
    }

    #[test]
    fn samples_count_and_keep_the_first_event_of_each_step() {
        let events = [
            json!({"t": 100, "level": "ERROR", "fp": "a", "message": "first"}),
            json!({"t": 200, "level": "ERROR", "fp": "a", "message": "second"}),
            json!({"t": 300, "level": "ERROR", "fp": "b"}),
            json!({"t": 400, "level": "INFO", "fp": "b", "message": "skipped"}),
            json!({"t": 1100, "level": "ERROR", "fp": "a", "message": "third"}),
        ];
        let rows = run("level,ERROR,:eq,(,fp,),(,message,),:sample", &events, 1000);
        assert_eq!(
            rows,
            [
                json!({"timestamp": 0, "step": 1000, "series": [
                    {"label": "(fp=a)", "tags": {"fp": "a", "level": "ERROR"}, "value": 2,
                     "samples": [["first"]]},
                    {"label": "(fp=b)", "tags": {"fp": "b", "level": "ERROR"}, "value": 1,
                     "samples": [[null]]},
                ]}),
                json!({"timestamp": 1000, "step": 1000, "series": [
                    {"label": "(fp=a)", "tags": {"fp": "a", "level": "ERROR"}, "value": 1,
                     "samples": [["third"]]},
                ]}),
            ]
        );
    }

    #[test]
    fn late_events_and_group_caps_are_counted_not_kept() {
        let mut e = EventEngine::new(q(":true,:count,(,k,),:by"), 1000);
        let _ = e.push(&json!({"k": "a"}), 5_500);
        assert_eq!(e.tick(6_000).len(), 1);
        let _ = e.push(&json!({"k": "a"}), 5_900);
        assert_eq!(e.late, 1);
        for i in 0..MAX_GROUPS + 5 {
            let _ = e.push(&json!({"k": i}), 7_000);
        }
        assert_eq!(e.dropped, 5);
        let rows = e.finish(7_000);
        assert_eq!(rows[0]["series"].as_array().map(Vec::len), Some(MAX_GROUPS));
        // Hostile times stay bounded.
        for t in [i64::MIN, i64::MAX, 0] {
            let _ = e.push(&json!({"k": "a"}), t);
            let _ = e.tick(t);
        }
        let _ = e.flush(0);
    }
}
