//! MQL semantics as data: case files that say what a query makes of some events, and the
//! offline run that every path must agree with. The query crate runs the cases through the
//! [`Engine`] (`query/tests/mql.rs`); the end-to-end tests run the same files through the
//! `argus mql` command and through a live subscription, with [`parse_cases`] and
//! [`Case::check`] from here.
//!
//! # Case files (`query/tests/mql/*.test`)
//!
//! Line based. A line whose first non-blank character is `#` is a comment; blank lines are
//! ignored. Directives start in the first column; the data under `query`, `in` and `out`
//! is indented (spaces or tabs).
//!
//! ```text
//! case <name>            starts a case; the name is the rest of the line
//! query <MQL>            the query; indented lines right below continue it (joined by
//!                        newlines)
//! asl <expression>       instead of query: a Stack Language expression over events (the
//!                        cases of `query/asl/tests/events/`, which the Stack Language's
//!                        runners run; MQL's skip them)
//! step <duration>        optional, with asl: the step of :sample and data expressions;
//!                        default 1m
//! interval-ms <N>        optional: the clock advances N ms before each event (the first
//!                        event is at N ms); default 10
//! time-field <field>     optional, instead: each event's time is this field, a number of
//!                        ms (`ts`, `e['req']['ts']`)
//! seed <N>               optional: the seed of random sampling; default 1
//! unordered              optional: the expected rows may come in any order
//! in                     the events, one JSON object per indented line below; absent: no
//!                        events. `@<stream> ` before a line says its stream (for `join`);
//!                        without it an event is of the query's first stream
//! out                    the expected rows, one JSON value per indented line below; with
//!                        no line below: no rows at all
//! rows <min>..<max>      instead of `out`: how many rows (inclusive; `rows N` is exactly
//!                        N), for random sampling
//! error <text>           instead of `out`: the query does not parse, and the error's
//!                        message contains <text>
//! ```
//!
//! Under `in` and `out`, `repeat <N> <template>` stands for N lines: the template with
//! `$i` replaced by 0, 1, … N−1, `$i%K` by i mod K and `$i/K` by i div K (`repeat 3 {"u":
//! "u$i%2"}` is `{"u":"u0"}`, `{"u":"u1"}`, `{"u":"u0"}`).
//!
//! Rows compare as JSON values, except that numbers compare as numbers (`2` matches `2.0`;
//! doubles within a relative 1e-9).
//!
//! ```text
//! # Missing fields are nil: `!=` is true, ordering is false.
//! case nil rules
//! query select a from s where b != 1 and not (c > 0)
//! in
//!   {"a": 1, "b": 1}
//!   {"a": 2}
//!   {"a": 3, "b": 2, "c": 1}
//! out
//!   {"a": 2}
//! ```
//!
//! # The offline run
//!
//! [`run_offline`] (and [`Offline`], its streaming form) is how `argus mql` runs a query over
//! a file, and what the cases expect: a virtual clock that starts at 0 and advances by the
//! interval before each event (or is the event's own time, in event-time mode); before
//! each event [`Engine::tick`] at its time, then [`Engine::push`]; at the end
//! [`Engine::finish`] at the last time. Time windows start at 0 and every shift after it;
//! in event-time mode they are aligned the same way on the Unix epoch (a sliding window may
//! start before the first event), as in a live event-time subscription.

use std::path::Path as FsPath;

use serde_json::Value;

use super::ast::Query;
use super::eval::{Engine, Row};
use super::parser::{ParseError, parse, parse_path};
use crate::predicate::Path;

/// The clock step of the offline run when a case or the command names none.
pub const DEFAULT_INTERVAL_MS: i64 = 10;
/// The step of a Stack Language case that names none: 1 minute, as Atlas's default.
pub const DEFAULT_STEP_MS: i64 = 60_000;
/// The sampling seed of a case that names none.
pub const DEFAULT_SEED: u64 = 1;

/// How the offline run reads time.
#[derive(Clone, Debug, PartialEq)]
pub enum Clock {
    /// The clock advances by `ms` before each event: the first event is at `ms`.
    Interval { ms: i64 },
    /// Each event's time is this field's value (ms, a JSON number). An event without one
    /// takes the latest time seen so far (0 at first). Events may come out of order; one
    /// older than every window still open is late (dropped and counted).
    EventTime { field: Path },
}

impl Default for Clock {
    fn default() -> Self {
        Clock::Interval {
            ms: DEFAULT_INTERVAL_MS,
        }
    }
}

/// What a case expects.
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    /// These rows; in this order unless `ordered` is false.
    Rows { rows: Vec<Value>, ordered: bool },
    /// A number of rows in `min..=max`.
    Count { min: usize, max: usize },
    /// The query does not parse, with an error message containing this.
    Error(String),
}

/// One case of a case file.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub name: String,
    /// The file it came from, as given to [`parse_cases`].
    pub file: String,
    /// The line of its `case` directive.
    pub line: usize,
    pub query: String,
    /// The query is a Stack Language expression over events (`asl`), not MQL.
    pub asl: bool,
    /// The step of a stepped Stack Language expression (`step`), in ms.
    pub step_ms: i64,
    pub clock: Clock,
    pub seed: u64,
    pub events: Vec<Input>,
    pub expect: Expect,
}

/// An input event and the stream it arrives on.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// `None`: the query's first stream.
    pub stream: Option<String>,
    pub event: Value,
}

impl Input {
    /// An event of the query's first stream.
    pub fn primary(event: Value) -> Input {
        Input {
            stream: None,
            event,
        }
    }
}

impl Case {
    /// Where the case is written: `file:line (name)`.
    pub fn location(&self) -> String {
        format!("{}:{} ({})", self.file, self.line, self.name)
    }

    /// Runs the case offline: its query parsed and run over its events.
    pub fn run(&self) -> Result<Vec<Row>, ParseError> {
        let q = parse(&self.query)?;
        Ok(run_offline(&q, &self.events, self.clock.clone(), self.seed))
    }

    /// Whether the expectation depends on the offline run's virtual clock: time windows,
    /// joins or `tick()` on the interval clock, or RPS sampling. Such a case cannot be replayed on a
    /// wall clock (a live subscription) and expect the same rows; every other case can
    /// (event-time cases included). A case whose query does not parse needs no clock.
    pub fn needs_virtual_clock(&self) -> bool {
        use super::ast::{Select, SelectExpr, Strategy, Window};
        let Ok(q) = parse(&self.query) else {
            return false;
        };
        let interval = matches!(self.clock, Clock::Interval { .. });
        // A join's window is time too.
        let time_window = matches!(
            q.window,
            Some(Window::Tumbling { .. } | Window::Sliding { .. })
        ) || !q.joins.is_empty();
        let tick = match &q.select {
            Select::Star => false,
            Select::Items(items) => items.iter().any(|i| i.expr == SelectExpr::Tick),
        };
        let rps = q
            .sample
            .as_ref()
            .is_some_and(|s| s.strategy == Strategy::Rps);
        rps || (interval && (time_window || tick))
    }

    /// Checks an outcome against the expectation: the rows a run produced, or the error
    /// message of a query that did not parse. `Err` says what differs.
    pub fn check(&self, outcome: Result<&[Value], &str>) -> Result<(), String> {
        let fail = |what: String| Err(format!("{}: {what}", self.location()));
        match (&self.expect, outcome) {
            (Expect::Error(want), Err(msg)) => {
                if msg.contains(want.as_str()) {
                    Ok(())
                } else {
                    fail(format!("error {msg:?} does not contain {want:?}"))
                }
            }
            (Expect::Error(want), Ok(rows)) => fail(format!(
                "expected an error containing {want:?}, got {} rows:\n{}",
                rows.len(),
                ndjson(rows)
            )),
            (_, Err(msg)) => fail(format!("the query failed: {msg}")),
            (Expect::Count { min, max }, Ok(rows)) => {
                if (*min..=*max).contains(&rows.len()) {
                    Ok(())
                } else {
                    fail(format!("expected {min}..{max} rows, got {}", rows.len()))
                }
            }
            (
                Expect::Rows {
                    rows: want,
                    ordered,
                },
                Ok(got),
            ) => {
                let same = if *ordered {
                    want.len() == got.len() && want.iter().zip(got).all(|(w, g)| values_match(w, g))
                } else {
                    unordered_match(want, got)
                };
                if same {
                    Ok(())
                } else {
                    fail(format!(
                        "rows differ{}\nexpected:\n{}got:\n{}",
                        if *ordered { "" } else { " (in any order)" },
                        ndjson(want),
                        ndjson(got)
                    ))
                }
            }
        }
    }
}

fn ndjson(rows: &[Value]) -> String {
    rows.iter().map(|r| format!("  {r}\n")).collect()
}

fn unordered_match(want: &[Value], got: &[Value]) -> bool {
    if want.len() != got.len() {
        return false;
    }
    let mut used = vec![false; got.len()];
    want.iter().all(|w| {
        let found = (0..got.len()).find(|&i| !used[i] && values_match(w, &got[i]));
        found.map(|i| used[i] = true).is_some()
    })
}

/// JSON equality, except that numbers compare as numbers: integers exactly, anything else
/// within a relative 1e-9 (`2` matches `2.0`).
pub fn values_match(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => {
            if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
                return x == y;
            }
            match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
                _ => false,
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| values_match(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, x)| b.get(k).is_some_and(|y| values_match(x, y)))
        }
        (a, b) => a == b,
    }
}

/// A query running offline over events one at a time, on the virtual clock [`Clock`]
/// describes: what `argus mql` streams a file through.
pub struct Offline {
    engine: Engine,
    clock: Clock,
    /// The latest time so far: the last event's (interval clock), or the latest event
    /// time seen (event-time clock).
    now: i64,
}

impl Offline {
    pub fn new(query: Query, clock: Clock, seed: u64) -> Offline {
        let mut engine = Engine::new(query, seed);
        if let Clock::Interval { .. } = clock {
            // The stream starts at 0: the first windows start there (as Mantis's buffers
            // start at subscription).
            engine.start_at(0);
        }
        Offline {
            engine,
            clock,
            now: 0,
        }
    }

    /// The time the clock gives `event` (and moves to).
    fn time_of(&mut self, event: &Value) -> i64 {
        match &self.clock {
            Clock::Interval { ms } => {
                self.now = self.now.saturating_add(*ms);
                self.now
            }
            Clock::EventTime { field } => {
                let t = field
                    .get(event)
                    .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
                    .unwrap_or(self.now);
                self.now = self.now.max(t);
                t
            }
        }
    }

    /// One event of the query's first stream: the clock moves, windows that ended close,
    /// then the event goes in.
    pub fn push(&mut self, event: &Value) -> Vec<Row> {
        let t = self.time_of(event);
        let mut out = self.engine.tick(t);
        out.extend(self.engine.push(event, t));
        out
    }

    /// One event of `stream` (`None`: the query's first), as [`Offline::push`].
    pub fn push_from(&mut self, stream: Option<&str>, event: &Value) -> Vec<Row> {
        let Some(stream) = stream else {
            return self.push(event);
        };
        let t = self.time_of(event);
        let mut out = self.engine.tick(t);
        out.extend(self.engine.push_from(stream, event, t));
        out
    }

    /// Closes the time windows holding events without ending the stream, as a live
    /// event-time subscription does when its stream goes idle.
    pub fn flush(&mut self) -> Vec<Row> {
        self.engine.flush(self.now)
    }

    /// The end of the input: what is open closes at the last time.
    pub fn finish(&mut self) -> Vec<Row> {
        self.engine.finish(self.now)
    }

    /// Whether nothing more can come out (a `limit` reached): the rest of the input may be
    /// skipped.
    pub fn done(&self) -> bool {
        self.engine.done()
    }

    /// The engine, for its counters (`late`, `dropped`).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// Runs `query` over `events` offline (see the module's documentation): the rows, in the
/// order they come out.
pub fn run_offline(query: &Query, events: &[Input], clock: Clock, seed: u64) -> Vec<Row> {
    let mut run = Offline::new(query.clone(), clock, seed);
    let mut rows = Vec::new();
    for e in events {
        if run.done() {
            break;
        }
        rows.extend(run.push_from(e.stream.as_deref(), &e.event));
    }
    rows.extend(run.finish());
    rows
}

/// The `*.test` files of a directory, in name order; none is an error (a moved or emptied
/// directory must not pass as "every case ran"). The Stack Language's case files are
/// listed the same way.
pub fn test_files(dir: &FsPath) -> Result<Vec<std::path::PathBuf>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no .test files in {}", dir.display()));
    }
    Ok(files)
}

/// Reads every `*.test` file of a directory, in name order.
pub fn load_dir(dir: &FsPath) -> Result<Vec<Case>, String> {
    let mut out = Vec::new();
    for f in test_files(dir)? {
        out.extend(load_file(&f)?);
    }
    Ok(out)
}

/// Reads one case file.
pub fn load_file(path: &FsPath) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    parse_cases(&name, &text)
}

/// Where indented lines go.
#[derive(Clone, Copy, PartialEq)]
enum Block {
    None,
    Query,
    In,
    Out,
}

/// Parses a case file's text; `file` names it in errors and in [`Case::file`].
pub fn parse_cases(file: &str, text: &str) -> Result<Vec<Case>, String> {
    struct Draft {
        case: Case,
        query: bool,
        expect: bool,
        clock: bool,
        unordered: bool,
    }
    let mut cases = Vec::new();
    let mut draft: Option<Draft> = None;
    let mut block = Block::None;
    let finish = |d: Draft, cases: &mut Vec<Case>| -> Result<(), String> {
        let at = format!("{file}:{} ({})", d.case.line, d.case.name);
        if !d.query {
            return Err(format!("{at}: no query"));
        }
        if !d.expect {
            return Err(format!("{at}: no expectation (out, rows or error)"));
        }
        let mut case = d.case;
        if let Expect::Rows { ordered, .. } = &mut case.expect {
            *ordered = !d.unordered;
        }
        cases.push(case);
        Ok(())
    };
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |m: String| format!("{file}:{line_no}: {m}");
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            let d = draft
                .as_mut()
                .ok_or_else(|| err("an indented line outside a case".into()))?;
            match block {
                Block::None => {
                    return Err(err("an indented line under no query, in or out".into()));
                }
                Block::Query => {
                    d.case.query.push('\n');
                    d.case.query.push_str(trimmed);
                }
                Block::In => {
                    // `@stream {...}`: an event of that stream.
                    let (stream, data) = match trimmed.strip_prefix('@') {
                        Some(rest) => match rest.split_once(char::is_whitespace) {
                            Some((name, data)) if !name.is_empty() && !name.contains('{') => {
                                (Some(name.to_string()), data.trim())
                            }
                            _ => {
                                return Err(err(format!(
                                    "after '@', a stream name and an event: {trimmed:?}"
                                )));
                            }
                        },
                        None => (None, trimmed),
                    };
                    d.case
                        .events
                        .extend(
                            data_lines(data)
                                .map_err(err)?
                                .into_iter()
                                .map(|event| Input {
                                    stream: stream.clone(),
                                    event,
                                }),
                        );
                }
                Block::Out => match &mut d.case.expect {
                    Expect::Rows { rows, .. } => rows.extend(data_lines(trimmed).map_err(err)?),
                    _ => return Err(err("rows under an expectation that is not out".into())),
                },
            }
            continue;
        }
        let (word, rest) = trimmed
            .split_once(char::is_whitespace)
            .map_or((trimmed, ""), |(w, r)| (w, r.trim()));
        block = Block::None;
        if word == "case" {
            if let Some(d) = draft.take() {
                finish(d, &mut cases)?;
            }
            if rest.is_empty() {
                return Err(err("a case needs a name".into()));
            }
            draft = Some(Draft {
                case: Case {
                    name: rest.to_string(),
                    file: file.to_string(),
                    line: line_no,
                    query: String::new(),
                    asl: false,
                    step_ms: DEFAULT_STEP_MS,
                    clock: Clock::default(),
                    seed: DEFAULT_SEED,
                    events: Vec::new(),
                    expect: Expect::Rows {
                        rows: Vec::new(),
                        ordered: true,
                    },
                },
                query: false,
                expect: false,
                clock: false,
                unordered: false,
            });
            continue;
        }
        let d = draft
            .as_mut()
            .ok_or_else(|| err(format!("'{word}' before any case")))?;
        let expect = |d: &mut Draft, e: Expect| {
            if std::mem::replace(&mut d.expect, true) {
                return Err(err("a second expectation (out, rows or error)".into()));
            }
            d.case.expect = e;
            Ok(())
        };
        match word {
            "query" | "asl" => {
                if std::mem::replace(&mut d.query, true) {
                    return Err(err("a second query".into()));
                }
                d.case.query = rest.to_string();
                d.case.asl = word == "asl";
                block = Block::Query;
            }
            "step" => {
                d.case.step_ms = crate::duration::parse_positive_ms(rest)
                    .map_err(|e| err(format!("bad step {rest:?}: {e}")))?;
            }
            "interval-ms" | "time-field" => {
                if std::mem::replace(&mut d.clock, true) {
                    return Err(err("a second clock (interval-ms or time-field)".into()));
                }
                d.case.clock = if word == "interval-ms" {
                    match rest.parse::<i64>() {
                        Ok(ms) if ms >= 0 => Clock::Interval { ms },
                        _ => return Err(err(format!("bad interval {rest:?}"))),
                    }
                } else {
                    Clock::EventTime {
                        field: parse_path(rest).map_err(|e| err(format!("bad field: {e}")))?,
                    }
                };
            }
            "seed" => {
                d.case.seed = rest
                    .parse()
                    .map_err(|_| err(format!("bad seed {rest:?}")))?;
            }
            "unordered" => d.unordered = true,
            "in" => block = Block::In,
            "out" => {
                expect(
                    d,
                    Expect::Rows {
                        rows: Vec::new(),
                        ordered: true,
                    },
                )?;
                block = Block::Out;
            }
            "rows" => {
                let bad = || err(format!("bad row count {rest:?} (N or MIN..MAX)"));
                let (min, max) = match rest.split_once("..") {
                    Some((a, b)) => (
                        a.trim().parse().map_err(|_| bad())?,
                        b.trim().parse().map_err(|_| bad())?,
                    ),
                    None => {
                        let n = rest.parse().map_err(|_| bad())?;
                        (n, n)
                    }
                };
                expect(d, Expect::Count { min, max })?;
            }
            "error" => expect(d, Expect::Error(rest.to_string()))?,
            other => return Err(err(format!("unknown directive '{other}'"))),
        }
    }
    if let Some(d) = draft.take() {
        finish(d, &mut cases)?;
    }
    Ok(cases)
}

/// One data line: a JSON value, or `repeat N template`.
fn data_lines(line: &str) -> Result<Vec<Value>, String> {
    let parse_one = |text: &str| {
        serde_json::from_str::<Value>(text).map_err(|e| format!("bad JSON {text:?}: {e}"))
    };
    let Some(rest) = line.strip_prefix("repeat ") else {
        return Ok(vec![parse_one(line)?]);
    };
    let (n, template) = rest
        .trim_start()
        .split_once(char::is_whitespace)
        .ok_or("repeat needs a count and a template")?;
    let n: u64 = n.parse().map_err(|_| format!("bad repeat count {n:?}"))?;
    if n > 1_000_000 {
        return Err(format!("repeat {n} is over a million"));
    }
    (0..n).map(|i| parse_one(&expand(template, i))).collect()
}

/// `$i`, `$i%K` and `$i/K` in a template, for the index `i`.
fn expand(template: &str, i: u64) -> String {
    let mut out = String::with_capacity(template.len() + 8);
    let mut rest = template;
    while let Some(at) = rest.find("$i") {
        out.push_str(&rest[..at]);
        rest = &rest[at + 2..];
        let op = rest.chars().next().filter(|c| *c == '%' || *c == '/');
        let digits = op.map_or(0, |_| {
            rest[1..].bytes().take_while(|b| b.is_ascii_digit()).count()
        });
        let k = if digits > 0 {
            rest[1..1 + digits].parse::<u64>().ok().filter(|k| *k > 0)
        } else {
            None
        };
        match (op, k) {
            (Some('%'), Some(k)) => {
                out.push_str(&(i % k).to_string());
                rest = &rest[1 + digits..];
            }
            (Some('/'), Some(k)) => {
                out.push_str(&(i / k).to_string());
                rest = &rest[1 + digits..];
            }
            _ => out.push_str(&i.to_string()),
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_file_with_every_directive() {
        let text = r#"
# comment
case one
query select a
  from s
interval-ms 100
seed 7
unordered
in
  {"a": 1}
  repeat 3 {"a": $i, "g": "g$i%2", "h": $i/2}
  @other {"b": 1}
out
  {"a": 1}

case two
query select count(*) from s sample {'strategy': 'RANDOM', 'threshold': 5000}
time-field e['t']['ms']
rows 1..2

case three
query select from
error expected
"#;
        let cases = parse_cases("x.test", text).unwrap();
        assert_eq!(cases.len(), 3);
        let c = &cases[0];
        assert_eq!((c.name.as_str(), c.line, c.seed), ("one", 3, 7));
        assert_eq!(c.query, "select a\nfrom s");
        assert_eq!(c.clock, Clock::Interval { ms: 100 });
        assert_eq!(c.events.len(), 5);
        assert_eq!(c.events[4].stream.as_deref(), Some("other"));
        assert_eq!(c.events[3].event, json!({"a": 2, "g": "g0", "h": 1}));
        assert_eq!(c.events[3].stream, None);
        assert_eq!(
            c.expect,
            Expect::Rows {
                rows: vec![json!({"a": 1})],
                ordered: false
            }
        );
        assert!(matches!(cases[1].clock, Clock::EventTime { .. }));
        assert_eq!(cases[1].expect, Expect::Count { min: 1, max: 2 });
        assert_eq!(cases[2].expect, Expect::Error("expected".into()));
        assert!(cases[2].check(Err("expected one of")).is_ok());
        assert!(cases[2].check(Ok(&[])).is_err());
        assert!(!cases[0].needs_virtual_clock());
        assert!(!cases[1].needs_virtual_clock());
    }

    #[test]
    fn refuses_malformed_files() {
        for (text, wanted) in [
            ("query a", "before any case"),
            ("case a\nin\n  {\"a\": 1}", "no query"),
            ("case a\nquery select a", "no expectation"),
            ("case a\nquery select a\nout\nrows 1", "second expectation"),
            ("case a\nquery select a\nin\n  {nope}", "bad JSON"),
            (
                "case a\nquery select a\nin\n  @{\"a\": 1}",
                "a stream name and an event",
            ),
            ("case a\nquery select a\nbogus", "unknown directive"),
            ("case a\nquery select a\ntime-field e[", "bad field"),
        ] {
            let e = parse_cases("f", text).unwrap_err();
            assert!(e.contains(wanted), "{text:?}: {e}");
        }
    }

    #[test]
    fn numbers_match_as_numbers() {
        assert!(values_match(&json!({"a": [2]}), &json!({"a": [2.0]})));
        assert!(values_match(&json!(0.1 + 0.2), &json!(0.3)));
        assert!(!values_match(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!values_match(&json!("1"), &json!(1)));
    }

    #[test]
    fn the_interval_clock_starts_after_zero_and_event_time_reads_the_field() {
        let q = parse("select tick() from s").unwrap();
        let events = [json!({}), json!({})].map(Input::primary);
        let rows = run_offline(&q, &events, Clock::default(), 1);
        assert_eq!(rows, [json!({"tick": 10}), json!({"tick": 20})]);
        let events = [json!({"t": 500}), json!({}), json!({"t": 400})].map(Input::primary);
        let field = parse_path("t").unwrap();
        let rows = run_offline(&q, &events, Clock::EventTime { field }, 1);
        assert_eq!(
            rows,
            [
                json!({"tick": 500}),
                json!({"tick": 500}),
                json!({"tick": 400})
            ]
        );
    }
}
