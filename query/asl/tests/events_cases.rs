//! The Stack Language's event cases (`tests/events/*.test`, MQL's case format with `asl`
//! expressions), run in process through the offline run `argus eval --events` uses. The
//! end-to-end test runs the same files through the binary.

use std::path::PathBuf;

use argus_mql::cases::load_dir;

#[test]
fn event_cases() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/events");
    let cases = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.len() >= 25, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        assert!(
            case.asl,
            "{}: an MQL case among the Stack Language's",
            case.location()
        );
        let outcome = argus_query::events::parse(&case.query)
            .map(|q| argus_query::events::run_offline(&q, &case.events, &case.clock, case.step_ms))
            .map_err(|e| e.to_string());
        match &outcome {
            Ok(rows) => case.check(Ok(rows)),
            Err(e) => case.check(Err(e)),
        }
        .unwrap_or_else(|e| failures.push(e));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
