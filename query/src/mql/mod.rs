//! MQL, Mantis's query language over raw events: the parser, the query model and the
//! engine that runs a query over a stream. The `where` clause compiles to the shared
//! [`Predicate`](crate::predicate::Predicate), which is what travels to agents.

pub mod ast;
pub mod eval;
pub mod parser;

pub use ast::{DEFAULT_STREAM, Query};
pub use eval::{Engine, Row, Sampler};
pub use parser::{ParseError, parse, parse_condition};
