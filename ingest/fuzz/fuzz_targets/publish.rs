//! Fuzz target for Atlas publish JSON, plain and gzip (see `argus_ingest::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    argus_ingest::fuzzing::publish_json(data);
});
