//! Generates the `argus.v1` message types and gRPC services from `proto/`, with protox (a
//! protobuf compiler in Rust), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["argus/v1/ingest.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // No `connect()` helpers: they need tonic's transport (server and router) in every
        // crate that uses these types; the agent builds its channel itself.
        .build_transport(false)
        // Written by hand for its packed fields' decoding (`src/sample_group.rs`).
        .extern_path(".argus.v1.SampleGroup", "crate::sample_group::SampleGroup")
        .compile_fds(descriptors)?;
    Ok(())
}
