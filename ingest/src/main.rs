//! The `argus` binary (placeholder).
fn main() {}
