//! Fuzz target for Prometheus remote write, raw protobuf and snappy-framed (see
//! `argus_ingest::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    argus_ingest::fuzzing::remote_write(data);
});
