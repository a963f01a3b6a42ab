//! The MQL parser: nom for the tokens, a cursor for the clauses, and errors that say where
//! and what was expected (`expected one of: 'from', 'where', … at line 1, column 17`).
//!
//! Beyond Mantis's grammar, for users' sake: keywords in any case, clauses in any order
//! (SQL's and MQL's both parse), `asc` after `order by`, and `not` before any test.

use std::collections::BTreeSet;

use nom::branch::alt;
use nom::bytes::complete::{tag, take_while1};
use nom::character::complete::{char, digit1};
use nom::combinator::{opt, recognize};
use nom::sequence::pair;
use nom::{IResult, Parser};
use serde_json::Value;

use super::ast::*;
use crate::predicate::{CmpOp, Operand, Path, Pattern, Predicate, RegexMode, Segment};

/// Longest query accepted: queries travel to every agent.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Most windows one event can be in (a sliding window's span over its shift).
pub const MAX_WINDOW_OVERLAP: i64 = 1000;
/// Deepest nesting of a condition's tree (`not`, `and`, `or` inside one another), so that
/// a hostile query cannot exhaust the stack of whatever walks it. Counted on the tree, not
/// on the text, so that a condition's printed form (which spells every level out with
/// parentheses) parses back wherever the condition was accepted.
const MAX_DEPTH: usize = 64;
/// Deepest nesting of parentheses and `not`s in the text: the parser's own recursion.
/// Above twice [`MAX_DEPTH`], the most a printed condition uses.
const MAX_SYNTAX_DEPTH: usize = 4 * MAX_DEPTH;

/// How deeply `not`, `and` and `or` nest in a condition.
fn tree_depth(p: &Predicate) -> usize {
    match p {
        Predicate::Not(inner) => 1 + tree_depth(inner),
        Predicate::And(ps) | Predicate::Or(ps) => 1 + ps.iter().map(tree_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Why a query does not parse: where, and what would have been accepted there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset into the query.
    pub offset: usize,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at line {}, column {}",
            self.message, self.line, self.column
        )
    }
}

impl std::error::Error for ParseError {}

/// Parses an MQL query.
pub fn parse(text: &str) -> Result<Query, ParseError> {
    whole(text, "query", |p| p.query())
}

/// Parses a field as users write it (`ts`, `e['a']['b']`, `e['l'][0]`): an event-time
/// field, say. `[*]` is refused: a field has one value.
pub fn parse_path(text: &str) -> Result<Path, ParseError> {
    whole(text, "field", |p| p.path(false))
}

/// Parses a condition alone (what follows `where`): how a predicate travels to agents, as
/// the text its `Display` prints.
pub fn parse_condition(text: &str) -> Result<Predicate, ParseError> {
    whole(text, "condition", |p| p.top_condition())
}

/// Runs `rule` over all of `text` (at most [`MAX_QUERY_BYTES`]): what it parsed, or the
/// error at the furthest point reached, naming `what` when input is left over.
fn whole<'a, T>(
    text: &'a str,
    what: &str,
    rule: impl FnOnce(&mut Cursor<'a>) -> Res<T>,
) -> Result<T, ParseError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(error_at(
            text,
            MAX_QUERY_BYTES,
            format!(
                "{what} is {} bytes, over the limit of {MAX_QUERY_BYTES}",
                text.len()
            ),
        ));
    }
    let mut p = Cursor {
        src: text,
        pos: 0,
        furthest: 0,
        expected: BTreeSet::new(),
        depth: 0,
    };
    let parsed = rule(&mut p).and_then(|v| {
        p.ws();
        if p.pos == p.src.len() {
            Some(v)
        } else {
            p.expect(format!("the end of the {what}"));
            None
        }
    });
    parsed.ok_or_else(|| p.error())
}

fn error_at(src: &str, offset: usize, message: String) -> ParseError {
    let offset = offset.min(src.len());
    let before = &src[..floor_char(src, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    ParseError {
        offset,
        line,
        column,
        message,
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The parse position, and the furthest point any alternative reached with what it wanted
/// there: the error a user sees.
struct Cursor<'a> {
    src: &'a str,
    pos: usize,
    furthest: usize,
    expected: BTreeSet<String>,
    depth: usize,
}

/// A clause failed in a way that no other alternative can fix (a bad regex, sample JSON,
/// a repeated clause): reported as is.
const FATAL: &str = "\u{0}";

type Res<T> = Option<T>;

fn is_word_char(c: char) -> bool {
    !(c.is_whitespace() || "\"',*()=!<>~[]|&;{}/+".contains(c))
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn expect(&mut self, what: impl Into<String>) {
        if self.pos > self.furthest {
            self.furthest = self.pos;
            self.expected.clear();
        }
        if self.pos == self.furthest {
            self.expected.insert(what.into());
        }
    }

    /// Records an error that ends the parse with this exact message.
    fn fatal<T>(&mut self, at: usize, message: String) -> Res<T> {
        self.furthest = usize::MAX;
        self.expected.clear();
        self.expected.insert(format!("{FATAL}{at}{FATAL}{message}"));
        None
    }

    fn error(&self) -> ParseError {
        if self.furthest == usize::MAX
            && let Some(e) = self.expected.iter().next()
        {
            let mut parts = e.split(FATAL).skip(1);
            let at = parts.next().and_then(|a| a.parse().ok()).unwrap_or(0);
            let message = parts.next().unwrap_or("").to_string();
            return error_at(self.src, at, message);
        }
        let found = match self.src[self.furthest..].chars().next() {
            None => "the end of the query".to_string(),
            Some(_) => {
                let word: String = self.src[self.furthest..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .take(20)
                    .collect();
                format!("'{word}'")
            }
        };
        let wanted: Vec<&str> = self.expected.iter().map(String::as_str).collect();
        let message = match wanted.as_slice() {
            [] => format!("unexpected {found}"),
            [one] => format!("expected {one}, found {found}"),
            many => format!("expected one of {}, found {found}", many.join(", ")),
        };
        error_at(self.src, self.furthest, message)
    }

    fn ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// A keyword (any case) not followed by more of a word; `group by` and `order by` take
    /// any whitespace inside.
    fn kw(&mut self, word: &'static str) -> bool {
        self.ws();
        let start = self.pos;
        for (i, part) in word.split(' ').enumerate() {
            if i > 0 {
                let before = self.pos;
                self.ws();
                if self.pos == before {
                    self.pos = start;
                    self.expect(format!("'{word}'"));
                    return false;
                }
            }
            let rest = self.rest();
            let ok = rest.len() >= part.len()
                && rest.is_char_boundary(part.len())
                && rest[..part.len()].eq_ignore_ascii_case(part)
                && !rest[part.len()..].starts_with(is_word_char);
            if !ok {
                self.pos = start;
                self.expect(format!("'{word}'"));
                return false;
            }
            self.pos += part.len();
        }
        true
    }

    fn sym(&mut self, s: &'static str) -> bool {
        self.ws();
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            self.expect(format!("'{s}'"));
            false
        }
    }

    /// Runs a nom parser at the current position.
    fn lex<T>(
        &mut self,
        what: &'static str,
        mut parser: impl FnMut(&'a str) -> IResult<&'a str, T>,
    ) -> Res<T> {
        self.ws();
        match parser(self.rest()) {
            Ok((rest, v)) => {
                self.pos = self.src.len() - rest.len();
                Some(v)
            }
            Err(_) => {
                self.expect(what);
                None
            }
        }
    }

    fn query(&mut self) -> Res<Query> {
        if !self.kw("select") {
            return None;
        }
        let select = self.select_list()?;
        let mut q = Query {
            text: self.src.to_string(),
            select,
            from: Vec::new(),
            joins: Vec::new(),
            window: None,
            filter: Predicate::True,
            group_by: Vec::new(),
            having: None,
            order_by: None,
            limit: None,
            sample: None,
        };
        let mut seen: BTreeSet<&'static str> = BTreeSet::new();
        loop {
            self.ws();
            if self.pos == self.src.len() {
                break;
            }
            let at = self.pos;
            let clause = [
                "from", "window", "where", "group by", "having", "order by", "limit", "sample",
            ]
            .into_iter()
            .find(|k| self.kw(k));
            let Some(clause) = clause else {
                self.expect("the end of the query");
                return None;
            };
            if !seen.insert(clause) {
                return self.fatal(at, format!("'{clause}' appears twice"));
            }
            match clause {
                "from" => {
                    q.from = self.streams()?;
                    while self.kw("join") {
                        q.joins.push(self.join()?);
                    }
                }
                "window" => q.window = Some(self.window()?),
                "where" => q.filter = self.top_condition()?,
                "group by" => q.group_by = self.paths()?,
                "having" => q.having = Some(self.top_condition()?),
                "order by" => q.order_by = Some(self.order_by()?),
                "limit" => q.limit = Some(self.unsigned("a row count")?),
                _ => q.sample = Some(self.sample()?),
            }
        }
        // No `from`, and Mantis's legacy names `stream` and `observable` (any case), mean
        // the default stream.
        let legacy = |name: &mut String| {
            if name.eq_ignore_ascii_case("stream") || name.eq_ignore_ascii_case("observable") {
                *name = DEFAULT_STREAM.to_string();
            }
        };
        q.from.iter_mut().for_each(legacy);
        for j in &mut q.joins {
            j.streams.iter_mut().for_each(legacy);
        }
        if q.from.is_empty() {
            q.from.push(DEFAULT_STREAM.to_string());
        }
        let mut seen = BTreeSet::new();
        q.from.retain(|name| seen.insert(name.clone()));
        if q.having.is_some() && !q.is_aggregate() {
            let at = self.src.to_ascii_lowercase().find("having").unwrap_or(0);
            return self.fatal(at, "'having' needs an aggregate in the select list".into());
        }
        if !q.group_by.is_empty() && !q.is_aggregate() && q.select != Select::Star {
            let at = self.src.to_ascii_lowercase().find("group").unwrap_or(0);
            return self.fatal(
                at,
                "'group by' needs an aggregate in the select list".into(),
            );
        }
        Some(q)
    }

    fn select_list(&mut self) -> Res<Select> {
        if self.sym("*") {
            return Some(Select::Star);
        }
        let mut items = vec![self.select_item()?];
        while self.sym(",") {
            items.push(self.select_item()?);
        }
        Some(Select::Items(items))
    }

    fn select_item(&mut self) -> Res<SelectItem> {
        let start = self.pos;
        let expr = if let Some(agg) = self.aggregate() {
            agg
        } else {
            self.pos = start;
            self.select_operand()?
        };
        self.ws();
        let at = self.pos;
        let alias = if self.kw("as") {
            if matches!(expr, SelectExpr::Prefix(_)) {
                return self.fatal(
                    at,
                    "a prefix selection (e[^'…']) names many columns and cannot be renamed \
                     with 'as'"
                        .into(),
                );
            }
            Some(self.name("a column name")?)
        } else {
            None
        };
        Some(SelectItem { expr, alias })
    }

    fn aggregate(&mut self) -> Res<SelectExpr> {
        self.ws();
        let start = self.pos;
        let word = self.lex("an aggregate", |i| {
            take_while1(|c: char| c.is_ascii_alphanumeric()).parse(i)
        })?;
        let func = match word.to_ascii_lowercase().as_str() {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            "average" | "avg" => AggFunc::Average,
            "list" => AggFunc::List,
            w if w.len() > 1
                && w.starts_with('p')
                && w[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                let digits = &w[1..];
                // p995 is 99.5: digits past the second are decimals (but p100 is 100).
                let rank: f64 = if digits.len() > 2 && digits != "100" {
                    format!("{}.{}", &digits[..2], &digits[2..]).parse().ok()?
                } else {
                    digits.parse().ok()?
                };
                if !(0.0..=100.0).contains(&rank) {
                    return self.fatal(start, format!("percentile {word} is over 100"));
                }
                AggFunc::Percentile(rank)
            }
            _ => {
                self.pos = start;
                return None;
            }
        };
        if !self.sym("(") {
            self.pos = start;
            return None;
        }
        let arg = if self.sym("*") {
            AggArg::Star
        } else {
            let distinct = self.kw("distinct");
            AggArg::Path {
                path: self.path(false)?,
                distinct,
            }
        };
        if !self.sym(")") {
            return None;
        }
        Some(SelectExpr::Aggregate { func, arg })
    }

    fn select_operand(&mut self) -> Res<SelectExpr> {
        self.ws();
        let start = self.pos;
        if self.sym("tick") && self.sym("(") && self.sym(")") {
            return Some(SelectExpr::Tick);
        }
        self.pos = start;
        if self.sym("e") && self.sym("[") && self.sym("^") {
            let prefix = self.string("a quoted prefix")?;
            if !self.sym("]") {
                return None;
            }
            return Some(SelectExpr::Prefix(prefix));
        }
        self.pos = start;
        match self.operand(false)? {
            Operand::Path(p) => Some(SelectExpr::Path(p)),
            Operand::Literal(v) => Some(SelectExpr::Literal(v)),
        }
    }

    /// A column or stream name: quoted, or a bare word.
    fn name(&mut self, what: &'static str) -> Res<String> {
        self.ws();
        let start = self.pos;
        if let Some(s) = self.string(what) {
            return Some(s);
        }
        self.pos = start;
        self.lex(what, bare_word).map(str::to_string)
    }

    fn streams(&mut self) -> Res<Vec<String>> {
        let mut out = vec![self.name("a stream name")?];
        while self.sym(",") {
            out.push(self.name("a stream name")?);
        }
        Some(out)
    }

    /// After `join`: `<streams> N seconds on <key>` (Mantis's grammar; `second` also reads).
    fn join(&mut self) -> Res<Join> {
        let streams = self.streams()?;
        let at = self.pos;
        let within_ms = self.seconds()?;
        if within_ms <= 0 {
            return self.fatal(at, "a join window must be positive".into());
        }
        if !(self.kw("seconds") || self.kw("second")) || !self.kw("on") {
            return None;
        }
        let key = self.path(false)?;
        Some(Join {
            streams,
            within_ms,
            key,
        })
    }

    fn window(&mut self) -> Res<Window> {
        if self.sym("|") {
            let events = self.unsigned("a number of events")?;
            if !self.sym("|") {
                return None;
            }
            if events == 0 {
                return self.fatal(self.pos, "a count window needs at least one event".into());
            }
            if events > super::eval::MAX_WINDOW_EVENTS as u64 {
                return self.fatal(
                    self.pos,
                    format!(
                        "a count window holds at most {} events",
                        super::eval::MAX_WINDOW_EVENTS
                    ),
                );
            }
            return Some(Window::Count { events });
        }
        let at = self.pos;
        let span = self.seconds()?;
        self.ws();
        let before = self.pos;
        let shift = self.seconds();
        if shift.is_none() {
            self.pos = before;
        }
        if span <= 0 || shift.is_some_and(|s| s <= 0) {
            return self.fatal(at, "window lengths must be positive".into());
        }
        // Every event is in span/shift windows: bounded, so that one event cannot cost
        // millions of window closes.
        if let Some(shift) = shift
            && span / shift > MAX_WINDOW_OVERLAP
        {
            return self.fatal(
                at,
                format!("a sliding window may overlap at most {MAX_WINDOW_OVERLAP} others (span / shift)"),
            );
        }
        Some(match shift {
            Some(shift_ms) => Window::Sliding {
                span_ms: span,
                shift_ms,
            },
            None => Window::Tumbling { span_ms: span },
        })
    }

    /// A number of seconds (decimals allowed), in ms.
    fn seconds(&mut self) -> Res<i64> {
        let text = self.lex("a number of seconds", |i| {
            recognize(pair(digit1, opt(pair(char('.'), digit1)))).parse(i)
        })?;
        let s: f64 = text.parse().ok()?;
        if s > 86_400.0 * 7.0 {
            return self.fatal(self.pos, format!("window of {text} s is over a week"));
        }
        Some((s * 1000.0).round() as i64)
    }

    fn unsigned(&mut self, what: &'static str) -> Res<u64> {
        let at = self.pos;
        let text = self.lex(what, digit1)?;
        match text.parse() {
            Ok(n) => Some(n),
            Err(_) => self.fatal(at, format!("{text} is too large")),
        }
    }

    fn paths(&mut self) -> Res<Vec<Path>> {
        let mut out = vec![self.path(false)?];
        while self.sym(",") {
            out.push(self.path(false)?);
        }
        Some(out)
    }

    fn order_by(&mut self) -> Res<OrderBy> {
        let path = self.path(false)?;
        let descending = if self.kw("desc") {
            true
        } else {
            self.kw("asc");
            false
        };
        Some(OrderBy { path, descending })
    }

    fn sample(&mut self) -> Res<Sample> {
        self.ws();
        let at = self.pos;
        let text = self.lex("a JSON object", balanced_braces)?;
        // Mantis accepts single quotes in the sample's JSON.
        let json = text.replace('\'', "\"");
        let v: Value = match serde_json::from_str(&json) {
            Ok(v) => v,
            Err(e) => return self.fatal(at, format!("invalid sample JSON: {e}")),
        };
        let num = |k: &str, default: u64| -> Result<u64, String> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_u64()
                    .or_else(|| x.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                    .ok_or_else(|| format!("sample '{k}' must be a non-negative number")),
            }
        };
        let parsed = (|| -> Result<Sample, String> {
            let threshold = num("threshold", 0)?;
            let factor = num("factor", 10_000)?.max(1);
            let salt = num("salt", 0)?;
            let strategy = match v.get("strategy").and_then(Value::as_str) {
                _ if threshold >= factor => Strategy::All,
                Some(s) if s.eq_ignore_ascii_case("random") => Strategy::Random,
                Some(s) if s.eq_ignore_ascii_case("sticky") => Strategy::Sticky,
                Some(s) if s.eq_ignore_ascii_case("rps") => Strategy::Rps,
                _ => Strategy::All,
            };
            let keys = match v.get("keys") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(ks)) => ks
                    .iter()
                    .map(|k| {
                        k.as_str()
                            .map(Path::key)
                            .ok_or_else(|| "sample 'keys' must be strings".to_string())
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err("sample 'keys' must be a list of names".into()),
            };
            Ok(Sample {
                strategy,
                threshold,
                factor,
                salt,
                keys,
                extrapolate: v
                    .get("extrapolate")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
        })();
        match parsed {
            Ok(s) => Some(s),
            Err(e) => self.fatal(at, e),
        }
    }

    /// `e['a'][0]…` or a bare word; `[*]` only where `any` allows it (conditions).
    fn path(&mut self, any: bool) -> Res<Path> {
        self.ws();
        let start = self.pos;
        let rest = self.rest();
        if rest.starts_with('e') && rest[1..].trim_start().starts_with('[') {
            self.pos += 1;
            let mut segs = Vec::new();
            while self.sym("[") {
                let at = self.pos;
                let seg = if self.sym("*") {
                    if !any {
                        return self.fatal(at, "'[*]' is only allowed in conditions".into());
                    }
                    Segment::Any
                } else if let Some(i) = self.lex("an index", signed_int) {
                    Segment::Index(i)
                } else {
                    Segment::Key(self.string("a quoted key, an index or '*'")?)
                };
                if !self.sym("]") {
                    return None;
                }
                segs.push(seg);
                self.ws();
                if !self.rest().starts_with('[') {
                    break;
                }
            }
            if segs.is_empty() {
                return None;
            }
            return Some(Path(segs));
        }
        self.pos = start;
        let word = self.lex("a field", bare_word)?;
        Some(Path::key(word))
    }

    fn string(&mut self, what: &'static str) -> Res<String> {
        self.lex(what, quoted)
    }

    /// A path or a literal.
    fn operand(&mut self, any: bool) -> Res<Operand> {
        self.ws();
        let start = self.pos;
        if let Some(s) = self.string("a string") {
            return Some(Operand::Literal(Value::String(s)));
        }
        self.pos = start;
        if let Some(n) = self.lex("a number", number) {
            return Some(Operand::Literal(n));
        }
        self.pos = start;
        for (word, v) in [
            ("true", Value::Bool(true)),
            ("false", Value::Bool(false)),
            ("null", Value::Null),
        ] {
            if self.kw(word) {
                return Some(Operand::Literal(v));
            }
        }
        self.pos = start;
        self.path(any).map(Operand::Path)
    }

    /// A whole condition (after `where` or `having`, or alone), its tree depth bounded.
    fn top_condition(&mut self) -> Res<Predicate> {
        self.ws();
        let at = self.pos;
        let c = self.condition(false)?;
        if tree_depth(&c) > MAX_DEPTH {
            return self.fatal(at, format!("conditions nest deeper than {MAX_DEPTH}"));
        }
        Some(c)
    }

    /// `a or b`, `a and b`, `not (a)`, `(a)`, tests; `||`, `&&` and `!` too.
    fn condition(&mut self, nested: bool) -> Res<Predicate> {
        self.depth += 1;
        if self.depth > MAX_SYNTAX_DEPTH {
            return self.fatal(self.pos, format!("conditions nest deeper than {MAX_DEPTH}"));
        }
        let mut terms = vec![self.conjunction()?];
        loop {
            let at = self.pos;
            if self.kw("or") || self.sym("||") {
                terms.push(self.conjunction()?);
            } else {
                self.pos = at;
                break;
            }
        }
        self.depth -= 1;
        let _ = nested;
        Some(flat(terms, false))
    }

    fn conjunction(&mut self) -> Res<Predicate> {
        let mut terms = vec![self.unary()?];
        loop {
            let at = self.pos;
            if self.kw("and") || self.sym("&&") {
                terms.push(self.unary()?);
            } else {
                self.pos = at;
                break;
            }
        }
        Some(flat(terms, true))
    }

    fn unary(&mut self) -> Res<Predicate> {
        self.ws();
        let start = self.pos;
        if self.kw("not") || (self.sym("!") && !self.rest().starts_with('=')) {
            self.depth += 1;
            if self.depth > MAX_SYNTAX_DEPTH {
                return self.fatal(self.pos, format!("conditions nest deeper than {MAX_DEPTH}"));
            }
            let inner = self.unary()?;
            self.depth -= 1;
            return Some(inner.not());
        }
        self.pos = start;
        if self.sym("(") {
            let inner = self.condition(true)?;
            if !self.sym(")") {
                return None;
            }
            return Some(inner);
        }
        self.pos = start;
        self.test()
    }

    fn test(&mut self) -> Res<Predicate> {
        self.ws();
        let start = self.pos;
        // `where true` and `where false` stand alone.
        for (word, p) in [("true", Predicate::True), ("false", Predicate::False)] {
            if self.kw(word) {
                let after = self.pos;
                self.ws();
                if !self.rest().starts_with(['=', '!', '<', '>']) {
                    self.pos = after;
                    return Some(p);
                }
                self.pos = start;
            }
        }
        let left = self.operand(true)?;
        self.ws();
        let at = self.pos;
        if self.sym("==~") {
            self.ws();
            let re_at = self.pos;
            let source = match self.lex("a /regex/", slashed) {
                Some(s) => s,
                None => {
                    self.pos = re_at;
                    self.string("a /regex/ or a quoted regex")?
                }
            };
            return match Pattern::new(&source, RegexMode::Full, false) {
                Ok(pattern) => Some(Predicate::Regex {
                    operand: left,
                    pattern,
                }),
                Err(e) => self.fatal(re_at, format!("invalid regex: {e}")),
            };
        }
        self.pos = at;
        if self.sym("==+") {
            let needle = self.string("a quoted string")?;
            return Some(Predicate::Contains {
                operand: left,
                needle,
            });
        }
        self.pos = at;
        let op = self.lex("a comparison (== != < <= > >= ==~ ==+)", cmp_op)?;
        let right = self.operand(true)?;
        Some(match (op, &left, &right) {
            (CmpOp::Ne, Operand::Path(p), Operand::Literal(Value::Null))
            | (CmpOp::Ne, Operand::Literal(Value::Null), Operand::Path(p))
                if !p.has_any() =>
            {
                Predicate::Present(p.clone())
            }
            _ => Predicate::Compare { left, op, right },
        })
    }
}

/// One `and` (or `or`) of the terms, with the terms that are themselves `and`s (`or`s)
/// spliced in, wherever they stand: `(a and b) and (c and (d and e))` is one `and` of five,
/// so that a condition's printed form parses back to the same tree.
fn flat(terms: Vec<Predicate>, and: bool) -> Predicate {
    if terms.len() == 1 {
        return terms.into_iter().next().unwrap_or(Predicate::True);
    }
    let mut out = Vec::with_capacity(terms.len());
    for t in terms {
        match t {
            Predicate::And(inner) if and => out.extend(inner),
            Predicate::Or(inner) if !and => out.extend(inner),
            other => out.push(other),
        }
    }
    if and {
        Predicate::And(out)
    } else {
        Predicate::Or(out)
    }
}

fn bare_word(i: &str) -> IResult<&str, &str> {
    take_while1(is_word_char).parse(i)
}

fn signed_int(i: &str) -> IResult<&str, i64> {
    let (rest, text) = recognize(pair(opt(char('-')), digit1)).parse(i)?;
    match text.parse() {
        Ok(n) if !rest.trim_start().starts_with(['.', 'e', 'E']) => Ok((rest, n)),
        _ => Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::Digit,
        ))),
    }
}

/// A number literal: an integer when it has no point or exponent, else a double.
fn number(i: &str) -> IResult<&str, Value> {
    let (rest, text) = recognize((
        opt(char('-')),
        digit1,
        opt(pair(char('.'), digit1)),
        opt((
            alt((char('e'), char('E'))),
            opt(alt((char('-'), char('+')))),
            digit1,
        )),
    ))
    .parse(i)?;
    // `12abc` is a word, not a number.
    if rest.starts_with(is_word_char) && !rest.starts_with(['.', '-']) {
        return Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::Digit,
        )));
    }
    let v = if let Ok(n) = text.parse::<i64>() {
        Value::from(n)
    } else {
        match text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            Some(n) => Value::Number(n),
            None => {
                return Err(nom::Err::Error(nom::error::Error::new(
                    i,
                    nom::error::ErrorKind::Float,
                )));
            }
        }
    };
    Ok((rest, v))
}

/// `'…'` or `"…"`, with backslash escapes.
fn quoted(i: &str) -> IResult<&str, String> {
    let fail = || nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::Char));
    let mut chars = i.char_indices();
    let Some((_, q)) = chars.next().filter(|(_, c)| *c == '\'' || *c == '"') else {
        return Err(fail());
    };
    let mut out = String::new();
    let mut escaped = false;
    for (at, c) in chars {
        if escaped {
            out.push(match c {
                'n' => '\n',
                't' => '\t',
                other => other,
            });
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == q {
            return Ok((&i[at + c.len_utf8()..], out));
        } else {
            out.push(c);
        }
    }
    Err(fail())
}

/// `/…/` with `\/` for a slash inside; other escapes stay for the regex.
fn slashed(i: &str) -> IResult<&str, String> {
    let fail = || nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::Char));
    let body = i.strip_prefix('/').ok_or_else(fail)?;
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|(_, n)| *n == '/') => {
                out.push('/');
                chars.next();
            }
            '\\' => {
                out.push('\\');
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
            }
            '/' => return Ok((&body[at + 1..], out)),
            other => out.push(other),
        }
    }
    Err(fail())
}

fn cmp_op(i: &str) -> IResult<&str, CmpOp> {
    let (rest, op) = alt((
        tag("=="),
        tag("!="),
        tag("<>"),
        tag("<="),
        tag(">="),
        tag("<"),
        tag(">"),
        tag("="),
    ))
    .parse(i)?;
    let op = match op {
        "==" | "=" => CmpOp::Eq,
        "!=" | "<>" => CmpOp::Ne,
        "<=" => CmpOp::Le,
        ">=" => CmpOp::Ge,
        "<" => CmpOp::Lt,
        _ => CmpOp::Gt,
    };
    Ok((rest, op))
}

/// A `{…}` object, braces balanced outside strings.
fn balanced_braces(i: &str) -> IResult<&str, &str> {
    let fail = || nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::Char));
    if !i.starts_with('{') {
        return Err(fail());
    }
    let (mut depth, mut quote, mut escaped) = (0usize, None::<char>, false);
    for (at, c) in i.char_indices() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '{') => depth += 1,
            (None, '}') => {
                depth -= 1;
                if depth == 0 {
                    return Ok((&i[at + 1..], &i[..at + 1]));
                }
            }
            _ => {}
        }
    }
    Err(fail())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issue_example() {
        let q = parse(
            "select path, latency from requests where status >= 500 and region == 'us-east-1'",
        )
        .unwrap();
        assert_eq!(q.from, ["requests"]);
        assert_eq!(
            q.filter.to_string(),
            "(e['status'] >= 500 and e['region'] == 'us-east-1')"
        );
        assert!(!q.is_aggregate());
    }

    #[test]
    fn keywords_any_case_and_clauses_in_either_order() {
        let mql = parse("SELECT COUNT(a) FROM s WINDOW 10 WHERE a > 1 GROUP BY b HAVING e['COUNT(a)'] > 2 ORDER BY e['COUNT(a)'] DESC LIMIT 3").unwrap();
        let sql = parse("Select count(a) From s Where a > 1 Group By b Window 10 Having e['COUNT(a)'] > 2 Order By e['COUNT(a)'] desc Limit 3").unwrap();
        assert_eq!(mql.filter, sql.filter);
        assert_eq!(mql.window, Some(Window::Tumbling { span_ms: 10_000 }));
        assert_eq!(mql.window, sql.window);
        assert_eq!(mql.limit, Some(3));
        assert!(mql.order_by.unwrap().descending);
    }

    #[test]
    fn errors_name_the_position_and_what_was_expected() {
        let e = parse("select a from s where a >").unwrap_err();
        assert_eq!((e.line, e.column), (1, 26), "{e}");
        assert!(e.message.contains("a number"), "{e}");
        let e = parse("select a frm s").unwrap_err();
        assert!(
            e.message.contains("'from'") && e.message.contains("'frm'"),
            "{e}"
        );
        assert_eq!(e.column, 10, "{e}");
        let e = parse("select a from s where a ==~ /(/").unwrap_err();
        assert!(e.message.starts_with("invalid regex"), "{e}");
        assert_eq!(e.column, 29, "{e}");
        let e = parse("select a from s limit 1 limit 2").unwrap_err();
        assert!(e.message.contains("twice"), "{e}");
        let e =
            parse("select a from s sample {'strategy': 'RANDOM', 'threshold': -1}").unwrap_err();
        assert!(e.message.contains("threshold"), "{e}");
    }

    #[test]
    fn paths_literals_and_operators() {
        let q = parse(r#"select e['a']['b'][0], e[^'res'], 'x', 2, tick() from s where e['tags'][*]['n'] ==~ /x.*/ && !(c != null) || d ==+ "y" or f <> 1.5e3"#).unwrap();
        let Select::Items(items) = &q.select else {
            panic!()
        };
        assert_eq!(items.len(), 5);
        assert_eq!(items[1].expr, SelectExpr::Prefix("res".into()));
        assert_eq!(items[4].expr, SelectExpr::Tick);
        let text = q.filter.to_string();
        assert!(text.contains("e['tags'][*]['n'] ==~ /x.*/"), "{text}");
        assert!(text.contains("not (e['c'] != null)"), "{text}");
        assert!(text.contains("e['f'] != 1500.0"), "{text}");
    }

    #[test]
    fn aggregates_and_sampling() {
        let q = parse("select count(*), sum(distinct a) as 's', p995(b), average(c) from s window |5| sample {'strategy':'STICKY','threshold':200,'keys':['u'],'salt':3}").unwrap();
        let Select::Items(items) = &q.select else {
            panic!()
        };
        assert_eq!(items[1].alias.as_deref(), Some("s"));
        assert!(
            matches!(items[2].expr, SelectExpr::Aggregate { func: AggFunc::Percentile(r), .. } if r == 99.5)
        );
        assert_eq!(q.window, Some(Window::Count { events: 5 }));
        let s = q.sample.unwrap();
        assert_eq!(
            (s.strategy, s.threshold, s.factor, s.salt),
            (Strategy::Sticky, 200, 10_000, 3)
        );
    }

    #[test]
    fn hostile_input_is_refused_not_crashed() {
        let deep = format!(
            "select a from s where {}a == 1{}",
            "(".repeat(500),
            ")".repeat(500)
        );
        assert!(parse(&deep).unwrap_err().message.contains("nest"));
        let nots = format!("select a from s where {}a == 1", "not ".repeat(500));
        assert!(parse(&nots).is_err());
        assert!(parse(&"x".repeat(MAX_QUERY_BYTES + 1)).is_err());
        assert!(parse("").is_err());
        assert!(parse("select").is_err());
        assert!(parse("select a from s where e['é").is_err());
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn legacy_stream_names_mean_the_default_stream() {
        assert_eq!(
            parse("select a from stream").unwrap().from,
            [DEFAULT_STREAM]
        );
        assert_eq!(
            parse("select a from Observable, s, defaultStream")
                .unwrap()
                .from,
            [DEFAULT_STREAM, "s"]
        );
        assert_eq!(parse("select a").unwrap().from, [DEFAULT_STREAM]);
    }

    #[test]
    fn percentile_names() {
        let rank = |q: &str| match &parse(q).unwrap().select {
            Select::Items(items) => match items[0].expr {
                SelectExpr::Aggregate {
                    func: AggFunc::Percentile(r),
                    ..
                } => r,
                _ => panic!("{q}"),
            },
            _ => panic!("{q}"),
        };
        assert_eq!(rank("select p100(a) from s"), 100.0);
        assert_eq!(rank("select p995(a) from s"), 99.5);
        assert_eq!(rank("select P5(a) from s"), 5.0);
        assert_eq!(AggFunc::Percentile(99.5).name(), "P995");
        assert_eq!(rank("select p999(a) from s"), 99.9);
    }

    #[test]
    fn fields_parse_alone() {
        assert_eq!(parse_path("ts").unwrap(), Path::key("ts"));
        assert_eq!(
            parse_path(" e['a'][0] ").unwrap(),
            Path(vec![Segment::Key("a".into()), Segment::Index(0)])
        );
        assert!(parse_path("e['a'][*]").is_err());
        assert!(parse_path("a b").is_err());
        assert!(parse_path("").is_err());
    }

    #[test]
    fn printed_conditions_parse_back_up_to_the_depth_limit() {
        for (prefix, suffix) in [
            ("!", ""),
            ("not (a == 1 or ", ")"),
            ("(a == 1 and not (", "))"),
        ] {
            let mut levels = 0;
            loop {
                let cond = format!("{}b == 1{}", prefix.repeat(levels), suffix.repeat(levels));
                let Ok(p) = parse_condition(&cond) else {
                    assert!(tree_depth_of(&cond) > MAX_DEPTH, "{cond}");
                    break;
                };
                let printed = p.to_string();
                let back = parse_condition(&printed)
                    .unwrap_or_else(|e| panic!("{printed} from {cond}: {e}"));
                assert_eq!(back, p);
                levels += 1;
            }
            assert!(levels >= 32, "{prefix}: {levels}");
        }
        let deep = format!("{}a == 1{}", "(".repeat(200), ")".repeat(200));
        assert!(
            parse_condition(&deep).is_ok(),
            "parentheses alone add no depth"
        );
        let deeper = format!("{}a == 1{}", "(".repeat(300), ")".repeat(300));
        assert!(parse_condition(&deeper).is_err());
    }

    fn tree_depth_of(cond: &str) -> usize {
        // Every prefix's level adds one `not` and at most one group.
        cond.matches("not").count()
            + cond.matches('!').count()
            + cond.matches(" or ").count()
            + cond.matches(" and ").count()
    }

    #[test]
    fn nested_ands_and_ors_flatten_wherever_they_stand() {
        let p =
            parse_condition("(a == 1 and b == 1) and (c == 1 and (d == 1 and e == 1))").unwrap();
        assert!(matches!(&p, Predicate::And(ps) if ps.len() == 5), "{p}");
        let p = parse_condition("a == 1 or (b == 1 or c == 1) or d == 1").unwrap();
        assert!(matches!(&p, Predicate::Or(ps) if ps.len() == 4), "{p}");
        let p = parse_condition("a == 1 and (b == 1 or c == 1)").unwrap();
        assert_eq!(parse_condition(&p.to_string()).unwrap(), p);
    }

    #[test]
    fn windows_are_bounded() {
        assert!(parse("select count(*) from s window 10 0.01").is_ok());
        let e = parse("select count(*) from s window 10 0.001").unwrap_err();
        assert!(e.message.contains("overlap"), "{e}");
        let e = parse("select count(*) from s window |1000001|").unwrap_err();
        assert!(e.message.contains("at most"), "{e}");
    }
}
