//! Fuzz target for the write-ahead log reader: framing, resync after damage, and replaying
//! series and batch records into a store (see `argus_tsdb::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    argus_tsdb::fuzzing::wal_segment(data);
});
