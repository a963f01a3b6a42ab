//! The Stack Language interpreter: runs parsed tokens over a stack of typed items, executing
//! each `:word` with the first overload whose parameter types match the top of the stack.

use ahash::AHashMap;

use crate::error::{Error, Result};
use crate::model::{DataExpr, DataKind, Item, StyleExpr, TimeSeriesExpr};
use crate::parser::{self, Token};

/// Total weight (nodes) that copying words may add in one program. Copies are the only way
/// a program grows faster than its text, and `:dup,:and` repeated doubles each time.
const MAX_COPY_WEIGHT: usize = 1_000_000;
/// Nested program runs (`:call` inside `:each` ...): Atlas stops at 10 too.
const MAX_CALL_DEPTH: usize = 10;
/// Deepest query tree accepted; deep trees cost stack in printing, lowering and dropping.
pub(crate) const MAX_QUERY_DEPTH: usize = 256;
/// How many item types a "no matches" error lists.
const SUMMARY_ITEMS: usize = 10;

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

pub(crate) type Exec = fn(&mut Context<'_>, Vec<Item>) -> std::result::Result<(), Failure>;

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

pub(crate) fn double_of(item: &Item) -> Option<f64> {
    match item {
        Item::Str(s) => parse_number(s),
        Item::Expr(TimeSeriesExpr::Constant(v)) => Some(*v),
        _ => None,
    }
}

pub(crate) fn int_of(item: &Item) -> Option<usize> {
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
    pub(crate) fn new(vocabularies: Vec<Vocabulary>) -> Self {
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

/// The state of one program run.
pub(crate) struct Context<'r> {
    registry: &'r Registry,
    pub stack: Vec<Item>,
    /// Items moved out of reach by `:freeze`; they come first in the result.
    pub frozen: Vec<Item>,
    pub vars: AHashMap<String, Item>,
    copied: usize,
    call_depth: usize,
    /// Position of the top-level token being run, for errors from nested programs.
    pos: usize,
}

impl<'r> Context<'r> {
    fn new(registry: &'r Registry) -> Self {
        Context {
            registry,
            stack: Vec::new(),
            frozen: Vec::new(),
            vars: AHashMap::new(),
            copied: 0,
            call_depth: 0,
            pos: 0,
        }
    }

    /// Accounts for a copy of `item` before a word pushes it.
    pub(crate) fn charge_copy(&mut self, item: &Item) -> std::result::Result<(), Failure> {
        self.copied = self.copied.saturating_add(item.weight());
        if self.copied > MAX_COPY_WEIGHT {
            return Err(Failure::TooComplex(format!(
                "copies add more than {MAX_COPY_WEIGHT} nodes"
            )));
        }
        Ok(())
    }

    /// Runs a list as a program: words execute, everything else is pushed.
    pub(crate) fn run(&mut self, program: Vec<Item>) -> std::result::Result<(), Failure> {
        if self.call_depth >= MAX_CALL_DEPTH {
            return Err(Failure::TooComplex(format!(
                "programs nested more than {MAX_CALL_DEPTH} calls deep"
            )));
        }
        self.call_depth += 1;
        let mut result = Ok(());
        for item in program {
            match item {
                Item::Word(name) => {
                    if let Err(e) = self.execute_word(&name, self.pos) {
                        result = Err(Failure::Nested(Box::new(e)));
                        break;
                    }
                }
                other => self.stack.push(other),
            }
        }
        self.call_depth -= 1;
        result
    }

    fn execute_word(&mut self, name: &str, pos: usize) -> Result<()> {
        let Some(overloads) = self.registry.lookup(name) else {
            return Err(Error::UnknownWord {
                name: name.to_string(),
                pos,
            });
        };
        let Some(word) = overloads.iter().find(|w| w.matches(&self.stack)) else {
            return Err(no_match(name, overloads, &self.stack, pos));
        };
        let mut args = self.stack.split_off(self.stack.len() - word.params.len());
        // Style passthrough: a word over expressions applies to a styled expression's
        // expression, and its result keeps the style if exactly one input had one.
        let mut styles = Vec::new();
        for (param, arg) in word.params.iter().zip(args.iter_mut()) {
            if *param == Param::TimeSeries && matches!(arg, Item::Style(_)) {
                let Item::Style(s) = std::mem::replace(arg, Item::List(Vec::new())) else {
                    continue;
                };
                *arg = Item::Expr(s.expr);
                styles.push(s.settings);
            }
        }
        (word.exec)(self, args).map_err(|f| failure_error(word, pos, f))?;
        if let [settings] = styles.as_slice()
            && let Some(Item::Expr(expr)) = self.stack.last()
        {
            let styled = StyleExpr {
                expr: expr.clone(),
                settings: settings.clone(),
            };
            if let Some(top) = self.stack.last_mut() {
                *top = Item::Style(styled);
            }
        }
        Ok(())
    }
}

fn no_match(name: &str, overloads: &[&Word], stack: &[Item], pos: usize) -> Error {
    let skip = stack.len().saturating_sub(SUMMARY_ITEMS);
    let mut types: Vec<&str> = stack[skip..].iter().map(Item::type_name).collect();
    if skip > 0 {
        types.insert(0, "...");
    }
    let candidates: Vec<String> = overloads
        .iter()
        .map(|w| format!("[{}]", w.signature))
        .collect();
    Error::NoMatch {
        name: name.to_string(),
        stack: format!("[{}]", types.join(",")),
        candidates: candidates.join(", "),
        pos,
    }
}

fn failure_error(word: &Word, pos: usize, f: Failure) -> Error {
    let name = word.name.to_string();
    match f {
        Failure::Invalid(reason) => Error::InvalidParameters {
            word: name,
            pos,
            reason,
        },
        Failure::BadRegex { pattern, reason } => Error::BadRegex {
            word: name,
            pattern,
            pos,
            reason,
        },
        Failure::TooComplex(reason) => Error::TooComplex { pos, reason },
        Failure::Nested(e) => *e,
    }
}

/// Converts a parsed list to a stack item (lists are at most `MAX_NESTING` deep).
fn list_item(tokens: Vec<Token>) -> Item {
    Item::List(
        tokens
            .into_iter()
            .map(|t| match t {
                Token::Str { value, .. } => Item::Str(value),
                Token::Word { name, .. } => Item::Word(name),
                Token::List { items, .. } => list_item(items),
            })
            .collect(),
    )
}

/// Runs a program with the words of `registry` and returns the final stack, bottom first
/// (frozen items first). (`crate::run` runs one with every word of the language.)
pub(crate) fn execute(registry: &Registry, program: &str) -> Result<Vec<Item>> {
    let tokens = parser::parse(program)?;
    let mut ctx = Context::new(registry);
    for token in tokens {
        match token {
            Token::Str { value, .. } => ctx.stack.push(Item::Str(value)),
            Token::List { items, .. } => ctx.stack.push(list_item(items)),
            Token::Word { name, pos } => {
                ctx.pos = pos;
                ctx.execute_word(&name, pos)?;
            }
        }
    }
    let mut out = ctx.frozen;
    out.append(&mut ctx.stack);
    Ok(out)
}

/// One step of a program run, as `/api/v1/expr` shows it: the tokens still to run and the
/// stack (top first) and variables after the tokens before them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugStep {
    pub program: Vec<String>,
    pub stack: Vec<String>,
    pub variables: Vec<(String, String)>,
}

fn token_text(token: &Token) -> String {
    match token {
        Token::Str { value, .. } => Item::Str(value.clone()).to_string(),
        Token::Word { name, .. } => format!(":{name}"),
        Token::List { items, .. } => list_item(items.clone()).to_string(),
    }
}

/// Runs a program token by token and records the state before the first token and after
/// each one (a list is one token). Fails as [`execute`] does.
pub(crate) fn debug(registry: &Registry, program: &str) -> Result<Vec<DebugStep>> {
    let tokens = parser::parse(program)?;
    let texts: Vec<String> = tokens.iter().map(token_text).collect();
    let mut ctx = Context::new(registry);
    let snapshot = |ctx: &Context<'_>, done: usize| {
        let mut stack: Vec<String> = ctx
            .frozen
            .iter()
            .chain(ctx.stack.iter())
            .map(Item::to_string)
            .collect();
        stack.reverse();
        let mut variables: Vec<(String, String)> = ctx
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        variables.sort();
        DebugStep {
            program: texts[done..].to_vec(),
            stack,
            variables,
        }
    };
    let mut steps = vec![snapshot(&ctx, 0)];
    for (i, token) in tokens.into_iter().enumerate() {
        match token {
            Token::Str { value, .. } => ctx.stack.push(Item::Str(value)),
            Token::List { items, .. } => ctx.stack.push(list_item(items)),
            Token::Word { name, pos } => {
                ctx.pos = pos;
                ctx.execute_word(&name, pos)?;
            }
        }
        steps.push(snapshot(&ctx, i + 1));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::print_stack;

    #[test]
    fn debug_steps() {
        let steps = debug(
            crate::words::registry(),
            "name,sps,:eq,(,a,),:drop,k,:swap,:set",
        )
        .unwrap();
        let remaining: Vec<usize> = steps.iter().map(|s| s.program.len()).collect();
        assert_eq!(remaining, [8, 7, 6, 5, 4, 3, 2, 1, 0]);
        assert_eq!(steps[0].program[3], "(,a,)");
        assert_eq!(steps[2].stack, ["sps", "name"]);
        assert_eq!(steps[3].stack, ["name,sps,:eq"]);
        assert_eq!(steps[4].stack, ["(,a,)", "name,sps,:eq"]);
        assert!(steps[8].stack.is_empty());
        assert_eq!(
            steps[8].variables,
            [("k".to_string(), "name,sps,:eq".to_string())]
        );
        assert!(debug(crate::words::registry(), "a,:nope").is_err());
    }

    fn check(program: &str, expected: &str) {
        let got = match crate::run(program) {
            Ok(stack) => print_stack(&stack),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expected, "program: {program}");
    }

    #[test]
    fn pushes_and_words() {
        check("a,b", "a,b");
        check("a,b,:swap", "b,a");
        check("name,sps,:eq", "name,sps,:eq");
        check("(,a,(,b,),:dup,)", "(,a,(,b,),:dup,)");
        check("a\\u002cb", "a\\u002cb");
    }

    #[test]
    fn errors_name_word_and_position() {
        check("a,:foo", "error: unknown word ':foo' at position 2");
        check(
            "name,sps,:eq,nf.app,:by",
            "error: no matches for word ':by' with stack [Query,String] at position 20, \
             candidates: [af:AggregateFunction keys:List -- DataExpr], \
             [TimeSeriesExpr keys:List -- TimeSeriesExpr]",
        );
        check(
            ":drop",
            "error: no matches for word ':drop' with stack [] at position 0, candidates: [a -- ]",
        );
        check(
            "a,b,c,d,e,f,g,h,i,j,k,l,:by",
            "error: no matches for word ':by' with stack [...,String,String,String,String,\
             String,String,String,String,String,String] at position 24, \
             candidates: [af:AggregateFunction keys:List -- DataExpr], \
             [TimeSeriesExpr keys:List -- TimeSeriesExpr]",
        );
        check(
            "k,[,:re",
            "error: invalid regex '[' for word ':re' at position 4: regex parse error:\n    \
             ^(?:[)\n        ^\nerror: unclosed character class",
        );
    }

    #[test]
    fn copies_are_bounded() {
        let doubling = format!("a,b,:eq{}", ",:dup,:or".repeat(40));
        let err = crate::run(&doubling).unwrap_err();
        assert!(matches!(err, Error::TooComplex { .. }), "{err}");
        let lists = format!("a{}", ",:dup,:list".repeat(40));
        assert!(crate::run(&lists).is_err());
    }

    #[test]
    fn query_depth_is_bounded() {
        let deep = format!("a,b,:eq{}", ",:not".repeat(300));
        assert!(matches!(crate::run(&deep), Err(Error::TooComplex { .. })));
        let chain = format!("a,b,:eq{}", ",c,d,:eq,:and".repeat(100));
        assert!(crate::run(&chain).is_ok());
    }

    #[test]
    fn nested_programs_are_bounded() {
        check(
            "(,:dup,:call,),:dup,:call",
            "error: expression too complex at position 20: programs nested more than 10 calls deep",
        );
    }
}
