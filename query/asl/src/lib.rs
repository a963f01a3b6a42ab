//! Argus query languages: the Atlas Stack Language (ASL) evaluated over the store's read
//! interface, and the graph API's request parsing and output formats.
//!
//! The server calls [`graph::GraphRequest::from_params`], then [`graph::evaluate`] (or
//! [`graph::evaluate_with_limits`]), then [`graph::GraphResult::to_atlas_json`].
//! [`normalize`] checks an expression and prints it back in canonical form.
//!
//! Inside: `parser` (tokens, lists, comments, escapes) → `interpreter` (a stack of typed
//! `model` items, words looked up in the `words` registry by vocabulary) → `eval` (data
//! expressions against a [`argus_tsdb::SeriesSource`]) → `graph` (windows, limits, JSON).
//! This crate knows nothing of HTTP or of how the store keeps its data.
//!
//! The predicate core and MQL are `argus-mql` (the part the agent links); PNG drawing is
//! `argus-chart`.

#[doc(hidden)]
pub mod cases;
mod error;
mod eval;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
mod interpreter;
mod lowering;
mod model;
mod numfmt;
mod parser;
pub mod split;
mod time;
mod words;

// The predicate core and the shared vocabulary live in `argus-mql` (what the agent links);
// the Stack Language compiles to them.
pub(crate) use argus_mql::{duration, predicate};

pub use error::{Error, Result};
pub use eval::Stats;
pub use interpreter::DebugStep;

/// Runs an expression step by step, as Atlas's `/api/v1/expr` shows it: the initial state,
/// then the state after each token. An invalid expression is the same error the graph API
/// gives.
pub fn debug(expr: &str) -> Result<Vec<DebugStep>> {
    let steps = interpreter::debug(words::registry(), expr)?;
    graph::presentations(run(expr)?)?;
    Ok(steps)
}
pub use graph::{
    Format, GraphRequest, GraphResult, Limits, ResultSeries, evaluate, evaluate_with_fanout,
    evaluate_with_limits,
};
pub use words::WordDoc;

/// Runs a program with every word of the language: the final stack, bottom first.
pub(crate) fn run(program: &str) -> Result<Vec<model::Item>> {
    interpreter::execute(words::registry(), program)
}

/// Runs an expression and prints the resulting stack back as canonical Stack Language (what
/// Atlas's `/api/v1/expr/normalize` does); an error if the expression does not run.
pub fn normalize(expr: &str) -> Result<String> {
    run(expr).map(|stack| model::print_stack(&stack))
}

/// Compiles a query expression (such as `name,cpu,:eq,nf.app,www,:eq,:and`) to the store's
/// tag predicate, as the tags API's `q` parameter needs. Anything but exactly one query on
/// the resulting stack is an error. The matcher is the lowering of [`tag_predicate`]'s.
pub fn tag_query(expr: &str) -> Result<argus_tsdb::Matcher> {
    single_query(expr).map(|q| q.to_matcher())
}

/// Compiles a query expression to the predicate core: the representation MQL's `where`
/// compiles to, that agents evaluate on events (its Display is the MQL condition they parse).
pub fn tag_predicate(expr: &str) -> Result<predicate::Predicate> {
    single_query(expr).map(|q| q.to_predicate())
}

fn single_query(expr: &str) -> Result<model::Query> {
    let stack = run(expr)?;
    match stack.as_slice() {
        [model::Item::Query(q)] => Ok(q.clone()),
        _ => Err(Error::InvalidParam {
            name: "q",
            value: expr.to_string(),
            reason: format!(
                "expected a single query such as name,cpu,:eq; the expression leaves [{}]",
                stack
                    .iter()
                    .map(|i| i.type_name())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }),
    }
}

/// Every word of the language with its documentation, vocabulary by vocabulary in
/// dependency order (std, query, data, math, stateful, filter, style): for docs, completion
/// and the expr API.
pub fn words() -> Vec<WordDoc> {
    words::docs()
}

#[cfg(test)]
mod round_trip;

#[cfg(test)]
mod tests {
    use argus_tsdb::{TagMap, Tags};

    #[test]
    fn tag_query_compiles_single_queries_only() {
        let m = super::tag_query("name,cpu,:eq,nf.app,w,:re,:and").unwrap();
        let yes = TagMap::from_pairs([("name", "cpu"), ("nf.app", "www")]);
        let no = TagMap::from_pairs([("name", "cpu"), ("nf.app", "api")]);
        assert!(m.matches(&yes as &dyn Tags));
        assert!(!m.matches(&no as &dyn Tags));
        for bad in ["name,cpu,:eq,:sum", "name,cpu", "a,b,:eq,c,d,:eq", ":foo"] {
            assert!(super::tag_query(bad).is_err(), "{bad}");
            assert!(super::tag_predicate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tag_predicate_prints_as_an_mql_condition() {
        let p =
            super::tag_predicate("name,cpu,:eq,nf.app,w,:re,:and,status,:has,:not,:and").unwrap();
        assert_eq!(
            p.to_string(),
            "((e['name'] == 'cpu' and e['nf.app'] ==~ /(?-s:w).*/) and not (e['status'] != null))"
        );
        let back = argus_mql::parse_condition(&p.to_string()).unwrap();
        let event = serde_json::json!({"name": "cpu", "nf.app": "www"});
        assert!(p.matches(&event) && back.matches(&event));
    }
}
