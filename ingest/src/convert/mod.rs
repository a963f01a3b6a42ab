//! Wire formats to store types, in one place, one module per format: the agent protocol
//! (`agent.rs`), Prometheus remote write (`remote_write.rs`), OTLP metrics and logs
//! (`otlp.rs`), Atlas's publish payload (`publish.rs`), and the other way, live
//! subscriptions for agents (`subscriptions.rs`). Each turns what arrives into series (tags
//! and how samples land on steps) and samples, or into events, with a reason for everything
//! it refuses (`converted.rs`). Nothing here knows HTTP or gRPC transport.

mod agent;
pub mod aggregator;
mod converted;
mod otlp;
pub mod publish;
mod remote_write;
mod subscriptions;

pub use agent::{MAX_LOCAL_ID, StreamSeries, agent_events};
pub use converted::Converted;
pub use otlp::{LOGS_STREAM, otlp_logs, otlp_metrics};
pub use remote_write::{RemoteWriteState, WireError, prometheus_series};
pub use subscriptions::agent_subscriptions;
