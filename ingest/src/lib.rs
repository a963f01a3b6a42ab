//! The Argus server, in layers:
//!
//! - shells, one per protocol, thin: `http/` (routes, middleware, the listener, and the one
//!   place errors and outcomes become HTTP responses) and `grpc/` (the agent protocol, OTLP,
//!   and the one place errors become statuses);
//! - the shared state they take (`state.rs`) and what it holds: the live queries
//!   (`live.rs`), the event hub (`events.rs`, over `event.rs`), resend detection
//!   (`resend.rs`), tokens (`auth.rs`), limits and counters (`connections.rs`,
//!   `metrics.rs`, `query_guard.rs`);
//! - what ingest paths share below the shells: wire formats to store types, one module per
//!   format (`convert/`), Atlas's tag rules and refusal reasons (`validation.rs`), and the one
//!   outcome type every path builds (`outcome.rs`);
//! - start-up and the durability loop (`server.rs`), settings (`config.rs`, `tls.rs`), memory
//!   upkeep (`memory.rs`), and the command line's own work (`offline.rs`,
//!   `live_client.rs`).
//!
//! Wire formats are converted to store types in `convert/` and nowhere else; no two modules
//! import each other in a circle (a test checks it).

pub mod auth;
pub mod cluster;
pub mod cluster_client;
pub mod config;
pub mod connections;
pub mod convert;
pub mod event;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod http;
pub mod live;
pub mod live_client;
pub mod loss;
pub mod memory;
pub mod metrics;
pub mod offline;
pub mod outcome;
pub mod query_client;
pub mod query_guard;
pub mod resend;
pub mod server;
pub mod state;
pub mod tls;
pub mod validation;
