//! Argus wire types: the `argus.v1` agent protocol (metric and event streams, the control
//! stream), generated from `proto/argus/v1/ingest.proto` at build time without a system
//! `protoc`, and the Prometheus remote-write 1.0 messages. The OTLP services come from the
//! `opentelemetry-proto` crate, re-exported as [`otlp`].
//!
//! With them, the rules the contract puts on what it carries ([`rules`]: Atlas's tag rules,
//! the size of an event), so that agents refuse at their intake what the server would.
//!
//! The aggregator's update payload older Spectator clients post ([`aggregator`]), decoded
//! once for the agent's intake and the server.
//!
//! And the client side of the wire that the server's command line and the agent share
//! ([`http_client`]: HTTP/1.1 over TCP or TLS, keep-alive, gzip bodies).
//!
//! This crate knows nothing of the store or of any other Argus crate: conversion between
//! these types and the store's lives in the server (`ingest/src/convert/`).

pub mod v1 {
    //! The agent protocol, package `argus.v1`.
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("argus.v1");
    pub use crate::sample_group::SampleGroup;
}

pub mod aggregator;
pub mod http_client;
pub mod remote_write;
pub mod rules;
mod sample_group;

/// OTLP metrics and logs (messages and gRPC services).
pub use opentelemetry_proto::tonic as otlp;

/// The request metadata key an agent names itself with on every stream.
pub const AGENT_ID_HEADER: &str = "argus-agent-id";
