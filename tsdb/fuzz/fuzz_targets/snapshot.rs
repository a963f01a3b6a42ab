//! Fuzz target for the snapshot reader: sections, string tables, series state and sealed
//! units, loaded into a store and read back (see `argus_tsdb::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    argus_tsdb::fuzzing::snapshot(data);
});
