//! Publish payload decoding throughput (written with the server benchmarks).
fn main() {}
