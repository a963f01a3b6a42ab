//! Fuzz target for the Atlas Stack Language: parsing, printing, step-by-step debugging,
//! evaluation and every output format (see `argus_query::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    argus_query::fuzzing::check_expression(data);
});
