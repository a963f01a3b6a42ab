//! Words as values (Atlas's `Word.scala` idea): each has a name, the parameter types it takes
//! from the top of the stack, a signature, a one-line summary and runnable examples, so docs,
//! completion and tests come from one definition. Words live in vocabularies; the registry
//! keeps them in dependency order, which is also overload priority.

mod data;
mod filter;
mod math;
mod query;
mod stack;
mod stateful;
pub(crate) mod style;

use std::sync::OnceLock;

use ahash::AHashMap;

use crate::interpreter::Context;
use crate::model::{AggrOp, DataExpr, DataKind, Item, StyleExpr, TimeSeriesExpr};

/// Why a word refused to run, before the interpreter adds the word's name and position.
#[derive(Debug)]
pub(crate) enum Failure {
    Invalid(String),
    BadRegex {
        pattern: String,
        reason: String,
    },
    TooComplex(String),
    /// An error from a nested program run by the word (`:call`, `:each`, ...).
    Nested(Box<crate::error::Error>),
}

pub(crate) type Exec = fn(&mut Context<'_>, Vec<Item>) -> Result<(), Failure>;

/// A type a word accepts at one position on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Param {
    Any,
    Str,
    /// A string holding a non-negative integer, or an integral constant.
    Int,
    List,
    /// A list whose items are all strings.
    StrList,
    /// A list of numbers.
    DoubleList,
    Query,
    /// A query (summed) or `:sum`, `:count`, `:min`, `:max`, `:avg` of a query.
    AggrFn,
    /// A data expression other than `:all`: a query (summed), an aggregate or a group by.
    DataExpr,
    /// Anything that evaluates to lines: a query (summed), an expression, a number (a
    /// constant). A styled expression is accepted too: the word applies to the expression
    /// and the style is kept (Atlas's style passthrough).
    TimeSeries,
    /// A number, or a constant expression.
    Double,
    /// A duration such as `5m`, `1h` or `PT1H`.
    Duration,
    /// What style words take: a styled expression or anything `TimeSeries` accepts.
    Presentation,
}

impl Param {
    pub(crate) fn accepts(self, item: &Item) -> bool {
        match self {
            Param::Any => true,
            Param::Str => matches!(item, Item::Str(_)),
            Param::Int => int_of(item).is_some(),
            Param::List => matches!(item, Item::List(_)),
            Param::StrList => {
                matches!(item, Item::List(xs) if xs.iter().all(|x| matches!(x, Item::Str(_))))
            }
            Param::DoubleList => matches!(
                item,
                Item::List(xs) if xs.iter().all(|x| matches!(x, Item::Str(s) if parse_number(s).is_some()))
            ),
            Param::Query => matches!(item, Item::Query(_)),
            Param::AggrFn => matches!(
                item,
                Item::Query(_)
                    | Item::Expr(TimeSeriesExpr::Data(DataExpr {
                        kind: DataKind::Aggregate(_),
                        ..
                    }))
            ),
            Param::DataExpr => matches!(
                item,
                Item::Query(_)
                    | Item::Expr(TimeSeriesExpr::Data(DataExpr {
                        kind: DataKind::Aggregate(_) | DataKind::GroupBy { .. },
                        ..
                    }))
            ),
            Param::TimeSeries => match item {
                Item::Query(_) | Item::Expr(_) | Item::Style(_) => true,
                Item::Str(s) => parse_number(s).is_some(),
                _ => false,
            },
            Param::Double => double_of(item).is_some(),
            Param::Duration => {
                matches!(item, Item::Str(s) if crate::time::parse_duration(s).is_some())
            }
            Param::Presentation => Param::TimeSeries.accepts(item),
        }
    }
}

/// Parses a number as Java's `Double.parseDouble` would for Stack Language input: decimal
/// and scientific notation, `NaN`, `Infinity`, `-Infinity`. Not `inf` or `nan`.
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    match t {
        "NaN" => return Some(f64::NAN),
        "Infinity" | "+Infinity" => return Some(f64::INFINITY),
        "-Infinity" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    let body = t.strip_suffix(['d', 'D', 'f', 'F']).unwrap_or(t);
    if body.is_empty()
        || !body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    body.parse::<f64>().ok()
}

fn double_of(item: &Item) -> Option<f64> {
    match item {
        Item::Str(s) => parse_number(s),
        Item::Expr(TimeSeriesExpr::Constant(v)) => Some(*v),
        _ => None,
    }
}

fn int_of(item: &Item) -> Option<usize> {
    match item {
        Item::Str(s) => s.trim().parse::<usize>().ok(),
        Item::Expr(TimeSeriesExpr::Constant(v)) if v.fract() == 0.0 && *v >= 0.0 && *v < 1e15 => {
            Some(*v as usize)
        }
        _ => None,
    }
}

/// One runnable example: the stack before the word (as a program) and the stack after it
/// (printed), or `None` when the word must refuse that stack.
pub(crate) type Example = (&'static str, Option<&'static str>);

/// A stack operator.
pub(crate) struct Word {
    pub name: &'static str,
    /// Types taken from the top of the stack, bottom first; the word gets them popped, in
    /// that order. Words that read deeper (`:list`, `:pick`) use the context's stack.
    pub params: &'static [Param],
    /// Inputs and outputs, Forth style: `k:String v:String -- Query`.
    pub signature: &'static str,
    pub summary: &'static str,
    pub examples: &'static [Example],
    pub exec: Exec,
}

impl Word {
    pub(crate) fn matches(&self, stack: &[Item]) -> bool {
        let n = self.params.len();
        n <= stack.len()
            && self
                .params
                .iter()
                .zip(&stack[stack.len() - n..])
                .all(|(p, item)| p.accepts(item))
    }
}

/// A named group of words.
pub(crate) struct Vocabulary {
    pub name: &'static str,
    pub words: &'static [Word],
}

/// Every vocabulary, in dependency order (std, query, data, math, stateful, filter, style).
/// For a name, overloads are tried in that order.
pub(crate) struct Registry {
    pub vocabularies: Vec<Vocabulary>,
    by_name: AHashMap<&'static str, Vec<&'static Word>>,
}

impl Registry {
    fn new(vocabularies: Vec<Vocabulary>) -> Self {
        let mut by_name: AHashMap<&'static str, Vec<&'static Word>> = AHashMap::new();
        for v in &vocabularies {
            for w in v.words {
                by_name.entry(w.name).or_default().push(w);
            }
        }
        Registry {
            vocabularies,
            by_name,
        }
    }

    /// Overloads of `name`, in priority order.
    pub(crate) fn lookup(&self, name: &str) -> Option<&[&'static Word]> {
        self.by_name.get(name).map(Vec::as_slice)
    }
}

/// Documentation of one word, as the crate exposes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WordDoc {
    pub vocabulary: &'static str,
    pub name: &'static str,
    /// Inputs and outputs, Forth style: `k:String v:String -- Query`.
    pub signature: &'static str,
    pub summary: &'static str,
    /// Example stacks the word applies to, as programs without the word itself.
    pub examples: Vec<&'static str>,
}

pub(crate) fn docs() -> Vec<WordDoc> {
    let r = registry();
    r.vocabularies
        .iter()
        .flat_map(|v| {
            v.words.iter().map(move |w| WordDoc {
                vocabulary: v.name,
                name: w.name,
                signature: w.signature,
                summary: w.summary,
                examples: w
                    .examples
                    .iter()
                    .filter(|(_, out)| out.is_some())
                    .map(|(input, _)| *input)
                    .collect(),
            })
        })
        .collect()
}

/// The registry of every word the language has.
pub(crate) fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        Registry::new(vec![
            Vocabulary {
                name: "std",
                words: stack::WORDS,
            },
            Vocabulary {
                name: "query",
                words: query::WORDS,
            },
            Vocabulary {
                name: "data",
                words: data::WORDS,
            },
            Vocabulary {
                name: "math",
                words: math::WORDS,
            },
            Vocabulary {
                name: "stateful",
                words: stateful::WORDS,
            },
            Vocabulary {
                name: "filter",
                words: filter::WORDS,
            },
            Vocabulary {
                name: "style",
                words: style::WORDS,
            },
        ])
    })
}

/// Pops helpers for word bodies. The interpreter has checked the types already, so a
/// mismatch here is a broken invariant, reported as an error rather than a panic.
pub(crate) fn take_str(item: Item) -> Result<String, Failure> {
    match item {
        Item::Str(s) => Ok(s),
        other => Err(mismatch("String", &other)),
    }
}

pub(crate) fn take_list(item: Item) -> Result<Vec<Item>, Failure> {
    match item {
        Item::List(xs) => Ok(xs),
        other => Err(mismatch("List", &other)),
    }
}

pub(crate) fn take_strs(item: Item) -> Result<Vec<String>, Failure> {
    take_list(item)?.into_iter().map(take_str).collect()
}

pub(crate) fn take_query(item: Item) -> Result<crate::model::Query, Failure> {
    match item {
        Item::Query(q) => Ok(q),
        other => Err(mismatch("Query", &other)),
    }
}

pub(crate) fn take_int(item: Item) -> Result<usize, Failure> {
    int_of(&item)
        .ok_or_else(|| Failure::Invalid(format!("expected a non-negative integer, got '{item}'")))
}

pub(crate) fn take_double(item: Item) -> Result<f64, Failure> {
    double_of(&item).ok_or_else(|| Failure::Invalid(format!("expected a number, got '{item}'")))
}

pub(crate) fn take_doubles(item: Item) -> Result<Vec<f64>, Failure> {
    take_list(item)?.into_iter().map(take_double).collect()
}

pub(crate) fn take_duration(item: Item) -> Result<i64, Failure> {
    let s = take_str(item)?;
    crate::time::parse_duration(&s).ok_or_else(|| {
        Failure::Invalid(format!(
            "invalid duration '{s}': expected e.g. 5m, 1h, 1w or PT1H"
        ))
    })
}

/// Coerces an item to an expression: a query is summed, a number is a constant.
pub(crate) fn take_ts(item: Item) -> Result<TimeSeriesExpr, Failure> {
    match item {
        Item::Expr(e) => Ok(e),
        Item::Query(q) => Ok(TimeSeriesExpr::Data(DataExpr::aggregate(AggrOp::Sum, q))),
        Item::Style(s) => Ok(s.expr),
        Item::Str(ref s) => match parse_number(s) {
            Some(v) => Ok(TimeSeriesExpr::Constant(v)),
            None => Err(mismatch("TimeSeriesExpr", &item)),
        },
        other => Err(mismatch("TimeSeriesExpr", &other)),
    }
}

/// Coerces an item to a styled expression (empty settings unless it has some).
pub(crate) fn take_style(item: Item) -> Result<StyleExpr, Failure> {
    match item {
        Item::Style(s) => Ok(s),
        other => take_ts(other).map(StyleExpr::new),
    }
}

pub(crate) fn mismatch(want: &str, got: &Item) -> Failure {
    Failure::Invalid(format!(
        "internal: expected {want}, found {}",
        got.type_name()
    ))
}

/// Destructures the popped arguments of a word into a fixed-size array.
pub(crate) fn args<const N: usize>(items: Vec<Item>) -> Result<[Item; N], Failure> {
    let n = items.len();
    items
        .try_into()
        .map_err(|_| Failure::Invalid(format!("internal: expected {N} arguments, got {n}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interpreter;
    use crate::model::print_stack;

    /// Every example of every word, run as `<input>,:<word>`.
    #[test]
    fn word_examples() {
        let mut failures = Vec::new();
        let mut n = 0;
        for v in &registry().vocabularies {
            for w in v.words {
                assert!(!w.examples.is_empty(), ":{} has no examples", w.name);
                assert!(!w.summary.is_empty() && !w.signature.is_empty());
                for (input, want) in w.examples {
                    n += 1;
                    let program = if input.is_empty() {
                        format!(":{}", w.name)
                    } else {
                        format!("{input},:{}", w.name)
                    };
                    let got = interpreter::execute(&program).map(|s| print_stack(&s));
                    let ok = match (want, &got) {
                        (Some(w), Ok(g)) => w == g,
                        (None, Err(_)) => true,
                        _ => false,
                    };
                    if !ok {
                        failures.push(format!("{program}: want {want:?}, got {got:?}"));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(n > 60, "only {n} examples");
    }

    #[test]
    fn examples_print_canonically() {
        // Each example's output is itself a program that rebuilds the same stack.
        for v in &registry().vocabularies {
            for w in v.words {
                for (_, want) in w.examples {
                    let Some(want) = want else { continue };
                    let stack = interpreter::execute(want).unwrap();
                    assert_eq!(&print_stack(&stack), want, "in examples of :{}", w.name);
                }
            }
        }
    }
}
