//! Fuzz target for PromQL: parsing, the printed form's round trip, and evaluating what parses
//! as an instant and two range queries over a small store (see `argus_promql::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    argus_promql::fuzzing::check_query(data);
});
