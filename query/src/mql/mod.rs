//! MQL, Mantis's query language over raw events: the parser, the query model and the
//! engine that runs a query over a stream. The `where` clause compiles to the shared
//! [`Predicate`](crate::predicate::Predicate), which is what travels to agents.
//!
//! - `parser`: text to [`Query`] (and conditions, fields alone), errors with positions;
//! - `eval`: the [`Engine`] (windows, groups, aggregates, having, order, limit) and sampling;
//! - `cases`: the semantics as data (`query/tests/mql/*.test`) and the offline run that
//!   `argus mql` and the case runners share;
//! - `partial`: parsing only the fields a predicate reads, for agents;
//! - `fuzzing`: what the MQL fuzz target and its corpus replay check.

pub mod ast;
pub mod cases;
pub mod eval;
#[doc(hidden)]
pub mod fuzzing;
pub mod parser;
pub mod partial;

pub use ast::{DEFAULT_STREAM, Query};
pub use eval::{Engine, Row, Sampler};
pub use parser::{ParseError, parse, parse_condition, parse_path};
