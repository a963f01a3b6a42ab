//! MQL semantics as data: runs every case of `tests/mql/*.test` through the engine exactly
//! as `argus mql` does (`argus_mql::cases::run_offline`). The file format is
//! described in `query/mql/src/cases.rs`; the end-to-end tests run the same files through
//! the command and through live subscriptions.

use std::path::Path;

use argus_mql::cases::{Case, load_dir};

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mql");
    load_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn mql_cases() {
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let outcome = case.run();
        let checked = match &outcome {
            Ok(rows) => case.check(Ok(rows)),
            Err(e) => case.check(Err(&e.to_string())),
        };
        if let Err(e) = checked {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    assert!(cases.len() >= 40, "only {} cases", cases.len());
}

#[test]
fn case_names_are_unique() {
    let mut names: Vec<String> = cases().iter().map(|c| c.name.clone()).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n, "two cases share a name");
}
