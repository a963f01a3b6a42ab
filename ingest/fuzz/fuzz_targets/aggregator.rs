//! Fuzz target for the aggregator's update payload (see `argus_ingest::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    argus_ingest::fuzzing::aggregator_update(data);
});
