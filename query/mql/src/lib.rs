//! The part of Argus's languages the agent links, with no store and no chart stack:
//!
//! - [`predicate`]: the predicate core, one representation of "which of these do we want"
//!   that MQL's `where` and the Stack Language's query words both compile to, evaluated on
//!   events here and lowered to the store's index by `argus-query`;
//! - MQL, Mantis's query language over raw events: the parser, the query model and the
//!   engine that runs a query over a stream (the modules below); the `where` clause compiles
//!   to a [`Predicate`](crate::predicate::Predicate), which is what travels to agents;
//! - [`duration`]: the one duration grammar the server's settings, the agent's, the command
//!   line and the Stack Language read.
//!
//! - `parser`: text to [`Query`] (and conditions, fields alone), errors with positions;
//! - `join`: `join` of streams within a window on a key, before the rest of the query;
//! - `eval`: the [`Engine`] (windows, groups, aggregates, having, order, limit) and sampling;
//! - `cases`: the semantics as data (`query/mql/tests/mql/*.test`) and the offline run that
//!   `argus mql` and the case runners share;
//! - `partial`: parsing only the fields a predicate reads, for agents;
//! - `fuzzing`: what the MQL fuzz target and its corpus replay check.

pub mod ast;
pub mod cases;
pub mod duration;
pub mod eval;
#[doc(hidden)]
pub mod fuzzing;
pub mod join;
pub mod parser;
pub mod partial;
pub mod predicate;

pub use ast::{DEFAULT_STREAM, Query};
pub use eval::{Engine, Row, Sampler};
pub use parser::{ParseError, parse, parse_condition, parse_path};
