//! The agent's parts, a library for its binary (`main.rs`), its benchmarks (`benches/`) and
//! its fuzz target (`fuzz/`). Each module is one input, one stage of the way out, or the
//! agent's own health; `main.rs` wires them together.

pub mod config;
pub mod health;
pub mod host;
pub mod intake;
pub mod outbox;
pub mod pushdown;
pub mod registry;
pub mod scrape;
pub mod sender;
pub mod spectatord;
pub mod statsd;
pub mod tail;
