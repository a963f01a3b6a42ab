//! Argus wire types. The `argus.v1` protobuf package (metric and event streams, the control
//! stream) and the OTLP services are generated here, without a system `protoc`, by the gRPC
//! ingest work; until then this crate is intentionally empty so the dependency arrows exist.
