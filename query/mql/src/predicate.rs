//! The predicate core: one representation for "which of these do we want", evaluated the
//! same way everywhere. MQL's `where` and the Atlas Stack Language's query words both
//! compile to a [`Predicate`]; the server evaluates it on events and lowers it to the store's
//! index for series, and agents evaluate it on the events they would otherwise send.
//!
//! Semantics (MQL's, with the differences the README lists):
//! - A path that leads nowhere (missing key, index out of range, wrong type on the way) is
//!   nil. `==` with nil is true only against nil; `!=` is its negation; `< <= > >=` with nil
//!   on either side are false. Nothing here returns an error for a shape it did not expect.
//! - Numbers compare as numbers whatever their JSON form (`1 == 1.0`); a string never equals
//!   a number and never orders against one (the comparison is false).
//! - `[*]` in a path is true when any element (of a list) or any value (of a map) makes the
//!   comparison true.
//! - Regexes match the value's string form (numbers and booleans as their JSON text; nil
//!   never matches): MQL's `==~` must match all of it, the Stack Language's `:re` from its
//!   start.
//!
//! This module knows nothing of the store, so the agent can use it alone; `argus-query`
//! lowers a predicate to the store's index matcher.

use std::fmt;
use std::sync::Arc;
use std::sync::OnceLock;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

/// Compiled-size cap for one regex, so one pattern cannot take unbounded memory or time to
/// build (patterns come from users, and travel to agents).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One step of a path into an event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A map key.
    Key(String),
    /// A list index; negative counts from the end.
    Index(i64),
    /// `[*]`: every element of a list or value of a map.
    Any,
}

/// Where a value sits in an event: `e['a']['b'][0]`. A bare word `a` is `e['a']`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path(pub Vec<Segment>);

impl Path {
    pub fn key(k: impl Into<String>) -> Path {
        Path(vec![Segment::Key(k.into())])
    }

    /// The value at this path, or `None` (nil). A path with `[*]` has no single value.
    pub fn get<'a>(&self, event: &'a Value) -> Option<&'a Value> {
        let mut v = event;
        for seg in &self.0 {
            v = match (seg, v) {
                (Segment::Key(k), Value::Object(m)) => m.get(k)?,
                (Segment::Index(i), Value::Array(a)) => a.get(list_index(*i, a.len())?)?,
                _ => return None,
            };
        }
        (!v.is_null()).then_some(v)
    }

    /// Calls `f` with every value the path reaches (`[*]` fans out); nil is `None`. Stops as
    /// soon as `f` returns true, and returns whether it did.
    pub fn any(&self, event: &Value, f: &mut dyn FnMut(Option<&Value>) -> bool) -> bool {
        fn walk(segs: &[Segment], v: &Value, f: &mut dyn FnMut(Option<&Value>) -> bool) -> bool {
            let Some((seg, rest)) = segs.split_first() else {
                return f((!v.is_null()).then_some(v));
            };
            match (seg, v) {
                (Segment::Key(k), Value::Object(m)) => match m.get(k) {
                    Some(next) => walk(rest, next, f),
                    None => f(None),
                },
                (Segment::Index(i), Value::Array(a)) => {
                    match list_index(*i, a.len()).and_then(|i| a.get(i)) {
                        Some(next) => walk(rest, next, f),
                        None => f(None),
                    }
                }
                (Segment::Any, Value::Array(a)) => a.iter().any(|x| walk(rest, x, f)),
                (Segment::Any, Value::Object(m)) => m.values().any(|x| walk(rest, x, f)),
                _ => f(None),
            }
        }
        walk(&self.0, event, f)
    }

    pub fn has_any(&self) -> bool {
        self.0.contains(&Segment::Any)
    }

    /// The path's name in output columns: its segments joined with `.` (`metrics.latency`).
    pub fn dotted(&self) -> String {
        let mut s = String::new();
        for (i, seg) in self.0.iter().enumerate() {
            if i > 0 {
                s.push('.');
            }
            match seg {
                Segment::Key(k) => s.push_str(k),
                Segment::Index(n) => s.push_str(&n.to_string()),
                Segment::Any => s.push('*'),
            }
        }
        s
    }
}

fn list_index(i: i64, len: usize) -> Option<usize> {
    if i >= 0 {
        Some(i as usize).filter(|&i| i < len)
    } else {
        len.checked_sub(i.unsigned_abs() as usize)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("e")?;
        for seg in &self.0 {
            match seg {
                Segment::Key(k) => {
                    f.write_str("['")?;
                    write_quoted_body(f, k)?;
                    f.write_str("']")?;
                }
                Segment::Index(i) => write!(f, "[{i}]")?,
                Segment::Any => f.write_str("[*]")?,
            }
        }
        Ok(())
    }
}

/// A string inside single quotes, with `\` and `'` escaped.
pub(crate) fn write_quoted_body(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    Ok(())
}

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Path(Path),
    /// A literal, as the JSON value it compares with (`null`, `true`, `1`, `2.5`, `'x'`).
    Literal(Value),
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Path(p) => p.fmt(f),
            Operand::Literal(v) => write_literal(f, v),
        }
    }
}

pub(crate) fn write_literal(f: &mut impl fmt::Write, v: &Value) -> fmt::Result {
    match v {
        Value::String(s) => {
            f.write_char('\'')?;
            write_quoted_body(f, s)?;
            f.write_char('\'')
        }
        other => write!(f, "{other}"),
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// The operator with its sides swapped: `a < b` is `b > a`.
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Eq => CmpOp::Eq,
            CmpOp::Ne => CmpOp::Ne,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
        }
    }
}

/// How a regex must match a value's string form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegexMode {
    /// All of it (MQL's `==~`, with `.` matching newlines too).
    Full,
    /// From its start (the Stack Language's `:re`).
    Start,
}

/// Patterns compiled lately, by source, mode and case: dashboards ask the same queries every
/// few seconds, and compiling even `app00[0-3].*` (`.` is a UTF-8 automaton) was a quarter of
/// such a query's time. Few and short, so that what they hold stays small whatever the
/// patterns: each compiled program is capped at [`REGEX_SIZE_LIMIT`].
type PatternCache = ahash::AHashMap<(String, RegexMode, bool), Pattern>;
const CACHED_PATTERNS: usize = 16;
const CACHED_SOURCE_LEN: usize = 256;

fn compiled_cache() -> &'static std::sync::Mutex<PatternCache> {
    static CACHE: OnceLock<std::sync::Mutex<PatternCache>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// A compiled regex with the text it came from.
#[derive(Clone)]
pub struct Pattern {
    pub source: String,
    pub mode: RegexMode,
    pub ignore_case: bool,
    compiled: Arc<Regex>,
    /// The literal prefix every match has, worked out the first time the index needs it
    /// (see [`Pattern::index_prefix`]).
    index_prefix: Arc<OnceLock<String>>,
}

impl Pattern {
    /// Compiles `source` anchored as `mode` says. The source must be a regex on its own: one
    /// that only compiles once wrapped (`a)|(b`, which would close the anchoring group) is
    /// refused, so the pattern means the same wherever it is printed and parsed again.
    pub fn new(source: &str, mode: RegexMode, ignore_case: bool) -> Result<Pattern, String> {
        let key = (source.to_string(), mode, ignore_case);
        let cacheable = source.len() <= CACHED_SOURCE_LEN;
        if cacheable
            && let Some(hit) = compiled_cache()
                .lock()
                .ok()
                .and_then(|c| c.get(&key).cloned())
        {
            return Ok(hit);
        }
        let pattern = Pattern::compile(source, mode, ignore_case)?;
        if cacheable && let Ok(mut cache) = compiled_cache().lock() {
            if cache.len() >= CACHED_PATTERNS {
                cache.clear();
            }
            cache.insert(key, pattern.clone());
        }
        Ok(pattern)
    }

    fn compile(source: &str, mode: RegexMode, ignore_case: bool) -> Result<Pattern, String> {
        let wrapped = match mode {
            RegexMode::Full => format!("^(?s:{source})$"),
            RegexMode::Start => format!("^(?:{source})"),
        };
        let compiled = RegexBuilder::new(&wrapped)
            .case_insensitive(ignore_case)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| e.to_string())?;
        // The source alone must parse too. Parsing only: a compiled-size limit of 0 stops the
        // build right after the syntax check, so a well-formed source fails with "too big"
        // (or builds) and never costs a second full compile.
        if let Err(regex::Error::Syntax(e)) = RegexBuilder::new(source).size_limit(0).build() {
            return Err(e);
        }
        Ok(Pattern {
            source: source.to_string(),
            mode,
            ignore_case,
            compiled: Arc::new(compiled),
            index_prefix: Arc::default(),
        })
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.compiled.is_match(s)
    }

    /// The literal prefix every match has, as `compute` works it out (the store's index
    /// narrows its scan by it): computed the first time, then kept with the pattern.
    pub fn index_prefix(&self, compute: impl FnOnce(&Pattern) -> String) -> &str {
        self.index_prefix.get_or_init(|| compute(self))
    }

    /// The regex as compiled (anchors included), for index prefix extraction.
    pub fn anchored(&self) -> &str {
        self.compiled.as_str()
    }

    /// The source as MQL's `==~` reads it (a whole-value match, `.` matching newlines, no
    /// flags outside the pattern): what [`Predicate`]'s Display prints between the slashes.
    pub fn full_source(&self) -> String {
        match (self.mode, self.ignore_case) {
            (RegexMode::Full, false) => self.source.clone(),
            (RegexMode::Full, true) => format!("(?i:{})", self.source),
            // `.` in the source keeps not matching a newline; the tail takes the rest.
            (RegexMode::Start, ic) => {
                format!("(?{}-s:{}).*", if ic { "i" } else { "" }, self.source)
            }
        }
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
            && self.mode == other.mode
            && self.ignore_case == other.ignore_case
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/{}/{:?}{}",
            self.source,
            self.mode,
            if self.ignore_case { "i" } else { "" }
        )
    }
}

/// A predicate over an event (or a series' tags, which are a flat map of strings).
#[derive(Clone, Debug, PartialEq)]
pub enum Predicate {
    True,
    False,
    Compare {
        left: Operand,
        op: CmpOp,
        right: Operand,
    },
    /// The operand's string form matches.
    Regex {
        operand: Operand,
        pattern: Pattern,
    },
    /// The operand's string form contains `needle` (MQL's `==+`).
    Contains {
        operand: Operand,
        needle: String,
    },
    /// The operand equals one of the values (the Stack Language's `:in`).
    In {
        operand: Operand,
        values: Vec<Value>,
    },
    /// The path holds a value (not nil): the Stack Language's `:has`, MQL's `!= null`.
    Present(Path),
    And(Vec<Predicate>),
    Or(Vec<Predicate>),
    Not(Box<Predicate>),
}

impl Predicate {
    pub fn and(self, other: Predicate) -> Predicate {
        match (self, other) {
            (Predicate::And(mut a), Predicate::And(b)) => {
                a.extend(b);
                Predicate::And(a)
            }
            (Predicate::And(mut a), b) => {
                a.push(b);
                Predicate::And(a)
            }
            (a, Predicate::And(mut b)) => {
                b.insert(0, a);
                Predicate::And(b)
            }
            (a, b) => Predicate::And(vec![a, b]),
        }
    }

    pub fn or(self, other: Predicate) -> Predicate {
        match (self, other) {
            (Predicate::Or(mut a), Predicate::Or(b)) => {
                a.extend(b);
                Predicate::Or(a)
            }
            (Predicate::Or(mut a), b) => {
                a.push(b);
                Predicate::Or(a)
            }
            (a, Predicate::Or(mut b)) => {
                b.insert(0, a);
                Predicate::Or(b)
            }
            (a, b) => Predicate::Or(vec![a, b]),
        }
    }

    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Predicate {
        Predicate::Not(Box::new(self))
    }

    /// Whether the event satisfies the predicate.
    pub fn matches(&self, event: &Value) -> bool {
        match self {
            Predicate::True => true,
            Predicate::False => false,
            Predicate::Compare { left, op, right } => match (left, right) {
                (Operand::Path(p), Operand::Literal(lit)) => {
                    p.any(event, &mut |v| compare(v, *op, lit_ref(lit)))
                }
                (Operand::Literal(lit), Operand::Path(p)) => {
                    p.any(event, &mut |v| compare(lit_ref(lit), *op, v))
                }
                (Operand::Literal(a), Operand::Literal(b)) => compare(lit_ref(a), *op, lit_ref(b)),
                (Operand::Path(a), Operand::Path(b)) => {
                    a.any(event, &mut |x| b.any(event, &mut |y| compare(x, *op, y)))
                }
            },
            Predicate::Regex { operand, pattern } => any_value(operand, event, &mut |v| {
                v.is_some_and(|v| with_text(v, &mut |s| pattern.is_match(s)))
            }),
            Predicate::Contains { operand, needle } => any_value(operand, event, &mut |v| {
                v.is_some_and(|v| with_text(v, &mut |s| s.contains(needle.as_str())))
            }),
            Predicate::In { operand, values } => any_value(operand, event, &mut |v| {
                values.iter().any(|x| compare(v, CmpOp::Eq, lit_ref(x)))
            }),
            Predicate::Present(p) => p.any(event, &mut |v| v.is_some()),
            Predicate::And(ps) => ps.iter().all(|p| p.matches(event)),
            Predicate::Or(ps) => ps.iter().any(|p| p.matches(event)),
            Predicate::Not(p) => !p.matches(event),
        }
    }

    /// Every path the predicate reads (for the fields an agent must send along).
    pub fn paths(&self, out: &mut Vec<Path>) {
        let operand = |o: &Operand, out: &mut Vec<Path>| {
            if let Operand::Path(p) = o {
                out.push(p.clone());
            }
        };
        match self {
            Predicate::True | Predicate::False => {}
            Predicate::Compare { left, right, .. } => {
                operand(left, out);
                operand(right, out);
            }
            Predicate::Regex { operand: o, .. }
            | Predicate::Contains { operand: o, .. }
            | Predicate::In { operand: o, .. } => operand(o, out),
            Predicate::Present(p) => out.push(p.clone()),
            Predicate::And(ps) | Predicate::Or(ps) => ps.iter().for_each(|p| p.paths(out)),
            Predicate::Not(p) => p.paths(out),
        }
    }
}

fn lit_ref(v: &Value) -> Option<&Value> {
    (!v.is_null()).then_some(v)
}

fn any_value(operand: &Operand, event: &Value, f: &mut dyn FnMut(Option<&Value>) -> bool) -> bool {
    match operand {
        Operand::Path(p) => p.any(event, f),
        Operand::Literal(v) => f(lit_ref(v)),
    }
}

/// Calls `f` with the value's string form: a string as it is, anything else as JSON text.
fn with_text(v: &Value, f: &mut dyn FnMut(&str) -> bool) -> bool {
    match v {
        Value::String(s) => f(s),
        other => f(&other.to_string()),
    }
}

/// MQL's comparison with its nil rules; numbers compare numerically across integer and
/// float forms; other kinds compare only with their own kind.
pub fn compare(a: Option<&Value>, op: CmpOp, b: Option<&Value>) -> bool {
    let (a, b) = match (a, b) {
        (None, None) => return op == CmpOp::Eq,
        (None, Some(_)) | (Some(_), None) => return op == CmpOp::Ne,
        (Some(a), Some(b)) => (a, b),
    };
    let ord = match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (x, y) => {
            // Lists and maps are equal or not, never ordered.
            return match op {
                CmpOp::Eq => x == y,
                CmpOp::Ne => x != y,
                _ => false,
            };
        }
    };
    let Some(ord) = ord else {
        return op == CmpOp::Ne;
    };
    match op {
        CmpOp::Eq => ord.is_eq(),
        CmpOp::Ne => !ord.is_eq(),
        CmpOp::Lt => ord.is_lt(),
        CmpOp::Le => ord.is_le(),
        CmpOp::Gt => ord.is_gt(),
        CmpOp::Ge => ord.is_ge(),
    }
}

fn number_cmp(x: &serde_json::Number, y: &serde_json::Number) -> Option<std::cmp::Ordering> {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return Some(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return Some(a.cmp(&b));
    }
    x.as_f64()?.partial_cmp(&y.as_f64()?)
}

impl fmt::Display for Predicate {
    /// Prints as an MQL condition (what `where` would say).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Predicate::True => f.write_str("true"),
            Predicate::False => f.write_str("false"),
            Predicate::Compare { left, op, right } => write!(f, "{left} {} {right}", op.symbol()),
            Predicate::Regex { operand, pattern } => {
                write!(f, "{operand} ==~ /")?;
                write_slashed_body(f, &pattern.full_source())?;
                f.write_str("/")
            }
            Predicate::Contains { operand, needle } => {
                write!(f, "{operand} ==+ ")?;
                write_literal(f, &Value::String(needle.clone()))
            }
            Predicate::In { operand, values } => {
                f.write_str("(")?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    write!(f, "{operand} == ")?;
                    write_literal(f, v)?;
                }
                if values.is_empty() {
                    f.write_str("false")?;
                }
                f.write_str(")")
            }
            Predicate::Present(p) => write!(f, "{p} != null"),
            Predicate::And(ps) | Predicate::Or(ps) => {
                let word = if matches!(self, Predicate::And(_)) {
                    " and "
                } else {
                    " or "
                };
                f.write_str("(")?;
                for (i, p) in ps.iter().enumerate() {
                    if i > 0 {
                        f.write_str(word)?;
                    }
                    p.fmt(f)?;
                }
                f.write_str(")")
            }
            Predicate::Not(p) => write!(f, "not ({p})"),
        }
    }
}

/// A regex between slashes: a bare `/` becomes `\/` and an escape (`\x`) is kept as it is,
/// so the slash of `\\/` (an escaped backslash, then a slash) is escaped too.
fn write_slashed_body(f: &mut impl fmt::Write, re: &str) -> fmt::Result {
    let mut chars = re.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                f.write_char('\\')?;
                if let Some(n) = chars.next() {
                    f.write_char(n)?;
                }
            }
            '/' => f.write_str("\\/")?,
            other => f.write_char(other)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pattern asked again is the one compiled before; another mode, case or source is
    /// compiled on its own, and a refused source is never cached.
    #[test]
    fn compiled_patterns_are_reused() {
        let a = Pattern::new("cache-test[0-3].*", RegexMode::Start, false).unwrap();
        // Other tests share the cache and may just have emptied it: a few tries.
        let reused = (0..3).any(|_| {
            let x = Pattern::new("cache-test[0-3].*", RegexMode::Start, false).unwrap();
            let y = Pattern::new("cache-test[0-3].*", RegexMode::Start, false).unwrap();
            Arc::ptr_eq(&x.compiled, &y.compiled)
        });
        assert!(reused);
        let full = Pattern::new("cache-test[0-3].*", RegexMode::Full, false).unwrap();
        let ic = Pattern::new("cache-test[0-3].*", RegexMode::Start, true).unwrap();
        assert!(!Arc::ptr_eq(&a.compiled, &full.compiled));
        assert!(!Arc::ptr_eq(&a.compiled, &ic.compiled));
        assert!(ic.is_match("CACHE-TEST2x") && !a.is_match("CACHE-TEST2x"));
        assert!(Pattern::new("cache-test(", RegexMode::Start, false).is_err());
        assert!(Pattern::new("cache-test(", RegexMode::Start, false).is_err());
        // More distinct patterns than the cache keeps: each still compiles and matches.
        for i in 0..3 * CACHED_PATTERNS {
            let p = Pattern::new(&format!("cache-many{i}$"), RegexMode::Start, false).unwrap();
            assert!(p.is_match(&format!("cache-many{i}")));
        }
        assert!(compiled_cache().lock().unwrap().len() <= CACHED_PATTERNS);
    }
    use serde_json::json;

    fn cmp(path: &str, op: CmpOp, v: Value) -> Predicate {
        Predicate::Compare {
            left: Operand::Path(Path::key(path)),
            op,
            right: Operand::Literal(v),
        }
    }

    #[test]
    fn nil_rules() {
        let e = json!({"a": 1, "n": null});
        assert!(!cmp("missing", CmpOp::Eq, json!(1)).matches(&e));
        assert!(cmp("missing", CmpOp::Ne, json!(1)).matches(&e));
        assert!(!cmp("missing", CmpOp::Lt, json!(1)).matches(&e));
        assert!(!cmp("missing", CmpOp::Ge, json!(1)).matches(&e));
        assert!(cmp("missing", CmpOp::Eq, Value::Null).matches(&e));
        assert!(cmp("n", CmpOp::Eq, Value::Null).matches(&e), "null is nil");
        assert!(cmp("a", CmpOp::Ne, Value::Null).matches(&e), "present");
    }

    #[test]
    fn numbers_compare_numerically_and_never_with_strings() {
        let e = json!({"a": 1, "f": 2.5, "s": "1"});
        assert!(cmp("a", CmpOp::Eq, json!(1.0)).matches(&e));
        assert!(cmp("f", CmpOp::Gt, json!(2)).matches(&e));
        assert!(!cmp("s", CmpOp::Eq, json!(1)).matches(&e));
        assert!(!cmp("s", CmpOp::Lt, json!(5)).matches(&e));
        assert!(cmp("s", CmpOp::Ne, json!(1)).matches(&e));
        assert!(
            cmp("s", CmpOp::Lt, json!("2")).matches(&e),
            "strings order as strings"
        );
    }

    #[test]
    fn paths_walk_maps_and_lists_and_fan_out() {
        let e = json!({"m": {"l": [10, 20, {"k": "x"}]}, "tags": [{"n": "a"}, {"n": "b"}]});
        let p = |segs: Vec<Segment>| Path(segs);
        use Segment::*;
        assert_eq!(
            p(vec![Key("m".into()), Key("l".into()), Index(1)]).get(&e),
            Some(&json!(20))
        );
        assert_eq!(
            p(vec![
                Key("m".into()),
                Key("l".into()),
                Index(-1),
                Key("k".into())
            ])
            .get(&e),
            Some(&json!("x"))
        );
        assert_eq!(
            p(vec![Key("m".into()), Key("l".into()), Index(3)]).get(&e),
            None
        );
        assert_eq!(
            p(vec![Key("m".into()), Key("l".into()), Key("x".into())]).get(&e),
            None
        );
        let any = Predicate::Compare {
            left: Operand::Path(p(vec![Key("tags".into()), Any, Key("n".into())])),
            op: CmpOp::Eq,
            right: Operand::Literal(json!("b")),
        };
        assert!(any.matches(&e));
    }

    #[test]
    fn regexes_match_string_forms() {
        let e = json!({"path": "/api/v1\nx", "code": 503});
        let re = |src: &str, mode| Predicate::Regex {
            operand: Operand::Path(Path::key(if src.starts_with('5') {
                "code"
            } else {
                "path"
            })),
            pattern: Pattern::new(src, mode, false).unwrap(),
        };
        assert!(
            re("/api.*", RegexMode::Full).matches(&e),
            "dot matches newline"
        );
        assert!(!re("/api", RegexMode::Full).matches(&e), "whole string");
        assert!(re("/api", RegexMode::Start).matches(&e));
        assert!(
            re("5\\d\\d", RegexMode::Full).matches(&e),
            "numbers as text"
        );
        assert!(Pattern::new("(", RegexMode::Full, false).is_err());
    }

    #[test]
    fn a_pattern_must_be_a_regex_on_its_own() {
        for mode in [RegexMode::Full, RegexMode::Start] {
            // Compiles once wrapped in the anchoring group, but is not a regex alone.
            assert!(Pattern::new("a)|(b", mode, false).is_err());
            assert!(Pattern::new("a)(?:b", mode, false).is_err());
            // Large but well-formed patterns are fine (the check only parses).
            let big = Pattern::new("[a-z]{50}(a|b|c){20}", mode, true);
            assert!(big.is_ok(), "{:?}", big.err());
            assert!(Pattern::new("", mode, false).is_ok());
        }
    }

    /// Printed as an MQL condition and parsed back, a regex test matches the same values:
    /// slashes, escapes, newlines against `.`, case.
    #[test]
    fn regexes_print_as_mql_and_parse_back() {
        let values = [
            "", "a", "ab", "a/b", "a\\/b", "a\nb", "A/B", "x", "/", "\\", "a\\b", "ab\nc",
        ];
        let sources = [
            "a",
            "a/b",
            "a\\/b",
            "a\\\\/b",
            "a.b",
            "(?s:a.b)",
            "a[/]b",
            "a\\\\",
            "A",
            "ab$",
            "a|/",
            "(?x) a / b # comment\n",
        ];
        for source in sources {
            for mode in [RegexMode::Full, RegexMode::Start] {
                for ic in [false, true] {
                    let p = Predicate::Regex {
                        operand: Operand::Path(Path::key("k")),
                        pattern: Pattern::new(source, mode, ic).unwrap(),
                    };
                    let text = p.to_string();
                    let back = crate::parse_condition(&text)
                        .unwrap_or_else(|e| panic!("{source:?} printed as {text}: {e}"));
                    for v in values {
                        let e = serde_json::json!({ "k": v });
                        assert_eq!(
                            back.matches(&e),
                            p.matches(&e),
                            "{source:?} {mode:?} ic={ic} printed as {text} on {v:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn flip_swaps_sides() {
        let e = json!({"a": "m"});
        for op in [
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
        ] {
            for lit in ["a", "m", "z"] {
                let left = Predicate::Compare {
                    left: Operand::Path(Path::key("a")),
                    op,
                    right: Operand::Literal(json!(lit)),
                };
                let right = Predicate::Compare {
                    left: Operand::Literal(json!(lit)),
                    op: op.flip(),
                    right: Operand::Path(Path::key("a")),
                };
                assert_eq!(left.matches(&e), right.matches(&e), "{left} vs {right}");
            }
        }
    }
}
