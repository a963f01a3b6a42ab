//! Words as values (Atlas's `Word.scala` idea): each has a name, the parameter types it takes
//! from the top of the stack, a signature, a one-line summary and runnable examples, so docs,
//! completion and tests come from one definition. Words live in vocabularies; the registry
//! keeps them in dependency order, which is also overload priority.

mod data;
mod event;
mod filter;
mod math;
mod query;
mod stack;
mod stateful;
pub(crate) mod style;

use std::sync::OnceLock;

pub(crate) use crate::interpreter::{
    Failure, Param, Registry, Vocabulary, Word, double_of, int_of, parse_number,
};
use crate::model::{AggrOp, DataExpr, Item, StyleExpr, TimeSeriesExpr};

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
            Vocabulary {
                name: "event",
                words: event::WORDS,
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
                    let got = crate::run(&program).map(|s| print_stack(&s));
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
                    let stack = crate::run(want).unwrap();
                    assert_eq!(&print_stack(&stack), want, "in examples of :{}", w.name);
                }
            }
        }
    }
}
