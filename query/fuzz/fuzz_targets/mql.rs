//! Fuzz target for MQL: parsing (queries, conditions, fields), the printed conditions'
//! round trip, and running what parses over a few events every way the engine is driven
//! (see `argus_mql::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    argus_mql::fuzzing::check_query(data);
});
