//! The Argus server: configuration, the HTTP API, Atlas publish decoding and tag rules, and
//! the server's own metrics. Wire formats are converted to store types here and nowhere else.

pub mod auth;
pub mod config;
pub mod connections;
pub mod convert;
pub mod error;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod grpc_io;
pub mod http;
pub mod http_serve;
pub mod live;
pub mod live_client;
pub mod live_http;
pub mod memory;
pub mod metrics;
pub mod offline;
pub mod publish;
pub mod query_guard;
pub mod server;
pub mod tls;
pub mod validation;
